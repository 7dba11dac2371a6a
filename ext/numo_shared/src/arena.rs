//! `Arena`: what one `Numo::Parallel` call shares between the parent and the
//! workers it forks, and how the parent turns handles back into arrays.
//!
//! The parent makes an arena before forking: a random token (handles must
//! carry it), a `Region` for small results, and a socket pair over which
//! workers send the memfd of each large result (`SCM_RIGHTS`). A thread of
//! the parent receives them as they come and maps each one, so that a worker
//! never waits for the parent to read its pipe; when a handle names a block,
//! the parent takes that mapping as the result's own memory. The kernel frees
//! a result's pages when the last mapping of them, in any process, is gone.
//! Closing the arena (when the call returns or raises) unmaps whatever
//! arrived and was not claimed, and closes the socket and the region.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use magnus::{rb_sys::AsRawValue, RString, Value};

use crate::error::{Error, Result};
use crate::handle::{Handle, Place};
use crate::pid;
use crate::region::Region;
use crate::segment::{self, human_bytes, Access, Segment};
use crate::shared_array::Plan;
use crate::sys::{self, Errno};
use crate::view;

/// How long the parent waits for the memory of a result whose handle it
/// has read (the worker sent it before writing the handle).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

#[magnus::wrap(class = "Numo::Shared::Arena", free_immediately, size)]
pub struct Arena {
    shared: Arc<Shared>,
}

/// The arena's state, shared by the Ruby object, the registry of open
/// arenas, the receiving thread and (through fork) the workers.
pub struct Shared {
    pub token: u64,
    pub owner: i32,
    pub region: Option<Region>,
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
}

/// The open arenas of this process, by token.
static OPEN: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

fn open_arenas() -> MutexGuard<'static, Vec<Arc<Shared>>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

