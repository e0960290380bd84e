//! Loading one plugin library into this process: from a checked file to a
//! [`PluginLibrary`] whose providers are ready to register.
//!
//! Each file goes through: check it from a non-blocking descriptor (a
//! regular file, under the size limit, a complete shared library by its
//! headers), open it, find connhost's entry point, check the plugin API
//! version and the layout of every type that crosses the boundary, call the
//! plugin's `init` with the host's capabilities, and ask for its providers.
//! A failure at any step is a [`LoadFailure`] for that file. Which files
//! are loaded, from which copy, and in what order their providers are
//! registered is the catalog's business (`crate::catalog`).

mod library;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use connhost_plugin_api::abi::PluginModuleRef;
use connhost_plugin_api::ProviderDescriptor;
use serde::Serialize;

pub use library::DEFAULT_MAX_PLUGIN_SIZE;
pub(crate) use library::{check_opened, is_transient, open_regular, OpenError};

use crate::backend::{Backend, InProcess, Isolated};
use crate::capabilities;
use crate::config::{Isolation, WorkerConfig};
use crate::egress::Egress;
use crate::registry::{Origin, RegisteredProvider};
use crate::report::{FailureKind, LoadFailure};
use crate::worker::{Supervisor, WorkerStatus};

/// Settings for loading plugins.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Per-plugin configuration (plugin name -> key -> value), read by
    /// providers through `connhost_plugin_api::config`. Environment
    /// variables `CONNHOST_PLUGIN_<PLUGIN>_<KEY>` fill in missing keys.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
    /// The largest plugin file loaded, in bytes: a larger file is refused
    /// from its metadata alone, before anything is copied or read.
    pub max_plugin_size: u64,
    /// Where plugins run unless [`isolation_by_plugin`](Self::isolation_by_plugin)
    /// names them.
    pub isolation: Isolation,
    /// Where each named plugin runs (names with `-` and `_` as equal). The
    /// choice is made before the file is loaded, so a plugin is known here
    /// by its file's name: `libfoo_bar.so` is plugin `foo-bar`.
    pub isolation_by_plugin: BTreeMap<String, Isolation>,
    /// How isolated plugins' workers run.
    pub worker: WorkerConfig,
    /// The operator's egress grants (plugin name -> [`crate::egress`]
    /// patterns), which replace the hosts a plugin's providers declare.
    /// Fixed when a library is initialised, like its settings.
    pub egress_by_plugin: BTreeMap<String, Vec<String>>,
    /// Bounds on the HTTP the host performs for each plugin.
    pub http: crate::capabilities::HttpLimits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            settings: BTreeMap::new(),
            max_plugin_size: DEFAULT_MAX_PLUGIN_SIZE,
            isolation: Isolation::default(),
            isolation_by_plugin: BTreeMap::new(),
            worker: WorkerConfig::default(),
            egress_by_plugin: BTreeMap::new(),
            http: crate::capabilities::HttpLimits::default(),
        }
    }
}

impl LoadOptions {
    /// The settings of the plugin `name` (`-` and `_` taken as equal, as
    /// in policies; an exact match wins).
    pub fn settings_of(&self, name: &str) -> BTreeMap<String, String> {
        crate::config::settings_in(&self.settings, name)
    }

    /// The operator's egress grant for the plugin `name` (`-` and `_`
    /// taken as equal), if there is one.
    pub fn egress_of(&self, name: &str) -> Option<Vec<String>> {
        let wanted = name.replace('-', "_");
        self.egress_by_plugin
            .iter()
            .find(|(key, _)| key.replace('-', "_") == wanted)
            .map(|(_, hosts)| hosts.clone())
    }

    /// Where the plugin in the file `path` runs, by the file's name.
    pub fn isolation_of(&self, path: &Path) -> Isolation {
        let key = plugin_key(path);
        self.isolation_by_plugin
            .iter()
            .find(|(name, _)| name.replace('-', "_") == key)
            .map_or(self.isolation, |(_, isolation)| *isolation)
    }
}

/// The plugin name a library file stands for, as cargo names files:
/// `libfoo_bar.so` -> `foo_bar` (`-` written as `_`).
fn plugin_key(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = if cfg!(windows) {
        stem.as_str()
    } else {
        stem.strip_prefix("lib").unwrap_or(&stem)
    };
    stem.replace('-', "_")
}

/// Where a library's code runs.
#[derive(Clone)]
enum Code {
    /// Loaded into this process.
    InProcess(PluginModuleRef),
    /// Loaded into a worker process of its own.
    Isolated(Arc<Supervisor>),
}

