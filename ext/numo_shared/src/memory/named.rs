//! Named segments: POSIX shared-memory files in /dev/shm that any process of
//! the same user can open by name, each starting with a `Header` that
//! records the array's class and shape. Created exclusively with mode 0600;
//! opened only when they are regular files of this user; never through a
//! symlink.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::{io_error, Error, Result};
use crate::memory::file;
use crate::memory::header::{self, Header};
use crate::memory::live::{self, Mapping};
use crate::memory::segment::{Access, Segment};
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

/// Where the segment `name` lives, for messages.
pub fn place(name: &str) -> String {
    format!("{SHM_DIR}/{name}")
}

/// The name `shm_open` takes for `name` (checked: no NUL in it).
fn shm_path(name: &str) -> CString {
    CString::new(format!("/{name}")).expect("a checked name has no NUL")
}

/// Creates the segment `name` (checked) exclusively, sized and reserved for
/// `header` and its data, maps it and writes the header, its magic last.
/// Returns the mapping (shared by the arrays over it), and where the data
/// starts in it. If anything fails, the name is removed again.
pub fn create(name: &str, header: &Header) -> Result<(Arc<Mapping>, usize)> {
    let head = header.encode()?;
    let total = head
        .len()
        .checked_add(header.data_bytes)
        .ok_or_else(|| Error::Argument("the segment would be larger than memory".into()))?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = sys::shm_open(&shm_path(name), flags, libc::S_IRUSR | libc::S_IWUSR)
        .map_err(|e| Error::os(e, format!("creating shared-memory segment {}", place(name))))?;
    match fill(&fd, &head, total, name) {
        Ok(segment) => {
            let kept = live::keep(fd).map(|kept| (kept, 0));
            Ok((live::share(segment, kept), head.len()))
        }
        Err(err) => {
            remove_quietly(name);
            Err(err)
        }
    }
}

/// Sizes and reserves the new segment, maps it and writes its header.
fn fill(fd: &OwnedFd, head: &[u8], total: usize, name: &str) -> Result<Segment> {
    // The mode given to shm_open passes through the umask; make it exact.
    sys::fchmod(fd, libc::S_IRUSR | libc::S_IWUSR)
        .map_err(|e| Error::os(e, format!("setting the mode of {}", place(name))))?;
    file::reserve(fd, total, &place(name))?;
    let map = Segment::map_fd(
        fd,
        0,
        total,
        &format!("shared memory ({})", place(name)),
        Access::Shared,
    )?;
    // SAFETY: the mapping is `total` >= head.len() bytes long and ours.
    unsafe {
        let base = map.as_ptr();
        std::ptr::copy_nonoverlapping(head[8..].as_ptr(), base.add(8), head.len() - 8);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::copy_nonoverlapping(head.as_ptr(), base, 8);
    }
    Ok(map)
}

/// Opens the segment `name` (checked): its header, and a mapping of all of
/// it (read-only with `readonly`).
pub fn open(name: &str, readonly: bool) -> Result<(Arc<Mapping>, Header)> {
    let what = format!("shared-memory segment {}", place(name));
    let mode = if readonly {
        libc::O_RDONLY
    } else {
        libc::O_RDWR
    };
    // O_NONBLOCK: a FIFO planted at the name must not block the open.
    let fd = sys::shm_open(
        &shm_path(name),
        mode | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| Error::os(e, format!("opening {what}")))?;
    let total = own_segment_size(&fd, &what)?;
    let header = read_header(&fd, total, &what)?;
    let access = if readonly {
        Access::ReadOnly
    } else {
        Access::Shared
    };
    let segment = Segment::map_fd(
        &fd,
        0,
        total,
        &format!("shared memory ({})", place(name)),
        access,
    )?;
    let kept = live::keep(fd).map(|kept| (kept, 0));
    Ok((live::share(segment, kept), header))
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
    file::clear_nonblocking(fd, what)?;
    usize::try_from(stat.st_size).map_err(|_| Error::Format(format!("{what} has a negative size")))
}

fn read_header(fd: &impl AsFd, total: usize, what: &str) -> Result<Header> {
    let mut bytes = vec![0u8; header::data_offset(header::MAX_DIMENSIONS).min(total)];
    let read = file::read_at(fd, &mut bytes, 0)
        .map_err(|e| Error::os(e, format!("reading the header of {what}")))?;
    bytes.truncate(read);
    Header::decode(&bytes, total, what)
}

/// Removes the segment `name` (checked).
pub fn unlink(name: &str) -> Result<()> {
    sys::shm_unlink(&shm_path(name))
        .map_err(|e| Error::os(e, format!("removing shared-memory segment {}", place(name))))
}

/// Removes the segment `name` if it is there, after a failed creation.
pub fn remove_quietly(name: &str) {
    let _ = sys::shm_unlink(&shm_path(name));
}

/// One segment found by `list`: its name, its header, and whether the
/// process that made it still runs.
pub struct Listed {
    pub name: String,
    pub header: Header,
    pub alive: bool,
}

/// Every segment in /dev/shm that this user owns and this gem made, by name.
pub fn list() -> Result<Vec<Listed>> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let entries =
        std::fs::read_dir(SHM_DIR).map_err(|e| io_error(e, format!("listing {SHM_DIR}")))?;
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
        let Ok((total, _)) = file::file_size(&fd, &name) else {
            continue;
        };
        let Ok(header) = read_header(&fd, total, &name) else {
            continue;
        };
        let alive = header::process_start_time(header.creator_pid)
            .is_some_and(|start| header.creator_start == 0 || start == header.creator_start);
        found.push(Listed {
            name,
            header,
            alive,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}
