//! `Arena`: where workers of `Numo::Parallel` put the arrays they return.
//!
//! The parent makes an arena before forking: an anonymous memfd, sized
//! sparsely far beyond any real use (no page is used until written), whose
//! first page holds an atomic cursor. Workers take ranges by advancing the
//! cursor. Inside a worker, Numo arrays of at least `OWN_MAPPING_BYTES` get
//! their memory from the arena as they are allocated (reserved with
//! `posix_fallocate`, so a full memory raises in the worker instead of
//! SIGBUS); returning one sends the parent only its offset and shape, and the
//! worker keeps a private copy-on-write view of it. Other arrays are copied
//! in: large ones to a block of their own, small ones packed into a region
//! that the parent maps before forking (so neither side makes a system call
//! for them). The parent maps each large block as the result's own segment,
//! which frees its pages when the array is collected, and copies small ones
//! out into ordinary arrays. Closing the arena frees every range nobody
//! claimed (a worker that raised or was killed mid-item, temporaries, small
//! results already read)
//! and closes the memfd, so nothing outlives the arrays actually returned,
//! and nothing is ever named in /dev/shm.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use magnus::{RArray, RClass, RString, Ruby, Value};
use memmap2::{MmapMut, MmapOptions};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::pid;
use crate::segment::{self, io_error, Access, ArenaBlock, Segment};
use crate::shared_array;

const PAGE: u64 = 4096;

/// Arrays of at least this many bytes get a mapping of their own; smaller
/// ones are packed and copied out by the parent.
pub const OWN_MAPPING_BYTES: usize = 64 * 1024;

/// The arena's sparse size: 16 TiB of offsets, of which only the pages in
/// use at any time take memory.
const CAPACITY: u64 = 1 << 44;

/// Small results are packed in `PAGE..PAGE + SMALL_REGION`, mapped (not
/// populated) by the parent before forking; blocks come after it. When the
/// region is full, small results are written to blocks with `pwrite`.
const SMALL_REGION: u64 = 1 << 30;
const BLOCKS_START: u64 = PAGE + SMALL_REGION;

static NEXT_ARENA: AtomicU64 = AtomicU64::new(1);

#[magnus::wrap(class = "Numo::Shared::Arena", free_immediately, size)]
pub struct Arena {
    state: Mutex<Option<Open>>,
    owner: Pid,
    id: u64,
}

struct Open {
    fd: OwnedFd,
    /// The first page: the block cursor, then the small-region cursor.
    header: MmapMut,
    /// The small-result region, mapped in the parent and inherited by workers.
    small: MmapMut,
    /// Blocks handed to the parent's arrays: (offset, length).
    claimed: Vec<(u64, u64)>,
}

impl Open {
    /// The cursor of the blocks.
    fn cursor(&self) -> &AtomicU64 {
        self.header_word(0)
    }

    /// The cursor of the small-result region.
    fn small_cursor(&self) -> &AtomicU64 {
        self.header_word(1)
    }

    fn header_word(&self, index: usize) -> &AtomicU64 {
        // SAFETY: the header page is mapped for the arena's life; its first
        // words are the cursors, 8-byte aligned.
        unsafe { &*(self.header.as_ptr() as *const AtomicU64).add(index) }
    }

    /// Packs `data` into the small region; `None` when it does not fit.
    fn pack_small(&mut self, data: &[u8]) -> Option<u64> {
        let len = (data.len().max(1) as u64).next_multiple_of(8);
        let cursor = self.small_cursor();
        let start = cursor.fetch_add(len, Ordering::SeqCst);
        start.checked_add(len).filter(|&end| end <= SMALL_REGION)?;
        self.small[start as usize..][..data.len()].copy_from_slice(data);
        Some(PAGE + start)
    }

