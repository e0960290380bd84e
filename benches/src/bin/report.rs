//! Writes `BENCHMARKS.md` and the SVG charts from one run's results.
//!
//! `report RESULTS_DIR CRITERION_DIR OUTPUT_MD`
//!
//! Reads from RESULTS_DIR: `load.json`, `http.json`, `memory.json` (written
//! by the load bench and `harness`), `callgrind.tsv` (`MODE ITERS IR`
//! lines), `commands.tsv` (`KEY<TAB>COMMAND` lines: what scripts/bench ran)
//! and the profiles in `raw/`; from CRITERION_DIR, criterion's estimates of
//! the call benchmarks. Writes OUTPUT_MD and `ratios.svg` and `load.svg`
//! into RESULTS_DIR. A missing input leaves its section saying so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// One criterion benchmark: median and its 95% interval, in ns.
#[derive(Clone, Copy)]
struct Estimate {
    median: f64,
    low: f64,
    high: f64,
}

fn criterion_estimate(dir: &Path, group: &str, function: &str) -> Option<Estimate> {
    let estimates = read_json(&dir.join(group).join(function).join("new/estimates.json"))?;
    let median = &estimates["median"];
    Some(Estimate {
        median: median["point_estimate"].as_f64()?,
        low: median["confidence_interval"]["lower_bound"].as_f64()?,
        high: median["confidence_interval"]["upper_bound"].as_f64()?,
    })
}

/// A ratio with a conservative interval (the extremes of the two
/// intervals).
fn ratio_of(numerator: Estimate, denominator: Estimate) -> (f64, f64, f64) {
    (
        numerator.median / denominator.median,
        numerator.low / denominator.high,
        numerator.high / denominator.low,
    )
}

fn ns(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} ms", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} µs", value / 1e3)
    } else {
        format!("{value:.0} ns")
    }
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// One bar of the ratio chart.
struct Bar {
    label: String,
    ratio: f64,
    group: &'static str,
}

/// The machine, from the system itself.
fn machine(results: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| "unknown".into());
    let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    vec![
        ("Date".into(), date),
        (
            "Commit".into(),
            format!(
                "{commit}{}",
                if dirty {
                    " (plus uncommitted changes in the working tree)"
                } else {
                    ""
                }
            ),
        ),
        ("`nproc`".into(), nproc),
        ("CPU".into(), model),
        ("Memory".into(), memory),
        ("Kernel".into(), kernel),
        ("Rust".into(), rustc),
        (
            "Load average (1, 5, 15 min) at the start / end of the run".into(),
            {
                let first3 = |text: String| {
                    text.split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!(
                    "{} / {} (other work on this shared machine shows here)",
                    std::fs::read_to_string(results.join("loadavg-start.txt"))
                        .map(first3)
                        .unwrap_or_else(|_| "?".into()),
                    std::fs::read_to_string("/proc/loadavg")
                        .map(first3)
                        .unwrap_or_else(|_| "?".into()),
                )
            },
        ),
    ]
}

/// `MODE ITERS IR` lines -> mode -> [(iters, ir)].
fn callgrind(path: &Path) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut modes: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [mode, iters, ir] = parts.as_slice() {
            if let (Ok(iters), Ok(ir)) = (iters.parse(), ir.parse()) {
                modes
                    .entry((*mode).to_owned())
                    .or_default()
                    .push((iters, ir));
            }
        }
    }
    modes
}

