//! The receiving side of a value: `NArray#marshal_load` of a handle turns the
//! freshly allocated array into the array it names: in a parent, a worker's
//! result; in a pool's worker, an item its parent sent.

use magnus::{rb_sys::AsRawValue, RString, Value};

use crate::error::{Error, Result};
use crate::memory::live;
use crate::memory::pid;
use crate::memory::segment::{Access, Segment};
use crate::numo::plan::Plan;
use crate::numo::view;
use crate::parallel::arena::{self, Shared};
use crate::parallel::channel::Mapped;
use crate::parallel::handle::{Handle, Place};
use crate::parallel::link::WorkerLink;
use crate::parallel::worker;

/// `Numo::Shared::Native.load_handle(array, data)` from
/// `NArray#marshal_load`: makes `array`, just allocated by `Marshal.load`,
/// the array `data` names. Returns nil when `data` is not a handle (Numo's
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
    // The channel the memfds came through: the arena's in the parent, the
    // link's in a pool's worker.
    let link = worker::link_for(&arena);
    let channel = match &link {
        _ if arena.owner == pid::current() => &arena.channel,
        Some(link) => &link.channel,
        None => {
            return Err(Error::Argument(
                "only the process that made a results arena (or its pool's workers) loads what it names"
                    .into(),
            ))
        }
    };
    let plan = Plan::for_object(obj, handle.shape.clone(), handle.flags)?;
    let array = match handle.place {
        Place::Inline { bytes } => plan.fill(obj, &bytes)?,
        Place::Bytes { offset, len } => {
            let region = region_of(&arena)?;
            let packed = region.read(offset, len)?;
            if packed.len() != plan.bytes {
                return Err(Error::Argument(format!(
                    "{} bytes were packed for an array of {} bytes",
                    packed.len(),
                    plan.bytes
                )));
            }
            let array = plan.fill_with(obj, |target| {
                target.copy_from_slice(packed);
                Ok(())
            })?;
            region.consumed(offset, len);
            array
        }
        Place::Block { id } => {
            let Mapped { addr, len, file } = channel.take(id)?;
            let segment = live::share(Segment::adopt_mapping(addr, len, Access::Shared), file);
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
                receive_file(&link, serial);
                let mapping = live::find_range(serial, offset as usize, plan.bytes)?;
                plan.adopt(obj, Some(mapping), offset as usize)?
            }
        }
        Place::View {
            geometry,
            tables_offset,
            tables_len,
        } => {
            receive_file(&link, geometry.serial);
            let tables = if tables_len == 0 {
                &[][..]
            } else {
                region_of(&arena)?.read(tables_offset, tables_len)?
            };
            let view = view::claim(&plan, obj, &geometry, tables)?;
            if tables_len > 0 {
                region_of(&arena)?.consumed(tables_offset, tables_len);
            }
            view
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

/// In a pool's worker: maps the files its parent sent before this item,
/// when the array `serial` is not mapped here yet.
fn receive_file(link: &Option<std::sync::Arc<WorkerLink>>, serial: u64) {
    if let Some(link) = link.as_ref().filter(|_| !live::contains(serial)) {
        link.channel.drain();
    }
}
