//! One running worker as the supervisor sees it: the connection, the
//! calls in flight over it, and the cancellation of a call its caller
//! gave up on.

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::supervisor::CANCEL_GRACE;
use crate::backend::ProviderOutcome;
use crate::protocol::{self, FrameReader, HttpFailure, Spinner, ToWorker};
use crate::redact::Secrets;
use connhost_sandbox::cgroup::Cgroup;

/// A call in flight to the worker.
pub(super) struct Call {
    /// Where its answer goes; `None` once the caller gave up.
    pub(super) reply: Option<oneshot::Sender<ProviderOutcome>>,
    /// The submitted secrets, scrubbed from the worker's log lines.
    pub(super) secrets: Vec<Arc<Secrets>>,
    /// The HTTP requests the host runs for it (the worker's request id,
    /// the task), cancelled when the call ends.
    pub(super) http: Vec<(u64, tokio::task::AbortHandle)>,
}

impl Call {
    /// Cancels the HTTP requests still running for this call, answering
    /// each to the worker as cancelled.
    pub(super) fn cancel_http(&mut self, out: &Arc<protocol::FrameWriter>) {
        for (id, task) in self.http.drain(..) {
            if !task.is_finished() {
                task.abort();
                let _ = out.send(&ToWorker::HttpDone {
                    id,
                    result: Err(HttpFailure {
                        kind: connhost_plugin_api::abi::http_error::OTHER,
                        message: "cancelled: the validation it was made for has ended".to_owned(),
                    }),
                });
            }
        }
    }
}

/// One running worker.
pub(super) struct Conn {
    pub(super) pid: Option<u32>,
    /// Its plugin's name (its log lines carry it).
    pub(super) plugin: String,
    /// The host's end of its socket, nonblocking.
    pub(super) socket: Arc<UnixStream>,
    /// What was read from the socket: read by the thread that serves it
    /// (`proxy::read_frames`) or by a caller polling for its answer
    /// (`proxy::poll_answer`), whichever holds it.
    pub(super) inbound: Mutex<Inbound>,
    /// The epoll set the serving thread waits on, watching the socket
    /// (see [`Conn::watch_socket`]).
    pub(super) epoll: OwnedFd,
    /// Callers polling for their answers (one at a time).
    pub(super) spinner: Spinner,
    /// Its cgroups, when the host could make them: its real memory, and
    /// what is left of it to kill once it died.
    pub(super) cgroup: Option<Cgroup>,
    pub(super) out: Arc<protocol::FrameWriter>,
    pub(super) calls: Mutex<HashMap<u64, Call>>,
    pub(super) next_id: AtomicU64,
    /// Asks the monitor to kill the worker, with the reason.
    pub(super) kill: Mutex<Option<oneshot::Sender<String>>>,
    /// Its host's supervisor runtime.
    pub(super) runtime: tokio::runtime::Handle,
}

/// The read side of a worker's socket.
pub(super) struct Inbound {
    pub(super) reader: FrameReader,
    /// Reading has ended: the socket closed or broke, or the worker was
    /// stopped for what it said.
    pub(super) ended: bool,
}

impl Conn {
    /// The epoll set for `socket`'s serving thread, watching it for
    /// reading (edge-triggered) and hanging up.
    pub(super) fn epoll_for(socket: &UnixStream) -> std::io::Result<OwnedFd> {
        let epoll = protocol::epoll_create()?;
        protocol::epoll_watch(&epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), 0, true)?;
        Ok(epoll)
    }

    /// Whether the serving thread wakes when the worker writes (`true`),
    /// or only when it hangs up: a caller polling the socket for its
    /// answer turns reading off meanwhile, so that the answer it reads does
    /// not also wake that thread for nothing; turning it on again wakes the
    /// thread if anything came in since.
    pub(super) fn watch_socket(&self, reading: bool) {
        // Cannot fail for a live epoll set and a descriptor in it; if it
        // did, the serving thread still wakes when the worker hangs up.
        let _ = protocol::epoll_watch(
            &self.epoll,
            libc::EPOLL_CTL_MOD,
            self.socket.as_raw_fd(),
            0,
            reading,
        );
    }

    /// Removes call `id` and cancels its HTTP.
    pub(super) fn end_call(&self, id: u64) -> Option<Call> {
        let mut call = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)?;
        call.cancel_http(&self.out);
        Some(call)
    }

    /// Its real memory: what its cgroup counts, or (without one) the
    /// resident memory of its processes.
    pub(super) fn memory(&self) -> Option<u64> {
        if let Some(bytes) = self.cgroup.as_ref().and_then(Cgroup::memory_current) {
            return Some(bytes);
        }
        self.pid.map(resident_memory_of_tree)
    }

    pub(super) fn kill(&self, reason: String) {
        if let Some(kill) = self.kill.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = kill.send(reason);
        }
    }

    /// The secrets of every validation in flight to this worker: a line
    /// it sends is scrubbed of all of them, whichever validation it says
    /// the line is for (a plugin sees every call in flight and may log one
    /// call's secret while polling another).
    pub(super) fn secrets(&self) -> Vec<Arc<Secrets>> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().flat_map(|c| c.secrets.clone()).collect()
    }
}

/// Tells the worker to drop a validation its caller gave up on, and
/// stops the worker if it does not within [`CANCEL_GRACE`].
pub(super) struct CancelOnDrop {
    pub(super) conn: Arc<Conn>,
    pub(super) id: u64,
    pub(super) done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let still_running = {
            let mut calls = self.conn.calls.lock().unwrap_or_else(|e| e.into_inner());
            match calls.get_mut(&self.id) {
                Some(call) => {
                    call.reply = None;
                    // Its caller gave up: so does its HTTP.
                    call.cancel_http(&self.conn.out);
                    true
                }
                None => false,
            }
        };
        if !still_running {
            return;
        }
        let _ = self.conn.out.send(&ToWorker::Cancel { id: self.id });
        let (conn, id) = (self.conn.clone(), self.id);
        self.conn.runtime.spawn(async move {
            tokio::time::sleep(CANCEL_GRACE).await;
            let stuck = conn
                .calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&id);
            if stuck {
                conn.kill(format!(
                    "was stopped because a validation ran past its timeout and did not stop within {} s of being cancelled (a provider that never yields)",
                    CANCEL_GRACE.as_secs()
                ));
            }
        });
    }
}

/// The resident memory of the process `pid` and of its descendants, from
/// `/proc` (kilobytes of `VmRSS`, in bytes).
pub(super) fn resident_memory_of_tree(pid: u32) -> u64 {
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("VmRSS:")
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|kb| kb.parse::<u64>().ok())
                })
            })
            .unwrap_or(0)
            * 1024
    };
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        total += rss(pid);
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        pending.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    total
}
