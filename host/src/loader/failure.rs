//! Why a plugin file was not loaded, worded for the person who dropped it in.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// The kind of a load failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
}

/// A plugin file, or one provider of it, that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LoadFailure {
    /// The file.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// A one-paragraph explanation for humans.
    pub reason: String,
    /// The machine-readable kind.
    pub kind: FailureKind,
    /// Long supporting detail (abi_stable's full layout diff), shown by
    /// `connhost inspect` and logged at debug level, never in the summary.
    #[serde(skip)]
    pub detail: Option<String>,
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
    fn layout_summary_keeps_the_last_error_block_on_one_line() {
        let diff = "lots of text\n  Error:other\n\nError:mismatched type\nExpected:\n    RStr<'a>\nFound:\n    RSlice<'a>\n\n";
        assert_eq!(
            summarize_layout_diff(diff),
            "mismatched type: expected RStr<'a>, found RSlice<'a>"
        );
    }
}
