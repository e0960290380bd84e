//! The attack suite: a hostile plugin (`tests/fixtures/hostile`, written
//! against plugin-api alone) isolated in a real `connhost serve` tries
//! each attack of issue 18, and containment is judged from outside the
//! worker: the host's limits, nice value and scheduler, a victim file's
//! mode, owner, extended attributes and times, a host-side Unix listener,
//! leftover processes after a `kill -9`, `Shmem` in `/proc/meminfo`, the
//! host's peak memory and descriptor count, and the host's log.
//!
//! Under `CI=true` a layer the machine cannot provide fails the test that
//! needs it (the worker's sandbox report must list it).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::procfs::{self, descriptors, meminfo_kb, stat_fields, status_kb};
use crate::support::server::{client, Server, NO_RATE_LIMITS};
use crate::support::{alive, grants_file, process_tree, running_as_root, wait_until, PluginDir};

/// The token the hostile host is served with (also an environment
/// variable the worker must not see).
const TOKEN: &str = "tok-containment-7e1f";

/// A hostile plugin in a worker of a real server.
struct Scene {
    server: Server,
    _dir: PluginDir,
    _grants: Option<tempfile::TempPath>,
}

impl Scene {
    /// Serves the hostile plugin isolated, with `configure` applied to
    /// the command, and egress granted to `vendor` when given.
    fn start(vendor: Option<&str>, configure: impl FnOnce(&mut std::process::Command)) -> Self {
        let dir = PluginDir::with(&["fixture-hostile"]);
        let grants = vendor.map(|url| grants_file(&[("fixture-hostile", url)]));
        let server = Server::start(dir.path(), |command| {
            command
                .args(["--isolation", "process"])
                .args(NO_RATE_LIMITS)
                .env("CONNHOST_TOKEN", TOKEN);
            if let Some(grants) = &grants {
                command.arg("--config").arg(grants);
            }
            configure(command);
        });
        let scene = Self {
            server,
            _dir: dir,
            _grants: grants,
        };
        scene.require_jail();
        scene
    }

