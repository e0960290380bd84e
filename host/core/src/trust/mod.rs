//! Which plugin files may run: the checks the catalog makes before the
//! system loader (or a worker) ever sees a file.
//!
//! - **Permissions** ([`permissions`]): the plugins folder, each plugin
//!   file (the file a link leads to, judged from the descriptor that is
//!   read), the trusted keys and the lock file must be writable by no one
//!   but their owner, who must be the host's user or root. Off with
//!   [`TrustConfig::check_permissions`] `= false` (`--insecure-permissions`),
//!   which is logged at every load.
//! - **Signatures** ([`signature`]): with trusted keys
//!   ([`TrustConfig::trusted_keys`]), only files whose detached minisign
//!   signature (`FILE.minisig`) verifies against one of them load. The
//!   bytes verified are the bytes copied into the cache, which is what is
//!   loaded.
//! - **Lock file** ([`lock`]): with [`TrustConfig::locked`], only files
//!   listed in the lock file with the same SHA-256 digest load.
//!
//! A refused file is a [`LoadFailure`] of its own kind
//! ([`FailureKind::InsecurePermissions`], [`FailureKind::Unsigned`],
//! [`FailureKind::UntrustedKey`], [`FailureKind::BadSignature`],
//! [`FailureKind::NotLocked`]); a refused plugins folder is reported like
//! one that cannot be listed. A key folder or a lock file that cannot be
//! used is a [`TrustError`] at start ([`check_config`]). A loaded plugin
//! shows what was checked ([`PluginTrust`]).

pub(crate) mod lock;

pub(crate) mod signature;

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::model::report::{FailureKind, LoadFailure};
use crate::model::trust::{PluginTrust, TrustConfig, TrustError};
use crate::permissions;
use crate::permissions::Subject;
use lock::LockFile;
use signature::{Signed, TrustedKeys};

/// Checks at start what the trust configuration of `config` needs: the
/// trusted keys folder and its keys, under `locked` the lock file, and a
/// named cache folder (`config.cache_dir`, created if missing: it must be
/// the host's alone). The CLI refuses to start on an error; a catalog
/// built anyway loads nothing from its folder until the configuration can
/// be used.
pub fn check_config(config: &crate::model::config::HostConfig) -> Result<(), TrustError> {
    let Some(dir) = &config.plugins_dir else {
        return Ok(());
    };
    Gate::new(&config.trust, dir)?;
    match &config.cache_dir {
        Some(cache) => crate::cache_dir::prepare_given(cache, config.trust.check_permissions),
        None => Ok(()),
    }
}

/// A quick identity of a file's version (metadata only).
type FileStamp = (u64, Option<std::time::SystemTime>, (i64, i64), u64, u64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Some((
            m.len(),
            m.modified().ok(),
            (m.ctime(), m.ctime_nsec()),
            m.ino(),
            m.dev(),
        ))
    }
    #[cfg(not(unix))]
    Some((m.len(), m.modified().ok(), (0, 0), 0, 0))
}

/// What, besides a plugin file itself, its admission depends on: its
/// signature file's version and the lock file's. A failure remembered for
/// a file is looked at again when this changes (a `.minisig` appears, the
/// lock file is rewritten by `connhost lock --add`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    signature: Option<FileStamp>,
    lock: u64,
}

/// The lock file as last read.
struct Locked {
    path: PathBuf,
    seen: Option<FileStamp>,
    file: LockFile,
    /// Counts the versions read, for [`Stamp`].
    generation: u64,
}

/// The trust configuration in force for one plugins folder: the keys
/// read, the lock file kept in step with its file.
pub(crate) struct Gate {
    /// The host's user, when permissions are checked.
    host_uid: Option<u32>,
    insecure: bool,
    /// Whether the folder-wide `--insecure-permissions` warning was given.
    warned: bool,
    keys: Option<TrustedKeys>,
    lock: Option<Locked>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("permissions", &!self.insecure)
            .field("keys", &self.keys.as_ref().map(|k| k.keys.len()))
            .field("locked", &self.lock.is_some())
            .finish()
    }
}

