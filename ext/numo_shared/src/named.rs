//! Named shared arrays: POSIX shared-memory segments in /dev/shm that any
//! process of the same user can open by name, each starting with a
//! `Header` that records the array's class and shape.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use magnus::{prelude::*, RArray, RClass, Ruby, Value};

use crate::error::{Error, Result};
use crate::file_map;
use crate::header::{self, Header};
use crate::segment::{self, Access, Segment};
use crate::shared_array;
use crate::sys::{self, Errno};

const SHM_DIR: &str = "/dev/shm";
const MAX_NAME: usize = 200;

/// Checks a segment name: letters, digits, '.', '_' and '-', starting with a
/// letter or digit, so that it is one file name in /dev/shm.
pub fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::Argument(format!(
            "invalid shared-memory name {name:?}: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', \
             starting with a letter or digit"
        )))
    }
}

fn place(name: &str) -> String {
    format!("{SHM_DIR}/{name}")
}

/// The name `shm_open` takes for `name` (checked: no NUL in it).
fn shm_path(name: &str) -> CString {
    CString::new(format!("/{name}")).expect("a checked name has no NUL")
}

/// `Numo::DFloat.new_shared(2, 3, name: "frames")`.
pub fn create(ruby: &Ruby, klass: RClass, shape: RArray, name: String) -> Result<Value> {
    check_name(&name)?;
    let plan = shared_array::plan(ruby, klass, shape)?;
    let pid = sys::getpid();
    let header = Header {
        class_name: klass.inspect(),
        shape: plan.dims().to_vec(),
        data_bytes: plan.bytes,
        creator_pid: pid,
        creator_start: header::process_start_time(pid).unwrap_or(0),
    };
    let head = header.encode()?;
    let total = head
        .len()
        .checked_add(plan.bytes)
        .ok_or_else(|| Error::Argument("the segment would be larger than memory".into()))?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd =
        sys::shm_open(&shm_path(&name), flags, libc::S_IRUSR | libc::S_IWUSR).map_err(|e| {
            Error::os(
                e,
                format!("creating shared-memory segment {}", place(&name)),
            )
        })?;
    let made = fill(&fd, &head, total, &name)
        .and_then(|segment| plan.wrap_at(klass, Some(segment), head.len()));
    match made {
        Ok(array) => Ok(array),
        Err(err) => {
            let _ = sys::shm_unlink(&shm_path(&name));
            Err(err)
        }
    }
}

/// Sizes and reserves the new segment, maps it and writes its header.
fn fill(fd: &OwnedFd, head: &[u8], total: usize, name: &str) -> Result<Segment> {
    // The mode given to shm_open passes through the umask; make it exact.
    sys::fchmod(fd, libc::S_IRUSR | libc::S_IWUSR)
        .map_err(|e| Error::os(e, format!("setting the mode of {}", place(name))))?;
    segment::reserve(fd, total, &place(name))?;
    let mut map = Segment::map_fd(
        fd,
        0,
        total,
        &format!("shared memory ({})", place(name)),
        Access::Shared,
    )?;
    // SAFETY: the mapping is `total` >= head.len() bytes long and ours.
    unsafe {
        let base = map.as_mut_ptr();
        std::ptr::copy_nonoverlapping(head[8..].as_ptr(), base.add(8), head.len() - 8);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::copy_nonoverlapping(head.as_ptr(), base, 8);
    }
    Ok(map)
}

/// `Numo::NArray.open_shared("frames", readonly: false)`.
pub fn open(ruby: &Ruby, name: String, readonly: bool) -> Result<Value> {
    check_name(&name)?;
    let what = format!("shared-memory segment {}", place(&name));
    let mode = if readonly {
        libc::O_RDONLY
    } else {
        libc::O_RDWR
    };
    // O_NONBLOCK: a FIFO planted at the name must not block the open.
    let fd = sys::shm_open(
        &shm_path(&name),
        mode | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| Error::os(e, format!("opening {what}")))?;
    let total = own_segment_size(&fd, &what)?;
    let header = read_header(&fd, total, &what)?;
    let klass = class_named(ruby, &header.class_name, &what)?;
    let shape = ruby.ary_from_vec(header.shape.iter().map(|&d| d as u64).collect());
    let plan = shared_array::plan(ruby, klass, shape)?;
    if plan.bytes != header.data_bytes {
        return Err(Error::Format(format!(
            "{what} has a damaged header: {} of shape {:?} needs {} bytes, the header says {}",
            header.class_name, header.shape, plan.bytes, header.data_bytes
        )));
    }
    let access = if readonly {
        Access::ReadOnly
    } else {
        Access::Shared
    };
    let segment = Segment::map_fd(
        &fd,
        0,
        total,
        &format!("shared memory ({})", place(&name)),
        access,
    )?;
    let array = plan.wrap_at(klass, Some(segment), header.data_offset())?;
    if readonly {
        array.freeze();
    }
    Ok(array)
}

