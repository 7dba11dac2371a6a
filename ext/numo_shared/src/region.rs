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
use crate::memfd;
use crate::segment;

/// Sizes tried, largest first: a process under an address-space limit
/// (`ulimit -v`) or a file size limit gets a smaller region, or none.
const SIZES: [usize; 5] = [256 << 20, 64 << 20, 16 << 20, 4 << 20, 1 << 20];

/// Where packed data starts: after the cursor, on its own cache line.
const DATA_START: u64 = 64;

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
        let fsize = memfd::file_size_limit().unwrap_or(u64::MAX);
        SIZES
            .iter()
            .filter(|&&len| len as u64 <= fsize)
            .find_map(|&len| Self::map(len))
    }

    fn map(len: usize) -> Option<Region> {
        let fd = memfd::create(c"numo-shared-region", len, "small results").ok()?;
        // SAFETY: a fresh shared mapping of our own memfd, not populated.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return None;
        }
        let region = Region {
            addr: addr as usize,
            len,
        };
        region.cursor().store(DATA_START, Ordering::SeqCst);
        Some(region)
    }

    fn cursor(&self) -> &AtomicU64 {
        // SAFETY: the first 8 bytes of the mapping, 8-byte aligned.
        unsafe { &*(self.addr as *const AtomicU64) }
    }

    /// Takes `len` bytes and lets `fill` write them; returns their offset,
    /// or `None` when the region is full.
    pub fn pack_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Option<u64> {
        let taken = (len.max(1) as u64).next_multiple_of(8);
        let start = self.cursor().fetch_add(taken, Ordering::SeqCst);
        start
            .checked_add(taken)
            .filter(|&end| end <= self.len as u64)?;
        // SAFETY: start..start+len was just taken by this process alone.
        let target =
            unsafe { std::slice::from_raw_parts_mut((self.addr + start as usize) as *mut u8, len) };
        fill(target);
        Some(start)
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

    /// Unmaps the region in this process.
    ///
    /// # Safety
    /// Nothing of this process may read the region afterwards.
    pub unsafe fn unmap(&self) {
        segment::unmap(self.addr, self.len);
    }
}
