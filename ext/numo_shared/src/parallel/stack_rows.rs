//! The rows of `Numo::Parallel.stack`.
//!
//! The target array keeps its memfd's descriptor for the length of the map
//! (workers inherit it), and a worker writes each row its block returns into
//! that file (`pwrite`), which faults no page of the worker's mapping: the
//! row is copied once, as a result of `map` is (see `export`).

use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use magnus::{rb_sys::AsRawValue, RArray, RClass, Ruby, Value};

use crate::error::Result;
use crate::memory::file;
use crate::memory::live;
use crate::memory::segment::Segment;
use crate::numo::facts;
use crate::numo::plan;

/// The descriptors of targets being filled: (segment serial, memfd).
static FILES: Mutex<Vec<(u64, OwnedFd)>> = Mutex::new(Vec::new());

fn files() -> MutexGuard<'static, Vec<(u64, OwnedFd)>> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Numo::Shared::Native.create_stack_target(klass, shape)`: a new shared
/// array, as `create` makes it, whose memfd stays open until
/// `release_stack_target`.
pub fn create_target(ruby: &Ruby, klass: RClass, shape: RArray) -> Result<Value> {
    let plan = plan::plan(ruby, klass, shape)?;
    if plan.bytes == 0 {
        return plan.wrap(klass, None);
    }
    let (segment, fd) = Segment::anonymous(plan.bytes)?;
    let mapping = live::share(segment, live::keep_copy(&fd).map(|kept| (kept, 0)));
    let serial = mapping.serial();
    let obj = plan.wrap(klass, Some(mapping))?;
    files().push((serial, fd));
    Ok(obj)
}

/// `Numo::Shared::Native.release_stack_target(target)`: closes the memfd
/// `create_stack_target` kept (in this process). True if there was one.
pub fn release_target(target: Value) -> bool {
    let Some(target) = facts::location(target) else {
        return false;
    };
    let mut files = files();
    let before = files.len();
    files.retain(|(serial, _)| *serial != target.serial);
    files.len() != before
}

/// `Numo::Shared::Native.store_stack_row(target, offset, bytes, row)`: when
/// `row` is a Numo data array with memory (not a view, not freed) of the
/// target's class, in the same byte order, exactly `bytes` long, other than
/// the target, and the target's file is open here, writes it into the file
/// `offset` bytes into the target's data. Returns whether it stored the
/// row; false leaves the target untouched, for Numo's own store (which
/// casts, and raises for a freed array).
pub fn store_row(target: Value, offset: usize, bytes: usize, row: Value) -> bool {
    let Some(to) = facts::location(target) else {
        return false;
    };
    let (Some(to_facts), Some(from_facts), Some(data)) = (
        facts::facts_of(target),
        facts::facts_of(row),
        facts::data_bytes_of(row),
    ) else {
        return false;
    };
    let fits = offset.checked_add(bytes).is_some_and(|end| end <= to.room);
    // SAFETY: both are live Numo objects (checked above).
    let same_class =
        unsafe { rb_sys::rb_obj_class(target.as_raw()) == rb_sys::rb_obj_class(row.as_raw()) };
    if !fits
        || bytes == 0
        || !same_class
        || data.len() != bytes
        || from_facts.element_bytes.is_none()
        || from_facts.flags != to_facts.flags
        || facts::location(row).is_some_and(|from| from.serial == to.serial)
    {
        return false;
    }
    // No Ruby code runs while `data` is in use. Written to the file, the row
    // costs no page fault here: on the project's machine 2 ms per 8 MB
    // against 12 to 16 ms to populate the mapping's pages and copy into them.
    let files = files();
    files
        .iter()
        .find(|(serial, _)| *serial == to.serial)
        .is_some_and(|(_, fd)| file::write_all_at(fd, data, (to.offset + offset) as u64).is_ok())
}
