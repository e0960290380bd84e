//! The worker process: one isolated plugin, jailed, serving its host.
//!
//! In order: die with the host (`PR_SET_PDEATHSIG`), take the socket the
//! host left at descriptor [`SOCKET_FD`] and the library at
//! [`LIBRARY_FD`], close anything else, read the [`Hello`], enter the jail
//! ([`connhost_sandbox::enter`], on this process's only thread, so every
//! thread started later inherits it; with a PID namespace, only the jailed
//! runner returns from it), open the library with the same checks as in
//! process and say whose it is, take that plugin's settings from the host,
//! initialise it (`loader::open_in_process`), answer
//! [`FromWorker::Ready`], then serve validations until the host closes the
//! socket. Each validation runs on a thread of its own (the pool's that read
//! it, `pool.rs`), so one that never yields holds only its thread; the
//! host decides when to give up on it (and on this process).
//!
//! The plugin's capabilities that carry policy go to the host: the worker
//! installs [`forward_log`] and [`forward_http`] as its host functions for
//! logs and HTTP (`capabilities::forward_with`), which send the event or
//! the request over the socket.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::fd::FromRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use abi_stable::std_types::{RErr, ROk, RString, RVec, Tuple2};
use async_ffi::{FfiFuture, FutureExt as _};
use connhost_plugin_api::abi::{
    http_error, FfiHttpError, FfiHttpRequest, FfiHttpResponse, PluginModuleRef,
};
use connhost_plugin_api::panic::CatchPanic;
use connhost_plugin_api::CredentialFields;
use tokio::sync::oneshot;

use super::pool::{Job, Pool, Stop};
use crate::backend::{InProcess, ProviderOutcome};
use crate::capabilities::{Forwarding, HttpResult};
use crate::model::config::HostConfig;
use crate::model::report::FailureKind;
use crate::protocol::{
    self, FrameReader, FromWorker, Hello, HttpFailure, HttpRequest, HttpResponse, Ready, ToWorker,
    WireOutcome, LIBRARY_FD, SOCKET_FD,
};
use crate::state::HostState;

/// The exit code of a worker that could not start (no socket, no hello).
pub(crate) const EXIT_NO_HOST: i32 = 70;

/// The threads a worker keeps for itself (the pool's reading thread, its
/// runtime's worker and blocking threads, the keeper's margin) out of
/// [`crate::WorkerConfig::max_threads`]; the rest run validations.
const OWN_THREADS: u64 = 8;

/// Runs the worker and exits the process.
pub(crate) fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "connhost worker: {message}");
            EXIT_NO_HOST
        }
    };
    exit(code)
}

/// Leaves at once: no destructors, no atexit handlers (a plugin's could
/// hang or crash on the way out, and nothing here needs flushing).
pub(super) fn exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

fn run() -> Result<(), String> {
    die_with_host()?;
    close_other_descriptors();
    // Fewer malloc arenas: less address space reserved per thread, so the
    // memory limit measures what the plugin uses. (Set here, not by the
    // environment, which is empty.)
    // SAFETY: mallopt takes two numbers.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    if !is_socket(SOCKET_FD) {
        return Err(format!(
            "descriptor {SOCKET_FD} is not a socket: a worker is started by connhost, not by hand"
        ));
    }
    // SAFETY: the host leaves the worker's end of the socket pair at this
    // descriptor and nothing else in this process owns it (checked above).
    let mut socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(SOCKET_FD) };
    let hello: Hello = match protocol::read_blocking(&mut socket) {
        Ok(Some(frame)) => protocol::decode(&frame)?,
        Ok(None) => return Err("the host closed the socket before saying hello".to_owned()),
        Err(e) => return Err(format!("reading the host's hello: {e}")),
    };
    let inherited = connhost_sandbox::Inherited {
        socket: SOCKET_FD,
        library: LIBRARY_FD,
        library_name: hello.library_name.clone(),
    };
    let entered = match connhost_sandbox::enter(&hello.jail, &inherited) {
        Ok(entered) => entered,
        Err(reason) => {
            let _ = protocol::write_blocking(
                &mut socket,
                &FromWorker::LoadFailed {
                    kind: FailureKind::WorkerFailed,
                    reason: format!("the worker's sandbox could not be applied: {reason}; the plugin was not loaded."),
                    detail: None,
                },
            );
            return Ok(());
        }
    };
    crate::capabilities::set_worker_log_level(hello.max_log_level);
    let threads = hello
        .jail
        .max_threads
        .map_or(512, |n| n.saturating_sub(OWN_THREADS).max(2)) as usize;
    // The runtime drives the plugin's timers and the rare backlog of
    // frames the socket could not take at once; validations run on the
    // pool's threads (`pool.rs`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .thread_name("connhost-worker")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the worker's runtime: {e}"))?;
    serve(socket, hello, entered, &runtime, threads)
}

/// Asks the kernel to kill this process when the host dies, then checks
/// the host did not die before that (its pid is the argument after
/// [`crate::protocol::WORKER_ARG`]).
fn die_with_host() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if let Some(parent) = std::env::args().nth(2).and_then(|p| p.parse::<i32>().ok()) {
        let now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
        if now != parent {
            exit(EXIT_NO_HOST);
        }
    }
    Ok(())
}

