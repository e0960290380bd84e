//! A kept cache folder (`--cache-dir`): the next start of any command maps
//! the copy of an unchanged file directly (no new copy, the same inode),
//! and never serves a cached copy for a file that changed (even one
//! rewritten in place with its size and modification time put back), a
//! copy that changed or is not the host's own, an index others may
//! write, or a copy whose signature or lock digest no longer matches.
//! Real files, the real binary.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{
    built_library, cached_copies, connhost, digest_of, install, library_file_name, loaded_part,
    run, running_as_root, PluginDir,
};
use crate::trust::{keys_dir, Key};

const INDEX: &str = "connhost-cache-index.json";

/// `connhost --cache-dir CACHE [ARGS] plugins --json` over `dir`.
fn plugins(dir: &Path, cache: &Path, args: &[&OsStr]) -> Value {
    let out = run(connhost(dir)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .args(["plugins", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

/// The copies in a cache folder, by name, with their inodes.
fn copies(cache: &Path) -> Vec<(PathBuf, u64)> {
    cached_copies(cache)
        .into_iter()
        .map(|p| {
            let inode = std::fs::symlink_metadata(&p).unwrap().ino();
            (p, inode)
        })
        .collect()
}

/// The copy the cache's index names (it remembers one file).
fn remembered_copy(cache: &Path) -> PathBuf {
    let index: Value = serde_json::from_slice(&std::fs::read(cache.join(INDEX)).unwrap()).unwrap();
    let entries = index["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index:#}");
    cache.join(entries[0]["copy"].as_str().unwrap())
}

fn loaded<'a>(report: &'a Value, file: &str) -> Option<&'a Value> {
    report["loaded"]
        .as_array()?
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|p| p.ends_with(file)))
}

fn failure_kind(report: &Value, file: &str) -> Option<String> {
    report["failed"]
        .as_array()?
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|p| p.ends_with(file)))
        .map(|f| f["kind"].as_str().unwrap_or_default().to_owned())
}

fn private_cache() -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    cache
}

#[test]
fn a_second_start_maps_the_remembered_copies_and_reports_the_same_digests() {
    let dir = PluginDir::with(&["mai", "daytona"]);
    let cache = private_cache();
    let first = plugins(dir.path(), cache.path(), &[]);
    let made = copies(cache.path());
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(cache.path().join(INDEX).is_file());
    let index = std::fs::metadata(cache.path().join(INDEX)).unwrap();
    assert_eq!(index.mode() & 0o077, 0, "the index is the host's alone");
    // Each copy is recorded as checked by this connhost executable (its
    // layout check is not run again for the same copy and executable).
    let text = std::fs::read_to_string(cache.path().join(INDEX)).unwrap();
    assert_eq!(
        text.matches("\"checked_by\":\"plugin-api ").count(),
        2,
        "{text}"
    );

    // Any command, any working folder: the same copies, not copied again.
    for command in [&["plugins", "--json"][..], &["providers", "--json"][..]] {
        let out = run(connhost(dir.path())
            .current_dir("/")
            .arg("--cache-dir")
            .arg(cache.path())
            .args(command));
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(copies(cache.path()), made, "{command:?}");
    }
    let again = plugins(dir.path(), cache.path(), &[]);
    for file in ["libmai.so", "libdaytona.so"] {
        let (a, b) = (loaded(&first, file).unwrap(), loaded(&again, file).unwrap());
        assert!(
            a["trust"]["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{a:#}"
        );
        assert_eq!(a["trust"], b["trust"], "{file}");
        assert_eq!(a["providers"], b["providers"], "{file}");
    }
}

#[test]
fn a_copy_holds_what_the_loader_reads_and_the_digest_is_the_whole_files() {
    let dir = PluginDir::with(&["mai"]);
    let cache = private_cache();
    let report = plugins(dir.path(), cache.path(), &[]);
    let file = std::fs::read(dir.file(&library_file_name("mai"))).unwrap();
    let copy = std::fs::read(remembered_copy(cache.path())).unwrap();
    assert_eq!(copy, loaded_part(&file), "the file up to its last segment");
    assert!(copy.len() < file.len(), "{} of {}", copy.len(), file.len());
    let mai = loaded(&report, "libmai.so").unwrap();
    assert_eq!(mai["trust"]["digest"], digest_of(&file), "{mai:#}");
    // A second start maps that copy, and still reports the whole file's
    // digest (remembered).
    let again = plugins(dir.path(), cache.path(), &[]);
    assert_eq!(loaded(&again, "libmai.so").unwrap()["trust"], mai["trust"]);
}

#[test]
fn a_changed_file_is_never_served_from_the_cache_even_with_its_size_and_time_put_back() {
    let dir = PluginDir::empty();
    let file = install(
        dir.path(),
        "fixture-greeter-v1",
        &library_file_name("greeter"),
    );
    let cache = private_cache();
    let first = plugins(dir.path(), cache.path(), &[]);
    assert_eq!(loaded(&first, "libgreeter.so").unwrap()["version"], "1.0.0");

    // Replaced by a new file (a new inode): the new version is served.
    // Padded (after its last byte: nothing reads there) to at least v1's
    // size, so that v1 fits in it below.
    let v1_len = std::fs::metadata(built_library("fixture-greeter-v1"))
        .unwrap()
        .len();
    let mut v2 = std::fs::read(built_library("fixture-greeter-v2")).unwrap();
    v2.resize(v2.len().max(v1_len as usize), 0);
    let staged = dir.path().join("staged.tmp");
    std::fs::write(&staged, &v2).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    let second = plugins(dir.path(), cache.path(), &[]);
    assert_eq!(
        loaded(&second, "libgreeter.so").unwrap()["version"],
        "2.0.0"
    );

    // Rewritten in place to v1's bytes, padded to v2's size, its
    // modification time put back: same inode, same size, same mtime. Only
    // the change time (which no one can set) tells, and it does.
    let metadata = std::fs::metadata(&file).unwrap();
    let mut v1 = std::fs::read(built_library("fixture-greeter-v1")).unwrap();
    v1.resize(metadata.len() as usize, 0);
    {
        use std::io::Write as _;
        let mut out = std::fs::File::options().write(true).open(&file).unwrap();
        out.write_all(&v1).unwrap();
        out.set_modified(metadata.modified().unwrap()).unwrap();
    }
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (
            metadata.ino(),
            metadata.len(),
            metadata.mtime(),
            metadata.mtime_nsec()
        )
    );
    let third = plugins(dir.path(), cache.path(), &[]);
    assert_eq!(
        loaded(&third, "libgreeter.so").map(|p| p["version"].clone()),
        Some(Value::from("1.0.0")),
        "{third:#}"
    );
}

