//! Plugin loading: connhost's catalog (`Connhost::start`) on N = 1, 10, 100
//! distinct copies of the trivial plugin vs bare `dlopen` + symbol lookup
//! on equally fresh copies.
//!
//! glibc hands back the already-loaded object for a file (inode) it has
//! opened, and nothing is ever unloaded, so every sample gets fresh copies
//! in a fresh folder and runs in a fresh process (`load-probe`), after an
//! untimed warm-up load of one more fresh copy. The modes of one sample run
//! back to back, in an order that rotates from sample to sample, so that
//! drift on this noisy machine hits them alike. Copying the files is not
//! timed; they are in the page cache for every mode.
//!
//! Modes (see `src/bin/load-probe.rs`): `bare` (the baseline), `connhost`
//! (a cold load: the catalog on one folder with a cache of its own; one
//! file registers, the others are counted as id conflicts),
//! `connhost-warm` (a warm start: a kept cache folder whose index an
//! untimed run of another process wrote for these very files), and
//! `bare-copy` / `bare-copy-sha256`, which take a cold load apart (a
//! kernel copy; a copy through user space with SHA-256).
//!
//! Writes `load.json` to the results folder (see
//! `connhost_bench::results_dir`). Samples per N: `CONNHOST_BENCH_LOAD_SAMPLES`
//! as `N1,N10,N100` (default `15,9,5`).

use std::path::Path;
use std::process::Command;

use connhost_bench::{fresh_copies, median, plugin_library, write_result};
use serde_json::{json, Value};

/// `bare` first: the baseline every ratio divides by.
const MODES: [&str; 5] = [
    "bare",
    "connhost",
    "connhost-warm",
    "bare-copy",
    "bare-copy-sha256",
];
const SIZES: [usize; 3] = [1, 10, 100];

fn probe(mode: &str, library: &Path, n: usize) -> Value {
    let dir = fresh_copies(library, n);
    let warmup = fresh_copies(library, 1);
    let cache = tempfile::tempdir().expect("a cache folder");
    let run = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_load-probe"));
        command.arg(mode).arg(dir.path()).arg(warmup.path());
        if mode == "connhost-warm" {
            command.arg(cache.path());
        }
        command.output().expect("run load-probe")
    };
    if mode == "connhost-warm" {
        // Another process loads the files first (untimed), leaving the
        // cache folder and its index behind.
        let primed = run();
        assert!(primed.status.success(), "priming the cache failed");
    }
    // Settle the copies' writeback before timing anything.
    let _ = Command::new("sync").status();
    let output = run();
    assert!(
        output.status.success(),
        "load-probe {mode} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sample: Value = serde_json::from_slice(&output.stdout).expect("load-probe's JSON");
    assert_eq!(sample["n"], n, "{sample}");
    let (loaded, conflicts) = (&sample["loaded"], &sample["conflicts"]);
    let expected = match mode {
        "connhost" | "connhost-warm" => (json!(1), json!(n - 1)),
        _ => (json!(n), json!(0)),
    };
    assert_eq!((loaded, conflicts), (&expected.0, &expected.1), "{sample}");
    assert_eq!(sample["failed"], 0, "{sample}");
    sample
}

