//! A plugins folder's files, kept in step with it: the libraries loaded
//! from it in arrival order, the files that failed and why, and the
//! libraries retired by a replacement or a removal. The [`Catalog`]
//! (`super`) turns this into a provider set; this module only decides what
//! each file is.
//!
//! Each version of a file is loaded from a private copy of its own (a new
//! random name in the cache), so the loader never maps the watched path (writing that
//! file in place cannot crash the host) and never gets the dynamic loader's
//! cached old object for a reused path. A file is loaded only once it is
//! complete and stable; one that stays broken is reported like any bad
//! file. Providers are registered in the order their files first arrived,
//! so a newcomer never takes over an id that another file holds, and a
//! replacement keeps its file's place. If a new version fails to load, the
//! previous one keeps serving. Replaced and removed libraries are retired,
//! never unloaded.
//!
//! A rescan does no work for what has not changed: a file is only opened
//! when its fingerprint (metadata, no read) is new; a file is checked
//! (type, size limit, headers) from a non-blocking descriptor before it is
//! copied; a known-bad file is not looked at again until it changes; and
//! the same library under a new fingerprint (`touch`, an identical copy,
//! a build that changed only what the loader never reads) changes
//! nothing. A folder that cannot be listed, or a file that cannot be
//! opened for a passing reason (out of descriptors), keeps the last good
//! set and is retried with a backoff ([`RescanOutcome::retry_in`]).
//! An impatient rescan (a one-shot load, which never retries) reports
//! such a file as a failure instead, and words every failure without
//! promising a retry.
//!
//! Before a file is copied it must pass the trust checks
//! ([`crate::trust`]): its permissions (from the opened descriptor), and
//! with trusted keys a signature by one of them; while it is copied its
//! bytes are checked against that signature and hashed (SHA-256); under
//! `--locked` that digest must be the locked one. Only then is the copy
//! loaded. The plugins folder's own permissions are checked at every
//! rescan, and a refused folder is reported like one that cannot be
//! listed. A failure is remembered with the version of what the decision
//! depended on (the file, its signature file, the lock file), so a
//! signature added next to a refused file, or a lock file rewritten, has
//! it examined again.
//!
//! The cache folder is checked at every rescan too (`cache.rs`): a
//! folder the operator named is created if missing and refused unless it
//! is the host's alone ([`cache_dir::prepare_given`]); the folder's own
//! default one is created afresh if it is gone. A refused cache folder is
//! reported once, as the cache folder's own failure
//! ([`FailureKind::CacheFailed`], with its path), and nothing is loaded
//! until it is fixed (what was loaded before keeps serving).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::admission::{self, Refused};
use super::cache::{Cache, CacheChoice};
use super::fingerprint::{Fingerprint, Version};
use super::listing::{library_files, missing_dir_reason};
use super::placement;
#[cfg(doc)]
use super::Catalog;
use crate::cache_dir::index::{FileId, Index, Remembered};
use crate::cache_dir::CachedCopy;
use crate::library::{is_transient, open_regular, Checks, OpenError};
use crate::model::config::HostConfig;
use crate::model::report::{
    log_failures, rfc3339, FailureKind, LoadFailure, RetiredLibrary, LOAD_LOG_TARGET,
};
use crate::model::trust::PluginTrust;
use crate::plugin::Plugin;
use crate::state::HostState;
use crate::trust::Gate;

/// A file whose last change is more recent than this may still be being
/// written: it is looked at again once it has been quiet this long. A
/// loaded file that disappears is dropped once it has been gone this long
/// (an installer that removes and recreates a file is not a removal).
pub(crate) const SETTLE: Duration = Duration::from_millis(40);

/// How long an incomplete file (truncated, still being copied) is given to
/// become complete before it is reported as broken.
pub(crate) const COMPLETION_GRACE: Duration = Duration::from_secs(2);

/// The first retry after a failed listing or a passing open failure; each
/// further retry waits twice as long, up to [`MAX_RETRY`].
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest wait between retries.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(5);

/// A loaded file.
struct Entry {
    path: PathBuf,
    fingerprint: Fingerprint,
    /// The version of the file that was copied, as the cache's index
    /// records it.
    source_id: FileId,
    /// The copy that was loaded.
    copy: Arc<CachedCopy>,
    /// The text of the signature file that verified the copy, if one did.
    signature_text: Option<String>,
    /// The host executable whose checks the copy passed in process.
    checked_by: Option<String>,
    library: Plugin,
    trust: PluginTrust,
}