/// Instructions per iteration: the difference between the longest and
/// shortest run over the difference in iterations (setup and first-call
/// costs cancel out).
fn per_iteration(runs: &[(f64, f64)]) -> Option<f64> {
    let min = runs.iter().min_by(|a, b| a.0.total_cmp(&b.0))?;
    let max = runs.iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
    (max.0 > min.0).then(|| (max.1 - min.1) / (max.0 - min.0))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, criterion, output] = args.as_slice() else {
        eprintln!("usage: report RESULTS_DIR CRITERION_DIR OUTPUT_MD");
        return ExitCode::from(2);
    };
    let results = PathBuf::from(results);
    let criterion = PathBuf::from(criterion);
    let output = PathBuf::from(output);
    let relative = |path: &Path| -> String {
        let base = output.parent().unwrap_or(Path::new("."));
        let base = base.canonicalize().unwrap_or(base.to_owned());
        let path = path.canonicalize().unwrap_or(path.to_owned());
        path.strip_prefix(&base)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    };
    let commands: BTreeMap<String, String> = std::fs::read_to_string(results.join("commands.tsv"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.replace("\\n", "\n")))
        .collect();
    let command = |key: &str| -> String {
        commands
            .get(key)
            .map(|c| format!("\n\n```sh\n{c}\n```\n"))
            .unwrap_or_else(|| "\n(command not recorded)\n".into())
    };

    let mut md = String::new();
    let mut bars: Vec<Bar> = Vec::new();
    let mut headline: Vec<(String, String)> = Vec::new();

    // ---- 1. calls -------------------------------------------------------
    let mut calls = String::new();
    let paired = read_json(&results.join("call-paired.json"));
    let cg = callgrind(&results.join("callgrind.tsv"));
    let cg_per = |mode: &str| cg.get(mode).and_then(|runs| per_iteration(runs));
    writeln!(calls, "| path | compiled in (baseline) | plugin | overhead | ratio (95% interval) | instructions: compiled in / plugin (ratio) |\n|---|---|---|---|---|---|").unwrap();
    for (group, label, cg_key) in [
        ("raw_call", "`call_provider` (raw call)", Some("raw")),
        ("validate", "`Connhost::validate`", Some("validate")),
        ("providers", "`Connhost::providers()`", Some("providers")),
        ("schema", "`Connhost::schema(id)`", Some("schema")),
    ] {
        let (Some(native), Some(plugin)) = (
            criterion_estimate(&criterion, group, "native"),
            criterion_estimate(&criterion, group, "plugin"),
        ) else {
            writeln!(calls, "| {label} | (no result) | | | | |").unwrap();
            continue;
        };
        let (ratio, low, high) = ratio_of(plugin, native);
        let instructions = cg_key
            .and_then(|key| {
                let native = cg_per(&format!("{key}-native"))?;
                let plugin = cg_per(&format!("{key}-plugin"))?;
                bars.push(Bar {
                    label: format!("{label} (instructions)").replace('`', ""),
                    ratio: plugin / native,
                    group: "call",
                });
                Some(format!(
                    "{native:.0} / {plugin:.0} (×{:.2})",
                    plugin / native
                ))
            })
            .unwrap_or_else(|| "".into());
        writeln!(
            calls,
            "| {label} | {} | {} | {} | ×{ratio:.2} ({low:.2}–{high:.2}) | {instructions} |",
            ns(native.median),
            ns(plugin.median),
            ns(plugin.median - native.median),
        )
        .unwrap();
        let paired_ratio = paired.as_ref().and_then(|p| p[group]["ratio"].as_f64());
        bars.push(Bar {
            label: match paired_ratio {
                Some(_) => format!("{label} (time, paired)"),
                None => format!("{label} (time)"),
            }
            .replace('`', ""),
            ratio: paired_ratio.unwrap_or(ratio),
            group: "call",
        });
        let instruction_ratio = cg_key
            .and_then(|key| {
                Some(cg_per(&format!("{key}-plugin"))? / cg_per(&format!("{key}-native"))?)
            })
            .map(|r| format!("; ×{r:.2} in instructions"))
            .unwrap_or_default();
        let paired_figures = paired.as_ref().map(|p| &p[group]).filter(|p| p.is_object());
        let (time, overhead) = match paired_figures {
            Some(p) => (
                format!(
                    "×{:.2} in time, paired ({} vs {}){instruction_ratio}",
                    f(&p["ratio"]),
                    ns(f(&p["plugin_ns"])),
                    ns(f(&p["native_ns"]))
                ),
                f(&p["overhead_ns"]),
            ),
            None => (
                format!(
                    "×{ratio:.2} in time ({} vs {}){instruction_ratio}",
                    ns(plugin.median),
                    ns(native.median)
                ),
                plugin.median - native.median,
            ),
        };
        let (what, note) = match group {
            "raw_call" => (
                "Raw provider call, plugin vs compiled in".to_owned(),
                format!(
                    ": overhead {} per call, {} the 1 µs aim",
                    ns(overhead),
                    if overhead < 1000.0 { "within" } else { "over" }
                ),
            ),
            "validate" => (
                "`Connhost::validate`, plugin vs compiled in".to_owned(),
                String::new(),
            ),
            "providers" => (
                "`Connhost::providers()`, plugin vs compiled in".to_owned(),
                ": descriptors are cached at load; a plugin's entry also clones its origin (name, version, path)".to_owned(),
            ),
            _ => (
                "`Connhost::schema(id)`, plugin vs compiled in".to_owned(),
                ": descriptors are cached at load".to_owned(),
            ),
        };
        headline.push((what, format!("{time}{note}")));
    }
    if let Some(p) = &paired {
        writeln!(calls, "\n**Paired** (drift-proof: blocks of native and plugin calls alternate, the order flipping every pair; medians of the per-pair figures):\n\n| path | pairs × calls per block | compiled in | plugin | overhead per call | ratio |\n|---|---|---|---|---|---|").unwrap();
        for (group, label) in [
            ("raw_call", "`call_provider` (raw call)"),
            ("validate", "`Connhost::validate`"),
        ] {
            let g = &p[group];
            writeln!(
                calls,
                "| {label} | {} × {} | {} | {} | {} | ×{:.2} |",
                g["pairs"],
                g["calls_per_block"],
                ns(f(&g["native_ns"])),
                ns(f(&g["plugin_ns"])),
                ns(f(&g["overhead_ns"])),
                f(&g["ratio"])
            )
            .unwrap();
        }
    }
    if let (Some(raw), Some(validate)) = (
        criterion_estimate(&criterion, "raw_call", "native"),
        criterion_estimate(&criterion, "validate", "native"),
    ) {
        writeln!(
            calls,
            "\nThe full `validate` path costs ×{:.0} the raw call of the same compiled-in provider ({} vs {}): the form rules, the isolation thread (`spawn_blocking` + `Handle::block_on`), the timeout, scrubbing and the credential document dominate any plugin boundary.",
            validate.median / raw.median,
            ns(validate.median),
            ns(raw.median)
        )
        .unwrap();
    }

    writeln!(md, "# Benchmarks\n").unwrap();
    writeln!(md, "Produced by `scripts/bench` (every figure and chart below comes from one run of it; rerun it to refresh this file). Every figure is a **ratio against a baseline measured in the same run** on the same machine: this machine is shared and noisy, so absolute times move between runs while ratios hold much better. Instruction counts (callgrind) are given where they apply: they do not depend on the noise.\n").unwrap();
    writeln!(md, "![ratios](benches/out/ratios.svg)\n").unwrap();

    // ---- 2. load ----------------------------------------------------------
    let mut load = String::new();
    let mut load_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    if let Some(data) = read_json(&results.join("load.json")) {
        let bytes = f(&data["library_bytes"]);
        writeln!(load, "Plugin file: `libfixture_bench_trivial.so`, {:.1} MiB (a release build keeping this workspace's `debug = \"line-tables-only\"` on purpose: a big file; the example plugins ship without debug info, see the sizes below), of which the system loader reads the first {:.0} KiB (up to the end of its last segment): what the cache copies.\n", bytes / 1048576.0, f(&data["loaded_bytes"]) / 1024.0).unwrap();
        writeln!(load, "| N | samples | bare `dlopen` + symbol (baseline) | cold: `Connhost::start`, a new cache | ratio | warm: a kept cache (`--cache-dir`) | ratio | bare + kernel copy (ratio) | bare + copy with SHA-256 (ratio) |\n|---|---|---|---|---|---|---|---|---|").unwrap();
        for size in data["sizes"].as_array().into_iter().flatten() {
            let n = f(&size["n"]);
            let mode = |m: &str| f(&size["modes"][m]["median_ms"]);
            let ratio = |m: &str| f(&size["ratios_vs_bare"][m]);
            for m in ["bare", "connhost", "connhost-warm", "bare-copy"] {
                load_series
                    .entry(m.to_owned())
                    .or_default()
                    .push((n, mode(m)));
            }
            writeln!(
                load,
                "| {n} | {} | {:.2} ms | {:.2} ms | ×{:.1} | {:.2} ms | ×{:.2} | {:.2} ms (×{:.1}) | {:.2} ms (×{:.1}) |",
                size["samples"],
                mode("bare"),
                mode("connhost"),
                ratio("connhost"),
                mode("connhost-warm"),
                ratio("connhost-warm"),
                mode("bare-copy"),
                ratio("bare-copy"),
                mode("bare-copy-sha256"),
                ratio("bare-copy-sha256"),
            )
            .unwrap();
            bars.push(Bar {
                label: format!("load cold, N={n}"),
                ratio: ratio("connhost"),
                group: "load",
            });
            bars.push(Bar {
                label: format!("load warm, N={n}"),
                ratio: ratio("connhost-warm"),
                group: "load",
            });
        }
        let per = |m: &str| f(&data["linearity"][m]["ms_per_library"]);
        let (bare, cold, warm) = (per("bare"), per("connhost"), per("connhost-warm"));
        headline.push((
            "Loading a plugin, cold (a new cache folder) vs bare `dlopen`, per library (slope N = 1 → 100)".into(),
            format!("×{:.1} ({cold:.2} ms vs {bare:.3} ms for a {:.1} MiB file)", cold / bare, bytes / 1048576.0),
        ));
        headline.push((
            "Loading a plugin, warm (a kept `--cache-dir`, files unchanged) vs bare `dlopen`, per library".into(),
            format!("×{:.2} ({warm:.3} ms vs {bare:.3} ms)", warm / bare),
        ));
        writeln!(load, "\nTimes are medians over the samples; each ratio is the median of per-sample ratios (the modes of one sample run back to back in a rotating order, in fresh processes, on fresh copies). Every copy offers the same provider id: the first file registers it and the other N−1 are refused as conflicts *after* all the loading work, which is what is measured (the counts are checked). The warm mode's cache folder was filled by an untimed run of another process on the same files. The copy modes are the baseline plus one step each, to take a cold load apart.\n").unwrap();
        writeln!(load, "**Linearity** (least-squares line through the medians):\n\n| mode | ms per library | intercept | R² |\n|---|---|---|---|").unwrap();
        for (mode, line) in data["linearity"].as_object().into_iter().flatten() {
            writeln!(
                load,
                "| {mode} | {:.3} | {:.3} ms | {:.4} |",
                f(&line["ms_per_library"]),
                f(&line["intercept_ms"]),
                f(&line["r_squared"])
            )
            .unwrap();
        }
        let parts = &data["parts"];
        if parts.is_object() {
            writeln!(load, "\n**A cold load, part by part** (from the slopes; per library of this file, and per MiB of the file unless said):\n\n| part | ms per library | ms per MiB |\n|---|---|---|").unwrap();
            for (key, what) in [
                ("dlopen", "`dlopen` + symbol (the baseline itself)"),
                ("kernel_copy", "the copy into the cache of what the loader reads, by the kernel (`copy_file_range`; per MiB copied)"),
                ("connhost_rest", "the rest of connhost (checks, layout check, `init`, descriptors, registry)"),
                ("sha256_copy_extra", "a SHA-256 pass over the whole file instead, through user space (only when the lock file is in force, or a signature is checked: minisign's own hash then)"),
                ("warm_extra", "a warm start's cost over `dlopen`"),
            ] {
                writeln!(load, "| {what} | {:.3} | {:.3} |", f(&parts[key]["ms_per_library"]), f(&parts[key]["ms_per_mib"])).unwrap();
            }
        }
        let shipped = &data["shipped"];
        if shipped.is_object() {
            let ms = |m: &str| f(&shipped["median_ms"][m]);
            let ratio = |m: &str| f(&shipped["ratios_vs_bare"][m]);
            writeln!(load, "\n**A plugin as shipped** (`libmai.so` as built for release, {:.0} KiB, N = {} fresh copies, {} samples): bare {:.2} ms; cold {:.2} ms (×{:.1}); warm {:.2} ms (×{:.2}).", f(&shipped["library_bytes"]) / 1024.0, shipped["n"], shipped["samples"], ms("bare"), ms("connhost"), ratio("connhost"), ms("connhost-warm"), ratio("connhost-warm")).unwrap();
            headline.push((
                "Loading a plugin as shipped (`libmai.so`, release, no debug info), N = 10, cold and warm vs bare `dlopen`".into(),
                format!("×{:.1} cold, ×{:.2} warm ({:.2} / {:.2} / {:.2} ms)", ratio("connhost"), ratio("connhost-warm"), ms("connhost"), ms("connhost-warm"), ms("bare")),
            ));
        }
        if let Some(sizes) = data["plugin_sizes"].as_object() {
            writeln!(load, "\n**Example plugins as built for release** (what a vendor ships; the workspace builds them without debug info, as the README's plugin template does):\n\n| plugin | size |\n|---|---|").unwrap();
            for (name, bytes) in sizes {
                writeln!(load, "| {name} | {:.0} KiB |", f(bytes) / 1024.0).unwrap();
            }
        }
        if let (Some(bare), Some(connhost)) = (cg_per("load-bare"), cg_per("load-connhost")) {
            writeln!(load, "\nInstructions per library (callgrind, user space only; the difference between loading 12 and 2 fresh copies, over 10): bare {bare:.0}, `Connhost::start` (cold) {connhost:.0} (×{:.1}). They miss the kernel time (the copy, `dlopen`'s mappings): see the profile.", connhost / bare).unwrap();
        }
        if let Some(last) = data["sizes"].as_array().and_then(|s| s.last()) {
            let anon = |m: &str| f(&last["modes"][m]["rss_anon_increment_kib"]) / 1024.0;
            writeln!(load, "\nAnonymous memory the process holds after the timed load of N = {}: bare {:.1} MiB, cold {:.1} MiB, warm {:.1} MiB (medians).", last["n"], anon("bare"), anon("connhost"), anon("connhost-warm")).unwrap();
        }
        writeln!(load, "\n![load time against N](benches/out/load.svg)").unwrap();
    } else {
        writeln!(load, "(no load results in this run)").unwrap();
    }

    // ---- 3. HTTP ----------------------------------------------------------
    let mut http = String::new();
    if let Some(data) = read_json(&results.join("http.json")) {
        let s = &data["settings"];
        writeln!(http, "Settings: `wrk -t{} -c{} -d{}s` per run, {} rounds per server and route (servers alternating), each server pinned to CPU 0 (`taskset -c 0`: one tokio worker) and wrk to CPU 1, both on 127.0.0.1; a 1 s warm-up run per server and route first. The bare server answers with the bytes connhost answered ({} and {} bytes; checked before the runs).\n",
            s["threads"], s["connections"], s["duration_s"], s["rounds"],
            data["providers_body_bytes"], data["validate_body_bytes"]).unwrap();
        writeln!(http, "| route | server | requests/s | p50 | p90 | p99 | p99.9 | server CPU per request | server CPU busy |\n|---|---|---|---|---|---|---|---|---|").unwrap();
        for (route, label) in [
            ("providers", "`GET /v1/providers`"),
            ("validate", "`POST /v1/providers/mai/validate` → 422"),
        ] {
            let r = &data["routes"][route];
            for server in ["bare", "connhost"] {
                let v = &r["servers"][server];
                writeln!(
                    http,
                    "| {label} | {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} µs | {:.0}% |",
                    if server == "bare" { "bare axum (baseline)" } else { "connhost serve" },
                    f(&v["requests_per_s"]),
                    f(&v["p50_us"]),
                    f(&v["p90_us"]),
                    f(&v["p99_us"]),
                    f(&v["p999_us"]),
                    f(&v["server_cpu_us_per_request"]),
                    f(&v["server_cpu_utilisation"]) * 100.0
                )
                .unwrap();
            }
            let ratio = &r["ratio_connhost_vs_bare"];
            writeln!(
                http,
                "| {label} | **connhost / bare** | **×{:.2}** | ×{:.2} | | ×{:.2} | | ×{:.2} | |",
                f(&ratio["requests_per_s"]),
                f(&ratio["p50_us"]),
                f(&ratio["p99_us"]),
                f(&ratio["server_cpu_us_per_request"]),
            )
            .unwrap();
            let short = if route == "validate" {
                "POST mai/validate 422"
            } else {
                "GET /v1/providers"
            };
            bars.push(Bar {
                label: format!("HTTP {short} (1/throughput)"),
                ratio: 1.0 / f(&ratio["requests_per_s"]),
                group: "http",
            });
            bars.push(Bar {
                label: format!("HTTP {short} (CPU/request)"),
                ratio: f(&ratio["server_cpu_us_per_request"]),
                group: "http",
            });
            headline.push((
                format!("HTTP {label}, connhost / bare axum"),
                format!(
                    "×{:.2} the server CPU time per request ({:.1} vs {:.1} µs); ×{:.2} the throughput ({:.0} vs {:.0} requests/s); ×{:.2} the p99 latency",
                    f(&ratio["server_cpu_us_per_request"]),
                    f(&r["servers"]["connhost"]["server_cpu_us_per_request"]),
                    f(&r["servers"]["bare"]["server_cpu_us_per_request"]),
                    f(&ratio["requests_per_s"]),
                    f(&r["servers"]["connhost"]["requests_per_s"]),
                    f(&r["servers"]["bare"]["requests_per_s"]),
                    f(&ratio["p99_us"])
                ),
            ));
        }
        let busy = ["providers", "validate"]
            .iter()
            .flat_map(|route| {
                ["bare", "connhost"].map(|server| {
                    f(&data["routes"][route]["servers"][server]["server_cpu_utilisation"])
                })
            })
            .fold(f64::INFINITY, f64::min);
        if busy < 0.8 {
            writeln!(http, "\n**This run was disturbed**: other work on the machine left the pinned servers as little as {:.0}% of their CPU, so throughput and latency (the tails especially) say more about the machine than about the servers. The CPU time per request is the figure to trust here: a server that waits for its core does not spend CPU time meanwhile.", busy * 100.0).unwrap();
        }
        writeln!(http, "\nThroughput and latency are medians over the rounds. \"Server CPU\" is the server process's user + system time during a run (from `/proc/<pid>/stat`) per request, and as a share of the run: near 100% means the server, not wrk, was the bottleneck. The exact wrk invocation (the Lua script, in `benches/out/raw/`, sets the method and body and prints the percentiles):").unwrap();
        for route in ["providers", "validate"] {
            if let Some(c) = data["routes"][route]["wrk_command"].as_str() {
                writeln!(http, "\n```sh\n{c}\n```").unwrap();
            }
        }
    } else {
        writeln!(http, "(no HTTP results in this run)").unwrap();
    }

    // ---- 4. memory --------------------------------------------------------
    let mut memory = String::new();
    if let Some(data) = read_json(&results.join("memory.json")) {
        writeln!(memory, "`VmRSS` of `connhost serve` (built-in providers + N fresh copies of the plugin, after `/readyz` answers 200 and one `GET /v1/providers`), median of {} samples; the baseline per library is a process that only `dlopen`s N fresh copies (`load-probe bare`, RSS after − before). Every copy offers the same provider id, so N−1 of them are refused as conflicts after loading (their libraries stay mapped: nothing is unloaded). Each copy carries a few distinct bytes after its ELF image, as they always have (each copy is now a library of its own anyway). \"Libraries mapped\" counts the distinct plugin files in `/proc/<pid>/maps` (checked to be N). \"Start to ready\" is from spawning the process to `/readyz` answering 200 (polled every 20 ms; it includes serve's wait for files to be quiet for 40 ms).\n", data["samples"]).unwrap();
        writeln!(memory, "| N | libraries mapped | VmRSS | of which anonymous / file | vs N = 0 | per library (anon / file) | bare `dlopen` per library | ratio per library | start to ready |\n|---|---|---|---|---|---|---|---|---|").unwrap();
        for row in data["table"].as_array().into_iter().flatten() {
            let n = f(&row["n"]);
            let mib = |v: &Value| f(v) / 1024.0;
            if n == 0.0 {
                writeln!(
                    memory,
                    "| 0 | 0 | {:.1} MiB | {:.1} / {:.1} MiB | ×1.00 | | | | {:.0} ms |",
                    mib(&row["serve_vm_rss_kib"]),
                    mib(&row["serve_rss_anon_kib"]),
                    mib(&row["serve_rss_file_kib"]),
                    f(&row["ready_ms"])
                )
                .unwrap();
                continue;
            }
            writeln!(
                memory,
                "| {n} | {n} | {:.1} MiB | {:.1} / {:.1} MiB | ×{:.2} | {:.0} KiB ({:.0} / {:.0}) | {:.0} KiB | ×{:.2} | {:.0} ms |",
                mib(&row["serve_vm_rss_kib"]),
                mib(&row["serve_rss_anon_kib"]),
                mib(&row["serve_rss_file_kib"]),
                f(&row["ratio_vs_0"]),
                f(&row["serve_per_library_kib"]),
                f(&row["serve_per_library_anon_kib"]),
                f(&row["serve_per_library_file_kib"]),
                f(&row["bare_dlopen_per_library_kib"]),
                f(&row["ratio_per_library_vs_bare"]),
                f(&row["ready_ms"]),
            )
            .unwrap();
        }
        for row in data["table"].as_array().into_iter().flatten() {
            if row.get("serve_marginal_kib").is_none() {
                continue;
            }
            let (from, n) = (f(&row["marginal_from_n"]), f(&row["n"]));
            writeln!(
                memory,
                "\n**Per library, from N = {from} to N = {n}** (the slope, without the fixed costs of loading any plugin at all): `connhost serve` +{:.0} KiB (anonymous +{:.0} KiB), bare `dlopen` +{:.0} KiB: **×{:.2}**. Start to ready grows by {:.1} ms per plugin.",
                f(&row["serve_marginal_kib"]),
                f(&row["serve_marginal_anon_kib"]),
                f(&row["bare_marginal_kib"]),
                f(&row["ratio_marginal_vs_bare"]),
                f(&row["ready_marginal_ms"]),
            )
            .unwrap();
            bars.push(Bar {
                label: format!("RSS per library (N={from}→{n})"),
                ratio: f(&row["ratio_marginal_vs_bare"]),
                group: "memory",
            });
            headline.push((
                format!("Resident memory per plugin library (N = {from} → {n}), `connhost serve` vs bare `dlopen`"),
                format!(
                    "×{:.2} (+{:.0} KiB vs +{:.0} KiB per library)",
                    f(&row["ratio_marginal_vs_bare"]),
                    f(&row["serve_marginal_kib"]),
                    f(&row["bare_marginal_kib"]),
                ),
            ));
            if let Some(load) = read_json(&results.join("load.json")) {
                let per_library = f(&load["linearity"]["connhost"]["ms_per_library"]);
                let ratio = f(&row["ready_marginal_ms"]) / per_library;
                writeln!(
                    memory,
                    "\n**Startup per plugin**: `connhost serve` takes {:.1} ms more to be ready per added plugin, against {:.2} ms per library for `Connhost::start` in section 2 (×{ratio:.1}). Serve loads through the same catalog (each file checked, copied into the private cache by the kernel, then loaded), so both figures include the copy: the ratio compares the same work measured in a fresh `connhost serve` until `/readyz` answers and in `load-probe`, and a ratio near 1 means serve adds nothing per plugin to the catalog's load.",
                    f(&row["ready_marginal_ms"]),
                    per_library
                )
                .unwrap();
                let bare = f(&load["linearity"]["bare"]["ms_per_library"]);
                bars.push(Bar {
                    label: "serve startup per plugin (vs dlopen)".into(),
                    ratio: f(&row["ready_marginal_ms"]) / bare,
                    group: "load",
                });
                headline.push((
                    "`connhost serve` startup per added plugin vs `Connhost::start` and bare `dlopen` per library"
                        .into(),
                    format!(
                        "×{ratio:.1} and ×{:.0} ({:.1} ms vs {per_library:.2} ms and {bare:.2} ms)",
                        f(&row["ready_marginal_ms"]) / bare,
                        f(&row["ready_marginal_ms"])
                    ),
                ));
            }
        }
    } else {
        writeln!(memory, "(no memory results in this run)").unwrap();
    }
    // A retired library (section 6's replace runs): what hot reload keeps.
    let retired = std::fs::read_to_string(results.join("raw/reload.txt"))
        .ok()
        .and_then(|text| {
            text.lines()
                .filter(|line| line.starts_with('{'))
                .find_map(|line| serde_json::from_str::<Value>(line).ok())
        })
        .map(|reload| reload["retired"].clone())
        .filter(|retired| retired.is_object());
    if let Some(retired) = retired {
        let ratio = f(&retired["ratio_vs_bare"]);
        writeln!(
            memory,
            "\n**Per retired library**: each hot replacement leaves the old library mapped (nothing is unloaded). Over the {} replace runs of section 6, `connhost serve` grew by {:+.0} KiB resident per retired library (anonymous {:+.0}, file-backed {:+.0}), against {:+.0} KiB for a bare `dlopen` of the same files: **×{ratio:.2}**. The server's figure also holds whatever else it allocated meanwhile (it answered a listing every 0.5 ms). Each retired version also keeps its private copy in the cache folder on disk.",
            f(&retired["libraries"]),
            f(&retired["kib_per_library"]["rss"]),
            f(&retired["kib_per_library"]["anon"]),
            f(&retired["kib_per_library"]["file"]),
            f(&retired["bare_dlopen_kib_per_library"]["rss"]),
        )
        .unwrap();
        bars.push(Bar {
            label: "RSS per retired library".into(),
            ratio,
            group: "memory",
        });
        headline.push((
            "Resident memory per retired (hot-replaced) library, `connhost serve` vs bare `dlopen`"
                .into(),
            format!(
                "×{ratio:.2} ({:+.0} KiB vs {:+.0} KiB per library)",
                f(&retired["kib_per_library"]["rss"]),
                f(&retired["bare_dlopen_kib_per_library"]["rss"]),
            ),
        ));
    }
    headline.extend(isolation_headline(&results));
    // ---- assemble ---------------------------------------------------------
    writeln!(md, "## Headline ratios\n\n| what | ratio (connhost or plugin / same-run baseline) |\n|---|---|").unwrap();
    for (what, value) in &headline {
        writeln!(md, "| {what} | {value} |").unwrap();
    }
    writeln!(md, "\n## Machine\n\n| | |\n|---|---|").unwrap();
    for (k, v) in machine(&results) {
        writeln!(md, "| {k} | {v} |").unwrap();
    }
    writeln!(md, "\nThe whole suite:\n\n```sh\nscripts/bench\n```\n\nIt builds in release (`cargo build --release`; the workspace profile keeps line tables), then runs each part below. Raw results (JSON, wrk scripts and logs, callgrind and perf profiles) are in `benches/out/` next to the charts.{}", command("build")).unwrap();

    writeln!(md, "## 1. Call overhead: plugin vs compiled in\n\nOne trivial provider (`tests/fixtures/bench-trivial`: no I/O; a three-field form `account`, `secret` (password), `region`; accepts non-empty fields with username = account and metadata `{{\"region\": …}}`). The **same type** is compiled into the benchmark (the baseline: the fixture crate as an rlib, registered with `ProviderRegistry::register`) and loaded from its cdylib through the catalog (`Connhost::start`). Both answer the same verdict (checked before measuring). Criterion medians with their 95% intervals; the ratio's interval combines the two intervals' extremes.\n\n- raw call: `registry.get(id).unwrap().call_provider(fields).await`, polled by a minimal `block_on` (no-op waker, no runtime); the three-field credential is built outside the timing;\n- `Connhost::validate`: `runtime.block_on(host.validate(id, fields))` on a multi-thread tokio runtime, as `connhost serve` runs it;\n- listing: `providers()` and `schema(id)` on the same two hosts.\n").unwrap();
    md.push_str(&calls);
    writeln!(md, "\nTimings of a few hundred nanoseconds move by tens of percent between runs on this shared machine (the two functions of a group are measured one after the other); the instruction counts do not, and are the figure to compare for `providers()` and `schema()`: their plugin entries cost more only because listing clones a plugin's origin (name, version, path) where a built-in's is a unit variant.").unwrap();
    writeln!(md, "\nInstructions per call (callgrind, `--toggle-collect` on the measured function; the difference between a long and a short run over the difference in calls, so set-up cancels out). For `validate`, whose provider runs on a blocking-pool thread, every thread is counted (no `--toggle-collect`), tokio's parking and waking included.{}{}", command("call"), command("callgrind")).unwrap();

    writeln!(md, "## 2. Loading plugins\n\nconnhost's catalog (`Connhost::start`, no built-ins: each file checked, copied into the private cache and loaded; or, warm, the copies a kept cache folder remembers mapped directly) on a fresh folder of N distinct copies of the plugin, against a baseline that lists the folder the same way and, per file, calls `libloading::Library::new` and looks up `_1as_0lib_1header_0root_bmodule_bloader` (leaking the library, as connhost does). glibc returns the already-loaded object for a file it has opened and nothing is ever unloaded, so every sample copies fresh files (not timed) and runs in a fresh process (`load-probe`), after an untimed warm-up load of one more fresh copy.\n").unwrap();
    md.push_str(&load);
    writeln!(md, "{}", command("load")).unwrap();

    writeln!(md, "## 3. HTTP: `connhost serve` vs a bare axum server\n\n`connhost serve` (release build, the example plugins staged as `cargo xtask plugins` stages them: daytona, bedrock, mai, github) against `bare-server` (`benches/src/bin/bare-server.rs`: axum on the same multi-thread tokio runtime, answering the two routes with the captured bytes, status and content type, nothing else). `POST /v1/providers/mai/validate` with `{{\"fields\":{{}}}}` fails the form's rules (422), so no provider is called: it measures the request path, body parsing, the rules and the error body.\n").unwrap();
    md.push_str(&http);
    writeln!(md, "{}", command("http")).unwrap();

    writeln!(md, "## 4. Resident memory\n").unwrap();
    md.push_str(&memory);
    writeln!(md, "{}", command("memory")).unwrap();

    // ---- profiles ---------------------------------------------------------
    writeln!(md, "## Profiles\n\nWall time comes from `perf record -e cpu-clock` (kernel included; the hardware counters are not available in this VM), instructions from callgrind (user space only).\n").unwrap();
    let serve_startup = read_json(&results.join("memory.json")).and_then(|m| {
        m["table"]
            .as_array()?
            .iter()
            .find_map(|row| row["ready_marginal_ms"].as_f64())
    });
    let load_lines = read_json(&results.join("load.json"));
    let per_library = |mode: &str| {
        load_lines
            .as_ref()
            .map(|l| f(&l["linearity"][mode]["ms_per_library"]))
            .unwrap_or(f64::NAN)
    };
    writeln!(
        md,
        "### `connhost serve` startup: loading through the catalog\n"
    )
    .unwrap();
    if let Some(startup) = serve_startup {
        writeln!(md, "Each plugin added to the folder makes `connhost serve` {startup:.1} ms slower to be ready (section 4), against {:.2} ms per library for `Connhost::start` (×{:.0}) and {:.2} ms for a bare `dlopen` (×{:.0}). Serve loads through the same catalog as the CLI and `Connhost::start` (`host/core/src/catalog/`): each file is checked from its descriptor, copied into the private cache by the kernel (`copy_file_range`; through the host, with one SHA-256 pass, only when the lock file or a signature needs the bytes), then loaded. Profile of `connhost serve` starting with 100 fresh copies, from exec until `/readyz` answers 200 (top symbols by self time):\n", per_library("connhost"), startup / per_library("connhost"), per_library("bare"), startup / per_library("bare")).unwrap();
    }
    md.push_str(&perf_top(
        &results.join("raw/profile-serve-startup-perf.txt"),
        12,
    ));
    md.push_str(&perf_dso(
        &results.join("raw/profile-serve-startup-perf-dso.txt"),
    ));
    writeln!(md, "\n### Loading with `Connhost::start`\n\nFor N = 100 fresh copies in one `load-probe connhost` process, top symbols by self time:\n").unwrap();
    md.push_str(&perf_top(&results.join("raw/profile-load-perf.txt"), 12));
    md.push_str(&perf_dso(&results.join("raw/profile-load-perf-dso.txt")));
    let inclusive =
        std::fs::read_to_string(results.join("raw/profile-load-callgrind-inclusive.txt"))
            .unwrap_or_default();
    let entries = annotate_entries(&inclusive);
    let total = inclusive
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse::<f64>().ok());
    if let Some(total) = total {
        writeln!(md, "\nUser-space instructions only (callgrind on `call-driver load-connhost` over 12 fresh copies, the measured function alone: {total:.0} instructions), inclusive cost of the loader's steps:\n\n| step | instructions | share |\n|---|---|---|").unwrap();
        for (key, label) in [
            (
                "connhost::catalog::Catalog::scan_now",
                "`Connhost::start`, all of it",
            ),
            (
                "check_layout_compatibility_with_globals",
                "abi_stable's layout check (`init_root_module`)",
            ),
            (
                "DefaultHasher as core::hash::Hasher>::write",
                "… of which SipHash (`std` `HashMap`s inside the checker)",
            ),
            (
                "abi_stable::sabi_types::version::VersionNumber::new",
                "… of which parsing version strings",
            ),
            ("dlopen@@GLIBC", "`dlopen`"),
            (
                "connhost::loader::run_init",
                "the plugin's `init` and its descriptors (JSON)",
            ),
            (
                "connhost::library::check_file",
                "`check_file` (user space only: its read is kernel time)",
            ),
            (
                "connhost::cache_dir::copy_into",
                "copying into the private cache (user space only: the kernel copies)",
            ),
            (
                "connhost::catalog::register",
                "registering (and refusing conflicts)",
            ),
        ] {
            let count = entries
                .iter()
                .filter(|(_, function)| function.contains(key))
                .map(|(count, _)| *count)
                .fold(0.0, f64::max);
            if count > 0.0 {
                writeln!(
                    md,
                    "| {label} | {count:.0} | {:.1}% |",
                    100.0 * count / total
                )
                .unwrap();
            }
        }
    }
    let self_cost = std::fs::read_to_string(results.join("raw/profile-load-callgrind-self.txt"))
        .unwrap_or_default();
    writeln!(
        md,
        "\nTop functions by self cost (instructions), summed over their inlined parts:\n"
    )
    .unwrap();
    md.push_str(&self_top(&self_cost, 12));
    writeln!(md, "\nThe part-by-part table of section 2 splits a cold load: `dlopen`, the kernel's copy into the cache (most of it, and all of it kernel time: it grows with the file's size and with writeback pressure once many files are copied), and the rest of connhost (the checks, abi_stable's layout check, the plugin's `init` and descriptors). No hash is computed unless the lock file or a signature needs the bytes. A warm start skips the copy, the headers check and the layout check of a copy this executable checked before.").unwrap();

    writeln!(md, "\n### HTTP: `GET /v1/providers`\n\n`connhost serve` (pinned to CPU 0) answering `GET /v1/providers` under wrk, `perf record -e cpu-clock -p PID` for 5 s; top symbols by self time:\n").unwrap();
    md.push_str(&perf_top(
        &results.join("raw/profile-http-providers-perf.txt"),
        15,
    ));
    md.push_str(&perf_dso(
        &results.join("raw/profile-http-providers-perf-dso.txt"),
    ));
    writeln!(md, "\n### The raw plugin call\n\nTop functions by self cost (callgrind, `raw-plugin`), summed over their inlined parts:\n").unwrap();
    md.push_str(&self_top(
        &std::fs::read_to_string(results.join("raw/profile-raw-plugin-callgrind-self.txt"))
            .unwrap_or_default(),
        12,
    ));
    writeln!(md, "{}", command("profile")).unwrap();

    // ---- charts -----------------------------------------------------------
    let ratios_svg = results.join("ratios.svg");
    std::fs::write(&ratios_svg, ratio_chart(&bars)).expect("write ratios.svg");
    let load_svg = results.join("load.svg");
    std::fs::write(&load_svg, load_chart(&load_series)).expect("write load.svg");
    std::fs::write(&output, md).expect("write the report");
    println!(
        "report: wrote {}, {} and {}",
        relative(&output),
        relative(&ratios_svg),
        relative(&load_svg)
    );
    ExitCode::SUCCESS
}