/// Closes every descriptor but standard input, output and error, the
/// socket and the library (the host's spawner already did; a program of an
/// embedder's own that starts workers may not have).
fn close_other_descriptors() {
    // SAFETY: closes descriptors this process does not use.
    unsafe { libc::syscall(libc::SYS_close_range, LIBRARY_FD + 1, u32::MAX, 0) };
}

fn is_socket(fd: i32) -> bool {
    // SAFETY: fstat only writes into the buffer it is given.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut stat) } == 0) && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// The worker's side of the conversation, once confined.
struct Link {
    out: Arc<protocol::FrameWriter>,
    http: Mutex<HashMap<u64, oneshot::Sender<Result<HttpResponse, HttpFailure>>>>,
    next_http: AtomicU64,
}

/// The worker's link to its host. Process-wide: a worker process serves
/// one plugin for one host, and the forwarding host functions reach it.
static LINK: OnceLock<Link> = OnceLock::new();

thread_local! {
    /// The validation being polled on this thread, if any.
    static VALIDATION: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The host functions a worker's plugin calls for logs and HTTP: both go
/// to the host.
const FORWARDING: Forwarding = Forwarding {
    log: forward_log,
    http: forward_http,
};

/// Sends a plugin log event to the host.
fn forward_log(level: u8, target: &str, message: &str) {
    if let Some(link) = LINK.get() {
        let _ = link.out.send(&FromWorker::Log {
            level,
            target: target.to_owned(),
            message: message.to_owned(),
        });
    }
}

/// Hands a plugin's HTTP request to the host (where the egress policy
/// lives) and returns its answer as a future.
fn forward_http(request: FfiHttpRequest) -> FfiFuture<HttpResult> {
    let Some(link) = LINK.get() else {
        return async {
            RErr(FfiHttpError {
                kind: http_error::OTHER,
                message: RString::from("not a worker: no host to forward the request to"),
            })
        }
        .into_ffi();
    };
    let id = link.next_http.fetch_add(1, Ordering::Relaxed);
    let (answer, answered) = oneshot::channel();
    link.http
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, answer);
    let request = HttpRequest {
        method: request.method.into_string(),
        url: request.url.into_string(),
        headers: request
            .headers
            .into_iter()
            .map(|Tuple2(k, v)| (k.into_string(), v.into_string()))
            .collect(),
        body: request.body.into_vec(),
        timeout_ms: request.timeout_ms,
    };
    let validation = VALIDATION.with(Cell::get);
    let sent = link.out.send(&FromWorker::Http {
        id,
        validation,
        request,
    });
    /// Forgets the pending answer when the plugin drops the request.
    struct Forget(u64);
    impl Drop for Forget {
        fn drop(&mut self) {
            if let Some(link) = LINK.get() {
                link.http
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.0);
            }
        }
    }
    let forget = Forget(id);
    async move {
        let _forget = forget;
        if !sent {
            return RErr(FfiHttpError {
                kind: http_error::OTHER,
                message: RString::from("the host is gone"),
            });
        }
        match answered.await {
            Ok(Ok(response)) => ROk(FfiHttpResponse {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .map(|(k, v)| Tuple2(k.into(), v.into()))
                    .collect(),
                body: RVec::from(response.body),
            }),
            Ok(Err(failure)) => RErr(FfiHttpError {
                kind: failure.kind,
                message: failure.message.into(),
            }),
            Err(_) => RErr(FfiHttpError {
                kind: http_error::OTHER,
                message: RString::from("the host dropped the request"),
            }),
        }
    }
    .into_ffi()
}

