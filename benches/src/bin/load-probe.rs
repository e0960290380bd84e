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
//!   folder, as the CLI loads it. Every copy offers the same provider id, so the first file
//!   registers it and the others are refused as conflicts after doing all
//!   the work (read, check, dlopen, layout check, init, descriptors).
//! - `connhost-own`: the catalog on a folder of its own per file (a hard
//!   link into a subfolder, made inside the timed section), so every file
//!   registers: the check that conflicts do not distort the `connhost`
//!   figure.
//!
//! Two more modes take the loader's file check apart (they are `bare` plus
//! one step):
//! - `bare-fullcheck`: before each `dlopen`, the check connhost's loader
//!   made up to commit b20a855 (`check_file` in
//!   `host/core/src/library.rs`): read the whole file, parse it with
//!   `object`, check its kind and that every segment is inside the file.
//! - `bare-headercheck`: the same guarantee from the ELF header and program
//!   headers alone (a few hundred bytes read through `object::ReadCache`),
//!   which is how `check_file` works since b20a855.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use connhost::FailureKind;
use connhost_bench::{bare_dlopen, load_plugins, rss_kib, status_kib};

/// What one load did.
#[derive(Default)]
struct Counts {
    files: usize,
    loaded: usize,
    conflicts: usize,
    failed: usize,
}

fn bare_with(dir: &Path, check: fn(&Path)) -> Counts {
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
        bare_dlopen(path);
        counts.loaded += 1;
    }
    counts
}

/// The loader's check up to b20a855: the whole file, read and parsed.
fn full_check(path: &Path) {
    use object::{Object as _, ObjectKind, ObjectSegment as _};
    let data = std::fs::read(path).expect("read the file");
    let file = object::File::parse(&*data).expect("an object file");
    assert_eq!(file.kind(), ObjectKind::Dynamic);
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        assert!(
            offset.saturating_add(size) <= data.len() as u64,
            "truncated"
        );
    }
}

/// The header-only check (as `check_file` does since b20a855).
fn header_check(path: &Path) {
    use object::elf::{FileHeader64, ET_DYN};
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    use object::Endianness;
    let file = std::fs::File::open(path).expect("open the file");
    let len = file.metadata().expect("metadata").len();
    let cache = object::ReadCache::new(file);
    let header = FileHeader64::<Endianness>::parse(&cache).expect("an ELF header");
    let endian = header.endian().expect("endianness");
    assert_eq!(header.e_type(endian), ET_DYN);
    for segment in header
        .program_headers(endian, &cache)
        .expect("program headers")
    {
        let (offset, size) = (segment.p_offset(endian), segment.p_filesz(endian));
        assert!(offset.saturating_add(size) <= len, "truncated");
    }
}

fn bare_fullcheck(dir: &Path) -> Counts {
    bare_with(dir, full_check)
}

fn bare_headercheck(dir: &Path) -> Counts {
    bare_with(dir, header_check)
}

fn bare(dir: &Path) -> Counts {
    bare_with(dir, |_| {})
}

fn connhost_shared(dir: &Path) -> Counts {
    let (_registry, report) = load_plugins(dir);
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

/// The plugin files in `dir`, by name (the order the catalog loads them).
fn library_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| {
        p.extension()
            .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
    });
    files.sort();
    Ok(files)
}

fn connhost_own(dir: &Path) -> Counts {
    let files = library_files(dir).expect("list the folder");
    let mut counts = Counts {
        files: files.len(),
        ..Counts::default()
    };
    for (i, path) in files.iter().enumerate() {
        // A folder of its own per file (a hard link: no copy), so that
        // every file registers.
        let own = dir.join(format!("own-{i}"));
        std::fs::create_dir_all(&own).expect("a folder per file");
        let name = path.file_name().expect("a file name");
        std::fs::hard_link(path, own.join(name)).expect("link the file");
        let (_registry, report) = load_plugins(&own);
        counts.loaded += report.loaded.len();
        counts.failed += report.failed.len();
    }
    counts
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, dir, warmup] = args.as_slice() else {
        eprintln!("usage: load-probe bare|bare-fullcheck|bare-headercheck|connhost|connhost-own DIR WARMUP_DIR");
        return ExitCode::from(2);
    };
    let run: fn(&Path) -> Counts = match mode.as_str() {
        "bare" => bare,
        "bare-fullcheck" => bare_fullcheck,
        "bare-headercheck" => bare_headercheck,
        "connhost" => connhost_shared,
        "connhost-own" => connhost_own,
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
