//! The worker's threads: each one both reads the host's socket and runs
//! the validations it reads, so that the thread the kernel wakes for a
//! validation is the one that runs it, with no hand-off in between.
//!
//! Every idle thread waits on one epoll set holding the socket
//! (edge-triggered) and an eventfd; epoll wakes one waiter per event, so
//! one message wakes one thread. That thread reads everything the socket
//! holds and handles each frame under the pool's lock: an answer the
//! plugin waits for or a cancellation is delivered at once, a validation
//! becomes a job. It runs one job itself, provided another thread is left
//! waiting on the socket (it starts one when none is, up to the pool's
//! bound), and wakes idle threads for any other job. So a provider that
//! blocks or spins holds only its own thread, and some thread always reads
//! the socket (cancellations, HTTP answers) while the pool is under its
//! bound; at the bound, jobs wait for a thread to come free, and the last
//! free thread keeps reading.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::{Filled, FrameReader};

/// A validation read from the socket, to run on a thread of the pool.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// What the pool does with each frame (called under its lock: it must not
/// block): a job to run, or nothing (it was handled).
pub(super) type Handler = Box<dyn Fn(Vec<u8>) -> Option<Job> + Send + Sync>;

/// How long a thread beyond the first may stay idle before it ends.
const IDLE_KEEP: Duration = Duration::from_secs(10);

/// The epoll keys of the two descriptors.
const SOCKET_KEY: u64 = 0;
const WAKE_KEY: u64 = 1;

/// The pool of threads serving one worker's socket.
pub(super) struct Pool {
    socket: Arc<UnixStream>,
    epoll: OwnedFd,
    /// Written to wake an idle thread for a job it should run.
    wake: OwnedFd,
    handler: Handler,
    /// Called on a thread that stopped serving for another reason than
    /// idleness (the worker exits).
    stopped: fn(Stop),
    /// The most threads the pool runs.
    max_threads: usize,
    inbox: Mutex<Inbox>,
}

/// The pool's shared state.
struct Inbox {
    reader: FrameReader,
    jobs: VecDeque<Job>,
    /// Threads waiting on the socket (or about to).
    idle: usize,
    /// Threads alive.
    threads: usize,
    /// The host closed the socket: every thread that wakes stops.
    closed: bool,
}

/// Why a thread of the pool stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// It was idle too long (and others are left).
    Idle,
    /// The host closed the socket.
    Closed,
    /// The socket or the epoll set failed, or a frame was over the limit.
    Broken,
}

impl Pool {
    /// A pool serving `socket` with `handler`, at most `max_threads`
    /// threads (at least two: one reads while one runs). `reader` may
    /// hold frames read already. A thread other than the caller of
    /// [`serve`](Self::serve) that finds the socket closed or broken calls
    /// `stopped`.
    pub(super) fn new(
        socket: Arc<UnixStream>,
        reader: FrameReader,
        handler: Handler,
        max_threads: usize,
        stopped: fn(Stop),
    ) -> std::io::Result<Arc<Self>> {
        // SAFETY: creates a descriptor (owned below).
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: creates a descriptor (owned below).
        let wake = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        for (fd, key) in [
            (socket.as_raw_fd(), SOCKET_KEY),
            (wake.as_raw_fd(), WAKE_KEY),
        ] {
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: key,
            };
            // SAFETY: adds a live descriptor to a live epoll set.
            let added =
                unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
            if added != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Arc::new(Self {
            socket,
            epoll,
            wake,
            handler,
            stopped,
            max_threads: max_threads.max(2),
            inbox: Mutex::new(Inbox {
                reader,
                jobs: VecDeque::new(),
                idle: 0,
                threads: 1,
                closed: false,
            }),
        }))
    }

    /// Serves on the calling thread (the pool's first, which never ends
    /// for being idle) until the host closes the socket or it breaks.
    pub(super) fn serve(self: &Arc<Self>) -> Stop {
        self.run(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One thread's life. A thread started by another was counted idle by
    /// it (so that the other could run its job at once): it takes that
    /// back first.
    fn run(self: &Arc<Self>, first: bool) -> Stop {
        let mut inbox = self.lock();
        if first {
            // Frames read before the pool started (none, usually).
            if let Err(stop) = self.handle_frames(&mut inbox) {
                return stop;
            }
        } else {
            inbox.idle -= 1;
        }
        loop {
            if let Some(job) = self.take_job(&mut inbox) {
                drop(inbox);
                // A job catches its provider's panics; this keeps the
                // pool's counts right whatever happens.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                inbox = self.lock();
                continue;
            }
            inbox.idle += 1;
            drop(inbox);
            let woken = self.wait(if first { None } else { Some(IDLE_KEEP) });
            inbox = self.lock();
            inbox.idle -= 1;
            if inbox.closed {
                // Pass it on: each thread woken wakes the next.
                self.notify();
                return Stop::Closed;
            }
            match woken {
                Err(_) => return Stop::Broken,
                Ok(None) => {
                    // Idle too long: end, unless no other thread would be
                    // left waiting on the socket or work is waiting.
                    if inbox.idle > 0 && inbox.jobs.is_empty() {
                        inbox.threads -= 1;
                        return Stop::Idle;
                    }
                }
                Ok(Some(WAKE_KEY)) => {
                    let mut count = 0u64;
                    // SAFETY: reads the eventfd's 8-byte counter into a
                    // live u64 (which resets it; nonblocking).
                    unsafe {
                        libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8)
                    };
                }
                Ok(Some(_)) => match inbox.reader.fill(&self.socket) {
                    Ok(Filled::Closed) => {
                        inbox.closed = true;
                        self.notify();
                        return Stop::Closed;
                    }
                    Ok(_) => {
                        if let Err(stop) = self.handle_frames(&mut inbox) {
                            return stop;
                        }
                    }
                    Err(_) => return Stop::Broken,
                },
            }
        }
    }

    /// Handles every complete frame read: a validation becomes a job.
    fn handle_frames(&self, inbox: &mut Inbox) -> Result<(), Stop> {
        loop {
            match inbox.reader.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(job) = (self.handler)(frame) {
                        inbox.jobs.push_back(job);
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(Stop::Broken),
            }
        }
    }

    /// A job for this thread, when one waits and another thread is left
    /// waiting on the socket (starting one when none is and the bound
    /// allows). Wakes an idle thread for the jobs left after it.
    fn take_job(self: &Arc<Self>, inbox: &mut Inbox) -> Option<Job> {
        if inbox.jobs.is_empty() {
            return None;
        }
        if inbox.idle == 0 && inbox.threads < self.max_threads {
            self.start_thread(inbox);
        }
        if inbox.idle == 0 {
            // The last thread free keeps reading.
            return None;
        }
        let job = inbox.jobs.pop_front();
        if !inbox.jobs.is_empty() && (inbox.idle > 1 || inbox.threads < self.max_threads) {
            // The thread woken does the same for the rest.
            self.notify();
        }
        job
    }

    /// Starts a thread, counted idle at once (it will wait on the socket).
    fn start_thread(self: &Arc<Self>, inbox: &mut Inbox) {
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name("connhost-worker-pool".to_owned())
            .spawn(move || {
                let stop = pool.run(false);
                if stop != Stop::Idle {
                    (pool.stopped)(stop);
                }
            });
        if started.is_ok() {
            inbox.threads += 1;
            inbox.idle += 1;
        }
    }

    /// Wakes one idle thread.
    fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes to the eventfd from a live u64.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Waits for one event (its key), or `None` after `timeout`.
    fn wait(&self, timeout: Option<Duration>) -> std::io::Result<Option<u64>> {
        let timeout = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: waits for at most one event into a live buffer.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, timeout) };
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
}

