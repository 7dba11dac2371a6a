//! `Segment`: a mapping of a file descriptor that a shared array's data lives
//! in, unmapped when dropped.
//!
//! Anonymous segments are backed by `memfd_create`: nothing appears in the file
//! system, and the memory goes away when the last mapping of it, in any
//! process, does, even if the process is killed. The descriptor is closed as
//! soon as the memory is mapped, so a segment costs one mapping and no
//! descriptor (unless files are kept, see `live`). No page of a segment is
//! ever released by hand: the kernel frees a memfd's pages when nothing maps
//! it any more. `live` names the shared ones, and shares each between the
//! arrays over it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{human_bytes, Error, Result};
use crate::memory::file;
use crate::memory::limits;
use crate::memory::memfd;
use crate::sys::Errno;

/// How a segment maps its file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Shared and writable: writes reach the file and every process.
    Shared,
    /// Shared, read-only.
    ReadOnly,
    /// Private copy-on-write: writes stay in this process.
    CopyOnWrite,
}

impl Access {
    /// Whether another process's mapping of the same pages sees this one's
    /// writes and the other way round: only such memory can be passed by
    /// reference, and only it can be mapped again with `duplicate`.
    pub fn is_shared_writable(self) -> bool {
        self == Access::Shared
    }
}

/// A mapping, unmapped on drop.
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
}

// SAFETY: a Segment is a plain mapping; its pointer is valid for its life,
// and a shared reference only reads its address and length.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the range is our own mapping, unmapped exactly once here.
        unsafe { unmap(self.ptr.as_ptr() as usize, self.len) };
    }
}

/// `MADV_POPULATE_WRITE` (Linux 5.14).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Maps every page of `addr..addr + len` for writing at once, far cheaper
/// than a page fault each for memory about to be written. False when the
/// kernel cannot (before Linux 5.14): the pages are then faulted in as they
/// are written.
///
/// # Safety
/// The range must lie in a live, writable mapping of this process.
pub unsafe fn populate(addr: usize, len: usize) -> bool {
    libc::madvise(addr as *mut libc::c_void, len, MADV_POPULATE_WRITE) == 0
}

/// `mmap(2)` of `len` bytes of `fd` from `offset`: at `at` (with
/// `MAP_FIXED` in `flags`, replacing what is there) or where the kernel
/// chooses. The address, or the errno of the failure.
///
/// # Safety
/// With `at`, the range must be this process's own mapping, which nothing
/// may use as it was afterwards.
pub unsafe fn mmap_raw(
    at: Option<usize>,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: std::os::fd::RawFd,
    offset: libc::off_t,
) -> std::result::Result<usize, Errno> {
    let addr = libc::mmap(
        at.unwrap_or(0) as *mut libc::c_void,
        len,
        prot,
        flags,
        fd,
        offset,
    );
    if addr == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(addr as usize)
    }
}

/// `munmap`, for mappings this module made.
///
/// # Safety
/// `addr..addr + len` must be a mapping nothing uses any more.
pub unsafe fn unmap(addr: usize, len: usize) {
    libc::munmap(addr as *mut libc::c_void, len);
}

impl Segment {
    /// Creates an anonymous shared segment of `len` bytes, zero-filled, with
    /// its memfd's descriptor, which the mapping does not need (it may be
    /// kept, see `live`, or closed).
    ///
    /// Its pages are taken when first written, as for memory from malloc: a
    /// memfd lives on the kernel's internal tmpfs mount, which has no size
    /// limit, so a full /dev/shm cannot make a later write die of SIGBUS.
    /// Requests larger than the memory the machine has available raise here;
    /// under strict overcommit (`vm.overcommit_memory = 2`), where a page
    /// that cannot be charged would be SIGBUS, every page is reserved now.
    pub fn anonymous(len: usize) -> Result<(Segment, OwnedFd)> {
        limits::check_available(len, "shared memory (memfd)")?;
        let fd = memfd::create(c"numo-shared", len, "shared memory (memfd)")?;
        if limits::strict_overcommit() {
            file::allocate_range(&fd, 0, len as u64, len, "memfd")?;
        }
        let segment = Self::map_fd(&fd, 0, len, "shared memory (memfd)", Access::Shared)?;
        Ok((segment, fd))
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
            Access::ReadOnly => (libc::PROT_READ, libc::MAP_SHARED),
            Access::CopyOnWrite => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
        };
        // SAFETY: a fresh mapping chosen by the kernel; other processes may
        // write to it concurrently, which is the point: the memory is only
        // ever reached through raw pointers by Numo.
        let addr = unsafe { mmap_raw(None, len, prot, flags, fd.as_fd().as_raw_fd(), off) }
            .map_err(|errno| mapping_error(errno, mapping()))?;
        Ok(Self::adopt_mapping(addr, len, access))
    }

    /// Takes ownership of a live mapping made elsewhere in this crate.
    pub fn adopt_mapping(addr: usize, len: usize, access: Access) -> Segment {
        Segment {
            ptr: NonNull::new(addr as *mut u8).expect("mmap never returns NULL here"),
            len,
            access,
        }
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

    /// Gives up the memory now: the range is replaced by private anonymous
    /// pages (so that code still holding a pointer into it reads zeros
    /// instead of faulting) and kept reserved until the returned
    /// `Reservation` is dropped. The file's pages go when no other mapping
    /// of them, in any process, is left.
    pub fn release(self) -> Reservation {
        let addr = self.ptr.as_ptr() as usize;
        let len = self.len;
        // SAFETY: replaces our own mapping in place with anonymous memory of
        // the same length; nothing else is mapped there.
        let _ = unsafe {
            mmap_raw(
                Some(addr),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        std::mem::forget(self);
        Reservation { addr, len }
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// The start of the mapping (Numo reads and writes through it).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// Address space kept after `Segment::release`, unmapped when dropped.
pub struct Reservation {
    addr: usize,
    len: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the anonymous range `Segment::release` left; its array is gone.
        unsafe { unmap(self.addr, self.len) };
    }
}

/// The error for a failed `mmap`/`mremap`. `ENOMEM` with memory to spare is
/// usually the kernel's limit on the number of mappings of one process
/// (`vm.max_map_count`): every shared array and every result is a mapping of
/// its own, so that limit is named when this process is close to it.
pub fn mapping_error(errno: Errno, context: String) -> Error {
    if errno == Errno::ENOMEM {
        if let Some((count, limit)) = mapping_count() {
            if count + 16 >= limit {
                return Error::os(
                    errno,
                    format!(
                        "{context}: this process has {count} memory mappings, the kernel's limit \
                         (vm.max_map_count) is {limit}; each shared array, view by reference and \
                         Numo::Parallel result is a mapping of its own: free arrays you no longer \
                         need, or raise the limit with sysctl vm.max_map_count"
                    ),
                );
            }
        }
    }
    Error::os(errno, context)
}

/// This process's number of mappings and the kernel's limit on it. Read
/// into a buffer on the stack: when the limit is reached, an allocation
/// that needs a new mapping would fail too.
fn mapping_count() -> Option<(usize, usize)> {
    let mut buf = [0u8; 16384];
    let mut count = 0;
    let maps = std::fs::File::open("/proc/self/maps").ok()?;
    loop {
        match std::io::Read::read(&mut &maps, &mut buf) {
            Ok(0) => break,
            Ok(n) => count += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    let limit = std::fs::File::open("/proc/sys/vm/max_map_count").ok()?;
    let n = std::io::Read::read(&mut &limit, &mut buf).ok()?;
    let limit = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
    Some((count, limit))
}