    /// The hostile plugin's entry in `/v1/plugins`.
    fn plugin(&self) -> Value {
        let plugins: Value = client()
            .get(self.server.at("/v1/plugins"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        plugins["loaded"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["plugin"] == "fixture-hostile")
            .cloned()
            .unwrap_or_else(|| panic!("the hostile plugin is not loaded: {plugins}"))
    }

    /// The worker's pid (the keeper, the host's child), once it runs.
    fn worker_pid(&self) -> u32 {
        let mut pid = None;
        wait_until("the worker runs", || {
            pid = self.plugin()["worker"]["pid"].as_u64();
            pid.is_some()
        });
        pid.unwrap() as u32
    }

    /// Fails under CI (skips elsewhere, saying so) unless the worker's
    /// sandbox has every layer this suite relies on.
    fn require_jail(&self) {
        let worker = self.plugin()["worker"].clone();
        let applied: Vec<String> = worker["sandbox"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect();
        let needed = [
            "pid namespace",
            "mount namespace",
            "network namespace",
            "no capabilities",
            "seccomp allowlist",
            "landlock",
        ];
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|n| !applied.iter().any(|a| a.starts_with(n)))
            .collect();
        if !missing.is_empty() {
            panic!(
                "the worker's sandbox lacks {missing:?} (unavailable: {}); this suite needs them",
                worker["sandbox_unavailable"]
            );
        }
    }

    /// Runs `action` with `target` (and `secret`) and returns the
    /// validation's JSON answer.
    fn answer(&self, action: &str, target: &str, secret: &str) -> Value {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .post(self.server.at("/v1/providers/hostile/validate"))
            .bearer_auth(TOKEN)
            .json(&json!({"fields": {"action": action, "target": target, "secret": secret}}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Runs `action` with `target`; the plugin's `result`.
    fn act(&self, action: &str, target: &str) -> Value {
        let answer = self.answer(action, target, "");
        let result = answer["provider_metadata"]["result"].clone();
        assert!(
            !result.is_null(),
            "{action} {target}: no result in {answer}"
        );
        result
    }
}

/// A process's nice value and scheduling policy (fields 19 and 41).
fn nice_and_policy(pid: u32) -> (String, String) {
    let fields = stat_fields(pid);
    (fields[16].clone(), fields[38].clone())
}

/// The system's shared memory (`Shmem` in `/proc/meminfo`), in kB.
fn shmem_kb() -> u64 {
    meminfo_kb("Shmem")
}

#[test]
fn nothing_of_the_host_reaches_the_worker_no_environment_and_no_descriptor() {
    // A file the host holds open without close-on-exec, as a host started
    // by a careless parent does.
    let marker = tempfile::NamedTempFile::new().unwrap();
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(marker.path()).unwrap();
        (meta.dev(), meta.ino())
    };
    let held = std::fs::File::open(marker.path()).unwrap();
    let scene = Scene::start(None, |command| {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::process::CommandExt as _;
        let fd = held.as_raw_fd();
        command
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-never-in-a-worker")
            .env(
                "CONNHOST_PLUGIN_OTHER_PLUGIN_KEY",
                "another-plugins-setting",
            )
            .env("CONNHOST_PLUGIN_FIXTURE_HOSTILE_NOTE", "its-own-setting");
        // SAFETY: dup2 in the forked child only.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let env = scene.act("env", "");
    assert_eq!(env, json!({}), "the worker's environment is not empty");
    let fds = scene.act("fds", "");
    let open: Vec<(u64, u64, u64)> = fds
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_u64().unwrap(),
                e[1].as_u64().unwrap(),
                e[2].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        !open.iter().any(|&(_, d, i)| d == dev && i == ino),
        "the host's descriptor reached the worker: {open:?}"
    );
    // Its socket, standard streams and its runtime's own; no file of the
    // host's disk (its library was copied into its root, and its
    // descriptor closed).
    let host_disk = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(scene._dir.path()).unwrap().dev()
    };
    assert!(
        open.iter().all(|&(_, d, _)| d != host_disk),
        "a file of the host's disk is open in the worker: {open:?}"
    );
}

#[test]
fn the_host_cannot_be_limited_reniced_or_rescheduled() {
    let scene = Scene::start(None, |_| {});
    let host = scene.server.pid();
    let limits = procfs::limits(host);
    let before = nice_and_policy(host);
    let result = scene.act("host-limits", &host.to_string());
    // Its parent has no pid in its namespace (getppid() is 0, which these
    // calls take to mean the caller itself); the host's pid names nothing
    // there, and seccomp refuses the calls on any pid but its own first.
    assert_eq!(result["pid@ppid"], 0, "{result}");
    for (call, errno) in result.as_object().unwrap() {
        if call.ends_with("@target") && !call.starts_with("pid@") {
            assert_ne!(errno, 0, "{call} worked: {result}");
        }
    }
    assert_eq!(procfs::limits(host), limits, "the host's limits changed");
    assert_eq!(
        nice_and_policy(host),
        before,
        "the host's nice value or policy changed"
    );
    // And it still answers.
    assert!(client()
        .get(scene.server.at("/healthz"))
        .send()
        .unwrap()
        .status()
        .is_success());
}

#[test]
fn no_capability_no_metadata_change_and_no_privileged_call() {
    use std::os::unix::fs::MetadataExt as _;
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim.txt");
    std::fs::write(&victim, b"the host's file").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&victim).unwrap();
    let scene = Scene::start(None, |_| {});
    let caps = scene.act("capabilities", "");
    assert_eq!(
        caps,
        json!({"effective": 0, "permitted": 0, "bounding": 0}),
        "the worker holds capabilities"
    );
    for target in [
        victim.to_str().unwrap(),
        scene._dir.path().to_str().unwrap(),
    ] {
        let result = scene.act("metadata", target);
        for call in ["chmod", "chown", "setxattr", "utimensat"] {
            assert_ne!(result[call], 0, "{call} on {target} worked: {result}");
        }
    }
    let after = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        (
            after.mode(),
            after.uid(),
            after.gid(),
            after.mtime(),
            after.mtime_nsec()
        ),
        (
            before.mode(),
            before.uid(),
            before.gid(),
            before.mtime(),
            before.mtime_nsec()
        ),
        "the victim's metadata changed"
    );
    let plugins_mode = std::fs::metadata(scene._dir.path()).unwrap().mode();
    assert_eq!(
        plugins_mode & 0o022,
        0,
        "the plugins folder became writable"
    );
    let name = std::ffi::CString::new("user.hostile").unwrap();
    let path = std::ffi::CString::new(victim.to_str().unwrap()).unwrap();
    // SAFETY: getxattr with a null buffer asks for the size only.
    let size = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(size < 0, "the victim got an extended attribute");
    let privileged = scene.act("privileged", "");
    for (call, errno) in privileged.as_object().unwrap() {
        assert_eq!(errno, libc::EPERM, "{call} was not refused: {privileged}");
    }
}

#[test]
fn unix_sockets_of_the_host_are_unreachable_by_path_or_abstract_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("connhost-containment-{}", std::process::id());
    let abstract_listener = std::os::unix::net::UnixListener::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap(),
    )
    .unwrap();
    abstract_listener.set_nonblocking(true).unwrap();
    let scene = Scene::start(None, |_| {});
    let by_path = scene.act("unix-connect", path.to_str().unwrap());
    assert_eq!(by_path["connected"], false, "{by_path}");
    let by_name = scene.act("abstract-connect", &name);
    assert_eq!(by_name["connected"], false, "{by_name}");
    for listener in [&listener, &abstract_listener] {
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a host-side listener was reached: {other:?}"),
        }
    }
}

