//! Trust as configured and as shown: what the operator decided about
//! admitting plugin files, and what was checked about a loaded one. The
//! checks themselves are in `crate::trust`.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The lock file's name in the plugins folder.
pub(crate) const LOCK_FILE_NAME: &str = "connhost.lock";

/// What the operator decided about admitting plugin files
/// ([`crate::HostConfig::trust`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustConfig {
    /// Refuse a plugins folder, plugin file, key or lock file that others
    /// than the host's user (or root) may write. On by default;
    /// `--insecure-permissions` turns it off, with a warning at each load.
    pub check_permissions: bool,
    /// A folder of minisign public keys (`*.pub`): when set, only files
    /// signed by one of them load.
    pub trusted_keys: Option<PathBuf>,
    /// The lock file; `None`: `connhost.lock` in the plugins folder.
    pub lock_file: Option<PathBuf>,
    /// Load only the files the lock file lists, with their digest.
    pub locked: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            check_permissions: true,
            trusted_keys: None,
            lock_file: None,
            locked: false,
        }
    }
}

impl TrustConfig {
    /// Sets [`check_permissions`](Self::check_permissions).
    #[must_use]
    pub fn with_check_permissions(mut self, check: bool) -> Self {
        self.check_permissions = check;
        self
    }

    /// Sets [`trusted_keys`](Self::trusted_keys).
    #[must_use]
    pub fn with_trusted_keys(mut self, folder: PathBuf) -> Self {
        self.trusted_keys = Some(folder);
        self
    }

    /// Sets [`lock_file`](Self::lock_file).
    #[must_use]
    pub fn with_lock_file(mut self, file: PathBuf) -> Self {
        self.lock_file = Some(file);
        self
    }

    /// Sets [`locked`](Self::locked).
    #[must_use]
    pub fn with_locked(mut self, locked: bool) -> Self {
        self.locked = locked;
        self
    }

    /// The lock file for the plugins folder `plugins_dir`: the configured
    /// one, or `connhost.lock` in the folder.
    pub fn lock_path(&self, plugins_dir: Option<&Path>) -> Option<PathBuf> {
        self.lock_file
            .clone()
            .or_else(|| plugins_dir.map(|d| d.join(LOCK_FILE_NAME)))
    }
}

/// A trust configuration that cannot be used: a trusted keys folder that
/// is missing, unreadable, insecure or holds a malformed key; a lock file
/// that is malformed, insecure, or missing under `--locked`; a plugin
/// cache folder that is not the host's alone
/// (see [`crate::HostConfig::cache_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustError {
    /// The file or folder at fault.
    pub path: PathBuf,
    /// What is wrong, naming the path, and what to do.
    pub reason: String,
}

impl TrustError {
    pub(crate) fn new(path: &Path, reason: String) -> Self {
        Self {
            path: path.to_owned(),
            reason,
        }
    }
}

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for TrustError {}

/// What was checked about a loaded plugin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct PluginTrust {
    /// `sha256:` and the hex SHA-256 of the content of the file the
    /// loaded copy was made from, as the lock file records it. Empty in
    /// [`crate::Connhost::load_report`] when nothing needed it at load time
    /// ([`crate::Connhost::plugins`] fills it in), and in either when the
    /// file changed after it was loaded and before anyone asked (the next
    /// scan loads it again).
    pub digest: String,
    /// Whether `--locked` admitted it (its digest is the locked one).
    pub locked: bool,
    /// Its verified signature, when trusted keys are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

/// A verified minisign signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SignatureInfo {
    /// The signing key's id, as the minisign tool prints it: upper-case hex
    /// without leading zeros (up to 16 digits, `C3D7BC1A2C829CA`).
    pub key_id: String,
    /// The signer's trusted comment, as written (shown, never required in
    /// any form).
    pub trusted_comment: String,
}
