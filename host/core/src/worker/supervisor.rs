//! The host's side of one isolated plugin: its worker process, the calls
//! in flight to it, and what happens when it dies.
//!
//! A [`Supervisor`] starts a worker for one library copy and answers
//! validations through it. When the worker dies (a signal, an exit, or
//! killed by the host because a validation would not stop), every call in
//! flight is answered at once with what happened, and a new worker is
//! started: at once after a first crash, then with a doubling backoff.
//! [`WorkerConfig::crash_limit`] crashes within
//! [`WorkerConfig::crash_window`] park the plugin: its calls answer with
//! the reason until its file changes (a new supervisor) or it is
//! [unparked](Supervisor::unpark). Dropping the supervisor (its file was
//! replaced or removed, and the last call in flight finished) stops the
//! worker, and its memory goes back to the system.
//!
//! Everything here runs on one process-wide runtime of its own
//! ([`runtime`]), so it does not depend on the caller's; workers are
//! started from one long-lived thread (`spawn.rs`), because a worker's
//! "die with the host" signal is tied to the thread that started it.
//! `death.rs` words how a worker died; `status.rs` is what the operator
//! sees.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{oneshot, watch};

use super::death::{describe_exit, LAST_WORDS};
use super::protocol::{self, FromWorker, Hello, HttpFailure, Ready, ToWorker, WireOutcome};
use super::spawn::{runtime, spawn};
use super::status::{count, WorkerState, WorkerStatus};
use crate::backend::ProviderOutcome;
use crate::config::WorkerConfig;
use crate::redact::Secrets;
use crate::report::{FailureKind, LoadFailure};
use connhost_plugin_api::CredentialFields;
use connhost_sandbox::cgroup::{Cgroup, Limits};

/// How long a cancelled validation may take to stop before the host
/// stops its worker.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The longest wait between restarts of a crashing worker.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How many of a worker's last standard error lines are kept, to explain
/// its death.
const STDERR_TAIL: usize = 8;

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
}

/// A call in flight to the worker.
struct Call {
    /// Where its answer goes; `None` once the caller gave up.
    reply: Option<oneshot::Sender<ProviderOutcome>>,
    /// The submitted secrets, scrubbed from the worker's log lines.
    secrets: Vec<Arc<Secrets>>,
    /// The HTTP requests the host runs for it (the worker's request id,
    /// the task), cancelled when the call ends.
    http: Vec<(u64, tokio::task::AbortHandle)>,
}

impl Call {
    /// Cancels the HTTP requests still running for this call, answering
    /// each to the worker as cancelled.
    fn cancel_http(&mut self, out: &Arc<protocol::FrameWriter>) {
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
struct Conn {
    pid: Option<u32>,
    /// Its cgroups, when the host could make them: its real memory, and
    /// what is left of it to kill once it died.
    cgroup: Option<Cgroup>,
    out: Arc<protocol::FrameWriter>,
    calls: Mutex<HashMap<u64, Call>>,
    next_id: AtomicU64,
    /// Asks the monitor to kill the worker, with the reason.
    kill: Mutex<Option<oneshot::Sender<String>>>,
}

impl Conn {
    /// Removes call `id` and cancels its HTTP.
    fn end_call(&self, id: u64) -> Option<Call> {
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
    fn memory(&self) -> Option<u64> {
        if let Some(bytes) = self.cgroup.as_ref().and_then(Cgroup::memory_current) {
            return Some(bytes);
        }
        self.pid.map(resident_memory_of_tree)
    }

    fn kill(&self, reason: String) {
        if let Some(kill) = self.kill.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = kill.send(reason);
        }
    }

    /// The secrets of every validation in flight to this worker: a line
    /// it sends is scrubbed of all of them, whichever validation it says
    /// the line is for (a plugin sees every call in flight and may log one
    /// call's secret while polling another).
    fn secrets(&self) -> Vec<Arc<Secrets>> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().flat_map(|c| c.secrets.clone()).collect()
    }
}

struct State {
    phase: WorkerState,
    conn: Option<Arc<Conn>>,
    restarts: u64,
    crashes_total: u64,
    crashes: VecDeque<Instant>,
    last_crash: Option<String>,
    ready: Option<Ready>,
}

struct Shared {
    spec: Spec,
    state: Mutex<State>,
    /// Bumped on every change of phase.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn set_phase(&self, state: &mut State, phase: WorkerState) {
        state.phase = phase;
        self.changed.send_modify(|n| *n += 1);
    }

