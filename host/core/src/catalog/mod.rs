//! The catalog: the one place a plugin file becomes a served provider.
//!
//! A [`Catalog`] holds the compiled-in providers (the built-ins `inventory`
//! collected, and any an embedder adds in code) and a plugins folder's
//! libraries (`folder.rs`: checked, copied, loaded, kept in step with the
//! folder), and assembles them into one provider set, with the report of
//! what loaded and what did not. The CLI and `Connhost::start` scan the
//! folder once ([`Catalog::scan_now`]); `connhost serve`'s hot reload keeps
//! one catalog and rescans it ([`crate::reload`]). Both get the same set
//! from the same files.
//!
//! **Where a plugin runs** is decided per file, by its name, before it is
//! opened (`placement.rs`): in this process (the loader), or in a
//! sandboxed worker the catalog starts. The catalog owns those workers: a
//! plugin none of whose providers registered has its worker stopped.
//!
//! **One conflict order.** Compiled-in providers come first (the
//! built-ins, then the embedder's, which replace a built-in of the same id:
//! a deliberate choice in code). Then each plugin file's providers, in the
//! order the files arrived: the files of one scan by name, a file added
//! later after every file already there, a replaced file in its old place.
//! The first holder of an id keeps it; a later claimant is refused with a
//! [`FailureKind::Conflict`] naming both origins. So a dropped-in file can
//! never take over an id that is already served. The report lists what
//! failed in one order too, whichever way the folder was read: the
//! compiled-in providers' failures, then the plugins folder's own (it
//! cannot be listed), then the plugin files' failures file by file in
//! name order, each file's in the order they were found (its conflicts
//! and provider faults, or why it did not load).
//!
//! **One copy rule.** Every plugin file is loaded from a private copy made
//! from a checked descriptor ([`crate::cache_dir`]), never from the watched
//! path, in a cache folder that is the host's alone: one the catalog
//! creates for itself, or a named one that is refused (reported as the
//! cache folder's [`FailureKind::CacheFailed`], nothing loaded) unless no
//! one but the host's user can write it.

mod admission;
mod cache;
mod fingerprint;
mod folder;
mod inspect;
mod listing;
mod placement;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use connhost_plugin_api::ConnectionProvider;

pub use folder::RescanOutcome;
pub(crate) use folder::{COMPLETION_GRACE, SETTLE};
pub use inspect::{inspect, Inspection};

use crate::cache_dir::LoadedCopies;
use crate::call::Limits;
use crate::model::config::HostConfig;
use crate::model::report::{log_failures, FailureKind, LoadFailure, LoadReport, LoadedPlugin};
use crate::model::trust::PluginTrust;
use crate::plugin::Plugin;
use crate::registry::{declared_by_compiled_in, OwnLimits, ProviderRegistry, RegisteredProvider};
use crate::state::HostState;
use cache::CacheChoice;
use folder::Folder;

/// Builds the provider set from the compiled-in providers and a plugins
/// folder, in one conflict order: compiled-in providers first, then each
/// plugin file's in the order the files arrived (the files of one scan by
/// name); the first holder of an id keeps it, and a later claimant is a
/// [`FailureKind::Conflict`]. Every file is loaded from a private copy in
/// a cache folder that is the host's alone.
pub struct Catalog {
    limits: Limits,
    /// The configuration it was made with: its per-plugin policies'
    /// bounds apply to their plugin's providers.
    config: HostConfig,
    compiled_in: Vec<Arc<RegisteredProvider>>,
    compiled_in_failures: Vec<LoadFailure>,
    folder: Option<Folder>,
    /// The lock file, when `--locked` enforces it (hot reload watches it).
    lock_file: Option<PathBuf>,
    /// The set as it stands (rebuilt when something changed), with the
    /// copies its plugins were loaded from.
    current: (Arc<ProviderRegistry>, Arc<LoadReport>, Arc<LoadedCopies>),
    /// What the hosts it serves own: bounds, counts, its compiled-in
    /// providers' slot, its workers' runtime.
    state: Arc<HostState>,
}

