//! A loopback HTTP server standing in for a vendor's API (Daytona's
//! `GET /sandbox`, GitHub's `GET /user`): real sockets, real HTTP/1.1.
//!
//! Bearer tokens decide the answer: `good-key` -> 200 with a JSON body,
//! `rate-limited` -> 429, `broken` -> 500, anything else -> 401. `hold`
//! makes the request wait until the test calls [`Vendor::release`], then
//! answers as for `good-key`: a vendor exactly as slow as a test needs.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A running fake vendor. Stops accepting when dropped.
pub struct Vendor {
    url: String,
    requests: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    gate: Arc<Gate>,
    /// Configuration files granting plugins egress to this vendor, kept
    /// as long as it runs.
    grants: Mutex<Vec<tempfile::TempPath>>,
    _stop: Stop,
}

/// Held requests: how many arrived, and whether they may answer.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

struct Stop(std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.0);
    }
}

impl Vendor {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = Arc::new(Gate::default());
        {
            let requests = requests.clone();
            let paths = paths.clone();
            let stopped = stopped.clone();
            let gate = gate.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = requests.clone();
                    let paths = paths.clone();
                    let gate = gate.clone();
                    std::thread::spawn(move || {
                        serve(stream, &gate, |path| {
                            // Counted before answering, so a client that has
                            // its answer always sees its request counted.
                            requests.fetch_add(1, Ordering::SeqCst);
                            paths.lock().unwrap().push(path);
                        });
                    });
                }
            });
        }
        Self {
            url: format!("http://{addr}"),
            requests,
            paths,
            gate,
            grants: Mutex::new(Vec::new()),
            _stop: Stop(addr, stopped),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A configuration file (for `CONNHOST_CONFIG` or `--config`) that
    /// grants each of `plugins` egress to this vendor's loopback address
    /// (connhost refuses loopback unless the operator grants it by name).
    /// It lives as long as the vendor.
    pub fn grants_file(&self, plugins: &[&str]) -> std::path::PathBuf {
        let grants: Vec<(&str, &str)> = plugins.iter().map(|p| (*p, self.url())).collect();
        let file = super::grants_file(&grants);
        let path = file.to_path_buf();
        self.grants.lock().unwrap().push(file);
        path
    }

    /// Grants each of `plugins` egress to this vendor in `config`.
    pub fn grant(&self, config: &mut connhost::HostConfig, plugins: &[&str]) {
        for plugin in plugins {
            super::grant(config, plugin, self.url());
        }
    }

    /// How many requests it answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Blocks until `count` requests with the token `hold` are waiting.
    pub fn wait_for_held(&self, count: usize) {
        let mut state = self.gate.state.lock().unwrap();
        while state.0 < count {
            state = self.gate.changed.wait(state).unwrap();
        }
    }

    /// Lets every held request (and any later one) answer.
    pub fn release(&self) {
        self.gate.state.lock().unwrap().1 = true;
        self.gate.changed.notify_all();
    }

    /// The request lines' paths, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, gate: &Gate, record: impl FnOnce(String)) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_owned();
    let mut token = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                token = value.trim().trim_start_matches("Bearer ").to_owned();
            }
        }
    }
    if token == "hold" {
        let mut state = gate.state.lock().unwrap();
        state.0 += 1;
        gate.changed.notify_all();
        while !state.1 {
            state = gate.changed.wait(state).unwrap();
        }
        token = "good-key".to_owned();
    }
    let (status, body) = match token.as_str() {
        "good-key" => (
            "200 OK",
            r#"[{"id":"sandbox-1"},{"id":"sandbox-2"}]"#.to_owned(),
        ),
        "good-github-token" => ("200 OK", r#"{"login":"octocat"}"#.to_owned()),
        "rate-limited" => ("429 Too Many Requests", "{}".to_owned()),
        "broken" => ("500 Internal Server Error", "{}".to_owned()),
        _ => ("401 Unauthorized", r#"{"error":"unauthorized"}"#.to_owned()),
    };
    record(path);
    let mut stream = stream;
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).ok()
}
