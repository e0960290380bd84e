//! Isolated plugins (`Isolation::Process`: a sandboxed worker process per
//! plugin, the release `connhost` binary in worker mode) against the same
//! plugin in process, each figure against a baseline measured in the same
//! run. The per-call cost is in `benches/call.rs`; this measures the rest:
//!
//! ```text
//! isolation run                      every measurement below; isolation.json
//! isolation per-call                 added time and context switches per call
//! isolation throughput               16-way throughput only
//! isolation report RESULTS CRITERION the BENCHMARKS.md section (stdout)
//! isolation memory-probe MODE N      (child) RSS with N plugins in MODE
//! isolation replace-probe MODE K     (child) RSS across K replacements
//! ```
//!
//! - throughput: 16 tasks validating at once on a multi-thread tokio
//!   runtime, isolated vs in process (alternating, medians of the per-pair
//!   ratios);
//! - start: `Connhost::start` of one fresh plugin copy until its worker is
//!   ready, then the first validation answered, isolated vs in process;
//! - restart: `kill -9` of the worker until a validation answers valid
//!   again (no same-run baseline exists: an in-process crash is the host's);
//! - memory: a worker's RSS, and the host's RSS with N plugins isolated vs
//!   in process, each in a fresh child process; and the host's RSS across K
//!   replacements of one plugin (`Catalog::rescan`), with the old workers
//!   checked gone;
//! - serialisation: postcard vs serde_json encoding and decoding a validate
//!   request and its outcome (mirrors of the worker protocol's messages).
//!
//! `CONNHOST_BENCH_ISOLATION_SAMPLES` (default 11), `..._WORKERS` (N,
//! default 10) and `..._REPLACEMENTS` (K, default 10) size it.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use connhost::{Catalog, Connhost, Isolation, Verdict};
use connhost_bench::{
    config_for, credential, fresh_copies, load_host, median, plugin_library, results_dir, rss_kib,
    worker_pids, write_result, PROVIDER_ID,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Concurrent validations in the throughput measurement.
const CONCURRENCY: usize = 16;

/// The longest any single wait here may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// A size from the environment, or its default.
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn samples() -> usize {
    env_usize("CONNHOST_BENCH_ISOLATION_SAMPLES", 11)
}

fn mode_of(name: &str) -> Isolation {
    name.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One validation of the trivial provider; panics unless it is valid.
async fn validate_once(host: &Connhost) {
    let verdict = host
        .validate(PROVIDER_ID, credential())
        .await
        .expect("registered");
    assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
}

/// Validations per second with [`CONCURRENCY`] tasks each validating
/// `per_task` times.
fn throughput(runtime: &tokio::runtime::Runtime, host: &Connhost, per_task: usize) -> f64 {
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let host = host.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        validate_once(&host).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a validating task panicked");
        }
        (CONCURRENCY * per_task) as f64 / started.elapsed().as_secs_f64()
    })
}

/// The trivial plugin loaded twice, from fresh copies: in process and
/// isolated (the copies' folders live as long as the hosts).
struct Hosts {
    in_process: Connhost,
    isolated: Connhost,
    _folders: [tempfile::TempDir; 2],
}

fn hosts() -> Hosts {
    let folders = [
        fresh_copies(&plugin_library(), 1),
        fresh_copies(&plugin_library(), 1),
    ];
    Hosts {
        in_process: load_host(folders[0].path(), Isolation::InProcess),
        isolated: load_host(folders[1].path(), Isolation::Process),
        _folders: folders,
    }
}

/// `pairs` measurements of `a` and of `b`, one right after the other, the
/// order flipping every pair so that drift hits both alike: each pair's
/// `(a, b)`.
fn paired<T>(pairs: usize, mut a: impl FnMut() -> T, mut b: impl FnMut() -> T) -> Vec<(T, T)> {
    (0..pairs)
        .map(|pair| {
            if pair % 2 == 0 {
                let ta = a();
                (ta, b())
            } else {
                let tb = b();
                (a(), tb)
            }
        })
        .collect()
}

