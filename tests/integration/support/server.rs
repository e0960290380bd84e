//! A real `connhost serve` process on a loopback port, and a small HTTP
//! client for talking to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{build_artifacts, connhost, exit_within, poll_until};

/// How long a test server may take to load its plugins and get ready.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// A running `connhost serve`. Killed when dropped.
pub struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `connhost --plugins DIR serve ARGS... [--listen 127.0.0.1:0]`,
    /// with `configure` applied to the command (env vars, more flags), and
    /// returns once it printed `ready` (plugins loaded, serving).
    pub fn start(plugins: &Path, configure: impl FnOnce(&mut Command)) -> Self {
        Self::try_start(plugins, configure).unwrap_or_else(|(code, stderr)| {
            panic!("connhost serve exited with {code:?} before it was ready:\n{stderr}")
        })
    }

    /// Like [`start`](Self::start), but returns the exit code and stderr
    /// when the server exits before it is ready (a refused configuration).
    pub fn try_start(
        plugins: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Self, (Option<i32>, String)> {
        build_artifacts();
        let mut command = connhost(plugins);
        command.arg("serve");
        configure(&mut command);
        if !command.get_args().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn connhost serve");
        // Stderr (the server's log) is read from the start, so the server
        // never blocks on a full pipe, and tests can look at all of it.
        let log = Arc::new(Mutex::new(String::new()));
        let log_reader = {
            let log = log.clone();
            let stderr = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(stderr);
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    log.lock().unwrap().push_str(&line);
                    line.clear();
                }
            })
        };
        // All of the log of a process that has exited.
        let whole_log = |reader: std::thread::JoinHandle<()>| {
            let _ = reader.join();
            log.lock().unwrap().clone()
        };
        // Stdout is read on a thread of its own (for as long as the server
        // runs), so that a server that never gets ready fails the test
        // instead of hanging it.
        let lines = {
            let (send, lines) = std::sync::mpsc::channel::<String>();
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
            std::thread::spawn(move || {
                let mut line = String::new();
                while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                    let _ = send.send(std::mem::take(&mut line));
                }
            });
            lines
        };
        let deadline = std::time::Instant::now() + READY_WITHIN;
        let mut url = None;
        loop {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("connhost: listening on ") {
                        url = Some(rest.to_owned());
                    }
                    if line.trim() == "connhost: ready" {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait");
                    return Err((status.code(), whole_log(log_reader)));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "connhost serve was not ready within {READY_WITHIN:?}:\n{}",
                        whole_log(log_reader)
                    );
                }
            }
        }
        let url = url.expect("the listening line comes before ready");
        Ok(Self {
            child,
            url,
            stderr: log,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`, for a raw connection.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The URL of a path.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// What the server logged to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        self.wait_until(
            &format!("the server logged {needle:?}"),
            std::time::Duration::from_secs(30),
            || self.log().contains(needle),
        );
    }

    /// Waits up to `timeout` until `condition` holds; panics with `what`
    /// and the server's log otherwise.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: std::time::Duration,
        condition: impl FnMut() -> bool,
    ) {
        assert!(
            poll_until(timeout, condition),
            "timed out after {timeout:?} waiting until {what}; the server logged:\n{}",
            self.log()
        );
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal) and returns its code.
    /// Fails the test (killing the process) if it has not exited within
    /// 60 s.
    pub fn wait(mut self) -> Option<i32> {
        let limit = std::time::Duration::from_secs(60);
        match exit_within(&mut self.child, limit) {
            Some(status) => status.code(),
            None => {
                let _ = self.child.kill();
                panic!(
                    "connhost serve did not exit within {limit:?}:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Server {
    /// `POST /v1/providers/{provider}/validate` with the one field
    /// `api_key` = `key`: the answer's JSON, whatever its status.
    pub fn validate(&self, provider: &str, key: &str) -> Value {
        self.validate_body(provider, &api_key_body(key))
    }

    /// `POST /v1/providers/{provider}/validate` with this body (`{"fields":
    /// {...}}`): the answer's JSON, whatever its status.
    pub fn validate_body(&self, provider: &str, body: &Value) -> Value {
        post_for_json(&self.at(&validate_path(provider)), body)
    }

    /// Sends SIGKILL: the process gets no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    /// Stops the server the way an operator does (SIGTERM), so it removes
    /// its plugin cache; SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let terminated = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let exited = || matches!(self.child.try_wait(), Ok(Some(_)));
        if terminated && poll_until(std::time::Duration::from_secs(5), exited) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `command` start with this open-files limit, soft and hard (what
/// `ulimit -n` sets in a shell), so a test can starve the child of
/// descriptors.
#[cfg(unix)]
pub fn limit_open_files(command: &mut Command, limit: u64) {
    limit_open_files_to(command, limit, limit);
}

/// Starts the command with these soft and hard open-files limits.
pub fn limit_open_files_to(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt as _;
    let limit = rustix::process::Rlimit {
        current: Some(soft),
        maximum: Some(hard),
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one system call (no allocation, no lock).
    unsafe {
        command.pre_exec(move || {
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                .map_err(std::io::Error::from)
        });
    }
}

/// The flags that turn both rate limits on validations off: for tests that
/// validate more than a client's default burst (10) and are about
/// something else (load, reload, starvation). The default harness keeps
/// the limits on.
pub const NO_RATE_LIMITS: [&str; 4] = ["--client-rate", "off", "--provider-rate", "off"];

/// A blocking HTTP client with a 30 s bound on every request.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// [`client`], with its connections coming from 127.0.0.`n` (a client of
/// its own, as a per-client rate limit counts them).
pub fn client_from(n: u8) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)))
        .build()
        .unwrap()
}

/// GETs `path` from `server` and returns its JSON body.
pub fn get(server: &Server, path: &str) -> serde_json::Value {
    client()
        .get(server.at(path))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// GETs `path` from `server` and returns its body as text.
pub fn get_text(server: &Server, path: &str) -> String {
    client()
        .get(server.at(path))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// `POST /v1/plugins/rescan`, answered within `limit`: the load report.
pub fn rescan_within(server: &Server, limit: std::time::Duration) -> serde_json::Value {
    reqwest::blocking::Client::builder()
        .timeout(limit)
        .build()
        .unwrap()
        .post(server.at("/v1/plugins/rescan"))
        .send()
        .unwrap_or_else(|e| panic!("the rescan did not answer within {limit:?}: {e}"))
        .json()
        .unwrap()
}

/// `POST /v1/plugins/rescan` (within 30 s): the load report.
pub fn rescan(server: &Server) -> serde_json::Value {
    rescan_within(server, std::time::Duration::from_secs(30))
}

/// The path of `provider`'s validation.
pub fn validate_path(provider: &str) -> String {
    format!("/v1/providers/{provider}/validate")
}

/// A validation's body with the one field `api_key` = `key`.
pub fn api_key_body(key: &str) -> Value {
    json!({"fields": {"api_key": key}})
}

/// POSTs `body` to `url` (within [`client`]'s 30 s): the answer's JSON,
/// whatever its status.
pub fn post_for_json(url: &str, body: &Value) -> Value {
    client()
        .post(url)
        .json(body)
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .unwrap_or_else(|e| panic!("POST {url}: the answer is not JSON: {e}"))
}

/// [`Server::validate`] on a thread of its own: for a call held in flight
/// while the test goes on. Join the handle for the answer.
pub fn validate_in_background(
    server: &Server,
    provider: &str,
    key: &str,
) -> std::thread::JoinHandle<Value> {
    let url = server.at(&validate_path(provider));
    let body = api_key_body(key);
    std::thread::spawn(move || post_for_json(&url, &body))
}

/// The ids of the providers `server` lists (`GET /v1/providers`), in its
/// order.
pub fn provider_ids(server: &Server) -> Vec<String> {
    get(server, "/v1/providers")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_id"].as_str().unwrap().to_owned())
        .collect()
}
