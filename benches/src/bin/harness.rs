//! The HTTP and memory benchmarks, which drive real processes.
//!
//! `harness http CONNHOST_BIN PLUGINS_DIR BARE_BIN`: starts `connhost serve`
//! (pinned to CPU 0) on the plugins folder and the bare axum server (also
//! CPU 0), checks that the bare server answers both routes with the bytes
//! connhost answered, then drives each server and route with `wrk` pinned
//! to CPU 1, alternating the servers, and writes `http.json`.
//! Settings (env): `CONNHOST_BENCH_WRK_DURATION` (s, default 8),
//! `CONNHOST_BENCH_WRK_CONNECTIONS` (default 32), `CONNHOST_BENCH_WRK_THREADS`
//! (default 1), `CONNHOST_BENCH_HTTP_ROUNDS` (default 2).
//!
//! `harness memory CONNHOST_BIN PLUGIN_SO`: resident memory of
//! `connhost serve` with 0, 10 and 100 fresh copies of the plugin loaded,
//! read from `/proc/<pid>/status` once it is ready, and the same for a bare
//! process that only `dlopen`s the copies (`load-probe bare`); writes
//! `memory.json`. Samples: `CONNHOST_BENCH_MEMORY_SAMPLES` (default 3).
//!
//! `harness http-profile CONNHOST_BIN PLUGINS_DIR PERF_DATA`: a perf
//! profile of `connhost serve` answering `GET /v1/providers` under wrk.
//!
//! `harness startup-profile CONNHOST_BIN PLUGIN_SO N PERF_DATA`: a perf
//! profile of `connhost serve` starting with N fresh copies of the plugin.
//!
//! Every server listens on 127.0.0.1 only, every load run is bounded in
//! time, and every process started here is stopped here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use connhost_bench::{fresh_copies, median, results_dir, rss_kib, status_kib, write_result};
use serde_json::{json, Value};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free loopback port (bound, then released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A minimal HTTP/1.1 exchange over loopback: status, lowercased header
/// lines and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Answer> {
    assert!(addr.ip().is_loopback(), "loopback only");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "chunked answers are not expected"
    );
    Ok(Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A child process, stopped when dropped: SIGTERM (connhost shuts down
/// gracefully and removes its plugin cache), SIGKILL if it is still up
/// after 10 s. Its temp dir (`TMPDIR`) is removed after it.
struct Server {
    child: Child,
    addr: SocketAddr,
    name: &'static str,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Waits until `path` answers 200 (at most 60 s).
    fn wait_ready(&mut self, path: &str) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                panic!("{} exited early: {status}", self.name);
            }
            if let Ok(answer) = http(self.addr, "GET", path, None) {
                if answer.status == 200 {
                    return answer;
                }
            }
            assert!(Instant::now() < deadline, "{} never got ready", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// User + system CPU time so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the server's /proc stat");
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12
        // after the state field.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks()
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A server's output goes to scratch space (it names ports and temp dirs,
/// so it would differ on every run), not to the results.
fn log_file(name: &str) -> Stdio {
    let path = connhost_bench::target_dir()
        .join("connhost-bench-run")
        .join("logs")
        .join(name);
    std::fs::create_dir_all(path.parent().unwrap()).expect("logs folder");
    Stdio::from(std::fs::File::create(path).expect("log file"))
}

fn start_connhost(binary: &Path, plugins: &Path, cpu: Option<&str>, log: &str) -> Server {
    let addr = free_port();
    let mut command = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    // Its own temp dir: whatever it keeps there (plugin copies) goes with it.
    let tmp = tempfile::Builder::new()
        .prefix("connhost-bench-serve-")
        .tempdir()
        .expect("temp dir");
    command
        .arg("--plugins")
        .arg(plugins)
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        // The load runs validate far beyond any rate limit: measure the
        // host, not the limiter's 429s.
        .args(["--client-rate", "off", "--provider-rate", "off"])
        .env("TMPDIR", tmp.path())
        .env_remove("CONNHOST_TOKEN")
        .stdin(Stdio::null())
        .stdout(log_file(&format!("{log}.stdout")))
        .stderr(log_file(&format!("{log}.stderr")));
    Server {
        child: command.spawn().expect("start connhost serve"),
        addr,
        name: "connhost serve",
        _tmp: Some(tmp),
    }
}

const VALIDATE_PATH: &str = "/v1/providers/mai/validate";
const VALIDATE_BODY: &str = r#"{"fields":{}}"#;

fn wrk_script(route: &str) -> PathBuf {
    let request = if route == "validate" {
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{VALIDATE_BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        )
    } else {
        String::new()
    };
    let script = format!(
        r#"{request}
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {{\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"errors_connect\":%d,\"errors_read\":%d,\"errors_write\":%d,\"errors_status\":%d,\"errors_timeout\":%d,\"mean_us\":%.3f,\"stdev_us\":%.3f,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d,\"max_us\":%d}}\n",
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"#
    );
    let path = results_dir().join("raw").join(format!("wrk-{route}.lua"));
    std::fs::create_dir_all(path.parent().unwrap()).expect("raw folder");
    std::fs::write(&path, script).expect("write the wrk script");
    path
}

struct WrkSettings {
    threads: u32,
    connections: u32,
    duration: u32,
}

impl WrkSettings {
    fn args(&self, duration: u32) -> Vec<String> {
        vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{duration}s"),
            "--timeout".into(),
            "5s".into(),
        ]
    }

    fn command_line(&self, script: &Path, url: &str) -> String {
        // Relative to the working directory (the workspace, under
        // scripts/bench), so the report shows no machine's paths.
        let script = std::env::current_dir()
            .ok()
            .and_then(|cwd| script.strip_prefix(cwd).ok().map(Path::to_owned))
            .unwrap_or_else(|| script.to_owned());
        format!(
            "taskset -c 1 wrk {} -s {} {url}",
            self.args(self.duration).join(" "),
            script.display()
        )
    }
}

/// Runs wrk once against `server`; returns its figures plus the server's
/// CPU use during the run.
fn run_wrk(server: &Server, route: &str, settings: &WrkSettings, duration: u32) -> Value {
    let path = if route == "validate" {
        VALIDATE_PATH
    } else {
        "/v1/providers"
    };
    let url = format!("http://{}{path}", server.addr);
    let script = wrk_script(route);
    let cpu_before = server.cpu_seconds();
    let output = Command::new("timeout")
        .arg(format!("{}", duration + 30))
        .args(["taskset", "-c", "1", "wrk"])
        .args(settings.args(duration))
        .arg("-s")
        .arg(&script)
        .arg(&url)
        .output()
        .expect("run wrk");
    let cpu = server.cpu_seconds() - cpu_before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .unwrap_or_else(|| panic!("no figures from wrk: {stdout}"));
    let mut figures: Value = serde_json::from_str(line).expect("wrk's figures");
    let requests = figures["requests"].as_f64().unwrap();
    let seconds = figures["duration_us"].as_f64().unwrap() / 1e6;
    figures["requests_per_s"] = json!(requests / seconds);
    figures["server_cpu_utilisation"] = json!(cpu / seconds);
    figures["server_cpu_us_per_request"] = json!(cpu * 1e6 / requests);
    // Every request of the validate route answers 422 (a "status error" to
    // wrk); none of the listing's may.
    let status_errors = figures["errors_status"].as_f64().unwrap();
    let expected = if route == "validate" { requests } else { 0.0 };
    assert_eq!(status_errors, expected, "unexpected statuses: {stdout}");
    for kind in [
        "errors_connect",
        "errors_read",
        "errors_write",
        "errors_timeout",
    ] {
        assert_eq!(figures[kind], 0, "{kind}: {stdout}");
    }
    figures
}

fn http_bench(args: &[String]) -> ExitCode {
    let [connhost, plugins, bare] = args else {
        eprintln!("usage: harness http CONNHOST_BIN PLUGINS_DIR BARE_BIN");
        return ExitCode::from(2);
    };
    let settings = WrkSettings {
        threads: env_or("CONNHOST_BENCH_WRK_THREADS", 1),
        connections: env_or("CONNHOST_BENCH_WRK_CONNECTIONS", 32),
        duration: env_or("CONNHOST_BENCH_WRK_DURATION", 8),
    };
    let rounds: u32 = env_or("CONNHOST_BENCH_HTTP_ROUNDS", 2);

    let mut connhost = start_connhost(
        Path::new(connhost),
        Path::new(plugins),
        Some("0"),
        "http-connhost",
    );
    connhost.wait_ready("/readyz");
    let providers = http(connhost.addr, "GET", "/v1/providers", None).expect("GET providers");
    let validate =
        http(connhost.addr, "POST", VALIDATE_PATH, Some(VALIDATE_BODY)).expect("POST validate");
    assert_eq!(providers.status, 200);
    assert_eq!(
        validate.status,
        422,
        "{}",
        String::from_utf8_lossy(&validate.body)
    );
    let raw = results_dir().join("raw");
    let providers_file = raw.join("providers-body.json");
    let validate_file = raw.join("validate-body.json");
    std::fs::write(&providers_file, &providers.body).expect("write");
    std::fs::write(&validate_file, &validate.body).expect("write");

    let addr = free_port();
    let mut bare_server = Server {
        child: Command::new("taskset")
            .args(["-c", "0"])
            .arg(bare)
            .arg(addr.to_string())
            .arg(&providers_file)
            .arg(&validate_file)
            .stdin(Stdio::null())
            .stdout(log_file("http-bare.stdout"))
            .stderr(log_file("http-bare.stderr"))
            .spawn()
            .expect("start bare-server"),
        addr,
        name: "bare-server",
        _tmp: None,
    };
    bare_server.wait_ready("/v1/providers");
    let bare_providers = http(addr, "GET", "/v1/providers", None).expect("bare GET");
    let bare_validate = http(addr, "POST", VALIDATE_PATH, Some(VALIDATE_BODY)).expect("bare POST");
    assert_eq!(
        (bare_providers.status, &bare_providers.body),
        (providers.status, &providers.body)
    );
    assert_eq!(
        (bare_validate.status, &bare_validate.body),
        (validate.status, &validate.body)
    );
    let header_names = |a: &Answer| a.headers.iter().map(|h| h.0.clone()).collect::<Vec<_>>();

    let servers = [("bare", &bare_server), ("connhost", &connhost)];
    let mut results: Vec<Value> = Vec::new();
    let mut summary = serde_json::Map::new();
    for route in ["providers", "validate"] {
        // Warm both servers up on this route.
        for (_, server) in servers {
            run_wrk(server, route, &settings, 1);
        }
        let mut runs: [Vec<Value>; 2] = Default::default();
        for round in 0..rounds {
            for k in 0..2 {
                let s = (round as usize + k) % 2;
                let (name, server) = servers[s];
                let figures = run_wrk(server, route, &settings, settings.duration);
                println!(
                    "http {route:>9} {name:>8} round {round}: {:>9.0} req/s, p50 {} µs, p99 {} µs, server CPU {:.2}",
                    figures["requests_per_s"].as_f64().unwrap(),
                    figures["p50_us"],
                    figures["p99_us"],
                    figures["server_cpu_utilisation"].as_f64().unwrap()
                );
                results.push(
                    json!({"route": route, "server": name, "round": round, "figures": figures}),
                );
                runs[s].push(figures);
            }
        }
        let med = |s: usize, key: &str| {
            let mut v: Vec<f64> = runs[s].iter().map(|f| f[key].as_f64().unwrap()).collect();
            median(&mut v)
        };
        let mut per_server = serde_json::Map::new();
        for (s, (name, _)) in servers.iter().enumerate() {
            let keys = [
                "requests_per_s",
                "p50_us",
                "p90_us",
                "p99_us",
                "p999_us",
                "mean_us",
                "server_cpu_utilisation",
                "server_cpu_us_per_request",
            ];
            let figures: serde_json::Map<String, Value> = keys
                .iter()
                .map(|k| ((*k).to_owned(), json!(med(s, k))))
                .collect();
            per_server.insert((*name).to_owned(), Value::Object(figures));
        }
        let ratio = |key: &str| json!(med(1, key) / med(0, key));
        let script = wrk_script(route);
        summary.insert(
            route.to_owned(),
            json!({
                "servers": per_server,
                "ratio_connhost_vs_bare": {
                    "requests_per_s": ratio("requests_per_s"),
                    "p50_us": ratio("p50_us"),
                    "p99_us": ratio("p99_us"),
                    "server_cpu_us_per_request": ratio("server_cpu_us_per_request"),
                },
                "wrk_command": settings.command_line(&script, &format!("http://127.0.0.1:PORT{}", if route == "validate" { VALIDATE_PATH } else { "/v1/providers" })),
            }),
        );
    }
    let path = write_result(
        "http.json",
        &json!({
            "settings": {
                "threads": settings.threads,
                "connections": settings.connections,
                "duration_s": settings.duration,
                "rounds": rounds,
                "server_cpu": "0 (taskset -c 0)",
                "wrk_cpu": "1 (taskset -c 1)",
            },
            "providers_body_bytes": providers.body.len(),
            "validate_body_bytes": validate.body.len(),
            "connhost_headers": {
                "providers": header_names(&providers),
                "validate": header_names(&validate),
            },
            "bare_headers": {
                "providers": header_names(&bare_providers),
                "validate": header_names(&bare_validate),
            },
            "routes": summary,
            "runs": results,
        }),
    );
    println!("http: wrote {}", path.display());
    ExitCode::SUCCESS
}

/// How many distinct plugin files (the benchmark's copies, or connhost's
/// private copies of them) a process has mapped.
fn mapped_plugin_files(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let files: std::collections::BTreeSet<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            path.contains("connhost-bench") && path.ends_with(std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.len()
}

/// `harness http-profile CONNHOST_BIN PLUGINS_DIR PERF_DATA`: where
/// `connhost serve` spends its CPU on `GET /v1/providers` under wrk
/// (`perf record -e cpu-clock -p PID` for 5 s of an 8 s run).
fn http_profile(args: &[String]) -> ExitCode {
    let [connhost, plugins, data] = args else {
        eprintln!("usage: harness http-profile CONNHOST_BIN PLUGINS_DIR PERF_DATA");
        return ExitCode::from(2);
    };
    let mut server = start_connhost(
        Path::new(connhost),
        Path::new(plugins),
        Some("0"),
        "http-profile-connhost",
    );
    server.wait_ready("/readyz");
    let url = format!("http://{}/v1/providers", server.addr);
    let mut wrk = Command::new("timeout")
        .args([
            "40", "taskset", "-c", "1", "wrk", "-t1", "-c32", "-d8s", &url,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("run wrk");
    std::thread::sleep(Duration::from_secs(1));
    let status = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "5000", "-o", data, "-p"])
        .arg(server.child.id().to_string())
        .args(["--", "sleep", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = wrk.wait();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => {
            eprintln!("harness http-profile: perf record failed");
            ExitCode::FAILURE
        }
    }
}

/// `harness startup-profile CONNHOST_BIN PLUGIN_SO N PERF_DATA`: where
/// `connhost serve` spends its startup with N fresh copies of the plugin
/// (`perf record -e cpu-clock` from exec until `/readyz` answers 200, then
/// a graceful stop).
fn startup_profile(args: &[String]) -> ExitCode {
    let [connhost, plugin, n, data] = args else {
        eprintln!("usage: harness startup-profile CONNHOST_BIN PLUGIN_SO N PERF_DATA");
        return ExitCode::from(2);
    };
    let n: usize = n.parse().expect("N");
    let dir = fresh_copies(Path::new(plugin), n);
    let _ = Command::new("sync").status();
    let tmp = tempfile::Builder::new()
        .prefix("connhost-bench-serve-")
        .tempdir()
        .expect("temp dir");
    let addr = free_port();
    let mut perf = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "5000", "-o", data, "--"])
        .arg(connhost)
        .arg("--plugins")
        .arg(dir.path())
        .args(["serve", "--listen", &addr.to_string()])
        .env("TMPDIR", tmp.path())
        .env_remove("CONNHOST_TOKEN")
        .stdin(Stdio::null())
        .stdout(log_file("startup-profile.stdout"))
        .stderr(log_file("startup-profile.stderr"))
        .spawn()
        .expect("run perf record");
    let started = Instant::now();
    let ready = loop {
        if let Ok(answer) = http(addr, "GET", "/readyz", None) {
            if answer.status == 200 {
                break true;
            }
        }
        if started.elapsed() > Duration::from_secs(120) || matches!(perf.try_wait(), Ok(Some(_))) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Stop connhost (perf's child) gracefully; perf then writes its data.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", perf.id()))
        .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").args(["-TERM", pid]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = perf.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if perf.try_wait().ok().flatten().is_none() {
        let _ = perf.kill();
        let _ = perf.wait();
    }
    if ready {
        println!(
            "startup-profile: ready after {:.0} ms with {n} plugins (under perf)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("harness startup-profile: connhost serve never got ready");
        ExitCode::FAILURE
    }
}

/// `VmRSS`, `RssAnon` and `RssFile` of a process, in KiB.
fn memory_of(pid: u32) -> Value {
    json!({
        "vm_rss_kib": rss_kib(pid).unwrap_or(0),
        "rss_anon_kib": status_kib(pid, "RssAnon").unwrap_or(0),
        "rss_file_kib": status_kib(pid, "RssFile").unwrap_or(0),
    })
}

fn memory_bench(args: &[String]) -> ExitCode {
    let [connhost, plugin] = args else {
        eprintln!("usage: harness memory CONNHOST_BIN PLUGIN_SO");
        return ExitCode::from(2);
    };
    let samples: usize = env_or("CONNHOST_BENCH_MEMORY_SAMPLES", 3);
    let plugin = Path::new(plugin);
    let sizes = [0usize, 10, 100];
    let mut serve: Vec<Vec<Value>> = vec![Vec::new(); sizes.len()];
    let mut bare: Vec<Vec<Value>> = vec![Vec::new(); sizes.len()];
    for sample in 0..samples {
        for (i, &n) in sizes.iter().enumerate() {
            let dir = fresh_copies(plugin, n);
            let _ = Command::new("sync").status();
            let started = Instant::now();
            let mut server =
                start_connhost(Path::new(connhost), dir.path(), None, "memory-connhost");
            let ready: Value =
                serde_json::from_slice(&server.wait_ready("/readyz").body).unwrap_or(Value::Null);
            let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
            // A request on the listing route, as a serving replica would
            // have had; then let the process settle.
            let _ = http(server.addr, "GET", "/v1/providers", None);
            std::thread::sleep(Duration::from_millis(300));
            let memory = memory_of(server.child.id());
            let mapped = mapped_plugin_files(server.child.id());
            assert_eq!(
                mapped, n,
                "connhost serve should have mapped {n} distinct libraries"
            );
            println!(
                "memory serve N={n:>3} sample {sample}: VmRSS {} KiB (ready: {ready})",
                memory["vm_rss_kib"]
            );
            serve[i].push(json!({"memory": memory, "readyz": ready, "ready_ms": ready_ms, "mapped_plugin_files": mapped}));
            drop(server);

            // The baseline: a process that only dlopens the same number of
            // fresh copies (load-probe's bare mode, RSS before/after).
            if n > 0 {
                let dir = fresh_copies(plugin, n);
                let warmup = fresh_copies(plugin, 1);
                let output = Command::new(load_probe())
                    .arg("bare")
                    .arg(dir.path())
                    .arg(warmup.path())
                    .output()
                    .expect("run load-probe");
                assert!(output.status.success());
                let probe: Value = serde_json::from_slice(&output.stdout).expect("probe JSON");
                bare[i].push(probe);
            }
        }
    }
    let serve_median = |i: usize, key: &str| {
        let mut v: Vec<f64> = serve[i]
            .iter()
            .map(|s| s["memory"][key].as_f64().unwrap())
            .collect();
        median(&mut v)
    };
    let bare_increment = |i: usize| {
        let mut v: Vec<f64> = bare[i]
            .iter()
            .map(|p| p["rss_after_kib"].as_f64().unwrap() - p["rss_before_kib"].as_f64().unwrap())
            .collect();
        median(&mut v)
    };
    let ready_median = |i: usize| {
        let mut v: Vec<f64> = serve[i]
            .iter()
            .map(|s| s["ready_ms"].as_f64().unwrap())
            .collect();
        median(&mut v)
    };
    let base = serve_median(0, "vm_rss_kib");
    let mut table = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let rss = serve_median(i, "vm_rss_kib");
        let mut row = json!({
            "n": n,
            "serve_vm_rss_kib": rss,
            "serve_rss_anon_kib": serve_median(i, "rss_anon_kib"),
            "serve_rss_file_kib": serve_median(i, "rss_file_kib"),
            "ratio_vs_0": rss / base,
            "ready_ms": ready_median(i),
        });
        if n > 0 {
            let per_library = (rss - base) / n as f64;
            let anon =
                (serve_median(i, "rss_anon_kib") - serve_median(0, "rss_anon_kib")) / n as f64;
            let file =
                (serve_median(i, "rss_file_kib") - serve_median(0, "rss_file_kib")) / n as f64;
            let bare_per_library = bare_increment(i) / n as f64;
            row["serve_per_library_kib"] = json!(per_library);
            row["serve_per_library_anon_kib"] = json!(anon);
            row["serve_per_library_file_kib"] = json!(file);
            row["bare_dlopen_per_library_kib"] = json!(bare_per_library);
            row["ratio_per_library_vs_bare"] = json!(per_library / bare_per_library);
            // The slope between the previous size and this one: per-library
            // cost without the fixed costs of loading any plugin at all.
            if i >= 2 {
                let dn = (n - sizes[i - 1]) as f64;
                let serve_marginal = (rss - serve_median(i - 1, "vm_rss_kib")) / dn;
                let anon_marginal =
                    (serve_median(i, "rss_anon_kib") - serve_median(i - 1, "rss_anon_kib")) / dn;
                let bare_marginal = (bare_increment(i) - bare_increment(i - 1)) / dn;
                let ready_marginal = (ready_median(i) - ready_median(i - 1)) / dn;
                row["marginal_from_n"] = json!(sizes[i - 1]);
                row["serve_marginal_kib"] = json!(serve_marginal);
                row["serve_marginal_anon_kib"] = json!(anon_marginal);
                row["bare_marginal_kib"] = json!(bare_marginal);
                row["ratio_marginal_vs_bare"] = json!(serve_marginal / bare_marginal);
                row["ready_marginal_ms"] = json!(ready_marginal);
                println!(
                    "memory N={}→{n}: +{serve_marginal:.0} KiB/library (anon {anon_marginal:.0}) vs bare dlopen +{bare_marginal:.0} KiB/library (x{:.2}); start to ready +{ready_marginal:.1} ms/library",
                    sizes[i - 1],
                    serve_marginal / bare_marginal
                );
            }
            println!(
                "memory N={n:>3}: serve {rss:.0} KiB (x{:.2} of N=0), +{per_library:.0} KiB/library (anon {anon:.0}, file {file:.0}); bare dlopen +{bare_per_library:.0} KiB/library (x{:.2})",
                rss / base,
                per_library / bare_per_library
            );
        }
        table.push(row);
    }
    let path = write_result(
        "memory.json",
        &json!({
            "samples": samples,
            "library_bytes": std::fs::metadata(plugin).map(|m| m.len()).unwrap_or(0),
            "table": table,
            "serve_samples": serve,
            "bare_samples": bare,
        }),
    );
    println!("memory: wrote {}", path.display());
    ExitCode::SUCCESS
}

/// `load-probe`, next to this executable.
fn load_probe() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name(format!("load-probe{}", std::env::consts::EXE_SUFFIX))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((task, rest)) if task == "http" => http_bench(rest),
        Some((task, rest)) if task == "memory" => memory_bench(rest),
        Some((task, rest)) if task == "http-profile" => http_profile(rest),
        Some((task, rest)) if task == "startup-profile" => startup_profile(rest),
        _ => {
            eprintln!("usage: harness http CONNHOST_BIN PLUGINS_DIR BARE_BIN | harness memory CONNHOST_BIN PLUGIN_SO");
            ExitCode::from(2)
        }
    }
}
