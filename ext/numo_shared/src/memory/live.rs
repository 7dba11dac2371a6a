//! `Mapping`: a segment shared by the arrays over it (an array, its views
//! by reference, results passed back by reference all hold the same
//! mapping), and the registry of this process's shared, writable mappings
//! by serial: what passing an array by reference names, and what the
//! receiving process finds again.
//!
//! A serial is the pid of the process that made the mapping (high 32 bits)
//! and a count of that process's mappings. Forked children inherit the
//! registry with the mappings, so a child finds its parent's serials. While
//! files are kept (a `Numo::Parallel::Pool` is open in this process, whose
//! workers were forked before some arrays were made), each entry also holds
//! the file behind its mapping, which the process can send to a worker.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{Error, Result};
use crate::memory::pid;
use crate::memory::segment::{Reservation, Segment};

/// A segment, named by a serial while it lives if it is shared and
/// writable. Unmapped when the last array over it is collected.
pub struct Mapping {
    segment: Option<Segment>,
    serial: u64,
}

impl Mapping {
    pub fn segment(&self) -> &Segment {
        self.segment
            .as_ref()
            .expect("a live mapping has its segment")
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The pid of the process that mapped this segment first.
    pub fn creator_pid(&self) -> i32 {
        (self.serial >> 32) as i32
    }

    /// Gives up the memory now (see `Segment::release`), when this is the
    /// only reference to the mapping; otherwise returns it as it is.
    pub fn release(mapping: Arc<Mapping>) -> std::result::Result<Reservation, Arc<Mapping>> {
        let mut mapping = Arc::try_unwrap(mapping)?;
        live().remove(&mapping.serial);
        let segment = mapping
            .segment
            .take()
            .expect("a live mapping has its segment");
        Ok(segment.release())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.segment.is_some() {
            let mut live = live();
            if live
                .get(&self.serial)
                .is_some_and(|e| e.mapping.strong_count() == 0)
            {
                live.remove(&self.serial);
            }
        }
    }
}

/// The file behind one or more mappings, kept open for sending.
pub struct KeptFile {
    pub fd: OwnedFd,
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A kept file and where in it a mapping starts.
pub type FileAt = (Arc<KeptFile>, u64);

struct Entry {
    mapping: Weak<Mapping>,
    file: Option<FileAt>,
}

static LIVE: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

/// How many reasons this process has to keep files (open pools).
static KEEPERS: AtomicUsize = AtomicUsize::new(0);
/// Files kept now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

fn live() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `segment` as a mapping arrays can share, registered under a new serial
/// of this process if it is shared and writable, with the file it maps (and
/// where) if that is kept.
pub fn share(segment: Segment, file: Option<FileAt>) -> Arc<Mapping> {
    let serial = (u64::from(pid::current() as u32) << 32)
        | u64::from(NEXT_SERIAL.fetch_add(1, Ordering::Relaxed));
    share_as(segment, serial, file)
}

/// `share` under a serial given by another process: a pool's worker maps a
/// file its parent sent under the parent's serial of that array, which the
/// parent's handles name.
pub fn share_as(segment: Segment, serial: u64, file: Option<FileAt>) -> Arc<Mapping> {
    let shared = segment.access().is_shared_writable();
    let mapping = Arc::new(Mapping {
        segment: Some(segment),
        serial,
    });
    if shared {
        let entry = Entry {
            mapping: Arc::downgrade(&mapping),
            file,
        };
        live().insert(serial, entry);
    }
    mapping
}

/// The live shared mapping named `serial` in this process.
pub fn find(serial: u64) -> Option<Arc<Mapping>> {
    live().get(&serial)?.mapping.upgrade()
}

/// The live shared mapping named `serial`, checked to hold `len` bytes from
/// `offset`: what a reference from another process names.
pub fn find_range(serial: u64, offset: usize, len: usize) -> Result<Arc<Mapping>> {
    let mapping = find(serial).ok_or_else(|| {
        Error::Argument(format!(
            "the shared array passed by reference (serial {serial:#x}) is no longer mapped in this process"
        ))
    })?;
    let total = mapping.segment().len();
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > total) {
        return Err(Error::Argument(format!(
            "a reference to {len} bytes at offset {offset} does not fit a shared array of {total} bytes"
        )));
    }
    Ok(mapping)
}

/// Whether `serial` names a live shared mapping of this process.
pub fn contains(serial: u64) -> bool {
    live()
        .get(&serial)
        .is_some_and(|e| e.mapping.strong_count() > 0)
}

/// The kept file behind the mapping `serial`, where the mapping starts in
/// it, and the mapping's length.
pub fn file_of(serial: u64) -> Option<(Arc<KeptFile>, u64, usize)> {
    let live = live();
    let entry = live.get(&serial)?;
    let len = entry.mapping.upgrade()?.segment().len();
    let (file, offset) = entry.file.clone()?;
    Some((file, offset, len))
}

/// The count the next serial of this process will carry: serials of this
/// process below it were made before now.
pub fn serial_watermark() -> u32 {
    NEXT_SERIAL.load(Ordering::Relaxed)
}

/// Files of new mappings are kept from now on, until `stop_keeping_files`
/// is called as often.
pub fn keep_files() {
    KEEPERS.fetch_add(1, Ordering::Relaxed);
}

pub fn stop_keeping_files() {
    let _ = KEEPERS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// `fd` (the file behind a new mapping) to keep, when files are kept and
/// the budget allows: at most a quarter of the descriptors this process may
/// open, so that a program with many arrays keeps descriptors for its own
/// files. `None` (and `fd` closed) otherwise.
pub fn keep(fd: OwnedFd) -> Option<Arc<KeptFile>> {
    if KEEPERS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let budget = crate::sys::soft_limit(libc::RLIMIT_NOFILE)
        .ok()
        .flatten()
        .map_or(4096, |limit| (limit / 4) as usize);
    if KEPT.fetch_add(1, Ordering::Relaxed) >= budget {
        KEPT.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(Arc::new(KeptFile { fd }))
}

/// `keep` of a duplicate of `fd`, which the caller goes on using.
pub fn keep_copy(fd: &impl AsFd) -> Option<Arc<KeptFile>> {
    if KEEPERS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    keep(fd.as_fd().try_clone_to_owned().ok()?)
}