    /// The plugin's name once a worker has loaded it, its file before.
    fn plugin(&self) -> String {
        self.plugin_locked(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn plugin_locked(&self, state: &State) -> String {
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
    fn record_failure(&self, state: &mut State, what: &str) -> Option<u32> {
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
        let conn = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.set_phase(&mut state, WorkerState::Stopped);
            state.conn.take()
        };
        if let Some(conn) = conn {
            conn.kill("was stopped by the host".to_owned());
        }
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
            }),
            changed: tx,
        });
        drop(rx);
        let (reply, started) = std::sync::mpsc::channel();
        let starting = shared.clone();
        runtime().spawn(async move {
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
            runtime().spawn(restart(shared, Duration::ZERO));
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
        let (reply, answer) = oneshot::channel();
        conn.calls.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Call {
                reply: Some(reply),
                secrets,
                http: Vec::new(),
            },
        );
        let mut guard = CancelOnDrop {
            conn: conn.clone(),
            id,
            done: false,
        };
        let sent = conn.out.send(&ToWorker::Validate {
            id,
            handle,
            fields: fields.into_iter().collect(),
        });
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

/// Tells the worker to drop a validation its caller gave up on, and
/// stops the worker if it does not within [`CANCEL_GRACE`].
struct CancelOnDrop {
    conn: Arc<Conn>,
    id: u64,
    done: bool,
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
        runtime().spawn(async move {
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

/// Why a worker did not come up.
enum Incarnation {
    /// Its library did not load (the loader's kind and words).
    LoadFailed(FailureKind, String, Option<String>),
    /// The worker could not be started, or died or hung while loading.
    Broken(String),
}

/// Set once this process is stopping all its workers ([`shutdown`]): a
/// worker that dies then is not restarted, nor a new one started.
/// Process-wide, as the exit it prepares for.
static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Stops starting and restarting workers in this process; see
/// [`super::shutdown`].
pub(crate) fn stop_starting_workers() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Starts one worker and, once it is ready, the tasks that serve it.
async fn incarnate(shared: &Arc<Shared>) -> Result<Ready, Incarnation> {
    if shutting_down() {
        return Err(Incarnation::Broken(
            "was not started: this process is exiting".to_owned(),
        ));
    }
    let spec = &shared.spec;
    let mut hello = spec.hello.clone();
    let cgroup = if hello.jail.sandbox {
        let limits = Limits {
            memory: spec.config.memory_limit,
            pids: spec.config.max_threads,
        };
        let (cgroup, unavailable) = Cgroup::create(&limits);
        hello.jail.cgroups = cgroup.as_ref().map(Cgroup::joins).unwrap_or_default();
        hello.jail.cgroups_unavailable = unavailable;
        cgroup
    } else {
        None
    };
    let (host_end, worker_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Incarnation::Broken(format!("could not get a socket pair: {e}")))?;
    let mut child = spawn(
        &spec.program,
        OwnedFd::from(worker_end),
        spec.library.clone(),
    )
    .await
    .map_err(|e| {
        Incarnation::Broken(format!(
            "could not be started ({}: {e})",
            spec.program.display()
        ))
    })?;
    let pid = child.id();
    let stderr = child.stderr.take();
    host_end
        .set_nonblocking(true)
        .map_err(|e| Incarnation::Broken(format!("socket: {e}")))?;
    let socket = tokio::net::UnixStream::from_std(host_end)
        .map_err(|e| Incarnation::Broken(format!("socket: {e}")))?;
    let (mut reader, mut writer) = socket.into_split();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (stderr_closed, stderr_done) = oneshot::channel::<()>();
    if let Some(stderr) = stderr {
        let (shared, tail) = (shared.clone(), tail.clone());
        runtime().spawn(async move {
            read_stderr(shared, stderr, tail).await;
            let _ = stderr_closed.send(());
        });
    }
    let greeting = async {
        writer
            .write_all(&protocol::encode(&hello))
            .await
            .map_err(|e| format!("did not take its orders ({e})"))?;
        let mut named = None;
        loop {
            let frame = protocol::read_async(&mut reader)
                .await
                .map_err(|e| format!("broke its socket while loading ({e})"))?
                .ok_or_else(|| "closed its socket while loading".to_owned())?;
            match protocol::decode::<FromWorker>(&frame)? {
                FromWorker::Named { name } if named.is_none() => {
                    // Its own settings, and no other plugin's.
                    let settings = ToWorker::Settings {
                        settings: crate::config::settings_in(&spec.settings, &name),
                        env: crate::capabilities::setting_env_vars(&name),
                    };
                    writer
                        .write_all(&protocol::encode(&settings))
                        .await
                        .map_err(|e| format!("did not take its settings ({e})"))?;
                    named = Some(name);
                }
                FromWorker::Ready(ready) if named.as_deref() == Some(ready.name.as_str()) => {
                    return Ok(Ok(ready))
                }
                FromWorker::LoadFailed {
                    kind,
                    reason,
                    detail,
                } => return Ok(Err(Incarnation::LoadFailed(kind, reason, detail))),
                FromWorker::Log {
                    level,
                    target,
                    message,
                    ..
                } => crate::capabilities::emit_plugin_log(
                    &spec.hello.plugin_file.display().to_string(),
                    level,
                    &target,
                    &message,
                ),
                other => return Err(format!("said {} before it was ready", kind_of(&other))),
            }
        }
    };
    let greeted = tokio::time::timeout(spec.config.start_timeout, greeting).await;
    let ready = match greeted {
        Ok(Ok(Ok(ready))) => ready,
        Ok(Ok(Err(failed))) => {
            let _ = child.kill().await;
            return Err(failed);
        }
        Ok(Err(broken)) => {
            // Let it finish dying, to say how.
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let _ = child.kill().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
            let died = match status {
                Ok(Ok(status)) => describe_exit(status, &tail, &spec.config),
                _ => broken,
            };
            return Err(Incarnation::Broken(died));
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(Incarnation::Broken(format!(
                "did not load its plugin within {} s",
                spec.config.start_timeout.as_secs_f64()
            )));
        }
    };
    let out = protocol::FrameWriter::new(writer, runtime().handle().clone());
    let (kill, killed) = oneshot::channel();
    let conn = Arc::new(Conn {
        pid,
        cgroup,
        out,
        calls: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        kill: Mutex::new(Some(kill)),
    });
    let stopped = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let stopped = state.phase == WorkerState::Stopped;
        if !stopped {
            state.conn = Some(conn.clone());
            // Its counters exist (at zero) from its first worker on.
            count(&ready.name, |_| {});
            state.ready = Some(ready.clone());
            shared.set_phase(&mut state, WorkerState::Ready);
        }
        stopped
    };
    if stopped {
        let _ = child.kill().await;
        return Err(Incarnation::Broken("was stopped by the host".to_owned()));
    }
    runtime().spawn(read_frames(shared.clone(), conn.clone(), reader));
    runtime().spawn(monitor(
        shared.clone(),
        conn,
        child,
        killed,
        tail,
        stderr_done,
    ));
    Ok(ready)
}

fn kind_of(message: &FromWorker) -> &'static str {
    match message {
        FromWorker::Named { .. } => "its plugin's name",
        FromWorker::Ready(_) => "ready",
        FromWorker::LoadFailed { .. } => "load failed",
        FromWorker::Outcome { .. } => "an outcome",
        FromWorker::Cancelled { .. } => "cancelled",
        FromWorker::Http { .. } => "an HTTP request",
        FromWorker::Log { .. } => "a log line",
    }
}

/// Serves what the worker says until it stops talking; a worker that
/// breaks the protocol is killed.
async fn read_frames(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut reader: tokio::net::unix::OwnedReadHalf,
) {
    let plugin = shared.plugin();
    loop {
        let frame = match protocol::read_async(&mut reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                conn.kill(format!("was stopped: it broke its socket ({e})"));
                return;
            }
        };
        let message = match protocol::decode::<FromWorker>(&frame) {
            Ok(message) => message,
            Err(e) => {
                conn.kill(format!("was stopped: it sent {e}"));
                return;
            }
        };
        match message {
            FromWorker::Outcome { id, outcome } => {
                if let Some(Call {
                    reply: Some(reply), ..
                }) = conn.end_call(id)
                {
                    let _ = reply.send(unwire(outcome));
                }
            }
            FromWorker::Cancelled { id } => {
                conn.end_call(id);
            }
            FromWorker::Http {
                id,
                validation,
                request,
            } => http_for_call(&shared, &conn, id, validation, request),
            FromWorker::Named { .. } => {
                conn.kill("was stopped: it named its plugin twice".to_owned());
                return;
            }
            // Scrubbed of every secret in flight, whichever validation
            // it came from (one call may log another's).
            FromWorker::Log {
                level,
                target,
                message,
            } => {
                let mut message = message;
                for secrets in conn.secrets() {
                    if let std::borrow::Cow::Owned(scrubbed) = secrets.scrub(&message) {
                        message = scrubbed;
                    }
                }
                crate::capabilities::emit_plugin_log(&plugin, level, &target, &message);
            }
            other @ (FromWorker::Ready(_) | FromWorker::LoadFailed { .. }) => {
                conn.kill(format!("was stopped: it said {} twice", kind_of(&other)));
                return;
            }
        }
    }
}

/// Performs the worker's HTTP request `id` for its validation
/// `validation`, tied to that call: cancelled when it ends. A request made
/// outside any validation in flight is refused.
fn http_for_call(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    id: u64,
    validation: Option<u64>,
    request: protocol::HttpRequest,
) {
    let mut calls = conn.calls.lock().unwrap_or_else(|e| e.into_inner());
    let call = validation
        .and_then(|v| calls.get_mut(&v))
        .filter(|call| call.reply.is_some());
    let Some(call) = call else {
        drop(calls);
        let _ = conn.out.send(&ToWorker::HttpDone {
            id,
            result: Err(HttpFailure {
                kind: connhost_plugin_api::abi::http_error::DENIED,
                message: "refused: a plugin's HTTP request must be made by one of its validations in flight (from the validation's own future), and this one was not".to_owned(),
            }),
        });
        return;
    };
    let out = conn.out.clone();
    let token = shared.spec.egress_token;
    let task = runtime().spawn(async move {
        let result = crate::capabilities::http_for_worker(token, request).await;
        let _ = out.send(&ToWorker::HttpDone { id, result });
    });
    call.http.retain(|(_, task)| !task.is_finished());
    call.http.push((id, task.abort_handle()));
}

/// The resident memory of the process `pid` and of its descendants, from
/// `/proc` (kilobytes of `VmRSS`, in bytes).
fn resident_memory_of_tree(pid: u32) -> u64 {
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

fn unwire(outcome: WireOutcome) -> ProviderOutcome {
    match outcome {
        WireOutcome::Valid {
            username,
            metadata_json,
        } => ProviderOutcome::valid_from_plugin(username, metadata_json.as_deref()),
        WireOutcome::Rejected(message) => ProviderOutcome::Rejected(message),
        WireOutcome::Inconclusive(message) => ProviderOutcome::Inconclusive(message),
        WireOutcome::Fault(message) => ProviderOutcome::Fault(message),
    }
}

/// Forwards the worker's standard error to the log (scrubbed of the
/// secrets in flight) and keeps its last lines, which say why it died
/// (an allocation failure, a stack overflow).
async fn read_stderr(
    shared: Arc<Shared>,
    mut stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    const MAX_LINE: usize = 4096;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..read]);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            stderr_line(&shared, &tail, &line[..line.len() - 1]);
        }
        if buffer.len() > MAX_LINE {
            let line: Vec<u8> = std::mem::take(&mut buffer);
            stderr_line(&shared, &tail, &line[..MAX_LINE]);
        }
    }
    if !buffer.is_empty() {
        stderr_line(&shared, &tail, &buffer);
    }
}