/// A copy that passed the gate: the copy, what was checked, the signature
/// file text that verified it, and whether it passed this host's header
/// and layout checks before.
type Admitted = (Arc<CachedCopy>, PluginTrust, Option<String>, Checks);

/// A file that changed but is not loaded yet.
struct Pending {
    fingerprint: Fingerprint,
    since: Instant,
}

/// The plugins folder could not be listed.
struct FolderFailure {
    /// What the error was (to tell a new failure from a retry of the same).
    error: String,
    failure: LoadFailure,
}

/// Why a rescan could not look at the folder's files.
enum Refusal {
    /// The folder could not be listed.
    Listing(std::io::Error),
    /// The trust checks refused the folder (the reason in words).
    Trust(String),
    /// The cache folder (its path) was refused (the reason in words).
    Cache(PathBuf, String),
}

/// What a rescan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescanOutcome {
    /// The provider set or the report changed: publish a new snapshot.
    pub changed: bool,
    /// Some file is still being written: rescan again after a moment (40 ms).
    pub waiting: bool,
    /// The folder could not be listed, or a file could not be opened for a
    /// passing reason: rescan again after this long, even if nothing
    /// happens in the folder (the backoff doubles from 100 ms to 5 s
    /// while it lasts).
    pub retry_in: Option<Duration>,
}

/// The plugins of one folder, kept in step with it by [`rescan`](Self::rescan).
pub(crate) struct Folder {
    dir: PathBuf,
    cache: Cache,
    /// How to load and admit files (its trust configuration, its
    /// placement, settings and limits).
    config: HostConfig,
    /// The host's own state, which its plugins count into.
    state: Arc<HostState>,
    /// The gate made from its trust configuration (`None` until it could
    /// be: its keys and lock file read).
    gate: Option<Gate>,
    entries: Vec<Entry>,
    failures: BTreeMap<PathBuf, (Version, LoadFailure)>,
    pending: BTreeMap<PathBuf, Pending>,
    /// Loaded files no longer listed, and since when.
    missing: BTreeMap<PathBuf, Instant>,
    /// Retired libraries: one entry per library in memory that no loaded
    /// file uses.
    retired: Vec<RetiredLibrary>,
    /// What a cache folder the operator named remembers from earlier
    /// starts (read at the first rescan), and what this folder last wrote
    /// to it.
    index: Option<Index>,
    written: Option<Vec<Remembered>>,
    folder_failure: Option<FolderFailure>,
    /// Files the last rescan could not open or copy for a passing reason,
    /// when it was impatient (hot reload retries them and reports nothing).
    passing: BTreeMap<PathBuf, LoadFailure>,
    /// Rescans in a row that had to be retried.
    retries: u32,
    /// Whether this rescan waits for files still being written (hot
    /// reload) or takes the folder as it stands (a one-shot load).
    patient: bool,
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("dir", &self.dir)
            .field("loaded", &self.entries.len())
            .field("failed", &self.failures.len())
            .field("pending", &self.pending.len())
            .field("retired", &self.retired.len())
            .field("folder_failing", &self.folder_failure.is_some())
            .finish()
    }
}

impl Folder {
    /// The folder `dir` (nothing is loaded until the first rescan), keeping
    /// its private copies in `cache`, loading and admitting files as
    /// `config` says.
    pub(crate) fn new(
        dir: PathBuf,
        cache: CacheChoice,
        config: HostConfig,
        state: Arc<HostState>,
    ) -> Self {
        Self {
            dir,
            config,
            state,
            cache: Cache::new(cache),
            gate: None,
            entries: Vec::new(),
            failures: BTreeMap::new(),
            pending: BTreeMap::new(),
            missing: BTreeMap::new(),
            retired: Vec::new(),
            index: None,
            written: None,
            folder_failure: None,
            passing: BTreeMap::new(),
            retries: 0,
            patient: true,
        }
    }

    /// The watched folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder its copies go to (`None`: its own could not be created
    /// yet).
    pub(crate) fn cache(&self) -> Option<&Path> {
        self.cache.dir()
    }

