//! The isolated backend: the host's side of a plugin that runs in a
//! sandboxed worker process of its own, called over a socket pair.
//!
//! [`start`] starts a worker for one checked library copy and waits until
//! it has loaded the library; the [`Supervisor`] then answers validations
//! through it. When the worker dies (a signal, an exit, or killed by the
//! host because a validation would not stop), every call in flight is
//! answered at once with what happened, and a new worker is started: at
//! once after a first crash, then with a doubling backoff.
//! [`WorkerConfig::crash_limit`] crashes within
//! [`WorkerConfig::crash_window`] park the plugin: its calls answer with
//! the reason until its file changes (a new supervisor) or it is unparked.
//! Dropping the supervisor (its file was replaced or removed, its plugin
//! did not register, and the last call in flight finished) stops the
//! worker, and its memory goes back to the system.
//!
//! The parts: `supervisor.rs` (phase, restarts, calls), `conn.rs` (one
//! running worker and its calls in flight), `lifecycle.rs` (start, watch,
//! restart), `proxy.rs` (what a worker asks of its host: answers, HTTP,
//! log lines), `stderr.rs`, `spawn.rs` (the one thread that forks
//! workers, and what they inherit), `death.rs` (a death in words).
//! Everything here runs on its host's supervisor runtime
//! ([`crate::state::HostState`]), so it does not depend on the caller's,
//! and counts crashes and restarts into that host's state.
//!
//! [`WorkerConfig::crash_limit`]: crate::model::config::WorkerConfig::crash_limit
//! [`WorkerConfig::crash_window`]: crate::model::config::WorkerConfig::crash_window

mod conn;
mod death;
mod lifecycle;
mod proxy;
mod spawn;
mod stderr;
mod supervisor;

use std::path::Path;
use std::sync::Arc;

use connhost_plugin_api::CredentialFields;

use super::ProviderOutcome;
use crate::model::config::HostConfig;
use crate::model::report::{FailureKind, LoadFailure, LOAD_LOG_TARGET};
use crate::model::worker_status::WorkerStatus;
use crate::protocol::{Hello, Ready};
use crate::state::HostState;

pub(crate) use supervisor::{stop_starting_workers, Spec, Supervisor};

/// A handle to one provider of an isolated plugin. Cheap to clone; the
/// worker stops when the last handle (and the catalog's) is gone.
#[derive(Debug, Clone)]
pub(crate) struct Isolated {
    supervisor: Arc<Supervisor>,
    handle: u32,
}

impl Isolated {
    pub(crate) fn new(supervisor: Arc<Supervisor>, handle: u32) -> Self {
        Self { supervisor, handle }
    }

    /// The supervisor's address and the provider's handle: which code this
    /// is, in this process.
    pub(crate) fn identity(&self) -> (usize, u32) {
        (Arc::as_ptr(&self.supervisor) as usize, self.handle)
    }

    /// Its worker's status.
    pub(crate) fn status(&self) -> WorkerStatus {
        self.supervisor.status()
    }

    /// Calls the provider in its worker. The secrets of the validation
    /// being polled (see [`crate::redact::WithSecrets`]) go along, so the
    /// worker's log lines are scrubbed of them.
    pub(crate) async fn validate_fields(&self, fields: CredentialFields) -> ProviderOutcome {
        let secrets = crate::redact::active_secrets();
        self.supervisor.validate(self.handle, fields, secrets).await
    }
}

/// A worker that has loaded its library: its supervisor, what it offers,
/// and the token its HTTP is performed under in [`crate::capabilities`].
pub(crate) struct Started {
    /// The worker, supervised.
    pub(crate) supervisor: Supervisor,
    /// Its plugin, version and providers, as the worker reported them.
    pub(crate) ready: Ready,
    /// The plugin's token in `capabilities` (its egress policy).
    pub(crate) token: u64,
}

/// Starts a worker process that loads the library copy at `load_path`
/// with the loader's checks, in its sandbox, and waits until it has (at
/// most [`crate::model::config::WorkerConfig::start_timeout`]). This
/// process never maps the file; it only checks that it is a complete
/// library first. Failures name `path`, the file the copy was made from.
pub(crate) fn start(
    load_path: &Path,
    path: &Path,
    config: &HostConfig,
    state: &Arc<HostState>,
) -> Result<Started, LoadFailure> {
    crate::library::check_file(load_path, config.max_plugin_size)
        .map_err(|failure| failure.reported_as(load_path, path))?;
    let worker = &config.worker;
    let program = match worker.program.clone() {
        Some(program) => program,
        None => std::env::current_exe().map_err(|e| {
            LoadFailure::new(
                path,
                FailureKind::WorkerFailed,
                format!("cannot find this program to start a worker process: {e}."),
            )
        })?,
    };
    // The worker gets the copy as a descriptor: its restarts need the
    // bytes for as long as it lives, whatever happens to the copy's name
    // (a one-shot catalog removes its cache when dropped).
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut open, libc::O_NOFOLLOW);
    let library = open.open(load_path).map_err(|e| {
        LoadFailure::new(
            path,
            FailureKind::CacheFailed,
            format!("could not open the copy to hand it to the worker: {e}. Nothing is wrong with the file."),
        )
    })?;
    let library_name = load_path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| crate::cache_dir::is_cache_file_name(n))
        .map(str::to_owned)
        .unwrap_or_else(|| crate::cache_dir::copy_file_name(&"0".repeat(64)));
    // The host performs the worker's HTTP under this token's policy:
    // nothing is allowed until the worker says who it is.
    let token = crate::capabilities::register_plugin(
        &crate::model::names::of_file(path),
        Default::default(),
        state.refusals.clone(),
    );
    crate::capabilities::set_http_limits(token, config.http);
    let spec = Spec {
        program,
        egress_token: token,
        library: Arc::new(library),
        settings: config.settings.clone(),
        hello: Hello {
            jail: connhost_sandbox::Jail {
                sandbox: worker.sandbox,
                memory_limit: worker.memory_limit,
                open_files: worker.open_files,
                cpu_seconds: worker.cpu_seconds,
                max_threads: worker.max_threads,
                user: worker.user,
                tmp_size: worker.tmp_size,
                cgroups: Vec::new(),
                cgroups_unavailable: Vec::new(),
                require: worker.require.clone(),
            },
            library_name,
            plugin_file: path.to_owned(),
            max_plugin_size: config.max_plugin_size,
            max_log_level: crate::capabilities::max_level_code(),
        },
        config: worker.clone(),
        state: state.clone(),
    };
    let (supervisor, ready) = Supervisor::start(spec)?;
    if !ready.sandbox.unavailable.is_empty() {
        tracing::warn!(target: LOAD_LOG_TARGET, path = %path.display(), plugin = %ready.name, unavailable = ?ready.sandbox.unavailable, "the worker runs without part of its sandbox");
    }
    Ok(Started {
        supervisor,
        ready,
        token,
    })
}