#[test]
fn forks_are_refused_threads_bounded_and_nothing_outlives_a_killed_worker() {
    let scene = Scene::start(None, |_| {});
    let forked = scene.act("fork", "100");
    assert_eq!(forked["forked"], 0, "{forked}");
    assert_eq!(forked["errno"], libc::EPERM, "{forked}");
    let threads = scene.act("threads", "3000");
    let started = threads["started"].as_u64().unwrap();
    assert!(
        started < connhost::DEFAULT_WORKER_THREADS,
        "{started} threads under a bound of {}",
        connhost::DEFAULT_WORKER_THREADS
    );
    let keeper = scene.worker_pid();
    let tree = process_tree(keeper);
    assert!(tree.len() >= 2, "the worker's processes: {tree:?}");
    // kill -9 of the worker the host started: everything under it goes.
    // SAFETY: sends SIGKILL to the worker this test started.
    unsafe { libc::kill(keeper as i32, libc::SIGKILL) };
    wait_until("every process of the killed worker is gone", || {
        tree.iter().all(|&pid| !alive(pid))
    });
    // The host restarts it, and the attack's threads are gone with it.
    wait_until("a new worker runs", || {
        scene.plugin()["worker"]["pid"]
            .as_u64()
            .is_some_and(|p| p as u32 != keeper)
    });
    assert_eq!(scene.act("threads", "50")["started"], 50);
    // kill -9 of the host: no one is left to clean up, and still nothing
    // of its worker survives it.
    let tree = process_tree(scene.worker_pid());
    assert!(tree.len() >= 3, "{tree:?}");
    scene.server.kill();
    wait_until("every process of the dead host's worker is gone", || {
        tree.iter().all(|&pid| !alive(pid))
    });
}

#[test]
fn shared_memory_is_refused_and_the_report_shows_the_workers_real_memory() {
    let scene = Scene::start(None, |_| {});
    let before = shmem_kb();
    let result = scene.act("memfd", "1024");
    assert_eq!(result["touched"], 0, "{result}");
    assert_eq!(result["errno"], libc::EPERM, "{result}");
    let grown = shmem_kb().saturating_sub(before);
    assert!(grown < 100 * 1024, "Shmem grew by {grown} kB");
    let memory = scene.plugin()["worker"]["memory_bytes"].as_u64();
    assert!(
        memory.is_some_and(|m| m > 0 && m < (1 << 30)),
        "{}",
        scene.plugin()["worker"]
    );
}

