//! `WorkerLink`: what a
//! `Numo::Parallel::Pool` shares with one of its workers besides the pool's
//! arena: the channel over which the parent sends that worker the memfds of
//! large items, and the files of the parent's shared arrays that the worker
//! does not map yet; and which of those it has.
//!
//! A worker maps, by inheritance, every shared array its parent had when it
//! was forked (those the worker's copy of the heap still holds). An array
//! the parent made after the fork is sent once as a file (when the parent
//! kept it, see `memory::live`), which the worker maps under the parent's
//! serial until the parent says the array is gone (`forgotten`, `forget`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::memory::live;
use crate::memory::pid;
use crate::parallel::arena::{Arena, Shared};
use crate::parallel::channel::Channel;

pub struct WorkerLink {
    pub arena: Arc<Shared>,
    pub channel: Arc<Channel>,
    /// The parent's pid, and the count of its serials when the worker was
    /// forked: the parent's arrays of lower counts the worker inherited.
    parent: i32,
    watermark: u32,
    /// In the parent: the serials of arrays whose files the worker was sent.
    sent: Mutex<HashSet<u64>>,
    next_id: AtomicU64,
}

impl WorkerLink {
    /// In a pool's parent, just before it forks the worker.
    pub fn new(arena: &Arena) -> Result<WorkerLink> {
        Ok(WorkerLink {
            arena: Arc::clone(arena.shared()),
            channel: Channel::open_without_thread()?,
            parent: pid::current(),
            watermark: live::serial_watermark(),
            sent: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// In the parent: the serials of arrays whose files the worker was sent
    /// and that are gone here (the worker may drop them).
    pub fn forgotten(&self) -> Vec<u64> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<u64> = sent
            .iter()
            .copied()
            .filter(|&s| !live::contains(s))
            .collect();
        for serial in &gone {
            sent.remove(serial);
        }
        gone
    }

    /// Closes, in the parent, its end (and everything the channel holds);
    /// in any other process (a sibling worker forked later), only that
    /// process's copies of the descriptors.
    pub fn close(&self) {
        if pid::current() == self.parent {
            self.channel.close();
        } else {
            self.channel.close_receiver_copy();
            self.channel.close_sender_copy();
        }
    }

    /// In the parent: makes sure the worker maps this process's shared
    /// array `serial`, sending it the array's file if the worker was forked
    /// before the array was made. An error when that cannot be: passing the
    /// array as a copy would lose the worker's writes to it.
    pub fn share(&self, serial: u64) -> Result<()> {
        let (pid, count) = ((serial >> 32) as i32, serial as u32);
        if pid != self.parent || count < self.watermark {
            return Ok(()); // inherited by the worker
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent.contains(&serial) {
            return Ok(());
        }
        let Some((file, offset, len)) = live::file_of(serial) else {
            return Err(Error::Argument(
                "a shared array made after the pool's workers started cannot reach them by reference: \
                 its file was not kept (more shared arrays than a quarter of ulimit -n allows); make it \
                 before the pool, or pass a copy (array.dup)"
                    .into(),
            ));
        };
        self.channel.send_file(&file.fd, serial, offset, len)?;
        sent.insert(serial);
        Ok(())
    }

    /// A fresh id for a memfd the parent sends this worker.
    pub fn next_block_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}
