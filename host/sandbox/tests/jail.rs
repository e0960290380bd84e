//! Each test jails a real process and tries one thing from inside: this
//! test binary runs again with `CONNHOST_JAIL_PROBE` set so that only
//! `probe_child` runs; it forks a single-threaded process that calls
//! `enter` (which forks the jail's init and runner), and the runner tries
//! the probe and prints `APPLIED: ...`, `UNAVAILABLE: ...`, `LAYERS: ...`
//! and `PROBE: ok ...` or `PROBE: refused errno=N ...`. The forked
//! process ends the way the runner ended; `probe_child` prints how
//! (`ENDED: exit N` or `ENDED: signal N`).
//!
//! Under `CI=true`, a test whose layer this machine could not provide
//! fails; elsewhere it is skipped, saying why.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd as _, IntoRawFd as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use connhost_sandbox::cgroup::{Cgroup, Limits};
use connhost_sandbox::{enter, Inherited, Jail, Layer};

/// Names the probe a child runs.
const PROBE_VAR: &str = "CONNHOST_JAIL_PROBE";
/// The library file the child is given (as a descriptor).
const LIBRARY_VAR: &str = "CONNHOST_JAIL_LIBRARY";
/// The probe's argument (an address, a path, a pid).
const TARGET_VAR: &str = "CONNHOST_JAIL_TARGET";
/// The jail, as JSON (when the test sets one other than the default).
const JAIL_VAR: &str = "CONNHOST_JAIL_JAIL";
/// How long a child may run before it is killed.
const DEADLINE: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

/// How a child ended and what it said.
struct Child {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Child {
    fn outcome(&self) -> Option<&str> {
        self.line("PROBE: ")
    }

    fn applied(&self) -> Vec<&str> {
        self.list("APPLIED: ")
    }

    fn unavailable(&self) -> Vec<&str> {
        self.list("UNAVAILABLE: ")
    }

    fn layers(&self) -> Vec<Layer> {
        self.list("LAYERS: ")
            .into_iter()
            .filter_map(|name| name.parse().ok())
            .collect()
    }

    fn line(&self, tag: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|line| line.split_once(tag).map(|(_, rest)| rest))
    }

    fn list(&self, tag: &str) -> Vec<&str> {
        self.line(tag)
            .map(|list| list.split(" | ").filter(|item| !item.is_empty()).collect())
            .unwrap_or_default()
    }

    /// Whether every one of `layers` is in force. When one is not, fails
    /// under `CI=true` and says why it is skipped elsewhere.
    fn has(&self, layers: &[Layer]) -> bool {
        let missing: Vec<&Layer> = layers
            .iter()
            .filter(|l| !self.layers().contains(l))
            .collect();
        if missing.is_empty() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI every layer must hold; missing {missing:?}\n{}",
            self.said()
        );
        eprintln!(
            "skipped: {missing:?} not available here: {:?}",
            self.unavailable()
        );
        false
    }

    fn exited_cleanly(&self) -> bool {
        self.status.success() && self.line("ENDED: ") == Some("exit 0")
    }

    fn killed_by(&self) -> Option<i32> {
        self.line("ENDED: signal ")
            .and_then(|signal| signal.trim().parse().ok())
    }

    fn said(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A folder holding a stand-in library file and, beside it, a file the
/// jail must not let the child read.
struct Scene {
    dir: tempfile::TempDir,
    jail: Jail,
    uid: Option<u32>,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("plugin.so"), b"library bytes").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"not for plugins").unwrap();
        Self {
            dir,
            jail: Jail {
                memory_limit: Some(1024 * MIB),
                open_files: Some(64),
                cpu_seconds: Some(30),
                max_threads: Some(64),
                tmp_size: MIB,
                ..Jail::default()
            },
            uid: None,
        }
    }

    fn library(&self) -> PathBuf {
        self.dir.path().join("plugin.so")
    }

    fn beside(&self) -> PathBuf {
        self.dir.path().join("secret.txt")
    }

    fn with(mut self, change: impl FnOnce(&mut Jail)) -> Self {
        change(&mut self.jail);
        self
    }

    fn probe(&self, probe: &str, target: &str) -> Child {
        run_probe(self, probe, target)
    }
}

