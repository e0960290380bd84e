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
//! free thread keeps reading. A thread that has just answered polls the
//! socket for the next frame for a few tens of microseconds before it
//! sleeps (bounded, backing off after misses: `protocol::Spinner`), with
//! the others' wake-up on the socket off meanwhile: a validation sent
//! right after the answer wakes no sleeping thread.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::protocol::{self, Filled, FrameReader, Spinner};

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
    /// A thread that answered polls for the next frame (one at a time).
    spinner: Spinner,
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
        let epoll = protocol::epoll_create()?;
        // SAFETY: creates a descriptor (owned at once).
        let wake = protocol::owned_fd(unsafe {
            libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)
        })?;
        for (fd, key) in [
            (socket.as_raw_fd(), SOCKET_KEY),
            (wake.as_raw_fd(), WAKE_KEY),
        ] {
            protocol::epoll_watch(&epoll, libc::EPOLL_CTL_ADD, fd, key, true)?;
        }
        Ok(Arc::new(Self {
            socket,
            epoll,
            wake,
            handler,
            stopped,
            max_threads: max_threads.max(2),
            spinner: Spinner::default(),
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

    fn lock(&self) -> MutexGuard<'_, Inbox> {
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
        let mut answered = false;
        loop {
            if let Some(job) = self.take_job(&mut inbox) {
                drop(inbox);
                // A job catches its provider's panics; this keeps the
                // pool's counts right whatever happens.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                inbox = self.lock();
                answered = true;
                continue;
            }
            if std::mem::take(&mut answered) {
                // The host may well send the next validation right away.
                match self.poll_next(inbox) {
                    Ok(next) => inbox = next,
                    Err(stop) => return stop,
                }
                continue;
            }
            inbox.idle += 1;
            drop(inbox);
            let woken = protocol::epoll_wait_one(&self.epoll, (!first).then_some(IDLE_KEEP));
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

    /// Polls the socket for the next frame for a few microseconds (see
    /// [`Spinner`]), on the thread that just answered, instead of
    /// sleeping until the kernel wakes a thread for it; the idle threads'
    /// wake-up on the socket is off meanwhile (their epoll set's interest
    /// in reading), so that what this thread reads wakes none of them. The
    /// pool's lock again, with whatever was read handled.
    fn poll_next<'a>(
        &'a self,
        mut inbox: MutexGuard<'a, Inbox>,
    ) -> Result<MutexGuard<'a, Inbox>, Stop> {
        let Some(spin) = self.spinner.try_start() else {
            return Ok(inbox);
        };
        // It reads the socket meanwhile: it counts as waiting on it.
        inbox.idle += 1;
        drop(inbox);
        self.watch_socket(false);
        let polled = loop {
            let mut inbox = self.lock();
            match inbox.reader.fill(&self.socket) {
                Ok(Filled::Closed) => {
                    inbox.closed = true;
                    self.notify();
                    break Err(Stop::Closed);
                }
                Ok(Filled::Read) => match self.handle_frames(&mut inbox) {
                    Ok(()) => break Ok((inbox, true)),
                    Err(stop) => break Err(stop),
                },
                Ok(Filled::Empty) => {}
                Err(_) => break Err(Stop::Broken),
            }
            if !inbox.jobs.is_empty() {
                break Ok((inbox, false));
            }
            drop(inbox);
            if !spin.go_on() {
                break Ok((self.lock(), false));
            }
        };
        // Whatever came after the last read wakes an idle thread now.
        self.watch_socket(true);
        let (mut inbox, read) = polled?;
        inbox.idle -= 1;
        if read {
            spin.hit();
        }
        Ok(inbox)
    }

    /// Whether the idle threads wake when the host writes (see
    /// [`protocol::epoll_watch`]).
    fn watch_socket(&self, reading: bool) {
        // Cannot fail for a live epoll set and a descriptor in it; if it
        // did, the idle threads still wake when the host hangs up.
        let _ = protocol::epoll_watch(
            &self.epoll,
            libc::EPOLL_CTL_MOD,
            self.socket.as_raw_fd(),
            SOCKET_KEY,
            reading,
        );
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
    fn frames_sent_right_after_an_answer_are_read_and_a_hang_up_then_stops_the_pool() {
        let (host, worker) = UnixStream::pair().unwrap();
        let (said, heard) = mpsc::channel::<String>();
        let handler: Handler = Box::new(move |frame| {
            let said = said.clone();
            Some(Box::new(move || {
                said.send(String::from_utf8(frame).unwrap()).unwrap()
            }))
        });
        let pool = Pool::new(Arc::new(worker), FrameReader::new(), handler, 4, |_| {}).unwrap();
        let serving = std::thread::spawn(move || pool.serve());
        // Each frame goes out as soon as the one before is answered: the
        // thread that answered may be polling the socket for it.
        for i in 0..200 {
            let body = format!("call {i}");
            send(&host, &body);
            assert_eq!(heard.recv_timeout(Duration::from_secs(10)).unwrap(), body);
        }
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
