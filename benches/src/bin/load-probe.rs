//! One sample of the load benchmark, in a process of its own (libraries are
//! never unloaded, so every sample starts from a clean process).
//!
//! `load-probe MODE DIR WARMUP_DIR` loads WARMUP_DIR untimed (faulting in
//! the loader's own code and first-use statics), then times loading DIR and
//! prints one JSON line: `{"mode", "n", "ns", "loaded", "conflicts",
//! "failed", "rss_before_kib", "rss_after_kib", "rss_anon_before_kib",
//! "rss_anon_after_kib"}`.
//!
//! Modes:
//! - `bare`: the baseline: list the folder (read_dir, the platform's library
//!   extension, sorted), then `libloading::Library::new` and a lookup of
//!   abi_stable's root-module symbol per file; libraries leaked, as connhost
//!   leaks them.
//! - `connhost`: connhost's catalog (`Connhost::start`, no built-ins) on the
//!   folder, as the CLI loads it, with a cache folder of its own (a cold
//!   load: every file is checked, copied and loaded). Every copy offers the
//!   same provider id, so the first file registers it and the others are
//!   refused as conflicts after doing all the work (check, copy, dlopen,
//!   layout check, init, descriptors).
//! - `connhost-warm CACHE`: the same with a kept cache folder (`--cache-dir`)
//!   whose index a previous process wrote for these very files (the bench
//!   primes it with an untimed run): a warm start.
//!
//! Two more modes take a cold load apart (they are `bare` plus one step,
//! each copy made into a folder of the probe's own, holding what the
//! loader reads of the file, as the cache's copies do):
//! - `bare-copy`: each file copied by the kernel (`copy_file_range`, as the
//!   cache copies), then the copy loaded.
//! - `bare-copy-sha256`: each file read through user space while SHA-256
//!   hashes all of it (as the cache copies when the lock file needs the
//!   digest), then the copy loaded.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use connhost::FailureKind;
use connhost_bench::{
    bare_dlopen, load_plugins, load_plugins_cached, loaded_len, rss_kib, status_kib,
};

/// What one load did.
#[derive(Default)]
struct Counts {
    files: usize,
    loaded: usize,
    conflicts: usize,
    failed: usize,
}

fn bare_with(dir: &Path, check: fn(&Path), load: fn(&Path)) -> Counts {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    let mut counts = Counts {
        files: files.len(),
        ..Counts::default()
    };
    for path in &files {
        check(path);
        load(path);
        counts.loaded += 1;
    }
    counts
}

/// Where `path`'s copy goes: a folder `copies` beside it (removed with
/// the bench's folder of fresh files), under a new name each time (the
/// warm-up folder's files have the same names as the measured ones, and a
/// mapped copy must never be written again).
fn copy_path(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let folder = path.parent().expect("a folder").join("copies");
    std::fs::create_dir_all(&folder).expect("a folder for copies");
    let name = path.file_name().expect("a file name").to_string_lossy();
    folder.join(format!("{}-{name}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Copies what the loader reads of `path` (as the cache copies it) with
/// `copy_file_range`, then loads the copy.
fn kernel_copy_then_dlopen(path: &Path) {
    let from = std::fs::File::open(path).expect("open the file");
    let len = loaded_len(&from);
    let to_path = copy_path(path);
    let to = std::fs::File::create(&to_path).expect("create the copy");
    let (mut off_in, mut off_out) = (0u64, 0u64);
    while off_out < len {
        let chunk = usize::try_from(len - off_out).expect("a size");
        let n =
            rustix::fs::copy_file_range(&from, Some(&mut off_in), &to, Some(&mut off_out), chunk)
                .expect("copy_file_range");
        if n == 0 {
            break;
        }
    }
    drop(to);
    bare_dlopen(&to_path);
}

/// Reads `path` through user space while SHA-256 hashes all of it and
/// what the loader reads of it is written to a copy (as the cache copies
/// when the lock file needs the digest), then loads the copy.
fn hashed_copy_then_dlopen(path: &Path) {
    use sha2::Digest as _;
    use std::io::{Read as _, Write as _};
    let mut from = std::fs::File::open(path).expect("open the file");
    let mut wanted = usize::try_from(loaded_len(&from)).expect("a size");
    // Reading the headers moved the file's position.
    std::io::Seek::rewind(&mut from).expect("rewind");
    let to_path = copy_path(path);
    let mut to = std::fs::File::create(&to_path).expect("create the copy");
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let n = from.read(&mut buffer).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        let part = n.min(wanted);
        to.write_all(&buffer[..part]).expect("write");
        wanted -= part;
    }
    std::hint::black_box(hasher.finalize());
    drop(to);
    bare_dlopen(&to_path);
}

fn bare_copy(dir: &Path) -> Counts {
    bare_with(dir, |_| {}, kernel_copy_then_dlopen)
}

fn bare_copy_sha256(dir: &Path) -> Counts {
    bare_with(dir, |_| {}, hashed_copy_then_dlopen)
}

fn bare(dir: &Path) -> Counts {
    bare_with(dir, |_| {}, bare_dlopen)
}

fn connhost_shared(dir: &Path) -> Counts {
    counts(load_plugins(dir).1)
}

fn connhost_warm(dir: &Path) -> Counts {
    let cache = CACHE.get().expect("connhost-warm takes a cache folder");
    counts(load_plugins_cached(dir, Some(cache)).1)
}

/// The kept cache folder of `connhost-warm`.
static CACHE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn counts(report: connhost::LoadReport) -> Counts {
    let conflicts = report
        .failed
        .iter()
        .filter(|f| f.kind == FailureKind::Conflict)
        .count();
    Counts {
        files: report.loaded.len() + conflicts,
        loaded: report.loaded.len(),
        conflicts,
        failed: report.failed.len() - conflicts,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir, warmup) = match args.as_slice() {
        [mode, dir, warmup] => (mode, dir, warmup),
        [mode, dir, warmup, cache] if mode == "connhost-warm" => {
            let _ = CACHE.set(cache.into());
            (mode, dir, warmup)
        }
        _ => {
            eprintln!("usage: load-probe bare|bare-copy|bare-copy-sha256|connhost DIR WARMUP_DIR, or load-probe connhost-warm DIR WARMUP_DIR CACHE_DIR");
            return ExitCode::from(2);
        }
    };
    let run: fn(&Path) -> Counts = match mode.as_str() {
        "bare" => bare,
        "bare-copy" => bare_copy,
        "bare-copy-sha256" => bare_copy_sha256,
        "connhost" => connhost_shared,
        "connhost-warm" => connhost_warm,
        other => {
            eprintln!("load-probe: unknown mode {other}");
            return ExitCode::from(2);
        }
    };
    let warm = run(Path::new(warmup));
    assert_eq!(warm.loaded, warm.files, "the warm-up copy did not load");
    let pid = std::process::id();
    let rss_before = rss_kib(pid).unwrap_or(0);
    let anon_before = status_kib(pid, "RssAnon").unwrap_or(0);
    let started = Instant::now();
    let counts = run(Path::new(dir));
    let ns = started.elapsed().as_nanos() as u64;
    let rss_after = rss_kib(pid).unwrap_or(0);
    let anon_after = status_kib(pid, "RssAnon").unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "n": counts.files,
            "ns": ns,
            "loaded": counts.loaded,
            "conflicts": counts.conflicts,
            "failed": counts.failed,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_anon_before_kib": anon_before,
            "rss_anon_after_kib": anon_after,
        })
    );
    ExitCode::SUCCESS
}
