//! Call overhead: the same trivial provider type (`tests/fixtures/bench-trivial`)
//! compiled into this binary (the baseline, registered with
//! `ProviderRegistry::register`), loaded from its cdylib with connhost's
//! catalog (`connhost_bench::load_plugins`), and loaded isolated, in a
//! sandboxed worker process of its own (`Isolation::Process`, the release
//! `connhost` binary as the worker: `connhost_bench::connhost_program`).
//!
//! Groups (each with a `native` and a `plugin` function; `raw_call` and
//! `validate` also with `isolated`):
//! - `raw_call`: `registry.get(id).unwrap().call_provider(fields)`, polled by
//!   a minimal `block_on`; the credential's clone is outside the timing.
//! - `validate`: `Connhost::validate` (form rules, isolation thread, timeout,
//!   scrubbing, credential document) on a multi-thread tokio runtime, as
//!   `connhost serve` runs it.
//! - `providers`, `schema`: listing (descriptors are cached at load, so the
//!   two should be equal).
//!
//! Criterion measures a group's two functions one after the other, so
//! drift on a shared machine can land on one of them. After criterion, a
//! paired measurement alternates blocks of native and plugin calls (the
//! order flipping every pair) and keeps the median of the per-pair ratios
//! and differences; likewise isolated vs plugin and isolated vs native
//! (`*_isolated_vs_plugin`, `*_isolated_vs_native`, with `baseline_ns`
//! and `isolated_ns`): `call-paired.json` in the results folder.
//!
//! `scripts/bench` runs it with a short measurement time; `report` reads
//! criterion's estimates and the paired figures.

use std::hint::black_box;
use std::time::Duration;

use connhost::{Connhost, CredentialFields, Isolation, ProviderRegistry, Verdict};
use connhost_bench::{
    block_on, credential, fresh_copies, load_host, load_plugins, median, plugin_library,
    worker_pids, write_result, PROVIDER_ID,
};
use criterion::{BatchSize, Criterion};
use fixture_bench_trivial::BenchTrivial;
use serde_json::json;

/// The three backends' registries and what keeps them alive.
struct Backends {
    native: ProviderRegistry,
    plugin: ProviderRegistry,
    isolated: ProviderRegistry,
    /// The isolated plugin's host (its worker runs while it lives).
    _isolated_host: Connhost,
    /// The plugin files (they outlive the benchmarks).
    _dirs: [tempfile::TempDir; 2],
}

/// The three registries: compiled in, loaded from a fresh copy of the
/// cdylib, and loaded isolated from another fresh copy.
fn registries() -> Backends {
    let mut native = ProviderRegistry::new();
    native.register(BenchTrivial);
    let dir = fresh_copies(&plugin_library(), 1);
    let (plugin, report) = load_plugins(dir.path());
    assert!(
        report.failed.is_empty() && report.loaded.len() == 1,
        "the plugin did not load: {report:?}"
    );
    let isolated_dir = fresh_copies(&plugin_library(), 1);
    let isolated_host = load_host(isolated_dir.path(), Isolation::Process);
    assert_eq!(
        worker_pids(&isolated_host).len(),
        1,
        "the isolated plugin has no worker process"
    );
    Backends {
        native,
        plugin,
        isolated: isolated_host.registry().clone(),
        _isolated_host: isolated_host,
        _dirs: [dir, isolated_dir],
    }
}

/// Both backends must answer the same before they are compared.
fn check_same_answers(native: &ProviderRegistry, plugin: &ProviderRegistry) {
    let call = |registry: &ProviderRegistry| {
        block_on(
            registry
                .get(PROVIDER_ID)
                .expect("registered")
                .call_provider(credential()),
        )
    };
    let (a, b) = (call(native), call(plugin));
    assert!(matches!(a, Verdict::Valid(_)), "{a:?}");
    assert_eq!(a, b, "native and plugin answers differ");
}

/// Alternating blocks of `calls` calls to `a` and `b`, `pairs` times (the
/// order flipping every pair): the medians of the per-pair ratio b/a and
/// of the per-call difference b − a, in ns. Each call gets a fresh
/// credential, built before the block's clock starts.
fn paired(
    pairs: usize,
    calls: usize,
    mut a: impl FnMut(CredentialFields),
    mut b: impl FnMut(CredentialFields),
) -> serde_json::Value {
    let time = |f: &mut dyn FnMut(CredentialFields)| {
        let inputs: Vec<CredentialFields> = (0..calls).map(|_| credential()).collect();
        let started = std::time::Instant::now();
        for fields in inputs {
            f(fields);
        }
        started.elapsed().as_nanos() as f64 / calls as f64
    };
    // Warm both up.
    time(&mut a);
    time(&mut b);
    let (mut ratios, mut differences, mut a_ns, mut b_ns) = (vec![], vec![], vec![], vec![]);
    for pair in 0..pairs {
        let (ta, tb) = if pair % 2 == 0 {
            let ta = time(&mut a);
            (ta, time(&mut b))
        } else {
            let tb = time(&mut b);
            (time(&mut a), tb)
        };
        ratios.push(tb / ta);
        differences.push(tb - ta);
        a_ns.push(ta);
        b_ns.push(tb);
    }
    json!({
        "pairs": pairs,
        "calls_per_block": calls,
        "native_ns": median(&mut a_ns),
        "plugin_ns": median(&mut b_ns),
        "ratio": median(&mut ratios),
        "overhead_ns": median(&mut differences),
    })
}

