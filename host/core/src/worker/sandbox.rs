//! Confining a worker process before it loads its plugin (Linux): resource
//! limits, no new privileges, no network of its own, a read-only view of
//! the library and the system's libraries, and a syscall filter. Runs on
//! the worker's only thread, before any other thread exists, so that
//! every thread the plugin ever starts inherits it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to confine a worker to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Confinement {
    /// The library the worker loads (its private copy): readable.
    pub(crate) library: PathBuf,
    /// Apply the sandbox (namespaces, Landlock, seccomp, no new privileges).
    pub(crate) sandbox: bool,
    /// `RLIMIT_AS` in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub(crate) open_files: Option<u64>,
    /// `RLIMIT_CPU` in seconds.
    pub(crate) cpu_seconds: Option<u64>,
}

/// What confining did: each measure applied, and each one this system
/// could not apply (with why), for the host's log and the plugin's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SandboxReport {
    /// Measures in force, e.g. `"landlock (ABI 7)"`.
    pub(crate) applied: Vec<String>,
    /// Measures not in force, each with its reason.
    pub(crate) unavailable: Vec<String>,
}

/// Confines the calling process. An error means a measure that must hold
/// could not be applied: the worker must not load its plugin.
pub(crate) fn confine(confinement: &Confinement) -> Result<SandboxReport, String> {
    let _ = confinement;
    Ok(SandboxReport {
        applied: Vec::new(),
        unavailable: vec!["sandbox: not implemented yet".to_owned()],
    })
}
