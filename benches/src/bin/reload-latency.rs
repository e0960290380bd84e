//! Hot-reload latency of a running `connhost serve`: from the moment a
//! plugin file is renamed into the watched folder (or over a file there)
//! until `GET /v1/providers` lists it (or its new version).
//!
//! ```text
//! reload-latency CONNHOST_BINARY GREETER_V1_LIB GREETER_V2_LIB [RUNS]
//! ```
//!
//! Every run installs a file with new content (the library plus a few
//! trailing bytes), so each one is a real load of a new library, not a
//! cache hit. Prints min / median / p99 / max in milliseconds, then one
//! JSON line for scripts.
//!
//! It also measures what a **retired** library costs: every replacement
//! leaves the old library mapped (nothing is unloaded), so the server's
//! resident memory (`/proc/<pid>/status`) is read before and after the
//! replace runs and divided by the libraries `GET /v1/plugins` reports as
//! retired meanwhile. The baseline, in this process: a bare `dlopen` (plus
//! the root-module symbol lookup) of files like the replace runs' (the same
//! libraries with a few distinct trailing bytes), per library.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: reload-latency CONNHOST_BINARY GREETER_V1_LIB GREETER_V2_LIB [RUNS]");
        std::process::exit(2);
    }
    let connhost = PathBuf::from(&args[0]);
    let v1 = std::fs::read(&args[1]).expect("read greeter v1");
    let v2 = std::fs::read(&args[2]).expect("read greeter v2");
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(50);

    let work = tempfile::tempdir().expect("temp dir");
    let plugins = work.path().join("plugins");
    let staging = work.path().join("staging");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&staging).unwrap();

    let mut server = Command::new(&connhost)
        .arg("--plugins")
        .arg(&plugins)
        .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(work.path().join("cache"))
        .env("CONNHOST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start connhost serve");
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut address = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("connhost: listening on http://") {
            address = rest.to_owned();
        }
        if line.trim() == "connhost: ready" {
            break;
        }
        line.clear();
    }
    assert!(!address.is_empty(), "connhost did not start");

    let target = plugins.join(format!("libgreeter.{}", std::env::consts::DLL_EXTENSION));
    let mut serial = 0u32;
    let mut install = |content: &[u8]| {
        serial += 1;
        let staged = staging.join(format!("greeter-{serial}"));
        let mut bytes = content.to_vec();
        bytes.extend_from_slice(&serial.to_le_bytes()); // new content every time
        std::fs::write(&staged, bytes).unwrap();
        let started = Instant::now();
        std::fs::rename(&staged, &target).unwrap();
        started
    };

    // Add: the file appears; measured until the provider is listed.
    let mut add = Vec::new();
    for _ in 0..runs {
        let started = install(&v1);
        wait_for(&address, |v| v == Some("1.0.0"));
        add.push(started.elapsed());
        std::fs::remove_file(&target).unwrap();
        wait_for(&address, |v| v.is_none());
    }

    // Replace: a new version renamed over the file; measured until the new
    // version is listed.
    install(&v1);
    wait_for(&address, |v| v == Some("1.0.0"));
    let resident_before = resident_kib(server.id());
    let retired_before = retired_count(&address);
    let mut replace = Vec::new();
    for run in 0..runs {
        let (content, version) = if run % 2 == 0 {
            (&v2, "2.0.0")
        } else {
            (&v1, "1.0.0")
        };
        let started = install(content);
        wait_for(&address, |v| v == Some(version));
        replace.push(started.elapsed());
    }

    let resident_after = resident_kib(server.id());
    let retired = retired_count(&address) - retired_before;

    let _ = server.kill();
    let _ = server.wait();
    let add = summary(&mut add);
    let replace = summary(&mut replace);
    assert!(retired > 0, "no library was retired");
    let per_retired = resident_after.per_library(&resident_before, retired);
    let bare = bare_dlopen_per_library(&v1, &v2, runs, &work.path().join("bare"));
    assert!(
        bare.rss > 0.0,
        "a bare dlopen added no resident memory: the kernel's RSS counters lag"
    );
    println!("runs: {runs} of each, every one a new library");
    println!("add:     {}", add.text());
    println!("replace: {}", replace.text());
    println!(
        "retired: {retired} libraries kept mapped by the replace runs, {:+.0} KiB resident each (anonymous {:+.0}, file {:+.0}); a bare dlopen of the same files {:+.0} KiB each: x{:.2}",
        per_retired.rss,
        per_retired.anon,
        per_retired.file,
        bare.rss,
        per_retired.rss / bare.rss
    );
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "add_ms": add.json(),
            "replace_ms": replace.json(),
            "retired": {
                "libraries": retired,
                "kib_per_library": per_retired.json(),
                "bare_dlopen_kib_per_library": bare.json(),
                "ratio_vs_bare": per_retired.rss / bare.rss,
            },
        })
    );
}