    /// The cache folder, when it is the folder's own (to remove with it).
    pub(crate) fn own_cache(&self) -> Option<&Path> {
        self.cache.own()
    }

    /// Whether the last rescan could not list the folder.
    pub(crate) fn folder_failing(&self) -> bool {
        self.folder_failure.is_some()
    }

    /// Brings the set in step with the folder: loads new and changed files
    /// that are complete, drops removed ones. A folder that cannot be
    /// listed changes nothing but the report. Blocking (reads files, runs
    /// plugins' init): call it off the async runtime.
    ///
    /// `patient` (hot reload) waits for a file that changed within
    /// [`SETTLE`], and gives an incomplete one [`COMPLETION_GRACE`] to
    /// complete; impatient (a one-shot load) takes every file as it stands.
    pub(crate) fn rescan(&mut self, patient: bool) -> RescanOutcome {
        self.patient = patient;
        let mut outcome = RescanOutcome::default();
        let mut retry = false;
        let passing_before = std::mem::take(&mut self.passing);
        let ready = self.prepare_trust().and_then(|()| self.prepare_cache());
        match ready.and_then(|()| library_files(&self.dir).map_err(Refusal::Listing)) {
            Ok(files) => {
                self.folder_listed(&mut outcome);
                if self.index.is_none() {
                    let index = self.cache.given().map(Index::read).unwrap_or_default();
                    // Unchanged, it is not written again.
                    self.written = Some(index.of_folder(&self.dir));
                    self.index = Some(index);
                }
                for path in &files {
                    retry |= self.look_at(path, &mut outcome);
                }
                self.drop_gone(&files, &mut outcome);
                self.remember();
            }
            Err(Refusal::Listing(error)) => {
                self.folder_failed(&error, &mut outcome);
                retry = true;
            }
            Err(Refusal::Trust(reason)) => {
                self.folder_refused(reason, &mut outcome);
                retry = true;
            }
            Err(Refusal::Cache(cache, reason)) => {
                self.cache_refused(&cache, reason, &mut outcome);
                retry = true;
            }
        }
        for (path, failure) in &self.passing {
            if passing_before.get(path) != Some(failure) {
                log_failures(std::slice::from_ref(failure));
                outcome.changed = true;
            }
        }
        outcome.changed |= self.passing.len() != passing_before.len();
        if retry {
            let delay = FIRST_RETRY.saturating_mul(1 << self.retries.min(10));
            outcome.retry_in = Some(delay.min(MAX_RETRY));
            self.retries = self.retries.saturating_add(1);
        } else {
            self.retries = 0;
        }
        outcome
    }

    /// Makes the trust gate if it is not made yet (reads the keys and the
    /// lock file), brings it up to date, and checks the folder's own
    /// permissions.
    fn prepare_trust(&mut self) -> Result<(), Refusal> {
        if self.gate.is_none() {
            let gate = Gate::new(&self.config.trust, &self.dir).map_err(|e| {
                Refusal::Trust(format!(
                    "{e}. No plugin is loaded from {} until it is fixed.",
                    self.dir.display()
                ))
            })?;
            self.gate = Some(gate);
        }
        match self.gate.as_mut() {
            Some(gate) => gate.prepare(&self.dir).map_err(|reason| {
                Refusal::Trust(format!(
                    "{reason}. No plugin is loaded from it until it is fixed."
                ))
            }),
            None => Ok(()),
        }
    }

    /// Writes what the loaded files' copies are to the index of a cache
    /// folder the operator named, when it changed, so that the next start
    /// maps them directly; copies no longer used are removed from it.
    fn remember(&mut self) {
        let Some(cache) = self.cache.given() else {
            return;
        };
        let entries: Vec<Remembered> = self
            .entries
            .iter()
            .filter_map(|e| {
                e.copy.remembered(
                    &e.path,
                    e.source_id,
                    e.signature_text.clone(),
                    e.checked_by.clone(),
                )
            })
            .collect();
        if self.written.as_ref() == Some(&entries) {
            return;
        }
        match Index::write(cache, &self.dir, entries.clone()) {
            Ok(removed) => {
                tracing::debug!(folder = %cache.display(), files = entries.len(), removed, "wrote the plugin cache's index");
                self.written = Some(entries);
            }
            Err(e) => {
                // The next start copies the files again; nothing else
                // depends on it.
                tracing::debug!(folder = %cache.display(), "could not write the plugin cache's index: {e}");
            }
        }
    }

