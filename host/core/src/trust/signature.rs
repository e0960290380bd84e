//! Detached minisign signatures (`libfoo.so.minisig`, made by the
//! `minisign` tool or `rsign2`) checked against a folder of trusted public
//! keys (`--trusted-keys DIR`, the `*.pub` files `minisign -G` writes).
//!
//! A signature is read and matched to a trusted key before the plugin file
//! is copied; the file's bytes are then checked as they are copied into the
//! cache ([`crate::cache_dir::copy_into`]), so what the loader later maps
//! is part of exactly what was verified (the copy holds what the loader
//! reads of the file, with the header's unused pointer to the section
//! table zeroed). Key ids are written as the minisign
//! tool prints them (`key_id_text`). The signer's trusted comment is
//! shown, never interpreted, except that a `file:NAME` in it that names
//! another file helps explain a mismatch.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use minisign_verify::{PublicKey, Signature, StreamVerifier};

use crate::model::report::{FailureKind, LoadFailure};
use crate::model::trust::{SignatureInfo, TrustError};
use crate::permissions::{self, Subject};

/// The largest key or signature file read (both are a few hundred bytes).
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// The suffix of a plugin file's signature: `libfoo.so.minisig`.
pub(crate) const SIGNATURE_SUFFIX: &str = ".minisig";

/// One trusted public key.
#[derive(Debug, Clone)]
pub(crate) struct TrustedKey {
    /// Its key id, as minisign prints it.
    pub id: String,
    /// The file it was read from.
    pub file: PathBuf,
    key: PublicKey,
}

/// The trusted public keys of a `--trusted-keys` folder.
#[derive(Debug, Clone)]
pub(crate) struct TrustedKeys {
    /// The folder.
    pub dir: PathBuf,
    /// Its keys, by file name.
    pub keys: Vec<TrustedKey>,
}

/// A plugin file's signature, made by a trusted key, not yet checked
/// against the file's bytes.
pub(crate) struct Signed {
    path: PathBuf,
    signature: Signature,
    key: TrustedKey,
    /// The signature file's text, as read.
    text: String,
}

/// The signature file of the plugin file `plugin`.
pub(crate) fn signature_path(plugin: &Path) -> PathBuf {
    let mut name = plugin.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// The key id in the base64 line of a minisign key or signature (bytes 2
/// to 10, a little-endian number), as the minisign tool prints it.
fn key_id_of(base64_line: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_line.trim())
        .ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(key_id_text(u64::from_le_bytes(id)))
}

/// A key id as the minisign tool prints it (`minisign public key
/// C3D7BC1A2C829CA` in the `.pub` file it writes, C's `%PRIX64`): upper-case
/// hex digits without leading zeros, so an id whose top digit is zero has
/// fewer than 16. (The minisign crate, which rsign2 is built on, pads the
/// same id to 16 digits, `0C3D7BC1A2C829CA`, in the comments it writes;
/// connhost reads ids from the keys and signatures themselves, never from
/// those comments, and always writes them the tool's way.)
fn key_id_text(id: u64) -> String {
    format!("{id:X}")
}

/// Reads a small regular file (a key, a signature) without ever blocking,
/// returning its text and the descriptor's metadata.
fn read_small(path: &Path) -> std::io::Result<(String, std::fs::Metadata)> {
    use std::io::Read as _;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.len() > MAX_SMALL_FILE {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than a minisign file ever holds",
            metadata.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_SMALL_FILE).read_to_string(&mut text)?;
    Ok((text, metadata))
}

/// Reads the trusted keys of `dir`: every `*.pub` file in it (other files
/// are ignored). With `host_uid`, the folder and each key file must pass
/// the [permission checks](permissions). A missing or unreadable folder, a
/// folder without keys, or a file that is not a minisign public key is an
/// error naming the file.
pub(crate) fn load_keys(dir: &Path, host_uid: Option<u32>) -> Result<TrustedKeys, TrustError> {
    let error = |path: &Path, reason: String| TrustError::new(path, reason);
    let metadata = std::fs::metadata(dir).map_err(|e| {
        error(
            dir,
            format!(
                "the trusted keys folder {} cannot be read ({e}); point --trusted-keys (CONNHOST_TRUSTED_KEYS) at the folder of minisign public keys (*.pub)",
                dir.display()
            ),
        )
    })?;
    if !metadata.is_dir() {
        return Err(error(
            dir,
            format!(
                "the trusted keys folder {} is not a folder; --trusted-keys takes a folder of minisign public keys (*.pub)",
                dir.display()
            ),
        ));
    }
    if let Some(uid) = host_uid {
        permissions::check(dir, &metadata, Subject::KeysFolder, uid)
            .map_err(|reason| error(dir, reason))?;
    }
    let listing = std::fs::read_dir(dir).map_err(|e| {
        error(
            dir,
            format!(
                "the trusted keys folder {} cannot be listed: {e}",
                dir.display()
            ),
        )
    })?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    files.sort();
    let mut keys = Vec::new();
    for file in files {
        keys.push(load_key(&file, host_uid)?);
    }
    if keys.is_empty() {
        return Err(error(
            dir,
            format!(
                "the trusted keys folder {} holds no public key (*.pub); add the key.pub that `minisign -G -p key.pub -s key.sec` wrote",
                dir.display()
            ),
        ));
    }
    Ok(TrustedKeys {
        dir: dir.to_owned(),
        keys,
    })
}

