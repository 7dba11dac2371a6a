//! Files behind mappings: their size, positioned reads and writes that
//! retry as the system asks, and reserving their blocks up front.

use std::os::fd::{AsFd, OwnedFd};

use crate::error::{human_bytes, Error, Result};
use crate::memory::limits;
use crate::sys::{self, Errno};

/// The size of the file behind `fd`, and whether it is a regular file.
pub fn file_size(fd: &impl AsFd, what: &str) -> Result<(usize, bool)> {
    let stat = sys::fstat(fd).map_err(|e| Error::os(e, format!("reading the size of {what}")))?;
    let size = usize::try_from(stat.st_size)
        .map_err(|_| Error::Format(format!("{what} has a negative size")))?;
    Ok((size, stat.st_mode & libc::S_IFMT == libc::S_IFREG))
}

/// Writes all of `data` to `fd` at `offset` (`pwrite`, retried on EINTR
/// and short writes).
pub fn write_all_at(fd: &impl AsFd, data: &[u8], offset: u64) -> sys::SysResult<()> {
    let mut done = 0;
    while done < data.len() {
        let at = libc::off_t::try_from(offset + done as u64).map_err(|_| Errno::EFBIG)?;
        match sys::pwrite(fd, &data[done..], at) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fills `buf` from `fd` at `offset` (`pread`, retried on EINTR and short
/// reads) up to the end of the file; returns the bytes read.
pub fn read_at(fd: &impl AsFd, buf: &mut [u8], offset: u64) -> sys::SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = libc::off_t::try_from(offset + done as u64).map_err(|_| Errno::EFBIG)?;
        match sys::pread(fd, &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Sizes `fd` to `len` bytes and allocates every block, so that a full tmpfs
/// or memory limit is reported now, as an exception naming the size.
pub fn reserve(fd: &OwnedFd, len: usize, place: &str) -> Result<()> {
    limits::check_file_size_limit(len, &reserving(len, place))?;
    let off =
        libc::off_t::try_from(len).map_err(|_| Error::os(Errno::EFBIG, reserving(len, place)))?;
    sys::ftruncate(fd, off).map_err(|e| Error::os(e, reserving(len, place)))?;
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
    sys::posix_fallocate(fd, offset, len).map_err(|e| Error::os(e, reserving(bytes, place)))
}

fn reserving(bytes: usize, place: &str) -> String {
    format!(
        "reserving {} of shared memory ({place})",
        human_bytes(bytes)
    )
}

/// Clears `O_NONBLOCK` on `fd`, which was opened with it only so that a
/// FIFO at the path could not block the open.
pub fn clear_nonblocking(fd: &impl AsFd, what: &str) -> Result<()> {
    let context = || format!("opening {what}");
    let flags = sys::status_flags(fd).map_err(|e| Error::os(e, context()))?;
    sys::set_status_flags(fd, flags & !libc::O_NONBLOCK).map_err(|e| Error::os(e, context()))
}
