//! The live set of a watched plugins folder: files added, replaced and
//! removed while the host runs.
//!
//! Each version of a file is loaded from a private copy named by its
//! content hash, so the loader never maps the watched path (writing that
//! file in place cannot crash the host) and never gets the dynamic loader's
//! cached old object for a reused path. A file is loaded only once it is
//! complete and stable; one that stays broken is reported like any bad
//! file. Providers are registered in the order their files first arrived,
//! so a newcomer never takes over an id that another file holds, and a
//! replacement keeps its file's place. If a new version fails to load, the
//! previous one keeps serving. Replaced and removed libraries are retired,
//! never unloaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cache_dir;
use crate::loader::{
    check_file, library_files, log_outcome, missing_dir_reason, FailureKind, LoadFailure,
    LoadOptions, LoadReport, PluginLibrary, RetiredLibrary,
};
use crate::registry::ProviderRegistry;
use crate::service::{Connhost, HostConfig};

/// A file whose last change is more recent than this may still be being
/// written: it is looked at again once it has been quiet this long.
pub const SETTLE: Duration = Duration::from_millis(40);

/// How long an incomplete file (truncated, still being copied) is given to
/// become complete before it is reported as broken.
pub const COMPLETION_GRACE: Duration = Duration::from_secs(2);

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        })
    }

    /// Whether the file has not changed for [`SETTLE`].
    fn quiet(&self) -> bool {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= SETTLE)
    }
}

/// A loaded file.
struct Entry {
    path: PathBuf,
    fingerprint: Fingerprint,
    hash: String,
    bytes: u64,
    library: PluginLibrary,
}

/// A file that changed but is not loaded yet.
struct Pending {
    fingerprint: Fingerprint,
    since: Instant,
}

/// What a rescan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescanOutcome {
    /// The provider set or the report changed: publish a new snapshot.
    pub changed: bool,
    /// Some file is still being written: rescan again after [`SETTLE`].
    pub waiting: bool,
}

/// The plugins of one folder, kept in step with it by [`rescan`](Self::rescan).
pub struct PluginSet {
    config: HostConfig,
    dir: PathBuf,
    cache: PathBuf,
    options: LoadOptions,
    entries: Vec<Entry>,
    failures: BTreeMap<PathBuf, (Option<Fingerprint>, LoadFailure)>,
    pending: BTreeMap<PathBuf, Pending>,
    retired: Vec<RetiredLibrary>,
    dir_failure: Option<LoadFailure>,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet")
            .field("dir", &self.dir)
            .field("loaded", &self.entries.len())
            .field("failed", &self.failures.len())
            .field("pending", &self.pending.len())
            .field("retired", &self.retired.len())
            .finish()
    }
}

impl PluginSet {
    /// A set for `config.plugins_dir` (nothing is loaded until the first
    /// rescan), keeping its private copies in `cache`.
    pub fn new(config: &HostConfig, cache: PathBuf) -> Self {
        crate::capabilities::install_for_builtins(
            config
                .settings
                .get(crate::capabilities::BUILTIN_SCOPE)
                .cloned()
                .unwrap_or_default(),
        );
        Self {
            dir: config.plugins_dir.clone().unwrap_or_default(),
            options: LoadOptions {
                settings: config.settings.clone(),
            },
            config: config.clone(),
            cache,
            entries: Vec::new(),
            failures: BTreeMap::new(),
            pending: BTreeMap::new(),
            retired: Vec::new(),
            dir_failure: None,
        }
    }

    /// The watched folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the set in step with the folder: loads new and changed files
    /// that are complete, drops removed ones. Blocking (reads files, runs
    /// plugins' init): call it off the async runtime.
    pub fn rescan(&mut self) -> RescanOutcome {
        let mut outcome = RescanOutcome::default();
        let files = match library_files(&self.dir) {
            Ok(files) => {
                outcome.changed |= self.dir_failure.take().is_some();
                files
            }
            Err(error) => {
                let failure = LoadFailure::new(
                    &self.dir,
                    FailureKind::Unreadable,
                    missing_dir_reason(&error),
                );
                outcome.changed |= self.dir_failure.as_ref() != Some(&failure);
                self.dir_failure = Some(failure);
                Vec::new()
            }
        };
        for path in &files {
            self.look_at(path, &mut outcome);
        }
        // Files that are gone.
        let gone: Vec<PathBuf> = self
            .entries
            .iter()
            .map(|e| e.path.clone())
            .filter(|p| !files.contains(p))
            .collect();
        for path in gone {
            if let Some(index) = self.entries.iter().position(|e| e.path == path) {
                let entry = self.entries.remove(index);
                tracing::info!(path = %path.display(), plugin = entry.library.name(), "plugin removed; its library stays in memory");
                self.retire(entry);
                outcome.changed = true;
            }
        }
        let before = self.failures.len();
        self.failures.retain(|p, _| files.contains(p));
        outcome.changed |= self.failures.len() != before;
        self.pending.retain(|p, _| files.contains(p));
        outcome
    }

