//! Waits that release Ruby's GVL, so that the process's other Ruby threads
//! run meanwhile, and that Ruby can cut short (an interrupt, `Thread#raise`,
//! `Timeout`): Ruby calls the unblocking function, which wakes the wait.
//! A process whose only Ruby thread waits keeps the GVL (`short_wait`).

use std::ffi::c_void;

/// Runs `wait` without the GVL; `wake` is called (from another thread) when
/// Ruby needs this thread back, and must make `wait` return soon.
pub fn without_gvl<W: FnMut(), U: Fn()>(mut wait: W, wake: &U) {
    unsafe extern "C" fn call<W: FnMut()>(data: *mut c_void) -> *mut c_void {
        // SAFETY: `data` is the `wait` closure below, alive for the call.
        let wait = unsafe { &mut *(data as *mut W) };
        wait();
        std::ptr::null_mut()
    }
    unsafe extern "C" fn unblock<U: Fn()>(data: *mut c_void) {
        // SAFETY: `data` is the `wake` closure, alive while the call runs.
        let wake = unsafe { &*(data as *const U) };
        wake();
    }
    // SAFETY: both closures outlive the call; `wait` touches no Ruby object.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(call::<W>),
            &mut wait as *mut W as *mut c_void,
            Some(unblock::<U>),
            wake as *const U as *mut c_void,
        );
    }
}

/// Runs `wait`, which must return within a short bounded time (a futex wait
/// with a timeout of milliseconds; a signal also ends it, EINTR): holding the
/// GVL when this is the process's only Ruby thread, as nothing else could run
/// meanwhile (releasing and taking back the GVL wakes Ruby's timer thread, a
/// cost that exceeded a pool's whole round trip), else as `without_gvl`. A
/// pending interrupt (Ctrl-C) is taken by Ruby once `wait` returns.
pub fn short_wait<W: FnMut(), U: Fn()>(mut wait: W, wake: &U) {
    if alone() {
        wait();
    } else {
        without_gvl(wait, wake);
    }
}

/// Whether the calling thread is its process's only Ruby thread. Called with
/// the GVL held, as every method of the extension.
pub fn alone() -> bool {
    // SAFETY: reads the VM's thread count; the caller holds the GVL.
    unsafe { rb_sys::rb_thread_alone() != 0 }
}