/// Median growth of a mode's anonymous resident memory during the timed
/// load, in KiB.
fn anon_increment(raw: &[Value], mode: &str) -> f64 {
    let mut grown: Vec<f64> = raw
        .iter()
        .filter(|s| s["mode"] == mode)
        .filter_map(|s| {
            Some(s["rss_anon_after_kib"].as_f64()? - s["rss_anon_before_kib"].as_f64()?)
        })
        .collect();
    median(&mut grown)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing.
    let samples: Vec<usize> = std::env::var("CONNHOST_BENCH_LOAD_SAMPLES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| v.len() == SIZES.len())
        .unwrap_or_else(|| vec![15, 9, 9]);
    let library = plugin_library();
    let library_bytes = std::fs::metadata(&library).expect("the plugin").len();
    let loaded_bytes =
        connhost_bench::loaded_len(&std::fs::File::open(&library).expect("the plugin"));
    println!(
        "load: {} ({} KiB), modes {MODES:?}",
        library.display(),
        library_bytes / 1024
    );

    let mut sizes = Vec::new();
    for (&n, &count) in SIZES.iter().zip(&samples) {
        let mut ns: [Vec<f64>; MODES.len()] = Default::default();
        let mut raw = Vec::new();
        for s in 0..count {
            for k in 0..MODES.len() {
                let m = (s + k) % MODES.len();
                let sample = probe(MODES[m], &library, n);
                ns[m].push(sample["ns"].as_f64().expect("ns"));
                raw.push(sample);
            }
        }
        let medians: Vec<f64> = ns.iter_mut().map(|v| median(v)).collect();
        let per_mode: serde_json::Map<String, Value> = MODES
            .iter()
            .zip(&ns)
            .zip(&medians)
            .map(|((mode, ns), median)| {
                (
                    (*mode).to_owned(),
                    json!({
                        "median_ms": median / 1e6,
                        "min_ms": ns.first().copied().unwrap_or(f64::NAN) / 1e6,
                        "max_ms": ns.last().copied().unwrap_or(f64::NAN) / 1e6,
                        "per_library_ms": median / 1e6 / n as f64,
                        "samples_ms": ns.iter().map(|v| v / 1e6).collect::<Vec<_>>(),
                        "rss_anon_increment_kib": anon_increment(&raw, mode),
                    }),
                )
            })
            .collect();
        // Per-sample ratios (modes of one sample ran back to back), then
        // their median: robust to drift between samples.
        let paired = |mode: &str| {
            let mut ratios: Vec<f64> = raw
                .chunks(MODES.len())
                .map(|chunk| {
                    let of = |wanted: &str| {
                        chunk
                            .iter()
                            .find(|s| s["mode"] == wanted)
                            .and_then(|s| s["ns"].as_f64())
                            .expect("every mode in every sample")
                    };
                    of(mode) / of("bare")
                })
                .collect();
            median(&mut ratios)
        };
        let ratios: serde_json::Map<String, Value> = MODES[1..]
            .iter()
            .map(|mode| ((*mode).to_owned(), json!(paired(mode))))
            .collect();
        let line: Vec<String> = MODES
            .iter()
            .zip(&medians)
            .map(|(mode, median)| match ratios.get(*mode) {
                Some(ratio) => format!(
                    "{mode} {:.2} ms (x{:.2})",
                    median / 1e6,
                    ratio.as_f64().unwrap()
                ),
                None => format!("{mode} {:.2} ms", median / 1e6),
            })
            .collect();
        println!("load N={n:>3} ({count} samples): {}", line.join(", "));
        sizes.push(json!({
            "n": n,
            "samples": count,
            "modes": per_mode,
            "ratios_vs_bare": ratios,
            "raw": raw,
        }));
    }

    // Linearity: least-squares line through the medians, per mode.
    let fit = |mode: &str| {
        let points: Vec<(f64, f64)> = sizes
            .iter()
            .map(|s| {
                (
                    s["n"].as_f64().unwrap(),
                    s["modes"][mode]["median_ms"].as_f64().unwrap(),
                )
            })
            .collect();
        let count = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / count;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / count;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        let slope = sxy / sxx;
        let intercept = mean_y - slope * mean_x;
        let ss_tot: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
        let ss_res: f64 = points
            .iter()
            .map(|p| (p.1 - (intercept + slope * p.0)).powi(2))
            .sum();
        json!({
            "ms_per_library": slope,
            "intercept_ms": intercept,
            "r_squared": 1.0 - ss_res / ss_tot,
        })
    };
    let linearity: serde_json::Map<String, Value> =
        MODES.iter().map(|m| ((*m).to_owned(), fit(m))).collect();
    for (mode, line) in &linearity {
        println!(
            "load fit {mode}: {:.3} ms/library + {:.3} ms, R² {:.5}",
            line["ms_per_library"].as_f64().unwrap(),
            line["intercept_ms"].as_f64().unwrap(),
            line["r_squared"].as_f64().unwrap()
        );
    }
    // A cold load taken apart, per library and per MiB of the file, from
    // the slopes: dlopen (bare), the kernel copy (bare-copy - bare), a
    // SHA-256 pass through user space instead (bare-copy-sha256 -
    // bare-copy), and the rest of connhost (connhost - bare-copy).
    let slope = |mode: &str| {
        linearity[mode]["ms_per_library"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let mib = library_bytes as f64 / (1024.0 * 1024.0);
    let part = |ms: f64| json!({"ms_per_library": ms, "ms_per_mib": ms / mib});
    // The copy is per MiB of what it holds.
    let copied_mib = loaded_bytes as f64 / (1024.0 * 1024.0);
    let copy_part = |ms: f64| json!({"ms_per_library": ms, "ms_per_mib": ms / copied_mib});
    let parts = json!({
        "dlopen": part(slope("bare")),
        "kernel_copy": copy_part(slope("bare-copy") - slope("bare")),
        "sha256_copy_extra": part(slope("bare-copy-sha256") - slope("bare-copy")),
        "connhost_rest": part(slope("connhost") - slope("bare-copy")),
        "warm_extra": part(slope("connhost-warm") - slope("bare")),
    });
    println!("load parts (ms per library, per MiB): {parts}");
    // The same at N = 10 for a file as a vendor ships it: the example
    // plugin `mai` as built for release (no debug info).
    let shipped = library.parent().expect("the plugin's folder").join(format!(
        "{}mai.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    ));
    let shipped_result = shipped.is_file().then(|| {
        let modes = ["bare", "connhost", "connhost-warm"];
        let mut ns: [Vec<f64>; 3] = Default::default();
        let mut ratios: [Vec<f64>; 2] = Default::default();
        for s in 0..samples[1] {
            let mut sample = [0.0; 3];
            for k in 0..modes.len() {
                let m = (s + k) % modes.len();
                sample[m] = probe(modes[m], &shipped, 10)["ns"].as_f64().expect("ns");
                ns[m].push(sample[m]);
            }
            ratios[0].push(sample[1] / sample[0]);
            ratios[1].push(sample[2] / sample[0]);
        }
        let result = json!({
            "library": shipped.display().to_string(),
            "library_bytes": std::fs::metadata(&shipped).map(|m| m.len()).unwrap_or(0),
            "n": 10,
            "samples": samples[1],
            "median_ms": {
                "bare": median(&mut ns[0]) / 1e6,
                "connhost": median(&mut ns[1]) / 1e6,
                "connhost-warm": median(&mut ns[2]) / 1e6,
            },
            "ratios_vs_bare": {
                "connhost": median(&mut ratios[0]),
                "connhost-warm": median(&mut ratios[1]),
            },
        });
        println!("load shipped plugin (mai, N=10): {result}");
        result
    });
    // What a vendor ships: the example plugins as built for release, next
    // to the bench's plugin.
    let release = library.parent().expect("the plugin's folder");
    let plugin_sizes: serde_json::Map<String, Value> = ["bedrock", "daytona", "github", "mai"]
        .iter()
        .filter_map(|name| {
            let file = release.join(format!(
                "{}{name}.{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_EXTENSION
            ));
            let bytes = std::fs::metadata(file).ok()?.len();
            Some(((*name).to_owned(), json!(bytes)))
        })
        .collect();
    let path = write_result(
        "load.json",
        &json!({
            "library": library.display().to_string(),
            "library_bytes": library_bytes,
            "loaded_bytes": loaded_bytes,
            "sizes": sizes,
            "linearity": linearity,
            "parts": parts,
            "plugin_sizes": plugin_sizes,
            "shipped": shipped_result,
        }),
    );
    println!("load: wrote {}", path.display());
}