/// `N (P%)  file:function [object]` lines of callgrind_annotate, as
/// (N, function), the function without its file, object or recursion mark.
/// Headline rows for isolated plugins (section 7, which `isolation report`
/// writes), from `call-paired.json` and `isolation.json`.
fn isolation_headline(results: &Path) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(paired) = read_json(&results.join("call-paired.json")) {
        for (group, label) in [
            ("raw_call", "Raw provider call"),
            ("validate", "`Connhost::validate`"),
        ] {
            let (vs_plugin, vs_native) = (
                &paired[format!("{group}_isolated_vs_plugin")],
                &paired[format!("{group}_isolated_vs_native")],
            );
            if !vs_plugin.is_object() {
                continue;
            }
            rows.push((
                format!("{label}, isolated (worker process) vs in process and vs compiled in"),
                format!(
                    "×{:.1} and ×{:.1} in time, paired: {} added per call vs in process ({} vs {}), against the 10 µs aim",
                    f(&vs_plugin["ratio"]),
                    f(&vs_native["ratio"]),
                    ns(f(&vs_plugin["overhead_ns"])),
                    ns(f(&vs_plugin["isolated_ns"])),
                    ns(f(&vs_plugin["baseline_ns"])),
                ),
            ));
        }
    }
    let Some(r) = read_json(&results.join("isolation.json")) else {
        return rows;
    };
    let (t, s, c, m, z) = (
        &r["throughput"],
        &r["start"],
        &r["restart"],
        &r["memory"],
        &r["serde"],
    );
    let q = &r["per_call"];
    if q.is_object() {
        rows.push((
            "Sequential `Connhost::validate`, isolated vs in process: added per call, and context switches per call (voluntary)".into(),
            format!(
                "{:.1} µs added (×{:.2}; aim < 10 µs); host {:.1} vs {:.1} in process, worker {:.1}",
                f(&q["added_ns"]) / 1000.0,
                f(&q["ratio"]),
                f(&q["isolated_host_switches_per_call"]["voluntary"]),
                f(&q["in_process_host_switches_per_call"]["voluntary"]),
                f(&q["isolated_worker_switches_per_call"]["voluntary"]),
            ),
        ));
    }
    rows.push((
        "16 concurrent validations' throughput, isolated vs in process".into(),
        format!(
            "×{:.2} ({:.0} vs {:.0} validations/s; aim ≥ ×0.8)",
            f(&t["ratio"]),
            f(&t["isolated_per_s"]),
            f(&t["in_process_per_s"])
        ),
    ));
    rows.push((
        "Plugin load to first answer, isolated vs in process".into(),
        format!(
            "×{:.2} ({:.1} ms vs {:.1} ms, worker spawn and start included)",
            f(&s["ratio_first_answer"]),
            f(&s["isolated_first_answer_ms"]),
            f(&s["in_process_first_answer_ms"])
        ),
    ));
    rows.push((
        "Worker `kill -9` to its replacement answering".into(),
        format!(
            "median {:.1} ms, worst {:.1} ms (aim under 200 ms; no same-run baseline)",
            f(&c["median_ms"]),
            f(&c["max_ms"])
        ),
    ));
    rows.push((
        "Resident memory per plugin, isolated (host + worker) vs in process".into(),
        format!(
            "×{:.1} ({:.0} KiB vs {:.0} KiB; a worker alone {:.0} KiB)",
            f(&m["isolated_total_per_plugin_kib"]) / f(&m["in_process_per_plugin_kib"]),
            f(&m["isolated_total_per_plugin_kib"]),
            f(&m["in_process_per_plugin_kib"]),
            f(&m["worker_kib"])
        ),
    ));
    rows.push((
        "Worker protocol encode + decode, serde_json vs postcard".into(),
        format!(
            "×{:.1} ({:.0} ns vs {:.0} ns per request + outcome)",
            f(&z["ratio_json_to_postcard"]),
            f(&z["json_ns"]),
            f(&z["postcard_ns"])
        ),
    ));
    rows
}

