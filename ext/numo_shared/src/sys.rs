//! The system calls the extension makes, as small safe functions over
//! `libc` that return the errno of a failure. (They used to come from the
//! nix crate, whose signatures changed between the versions Debian 13 and
//! Debian sid package; libc's do not.)

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An `errno` value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Errno(pub i32);

impl Errno {
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EBADMSG: Errno = Errno(libc::EBADMSG);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EMFILE: Errno = Errno(libc::EMFILE);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);

    /// This thread's `errno`, after a call that failed.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The errno of an `std::io::Error` (`EIO` when it has none).
    pub fn of(err: &std::io::Error) -> Errno {
        Errno(err.raw_os_error().unwrap_or(libc::EIO))
    }
}

pub type SysResult<T> = std::result::Result<T, Errno>;

/// `rc` of a call that returns -1 and sets `errno` on failure.
fn check(rc: libc::c_int) -> SysResult<libc::c_int> {
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// A descriptor a call just returned, owned from now on.
fn owned(rc: libc::c_int) -> SysResult<OwnedFd> {
    // SAFETY: a descriptor the kernel just gave this process, owned by nothing else.
    check(rc).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

pub fn memfd_create(name: &CStr) -> SysResult<OwnedFd> {
    // SAFETY: a NUL-terminated name.
    owned(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })
}

pub fn ftruncate(fd: &impl AsFd, len: libc::off_t) -> SysResult<()> {
    // SAFETY: a live descriptor.
    check(unsafe { libc::ftruncate(raw(fd), len) }).map(drop)
}

pub fn fstat(fd: &impl AsFd) -> SysResult<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the struct when it succeeds.
    unsafe {
        check(libc::fstat(raw(fd), stat.as_mut_ptr()))?;
        Ok(stat.assume_init())
    }
}

/// `lstat`: never follows a symlink at `path`.
pub fn lstat(path: &CStr) -> SysResult<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: lstat fills the struct when it succeeds.
    unsafe {
        check(libc::lstat(path.as_ptr(), stat.as_mut_ptr()))?;
        Ok(stat.assume_init())
    }
}

pub fn fchmod(fd: &impl AsFd, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: a live descriptor.
    check(unsafe { libc::fchmod(raw(fd), mode) }).map(drop)
}

/// `posix_fallocate`, retried when a signal interrupts it.
pub fn posix_fallocate(fd: &impl AsFd, offset: libc::off_t, len: libc::off_t) -> SysResult<()> {
    loop {
        // SAFETY: a live descriptor; returns the error instead of setting errno.
        match unsafe { libc::posix_fallocate(raw(fd), offset, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(Errno(errno)),
        }
    }
}

/// One `pwrite`: the bytes written.
pub fn pwrite(fd: &impl AsFd, data: &[u8], offset: libc::off_t) -> SysResult<usize> {
    // SAFETY: `data` is readable for its length.
    let n = unsafe { libc::pwrite(raw(fd), data.as_ptr().cast(), data.len(), offset) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// One `pread`: the bytes read.
pub fn pread(fd: &impl AsFd, buf: &mut [u8], offset: libc::off_t) -> SysResult<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::pread(raw(fd), buf.as_mut_ptr().cast(), buf.len(), offset) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// The file status flags of `fd` (`F_GETFL`).
pub fn status_flags(fd: &impl AsFd) -> SysResult<libc::c_int> {
    // SAFETY: a live descriptor.
    check(unsafe { libc::fcntl(raw(fd), libc::F_GETFL) })
}

pub fn set_status_flags(fd: &impl AsFd, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: a live descriptor.
    check(unsafe { libc::fcntl(raw(fd), libc::F_SETFL, flags) }).map(drop)
}

pub fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> SysResult<OwnedFd> {
    // SAFETY: a NUL-terminated path.
    owned(unsafe { libc::open(path.as_ptr(), flags, libc::c_uint::from(mode)) })
}

pub fn unlink(path: &CStr) -> SysResult<()> {
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::unlink(path.as_ptr()) }).map(drop)
}

pub fn shm_open(name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> SysResult<OwnedFd> {
    // SAFETY: a NUL-terminated name.
    owned(unsafe { libc::shm_open(name.as_ptr(), flags, mode) })
}

pub fn shm_unlink(name: &CStr) -> SysResult<()> {
    // SAFETY: a NUL-terminated name.
    check(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// The soft limit of `resource`, `None` when unlimited.
pub fn soft_limit(resource: libc::__rlimit_resource_t) -> SysResult<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    check(unsafe { libc::getrlimit(resource, &mut limit) })?;
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec.
pub fn seqpacket_pair() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair fills the two descriptors when it succeeds.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: two descriptors owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `shutdown(fd, SHUT_RDWR)`.
pub fn shutdown(fd: RawFd) -> SysResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }).map(drop)
}

/// Room for one descriptor's control message, aligned as `cmsghdr` needs.
#[repr(C)]
union OneFdControl {
    header: libc::cmsghdr,
    bytes: [u8; 64],
}

/// Sends `message` with the descriptor `fd` (`SCM_RIGHTS`) over the Unix
/// socket `socket`, retried when a signal interrupts it.
pub fn send_with_fd(socket: RawFd, message: &[u8], fd: RawFd) -> SysResult<()> {
    // SAFETY: every pointer handed to sendmsg points at live memory of the
    // size given; the control buffer is large and aligned enough for one fd.
    unsafe {
        let mut control: OneFdControl = std::mem::zeroed();
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of::<OneFdControl>());
        let mut iov = libc::iovec {
            iov_base: message.as_ptr() as *mut libc::c_void,
            iov_len: message.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = (&mut control as *mut OneFdControl).cast();
        msg.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut RawFd, fd);
        loop {
            if libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            match Errno::last() {
                Errno::EINTR => continue,
                errno => return Err(errno),
            }
        }
    }
}

