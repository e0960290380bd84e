// Hostile and careless clients against a real `connhost serve` over
// loopback: more connections than descriptors, clients that never read
// their answers, trickled bodies, huge declared lengths, and requests still
// running when the shutdown grace ends.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::procfs::{self, open_sockets, status_kb};
use crate::support::server::{limit_open_files, limit_open_files_to, validate_path, Server};
use crate::support::*;

/// An answer read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.address()).expect("connect")
}

/// Reads one answer: the head, then `Content-Length` bytes of body (or up
/// to EOF). Every read has a deadline.
fn read_answer(stream: &mut TcpStream, within: Duration) -> Answer {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut bytes = Vec::new();
    let mut buffer = [0_u8; 64 * 1024];
    let complete = |bytes: &[u8]| -> bool {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
        head.lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|length| bytes.len() >= end + 4 + length)
    };
    while !complete(&bytes) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e) => panic!(
                "no complete answer within {within:?}: {e}; got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head: {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head,
        body: bytes[end + 4..].to_vec(),
    }
}

/// The head of a validate request for `provider` with a JSON body of
/// `length` bytes.
fn validate_head(provider: &str, length: u64) -> String {
    format!(
        "POST {} HTTP/1.1\r\nHost: test\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        validate_path(provider)
    )
}

/// The server's resident memory, in bytes, from `/proc/<pid>/status`.
fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS") * 1024
}

/// Raises this test process's own soft open-files limit to its hard limit:
/// the descriptor test holds hundreds of sockets.
fn raise_own_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

/// The provider ids the server lists, retried (every try bounded) until
/// the listing includes `expected` or 60 s pass.
fn providers_once_listed(server: &Server, expected: &str) -> Vec<String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut listed: Option<Vec<String>> = None;
    let found = poll_until(Duration::from_secs(60), || {
        listed = client
            .get(server.at("/v1/providers"))
            .send()
            .and_then(|r| r.json::<Value>())
            .ok()
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|p| p["provider_id"].as_str().map(str::to_owned))
                        .collect()
                })
            });
        listed
            .as_ref()
            .is_some_and(|ids| ids.iter().any(|id| id == expected))
    });
    assert!(
        found,
        "{expected} never listed; last listing {listed:?}; log:\n{}",
        server.log()
    );
    listed.unwrap()
}

#[test]
fn a_descriptor_shortage_never_starves_hot_reload() {
    const HARD_LIMIT: u64 = 256;
    const IDLE: usize = 400;
    raise_own_open_files_limit();
    let dir = PluginDir::with(&["mai", "bedrock", "daytona", "github"]);
    let server = Server::start(dir.path(), |c| {
        limit_open_files(c, HARD_LIMIT);
        c.env("CONNHOST_LOG", "info");
    });
    let before = providers_once_listed(&server, "mai");
    // The default cap is half the limit: the rest wait in the backlog.
    // (The log is read on its own thread: wait for the line.)
    server.wait_for_log("max_connections=128");
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(&server)).collect();
    // The server has taken all the connections it will: every slot is
    // held, the rest wait in the backlog.
    server.wait_for_log("the connection cap is reached");
    // A new plugin arrives while the idle clients hold their connections.
    install(
        dir.path(),
        "fixture-greeter-v1",
        &library_file_name("greeter"),
    );
    server.wait_until(
        "the new plugin is picked up (a second provider set is served)",
        Duration::from_secs(30),
        || server.log().matches("serving a new provider set").count() >= 2,
    );
    drop(idle);
    let after = providers_once_listed(&server, "greeter");
    for id in &before {
        assert!(after.contains(id), "{id} is gone: {after:?}");
    }
    let log = server.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert_eq!(
        log.matches("the connection cap is reached").count(),
        1,
        "{log}"
    );
}

/// A body of 100k non-string fields, just under the 1 MiB default limit.
fn hundred_thousand_numbers() -> Vec<u8> {
    let mut body = String::from("{\"fields\":{");
    for i in 0..100_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("\"{i:x}\":{}", i % 10));
    }
    body.push_str("}}");
    assert!(body.len() < 1024 * 1024, "{}", body.len());
    body.into_bytes()
}

