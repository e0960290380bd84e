//! The private copies plugin files are loaded from, the folder that holds
//! them, and keeping that folder from filling the disk.
//!
//! Every plugin file is loaded from a copy, never from the watched path:
//! writing the watched file in place (a careless `cp` over it) cannot
//! change a mapped library under the host, and a new version never gets the
//! dynamic loader's cached old object for a reused path. The copy is made
//! from a descriptor that was checked first ([`copy_into`]) by the kernel
//! (`copy_file_range`), or through the host when its bytes must be hashed
//! or checked against a signature as they are copied, under a new name
//! drawn at random: each copy is its own library. A copy of an ELF file
//! holds only what the system loader reads of it ([`Image`]: the file up
//! to its last segment; the symbols and debug information after it, often
//! most of a file, are never copied), and the whole file's digest is
//! computed from the file itself while it is still the version copied
//! ([`CachedCopy::read_all`]). The catalog copies into its cache folder;
//! `connhost inspect` into a folder of its own, so that inspecting a file
//! never initialises the instance a later real load gets.
//!
//! **The folder is the host's alone.** What is in it is loaded without
//! being checked again, so no one else may be able to put anything there:
//!
//! - By default each catalog creates a folder of its own under the temp
//!   dir ([`create_default`]): `connhost-<pid>-<16 random hex digits>`,
//!   made with one `mkdir` that fails if anything (a folder, a file, a
//!   link) is there already, never reused, mode 0700, owned by the host's
//!   effective user. Its name cannot be guessed, and another user cannot
//!   make it first.
//! - A folder named with `--cache-dir` (`HostConfig::cache_dir`) is
//!   refused unless it is the host's alone ([`prepare_given`]): a real
//!   folder (a symbolic link is refused, never followed), owned by the
//!   host's effective user, writable by no one else, and every folder above
//!   it owned by that user or root and writable by no one else unless its
//!   sticky bit is set (as `/tmp`'s is), in the spirit of sshd's
//!   `StrictModes` ([`crate::permissions`]). A missing one is
//!   created, with its missing parents, each with mode 0700.
//!   `--insecure-permissions` turns the owner and mode checks off (with a
//!   warning), not the refusal of a link.
//! - A copy is written to a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode
//!   0600), relative to the folder's own descriptor (opened without
//!   following a link), made read-only for everyone (0444: a sandboxed
//!   worker running as another user reads its copy through a bind mount,
//!   while the folder's 0700 keeps other users out) and only then renamed
//!   to `<64 random hex digits>.<ext>`. A name already there, a planted
//!   file or link included, is never trusted or followed: the rename
//!   replaces it atomically (a library already mapped keeps its mapping).
//!
//! A default folder is removed when its catalog is dropped (the libraries
//! stay mapped: on Unix a mapped file outlives its name). A folder named
//! with `--cache-dir` is kept, with an index of what it holds
//! ([`index`]), so that the next start maps the copies of unchanged files
//! directly; the copies of files no longer loaded are removed whenever the
//! index is written. A process that is
//! killed (SIGKILL, a crash, a power cut) cannot remove its folder, so the
//! next process sweeps the default folders of processes that no longer run
//! ([`sweep_stale_defaults`]): only real folders (not links) of the host's
//! own user, named as default folders are. Cleaning never follows a link:
//! only regular files named the way the cache names them are ever
//! removed, and a folder only once it is empty, so pointing `--cache-dir`
//! at a folder that holds anything else loses nothing.

use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::library::Image;
use crate::model::trust::TrustError;
use crate::permissions;

pub(crate) mod index;

const PREFIX: &str = "connhost-";

/// How many times a name is drawn again when the one drawn is taken.
const ATTEMPTS: usize = 8;

/// Creates a cache folder of its own for one user in this process (a
/// catalog, an inspection): `<temp dir>/connhost-<pid>-<16 random hex
/// digits>`, with one `mkdir` (never over anything already there), mode
/// 0700 whatever the umask, owned by this process's effective user. One
/// folder per catalog means two catalogs never share (or remove) each
/// other's copies, and each gets its own instance of a library (with its
/// own settings), as two distinct files would. The pid in the name lets
/// a later process sweep the folder once this one is gone
/// ([`sweep_stale_defaults`]); the random part keeps anyone from making
/// it first. The error is the system's, as it came (so that a passing one,
/// such as running out of descriptors, can be told apart); the folder it
/// was to be made in is [`std::env::temp_dir`].
pub(crate) fn create_default() -> io::Result<PathBuf> {
    let (path, created) = try_create_default();
    created.map(|()| path)
}

/// [`create_default`], returning the path it tried even when it failed.
fn try_create_default() -> (PathBuf, io::Result<()>) {
    let temp = std::env::temp_dir();
    let pid = std::process::id();
    let mut path = temp.join(format!("{PREFIX}{pid}-unavailable"));
    let mut error = io::Error::other("every name drawn was taken");
    for _ in 0..ATTEMPTS {
        let random = match random_u64() {
            Ok(random) => random,
            Err(e) => {
                error = e;
                break;
            }
        };
        path = temp.join(default_name(pid, random));
        match make_private_folder(&path) {
            Ok(()) => return (path, Ok(())),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => error = e,
            Err(e) => {
                error = e;
                break;
            }
        }
    }
    (path, Err(error))
}