impl Arena {
    /// `Numo::Shared::Arena.new`.
    pub fn new() -> Result<Arena> {
        let (receiver, sender) = sys::seqpacket_pair()
            .map_err(|e| Error::os(e, "making the socket for parallel results"))?;
        let shared = Arc::new(Shared {
            token: random_token()?,
            owner: pid::current(),
            region: Region::create(),
            receiver: receiver.into_raw_fd(),
            sender: sender.into_raw_fd(),
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            receiving: Mutex::new(None),
        });
        let receiving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("numo-shared-results".into())
            .spawn(move || receiving.receive_until_closed())
            .map_err(|e| {
                segment::io_error(e, "starting the thread that receives parallel results")
            })?;
        *shared.receiving.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        open_arenas().push(Arc::clone(&shared));
        Ok(Arena { shared })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// `arena.close` in the parent: stops receiving, unmaps every result
    /// that arrived and was not claimed, and closes the socket and the
    /// region. Arrays already claimed keep their own mappings. A no-op in a
    /// worker (its copy is the parent's to clean up) and when called twice.
    pub fn close(&self) {
        let shared = &self.shared;
        if pid::current() != shared.owner {
            return;
        }
        {
            let mut inbox = shared.lock_inbox();
            if inbox.closed {
                return;
            }
            inbox.closed = true;
        }
        open_arenas().retain(|a| !Arc::ptr_eq(a, shared));
        let _ = sys::shutdown(shared.receiver);
        let thread = shared
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let leftovers: Vec<Arrival> = shared.lock_inbox().blocks.drain().map(|(_, a)| a).collect();
        for arrival in leftovers {
            if let Arrival::Mapped { addr, len } = arrival {
                // SAFETY: a mapping nothing claimed.
                unsafe { segment::unmap(addr, len) };
            }
        }
        // SAFETY: the receiving thread is gone and no result is read any more;
        // the descriptors are ours (workers have their own copies).
        unsafe {
            libc::close(shared.receiver);
            libc::close(shared.sender);
            if let Some(region) = &shared.region {
                region.unmap();
            }
        }
    }

    /// `arena.owner_pid`: the process that made the arena.
    pub fn owner_pid(&self) -> i32 {
        self.shared.owner
    }

    /// `arena.token`: the number handles of this arena carry.
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    /// `arena.claims?`: whether items of a batched map can be claimed
    /// (the arena has its shared region).
    pub fn has_claims(&self) -> bool {
        self.shared.region.is_some()
    }

    /// `arena.claim_item(count)`: the index of the next of `count` items
    /// for this process to run, or nil when none is left (or an item
    /// raised). Any process that shares the arena may claim.
    pub fn claim_item(&self, count: u64) -> Option<u64> {
        self.shared.region.as_ref()?.claim(count)
    }

    /// `arena.items_claimed`: how many claims were made so far.
    pub fn items_claimed(&self) -> u64 {
        self.shared.region.as_ref().map_or(0, Region::claimed)
    }

    /// `arena.stop_claims(by_break)`: no item is given out from now on,
    /// because an item raised (a Parallel::Break when `by_break`).
    pub fn stop_claims(&self, by_break: bool) {
        if let Some(region) = self.shared.region.as_ref() {
            region.stop_claims(by_break);
        }
    }

    /// `arena.claims_stopped`: nil while items are given out, else
    /// `:raised`, or `:broke` once an item raised a Parallel::Break.
    pub fn claims_stopped(ruby: &magnus::Ruby, rb_self: &Self) -> Option<magnus::Symbol> {
        match rb_self
            .shared
            .region
            .as_ref()
            .map_or(0, Region::claims_stopped)
        {
            0 => None,
            1 => Some(ruby.to_symbol("raised")),
            _ => Some(ruby.to_symbol("broke")),
        }
    }
}

/// An arena the parent never closed (its call ended without `ensure`) is
/// closed when its Ruby object is collected.
impl Drop for Arena {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
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
            if let Arrival::Mapped { addr, len } = arrival {
                // SAFETY: nobody will claim it any more.
                unsafe { segment::unmap(addr, len) };
            }
            return;
        }
        inbox.blocks.insert(id, arrival);
        self.arrived.notify_all();
    }

    /// The mapping of block `id`, waiting for it if the receiving thread is
    /// still mapping it.
    fn take_block(&self, id: u64) -> Result<(usize, usize)> {
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
    pub fn send_block(&self, fd: &OwnedFd, id: u64, bytes: usize) -> Result<()> {
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
    let (fd, truncated) = (got.fd, got.truncated);
    let id = u64::from_le_bytes(message[..8].try_into().unwrap());
    let bytes = u64::from_le_bytes(message[8..].try_into().unwrap()) as usize;
    let arrival = match fd {
        Some(fd) => map_block(fd, bytes),
        None => Arrival::Failed(
            Some(if truncated {
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
    let len = match segment::file_size(&fd, "a result's memory") {
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
    let addr = match mapped {
        Ok(addr) => addr,
        Err(errno) => {
            return Arrival::from_error(segment::mapping_error(
                errno,
                format!("mapping {} of a result", human_bytes(len)),
            ))
        }
    };
    Arrival::Mapped { addr, len }
}

fn random_token() -> Result<u64> {
    let mut bytes = [0u8; 8];
    sys::getrandom(&mut bytes)
        .map_err(|e| Error::os(e, "getting a random token for parallel results"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// `Numo::Shared::Native.load_handle(array, data)` in the parent, from
/// `NArray#marshal_load`: makes `array`, just allocated by `Marshal.load`,
/// the result `data` names. Returns nil when `data` is not a handle (Numo's
/// own marshal data), for Numo to load.
pub fn load_handle(obj: Value, data: Value) -> Result<Option<Value>> {
    let Some(string) = RString::from_value(data) else {
        return Ok(None);
    };
    // SAFETY: the bytes are copied before any Ruby code runs.
    let bytes = unsafe { string.as_slice() };
    if !Handle::looks_like(bytes) {
        return Ok(None);
    }
    let handle = Handle::decode(bytes)?;
    let arena = open_arenas()
        .iter()
        .find(|a| a.token == handle.token)
        .cloned()
        .ok_or_else(|| {
            Error::Argument(
                "marshal data names a Numo::Parallel results arena that is not open in this process"
                    .into(),
            )
        })?;
    if arena.owner != pid::current() {
        return Err(Error::Argument(
            "only the process that made a results arena loads its results".into(),
        ));
    }
    let plan = Plan::for_object(obj, handle.shape.clone(), handle.flags)?;
    let array = match handle.place {
        Place::Inline { bytes } => plan.fill(obj, &bytes)?,
        Place::Bytes { offset, len } => {
            let region = arena
                .region
                .as_ref()
                .ok_or_else(|| Error::Argument("this results arena has no region".into()))?;
            let copy = region.read(offset, len)?.to_vec();
            plan.fill(obj, &copy)?
        }
        Place::Block { id } => {
            let (addr, len) = arena.take_block(id)?;
            let segment = Segment::adopt_mapping(addr, len, Access::Shared);
            if len < plan.bytes {
                return Err(Error::Argument(format!(
                    "a worker sent {len} bytes for a result of {} bytes",
                    plan.bytes
                )));
            }
            plan.adopt(obj, Some(segment), 0)?
        }
        Place::Reference { serial, offset } => {
            if plan.bytes == 0 {
                plan.adopt(obj, None, 0)?
            } else {
                let (segment, delta) = Segment::duplicate(serial, offset as usize, plan.bytes)?;
                plan.adopt(obj, Some(segment), delta)?
            }
        }
        Place::View {
            serial,
            data_offset,
            data_bytes,
            view_offset,
            index_mask,
            strides,
            tables_offset,
            tables_len,
        } => {
            let tables = if tables_len == 0 {
                Vec::new()
            } else {
                let region = arena
                    .region
                    .as_ref()
                    .ok_or_else(|| Error::Argument("this results arena has no region".into()))?;
                region.read(tables_offset, tables_len)?.to_vec()
            };
            let geometry = view::Geometry {
                serial,
                data_offset: data_offset as usize,
                data_bytes: data_bytes as usize,
                offset: view_offset as usize,
                index_mask,
                strides: strides.iter().map(|&s| s as isize).collect(),
            };
            view::claim(&plan, obj, &geometry, &tables)?
        }
    };
    debug_assert_eq!(array.as_raw(), obj.as_raw());
    Ok(Some(array))
}
