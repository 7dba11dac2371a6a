//! How each NArray of a value reaches the process it is sent to (a worker's
//! result to the parent, a pool's item to a worker): decided here, and only
//! here (`route`).
//!
//! - Memory the receiver shares (a shared array of the parent, or any view
//!   of one; not read-only or copy-on-write memory) is passed by reference:
//!   the receiver maps the same pages again. A pool's worker is first sent
//!   the file of a parent's array it does not map yet (see `link`).
//! - Anything else is copied once, by the sender, into memory the receiver
//!   maps: arrays of `INLINE_BYTES` or less inside the handle itself, arrays
//!   under `FILE_FROM` into the arena's region (the receiver copies them
//!   out), larger ones into a fresh memfd with `pwrite`, whose descriptor
//!   goes over a channel (`SCM_RIGHTS`) and becomes the array's own memory.
//!   `pwrite` puts the bytes into the file's fresh pages without mapping or
//!   faulting a page of the sender (see the README's benchmarks for the
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
use crate::parallel::exporting::{self, Target};
use crate::parallel::handle::{Handle, Place};
use crate::parallel::worker;

/// Arrays of at most this many bytes travel in the handle itself: their
/// bytes are no more than a handle's.
pub const INLINE_BYTES: usize = 64;

/// Arrays of this many bytes or more get a memfd of their own; smaller ones
/// are packed into the region.
pub const FILE_FROM: usize = 64 * 1024;

/// `Numo::Shared::Native.export(array)` from `NArray#marshal_dump`: for an
/// array of a value being sent to another process (see `exporting`), the
/// handle to write instead of its data; nil otherwise (Numo's own data is
/// written).
pub fn export(obj: Value) -> Result<Option<RString>> {
    let Some(target) = exporting::exporting() else {
        return Ok(None);
    };
    let Some(facts) = facts::facts_of(obj) else {
        return Ok(None); // not a numeric array, or one with no data yet
    };
    let (obj, facts) = in_host_order(obj, facts)?;
    let arena = match &target {
        Target::Parent(arena) => Arc::clone(arena),
        Target::Worker(link) => Arc::clone(&link.arena),
    };
    let Some(place) = route(obj, &facts, &arena, &target)? else {
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

/// Where the receiver will find `obj`'s data, putting it there if needed;
/// `None` when it must travel as Numo's own marshal data.
fn route(obj: Value, facts: &ArrayFacts, arena: &Shared, target: &Target) -> Result<Option<Place>> {
    if let Some(place) = reference(obj, facts, arena, target)? {
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
    let (id, channel) = match target {
        Target::Parent(_) => (worker::next_block_id(), &arena.channel),
        Target::Worker(link) => (link.next_block_id(), &link.channel),
    };
    let sent = with_element_bytes(obj, facts, |bytes| {
        memfd::copy_into_new(c"numo-shared-result", bytes, "a parallel result")
    })
    .and_then(|fd| channel.send(&fd, id, facts.bytes));
    match sent {
        Ok(()) => Ok(Some(Place::Block { id })),
        Err(Error::Os { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

/// A reference to memory the receiver shares: a shared array of the parent,
/// or a view of one (not read-only or copy-on-write memory: another
/// process's mapping of it may hold other values). `None` for anything
/// else, and for a view whose index tables find no room in the region (it
/// is copied instead); an error for a parent's shared array a pool's worker
/// cannot be given (see `WorkerLink::share`).
fn reference(
    obj: Value,
    facts: &ArrayFacts,
    arena: &Shared,
    target: &Target,
) -> Result<Option<Place>> {
    let shares = |serial: u64, creator: i32, shareable: bool| -> Result<bool> {
        match target {
            Target::Parent(_) => Ok(shareable && creator == arena.owner),
            Target::Worker(link) => match shareable {
                true => link.share(serial).map(|()| true),
                false => Ok(false),
            },
        }
    };
    if let Some(view) = facts::view_of(obj) {
        if !shares(view.serial, view.creator, view.shareable)? {
            return Ok(None);
        }
        if let Some(offset) = contiguous_offset(&view, facts) {
            return Ok(Some(Place::Reference {
                serial: view.serial,
                offset: offset as u64,
            }));
        }
        let Ok((geometry, tables)) = view::geometry_of(&view) else {
            return Ok(None);
        };
        let (tables_offset, tables_len) = if tables.is_empty() {
            (0, 0)
        } else {
            match arena.region.as_ref().and_then(|r| r.pack(&tables)) {
                Some(offset) => (offset, tables.len() as u64),
                None => return Ok(None),
            }
        };
        return Ok(Some(Place::View {
            geometry,
            tables_offset,
            tables_len,
        }));
    }
    match facts::location(obj) {
        Some(l) if shares(l.serial, l.creator, l.shareable)? => Ok(Some(Place::Reference {
            serial: l.serial,
            offset: l.offset as u64,
        })),
        _ => Ok(None),
    }
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
