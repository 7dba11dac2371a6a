//! `Doorbell` (Ruby's `Numo::Shared::Doorbell`): how a pool's parent and its
//! workers tell each other that a message waits, through a page of shared
//! memory, with no pipe round trip.
//!
//! Each worker has a slot: a bell (a count of messages the parent left it,
//! a futex word the worker sleeps on), where its message is, a count of its
//! answers, and where its answer is. The parent's futex word counts every
//! answer of every worker. To send, the parent puts the message in the
//! arena's region (or, when it is full, on the worker's socket), records
//! where, rings the worker's bell and wakes it; the worker answers the same
//! way and wakes the parent. A step of a pool (every worker one message and
//! one answer) costs a wake and a sleep on each side, and no system call
//! for the data.
//!
//! The page is mapped shared and anonymous before the workers are forked,
//! so every worker (a replacement too, forked later) maps the same page.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::memory::segment;
use crate::numo::nogvl;
use crate::sys;

/// Where a message or answer is: its offset in the region, or this when it
/// travels on the socket instead.
pub const ON_SOCKET: u64 = u64::MAX;

#[repr(C)]
struct Header {
    /// Answers of all workers so far (the parent's futex word).
    answers: AtomicU32,
    /// Set when the pool closes: every worker stops waiting.
    closing: AtomicU32,
    /// The count of `answers` the waiting parent needs: a worker whose
    /// answer reaches it wakes the parent (one wake per wait, not one per
    /// answer).
    wanted: AtomicU32,
}

#[repr(C, align(64))]
struct Slot {
    /// Messages the parent left this worker (its futex word).
    bell: AtomicU32,
    /// Answers this worker gave.
    answered: AtomicU32,
    message_at: AtomicU64,
    message_len: AtomicU64,
    answer_at: AtomicU64,
    answer_len: AtomicU64,
}

#[magnus::wrap(class = "Numo::Shared::Doorbell", free_immediately, size)]
pub struct Doorbell {
    addr: usize,
    len: usize,
    workers: usize,
    /// The process that made it (which unmaps it).
    owner: i32,
}

// SAFETY: the page is shared memory used only through atomics.
unsafe impl Send for Doorbell {}