/// The test name libtest knows `probe_child` by.
fn probe_test_name() -> &'static str {
    "probe_child"
}

/// Runs this test binary as a child that jails itself and runs `probe`
/// with `target`; kills it after the deadline.
fn run_probe(scene: &Scene, probe: &str, target: &str) -> Child {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    if let Some(uid) = scene.uid {
        command.uid(uid).gid(uid);
    }
    // A group of its own, so that the deadline kills the forks too.
    command.process_group(0);
    let jail = serde_json::to_string(&scene.jail).unwrap();
    let mut child = command
        .args([
            "--exact",
            probe_test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_VAR, probe)
        .env(LIBRARY_VAR, scene.library())
        .env(TARGET_VAR, target)
        .env(JAIL_VAR, jail)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the probe child");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the probe child") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let group = libc::pid_t::try_from(child.id()).expect("pid");
            // SAFETY: signals the process group this test made.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let status = child.wait().expect("reap the probe child");
            panic!(
                "probe {probe} did not finish within {DEADLINE:?} ({status:?}); stdout:\n{}",
                out.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Child {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Asserts the child jailed itself, ran its probe and found it refused
/// with one of `errnos`.
fn assert_refused(child: &Child, errnos: &[i32]) {
    assert!(child.exited_cleanly(), "{}", child.said());
    let outcome = child
        .outcome()
        .unwrap_or_else(|| panic!("{}", child.said()));
    let refused_with = outcome
        .strip_prefix("refused errno=")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|errno| errno.parse::<i32>().ok());
    assert!(
        refused_with.is_some_and(|errno| errnos.contains(&errno)),
        "expected refused with one of {errnos:?}, got {outcome:?}\n{}",
        child.said()
    );
}

/// Asserts the child jailed itself and its probe worked.
fn assert_works(child: &Child) {
    assert!(child.exited_cleanly(), "{}", child.said());
    let outcome = child
        .outcome()
        .unwrap_or_else(|| panic!("{}", child.said()));
    assert!(outcome.starts_with("ok"), "{}", child.said());
}

/// How many threads the `threads` probe started before it was refused.
fn threads_started(child: &Child) -> u64 {
    assert_works(child);
    child
        .outcome()
        .and_then(|o| o.strip_prefix("ok started "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", child.said()))
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn every_layer_holds_on_this_machine() {
    let child = Scene::new().probe("nothing", "");
    assert_works(&child);
    let mut expected = vec![
        Layer::PidNamespace,
        Layer::MountNamespace,
        Layer::NetworkNamespace,
        Layer::IpcNamespace,
        Layer::Unprivileged,
        Layer::NoCapabilities,
        Layer::NoNewPrivileges,
        Layer::Landlock,
        Layer::Seccomp,
    ];
    if !root() {
        expected.retain(|l| *l != Layer::Unprivileged);
    }
    child.has(&expected);
}

#[test]
fn tcp_to_a_loopback_listener_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let child = Scene::new().probe("connect", &address);
    if child.has(&[Layer::Seccomp]) {
        // No socket but pairs.
        assert_refused(&child, &[libc::EPERM]);
    }
}

#[test]
fn unix_sockets_by_path_or_abstract_name_are_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let scene = Scene::new();
    let child = scene.probe("unix-path", path.to_str().unwrap());
    if child.has(&[Layer::Seccomp, Layer::MountNamespace]) {
        assert_refused(&child, &[libc::EPERM]);
    }
    let child = scene.probe("unix-abstract", "connhost-jail-test");
    if child.has(&[Layer::Seccomp]) {
        assert_refused(&child, &[libc::EPERM]);
    }
    assert!(
        listener.accept().is_err(),
        "the host-side listener was reached"
    );
}

#[test]
fn a_unix_socket_pair_still_works() {
    assert_works(&Scene::new().probe("socketpair", ""));
}

#[test]
fn nothing_of_the_hosts_file_system_is_there() {
    let scene = Scene::new();
    let beside = scene.beside();
    for target in [
        beside.to_str().unwrap(),
        "/etc/hostname",
        "/proc/self/status",
        "/root",
    ] {
        let child = scene.probe("read", target);
        if child.has(&[Layer::MountNamespace]) {
            assert_refused(&child, &[libc::ENOENT]);
        }
    }
}

#[test]
fn the_library_is_there_by_the_path_enter_returns() {
    let child = Scene::new().probe("read-library", "");
    assert_works(&child);
    assert_eq!(child.outcome(), Some("ok 13 bytes"), "{}", child.said());
}

#[test]
fn only_the_private_tmp_is_writable_and_it_is_bounded() {
    let scene = Scene::new();
    let child = scene.probe("write", "/tmp");
    assert_works(&child);
    for target in ["/", "/plugin", "/usr/lib"] {
        let child = scene.probe("write", target);
        if child.has(&[Layer::MountNamespace]) {
            assert_refused(&child, &[libc::EROFS, libc::EACCES]);
        }
    }
    let child = scene.probe("fill-tmp", "");
    if child.has(&[Layer::MountNamespace]) {
        assert_refused(&child, &[libc::ENOSPC]);
    }
}

#[test]
fn running_a_program_is_refused() {
    let child = Scene::new().probe("exec", "/bin/sh");
    if child.has(&[Layer::Seccomp]) {
        assert_refused(&child, &[libc::EPERM]);
    }
}

#[test]
fn forking_is_refused_and_threads_are_bounded() {
    let scene = Scene::new().with(|jail| jail.max_threads = Some(16));
    let child = scene.probe("fork", "");
    if child.has(&[Layer::Seccomp]) {
        assert_refused(&child, &[libc::EPERM]);
    }
    let child = scene.probe("threads", "");
    let started = threads_started(&child);
    assert!(started < 16, "{started} threads under a bound of 16");
}

#[test]
fn it_has_its_own_pid_namespace_where_no_other_process_exists() {
    let child = Scene::new().probe("pids", "");
    if child.has(&[Layer::PidNamespace]) {
        assert_works(&child);
        // The runner is pid 2 (after the namespace's init), and its parent
        // (the keeper, outside) has no pid in it.
        assert_eq!(child.outcome(), Some("ok pid 2 ppid 0"), "{}", child.said());
    }
}

#[test]
fn the_host_process_cannot_be_limited_reniced_or_rescheduled() {
    let me = std::process::id();
    let limits_before = std::fs::read_to_string(format!("/proc/{me}/limits")).unwrap();
    // SAFETY: getpriority reads this process's nice value.
    let nice_before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let child = Scene::new().probe("host-limits", &me.to_string());
    if child.has(&[Layer::Seccomp]) {
        assert_works(&child);
        assert_eq!(
            child.outcome(),
            Some("ok prlimit=1 setpriority=1 sched_setscheduler=1"),
            "each refused with EPERM\n{}",
            child.said()
        );
    }
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{me}/limits")).unwrap(),
        limits_before
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        nice_before
    );
    // SAFETY: sched_getscheduler reads this process's policy.
    assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
}

#[test]
fn it_holds_no_capability_and_cannot_change_metadata() {
    let scene = Scene::new();
    let child = scene.probe("capabilities", "");
    if child.has(&[Layer::NoCapabilities]) {
        assert_works(&child);
        assert_eq!(
            child.outcome(),
            Some("ok effective=0 permitted=0 inheritable=0 bounding=0"),
            "{}",
            child.said()
        );
    }
    let child = scene.probe("metadata", "");
    if child.has(&[Layer::Seccomp]) {
        assert_works(&child);
        assert_eq!(
            child.outcome(),
            Some("ok chmod=1 chown=1 utimensat=1 setxattr=1"),
            "each refused with EPERM\n{}",
            child.said()
        );
    }
}

#[test]
fn shared_memory_and_privileged_calls_are_refused() {
    let child = Scene::new().probe("privileged", "");
    if child.has(&[Layer::Seccomp]) {
        assert_works(&child);
        let outcome = child.outcome().unwrap();
        for call in [
            "memfd_create",
            "shmget",
            "fanotify_init",
            "syslog",
            "reboot",
            "sethostname",
            "mount",
            "io_uring_setup",
            "ptrace",
            "unshare",
        ] {
            assert!(
                outcome.contains(&format!("{call}=1")),
                "{call} not refused with EPERM: {outcome}\n{}",
                child.said()
            );
        }
    }
}

#[test]
fn a_tokio_runtime_runs_and_talks_over_an_inherited_socket() {
    let child = Scene::new().probe("tokio", "");
    assert_works(&child);
    assert_eq!(child.outcome(), Some("ok ping pong"), "{}", child.said());
}

#[test]
fn dlopen_of_a_system_library_works() {
    let child = Scene::new().probe("dlopen", "libresolv.so.2");
    assert_works(&child);
}

#[test]
fn dlopen_of_the_library_it_was_given_works() {
    let Some(original) = loaded_library_path("libresolv.so.2") else {
        eprintln!("skipped: libresolv.so.2 is not on this system");
        return;
    };
    let scene = Scene::new();
    std::fs::copy(original, scene.library()).unwrap();
    let child = scene.probe("dlopen-library", "");
    assert_works(&child);
}

#[test]
fn the_open_files_limit_holds() {
    let child = Scene::new()
        .with(|jail| jail.open_files = Some(16))
        .probe("nofile", "");
    assert_works(&child);
    let opened: u64 = child
        .outcome()
        .and_then(|outcome| outcome.strip_prefix("ok opened "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{}", child.said()));
    assert!(opened < 16, "opened {opened} files under a limit of 16");
    assert!(
        child
            .outcome()
            .unwrap()
            .ends_with(&format!("errno={}", libc::EMFILE)),
        "{}",
        child.said()
    );
}

#[test]
fn the_memory_limit_holds() {
    let child = Scene::new()
        .with(|jail| jail.memory_limit = Some(512 * MIB))
        .probe("allocate", "");
    assert_eq!(child.killed_by(), Some(libc::SIGABRT), "{}", child.said());
    assert!(
        child.stderr.contains("memory allocation"),
        "{}",
        child.said()
    );
}

#[test]
fn the_cpu_limit_holds() {
    let child = Scene::new()
        .with(|jail| jail.cpu_seconds = Some(1))
        .probe("spin", "");
    assert_eq!(child.killed_by(), Some(libc::SIGXCPU), "{}", child.said());
}

/// A memory cgroup counts what `RLIMIT_AS` does not (here: pages touched
/// in a large mapping well under the address space limit), and its limit
/// ends the runner; a pids cgroup bounds its threads.
#[test]
fn cgroups_bound_memory_and_threads() {
    let limits = Limits {
        memory: Some(64 * MIB),
        pids: Some(12),
    };
    let (cgroup, unavailable) = Cgroup::create(&limits);
    let Some(cgroup) = cgroup else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no cgroup under CI: {unavailable:?}"
        );
        eprintln!("skipped: no cgroup here: {unavailable:?}");
        return;
    };
    let scene = Scene::new().with(|jail| {
        jail.cgroups = cgroup.joins();
        jail.cgroups_unavailable = unavailable.clone();
        jail.max_threads = Some(12);
    });
    let child = scene.probe("touch", "256");
    assert!(child.has(&[Layer::MemoryCgroup, Layer::PidsCgroup]));
    assert_eq!(child.killed_by(), Some(libc::SIGKILL), "{}", child.said());
    assert!(cgroup.oom_kills() >= 1, "{}", child.said());
    let child = scene.probe("threads", "");
    let started = threads_started(&child);
    assert!(started < 12, "{started} threads under a pids bound of 12");
    assert!(
        child.applied().iter().any(|a| a.starts_with("pids cgroup")),
        "{}",
        child.said()
    );
}

#[test]
fn without_the_sandbox_only_limits_apply() {
    let scene = Scene::new().with(|jail| jail.sandbox = false);
    let beside = scene.beside();
    let child = scene.probe("read", beside.to_str().unwrap());
    assert_works(&child);
    assert_eq!(
        child.applied(),
        [
            "memory limit (1024 MiB)",
            "open files limit (64)",
            "CPU time limit (30 s)"
        ],
        "{}",
        child.said()
    );
    assert!(child.layers().is_empty(), "{}", child.said());
}

#[test]
fn a_required_layer_that_is_missing_refuses_to_go_on() {
    // Without the sandbox, no layer is in force.
    let child = Scene::new()
        .with(|jail| {
            jail.sandbox = false;
            jail.require = vec![Layer::PidNamespace];
        })
        .probe("nothing", "");
    let error = child
        .line("CONFINE ERROR: ")
        .unwrap_or_else(|| panic!("{}", child.said()));
    assert!(error.contains("pid_namespace"), "{error}");
    assert!(child.outcome().is_none(), "{}", child.said());
}

/// An unprivileged host gets the same jail, in a user namespace.
#[test]
fn an_unprivileged_host_gets_the_jail_in_a_user_namespace() {
    if !root() {
        eprintln!("skipped: switching to an unprivileged user needs root");
        return;
    }
    let mut scene = Scene::new();
    scene.uid = Some(65534);
    for path in [scene.dir.path(), scene.library().as_path()] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(path, mode).unwrap();
    }
    let child = scene.probe("pids", "");
    assert!(
        child
            .applied()
            .iter()
            .any(|a| a.starts_with("user namespace")),
        "{}",
        child.said()
    );
    if child.has(&[
        Layer::PidNamespace,
        Layer::MountNamespace,
        Layer::NetworkNamespace,
        Layer::NoCapabilities,
        Layer::Seccomp,
    ]) {
        assert_eq!(child.outcome(), Some("ok pid 2 ppid 0"), "{}", child.said());
    }
}

#[test]
fn a_library_that_cannot_be_read_is_an_error() {
    let child = Scene::new().probe("bad-library", "");
    let error = child
        .line("CONFINE ERROR: ")
        .unwrap_or_else(|| panic!("{}", child.said()));
    assert!(error.contains("library"), "{error}");
    assert!(child.outcome().is_none(), "{}", child.said());
}

/// Where the dynamic loader finds `soname`: loads it into this process
/// and looks its file up in `/proc/self/maps`.
fn loaded_library_path(soname: &str) -> Option<PathBuf> {
    let name = std::ffi::CString::new(soname).unwrap();
    // SAFETY: a plain system library; the handle is leaked on purpose.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with(soname))
        .map(PathBuf::from)
}

/// The child's side: forks, so that the process that jails itself has one
/// thread (libtest runs this on a thread of its own); the fork enters the
/// jail, and the runner runs the probe. Passes at once when not run as a
/// child.
#[test]
fn probe_child() {
    let Ok(probe) = std::env::var(PROBE_VAR) else {
        return;
    };
    std::io::stdout().flush().unwrap();
    // SAFETY: the fork runs only the probe (glibc keeps malloc usable
    // after fork) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        jail_and_probe(&probe);
        let _ = std::io::stdout().flush();
        // SAFETY: leaves the fork without running the harness's exit path.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the fork just made.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        println!("ENDED: signal {}", libc::WTERMSIG(status));
    } else {
        println!("ENDED: exit {}", libc::WEXITSTATUS(status));
    }
}

