//! The supervisor of one isolated plugin: its worker's phase, restarts
//! and crashes, and the calls made through it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::conn::{Call, CancelOnDrop, Conn};
use super::lifecycle::{incarnate, restart, Incarnation};
use super::proxy::poll_answer;
use crate::backend::ProviderOutcome;
use crate::model::config::WorkerConfig;
use crate::model::report::{FailureKind, LoadFailure};
use crate::model::worker_status::{WorkerState, WorkerStatus};
use crate::protocol::{Hello, Ready, ToWorker};
use crate::redact::Secrets;
use crate::state::HostState;
use connhost_plugin_api::CredentialFields;

/// How long a cancelled validation may take to stop before the host
/// stops its worker.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The longest wait between restarts of a crashing worker.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a supervisor needs to start its worker.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The program to run (with [`WORKER_ARG`]).
    pub(crate) program: PathBuf,
    /// The plugin's token in `capabilities`: the egress policy the host
    /// performs its HTTP requests under.
    pub(crate) egress_token: u64,
    /// The library copy, open: each worker gets it as a descriptor.
    pub(crate) library: Arc<std::fs::File>,
    /// Every plugin's settings (plugin name -> key -> value): the worker
    /// gets those of the plugin it names, and no other.
    pub(crate) settings: BTreeMap<String, BTreeMap<String, String>>,
    /// The first message.
    pub(crate) hello: Hello,
    /// Limits and restart policy.
    pub(crate) config: WorkerConfig,
    /// The host it belongs to: its runtime and counts.
    pub(crate) state: Arc<HostState>,
}

pub(super) struct State {
    pub(super) phase: WorkerState,
    pub(super) conn: Option<Arc<Conn>>,
    pub(super) restarts: u64,
    pub(super) crashes_total: u64,
    pub(super) crashes: VecDeque<Instant>,
    pub(super) last_crash: Option<String>,
    pub(super) ready: Option<Ready>,
    /// Bumped each time the host stops the worker: a worker that was
    /// starting then is not installed when it comes up.
    pub(super) epoch: u64,
}

pub(super) struct Shared {
    pub(super) spec: Spec,
    pub(super) state: Mutex<State>,
    /// Bumped on every change of phase.
    pub(super) changed: watch::Sender<u64>,
}

impl Shared {
    /// The supervisor runtime of the host it belongs to.
    pub(super) fn runtime(&self) -> tokio::runtime::Handle {
        self.spec.state.supervisors()
    }

    pub(super) fn set_phase(&self, state: &mut State, phase: WorkerState) {
        state.phase = phase;
        self.changed.send_modify(|n| *n += 1);
    }

    /// The plugin's name once a worker has loaded it, its file before.
    pub(super) fn plugin(&self) -> String {
        self.plugin_locked(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn plugin_locked(&self, state: &State) -> String {
        state
            .ready
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_else(|| self.spec.hello.plugin_file.display().to_string())
    }

    /// Counts a failure (a worker's death, or a worker that did not come
    /// up) against [`WorkerConfig::crash_limit`] within
    /// [`WorkerConfig::crash_window`], and records `what` as the last
    /// crash. Parks the plugin when the limit is reached (`None`);
    /// otherwise marks it restarting and returns how many failures fall in
    /// the window now.
    pub(super) fn record_failure(&self, state: &mut State, what: &str) -> Option<u32> {
        let now = Instant::now();
        let window = self.spec.config.crash_window;
        state.crashes.push_back(now);
        while state
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            state.crashes.pop_front();
        }
        let recent = state.crashes.len() as u32;
        if recent >= self.spec.config.crash_limit.max(1) {
            state.last_crash = Some(format!(
                "{what}; it crashed {recent} times within {} s, so it is parked until its file changes or a rescan",
                window.as_secs()
            ));
            self.set_phase(state, WorkerState::Parked);
            None
        } else {
            state.last_crash = Some(what.to_owned());
            self.set_phase(state, WorkerState::Restarting);
            Some(recent)
        }
    }
}

/// One isolated plugin's worker, supervised. Dropping it stops the worker.
pub(crate) struct Supervisor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("file", &self.shared.spec.hello.plugin_file)
            .finish_non_exhaustive()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Supervisor {
    /// Starts the worker and waits (blocking, at most the configured start
    /// timeout) until it has loaded its library: its offer, or why it
    /// could not load it, as a failure of `spec.hello.plugin_file`.
    pub(crate) fn start(spec: Spec) -> Result<(Self, Ready), LoadFailure> {
        let file = spec.hello.plugin_file.clone();
        let (tx, rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            spec,
            state: Mutex::new(State {
                phase: WorkerState::Starting,
                conn: None,
                restarts: 0,
                crashes_total: 0,
                crashes: VecDeque::new(),
                last_crash: None,
                ready: None,
                epoch: 0,
            }),
            changed: tx,
        });
        drop(rx);
        let (reply, started) = std::sync::mpsc::channel();
        let starting = shared.clone();
        shared.runtime().spawn(async move {
            let _ = reply.send(incarnate(&starting).await);
        });
        let fail = |kind, reason: String| LoadFailure::new(&file, kind, reason);
        match started.recv() {
            Ok(Ok(ready)) => Ok((Self { shared }, ready)),
            Ok(Err(Incarnation::LoadFailed(kind, reason, detail))) => {
                let failure = fail(kind, reason);
                Err(match detail {
                    Some(detail) => failure.with_detail(detail),
                    None => failure,
                })
            }
            Ok(Err(Incarnation::Broken(reason))) => Err(fail(
                FailureKind::WorkerFailed,
                format!("the plugin's worker process {reason}; the plugin was not loaded."),
            )),
            Err(_) => Err(fail(
                FailureKind::WorkerFailed,
                "the worker supervisor stopped".to_owned(),
            )),
        }
    }

