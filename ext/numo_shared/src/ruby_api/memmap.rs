//! File-backed arrays: `Numo::NArray.memmap`, numpy.memmap's modes over a
//! file on disk.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use magnus::{prelude::*, RArray, RClass, RString, Ruby, Value};

use crate::error::{human_bytes, Error, Result};
use crate::memory::file;
use crate::memory::live;
use crate::memory::segment::{Access, Segment};
use crate::numo::plan::{self, Plan};
use crate::sys::{self, Errno};

/// numpy.memmap's modes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileMode {
    Read,
    ReadWrite,
    Create,
    CopyOnWrite,
}

impl FileMode {
    fn parse(mode: &str) -> Result<FileMode> {
        match mode {
            "r" => Ok(FileMode::Read),
            "r+" => Ok(FileMode::ReadWrite),
            "w+" => Ok(FileMode::Create),
            "c" => Ok(FileMode::CopyOnWrite),
            _ => Err(Error::Argument(format!(
                "mode must be \"r\", \"r+\", \"w+\" or \"c\", not {mode:?}"
            ))),
        }
    }

    fn open_flags(self) -> libc::c_int {
        match self {
            FileMode::Read | FileMode::CopyOnWrite => libc::O_RDONLY,
            FileMode::ReadWrite => libc::O_RDWR,
            // An existing file (see open_file); never through a symlink.
            FileMode::Create => libc::O_RDWR | libc::O_TRUNC | libc::O_NOFOLLOW,
        }
    }

    fn access(self) -> Access {
        match self {
            FileMode::Read => Access::ReadOnly,
            FileMode::ReadWrite | FileMode::Create => Access::Shared,
            FileMode::CopyOnWrite => Access::CopyOnWrite,
        }
    }
}

/// `Numo::Shared::Native.memmap(klass, shape, path, mode, offset, prefix)`:
/// an array of `klass` over the file at `path` from byte `offset`. `shape`
/// nil means one dimension, as long as the file allows. With mode `"w+"`,
/// `prefix` (a .npy header) is written at the start of the new file; if
/// anything fails after `"w+"` created the file, the file is removed.
pub fn memmap(
    ruby: &Ruby,
    klass: RClass,
    shape: Option<RArray>,
    path: String,
    mode: String,
    offset: u64,
    prefix: Option<RString>,
) -> Result<Value> {
    let mode = FileMode::parse(&mode)?;
    let what = format!("file {path:?}");
    if mode == FileMode::Create && shape.is_none() {
        return Err(Error::Argument("mode \"w+\" needs a shape".into()));
    }
    let start =
        usize::try_from(offset).map_err(|_| Error::Argument("offset is too large".into()))?;
    // A given shape and class are checked before the file is opened: "w+"
    // truncates, and bad input must not cost the file its contents.
    let given = match shape {
        Some(shape) => Some(sized(plan::plan(ruby, klass, shape)?, start)?),
        None => None,
    };
    let (fd, created) = open_file(&path, mode, &what)?;
    let request = Request {
        klass,
        mode,
        start,
        what: &what,
    };
    let mapped = request.map(ruby, &fd, given, prefix);
    if mapped.is_err() && created {
        remove_created(&path, &fd);
    }
    mapped
}

/// What `memmap` maps, once the file is open.
struct Request<'a> {
    klass: RClass,
    mode: FileMode,
    start: usize,
    what: &'a str,
}