    /// Makes the cache folder ready before anything is copied into it.
    fn prepare_cache(&mut self) -> Result<(), Refusal> {
        self.cache
            .prepare(self.config.trust.check_permissions)
            .map_err(|(dir, reason)| Refusal::Cache(dir, reason))
    }

    /// The cache folder was refused: keep every loaded plugin, report it
    /// (once) as the cache folder's own failure, load nothing, and retry.
    fn cache_refused(&mut self, cache: &Path, reason: String, outcome: &mut RescanOutcome) {
        let mut words = format!(
            "{reason}. No plugin is loaded until it is fixed; nothing is wrong with the plugin files.{}",
            self.keeping()
        );
        if self.patient {
            words.push_str(" The cache folder is looked at again every few seconds.");
        }
        let failure = LoadFailure::new(cache, FailureKind::CacheFailed, words);
        self.report_folder_failure(reason, failure, outcome);
    }

    /// The folder was refused (its permissions, or a trust configuration
    /// that cannot be used): keep every loaded plugin, report the refusal
    /// like a folder that cannot be listed, and retry.
    fn folder_refused(&mut self, reason: String, outcome: &mut RescanOutcome) {
        let mut words = format!("{reason}{}", self.keeping());
        if self.patient {
            words.push_str(" The folder is looked at again every few seconds.");
        }
        let failure = LoadFailure::new(&self.dir, FailureKind::FolderUnreadable, words);
        self.report_folder_failure(reason, failure, outcome);
    }

    /// ` The N plugins loaded before keep serving.` (or nothing).
    fn keeping(&self) -> String {
        match self.entries.len() {
            0 => String::new(),
            1 => " The plugin loaded before keeps serving.".to_owned(),
            n => format!(" The {n} plugins loaded before keep serving."),
        }
    }

    /// The folder was listed: a failure it had is over.
    fn folder_listed(&mut self, outcome: &mut RescanOutcome) {
        if let Some(over) = self.folder_failure.take() {
            tracing::info!(
                dir = %over.failure.path.display(),
                since = over.failure.since.as_deref().unwrap_or(""),
                "{}",
                if over.failure.kind == FailureKind::CacheFailed {
                    "the plugin cache folder can be used again"
                } else {
                    "the plugins folder can be listed again"
                }
            );
            outcome.changed = true;
        }
    }

    /// The folder could not be listed: keep every loaded plugin, report the
    /// failure (logged once, not at every retry), and retry.
    fn folder_failed(&mut self, error: &std::io::Error, outcome: &mut RescanOutcome) {
        let key = format!("{:?} {:?}", error.kind(), error.raw_os_error());
        let keeping = self.keeping();
        // A one-shot load reads the folder once: it says what is wrong,
        // and promises no retry.
        let reason = if self.patient {
            format!(
                "{}{keeping} The folder is read again every few seconds until it can be.",
                if error.kind() == std::io::ErrorKind::NotFound {
                    missing_dir_reason(error)
                } else {
                    format!("the plugins folder could not be listed: {error}.")
                }
            )
        } else {
            format!("{}{keeping}", missing_dir_reason(error))
        };
        let failure = LoadFailure::new(&self.dir, FailureKind::FolderUnreadable, reason);
        self.report_folder_failure(key, failure, outcome);
    }

    /// Reports the folder's own failure, once per distinct `key` (a retry
    /// of the same failure is not news), with the time it began.
    fn report_folder_failure(
        &mut self,
        key: String,
        mut failure: LoadFailure,
        outcome: &mut RescanOutcome,
    ) {
        if self.folder_failure.as_ref().is_some_and(|f| f.error == key) {
            tracing::debug!(dir = %self.dir.display(), "the plugins folder still fails: {}", failure.reason);
            return;
        }
        failure.since = Some(match &self.folder_failure {
            Some(earlier) => earlier.failure.since.clone().unwrap_or_default(),
            None => rfc3339(SystemTime::now()),
        });
        let since = failure.since.as_deref().unwrap_or("");
        if self.patient {
            // Hot reload: the server's own warning, shown by default.
            tracing::warn!(dir = %self.dir.display(), since, "{}", failure.reason);
        } else {
            // A one-shot load: a load failure like any other, which the
            // CLI reports itself.
            tracing::warn!(target: LOAD_LOG_TARGET, dir = %self.dir.display(), since, "{}", failure.reason);
        }
        self.folder_failure = Some(FolderFailure {
            error: key,
            failure,
        });
        outcome.changed = true;
    }

