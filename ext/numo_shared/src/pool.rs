//! The memory a Numo::Parallel worker computes in, reused the way malloc
//! reuses its heap.
//!
//! Inside a worker, every Numo array of `MIN_BYTES` or more gets its data from
//! this pool instead of `xmalloc`, so that an array the block returns is
//! already in memory the parent can map: it is handed over without a copy.
//! Each block is a memfd of its own, mapped shared. When an array that did
//! not become a result is collected, its block goes back to a free list of
//! its size class, mapping and pages kept, and the next array of that class
//! takes it: a temporary costs what it costs with malloc. A block that
//! becomes a result leaves the pool for good (its file goes to the parent;
//! see `Segment::hand_over`), and the kernel frees its pages when the last
//! mapping of it, in any process, is gone.
//!
//! The pool belongs to one process: a process forked from a worker finds the
//! pool inactive (its pid differs), so it never reuses memory the worker may
//! still be using.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::memfd;
use crate::pid;
use crate::segment::{self, page_size, Segment};

/// Arrays smaller than this keep using Numo's own allocation.
pub const MIN_BYTES: usize = 64 * 1024;

/// At most this many bytes of free blocks are kept for reuse; beyond that a
/// freed block is unmapped.
const MAX_FREE_BYTES: usize = 256 << 20;

/// What a pooled `Segment` carries: the block's file (while the pool holds a
/// descriptor for it), the process whose pool it belongs to, and how many
/// times that process had forked when an array took the block.
pub struct Lease {
    fd: Option<OwnedFd>,
    owner: i32,
    forks: u64,
}

impl Lease {
    /// The block's file, taken out: the block will not come back to the pool.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        let fd = self.fd.take();
        if fd.is_some() {
            self.forget_descriptor();
        }
        fd
    }

    /// True in the process whose pool made the block; false in a process
    /// forked from it, which must never shrink or send the file.
    pub fn is_mine(&self) -> bool {
        self.owner == pid::current()
    }

    fn forget_descriptor(&self) {
        forget_descriptor_of(self.owner);
    }
}

/// Never dropped while `POOL` is locked by this thread.
impl Drop for Lease {
    fn drop(&mut self) {
        if self.fd.take().is_some() {
            self.forget_descriptor();
        }
    }
}

struct FreeBlock {
    addr: usize,
    lease: Lease,
}