#[test]
fn a_copy_that_changed_or_an_index_others_may_write_is_not_used() {
    let dir = PluginDir::with(&["mai"]);
    let cache = private_cache();
    plugins(dir.path(), cache.path(), &[]);
    let (copy, inode) = copies(cache.path()).remove(0);

    // Made writable, then read-only again: its change time moved.
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    let report = plugins(dir.path(), cache.path(), &[]);
    assert!(loaded(&report, "libmai.so").is_some(), "{report:#}");
    let now = copies(cache.path());
    assert_eq!(now.len(), 1, "the old copy is removed: {now:?}");
    assert_ne!(now[0], (copy, inode), "copied anew");

    // An index others may write is not read: copied anew again.
    let index = cache.path().join(INDEX);
    std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = remembered_copy(cache.path());
    plugins(dir.path(), cache.path(), &[]);
    assert_ne!(remembered_copy(cache.path()), before, "copied anew");
    assert_eq!(
        std::fs::metadata(&index).unwrap().mode() & 0o077,
        0,
        "the index was written anew, the host's alone"
    );
    // (The copy the untrusted index named is left for an hour: no index
    // this host trusts names it, and it may be another process's.)

    // A copy another user owns is not used (as root only: chown).
    if running_as_root() {
        let copy = remembered_copy(cache.path());
        std::os::unix::fs::chown(&copy, Some(65534), Some(65534)).unwrap();
        let report = plugins(dir.path(), cache.path(), &[]);
        assert!(loaded(&report, "libmai.so").is_some(), "{report:#}");
        assert_ne!(remembered_copy(cache.path()), copy, "copied anew");
        assert!(!copy.exists(), "the foreign copy is removed");
    }
}

#[test]
fn a_signature_or_lock_that_no_longer_matches_the_cached_copy_is_refused() {
    let key = Key::new();
    let keys = keys_dir(&[(&key, "release")]);
    let dir = PluginDir::empty();
    let file = install(
        dir.path(),
        "fixture-greeter-v1",
        &library_file_name("greeter"),
    );
    key.sign(&file, "greeter 1.0.0");
    let out = run(connhost(dir.path())
        .arg("--trusted-keys")
        .arg(keys.path())
        .arg("lock"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cache = private_cache();
    let trust = [
        OsStr::new("--trusted-keys"),
        keys.path().as_os_str(),
        OsStr::new("--locked"),
    ];
    let first = plugins(dir.path(), cache.path(), &trust);
    let greeter = loaded(&first, "libgreeter.so").unwrap_or_else(|| panic!("{first:#}"));
    assert_eq!(greeter["trust"]["locked"], true);
    let remembered = copies(cache.path());
    let again = plugins(dir.path(), cache.path(), &trust);
    assert_eq!(
        loaded(&again, "libgreeter.so").unwrap()["trust"],
        greeter["trust"]
    );
    assert_eq!(copies(cache.path()), remembered, "mapped, not copied");

    // The signature now signs other bytes (with the same trusted key):
    // the file is unchanged, the cached copy is not taken on trust.
    let other = tempfile::tempdir().unwrap();
    let decoy = other.path().join("decoy.so");
    std::fs::write(
        &decoy,
        std::fs::read(built_library("fixture-greeter-v2")).unwrap(),
    )
    .unwrap();
    key.sign(&decoy, "greeter 1.0.0");
    let signature = PathBuf::from(format!("{}.minisig", file.display()));
    let good = std::fs::read(&signature).unwrap();
    std::fs::copy(format!("{}.minisig", decoy.display()), &signature).unwrap();
    let report = plugins(dir.path(), cache.path(), &trust);
    assert!(loaded(&report, "libgreeter.so").is_none(), "{report:#}");
    assert_eq!(
        failure_kind(&report, "libgreeter.so").as_deref(),
        Some("bad_signature"),
        "{report:#}"
    );
    std::fs::write(&signature, good).unwrap();

    // The lock file now locks another digest: refused, not mapped.
    let lock = dir.path().join("connhost.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    let digest = greeter["trust"]["digest"].as_str().unwrap();
    std::fs::write(
        &lock,
        text.replace(digest, &format!("sha256:{}", "0".repeat(64))),
    )
    .unwrap();
    let report = plugins(dir.path(), cache.path(), &trust);
    assert!(loaded(&report, "libgreeter.so").is_none(), "{report:#}");
    assert_eq!(
        failure_kind(&report, "libgreeter.so").as_deref(),
        Some("not_locked"),
        "{report:#}"
    );
}
