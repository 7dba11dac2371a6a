//! What a forked worker knows of the call it serves, and when the NArrays it
//! marshals are a result's.
//!
//! A worker's arrays are ordinary Numo arrays. Only while the parallel gem
//! marshals the value of an item does an NArray's `marshal_dump` ask
//! `export` for a handle instead of Numo's data. The Ruby side arms the
//! export after each item whose value the gem sends back
//! (`arena.arm_exports`), and `Marshal.dump` in a worker tells this module
//! when it begins and ends (`Numo::Parallel::ResultDump`). While armed, an
//! NArray is exported when the thread that armed it dumps it at depth one:
//! part of the value itself as Marshal writes it (in Arrays, Hashes,
//! Structs, objects' instance variables, or what an object's own
//! `marshal_dump` returns). A `Marshal.dump` that an object's `marshal_dump`
//! makes inside (depth two) writes Numo's data, as does every dump once the
//! outermost one ended (which disarms), and every dump of another thread.

use std::sync::{Arc, Mutex, MutexGuard};

use rb_sys::VALUE;

use crate::memory::pid;
use crate::parallel::arena::{Arena, Shared};

struct Worker {
    pid: i32,
    arena: Arc<Shared>,
    /// The Ruby thread whose next outermost `Marshal.dump` exports, or 0.
    armed: VALUE,
    /// How deep that thread is in `Marshal.dump` calls.
    depth: u32,
    next_id: u32,
}

static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

/// The worker state's lock: no Ruby code runs while it is held.
fn lock() -> MutexGuard<'static, Option<Worker>> {
    WORKER.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's worker state, if it is a worker (not a process forked
/// from one, which inherits the state but not the role).
fn mine(guard: &mut Option<Worker>) -> Option<&mut Worker> {
    let me = pid::current();
    guard.as_mut().filter(|w| w.pid == me)
}

fn current_thread() -> VALUE {
    // SAFETY: called from a Ruby thread.
    unsafe { rb_sys::rb_thread_current() }
}

/// `arena.enter_worker` at the start of every item: 0 in the process that
/// made the arena (the gem runs the block in threads or in-process), 2 the
/// first time in a worker process, 1 afterwards. Disarms any export left
/// armed by the item before.
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
        worker.armed = 0;
        worker.depth = 0;
        return 1;
    }
    *guard = Some(Worker {
        pid: me,
        arena: Arc::clone(shared),
        armed: 0,
        depth: 0,
        next_id: 0,
    });
    drop(guard);
    shared.channel.close_receiver_copy();
    2
}

/// `arena.arm_exports(armed)`: with true, the calling thread's next
/// outermost `Marshal.dump` is the gem's dump of an item's value, whose
/// NArrays are exported; with false, nothing is.
pub fn arm(armed: bool) {
    let thread = if armed { current_thread() } else { 0 };
    if let Some(worker) = mine(&mut lock()) {
        worker.armed = thread;
        worker.depth = 0;
    }
}

/// `Numo::Shared::Native.dump_begins`, at the start of every `Marshal.dump`
/// in a worker.
pub fn dump_begins() {
    let thread = current_thread();
    if let Some(worker) = mine(&mut lock()).filter(|w| w.armed == thread && thread != 0) {
        worker.depth += 1;
    }
}

/// `Numo::Shared::Native.dump_ends`, at the end of every `Marshal.dump` in a
/// worker, returned or raised: the end of the outermost one disarms.
pub fn dump_ends() {
    let thread = current_thread();
    if let Some(worker) = mine(&mut lock()).filter(|w| w.armed == thread && thread != 0) {
        worker.depth = worker.depth.saturating_sub(1);
        if worker.depth == 0 {
            worker.armed = 0;
        }
    }
}

/// For an NArray being marshaled now: the arena and a fresh block id when
/// it is part of the value the gem is sending (see the module comment),
/// else `None` (Numo's own data is written).
pub fn exporting() -> Option<(Arc<Shared>, u64)> {
    let thread = current_thread();
    let mut guard = lock();
    let worker = mine(&mut guard)?;
    if worker.armed != thread || worker.depth != 1 {
        return None;
    }
    worker.next_id += 1;
    let id = (u64::from(worker.pid as u32) << 32) | u64::from(worker.next_id);
    Some((Arc::clone(&worker.arena), id))
}
