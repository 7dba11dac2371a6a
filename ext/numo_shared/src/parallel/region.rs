//! `Region`: a shared mapping that the parent makes before forking, where
//! workers pack small results (and the index tables of views) for the parent
//! to copy out, with no system call on either side.
//!
//! Its first bytes hold an atomic cursor; workers take ranges by advancing
//! it. The region is reserved, not used: only the pages written take memory,
//! and they go when the map ends (the parent unmaps, the workers exit).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::memory::limits;
use crate::memory::memfd;
use crate::memory::pid;
use crate::memory::segment;

/// Sizes tried, largest first: a process under an address-space limit
/// (`ulimit -v`) or a file size limit gets a smaller region, or none.
const SIZES: [usize; 5] = [256 << 20, 64 << 20, 16 << 20, 4 << 20, 1 << 20];

/// Where packed data starts: after the counters, on its own page.
const DATA_START: u64 = 4096;

/// The counters of a batched map (see `claim`), each on a cache line of its
/// own in the first page: the next item to claim, and why claiming stopped
/// (0: it did not, 1: an item raised, 2: an item raised Parallel::Break).
const CLAIMED_AT: usize = 64;
const STOPPED_AT: usize = 128;

/// How many times the region was emptied for reuse (`reset`): a chunk a
/// process took before then is no longer its own.
const GENERATION_AT: usize = 192;

/// A number naming this region among all the regions of its processes: a
/// later region may be mapped at a freed one's address.
const IDENTITY_AT: usize = 256;

