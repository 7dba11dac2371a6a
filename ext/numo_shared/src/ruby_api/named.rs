//! `Numo::DFloat.new_shared(..., name:)`, `Numo::NArray.open_shared`,
//! `unlink_shared` and `Numo::Shared.segments`: named segments (see
//! `memory::named`) as Numo arrays.

use magnus::{prelude::*, RArray, RClass, Ruby, Value};

use crate::error::{Error, Result};
use crate::memory::header::{self, Header};
use crate::memory::named;
use crate::numo::plan;
use crate::sys;

/// `Numo::DFloat.new_shared(2, 3, name: "frames")`.
pub fn create(ruby: &Ruby, klass: RClass, shape: RArray, name: String) -> Result<Value> {
    named::check_name(&name)?;
    let plan = plan::plan(ruby, klass, shape)?;
    let pid = sys::getpid();
    let header = Header {
        class_name: klass.inspect(),
        shape: plan.dims().to_vec(),
        data_bytes: plan.bytes,
        creator_pid: pid,
        creator_start: header::process_start_time(pid).unwrap_or(0),
    };
    let (segment, offset) = named::create(&name, &header)?;
    plan.wrap_at(klass, Some(segment), offset).inspect_err(|_| {
        named::remove_quietly(&name);
    })
}

/// `Numo::NArray.open_shared("frames", readonly: false)`.
pub fn open(ruby: &Ruby, name: String, readonly: bool) -> Result<Value> {
    named::check_name(&name)?;
    let what = format!("shared-memory segment {}", named::place(&name));
    let (segment, header) = named::open(&name, readonly)?;
    let klass = class_named(ruby, &header.class_name, &what)?;
    let shape = ruby.ary_from_vec(header.shape.iter().map(|&d| d as u64).collect());
    let plan = plan::plan(ruby, klass, shape)?;
    if plan.bytes != header.data_bytes {
        return Err(Error::Format(format!(
            "{what} has a damaged header: {} of shape {:?} needs {} bytes, the header says {}",
            header.class_name, header.shape, plan.bytes, header.data_bytes
        )));
    }
    let array = plan.wrap_at(klass, Some(segment), header.data_offset())?;
    if readonly {
        array.freeze();
    }
    Ok(array)
}

/// The Numo class a header names; only the numeric classes are accepted.
fn class_named(ruby: &Ruby, name: &str, what: &str) -> Result<RClass> {
    let refuse = || {
        Error::Format(format!(
            "{what} records class {name:?}, which is not a numeric Numo class"
        ))
    };
    let short = name.strip_prefix("Numo::").ok_or_else(refuse)?;
    let numo: magnus::RModule = ruby
        .class_object()
        .const_get("Numo")
        .map_err(|_| refuse())?;
    let klass: RClass = numo.const_get(short).map_err(|_| refuse())?;
    let shared: magnus::RModule = numo.const_get("Shared").map_err(|_| refuse())?;
    let classes: RArray = shared.const_get("CLASSES").map_err(|_| refuse())?;
    if !classes.includes(klass) {
        return Err(refuse());
    }
    Ok(klass)
}

/// `Numo::NArray.unlink_shared("frames")`.
pub fn unlink(name: String) -> Result<()> {
    named::check_name(&name)?;
    named::unlink(&name)
}

/// One segment found by `list`: name, class, shape, data bytes, creating
/// pid, and whether that process still runs.
pub type SegmentRow = (String, String, Vec<usize>, usize, i32, bool);

/// `Numo::Shared::Native.segments`: a `SegmentRow` for every segment in
/// /dev/shm that this user owns and this gem made.
pub fn list() -> Result<Vec<SegmentRow>> {
    Ok(named::list()?
        .into_iter()
        .map(|found| {
            let header = found.header;
            (
                found.name,
                header.class_name,
                header.shape,
                header.data_bytes,
                header.creator_pid,
                found.alive,
            )
        })
        .collect())
}