/// A loopback server for the HTTP attacks: `/big` streams a body of 400
/// MiB (no length given), anything else is a tarpit that reads the
/// request and never answers. Counts the connections it accepted and
/// sees which are still open.
struct Vendor {
    url: String,
    accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Vendor {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (count, keep) = (accepted.clone(), held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let mut request = [0u8; 2048];
                    let n = stream.read(&mut request).unwrap_or(0);
                    if request[..n].starts_with(b"GET /big ") {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n",
                        );
                        let chunk = vec![b'x'; 1 << 20];
                        for _ in 0..400 {
                            if stream.write_all(&chunk).is_err() {
                                return;
                            }
                        }
                    } else {
                        keep.lock().unwrap().push(stream);
                    }
                });
            }
        });
        Self {
            url,
            accepted,
            held,
        }
    }

    /// Tarpit connections the peer has not closed.
    fn open(&self) -> usize {
        let held = self.held.lock().unwrap();
        held.iter()
            .filter(|stream| {
                stream.set_nonblocking(true).unwrap();
                let mut byte = [0u8; 1];
                let open = matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                stream.set_nonblocking(false).unwrap();
                open
            })
            .count()
    }
}

#[test]
fn a_huge_response_is_refused_as_it_streams_never_held_whole() {
    let vendor = Vendor::start();
    let scene = Scene::start(Some(&vendor.url), |_| {});
    let host = scene.server.pid();
    let peak_before = status_kb(host, "VmHWM");
    let result = scene.act("http", &format!("{}/big", vendor.url));
    let error = result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{result}"));
    assert!(error.contains("over the"), "{error}");
    let peak = status_kb(host, "VmHWM");
    assert!(
        peak < peak_before + 64 * 1024,
        "the host's peak memory grew from {peak_before} kB to {peak} kB"
    );
}

#[test]
fn requests_from_outside_a_validation_are_refused_and_a_flood_is_bounded_and_cancelled() {
    let vendor = Vendor::start();
    let scene = Scene::start(Some(&vendor.url), |command| {
        command.args(["--timeout", "3"]);
    });
    let host = scene.server.pid();
    let baseline = descriptors(host);
    // From threads of the plugin's own, outside any validation: refused,
    // none reaches the vendor.
    let spawned = scene.act("http-from-thread", &format!("{}/t 200", vendor.url));
    assert_eq!(spawned["spawned"], 200, "{spawned}");
    let mut results = Value::Null;
    wait_until("every request from a thread is answered", || {
        results = scene.act("http-thread-results", "");
        results["refused"].as_u64().unwrap_or(0) + results["other"].as_u64().unwrap_or(0) >= 200
    });
    assert_eq!(results["refused"], 200, "{results}");
    assert_eq!(results["ok"], 0, "{results}");
    assert_eq!(vendor.accepted.load(Ordering::SeqCst), 0);

    // From a validation: at most the plugin's bound at once; the rest
    // refused at once; all cancelled when it times out.
    let flooding = {
        let url = scene.server.at("/v1/providers/hostile/validate");
        let target = format!("{}/t 2100", vendor.url);
        std::thread::spawn(move || {
            client()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"fields": {"action": "http-flood", "target": target}}))
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        })
    };
    let started = Instant::now();
    let mut most = 0;
    // Samples the host's descriptors while the flood runs. Not a wait:
    // the samples are what is measured.
    while !flooding.is_finished() && started.elapsed() < Duration::from_secs(20) {
        most = most.max(descriptors(host));
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = flooding.join().unwrap();
    assert!(
        answer.to_string().contains("did not answer within 3"),
        "{answer}"
    );
    let bound = connhost::DEFAULT_HTTP_MAX_CONCURRENT;
    assert!(
        vendor.accepted.load(Ordering::SeqCst) <= bound,
        "{} connections reached the vendor (bound {bound})",
        vendor.accepted.load(Ordering::SeqCst)
    );
    assert!(
        most <= baseline + bound + 16,
        "the host held {most} descriptors (baseline {baseline})"
    );
    wait_until("the host closed the flood's connections", || {
        vendor.open() == 0 && descriptors(host) <= baseline + 4
    });
}

