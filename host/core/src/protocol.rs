//! What the host and a worker say to each other over their socket pair:
//! length-prefixed frames (a little-endian `u32` length, then the message
//! in postcard, a compact serde format chosen by measurement: see
//! `BENCHMARKS.md`), each a [`ToWorker`] or a [`FromWorker`].
//!
//! The conversation: the host writes one [`Hello`]; the worker jails
//! itself, opens the library and says whose it is ([`FromWorker::Named`]);
//! the host answers with that plugin's settings only
//! ([`ToWorker::Settings`]); the worker initialises the plugin and answers
//! [`FromWorker::Ready`] or [`FromWorker::LoadFailed`]. Then the host sends
//! validations and cancellations, tagged by request id, and the worker
//! answers each with its outcome, in any order. The worker asks the host
//! for HTTP on behalf of a validation (tagged by its own ids) and sends
//! its plugin's log events.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use connhost_sandbox::{Jail, SandboxReport};

use crate::model::report::FailureKind;

/// The first argument that starts a program in worker mode.
pub const WORKER_ARG: &str = "__connhost-worker";

/// The descriptor a worker finds its socket at.
pub(crate) const SOCKET_FD: i32 = 3;

/// The descriptor a worker finds its plugin library at.
pub(crate) const LIBRARY_FD: i32 = 4;

/// The largest frame either side accepts: a bigger length is a broken or
/// hostile peer, never an allocation.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// The host's first order: the jail, and the library to load in it (the
/// library itself is the worker's descriptor [`super::child::LIBRARY_FD`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The jail to enter before anything of the plugin runs.
    pub(crate) jail: Jail,
    /// The library copy's file name (as the cache named it), which it
    /// keeps in the jail.
    pub(crate) library_name: String,
    /// The plugin file as the operator knows it (for messages).
    pub(crate) plugin_file: PathBuf,
    /// The largest library file the worker accepts.
    pub(crate) max_plugin_size: u64,
    /// The most verbose log level the host wants (plugin-api's codes).
    pub(crate) max_log_level: u8,
}

/// A provider's description, or why it has none.
pub(crate) type WireProvider = Result<(u32, String), String>;

/// What a worker that loaded its library offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ready {
    /// The plugin's name.
    pub(crate) name: String,
    /// The plugin's version.
    pub(crate) version: String,
    /// The plugin API version it was built against.
    pub(crate) api_version: String,
    /// Each provider's handle and descriptor (JSON), or its failure.
    pub(crate) providers: Vec<WireProvider>,
    /// What the sandbox could and could not do.
    pub(crate) sandbox: SandboxReport,
}

/// What one validation came to in the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireOutcome {
    /// Accepted: username and metadata (JSON text).
    Valid {
        /// The vendor's name for the account.
        username: Option<String>,
        /// Metadata as JSON text.
        metadata_json: Option<String>,
    },
    /// Refused by the vendor.
    Rejected(String),
    /// No decision.
    Inconclusive(String),
    /// The provider failed.
    Fault(String),
}

/// An HTTP request a plugin makes through the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HttpRequest {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout_ms: u64,
}

/// The host's answer to an [`HttpRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// Why an [`HttpRequest`] failed (plugin-api's `http_error` codes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HttpFailure {
    pub(crate) kind: u8,
    pub(crate) message: String,
}

/// Host to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// The settings of the plugin the worker named, and the host's
    /// `CONNHOST_PLUGIN_<PLUGIN>_*` environment variables for it (the
    /// worker's own environment is empty).
    Settings {
        settings: BTreeMap<String, String>,
        env: BTreeMap<String, String>,
    },
    /// Validate `fields` with the provider behind `handle`.
    Validate {
        id: u64,
        handle: u32,
        fields: Vec<(String, String)>,
    },
    /// The caller gave up on validation `id`: drop it.
    Cancel { id: u64 },
    /// The answer to the worker's HTTP request `id`.
    HttpDone {
        id: u64,
        result: Result<HttpResponse, HttpFailure>,
    },
}

