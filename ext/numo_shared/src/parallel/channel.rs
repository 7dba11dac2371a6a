//! `Channel`: the socket pair over which a worker sends the memfd of each
//! large result to the parent (`SCM_RIGHTS`), made before the fork, and the
//! parent's thread that maps each memfd as it arrives, so that a worker never
//! waits for the parent to read its pipe. A result's memory is then the
//! parent's mapping alone: the worker wrote the file without mapping it and
//! closed its descriptor, and the parent closes its own once mapped. The
//! kernel frees the pages when that mapping is gone.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{human_bytes, io_error, Error, Result};
use crate::memory::file;
use crate::memory::segment;
use crate::sys::{self, Errno};

/// How long the parent waits for the memory of a result whose handle it
/// has read (the worker sent it before writing the handle).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Channel {
    receiver: RawFd,
    sender: RawFd,
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    receiving: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Inbox {
    blocks: HashMap<u64, Arrival>,
    closed: bool,
}

/// A result's memory as it arrived: mapped, or why it could not be (an
/// errno, if a system call failed, and what was being done).
enum Arrival {
    Mapped { addr: usize, len: usize },
    Failed(Option<Errno>, String),
}

impl Arrival {
    fn into_result(self) -> Result<(usize, usize)> {
        match self {
            Arrival::Mapped { addr, len } => Ok((addr, len)),
            Arrival::Failed(Some(errno), context) => Err(Error::os(errno, context)),
            Arrival::Failed(None, message) => Err(Error::Argument(message)),
        }
    }

    fn from_error(err: Error) -> Arrival {
        match err {
            Error::Os { errno, context } => Arrival::Failed(Some(errno), context),
            other => Arrival::Failed(None, format!("{other:?}")),
        }
    }

    /// Unmaps what nobody will claim.
    fn discard(self) {
        if let Arrival::Mapped { addr, len } = self {
            // SAFETY: a mapping of ours that nothing claimed.
            unsafe { segment::unmap(addr, len) };
        }
    }
}