fn annotate_entries(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (count, rest) = line.split_once(' ')?;
            let count: f64 = count.replace(',', "").parse().ok()?;
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('(')?.split_once(')')?.1.trim();
            let rest = match rest.rfind(" [") {
                Some(at) if rest.ends_with(']') => &rest[..at],
                _ => rest,
            };
            let function = rest.split_once(':').map_or(rest, |(_, f)| f);
            let function = match function.rfind('\'') {
                Some(at) if function[at + 1..].chars().all(|c| c.is_ascii_digit()) => {
                    &function[..at]
                }
                _ => function,
            };
            (!function.is_empty() && function != "PROGRAM TOTALS")
                .then(|| (count, function.to_owned()))
        })
        .collect()
}

/// The top functions by self cost, summed over the lines (inlined parts)
/// callgrind_annotate gives each.
fn self_top(text: &str, count: usize) -> String {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for (n, function) in annotate_entries(text) {
        *sums.entry(function).or_default() += n;
    }
    let total = text
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse::<f64>().ok());
    let Some(total) = total else {
        return "(no callgrind profile in this run)\n".into();
    };
    let mut sorted: Vec<(String, f64)> = sums.into_iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out = String::from("```\n");
    for (function, n) in sorted.into_iter().take(count) {
        let function: String = function.chars().take(110).collect();
        writeln!(out, "{:>6.2}%  {function}", 100.0 * n / total).unwrap();
    }
    out.push_str("```\n");
    out
}