fn stderr_line(shared: &Shared, tail: &Mutex<VecDeque<String>>, line: &[u8]) {
    let mut line = String::from_utf8_lossy(line).into_owned();
    let conn = shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .conn
        .clone();
    if let Some(conn) = conn {
        for secrets in conn.secrets() {
            if let std::borrow::Cow::Owned(scrubbed) = secrets.scrub(&line) {
                line = scrubbed;
            }
        }
    }
    tracing::warn!(target: "connhost::worker", plugin = %shared.plugin(), "worker stderr: {line}");
    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    if tail.len() == STDERR_TAIL {
        // Last words (an allocation failure before a long backtrace) are
        // kept over ordinary lines.
        let ordinary = tail
            .iter()
            .position(|kept| !LAST_WORDS.iter().any(|words| kept.contains(words)));
        tail.remove(ordinary.unwrap_or(0));
    }
    tail.push_back(line);
}

/// Waits for the worker to die (or kills it when asked), answers every
/// call in flight with why, and restarts or parks the plugin.
async fn monitor(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut child: tokio::process::Child,
    killed: oneshot::Receiver<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: oneshot::Receiver<()>,
) {
    let (status, ours) = tokio::select! {
        status = child.wait() => (status, None),
        reason = killed => {
            let _ = child.start_kill();
            (child.wait().await, reason.ok())
        }
    };
    // Its last words (an allocation failure, a stack overflow) are on
    // its standard error: read them to the end, which a dead process
    // reaches at once (bounded, in case something else holds the pipe).
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
    let oom_killed = conn.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
    let died = match (&ours, status) {
        (Some(reason), _) => reason.clone(),
        (None, Ok(status)) if oom_killed => {
            let limit = shared
                .spec
                .config
                .memory_limit
                .map(|b| format!(" of {} MiB", b >> 20))
                .unwrap_or_default();
            format!(
                "exceeded its memory limit{limit}, counted by its cgroup with shared memory and tmpfs ({})",
                describe_exit(status, &tail, &shared.spec.config)
            )
        }
        (None, Ok(status)) => describe_exit(status, &tail, &shared.spec.config),
        (None, Err(e)) => format!("was lost ({e})"),
    };
    // Whatever it left behind goes with it, and so does its cgroup (in the
    // background: its replacement gets a cgroup of its own).
    if conn.cgroup.is_some() {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(cgroup) = &conn.cgroup {
                cgroup.kill_all();
                cgroup.remove(Duration::from_secs(5));
            }
        });
    }
    let (stopping, plugin, parked, backoff) = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = &state.conn {
            if Arc::ptr_eq(current, &conn) {
                state.conn = None;
            }
        }
        let plugin = shared.plugin_locked(&state);
        if state.phase == WorkerState::Stopped || shutting_down() {
            (true, plugin, false, None)
        } else {
            state.crashes_total += 1;
            match shared.record_failure(&mut state, &format!("its worker process {died}")) {
                None => (false, plugin, true, None),
                Some(recent) => {
                    let backoff = match recent {
                        0 | 1 => Duration::ZERO,
                        n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 2))
                            .min(MAX_BACKOFF),
                    };
                    (false, plugin, false, Some(backoff))
                }
            }
        }
    };
    let calls: Vec<Call> = conn
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .map(|(_, call)| call)
        .collect();
    if !stopping {
        count(&plugin, |c| c.crashes += 1);
        tracing::error!(target: "connhost::worker", plugin = %plugin, in_flight = calls.len(), "the plugin's worker process {died}{}", if parked { "; the plugin is parked" } else { "; restarting it" });
    }
    for mut call in calls {
        call.cancel_http(&conn.out);
        if let Some(reply) = call.reply {
            let _ = reply.send(ProviderOutcome::WorkerFault {
                message: if parked {
                    format!("its worker process {died} while validating; the plugin crashed too often and is parked")
                } else {
                    format!("its worker process {died} while validating; it is being restarted, retry")
                },
                retryable: !parked,
            });
        }
    }
    if let Some(backoff) = backoff {
        runtime().spawn(restart(shared, backoff));
    }
}

