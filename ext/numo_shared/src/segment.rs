//! `Segment`: a `MAP_SHARED` mapping of a file descriptor, so that writes by
//! any process that has it mapped (a forked child included) are seen by all.
//!
//! Anonymous segments are backed by `memfd_create`: nothing appears in the file
//! system, and the memory goes away when the last mapping does, even if the
//! process is killed. The descriptor is closed as soon as the memory is
//! mapped, so a segment costs one mapping and no descriptor.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::unistd::{getpid, Pid};

use crate::error::{Error, Result};

/// Where a segment sits in a results arena: its id and byte offset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ArenaBlock {
    pub arena: u64,
    pub offset: u64,
}

/// How a segment maps its file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Shared and writable: writes reach the file and every process.
    Shared,
    /// The same, with every page mapped at once.
    SharedPopulated,
    /// Shared, read-only.
    ReadOnly,
    /// Private copy-on-write: writes stay in this process.
    CopyOnWrite,
}

/// A mapping of a file descriptor, unmapped on drop.
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    /// Names this mapping among the live segments of this process and of the
    /// processes forked from it: the creating pid in the high 32 bits.
    serial: u64,
    /// When set, dropping the segment in this process (and only this one)
    /// also frees its pages in the file behind it (`MADV_REMOVE`): the
    /// segment is the only user of that range of a larger file.
    release_pages_in: Option<Pid>,
    block: Option<ArenaBlock>,
}

// SAFETY: a Segment is a plain mapping; its pointer is valid for its life.
unsafe impl Send for Segment {}

/// The segments mapped in this process, by serial: (address, length).
/// Forked children inherit the table along with the mappings.
static LIVE: Mutex<BTreeMap<u64, (usize, usize)>> = Mutex::new(BTreeMap::new());
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, (usize, usize)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Segment {
    fn drop(&mut self) {
        live().remove(&self.serial);
        let addr = self.ptr.as_ptr() as *mut libc::c_void;
        // SAFETY: the range is our own mapping, unmapped exactly once here;
        // when release_pages_in is us, nothing else uses its pages.
        unsafe {
            if self.release_pages_in == Some(getpid()) {
                libc::madvise(addr, self.len, libc::MADV_REMOVE);
            }
            libc::munmap(addr, self.len);
        }
    }
}