impl Doorbell {
    /// `Numo::Shared::Doorbell.new(workers)` in a pool's parent, before it
    /// forks any worker.
    pub fn new(workers: usize) -> Result<Doorbell> {
        let bytes = std::mem::size_of::<Slot>()
            .checked_mul(workers + 1)
            .ok_or_else(|| Error::Argument(format!("{workers} workers are too many")))?;
        let len = bytes.div_ceil(sys::page_size()) * sys::page_size();
        // SAFETY: a fresh anonymous shared mapping, zero-filled.
        let addr = unsafe {
            segment::mmap_raw(
                None,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        }
        .map_err(|errno| Error::os(errno, "mapping a pool's doorbells"))?;
        Ok(Doorbell {
            addr,
            len,
            workers,
            owner: sys::getpid(),
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the first slot's room holds the header, in our mapping.
        unsafe { &*(self.addr as *const Header) }
    }

    fn slot(&self, worker: usize) -> Result<&Slot> {
        if worker >= self.workers {
            return Err(Error::Argument(format!(
                "no worker {worker} in a pool of {}",
                self.workers
            )));
        }
        // SAFETY: slot `worker` lies after the header, inside the mapping.
        Ok(unsafe { &*((self.addr + (worker + 1) * std::mem::size_of::<Slot>()) as *const Slot) })
    }

    /// `doorbell.ring(worker, at, len)` in the parent: a message of `len`
    /// bytes waits for `worker` at `at` in the region (or `ON_SOCKET`).
    pub fn ring(&self, worker: usize, at: u64, len: u64) -> Result<()> {
        let slot = self.slot(worker)?;
        slot.message_at.store(at, Ordering::Relaxed);
        slot.message_len.store(len, Ordering::Relaxed);
        slot.bell.fetch_add(1, Ordering::Release);
        sys::futex_wake(&slot.bell);
        Ok(())
    }

    /// `doorbell.wait_bell(worker, seen, timeout_ms)` in a worker: waits
    /// (see `nogvl::short_wait`) until its bell counts past `seen` or the pool
    /// closes, at most `timeout_ms`; returns the bell's count (-1 when the
    /// pool closes).
    pub fn wait_bell(&self, worker: usize, seen: u32, timeout_ms: u64) -> Result<i64> {
        let slot = self.slot(worker)?;
        let header = self.header();
        spin_while(|| slot.bell.load(Ordering::Acquire) == seen);
        if slot.bell.load(Ordering::Acquire) == seen && header.closing.load(Ordering::Acquire) == 0
        {
            nogvl::short_wait(|| sys::futex_wait(&slot.bell, seen, timeout_ms), &|| {
                sys::futex_wake(&slot.bell)
            });
        }
        if header.closing.load(Ordering::Acquire) != 0 {
            return Ok(-1);
        }
        Ok(i64::from(slot.bell.load(Ordering::Acquire)))
    }

    /// `doorbell.rung(worker)`: how many messages the worker was sent (a new
    /// worker in a slot that served another starts from there).
    pub fn rung(&self, worker: usize) -> Result<u32> {
        Ok(self.slot(worker)?.bell.load(Ordering::Acquire))
    }

    /// `doorbell.message(worker)`: where the worker's message is: [at, len].
    pub fn message(&self, worker: usize) -> Result<(u64, u64)> {
        let slot = self.slot(worker)?;
        Ok((
            slot.message_at.load(Ordering::Relaxed),
            slot.message_len.load(Ordering::Relaxed),
        ))
    }

    /// `doorbell.answer(worker, at, len)` in a worker: its answer waits at
    /// `at` (or `ON_SOCKET`); wakes the parent.
    pub fn answer(&self, worker: usize, at: u64, len: u64) -> Result<()> {
        let slot = self.slot(worker)?;
        slot.answer_at.store(at, Ordering::Relaxed);
        slot.answer_len.store(len, Ordering::Relaxed);
        slot.answered.fetch_add(1, Ordering::Release);
        let header = self.header();
        // SeqCst with `wait_answers`: either the parent sees this answer
        // before it sleeps, or this sees the count the parent wants.
        let count = header
            .answers
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);
        if count.wrapping_sub(header.wanted.load(Ordering::SeqCst)) as i32 >= 0 {
            sys::futex_wake(&header.answers);
        }
        Ok(())
    }

    /// `doorbell.answered(worker)`: how many answers the worker gave.
    pub fn answered(&self, worker: usize) -> Result<u32> {
        Ok(self.slot(worker)?.answered.load(Ordering::Acquire))
    }

    /// `doorbell.answer_of(worker)`: where its last answer is: [at, len].
    pub fn answer_of(&self, worker: usize) -> Result<(u64, u64)> {
        let slot = self.slot(worker)?;
        Ok((
            slot.answer_at.load(Ordering::Relaxed),
            slot.answer_len.load(Ordering::Relaxed),
        ))
    }

    /// `doorbell.answers`: every worker's answers so far.
    pub fn answers(&self) -> u32 {
        self.header().answers.load(Ordering::Acquire)
    }

    /// `doorbell.wait_answers(seen, want, timeout_ms)` in the parent: waits
    /// (see `nogvl::short_wait`) until the answers count `want` past `seen`,
    /// at most `timeout_ms`; returns the count (fewer if the wait ended
    /// early: the timeout, a signal).
    pub fn wait_answers(&self, seen: u32, want: u32, timeout_ms: u64) -> u32 {
        let want = want.max(1);
        let header = self.header();
        let answers = &header.answers;
        header
            .wanted
            .store(seen.wrapping_add(want), Ordering::SeqCst);
        spin_while(|| answers.load(Ordering::SeqCst).wrapping_sub(seen) < want);
        let now = answers.load(Ordering::SeqCst);
        if now.wrapping_sub(seen) < want {
            nogvl::short_wait(|| sys::futex_wait(answers, now, timeout_ms), &|| {
                sys::futex_wake(answers)
            });
        }
        answers.load(Ordering::Acquire)
    }

    /// `doorbell.close` in the parent: every worker stops waiting.
    pub fn close(&self) {
        let header = self.header();
        header.closing.store(1, Ordering::Release);
        for worker in 0..self.workers {
            if let Ok(slot) = self.slot(worker) {
                sys::futex_wake(&slot.bell);
            }
        }
    }
}

/// How long a wait first yields the processor, looking at its word between
/// yields, before it sleeps on the futex: a pool's next message or answer
/// often comes sooner (a vectorised environment's next step), and a process
/// that never slept is not woken. Measured on 2 cores, 2 and 4 environments
/// (examples/vector_env.rb): about 1.4x and 1.7x the steps per second of sleeping
/// at once. `sched_yield` gives the processor to any process that can run,
/// so the others lose nothing; it costs the waiting process at most this
/// much of its own time per wait.
const SPIN: std::time::Duration = std::time::Duration::from_micros(300);

/// Yields the processor while `waiting()` holds, at most `SPIN`, if this is
/// the process's only Ruby thread (another would wait for the GVL).
fn spin_while(waiting: impl Fn() -> bool) {
    if !nogvl::alone() {
        return;
    }
    let until = std::time::Instant::now() + SPIN;
    while waiting() && std::time::Instant::now() < until {
        // SAFETY: no arguments; gives up the processor for a moment.
        unsafe { libc::sched_yield() };
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        if sys::getpid() == self.owner {
            // SAFETY: our mapping; the pool that used it is gone.
            unsafe { segment::unmap(self.addr, self.len) };
        }
    }
}
