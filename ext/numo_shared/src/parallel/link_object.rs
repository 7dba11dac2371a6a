//! Ruby's `Numo::Shared::WorkerLink`: the methods a pool's parent and
//! worker call on their `WorkerLink` (see `link`), which arm exports to the
//! worker and enter the worker's side of the arena.

use std::sync::Arc;

use crate::error::Result;
use crate::parallel::arena::Arena;
use crate::parallel::exporting::{self, Target};
use crate::parallel::link::WorkerLink;
use crate::parallel::worker;

#[magnus::wrap(class = "Numo::Shared::WorkerLink", free_immediately, size)]
pub struct Link(Arc<WorkerLink>);

impl Link {
    /// `Numo::Shared::WorkerLink.new(arena)` in a pool's parent, just before
    /// it forks the worker.
    pub fn new(arena: &Arena) -> Result<Link> {
        Ok(Link(Arc::new(WorkerLink::new(arena)?)))
    }

    /// `link.in_parent` after the fork: the parent only sends.
    pub fn in_parent(&self) {
        self.0.channel.close_receiver_copy();
    }

    /// `link.in_worker` in the new worker: it only receives, its values go
    /// to the pool's arena, and its items come through this link. Returns
    /// what `arena.enter_worker` returns.
    pub fn in_worker(&self, arena: &Arena) -> u8 {
        self.0.channel.close_sender_copy();
        worker::enter_with(arena, Some(Arc::clone(&self.0)))
    }

    /// `link.arm_items(items)` in the parent: the calling thread's
    /// `Marshal.dump` of `items` (a call's items for this worker) exports
    /// their NArrays to this worker.
    pub fn arm_items(&self, items: magnus::Value) {
        use magnus::rb_sys::AsRawValue;
        exporting::arm(Some((Target::Worker(Arc::clone(&self.0)), items.as_raw())));
    }

    /// `link.forgotten` in the parent: the serials of arrays whose files the
    /// worker was sent and that are gone here (the worker may drop them).
    pub fn forgotten(&self) -> Vec<u64> {
        self.0.forgotten()
    }

    /// `link.forget(serials)` in the worker: drops the files of those of the
    /// parent's arrays.
    pub fn forget(&self, serials: Vec<u64>) {
        self.0.channel.forget_files(&serials);
    }

    /// `link.close`: see `WorkerLink::close`.
    pub fn close(&self) {
        self.0.close();
    }
}