    /// Takes `len` bytes at an offset aligned to `align` (a power of two).
    fn take(&self, len: u64, align: u64, bytes: usize) -> Result<u64> {
        let full = || {
            Error::os(
                Errno::ENOMEM,
                format!(
                    "returning {} through shared memory: the results arena is full",
                    segment::human_bytes(bytes)
                ),
            )
        };
        let cursor = self.cursor();
        let mut current = cursor.load(Ordering::SeqCst);
        loop {
            let start = current.checked_add(align - 1).ok_or_else(full)? & !(align - 1);
            let end = start
                .checked_add(len)
                .filter(|&e| e <= CAPACITY)
                .ok_or_else(full)?;
            match cursor.compare_exchange_weak(current, end, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(start),
                Err(now) => current = now,
            }
        }
    }

    /// A reserved block of its own for `bytes` bytes, mapped here with every
    /// page in place (it is about to be written whole).
    fn block(&self, id: u64, bytes: usize) -> Result<Segment> {
        let len = round_up(bytes as u64);
        let offset = self.take(len, PAGE, bytes)?;
        segment::allocate_range(&self.fd, offset, len, bytes, "results arena")?;
        let seg = Segment::map_fd(
            &self.fd,
            offset,
            bytes,
            "shared memory (results arena)",
            Access::SharedPopulated,
        )?;
        Ok(seg.in_arena(ArenaBlock { arena: id, offset }))
    }

    /// Checks that `offset..offset + len` lies in what workers have taken.
    fn check_taken(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset.checked_add(len).ok_or_else(|| bad_handle(offset))?;
        let taken_up_to = if offset < BLOCKS_START {
            PAGE + self.small_cursor().load(Ordering::SeqCst).min(SMALL_REGION)
        } else {
            self.cursor().load(Ordering::SeqCst)
        };
        if offset < PAGE || end > taken_up_to {
            return Err(bad_handle(offset));
        }
        Ok(())
    }

    /// A copy of packed bytes, from the mapped region or else with `pread`.
    fn unpack(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.check_taken(offset, len as u64)?;
        if offset < BLOCKS_START {
            let start = (offset - PAGE) as usize;
            return Ok(self.small[start..start + len].to_vec());
        }
        let mut data = vec![0u8; len];
        let read = segment::read_at(&self.fd, &mut data, offset)
            .map_err(|e| Error::os(e, "reading a result (results arena)"))?;
        if read < len {
            return Err(bad_handle(offset));
        }
        Ok(data)
    }
}

fn closed() -> Error {
    Error::Argument("this arena is closed".into())
}

fn round_up(len: u64) -> u64 {
    len.div_ceil(PAGE) * PAGE
}

