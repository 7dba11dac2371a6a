//! `Channel`: a socket pair, made before a fork, over which one process
//! sends another memfds (`SCM_RIGHTS`): a worker the memory of each large
//! result to its parent, or a pool's parent the memory of large items (and
//! the files of shared arrays its workers do not map yet) to one worker.
//! Each memfd is mapped as it arrives: in a parent by a thread of its own
//! (`open`), so that a worker never waits for the parent to read its pipe;
//! in a pool's worker when it looks for one (`open_without_thread`). The
//! memory is then the receiver's mapping alone: the sender wrote the file
//! without mapping it and closed its descriptor, and the receiver closes its
//! own once mapped. The kernel frees the pages when that mapping is gone.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{human_bytes, io_error, Error, Result};
use crate::memory::file;
use crate::memory::live::{self, FileAt, KeptFile, Mapping};
use crate::memory::segment::{self, Access, Segment};
use crate::sys::{self, Errno};

/// How long the parent waits for the memory of a result whose handle it
/// has read (the worker sent it before writing the handle).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Channel {
    /// The two ends; -1 once closed in this process.
    receiver: AtomicI32,
    sender: AtomicI32,
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    receiving: Mutex<Option<JoinHandle<()>>>,
    /// A descriptor held in reserve and closed just before each receive, so
    /// that a memfd still finds a slot in a process at its descriptor limit
    /// (as the parallel gem needs none).
    spare: Mutex<Option<OwnedFd>>,
}

#[derive(Default)]
struct Inbox {
    blocks: HashMap<u64, Arrival>,
    /// Files of the sender's shared arrays, mapped here under the sender's
    /// serials (see `send_file`).
    files: HashMap<u64, Arc<Mapping>>,
    closed: bool,
}

/// What one message says, besides the descriptor it carries: the id a
/// handle names it by (a block) or the sender's serial of a shared array
/// (a file), and how many bytes of the file from which offset to map.
struct Message {
    id: u64,
    bytes: u64,
    serial: u64,
    offset: u64,
}

impl Message {
    const LEN: usize = 32;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        for (i, n) in [self.id, self.bytes, self.serial, self.offset]
            .into_iter()
            .enumerate()
        {
            out[8 * i..8 * i + 8].copy_from_slice(&n.to_le_bytes());
        }
        out
    }

    fn decode(data: &[u8; Self::LEN]) -> Message {
        let word =
            |i: usize| u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        Message {
            id: word(0),
            bytes: word(1),
            serial: word(2),
            offset: word(3),
        }
    }
}

/// Closes `fd`'s descriptor in this process, once.
fn close_once(fd: &AtomicI32) {
    let raw = fd.swap(-1, Ordering::AcqRel);
    if raw >= 0 {
        // SAFETY: a descriptor this channel owned, closed exactly once.
        unsafe { libc::close(raw) };
    }
}

/// A result's memory as it arrived: mapped (with its file, if files are
/// kept), or why it could not be (an errno, if a system call failed, and
/// what was being done).
enum Arrival {
    Mapped {
        addr: usize,
        len: usize,
        file: Option<Arc<KeptFile>>,
    },
    Failed(Option<Errno>, String),
}

/// A memfd that arrived, as mapped here.
pub struct Mapped {
    pub addr: usize,
    pub len: usize,
    /// The memfd, kept when files are kept (see `memory::live`).
    pub file: Option<FileAt>,
}

