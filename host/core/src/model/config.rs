//! How to assemble a host: which providers, which plugins folder, and the
//! bounds on each call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use connhost_sandbox::{Identity, Layer};

use super::names;
use super::trust::TrustConfig;

/// The default bound on one validation.
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest plugin file loaded unless configured: 256 MiB (plugins are
/// a few MB; a debug build of the largest example is 17 MB).
pub const DEFAULT_MAX_PLUGIN_SIZE: u64 = 256 * 1024 * 1024;

/// Bounds on the HTTP the host performs for one plugin (in process or
/// isolated): whatever it asks, it cannot make the host hold more than
/// `max_concurrent` requests and `max_body_bytes` of each body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// The largest request or response body, in bytes. A response is
    /// read as it streams in and refused (its connection dropped) as soon
    /// as it passes the limit; a larger request body is refused unsent.
    pub max_body_bytes: u64,
    /// The most requests one plugin may have in flight at once; one more
    /// is refused at once.
    pub max_concurrent: usize,
}

/// Chainable setters for a configuration's fields (the structs are
/// `#[non_exhaustive]`: fields may be added without breaking anyone, so
/// they are built from `default()` with these or by assigning fields).
macro_rules! setters {
    ($ty:ty { $($(#[$doc:meta])* $name:ident: $field:ident: $value:ty => $wrap:expr;)* }) => {
        impl $ty {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $value) -> Self {
                    self.$field = $wrap(value);
                    self
                }
            )*
        }
    };
}

setters!(HttpLimits {
    /// Sets [`max_body_bytes`](Self::max_body_bytes).
    with_max_body_bytes: max_body_bytes: u64 => |v| v;
    /// Sets [`max_concurrent`](Self::max_concurrent).
    with_max_concurrent: max_concurrent: usize => |v| v;
});

/// The default [`HttpLimits::max_body_bytes`]: 4 MiB.
pub const DEFAULT_HTTP_MAX_BODY: u64 = 4 << 20;

/// The default [`HttpLimits::max_concurrent`].
pub const DEFAULT_HTTP_MAX_CONCURRENT: usize = 16;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_HTTP_MAX_BODY,
            max_concurrent: DEFAULT_HTTP_MAX_CONCURRENT,
        }
    }
}

/// The default bound on one provider's validations in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

/// The bound on validations in flight across all providers, in this
/// process: well under tokio's blocking pool (512 threads by default), so
/// that however many providers block their threads, the host keeps threads
/// for its own blocking work (name resolution for the HTTP capability, file
/// reads).
pub const HOST_MAX_IN_FLIGHT: usize = 384;

/// Where a plugin's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Isolation {
    /// Loaded into the host's own process: native speed, for plugins the
    /// operator trusts (a crash in it is a crash of the host).
    #[default]
    InProcess,
    /// Loaded into a sandboxed worker process of its own, which the host
    /// restarts when it crashes: for untrusted plugins.
    Process,
}

impl Isolation {
    /// The name used in the config file, flags and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in-process" => Ok(Isolation::InProcess),
            "process" => Ok(Isolation::Process),
            other => Err(format!(
                "unknown isolation \"{other}\": use \"in-process\" or \"process\""
            )),
        }
    }
}

/// What the operator set for one plugin (the config file's
/// `[plugin.NAME]` table); `None` takes the host-wide value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginPolicy {
    /// Where its code runs.
    pub isolation: Option<Isolation>,
    /// The longest one of its validations may take.
    pub validation_timeout: Option<Duration>,
    /// The most validations each of its providers may have in flight.
    pub max_in_flight: Option<usize>,
    /// The most validations all its providers together may have in flight
    /// (none: only each provider's bound). It also keeps the plugin within
    /// its vendor's own limits on concurrent requests.
    pub max_concurrent: Option<usize>,
    /// The hosts it may call through the host's HTTP capability
    /// ([`crate::EgressPattern`]s), instead of those its providers
    /// declare. Only a grant that names a host exactly opens a loopback,
    /// private or metadata address. `None`: the declarations apply.
    pub egress: Option<Vec<String>>,
}