/// `connhost-<pid>-<random as 16 hex digits>`.
fn default_name(pid: u32, random: u64) -> String {
    format!("{PREFIX}{pid}-{random:016x}")
}

/// The pid in a default folder's name: `connhost-<pid>-<16 hex digits>`,
/// or the older `connhost-<pid>-<n>` and `connhost-<pid>`.
fn default_folder_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, tail) = match rest.split_once('-') {
        Some((pid, tail)) => (pid, Some(tail)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !digits(pid) || !tail.is_none_or(hex) {
        return None;
    }
    pid.parse().ok()
}

/// 64 random bits from the kernel (`getrandom`, or `/dev/urandom` where
/// that system call is missing).
fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    let filled = loop {
        match rustix::rand::getrandom(&mut bytes[..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break 0,
        }
    };
    if filled < bytes.len() {
        use std::io::Read as _;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// The effective user id of this process.
fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates the folder `path` with one `mkdir` (failing if anything is
/// there, a link included), then sets its mode to exactly 0700 from its
/// own descriptor and checks that it is this process's.
fn make_private_folder(path: &Path) -> io::Result<()> {
    rustix::fs::mkdir(path, Mode::RWXU)?;
    let made = (|| {
        let folder = open_folder(path)?;
        let stat = rustix::fs::fstat(&folder)?;
        if stat.st_uid != effective_uid() {
            return Err(io::Error::other(format!(
                "the folder {} just created is owned by uid {}, not by this host's user (uid {})",
                path.display(),
                stat.st_uid,
                effective_uid()
            )));
        }
        rustix::fs::fchmod(&folder, Mode::RWXU)?;
        Ok(())
    })();
    if made.is_err() {
        // Empty: nothing else could have been put in it yet.
        let _ = std::fs::remove_dir(path);
    }
    made
}

/// Opens the folder `path` itself (never a link to one) for working
/// relative to it.
fn open_folder(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty()).map_err(|errno| {
        let error = io::Error::from(errno);
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            io::Error::new(
                error.kind(),
                format!(
                    "{} is a symbolic link, and a plugin cache folder is never reached through one",
                    path.display()
                ),
            )
        } else if error.kind() == io::ErrorKind::NotFound {
            io::Error::new(error.kind(), format!("{} does not exist", path.display()))
        } else {
            error
        }
    })
}

/// Makes the folder the operator named (`--cache-dir`) ready to hold
/// copies, or refuses it unless it is the host's alone. A missing folder
/// is created, with its missing parents, each with mode 0700 (less what
/// the umask takes). Refused: a symbolic link (never followed, whatever
/// `check_permissions` says); with `check_permissions`, a folder not
/// owned by the host's effective user or writable by anyone else, or one
/// under a folder that someone other than that user or root owns or may
/// write without the sticky bit. The refusal names the path, what is
/// wrong (owner, mode) and the fix.
///
/// Something that is no folder at all (a regular file), or a folder that
/// could not be created, is not refused here: every copy into it fails,
/// and says why ([`crate::FailureKind::CacheFailed`]), until it is
/// fixed.
pub(crate) fn prepare_given(dir: &Path, check_permissions: bool) -> Result<(), TrustError> {
    if std::fs::symlink_metadata(dir).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        use std::os::unix::fs::DirBuilderExt as _;
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        match created {
            Ok(()) => tracing::info!(folder = %dir.display(), "created the plugin cache folder"),
            // Every copy says so.
            Err(e) => {
                tracing::debug!(folder = %dir.display(), "could not create the plugin cache folder: {e}")
            }
        }
    }
    check_private(dir, check_permissions).map_err(|reason| TrustError::new(dir, reason))
}

/// Whether the cache folder `dir` is the host's alone, as
/// [`prepare_given`] says, without creating anything: the refusal in
/// words. A folder that cannot be looked at is left to the copies to
/// report.
pub(crate) fn check_private(dir: &Path, check_permissions: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(metadata) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if metadata.file_type().is_symlink() {
        let target = std::fs::canonicalize(dir)
            .map(|t| format!(" (to {})", t.display()))
            .unwrap_or_default();
        return Err(format!(
            "the plugin cache folder {} is a symbolic link{target}, and connhost never follows one there: whoever can change the link could choose what is loaded; name the folder itself",
            dir.display()
        ));
    }
    if !metadata.is_dir() || !check_permissions {
        return Ok(());
    }
    let host_uid = effective_uid();
    permissions::judge_cache_folder(dir, metadata.mode(), metadata.uid(), host_uid)?;
    check_parents(dir, host_uid)
}

/// Checks every folder a lookup of `dir` goes through: the folders above
/// it as written (a link among them judged by the folder it leads to),
/// and the folders above where it really is.
fn check_parents(dir: &Path, host_uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let absolute = std::path::absolute(dir).map_err(|e| {
        format!(
            "cannot tell where the plugin cache folder {} is: {e}",
            dir.display()
        )
    })?;
    let Some(parent) = absolute.parent() else {
        return Ok(()); // the root itself
    };
    let real = std::fs::canonicalize(parent).ok();
    let mut seen = HashSet::new();
    for folder in parent
        .ancestors()
        .chain(real.iter().flat_map(|r| r.ancestors()))
    {
        let Ok(metadata) = std::fs::metadata(folder) else {
            continue; // the copies say what is wrong
        };
        if seen.insert((metadata.dev(), metadata.ino())) {
            permissions::judge_cache_parent(folder, metadata.mode(), metadata.uid(), host_uid)?;
        }
    }
    Ok(())
}

/// The name of a copy whose id (64 hex digits) is `id`.
pub(crate) fn copy_file_name(id: &str) -> String {
    format!("{id}.{}", std::env::consts::DLL_EXTENSION)
}

/// The name of a copy in progress, `n` a number drawn at random.
pub(crate) fn partial_file_name(n: u64) -> String {
    format!(".incoming-{n}.partial")
}

/// Whether `name` is a file the cache creates: a copy
/// (`<64 hex digits>.<library extension>`), a file in progress
/// (`.incoming-<n>.partial`) or the index ([`index::INDEX_FILE`]).
pub(crate) fn is_cache_file_name(name: &str) -> bool {
    let copy = name
        .strip_suffix(std::env::consts::DLL_EXTENSION)
        .and_then(|stem| stem.strip_suffix('.'))
        .is_some_and(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let partial = name
        .strip_prefix(".incoming-")
        .and_then(|rest| rest.strip_suffix(".partial"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    copy || partial || name == index::INDEX_FILE
}

/// Removes the cache's files from `dir`, then `dir` itself if that left it
/// empty. Never follows a link: a `dir` that is a symbolic link is left
/// alone, and only regular files (by `lstat`) named like the cache's are
/// removed. Libraries loaded from those files stay mapped (on Unix a
/// mapped file outlives its name). Returns the number of files removed.
pub fn clean(dir: &Path) -> usize {
    let Ok(folder) = open_folder(dir) else {
        return 0;
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&folder) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(name) = entry
            .file_name()
            .to_str()
            .ok()
            .filter(|n| is_cache_file_name(n))
        else {
            continue;
        };
        let regular = rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::RegularFile);
        if regular && rustix::fs::unlinkat(&folder, name, AtFlags::empty()).is_ok() {
            removed += 1;
        }
    }
    // Fails, as it should, if anything else is in there (or `dir` is no
    // longer that folder).
    let _ = std::fs::remove_dir(dir);
    removed
}

/// Cleans the default folders (`<temp dir>/connhost-<pid>-<random>`, and
/// the older `connhost-<pid>-<n>` and `connhost-<pid>`) of processes that
/// no longer run: only real folders (by `lstat`, never a link) owned by
/// this process's effective user. Returns the folders it cleaned.
pub(crate) fn sweep_stale_defaults() -> Vec<PathBuf> {
    sweep_stale_in(&std::env::temp_dir())
}

/// [`sweep_stale_defaults`] in the folder `temp`.
fn sweep_stale_in(temp: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(temp) else {
        return Vec::new();
    };
    let uid = effective_uid();
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(default_folder_pid) else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && pid != std::process::id() && !process_is_running(pid) {
            clean(&path);
            swept.push(path);
        }
    }
    swept
}

/// Whether a process with this id exists (when unsure, it does).
#[cfg(unix)]
fn process_is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only asks whether the process exists; nothing is
    // sent.
    let answer = unsafe { libc::kill(pid, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_is_running(_pid: u32) -> bool {
    true
}

/// A copy in the cache, as it is loaded: its name in the cache folder, a
/// descriptor to read it by (so it can be read again, to hash it or check
/// a signature, even if its name is removed), what identifies it on disk,
/// and its SHA-256 digest once something needed it.
///
/// A copy is never written again once made (mode 0444, in a folder that is
/// the host's alone), so a digest computed at any time is the digest of
/// what is mapped.
#[derive(Debug)]
pub(crate) struct CachedCopy {
    name: String,
    path: PathBuf,
    file: std::fs::File,
    id: index::FileId,
    digest: std::sync::OnceLock<String>,
    /// The plugin file it was made from, when it holds only what the
    /// loader reads of it ([`Image`]): the digest is of the whole file.
    original: Option<Original>,
}

/// The plugin file a copy that holds only part of it was made from: its
/// path and the version copied. Its bytes are read again only while it is
/// still that very version.
#[derive(Debug, Clone)]
pub(crate) struct Original {
    /// The plugin file.
    pub(crate) path: PathBuf,
    /// The version of it that was copied.
    pub(crate) id: index::FileId,
}

impl CachedCopy {
    /// The copy's path (what is loaded).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.id.size
    }

    /// Its digest (`sha256:` and 64 hex digits), if it is known yet.
    pub(crate) fn known_digest(&self) -> Option<&str> {
        self.digest.get().map(String::as_str)
    }

    /// Records its digest, computed as it was copied.
    pub(crate) fn set_digest(&self, digest: String) {
        let _ = self.digest.set(digest);
    }

    /// The digest of the plugin file it was made from, computed (once) if no
    /// one needed it before: see [`CachedCopy::read_all`] for what is read.
    pub(crate) fn digest(&self) -> io::Result<&str> {
        if let Some(digest) = self.digest.get() {
            return Ok(digest);
        }
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        self.read_all(&mut |bytes| hasher.update(bytes))?;
        let digest = sha256_digest(hasher);
        Ok(self.digest.get_or_init(|| digest))
    }

    /// Hands the whole plugin file it was made from to `observe`, in
    /// order. A copy of the whole file is read through its own descriptor
    /// (never its name). A copy of what the loader reads of it has the
    /// rest read from the plugin file itself, and only while that is still
    /// the version copied (its device, inode, size and times of last
    /// change, before and after): a file changed since fails, and is loaded
    /// again by the next scan.
    pub(crate) fn read_all(&self, observe: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let Some(original) = &self.original else {
            return read_chunks(&self.file, &mut |chunk| {
                observe(chunk);
                Ok(())
            });
        };
        let changed = || {
            io::Error::other(format!(
                "{} changed since it was loaded",
                original.path.display()
            ))
        };
        let file = std::fs::File::from(
            rustix::fs::open(
                &original.path,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::NOENT => changed(),
                e => e.into(),
            })?,
        );
        let same = |file: &std::fs::File| -> io::Result<()> {
            let metadata = file.metadata()?;
            if metadata.is_file() && index::FileId::of(&metadata) == original.id {
                Ok(())
            } else {
                Err(changed())
            }
        };
        same(&file)?;
        read_chunks(&file, &mut |chunk| {
            observe(chunk);
            Ok(())
        })?;
        same(&file)
    }

    /// Whether this copy and `other` hold the same bytes: the same library,
    /// whatever the rest of their plugin files (debug information, symbols)
    /// holds.
    pub(crate) fn same_bytes(&self, other: &CachedCopy) -> bool {
        use std::os::unix::fs::FileExt as _;
        if self.id.size != other.id.size {
            return false;
        }
        let mut theirs = vec![0; 256 * 1024];
        let mut offset = 0;
        read_chunks(&self.file, &mut |chunk| {
            let theirs = &mut theirs[..chunk.len()];
            other.file.read_exact_at(theirs, offset)?;
            offset += chunk.len() as u64;
            if theirs == chunk {
                Ok(())
            } else {
                Err(io::Error::other("different"))
            }
        })
        .is_ok()
            && offset == self.id.size
    }

    /// Removes its name from the cache (a copy that was refused, or that
    /// turned out to hold what a loaded copy holds). A library mapped from
    /// it stays mapped.
    pub(crate) fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The copies a provider set's plugins were loaded from, by plugin file:
/// where the digests not computed at load time come from when someone
/// asks for them ([`LoadedCopies::fill_digests`]).
#[derive(Debug, Default)]
pub(crate) struct LoadedCopies(pub(crate) Vec<(PathBuf, std::sync::Arc<CachedCopy>)>);

impl LoadedCopies {
    /// Fills in the digest of every plugin in `report` that has none yet
    /// (once per copy: the digest is remembered with it). A plugin file
    /// changed since it was loaded (or a copy that cannot be read) leaves
    /// the digest empty, and says why in the log.
    pub(crate) fn fill_digests(&self, report: &mut crate::model::report::LoadReport) {
        for plugin in report
            .loaded
            .iter_mut()
            .filter(|p| p.trust.digest.is_empty())
        {
            let Some((_, copy)) = self.0.iter().find(|(path, _)| *path == plugin.path) else {
                continue;
            };
            match copy.digest() {
                Ok(digest) => plugin.trust.digest = digest.to_owned(),
                Err(e) => {
                    tracing::info!(path = %plugin.path.display(), "the plugin's digest is not known: {e}")
                }
            }
        }
    }
}

/// The prefix of a digest: the algorithm, SHA-256 (as the lock file and
/// OCI registries write it).
pub(crate) const DIGEST_PREFIX: &str = "sha256:";

/// A finished SHA-256 as a digest: `sha256:` and 64 lower-case hex digits.
pub(crate) fn sha256_digest(hasher: sha2::Sha256) -> String {
    use sha2::Digest as _;
    format!("{DIGEST_PREFIX}{}", hex(&hasher.finalize()))
}

/// Whether `digest` is `sha256:` and 64 lower-case hex digits.
pub(crate) fn is_digest(digest: &str) -> bool {
    digest.strip_prefix(DIGEST_PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What sees each chunk of a copy as it is written.
pub(crate) type Observer<'a> = &'a mut dyn FnMut(&[u8]);

/// Copies an opened, checked file (`file`, opened from `path`) into the
/// cache folder `cache` under a new name drawn at random
/// (`<64 hex digits>.<ext>`) and returns the copy. Only the descriptor is
/// read (never the path again, which may name something else by now),
/// once, from its start. With `image` (what the loader reads of the file,
/// less than all of it: [`Image`]) the copy holds only that, with the
/// header's pointer to the section header table zeroed; otherwise the
/// whole file. Without `observe` the kernel copies it (`copy_file_range`:
/// no pass through this process); with it, the whole file is read through
/// this process and every chunk of it handed to `observe`, in order: what
/// `observe` sees is the file whose copy is then loaded (the catalog checks
/// signatures and digests this way, so that what is loaded is what they
/// covered). The copy is written to a new file and only then renamed to
/// its name (see the [module documentation](self)). The folder must exist
/// and not be a link.
pub(crate) fn copy_into(
    cache: &Path,
    path: &Path,
    file: &std::fs::File,
    image: Option<Image>,
    observe: Option<Observer<'_>>,
) -> io::Result<CachedCopy> {
    let original = match image {
        Some(_) => Some(Original {
            path: std::path::absolute(path)?,
            id: index::FileId::of(&file.metadata()?),
        }),
        None => None,
    };
    let folder = open_folder(cache)?;
    let (partial, out) = create_partial(&folder)?;
    let result = write_copy(&out, file, image, observe).and_then(|()| {
        let name = copy_file_name(&random_hex(32)?);
        rustix::fs::renameat(&folder, partial.as_str(), &folder, name.as_str())?;
        Ok(name)
    });
    let name = match result {
        Ok(name) => name,
        Err(e) => {
            let _ = rustix::fs::unlinkat(&folder, partial.as_str(), AtFlags::empty());
            return Err(e);
        }
    };
    let made = (|| {
        // Read-only from here on: the descriptor written through is
        // closed, one that can only read is kept.
        drop(out);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let copy = std::fs::File::from(rustix::fs::openat(
            &folder,
            name.as_str(),
            flags,
            Mode::empty(),
        )?);
        let id = index::FileId::of(&copy.metadata()?);
        Ok(CachedCopy {
            path: cache.join(&name),
            name: name.clone(),
            file: copy,
            id,
            digest: std::sync::OnceLock::new(),
            original,
        })
    })();
    if made.is_err() {
        let _ = rustix::fs::unlinkat(&folder, name.as_str(), AtFlags::empty());
    }
    made
}

/// `bytes` random bytes from the kernel, as lower-case hex.
fn random_hex(bytes: usize) -> io::Result<String> {
    let mut words = Vec::with_capacity(bytes.div_ceil(8));
    for _ in 0..bytes.div_ceil(8) {
        words.extend_from_slice(&random_u64()?.to_ne_bytes());
    }
    words.truncate(bytes);
    Ok(hex(&words))
}

/// A new copy in progress in `folder`, under a name drawn at random.
fn create_partial(folder: &OwnedFd) -> io::Result<(String, std::fs::File)> {
    let mut taken = None;
    for _ in 0..ATTEMPTS {
        let name = partial_file_name(random_u64()?);
        match create_partial_named(folder, &name) {
            Ok(file) => return Ok((name, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => taken = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(taken.unwrap_or_else(|| io::Error::other("no attempt")))
}

/// Creates the file `name` in `folder`: a new file (never one already
/// there, never through a link), readable and writable by its owner alone
/// while it is written.
fn create_partial_named(folder: &OwnedFd, name: &str) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(folder, name, flags, Mode::RUSR | Mode::WUSR)?;
    Ok(std::fs::File::from(fd))
}

/// Writes what `file` holds from its start (all of it, or the first
/// `image.len` bytes with the section table's fields zeroed) to `out`, in
/// the kernel when nothing observes it, then makes `out` read-only for
/// everyone (0444).
fn write_copy(
    out: &std::fs::File,
    file: &std::fs::File,
    image: Option<Image>,
    observe: Option<Observer<'_>>,
) -> io::Result<()> {
    let len = image.map_or(u64::MAX, |image| image.len);
    match observe {
        Some(observe) => copy_observed(out, file, len, observe)?,
        None => copy_in_kernel(out, file, len)?,
    }
    if let Some(image) = image {
        use std::os::unix::fs::FileExt as _;
        for (offset, width) in image.section_table_fields {
            out.write_all_at(&[0; 8][..width], offset)?;
        }
    }
    rustix::fs::fchmod(out, Mode::RUSR | Mode::RGRP | Mode::ROTH)?;
    Ok(())
}

/// Copies the first `len` bytes of `file` (all of it, if it is shorter) to
/// `out` through this process, handing every chunk of the whole file to
/// `observe`.
fn copy_observed(
    mut out: &std::fs::File,
    file: &std::fs::File,
    len: u64,
    observe: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    use std::io::Write as _;
    let mut written = 0u64;
    read_chunks(file, &mut |chunk| {
        observe(chunk);
        let wanted = usize::try_from(len.saturating_sub(written)).unwrap_or(usize::MAX);
        let part = &chunk[..chunk.len().min(wanted)];
        written += part.len() as u64;
        out.write_all(part)
    })
}

/// Hands everything `file` holds, from its start, to `each` in chunks, in
/// order, reading by offset (never moving the descriptor's position).
fn read_chunks(
    file: &std::fs::File,
    each: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = vec![0; 256 * 1024];
    let mut offset = 0;
    loop {
        let n = match file.read_at(&mut buffer, offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        each(&buffer[..n])?;
        offset += n as u64;
    }
}

/// Copies the first `len` bytes of `file` (all of it, if it is shorter) to
/// `out` with `copy_file_range` (the kernel copies, or shares the blocks
/// where the filesystem can), falling back to a copy through this process
/// where the kernel cannot (another filesystem on an old kernel, a
/// filesystem without it).
fn copy_in_kernel(out: &std::fs::File, file: &std::fs::File, len: u64) -> io::Result<()> {
    let mut from = 0u64;
    let mut to = 0u64;
    while to < len {
        let chunk = usize::try_from(len - to).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(file, Some(&mut from), out, Some(&mut to), chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::NOSYS
                | rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP,
            ) if to == 0 => return copy_observed(out, file, len, &mut |_| {}),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    #[test]
    fn only_the_cache_own_names_are_cache_files() {
        assert!(is_cache_file_name(&copy_file_name(&"a1".repeat(32))));
        assert!(is_cache_file_name(&partial_file_name(17)));
        assert!(is_cache_file_name(&partial_file_name(u64::MAX)));
        for other in [
            copy_file_name(&"a1".repeat(31)),
            copy_file_name(&"zz".repeat(32)),
            "libdaytona.so".to_owned(),
            ".incoming-.partial".to_owned(),
            ".incoming-1x.partial".to_owned(),
            "notes.txt".to_owned(),
        ] {
            assert!(!is_cache_file_name(&other), "{other}");
        }
    }

    #[test]
    fn default_folders_are_named_with_a_pid_and_swept_by_it() {
        assert_eq!(default_name(42, 0xab), "connhost-42-00000000000000ab");
        for (name, pid) in [
            ("connhost-42-00000000000000ab", Some(42)),
            ("connhost-42-7", Some(42)),
            ("connhost-42", Some(42)),
            ("connhost-42-", None),
            ("connhost-plugins-abc", None),
            ("connhost-vendor-0123456789abcdef", None),
            ("connhost-+42-1", None),
            ("connhost-42-xyz", None),
            ("other-42-1", None),
        ] {
            assert_eq!(default_folder_pid(name), pid, "{name}");
        }
    }

    /// Removes a folder made by a test, whatever is in it.
    fn remove(folder: &Path) {
        let _ = std::fs::remove_dir_all(folder);
    }

    #[test]
    fn a_default_folder_is_new_private_and_its_name_cannot_be_guessed() {
        let (a, b) = (create_default().unwrap(), create_default().unwrap());
        let prefix = format!("connhost-{}-", std::process::id());
        let random = |p: &Path| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let random = name
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{name}"));
            assert_eq!(random.len(), 16, "{name}");
            assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
            random.to_owned()
        };
        assert_ne!(random(&a), random(&b));
        for folder in [&a, &b] {
            let metadata = std::fs::symlink_metadata(folder).unwrap();
            assert!(metadata.is_dir());
            assert_eq!(metadata.mode() & 0o7777, 0o700, "{}", folder.display());
            assert_eq!(metadata.uid(), effective_uid());
            assert_eq!(check_private(folder, true), Ok(()));
        }
        remove(&a);
        remove(&b);
    }

    #[test]
    fn a_name_already_taken_is_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let taken = tmp.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        let error = make_private_folder(&taken).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
        let error = make_private_folder(&link).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            !tmp.path().join("nowhere").exists(),
            "a link is not followed"
        );
    }

    /// A file holding `bytes`, opened for reading, as the catalog hands
    /// over a checked descriptor.
    fn source(dir: &Path, bytes: &[u8]) -> std::fs::File {
        let path = dir.join("source.so");
        std::fs::write(&path, bytes).unwrap();
        std::fs::File::open(path).unwrap()
    }

    /// A copy into `cache` of `dir/source.so` holding `bytes` (of which the
    /// loader reads `image`), made by the kernel, or through this process
    /// when `observed`: the copy, and what was observed.
    fn copy_of(
        cache: &Path,
        dir: &Path,
        bytes: &[u8],
        image: Option<Image>,
        observed: bool,
    ) -> (CachedCopy, Vec<u8>) {
        let mut seen = Vec::new();
        let mut observe = |chunk: &[u8]| seen.extend_from_slice(chunk);
        let copy = copy_into(
            cache,
            &dir.join("source.so"),
            &source(dir, bytes),
            image,
            observed.then_some(&mut observe as &mut dyn FnMut(&[u8])),
        )
        .unwrap();
        (copy, seen)
    }

    #[test]
    fn a_copy_holds_the_checked_bytes_read_only_under_a_new_name_beside_anything_planted() {
        let cache = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let checked: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        // Planted beforehand: a file and a link named as copies are named.
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, b"planted code").unwrap();
        let planted_file = cache.path().join(copy_file_name(&"a1".repeat(32)));
        let planted_link = cache.path().join(copy_file_name(&"b2".repeat(32)));
        std::fs::write(&planted_file, b"planted code").unwrap();
        std::os::unix::fs::symlink(&victim, &planted_link).unwrap();
        let mut copies = Vec::new();
        for observed in [false, true] {
            let (copy, seen) = copy_of(cache.path(), elsewhere.path(), &checked, None, observed);
            assert_eq!(seen.len(), if observed { checked.len() } else { 0 });
            let name = copy
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert!(is_cache_file_name(&name), "{name}");
            assert!(copy.path() != planted_file && copy.path() != planted_link);
            let metadata = std::fs::symlink_metadata(copy.path()).unwrap();
            assert!(metadata.is_file());
            assert_eq!(metadata.mode() & 0o7777, 0o444);
            assert_eq!(std::fs::read(copy.path()).unwrap(), checked);
            assert_eq!(copy.len(), checked.len() as u64);
            // Its digest, computed through its descriptor even once its
            // name is gone.
            assert_eq!(copy.known_digest(), None);
            copies.push(copy);
        }
        assert_ne!(copies[0].path(), copies[1].path(), "each copy is new");
        use sha2::Digest as _;
        let expected = format!("sha256:{}", hex(&sha2::Sha256::digest(&checked)));
        copies[0].discard();
        assert!(!copies[0].path().exists());
        assert_eq!(copies[0].digest().unwrap(), expected);
        assert_eq!(copies[0].known_digest(), Some(expected.as_str()));
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"planted code",
            "nothing written through the link"
        );
        assert_eq!(std::fs::read(&planted_file).unwrap(), b"planted code");
        let partial = std::fs::read_dir(cache.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
        assert!(!partial, "no partial left behind");
    }

    #[test]
    fn a_copy_of_what_the_loader_reads_leaves_the_rest_in_the_file_and_hashes_the_whole_file() {
        use sha2::Digest as _;
        let cache = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let whole: Vec<u8> = (0..600_000u32).map(|i| (i % 251 + 1) as u8).collect();
        let image = Image {
            len: 300_001,
            section_table_fields: [(0x28, 8), (0x3c, 2), (0x3e, 2)],
        };
        let mut loaded = whole[..300_001].to_vec();
        for (offset, width) in image.section_table_fields {
            loaded[offset as usize..][..width].fill(0);
        }
        let path = elsewhere.path().join("source.so");
        let digest = format!("sha256:{}", hex(&sha2::Sha256::digest(&whole)));
        let mut copies = Vec::new();
        for observed in [false, true] {
            let (copy, seen) = copy_of(
                cache.path(),
                elsewhere.path(),
                &whole,
                Some(image),
                observed,
            );
            if observed {
                assert_eq!(seen, whole, "what is observed is the whole file");
            }
            assert_eq!(std::fs::read(copy.path()).unwrap(), loaded);
            assert_eq!(copy.len(), loaded.len() as u64);
            // Not computed as it was copied: the whole file is read for it.
            assert_eq!(copy.digest().unwrap(), digest);
            copies.push(copy);
        }
        assert!(copies[0].same_bytes(&copies[1]));
        // Another file, with the same first bytes but another rest, is
        // another file: its digest is not taken from the first.
        let mut other = whole.clone();
        *other.last_mut().unwrap() = 0;
        let (third, _) = copy_of(cache.path(), elsewhere.path(), &other, Some(image), false);
        assert!(third.same_bytes(&copies[0]), "the same library");
        let digest_of_other = format!("sha256:{}", hex(&sha2::Sha256::digest(&other)));
        assert_eq!(third.digest().unwrap(), digest_of_other);
        // Once the file changed, a digest no one computed is not computed
        // from whatever is there now.
        let (fourth, _) = copy_of(cache.path(), elsewhere.path(), &whole, Some(image), false);
        std::fs::write(&path, [&whole[..], b"more"].concat()).unwrap();
        let error = fourth.digest().unwrap_err();
        assert!(
            error.to_string().contains("changed since it was loaded"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(fourth.digest().is_err());
        // Different bytes are not the same library.
        let (whole_copy, _) = copy_of(cache.path(), elsewhere.path(), &whole, None, false);
        assert!(!whole_copy.same_bytes(&copies[0]));
    }

    #[test]
    fn a_planted_partial_link_is_not_followed() {
        let cache = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let name = partial_file_name(7);
        std::os::unix::fs::symlink(&victim, cache.path().join(&name)).unwrap();
        let folder = open_folder(cache.path()).unwrap();
        let error = create_partial_named(&folder, &name).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        // A dangling link is not followed either (O_EXCL).
        std::fs::remove_file(&victim).unwrap();
        assert!(create_partial_named(&folder, &name).is_err());
        assert!(!victim.exists(), "nothing was created through the link");
    }

    #[test]
    fn a_cache_folder_that_is_a_link_is_not_written_through() {
        let real = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let link = elsewhere.path().join("cache");
        std::os::unix::fs::symlink(real.path(), &link).unwrap();
        let file = source(elsewhere.path(), b"x");
        let error = copy_into(&link, Path::new("source.so"), &file, None, None).unwrap_err();
        assert!(error.to_string().contains("is a symbolic link"), "{error}");
        assert_eq!(std::fs::read_dir(real.path()).unwrap().count(), 0);
        let refusal = check_private(&link, false).unwrap_err();
        assert!(
            refusal.starts_with(&format!(
                "the plugin cache folder {} is a symbolic link (to {})",
                link.display(),
                std::fs::canonicalize(real.path()).unwrap().display()
            )),
            "{refusal}"
        );
    }

    #[test]
    fn a_given_folder_is_created_private_and_refused_when_others_may_write_it() {
        let tmp = tempfile::tempdir().unwrap();
        let given = tmp.path().join("a/b/cache");
        prepare_given(&given, true).unwrap();
        for folder in [tmp.path().join("a"), tmp.path().join("a/b"), given.clone()] {
            let mode = std::fs::metadata(&folder).unwrap().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", folder.display());
        }
        std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o770)).unwrap();
        let refusal = prepare_given(&given, true).unwrap_err();
        assert_eq!(refusal.path, given);
        assert!(
            refusal.reason.contains(&format!(
                "the plugin cache folder {} is writable by its group (mode 0770)",
                given.display()
            )) && refusal
                .reason
                .ends_with(&format!("run chmod g-w {}", given.display())),
            "{refusal}"
        );
        assert_eq!(
            prepare_given(&given, false),
            Ok(()),
            "--insecure-permissions"
        );

        std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o700)).unwrap();
        let above = tmp.path().join("a/b");
        std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refusal = prepare_given(&given, true).unwrap_err();
        assert!(
            refusal.reason.starts_with(&format!(
                "{}, a folder above the plugin cache folder, is writable by its group and by every user (mode 0777)",
                above.display()
            )),
            "{refusal}"
        );
        // With the sticky bit, as /tmp: others cannot rename the folder away.
        std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(prepare_given(&given, true), Ok(()));
    }

    #[test]
    fn cleaning_keeps_what_the_cache_did_not_create() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(copy_file_name(&"0f".repeat(32)));
        let partial = dir.path().join(partial_file_name(3));
        let precious = dir.path().join("precious.txt");
        for file in [&copy, &partial, &precious] {
            std::fs::write(file, b"x").unwrap();
        }
        assert_eq!(clean(dir.path()), 2);
        assert!(!copy.exists() && !partial.exists());
        assert!(precious.exists(), "a file the cache did not create");
        assert!(dir.path().exists(), "a folder that is not empty stays");

        std::fs::remove_file(&precious).unwrap();
        std::fs::write(&copy, b"x").unwrap();
        assert_eq!(clean(dir.path()), 1);
        assert!(!dir.path().exists(), "an emptied folder goes");
    }

    #[test]
    fn cleaning_never_follows_a_link() {
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join(copy_file_name(&"ab".repeat(32)));
        std::fs::write(&victim, b"someone else's").unwrap();

        // The folder itself a link: nothing is removed through it.
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("cache");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        assert_eq!(clean(&link), 0);
        assert!(victim.exists() && link.exists());

        // A link named like a copy: not a file the cache made.
        let cache = tmp.path().join("real");
        std::fs::create_dir(&cache).unwrap();
        let planted = cache.join(victim.file_name().unwrap());
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert_eq!(clean(&cache), 0);
        assert!(victim.exists());
        assert!(std::fs::symlink_metadata(&planted).is_ok());
    }

    /// The pid of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn sweeping_takes_only_real_folders_of_dead_processes() {
        let temp = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let stale = temp.path().join(default_name(dead, 1));
        let old_style = temp.path().join(format!("connhost-{dead}-3"));
        let alive = temp.path().join(default_name(std::process::id(), 2));
        for folder in [&stale, &old_style, &alive] {
            std::fs::create_dir(folder).unwrap();
            std::fs::write(folder.join(copy_file_name(&"cd".repeat(32))), b"x").unwrap();
        }
        // A link named like a dead process's folder, to someone's folder.
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join(copy_file_name(&"ef".repeat(32)));
        std::fs::write(&victim, b"someone else's").unwrap();
        let link = temp.path().join(default_name(dead, 4));
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();

        let mut swept = sweep_stale_in(temp.path());
        swept.sort();
        let mut expected = vec![stale.clone(), old_style.clone()];
        expected.sort();
        assert_eq!(swept, expected);
        assert!(!stale.exists() && !old_style.exists());
        assert!(alive.is_dir(), "a running process's folder stays");
        assert!(victim.exists(), "a link is never followed");
        remove(&alive);
    }

    #[test]
    fn this_process_is_running() {
        assert!(process_is_running(std::process::id()));
    }
}