    /// Drops what is no longer listed: failures and pending files at once,
    /// loaded files once they have been gone for [`SETTLE`].
    fn drop_gone(&mut self, files: &[PathBuf], outcome: &mut RescanOutcome) {
        // A set: a crowded folder must not make this quadratic.
        let listed: std::collections::HashSet<&Path> = files.iter().map(PathBuf::as_path).collect();
        self.missing.retain(|p, _| !listed.contains(p.as_path()));
        let gone: Vec<PathBuf> = self
            .entries
            .iter()
            .map(|e| e.path.clone())
            .filter(|p| !listed.contains(p.as_path()))
            .collect();
        for path in gone {
            let since = *self
                .missing
                .entry(path.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < SETTLE {
                outcome.waiting = true;
                continue;
            }
            self.missing.remove(&path);
            if let Some(index) = self.entry_of(&path) {
                let entry = self.entries.remove(index);
                tracing::info!(target: LOAD_LOG_TARGET, path = %path.display(), plugin = entry.library.name(), "plugin removed; its library stays in memory");
                self.retire(entry);
                outcome.changed = true;
            }
        }
        let before = self.failures.len();
        self.failures.retain(|p, _| listed.contains(p.as_path()));
        outcome.changed |= self.failures.len() != before;
        self.pending.retain(|p, _| listed.contains(p.as_path()));
    }

    /// Where the loaded file `path` is among the entries (its path as
    /// listed, compared as bytes: the listing names each file one way).
    fn entry_of(&self, path: &Path) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.path.as_os_str() == path.as_os_str())
    }

    /// Looks at one listed entry. Returns whether it must be retried for a
    /// passing reason.
    fn look_at(&mut self, path: &Path, outcome: &mut RescanOutcome) -> bool {
        let Some(metadata) = Fingerprint::metadata_of(path) else {
            return false; // vanished between listing and looking
        };
        let fingerprint = Fingerprint::from_metadata(&metadata);
        let version = Version {
            file: fingerprint,
            trust: self
                .gate
                .as_ref()
                .map(|g| g.stamp(path))
                .unwrap_or_default(),
        };
        if let Some(entry) = self.entry_of(path).map(|i| &self.entries[i]) {
            if entry.fingerprint == fingerprint {
                self.pending.remove(path);
                return false;
            }
        }
        if self.failures.get(path).is_some_and(|(known, failure)| {
            *known == version && failure.kind != FailureKind::CacheFailed
        }) {
            return false; // known broken, unchanged: not read again
        }
        // New or changed. Wait until it is quiet.
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
        if self.patient && !fingerprint.quiet() && since.elapsed() < SETTLE {
            outcome.waiting = true;
            return false;
        }
        self.examine(path, &metadata, version, since, outcome)
    }

    /// Opens a new or changed entry (never blocking), checks what is cheap
    /// (type, permissions, size, headers, that a trusted signature is
    /// there) from that descriptor, and only then copies it into the
    /// cache, checking its bytes as they are copied (signature, digest,
    /// lock), and loads the copy. Returns whether to retry it for a
    /// passing reason.
    fn examine(
        &mut self,
        path: &Path,
        listed: &std::fs::Metadata,
        version: Version,
        since: Instant,
        outcome: &mut RescanOutcome,
    ) -> bool {
        if self.map_remembered(path, listed, version, outcome) {
            return false;
        }
        let fingerprint = version.file;
        let file = match open_regular(path) {
            Ok(file) => file,
            Err(OpenError::Vanished) => {
                outcome.waiting = true;
                return false;
            }
            Err(OpenError::Transient(e)) => {
                tracing::debug!(path = %path.display(), "cannot open the plugin for now, retrying: {e}");
                self.passing_failure(path, "open", &e);
                return true;
            }
            Err(OpenError::Failed(failure)) => {
                self.pending.remove(path);
                self.fail_version(path, version, failure, outcome);
                return false;
            }
        };
        // The descriptor is what gets read: it must be the version the
        // fingerprint describes.
        let metadata = match file.metadata() {
            Ok(metadata) if Fingerprint::from_metadata(&metadata) == fingerprint => metadata,
            _ => {
                outcome.waiting = true;
                return false;
            }
        };
        let Some(gate) = self.gate.as_ref() else {
            return false; // a rescan makes the gate before looking at files
        };
        let checked = match admission::check_before_copy(
            gate,
            path,
            &file,
            &metadata,
            self.config.max_plugin_size,
        ) {
            Ok(checked) => checked,
            Err(Refused::Headers(failure))
                if self.patient
                    && failure.kind != FailureKind::TooLarge
                    && since.elapsed() < COMPLETION_GRACE =>
            {
                outcome.waiting = true; // maybe still being copied
                return false;
            }
            Err(Refused::Trust(failure) | Refused::Headers(failure)) => {
                self.pending.remove(path);
                self.fail_version(path, version, failure, outcome);
                return false;
            }
        };
        // Copy the checked descriptor into the cache, checking its bytes
        // as they are copied: the copy is what gets loaded.
        let cache = self.cache.folder();
        let Some(gate) = self.gate.as_ref() else {
            return false;
        };
        let copied = cache
            .and_then(|cache| admission::copy_checked(gate, path, &file, &checked, &cache, false));
        // What was read is the version checked only if the file did not
        // change meanwhile (a writer rewriting it in place).
        let steady =
            file.metadata().map(|m| Fingerprint::from_metadata(&m)).ok() == Some(fingerprint);
        let (copy, admitted) = match copied {
            Ok(copied) if steady => (copied.copy, copied.admitted),
            Ok(copied) => {
                tracing::debug!(path = %path.display(), "the plugin changed while it was copied; looking again");
                copied.copy.discard();
                outcome.waiting = true;
                return false;
            }
            Err(e) if is_transient(&e) => {
                tracing::debug!(path = %path.display(), "cannot copy the plugin for now, retrying: {e}");
                self.passing_failure(path, "copy", &e);
                return true;
            }
            Err(e) if !steady => {
                tracing::debug!(path = %path.display(), "could not copy the plugin while it changed: {e}");
                outcome.waiting = true;
                return false;
            }
            Err(e) => {
                // The file is steady: the cache is what fails (full,
                // read-only, removed). Report it, and retry with the backoff
                // rather than at every settle tick.
                self.cache_failed(path, version, &e, outcome);
                return true;
            }
        };
        self.pending.remove(path);
        let trust = match admitted {
            Ok(trust) => trust,
            Err(failure) => {
                // Refused: the copy is not loaded.
                copy.discard();
                self.fail_version(path, version, failure, outcome);
                return false;
            }
        };
        let signature_text = checked.signed.map(|s| s.text().to_owned());
        let source_id = FileId::of(&metadata);
        let admitted = (Arc::new(copy), trust, signature_text, Checks::All);
        self.load(path, version, source_id, admitted, outcome);
        false
    }

    /// Loads the copy an earlier start made of `path` (whose `metadata` the
    /// look at it just found), if the cache's index remembers this very
    /// version of it, the copy is still the host's own
    /// and unchanged, and the gate admits it ([`admission::check_copy`]):
    /// nothing is read from the file, nothing copied, nothing hashed that
    /// was hashed before. Returns whether it did; when it did not, the
    /// file is copied and checked anew, which reports any refusal.
    fn map_remembered(
        &mut self,
        path: &Path,
        metadata: &std::fs::Metadata,
        version: Version,
        outcome: &mut RescanOutcome,
    ) -> bool {
        if self.entry_of(path).is_some() {
            return false;
        }
        let (Some(index), Some(cache), Some(gate)) =
            (self.index.as_ref(), self.cache.given(), self.gate.as_ref())
        else {
            return false;
        };
        if index.len() == 0 {
            return false;
        }
        if !metadata.is_file() || metadata.len() > self.config.max_plugin_size {
            return false;
        }
        let source_id = FileId::of(metadata);
        let Some(remembered) = index.find(path, &source_id) else {
            return false;
        };
        let Some(copy) = index.open(cache, remembered) else {
            return false;
        };
        let Some((trust, signature_text)) =
            admission::check_copy(gate, path, metadata, &copy, remembered.signature.as_deref())
        else {
            return false;
        };
        // The header and layout checks this host ran on this very copy
        // are not run again.
        let checks = match (&remembered.checked_by, crate::library::host_identity()) {
            (Some(by), Some(this)) if by == this => Checks::PassedBefore,
            _ => Checks::All,
        };
        self.pending.remove(path);
        let admitted = (Arc::new(copy), trust, signature_text, checks);
        self.load(path, version, source_id, admitted, outcome);
        true
    }

    /// Loads the copy of `path` the gate `admitted`; `source_id` is the
    /// version of `path` it was made from. A copy of a file that replaces
    /// a loaded one and holds the same bytes as its copy (a touch, a copy
    /// of the same file, a build that changed only its symbols or debug
    /// information) is not loaded: the loaded library stays.
    fn load(
        &mut self,
        path: &Path,
        version: Version,
        source_id: FileId,
        admitted: Admitted,
        outcome: &mut RescanOutcome,
    ) {
        let fingerprint = version.file;
        let (copy, trust, signature_text, checks) = admitted;
        let index = self.entry_of(path);
        if let Some(index) = index {
            let entry = &mut self.entries[index];
            if copy.same_bytes(&entry.copy) {
                // Touched, copied again, or rebuilt with only what the
                // loader never reads changed (symbols, debug information):
                // the very library that is loaded, which stays. The new
                // copy (the same bytes) stands for the file from now on:
                // its digest is the new file's. What was checked about it
                // may have changed too.
                std::mem::replace(&mut entry.copy, copy).discard();
                entry.fingerprint = fingerprint;
                entry.source_id = source_id;
                entry.signature_text = signature_text;
                entry.trust = trust;
                outcome.changed = true;
                self.failures.remove(path);
                return;
            }
        }
        match placement::open(copy.path(), path, &self.config, &self.state, checks) {
            Ok(library) => {
                let in_process = library.isolation() == crate::model::config::Isolation::InProcess;
                let entry = Entry {
                    path: path.to_owned(),
                    fingerprint,
                    source_id,
                    copy,
                    signature_text,
                    checked_by: crate::library::host_identity()
                        .filter(|_| in_process)
                        .map(str::to_owned),
                    library,
                    trust,
                };
                let offers: Vec<&str> = entry.library.provider_ids().collect();
                let signer = entry.trust.signature.as_ref().map(|s| s.key_id.as_str());
                let comment = entry
                    .trust
                    .signature
                    .as_ref()
                    .map(|s| s.trusted_comment.as_str());
                let digest = entry.copy.known_digest();
                tracing::info!(target: LOAD_LOG_TARGET, path = %path.display(), plugin = entry.library.name(), version = entry.library.version(), ?offers, digest, locked = entry.trust.locked, signer, trusted_comment = comment, "plugin {}", if index.is_some() { "replaced" } else { "added" });
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
            Err(failure) => {
                copy.discard();
                self.fail_version(path, version, failure, outcome);
            }
        }
    }

    /// Reports that `path` could not be copied into the cache (once per
    /// distinct error); the caller retries it.
    fn cache_failed(
        &mut self,
        path: &Path,
        version: Version,
        error: &std::io::Error,
        outcome: &mut RescanOutcome,
    ) {
        let failure = LoadFailure::new(
            path,
            FailureKind::CacheFailed,
            format!(
                "could not copy the file into the plugin cache {}: {error}. Nothing is wrong with the file{}",
                match self.cache() {
                    Some(cache) => cache.display().to_string(),
                    None => format!("(a new folder in {})", std::env::temp_dir().display()),
                },
                if self.patient {
                    "; it is tried again every few seconds."
                } else {
                    "."
                }
            ),
        );
        let known = self
            .failures
            .get(path)
            .is_some_and(|(known, f)| *known == version && f.reason.starts_with(&failure.reason));
        if !known {
            self.fail_version(path, version, failure, outcome);
        }
    }

    /// A one-shot load could not open or copy `path` for a passing reason
    /// (out of descriptors or memory): it does not retry, so the file is
    /// reported. Hot reload retries it with the backoff and reports
    /// nothing. The report lasts until the next rescan looks again.
    fn passing_failure(&mut self, path: &Path, step: &str, error: &std::io::Error) {
        if self.patient {
            return;
        }
        let failure = LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not {step} the file for now ({error}); load it again later."),
        );
        self.passing.insert(path.to_owned(), failure);
    }

    /// Records that this version of `path` cannot be loaded; a loaded
    /// previous version keeps serving, and says so.
    fn fail_version(
        &mut self,
        path: &Path,
        version: Version,
        mut failure: LoadFailure,
        outcome: &mut RescanOutcome,
    ) {
        if let Some(old) = self.entry_of(path).map(|i| &self.entries[i]) {
            failure.reason = format!(
                "{} The previous version ({} {}) keeps serving.",
                failure.reason,
                old.library.name(),
                old.library.version()
            );
        }
        failure.path = path.to_owned();
        log_failures(std::slice::from_ref(&failure));
        self.failures.insert(path.to_owned(), (version, failure));
        outcome.changed = true;
    }

    /// Counts a library that no file serves any more (once per content: a
    /// library is in memory once however often it was loaded). An
    /// isolated one is not counted: it is not in this process.
    fn retire(&mut self, entry: Entry) {
        if entry.library.isolation() == crate::model::config::Isolation::Process {
            // Its worker stops once the calls in flight to it finish, and
            // its memory goes with it: nothing stays behind to count.
            return;
        }
        self.retired.push(RetiredLibrary {
            path: entry.path,
            plugin: entry.library.name().to_owned(),
            version: entry.library.version().to_owned(),
            bytes: entry.copy.len(),
        });
    }

    /// The loaded libraries, in the order their files first arrived (a
    /// replacement keeps its file's place).
    pub(crate) fn libraries(&self) -> impl Iterator<Item = &Plugin> {
        self.entries.iter().map(|e| &e.library)
    }

    /// The loaded libraries (as [`libraries`](Self::libraries)), each with
    /// what was checked before it was loaded.
    pub(crate) fn loaded(&self) -> impl Iterator<Item = (&Plugin, &PluginTrust, &Arc<CachedCopy>)> {
        self.entries.iter().map(|e| (&e.library, &e.trust, &e.copy))
    }

    /// The folder's own failure (it cannot be listed), if any.
    pub(crate) fn folder_failure(&self) -> Option<&LoadFailure> {
        self.folder_failure.as_ref().map(|f| &f.failure)
    }

    /// Each failed file's failure (a file a one-shot load could not open
    /// or copy for a passing reason included), in no particular order.
    pub(crate) fn file_failures(&self) -> impl Iterator<Item = &LoadFailure> {
        self.failures
            .values()
            .map(|(_, f)| f)
            .chain(self.passing.values())
    }

    /// The libraries no loaded file uses any more, still in memory.
    pub(crate) fn retired(&self) -> impl Iterator<Item = &RetiredLibrary> {
        self.retired.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_cannot_be_listed_is_reported_once_and_retried_with_a_growing_backoff() {
        let tmp = tempfile::tempdir().unwrap();
        // A regular file where the folder should be: listing fails (ENOTDIR).
        let not_a_folder = tmp.path().join("plugins");
        std::fs::write(&not_a_folder, b"x").unwrap();
        let mut set = Folder::new(
            not_a_folder.clone(),
            CacheChoice::Given(tmp.path().join("cache")),
            HostConfig::default(),
            HostState::new(&HostConfig::default()),
        );

        let first = set.rescan(true);
        assert!(first.changed, "the failure is news");
        assert_eq!(first.retry_in, Some(FIRST_RETRY));
        let waits: Vec<_> = (0..8).map(|_| set.rescan(true)).collect();
        assert!(waits.iter().all(|o| !o.changed), "a retry is not news");
        assert_eq!(waits[0].retry_in, Some(FIRST_RETRY * 2));
        assert_eq!(waits[1].retry_in, Some(FIRST_RETRY * 4));
        assert_eq!(waits[7].retry_in, Some(MAX_RETRY));
        let failure = set.folder_failure().expect("reported");
        assert_eq!(failure.kind, FailureKind::FolderUnreadable);
        assert!(failure.since.is_some());

        std::fs::remove_file(&not_a_folder).unwrap();
        std::fs::create_dir(&not_a_folder).unwrap();
        let back = set.rescan(true);
        assert!(back.changed && back.retry_in.is_none());
        assert!(set.folder_failure().is_none());
    }
}