/// Reads one public key file.
fn load_key(file: &Path, host_uid: Option<u32>) -> Result<TrustedKey, TrustError> {
    let (text, metadata) = read_small(file).map_err(|e| {
        TrustError::new(
            file,
            format!(
                "the trusted key file {} cannot be read: {e}",
                file.display()
            ),
        )
    })?;
    if let Some(uid) = host_uid {
        permissions::check(file, &metadata, Subject::KeyFile, uid)
            .map_err(|reason| TrustError::new(file, reason))?;
    }
    let malformed = || {
        TrustError::new(
            file,
            format!(
                "the trusted key file {} is not a minisign public key: expected the two lines `minisign -G` writes (`untrusted comment: ...`, then the base64 key)",
                file.display()
            ),
        )
    };
    let key = PublicKey::decode(&text).map_err(|_| malformed())?;
    let id = text
        .lines()
        .nth(1)
        .and_then(key_id_of)
        .ok_or_else(malformed)?;
    Ok(TrustedKey {
        id,
        file: file.to_owned(),
        key,
    })
}

impl TrustedKeys {
    /// The trusted key ids, with their files' names: `A1B2... (alice.pub)`.
    pub(crate) fn describe(&self) -> String {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "{} ({})",
                    k.id,
                    k.file.file_name().unwrap_or_default().to_string_lossy()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads the signature of `plugin` and finds the trusted key that made
    /// it. Refuses an unsigned file, a malformed or legacy signature, and a
    /// signature by a key that is not trusted, each with its reason.
    pub(crate) fn signature_of(&self, plugin: &Path) -> Result<Signed, LoadFailure> {
        let path = signature_path(plugin);
        let name = file_name(plugin);
        let sig_name = file_name(&path);
        let text = match read_small(&path) {
            Ok((text, _)) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadFailure::new(
                    plugin,
                    FailureKind::Unsigned,
                    format!(
                        "not signed: there is no {sig_name} next to it, and with --trusted-keys only files signed by a trusted key load (trusted: {}). Sign it with `minisign -Sm {name} -s KEY.sec` using the secret key of one of them.",
                        self.describe()
                    ),
                ))
            }
            Err(e) => {
                return Err(LoadFailure::new(
                    plugin,
                    FailureKind::BadSignature,
                    format!("its signature {sig_name} cannot be read ({e}), so it was not loaded."),
                ))
            }
        };
        let malformed = |what: &str| {
            LoadFailure::new(
                plugin,
                FailureKind::BadSignature,
                format!(
                    "its signature {sig_name} is {what}, so it was not loaded. Sign the file again with `minisign -Sm {name} -s KEY.sec`."
                ),
            )
        };
        let signature = Signature::decode(&text).map_err(|_| {
            malformed("not a minisign signature (expected four lines: an untrusted comment, the base64 signature, `trusted comment: ...`, the base64 global signature)")
        })?;
        let line = text.lines().nth(1).unwrap_or_default();
        let algorithm = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .ok()
            .and_then(|b| b.get(..2).map(<[u8]>::to_vec));
        if algorithm.as_deref() == Some(b"Ed") {
            return Err(malformed(
                "in minisign's legacy format (signed with -l), which is not accepted",
            ));
        }
        let key_id = key_id_of(line).ok_or_else(|| malformed("not a minisign signature"))?;
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Err(LoadFailure::new(
                plugin,
                FailureKind::UntrustedKey,
                format!(
                    "signed by key {key_id}, which is not a trusted key (trusted, in {}: {}), so it was not loaded. Sign it with a trusted key, or add the signer's public key to that folder if you trust it.",
                    self.dir.display(),
                    self.describe()
                ),
            ));
        };
        Ok(Signed {
            path,
            signature,
            key: key.clone(),
            text,
        })
    }
}

/// A file's name, for messages.
fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

