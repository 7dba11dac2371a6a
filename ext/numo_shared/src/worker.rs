//! The worker side of `Numo::Parallel`: what a forked worker does so that
//! the NArrays of its results reach the parent without their bytes going
//! through the pipe.
//!
//! At its first item a worker activates its memory pool (see `pool`): Numo
//! arrays it allocates from then on live in memory the parent can map. After
//! each item whose result the parallel gem sends back, `expect_exports` walks
//! the result (Arrays, Hashes, Structs, plain objects' instance variables)
//! and records the NArrays in it. While the gem marshals the result, each of
//! those arrays' `marshal_dump` asks `export` for a handle; anything else
//! (another array, or the same array in a later `Marshal.dump`, such as an
//! `at_exit` hook's) gets Numo's own marshal data, as without this gem.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use magnus::{prelude::*, rb_sys::AsRawValue, RString, Value};
use rb_sys::{ruby_value_type, VALUE};

use crate::arena::{Arena, Shared};
use crate::error::Result;
use crate::handle::{Handle, Place};
use crate::numo::{self, Step};
use crate::pid;
use crate::pool;
use crate::ruby_alloc;
use crate::shared_array::{self, ArrayFacts, Plan};
use crate::view;

/// Arrays of at most this many bytes travel in the handle itself: their
/// bytes are no more than a handle's.
pub const INLINE_BYTES: usize = 64;

struct Worker {
    pid: i32,
    arena: Arc<Shared>,
    /// The NArrays (addresses) of the current result not yet marshaled.
    pending: Vec<VALUE>,
    next_id: u32,
}

static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

/// The worker state's lock: no Ruby code runs while it is held.
fn lock() -> MutexGuard<'static, Option<Worker>> {
    WORKER.lock().unwrap_or_else(|e| e.into_inner())
}

/// `arena.enter_worker` at the start of every item: 0 in the process that
/// made the arena (the gem runs the block in threads or in-process), 2 the
/// first time in a worker process, 1 afterwards.
pub fn enter(arena: &Arena) -> u8 {
    let shared = arena.shared();
    let me = pid::current();
    if shared.owner == me {
        return 0;
    }
    let mut guard = lock();
    if let Some(worker) = guard
        .as_mut()
        .filter(|w| w.pid == me && Arc::ptr_eq(&w.arena, shared))
    {
        worker.pending.clear();
        return 1;
    }
    *guard = Some(Worker {
        pid: me,
        arena: Arc::clone(shared),
        pending: Vec::new(),
        next_id: 0,
    });
    drop(guard);
    shared.close_receiver_copy();
    pool::activate();
    arm_allocation();
    2
}

/// Gives `Numo::Shared::WorkerAllocation`, prepended to Numo's numeric
/// classes when the gem is loaded, its `allocate`, in this (worker) process
/// only: large arrays get memory from the pool from now on. Prepending costs
/// a forked process copies of many pages it shares with its parent;
/// defining one method in a module already in place costs few.
pub fn arm_allocation() {
    let Ok(ruby) = magnus::Ruby::get() else {
        return;
    };
    let hook: Option<magnus::RModule> = ruby
        .class_object()
        .const_get::<_, magnus::RModule>("Numo")
        .and_then(|numo| numo.const_get::<_, magnus::RModule>("Shared"))
        .and_then(|shared| shared.const_get("WorkerAllocation"))
        .ok();
    if let Some(hook) = hook {
        let _ = hook.define_method("allocate", magnus::method!(allocate, 0));
    }
}

/// `arena.expect_exports(result)` after an item whose result the gem sends
/// back: records the NArrays found in `result`.
pub fn expect_exports(result: Value) {
    let found = find_narrays(result.as_raw());
    let me = pid::current();
    if let Some(worker) = lock().as_mut().filter(|w| w.pid == me) {
        worker.pending = found;
    }
}

/// The NArrays reachable from `root` through Arrays, Hashes, Structs and
/// the instance variables of plain objects (those Marshal dumps field by
/// field). Nothing here allocates a Ruby object or calls Ruby code, so no
/// GC runs (and nothing moves) during the walk.
fn find_narrays(root: VALUE) -> Vec<VALUE> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(value) = stack.pop() {
        // SAFETY: every value on the stack is reachable from `root`, which
        // the caller keeps alive, and no GC can run during the walk.
        unsafe {
            if rb_sys::SPECIAL_CONST_P(value) {
                continue;
            }
            match rb_sys::RB_BUILTIN_TYPE(value) {
                // Once each: Marshal writes an array met again as a link, so
                // a second entry would stay expected after the dump.
                ruby_value_type::RUBY_T_DATA
                    if shared_array::is_narray(value) && seen.insert(value) =>
                {
                    found.push(value)
                }
                ruby_value_type::RUBY_T_ARRAY if seen.insert(value) => {
                    let len = rb_sys::RARRAY_LEN(value);
                    stack.extend((0..len).map(|i| rb_sys::rb_ary_entry(value, i)));
                }
                ruby_value_type::RUBY_T_HASH if seen.insert(value) => {
                    rb_sys::rb_hash_foreach(
                        value,
                        Some(push_pair),
                        &mut stack as *mut Vec<VALUE> as VALUE,
                    );
                }
                ruby_value_type::RUBY_T_STRUCT if seen.insert(value) => {
                    let len = rb_sys::rb_num2long(rb_sys::rb_struct_size(value));
                    stack.extend(
                        (0..len).map(|i| {
                            rb_sys::rb_struct_aref(value, rb_sys::rb_int2inum(i as isize))
                        }),
                    );
                }
                ruby_value_type::RUBY_T_OBJECT if !marshals_itself(value) && seen.insert(value) => {
                    rb_sys::rb_ivar_foreach(
                        value,
                        Some(push_ivar),
                        &mut stack as *mut Vec<VALUE> as VALUE,
                    );
                }
                _ => {}
            }
        }
    }
    found
}

