//! Shared pieces of connhost's benchmark suite (`scripts/bench` runs it all).
//!
//! Every figure the suite reports is a ratio against a baseline measured in
//! the same run, on the same machine, under the same noise:
//!
//! - `benches/call.rs` (criterion): the trivial provider of
//!   `tests/fixtures/bench-trivial` compiled into the benchmark vs loaded from
//!   its cdylib, through the raw call, `Connhost::validate`, and listing.
//! - `benches/load.rs`: connhost's catalog (`Connhost::start`) on N fresh copies
//!   of the plugin vs bare `dlopen` + symbol lookup, one child process
//!   (`load-probe`) per sample.
//! - `harness http`: `connhost serve` vs a bare axum server returning the
//!   same bytes, driven by `wrk` over loopback; `harness memory`: resident
//!   memory of `connhost serve` with 0, 10 and 100 plugins.
//! - `call-driver`: a small driver for callgrind (instruction counts are
//!   stable where wall-clock time is not).
//! - `isolation`: isolated plugins (a worker process each) against in-process
//!   ones: throughput of concurrent validations, worker start and restart,
//!   memory per worker and across replacements, and postcard vs JSON for the
//!   worker protocol's messages (`benches/call.rs` has the per-call cost).
//! - `report`: turns the results into `BENCHMARKS.md` and SVG charts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Command;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use connhost::{Connhost, CredentialFields, HostConfig, Isolation, LoadReport, ProviderRegistry};

/// The cargo package of the trivial plugin.
pub const PLUGIN_PACKAGE: &str = "fixture-bench-trivial";

/// The id of its provider.
pub const PROVIDER_ID: &str = fixture_bench_trivial::PROVIDER_ID;

/// abi_stable's root-module symbol, which every connhost plugin exports
/// (NUL-terminated, for `libloading`).
pub const ROOT_MODULE_SYMBOL: &[u8] = b"_1as_0lib_1header_0root_bmodule_bloader\0";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ is in the workspace")
        .to_owned()
}

/// The target dir this executable was built into
/// (`<target>/<profile>/[deps/]<exe>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the executable's path");
    let mut profile = exe.parent().expect("in a folder").to_owned();
    if profile.file_name().is_some_and(|n| n == "deps") {
        profile.pop();
    }
    profile.parent().expect("a profile folder").to_owned()
}

/// Where results go: `CONNHOST_BENCH_OUT`, or `<target>/connhost-bench`.
pub fn results_dir() -> PathBuf {
    let dir = std::env::var_os("CONNHOST_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("connhost-bench"));
    std::fs::create_dir_all(&dir).expect("create the results folder");
    dir
}

/// Writes a result file (pretty JSON) into [`results_dir`].
pub fn write_result(name: &str, value: &serde_json::Value) -> PathBuf {
    let path = results_dir().join(name);
    let text = serde_json::to_string_pretty(value).expect("JSON");
    std::fs::write(&path, text + "\n").expect("write the result");
    path
}

/// The file name cargo gives the plugin's cdylib.
pub fn plugin_file_name() -> String {
    format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        PLUGIN_PACKAGE.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    )
}

/// The release build of the trivial plugin: `CONNHOST_BENCH_PLUGIN` when set
/// (scripts/bench builds it first), otherwise built now with cargo, as a
/// user would, into this executable's target dir.
pub fn plugin_library() -> PathBuf {
    if let Some(path) = std::env::var_os("CONNHOST_BENCH_PLUGIN") {
        return PathBuf::from(path);
    }
    let target = target_dir();
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--release", "--package", PLUGIN_PACKAGE])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {PLUGIN_PACKAGE} failed");
    target.join("release").join(plugin_file_name())
}

/// A fresh temporary folder holding `n` distinct copies of `library`.
///
/// Each copy is its own file (its own inode, so the dynamic loader opens
/// each anew) with its own content: a few bytes that name the copy are
/// appended after the end of the ELF image, where nothing reads them (the
/// dynamic loader maps segments by the program headers). Without them,
/// anything that identifies libraries by content (`connhost serve` loads
/// each plugin from a private copy named by its content hash) would load one
/// library for all the copies.
pub fn fresh_copies(library: &Path, n: usize) -> tempfile::TempDir {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = tempfile::Builder::new()
        .prefix("connhost-bench-")
        .tempdir()
        .expect("temp dir");
    for i in 0..n {
        let to = dir.path().join(format!(
            "{}bench_trivial_{i:04}.{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_EXTENSION
        ));
        std::fs::copy(library, &to).expect("copy the plugin");
        let tag = format!(
            "\0connhost-bench copy {} {} {:?}\0",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&to)
            .and_then(|mut file| file.write_all(tag.as_bytes()))
            .expect("tag the copy");
    }
    dir
}