impl Arena {
    /// `Numo::Shared::Arena.new`.
    pub fn new() -> Result<Arena> {
        let name: &CStr = c"numo-shared-results";
        let fd = memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| Error::os(e, "memfd_create for parallel results"))?;
        let size = libc::off_t::try_from(CAPACITY)
            .map_err(|_| Error::os(Errno::EFBIG, "sizing the results arena"))?;
        nix::unistd::ftruncate(&fd, size).map_err(|e| Error::os(e, "sizing the results arena"))?;
        // SAFETY: shared mappings of our own memfd's first page and of the
        // small region after it (no page is touched until used).
        let (header, small) = unsafe {
            (
                MmapOptions::new()
                    .len(PAGE as usize)
                    .map_mut(fd.as_raw_fd()),
                MmapOptions::new()
                    .offset(PAGE)
                    .len(SMALL_REGION as usize)
                    .map_mut(fd.as_raw_fd()),
            )
        };
        let header = header.map_err(|e| io_error(e, "mapping the results arena"))?;
        let small = small.map_err(|e| io_error(e, "mapping the results arena"))?;
        let open = Open {
            fd,
            header,
            small,
            claimed: Vec::new(),
        };
        open.cursor().store(BLOCKS_START, Ordering::SeqCst);
        let owner = pid::current();
        // Small (a Fixnum in marshal data, which keeps handles short); only
        // the owner loads handles, so ids need to differ within a process.
        let id = NEXT_ARENA.fetch_add(1, Ordering::Relaxed) % (1 << 30);
        Ok(Arena {
            state: Mutex::new(Some(open)),
            owner,
            id,
        })
    }

    fn with_open<T>(&self, f: impl FnOnce(&mut Open) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.as_mut() {
            Some(open) => f(open),
            None => Err(closed()),
        }
    }

    /// `arena.worker?`: whether this process is not the one that made it.
    pub fn in_worker(&self) -> bool {
        pid::current() != self.owner
    }

    fn owner_only(&self) -> Result<()> {
        if self.in_worker() {
            return Err(Error::Argument(
                "only the process that made an arena claims from it".into(),
            ));
        }
        Ok(())
    }

    /// `arena.allocate(array)` in a worker, from Numo's `allocate`: gives an
    /// unallocated array of at least `OWN_MAPPING_BYTES` a block of the
    /// arena. False (nothing done) for other arrays and in the parent.
    pub fn allocate(&self, obj: Value) -> Result<bool> {
        if !self.in_worker() {
            return Ok(false);
        }
        shared_array::adopt_allocating(obj, |bytes| {
            if bytes < OWN_MAPPING_BYTES {
                return Ok(None);
            }
            self.with_open(|open| Ok(Some(open.block(self.id, bytes)?.release_pages_on_drop())))
        })
    }

    /// `arena.export_block(array)` in a worker: if `array` got its memory
    /// from this arena in this process, hands its block to the parent and
    /// returns the offset; nil otherwise.
    pub fn export_block(&self, obj: Value) -> Result<Option<u64>> {
        let Some(segment) = shared_array::own_segment(obj) else {
            return Ok(None);
        };
        let Some(block) = segment.arena_block() else {
            return Ok(None);
        };
        if block.arena != self.id || !segment.releases_pages_here() {
            return Ok(None);
        }
        self.with_open(|open| segment.hand_over(&open.fd, block.offset))?;
        Ok(Some(block.offset))
    }

    /// `arena.export_target(klass, shape)` in a worker: a block of its own
    /// for an array of `klass` and `shape`, and a shared array over it to
    /// copy into. Returns `[offset, array]`.
    pub fn export_target(
        ruby: &Ruby,
        rb_self: &Self,
        klass: RClass,
        shape: RArray,
    ) -> Result<(u64, Value)> {
        let plan = shared_array::plan(ruby, klass, shape)?;
        let segment = if plan.bytes == 0 {
            None
        } else {
            Some(rb_self.with_open(|open| open.block(rb_self.id, plan.bytes))?)
        };
        let offset = segment
            .as_ref()
            .and_then(Segment::arena_block)
            .map_or(0, |b| b.offset);
        Ok((offset, plan.wrap(klass, segment)))
    }

    /// `arena.write_bytes(string)` in a worker: packs a small result's bytes
    /// into the arena and returns their offset.
    pub fn write_bytes(&self, bytes: RString) -> Result<u64> {
        // SAFETY: the slice is used before any Ruby code can run.
        self.pack(unsafe { bytes.as_slice() })
    }

    /// `arena.write_array(array)` in a worker: packs the data of a small Numo
    /// data array (not a view, not Numo::Bit) into the arena and returns its
    /// offset; nil for other arrays, whose bytes `write_bytes` takes.
    pub fn write_array(&self, obj: Value) -> Result<Option<u64>> {
        match shared_array::data_bytes_of(obj) {
            Some(data) => self.pack(data).map(Some),
            None => Ok(None),
        }
    }

    fn pack(&self, data: &[u8]) -> Result<u64> {
        self.with_open(|open| {
            if let Some(offset) = open.pack_small(data) {
                return Ok(offset);
            }
            let offset = open.take(data.len().max(1) as u64, 8, data.len())?;
            segment::write_all_at(&open.fd, data, offset).map_err(|e| {
                Error::os(
                    e,
                    format!(
                        "writing {} to shared memory (results arena)",
                        segment::human_bytes(data.len())
                    ),
                )
            })?;
            Ok(offset)
        })
    }

    /// `arena.read_bytes(offset, length)` in the parent: packed bytes (a
    /// view's index tables) as a String.
    pub fn read_bytes(ruby: &Ruby, rb_self: &Self, offset: u64, len: usize) -> Result<RString> {
        rb_self.owner_only()?;
        let data = rb_self.with_open(|open| open.unpack(offset, len))?;
        Ok(ruby.str_from_slice(&data))
    }

    /// `arena.fill(array, shape, offset, length)` in the parent: makes
    /// `array`, just allocated by `Marshal.load`, an ordinary array of `shape`
    /// holding a copy of a small result's packed bytes.
    pub fn fill(&self, obj: Value, shape: RArray, offset: u64, len: usize) -> Result<Value> {
        self.owner_only()?;
        let plan = shared_array::plan_for_object(obj, shape)?;
        // Copied out first: filling allocates, which may run the GC (or
        // raise), and must not happen while the arena is locked.
        let bytes = self.with_open(|open| open.unpack(offset, len))?;
        plan.fill(obj, &bytes)
    }

    /// `arena.claim(array, shape, offset)` in the parent: makes `array`, just
    /// allocated by `Marshal.load`, the shared array over the worker's block.
    pub fn claim(&self, obj: Value, shape: RArray, offset: u64) -> Result<Value> {
        self.owner_only()?;
        let plan = shared_array::plan_for_object(obj, shape)?;
        let len = plan.bytes as u64;
        let segment = if len == 0 {
            None
        } else {
            Some(self.with_open(|open| {
                let end = offset
                    .checked_add(round_up(len))
                    .ok_or_else(|| bad_handle(offset))?;
                if offset % PAGE != 0 || offset < BLOCKS_START {
                    return Err(bad_handle(offset));
                }
                open.check_taken(offset, round_up(len))?;
                if open.claimed.iter().any(|&(o, l)| offset < o + l && o < end) {
                    return Err(Error::Argument(format!(
                        "block at offset {offset} was already claimed"
                    )));
                }
                let seg = Segment::map_fd(
                    &open.fd,
                    offset,
                    plan.bytes,
                    "shared memory (results arena)",
                    Access::Shared,
                )?;
                open.claimed.push((offset, round_up(len)));
                Ok(seg.release_pages_on_drop())
            })?)
        };
        plan.adopt(obj, segment, 0)
    }

    /// `arena.close`: frees every range nobody claimed and closes the memfd.
    /// Claimed arrays keep their own mappings. Safe to call twice.
    pub fn close(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut open) = state.take() else {
            return Ok(());
        };
        if self.in_worker() {
            return Ok(()); // a worker's copy: the parent cleans up
        }
        let end = open.cursor().load(Ordering::SeqCst).min(CAPACITY);
        open.claimed.sort_unstable();
        let mut start = PAGE;
        for &(offset, len) in open.claimed.iter().chain(std::iter::once(&(end, 0))) {
            if offset > start {
                punch(&open.fd, start, offset - start);
            }
            start = start.max(offset + len);
        }
        Ok(())
    }

    /// The process that made the arena.
    pub fn owner_pid(&self) -> i32 {
        self.owner.as_raw()
    }

    /// Names this arena in handles (unique among the arenas of a process).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// `Numo::Shared::Native.claim_reference(array, shape, serial, offset)` in
/// the parent: makes `array` (just allocated by `Marshal.load`) a shared
/// array over the same memory as `offset` bytes into its live segment
/// `serial`, without copying.
pub fn claim_reference(obj: Value, shape: RArray, serial: u64, offset: usize) -> Result<Value> {
    let plan = shared_array::plan_for_object(obj, shape)?;
    if plan.bytes == 0 {
        return plan.adopt(obj, None, 0);
    }
    let (segment, delta) = Segment::duplicate(serial, offset, plan.bytes)?;
    plan.adopt(obj, Some(segment), delta)
}

fn bad_handle(offset: u64) -> Error {
    Error::Argument(format!(
        "no result of the results arena starts at offset {offset}"
    ))
}

fn punch(fd: &OwnedFd, offset: u64, len: u64) {
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    // Best effort: the pages also go when the memfd's last mapping does.
    let _ = fallocate(
        fd.as_raw_fd(),
        flags,
        offset as libc::off_t,
        len as libc::off_t,
    );
}
