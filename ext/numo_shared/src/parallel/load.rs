//! The parent's side of a result: `NArray#marshal_load` of a handle a
//! worker wrote turns the freshly allocated array into the result it names.

use magnus::{rb_sys::AsRawValue, RString, Value};

use crate::error::{Error, Result};
use crate::memory::pid;
use crate::memory::segment::{Access, Segment};
use crate::numo::plan::Plan;
use crate::numo::view;
use crate::parallel::arena::{self, Shared};
use crate::parallel::handle::{Handle, Place};

/// `Numo::Shared::Native.load_handle(array, data)` in the parent, from
/// `NArray#marshal_load`: makes `array`, just allocated by `Marshal.load`,
/// the result `data` names. Returns nil when `data` is not a handle (Numo's
/// own marshal data), for Numo to load.
pub fn load_handle(obj: Value, data: Value) -> Result<Option<Value>> {
    let Some(string) = RString::from_value(data) else {
        return Ok(None);
    };
    // SAFETY: the bytes are copied before any Ruby code runs.
    let bytes = unsafe { string.as_slice() };
    if !Handle::looks_like(bytes) {
        return Ok(None);
    }
    let handle = Handle::decode(bytes)?;
    let arena = arena::find_open(handle.token).ok_or_else(|| {
        Error::Argument(
            "marshal data names a Numo::Parallel results arena that is not open in this process"
                .into(),
        )
    })?;
    if arena.owner != pid::current() {
        return Err(Error::Argument(
            "only the process that made a results arena loads its results".into(),
        ));
    }
    let plan = Plan::for_object(obj, handle.shape.clone(), handle.flags)?;
    let array = match handle.place {
        Place::Inline { bytes } => plan.fill(obj, &bytes)?,
        Place::Bytes { offset, len } => {
            let packed = region_of(&arena)?.read(offset, len)?;
            if packed.len() != plan.bytes {
                return Err(Error::Argument(format!(
                    "a worker packed {} bytes for a result of {} bytes",
                    packed.len(),
                    plan.bytes
                )));
            }
            plan.fill_with(obj, |target| {
                target.copy_from_slice(packed);
                Ok(())
            })?
        }
        Place::Block { id } => {
            let (addr, len) = arena.channel.take(id)?;
            let segment = Segment::adopt_mapping(addr, len, Access::Shared);
            if len < plan.bytes {
                return Err(Error::Argument(format!(
                    "a worker sent {len} bytes for a result of {} bytes",
                    plan.bytes
                )));
            }
            plan.adopt(obj, Some(segment), 0)?
        }
        Place::Reference { serial, offset } => {
            if plan.bytes == 0 {
                plan.adopt(obj, None, 0)?
            } else {
                let (segment, delta) = Segment::duplicate(serial, offset as usize, plan.bytes)?;
                plan.adopt(obj, Some(segment), delta)?
            }
        }
        Place::View {
            geometry,
            tables_offset,
            tables_len,
        } => {
            let tables = if tables_len == 0 {
                &[][..]
            } else {
                region_of(&arena)?.read(tables_offset, tables_len)?
            };
            view::claim(&plan, obj, &geometry, tables)?
        }
    };
    debug_assert_eq!(array.as_raw(), obj.as_raw());
    Ok(Some(array))
}

fn region_of(arena: &Shared) -> Result<&crate::parallel::region::Region> {
    arena
        .region
        .as_ref()
        .ok_or_else(|| Error::Argument("this results arena has no region".into()))
}