/// Loads the plugins of `dir` the way connhost does, through the catalog
/// (each file checked, copied into the private cache, loaded, registered
/// in arrival order), without the built-ins. The catalog's cache folder
/// goes with it (the libraries stay mapped).
pub fn load_plugins(dir: &Path) -> (ProviderRegistry, LoadReport) {
    load_plugins_cached(dir, None)
}

/// [`load_plugins`], with the cache folder `cache` (kept, with its index:
/// a second load of the same files maps their copies directly) when one
/// is given.
pub fn load_plugins_cached(dir: &Path, cache: Option<&Path>) -> (ProviderRegistry, LoadReport) {
    let mut config = HostConfig::with_plugins_dir(dir);
    config.builtins = false;
    config.cache_dir = cache.map(Path::to_owned);
    let host = Connhost::start(&config);
    (host.registry().clone(), host.load_report().clone())
}

/// The `connhost` binary that isolated plugins' workers run (a benchmark
/// is not `connhost`, so it names it): `CONNHOST_BENCH_CONNHOST`, or the
/// release build in this executable's target dir (scripts/bench builds it
/// first).
pub fn connhost_program() -> PathBuf {
    std::env::var_os("CONNHOST_BENCH_CONNHOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            target_dir()
                .join("release")
                .join(format!("connhost{}", std::env::consts::EXE_SUFFIX))
        })
}

/// A configuration that loads the plugins of `dir` without the built-ins,
/// in `isolation`; isolated plugins' workers run [`connhost_program`]
/// (sandboxed, with the default limits).
pub fn config_for(dir: &Path, isolation: Isolation) -> HostConfig {
    let mut config = HostConfig::with_plugins_dir(dir);
    config.builtins = false;
    config.isolation = isolation;
    config.worker.program = Some(connhost_program());
    config
}

/// Loads the plugins of `dir` in `isolation` through the catalog. The host
/// returned keeps isolated plugins' workers running until it is dropped.
/// Panics unless every file loaded.
pub fn load_host(dir: &Path, isolation: Isolation) -> Connhost {
    let host = Connhost::start(&config_for(dir, isolation));
    let report = host.load_report();
    assert!(
        report.failed.is_empty() && !report.loaded.is_empty(),
        "the plugins did not load ({isolation}): {report:?}"
    );
    host
}

/// The worker process ids of a host's isolated plugins, in load order.
pub fn worker_pids(host: &Connhost) -> Vec<u32> {
    host.plugins()
        .loaded
        .iter()
        .filter_map(|plugin| plugin.worker.as_ref()?.pid)
        .collect()
}

/// The 3-field credential every call benchmark submits.
pub fn credential() -> CredentialFields {
    [
        ("account", "acct-0042"),
        ("secret", "s3cr3t-value-0123456789"),
        ("region", "eu-west-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Wakes the thread parked in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future on the current thread. The first poll uses a no-op waker
/// (no allocation: the trivial provider is ready at once); a future that is
/// not ready then gets a real, parking waker.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// How many bytes from its start the system loader reads of the shared
/// library `file` (the end of its last segment): what connhost's cache
/// copies of it. Only its headers are read (which moves the file's
/// position).
pub fn loaded_len(file: &std::fs::File) -> u64 {
    use object::{Object as _, ObjectSegment as _};
    let data = object::ReadCache::new(file);
    let library = object::File::parse(&data).expect("a shared library");
    library
        .segments()
        .map(|segment| {
            let (offset, size) = segment.file_range();
            offset + size
        })
        .max()
        .unwrap_or(0)
}

/// The baseline load: `dlopen` of `path` and a lookup of abi_stable's
/// root-module symbol, the library leaked as connhost leaks every library.
/// Panics if either fails: the benchmarks only open their own plugins.
pub fn bare_dlopen(path: &Path) {
    // SAFETY: the repository's own plugins, whose initializers are sound.
    let library = unsafe { libloading::Library::new(path) }.expect("dlopen");
    // SAFETY: only the symbol's address is read.
    let found = unsafe { library.get::<*const u8>(ROOT_MODULE_SYMBOL) }.is_ok();
    assert!(found, "no root module in {}", path.display());
    std::mem::forget(library);
}

/// A field of `/proc/<pid>/status` in KiB (`"VmRSS"`, `"RssAnon"`,
/// `"RssFile"`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// A process's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Median of a sample (sorted in place). `NaN` for an empty one.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn block_on_drives_ready_and_pending_futures() {
        assert_eq!(block_on(async { 6 * 7 }), 42);
        let mut polled = false;
        let value = block_on(std::future::poll_fn(|cx| {
            if polled {
                Poll::Ready(1)
            } else {
                polled = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }));
        assert_eq!(value, 1);
    }

    #[test]
    fn the_credential_has_the_three_fields() {
        let fields = credential();
        assert_eq!(
            fields.keys().map(String::as_str).collect::<Vec<_>>(),
            ["account", "region", "secret"]
        );
    }
}
