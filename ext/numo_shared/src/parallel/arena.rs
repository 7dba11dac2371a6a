//! `Arena`: what one `Numo::Parallel` call shares between the parent and the
//! workers it forks: a random token (handles must carry it), a `Region` for
//! small results and the counters of batched maps, and the `Channel` over
//! which workers send the memfd of each large result. Made before the fork;
//! closed when the call returns or raises, which unmaps whatever arrived and
//! was not claimed, and closes the socket and the region.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::memory::live;
use crate::memory::pid;
use crate::parallel::channel::Channel;
use crate::parallel::region::Region;
use crate::sys;

#[magnus::wrap(class = "Numo::Shared::Arena", free_immediately, size)]
pub struct Arena {
    shared: Arc<Shared>,
}

/// The arena's state, shared by the Ruby object, the registry of open
/// arenas and (through fork) the workers.
pub struct Shared {
    pub token: u64,
    pub owner: i32,
    pub region: Option<Region>,
    pub channel: Arc<Channel>,
    closed: Mutex<bool>,
}

/// The open arenas of this process.
static OPEN: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

fn open_arenas() -> MutexGuard<'static, Vec<Arc<Shared>>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open arena of this process whose token is `token`.
pub fn find_open(token: u64) -> Option<Arc<Shared>> {
    open_arenas().iter().find(|a| a.token == token).cloned()
}

impl Arena {
    /// `Numo::Shared::Arena.new`.
    pub fn new() -> Result<Arena> {
        let token = random_token()?;
        let channel = Channel::open()?;
        let shared = Arc::new(Shared {
            token,
            owner: pid::current(),
            region: Region::create(),
            channel,
            closed: Mutex::new(false),
        });
        open_arenas().push(Arc::clone(&shared));
        Ok(Arena { shared })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// `arena.close` in the parent: closes the channel (unmapping every
    /// result that arrived and was not claimed) and the region. Arrays
    /// already claimed keep their own mappings. A no-op in a worker (its
    /// copy is the parent's to clean up) and when called twice.
    pub fn close(&self) {
        let shared = &self.shared;
        if pid::current() != shared.owner {
            return;
        }
        {
            let mut closed = shared.closed.lock().unwrap_or_else(|e| e.into_inner());
            if *closed {
                return;
            }
            *closed = true;
        }
        open_arenas().retain(|a| !Arc::ptr_eq(a, shared));
        shared.channel.close();
        if let Some(region) = &shared.region {
            // SAFETY: the call is over: no result is read from it any more.
            unsafe { region.unmap() };
        }
    }

    /// `arena.reset` in a pool's parent between calls: empties the region
    /// (see `Region::reset`), and unmaps results nobody will claim (a killed
    /// worker's).
    pub fn reset(&self) {
        if let Some(region) = &self.shared.region {
            region.reset();
        }
        self.shared.channel.discard_arrivals();
    }

    /// `arena.keep_files(on)` in a pool's parent: the files of shared arrays
    /// made from now on are kept (`on`), so that they can be sent to the
    /// pool's workers, or no longer for this pool (see `memory::live`).
    pub fn keep_files(&self, on: bool) {
        if on {
            live::keep_files();
        } else {
            live::stop_keeping_files();
        }
    }

    /// `arena.pack(bytes)`: a copy of `bytes` (a String) in the region, for
    /// another process sharing the arena to read; its offset, or nil when
    /// the region is full (or missing).
    pub fn pack(&self, bytes: magnus::RString) -> Option<u64> {
        let region = self.shared.region.as_ref()?;
        // SAFETY: the bytes are copied before any Ruby code runs.
        region.pack(unsafe { bytes.as_slice() })
    }

    /// `arena.unpack(at, len)`: a String with a copy of the `len` bytes
    /// packed at `at` (by `pack`, in another process).
    pub fn unpack(&self, at: u64, len: u64) -> Result<magnus::RString> {
        let region = self
            .shared
            .region
            .as_ref()
            .ok_or_else(|| Error::Argument("this arena has no region".into()))?;
        crate::numo::ruby_alloc::binary_string(region.read(at, len)?)
    }

    /// `arena.owner_pid`: the process that made the arena.
    pub fn owner_pid(&self) -> i32 {
        self.shared.owner
    }

    /// `arena.token`: the number handles of this arena carry.
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    /// `arena.claims?`: whether items of a batched map can be claimed
    /// (the arena has its shared region).
    pub fn has_claims(&self) -> bool {
        self.shared.region.is_some()
    }

    /// `arena.claim_item(count)`: the index of the next of `count` items
    /// for this process to run, or nil when none is left (or an item
    /// raised). Any process that shares the arena may claim.
    pub fn claim_item(&self, count: u64) -> Option<u64> {
        self.shared.region.as_ref()?.claim(count)
    }

    /// `arena.items_claimed`: how many claims were made so far.
    pub fn items_claimed(&self) -> u64 {
        self.shared.region.as_ref().map_or(0, Region::claimed)
    }

    /// `arena.stop_claims(by_break)`: no item is given out from now on,
    /// because an item raised (a Parallel::Break when `by_break`).
    pub fn stop_claims(&self, by_break: bool) {
        if let Some(region) = self.shared.region.as_ref() {
            region.stop_claims(by_break);
        }
    }

    /// `arena.claims_stopped`: nil while items are given out, else
    /// `:raised`, or `:broke` once an item raised a Parallel::Break.
    pub fn claims_stopped(ruby: &magnus::Ruby, rb_self: &Self) -> Option<magnus::Symbol> {
        match rb_self
            .shared
            .region
            .as_ref()
            .map_or(0, Region::claims_stopped)
        {
            0 => None,
            1 => Some(ruby.to_symbol("raised")),
            _ => Some(ruby.to_symbol("broke")),
        }
    }
}

/// An arena the parent never closed (its call ended without `ensure`) is
/// closed when its Ruby object is collected.
impl Drop for Arena {
    fn drop(&mut self) {
        self.close();
    }
}

fn random_token() -> Result<u64> {
    let mut bytes = [0u8; 8];
    sys::getrandom(&mut bytes)
        .map_err(|e| Error::os(e, "getting a random token for parallel results"))?;
    Ok(u64::from_le_bytes(bytes))
}