impl Arrival {
    fn into_result(self) -> Result<Mapped> {
        match self {
            Arrival::Mapped { addr, len, file } => Ok(Mapped {
                addr,
                len,
                file: file.map(|kept| (kept, 0)),
            }),
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
        if let Arrival::Mapped { addr, len, .. } = self {
            // SAFETY: a mapping of ours that nothing claimed.
            unsafe { segment::unmap(addr, len) };
        }
    }
}

impl Channel {
    /// A new channel, with the receiving thread running.
    pub fn open() -> Result<Arc<Channel>> {
        let channel = Self::open_without_thread()?;
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

    /// A new channel whose receiver maps memfds when it looks for one.
    pub fn open_without_thread() -> Result<Arc<Channel>> {
        let (receiver, sender) = sys::seqpacket_pair()
            .map_err(|e| Error::os(e, "making the socket for parallel results"))?;
        Ok(Arc::new(Channel {
            receiver: AtomicI32::new(receiver.into_raw_fd()),
            sender: AtomicI32::new(sender.into_raw_fd()),
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            receiving: Mutex::new(None),
            spare: Mutex::new(sys::spare_descriptor()),
        }))
    }

    fn receiver(&self) -> RawFd {
        self.receiver.load(Ordering::Acquire)
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In the receiving process: stops receiving, unmaps every memfd that
    /// arrived and was not taken, and closes the sockets. Once.
    pub fn close(&self) {
        {
            let mut inbox = self.lock_inbox();
            if inbox.closed {
                return;
            }
            inbox.closed = true;
        }
        let _ = sys::shutdown(self.receiver());
        let thread = self
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let (leftovers, files): (Vec<Arrival>, Vec<Arc<Mapping>>) = {
            let mut inbox = self.lock_inbox();
            (
                inbox.blocks.drain().map(|(_, a)| a).collect(),
                inbox.files.drain().map(|(_, s)| s).collect(),
            )
        };
        leftovers.into_iter().for_each(Arrival::discard);
        drop(files);
        drop(self.spare.lock().unwrap_or_else(|e| e.into_inner()).take());
        close_once(&self.receiver);
        close_once(&self.sender);
    }

    /// The receiving thread: maps each result's memory as it arrives.
    fn receive_until_closed(&self) {
        loop {
            if sys::wait_readable(self.receiver()).is_err() {
                return;
            }
            match self.receive() {
                Ok(Some(got)) => self.deliver(got),
                Ok(None) => return,
                Err(Errno::EINTR | Errno::EAGAIN) => continue, // another receiver took it
                Err(_) => return,
            }
        }
    }

    /// One message waiting in the socket, received with the spare
    /// descriptor's slot free; `EAGAIN` when there is none.
    fn receive(&self) -> std::result::Result<Option<Received>, Errno> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        drop(spare.take());
        let got = receive(self.receiver(), true);
        *spare = sys::spare_descriptor();
        got
    }

    fn deliver(&self, got: Received) {
        let mut inbox = self.lock_inbox();
        if inbox.closed {
            drop(inbox);
            got.discard();
            return;
        }
        match got {
            Received::Block(id, arrival) => {
                if let Some(older) = inbox.blocks.insert(id, arrival) {
                    older.discard(); // ids are unique per sender: a replay is dropped
                }
            }
            Received::File(serial, segment) => {
                inbox.files.insert(serial, segment);
            }
        }
        self.arrived.notify_all();
    }

    /// Unmaps every memfd that arrived and was not taken: between a pool's
    /// calls, what is left is a killed worker's, never to be claimed.
    pub fn discard_arrivals(&self) {
        let leftovers: Vec<Arrival> = self.lock_inbox().blocks.drain().map(|(_, a)| a).collect();
        leftovers.into_iter().for_each(Arrival::discard);
    }

    /// In a receiver without a thread: maps every memfd waiting in the
    /// socket now.
    pub fn drain(&self) {
        while let Ok(Some(got)) = self.receive() {
            self.deliver(got);
        }
    }

    /// In a pool's worker: drops the files of the parent's arrays `serials`
    /// (the parent's are gone). Arrays made from them keep their own
    /// mappings.
    pub fn forget_files(&self, serials: &[u64]) {
        let dropped: Vec<Arc<Mapping>> = {
            let mut inbox = self.lock_inbox();
            serials
                .iter()
                .filter_map(|s| inbox.files.remove(s))
                .collect()
        };
        drop(dropped);
    }

    /// In the parent: the mapping of block `id`, waiting for it if the
    /// receiving thread is still mapping it.
    pub fn take(&self, id: u64) -> Result<Mapped> {
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            if let Some(arrival) = self.lock_inbox().blocks.remove(&id) {
                return arrival.into_result();
            }
            // Receive here too: the message may still be in the socket.
            match self.receive() {
                Ok(Some(Received::Block(got, arrival))) if got == id => {
                    return arrival.into_result()
                }
                Ok(Some(got)) => self.deliver(got),
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

    /// Sends the memfd of an array of `bytes` bytes, to be named `id` in its
    /// handle.
    pub fn send(&self, fd: &OwnedFd, id: u64, bytes: usize) -> Result<()> {
        let message = Message {
            id,
            bytes: bytes as u64,
            serial: 0,
            offset: 0,
        };
        self.send_message(&message, fd, || {
            format!(
                "sending {} of an array to another process",
                human_bytes(bytes)
            )
        })
    }

    /// Sends `len` bytes from `offset` of `fd`, the file behind this
    /// process's shared array `serial`, for the receiver to map under that
    /// serial (a pool's worker, for arrays made after it was forked).
    pub fn send_file(&self, fd: &OwnedFd, serial: u64, offset: u64, len: usize) -> Result<()> {
        let message = Message {
            id: 0,
            bytes: len as u64,
            serial,
            offset,
        };
        self.send_message(&message, fd, || {
            format!("sending a shared array of {} to a worker", human_bytes(len))
        })
    }

    fn send_message(
        &self,
        message: &Message,
        fd: &OwnedFd,
        what: impl Fn() -> String,
    ) -> Result<()> {
        let sender = self.sender.load(Ordering::Acquire);
        sys::send_with_fd(sender, &message.encode(), fd.as_raw_fd())
            .map_err(|e| Error::os(e, what()))
    }

    /// In the sending process, once: closes its copy of the receiving end,
    /// so that if the receiver dies, sending fails instead of waiting
    /// forever.
    pub fn close_receiver_copy(&self) {
        close_once(&self.receiver);
        drop(self.spare.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// In the receiving process (without a thread), once: closes its copy
    /// of the sending end.
    pub fn close_sender_copy(&self) {
        close_once(&self.sender);
    }
}

/// One message, as mapped here.
enum Received {
    /// A memfd of an array, named by its id.
    Block(u64, Arrival),
    /// The file of the sender's shared array, mapped under its serial.
    File(u64, Arc<Mapping>),
}

impl Received {
    fn discard(self) {
        if let Received::Block(_, arrival) = self {
            arrival.discard();
        }
    }
}

/// One message: its memfd, mapped here. `None` when the socket is shut
/// down.
fn receive(socket: RawFd, nonblocking: bool) -> std::result::Result<Option<Received>, Errno> {
    let mut data = [0u8; Message::LEN];
    let got = sys::receive_with_fd(socket, &mut data, nonblocking)?;
    if got.len == 0 {
        return Ok(None);
    }
    let message = Message::decode(&data);
    let bytes = message.bytes as usize;
    let Some(fd) = got.fd else {
        let failed = Arrival::Failed(
            Some(if got.truncated {
                Errno::EMFILE
            } else {
                Errno::EBADMSG
            }),
            format!(
                "receiving {} from another process (this one could not take the descriptor)",
                human_bytes(bytes)
            ),
        );
        return Ok(Some(Received::Block(message.id, failed)));
    };
    if message.serial != 0 {
        return Ok(map_file(fd, &message).map(|segment| Received::File(message.serial, segment)));
    }
    Ok(Some(Received::Block(message.id, map_block(fd, bytes))))
}

/// Maps the file of another process's shared array under its serial; `None`
/// when it cannot be (the array is then not found, and its handle refused).
fn map_file(fd: OwnedFd, message: &Message) -> Option<Arc<Mapping>> {
    let segment = Segment::map_fd(
        &fd,
        message.offset,
        message.bytes as usize,
        "a shared array of the pool's parent",
        Access::Shared,
    )
    .ok()?;
    Some(live::share_as(segment, message.serial, None))
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
        Ok(addr) => Arrival::Mapped {
            addr,
            len,
            file: live::keep(fd),
        },
        Err(errno) => Arrival::from_error(segment::mapping_error(
            errno,
            format!("mapping {} of a result", human_bytes(len)),
        )),
    }
}
