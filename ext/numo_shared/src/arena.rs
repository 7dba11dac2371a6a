//! `Arena`: where workers of `Numo::Parallel` put the arrays they return.
//!
//! The parent makes an arena before forking: an anonymous memfd, sized
//! sparsely to the machine's memory (no page is used until written), whose
//! first page holds an atomic cursor. Each worker takes page-aligned blocks
//! by advancing the cursor, reserves them with `posix_fallocate` (so a full
//! memory raises in the worker instead of SIGBUS), writes its array there and
//! sends the parent only a handle (offset and shape). The parent maps each
//! claimed block as its own segment, which frees its pages when the array is
//! collected. Closing the arena frees every block nobody claimed (a worker
//! that raised or was killed mid-item) and closes the memfd, so nothing
//! outlives the arrays actually returned, and nothing is ever named in
//! /dev/shm.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use magnus::{prelude::*, RArray, RClass, Ruby, Value};
use memmap2::{MmapMut, MmapOptions};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::unistd::{getpid, Pid};

use crate::error::{Error, Result};
use crate::segment::{self, io_error, Segment};
use crate::shared_array;

const PAGE: u64 = 4096;

#[magnus::wrap(class = "Numo::Shared::Arena", free_immediately, size)]
pub struct Arena {
    state: Mutex<Option<Open>>,
    owner: Pid,
}

struct Open {
    fd: OwnedFd,
    header: MmapMut,
    capacity: u64,
    /// Blocks handed to the parent's arrays: (offset, length).
    claimed: Vec<(u64, u64)>,
}

impl Open {
    fn cursor(&self) -> &AtomicU64 {
        // SAFETY: the header page is mapped for the arena's life and the
        // cursor sits at its start, 8-byte aligned.
        unsafe { &*(self.header.as_ptr() as *const AtomicU64) }
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
        let capacity = round_up(segment::memory_total()?).max(2 * PAGE);
        let size = libc::off_t::try_from(capacity)
            .map_err(|_| Error::os(Errno::EFBIG, "sizing the results arena"))?;
        nix::unistd::ftruncate(&fd, size).map_err(|e| Error::os(e, "sizing the results arena"))?;
        // SAFETY: a shared mapping of our own memfd's first page.
        let header = unsafe {
            MmapOptions::new()
                .len(PAGE as usize)
                .map_mut(fd.as_raw_fd())
        }
        .map_err(|e| io_error(e, "mapping the results arena".into()))?;
        let open = Open {
            fd,
            header,
            capacity,
            claimed: Vec::new(),
        };
        open.cursor().store(PAGE, Ordering::SeqCst);
        Ok(Arena {
            state: Mutex::new(Some(open)),
            owner: getpid(),
        })
    }

    fn with_open<T>(&self, f: impl FnOnce(&mut Open) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.as_mut() {
            Some(open) => f(open),
            None => Err(closed()),
        }
    }

    /// `arena.export_target(klass, shape)` in a worker: a block for an array of
    /// `klass` and `shape`, reserved, and a shared array over it to fill.
    /// Returns `[offset, array]`.
    pub fn export_target(
        ruby: &Ruby,
        rb_self: &Self,
        klass: RClass,
        shape: RArray,
    ) -> Result<RArray> {
        let plan = shared_array::plan(ruby, klass, shape)?;
        let len = plan.bytes as u64;
        let (offset, segment) = if len == 0 {
            (0, None)
        } else {
            rb_self.with_open(|open| {
                let block = round_up(len);
                let offset = open.cursor().fetch_add(block, Ordering::SeqCst);
                if offset
                    .checked_add(block)
                    .is_none_or(|end| end > open.capacity)
                {
                    return Err(Error::os(
                        Errno::ENOMEM,
                        format!(
                            "returning {} through shared memory: the results arena is full",
                            segment::human_bytes(plan.bytes)
                        ),
                    ));
                }
                segment::allocate_range(&open.fd, offset, block, plan.bytes, "results arena")?;
                let seg = Segment::map_shared(&open.fd, offset, plan.bytes, "results arena")?;
                Ok((offset, Some(seg)))
            })?
        };
        let array = plan.wrap(klass, segment);
        let pair = RArray::with_capacity(2);
        pair.push(ruby.into_value(offset))
            .map_err(|e| Error::Type(e.to_string()))?;
        pair.push(array).map_err(|e| Error::Type(e.to_string()))?;
        Ok(pair)
    }

    /// `arena.claim(array, shape, offset)` in the parent: makes `array`, just
    /// allocated by `Marshal.load`, the shared array over the worker's block.
    pub fn claim(
        ruby: &Ruby,
        rb_self: &Self,
        obj: Value,
        shape: RArray,
        offset: u64,
    ) -> Result<Value> {
        if getpid() != rb_self.owner {
            return Err(Error::Argument(
                "only the process that made an arena claims from it".into(),
            ));
        }
        let klass = obj.class();
        let plan = shared_array::plan(ruby, klass, shape)?;
        let len = plan.bytes as u64;
        let segment = if len == 0 {
            None
        } else {
            Some(rb_self.with_open(|open| {
                let end = offset
                    .checked_add(round_up(len))
                    .ok_or_else(|| bad_handle(offset))?;
                if offset < PAGE
                    || !offset.is_multiple_of(PAGE)
                    || end > open.cursor().load(Ordering::SeqCst)
                {
                    return Err(bad_handle(offset));
                }
                if open.claimed.iter().any(|&(o, l)| offset < o + l && o < end) {
                    return Err(Error::Argument(format!(
                        "block at offset {offset} was already claimed"
                    )));
                }
                let seg = Segment::map_shared(&open.fd, offset, plan.bytes, "results arena")?;
                open.claimed.push((offset, round_up(len)));
                Ok(seg.release_pages_on_drop())
            })?)
        };
        plan.adopt(obj, segment)
    }

    /// `arena.close`: frees every block nobody claimed and closes the memfd.
    /// Claimed arrays keep their own mappings. Safe to call twice.
    pub fn close(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut open) = state.take() else {
            return Ok(());
        };
        if getpid() != self.owner {
            return Ok(()); // a worker's copy: the parent cleans up
        }
        let end = open.cursor().load(Ordering::SeqCst).min(open.capacity);
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
}

fn bad_handle(offset: u64) -> Error {
    Error::Argument(format!(
        "no block of the results arena starts at offset {offset}"
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
