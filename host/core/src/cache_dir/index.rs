//! What a kept cache folder remembers between starts: for each plugin file
//! loaded, the version of it that was copied (device, inode, size, times of
//! last change), the copy made of it, and what was checked about the copy
//! (its digest, the signature that verified it). A restart that finds a
//! file unchanged maps the remembered copy directly: no read, no copy, no
//! hash.
//!
//! **An entry is used only when it cannot be anyone else's**: the index
//! and the copy are opened relative to the folder's own descriptor without
//! following a link, the index must be this user's and writable by no one
//! else, the copy a regular file of this user's, read-only for everyone
//! (0444), with one name, and still the very file the index recorded (its
//! device, inode, size and times of last change; a file written or
//! replaced since, by anyone, has a new change time). The folder itself is
//! checked to be the host's alone before anything is read from it
//! ([`super::prepare_given`]). The source file must also be the version
//! recorded (its change time included, which no one can set), and every
//! trust check that does not need the file's bytes (who may write it, its
//! signature file, the lock file) runs again on every start; a signature
//! is taken as verified only if its file holds the very text that
//! verified this copy.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::{effective_uid, is_cache_file_name, is_digest, open_folder, CachedCopy};

/// The index's name in the cache folder.
pub(crate) const INDEX_FILE: &str = "connhost-cache-index.json";

/// The index's format: an index of another format is not read (the next
/// scan copies every file again and writes one of this format).
const FORMAT: u32 = 1;

/// The largest index read (an index of 100 plugins is about 60 KiB).
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// What identifies a version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileId {
    /// Its filesystem.
    pub(crate) device: u64,
    /// Its inode.
    pub(crate) inode: u64,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its last modification (seconds, nanoseconds).
    pub(crate) modified: (i64, i64),
    /// Its last status change (seconds, nanoseconds), which only the
    /// kernel sets.
    pub(crate) changed: (i64, i64),
}

impl FileId {
    /// The version `metadata` describes.
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// One plugin file the cache remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    /// The plugin file, as the folder lists it.
    pub(crate) source: String,
    /// The version of it that was copied.
    pub(crate) source_id: FileId,
    /// The copy's name in the cache folder.
    pub(crate) copy: String,
    /// The copy as it was made.
    pub(crate) copy_id: FileId,
    /// The copy's digest (`sha256:` and 64 hex digits), if it was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<String>,
    /// The text of the signature file that verified the copy, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<String>,
    /// The host executable whose header and layout checks the copy passed
    /// when it was loaded in process (`crate::library::host_identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checked_by: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    format: u32,
    entries: Vec<Remembered>,
}

/// What a cache folder remembers (nothing, when it has no index, or one
/// that cannot be trusted or read).
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: Vec<Remembered>,
    /// Where each plugin file's entry is in `entries`.
    by_source: std::collections::HashMap<String, usize>,
    /// The cache folder the index was read from, opened once for opening
    /// the copies it names.
    folder: Option<std::os::fd::OwnedFd>,
}

impl Index {
    /// Reads the index of the cache folder `cache`. Anything wrong with it
    /// (missing, not this user's, writable by others, a link, too big,
    /// not an index of this format) gives an empty index, and the reason
    /// in the debug log: every file is then copied again.
    pub(crate) fn read(cache: &Path) -> Self {
        let read = open_folder(cache).and_then(|folder| {
            let entries = read_index_in(&folder)?;
            Ok((folder, entries))
        });
        match read {
            Ok((folder, entries)) => Self {
                by_source: entries
                    .iter()
                    .enumerate()
                    .map(|(n, e)| (e.source.clone(), n))
                    .collect(),
                entries,
                folder: Some(folder),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                tracing::debug!(folder = %cache.display(), "not using the plugin cache's index: {e}");
                Self::default()
            }
        }
    }

    /// What it remembers of the files of the plugins folder `dir`, in the
    /// order it was written.
    pub(crate) fn of_folder(&self, dir: &Path) -> Vec<Remembered> {
        let Ok(dir) = std::path::absolute(dir) else {
            return Vec::new();
        };
        self.entries
            .iter()
            .filter(|e| Path::new(&e.source).parent() == Some(dir.as_path()))
            .cloned()
            .collect()
    }

