//! `Segment`: a `MAP_SHARED` mapping of a file descriptor, so that writes by
//! any process that has it mapped (a forked child included) are seen by all.
//!
//! Anonymous segments are backed by `memfd_create`: nothing appears in the file
//! system, and the memory goes away when the last mapping does, even if the
//! process is killed. The descriptor is closed as soon as the memory is
//! mapped, so a segment costs one mapping and no descriptor.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use memmap2::{MmapMut, MmapOptions};
use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

use crate::error::{Error, Result};

/// A shared, writable mapping, unmapped on drop.
pub struct Segment {
    map: MmapMut,
    /// When set, dropping the segment in this process (and only this one)
    /// also frees its pages in the file behind it (`MADV_REMOVE`): the
    /// segment is the only user of that range of a larger file.
    release_pages_in: Option<nix::unistd::Pid>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.release_pages_in == Some(nix::unistd::getpid()) && !self.map.is_empty() {
            // SAFETY: the range is our own mapping; nothing else uses its pages.
            unsafe {
                libc::madvise(
                    self.map.as_mut_ptr() as *mut libc::c_void,
                    self.map.len(),
                    libc::MADV_REMOVE,
                );
            }
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
        Self::map_shared(&fd, 0, len, "memfd")
    }

    /// Maps `len` bytes of `fd` from `offset`, shared and writable.
    pub fn map_shared(fd: &impl AsFd, offset: u64, len: usize, place: &str) -> Result<Segment> {
        // SAFETY: the mapping is MAP_SHARED over a descriptor we were handed;
        // other processes may write to it concurrently, which is the point:
        // the memory is only ever reached through raw pointers by Numo.
        let map = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(len)
                .map_mut(fd.as_fd().as_raw_fd())
        }
        .map_err(|e| {
            io_error(
                e,
                format!("mapping {} of shared memory ({place})", human_bytes(len)),
            )
        })?;
        Ok(Segment {
            map,
            release_pages_in: None,
        })
    }

    /// Makes dropping this segment in the current process free its pages in
    /// the file behind it (the segment owns that range alone).
    pub fn release_pages_on_drop(mut self) -> Segment {
        self.release_pages_in = Some(nix::unistd::getpid());
        self
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
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

pub fn io_error(err: std::io::Error, context: String) -> Error {
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