impl Channel {
    /// A new channel, with the parent's receiving thread running.
    pub fn open() -> Result<Arc<Channel>> {
        let (receiver, sender) = sys::seqpacket_pair()
            .map_err(|e| Error::os(e, "making the socket for parallel results"))?;
        let channel = Arc::new(Channel {
            receiver: receiver.into_raw_fd(),
            sender: sender.into_raw_fd(),
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            receiving: Mutex::new(None),
        });
        let receiving = Arc::clone(&channel);
        let thread = std::thread::Builder::new()
            .name("numo-shared-results".into())
            .spawn(move || receiving.receive_until_closed());
        match thread {
            Ok(thread) => {
                *channel.receiving.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
                Ok(channel)
            }
            Err(e) => {
                channel.close();
                Err(io_error(
                    e,
                    "starting the thread that receives parallel results",
                ))
            }
        }
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In the parent: stops receiving, unmaps every result that arrived and
    /// was not taken, and closes the sockets. Once.
    pub fn close(&self) {
        {
            let mut inbox = self.lock_inbox();
            if inbox.closed {
                return;
            }
            inbox.closed = true;
        }
        let _ = sys::shutdown(self.receiver);
        let thread = self
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let leftovers: Vec<Arrival> = self.lock_inbox().blocks.drain().map(|(_, a)| a).collect();
        leftovers.into_iter().for_each(Arrival::discard);
        // SAFETY: the receiving thread is gone; the descriptors are ours
        // (workers have their own copies).
        unsafe {
            libc::close(self.receiver);
            libc::close(self.sender);
        }
    }

    /// The receiving thread: maps each result's memory as it arrives.
    fn receive_until_closed(&self) {
        loop {
            match receive(self.receiver, false) {
                Ok(Some((id, arrival))) => self.deliver(id, arrival),
                Ok(None) => return,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn deliver(&self, id: u64, arrival: Arrival) {
        let mut inbox = self.lock_inbox();
        if inbox.closed {
            drop(inbox);
            arrival.discard();
            return;
        }
        if let Some(older) = inbox.blocks.insert(id, arrival) {
            older.discard(); // ids are unique per worker: a replay is dropped
        }
        self.arrived.notify_all();
    }

    /// In the parent: the mapping of block `id` (address, length), waiting
    /// for it if the receiving thread is still mapping it.
    pub fn take(&self, id: u64) -> Result<(usize, usize)> {
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            if let Some(arrival) = self.lock_inbox().blocks.remove(&id) {
                return arrival.into_result();
            }
            // Receive here too: the message may still be in the socket.
            match receive(self.receiver, true) {
                Ok(Some((got, arrival))) if got == id => return arrival.into_result(),
                Ok(Some((got, arrival))) => self.deliver(got, arrival),
                _ => {
                    let inbox = self.lock_inbox();
                    if inbox.blocks.contains_key(&id) {
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Argument(format!(
                            "the shared memory of a result (block {id:#x}) never arrived from its worker"
                        )));
                    }
                    let _ = self
                        .arrived
                        .wait_timeout(inbox, Duration::from_millis(10))
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// In a worker: sends the memfd of a result of `bytes` bytes, to be
    /// named `id` in its handle.
    pub fn send(&self, fd: &OwnedFd, id: u64, bytes: usize) -> Result<()> {
        let mut message = [0u8; 16];
        message[..8].copy_from_slice(&id.to_le_bytes());
        message[8..].copy_from_slice(&(bytes as u64).to_le_bytes());
        sys::send_with_fd(self.sender, &message, fd.as_raw_fd()).map_err(|e| {
            Error::os(
                e,
                format!("sending {} of results to the parent", human_bytes(bytes)),
            )
        })
    }

    /// In a worker, once: closes its copy of the parent's receiving end, so
    /// that if the parent dies, sending fails instead of waiting forever.
    pub fn close_receiver_copy(&self) {
        // SAFETY: this process's inherited copy; it never receives.
        unsafe { libc::close(self.receiver) };
    }
}

/// One message from a worker: the block's id and its memory, mapped here.
/// `None` when the socket is shut down.
fn receive(socket: RawFd, nonblocking: bool) -> std::result::Result<Option<(u64, Arrival)>, Errno> {
    let mut message = [0u8; 16];
    let got = sys::receive_with_fd(socket, &mut message, nonblocking)?;
    if got.len == 0 {
        return Ok(None);
    }
    let id = u64::from_le_bytes(message[..8].try_into().expect("8 bytes"));
    let bytes = u64::from_le_bytes(message[8..].try_into().expect("8 bytes")) as usize;
    let arrival = match got.fd {
        Some(fd) => map_block(fd, bytes),
        None => Arrival::Failed(
            Some(if got.truncated {
                Errno::EMFILE
            } else {
                Errno::EBADMSG
            }),
            format!(
                "receiving {} of results from a worker (the parent could not take the descriptor)",
                human_bytes(bytes)
            ),
        ),
    };
    Ok(Some((id, arrival)))
}

fn map_block(fd: OwnedFd, bytes: usize) -> Arrival {
    let len = match file::file_size(&fd, "a result's memory") {
        Ok((size, _)) if size >= bytes && size > 0 => size,
        Ok((size, _)) => {
            return Arrival::Failed(
                None,
                format!("a worker sent {size} bytes of memory for a result of {bytes} bytes"),
            )
        }
        Err(err) => return Arrival::from_error(err),
    };
    // SAFETY: a fresh shared mapping of the memfd the worker sent. Its
    // pages exist (the worker wrote them): mapping them all now, on this
    // thread, spares the reader a page fault per 64 KiB, each far dearer
    // than a page of a bulk mapping.
    let mapped = unsafe {
        segment::mmap_raw(
            None,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            0,
        )
    };
    match mapped {
        Ok(addr) => Arrival::Mapped { addr, len },
        Err(errno) => Arrival::from_error(segment::mapping_error(
            errno,
            format!("mapping {} of a result", human_bytes(len)),
        )),
    }
}