extern "C" fn push_pair(key: VALUE, value: VALUE, stack: VALUE) -> std::ffi::c_int {
    // SAFETY: `stack` is the walk's Vec, alive during rb_hash_foreach.
    let stack = unsafe { &mut *(stack as *mut Vec<VALUE>) };
    stack.push(key);
    stack.push(value);
    rb_sys::st_retval::ST_CONTINUE as std::ffi::c_int
}

extern "C" fn push_ivar(_name: rb_sys::ID, value: VALUE, stack: VALUE) -> std::ffi::c_int {
    // SAFETY: as in push_pair.
    let stack = unsafe { &mut *(stack as *mut Vec<VALUE>) };
    stack.push(value);
    rb_sys::st_retval::ST_CONTINUE as std::ffi::c_int
}

/// True for objects whose class defines `marshal_dump` or `_dump`: Marshal
/// does not dump their instance variables, so their NArrays are theirs.
unsafe fn marshals_itself(value: VALUE) -> bool {
    let klass = (*(value as *const rb_sys::RBasic)).klass;
    ["marshal_dump", "_dump"].iter().any(|name| {
        let id = rb_sys::rb_intern2(name.as_ptr() as *const std::ffi::c_char, name.len() as _);
        rb_sys::rb_method_boundp(klass, id, 0) != 0
    })
}

