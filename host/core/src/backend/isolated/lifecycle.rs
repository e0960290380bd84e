//! A worker's life: started (`incarnate`), watched until it dies
//! (`monitor`), answered for, and restarted with backoff or parked.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;

use super::conn::{Call, Conn, Inbound};
use super::death::describe_exit;
use super::proxy::read_frames;
use super::spawn::spawn;
use super::stderr::read_stderr;
use super::supervisor::{shutting_down, Shared, MAX_BACKOFF};
use crate::backend::ProviderOutcome;
use crate::model::report::FailureKind;
use crate::model::worker_status::WorkerState;
use crate::protocol::{self, FromWorker, Ready, ToWorker};
use connhost_sandbox::cgroup::{Cgroup, Limits};

/// Why a worker did not come up.
pub(super) enum Incarnation {
    /// Its library did not load (the loader's kind and words).
    LoadFailed(FailureKind, String, Option<String>),
    /// The worker could not be started, or died or hung while loading.
    Broken(String),
}

/// Starts one worker and, once it is ready, the tasks that serve it.
pub(super) async fn incarnate(shared: &Arc<Shared>) -> Result<Ready, Incarnation> {
    if shutting_down() {
        return Err(Incarnation::Broken(
            "was not started: this process is exiting".to_owned(),
        ));
    }
    let epoch = shared.state.lock().unwrap_or_else(|e| e.into_inner()).epoch;
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
        shared.runtime().spawn(async move {
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
                        settings: crate::model::names::find(&spec.settings, &name)
                            .cloned()
                            .unwrap_or_default(),
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
    // From here on the socket is read by a thread of its own and written
    // by the callers, never through the runtime's reactor (whose thread
    // would wake for every frame).
    let socket = match reader.reunite(writer).map(tokio::net::UnixStream::into_std) {
        Ok(Ok(socket)) => Arc::new(socket),
        _ => {
            let _ = child.kill().await;
            return Err(Incarnation::Broken(
                "could not be served: its socket could not be taken off the runtime".to_owned(),
            ));
        }
    };
    let epoll = match Conn::epoll_for(&socket) {
        Ok(epoll) => epoll,
        Err(e) => {
            let _ = child.kill().await;
            return Err(Incarnation::Broken(format!(
                "could not be served: its socket could not be watched ({e})"
            )));
        }
    };
    let out = protocol::FrameWriter::new(socket.clone(), shared.runtime());
    let (kill, killed) = oneshot::channel();
    let conn = Arc::new(Conn {
        pid,
        plugin: ready.name.clone(),
        socket,
        inbound: Mutex::new(Inbound {
            reader: protocol::FrameReader::new(),
            ended: false,
        }),
        epoll,
        spinner: Default::default(),
        cgroup,
        out,
        calls: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        kill: Mutex::new(Some(kill)),
        runtime: shared.runtime(),
    });
    let stopped = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let stopped = state.phase == WorkerState::Stopped || state.epoch != epoch;
        if !stopped {
            state.conn = Some(conn.clone());
            // Its counters exist (at zero) from its first worker on.
            shared.spec.state.count_worker(&ready.name, |_| {});
            state.ready = Some(ready.clone());
            shared.set_phase(&mut state, WorkerState::Ready);
        }
        stopped
    };
    if stopped {
        let _ = child.kill().await;
        return Err(Incarnation::Broken("was stopped by the host".to_owned()));
    }
    let reading = {
        let (shared, conn) = (shared.clone(), conn.clone());
        std::thread::Builder::new()
            .name("connhost-worker-io".to_owned())
            .spawn(move || read_frames(shared, conn))
    };
    if let Err(e) = reading {
        // The monitor below answers the calls and restarts it.
        conn.kill(format!(
            "was stopped: no thread could be started to read its socket ({e})"
        ));
    }
    shared.runtime().spawn(monitor(
        shared.clone(),
        conn,
        child,
        killed,
        tail,
        stderr_done,
    ));
    Ok(ready)
}

pub(super) fn kind_of(message: &FromWorker) -> &'static str {
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

/// Waits for the worker to die (or kills it when asked), answers every
/// call in flight with why, and restarts or parks the plugin.
pub(super) async fn monitor(
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
        shared.spec.state.count_worker(&plugin, |c| c.crashes += 1);
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
        shared.runtime().spawn(restart(shared, backoff));
    }
}

/// Starts a new worker after `backoff`, again and again until one comes
/// up, the plugin is parked or it is stopped. (Boxed: starting a worker
/// starts its monitor, which may restart it.)
pub(super) fn restart(
    shared: Arc<Shared>,
    backoff: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(restart_after(shared, backoff))
}

pub(super) async fn restart_after(shared: Arc<Shared>, backoff: Duration) {
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
                shared.spec.state.count_worker(&plugin, |c| c.restarts += 1);
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
