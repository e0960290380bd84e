//! The folder that hot reload loads private copies of plugin files from
//! (see [`PluginSet`](crate::plugin_set::PluginSet)), and keeping it from
//! filling the disk.
//!
//! By default each `connhost serve` process has its own folder under the
//! temp dir, `connhost-<pid>`, removed when the process exits. A process
//! that is killed (SIGKILL, a crash, a power cut) cannot remove it, so the
//! next process sweeps the folders of processes that no longer run. Only
//! files named the way the cache names them are ever removed, and a folder
//! only once it is empty: pointing `--cache-dir` at a folder that holds
//! anything else loses nothing.

use std::path::{Path, PathBuf};

const PREFIX: &str = "connhost-";

/// This process's default cache folder: `<temp dir>/connhost-<pid>`.
pub fn default_for_this_process() -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()))
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

/// Cleans the default folders (`<temp dir>/connhost-<pid>`) of processes
/// that no longer run. Returns the folders it looked at and cleaned.
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
            .and_then(|pid| pid.parse::<u32>().ok())
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