#[test]
fn one_calls_secret_never_reaches_the_log_through_another_call() {
    let scene = Scene::start(None, |command| {
        command.env("CONNHOST_LOG", "info");
    });
    let secret = "s3cr3t-of-call-a-5b9d";
    let holding = {
        let url = scene.server.at("/v1/providers/hostile/validate");
        std::thread::spawn(move || {
            client()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"fields": {"action": "hold", "target": "8", "secret": secret}}))
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        })
    };
    // Call B, while A is in flight, logs A's secret (tracing, and stderr).
    // Both of its lines, scrubbed: the proof that B saw A's secret.
    wait_until("call B logged the held secret", || {
        scene.act("log-held", "");
        let log = scene.server.log();
        log.contains("the held secret on stderr: <redacted>")
            && log.contains("the held secret is <redacted>")
    });
    let log = scene.server.log();
    assert!(!log.contains(secret), "A's secret leaked:\n{log}");
    let answer = holding.join().unwrap();
    assert_eq!(answer["valid"], true, "{answer}");
    assert!(!scene.server.log().contains(secret));
}

/// The marker the hostile plugin's ELF constructor writes wherever it runs
/// (`tests/fixtures/hostile`).
const CONSTRUCTOR_MARKER: &str = "/tmp/connhost-hostile-constructor-ran";

/// `connhost [ARGS] inspect FILE`.
fn inspect(dir: &std::path::Path, args: &[&str], file: &std::path::Path) -> crate::support::Run {
    crate::support::run(
        crate::support::connhost(dir)
            .args(args)
            .arg("inspect")
            .arg(file),
    )
}

#[test]
fn inspect_runs_no_plugin_code_in_the_cli_and_passes_the_same_trust_gate() {
    let _ = std::fs::remove_file(CONSTRUCTOR_MARKER);
    let dir = PluginDir::with(&["fixture-hostile"]);
    let file = dir.file(&crate::support::library_file_name("fixture-hostile"));
    let key = crate::trust::Key::new();
    let keys = crate::trust::keys_dir(&[(&key, "ops")]);
    let keys_arg = keys.path().to_str().unwrap();

    // Unsigned, with trusted keys: refused as `plugins` refuses it, and its
    // constructor never ran.
    let refused = inspect(dir.path(), &["--trusted-keys", keys_arg], &file);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    let listed = crate::support::run(
        crate::support::connhost(dir.path())
            .args(["--trusted-keys", keys_arg])
            .args(["plugins", "--json"]),
    );
    let report = listed.json();
    let reason = report["failed"][0]["reason"].as_str().unwrap().to_owned();
    assert!(
        refused.stdout.contains(&reason),
        "inspect's refusal differs from the catalog's {reason:?}:\n{}",
        refused.stdout
    );
    assert!(
        !refused.stdout.contains("loadable: yes"),
        "{}",
        refused.stdout
    );
    assert!(
        !std::path::Path::new(CONSTRUCTOR_MARKER).exists(),
        "the plugin's constructor ran in the CLI process"
    );

    // Signed by a trusted key: loaded, in a jailed worker only.
    key.sign(&file, "hostile, for the test");
    let json = crate::support::run(
        crate::support::connhost(dir.path())
            .args(["--trusted-keys", keys_arg])
            .args(["inspect", "--json"])
            .arg(&file),
    );
    assert_eq!(json.code, 0, "{}{}", json.stdout, json.stderr);
    let inspection = json.json();
    assert_eq!(inspection["loadable"], true, "{inspection}");
    assert_eq!(inspection["trust"]["signature"]["key_id"], key.id.as_str());
    let sandbox = inspection["sandbox"].to_string();
    for layer in ["pid namespace", "mount namespace", "seccomp allowlist"] {
        assert!(sandbox.contains(layer), "{layer} not in {sandbox}");
    }
    assert!(
        !std::path::Path::new(CONSTRUCTOR_MARKER).exists(),
        "the plugin's constructor ran outside its jail"
    );
}