type Pair = (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
);

/// Jails this (single-threaded) process and runs `probe` in the runner.
fn jail_and_probe(probe: &str) {
    let jail: Jail = serde_json::from_str(&std::env::var(JAIL_VAR).expect("jail")).unwrap();
    let target = std::env::var(TARGET_VAR).unwrap_or_default();
    let library = PathBuf::from(std::env::var_os(LIBRARY_VAR).expect("library"));
    // Made before the jail, as the worker inherits its socket.
    let inherited_pair = std::os::unix::net::UnixStream::pair().unwrap();
    let library_fd = if probe == "bad-library" {
        // A descriptor number nothing is open at.
        900
    } else {
        std::fs::File::open(&library).unwrap().into_raw_fd()
    };
    let inherited = Inherited {
        socket: inherited_pair.0.as_raw_fd(),
        library: library_fd,
        library_name: "plugin.so".to_owned(),
    };
    let entered = match enter(&jail, &inherited) {
        Ok(entered) => entered,
        Err(error) => {
            println!("CONFINE ERROR: {error}");
            return;
        }
    };
    let report = &entered.report;
    println!("APPLIED: {}", report.applied.join(" | "));
    println!("UNAVAILABLE: {}", report.unavailable.join(" | "));
    let layers: Vec<&str> = report.layers.iter().map(|l| l.as_str()).collect();
    println!("LAYERS: {}", layers.join(" | "));
    std::io::stdout().flush().unwrap();
    let outcome = match run(probe, &target, &entered.library, inherited_pair) {
        Ok(detail) => format!("ok {detail}"),
        Err(error) => format!(
            "refused errno={} {error}",
            error.raw_os_error().unwrap_or(-1)
        ),
    };
    println!("PROBE: {outcome}");
}