/// A descriptor a system call returned, or its error.
fn owned(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Writes one frame holding `body`.
    fn send(socket: &UnixStream, body: &str) {
        use std::io::Write as _;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        (&*socket).write_all(&frame).unwrap();
    }

    #[test]
    fn a_blocked_job_holds_only_its_thread_and_the_last_free_thread_keeps_reading() {
        let (host, worker) = UnixStream::pair().unwrap();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let (said, heard) = mpsc::channel::<String>();
        let handler: Handler = Box::new(move |frame| {
            let text = String::from_utf8(frame).unwrap();
            let said = said.clone();
            match text.as_str() {
                // Handled on the thread that read it.
                "inline" => {
                    said.send(text).unwrap();
                    None
                }
                // Holds its thread until released.
                "block" => {
                    let released = released.clone();
                    Some(Box::new(move || {
                        let _ = released.lock().unwrap().recv();
                        said.send(text).unwrap();
                    }))
                }
                _ => Some(Box::new(move || said.send(text).unwrap())),
            }
        });
        // Two threads may run jobs, a third reads.
        let pool = Pool::new(Arc::new(worker), FrameReader::new(), handler, 3, |_| {}).unwrap();
        let serving = std::thread::spawn(move || pool.serve());
        let hear = || heard.recv_timeout(Duration::from_secs(10)).unwrap();
        send(&host, "ping 1");
        assert_eq!(hear(), "ping 1");
        send(&host, "block");
        send(&host, "block");
        send(&host, "ping 2");
        // Both runners are held: the ping waits, but frames are still read.
        send(&host, "inline");
        assert_eq!(hear(), "inline");
        release.send(()).unwrap();
        let mut next = [hear(), hear()];
        next.sort();
        assert_eq!(next, ["block", "ping 2"]);
        release.send(()).unwrap();
        assert_eq!(hear(), "block");
        drop(host);
        assert_eq!(serving.join().unwrap(), Stop::Closed);
    }

    #[test]
    fn many_jobs_at_once_each_run_while_one_blocks() {
        let (host, worker) = UnixStream::pair().unwrap();
        let (said, heard) = mpsc::channel::<String>();
        let (_release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let handler: Handler = Box::new(move |frame| {
            let text = String::from_utf8(frame).unwrap();
            let said = said.clone();
            let released = released.clone();
            Some(Box::new(move || {
                if text == "block" {
                    let _ = released.lock().unwrap().recv();
                } else {
                    said.send(text).unwrap();
                }
            }))
        });
        let pool = Pool::new(Arc::new(worker), FrameReader::new(), handler, 64, |_| {}).unwrap();
        std::thread::spawn(move || pool.serve());
        send(&host, "block");
        // In one write: the thread that reads them wakes others.
        let mut burst = Vec::new();
        for i in 0..100 {
            let body = format!("job {i}");
            burst.extend_from_slice(&(body.len() as u32).to_le_bytes());
            burst.extend_from_slice(body.as_bytes());
        }
        use std::io::Write as _;
        (&host).write_all(&burst).unwrap();
        let mut answered: Vec<String> = (0..100)
            .map(|_| heard.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        answered.sort();
        let mut expected: Vec<String> = (0..100).map(|i| format!("job {i}")).collect();
        expected.sort();
        assert_eq!(answered, expected);
    }
}