impl Signed {
    /// The signature file's text, as read.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// A verifier to feed the file's bytes to.
    pub(crate) fn verifier(&self) -> Option<StreamVerifier<'_>> {
        // Only prehashed signatures reach here, made by this key: neither
        // of the errors verify_stream knows can happen.
        self.key.key.verify_stream(&self.signature).ok()
    }

    /// What the signature says, once verified.
    pub(crate) fn info(&self) -> SignatureInfo {
        SignatureInfo {
            key_id: self.key.id.clone(),
            trusted_comment: self.signature.trusted_comment().to_owned(),
        }
    }

    /// Finishes checking the bytes fed to `verifier` (`None`: it could not
    /// be made), refusing a file whose content the signature does not
    /// cover.
    pub(crate) fn finish(
        &self,
        plugin: &Path,
        verifier: Option<StreamVerifier<'_>>,
    ) -> Result<SignatureInfo, LoadFailure> {
        let verified = verifier.is_some_and(|mut v| v.finalize().is_ok());
        if verified {
            return Ok(self.info());
        }
        let name = file_name(plugin);
        let comment = self.signature.trusted_comment();
        // minisign's default trusted comment names the file it signed.
        let other_file = comment
            .split('\t')
            .find_map(|part| part.strip_prefix("file:"))
            .filter(|signed| *signed != name)
            .map(|signed| format!(" (its trusted comment says it signed {signed})"))
            .unwrap_or_default();
        Err(LoadFailure::new(
            plugin,
            FailureKind::BadSignature,
            format!(
                "its signature {} (key {}, trusted comment \"{comment}\") does not match the file's content: the file was changed after it was signed, or the signature is another file's{other_file}. It was not loaded; sign the file again, or put back the file that was signed.",
                file_name(&self.path),
                self.key.id,
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_read_as_minisign_prints_them() {
        // From `minisign -G`: "untrusted comment: minisign public key 4BD7A079B2011681".
        assert_eq!(
            key_id_of("RWSBFgGyeaDXS0ZPo8DLo3sjBMx8Y+BMTwzSIWkFDmjQLVVKUJ1AjAlX").as_deref(),
            Some("4BD7A079B2011681")
        );
        assert_eq!(key_id_of("not base64!"), None);
    }

    #[test]
    fn key_ids_have_no_leading_zeros_as_the_minisign_tool_prints_them() {
        // From `minisign -G` (0.11): "untrusted comment: minisign public
        // key 915ACB7151CF0EE", a key id whose top digit is zero.
        assert_eq!(
            key_id_of("RWTu8BwVt6wVCQ6156C94eCcscRy8CK9y0ZY1NetbxqzdIJdLaO81SKm").as_deref(),
            Some("915ACB7151CF0EE")
        );
        // And its signature (the line after the untrusted comment).
        assert_eq!(
            key_id_of("RUTu8BwVt6wVCbjzB/2GMVRkzRmzKK42zNW7EzRb+qT4QRPYnOOG1LVx6NgB5T7GU/4T+gQFTS/xtjbwE3GZ0oiz1uY49L1vEAg=").as_deref(),
            Some("915ACB7151CF0EE")
        );
        assert_eq!(key_id_text(0x0C3D_7BC1_A2C8_29CA), "C3D7BC1A2C829CA");
        assert_eq!(key_id_text(0x00FF), "FF");
        assert_eq!(key_id_text(u64::MAX), "FFFFFFFFFFFFFFFF");
    }

    #[test]
    fn the_signature_sits_next_to_the_file() {
        assert_eq!(
            signature_path(Path::new("/p/libfoo.so")),
            Path::new("/p/libfoo.so.minisig")
        );
    }

    #[test]
    fn a_key_folder_with_a_malformed_key_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README"), "ignored").unwrap();
        let err = load_keys(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("holds no public key"), "{err}");
        let bad = dir.path().join("alice.pub");
        std::fs::write(&bad, "untrusted comment: x\nnot-a-key\n").unwrap();
        let err = load_keys(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert!(err.contains("is not a minisign public key"), "{err}");
        std::fs::write(
            &bad,
            "untrusted comment: minisign public key 4BD7A079B2011681\nRWSBFgGyeaDXS0ZPo8DLo3sjBMx8Y+BMTwzSIWkFDmjQLVVKUJ1AjAlX\n",
        )
        .unwrap();
        let keys = load_keys(dir.path(), None).unwrap();
        assert_eq!(keys.describe(), "4BD7A079B2011681 (alice.pub)");
        let missing = dir.path().join("nope");
        let err = load_keys(&missing, None).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }
}