/// A library after `init` and `providers`: cached per library, since the
/// same file (or inode) opened twice is the same object in the process.
#[derive(Clone)]
struct Initialized {
    code: Code,
    name: String,
    version: String,
    api_version: String,
    providers: Vec<Result<(u32, ProviderDescriptor), String>>,
    /// The settings `init` ran with; they stay in effect for the process.
    settings: BTreeMap<String, String>,
    /// What its providers declare and its operator granted, in force for
    /// its HTTP (as its settings, fixed when it was initialised).
    egress: Egress,
}

/// A library's `init` outcome, kept for the life of the process.
type InitOutcome = Result<Initialized, (FailureKind, String)>;

static INITIALIZED: Mutex<BTreeMap<usize, Arc<InitOutcome>>> = Mutex::new(BTreeMap::new());

fn initialize(path: &Path, options: &LoadOptions) -> Result<Initialized, LoadFailure> {
    let opened = library::open(path, options.max_plugin_size)?;
    let mut cache = INITIALIZED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache
        .entry(opened.identity)
        .or_insert_with(|| Arc::new(run_init(opened.module, opened.api_version, options)))
        .clone();
    drop(cache);
    match &*entry {
        Ok(init) => {
            let wanted = options.settings_of(&init.name);
            if wanted != init.settings || options.egress_of(&init.name) != init.egress.granted {
                tracing::warn!(
                    path = %path.display(),
                    plugin = %init.name,
                    "this library is already loaded in this process with other settings; \
                     those (and its egress grants) stay in effect (a library is initialised once)"
                );
            }
            Ok(init.clone())
        }
        Err((kind, reason)) => Err(LoadFailure::new(path, *kind, reason.clone())),
    }
}

fn run_init(module: PluginModuleRef, api_version: &str, options: &LoadOptions) -> InitOutcome {
    let name = module.plugin_name().as_str().to_owned();
    let version = module.plugin_version().as_str().to_owned();
    let settings = options.settings_of(&name);
    let token = capabilities::register_plugin(&name, settings.clone());
    capabilities::set_http_limits(token, options.http);
    let mut egress = Egress {
        declared: Vec::new(),
        granted: options.egress_of(&name),
    };
    capabilities::set_egress(token, &name, &egress);
    if let Err(message) = (module.init())(capabilities::context_for(token)).into_result() {
        return Err((
            FailureKind::InitFailed,
            format!("plugin {name} {version} failed to initialise: {message}"),
        ));
    }
    let providers: Vec<_> = (module.providers())()
        .into_iter()
        .map(|entry| {
            let entry = entry.into_result().map_err(|m| m.into_string())?;
            describe(entry.handle, entry.descriptor_json.as_str())
        })
        .collect();
    egress.declared = declared_egress(&providers);
    capabilities::set_egress(token, &name, &egress);
    Ok(Initialized {
        code: Code::InProcess(module),
        name,
        version,
        api_version: api_version.to_owned(),
        providers,
        settings,
        egress,
    })
}

/// Opens the library at `load_path` with every check of
/// [`PluginLibrary::open_in_process`] but without initialising it, and
/// returns its plugin's name. Failures name `path`. (A worker says whose
/// plugin it holds before the host hands it that plugin's settings.)
pub(crate) fn plugin_name(
    load_path: &Path,
    path: &Path,
    max_plugin_size: u64,
) -> Result<String, LoadFailure> {
    library::open(load_path, max_plugin_size)
        .map(|opened| opened.module.plugin_name().as_str().to_owned())
        .map_err(|failure| reported_as(failure, load_path, path))
}

/// A failure of the copy at `load_path` as the operator knows it: of the
/// file `path`, and naming it wherever its text named the copy (the system
/// loader's message names the file it was given).
fn reported_as(mut failure: LoadFailure, load_path: &Path, path: &Path) -> LoadFailure {
    if load_path != path {
        let (copy, file) = (load_path.display().to_string(), path.display().to_string());
        failure.reason = failure.reason.replace(&copy, &file);
        if let Some(detail) = &mut failure.detail {
            *detail = detail.replace(&copy, &file);
        }
    }
    failure.path = path.to_owned();
    failure
}

/// The hosts a plugin's providers declare, once each.
fn declared_egress(providers: &[Result<(u32, ProviderDescriptor), String>]) -> Vec<String> {
    Egress::declared_by(
        providers
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(_, d)| &d.egress)),
    )
}