/// Worker to host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The library opened and passed its checks: this is its plugin's name
    /// (it waits for [`ToWorker::Settings`] before initialising it).
    Named { name: String },
    /// The library loaded; its providers.
    Ready(Ready),
    /// The library did not load (the same checks and words as in process).
    LoadFailed {
        kind: FailureKind,
        reason: String,
        detail: Option<String>,
    },
    /// Validation `id` finished.
    Outcome { id: u64, outcome: WireOutcome },
    /// Validation `id` was dropped after a [`ToWorker::Cancel`].
    Cancelled { id: u64 },
    /// The plugin makes an HTTP request through the host, for the
    /// validation being polled when it asked (`None`: none was, and the
    /// host refuses it).
    Http {
        id: u64,
        validation: Option<u64>,
        request: HttpRequest,
    },
    /// A log event of the plugin (the host scrubs it of every secret in
    /// flight to the worker, whichever validation it came from).
    Log {
        level: u8,
        target: String,
        message: String,
    },
}

/// `message` as one frame: its length, then its bytes.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these types into a Vec cannot fail.
    let mut frame = postcard::to_extend(message, vec![0; 4]).unwrap_or_else(|_| vec![0; 4]);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame
}

/// Writes frames to one end of the socket from any thread, without a task
/// or a thread in between: a frame goes straight to the socket when it
/// fits (the usual case), and only what the socket cannot take now waits
/// in a backlog that a blocking thread of `runtime` drains. Frames never
/// interleave.
///
/// The socket is never registered with a tokio reactor: a reactor's
/// thread would wake for every frame either side sends (readiness changes
/// on both directions), which is a context switch per message for
/// nothing. Readers use [`FrameReader`] instead.
pub(crate) struct FrameWriter {
    socket: Arc<UnixStream>,
    backlog: Mutex<Backlog>,
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Backlog {
    bytes: Vec<u8>,
    draining: bool,
    broken: bool,
}

/// The most bytes waiting for a peer that does not read: beyond, the
/// connection counts as broken.
const MAX_BACKLOG: usize = 64 << 20;

impl FrameWriter {
    /// A writer over `socket`, draining its backlog on a blocking thread of
    /// `runtime`.
    pub(crate) fn new(socket: Arc<UnixStream>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self {
            socket,
            backlog: Mutex::new(Backlog::default()),
            runtime,
        })
    }

    /// Sends one message; false when the connection is broken (the peer is
    /// gone or stopped reading).
    pub(crate) fn send<T: Serialize>(self: &Arc<Self>, message: &T) -> bool {
        let frame = encode(message);
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        if backlog.broken {
            return false;
        }
        let mut rest = &frame[..];
        if backlog.bytes.is_empty() {
            match send_now(&self.socket, rest) {
                Ok(n) if n == rest.len() => return true,
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    backlog.broken = true;
                    return false;
                }
            }
        }
        if backlog.bytes.len() + rest.len() > MAX_BACKLOG {
            backlog.broken = true;
            backlog.bytes = Vec::new();
            return false;
        }
        backlog.bytes.extend_from_slice(rest);
        if !backlog.draining {
            backlog.draining = true;
            let writer = self.clone();
            drop(backlog);
            self.runtime.spawn_blocking(move || writer.drain());
        }
        true
    }

    /// Writes the backlog out as the peer takes it (blocking).
    fn drain(&self) {
        loop {
            let ready = wait_for(&self.socket, libc::POLLOUT);
            let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
            if ready.is_err() {
                backlog.broken = true;
            }
            while !backlog.broken && !backlog.bytes.is_empty() {
                match send_now(&self.socket, &backlog.bytes) {
                    Ok(n) => {
                        backlog.bytes.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => backlog.broken = true,
                }
            }
            if backlog.broken || backlog.bytes.is_empty() {
                backlog.bytes = Vec::new();
                backlog.draining = false;
                return;
            }
        }
    }
}