/// Starts a new worker after `backoff`, again and again until one comes
/// up, the plugin is parked or it is stopped. (Boxed: starting a worker
/// starts its monitor, which may restart it.)
fn restart(
    shared: Arc<Shared>,
    backoff: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(restart_after(shared, backoff))
}

async fn restart_after(shared: Arc<Shared>, backoff: Duration) {
    tokio::time::sleep(backoff).await;
    let mut backoff = backoff;
    loop {
        {
            let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(state.phase, WorkerState::Stopped | WorkerState::Parked) || shutting_down()
            {
                return;
            }
        }
        match incarnate(&shared).await {
            Ok(_) => {
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                state.restarts += 1;
                let plugin = shared.plugin_locked(&state);
                count(&plugin, |c| c.restarts += 1);
                tracing::info!(target: "connhost::worker", plugin = %plugin, restarts = state.restarts, "the plugin's worker process was restarted");
                return;
            }
            Err(failed) => {
                let reason = match failed {
                    Incarnation::LoadFailed(_, reason, _) => reason,
                    Incarnation::Broken(reason) => format!("its worker process {reason}"),
                };
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.phase == WorkerState::Stopped
                    || shared.record_failure(&mut state, &reason).is_none()
                {
                    return;
                }
            }
        }
        backoff = (backoff * 2)
            .max(Duration::from_millis(100))
            .min(MAX_BACKOFF);
        tokio::time::sleep(backoff).await;
    }
}
