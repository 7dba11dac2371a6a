//! How each NArray of a worker's result reaches the parent: decided here,
//! and only here (`route`).
//!
//! - Memory the parent already has (a shared array it made before the
//!   fork, or any view of one; not read-only or copy-on-write memory) is
//!   passed by reference: the parent maps the same pages again.
//! - Anything else is copied once, by the worker, into memory the parent
//!   maps: arrays of `INLINE_BYTES` or less inside the handle itself, arrays
//!   under `FILE_FROM` into the arena's region (the parent copies them out),
//!   larger ones into a fresh memfd with `pwrite`, whose descriptor goes to
//!   the parent over the arena's channel and becomes the result's own memory.
//!   `pwrite` puts the bytes into the file's fresh pages without mapping or
//!   faulting a page of the worker (see the README's benchmarks for the
//!   alternatives measured).
//!
//! Numo::RObject arrays, and arrays with no memory, return `None`: Numo's own
//! marshal data carries them, as without this gem.

use std::sync::Arc;

use magnus::{prelude::*, RString, Value};

use crate::error::{Error, Result};
use crate::memory::memfd;
use crate::numo::facts::{self, ArrayFacts, ViewOf};
use crate::numo::layout::{Step, FLAG_BYTE_SWAPPED};
use crate::numo::ruby_alloc;
use crate::numo::view;
use crate::parallel::arena::Shared;
use crate::parallel::handle::{Handle, Place};
use crate::parallel::worker;

/// Arrays of at most this many bytes travel in the handle itself: their
/// bytes are no more than a handle's.
pub const INLINE_BYTES: usize = 64;

/// Arrays of this many bytes or more get a memfd of their own; smaller ones
/// are packed into the region.
pub const FILE_FROM: usize = 64 * 1024;

/// `Numo::Shared::Native.export(array)` from `NArray#marshal_dump`: in a
/// worker, for an array of the value the gem is marshaling, the handle to
/// write instead of its data; nil otherwise (Numo's own data is written).
pub fn export(obj: Value) -> Result<Option<RString>> {
    let Some((arena, id)) = worker::exporting() else {
        return Ok(None);
    };
    let Some(facts) = facts::facts_of(obj) else {
        return Ok(None); // not a numeric array, or one with no data yet
    };
    let (obj, facts) = in_host_order(obj, facts)?;
    let Some(place) = route(obj, &facts, &arena, id)? else {
        return Ok(None);
    };
    let handle = Handle {
        token: arena.token,
        flags: facts.flags,
        shape: facts.shape,
        place,
    };
    ruby_alloc::binary_string(&handle.encode()).map(Some)
}

/// Numo's own `marshal_load` turns byte-swapped data to the host's order;
/// so does this: a host-order copy is made here, in the worker.
fn in_host_order(obj: Value, facts: ArrayFacts) -> Result<(Value, ArrayFacts)> {
    if facts.flags & FLAG_BYTE_SWAPPED == 0 {
        return Ok((obj, facts));
    }
    let host: Value = obj.funcall("to_host", ()).map_err(Error::Ruby)?;
    match facts::facts_of(host) {
        Some(facts) if facts.flags & FLAG_BYTE_SWAPPED == 0 => Ok((host, facts)),
        _ => Err(Error::Type(
            "a byte-swapped array could not be turned to the host's order".into(),
        )),
    }
}

/// Where the parent will find `obj`'s data, putting it there if needed;
/// `None` when it must travel as Numo's own marshal data.
fn route(obj: Value, facts: &ArrayFacts, arena: &Arc<Shared>, id: u64) -> Result<Option<Place>> {
    if let Some(place) = reference(obj, facts, arena) {
        return Ok(Some(place));
    }
    if facts.bytes <= INLINE_BYTES {
        return with_element_bytes(obj, facts, |bytes| {
            Ok(Some(Place::Inline {
                bytes: bytes.to_vec(),
            }))
        });
    }
    if facts.bytes < FILE_FROM {
        if let Some(region) = arena.region.as_ref() {
            let packed = with_element_bytes(obj, facts, |bytes| Ok(region.pack(bytes)))?;
            if let Some(offset) = packed {
                return Ok(Some(Place::Bytes {
                    offset,
                    len: facts.bytes as u64,
                }));
            }
        }
    }
    // A memfd that cannot be made or sent (a file size limit, no
    // descriptor left, too many in flight) leaves the array to Numo's own
    // marshal data, as without this gem.
    let sent = with_element_bytes(obj, facts, |bytes| {
        memfd::copy_into_new(c"numo-shared-result", bytes, "a parallel result")
    })
    .and_then(|fd| arena.channel.send(&fd, id, facts.bytes));
    match sent {
        Ok(()) => Ok(Some(Place::Block { id })),
        Err(Error::Os { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

/// A reference to memory the parent shares with this worker: a shared
/// array it made before the fork, or a view of one (not read-only or
/// copy-on-write memory: the parent's mapping of it may hold other values).
/// `None` for anything else, and for a view whose index tables find no room
/// in the region (it is copied instead).
fn reference(obj: Value, facts: &ArrayFacts, arena: &Shared) -> Option<Place> {
    let owner = arena.owner;
    if let Some(view) = facts::view_of(obj).filter(|v| v.creator == owner && v.shareable) {
        if let Some(offset) = contiguous_offset(&view, facts) {
            return Some(Place::Reference {
                serial: view.serial,
                offset: offset as u64,
            });
        }
        let (geometry, tables) = view::geometry_of(&view).ok()?;
        let (tables_offset, tables_len) = if tables.is_empty() {
            (0, 0)
        } else {
            (arena.region.as_ref()?.pack(&tables)?, tables.len() as u64)
        };
        return Some(Place::View {
            geometry,
            tables_offset,
            tables_len,
        });
    }
    facts::location(obj)
        .filter(|l| l.creator == owner && l.shareable)
        .map(|l| Place::Reference {
            serial: l.serial,
            offset: l.offset as u64,
        })
}

/// Where a view's data starts in its segment if its elements lie there
/// one after another in order (then it is passed as a plain array), or
/// `None`. Bit views, whose offsets count bits, are always passed as views.
fn contiguous_offset(view: &ViewOf, facts: &ArrayFacts) -> Option<usize> {
    let element = facts.element_bytes?;
    let mut expected = element as isize;
    for (step, &len) in view.steps.iter().zip(&facts.shape).rev() {
        match step {
            Step::Stride(stride) if *stride == expected || len <= 1 => {}
            _ => return None,
        }
        expected = expected.checked_mul(len as isize)?;
    }
    Some(view.data_offset + view.offset)
}

/// Calls `with` with `obj`'s elements in order, as Numo lays them out in a
/// data array: a data array's own memory, or for a view (or a Bit array,
/// which packs its bits) the String Numo's `to_binary` makes (a Bit view is
/// copied first: Numo reads Bit views from a wrong offset). `with` must not
/// call Ruby.
fn with_element_bytes<T>(
    obj: Value,
    facts: &ArrayFacts,
    with: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    if let Some(bytes) = facts::data_bytes_of(obj) {
        return with(bytes);
    }
    let source = if facts.element_bytes.is_none() {
        obj.funcall::<_, _, Value>("dup", ()).map_err(Error::Ruby)?
    } else {
        obj
    };
    let binary: RString = source.funcall("to_binary", ()).map_err(Error::Ruby)?;
    // SAFETY: `with` calls no Ruby code, so no GC runs and the String
    // neither moves nor changes while its bytes are read.
    with(unsafe { binary.as_slice() })
}