/// Sends what the socket takes now, without waiting (and without
/// `SIGPIPE` when the peer is gone).
fn send_now(socket: &UnixStream, bytes: &[u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: sends from a live buffer of `bytes.len()` bytes.
        let sent = unsafe {
            libc::send(
                socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Waits until `socket` is ready for `events` (`POLLIN`, `POLLOUT`), or
/// has hung up or failed (then the next read or send says how).
pub(crate) fn wait_for(socket: &UnixStream, events: libc::c_short) -> std::io::Result<()> {
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: polls one descriptor described by a live `pollfd`.
        if unsafe { libc::poll(&mut poll, 1, -1) } >= 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A new epoll set.
pub(crate) fn epoll_create() -> std::io::Result<OwnedFd> {
    // SAFETY: creates a descriptor, owned below.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    owned_fd(fd)
}

/// Adds `fd` to `epoll` under `key` (`op` `EPOLL_CTL_ADD`) or changes its
/// interest (`EPOLL_CTL_MOD`): edge-triggered, its hang-up always, and
/// its bytes to read when `reading`. Turning `reading` on while bytes wait
/// reports them at once.
pub(crate) fn epoll_watch(
    epoll: &OwnedFd,
    op: libc::c_int,
    fd: libc::c_int,
    key: u64,
    reading: bool,
) -> std::io::Result<()> {
    let mut events = libc::EPOLLRDHUP | libc::EPOLLET;
    if reading {
        events |= libc::EPOLLIN;
    }
    let mut event = libc::epoll_event {
        events: events as u32,
        u64: key,
    };
    // SAFETY: adds or changes a live descriptor in a live epoll set,
    // described by a live `epoll_event`.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for one event of `epoll` (its key), or `None` after `timeout`
/// (forever without one).
pub(crate) fn epoll_wait_one(
    epoll: &OwnedFd,
    timeout: Option<Duration>,
) -> std::io::Result<Option<u64>> {
    let timeout = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    loop {
        // SAFETY: waits for at most one event into a live buffer.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), &mut event, 1, timeout) };
        match n {
            0 => return Ok(None),
            n if n > 0 => return Ok(Some(event.u64)),
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// A descriptor a system call returned, or its error.
pub(crate) fn owned_fd(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What [`FrameReader::fill`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Bytes were read: every one the socket held then.
    Read,
    /// Nothing to read now.
    Empty,
    /// The peer closed its end.
    Closed,
}

/// Reads frames from one end of the socket: what the socket holds is read
/// in as few system calls as it takes, and frames are taken from the
/// buffer one by one. The thread that was woken by the bytes handles them:
/// no task or thread is in between.
#[derive(Default)]
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`.
    start: usize,
}

/// The least room a read offers.
const READ_CHUNK: usize = 16 << 10;

impl FrameReader {
    /// An empty reader.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Reads everything `socket` holds now, without waiting.
    pub(crate) fn fill(&mut self, socket: &UnixStream) -> std::io::Result<Filled> {
        let mut filled = Filled::Empty;
        loop {
            if self.start > 0 && self.start == self.buffer.len() {
                self.buffer.clear();
                self.start = 0;
            } else if self.start >= READ_CHUNK {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let wanted = self.pending_len().unwrap_or(0);
            self.buffer.reserve(wanted.max(READ_CHUNK));
            let room = self.buffer.capacity() - self.buffer.len();
            let spare = self.buffer.spare_capacity_mut();
            // SAFETY: receives at most `room` bytes into the buffer's spare
            // capacity, which the vector owns.
            let read = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    room,
                    libc::MSG_DONTWAIT,
                )
            };
            if read < 0 {
                let error = std::io::Error::last_os_error();
                match error.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => return Ok(filled),
                    _ => return Err(error),
                }
            }
            if read == 0 {
                return Ok(Filled::Closed);
            }
            let read = read as usize;
            // SAFETY: `recv` initialised these `read` bytes.
            unsafe { self.buffer.set_len(self.buffer.len() + read) };
            filled = Filled::Read;
            if read < room {
                // A stream socket hands over all it holds, up to the room
                // offered: it is empty now.
                return Ok(filled);
            }
        }
    }

    /// Whether no byte waits in the buffer (no partial frame either).
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.buffer.len()
    }

    /// The whole length (header and body) of the frame at the start of
    /// the buffer, when its header is in.
    fn pending_len(&self) -> Option<usize> {
        let header = self.buffer.get(self.start..self.start + 4)?;
        let len = u32::from_le_bytes(header.try_into().ok()?) as usize;
        Some(4 + len.min(MAX_FRAME))
    }

    /// The next complete frame's body already read, if any; an error for a
    /// frame over [`MAX_FRAME`].
    pub(crate) fn next_frame(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let Some(header) = self.buffer.get(self.start..self.start + 4) else {
            return Ok(None);
        };
        let len = frame_len(header.try_into().unwrap_or_default())?;
        let Some(body) = self.buffer.get(self.start + 4..self.start + 4 + len) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.start += 4 + len;
        Ok(Some(body))
    }

    /// The next frame, waiting for it: `Ok(None)` at a clean end of stream.
    pub(crate) fn read_blocking(
        &mut self,
        socket: &UnixStream,
    ) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(Some(frame));
            }
            match self.fill(socket)? {
                Filled::Read => {}
                Filled::Empty => wait_for(socket, libc::POLLIN)?,
                Filled::Closed => {
                    return if self.start == self.buffer.len() {
                        Ok(None)
                    } else {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the peer closed its end in the middle of a frame",
                        ))
                    }
                }
            }
        }
    }
}

/// Bounded, adaptive busy-polling for a message expected soon, shared by
/// the host's caller waiting for its answer and the worker's thread that
/// just answered (waiting for the next request).
///
/// Putting a thread to sleep and waking it again costs little on a busy
/// machine but tens of microseconds on an idle virtual machine (the
/// sleeping vCPU halts; its wake is an exit and an interrupt), several
/// times a call. Polling the socket for a few tens of microseconds instead
/// keeps the answer on the thread that wants it. Each poll is bounded by
/// [`SPIN_BUDGET`]; only one thread per side polls at a time; and after a
/// poll that found nothing, the next ones are skipped, twice as many after
/// each miss in a row (up to [`MAX_SKIP`]), so that a provider that answers
/// slowly, or a host that calls rarely, costs a fraction of a poll per
/// call.
#[derive(Debug, Default)]
pub(crate) struct Spinner {
    /// Polls left to skip before the next one is tried.
    skip: AtomicU32,
    /// Misses in a row (capped).
    misses: AtomicU32,
    /// Whether a thread is polling now.
    busy: AtomicBool,
}

/// The longest one poll lasts. Longer than the time a sleeping worker
/// takes to wake, answer and be read (about 40 to 60 µs on an idle
/// virtual machine): at 50 µs the host's poll for an answer kept missing
/// it, and backing off, whenever the worker slept, so that both sides
/// settled into sleeping on every call (28 µs a sequential isolated
/// validation, 2 context switches in the host; at 100 µs, 11 to 19 µs
/// and none).
pub(crate) const SPIN_BUDGET: Duration = Duration::from_micros(100);

/// The most polls skipped after misses in a row.
pub(crate) const MAX_SKIP: u32 = 64;

impl Spinner {
    /// A turn to poll, unless another thread is polling or this one is
    /// to be skipped.
    pub(crate) fn try_start(&self) -> Option<Spin<'_>> {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return None;
        }
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Spin {
            spinner: self,
            started: Instant::now(),
            hit: false,
        })
    }
}

/// One thread's turn to poll (see [`Spinner`]): a miss unless
/// [`hit`](Spin::hit) is called.
pub(crate) struct Spin<'a> {
    spinner: &'a Spinner,
    started: Instant,
    hit: bool,
}

impl Spin<'_> {
    /// Whether the turn's time is not spent yet; between two polls, lets
    /// the CPU know this thread is spinning.
    pub(crate) fn go_on(&self) -> bool {
        for _ in 0..4 {
            std::hint::spin_loop();
        }
        self.started.elapsed() < SPIN_BUDGET
    }

    /// Ends the turn: what was awaited came while polling.
    pub(crate) fn hit(mut self) {
        self.hit = true;
    }
}

impl Drop for Spin<'_> {
    fn drop(&mut self) {
        let spinner = self.spinner;
        if self.hit {
            spinner.misses.store(0, Ordering::Relaxed);
        } else {
            let misses = (spinner.misses.load(Ordering::Relaxed) + 1).min(MAX_SKIP.ilog2() + 1);
            spinner.misses.store(misses, Ordering::Relaxed);
            spinner.skip.store(1 << (misses - 1), Ordering::Relaxed);
        }
        spinner.busy.store(false, Ordering::Release);
    }
}

/// Decodes one frame's bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("an unreadable message ({e})"))
}

fn frame_len(header: [u8; 4]) -> std::io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, over the {MAX_FRAME}-byte limit"),
        ));
    }
    Ok(len)
}

/// Reads one frame, blocking. `Ok(None)` at a clean end of stream.
pub(crate) fn read_blocking(reader: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0; frame_len(header)?];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes one message, blocking.
pub(crate) fn write_blocking<T: Serialize>(
    writer: &mut impl Write,
    message: &T,
) -> std::io::Result<()> {
    writer.write_all(&encode(message))?;
    writer.flush()
}

/// Reads one frame. `Ok(None)` at a clean end of stream.
pub(crate) async fn read_async(
    reader: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0; frame_len(header)?];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_a_frame_round_trip() {
        let message = ToWorker::Validate {
            id: 7,
            handle: 2,
            fields: vec![("api_key".into(), "s3cr3t".into())],
        };
        let frame = encode(&message);
        assert_eq!(
            u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let body = read_blocking(&mut &frame[..]).unwrap().unwrap();
        let back: ToWorker = decode(&body).unwrap();
        assert!(
            matches!(back, ToWorker::Validate { id: 7, handle: 2, fields } if fields[0].1 == "s3cr3t")
        );
    }

    #[test]
    fn an_oversized_length_is_refused_without_allocating() {
        let frame = u32::MAX.to_le_bytes();
        let error = read_blocking(&mut &frame[..]).unwrap_err();
        assert!(error.to_string().contains("over the"), "{error}");
    }

    #[test]
    fn a_clean_end_of_stream_is_none() {
        assert!(read_blocking(&mut &[][..]).unwrap().is_none());
    }

    fn validate(id: u64) -> ToWorker {
        ToWorker::Validate {
            id,
            handle: 0,
            fields: vec![("api_key".into(), "k".repeat(id as usize))],
        }
    }

    fn id_of(frame: &[u8]) -> u64 {
        match decode::<ToWorker>(frame).unwrap() {
            ToWorker::Validate { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_frame_reader_takes_frames_in_one_read_and_across_reads() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut reader = FrameReader::new();
        // Three frames in one write, then one in pieces.
        let mut bytes: Vec<u8> = (1..=3).flat_map(|id| encode(&validate(id))).collect();
        (&a).write_all(&bytes).unwrap();
        assert_eq!(reader.fill(&b).unwrap(), Filled::Read);
        for id in 1..=3 {
            assert_eq!(id_of(&reader.next_frame().unwrap().unwrap()), id);
        }
        assert!(reader.next_frame().unwrap().is_none());
        assert_eq!(reader.fill(&b).unwrap(), Filled::Empty);
        bytes = encode(&validate(40_000));
        for piece in bytes.chunks(7_000) {
            assert!(reader.next_frame().unwrap().is_none());
            (&a).write_all(piece).unwrap();
            reader.fill(&b).unwrap();
        }
        assert_eq!(id_of(&reader.next_frame().unwrap().unwrap()), 40_000);
        (&a).write_all(&encode(&validate(5))).unwrap();
        drop(a);
        assert_eq!(id_of(&reader.read_blocking(&b).unwrap().unwrap()), 5);
        assert!(reader.read_blocking(&b).unwrap().is_none());
    }

    #[test]
    fn the_frame_reader_refuses_a_torn_or_oversized_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&encode(&validate(3))[..5]).unwrap();
        drop(a);
        let error = FrameReader::new().read_blocking(&b).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        let error = FrameReader::new().read_blocking(&b).unwrap_err();
        assert!(error.to_string().contains("over the"), "{error}");
    }

    #[test]
    fn a_spinner_lets_one_thread_poll_at_a_time_and_backs_off_after_misses() {
        let spinner = Spinner::default();
        let spin = spinner.try_start().expect("a first turn");
        assert!(spinner.try_start().is_none(), "one turn at a time");
        spin.hit();
        // A hit costs nothing later; each miss in a row doubles the turns
        // skipped after it, up to the bound.
        let mut skipped = Vec::new();
        for _ in 0..10 {
            let mut skips = 0;
            let spin = loop {
                match spinner.try_start() {
                    Some(spin) => break spin,
                    None => skips += 1,
                }
            };
            skipped.push(skips);
            drop(spin);
        }
        assert_eq!(skipped, [0, 1, 2, 4, 8, 16, 32, 64, 64, 64]);
        while spinner.try_start().map(Spin::hit).is_none() {}
        assert!(spinner.try_start().is_some(), "a hit resets the back-off");
    }

    #[test]
    fn a_frame_writer_keeps_what_the_socket_cannot_take_and_sends_it_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let writer = FrameWriter::new(Arc::new(a), runtime.handle().clone());
        // Far more than a socket's buffer, before anyone reads.
        let sent = 2_000;
        for id in 0..sent {
            assert!(writer.send(&validate(id % 300)));
        }
        let mut reader = FrameReader::new();
        for id in 0..sent {
            let frame = reader.read_blocking(&b).unwrap().unwrap();
            assert_eq!(id_of(&frame), id % 300);
        }
    }
}