/// A provider's handle and description from its JSON, checked.
fn describe(handle: u32, json: &str) -> Result<(u32, ProviderDescriptor), String> {
    let descriptor: ProviderDescriptor = serde_json::from_str(json)
        .map_err(|e| format!("a provider returned a description the host cannot read: {e}"))?;
    let problems = descriptor.problems();
    if !problems.is_empty() {
        return Err(format!(
            "provider \"{}\" has an unusable description: {}",
            descriptor.provider_id,
            problems.join("; ")
        ));
    }
    Ok((handle, descriptor))
}

/// A plugin library that opened, passed every check and initialised, with
/// its providers' descriptions: ready to be registered (any number of
/// times, into any number of registries). The library itself is never
/// unloaded.
#[derive(Clone)]
pub struct PluginLibrary {
    init: Initialized,
    path: PathBuf,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("plugin", &self.init.name)
            .field("version", &self.init.version)
            .finish_non_exhaustive()
    }
}

impl PluginLibrary {
    /// Opens, checks and initialises the library at `load_path`, reporting
    /// it (in origins and failures) as `path`, in this process or in a
    /// worker of its own as `options` say for `path`
    /// ([`LoadOptions::isolation_of`]). The two paths differ when the host
    /// loads a private copy of a watched file: a failure then names `path`
    /// wherever its text named the copy (the system loader's message names
    /// the file it was given).
    pub fn open(load_path: &Path, path: &Path, options: &LoadOptions) -> Result<Self, LoadFailure> {
        match options.isolation_of(path) {
            Isolation::InProcess => Self::open_in_process(load_path, path, options),
            Isolation::Process => Self::open_isolated(load_path, path, options),
        }
    }

    /// Starts a worker process that loads the library at `load_path` with
    /// the same checks as [`open_in_process`](Self::open_in_process), in
    /// its sandbox, and waits until it has (at most
    /// [`WorkerConfig::start_timeout`]). This process never maps the file;
    /// it only checks that it is a complete library first.
    pub fn open_isolated(
        load_path: &Path,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<Self, LoadFailure> {
        library::check_file(load_path, options.max_plugin_size)
            .map_err(|failure| reported_as(failure, load_path, path))?;
        let program = match options.worker.program.clone() {
            Some(program) => program,
            None => std::env::current_exe().map_err(|e| {
                LoadFailure::new(
                    path,
                    FailureKind::WorkerFailed,
                    format!("cannot find this program to start a worker process: {e}."),
                )
            })?,
        };
        let worker = &options.worker;
        // The worker gets the copy as a descriptor: its restarts need the
        // bytes for as long as it lives, whatever happens to the copy's
        // name (a one-shot catalog removes its cache when dropped).
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
        let token = capabilities::register_plugin(&plugin_key(path), BTreeMap::new());
        capabilities::set_http_limits(token, options.http);
        let spec = crate::worker::Spec {
            program,
            egress_token: token,
            library: Arc::new(library),
            settings: options.settings.clone(),
            hello: crate::worker::protocol::Hello {
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
                max_plugin_size: options.max_plugin_size,
                max_log_level: capabilities::max_level_code(),
            },
            config: worker.clone(),
        };
        let (supervisor, ready) = Supervisor::start(spec)?;
        if !ready.sandbox.unavailable.is_empty() {
            tracing::warn!(target: crate::report::LOAD_LOG_TARGET, path = %path.display(), plugin = %ready.name, unavailable = ?ready.sandbox.unavailable, "the worker runs without part of its sandbox");
        }
        let settings = options.settings_of(&ready.name);
        let providers: Vec<_> = ready
            .providers
            .into_iter()
            .map(|provider| provider.and_then(|(handle, json)| describe(handle, &json)))
            .collect();
        let egress = Egress {
            declared: declared_egress(&providers),
            granted: options.egress_of(&ready.name),
        };
        capabilities::set_egress(token, &ready.name, &egress);
        Ok(Self {
            init: Initialized {
                code: Code::Isolated(Arc::new(supervisor)),
                name: ready.name,
                version: ready.version,
                api_version: ready.api_version,
                providers,
                settings,
                egress,
            },
            path: path.to_owned(),
        })
    }

    /// [`open`](Self::open), in this process whatever the options say.
    pub fn open_in_process(
        load_path: &Path,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<Self, LoadFailure> {
        initialize(load_path, options)
            .map(|init| Self {
                init,
                path: path.to_owned(),
            })
            .map_err(|failure| reported_as(failure, load_path, path))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.init.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.init.version
    }

    /// The file it is reported as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where its code runs.
    pub fn isolation(&self) -> Isolation {
        match self.init.code {
            Code::InProcess(_) => Isolation::InProcess,
            Code::Isolated(_) => Isolation::Process,
        }
    }

    /// The hosts its providers declare and its operator's grant, in force
    /// for its HTTP.
    pub fn egress(&self) -> &Egress {
        &self.init.egress
    }

    /// Its worker's status, when it is isolated.
    pub fn worker_status(&self) -> Option<WorkerStatus> {
        match &self.init.code {
            Code::InProcess(_) => None,
            Code::Isolated(supervisor) => Some(supervisor.status()),
        }
    }

    /// Lets an isolated plugin parked after a crash loop start again.
    pub(crate) fn unpark(&self) {
        if let Code::Isolated(supervisor) = &self.init.code {
            supervisor.unpark();
        }
    }

    /// The module, when the library is loaded into this process.
    pub(crate) fn module(&self) -> Option<PluginModuleRef> {
        match self.init.code {
            Code::InProcess(module) => Some(module),
            Code::Isolated(_) => None,
        }
    }

    /// Its providers as a worker reports them to its host.
    pub(crate) fn wire_providers(&self) -> Vec<crate::worker::protocol::WireProvider> {
        self.init
            .providers
            .iter()
            .map(|provider| {
                provider
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|(handle, descriptor)| {
                        serde_json::to_string(descriptor)
                            .map(|json| (*handle, json))
                            .map_err(|e| format!("a provider's description could not be sent: {e}"))
                    })
            })
            .collect()
    }

    /// The `connhost-plugin-api` version it was built against.
    pub fn api_version(&self) -> &str {
        &self.init.api_version
    }

    /// The ids of the providers it offers (those that described
    /// themselves), in the order the plugin lists them.
    pub fn provider_ids(&self) -> impl Iterator<Item = &str> {
        self.init
            .providers
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(_, d)| d.provider_id.as_str()))
    }

    /// Its providers, in the order the plugin lists them: each an entry
    /// ready to register (origin: this plugin and [`path`](Self::path);
    /// backend: in process), or the failure of a provider that could not
    /// describe itself.
    pub(crate) fn providers(&self) -> Vec<Result<RegisteredProvider, LoadFailure>> {
        let init = &self.init;
        let origin = Origin::Plugin {
            plugin: init.name.clone(),
            version: init.version.clone(),
            path: self.path.clone(),
        };
        init.providers
            .iter()
            .map(|provider| match provider {
                Err(message) => Err(LoadFailure::new(
                    &self.path,
                    FailureKind::ProviderFault,
                    format!(
                        "plugin {} {}: {message}; its other providers still load.",
                        init.name, init.version
                    ),
                )),
                Ok((handle, descriptor)) => Ok(RegisteredProvider::new(
                    descriptor.clone(),
                    false,
                    origin.clone(),
                    match &init.code {
                        Code::InProcess(module) => {
                            Backend::InProcess(InProcess::new(*module, *handle))
                        }
                        Code::Isolated(supervisor) => {
                            Backend::Isolated(Isolated::new(supervisor.clone(), *handle))
                        }
                    },
                )),
            })
            .collect()
    }
}

