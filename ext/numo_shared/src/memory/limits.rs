//! The limits checked before a file is sized or memory is taken: the
//! process's file size limit (`ulimit -f`, which would otherwise kill it with
//! SIGXFSZ), the memory the machine has available, and whether the kernel
//! charges shared memory page by page (strict overcommit).

use std::sync::OnceLock;

use crate::error::{human_bytes, Error, Result};
use crate::sys::{self, Errno};

/// Requests at least this large are checked against `MemAvailable`
/// (reading /proc/meminfo costs more than making a small array).
const CHECK_AVAILABLE_FROM: usize = 1 << 20;

/// The largest file this process may make (`RLIMIT_FSIZE`), if limited.
pub fn file_size_limit() -> Option<u64> {
    sys::soft_limit(libc::RLIMIT_FSIZE).ok()?
}

/// `Errno::EFBIG` naming the limit when `len` bytes exceed the file size
/// limit: growing a file past it would kill the process with SIGXFSZ.
pub fn check_file_size_limit(len: usize, context: &str) -> Result<()> {
    match file_size_limit() {
        Some(limit) if len as u64 > limit => Err(Error::os(
            Errno::EFBIG,
            format!(
                "{context}: larger than this process's file size limit (ulimit -f) of {}",
                human_bytes(limit as usize)
            ),
        )),
        _ => Ok(()),
    }
}

/// True when the kernel refuses to overcommit (`vm.overcommit_memory = 2`):
/// then a page of a sparse memfd that cannot be charged is SIGBUS on first
/// write, so such memory must be reserved (`posix_fallocate`) up front.
pub fn strict_overcommit() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
            .map(|mode| mode.trim() == "2")
            .unwrap_or(false)
    })
}

/// `Errno::ENOMEM` when `len` bytes are more than the machine has available
/// (`MemAvailable` plus free swap), before any page is touched: such a
/// request could only end in the OOM killer.
pub fn check_available(len: usize, what: &str) -> Result<()> {
    if len < CHECK_AVAILABLE_FROM {
        return Ok(());
    }
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    if len as u64 > available {
        return Err(Error::os(
            Errno::ENOMEM,
            format!(
                "creating {} of {what}: more than this machine has available ({} of memory and free swap)",
                human_bytes(len),
                human_bytes(available as usize)
            ),
        ));
    }
    Ok(())
}

/// `MemAvailable + SwapFree` from /proc/meminfo, in bytes.
fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}