    /// The worker's status, for the operator.
    pub(crate) fn status(&self) -> WorkerStatus {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let sandbox = state
            .ready
            .as_ref()
            .map(|r| r.sandbox.clone())
            .unwrap_or_default();
        let memory = state.conn.as_ref().and_then(|conn| conn.memory());
        WorkerStatus {
            state: state.phase,
            pid: state.conn.as_ref().and_then(|c| c.pid),
            memory_bytes: memory,
            restarts: state.restarts,
            crashes: state.crashes_total,
            last_crash: state.last_crash.clone(),
            sandbox: sandbox.applied,
            sandbox_unavailable: sandbox.unavailable,
        }
    }

    /// Stops the worker, and starts none until [`start_again`](Self::start_again):
    /// the catalog does for a plugin it does not serve (none of its
    /// providers registered). Calls made meanwhile answer that the plugin
    /// was unloaded.
    pub(crate) fn stop(&self) {
        let conn = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.epoch += 1;
            if state.phase != WorkerState::Stopped {
                self.shared.set_phase(&mut state, WorkerState::Stopped);
            }
            state.conn.take()
        };
        if let Some(conn) = conn {
            conn.kill("was stopped by the host".to_owned());
        }
    }

    /// Starts a worker again after [`stop`](Self::stop) (its plugin is
    /// served again); does nothing otherwise.
    pub(crate) fn start_again(&self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.phase != WorkerState::Stopped {
                return;
            }
            state.crashes.clear();
            self.shared.set_phase(&mut state, WorkerState::Restarting);
        }
        self.shared
            .runtime()
            .spawn(restart(self.shared.clone(), Duration::ZERO));
    }

    /// Lets a parked plugin start again (a rescan asked for it).
    pub(crate) fn unpark(&self) {
        let parked = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.phase != WorkerState::Parked {
                return;
            }
            state.crashes.clear();
            self.shared.set_phase(&mut state, WorkerState::Restarting);
            true
        };
        if parked {
            let shared = self.shared.clone();
            shared.runtime().spawn(restart(shared, Duration::ZERO));
        }
    }

    /// Validates `fields` with the provider behind `handle` in the worker.
    /// Waits for a starting or restarting worker (the caller's timeout
    /// bounds the wait). When the returned future is dropped before it
    /// finished (the caller's timeout), the worker is told to drop the
    /// validation, and is stopped if it does not within [`CANCEL_GRACE`].
    pub(crate) async fn validate(
        &self,
        handle: u32,
        fields: CredentialFields,
        secrets: Vec<Arc<Secrets>>,
    ) -> ProviderOutcome {
        let conn = match self.ready_conn().await {
            Ok(conn) => conn,
            Err(outcome) => return outcome,
        };
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answer) = oneshot::channel();
        let alone = {
            let mut calls = conn.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.insert(
                id,
                Call {
                    reply: Some(reply),
                    secrets,
                    http: Vec::new(),
                },
            );
            calls.len() == 1
        };
        let mut guard = CancelOnDrop {
            conn: conn.clone(),
            id,
            done: false,
        };
        // The only call in flight polls the socket for its answer itself,
        // for a few microseconds at most (see `protocol::Spinner`): the
        // serving thread is not woken for it, nor this one.
        let spin = alone.then(|| conn.spinner.try_start()).flatten();
        if spin.is_some() {
            conn.watch_socket(false);
        }
        let sent = conn.out.send(&ToWorker::Validate {
            id,
            handle,
            fields: fields.into_iter().collect(),
        });
        if let Some(spin) = spin {
            if !sent {
                conn.watch_socket(true);
            } else if let Some(outcome) = poll_answer(&self.shared, &conn, spin, &mut answer) {
                guard.done = true;
                return outcome;
            }
        }
        if !sent {
            guard.done = true;
            conn.end_call(id);
            return ProviderOutcome::WorkerFault {
                message: "its worker process stopped before the validation was sent; retry"
                    .to_owned(),
                retryable: true,
            };
        }
        let outcome = answer
            .await
            .unwrap_or_else(|_| ProviderOutcome::WorkerFault {
                message: "its worker process stopped without answering; retry".to_owned(),
                retryable: true,
            });
        guard.done = true;
        outcome
    }

    /// The running worker, waiting for one that is starting.
    async fn ready_conn(&self) -> Result<Arc<Conn>, ProviderOutcome> {
        let mut changes = self.shared.changed.subscribe();
        loop {
            {
                let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                match state.phase {
                    WorkerState::Ready => {
                        if let Some(conn) = &state.conn {
                            return Ok(conn.clone());
                        }
                    }
                    WorkerState::Parked => {
                        return Err(ProviderOutcome::WorkerFault {
                            message: format!(
                                "the plugin is parked: {}",
                                state
                                    .last_crash
                                    .as_deref()
                                    .unwrap_or("it crashed too often")
                            ),
                            retryable: false,
                        })
                    }
                    WorkerState::Stopped => {
                        return Err(ProviderOutcome::WorkerFault {
                            message: "the plugin was unloaded; retry".to_owned(),
                            retryable: true,
                        })
                    }
                    WorkerState::Starting | WorkerState::Restarting => {}
                }
            }
            if changes.changed().await.is_err() {
                return Err(ProviderOutcome::WorkerFault {
                    message: "the plugin's supervisor stopped".to_owned(),
                    retryable: true,
                });
            }
        }
    }
}

/// Set once this process is stopping all its workers ([`shutdown`]): a
/// worker that dies then is not restarted, nor a new one started.
/// Process-wide, as the exit it prepares for.
static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(super) fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Stops starting and restarting workers in this process; see
/// [`super::shutdown`].
pub(crate) fn stop_starting_workers() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}