impl Request<'_> {
    /// Sizes a file being created (writing `prefix` at its start), or checks
    /// that an existing one holds the data; then maps it. `given` is the plan
    /// and end of the data for a given shape, `None` for the whole file.
    fn map(
        &self,
        ruby: &Ruby,
        fd: &OwnedFd,
        given: Option<(Plan, usize)>,
        prefix: Option<RString>,
    ) -> Result<Value> {
        let (start, what) = (self.start, self.what);
        let (size, regular) = file::file_size(fd, what)?;
        if !regular {
            return Err(Error::Argument(format!("{what} is not a regular file")));
        }
        file::clear_nonblocking(fd, what)?;
        let (plan, end) = match given {
            Some(given) => given,
            None => {
                let shape = whole_file_shape(ruby, self.klass, size, start as u64, what)?;
                sized(plan::plan(ruby, self.klass, shape)?, start)?
            }
        };
        if self.mode == FileMode::Create {
            file::reserve(fd, end, what).map_err(|e| match e {
                Error::Os { errno, .. } => Error::os(
                    errno,
                    format!("sizing {what} to {} for memmap", human_bytes(end)),
                ),
                other => other,
            })?;
            if let Some(prefix) = prefix {
                // SAFETY: the slice is used before any Ruby code runs.
                file::write_all_at(fd, unsafe { prefix.as_slice() }, 0)
                    .map_err(|e| Error::os(e, format!("writing the header of {what}")))?;
            }
        } else if size < end {
            return Err(Error::Format(format!(
                "{what} has {size} bytes, too short for offset {start} + {} bytes of data",
                plan.bytes
            )));
        }
        let page = crate::sys::page_size();
        let map_start = start / page * page;
        let segment = if plan.bytes == 0 {
            None
        } else {
            let segment = Segment::map_fd(
                fd,
                map_start as u64,
                end - map_start,
                what,
                self.mode.access(),
            )?;
            let kept = live::keep_copy(fd).map(|kept| (kept, map_start as u64));
            Some(live::share(segment, kept))
        };
        let array = plan.wrap_at(self.klass, segment, start - map_start)?;
        if self.mode == FileMode::Read {
            array.freeze();
        }
        Ok(array)
    }
}

/// The plan with the end of its data in the file when it starts at `start`.
fn sized(plan: Plan, start: usize) -> Result<(Plan, usize)> {
    let end = start
        .checked_add(plan.bytes)
        .filter(|&end| libc::off_t::try_from(end).is_ok())
        .ok_or_else(|| {
            Error::Argument(format!(
                "offset {start} + {} bytes of data is more than a file can hold",
                plan.bytes
            ))
        })?;
    Ok((plan, end))
}

/// Opens `path` for `mode`, with `O_NONBLOCK` so that a FIFO at the path
/// cannot block the open. Returns the descriptor and whether this call
/// created the file (`"w+"` on a path where nothing was).
fn open_file(path: &str, mode: FileMode, what: &str) -> Result<(OwnedFd, bool)> {
    let path = c_path(path, what)?;
    let open_with =
        |flags: libc::c_int| sys::open(&path, flags | libc::O_CLOEXEC | libc::O_NONBLOCK, 0o666);
    let opened = match mode {
        // O_EXCL never follows a symlink either.
        FileMode::Create => match open_with(libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) {
            Err(Errno::EEXIST) => open_with(mode.open_flags()).map(|fd| (fd, false)),
            made => made.map(|fd| (fd, true)),
        },
        _ => open_with(mode.open_flags()).map(|fd| (fd, false)),
    };
    opened.map_err(|e| Error::os(e, format!("opening {what} for memmap")))
}

/// `path` for a system call; a path with a NUL byte names no file.
fn c_path(path: &str, what: &str) -> Result<CString> {
    CString::new(path)
        .map_err(|_| Error::Argument(format!("{what}: a path cannot contain a NUL byte")))
}

/// Removes the file that `memmap` created at `path` and then failed to map,
/// if the path still names that file (`fd`'s).
fn remove_created(path: &str, fd: &OwnedFd) {
    let Ok(path) = CString::new(path) else { return };
    if let (Ok(ours), Ok(there)) = (sys::fstat(fd), sys::lstat(&path)) {
        if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino) {
            let _ = sys::unlink(&path);
        }
    }
}

/// `[n]`: as many elements of `klass` as fit after `offset`.
fn whole_file_shape(
    ruby: &Ruby,
    klass: RClass,
    size: usize,
    offset: u64,
    what: &str,
) -> Result<RArray> {
    let one = plan::plan(ruby, klass, ruby.ary_from_vec(vec![1u64]))?
        .element_bytes()
        .ok_or_else(|| {
            Error::Argument(format!(
                "{} packs bits: give memmap a shape",
                klass.inspect()
            ))
        })?;
    let available = (size as u64).checked_sub(offset).ok_or_else(|| {
        Error::Format(format!(
            "{what} has {size} bytes, fewer than the offset {offset}"
        ))
    })?;
    if available % one as u64 != 0 {
        return Err(Error::Format(format!(
            "{what} has {available} bytes after offset {offset}, not a whole number of {}-byte elements",
            one
        )));
    }
    Ok(ruby.ary_from_vec(vec![available / one as u64]))
}
