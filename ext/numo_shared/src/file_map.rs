//! File-backed arrays: `Numo::NArray.memmap`, numpy.memmap's modes over a
//! file on disk.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use magnus::{prelude::*, RArray, RClass, RString, Ruby, Value};
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::segment::{self, Access, Segment};
use crate::shared_array;

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

    fn open_flags(self) -> OFlag {
        match self {
            FileMode::Read | FileMode::CopyOnWrite => OFlag::O_RDONLY,
            FileMode::ReadWrite => OFlag::O_RDWR,
            // Never follow a symlink planted at the path of a file we make.
            FileMode::Create => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW,
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
/// `prefix` (a .npy header) is written at the start of the new file.
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
    let sized = |plan: shared_array::Plan| -> Result<(shared_array::Plan, usize)> {
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
    };
    // A given shape and class are checked before the file is opened: "w+"
    // truncates, and bad input must not cost the file its contents.
    let requested = match shape {
        Some(shape) => Some(sized(shared_array::plan(ruby, klass, shape)?)?),
        None => None,
    };
    // O_NONBLOCK: a FIFO at the path must not block the open.
    let raw = open(
        path.as_str(),
        mode.open_flags() | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o666),
    )
    .map_err(|e| Error::os(e, format!("opening {what} for memmap")))?;
    // SAFETY: open just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let (size, regular) = segment::file_size(&fd, &what)?;
    if !regular {
        return Err(Error::Argument(format!("{what} is not a regular file")));
    }
    clear_nonblocking(&fd, &what)?;
    let (plan, end) = match requested {
        Some(requested) => requested,
        None => {
            let shape = whole_file_shape(ruby, klass, size, offset, &what)?;
            sized(shared_array::plan(ruby, klass, shape)?)?
        }
    };
    if mode == FileMode::Create {
        segment::reserve(&fd, end, &what)?;
        if let Some(prefix) = prefix {
            // SAFETY: the slice is used before any Ruby code runs.
            segment::write_all_at(&fd, unsafe { prefix.as_slice() }, 0)
                .map_err(|e| Error::os(e, format!("writing the header of {what}")))?;
        }
    } else if size < end {
        return Err(Error::Format(format!(
            "{what} has {size} bytes, too short for offset {start} + {} bytes of data",
            plan.bytes
        )));
    }
    let page = segment::page_size();
    let map_start = start / page * page;
    let segment = if plan.bytes == 0 {
        None
    } else {
        Some(Segment::map_fd(
            &fd,
            map_start as u64,
            end - map_start,
            &what,
            mode.access(),
        )?)
    };
    let array = plan.wrap_at(klass, segment, start - map_start);
    if mode == FileMode::Read {
        array.freeze();
    }
    Ok(array)
}

/// Clears `O_NONBLOCK` on `fd`, which was opened with it only so that a
/// FIFO at the path could not block the open.
pub fn clear_nonblocking(fd: &impl AsFd, what: &str) -> Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let context = || format!("opening {what}");
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(|e| Error::os(e, context()))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(|e| Error::os(e, context()))?;
    Ok(())
}

/// `[n]`: as many elements of `klass` as fit after `offset`.
fn whole_file_shape(
    ruby: &Ruby,
    klass: RClass,
    size: usize,
    offset: u64,
    what: &str,
) -> Result<RArray> {
    let one = shared_array::plan(ruby, klass, RArray::from_vec(vec![1u64]))?
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
    Ok(RArray::from_vec(vec![available / one as u64]))
}
