//! Call overhead: the same trivial provider type (`tests/fixtures/bench-trivial`)
//! compiled into this binary (the baseline, registered with
//! `ProviderRegistry::register`) and loaded from its cdylib with
//! `connhost::loader::load_directory`.
//!
//! Groups (each with a `native` and a `plugin` function):
//! - `raw_call`: `registry.get(id).unwrap().call_provider(fields)`, polled by
//!   a minimal `block_on`; the credential's clone is outside the timing.
//! - `validate`: `Connhost::validate` (form rules, isolation thread, timeout,
//!   scrubbing, credential document) on a multi-thread tokio runtime, as
//!   `connhost serve` runs it.
//! - `providers`, `schema`: listing (descriptors are cached at load, so the
//!   two should be equal).
//!
//! `scripts/bench` runs it with a short measurement time; `report` reads
//! criterion's estimates.

use std::hint::black_box;
use std::time::Duration;

use connhost::loader::{load_directory, LoadOptions};
use connhost::{Connhost, LoadReport, ProviderRegistry, Verdict};
use connhost_bench::{block_on, credential, fresh_copies, plugin_library, PROVIDER_ID};
use criterion::{BatchSize, Criterion};
use fixture_bench_trivial::BenchTrivial;

/// The two registries: compiled in, and loaded from a fresh copy of the
/// cdylib. The temp dir is returned so that it outlives the benchmarks.
fn registries() -> (ProviderRegistry, ProviderRegistry, tempfile::TempDir) {
    let mut native = ProviderRegistry::new();
    native.register(BenchTrivial);
    let dir = fresh_copies(&plugin_library(), 1);
    let mut plugin = ProviderRegistry::new();
    let report = load_directory(dir.path(), &mut plugin, &LoadOptions::default());
    assert!(
        report.failed.is_empty() && report.loaded.len() == 1,
        "the plugin did not load: {report:?}"
    );
    (native, plugin, dir)
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

fn bench(c: &mut Criterion) {
    let (native, plugin, _dir) = registries();
    check_same_answers(&native, &plugin);
    let backends = [("native", &native), ("plugin", &plugin)];

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
        let host = Connhost::from_parts(
            registry.clone(),
            LoadReport::default(),
            connhost::DEFAULT_VALIDATION_TIMEOUT,
        );
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

    let mut group = c.benchmark_group("providers");
    for (name, host) in &hosts {
        group.bench_function(*name, |b| b.iter(|| black_box(host).providers()));
    }
    group.finish();

    let mut group = c.benchmark_group("schema");
    for (name, host) in &hosts {
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
