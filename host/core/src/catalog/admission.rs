//! Admission: the trust gate's checks on one opened plugin file, in one
//! order, then its copy into the cache with its bytes checked as they are
//! copied. The folder (for each new or changed file) and `inspect` (for
//! one file) both go through here, so a file is refused by the same steps
//! in the same words wherever it is looked at.
//!
//! The order: who may write the file that is read (a link's target, from
//! the opened descriptor), with trusted keys that its signature file is
//! there, its headers (a regular file under the size limit, a complete
//! shared library); then, while it is copied, the signature on the bytes
//! copied and their SHA-256 digest against the lock file. Only the copy is
//! ever loaded.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};

use crate::cache_dir;
use crate::library::check_opened;
use crate::model::report::LoadFailure;
use crate::model::trust::PluginTrust;
use crate::trust::signature::Signed;
use crate::trust::{Admission, Gate};

/// Which check refused a file before it was copied.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Its permissions, or its signature file is missing.
    Trust(LoadFailure),
    /// Its headers (it may still be being written, unless it is too big).
    Headers(LoadFailure),
}

/// What is cheap, from the opened descriptor, before anything is copied:
/// who may write it, that a trusted signature is there, its headers.
/// Returns its signature, when trusted keys ask for one.
pub(crate) fn check_before_copy(
    gate: &Gate,
    path: &Path,
    file: &File,
    metadata: &Metadata,
    max_size: u64,
) -> Result<Option<Signed>, Refused> {
    let signed = gate
        .check_file(path, metadata)
        .and_then(|()| gate.signature_of(path))
        .map_err(Refused::Trust)?;
    check_opened(path, file, max_size).map_err(Refused::Headers)?;
    Ok(signed)
}

/// A copy in the cache, and the gate's decision on its bytes.
pub(crate) struct Copied {
    /// The content hash the copy is named by.
    pub(crate) hash: String,
    /// The copy.
    pub(crate) copy: PathBuf,
    /// What was admitted (digest, lock, signature), or why it was refused
    /// on its bytes (then the copy must not be loaded).
    pub(crate) admitted: Result<PluginTrust, LoadFailure>,
}

/// Copies the checked descriptor `file` of `path` into `cache`, hashing
/// what is written and checking it against `signed` and the lock file.
pub(crate) fn copy_checked(
    gate: &Gate,
    path: &Path,
    file: &mut File,
    signed: Option<&Signed>,
    cache: &Path,
) -> std::io::Result<Copied> {
    let mut admission = Admission::new(signed);
    let (hash, copy) =
        cache_dir::copy_into_observed(cache, file, &mut |bytes| admission.update(bytes))?;
    Ok(Copied {
        hash,
        copy,
        admitted: admission.finish(gate, path),
    })
}