/// `Numo::Shared::Native.export(array)` from `NArray#marshal_dump`: in a
/// worker, for an array of the result being marshaled, the handle to send
/// instead of its data; nil otherwise (Numo's own marshal data is sent).
pub fn export(obj: Value) -> Result<Option<RString>> {
    let me = pid::current();
    let (arena, id) = {
        let mut guard = lock();
        let Some(worker) = guard.as_mut().filter(|w| w.pid == me) else {
            return Ok(None);
        };
        let Some(at) = worker.pending.iter().position(|&v| v == obj.as_raw()) else {
            return Ok(None);
        };
        worker.pending.swap_remove(at);
        worker.next_id += 1;
        let id = (u64::from(me as u32) << 32) | u64::from(worker.next_id);
        (Arc::clone(&worker.arena), id)
    };
    let Some(facts) = shared_array::export_facts(obj) else {
        return Ok(None); // not a numeric array, or one with no data yet
    };
    // Numo's own marshal_load turns byte-swapped data to the host's order;
    // so does this: a host-order copy is made here, in the worker.
    let (obj, facts) = if facts.flags & numo::FLAG_BYTE_SWAPPED != 0 {
        let host: Value = obj
            .funcall("to_host", ())
            .map_err(crate::error::Error::Ruby)?;
        match shared_array::export_facts(host) {
            Some(facts) if facts.flags & numo::FLAG_BYTE_SWAPPED == 0 => (host, facts),
            _ => return Ok(None),
        }
    } else {
        (obj, facts)
    };
    let Some(place) = place_for(obj, &facts, &arena, id)? else {
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

/// Where the parent will find `obj`'s data, putting it there if needed.
fn place_for(obj: Value, facts: &ArrayFacts, arena: &Shared, id: u64) -> Result<Option<Place>> {
    // Computed in memory of this worker's pool: handed over as it is.
    if let Some(fd) = shared_array::hand_over(obj, facts.bytes)? {
        arena.send_block(&fd, id, facts.bytes)?;
        return Ok(Some(Place::Block { id }));
    }
    // Memory the parent mapped before forking: passed by reference.
    if let Some(place) = reference(obj, facts, arena)? {
        return Ok(Some(place));
    }
    // Anything else is copied once: tiny arrays into the handle itself,
    // small ones into the region, large ones into a block of the pool.
    if facts.bytes <= INLINE_BYTES {
        return Ok(Some(Place::Inline {
            bytes: element_bytes(obj, facts)?,
        }));
    }
    if facts.bytes < pool::MIN_BYTES {
        if let Some(place) = pack_small(obj, facts, arena)? {
            return Ok(Some(place));
        }
    }
    copy_to_block(obj, facts, arena, id)
}

/// A reference to memory the parent shares with this worker: a shared
/// array it made before the map, or a view of one (not read-only or
/// copy-on-write memory: the parent's mapping of it may hold other values).
fn reference(obj: Value, facts: &ArrayFacts, arena: &Shared) -> Result<Option<Place>> {
    let owner = arena.owner;
    if let Some(view) = shared_array::view_of(obj).filter(|v| v.creator == owner && v.shareable) {
        if let Some(offset) = contiguous_offset(&view, facts) {
            return Ok(Some(Place::Reference {
                serial: view.serial,
                offset: offset as u64,
            }));
        }
        let (geometry, tables) = view::geometry_of(&view);
        let (tables_offset, tables_len) = if tables.is_empty() {
            (0, 0)
        } else {
            match arena.region.as_ref().and_then(|r| r.pack(&tables)) {
                Some(offset) => (offset, tables.len() as u64),
                None => return Ok(None), // no room for the tables: copy instead
            }
        };
        return Ok(Some(Place::View {
            serial: geometry.serial,
            data_offset: geometry.data_offset as u64,
            data_bytes: geometry.data_bytes as u64,
            view_offset: geometry.offset as u64,
            index_mask: geometry.index_mask,
            strides: geometry.strides.iter().map(|&s| s as i64).collect(),
            tables_offset,
            tables_len,
        }));
    }
    Ok(shared_array::location(obj)
        .filter(|l| l.creator == owner && l.shareable)
        .map(|l| Place::Reference {
            serial: l.serial,
            offset: l.offset as u64,
        }))
}

/// Where a view's data starts in its segment if its elements lie there
/// one after another in order (then it is passed as a plain array), or
/// `None`. Bit views, whose offsets count bits, are always passed as views.
fn contiguous_offset(view: &shared_array::ViewOf, facts: &ArrayFacts) -> Option<usize> {
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

/// Packs a small array's bytes into the region; `None` when it is full.
fn pack_small(obj: Value, facts: &ArrayFacts, arena: &Shared) -> Result<Option<Place>> {
    let Some(region) = arena.region.as_ref() else {
        return Ok(None);
    };
    let offset = match shared_array::data_bytes_of(obj) {
        // A data array: its bytes, copied straight from its memory.
        Some(bytes) => region.pack(bytes).map(|offset| (offset, bytes.len())),
        None => {
            let bytes = element_bytes(obj, facts)?;
            region.pack(&bytes).map(|offset| (offset, bytes.len()))
        }
    };
    Ok(offset.map(|(offset, len)| Place::Bytes {
        offset,
        len: len as u64,
    }))
}

/// A copy of `obj`'s elements, in order, as Numo lays them out in a data
/// array (a Bit view is copied first: Numo reads Bit views from a wrong
/// offset).
fn element_bytes(obj: Value, facts: &ArrayFacts) -> Result<Vec<u8>> {
    if let Some(bytes) = shared_array::data_bytes_of(obj) {
        return Ok(bytes.to_vec());
    }
    let source = if facts.element_bytes.is_none() {
        obj.funcall::<_, _, Value>("dup", ())
            .map_err(crate::error::Error::Ruby)?
    } else {
        obj
    };
    let binary: RString = source
        .funcall("to_binary", ())
        .map_err(crate::error::Error::Ruby)?;
    // SAFETY: the bytes are copied before any Ruby code runs.
    Ok(unsafe { binary.as_slice() }.to_vec())
}

/// Copies `obj` into a new block of the pool and hands that over; `None`
/// when the pool cannot give one (the array then travels as Numo's data).
fn copy_to_block(obj: Value, facts: &ArrayFacts, arena: &Shared, id: u64) -> Result<Option<Place>> {
    let Some(segment) = pool::take_for_export(facts.bytes) else {
        return Ok(None);
    };
    let klass = crate::numo::real_class(obj);
    let plan = Plan::for_class(klass, facts.shape.clone())?;
    let target = plan.wrap(klass, Some(segment))?;
    let _: Value = target
        .funcall("store", (obj,))
        .map_err(crate::error::Error::Ruby)?;
    match shared_array::hand_over_carrier(target, facts.bytes)? {
        Some(fd) => {
            arena.send_block(&fd, id, facts.bytes)?;
            Ok(Some(Place::Block { id }))
        }
        None => Ok(None), // not a block of the pool (cannot happen)
    }
}

/// The allocation hook prepended to Numo's numeric classes in a worker
/// (`Numo::Shared::WorkerAllocation#allocate`): large arrays get memory
/// from the pool, everything else Numo's own.
pub fn allocate(rb_self: Value) -> std::result::Result<Value, magnus::Error> {
    if shared_array::adopt_allocating(rb_self, |bytes| {
        if bytes < pool::MIN_BYTES {
            None
        } else {
            pool::take(bytes)
        }
    })? {
        return Ok(rb_self);
    }
    numo::call_super()
}
