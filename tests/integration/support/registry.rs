//! A real OCI registry for the tests: Debian's `docker-registry`
//! (distribution 2.8) on a free loopback port, its storage in a temporary
//! folder, optionally behind htpasswd basic authentication, logging
//! every request it answers ([`Registry::requests`]); stopped when
//! dropped. And `skopeo`, the second client the artifacts are checked
//! with. Both missing is a failure naming the package to install, never a
//! skip (`cargo xtask test` installs them).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

/// Fails the test, naming the package, when `program` cannot run.
fn require(program: &str, args: &[&str], package: &str) {
    let runs = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        runs,
        "{program} is missing: install Debian's {package} package (`apt-get install -y {package}`; `cargo xtask test` installs it)"
    );
}

/// `skopeo`, checked to be installed.
pub fn skopeo() -> Command {
    require("skopeo", &["--version"], "skopeo");
    let mut command = Command::new("skopeo");
    // No credentials of this machine's user, no policy file needed.
    let home = std::env::temp_dir();
    command.env("HOME", home).stdin(Stdio::null());
    command
}

/// A bcrypt htpasswd line for `user`, made by apache2-utils' `htpasswd`.
fn htpasswd(user: &str, password: &str) -> String {
    require("htpasswd", &["-nbB", "x", "x"], "apache2-utils");
    let out = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd failed");
    String::from_utf8(out.stdout).expect("htpasswd prints text")
}

impl Registry {
    /// A registry anyone may push to and pull from.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry that asks for `user` and `password` (HTTP basic).
    pub fn with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(credentials: Option<(&str, &str)>) -> Self {
        require(DOCKER_REGISTRY, &["--version"], "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("connhost-registry-")
            .tempdir()
            .expect("temp dir");
        let auth = match credentials {
            Some((user, password)) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, htpasswd(user, password)).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: connhost-tests\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        // A port the kernel just handed out; another process could take it
        // before the registry binds it, so a registry that does not come
        // up is tried again on a new port.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let host = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
                    dir.path().join("storage").display()
                ),
            )
            .expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let mut child = Command::new(DOCKER_REGISTRY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let up = super::poll_until(Duration::from_secs(20), || {
                if child.try_wait().ok().flatten().is_some() {
                    return true;
                }
                std::net::TcpStream::connect(&host).is_ok()
            });
            if up && child.try_wait().ok().flatten().is_none() {
                return Registry { child, dir, host };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `127.0.0.1:PORT/REPOSITORY:TAG`.
    pub fn reference(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.host)
    }

    /// Where the registry keeps the blob `digest` (`sha256:...`).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The requests the registry answered so far, in order, as its access
    /// log writes them: `METHOD TARGET` (`GET /v2/plugins/a/manifests/1`).
    /// The log is written as each answer ends, so a request answered
    /// earlier is in it by the time the client has read its answer.
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                // Combined log format: `ADDR - - [TIME] "METHOD TARGET HTTP/1.1" STATUS ...`.
                let request = line.split('"').nth(1)?;
                let mut words = request.split(' ');
                let (method, target, version) = (words.next()?, words.next()?, words.next()?);
                version
                    .starts_with("HTTP/")
                    .then(|| format!("{method} {target}"))
            })
            .collect()
    }

    /// [`Self::requests`], once every request answered before this call
    /// is in the log: asks the registry for a marker path of its own and
    /// waits until the log has it (the registry writes a request's line as
    /// its answer ends, so the answers before the marker's are logged by
    /// then). The marker is not among those returned.
    pub fn settled_requests(&self) -> Vec<String> {
        use std::io::{Read as _, Write as _};
        const MARKER: &str = "/v2/connhost-tests/settled/tags/list";
        let mut stream = std::net::TcpStream::connect(&self.host).expect("connect to the registry");
        write!(
            stream,
            "GET {MARKER} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        )
        .expect("ask the registry");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let marker = format!("GET {MARKER}");
        let logged = super::poll_until(Duration::from_secs(20), || {
            self.requests().contains(&marker)
        });
        assert!(logged, "the registry did not log {marker}");
        self.requests()
            .into_iter()
            .take_while(|request| *request != marker)
            .collect()
    }

    /// The registry's storage folder.
    pub fn storage(&self) -> PathBuf {
        // Created by the registry at its first write.
        self.dir.path().join("storage")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A docker config folder (for `DOCKER_CONFIG`) whose config.json holds
/// `auths` for `host` (or nothing, with `None`).
pub fn docker_config(host: &str, credentials: Option<(&str, &str)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let auths = match credentials {
        Some((user, password)) => {
            let encoded = base64_encode(format!("{user}:{password}").as_bytes());
            format!("{{\"{host}\": {{\"auth\": \"{encoded}\"}}}}")
        }
        None => "{}".to_owned(),
    };
    std::fs::write(
        dir.path().join("config.json"),
        format!("{{\"auths\": {auths}}}"),
    )
    .expect("write config.json");
    dir
}

/// Standard base64 with padding (what `docker login` writes).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