struct Pool {
    owner: i32,
    /// Free blocks by length (a size class, in bytes).
    free: HashMap<usize, Vec<FreeBlock>>,
    free_bytes: usize,
    /// Descriptors held by leases, free or in use.
    descriptors: usize,
    max_descriptors: usize,
    /// Blocks made and blocks reused, for tests and benchmarks.
    made: u64,
    reused: u64,
    /// Mappings of small results handed over (see `park`): (address, length).
    parked: VecDeque<(usize, usize)>,
    parked_bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// How many times this process has forked (counted in the parent by a
/// `pthread_atfork` handler). A child forked while an array used a block
/// maps the block too and may still read it through its copy of the array,
/// so such a block is never reused: it is unmapped when the array is
/// collected (the child's mapping keeps the pages it reads).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Counts this process's forks from now on. Called once, at load.
pub fn watch_forks() {
    // SAFETY: the handler only adds to an atomic.
    unsafe {
        libc::pthread_atfork(None, Some(count_fork), None);
    }
}

fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// The pool's lock. No Ruby code runs and no `Lease` is dropped while it is
/// held: a GC (which frees arrays, so hands blocks back) must not find it
/// taken by the same thread.
fn lock() -> MutexGuard<'static, Option<Pool>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's pool, if it is active here.
fn mine<'a>(guard: &'a mut MutexGuard<'static, Option<Pool>>) -> Option<&'a mut Pool> {
    let me = pid::current();
    guard.as_mut().filter(|p| p.owner == me)
}

/// One descriptor fewer held by the pool of process `owner`, if active.
fn forget_descriptor_of(owner: i32) {
    let mut guard = lock();
    if let Some(pool) = guard.as_mut().filter(|p| p.owner == owner) {
        pool.descriptors = pool.descriptors.saturating_sub(1);
    }
}

/// Makes this process's pool active (in a worker, at its first item).
/// Free blocks of a pool inherited from the process this one was forked
/// from are unmapped here, never reused: that process may reuse them.
pub fn activate() {
    let me = pid::current();
    let inherited = {
        let mut guard = lock();
        if guard.as_ref().is_some_and(|p| p.owner == me) {
            return;
        }
        let old = guard.replace(Pool {
            owner: me,
            free: HashMap::new(),
            free_bytes: 0,
            descriptors: 0,
            max_descriptors: descriptor_budget(),
            made: 0,
            reused: 0,
            parked: VecDeque::new(),
            parked_bytes: 0,
        });
        old.map(|p| {
            let free = p
                .free
                .into_iter()
                .flat_map(|(len, blocks)| blocks.into_iter().map(move |b| (len, b)))
                .collect::<Vec<_>>();
            (free, p.parked)
        })
    };
    let Some((free, parked)) = inherited else {
        return;
    };
    for (len, block) in free {
        // SAFETY: a free block: no array of this process uses it.
        unsafe { segment::unmap(block.addr, len) };
        drop(block.lease);
    }
    for (addr, len) in parked {
        // SAFETY: a parked mapping: no array of this process uses it.
        unsafe { segment::unmap(addr, len) };
    }
}

/// Results up to this size are handed over by moving the worker's array to
/// another block of the pool (a copy) and parking the mapping of the one
/// sent (see `park`), instead of remapping it private. Unmapping a range of
/// written pages is what costs: on the project's VM about 0.4 to 0.9 ms
/// for 25 pages (each page's TLB entry flushed on its own up to 33 pages,
/// a hypercall each), against a few µs to copy 100 KB.
pub const PARK_BELOW: usize = 256 * 1024;

/// At most this many bytes, and this many mappings, are kept parked;
/// beyond that the oldest are unmapped (each mapping counts against the
/// process's `vm.max_map_count`).
const MAX_PARKED_BYTES: usize = 1 << 30;
const MAX_PARKED_MAPPINGS: usize = 8192;

/// Keeps the mapping `addr..addr+len` of a result handed over to the parent
/// mapped in this worker, unused, until the pool stops (a process forked
/// from the worker) or the worker exits, when the kernel tears down all its
/// mappings at once, far cheaper than one `munmap` each. The parent's
/// mapping keeps the memory alive anyway while it holds the result; the
/// pages are freed once the worker has exited and the parent dropped it.
pub fn park(addr: usize, len: usize) {
    let evicted = {
        let mut guard = lock();
        match mine(&mut guard) {
            Some(pool) => {
                pool.parked.push_back((addr, len));
                pool.parked_bytes += len;
                let mut evicted = Vec::new();
                while (pool.parked_bytes > MAX_PARKED_BYTES
                    || pool.parked.len() > MAX_PARKED_MAPPINGS)
                    && pool.parked.len() > 1
                {
                    let Some((a, l)) = pool.parked.pop_front() else {
                        break;
                    };
                    pool.parked_bytes -= l;
                    evicted.push((a, l));
                }
                evicted
            }
            None => vec![(addr, len)],
        }
    };
    for (addr, len) in evicted {
        // SAFETY: parked mappings are used by nothing.
        unsafe { segment::unmap(addr, len) };
    }
}

/// `Numo::Shared::Native.activate_pool(parent_pid)`: in a process other
/// than `parent_pid` (a worker of `Numo::Parallel.stack`), activates the
/// pool and the allocation hook; true the first time.
pub fn activate_in_child(parent_pid: i32) -> bool {
    let me = pid::current();
    if me == parent_pid || lock().as_ref().is_some_and(|p| p.owner == me) {
        return false;
    }
    activate();
    crate::worker::arm_allocation();
    true
}

/// `(made, reused, free blocks)` of this process's pool, if active.
pub fn stats() -> Option<(u64, u64, usize)> {
    let mut guard = lock();
    let pool = mine(&mut guard)?;
    let free = pool.free.values().map(Vec::len).sum();
    Some((pool.made, pool.reused, free))
}

/// A block of at least `bytes` bytes for a new array, or `None` when the
/// pool is not active here or cannot serve the request (the caller then
/// uses Numo's own allocation, as the parallel gem's workers would).
pub fn take(bytes: usize) -> Option<Segment> {
    take_block(bytes, false)
}

/// A block for a copy about to be handed over to the parent: one that has
/// its descriptor, whatever the pool's budget of descriptors (it is sent and
/// closed at once).
pub fn take_for_export(bytes: usize) -> Option<Segment> {
    take_block(bytes, true)
}

fn take_block(bytes: usize, sendable: bool) -> Option<Segment> {
    let class = size_class(bytes);
    let (block, keep_fd) = {
        let mut guard = lock();
        let pool = mine(&mut guard)?;
        let free = pool.free.get_mut(&class);
        let found = match free {
            Some(blocks) if sendable => blocks
                .iter()
                .rposition(|b| b.lease.fd.is_some())
                .map(|at| blocks.swap_remove(at)),
            Some(blocks) => blocks.pop(),
            None => None,
        };
        match found {
            Some(block) => {
                pool.free_bytes -= class;
                pool.reused += 1;
                (Some(block), false)
            }
            None => {
                pool.made += 1;
                let keep = sendable || pool.descriptors < pool.max_descriptors;
                if keep {
                    pool.descriptors += 1;
                }
                (None, keep)
            }
        }
    };
    match block {
        Some(mut block) => {
            block.lease.forks = forks();
            Some(Segment::pooled(block.addr, class, block.lease))
        }
        None => make(bytes, class, keep_fd),
    }
}

/// A new block: a memfd of `class` bytes, mapped shared, its first `bytes`
/// populated. `None` when it cannot be made (file size limit, no memory,
/// no address space left): the array then gets Numo's own memory.
fn make(bytes: usize, class: usize, keep_fd: bool) -> Option<Segment> {
    let owner = pid::current();
    let give_up = || {
        if keep_fd {
            forget_descriptor_of(owner);
        }
        None
    };
    if memfd::file_size_limit().is_some_and(|limit| class as u64 > limit) {
        return give_up();
    }
    let Ok(fd) = memfd::create(c"numo-shared-worker", class, "a worker's array") else {
        return give_up();
    };
    if memfd::strict_overcommit()
        && segment::allocate_range(&fd, 0, class as u64, class, "worker").is_err()
    {
        return give_up();
    }
    // SAFETY: a fresh shared mapping of our own memfd.
    let mapped = unsafe {
        segment::mmap_raw(
            None,
            class,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    let Ok(addr) = mapped else {
        return give_up();
    };
    let populate = bytes.div_ceil(page_size()) * page_size();
    // SAFETY: a range of the mapping just made (failure only means its
    // pages are faulted in as they are written).
    unsafe { segment::populate(addr, populate.min(class)) };
    let lease = Lease {
        fd: keep_fd.then_some(fd),
        owner,
        forks: forks(),
    };
    Some(Segment::pooled(addr, class, lease))
}

/// Called when a pooled segment is dropped: keeps the block for reuse, or
/// unmaps it (another process's block, a full pool, a pool not active here,
/// or a block that was in use when this process forked: see `FORKS`).
pub fn give_back(lease: Lease, addr: usize, len: usize) {
    let refused = {
        let mut guard = lock();
        match mine(&mut guard) {
            Some(pool)
                if lease.owner == pool.owner
                    && lease.forks == forks()
                    && pool.free_bytes + len <= MAX_FREE_BYTES =>
            {
                pool.free_bytes += len;
                pool.free
                    .entry(len)
                    .or_default()
                    .push(FreeBlock { addr, lease });
                None
            }
            _ => Some(lease),
        }
    };
    if let Some(lease) = refused {
        // SAFETY: the block's own mapping; its array is gone.
        unsafe { segment::unmap(addr, len) };
        drop(lease);
    }
}

/// The size class of a request: its page count rounded up to one of eight
/// steps per power of two (at most 12.5 % more than asked).
pub fn size_class(bytes: usize) -> usize {
    let page = page_size();
    let pages = bytes.div_ceil(page).max(1);
    let shift = (usize::BITS - pages.leading_zeros()).saturating_sub(4);
    pages.div_ceil(1 << shift) * (1 << shift) * page
}

/// How many block descriptors a worker keeps open at most: a quarter of its
/// descriptor limit, and never more than 1024. A block made beyond that has
/// no descriptor, and is copied into a new block if it becomes a result.
fn descriptor_budget() -> usize {
    let soft = crate::sys::soft_limit(libc::RLIMIT_NOFILE)
        .ok()
        .flatten()
        .unwrap_or(1024);
    usize::try_from(soft / 4).unwrap_or(1024).clamp(16, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth() {
        let page = page_size();
        for bytes in [1, page, page + 1, 64 << 10, 100_800, 8_000_000, 123_456_789] {
            let class = size_class(bytes);
            assert!(class >= bytes, "{bytes} -> {class}");
            assert_eq!(class % page, 0);
            let pages = bytes.div_ceil(page);
            assert!(class / page <= pages + pages / 8 + 1, "{bytes} -> {class}");
        }
        assert_eq!(size_class(8_000_000), size_class(7_999_000));
    }
}
