//! Anonymous memory files (`memfd_create`): sized, or filled with a copy of
//! some bytes.

use std::ffi::CStr;
use std::os::fd::OwnedFd;

use crate::error::{human_bytes, Error, Result};
use crate::memory::file;
use crate::memory::limits::{check_available, check_file_size_limit};
use crate::sys::{self, page_size, Errno};

/// A new memfd named `name`, `len` bytes long (sparse: no page is taken yet).
pub fn create(name: &CStr, len: usize, what: &str) -> Result<OwnedFd> {
    check_file_size_limit(len, &format!("creating {} of {what}", human_bytes(len)))?;
    let fd =
        sys::memfd_create(name).map_err(|e| Error::os(e, format!("memfd_create for {what}")))?;
    let size = libc::off_t::try_from(len).map_err(|_| {
        Error::os(
            Errno::EFBIG,
            format!("sizing {} of {what}", human_bytes(len)),
        )
    })?;
    sys::ftruncate(&fd, size)
        .map_err(|e| Error::os(e, format!("sizing {} of {what}", human_bytes(len))))?;
    Ok(fd)
}

/// A new memfd holding a copy of `data`, sized to whole pages, written with
/// `pwrite`: the kernel puts the bytes straight into the file's fresh pages,
/// and no page of this process's memory is mapped or faulted for it (see
/// the README's benchmarks: on this project's machines that is the cheapest
/// way to fresh shared pages). `what` names the data in errors.
pub fn copy_into_new(name: &CStr, data: &[u8], what: &str) -> Result<OwnedFd> {
    check_available(data.len(), what)?;
    let len = data.len().div_ceil(page_size()).max(1) * page_size();
    let fd = create(name, len, what)?;
    file::write_all_at(&fd, data, 0)
        .map_err(|e| Error::os(e, format!("writing {} of {what}", human_bytes(data.len()))))?;
    Ok(fd)
}
