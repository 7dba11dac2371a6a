//! The rows of `Numo::Parallel.stack`.
//!
//! The target array keeps its memfd's descriptor for the length of the map
//! (workers inherit it). A worker copies each row its block returns into the
//! target, then, when the row is a block of its own pool, points the row at
//! a private copy-on-write mapping of the row just stored, so that the block
//! goes back to the pool at once, warm, for the next row. Without that, the
//! block only came back once a garbage collection found the row unreferenced,
//! which cost a collection per row (its sweep grows with the heap: 5 ms for
//! 40,000 objects, 19 ms for 340,000, per 8 MB row on the project's machine).
//! The row keeps its values whether or not the block kept it: a later write
//! to it stays in the worker (copy-on-write), and the target's row is written
//! once, before the mapping is made.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use magnus::{RArray, RClass, Ruby, Value};

use crate::error::Result;
use crate::segment::{self, Access, Segment};
use crate::shared_array;

/// The descriptors of targets being filled: (segment serial, memfd).
static FILES: Mutex<Vec<(u64, OwnedFd)>> = Mutex::new(Vec::new());

fn files() -> MutexGuard<'static, Vec<(u64, OwnedFd)>> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Numo::Shared::Native.create_stack_target(klass, shape)`: a new shared
/// array, as `create` makes it, whose memfd stays open until
/// `release_stack_target`.
pub fn create_target(ruby: &Ruby, klass: RClass, shape: RArray) -> Result<Value> {
    let plan = shared_array::plan(ruby, klass, shape)?;
    if plan.bytes == 0 {
        return plan.wrap(klass, None);
    }
    let (segment, fd) = Segment::anonymous_keeping_file(plan.bytes)?;
    let serial = segment.serial();
    let obj = plan.wrap(klass, Some(segment))?;
    files().push((serial, fd));
    Ok(obj)
}

/// `Numo::Shared::Native.release_stack_target(target)`: closes the memfd
/// `create_stack_target` kept (in this process). True if there was one.
pub fn release_target(target: Value) -> bool {
    let Some(extent) = shared_array::extent(target) else {
        return false;
    };
    let mut files = files();
    let before = files.len();
    files.retain(|(serial, _)| *serial != extent.serial);
    files.len() != before
}

/// `Numo::Shared::Native.store_stack_row(target, offset, bytes, row)`: when
/// `row` is an array of ours of the target's class (not a view), native byte
/// order as the target, exactly `bytes` long, copies it into the target
/// `offset` bytes in (its pages mapped at once first) and, when `row` is a
/// block of this process's pool and the target's file is open, points `row`
/// at a private mapping of what was just stored (its block goes back to the
/// pool). Returns whether it stored the row; false leaves both untouched,
/// for Numo's own store.
pub fn store_row(target: Value, offset: usize, bytes: usize, row: Value) -> bool {
    let (Some(to), Some(from)) = (shared_array::extent(target), shared_array::extent(row)) else {
        return false;
    };
    let (Some(to_facts), Some(from_facts)) = (
        shared_array::export_facts(target),
        shared_array::export_facts(row),
    ) else {
        return false;
    };
    let fits = offset.checked_add(bytes).is_some_and(|end| end <= to.room);
    if !fits
        || bytes == 0
        || from.serial == to.serial
        || from.type_id != to.type_id
        || from_facts.bytes != bytes
        || from.room < bytes
        || from_facts.element_bytes.is_none()
        || from_facts.flags != to_facts.flags
    {
        return false;
    }
    let page = segment::page_size();
    let at = to.data as usize + offset;
    let first = at / page * page;
    let last = (at + bytes).div_ceil(page) * page;
    let segment_end = to.data as usize + to.room;
    // SAFETY: `at..at + bytes` lies in the target's live mapping (checked
    // above), `from.data..+bytes` in the row's, another segment's mapping.
    // Populating a range of our own mapping has no other effect.
    unsafe {
        segment::populate(first, last.min(segment_end) - first);
        std::ptr::copy_nonoverlapping(from.data, at as *mut u8, bytes);
    }
    if from.pooled_here {
        move_onto_private_copy(row, &to, offset, bytes);
    }
    true
}

/// Points `row` at a private mapping of the `bytes` at `offset` of the
/// target, which hold its values. Left as it is when the target's file is
/// not open here or the mapping cannot be made.
fn move_onto_private_copy(row: Value, to: &shared_array::Extent, offset: usize, bytes: usize) {
    let files = files();
    let Some((_, fd)) = files.iter().find(|(serial, _)| *serial == to.serial) else {
        return;
    };
    let page = segment::page_size();
    let in_file = to.before + offset;
    let start = in_file / page * page;
    let len = (in_file - start + bytes).div_ceil(page) * page;
    // SAFETY: a fresh private mapping chosen by the kernel of a file of ours
    // that is at least `start + len` long (the target's segment maps it all
    // from offset 0; `len` is page-rounded inside it).
    let Ok(addr) = (unsafe {
        segment::mmap_raw(
            None,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            fd.as_raw_fd(),
            start as libc::off_t,
        )
    }) else {
        return;
    };
    drop(files);
    let copy = Segment::adopt_mapping(addr, len, Access::CopyOnWrite);
    shared_array::repoint(row, copy, in_file - start);
}
