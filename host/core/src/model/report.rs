//! What loading produced: the plugins that loaded, the files (or single
//! providers) that did not and why, worded for the person who dropped the
//! file in, and the libraries hot reload retired.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// The kind of a load failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The file could not be read.
    Unreadable,
    /// The file is not a shared library (empty, truncated, random bytes).
    NotASharedLibrary,
    /// The system loader refused the library (missing dependency, wrong
    /// architecture, ...).
    OpenFailed,
    /// A shared library, but not a connhost plugin.
    NotAPlugin,
    /// Built against a plugin API this host cannot load.
    IncompatibleApi,
    /// The plugin's init panicked or returned an error.
    InitFailed,
    /// A provider misbehaved while describing itself (panicked, or returned
    /// an unusable descriptor).
    ProviderFault,
    /// A provider's id is already registered.
    Conflict,
    /// Named like a library, but not a regular file: a directory, a named
    /// pipe (FIFO), a socket or a device. Such an entry is never opened
    /// for reading (it could block the loader).
    NotARegularFile,
    /// A symbolic link whose target does not exist, or that loops.
    BrokenLink,
    /// Larger than the size limit (`--max-plugin-size`): refused before
    /// anything is copied or read.
    TooLarge,
    /// The plugins folder itself could not be listed, or was refused (it
    /// is writable by others than the host's user, or the trust
    /// configuration cannot be read). Hot reload keeps the last good set
    /// serving and retries (`since` says from when).
    FolderUnreadable,
    /// The file could not be copied into the plugin cache (`--cache-dir`
    /// full, read-only, gone): nothing is wrong with the file. Hot reload
    /// retries it with a backoff.
    CacheFailed,
    /// An isolated plugin's worker process could not be started, or died
    /// or hung before it loaded the plugin.
    WorkerFailed,
    /// The file (the file a link leads to) is writable by its group or by
    /// everyone, or owned by another user than the host's or root
    /// (`--insecure-permissions` turns the check off).
    InsecurePermissions,
    /// With trusted keys, the file has no signature (`FILE.minisig`).
    Unsigned,
    /// With trusted keys, the file is signed by a key that is not trusted.
    UntrustedKey,
    /// With trusted keys, the signature does not match the file (changed
    /// after signing, or another file's signature), or cannot be read as a
    /// minisign signature.
    BadSignature,
    /// With `--locked`, the file is not in the lock file, or its digest is
    /// not the locked one.
    NotLocked,
}

/// A plugin file, or one provider of it, that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoadFailure {
    /// The file.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    /// A one-paragraph explanation for humans.
    pub reason: String,
    /// The machine-readable kind.
    pub kind: FailureKind,
    /// Long supporting detail (abi_stable's full layout diff), shown by
    /// `connhost inspect` and logged at debug level, never in the summary.
    #[serde(skip)]
    pub detail: Option<String>,
    /// Since when the failure lasts (RFC 3339, UTC), for failures that are
    /// retried (a plugins folder that cannot be listed); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl LoadFailure {
    /// This failure of the copy at `load_path` as the operator knows it:
    /// of the file `path`, and naming it wherever its text named the copy
    /// (the system loader's message names the file it was given).
    pub(crate) fn reported_as(
        mut self,
        load_path: &std::path::Path,
        path: &std::path::Path,
    ) -> Self {
        if load_path != path {
            let (copy, file) = (load_path.display().to_string(), path.display().to_string());
            self.reason = self.reason.replace(&copy, &file);
            if let Some(detail) = &mut self.detail {
                *detail = detail.replace(&copy, &file);
            }
        }
        self.path = path.to_owned();
        self
    }

    pub(crate) fn new(
        path: impl Into<PathBuf>,
        kind: FailureKind,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            kind,
            detail: None,
            since: None,
        }
    }

    pub(crate) fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for LoadFailure {}

/// `time` as RFC 3339 in UTC, to the second (`2026-12-01T21:45:03Z`;
/// times before 1970 as 1970): the form of every time in connhost's
/// reports, and in `connhost-http`'s.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// A plugin file that loaded, with the providers it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct LoadedPlugin {
    /// The file.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The `connhost-plugin-api` version it was built against.
    pub api_version: String,
    /// Ids of the providers it registered.
    pub providers: Vec<String>,
    /// Where its code runs.
    pub isolation: super::config::Isolation,
    /// Its worker process, when it is isolated (as it stands when asked:
    /// [`crate::Connhost::plugins`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<super::worker_status::WorkerStatus>,
    /// What was checked before it was loaded: its digest, whether it is
    /// locked, its signature.
    pub trust: super::trust::PluginTrust,
    /// The hosts its providers declare and the operator's grant.
    pub egress: super::egress::Egress,
}

/// The outcome of scanning a plugins folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoadReport {
    /// Plugins that loaded (a plugin some of whose providers were refused
    /// is listed here with the others, and its refusals under `failed`).
    pub loaded: Vec<LoadedPlugin>,
    /// Files, or providers of files, that were not loaded.
    pub failed: Vec<LoadFailure>,
    /// Libraries that were replaced or removed while the host ran. They
    /// stay mapped (a library is never unloaded): this is the memory that
    /// hot reload keeps.
    pub retired: Vec<RetiredLibrary>,
}

/// A library that hot reload replaced or removed, still in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct RetiredLibrary {
    /// The file it was loaded for.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The library file's size in bytes (what stays mapped, at most).
    pub bytes: u64,
}

impl LoadReport {
    /// Merges another report into this one.
    pub fn extend(&mut self, other: LoadReport) {
        self.loaded.extend(other.loaded);
        self.failed.extend(other.failed);
        self.retired.extend(other.retired);
    }

    /// The bytes of all retired libraries.
    pub fn retired_bytes(&self) -> u64 {
        self.retired.iter().map(|r| r.bytes).sum()
    }

    /// The plugins folder's own failure (it could not be listed), if any.
    pub fn folder_failure(&self) -> Option<&LoadFailure> {
        self.failed
            .iter()
            .find(|f| f.kind == FailureKind::FolderUnreadable)
    }
}

/// The tracing target of load failures, wherever they are found (the
/// loader, the catalog, hot reload): `CONNHOST_LOG=connhost::loader=error`
/// silences them, as the CLI does by default (it reports them itself).
pub const LOAD_LOG_TARGET: &str = "connhost::loader";

/// Logs files or providers that were not loaded.
pub(crate) fn log_failures(failures: &[LoadFailure]) {
    for failure in failures {
        tracing::warn!(target: LOAD_LOG_TARGET, path = %failure.path.display(), kind = ?failure.kind, "plugin not loaded: {}", failure.reason);
        if let Some(detail) = &failure.detail {
            tracing::debug!(target: LOAD_LOG_TARGET, path = %failure.path.display(), "layout difference:\n{detail}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_writes_utc_dates() {
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_796_161_503)), "2026-12-01T21:45:03Z");
    }
}