/// Throughput of concurrent validations, isolated vs in process.
fn measure_throughput() -> Value {
    let runtime = runtime();
    let Hosts {
        in_process,
        isolated,
        ..
    } = &hosts();
    let per_task = env_usize("CONNHOST_BENCH_ISOLATION_PER_TASK", 150);
    throughput(&runtime, in_process, per_task / 4 + 1);
    throughput(&runtime, isolated, per_task / 4 + 1);
    // CPU time per validation: this process's, and the worker's.
    let (me, worker) = (std::process::id(), worker_pids(isolated)[0]);
    let validations = (CONCURRENCY * per_task) as f64;
    let (mut cpu_a, mut cpu_b, mut cpu_worker) = (vec![], vec![], vec![]);
    let (mut ratios, mut a, mut b) = (vec![], vec![], vec![]);
    for (ta, tb) in paired(
        samples(),
        || {
            let before = usage_of(me, false)[2];
            let per_s = throughput(&runtime, in_process, per_task);
            cpu_a.push((usage_of(me, false)[2] - before) as f64 / validations);
            per_s
        },
        || {
            let (before, worker_before) = (usage_of(me, false)[2], usage_of(worker, true)[2]);
            let per_s = throughput(&runtime, isolated, per_task);
            let worker_cpu = (usage_of(worker, true)[2] - worker_before) as f64 / validations;
            cpu_worker.push(worker_cpu);
            cpu_b.push((usage_of(me, false)[2] - before) as f64 / validations + worker_cpu);
            per_s
        },
    ) {
        ratios.push(tb / ta);
        a.push(ta);
        b.push(tb);
    }
    json!({
        "concurrency": CONCURRENCY,
        "validations_per_task": per_task,
        "runtime_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "pairs": ratios.len(),
        "in_process_per_s": median(&mut a),
        "isolated_per_s": median(&mut b),
        "ratio": median(&mut ratios),
        "in_process_cpu_ns_per_validation": median(&mut cpu_a),
        "isolated_cpu_ns_per_validation": median(&mut cpu_b),
        "isolated_worker_cpu_ns_per_validation": median(&mut cpu_worker),
    })
}

/// Milliseconds from `Connhost::start` of a fresh copy until it is loaded
/// (worker ready), and until its first validation is answered.
fn start_once(runtime: &tokio::runtime::Runtime, isolation: Isolation) -> (f64, f64) {
    let dir = fresh_copies(&plugin_library(), 1);
    let config = config_for(dir.path(), isolation);
    let started = Instant::now();
    let host = Connhost::start(&config);
    let ready = started.elapsed();
    runtime.block_on(validate_once(&host));
    let answered = started.elapsed();
    assert!(
        host.load_report().failed.is_empty(),
        "{isolation}: did not load"
    );
    (ready.as_secs_f64() * 1e3, answered.as_secs_f64() * 1e3)
}

/// Start to ready and to first answer, isolated vs in process.
fn measure_start() -> Value {
    let runtime = runtime();
    start_once(&runtime, Isolation::InProcess);
    start_once(&runtime, Isolation::Process);
    let (mut ready, mut answered) = ([vec![], vec![]], [vec![], vec![]]);
    let mut ratios = vec![];
    for sample in 0..samples() {
        let order = if sample % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut pair = [(0.0, 0.0); 2];
        for which in order {
            let mode = [Isolation::InProcess, Isolation::Process][which];
            pair[which] = start_once(&runtime, mode);
        }
        for which in 0..2 {
            ready[which].push(pair[which].0);
            answered[which].push(pair[which].1);
        }
        ratios.push(pair[1].1 / pair[0].1);
    }
    let [ready_a, ready_b] = &mut ready;
    let [answered_a, answered_b] = &mut answered;
    json!({
        "samples": ratios.len(),
        "in_process_ready_ms": median(ready_a),
        "isolated_ready_ms": median(ready_b),
        "in_process_first_answer_ms": median(answered_a),
        "isolated_first_answer_ms": median(answered_b),
        "ratio_first_answer": median(&mut ratios),
    })
}

/// Sends SIGKILL to `pid`.
fn kill_9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a process id");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9 the worker");
}