/// [`paired`] figures of an isolated backend (`b`) against a baseline
/// (`a`), named as such.
fn isolated_figures(paired: serde_json::Value) -> serde_json::Value {
    json!({
        "pairs": paired["pairs"],
        "calls_per_block": paired["calls_per_block"],
        "baseline_ns": paired["native_ns"],
        "isolated_ns": paired["plugin_ns"],
        "ratio": paired["ratio"],
        "overhead_ns": paired["overhead_ns"],
    })
}

fn bench(c: &mut Criterion) {
    let all = registries();
    let (native, plugin, isolated) = (&all.native, &all.plugin, &all.isolated);
    check_same_answers(native, plugin);
    check_same_answers(native, isolated);
    let backends = [
        ("native", native),
        ("plugin", plugin),
        ("isolated", isolated),
    ];

    let mut group = c.benchmark_group("raw_call");
    for (name, registry) in backends {
        group.bench_function(name, |b| {
            b.iter_batched(
                credential,
                |fields| {
                    block_on(
                        registry
                            .get(black_box(PROVIDER_ID))
                            .unwrap()
                            .call_provider(fields),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hosts = backends.map(|(name, registry)| {
        let host = Connhost::from_registry(registry.clone(), &connhost::HostConfig::default());
        (name, host)
    });
    for (_, host) in &hosts {
        let verdict = runtime
            .block_on(host.validate(PROVIDER_ID, credential()))
            .expect("registered");
        assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
    }

    let mut group = c.benchmark_group("validate");
    for (name, host) in &hosts {
        group.bench_function(*name, |b| {
            b.iter_batched(
                credential,
                |fields| runtime.block_on(host.validate(black_box(PROVIDER_ID), fields)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // The paired measurements (see the module docs).
    let raw = |registry: &ProviderRegistry, fields: CredentialFields| {
        let verdict = block_on(
            registry
                .get(black_box(PROVIDER_ID))
                .unwrap()
                .call_provider(fields),
        );
        black_box(verdict);
    };
    let raw_paired = paired(41, 5_000, |f| raw(native, f), |f| raw(plugin, f));
    let raw_isolated_plugin = paired(41, 500, |f| raw(plugin, f), |f| raw(isolated, f));
    let raw_isolated_native = paired(41, 500, |f| raw(native, f), |f| raw(isolated, f));
    let validate = |host: &Connhost, fields: CredentialFields| {
        black_box(runtime.block_on(host.validate(black_box(PROVIDER_ID), fields)))
            .expect("registered");
    };
    let validate_paired = paired(
        41,
        200,
        |f| validate(&hosts[0].1, f),
        |f| validate(&hosts[1].1, f),
    );
    let validate_isolated_plugin = paired(
        41,
        200,
        |f| validate(&hosts[1].1, f),
        |f| validate(&hosts[2].1, f),
    );
    let validate_isolated_native = paired(
        41,
        200,
        |f| validate(&hosts[0].1, f),
        |f| validate(&hosts[2].1, f),
    );
    let results = json!({
        "raw_call": raw_paired,
        "validate": validate_paired,
        "raw_call_isolated_vs_plugin": isolated_figures(raw_isolated_plugin),
        "raw_call_isolated_vs_native": isolated_figures(raw_isolated_native),
        "validate_isolated_vs_plugin": isolated_figures(validate_isolated_plugin),
        "validate_isolated_vs_native": isolated_figures(validate_isolated_native),
    });
    println!("paired: {results:#}");
    write_result("call-paired.json", &results);

    // Listing is the same for every backend (descriptors are cached at
    // load): compiled in and plugin only.
    let mut group = c.benchmark_group("providers");
    for (name, host) in &hosts[..2] {
        group.bench_function(*name, |b| b.iter(|| black_box(host).providers()));
    }
    group.finish();

    let mut group = c.benchmark_group("schema");
    for (name, host) in &hosts[..2] {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(host).schema(black_box(PROVIDER_ID)))
        });
    }
    group.finish();
}

fn main() {
    let seconds = |var: &str, default: f64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs_f64(seconds(
            "CONNHOST_BENCH_WARMUP",
            1.0,
        )))
        .measurement_time(Duration::from_secs_f64(seconds(
            "CONNHOST_BENCH_MEASURE",
            3.0,
        )))
        .configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