/// How worker processes (plugins with [`Isolation::Process`]) are run:
/// their sandbox, resource limits and restart policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The program to run as a worker; `None` runs this process's own
    /// executable, which must call [`crate::worker::run_if_worker`] first
    /// thing in `main` (the `connhost` binary does).
    pub program: Option<PathBuf>,
    /// Confine the worker (Linux): no network of its own, a read-only view
    /// of the library and the system's libraries, no `exec`, no new
    /// privileges. Off only for debugging a plugin.
    pub sandbox: bool,
    /// The worker's address space limit in bytes (`RLIMIT_AS`); `None`
    /// sets none.
    pub memory_limit: Option<u64>,
    /// The most files the worker may have open (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// The CPU seconds the worker may use in its life (`RLIMIT_CPU`);
    /// `None` sets none (a validation that spins is stopped by its
    /// timeout either way).
    pub cpu_seconds: Option<u64>,
    /// The most threads the worker may run (a pids cgroup, or
    /// `RLIMIT_NPROC` without one; it cannot fork at all). Its runtime
    /// keeps a few for itself; the rest run validations.
    pub max_threads: Option<u64>,
    /// Who workers run as when the host runs as root (`None`: `nobody`,
    /// uid and gid 65534). A host that is not root runs them as itself, in
    /// a user namespace. A user of their own (`useradd --system
    /// connhost-worker`) keeps them apart from anything else `nobody` runs.
    pub user: Option<Identity>,
    /// The size of each worker's private `/tmp`, in bytes.
    pub tmp_size: u64,
    /// Sandbox layers without which a worker refuses to load its plugin
    /// (fail closed). Empty: a missing layer is reported (in the worker's
    /// status, the page and the log) and the worker runs without it.
    pub require: Vec<Layer>,
    /// How long a worker may take from start to having loaded its plugin.
    pub start_timeout: Duration,
    /// This many crashes within [`crash_window`](Self::crash_window) park
    /// the plugin as failed until its file changes or a rescan.
    pub crash_limit: u32,
    /// See [`crash_limit`](Self::crash_limit).
    pub crash_window: Duration,
}

/// The default worker address space limit: 1 GiB.
pub const DEFAULT_WORKER_MEMORY: u64 = 1 << 30;

/// The default limit on a worker's open files.
pub const DEFAULT_WORKER_OPEN_FILES: u64 = 256;

/// The default bound on a worker's threads.
pub const DEFAULT_WORKER_THREADS: u64 = 256;

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            program: None,
            sandbox: true,
            memory_limit: Some(DEFAULT_WORKER_MEMORY),
            open_files: Some(DEFAULT_WORKER_OPEN_FILES),
            cpu_seconds: None,
            max_threads: Some(DEFAULT_WORKER_THREADS),
            user: None,
            tmp_size: connhost_sandbox::DEFAULT_TMP_SIZE,
            require: Vec::new(),
            start_timeout: Duration::from_secs(10),
            crash_limit: 5,
            crash_window: Duration::from_secs(60),
        }
    }
}

/// How to assemble a [`crate::Connhost`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostConfig {
    /// The folder to load plugins from; `None` loads none.
    pub plugins_dir: Option<PathBuf>,
    /// Register experimental-only built-in providers too.
    pub experimental: bool,
    /// Register the providers compiled into the binary.
    pub builtins: bool,
    /// The longest a provider may take to validate.
    pub validation_timeout: Duration,
    /// The most validations one provider may have in flight (counted until
    /// the thread running each is free again, even past its timeout);
    /// beyond it the provider answers [`crate::Verdict::Busy`] at once.
    pub max_in_flight: usize,
    /// The largest plugin file loaded, in bytes: a larger file is refused
    /// from its metadata alone, before anything is copied or read.
    pub max_plugin_size: u64,
    /// Per-plugin settings (plugin name -> key -> value); the built-in
    /// providers' scope is `"builtin"`.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
    /// The folder plugin files are copied into before they are loaded
    /// `None`: each catalog creates a folder of
    /// its own, `<temp dir>/connhost-<pid>-<16 random hex digits>` (new,
    /// mode 0700), and removes it when it is dropped. A folder named here
    /// is created if missing (mode 0700, its missing parents too) and must
    /// be the host's alone: a real folder, not a symbolic link, owned by
    /// the host's effective user and writable by no one else, under
    /// folders owned by that user or root that no one else may write
    /// unless their sticky bit is set. Otherwise it is refused
    /// ([`crate::trust::check_config`] says why; a catalog reports it and
    /// loads nothing). The owner and mode checks are off with
    /// `trust.check_permissions = false`. It is the caller's to clean.
    pub cache_dir: Option<PathBuf>,
    /// Where plugins run unless their own policy says otherwise.
    pub isolation: Isolation,
    /// Per-plugin policy (plugin name -> policy). Names match with `-` and
    /// `_` taken as equal, as cargo names a crate's library file.
    pub plugins: BTreeMap<String, PluginPolicy>,
    /// How isolated plugins' worker processes run.
    pub worker: WorkerConfig,
    /// Which plugin files may load: permission checks, trusted signing
    /// keys, the lock file.
    pub trust: TrustConfig,
    /// Bounds on the HTTP the host performs for each plugin.
    pub http: HttpLimits,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            plugins_dir: None,
            experimental: false,
            builtins: true,
            validation_timeout: DEFAULT_VALIDATION_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_plugin_size: DEFAULT_MAX_PLUGIN_SIZE,
            settings: BTreeMap::new(),
            cache_dir: None,
            isolation: Isolation::default(),
            plugins: BTreeMap::new(),
            worker: WorkerConfig::default(),
            trust: TrustConfig::default(),
            http: HttpLimits::default(),
        }
    }
}