/// Whether a path has this platform's shared library extension.
pub fn is_library_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == std::env::consts::DLL_EXTENSION)
}

/// The entries of `dir` named like libraries, sorted by name (which decides
/// who wins an id conflict between two plugins: the first file). Entries of
/// every type are listed, so that a directory, a FIFO or a broken link
/// named like a library is reported rather than silently skipped; nothing
/// is opened here. An error while listing fails the whole listing.
pub fn library_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_library_path(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Why a plugins folder could not be listed.
pub(crate) fn missing_dir_reason(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::NotFound {
        "the plugins folder does not exist; create it, or point --plugins (CONNHOST_PLUGINS) at the folder that holds your plugins.".to_owned()
    } else {
        format!("the plugins folder could not be read: {error}.")
    }
}

/// What `connhost inspect` shows about a file.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Whether this host can load it.
    pub loadable: bool,
    /// The plugin's name, when it got that far.
    pub plugin: Option<String>,
    /// The plugin's version.
    pub version: Option<String>,
    /// The plugin API version it was built against.
    pub api_version: Option<String>,
    /// The providers it offers, as they describe themselves.
    pub providers: Vec<ProviderDescriptor>,
    /// Providers that failed to describe themselves.
    pub provider_errors: Vec<String>,
    /// Why it cannot be loaded.
    pub failure: Option<LoadFailure>,
    /// Long detail (abi_stable's full layout difference).
    pub detail: Option<String>,
    /// What the trust gate checked (its digest, signature, lock), when it
    /// admitted the file.
    pub trust: Option<crate::trust::PluginTrust>,
    /// The sandbox measures of the worker it was loaded in.
    pub sandbox: Vec<String>,
    /// The plugin API version this host speaks.
    pub host_api_version: &'static str,
}