/// What `receive_with_fd` got: the message's length (0 when the socket was
/// shut down), the descriptor that came with it, and whether a descriptor
/// was dropped for want of room (the process was out of descriptors).
pub struct Received {
    pub len: usize,
    pub fd: Option<OwnedFd>,
    pub truncated: bool,
}

/// Receives one message into `buf` from the Unix socket `socket`, with the
/// descriptors sent along (close-on-exec; any after the first are closed).
/// `nonblocking` returns `EAGAIN` at once when nothing is there.
pub fn receive_with_fd(socket: RawFd, buf: &mut [u8], nonblocking: bool) -> SysResult<Received> {
    // SAFETY: as in send_with_fd; the kernel writes at most msg_controllen
    // bytes of control data, which is read back only through CMSG_* macros.
    unsafe {
        let mut control: OneFdControl = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = (&mut control as *mut OneFdControl).cast();
        msg.msg_controllen = std::mem::size_of::<OneFdControl>() as _;
        let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        let n = libc::recvmsg(socket, &mut msg, flags);
        if n < 0 {
            return Err(Errno::last());
        }
        let mut fd = None;
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header) as *const RawFd;
                let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let received = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if fd.is_none() {
                        fd = Some(received);
                    } // any other is closed here
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
        Ok(Received {
            len: n as usize,
            fd,
            truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        })
    }
}

/// Waits until `fd` can be read (or is shut down), retried when a signal
/// interrupts the wait.
pub fn wait_readable(fd: RawFd) -> SysResult<()> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, live for the call.
        match check(unsafe { libc::poll(&mut poll, 1, -1) }) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

/// Waits while the 32-bit word at `word` (in memory shared between
/// processes) holds `expected`, at most `timeout_ms` milliseconds (a futex).
/// Returns early when woken, when the word differs, or on a signal.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout_ms: u64) {
    let timeout = libc::timespec {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned word and sleeps; the timespec
    // lives for the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// Wakes every process waiting on `word` (see `futex_wait`).
pub fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the word's address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// `/dev/null`, read-only: a descriptor held in reserve, to be closed so
/// that a descriptor about to arrive finds a free slot.
pub fn spare_descriptor() -> Option<OwnedFd> {
    open(c"/dev/null", libc::O_RDONLY | libc::O_CLOEXEC, 0).ok()
}

/// `getrandom(2)` into `buf`.
pub fn getrandom(buf: &mut [u8]) -> SysResult<()> {
    // SAFETY: getrandom fills at most `buf.len()` bytes of `buf`.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got == buf.len() as isize {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// The size of a memory page.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