/// 1 when the last call failed with EPERM, else the errno (0: it worked).
fn eperm(result: libc::c_long) -> i32 {
    if result >= 0 {
        return 0;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => 1,
        Some(other) => other,
        None => -1,
    }
}

/// Runs one probe in the runner.
fn run(probe: &str, target: &str, library: &Path, inherited: Pair) -> std::io::Result<String> {
    match probe {
        "nothing" => Ok("nothing".to_owned()),
        "connect" => std::net::TcpStream::connect(target).map(|_| "connected".to_owned()),
        "unix-path" => {
            std::os::unix::net::UnixStream::connect(target).map(|_| "connected".to_owned())
        }
        "unix-abstract" => {
            use std::os::linux::net::SocketAddrExt as _;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(target)?;
            std::os::unix::net::UnixStream::connect_addr(&address).map(|_| "connected".to_owned())
        }
        "socketpair" => {
            let (mut a, mut b) = std::os::unix::net::UnixStream::pair()?;
            a.write_all(b"x")?;
            let mut byte = [0];
            b.read_exact(&mut byte)?;
            Ok("paired".to_owned())
        }
        "read" => std::fs::read(target).map(|bytes| format!("{} bytes", bytes.len())),
        "read-library" => std::fs::read(library).map(|bytes| format!("{} bytes", bytes.len())),
        "write" => {
            let path = Path::new(target).join(format!("connhost-probe-{}", std::process::id()));
            let written = std::fs::write(&path, b"escaped");
            let _ = std::fs::remove_file(&path);
            written.map(|()| "written".to_owned())
        }
        "fill-tmp" => {
            let chunk = vec![7u8; 256 * 1024];
            let mut file = std::fs::File::create("/tmp/fill")?;
            for _ in 0..64 {
                file.write_all(&chunk)?;
            }
            Ok("wrote 16 MiB".to_owned())
        }
        "exec" => Command::new(target)
            .args(["-c", "true"])
            .status()
            .map(|status| format!("ran: {status}")),
        "fork" => {
            // SAFETY: the child, if any, leaves at once.
            let pid = unsafe { libc::fork() };
            match pid {
                0 => unsafe { libc::_exit(0) },
                p if p < 0 => Err(std::io::Error::last_os_error()),
                _ => Ok("forked".to_owned()),
            }
        }
        "threads" => {
            let mut handles = Vec::new();
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
            let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
            let error = loop {
                if handles.len() >= 200 {
                    break None;
                }
                let stop = stop_rx.clone();
                match std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = stop.lock().map(|rx| rx.recv());
                    }) {
                    Ok(handle) => handles.push(handle),
                    Err(e) => break Some(e),
                }
            };
            let started = handles.len();
            drop(stop_tx);
            for handle in handles {
                let _ = handle.join();
            }
            Ok(format!("started {started} {error:?}"))
        }
        "pids" => Ok(format!(
            "pid {} ppid {}",
            std::process::id(),
            // SAFETY: getppid has no preconditions.
            unsafe { libc::getppid() }
        )),
        "host-limits" => {
            let host: libc::pid_t = target.parse().unwrap();
            let limit = libc::rlimit64 {
                rlim_cur: 8,
                rlim_max: 8,
            };
            // SAFETY: each takes plain arguments or pointers to locals.
            let (prlimit, nice, sched) = unsafe {
                let prlimit = libc::syscall(
                    libc::SYS_prlimit64,
                    host,
                    libc::RLIMIT_NOFILE,
                    &limit,
                    std::ptr::null_mut::<libc::rlimit64>(),
                );
                let prlimit = eperm(prlimit);
                let nice = eperm(libc::setpriority(libc::PRIO_PROCESS, host as u32, 19) as _);
                let param = libc::sched_param { sched_priority: 0 };
                let sched = eperm(libc::sched_setscheduler(host, libc::SCHED_IDLE, &param) as _);
                (prlimit, nice, sched)
            };
            Ok(format!(
                "prlimit={prlimit} setpriority={nice} sched_setscheduler={sched}"
            ))
        }
        "capabilities" => {
            let held = rustix_caps();
            // SAFETY: PR_CAPBSET_READ takes a number.
            let bounding = (0..64)
                .map(|cap| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) })
                .take_while(|&r| r >= 0)
                .filter(|&r| r == 1)
                .count();
            Ok(format!(
                "effective={} permitted={} inheritable={} bounding={bounding}",
                held.0, held.1, held.2
            ))
        }
        "metadata" => {
            std::fs::write("/tmp/victim", b"x")?;
            let path = std::ffi::CString::new("/tmp/victim").unwrap();
            let name = std::ffi::CString::new("user.x").unwrap();
            // SAFETY: each takes a C string and plain values.
            let (chmod, chown, times, xattr) = unsafe {
                (
                    eperm(libc::chmod(path.as_ptr(), 0o777) as _),
                    eperm(libc::chown(path.as_ptr(), 0, 0) as _),
                    eperm(libc::utimensat(libc::AT_FDCWD, path.as_ptr(), std::ptr::null(), 0) as _),
                    eperm(
                        libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0)
                            as _,
                    ),
                )
            };
            Ok(format!(
                "chmod={chmod} chown={chown} utimensat={times} setxattr={xattr}"
            ))
        }
        "privileged" => {
            let name = std::ffi::CString::new("x").unwrap();
            let mut params = [0u8; 120];
            // SAFETY: each call is refused or fails on its invalid
            // arguments; none has an effect that matters here.
            let results = unsafe {
                [
                    (
                        "memfd_create",
                        eperm(libc::syscall(libc::SYS_memfd_create, name.as_ptr(), 0)),
                    ),
                    (
                        "shmget",
                        eperm(libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) as _),
                    ),
                    (
                        "fanotify_init",
                        eperm(libc::syscall(libc::SYS_fanotify_init, 0, 0)),
                    ),
                    (
                        "syslog",
                        eperm(libc::syscall(
                            libc::SYS_syslog,
                            3,
                            std::ptr::null_mut::<u8>(),
                            0,
                        )),
                    ),
                    ("reboot", eperm(libc::syscall(libc::SYS_reboot, 0, 0, 0, 0))),
                    (
                        "sethostname",
                        eperm(libc::syscall(libc::SYS_sethostname, name.as_ptr(), 0)),
                    ),
                    (
                        "mount",
                        eperm(libc::syscall(
                            libc::SYS_mount,
                            name.as_ptr(),
                            name.as_ptr(),
                            name.as_ptr(),
                            0,
                            0,
                        )),
                    ),
                    (
                        "io_uring_setup",
                        eperm(libc::syscall(
                            libc::SYS_io_uring_setup,
                            1u32,
                            params.as_mut_ptr(),
                        )),
                    ),
                    (
                        "ptrace",
                        eperm(libc::syscall(
                            libc::SYS_ptrace,
                            libc::PTRACE_ATTACH,
                            1,
                            0,
                            0,
                        )),
                    ),
                    (
                        "unshare",
                        eperm(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
                    ),
                ]
            };
            Ok(results
                .iter()
                .map(|(call, r)| format!("{call}={r}"))
                .collect::<Vec<_>>()
                .join(" "))
        }
        "tokio" => tokio_ping(inherited),
        "dlopen" => dlopen(target),
        "dlopen-library" => dlopen(library.to_str().unwrap()),
        "nofile" => open_until_refused(),
        "allocate" => {
            let huge: Vec<u8> = Vec::with_capacity(std::hint::black_box(1024 * MIB as usize));
            Ok(format!(
                "allocated {}",
                std::hint::black_box(huge).capacity()
            ))
        }
        "touch" => {
            let mib: usize = target.parse().unwrap();
            let mut pages: Vec<u8> = vec![0; mib * MIB as usize];
            for i in (0..pages.len()).step_by(4096) {
                pages[i] = 1;
            }
            Ok(format!("touched {}", std::hint::black_box(pages).len()))
        }
        "spin" => loop {
            std::hint::spin_loop();
        },
        other => panic!("unknown probe {other}"),
    }
}