/// Reads the lock file at `path`, checking its permissions with `host_uid`.
fn read_lock(path: &Path, host_uid: Option<u32>) -> Result<LockFile, TrustError> {
    let text_and_metadata = std::fs::File::open(path).and_then(|mut file| {
        use std::io::Read as _;
        let metadata = file.metadata()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok((text, metadata))
    });
    let (text, metadata) = text_and_metadata.map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "--locked is set, but there is no lock file {}; create it with `connhost lock` (it records the plugin files that load now), or point --lock-file at it",
                path.display()
            )
        } else {
            format!("the lock file {} cannot be read: {e}", path.display())
        };
        TrustError::new(path, reason)
    })?;
    if let Some(uid) = host_uid {
        permissions::check(path, &metadata, Subject::LockFile, uid)
            .map_err(|reason| TrustError::new(path, reason))?;
    }
    LockFile::parse(&text, path)
}

impl Gate {
    /// The gate for the plugins folder `dir`: reads the trusted keys and,
    /// under `locked`, the lock file.
    pub(crate) fn new(config: &TrustConfig, dir: &Path) -> Result<Self, TrustError> {
        let insecure = !config.check_permissions;
        let host_uid = if insecure {
            None
        } else {
            permissions::host_uid()
        };
        let keys = config
            .trusted_keys
            .as_deref()
            .map(|keys| signature::load_keys(keys, host_uid))
            .transpose()?;
        let lock = match config.lock_path(Some(dir)) {
            Some(path) if config.locked => Some(Locked {
                seen: file_stamp(&path),
                file: read_lock(&path, host_uid)?,
                path,
                generation: 0,
            }),
            _ => None,
        };
        Ok(Self {
            host_uid,
            insecure,
            warned: false,
            keys,
            lock,
        })
    }

    /// Before each rescan: checks the plugins folder `dir`'s permissions
    /// (the refusal in words), and reads the lock file again if it
    /// changed. A lock file that can no longer be read keeps the last
    /// good one in force, with a warning.
    pub(crate) fn prepare(&mut self, dir: &Path) -> Result<(), String> {
        if self.insecure && !self.warned {
            self.warned = true;
            let mut unchecked = vec![format!("the plugins folder {}", dir.display())];
            unchecked.extend(
                self.keys
                    .as_ref()
                    .map(|k| format!("the trusted keys in {}", k.dir.display())),
            );
            unchecked.extend(
                self.lock
                    .as_ref()
                    .map(|l| format!("the lock file {}", l.path.display())),
            );
            tracing::warn!(
                "--insecure-permissions: not checking who may write {}, nor the plugin files in it; anyone who can write them can run code in this host",
                unchecked.join(", ")
            );
        }
        if let Some(lock) = &mut self.lock {
            let now = file_stamp(&lock.path);
            if now != lock.seen {
                lock.seen = now;
                match read_lock(&lock.path, self.host_uid) {
                    Ok(file) => {
                        tracing::info!(lock_file = %lock.path.display(), files = file.entries.len(), "the lock file changed; files it refused are examined again");
                        lock.file = file;
                        lock.generation += 1;
                    }
                    Err(e) => tracing::warn!(
                        "{e}; the lock file read before stays in force ({} files)",
                        lock.file.entries.len()
                    ),
                }
            }
        }
        let Some(uid) = self.host_uid else {
            return Ok(());
        };
        match std::fs::metadata(dir) {
            Ok(metadata) => permissions::check(dir, &metadata, Subject::PluginsFolder, uid),
            // Listing it will say what is wrong.
            Err(_) => Ok(()),
        }
    }

    /// What the admission of `plugin` depends on besides the file itself.
    pub(crate) fn stamp(&self, plugin: &Path) -> Stamp {
        Stamp {
            signature: self
                .keys
                .as_ref()
                .and_then(|_| file_stamp(&signature::signature_path(plugin))),
            lock: self.lock.as_ref().map_or(0, |l| l.generation),
        }
    }

    /// Checks the permissions of the plugin file `path` from the opened
    /// descriptor's `metadata` (the file a link leads to).
    pub(crate) fn check_file(
        &self,
        path: &Path,
        metadata: &std::fs::Metadata,
    ) -> Result<(), LoadFailure> {
        if self.insecure {
            tracing::warn!(path = %path.display(), "--insecure-permissions: not checked who may write this plugin file before loading it");
            return Ok(());
        }
        let Some(uid) = self.host_uid else {
            return Ok(());
        };
        permissions::check(path, metadata, Subject::PluginFile, uid).map_err(|reason| {
            LoadFailure::new(
                path,
                FailureKind::InsecurePermissions,
                format!("{reason}; it was not loaded."),
            )
        })
    }

