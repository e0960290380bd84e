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
//! ever loaded. A copy kept from an earlier start goes through the same
//! checks ([`check_copy`]), reading the copy only for what was not checked
//! on it before.

use std::fs::{File, Metadata};
use std::path::Path;

use crate::cache_dir::{self, CachedCopy};
use crate::library::{check_opened, Image};
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

/// What the checks before the copy found out about a file.
pub(crate) struct Checked {
    /// Its signature, when trusted keys ask for one.
    pub(crate) signed: Option<Signed>,
    /// What the loader reads of it, when that is less than all of it.
    pub(crate) image: Option<Image>,
}

/// What is cheap, from the opened descriptor, before anything is copied:
/// who may write it, that a trusted signature is there, its headers.
pub(crate) fn check_before_copy(
    gate: &Gate,
    path: &Path,
    file: &File,
    metadata: &Metadata,
    max_size: u64,
) -> Result<Checked, Refused> {
    let signed = gate
        .check_file(path, metadata)
        .and_then(|()| gate.signature_of(path))
        .map_err(Refused::Trust)?;
    let image = check_opened(path, file, max_size).map_err(Refused::Headers)?;
    Ok(Checked { signed, image })
}

/// A copy in the cache, and the gate's decision on its bytes.
pub(crate) struct Copied {
    /// The copy (its digest known if it was computed as it was copied).
    pub(crate) copy: CachedCopy,
    /// What was admitted (lock, signature, digest if computed), or why it
    /// was refused on its bytes (then the copy must not be loaded).
    pub(crate) admitted: Result<PluginTrust, LoadFailure>,
}

/// Copies the checked descriptor `file` of `path` into `cache` (what the
/// loader reads of it, as `checked` found), checking the whole file's
/// bytes as they are copied against its signature and the lock file. The
/// bytes pass through the host only when something reads them (a
/// signature, the lock file, or `digest_wanted`); otherwise the kernel
/// copies them and no digest is computed yet.
pub(crate) fn copy_checked(
    gate: &Gate,
    path: &Path,
    file: &File,
    checked: &Checked,
    cache: &Path,
    digest_wanted: bool,
) -> std::io::Result<Copied> {
    let mut admission = Admission::new(gate, checked.signed.as_ref(), digest_wanted);
    let copy = if admission.reads() {
        let observe = &mut |bytes: &[u8]| admission.update(bytes);
        cache_dir::copy_into(cache, path, file, checked.image, Some(observe))?
    } else {
        cache_dir::copy_into(cache, path, file, checked.image, None)?
    };
    let admitted = admission.finish(gate, path, None);
    if let Ok(trust) = &admitted {
        if !trust.digest.is_empty() {
            copy.set_digest(trust.digest.clone());
        }
    }
    Ok(Copied { copy, admitted })
}

/// The gate's decision on a copy made at an earlier start (`remembered`:
/// its digest and the signature text that verified it, if known): who
/// may write `path` (its current `metadata`), that a trusted signature is
/// there, and, reading the copy only for what is not known yet, its
/// signature and its digest against the lock file. `None` when the
/// signature is missing or anything is refused: the caller then copies
/// and checks the file anew, which reports the refusal as always.
pub(crate) fn check_copy(
    gate: &Gate,
    path: &Path,
    metadata: &Metadata,
    copy: &CachedCopy,
    verified_text: Option<&str>,
) -> Option<(PluginTrust, Option<String>)> {
    gate.check_file(path, metadata).ok()?;
    let signed = gate.signature_of(path).ok()?;
    let mut admission =
        Admission::of_copy(gate, signed.as_ref(), copy.known_digest(), verified_text);
    if admission.reads() {
        copy.read_all(&mut |bytes| admission.update(bytes)).ok()?;
    }
    let trust = admission.finish(gate, path, copy.known_digest()).ok()?;
    if !trust.digest.is_empty() {
        copy.set_digest(trust.digest.clone());
    }
    Some((trust, signed.map(|s| s.text().to_owned())))
}