impl Segment {
    /// Creates an anonymous shared segment of `len` bytes, zero-filled, with
    /// every page reserved up front so that running out of memory raises here
    /// instead of killing the process with SIGBUS on a later write.
    pub fn anonymous(len: usize) -> Result<Segment> {
        check_fits_in_memory(len)?;
        let name: &CStr = c"numo-shared";
        let fd = memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| Error::os(e, "memfd_create for a shared array"))?;
        reserve(&fd, len, "memfd")?;
        Self::map_fd(&fd, 0, len, "shared memory (memfd)", Access::Shared)
    }

    /// Maps `len` (> 0) bytes of `fd` from `offset` (page-aligned).
    pub fn map_fd(
        fd: &impl AsFd,
        offset: u64,
        len: usize,
        place: &str,
        access: Access,
    ) -> Result<Segment> {
        let mapping = || format!("mapping {} of {place}", human_bytes(len));
        let off = libc::off_t::try_from(offset).map_err(|_| Error::os(Errno::EFBIG, mapping()))?;
        let (prot, flags) = match access {
            Access::Shared => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
            Access::SharedPopulated => (
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
            ),
            Access::ReadOnly => (libc::PROT_READ, libc::MAP_SHARED),
            Access::CopyOnWrite => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
        };
        // SAFETY: a fresh mapping chosen by the kernel; other processes may
        // write to it concurrently, which is the point: the memory is only
        // ever reached through raw pointers by Numo.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags,
                fd.as_fd().as_raw_fd(),
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::os(Errno::last(), mapping()));
        }
        Ok(Self::adopt_mapping(addr, len))
    }

    /// Writes this mapping's changes to the file behind it (`msync`).
    pub fn flush(&self) -> Result<()> {
        // SAFETY: our own live mapping.
        let rc = unsafe {
            libc::msync(
                self.ptr.as_ptr() as *mut libc::c_void,
                self.len,
                libc::MS_SYNC,
            )
        };
        if rc != 0 {
            return Err(Error::os(
                Errno::last(),
                format!("flushing {} of a mapped file", human_bytes(self.len)),
            ));
        }
        Ok(())
    }

    /// A second, independent mapping of the same pages as `len` bytes at
    /// `offset` into the live segment `serial` of this process (`mremap` with
    /// an old size of 0). Returns it with the distance from its start to
    /// `offset` (the mapping starts on a page boundary).
    pub fn duplicate(serial: u64, offset: usize, len: usize) -> Result<(Segment, usize)> {
        let gone = || {
            Error::Argument(format!(
                "the shared array a worker returned by reference (serial {serial:#x}) is no longer mapped in this process"
            ))
        };
        let (addr, total) = *live().get(&serial).ok_or_else(gone)?;
        if offset.checked_add(len).is_none_or(|end| end > total) || len == 0 {
            return Err(Error::Argument(format!(
                "a reference to {len} bytes at offset {offset} does not fit a shared array of {total} bytes"
            )));
        }
        let page = page_size();
        let start = offset / page * page;
        let span = (offset - start + len).div_ceil(page) * page;
        let span = span.min(total - start);
        // SAFETY: addr..addr+total is a live MAP_SHARED mapping of ours.
        let dup = unsafe {
            libc::mremap(
                (addr + start) as *mut libc::c_void,
                0,
                span,
                libc::MREMAP_MAYMOVE,
            )
        };
        if dup == libc::MAP_FAILED {
            return Err(Error::os(
                Errno::last(),
                format!("mapping {} of a shared array again", human_bytes(len)),
            ));
        }
        Ok((Self::adopt_mapping(dup, span), offset - start))
    }

    fn adopt_mapping(addr: *mut libc::c_void, len: usize) -> Segment {
        let serial = (u64::from(getpid().as_raw() as u32) << 32)
            | u64::from(NEXT_SERIAL.fetch_add(1, Ordering::Relaxed));
        live().insert(serial, (addr as usize, len));
        Segment {
            ptr: NonNull::new(addr as *mut u8).expect("mmap never returns NULL here"),
            len,
            serial,
            release_pages_in: None,
            block: None,
        }
    }

    /// Makes dropping this segment in the current process free its pages in
    /// the file behind it (the segment owns that range alone).
    pub fn release_pages_on_drop(mut self) -> Segment {
        self.release_pages_in = Some(getpid());
        self
    }

    /// True when dropping the segment here would free its pages.
    pub fn releases_pages_here(&self) -> bool {
        self.release_pages_in == Some(getpid())
    }

    /// Records that this segment is `block` of a results arena.
    pub fn in_arena(mut self, block: ArenaBlock) -> Segment {
        self.block = Some(block);
        self
    }

    pub fn arena_block(&self) -> Option<ArenaBlock> {
        self.block
    }

    /// Hands this segment's pages to another process: from now on this
    /// process sees a private copy-on-write mapping of them at the same
    /// address (so its later writes stay its own) and never frees them.
    pub fn hand_over(&mut self, fd: &impl AsFd, offset: u64) -> Result<()> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| Error::os(Errno::EFBIG, "handing over a results block"))?;
        // SAFETY: replaces our own mapping in place with one of the same
        // length over the same file range; the address stays valid.
        let addr = unsafe {
            libc::mmap(
                self.ptr.as_ptr() as *mut libc::c_void,
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                fd.as_fd().as_raw_fd(),
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::os(Errno::last(), "handing over a results block"));
        }
        self.release_pages_in = None;
        self.block = None;
        Ok(())
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The pid of the process that mapped this segment first.
    pub fn creator_pid(&self) -> i32 {
        (self.serial >> 32) as i32
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// The size of the file behind `fd`, and whether it is a regular file.
pub fn file_size(fd: &impl AsFd, what: &str) -> Result<(usize, bool)> {
    let stat = nix::sys::stat::fstat(fd.as_fd().as_raw_fd())
        .map_err(|e| Error::os(e, format!("reading the size of {what}")))?;
    let size = usize::try_from(stat.st_size)
        .map_err(|_| Error::Format(format!("{what} has a negative size")))?;
    Ok((size, stat.st_mode & libc::S_IFMT == libc::S_IFREG))
}

/// Writes all of `data` to `fd` at `offset` (`pwrite`, retried on EINTR
/// and short writes).
pub fn write_all_at(fd: &impl AsFd, data: &[u8], offset: u64) -> nix::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let at = libc::off_t::try_from(offset + done as u64).map_err(|_| Errno::EFBIG)?;
        match nix::sys::uio::pwrite(fd.as_fd(), &data[done..], at) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fills `buf` from `fd` at `offset` (`pread`, retried on EINTR and short
/// reads) up to the end of the file; returns the bytes read.
pub fn read_at(fd: &impl AsFd, buf: &mut [u8], offset: u64) -> nix::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = libc::off_t::try_from(offset + done as u64).map_err(|_| Errno::EFBIG)?;
        match nix::sys::uio::pread(fd.as_fd(), &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Sizes `fd` to `len` bytes and allocates every block, so that a full tmpfs
/// or memory limit is reported now, as an exception naming the size.
pub fn reserve(fd: &OwnedFd, len: usize, place: &str) -> Result<()> {
    let off =
        libc::off_t::try_from(len).map_err(|_| Error::os(Errno::EFBIG, reserving(len, place)))?;
    nix::unistd::ftruncate(fd, off).map_err(|e| Error::os(e, reserving(len, place)))?;
    allocate_range(fd, 0, len as u64, len, place)
}

/// Allocates the blocks of `fd` in `offset..offset + len`; `bytes` and
/// `place` name the request in the error.
pub fn allocate_range(
    fd: &OwnedFd,
    offset: u64,
    len: u64,
    bytes: usize,
    place: &str,
) -> Result<()> {
    let to_off_t = |n: u64| {
        libc::off_t::try_from(n).map_err(|_| Error::os(Errno::EFBIG, reserving(bytes, place)))
    };
    let (offset, len) = (to_off_t(offset)?, to_off_t(len)?);
    loop {
        match nix::fcntl::posix_fallocate(fd.as_raw_fd(), offset, len) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::os(e, reserving(bytes, place))),
        }
    }
}

fn reserving(bytes: usize, place: &str) -> String {
    format!(
        "reserving {} of shared memory ({place})",
        human_bytes(bytes)
    )
}

/// Refuses a size larger than the machine's RAM and swap together before any
/// page is touched: reserving it would only end in the OOM killer.
fn check_fits_in_memory(len: usize) -> Result<()> {
    let total = memory_total()?;
    if (len as u64) > total {
        return Err(Error::os(
            Errno::ENOMEM,
            format!(
                "reserving {} of shared memory: more than this machine's RAM and swap ({})",
                human_bytes(len),
                human_bytes(total as usize)
            ),
        ));
    }
    Ok(())
}

/// RAM and swap together, in bytes.
pub fn memory_total() -> Result<u64> {
    let info = nix::sys::sysinfo::sysinfo().map_err(|e| Error::os(e, "sysinfo"))?;
    Ok(info.ram_total().saturating_add(info.swap_total()))
}

pub fn io_error(err: std::io::Error, context: impl Into<String>) -> Error {
    let errno = err
        .raw_os_error()
        .map(Errno::from_raw)
        .unwrap_or(Errno::EIO);
    Error::os(errno, context)
}

/// "8 bytes", "1.5 GiB": sizes in messages.
pub fn human_bytes(len: usize) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if len < 1024 {
        return format!("{len} bytes");
    }
    let mut value = len as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({len} bytes)", UNITS[unit])
}