fn serve(
    socket: std::os::unix::net::UnixStream,
    hello: Hello,
    entered: connhost_sandbox::Entered,
    runtime: &tokio::runtime::Runtime,
    threads: usize,
) -> Result<(), String> {
    // The plugin's code (its initializers, its host functions) finds this
    // runtime from here on.
    let _context = runtime.enter();
    let socket = Arc::new(socket);
    let out = protocol::FrameWriter::new(socket.clone(), runtime.handle().clone());
    if LINK
        .set(Link {
            out: out.clone(),
            http: Mutex::new(HashMap::new()),
            next_http: AtomicU64::new(0),
        })
        .is_err()
    {
        return Err("the worker started twice".to_owned());
    }
    // From now on the plugin's logs and HTTP go to the host.
    crate::capabilities::forward_with(FORWARDING);
    let mut reader = FrameReader::new();
    let library_path = entered.library.clone();
    let plugin_file = hello.plugin_file.clone();
    let max_plugin_size = hello.max_plugin_size;
    let name = match crate::loader::plugin_name(&library_path, &plugin_file, max_plugin_size) {
        Ok(name) => name,
        Err(failure) => return report_failure(&out, &socket, &mut reader, failure),
    };
    let _ = out.send(&FromWorker::Named { name: name.clone() });
    let (settings, env) = match reader.read_blocking(&socket) {
        Ok(Some(frame)) => match protocol::decode::<ToWorker>(&frame) {
            Ok(ToWorker::Settings { settings, env }) => (settings, env),
            _ => exit(EXIT_NO_HOST),
        },
        _ => exit(EXIT_NO_HOST),
    };
    crate::capabilities::set_worker_env(env);
    let config = HostConfig {
        settings: BTreeMap::from([(name, settings)]),
        max_plugin_size,
        ..HostConfig::default()
    };
    // Its HTTP goes to the host, which counts its refusals.
    let state = HostState::new(&config);
    let library = match crate::loader::open_in_process(&library_path, &plugin_file, &config, &state)
    {
        Ok(library) => library,
        Err(failure) => return report_failure(&out, &socket, &mut reader, failure),
    };
    let sandbox = entered.report;
    let Some(module) = library.module() else {
        return Err("the library did not load in this process".to_owned());
    };
    let _ = out.send(&FromWorker::Ready(Ready {
        name: library.name().to_owned(),
        version: library.version().to_owned(),
        api_version: library.api_version().to_owned(),
        providers: library.wire_providers(),
        sandbox,
    }));
    let handler = Handler {
        module,
        out,
        cancels: Arc::default(),
        runtime: runtime.handle().clone(),
    };
    let pool = Pool::new(
        socket,
        reader,
        Box::new(move |frame| handler.handle(&frame)),
        // One more than may validate at once: the pool keeps a thread
        // reading the socket.
        threads + 1,
        // The host closed the socket (it stops this worker) or broke it.
        |_| exit(0),
    )
    .map_err(|e| format!("starting the worker's threads: {e}"))?;
    match pool.serve() {
        // The host closed the socket (it stops this worker) or broke it.
        Stop::Idle | Stop::Closed | Stop::Broken => exit(0),
    }
}

/// What the worker does with each frame from the host, on the pool's
/// thread that read it.
struct Handler {
    module: PluginModuleRef,
    out: Arc<protocol::FrameWriter>,
    /// The validations in flight, to cancel.
    cancels: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    runtime: tokio::runtime::Handle,
}

impl Handler {
    /// Delivers an answer or a cancellation at once; a validation becomes
    /// a job for a thread of the pool.
    fn handle(&self, frame: &[u8]) -> Option<Job> {
        let message: ToWorker = match protocol::decode(frame) {
            Ok(message) => message,
            Err(_) => exit(EXIT_NO_HOST),
        };
        match message {
            ToWorker::Validate { id, handle, fields } => {
                let (cancel, cancelled) = oneshot::channel();
                self.cancels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, cancel);
                let provider = InProcess::new(self.module, handle);
                let fields: CredentialFields = fields.into_iter().collect();
                let out = self.out.clone();
                let cancels = self.cancels.clone();
                let runtime = self.runtime.clone();
                Some(Box::new(move || {
                    VALIDATION.with(|v| v.set(Some(id)));
                    let answer = runtime.block_on(async move {
                        tokio::select! {
                            biased;
                            _ = cancelled => FromWorker::Cancelled { id },
                            outcome = CatchPanic::new(provider.validate_fields(fields)) => {
                                let outcome = outcome.unwrap_or_else(|panic| {
                                    ProviderOutcome::Fault(format!("panicked while validating: {panic}"))
                                });
                                FromWorker::Outcome { id, outcome: wire(outcome) }
                            }
                        }
                    });
                    VALIDATION.with(|v| v.set(None));
                    cancels
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    let _ = out.send(&answer);
                }))
            }
            ToWorker::Cancel { id } => {
                let cancel = self
                    .cancels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(cancel) = cancel {
                    let _ = cancel.send(());
                }
                None
            }
            // Only before the plugin is initialised.
            ToWorker::Settings { .. } => exit(EXIT_NO_HOST),
            ToWorker::HttpDone { id, result } => {
                let waiting = LINK.get().and_then(|link| {
                    link.http
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id)
                });
                if let Some(waiting) = waiting {
                    let _ = waiting.send(result);
                }
                None
            }
        }
    }
}

/// Tells the host why the library did not load, and waits until it has
/// read it (it closes the socket then).
fn report_failure(
    out: &Arc<protocol::FrameWriter>,
    socket: &std::os::unix::net::UnixStream,
    reader: &mut FrameReader,
    failure: crate::model::report::LoadFailure,
) -> Result<(), String> {
    let _ = out.send(&FromWorker::LoadFailed {
        kind: failure.kind,
        reason: failure.reason,
        detail: failure.detail,
    });
    let _ = reader.read_blocking(socket);
    Ok(())
}

fn wire(outcome: ProviderOutcome) -> WireOutcome {
    match outcome {
        ProviderOutcome::Valid(validation) => WireOutcome::Valid {
            username: validation.provider_username,
            metadata_json: validation.provider_metadata.map(|m| m.to_string()),
        },
        ProviderOutcome::Rejected(message) => WireOutcome::Rejected(message),
        ProviderOutcome::Inconclusive(message) => WireOutcome::Inconclusive(message),
        ProviderOutcome::Fault(message) | ProviderOutcome::WorkerFault { message, .. } => {
            WireOutcome::Fault(message)
        }
    }
}
