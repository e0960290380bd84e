//! The private copies plugin files are loaded from, and keeping their
//! folder from filling the disk.
//!
//! Every plugin file is loaded from a copy, never from the watched path:
//! writing the watched file in place (a careless `cp` over it) cannot
//! change a mapped library under the host, and a new version never gets the
//! dynamic loader's cached old object for a reused path. The copy is made
//! from a descriptor that was checked first ([`copy_into`]), named by its
//! content's BLAKE3 hash, so the same content is one file and one library
//! however often it is loaded. The catalog copies into its cache folder;
//! `connhost inspect` into a folder of its own, so that inspecting a file
//! never initialises the instance a later real load gets.
//!
//! By default each catalog has a folder of its own under the temp dir,
//! `connhost-<pid>-<n>` ([`fresh_default`]), removed when the catalog is
//! dropped (the libraries stay mapped: on Unix a mapped file outlives its
//! name); a folder named with `--cache-dir` is cleaned by whoever named it. A process
//! that is killed (SIGKILL, a crash, a power cut) cannot remove it, so the
//! next process sweeps the folders of processes that no longer run. Only
//! files named the way the cache names them are ever removed, and a folder
//! only once it is empty: pointing `--cache-dir` at a folder that holds
//! anything else loses nothing.

use std::path::{Path, PathBuf};

const PREFIX: &str = "connhost-";

/// A cache folder of its own for one user in this process (a catalog, an
/// inspection): `<temp dir>/connhost-<pid>-<n>`, a new `n` at each call.
/// One folder per catalog means two catalogs never share (or remove) each
/// other's copies, and each gets its own instance of a library (with its
/// own settings), as two distinct files would.
pub fn fresh_default() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The name of the copy of a file whose content hash (hex) is `hash`.
pub fn copy_file_name(hash: &str) -> String {
    format!("{hash}.{}", std::env::consts::DLL_EXTENSION)
}

/// The name of the `n`th copy in progress.
pub fn partial_file_name(n: u64) -> String {
    format!(".incoming-{n}.partial")
}

/// Whether `name` is a file the cache creates: a copy named by its content
/// hash (`<64 hex digits>.<library extension>`) or a copy in progress
/// (`.incoming-<n>.partial`).
pub fn is_cache_file_name(name: &str) -> bool {
    let copy = name
        .strip_suffix(std::env::consts::DLL_EXTENSION)
        .and_then(|stem| stem.strip_suffix('.'))
        .is_some_and(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let partial = name
        .strip_prefix(".incoming-")
        .and_then(|rest| rest.strip_suffix(".partial"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    copy || partial
}

/// Removes the cache's files from `dir`, then `dir` itself if that left it
/// empty. Libraries loaded from those files stay mapped (on Unix a mapped
/// file outlives its name). Returns the number of files removed.
pub fn clean(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let ours = entry.file_name().to_str().is_some_and(is_cache_file_name);
        if is_file && ours && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    // Fails, as it should, if anything else is in there.
    let _ = std::fs::remove_dir(dir);
    removed
}

/// Cleans the default folders (`<temp dir>/connhost-<pid>-<n>`, and the
/// older `connhost-<pid>`) of processes that no longer run. Returns the
/// folders it looked at and cleaned.
pub fn sweep_stale_defaults() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|rest| {
                let (pid, n) = rest.split_once('-').unwrap_or((rest, "0"));
                n.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then_some(pid)?
                    .parse::<u32>()
                    .ok()
            })
        else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && pid != std::process::id() && !process_is_running(pid) {
            clean(&entry.path());
            swept.push(entry.path());
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

/// Copies an opened, checked file into the cache as `<blake3>.<ext>`
/// and returns the hash of what was written and the copy's path. Only
/// the descriptor is read (never the path again, which may name
/// something else by now), once. A version already in the cache is
/// reused (the dynamic loader hands back the object it already has for
/// it). BLAKE3 hashes about three times as fast as SHA-256 here.
pub fn copy_into(cache: &Path, file: &mut std::fs::File) -> std::io::Result<(String, PathBuf)> {
    copy_into_observed(cache, file, &mut |_| {})
}

/// [`copy_into`], handing every chunk written to the copy to `observe` as
/// well, in order: what `observe` sees is the copy's content (the catalog
/// checks signatures and digests this way, against exactly what is then
/// loaded).
pub fn copy_into_observed(
    cache: &Path,
    file: &mut std::fs::File,
    observe: &mut dyn FnMut(&[u8]),
) -> std::io::Result<(String, PathBuf)> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(cache)?;
    let partial = cache.join(partial_file_name(NEXT.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut out = options.open(&partial)?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            observe(&buffer[..n]);
            out.write_all(&buffer[..n])?;
        }
        out.flush()?;
        drop(out);
        let hash = hasher.finalize().to_hex().to_string();
        let copy = cache.join(copy_file_name(&hash));
        if copy.exists() {
            std::fs::remove_file(&partial)?;
        } else {
            std::fs::rename(&partial, &copy)?;
        }
        Ok((hash, copy))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cache_own_names_are_cache_files() {
        assert!(is_cache_file_name(&copy_file_name(&"a1".repeat(32))));
        assert!(is_cache_file_name(&partial_file_name(17)));
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
    fn this_process_is_running() {
        assert!(process_is_running(std::process::id()));
    }
}