    /// How many files it remembers.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for the plugin file `source` at version `id`, if the
    /// index remembers that version.
    pub(crate) fn find(&self, source: &Path, id: &FileId) -> Option<&Remembered> {
        let entry = &self.entries[*self.by_source.get(&key(source)?)?];
        (entry.source_id == *id).then_some(entry)
    }

    /// Opens the copy `remembered` names in `cache` (the folder this index
    /// was read from), if it is still the host's own and the very file
    /// recorded (see the [module documentation](self)); its digest is the
    /// one recorded.
    pub(crate) fn open(&self, cache: &Path, remembered: &Remembered) -> Option<CachedCopy> {
        let folder = self.folder.as_ref()?;
        match open_copy(cache, folder, remembered) {
            Ok(copy) => Some(copy),
            Err(reason) => {
                tracing::debug!(folder = %cache.display(), copy = remembered.copy, source = remembered.source, "not using the remembered copy: {reason}");
                None
            }
        }
    }

    /// Writes the index of `cache` anew with `entries` for the plugins
    /// folder `dir` (a new file renamed over the old one; what it
    /// remembered of files in other folders is kept), then removes the
    /// copies the old index named and the new one does not (the copies of
    /// files no longer loaded: libraries still mapped stay mapped), and
    /// copies no index names once they are an hour old. Returns how many
    /// copies were removed.
    pub(crate) fn write(
        cache: &Path,
        dir: &Path,
        mut entries: Vec<Remembered>,
    ) -> io::Result<usize> {
        let dir = std::path::absolute(dir)?;
        let before = read_index(cache).unwrap_or_default();
        let named_before: HashSet<String> = before.iter().map(|e| e.copy.clone()).collect();
        entries.extend(
            before
                .into_iter()
                .filter(|e| Path::new(&e.source).parent() != Some(dir.as_path())),
        );
        let kept: HashSet<String> = entries.iter().map(|e| e.copy.clone()).collect();
        let folder = open_folder(cache)?;
        let text = serde_json::to_vec(&IndexFile {
            format: FORMAT,
            entries,
        })
        .map_err(io::Error::other)?;
        let (partial, mut out) = super::create_partial(&folder)?;
        let written = (|| {
            use std::io::Write as _;
            out.write_all(&text)?;
            rustix::fs::renameat(&folder, partial.as_str(), &folder, INDEX_FILE)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&folder, partial.as_str(), AtFlags::empty());
            return Err(e);
        }
        Ok(prune(&folder, &kept, &named_before))
    }
}