/// `perf report --sort dso` lines, as one sentence.
fn perf_dso(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let shares: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let share = parts.next()?;
            let dso = parts.next()?;
            // Leave out the crumbs (each plugin copy's own few samples).
            let value: f64 = share.trim_end_matches('%').parse().ok()?;
            (value >= 0.5).then(|| format!("{dso} {share}"))
        })
        .collect();
    if shares.is_empty() {
        String::new()
    } else {
        format!("\nBy object: {}.\n", shares.join(", "))
    }
}

/// The first lines of a `perf report --stdio` listing.
fn perf_top(path: &Path, count: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let top: Vec<String> = text
                .lines()
                .filter(|l| l.contains('%') && !l.starts_with('#'))
                .take(count)
                .map(|l| {
                    let squeezed = l.split_whitespace().collect::<Vec<_>>().join("  ");
                    squeezed.chars().take(130).collect()
                })
                .collect();
            format!("```\n{}\n```\n", top.join("\n"))
        }
        Err(_) => {
            "(no perf profile in this run: `perf record -e cpu-clock` was not available)\n".into()
        }
    }
}

// ---- SVG ---------------------------------------------------------------------

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const FONT: &str = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";

fn group_colour(group: &str) -> &'static str {
    match group {
        "call" => "#4472c4",
        "load" => "#ed7d31",
        "http" => "#70ad47",
        _ => "#7f6084",
    }
}

