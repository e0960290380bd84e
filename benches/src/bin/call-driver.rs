//! A small driver for callgrind: instruction counts are stable on a noisy
//! machine where wall-clock time is not.
//!
//! `call-driver MODE ITERS [DIR]` sets up, then runs `measured` (never
//! inlined, so `valgrind --tool=callgrind --toggle-collect='*measured*'`
//! can count it alone) ITERS times. Modes:
//!
//! - `raw-native`, `raw-plugin`: `RegisteredProvider::call_provider` on the
//!   trivial provider, compiled in or loaded from a fresh copy of its cdylib;
//! - `validate-native`, `validate-plugin`: `Connhost::validate`, on a
//!   multi-thread tokio runtime (the provider runs on a blocking-pool
//!   thread: count every thread, without `--toggle-collect`);
//! - `providers-native`, `providers-plugin`, `schema-native`,
//!   `schema-plugin`: `Connhost::providers()` and `Connhost::schema(id)`;
//! - `load-bare`, `load-connhost`: loading every library in DIR (fresh
//!   copies; ITERS is ignored), with bare `dlopen` + symbol lookup, or with
//!   connhost's catalog (`connhost_bench::load_plugins`);
//! - `raw-paired`: wall-clock time, not for callgrind: the raw call
//!   compiled in and from the plugin in alternating blocks of ITERS calls
//!   (41 pairs, the order flipping every pair), as `benches/call.rs`
//!   pairs them, without its isolated worker; prints the medians as JSON.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;

use connhost::{Connhost, CredentialFields, ProviderRegistry};
use connhost_bench::{
    bare_dlopen, block_on, credential, fresh_copies, load_plugins, median, plugin_library,
    PROVIDER_ID,
};
use fixture_bench_trivial::BenchTrivial;

fn registry(plugin: bool) -> (ProviderRegistry, Option<tempfile::TempDir>) {
    if !plugin {
        let mut registry = ProviderRegistry::new();
        registry.register(BenchTrivial);
        return (registry, None);
    }
    let dir = fresh_copies(&plugin_library(), 1);
    let (registry, report) = load_plugins(dir.path());
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    (registry, Some(dir))
}

#[inline(never)]
fn measured_raw(registry: &ProviderRegistry, fields: CredentialFields) {
    let verdict = block_on(
        registry
            .get(black_box(PROVIDER_ID))
            .unwrap()
            .call_provider(fields),
    );
    black_box(verdict);
}

#[inline(never)]
fn measured_validate(runtime: &tokio::runtime::Runtime, host: &Connhost, fields: CredentialFields) {
    let verdict = runtime.block_on(host.validate(black_box(PROVIDER_ID), fields));
    black_box(verdict.expect("registered"));
}

#[inline(never)]
fn measured_listing(host: &Connhost, schema: bool) {
    if schema {
        black_box(host.schema(black_box(PROVIDER_ID)).expect("registered"));
    } else {
        black_box(host.providers());
    }
}

#[inline(never)]
fn measured_load_bare(dir: &Path) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for path in files {
        bare_dlopen(&path);
    }
}

#[inline(never)]
fn measured_load_connhost(dir: &Path) {
    let (registry, report) = load_plugins(dir);
    assert!(!report.loaded.is_empty(), "{report:?}");
    black_box((registry, report));
}

/// The mean time of one raw call, in ns, over a block of `calls` calls
/// (each with a fresh credential, built before the clock starts).
fn time_block(registry: &ProviderRegistry, calls: usize) -> f64 {
    let inputs: Vec<CredentialFields> = (0..calls).map(|_| credential()).collect();
    let started = std::time::Instant::now();
    for fields in inputs {
        measured_raw(registry, fields);
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

/// `raw-paired`: the medians of the per-pair times, ratio and difference.
fn raw_paired(calls: usize) {
    let (native, _) = registry(false);
    let (plugin, _dir) = registry(true);
    time_block(&native, calls);
    time_block(&plugin, calls);
    let (mut a_ns, mut b_ns, mut ratios, mut differences) = (vec![], vec![], vec![], vec![]);
    for pair in 0..41 {
        let (ta, tb) = if pair % 2 == 0 {
            let ta = time_block(&native, calls);
            (ta, time_block(&plugin, calls))
        } else {
            let tb = time_block(&plugin, calls);
            (time_block(&native, calls), tb)
        };
        a_ns.push(ta);
        b_ns.push(tb);
        ratios.push(tb / ta);
        differences.push(tb - ta);
    }
    println!(
        "{{\"calls_per_block\": {calls}, \"native_ns\": {:.1}, \"plugin_ns\": {:.1}, \"ratio\": {:.3}, \"overhead_ns\": {:.1}}}",
        median(&mut a_ns),
        median(&mut b_ns),
        median(&mut ratios),
        median(&mut differences)
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, iters, dir) = match args.as_slice() {
        [mode, iters] => (mode.as_str(), iters.parse::<usize>().ok(), None),
        [mode, iters, dir] => (mode.as_str(), iters.parse().ok(), Some(Path::new(dir))),
        _ => ("", None, None),
    };
    let Some(iters) = iters else {
        eprintln!("usage: call-driver MODE ITERS [DIR]");
        return ExitCode::from(2);
    };
    match mode {
        "raw-native" | "raw-plugin" => {
            let (registry, _dir) = registry(mode == "raw-plugin");
            for _ in 0..iters {
                measured_raw(&registry, credential());
            }
        }
        "raw-paired" => raw_paired(iters.max(1)),
        "validate-native" | "validate-plugin" => {
            let (registry, _dir) = registry(mode == "validate-plugin");
            let host = Connhost::from_registry(registry, &connhost::HostConfig::default());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            for _ in 0..iters {
                measured_validate(&runtime, &host, credential());
            }
        }
        "providers-native" | "providers-plugin" | "schema-native" | "schema-plugin" => {
            let (registry, _dir) = registry(mode.ends_with("-plugin"));
            let host = Connhost::from_registry(registry, &connhost::HostConfig::default());
            for _ in 0..iters {
                measured_listing(&host, mode.starts_with("schema"));
            }
        }
        "load-bare" | "load-connhost" => {
            let Some(dir) = dir else {
                eprintln!("call-driver {mode}: needs DIR");
                return ExitCode::from(2);
            };
            if mode == "load-bare" {
                measured_load_bare(dir);
            } else {
                measured_load_connhost(dir);
            }
        }
        other => {
            eprintln!("call-driver: unknown mode {other}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