/// Milliseconds from `kill -9` of each worker to a validation answered
/// valid by its replacement. The crash window is 1 ms so that every kill
/// is a first crash (restarted at once, never parked): the restart itself
/// is what is timed, not the backoff of a crash loop.
fn measure_restart() -> Value {
    let runtime = runtime();
    let dir = fresh_copies(&plugin_library(), 1);
    let mut config = config_for(dir.path(), Isolation::Process);
    config.worker.crash_window = Duration::from_millis(1);
    config.worker.crash_limit = 1_000;
    let mut catalog = Catalog::new(&config);
    catalog.scan_now();
    let host = Connhost::from_catalog(&catalog);
    runtime.block_on(validate_once(&host));
    let (mut times, mut failed_attempts) = (vec![], 0u64);
    for _ in 0..samples() {
        let old = worker_pids(&host)[0];
        let started = Instant::now();
        kill_9(old);
        loop {
            let verdict = runtime
                .block_on(host.validate(PROVIDER_ID, credential()))
                .expect("registered");
            // Answered by the replacement: the killed worker's jailed
            // runner may still answer for the instant it takes its
            // parent's death to reach it.
            let replaced = worker_pids(&host).first().is_some_and(|&pid| pid != old);
            if matches!(verdict, Verdict::Valid(_)) && replaced {
                break;
            }
            failed_attempts += 1;
            assert!(started.elapsed() < DEADLINE, "no restart: {verdict:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let new = worker_pids(&host);
        assert!(
            new.len() == 1 && new[0] != old,
            "the worker was not replaced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = host.plugins().loaded[0].worker.clone().expect("isolated");
    let mut sorted = times.clone();
    json!({
        "samples": times.len(),
        "median_ms": median(&mut sorted),
        "max_ms": times.iter().cloned().fold(0.0, f64::max),
        "failed_attempts": failed_attempts,
        "restarts": status.restarts,
        "crashes": status.crashes,
    })
}

/// Runs this program as a child with `args`; its one JSON line.
fn child(args: &[&str]) -> Value {
    let output = std::process::Command::new(std::env::current_exe().expect("this program"))
        .args(args)
        .output()
        .expect("run a probe");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("the probe's JSON")
}

/// (child) The host's RSS with `n` fresh plugin copies loaded in `mode`
/// (each by a catalog of its own: the copies offer the same provider id,
/// which one catalog would refuse as a conflict), each validated once,
/// and each worker's RSS.
fn memory_probe(mode: Isolation, n: usize) -> Value {
    let runtime = runtime();
    let mut hosts = Vec::new();
    for _ in 0..n {
        let dir = fresh_copies(&plugin_library(), 1);
        let host = load_host(dir.path(), mode);
        runtime.block_on(validate_once(&host));
        hosts.push((host, dir));
    }
    let workers: Vec<u64> = hosts
        .iter()
        .flat_map(|(host, _)| worker_pids(host))
        .filter_map(rss_kib)
        .collect();
    json!({
        "host_kib": rss_kib(std::process::id()),
        "workers_kib": workers,
    })
}

/// Per-plugin memory: each worker's RSS, and the host's with N plugins
/// isolated vs in process (minus an empty host), medians over samples.
fn measure_memory() -> Value {
    let n = env_usize("CONNHOST_BENCH_ISOLATION_WORKERS", 10);
    let rounds = env_usize("CONNHOST_BENCH_MEMORY_SAMPLES", 3);
    let host_kib = |v: &Value| v["host_kib"].as_f64().unwrap_or(f64::NAN);
    let (mut empty, mut in_process, mut isolated, mut worker) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        empty.push(host_kib(&child(&["memory-probe", "in-process", "0"])));
        in_process.push(host_kib(&child(&[
            "memory-probe",
            "in-process",
            &n.to_string(),
        ])));
        let probe = child(&["memory-probe", "process", &n.to_string()]);
        isolated.push(host_kib(&probe));
        let workers: Vec<f64> = probe["workers_kib"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        assert_eq!(workers.len(), n, "a worker's RSS is missing");
        worker.extend(workers);
    }
    let (empty, in_process, isolated, worker) = (
        median(&mut empty),
        median(&mut in_process),
        median(&mut isolated),
        median(&mut worker),
    );
    json!({
        "plugins": n,
        "samples": rounds,
        "empty_host_kib": empty,
        "in_process_host_kib": in_process,
        "isolated_host_kib": isolated,
        "worker_kib": worker,
        "in_process_per_plugin_kib": (in_process - empty) / n as f64,
        "isolated_host_per_plugin_kib": (isolated - empty) / n as f64,
        "isolated_total_per_plugin_kib": (isolated - empty) / n as f64 + worker,
    })
}

/// Replaces the plugin file `name` in `dir` the way a careful installer
/// does: a fresh copy (new content), renamed over it.
fn replace_file(dir: &Path, name: &str) {
    let fresh = fresh_copies(&plugin_library(), 1);
    let copy = std::fs::read_dir(fresh.path())
        .expect("the fresh copy")
        .next()
        .expect("one file")
        .expect("its entry")
        .path();
    std::fs::rename(copy, dir.join(name)).expect("rename over the plugin");
}

/// Whether process `pid` is gone (a zombie has no `VmRSS` either).
fn gone_within(pid: u32, deadline: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if rss_kib(pid).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// (child) The host's RSS after loading one plugin in `mode` and after
/// each of `k` replacements (`Catalog::rescan`), validating each version
/// once; for isolated plugins, whether each replaced worker is gone.
fn replace_probe(mode: Isolation, k: usize) -> Value {
    let dir = tempfile::tempdir().expect("a plugins folder");
    let name = connhost_bench::plugin_file_name();
    replace_file(dir.path(), &name);
    let mut catalog = Catalog::new(&config_for(dir.path(), mode));
    catalog.scan_now();
    let runtime = runtime();
    let mut host = Connhost::from_catalog(&catalog);
    runtime.block_on(validate_once(&host));
    let mut rss = vec![rss_kib(std::process::id())];
    let (mut gone, mut workers) = (0, vec![]);
    for _ in 0..k {
        let old = worker_pids(&host);
        workers.extend(old.iter().filter_map(|pid| rss_kib(*pid)));
        drop(host);
        replace_file(dir.path(), &name);
        let started = Instant::now();
        while !catalog.rescan().changed {
            assert!(started.elapsed() < DEADLINE, "the replacement was not seen");
            std::thread::sleep(Duration::from_millis(10));
        }
        host = Connhost::from_catalog(&catalog);
        assert!(Connhost::from_catalog(&catalog)
            .load_report()
            .failed
            .is_empty());
        runtime.block_on(validate_once(&host));
        gone += old
            .iter()
            .filter(|pid| gone_within(**pid, Duration::from_secs(2)))
            .count();
        rss.push(rss_kib(std::process::id()));
    }
    json!({ "host_kib": rss, "old_workers_gone": gone, "workers_kib": workers })
}

/// The host's RSS growth per replacement, in process vs isolated.
fn measure_replace() -> Value {
    let k = env_usize("CONNHOST_BENCH_ISOLATION_REPLACEMENTS", 10);
    let growth = |v: &Value| {
        let rss: Vec<f64> = v["host_kib"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        (rss.last().copied().unwrap_or(f64::NAN) - rss[0]) / k as f64
    };
    let in_process = child(&["replace-probe", "in-process", &k.to_string()]);
    let isolated = child(&["replace-probe", "process", &k.to_string()]);
    json!({
        "replacements": k,
        "in_process_growth_per_replacement_kib": growth(&in_process),
        "isolated_growth_per_replacement_kib": growth(&isolated),
        "old_workers_gone": isolated["old_workers_gone"],
        "in_process": in_process,
        "isolated": isolated,
    })
}

// ---- per call: added time and context switches ---------------------------

/// Context switches so far (voluntary: the thread waited, a hand-off;
/// involuntary: it was preempted, the machine's load), and CPU time in
/// nanoseconds (`/proc/PID/task/*/schedstat`), of every thread of process
/// `pid`, and with `tree` of its descendants too (a worker is a keeper, an
/// init and a runner).
fn usage_of(pid: u32, tree: bool) -> [u64; 3] {
    let mut total = [0; 3];
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            for line in status.lines() {
                let count = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("voluntary_ctxt_switches:") {
                    total[0] += count();
                } else if line.starts_with("nonvoluntary_ctxt_switches:") {
                    total[1] += count();
                }
            }
            total[2] += std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            if tree {
                let children = std::fs::read_to_string(path.join("children")).unwrap_or_default();
                pending.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    total
}

/// Nanoseconds per call of `calls` sequential `Connhost::validate` calls
/// made from this thread with `block_on`, as `benches/call.rs` makes them.
fn sequential_ns(runtime: &tokio::runtime::Runtime, host: &Connhost, calls: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..calls {
        runtime.block_on(validate_once(host));
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

/// The gap between two calls of the spaced measurement.
const SPACED_GAP: Duration = Duration::from_millis(1);

/// Calls made `SPACED_GAP` apart (a host called now and then, where
/// neither side's polling for the other's next message finds it): the
/// mean time per call, and the CPU time per call of this process and of
/// process tree `worker`, when given.
fn spaced(
    runtime: &tokio::runtime::Runtime,
    host: &Connhost,
    worker: Option<u32>,
    calls: usize,
) -> [f64; 3] {
    let me = std::process::id();
    let cpu = || {
        (
            usage_of(me, false)[2],
            worker.map_or(0, |pid| usage_of(pid, true)[2]),
        )
    };
    let before = cpu();
    let mut busy = Duration::ZERO;
    for _ in 0..calls {
        std::thread::sleep(SPACED_GAP);
        let started = Instant::now();
        runtime.block_on(validate_once(host));
        busy += started.elapsed();
    }
    let after = cpu();
    let per_call = |ns: u64| ns as f64 / calls as f64;
    [
        per_call(busy.as_nanos() as u64),
        per_call(after.0 - before.0),
        per_call(after.1 - before.1),
    ]
}

/// The added time per sequential call (paired blocks, alternating, the
/// order flipping every pair) and the context switches per call of the
/// host and of the worker, isolated vs in process.
fn measure_per_call() -> Value {
    let runtime = runtime();
    let Hosts {
        in_process,
        isolated,
        ..
    } = &hosts();
    let worker = worker_pids(isolated)[0];
    let worker_pid = worker;
    let calls = env_usize("CONNHOST_BENCH_ISOLATION_CALLS", 200);
    sequential_ns(&runtime, in_process, calls);
    sequential_ns(&runtime, isolated, calls);
    let (mut added, mut ratios, mut a, mut b) = (vec![], vec![], vec![], vec![]);
    for (ta, tb) in paired(
        samples().max(11),
        || sequential_ns(&runtime, in_process, calls),
        || sequential_ns(&runtime, isolated, calls),
    ) {
        added.push(tb - ta);
        ratios.push(tb / ta);
        a.push(ta);
        b.push(tb);
    }
    // Voluntary and involuntary switches and CPU time per call, of this
    // process (its own threads) and of the worker's processes, medians
    // over blocks.
    let usage = |host: &Connhost, pid: Option<u32>| {
        let me = std::process::id();
        let (mut host_blocks, mut worker_blocks) =
            ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
        for _ in 0..5 {
            let host_before = usage_of(me, false);
            let worker_before = pid.map(|pid| usage_of(pid, true));
            sequential_ns(&runtime, host, calls);
            let host_after = usage_of(me, false);
            let worker_after = pid.map(|pid| usage_of(pid, true));
            for kind in 0..3 {
                host_blocks[kind]
                    .push((host_after[kind] - host_before[kind]) as f64 / calls as f64);
                if let (Some(after), Some(before)) = (worker_after, worker_before) {
                    worker_blocks[kind].push((after[kind] - before[kind]) as f64 / calls as f64);
                }
            }
        }
        let [mut hv, mut hi, mut hc] = host_blocks;
        let [mut wv, mut wi, mut wc] = worker_blocks;
        let worker = pid.map(|_| {
            (
                json!({"voluntary": median(&mut wv), "involuntary": median(&mut wi)}),
                median(&mut wc),
            )
        });
        (
            json!({"voluntary": median(&mut hv), "involuntary": median(&mut hi)}),
            median(&mut hc),
            worker,
        )
    };
    let (in_process_host, in_process_cpu, _) = usage(in_process, None);
    let (isolated_host, isolated_host_cpu, worker) = usage(isolated, Some(worker));
    let (isolated_worker, isolated_worker_cpu) = worker.unwrap_or_default();
    json!({
        "calls_per_block": calls,
        "pairs": ratios.len(),
        "in_process_ns": median(&mut a),
        "isolated_ns": median(&mut b),
        "added_ns": median(&mut added),
        "ratio": median(&mut ratios),
        "in_process_host_switches_per_call": in_process_host,
        "isolated_host_switches_per_call": isolated_host,
        "isolated_worker_switches_per_call": isolated_worker,
        "in_process_host_cpu_ns_per_call": in_process_cpu,
        "isolated_host_cpu_ns_per_call": isolated_host_cpu,
        "isolated_worker_cpu_ns_per_call": isolated_worker_cpu,
        "spaced": spaced_figures(&runtime, in_process, isolated, worker_pid),
    })
}

/// [`spaced`] calls, in process and isolated alternately (medians of five
/// blocks each).
fn spaced_figures(
    runtime: &tokio::runtime::Runtime,
    in_process: &Connhost,
    isolated: &Connhost,
    worker: u32,
) -> Value {
    let calls = env_usize("CONNHOST_BENCH_ISOLATION_SPACED_CALLS", 100);
    let (mut a, mut b) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    for (ta, tb) in paired(
        5,
        || spaced(runtime, in_process, None, calls),
        || spaced(runtime, isolated, Some(worker), calls),
    ) {
        for i in 0..3 {
            a[i].push(ta[i]);
            b[i].push(tb[i]);
        }
    }
    json!({
        "gap_us": SPACED_GAP.as_micros() as u64,
        "calls_per_block": calls,
        "in_process_ns": median(&mut a[0]),
        "isolated_ns": median(&mut b[0]),
        "in_process_host_cpu_ns_per_call": median(&mut a[1]),
        "isolated_host_cpu_ns_per_call": median(&mut b[1]),
        "isolated_worker_cpu_ns_per_call": median(&mut b[2]),
    })
}

// ---- serialisation: mirrors of host/core/src/worker/protocol.rs ---------

/// Mirror of the protocol's `ToWorker` (same shape, same variant order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ToWorker {
    Validate {
        id: u64,
        handle: u32,
        fields: Vec<(String, String)>,
    },
    Cancel {
        id: u64,
    },
}

/// Mirror of the protocol's `WireOutcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum WireOutcome {
    Valid {
        username: Option<String>,
        metadata_json: Option<String>,
    },
    Rejected(String),
    Inconclusive(String),
    Fault(String),
}

/// Mirror of the protocol's `FromWorker` (the variants before `Outcome`
/// stand in for `Ready` and `LoadFailed`, so that its index is the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum FromWorker {
    Ready(String),
    LoadFailed(String),
    Outcome { id: u64, outcome: WireOutcome },
}

/// The trivial provider's validate request and outcome, as sent.
fn messages() -> (ToWorker, FromWorker) {
    let request = ToWorker::Validate {
        id: 1_234_567,
        handle: 0,
        fields: credential().into_iter().collect(),
    };
    let outcome = FromWorker::Outcome {
        id: 1_234_567,
        outcome: WireOutcome::Valid {
            username: Some("acct-0042".to_owned()),
            metadata_json: Some(r#"{"region":"eu-west-1"}"#.to_owned()),
        },
    };
    (request, outcome)
}

/// One round trip's serialisation: the request and the outcome each
/// encoded (after a 4-byte length prefix, as the protocol frames them) and
/// decoded. Returns the two encodings' sizes.
fn round_trip(json: bool, request: &ToWorker, outcome: &FromWorker) -> (usize, usize) {
    fn one<T: Serialize + serde::de::DeserializeOwned>(json: bool, message: &T) -> usize {
        let frame = if json {
            let mut frame = vec![0; 4];
            serde_json::to_writer(&mut frame, message).expect("JSON");
            frame
        } else {
            postcard::to_extend(message, vec![0; 4]).expect("postcard")
        };
        let back: T = if json {
            serde_json::from_slice(&frame[4..]).expect("JSON")
        } else {
            postcard::from_bytes(&frame[4..]).expect("postcard")
        };
        black_box(back);
        frame.len() - 4
    }
    (one(json, black_box(request)), one(json, black_box(outcome)))
}

/// postcard vs serde_json, alternating blocks, medians of the per-pair
/// ratios (JSON / postcard).
fn measure_serde() -> Value {
    let (request, outcome) = messages();
    // Both formats give the message back unchanged.
    for json in [false, true] {
        let bytes = if json {
            serde_json::to_vec(&request).expect("JSON")
        } else {
            postcard::to_allocvec(&request).expect("postcard")
        };
        let back: ToWorker = if json {
            serde_json::from_slice(&bytes).expect("JSON")
        } else {
            postcard::from_bytes(&bytes).expect("postcard")
        };
        assert_eq!(back, request);
    }
    let iterations = 20_000;
    let time = |json: bool| {
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(round_trip(json, &request, &outcome));
        }
        started.elapsed().as_nanos() as f64 / iterations as f64
    };
    time(false);
    time(true);
    let (mut ratios, mut p, mut j) = (vec![], vec![], vec![]);
    for pair in 0..samples().max(11) {
        let (tp, tj) = if pair % 2 == 0 {
            let tp = time(false);
            (tp, time(true))
        } else {
            let tj = time(true);
            (time(false), tj)
        };
        ratios.push(tj / tp);
        p.push(tp);
        j.push(tj);
    }
    let (postcard_sizes, json_sizes) = (
        round_trip(false, &request, &outcome),
        round_trip(true, &request, &outcome),
    );
    json!({
        "iterations_per_block": iterations,
        "pairs": ratios.len(),
        "postcard_ns": median(&mut p),
        "json_ns": median(&mut j),
        "ratio_json_to_postcard": median(&mut ratios),
        "postcard_bytes": [postcard_sizes.0, postcard_sizes.1],
        "json_bytes": [json_sizes.0, json_sizes.1],
    })
}

/// Every measurement, into `isolation.json`.
fn run() -> Value {
    let program = connhost_bench::connhost_program();
    assert!(
        program.exists(),
        "{} is missing: cargo build --release --package connhost-cli",
        program.display()
    );
    let mut results = serde_json::Map::new();
    for (name, measure) in [
        ("serde", measure_serde as fn() -> Value),
        ("per_call", measure_per_call),
        ("throughput", measure_throughput),
        ("start", measure_start),
        ("restart", measure_restart),
        ("memory", measure_memory),
        ("replace", measure_replace),
    ] {
        eprintln!("isolation: {name}");
        let value = measure();
        println!("{name}: {value}");
        results.insert(name.to_owned(), value);
    }
    let results = Value::Object(results);
    write_result("isolation.json", &results);
    results
}

// ---- report ---------------------------------------------------------------

/// A criterion median in ns (`<dir>/<group>/<function>/new/estimates.json`).
fn criterion_ns(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn us(ns: f64) -> String {
    format!("{:.2} µs", ns / 1e3)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// The call section's lines (criterion and paired).
fn report_calls(md: &mut String, paired: &Value, criterion: &Path) {
    writeln!(md, "### Per call\n\nThe trivial provider of section 1, a third time: loaded isolated, in a sandboxed worker process (the release `connhost` binary), called over its socket pair (postcard frames). Criterion medians (`benches/call.rs`, groups `raw_call` and `validate`, function `isolated`):\n\n| path | compiled in | in process (plugin) | isolated | isolated / in process | isolated / compiled in |\n|---|---|---|---|---|---|").unwrap();
    for (group, label) in [
        ("raw_call", "`call_provider` (raw call)"),
        ("validate", "`Connhost::validate`"),
    ] {
        let get = |function| criterion_ns(criterion, group, function).unwrap_or(f64::NAN);
        let (native, plugin, isolated) = (get("native"), get("plugin"), get("isolated"));
        writeln!(
            md,
            "| {label} | {} | {} | {} | ×{:.1} | ×{:.1} |",
            us(native),
            us(plugin),
            us(isolated),
            isolated / plugin,
            isolated / native
        )
        .unwrap();
    }
    writeln!(md, "\n**Paired** (blocks of calls alternating, the order flipping every pair; medians of the per-pair figures):\n\n| path | baseline | pairs × calls per block | baseline | isolated | added per call | ratio |\n|---|---|---|---|---|---|---|").unwrap();
    for (group, label) in [
        ("raw_call", "`call_provider` (raw call)"),
        ("validate", "`Connhost::validate`"),
    ] {
        for (suffix, baseline) in [("plugin", "in process"), ("native", "compiled in")] {
            let g = &paired[format!("{group}_isolated_vs_{suffix}")];
            writeln!(
                md,
                "| {label} | {baseline} | {} × {} | {} | {} | {} | ×{:.1} |",
                g["pairs"],
                g["calls_per_block"],
                us(f(&g["baseline_ns"])),
                us(f(&g["isolated_ns"])),
                us(f(&g["overhead_ns"])),
                f(&g["ratio"])
            )
            .unwrap();
        }
    }
    let added = f(&paired["validate_isolated_vs_plugin"]["overhead_ns"]);
    writeln!(md, "\nThe aim was under 10 µs added per call (a Unix-socket round trip between two processes costs about 3–6 µs, go-plugin about 42 µs): through `Connhost::validate` isolation added {} per call on this run, {} the aim.\n", us(added), if added < 10_000.0 { "within" } else { "over" }).unwrap();
}

/// The rest of the section, from `isolation.json`.
fn report_rest(md: &mut String, r: &Value) {
    let q = &r["per_call"];
    if q.is_object() {
        let sw = |v: &Value| {
            format!(
                "{:.1} voluntary + {:.1} involuntary",
                f(&v["voluntary"]),
                f(&v["involuntary"])
            )
        };
        writeln!(md, "### Hand-offs per call

Sequential `Connhost::validate` of the trivial provider, in process and isolated, {} pairs of {}-call blocks alternating (the order flipping every pair): in process {}, isolated {}: **{} added per call** (×{:.2}, medians of the per-pair figures). Context switches and CPU time per call, medians over five blocks (from `/proc/PID/task/*/status` and `schedstat`; the host's figures count its own threads, the worker's its whole process tree; the CPU time includes the bounded polling each side does for the other's next message):

| | host process | worker | CPU time (host + worker) |
|---|---|---|---|
| in process | {} | | {} |
| isolated | {} | {} | {} + {} |
", q["pairs"], q["calls_per_block"], us(f(&q["in_process_ns"])), us(f(&q["isolated_ns"])), us(f(&q["added_ns"])), f(&q["ratio"]), sw(&q["in_process_host_switches_per_call"]), us(f(&q["in_process_host_cpu_ns_per_call"])), sw(&q["isolated_host_switches_per_call"]), sw(&q["isolated_worker_switches_per_call"]), us(f(&q["isolated_host_cpu_ns_per_call"])), us(f(&q["isolated_worker_cpu_ns_per_call"]))).unwrap();
        let z = &q["spaced"];
        if z.is_object() {
            writeln!(md, "Calls {} µs apart (a host called now and then, where neither side's polling finds the other's next message, and backs off), {} per block, medians of five blocks each: in process {} per call, isolated {}; CPU time per call: in process {}, isolated {} + {} (host + worker).\n", z["gap_us"], z["calls_per_block"], us(f(&z["in_process_ns"])), us(f(&z["isolated_ns"])), us(f(&z["in_process_host_cpu_ns_per_call"])), us(f(&z["isolated_host_cpu_ns_per_call"])), us(f(&z["isolated_worker_cpu_ns_per_call"]))).unwrap();
        }
    }
    let t = &r["throughput"];
    writeln!(md, "### Throughput of {} concurrent validations\n\n{} tasks each validating {} times on a multi-thread tokio runtime ({} threads), in process and isolated alternately, {} pairs: **×{:.2}** isolated / in process ({:.0} vs {:.0} validations/s; aim at least ×0.8). CPU time per validation (host + worker, from `schedstat`): {} in process, {} isolated (of which the worker {}).\n", t["concurrency"], t["concurrency"], t["validations_per_task"], t["runtime_threads"], t["pairs"], f(&t["ratio"]), f(&t["isolated_per_s"]), f(&t["in_process_per_s"]), us(f(&t["in_process_cpu_ns_per_validation"])), us(f(&t["isolated_cpu_ns_per_validation"])), us(f(&t["isolated_worker_cpu_ns_per_validation"]))).unwrap();
    let s = &r["start"];
    writeln!(md, "### Start and restart\n\n`Connhost::start` of one fresh copy of the plugin (checked, copied into the cache and hashed in both modes) until it is loaded (isolated: the worker spawned, confined, its library loaded and its offer received), then the first validation answered; {} samples, alternating:\n\n| | in process | isolated | added |\n|---|---|---|---|\n| loaded (worker ready) | {:.1} ms | {:.1} ms | {:.1} ms |\n| first validation answered | {:.1} ms | {:.1} ms | {:.1} ms (×{:.2}) |\n", s["samples"], f(&s["in_process_ready_ms"]), f(&s["isolated_ready_ms"]), f(&s["isolated_ready_ms"]) - f(&s["in_process_ready_ms"]), f(&s["in_process_first_answer_ms"]), f(&s["isolated_first_answer_ms"]), f(&s["isolated_first_answer_ms"]) - f(&s["in_process_first_answer_ms"]), f(&s["ratio_first_answer"])).unwrap();
    let c = &r["restart"];
    writeln!(md, "Crash to answering again: `kill -9` of the worker (its pid from `Connhost::plugins()`) until a validation answers valid from its replacement (a validation sent meanwhile gets a retryable worker fault; the loop retries every 1 ms), {} samples: median **{:.1} ms**, worst {:.1} ms (aim under 200 ms); {} restarts and {} crashes counted. The crash window is set to 1 ms so that every kill is a first crash, restarted at once: a crash loop's backoff (100 ms, doubling) is not in the figure. No in-process baseline exists: there a crash is the host's.\n", c["samples"], f(&c["median_ms"]), f(&c["max_ms"]), c["restarts"], c["crashes"]).unwrap();
    let m = &r["memory"];
    writeln!(md, "### Memory\n\nResident memory (`VmRSS`) of a fresh host process with {} fresh plugin copies loaded and validated once, in process vs isolated, minus a host with none ({}), medians of {} samples:\n\n| | in process | isolated |\n|---|---|---|\n| host, per plugin | {} | {} |\n| each worker process | | {} |\n| total per plugin | {} | {} (×{:.1}) |\n", m["plugins"], mib(f(&m["empty_host_kib"])), m["samples"], mib(f(&m["in_process_per_plugin_kib"])), mib(f(&m["isolated_host_per_plugin_kib"])), mib(f(&m["worker_kib"])), mib(f(&m["in_process_per_plugin_kib"])), mib(f(&m["isolated_total_per_plugin_kib"])), f(&m["isolated_total_per_plugin_kib"]) / f(&m["in_process_per_plugin_kib"])).unwrap();
    let p = &r["replace"];
    writeln!(md, "Replacing one plugin {} times (a fresh copy renamed over it, `Catalog::rescan`, the new version validated once): the host's RSS grows by {:.0} KiB per replacement in process (each retired library stays mapped) and by {:.0} KiB isolated; {} of {} replaced workers were gone (no process left) within 2 s.\n", p["replacements"], f(&p["in_process_growth_per_replacement_kib"]), f(&p["isolated_growth_per_replacement_kib"]), p["old_workers_gone"], p["replacements"]).unwrap();
    let z = &r["serde"];
    writeln!(md, "### The protocol's format: postcard vs JSON\n\nThe worker protocol frames its messages in postcard. Mirrors of its validate request (three fields) and its valid outcome, each encoded behind a 4-byte length prefix and decoded again, {} alternating blocks of {} round trips: postcard {:.0} ns, serde_json {:.0} ns per request + outcome, **×{:.1}** (JSON / postcard); {} + {} bytes vs {} + {} bytes. This is the measurement the protocol's choice of postcard rests on: the cheaper to encode and decode, and the smaller on the wire.\n", z["pairs"], z["iterations_per_block"], f(&z["postcard_ns"]), f(&z["json_ns"]), f(&z["ratio_json_to_postcard"]), z["postcard_bytes"][0], z["postcard_bytes"][1], z["json_bytes"][0], z["json_bytes"][1]).unwrap();
}

/// The BENCHMARKS.md section on stdout.
fn report(results: &Path, criterion: &Path) -> ExitCode {
    let read = |name: &str| -> Value {
        std::fs::read_to_string(results.join(name))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    };
    let (paired, isolation) = (read("call-paired.json"), read("isolation.json"));
    if isolation.is_null() {
        eprintln!("report: no isolation.json in {}", results.display());
        return ExitCode::FAILURE;
    }
    let mut md = String::from("## 7. Isolated plugins: a worker process per plugin\n\n`Isolation::Process` runs each plugin in a sandboxed worker process of its own (the `connhost` binary in worker mode, over a Unix socket pair); here against the same plugin in process, and compiled in, in the same run.\n\n");
    report_calls(&mut md, &paired, criterion);
    report_rest(&mut md, &isolation);
    print!("{md}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["per-call"] => println!("{}", measure_per_call()),
        ["throughput"] => println!("{}", measure_throughput()),
        ["run"] => {
            run();
            eprintln!("results in {}", results_dir().display());
        }
        ["report", results, criterion] => {
            return report(&PathBuf::from(results), &PathBuf::from(criterion))
        }
        ["memory-probe", mode, n] => println!(
            "{}",
            memory_probe(mode_of(mode), n.parse().expect("a number"))
        ),
        ["replace-probe", mode, k] => println!(
            "{}",
            replace_probe(mode_of(mode), k.parse().expect("a number"))
        ),
        _ => {
            eprintln!("usage: isolation run | per-call | throughput | report RESULTS CRITERION | memory-probe MODE N | replace-probe MODE K");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
