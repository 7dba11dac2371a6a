//! When the NArrays a process marshals are exported (a handle written
//! instead of their data), and to whom.
//!
//! Arrays are ordinary Numo arrays. Only while a value that crosses to
//! another process is marshaled does an NArray's `marshal_dump` ask `export`
//! for a handle instead of Numo's data: a worker's value for the parent
//! (armed by `arena.arm_exports(value)` after each item whose value the
//! parallel gem sends back), or a pool's items for one of its workers
//! (armed by `link.arm_items(items)`). `Marshal.dump` tells this module when
//! it begins and ends (`Numo::Parallel::ResultDump`). While armed, the
//! `Marshal.dump` of the armed value itself by the thread that armed it
//! exports the NArrays it writes at depth one: part of the value as Marshal
//! writes it (in Arrays, Hashes, Structs, objects' instance variables, or
//! what an object's own `marshal_dump` returns). A `Marshal.dump` that an
//! object's `marshal_dump` makes inside (depth two) writes Numo's data, as
//! does a dump of anything else (a TracePoint's, a trap handler's), every
//! dump once the armed one ended (which disarms), and every dump of another
//! thread.

use std::sync::{Arc, Mutex, MutexGuard};

use rb_sys::VALUE;

use crate::memory::pid;
use crate::parallel::arena::Shared;
use crate::parallel::link::WorkerLink;

/// Where exported arrays go.
#[derive(Clone)]
pub enum Target {
    /// A worker's value, to the parent that made the arena.
    Parent(Arc<Shared>),
    /// A pool's items, from its parent to one of its workers.
    Worker(Arc<WorkerLink>),
}

struct Armed {
    pid: i32,
    /// The Ruby thread whose `Marshal.dump` of the armed value exports.
    thread: VALUE,
    /// How deep that thread is in that dump (0 before it began).
    depth: u32,
    target: Target,
}

static ARMED: Mutex<Option<Armed>> = Mutex::new(None);

/// The armed value, a root of Ruby's GC (`rb_gc_register_address`), which
/// marks and pins it: it stays alive, and the same object, while armed.
static mut ARMED_VALUE: VALUE = rb_sys::special_consts::Qnil as VALUE;

/// Registers `ARMED_VALUE` with Ruby's GC. Once, at load.
pub fn register_root() {
    // SAFETY: a static that lives as long as the process; written only by
    // Ruby threads holding the GVL.
    unsafe { rb_sys::rb_gc_register_address(std::ptr::addr_of_mut!(ARMED_VALUE)) };
}

fn set_armed_value(value: VALUE) {
    // SAFETY: see ARMED_VALUE; called from Ruby threads only.
    unsafe { std::ptr::addr_of_mut!(ARMED_VALUE).write(value) };
}

fn armed_value() -> VALUE {
    // SAFETY: see ARMED_VALUE.
    unsafe { std::ptr::addr_of!(ARMED_VALUE).read() }
}

/// The lock: no Ruby code runs while it is held.
fn lock() -> MutexGuard<'static, Option<Armed>> {
    ARMED.lock().unwrap_or_else(|e| e.into_inner())
}

fn current_thread() -> VALUE {
    // SAFETY: called from a Ruby thread.
    unsafe { rb_sys::rb_thread_current() }
}

/// The armed state of this thread of this process (not of a process forked
/// from it, which inherits the state).
fn mine(guard: &mut Option<Armed>) -> Option<&mut Armed> {
    let (me, thread) = (pid::current(), current_thread());
    guard
        .as_mut()
        .filter(|armed| armed.pid == me && armed.thread == thread)
}

/// Arms exports to `target` for the calling thread's `Marshal.dump` of
/// `value`; `None` disarms.
pub fn arm(armed: Option<(Target, VALUE)>) {
    let mut guard = lock();
    match armed {
        Some((target, value)) => {
            set_armed_value(value);
            *guard = Some(Armed {
                pid: pid::current(),
                thread: current_thread(),
                depth: 0,
                target,
            });
        }
        None => {
            set_armed_value(rb_sys::special_consts::Qnil as VALUE);
            *guard = None;
        }
    }
}

/// `Numo::Shared::Native.dump_begins(object)`, at the start of every
/// `Marshal.dump` in a process that may export, with the object dumped.
pub fn dump_begins(object: magnus::Value) {
    use magnus::rb_sys::AsRawValue;
    let mut guard = lock();
    if let Some(armed) = mine(&mut guard) {
        if armed.depth > 0 || object.as_raw() == armed_value() {
            armed.depth += 1;
        }
    }
}

/// `Numo::Shared::Native.dump_ends`, at the end of every `Marshal.dump`,
/// returned or raised: the end of the outermost one disarms.
pub fn dump_ends() {
    let mut guard = lock();
    if let Some(armed) = mine(&mut guard) {
        if armed.depth > 0 {
            armed.depth -= 1;
            if armed.depth == 0 {
                *guard = None;
                set_armed_value(rb_sys::special_consts::Qnil as VALUE);
            }
        }
    }
}

/// For an NArray being marshaled now: where to export it when it is part
/// of the value being sent (see the module comment), else `None` (Numo's
/// own data is written).
pub fn exporting() -> Option<Target> {
    let mut guard = lock();
    let armed = mine(&mut guard)?;
    (armed.depth == 1).then(|| armed.target.clone())
}