setters!(PluginPolicy {
    /// Sets [`isolation`](Self::isolation).
    with_isolation: isolation: Isolation => Some;
    /// Sets [`validation_timeout`](Self::validation_timeout).
    with_validation_timeout: validation_timeout: Duration => Some;
    /// Sets [`max_in_flight`](Self::max_in_flight).
    with_max_in_flight: max_in_flight: usize => Some;
    /// Sets [`max_concurrent`](Self::max_concurrent).
    with_max_concurrent: max_concurrent: usize => Some;
    /// Sets [`egress`](Self::egress), the operator's grant.
    with_egress: egress: Vec<String> => Some;
});

setters!(WorkerConfig {
    /// Sets [`program`](Self::program).
    with_program: program: PathBuf => Some;
    /// Sets [`sandbox`](Self::sandbox).
    with_sandbox: sandbox: bool => |v| v;
    /// Sets [`memory_limit`](Self::memory_limit).
    with_memory_limit: memory_limit: Option<u64> => |v| v;
    /// Sets [`open_files`](Self::open_files).
    with_open_files: open_files: Option<u64> => |v| v;
    /// Sets [`cpu_seconds`](Self::cpu_seconds).
    with_cpu_seconds: cpu_seconds: Option<u64> => |v| v;
    /// Sets [`max_threads`](Self::max_threads).
    with_max_threads: max_threads: Option<u64> => |v| v;
    /// Sets [`user`](Self::user).
    with_user: user: Identity => Some;
    /// Sets [`tmp_size`](Self::tmp_size).
    with_tmp_size: tmp_size: u64 => |v| v;
    /// Sets [`require`](Self::require).
    with_require: require: Vec<Layer> => |v| v;
    /// Sets [`start_timeout`](Self::start_timeout).
    with_start_timeout: start_timeout: Duration => |v| v;
    /// Sets [`crash_limit`](Self::crash_limit).
    with_crash_limit: crash_limit: u32 => |v| v;
    /// Sets [`crash_window`](Self::crash_window).
    with_crash_window: crash_window: Duration => |v| v;
});

setters!(HostConfig {
    /// Sets [`experimental`](Self::experimental).
    with_experimental: experimental: bool => |v| v;
    /// Sets [`builtins`](Self::builtins).
    with_builtins: builtins: bool => |v| v;
    /// Sets [`validation_timeout`](Self::validation_timeout).
    with_validation_timeout: validation_timeout: Duration => |v| v;
    /// Sets [`max_in_flight`](Self::max_in_flight).
    with_max_in_flight: max_in_flight: usize => |v| v;
    /// Sets [`max_plugin_size`](Self::max_plugin_size).
    with_max_plugin_size: max_plugin_size: u64 => |v| v;
    /// Sets [`cache_dir`](Self::cache_dir).
    with_cache_dir: cache_dir: PathBuf => Some;
    /// Sets [`isolation`](Self::isolation).
    with_isolation: isolation: Isolation => |v| v;
    /// Sets [`worker`](Self::worker).
    with_worker: worker: WorkerConfig => |v| v;
    /// Sets [`trust`](Self::trust).
    with_trust: trust: TrustConfig => |v| v;
    /// Sets [`http`](Self::http).
    with_http: http: HttpLimits => |v| v;
});

impl HostConfig {
    /// Adds the setting `key` = `value` for the plugin `plugin`
    /// ([`settings`](Self::settings); `"builtin"` for the compiled-in
    /// providers).
    #[must_use]
    pub fn with_setting(
        mut self,
        plugin: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.settings
            .entry(plugin.into())
            .or_default()
            .insert(key.into(), value.into());
        self
    }

    /// Sets the operator's policy for the plugin `plugin`
    /// ([`plugins`](Self::plugins)).
    #[must_use]
    pub fn with_plugin(mut self, plugin: impl Into<String>, policy: PluginPolicy) -> Self {
        self.plugins.insert(plugin.into(), policy);
        self
    }

    /// The operator's policy for the plugin `name` (empty when there is
    /// none); `-` and `_` in names are taken as equal.
    pub fn policy_for(&self, name: &str) -> PluginPolicy {
        names::find(&self.plugins, name)
            .cloned()
            .unwrap_or_default()
    }

    /// Where the plugin `name` runs.
    pub fn isolation_for(&self, name: &str) -> Isolation {
        self.policy_for(name).isolation.unwrap_or(self.isolation)
    }

    /// Where the plugin in the file `path` runs, decided by the file's
    /// name before it is opened: `libfoo_bar.so` is plugin `foo-bar`.
    pub fn isolation_of_file(&self, path: &std::path::Path) -> Isolation {
        self.isolation_for(&names::of_file(path))
    }

    /// The settings of the plugin `name` (an exact match, else one with
    /// `-` and `_` taken as equal).
    pub fn settings_of(&self, name: &str) -> BTreeMap<String, String> {
        names::find(&self.settings, name)
            .cloned()
            .unwrap_or_default()
    }

    /// The operator's egress grant for the plugin `name`, if there is one.
    pub fn egress_of(&self, name: &str) -> Option<Vec<String>> {
        self.policy_for(name).egress
    }

    /// The default configuration, loading plugins from `dir`.
    pub fn with_plugins_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            plugins_dir: Some(dir.into()),
            ..Self::default()
        }
    }
}