/// A catalog's provider set as it stands, with everything a
/// [`crate::Connhost`] serving it needs.
pub(crate) struct Served {
    pub(crate) registry: Arc<ProviderRegistry>,
    pub(crate) report: Arc<LoadReport>,
    /// The copies its plugins were loaded from (for their digests).
    pub(crate) copies: Arc<LoadedCopies>,
    pub(crate) limits: Limits,
    pub(crate) state: Arc<HostState>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("compiled_in", &self.compiled_in.len())
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// A catalog for `config`: its compiled-in providers registered (the
    /// built-ins unless `config.builtins` is false, with their settings),
    /// its plugins folder not read yet ([`rescan`](Self::rescan) or
    /// [`scan_now`](Self::scan_now) reads it). Without `config.cache_dir`
    /// the catalog copies plugin files into a folder of its own, created
    /// fresh here (`<temp dir>/connhost-<pid>-<random>`, mode 0700) and
    /// removed when the catalog is dropped; folders that dead processes
    /// left behind are swept first. A named `config.cache_dir` is created
    /// if missing and checked at every scan: one that others could write
    /// is refused, reported, and nothing is loaded
    /// ([`crate::check_config`] says so before a catalog is built).
    pub fn new(config: &HostConfig) -> Self {
        let state = HostState::new(config);
        let (compiled_in, compiled_in_failures) = if config.builtins {
            crate::builtin::compiled_in(config.experimental)
        } else {
            (Vec::new(), Vec::new())
        };
        for failure in &compiled_in_failures {
            tracing::error!("{failure}");
        }
        let folder = config.plugins_dir.clone().map(|dir| {
            let cache = match &config.cache_dir {
                Some(given) => CacheChoice::Given(given.clone()),
                None => {
                    // Folders left by processes that were killed before
                    // they could remove theirs.
                    for swept in crate::cache_dir::sweep_stale_defaults() {
                        tracing::info!(folder = %swept.display(), "removed a stale plugin cache");
                    }
                    // If none can be created now, each copy tries again,
                    // and a file that cannot be copied says why.
                    CacheChoice::Own(crate::cache_dir::create_default().ok())
                }
            };
            Folder::new(dir, cache, config.clone(), state.clone())
        });
        let mut catalog = Self {
            limits: Limits {
                timeout: config.validation_timeout,
                max_in_flight: config.max_in_flight.max(1),
                plugin_max_concurrent: None,
            },
            config: config.clone(),
            compiled_in,
            compiled_in_failures,
            folder,
            lock_file: config
                .trust
                .locked
                .then(|| config.trust.lock_path(config.plugins_dir.as_deref()))
                .flatten(),
            current: Default::default(),
            state,
        };
        catalog.declare_compiled_in();
        catalog.rebuild();
        catalog
    }

    /// Puts in force the hosts its compiled-in providers declare (under
    /// the operator's `[plugin.builtin] egress` grant), for this host's
    /// compiled-in providers only.
    fn declare_compiled_in(&self) {
        self.state.declare_builtin(declared_by_compiled_in(
            self.compiled_in.iter().map(|e| e.as_ref()),
        ));
    }

    /// Adds a provider compiled into the embedding program, after the
    /// built-ins; it replaces a built-in with the same id.
    #[must_use]
    pub fn with_provider<P: ConnectionProvider + 'static>(mut self, provider: P) -> Self {
        let entry = Arc::new(RegisteredProvider::native(Arc::new(provider), false));
        self.compiled_in.retain(|e| e.id() != entry.id());
        self.compiled_in.push(entry);
        self.declare_compiled_in();
        self.rebuild();
        self
    }

    /// The plugins folder, if the catalog has one.
    pub fn dir(&self) -> Option<&Path> {
        self.folder.as_ref().map(Folder::dir)
    }

    /// The lock file that decides what loads, under `--locked`: a change
    /// to it is a reason to rescan.
    pub fn lock_file(&self) -> Option<&Path> {
        self.lock_file.as_deref()
    }

    /// The folder plugin files are copied into before they are loaded
    /// (`None` without a plugins folder, or while the catalog's own could
    /// not be created).
    pub fn cache_dir(&self) -> Option<&Path> {
        self.folder.as_ref().and_then(Folder::cache)
    }

    /// Whether the last scan could not list the plugins folder.
    pub fn folder_failing(&self) -> bool {
        self.folder.as_ref().is_some_and(Folder::folder_failing)
    }

    /// Takes the folder as it stands, once (the CLI's and the library's
    /// load): every file is examined now, without waiting for a recent
    /// change to settle or an incomplete file to complete. Only a file
    /// seen changing while it was copied is looked at again, for at most
    /// two seconds.
    pub fn scan_now(&mut self) -> RescanOutcome {
        let deadline = Instant::now() + COMPLETION_GRACE;
        let mut total = self.scan(false);
        while total.waiting && Instant::now() < deadline {
            std::thread::sleep(SETTLE);
            let again = self.scan(false);
            total = RescanOutcome {
                changed: total.changed || again.changed,
                ..again
            };
        }
        total
    }

    /// Brings the folder's libraries in step with the folder, patiently
    /// (hot reload): a file that changed within 40 ms waits, an
    /// incomplete one gets two seconds to complete. Blocking (reads files,
    /// runs plugins' `init`): call it off the async runtime.
    pub fn rescan(&mut self) -> RescanOutcome {
        self.scan(true)
    }

    /// Lets every isolated plugin that was parked after a crash loop
    /// start a worker again (an operator's rescan asks for it).
    pub fn unpark(&self) {
        if let Some(folder) = &self.folder {
            for library in folder.libraries() {
                library.unpark();
            }
        }
    }

    fn scan(&mut self, patient: bool) -> RescanOutcome {
        let Some(folder) = self.folder.as_mut() else {
            return RescanOutcome::default();
        };
        let outcome = folder.rescan(patient);
        if outcome.changed {
            self.rebuild();
        }
        outcome
    }

    /// The provider set as it stands, with its report and the host-wide
    /// bounds on calls: what a [`crate::Connhost`] serves.
    pub(crate) fn current(&self) -> Served {
        let (registry, report, copies) = &self.current;
        Served {
            registry: registry.clone(),
            report: report.clone(),
            copies: copies.clone(),
            limits: self.limits,
            state: self.state.clone(),
        }
    }

    /// Assembles the set, in the one conflict order: compiled-in
    /// providers, then each loaded file's in arrival order; and its
    /// failures in the one failure order. A registration failure
    /// (conflict, provider fault) is logged once, when it is new.
    fn rebuild(&mut self) {
        let mut registry = ProviderRegistry::new();
        let mut copies = LoadedCopies::default();
        let mut report = LoadReport {
            failed: self.compiled_in_failures.clone(),
            ..LoadReport::default()
        };
        // Failures found while registering, logged here (the folder logs
        // the failures of files and of itself as it finds them).
        let mut registration = Vec::new();
        for entry in &self.compiled_in {
            if let Err(conflict) = registry.try_insert(entry.clone()) {
                // Two built-ins with one id: the first listed keeps it.
                registration.push(LoadFailure::new(
                    crate::builtin::BUILTIN_PATH,
                    FailureKind::Conflict,
                    format!("{conflict}."),
                ));
            }
        }
        report.failed.extend(registration.iter().cloned());
        let compiled_in = registration.len();
        if let Some(folder) = &self.folder {
            report.failed.extend(folder.folder_failure().cloned());
            for (library, trust, copy) in folder.loaded() {
                let limits = own_limits(&self.config, library.name());
                let mut trust = trust.clone();
                if trust.digest.is_empty() {
                    trust.digest = copy.known_digest().unwrap_or_default().to_owned();
                }
                copies.0.push((library.path().to_owned(), copy.clone()));
                let (loaded, failures) = register(&mut registry, library, &trust, limits);
                // The catalog owns the workers it started: one for each
                // plugin it serves, none for one it does not.
                library.keep_worker(loaded.is_some());
                report.loaded.extend(loaded);
                registration.extend(failures);
            }
            // File by file in name order; a stable sort keeps each file's
            // own failures in the order they were found.
            let mut files: Vec<LoadFailure> = registration[compiled_in..]
                .iter()
                .cloned()
                .chain(folder.file_failures().cloned())
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            report.failed.extend(files);
            report.retired = folder.retired().cloned().collect();
        }
        let before = &self.current.1.failed;
        for failure in &registration {
            if !before.contains(failure) {
                log_failures(std::slice::from_ref(failure));
            }
        }
        self.current = (Arc::new(registry), Arc::new(report), Arc::new(copies));
    }
}