/// The identity of the next region this process makes.
static NEXT_IDENTITY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Workers take the region in chunks of this many bytes (and map a chunk's
/// pages at once, far cheaper than a page fault each), then pack into
/// their chunk without touching the shared cursor.
const CHUNK: u64 = 64 * 1024;

/// How much of the region calls may take before `reset` empties it (and
/// the pages they wrote are written again).
const REUSE_AFTER: u64 = 4 << 20;

/// The chunk this process packs into: who took it, and which part is left.
struct Chunk {
    pid: i32,
    region: u64,
    generation: u64,
    next: u64,
    end: u64,
}

static CHUNK_OF: std::sync::Mutex<Chunk> = std::sync::Mutex::new(Chunk {
    pid: 0,
    region: 0,
    generation: 0,
    next: 0,
    end: 0,
});

pub struct Region {
    addr: usize,
    len: usize,
}

// SAFETY: the mapping lives as long as the Region; access goes through the
// atomic cursor (each range is written by one process before it is read).
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// A new region, as large as the limits allow; `None` if none can be made.
    pub fn create() -> Option<Region> {
        let fsize = limits::file_size_limit().unwrap_or(u64::MAX);
        SIZES
            .iter()
            .filter(|&&len| len as u64 <= fsize)
            .find_map(|&len| Self::map(len))
    }

    fn map(len: usize) -> Option<Region> {
        let fd = memfd::create(c"numo-shared-region", len, "small results").ok()?;
        // SAFETY: a fresh shared mapping of our own memfd, not populated.
        let addr = unsafe {
            segment::mmap_raw(
                None,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        }
        .ok()?;
        let region = Region { addr, len };
        region.cursor().store(DATA_START, Ordering::SeqCst);
        let identity = (u64::from(pid::current() as u32) << 32)
            | NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed);
        region
            .counter(IDENTITY_AT)
            .store(identity, Ordering::SeqCst);
        Some(region)
    }

    fn cursor(&self) -> &AtomicU64 {
        self.counter(0)
    }

    fn counter(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at % 8 == 0 && at + 8 <= DATA_START as usize);
        // SAFETY: 8 bytes of the mapping's first page, 8-byte aligned,
        // used only as this atomic (by every process that maps the region).
        unsafe { &*((self.addr + at) as *const AtomicU64) }
    }

    /// The next item of a batched map of `count` items for the calling
    /// worker to run: each index is given to exactly one process, in
    /// order. `None` once all are given out or claiming stopped.
    pub fn claim(&self, count: u64) -> Option<u64> {
        if self.counter(STOPPED_AT).load(Ordering::SeqCst) != 0 {
            return None;
        }
        let index = self.counter(CLAIMED_AT).fetch_add(1, Ordering::SeqCst);
        (index < count).then_some(index)
    }

    /// How many claims were made (failed ones included).
    pub fn claimed(&self) -> u64 {
        self.counter(CLAIMED_AT).load(Ordering::SeqCst)
    }

    /// No more items are given out: an item raised (`by_break`: a
    /// Parallel::Break, which is remembered over any other reason).
    pub fn stop_claims(&self, by_break: bool) {
        let reason = if by_break { 2 } else { 1 };
        self.counter(STOPPED_AT).fetch_max(reason, Ordering::SeqCst);
    }

    /// Why claiming stopped: 0 (it did not), 1 or 2 (see `stop_claims`).
    pub fn claims_stopped(&self) -> u64 {
        self.counter(STOPPED_AT).load(Ordering::SeqCst)
    }

    /// Takes `len` bytes from this process's chunk (taking a new chunk when
    /// it is used up) and lets `fill` write them; returns their offset, or
    /// `None` when the region is full.
    pub fn pack_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Option<u64> {
        let taken = (len.max(1) as u64).next_multiple_of(8);
        let start = self.take(taken)?;
        // SAFETY: start..start+len was taken by this process alone.
        let target =
            unsafe { std::slice::from_raw_parts_mut((self.addr + start as usize) as *mut u8, len) };
        fill(target);
        Some(start)
    }

    /// `len` bytes (a multiple of 8) of this process's chunk.
    fn take(&self, len: u64) -> Option<u64> {
        let me = pid::current();
        let generation = self.counter(GENERATION_AT).load(Ordering::SeqCst);
        let identity = self.counter(IDENTITY_AT).load(Ordering::SeqCst);
        let mut chunk = CHUNK_OF.lock().unwrap_or_else(|e| e.into_inner());
        if chunk.pid == me
            && chunk.region == identity
            && chunk.generation == generation
            && chunk.next + len <= chunk.end
        {
            chunk.next += len;
            return Some(chunk.next - len);
        }
        let want = len.max(CHUNK).next_multiple_of(CHUNK);
        let start = self.cursor().fetch_add(want, Ordering::SeqCst);
        let stop = start.checked_add(want).filter(|&e| e <= self.len as u64)?;
        // SAFETY: a range of our mapping this process just took. Failure
        // (an old kernel) only means its pages are faulted in as written.
        unsafe { segment::populate(self.addr + start as usize, want as usize) };
        *chunk = Chunk {
            pid: me,
            region: identity,
            generation,
            next: start + len,
            end: stop,
        };
        Some(start)
    }

    /// Readies the region for another call of the processes that share it:
    /// what was claimed is forgotten; once more than `REUSE_AFTER` bytes
    /// were packed, what was packed too, and every process takes a new
    /// chunk. Until then each goes on packing into its chunk: a new chunk
    /// per call cost each process a populate of its pages, a pool's calls
    /// of small items most of all. Only when none of them packs or claims
    /// (between calls).
    pub fn reset(&self) {
        self.counter(CLAIMED_AT).store(0, Ordering::SeqCst);
        self.counter(STOPPED_AT).store(0, Ordering::SeqCst);
        let used = self.cursor().load(Ordering::SeqCst) - DATA_START;
        if used > REUSE_AFTER.min(self.len as u64 / 2) {
            self.counter(GENERATION_AT).fetch_add(1, Ordering::SeqCst);
            self.cursor().store(DATA_START, Ordering::SeqCst);
        }
    }

    /// Packs a copy of `data`; `None` when the region is full.
    pub fn pack(&self, data: &[u8]) -> Option<u64> {
        self.pack_with(data.len(), |target| target.copy_from_slice(data))
    }

    /// The `len` bytes at `offset`, checked to lie in what workers have taken.
    pub fn read(&self, offset: u64, len: u64) -> Result<&[u8]> {
        let taken = self.cursor().load(Ordering::SeqCst).min(self.len as u64);
        let end = offset.checked_add(len).filter(|&end| end <= taken);
        if offset < DATA_START || end.is_none() {
            return Err(Error::Argument(format!(
                "no result of {len} bytes was packed at offset {offset} of the results region"
            )));
        }
        // SAFETY: inside the mapping, in a range a worker finished writing
        // before it wrote the handle the parent is reading.
        Ok(unsafe {
            std::slice::from_raw_parts((self.addr + offset as usize) as *const u8, len as usize)
        })
    }

    /// Gives back the memory of the whole pages inside `offset..offset +
    /// len`, a range the receiver has read (`read`) and copied out: nothing
    /// reads it again (each packed range is read once, by one process), and
    /// its sender packs only past it, so its pages can go now instead of when
    /// the region does (the receiver would otherwise hold each small result
    /// twice: in the region, and in its own array). A hint: nothing happens
    /// where the kernel cannot.
    pub fn consumed(&self, offset: u64, len: u64) {
        let page = crate::sys::page_size() as u64;
        let first = offset.next_multiple_of(page);
        let end = (offset + len) / page * page;
        if end > first {
            // SAFETY: whole pages of our shared mapping that nothing reads
            // or writes again (see above); MADV_REMOVE frees their memory
            // and later reads would see zeros, never fault.
            unsafe {
                libc::madvise(
                    (self.addr + first as usize) as *mut libc::c_void,
                    (end - first) as usize,
                    libc::MADV_REMOVE,
                );
            }
        }
    }

    /// Unmaps the region in this process.
    ///
    /// # Safety
    /// Nothing of this process may read the region afterwards.
    pub unsafe fn unmap(&self) {
        segment::unmap(self.addr, self.len);
    }
}
