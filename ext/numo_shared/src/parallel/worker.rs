//! What a forked worker knows of the call (or pool) it serves: the arena
//! its values go to, the ids of the memfds it sends, and for a pool's
//! worker, the link its items come through.

use std::sync::{Arc, Mutex, MutexGuard};

use rb_sys::VALUE;

use crate::memory::pid;
use crate::parallel::arena::{Arena, Shared};
use crate::parallel::exporting::{self, Target};
use crate::parallel::link::WorkerLink;

struct Worker {
    pid: i32,
    arena: Arc<Shared>,
    next_id: u32,
    /// In a pool's worker: where its items come from.
    link: Option<Arc<WorkerLink>>,
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

/// `arena.enter_worker` at the start of every item: 0 in the process that
/// made the arena (the gem runs the block in threads or in-process), 2 the
/// first time in a worker process, 1 afterwards. Disarms any export left
/// armed by the item before.
pub fn enter(arena: &Arena) -> u8 {
    enter_with(arena, None)
}

/// `enter` for a pool's worker, whose items come through `link`.
pub fn enter_with(arena: &Arena, link: Option<Arc<WorkerLink>>) -> u8 {
    let shared = arena.shared();
    let me = pid::current();
    if shared.owner == me {
        return 0;
    }
    exporting::arm(None);
    let mut guard = lock();
    if let Some(worker) = guard
        .as_mut()
        .filter(|w| w.pid == me && Arc::ptr_eq(&w.arena, shared))
    {
        if link.is_some() {
            worker.link = link;
        }
        return 1;
    }
    *guard = Some(Worker {
        pid: me,
        arena: Arc::clone(shared),
        next_id: 0,
        link,
    });
    drop(guard);
    shared.channel.close_receiver_copy();
    2
}

/// `arena.arm_exports(value)`: in a worker, the calling thread's
/// `Marshal.dump` of `value` (the gem's, of an item's value) exports its
/// NArrays to the parent.
pub fn arm_results(value: VALUE) {
    let target = mine(&mut lock()).map(|w| Target::Parent(Arc::clone(&w.arena)));
    exporting::arm(target.map(|target| (target, value)));
}

/// A fresh id for a memfd this worker sends: its pid, and a count.
pub fn next_block_id() -> u64 {
    let mut guard = lock();
    match mine(&mut guard) {
        Some(worker) => {
            worker.next_id += 1;
            (u64::from(worker.pid as u32) << 32) | u64::from(worker.next_id)
        }
        None => 0,
    }
}

/// In a pool's worker: the link its items come through, when `arena` is
/// its pool's.
pub fn link_for(arena: &Arc<Shared>) -> Option<Arc<WorkerLink>> {
    let mut guard = lock();
    let worker = mine(&mut guard)?;
    Arc::ptr_eq(&worker.arena, arena)
        .then(|| worker.link.clone())
        .flatten()
}
