//! Helpers shared by the integration tests: building the plugin libraries
//! with cargo, temporary plugin folders, running the real `connhost`
//! binary, and a loopback HTTP server standing in for vendors' APIs.

#![allow(dead_code)]

pub mod procfs;
pub mod redis_server;
pub mod registry;
pub mod server;
pub mod vendor;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use procfs::{alive, process_tree};

/// Every crate whose library the tests load, plus the binary.
const PACKAGES: &[&str] = &[
    "connhost-cli",
    "daytona",
    "bedrock",
    "mai",
    "github",
    "fixture-panic-init",
    "fixture-panicky",
    "fixture-hang",
    "fixture-duplicate",
    "fixture-not-a-plugin",
    "fixture-abi-version",
    "fixture-abi-layout",
    "fixture-greeter-v1",
    "fixture-greeter-v2",
    "fixture-fault-segfault",
    "fixture-fault-abort",
    "fixture-fault-exit",
    "fixture-fault-stack",
    "fixture-fault-alloc",
    "fixture-fault-spin",
    "fixture-sandbox-probe",
    "fixture-probe-http",
    "fixture-hostile",
    "fixture-terminal-escapes",
    "fixture-older-api",
    "fixture-bench-trivial",
];

/// The workspace's target dir, found from this test binary's own path
/// (`<target>/<profile>/deps/integration-<hash>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent() // deps
        .and_then(Path::parent) // profile
        .and_then(Path::parent) // target
        .expect("test binary under <target>/<profile>/deps")
        .to_owned()
}

/// The profile folder the plugins are built into (the tests' own).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_owned()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// Builds the binary and every plugin library once per test run, as a user
/// would (`cargo build`), into the tests' own target dir and profile. When
/// the workspace was just built this is a quick no-op.
pub fn build_artifacts() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(workspace_root())
            .arg("build")
            .arg("--target-dir")
            .arg(target_dir());
        // The tests' own profile (a custom one too: `--profile NAME`).
        match profile_dir().file_name().and_then(|p| p.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                command.args(["--profile", profile]);
            }
        }
        for package in PACKAGES {
            command.args(["--package", package]);
        }
        let output = command.output().expect("run cargo build");
        assert!(
            output.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        profile_dir()
    })
}

/// The file name of a library built from a crate (`libdaytona.so`).
pub fn library_file_name(crate_name: &str) -> String {
    format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    )
}

/// A built library's path.
pub fn built_library(crate_name: &str) -> PathBuf {
    build_artifacts().join(library_file_name(crate_name))
}

/// A temporary plugins folder. Every file is a fresh copy, so each test
/// gets its own instance of each library (the dynamic loader would hand
/// back an already-loaded object for the same file).
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn empty() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("connhost-plugins-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A folder holding copies of these crates' libraries.
    pub fn with(crates: &[&str]) -> Self {
        let dir = Self::empty();
        for name in crates {
            dir.add_library(name);
        }
        dir
    }

    /// Copies a built library in under its usual name.
    pub fn add_library(&self, crate_name: &str) -> PathBuf {
        let to = self.path().join(library_file_name(crate_name));
        std::fs::copy(built_library(crate_name), &to).expect("copy plugin");
        to
    }

    /// Writes a file with these bytes.
    pub fn add_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let to = self.path().join(name);
        std::fs::write(&to, bytes).expect("write file");
        to
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

/// The result of running the `connhost` binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Writes the library `crate_name` built into `dir` as `name` the way a
/// careful installer does: a temporary file, then a rename over the
/// target. Returns the installed path.
pub fn install(dir: &Path, crate_name: &str, name: &str) -> PathBuf {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::copy(built_library(crate_name), &temporary).unwrap();
    let target = dir.join(name);
    std::fs::rename(&temporary, &target).unwrap();
    target
}

/// A `connhost` command with `--plugins DIR`, its logs off unless a test
/// asks for them.
pub fn connhost(plugins: &Path) -> Command {
    let binary = build_artifacts().join(format!("connhost{}", std::env::consts::EXE_SUFFIX));
    let mut command = Command::new(binary);
    command
        .env_remove("CONNHOST_PLUGINS")
        .env_remove("CONNHOST_EXPERIMENTAL")
        .env_remove("CONNHOST_TIMEOUT")
        .env_remove("CONNHOST_CONFIG")
        .env_remove("CONNHOST_ISOLATION")
        .env_remove("CONNHOST_CLIENT_RATE")
        .env_remove("CONNHOST_PROVIDER_RATE")
        .env_remove("CONNHOST_CLIENT_BURST")
        .env_remove("CONNHOST_PROVIDER_BURST")
        .env_remove("CONNHOST_TRUSTED_KEYS")
        .env_remove("CONNHOST_LOCK_FILE")
        .env_remove("CONNHOST_LOCKED")
        .env_remove("CONNHOST_INSECURE_PERMISSIONS")
        .env("CONNHOST_LOG", "error")
        .env("NO_COLOR", "1")
        .arg("--plugins")
        .arg(plugins)
        .stdin(Stdio::null());
    command
}

/// Runs a command to completion.
pub fn run(command: &mut Command) -> Run {
    command.output().expect("run connhost").into()
}

/// Runs a command with `input` on its standard input.
pub fn run_with_stdin(command: &mut Command, input: &str) -> Run {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn connhost");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for connhost").into()
}

pub use connhost_plugin_api::testing::fields;