#[test]
fn clients_that_never_read_their_answers_do_not_pile_up_memory() {
    const CLIENTS: usize = 40;
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |_| {});
    let body = hundred_thousand_numbers();
    let mut request = validate_head("mai", body.len() as u64).into_bytes();
    request.extend_from_slice(&body);

    // One answer read in full: short, and it counts what it does not list.
    let mut stream = connect(&server);
    stream.write_all(&request).unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(60));
    assert_eq!(answer.status, 422, "{}", answer.head);
    assert!(
        answer.body.len() < 4096,
        "a {} byte answer for a {} byte body",
        answer.body.len(),
        body.len()
    );
    let json = answer.json();
    assert_eq!(json["error"]["code"], "invalid_body");
    assert_eq!(json["error"]["fields"].as_array().unwrap().len(), 20);
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("And 99980 more fields that are not strings"),
        "{message}"
    );
    drop(stream);

    let before = rss(server.pid());
    let silent: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(&request).unwrap();
            stream
        })
        .collect();
    // Watch the server's memory while the answers pile up unread: 15 s of
    // samples, a quarter of a second apart. Not a wait: the window is what
    // is measured, and nothing marks its end.
    let mut highest = before;
    let watch_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < watch_until {
        highest = highest.max(rss(server.pid()));
        std::thread::sleep(Duration::from_millis(250));
    }
    let grown = highest.saturating_sub(before) / (1024 * 1024);
    eprintln!(
        "RSS {} MB before, at most {} MB with {CLIENTS} clients that never read",
        before / (1024 * 1024),
        highest / (1024 * 1024)
    );
    assert!(grown < 150, "RSS grew by {grown} MB");
    drop(silent);
    // And the server still answers.
    assert!(!providers_once_listed(&server, "mai").is_empty());
}

#[test]
fn a_trickled_body_is_cut_at_the_total_body_timeout() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.args(["--body-timeout", "2"]);
    });
    let mut stream = connect(&server);
    stream
        .write_all(validate_head("mai", 1000).as_bytes())
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let mut first = [0_u8; 1];
    // Two bytes a second (each well within any per-read timeout), looking
    // for the answer before each, until the server answers or closes.
    let answered = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the trickled body was still being read after a minute"
        );
        match stream.read(&mut first) {
            Ok(n) => break n == 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the connection failed before any answer: {e}"),
        }
        // A write may fail once the server has answered and closed: the
        // answer is still there to read.
        let _ = stream.write_all(b" ");
    };
    let ended_after = started.elapsed();
    assert!(answered, "the server closed without an answer");
    // The 2 s total body timeout, plus generous slack for a busy machine.
    assert!(
        ended_after < Duration::from_secs(20),
        "open for {ended_after:?}"
    );
    // The rest of the answer: 408 in the API's format.
    let mut rest = read_answer(&mut stream, Duration::from_secs(10));
    rest.head.insert(0, first[0] as char);
    assert_eq!(rest.status, 408, "{}", rest.head);
    assert_eq!(rest.json()["error"]["code"], "body_timeout");
    assert!(
        rest.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within 2 s"),
        "{}",
        rest.json()
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_any_body() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |_| {});
    let mut stream = connect(&server);
    let started = Instant::now();
    stream
        .write_all(validate_head("mai", 10_000_000_000).as_bytes())
        .unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(30));
    let took = started.elapsed();
    eprintln!("Content-Length: 10000000000 refused after {took:?}");
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(answer.json()["error"]["code"], "payload_too_large");
    // Well before the 10 s body timeout: nothing waited for the body.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn requests_still_running_when_the_grace_ends_are_answered_draining() {
    let dir = PluginDir::with(&["fixture-hang"]);
    let server = Server::start(dir.path(), |c| {
        c.args(["--timeout", "30", "--shutdown-grace", "1"])
            .env("CONNHOST_LOG", "debug");
    });
    let body = br#"{"fields": {"api_key": "20000"}}"#;
    let mut stream = connect(&server);
    stream
        .write_all(validate_head("slow", body.len() as u64).as_bytes())
        .unwrap();
    stream.write_all(body).unwrap();
    // The provider is running (it waits 20 s).
    server.wait_for_log("validating");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let answer = read_answer(&mut stream, Duration::from_secs(15));
    assert_eq!(answer.status, 503, "{}", answer.head);
    assert_eq!(answer.json()["error"]["code"], "draining");
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    // Not everything finished in time: the exit says so.
    assert_eq!(server.wait(), Some(1));
}