/// Horizontal bars on a log scale, with a line at 1.
fn ratio_chart(bars: &[Bar]) -> String {
    let (left, right, top, row) = (340.0, 90.0, 60.0, 24.0);
    let plot_width = 520.0;
    let width = left + plot_width + right;
    let height = top + row * bars.len() as f64 + 50.0;
    let max = bars
        .iter()
        .map(|b| b.ratio)
        .filter(|r| r.is_finite())
        .fold(2.0_f64, f64::max);
    let max_decade = 10f64.powf(max.log10().ceil()).max(10.0);
    let x = |ratio: f64| {
        left + plot_width * (ratio.max(0.5).log10() - 0.5f64.log10())
            / (max_decade.log10() - 0.5f64.log10())
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"26\" {FONT} font-size=\"16\" font-weight=\"bold\" text-anchor=\"middle\">connhost cost / same-run baseline (log scale; 1 = no overhead)</text>\n",
        width / 2.0
    );
    let mut tick = 0.5;
    let bottom = top + row * bars.len() as f64;
    while tick <= max_decade * 1.0001 {
        let tx = x(tick);
        svg += &format!("<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\n<text x=\"{tx:.1}\" y=\"{}\" {FONT} font-size=\"11\" text-anchor=\"middle\">{}</text>\n", top - 8.0, bottom + 16.0, if tick < 1.0 { format!("{tick}") } else { format!("{tick:.0}") });
        let mantissa = tick / 10f64.powf(tick.log10().floor());
        tick *= if (mantissa - 2.0).abs() < 1e-9 {
            2.5
        } else {
            2.0
        };
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let x0 = x(1.0);
        let x1 = x(bar.ratio);
        let (from, to) = if x1 >= x0 { (x0, x1) } else { (x1, x0) };
        svg += &format!(
            "<text x=\"{}\" y=\"{:.1}\" {FONT} font-size=\"12\" text-anchor=\"end\">{}</text>\n<rect x=\"{from:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\">×{:.2}</text>\n",
            left - 8.0,
            y + row * 0.65,
            escape(&bar.label),
            y + 4.0,
            (to - from).max(1.0),
            row - 8.0,
            group_colour(bar.group),
            to + 4.0,
            y + row * 0.65,
            bar.ratio
        );
    }
    let x1 = x(1.0);
    svg += &format!("<line x1=\"{x1:.1}\" y1=\"{}\" x2=\"{x1:.1}\" y2=\"{bottom}\" stroke=\"black\" stroke-width=\"1.5\"/>\n", top - 4.0);
    svg += &format!("<text x=\"{}\" y=\"{}\" {FONT} font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">calls: plugin / compiled in · load: connhost / dlopen, per library · HTTP: connhost / bare axum · memory: per library, serve / dlopen</text>\n", width / 2.0, bottom + 38.0);
    svg += "</svg>\n";
    svg
}

/// Load time against N, log-log (a straight line of slope 1 is linear).
fn load_chart(series: &BTreeMap<String, Vec<(f64, f64)>>) -> String {
    let (width, height) = (720.0, 440.0);
    let (left, right, top, bottom) = (70.0, 200.0, 50.0, 60.0);
    let points: Vec<(f64, f64)> = series.values().flatten().copied().collect();
    if points.is_empty() {
        return format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"60\"><text x=\"10\" y=\"30\" {FONT}>no load results</text></svg>\n");
    }
    let ymin = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (ylo, yhi) = (
        10f64.powf(ymin.log10().floor()),
        10f64.powf(ymax.log10().ceil()),
    );
    let (xlo, xhi) = (1.0f64, 100.0f64);
    let px = |n: f64| {
        left + (width - left - right) * (n.log10() - xlo.log10()) / (xhi.log10() - xlo.log10())
    };
    let py = |ms: f64| {
        top + (height - top - bottom)
            * (1.0 - (ms.log10() - ylo.log10()) / (yhi.log10() - ylo.log10()))
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"28\" {FONT} font-size=\"16\" font-weight=\"bold\" text-anchor=\"middle\">Loading N distinct plugin files (median ms, log-log)</text>\n",
        (width - right + left) / 2.0
    );
    let mut decade = ylo;
    while decade <= yhi * 1.0001 {
        let y = py(decade);
        svg += &format!("<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"end\">{}</text>\n", width - right, left - 6.0, y + 4.0, if decade < 1.0 { format!("{decade}") } else { format!("{decade:.0}") });
        decade *= 10.0;
    }
    for n in [1.0, 10.0, 100.0] {
        let x = px(n);
        svg += &format!("<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{x:.1}\" y=\"{}\" {FONT} font-size=\"11\" text-anchor=\"middle\">{n:.0}</text>\n", height - bottom, height - bottom + 16.0);
    }
    svg += &format!("<text x=\"{}\" y=\"{}\" {FONT} font-size=\"12\" text-anchor=\"middle\">N (plugin files)</text>\n<text x=\"18\" y=\"{}\" {FONT} font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">milliseconds</text>\n", (width - right + left) / 2.0, height - 20.0, (height - bottom + top) / 2.0, (height - bottom + top) / 2.0);
    let styles = [
        ("connhost", "#ed7d31", "Connhost::start"),
        ("bare-fullcheck", "#a5a5a5", "dlopen + whole-file check"),
        ("bare-headercheck", "#70ad47", "dlopen + header-only check"),
        ("bare", "#4472c4", "bare dlopen (baseline)"),
    ];
    for (i, (key, colour, label)) in styles.iter().enumerate() {
        let Some(points) = series.get(*key) else {
            continue;
        };
        let path: Vec<String> = points
            .iter()
            .map(|(n, ms)| format!("{:.1},{:.1}", px(*n), py(*ms)))
            .collect();
        svg += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\n",
            path.join(" ")
        );
        for (n, ms) in points {
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"/>\n",
                px(*n),
                py(*ms)
            );
        }
        let ly = top + 20.0 + 22.0 * i as f64;
        let lx = width - right + 14.0;
        svg += &format!("<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"3\"/>\n<text x=\"{}\" y=\"{}\" {FONT} font-size=\"11\">{}</text>\n", lx + 20.0, lx + 26.0, ly + 4.0, escape(label));
    }
    svg += "</svg>\n";
    svg
}