/// Examines a plugin file without registering anything, and without
/// running any of its code in this process: the file passes the same
/// trust gate as a file in the plugins folder (who may write it, its
/// signature against the trusted keys, its digest under `--locked`; the
/// same refusals, worded the same), is copied into a private cache folder
/// of its own (so inspecting it does not initialise the instance a later
/// real load of the same file would get), and is loaded in a sandboxed
/// worker process ([`crate::worker`]), whatever `config.isolation` says.
/// The program must start workers: it calls
/// [`crate::worker::run_if_worker`] first thing in `main` (the `connhost`
/// binary does).
pub fn inspect(path: &Path, config: &crate::HostConfig) -> Inspection {
    let mut inspection = Inspection {
        path: path.to_owned(),
        loadable: false,
        plugin: None,
        version: None,
        api_version: None,
        providers: Vec::new(),
        provider_errors: Vec::new(),
        failure: None,
        detail: None,
        trust: None,
        sandbox: Vec::new(),
        host_api_version: connhost_plugin_api::PLUGIN_API_VERSION,
    };
    let cache = match crate::cache_dir::create_default() {
        Ok(cache) => cache,
        Err(e) => {
            inspection.failure = Some(LoadFailure::new(
                path,
                FailureKind::CacheFailed,
                format!(
                    "could not make a private folder to copy it into in {}: {e}. Nothing is wrong with the file.",
                    std::env::temp_dir().display()
                ),
            ));
            return inspection;
        }
    };
    let admitted = admit_for_inspection(path, config, &cache);
    let (trust, copy) = match admitted {
        Ok(admitted) => admitted,
        Err(failure) => {
            crate::cache_dir::clean(&cache);
            inspection.detail = failure.detail.clone();
            inspection.failure = Some(failure);
            return inspection;
        }
    };
    inspection.trust = Some(trust);
    let mut options = config.load_options();
    options.isolation = Isolation::Process;
    let opened = PluginLibrary::open_isolated(&copy, path, &options);
    // The worker holds its own descriptor of the copy.
    crate::cache_dir::clean(&cache);
    match opened {
        Err(failure) => {
            inspection.detail = failure.detail.clone();
            inspection.failure = Some(failure);
        }
        Ok(library) => {
            inspection.loadable = true;
            inspection.plugin = Some(library.init.name.clone());
            inspection.version = Some(library.init.version.clone());
            inspection.api_version = Some(library.init.api_version.clone());
            inspection.sandbox = library
                .worker_status()
                .map(|status| status.sandbox)
                .unwrap_or_default();
            for provider in &library.init.providers {
                match provider {
                    Ok((_, descriptor)) => inspection.providers.push(descriptor.clone()),
                    Err(message) => inspection.provider_errors.push(message.clone()),
                }
            }
        }
    }
    inspection
}

/// The trust gate's checks on `path` for `inspect`, in the catalog's order
/// (permissions from the opened descriptor, the signature's presence, the
/// headers, then the signature and the lock digest on the bytes copied into
/// `cache`): what was admitted, and the copy.
fn admit_for_inspection(
    path: &Path,
    config: &crate::HostConfig,
    cache: &Path,
) -> Result<(crate::trust::PluginTrust, PathBuf), LoadFailure> {
    let folder = config
        .plugins_dir
        .clone()
        .or_else(|| path.parent().map(Path::to_owned))
        .unwrap_or_default();
    let gate = crate::trust::Gate::new(&config.trust, &folder)
        .map_err(|e| LoadFailure::new(path, FailureKind::InsecurePermissions, e.to_string()))?;
    let mut file = library::open_regular(path).map_err(|error| match error {
        OpenError::Failed(failure) => failure,
        OpenError::Vanished => LoadFailure::new(
            path,
            FailureKind::Unreadable,
            "the file is gone.".to_owned(),
        ),
        OpenError::Transient(e) => LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not open the file: {e}."),
        ),
    })?;
    let metadata = file.metadata().map_err(|e| {
        LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not read the file: {e}."),
        )
    })?;
    gate.check_file(path, &metadata)?;
    let signed = gate.signature_of(path)?;
    library::check_opened(path, &file, config.max_plugin_size)?;
    let mut admission = crate::trust::Admission::new(signed.as_ref());
    let (_, copy) = crate::cache_dir::copy_into_observed(cache, &mut file, &mut |bytes| {
        admission.update(bytes)
    })
    .map_err(|e| {
        LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not copy the file: {e}."),
        )
    })?;
    let trust = admission.finish(&gate, path)?;
    Ok((trust, copy))
}