    /// With trusted keys, the signature of `plugin` made by one of them
    /// (not yet checked against its bytes); `None` without keys.
    pub(crate) fn signature_of(&self, plugin: &Path) -> Result<Option<Signed>, LoadFailure> {
        self.keys
            .as_ref()
            .map(|keys| keys.signature_of(plugin))
            .transpose()
    }

    /// Under `--locked`, whether the lock file admits `plugin` with this
    /// `digest`; returns whether it was locked.
    fn lock_admits(&self, plugin: &Path, digest: &str) -> Result<bool, LoadFailure> {
        let Some(lock) = &self.lock else {
            return Ok(false);
        };
        let name = plugin.file_name().unwrap_or_default().to_string_lossy();
        lock.file
            .admits(&lock.path, &name, digest)
            .map(|()| true)
            .map_err(|reason| {
                LoadFailure::new(
                    plugin,
                    FailureKind::NotLocked,
                    format!("{reason}. It was not loaded."),
                )
            })
    }
}

/// Checks a plugin file's bytes as they are copied (or, for a copy made
/// earlier, read again): its SHA-256 digest when the lock file or the
/// caller needs it, and, with a signature not verified before, the
/// signature.
pub(crate) struct Admission<'a> {
    sha256: Option<sha2::Sha256>,
    signed: Option<&'a Signed>,
    verifier: Option<minisign_verify::StreamVerifier<'a>>,
    /// The signature verified this very copy before (its text is the one
    /// recorded with it).
    verified_before: bool,
}

impl<'a> Admission<'a> {
    /// Starts checking a file signed with `signed` (`None`: no keys),
    /// hashing it if the lock file is in force or `digest_wanted`.
    pub(crate) fn new(gate: &Gate, signed: Option<&'a Signed>, digest_wanted: bool) -> Self {
        Self {
            sha256: (digest_wanted || gate.lock.is_some()).then(sha2::Sha256::new),
            signed,
            verifier: signed.and_then(Signed::verifier),
            verified_before: false,
        }
    }

    /// Starts checking a copy made earlier, whose digest is `known` (if it
    /// was computed) and which the signature file text `verified_text`
    /// verified (if one did): only what is not known yet is read.
    pub(crate) fn of_copy(
        gate: &Gate,
        signed: Option<&'a Signed>,
        known: Option<&str>,
        verified_text: Option<&str>,
    ) -> Self {
        let verified_before =
            signed.is_some_and(|s| verified_text.is_some_and(|text| text == s.text()));
        Self {
            sha256: (gate.lock.is_some() && known.is_none()).then(sha2::Sha256::new),
            signed,
            verifier: signed
                .filter(|_| !verified_before)
                .and_then(Signed::verifier),
            verified_before,
        }
    }

    /// Whether the file's bytes must be fed to it.
    pub(crate) fn reads(&self) -> bool {
        self.sha256.is_some() || self.verifier.is_some()
    }

    /// Feeds the next bytes of the file.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(bytes);
        }
        if let Some(verifier) = &mut self.verifier {
            verifier.update(bytes);
        }
    }

    /// The verdict on the whole file `plugin` (whose digest is `known`, if
    /// it was computed before): its signature must verify, and under
    /// `--locked` its digest must be the locked one. The trust's `digest`
    /// is empty when neither this check nor an earlier one computed it.
    pub(crate) fn finish(
        self,
        gate: &Gate,
        plugin: &Path,
        known: Option<&str>,
    ) -> Result<PluginTrust, LoadFailure> {
        let digest = match self.sha256 {
            Some(sha256) => crate::cache_dir::sha256_digest(sha256),
            None => known.unwrap_or_default().to_owned(),
        };
        let signature = match self.signed {
            Some(signed) if self.verified_before => Some(signed.info()),
            Some(signed) => Some(signed.finish(plugin, self.verifier)?),
            None => None,
        };
        let locked = gate.lock_admits(plugin, &digest)?;
        Ok(PluginTrust {
            digest,
            locked,
            signature,
        })
    }
}