#[test]
fn a_request_hyper_cannot_parse_gets_its_empty_400_as_documented() {
    // hyper 1 answers a malformed request line itself, before any of
    // connhost's code runs, with no body: the README says so.
    let dir = PluginDir::empty();
    let server = Server::start(dir.path(), |_| {});
    let mut stream = connect(&server);
    stream.write_all(b"NOT A REQUEST\r\n\r\n").unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(10));
    assert_eq!(answer.status, 400, "{}", answer.head);
    assert!(answer.body.is_empty());
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    assert!(
        readme.contains("hyper gives itself, with an empty body"),
        "the README no longer documents hyper's own answers"
    );
}

/// Waits (up to `within`) until `pid` has `count` sockets open; returns
/// whether it did.
fn wait_for_sockets(pid: u32, count: usize, within: Duration) -> bool {
    poll_until(within, || open_sockets(pid) == count)
}

#[test]
fn a_client_that_never_reads_is_dropped_by_the_write_timeout() {
    let dir = PluginDir::empty();
    let server = Server::start(dir.path(), |c| {
        c.arg("--no-watch");
    });
    let pid = server.pid();
    let idle = open_sockets(pid);
    // Far more answers than the socket buffers hold, asked for at once
    // (pipelined) and never read.
    let mut stream = connect(&server);
    let request = "GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n".repeat(2000);
    stream.write_all(request.as_bytes()).unwrap();
    assert!(
        wait_for_sockets(pid, idle + 1, Duration::from_secs(10)),
        "the connection was never accepted"
    );
    // The server's writes block; after the write timeout (10 s) it drops
    // the connection, while this client still holds its end.
    let started = Instant::now();
    assert!(
        wait_for_sockets(pid, idle, Duration::from_secs(40)),
        "the server still holds the connection of a client that reads nothing"
    );
    eprintln!(
        "a non-reading client was dropped after {:?}",
        started.elapsed()
    );
    drop(stream);
}

#[test]
fn accept_failures_back_off_and_are_logged_once() {
    raise_own_open_files_limit();
    let dir = PluginDir::with(&["mai"]);
    // A cap above what the descriptors allow, so accepting does fail.
    let server = Server::start(dir.path(), |c| {
        limit_open_files(c, 64);
        c.args(["--max-connections", "1000", "--no-watch"])
            .env("CONNHOST_LOG", "info");
    });
    let idle: Vec<TcpStream> = (0..200).map(|_| connect(&server)).collect();
    server.wait_for_log("accepting a connection failed");
    // Not a wait: the run of failures lasts 3 s more, the span over which
    // the backoff must keep the tries few and the log to one line.
    std::thread::sleep(Duration::from_secs(3));
    drop(idle);
    server.wait_for_log("accepting connections again");
    assert!(!providers_once_listed(&server, "mai").is_empty());
    // One line for each run of failures (the old loop logged one every
    // 50 ms), and far fewer tries than a 50 ms loop makes.
    let log = server.log();
    let mut in_a_run = false;
    for line in log.lines() {
        if line.contains("accepting a connection failed") {
            assert!(!in_a_run, "logged twice in one run of failures:\n{log}");
            in_a_run = true;
        } else if let Some(rest) = line.split("accepting connections again failures=").nth(1) {
            in_a_run = false;
            let failures: u32 = rest.trim().parse().unwrap();
            // A run lasts at most the 10 s header timeout of the idle
            // connections: about 17 tries with the backoff, 200 without.
            assert!(failures < 60, "{failures} tries:\n{log}");
        }
    }
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one_at_start() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "info");
        limit_open_files_to(c, 256, 1024);
    });
    let limits = procfs::limits(server.pid());
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["1024", "1024"], "{open_files}");
    server.wait_for_log("raised the open-files limit to the hard limit");
    assert!(server.log().contains("was=256"), "{}", server.log());
}
