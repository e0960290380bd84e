//! Why a plugin file was not loaded, worded for the person who dropped it in.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// The kind of a load failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// The plugins folder itself could not be listed. Hot reload keeps the
    /// last good set serving and retries (`since` says from when).
    FolderUnreadable,
    /// The file could not be copied into the plugin cache (`--cache-dir`
    /// full, read-only, gone): nothing is wrong with the file. Hot reload
    /// retries it with a backoff.
    CacheFailed,
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

/// `time` as RFC 3339 in UTC, to the second (`2026-12-01T21:45:03Z`).
pub(crate) fn rfc3339(time: std::time::SystemTime) -> String {
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

/// The useful end of abi_stable's layout diff: its last `Error:` block,
/// on one line (`mismatched type: expected RStr<'a>, found RSlice<'a>`).
pub(crate) fn summarize_layout_diff(diff: &str) -> String {
    let lines: Vec<&str> = diff.lines().map(str::trim).collect();
    let Some(start) = lines.iter().rposition(|l| l.starts_with("Error:")) else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .unwrap_or(&"")
            .to_string();
    };
    let mut summary = lines[start].trim_start_matches("Error:").trim().to_owned();
    for line in lines[start + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .take(8)
    {
        let piece = match *line {
            "Expected:" => ": expected".to_owned(),
            "Found:" => ", found".to_owned(),
            other => format!(" {other}"),
        };
        summary.push_str(&piece);
    }
    summary.replace(" :", ":")
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

    #[test]
    fn layout_summary_keeps_the_last_error_block_on_one_line() {
        let diff = "lots of text\n  Error:other\n\nError:mismatched type\nExpected:\n    RStr<'a>\nFound:\n    RSlice<'a>\n\n";
        assert_eq!(
            summarize_layout_diff(diff),
            "mismatched type: expected RStr<'a>, found RSlice<'a>"
        );
    }
}