/// (effective, permitted, inheritable) capability bits.
fn rustix_caps() -> (u64, u64, u64) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x20080522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a version 3 header and two data structs.
    unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    let join = |f: fn(&Data) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    (
        join(|d| d.effective),
        join(|d| d.permitted),
        join(|d| d.inheritable),
    )
}

/// A multi-thread tokio runtime: a task sends "ping" over the socket made
/// before the jail, another answers "pong".
fn tokio_ping((left, right): Pair) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        left.set_nonblocking(true)?;
        right.set_nonblocking(true)?;
        let mut left = tokio::net::UnixStream::from_std(left)?;
        let mut right = tokio::net::UnixStream::from_std(right)?;
        let answer = tokio::spawn(async move {
            let mut asked = [0; 4];
            right.read_exact(&mut asked).await?;
            right.write_all(b"pong").await?;
            std::io::Result::Ok(asked)
        });
        left.write_all(b"ping").await?;
        let mut answered = [0; 4];
        left.read_exact(&mut answered).await?;
        let asked = answer.await.map_err(std::io::Error::other)??;
        Ok(format!(
            "{} {}",
            String::from_utf8_lossy(&asked),
            String::from_utf8_lossy(&answered)
        ))
    })
}

/// `dlopen`s `library` (a name or a path).
fn dlopen(library: &str) -> std::io::Result<String> {
    let name = std::ffi::CString::new(library).unwrap();
    // SAFETY: a system library (or a copy of one); leaked on purpose.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a C string after a failed dlopen.
        let why = unsafe { std::ffi::CStr::from_ptr(libc::dlerror()) };
        return Err(std::io::Error::other(why.to_string_lossy().into_owned()));
    }
    Ok(format!("loaded {library}"))
}

/// Makes socket pairs until refused; says how many descriptors it got.
fn open_until_refused() -> std::io::Result<String> {
    let mut kept = Vec::new();
    loop {
        match std::os::unix::net::UnixStream::pair() {
            Ok(pair) => kept.push(pair),
            Err(error) => {
                return Ok(format!(
                    "opened {} errno={}",
                    kept.len() * 2,
                    error.raw_os_error().unwrap_or(-1)
                ))
            }
        }
    }
}