impl Drop for Catalog {
    /// Removes the catalog's own cache folder (only the cache's files; the
    /// libraries stay mapped).
    fn drop(&mut self) {
        if let Some(cache) = self.folder.as_ref().and_then(Folder::own_cache) {
            crate::cache_dir::clean(cache);
        }
    }
}

/// The bounds the operator set for the plugin `name`'s providers.
fn own_limits(config: &HostConfig, name: &str) -> OwnLimits {
    let policy = config.policy_for(name);
    OwnLimits {
        timeout: policy.validation_timeout,
        max_in_flight: policy.max_in_flight,
        plugin_max_concurrent: policy.max_concurrent,
    }
}

/// Registers a library's providers, never replacing one that is there,
/// each with the bounds of its plugin's policy (`limits`).
/// Returns the plugin (if any provider registered, or it has none) and
/// every failure (providers that could not describe themselves, and
/// conflicts naming both origins).
fn register(
    registry: &mut ProviderRegistry,
    library: &Plugin,
    trust: &PluginTrust,
    limits: OwnLimits,
) -> (Option<LoadedPlugin>, Vec<LoadFailure>) {
    let path = library.path();
    let providers = library.providers();
    let offered = providers.len();
    let mut failures = Vec::new();
    let mut registered = Vec::new();
    for provider in providers {
        let entry = match provider {
            Ok(entry) => entry,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        };
        let id = entry.id().to_owned();
        match registry.try_insert(Arc::new(entry.with_own_limits(limits))) {
            Ok(()) => registered.push(id),
            Err(conflict) => failures.push(LoadFailure::new(
                path,
                FailureKind::Conflict,
                format!("{conflict}. Provider ids must be unique: a plugin never replaces a provider that is already registered; remove or rename one of them."),
            )),
        }
    }
    let loaded = (!registered.is_empty() || offered == 0).then(|| LoadedPlugin {
        path: path.to_owned(),
        plugin: library.name().to_owned(),
        version: library.version().to_owned(),
        api_version: library.api_version().to_owned(),
        providers: registered,
        isolation: library.isolation(),
        worker: library.worker_status(),
        trust: trust.clone(),
        egress: library.egress().clone(),
    });
    (loaded, failures)
}