/// A copy no index ever named is removed only once it is this old: it may
/// be another process's, made a moment ago and not in its index yet.
const UNNAMED_COPY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes from `folder` the copies (regular files, or links, named as
/// the cache names its copies; a link is removed, never followed) not in
/// `kept`: those the index named before at once, others once they are
/// [`UNNAMED_COPY_AGE`] old (a crashed process's). Copies in progress are
/// left to the copier.
fn prune(
    folder: &std::os::fd::OwnedFd,
    kept: &HashSet<String>,
    named_before: &HashSet<String>,
) -> usize {
    let Ok(entries) = rustix::fs::Dir::read_from(folder) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if !is_cache_file_name(name)
            || name.starts_with('.')
            || name == INDEX_FILE
            || kept.contains(name)
        {
            continue;
        }
        let Ok(stat) = rustix::fs::statat(folder, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let removable = matches!(
            FileType::from_raw_mode(stat.st_mode),
            FileType::RegularFile | FileType::Symlink
        );
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(stat.st_ctime).unwrap_or(0));
        let old = now
            .duration_since(changed)
            .is_ok_and(|age| age >= UNNAMED_COPY_AGE);
        if removable
            && (named_before.contains(name) || old)
            && rustix::fs::unlinkat(folder, name, AtFlags::empty()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Reads and parses the index of the cache folder `cache`, if it is the
/// host's own.
fn read_index(cache: &Path) -> io::Result<Vec<Remembered>> {
    read_index_in(&open_folder(cache)?)
}

/// Reads and parses the index in the opened cache folder `folder`, if it
/// is the host's own.
fn read_index_in(folder: &std::os::fd::OwnedFd) -> io::Result<Vec<Remembered>> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let file = std::fs::File::from(rustix::fs::openat(
        folder,
        INDEX_FILE,
        flags,
        Mode::empty(),
    )?);
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    if metadata.uid() != effective_uid() {
        return Err(io::Error::other(format!(
            "it is owned by uid {}, not by this host's user",
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "others may write it (mode {:04o})",
            metadata.mode() & 0o7777
        )));
    }
    if metadata.len() > MAX_INDEX_BYTES {
        return Err(io::Error::other("it is too big"));
    }
    // Sized from the metadata: one read, where growing from nothing took
    // one read per doubling.
    let mut text = Vec::with_capacity(metadata.len() as usize + 1);
    file.take(MAX_INDEX_BYTES).read_to_end(&mut text)?;
    let index: IndexFile = serde_json::from_slice(&text).map_err(io::Error::other)?;
    if index.format != FORMAT {
        return Err(io::Error::other(format!(
            "its format is {}, not {FORMAT}",
            index.format
        )));
    }
    Ok(index.entries)
}

/// Opens a remembered copy in the opened cache folder `folder` (whose path
/// is `cache`), if it is still the host's own and unchanged.
fn open_copy(
    cache: &Path,
    folder: &std::os::fd::OwnedFd,
    remembered: &Remembered,
) -> Result<CachedCopy, String> {
    use std::os::unix::fs::MetadataExt as _;
    let name = &remembered.copy;
    if !is_cache_file_name(name) || name.starts_with('.') {
        return Err("the index names no copy of the cache's".to_owned());
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let file = rustix::fs::openat(folder, name.as_str(), flags, Mode::empty())
        .map(std::fs::File::from)
        .map_err(|e| io::Error::from(e).to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    let id = FileId::of(&metadata);
    if !metadata.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    if metadata.uid() != effective_uid() {
        return Err(format!(
            "it is owned by uid {}, not by this host's user",
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o7777 != 0o444 {
        return Err(format!(
            "its mode is {:04o}, not 0444",
            metadata.mode() & 0o7777
        ));
    }
    if metadata.nlink() != 1 {
        return Err(format!("it has {} names", metadata.nlink()));
    }
    if id != remembered.copy_id {
        return Err("it is not the file the index recorded (changed or replaced since)".to_owned());
    }
    // A copy of what the loader reads of its file is shorter than the file.
    let original = match id.size.cmp(&remembered.source_id.size) {
        std::cmp::Ordering::Less => Some(super::Original {
            path: remembered.source.clone().into(),
            id: remembered.source_id,
        }),
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => return Err("it is larger than its plugin file".to_owned()),
    };
    let digest = std::sync::OnceLock::new();
    if let Some(known) = remembered.digest.as_ref().filter(|d| is_digest(d)) {
        let _ = digest.set(known.clone());
    }
    Ok(CachedCopy {
        name: name.clone(),
        path: cache.join(name),
        file,
        id,
        digest,
        original,
    })
}

/// How the index names a plugin file: its absolute path (so that a
/// command started from another folder finds it), when it is text.
fn key(source: &Path) -> Option<String> {
    std::path::absolute(source)
        .ok()?
        .to_str()
        .map(str::to_owned)
}

impl CachedCopy {
    /// What the index records of this copy, made of the plugin file
    /// `source` at version `source_id`, verified by the signature file
    /// text `signature` (if one), loaded in process by the host executable
    /// `checked_by` (if it was).
    pub(crate) fn remembered(
        &self,
        source: &Path,
        source_id: FileId,
        signature: Option<String>,
        checked_by: Option<String>,
    ) -> Option<Remembered> {
        Some(Remembered {
            source: key(source)?,
            source_id,
            copy: self.name.clone(),
            copy_id: self.id,
            digest: self.known_digest().map(str::to_owned),
            signature,
            checked_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn private() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// A copy of `bytes` in `cache`, remembered as made of `source`.
    fn remembered_copy(cache: &Path, source: &Path, bytes: &[u8]) -> (CachedCopy, Remembered) {
        std::fs::write(source, bytes).unwrap();
        let file = std::fs::File::open(source).unwrap();
        let copy = super::super::copy_into(cache, source, &file, None, None).unwrap();
        let id = FileId::of(&std::fs::metadata(source).unwrap());
        let remembered = copy.remembered(source, id, None, None).unwrap();
        (copy, remembered)
    }

    #[test]
    fn what_is_written_is_found_by_source_and_version_and_opened_only_while_unchanged() {
        let (cache, plugins) = (private(), tempfile::tempdir().unwrap());
        let source = plugins.path().join("liba.so");
        let (copy, remembered) = remembered_copy(cache.path(), &source, b"library a");
        copy.set_digest(format!("sha256:{}", "ab".repeat(32)));
        let remembered = copy
            .remembered(&source, remembered.source_id, None, None)
            .unwrap();
        assert_eq!(
            Index::write(cache.path(), plugins.path(), vec![remembered.clone()]).unwrap(),
            0
        );

        let index = Index::read(cache.path());
        assert_eq!(index.len(), 1);
        assert_eq!(index.of_folder(plugins.path()), vec![remembered.clone()]);
        let found = index.find(&source, &remembered.source_id).unwrap();
        let opened = index.open(cache.path(), found).unwrap();
        assert_eq!(opened.known_digest(), copy.known_digest());
        let mut other = remembered.source_id;
        other.changed.1 += 1;
        assert!(index.find(&source, &other).is_none(), "another version");

        // Changed in any way (here: its mode, and back): not opened.
        std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(index.open(cache.path(), found).is_none());
        // A name that is not a copy's is never opened.
        let mut elsewhere = remembered.clone();
        elsewhere.copy = "../liba.so".to_owned();
        assert!(index.open(cache.path(), &elsewhere).is_none());
    }

    #[test]
    fn an_index_of_another_format_or_that_others_may_write_is_not_read() {
        let (cache, plugins) = (private(), tempfile::tempdir().unwrap());
        let source = plugins.path().join("liba.so");
        let (_copy, remembered) = remembered_copy(cache.path(), &source, b"library a");
        Index::write(cache.path(), plugins.path(), vec![remembered]).unwrap();
        let path = cache.path().join(INDEX_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(Index::read(cache.path()).len(), 0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Index::read(cache.path()).len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"format\":1", "\"format\":2")).unwrap();
        assert_eq!(Index::read(cache.path()).len(), 0);
    }

    #[test]
    fn writing_keeps_other_folders_entries_and_removes_only_copies_no_one_remembers() {
        let cache = private();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (copy_a, in_a) = remembered_copy(cache.path(), &a.path().join("liba.so"), b"a");
        let (copy_b, in_b) = remembered_copy(cache.path(), &b.path().join("libb.so"), b"b");
        let (stale, _) = remembered_copy(cache.path(), &a.path().join("libold.so"), b"old");
        let precious = cache.path().join("notes.txt");
        std::fs::write(&precious, b"not the cache's").unwrap();
        Index::write(cache.path(), b.path(), vec![in_b.clone()]).unwrap();
        // Folder a's file, written by another catalog: b's entry is kept,
        // and a's copy (in no index yet when b wrote) was not removed.
        assert_eq!(
            Index::write(cache.path(), a.path(), vec![in_a.clone()]).unwrap(),
            0
        );
        let index = Index::read(cache.path());
        assert_eq!(index.of_folder(a.path()), vec![in_a]);
        assert_eq!(index.of_folder(b.path()), vec![in_b]);
        assert!(copy_a.path().exists() && copy_b.path().exists());
        assert!(stale.path().exists(), "no index named it, and it is new");
        assert!(precious.exists());
        // Folder a no longer loads liba.so: its copy goes.
        assert_eq!(Index::write(cache.path(), a.path(), Vec::new()).unwrap(), 1);
        assert!(!copy_a.path().exists() && copy_b.path().exists());
    }
}
