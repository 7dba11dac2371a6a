//! This process's pid, without a system call each time: `Numo::Parallel`
//! asks for it for every item and every result. The cache is cleared in the
//! child of every `fork` (a `pthread_atfork` handler), and is used only to
//! decide where results go, never to decide which process frees memory.

use std::sync::atomic::{AtomicI32, Ordering};

static PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forget_in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// Clears the cache in the child of every later `fork`. Called once, at load.
pub fn watch_forks() {
    // SAFETY: the handler only stores to an atomic, as a child handler must.
    unsafe {
        libc::pthread_atfork(None, None, Some(forget_in_child));
    }
}

/// The pid of this process.
pub fn current() -> i32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = crate::sys::getpid();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}