/// The size of the segment open at `fd`, once it is known to be a regular
/// file of this user: /dev/shm is world-writable, so another user can plant
/// a segment (or a FIFO) under the name this user expects.
fn own_segment_size(fd: &OwnedFd, what: &str) -> Result<usize> {
    let stat = sys::fstat(fd).map_err(|e| Error::os(e, format!("opening {what}")))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::Format(format!("{what} is not a regular file")));
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if stat.st_uid != uid {
        return Err(Error::os(
            Errno::EACCES,
            format!(
                "opening {what}: it belongs to uid {}, not to this user (uid {uid})",
                stat.st_uid
            ),
        ));
    }
    file_map::clear_nonblocking(fd, what)?;
    usize::try_from(stat.st_size).map_err(|_| Error::Format(format!("{what} has a negative size")))
}

fn read_header(fd: &impl AsFd, total: usize, what: &str) -> Result<Header> {
    let mut bytes = vec![0u8; header::data_offset(crate::shape::MAX_DIMENSIONS).min(total)];
    let read = segment::read_at(fd, &mut bytes, 0)
        .map_err(|e| Error::os(e, format!("reading the header of {what}")))?;
    bytes.truncate(read);
    Header::decode(&bytes, total, what)
}

/// The Numo class a header names; only the numeric classes are accepted.
fn class_named(ruby: &Ruby, name: &str, what: &str) -> Result<RClass> {
    let refuse = || {
        Error::Format(format!(
            "{what} records class {name:?}, which is not a numeric Numo class"
        ))
    };
    let short = name.strip_prefix("Numo::").ok_or_else(refuse)?;
    let numo: magnus::RModule = ruby
        .class_object()
        .const_get("Numo")
        .map_err(|_| refuse())?;
    let klass: RClass = numo.const_get(short).map_err(|_| refuse())?;
    let shared: magnus::RModule = numo.const_get("Shared").map_err(|_| refuse())?;
    let classes: RArray = shared.const_get("CLASSES").map_err(|_| refuse())?;
    if !classes.includes(klass) {
        return Err(refuse());
    }
    Ok(klass)
}

/// `Numo::NArray.unlink_shared("frames")`.
pub fn unlink(name: String) -> Result<()> {
    check_name(&name)?;
    sys::shm_unlink(&shm_path(&name)).map_err(|e| {
        Error::os(
            e,
            format!("removing shared-memory segment {}", place(&name)),
        )
    })
}

/// One segment found by `list`: name, class, shape, data bytes, creating
/// pid, and whether that process still runs.
pub type SegmentRow = (String, String, Vec<usize>, usize, i32, bool);

/// `Numo::Shared::Native.segments`: a `SegmentRow` for every segment in
/// /dev/shm that this user owns and this gem made.
pub fn list() -> Result<Vec<SegmentRow>> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let entries = std::fs::read_dir(SHM_DIR)
        .map_err(|e| segment::io_error(e, format!("listing {SHM_DIR}")))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_name(&name).is_err() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        use std::os::unix::fs::MetadataExt;
        if !meta.file_type().is_file() || meta.uid() != uid {
            continue;
        }
        let Ok(fd) = sys::shm_open(
            &shm_path(&name),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            0,
        ) else {
            continue;
        };
        let Ok((total, _)) = segment::file_size(&fd, &name) else {
            continue;
        };
        let Ok(header) = read_header(&fd, total, &name) else {
            continue;
        };
        let alive = header::process_start_time(header.creator_pid)
            .is_some_and(|start| header.creator_start == 0 || start == header.creator_start);
        found.push((
            name,
            header.class_name,
            header.shape,
            header.data_bytes,
            header.creator_pid,
            alive,
        ));
    }
    found.sort();
    Ok(found)
}