/// A host over `dir` with settings pointing plugins at `vendor_url`.
pub fn host_with(
    dir: &PluginDir,
    configure: impl FnOnce(&mut connhost::HostConfig),
) -> connhost::Connhost {
    let mut config = connhost::HostConfig::with_plugins_dir(dir.path());
    configure(&mut config);
    connhost::Connhost::start(&config)
}

/// Sets a plugin setting in a config.
pub fn set(config: &mut connhost::HostConfig, plugin: &str, key: &str, value: &str) {
    config
        .settings
        .entry(plugin.to_owned())
        .or_default()
        .insert(key.to_owned(), value.to_owned());
}

/// The egress grant `[plugin.NAME] egress` needs for a loopback server at
/// `url` (`http://127.0.0.1:PORT`): exactly its `127.0.0.1:PORT`. connhost
/// refuses loopback addresses unless the operator names them.
pub fn loopback_grant(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Grants `plugin` egress to the loopback server at `url` in `config`
/// (added to any grant it has).
pub fn grant(config: &mut connhost::HostConfig, plugin: &str, url: &str) {
    config
        .plugins
        .entry(plugin.to_owned())
        .or_default()
        .egress
        .get_or_insert_with(Vec::new)
        .push(loopback_grant(url));
}

/// A configuration file granting each `(plugin, url)` egress to its
/// loopback server, for the binary (`CONNHOST_CONFIG` or `--config`);
/// removed when dropped.
pub fn grants_file(grants: &[(&str, &str)]) -> tempfile::TempPath {
    let mut by_plugin = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for (plugin, url) in grants {
        by_plugin
            .entry(plugin)
            .or_default()
            .push(format!("\"{}\"", loopback_grant(url)));
    }
    let mut text = String::new();
    for (plugin, hosts) in by_plugin {
        text.push_str(&format!(
            "[plugin.{plugin}]\negress = [{}]\n",
            hosts.join(", ")
        ));
    }
    let file = tempfile::Builder::new()
        .prefix("connhost-grants-")
        .suffix(".toml")
        .tempfile()
        .expect("grants file");
    std::fs::write(file.path(), text).expect("write grants file");
    file.into_temp_path()
}

/// How long [`wait_until`] waits.
const WAIT: Duration = Duration::from_secs(30);

/// Checks `condition` until it holds or `timeout` has passed, pausing a
/// little longer after each miss (5 ms, doubling up to 50 ms, so that a
/// costly check such as an HTTP request is not hammered); returns whether
/// it held. For a caller whose failure message needs what the last check
/// saw; [`wait_until`] panics by itself.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    const MOST: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if condition() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(MOST);
    }
}

/// Waits (up to 30 s) until `condition` holds; panics with `what`
/// otherwise. For conditions that have no event to wait on (a file
/// watcher reacting, a process exiting).
pub fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(what, WAIT, condition);
}

/// Waits up to `timeout` until `condition` holds; panics with `what`
/// otherwise.
pub fn wait_until_within(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition),
        "timed out after {timeout:?} waiting until {what}"
    );
}

/// Waits up to `limit` for `child` to exit: its status, or `None` if it
/// still runs (the caller kills it and says so).
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(limit, || {
        status = child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot poll the child process: {e}"));
        status.is_some()
    });
    status
}

/// Whether this process runs as root (which reads any file whatever its
/// permission bits).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A multi-threaded runtime for library-API tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The copies in a plugin cache folder (entries named as the cache names
/// its copies, `<64 hex digits>.<library extension>`, links included),
/// sorted.
pub fn cached_copies(cache: &Path) -> Vec<PathBuf> {
    let mut copies: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension() == Some(std::ffi::OsStr::new(std::env::consts::DLL_EXTENSION))
                && p.file_stem().is_some_and(|s| s.len() == 64)
        })
        .collect();
    copies.sort();
    copies
}

/// The digest the host reports for `file`'s bytes: `sha256:` and 64
/// lower-case hex digits.
pub fn digest_of(file: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(file);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What a copy made to be loaded holds of the 64-bit little-endian ELF
/// shared library `file`: its bytes up to the end of the last thing a
/// program header points at, with the ELF header's section table fields
/// (`e_shoff`, `e_shnum`, `e_shstrndx`) zeroed. Read with the ELF
/// specification's offsets, apart from the host's own parser.
pub fn loaded_part(file: &[u8]) -> Vec<u8> {
    let word = |at: usize, width: usize| {
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(&file[at..at + width]);
        u64::from_le_bytes(bytes) as usize
    };
    assert_eq!(
        &file[..6],
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF file"
    );
    let (phoff, phentsize, phnum) = (word(0x20, 8), word(0x36, 2), word(0x38, 2));
    let mut end = phoff + phentsize * phnum;
    for n in 0..phnum {
        let header = phoff + n * phentsize;
        end = end.max(word(header + 0x08, 8) + word(header + 0x20, 8));
    }
    let mut part = file[..end].to_vec();
    for (at, width) in [(0x28, 8), (0x3c, 2), (0x3e, 2)] {
        part[at..at + width].fill(0);
    }
    part
}

/// The default cache folders (`connhost-<pid>-<random>`) of every
/// process in the temp dir `temp`.
pub fn cache_folders(temp: &Path) -> Vec<PathBuf> {
    cache_folders_named(temp, "connhost-")
}

/// The default cache folders (`connhost-<pid>-...`) of the process `pid`
/// in the temp dir `temp`.
pub fn cache_folders_of(temp: &Path, pid: u32) -> Vec<PathBuf> {
    cache_folders_named(temp, &format!("connhost-{pid}-"))
}

fn cache_folders_named(temp: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(temp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}