/// Resident memory in KiB (`VmRSS`, `RssAnon`, `RssFile`).
#[derive(Clone, Copy)]
struct Resident {
    rss: f64,
    anon: f64,
    file: f64,
}

impl Resident {
    fn per_library(&self, before: &Resident, libraries: usize) -> Resident {
        let n = libraries as f64;
        Resident {
            rss: (self.rss - before.rss) / n,
            anon: (self.anon - before.anon) / n,
            file: (self.file - before.file) / n,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"rss": self.rss, "anon": self.anon, "file": self.file})
    }
}

/// A process's resident memory, from `/proc/<pid>/status`.
fn resident_kib(pid: u32) -> Resident {
    let field = |name: &str| {
        connhost_bench::status_kib(pid, name)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status")) as f64
    };
    Resident {
        rss: field("VmRSS"),
        anon: field("RssAnon"),
        file: field("RssFile"),
    }
}

/// How many libraries the server reports as retired.
fn retired_count(address: &str) -> usize {
    let report: serde_json::Value =
        serde_json::from_str(&get(address, "/v1/plugins")).expect("GET /v1/plugins is JSON");
    report["retired"]
        .as_array()
        .map(Vec::len)
        .expect("the load report lists retired libraries")
}

/// The baseline: `runs` files with the replace runs' contents, each opened
/// with a bare `dlopen` and its root-module symbol looked up, in this
/// process; resident memory added per library.
fn bare_dlopen_per_library(v1: &[u8], v2: &[u8], runs: usize, dir: &std::path::Path) -> Resident {
    std::fs::create_dir_all(dir).unwrap();
    let files: Vec<PathBuf> = (0..runs)
        .map(|run| {
            let mut bytes = if run % 2 == 0 { v2 } else { v1 }.to_vec();
            bytes.extend_from_slice(&(run as u32).to_le_bytes());
            let path = dir.join(format!("libbare{run}.{}", std::env::consts::DLL_EXTENSION));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let before = resident_kib(std::process::id());
    for path in &files {
        connhost_bench::bare_dlopen(path);
    }
    resident_kib(std::process::id()).per_library(&before, runs)
}

/// Polls `GET /v1/providers` (every 0.5 ms) until the greeter's listed
/// version satisfies `done`.
fn wait_for(address: &str, done: impl Fn(Option<&str>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = get(address, "/v1/providers");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let version = list.as_array().and_then(|providers| {
            providers
                .iter()
                .find(|p| p["provider_id"] == "greeter")
                .and_then(|p| p["origin"]["version"].as_str().map(str::to_owned))
        });
        if done(version.as_deref()) {
            return;
        }
        assert!(Instant::now() < deadline, "connhost never reloaded");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A minimal HTTP/1.1 GET over loopback; returns the body.
fn get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

struct Summary {
    min: f64,
    median: f64,
    p99: f64,
    max: f64,
}

fn summary(samples: &mut [Duration]) -> Summary {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    Summary {
        min: ms(samples[0]),
        median: at(0.5),
        p99: at(0.99),
        max: ms(samples[samples.len() - 1]),
    }
}

impl Summary {
    fn text(&self) -> String {
        format!(
            "min {:.1} ms, median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.min, self.median, self.p99, self.max
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"min": self.min, "median": self.median, "p99": self.p99, "max": self.max})
    }
}