    fn look_at(&mut self, path: &Path, outcome: &mut RescanOutcome) {
        let Ok(fingerprint) = Fingerprint::of(path) else {
            return; // vanished between listing and looking
        };
        if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
            if entry.fingerprint == fingerprint {
                self.pending.remove(path);
                return;
            }
        } else if self
            .failures
            .get(path)
            .is_some_and(|(known, _)| *known == Some(fingerprint))
        {
            return; // known broken, unchanged
        }
        // New or changed. Wait until it is quiet and complete.
        let since = match self.pending.get(path) {
            Some(p) if p.fingerprint == fingerprint => p.since,
            _ => {
                self.pending.insert(
                    path.to_owned(),
                    Pending {
                        fingerprint,
                        since: Instant::now(),
                    },
                );
                Instant::now()
            }
        };
        if !fingerprint.quiet() && since.elapsed() < SETTLE {
            outcome.waiting = true;
            return;
        }
        // Copy the file into the cache and hash the copy: the copy is what
        // gets checked and loaded.
        let (hash, copy) = match self.copy_into_cache(path) {
            Ok(copied) => copied,
            Err(e) => {
                // Most likely removed or replaced while reading: look again.
                tracing::debug!(path = %path.display(), "could not copy the plugin: {e}");
                outcome.waiting = true;
                return;
            }
        };
        if let Err(mut failure) = check_file(&copy) {
            // Never loaded, so never mapped: the copy can go.
            let _ = std::fs::remove_file(&copy);
            if since.elapsed() < COMPLETION_GRACE {
                outcome.waiting = true;
                return;
            }
            failure.path = path.to_owned();
            self.pending.remove(path);
            self.fail(path, Some(fingerprint), failure, outcome);
            return;
        }
        self.pending.remove(path);
        self.load(path, fingerprint, hash, &copy, outcome);
    }

    fn load(
        &mut self,
        path: &Path,
        fingerprint: Fingerprint,
        hash: String,
        copy: &Path,
        outcome: &mut RescanOutcome,
    ) {
        let index = self.entries.iter().position(|e| e.path == path);
        if let Some(index) = index {
            if self.entries[index].hash == hash {
                self.entries[index].fingerprint = fingerprint; // touched, same content
                return;
            }
        }
        let bytes = std::fs::metadata(copy).map(|m| m.len()).unwrap_or(0);
        match PluginLibrary::open(copy, path, &self.options) {
            Ok(library) => {
                let entry = Entry {
                    path: path.to_owned(),
                    fingerprint,
                    hash,
                    bytes,
                    library,
                };
                tracing::info!(path = %path.display(), plugin = entry.library.name(), version = entry.library.version(), "plugin {}", if index.is_some() { "replaced" } else { "added" });
                match index {
                    Some(index) => {
                        let old = std::mem::replace(&mut self.entries[index], entry);
                        self.retire(old);
                    }
                    None => self.entries.push(entry),
                }
                self.failures.remove(path);
                outcome.changed = true;
            }
            Err(mut failure) => {
                if let Some(index) = index {
                    let old = &self.entries[index].library;
                    failure.reason = format!(
                        "{} The previous version ({} {}) keeps serving.",
                        failure.reason,
                        old.name(),
                        old.version()
                    );
                }
                self.fail(path, Some(fingerprint), failure, outcome);
            }
        }
    }

    fn fail(
        &mut self,
        path: &Path,
        fingerprint: Option<Fingerprint>,
        failure: LoadFailure,
        outcome: &mut RescanOutcome,
    ) {
        log_outcome(None, std::slice::from_ref(&failure));
        self.failures
            .insert(path.to_owned(), (fingerprint, failure));
        outcome.changed = true;
    }

    fn retire(&mut self, entry: Entry) {
        self.retired.push(RetiredLibrary {
            path: entry.path,
            plugin: entry.library.name().to_owned(),
            version: entry.library.version().to_owned(),
            bytes: entry.bytes,
        });
    }

    /// Copies a file into the cache as `<blake3>.<ext>` and returns the
    /// hash of the copy and its path. A version already in the cache is
    /// reused (the dynamic loader hands back the object it already has for
    /// it). `fs::copy` copies inside the kernel (and shares the blocks on
    /// file systems that can clone them); BLAKE3 hashes about three times
    /// as fast as SHA-256 here (both measured on the 7.8 MB fixture).
    fn copy_into_cache(&self, path: &Path) -> std::io::Result<(String, PathBuf)> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.cache)?;
        let partial = self.cache.join(cache_dir::partial_file_name(
            NEXT.fetch_add(1, Ordering::Relaxed),
        ));
        let result = (|| {
            std::fs::copy(path, &partial)?;
            // `fs::copy` copies the permission bits too; the host must be
            // able to read its own copy whatever the original allowed.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))?;
            }
            // The hash of what was copied: the copy is what gets loaded.
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(&partial)?)?;
            let hash = hasher.finalize().to_hex().to_string();
            let copy = self.cache.join(cache_dir::copy_file_name(&hash));
            if copy.exists() {
                std::fs::remove_file(&partial)?;
            } else {
                std::fs::rename(&partial, &copy)?;
            }
            Ok((hash, copy))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// The provider set as it stands: built-ins, then every loaded file's
    /// providers in arrival order, with the report.
    pub fn snapshot(&self) -> Connhost {
        let mut registry = ProviderRegistry::new();
        let mut report = LoadReport::default();
        if self.config.builtins {
            report.failed = registry.register_builtins(self.config.experimental);
        }
        report.failed.extend(self.dir_failure.clone());
        for entry in &self.entries {
            let (loaded, failures) = entry.library.register_into(&mut registry);
            report.loaded.extend(loaded);
            report.failed.extend(failures);
        }
        report
            .failed
            .extend(self.failures.values().map(|(_, f)| f.clone()));
        report.retired = self.retired.clone();
        Connhost::from_parts(registry, report, self.config.validation_timeout)
            .with_max_in_flight(self.config.max_in_flight)
    }
}