/// Another local user's file is refused by inspect as by loading (it
/// could be swapped for anything between inspection and load).
#[test]
fn inspect_refuses_another_users_file_as_loading_does() {
    if !running_as_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this attack runs as root with a second user"
        );
        eprintln!("skipped: a second user needs root");
        return;
    }
    let _ = std::fs::remove_file(CONSTRUCTOR_MARKER);
    let dir = PluginDir::with(&["fixture-hostile"]);
    let drop_zone = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        drop_zone.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let evil = drop_zone.path().join("evil.so");
    let copied = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cp"])
        .arg(crate::support::built_library("fixture-hostile"))
        .arg(&evil)
        .status()
        .unwrap();
    assert!(copied.success());
    let refused = inspect(dir.path(), &[], &evil);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stdout.contains("owned by uid 65534"),
        "{}",
        refused.stdout
    );
    assert!(!std::path::Path::new(CONSTRUCTOR_MARKER).exists());
}

/// `[worker] require` fails closed: a worker without a required layer
/// refuses to load its plugin, saying which layer and why it is missing;
/// with every layer this machine has, it loads.
#[test]
fn a_required_layer_that_is_missing_refuses_the_plugin() {
    let dir = PluginDir::with(&["fixture-hostile"]);
    let config = |text: &str| {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .unwrap()
            .into_temp_path();
        std::fs::write(&file, text).unwrap();
        file
    };
    let plugins = |file: &std::path::Path| {
        crate::support::run(
            crate::support::connhost(dir.path())
                .args(["--isolation", "process", "--config"])
                .arg(file)
                .args(["plugins", "--json"]),
        )
        .json()
    };
    let off = config("[worker]\nsandbox = false\nrequire = [\"seccomp\", \"pid_namespace\"]\n");
    let report = plugins(&off);
    let reason = report["failed"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("require names pid_namespace, seccomp"),
        "{report:#}"
    );
    assert!(
        report["loaded"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let all = config("[worker]\nrequire = [\"all\"]\n");
    let report = plugins(&all);
    if std::env::var_os("CI").is_some() || report["failed"].as_array().unwrap().is_empty() {
        assert_eq!(
            report["loaded"][0]["plugin"], "fixture-hostile",
            "{report:#}"
        );
    } else {
        eprintln!("skipped: this machine lacks a layer: {report:#}");
    }
}

/// The temp-dir entries and cgroups a connhost process `pid` left.
fn leftovers(temp: &std::path::Path, pid: u32) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(temp)
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    let prefix = format!("connhost-{pid}-");
    for hierarchy in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"] {
        let mut pending = vec![std::path::PathBuf::from(hierarchy)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    left.push(entry.path().display().to_string());
                } else if pending.len() < 10_000 {
                    pending.push(entry.path());
                }
            }
        }
    }
    left
}

/// Neither a one-shot command with isolated plugins nor a server stopped
/// with SIGTERM leaves a cache folder or a worker's cgroup behind.
#[test]
fn isolated_commands_and_a_terminated_server_leave_nothing_behind() {
    let dir = PluginDir::with(&["fixture-hostile", "daytona"]);
    let temp = tempfile::tempdir().unwrap();
    let mut command = crate::support::connhost(dir.path());
    command
        .env("TMPDIR", temp.path())
        .args(["--isolation", "process", "providers"]);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(leftovers(temp.path(), pid), Vec::<String>::new());

    let server = Server::start(dir.path(), |command| {
        command
            .env("TMPDIR", temp.path())
            .args(["--isolation", "process"]);
    });
    let pid = server.pid();
    assert!(
        !leftovers(temp.path(), pid).is_empty(),
        "the server has a cache"
    );
    // Dropping it sends SIGTERM, as an operator's stop does.
    drop(server);
    wait_until("the terminated server's folders are gone", || {
        leftovers(temp.path(), pid).is_empty()
    });
}
