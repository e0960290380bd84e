//! Confining a worker process before it loads its plugin (Linux): resource
//! limits, no new privileges, no network of its own, a read-only view of
//! the library and the system's libraries, and a syscall filter. Runs on
//! the worker's only thread, before any other thread exists, so that
//! every thread the plugin ever starts inherits it.
//!
//! The order matters: resource limits first (they hold everywhere), then
//! no new privileges (seccomp requires it), then the network namespace
//! (seccomp refuses `unshare` afterwards), then Landlock, then seccomp.
//! What is left working on purpose: reading and writing descriptors the
//! worker already holds (its socket), `AF_UNIX` sockets, threads, `epoll`,
//! `eventfd`, `mmap` (so a tokio runtime starts and `dlopen` maps the
//! library with its code executable), and reading the library and the
//! system's library paths (so the dynamic loader finds its dependencies).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to confine a worker to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Confinement {
    /// The library the worker loads (its private copy): readable.
    pub(crate) library: PathBuf,
    /// Apply the sandbox (namespaces, Landlock, seccomp, no new privileges).
    pub(crate) sandbox: bool,
    /// `RLIMIT_AS` in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub(crate) open_files: Option<u64>,
    /// `RLIMIT_CPU` in seconds.
    pub(crate) cpu_seconds: Option<u64>,
}

/// What confining did: each measure applied, and each one this system
/// could not apply (with why), for the host's log and the plugin's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SandboxReport {
    /// Measures in force, e.g. `"landlock (ABI 7)"`.
    pub(crate) applied: Vec<String>,
    /// Measures not in force, each with its reason.
    pub(crate) unavailable: Vec<String>,
}

/// Confines the calling process. An error means a measure that must hold
/// could not be applied: the worker must not load its plugin.
///
/// Call it on the process's only thread: no new privileges, the network
/// namespace, Landlock and seccomp hold for the calling thread and every
/// thread it starts afterwards, not for threads that already exist.
pub(crate) fn confine(confinement: &Confinement) -> Result<SandboxReport, String> {
    let mut report = SandboxReport::default();
    rlimits::apply(confinement, &mut report)?;
    if confinement.sandbox {
        apply_sandbox(confinement, &mut report)?;
    }
    Ok(report)
}

/// The sandbox proper, on Linux.
#[cfg(target_os = "linux")]
fn apply_sandbox(confinement: &Confinement, report: &mut SandboxReport) -> Result<(), String> {
    linux::no_new_privileges(report)?;
    linux::network_namespace(report);
    linux::landlock(&confinement.library, report)?;
    linux::seccomp(report)
}

/// Elsewhere there is no sandbox: the report says so.
#[cfg(not(target_os = "linux"))]
fn apply_sandbox(confinement: &Confinement, report: &mut SandboxReport) -> Result<(), String> {
    let _ = confinement;
    report.unavailable.push(format!(
        "sandbox: not available on {}",
        std::env::consts::OS
    ));
    Ok(())
}

/// Resource limits: address space, open files, CPU time.
#[cfg(unix)]
mod rlimits {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

    use super::{Confinement, SandboxReport};

    /// Sets each limit the confinement names; leaves the others as they are.
    pub(super) fn apply(
        confinement: &Confinement,
        report: &mut SandboxReport,
    ) -> Result<(), String> {
        if let Some(bytes) = confinement.memory_limit {
            set("address space (RLIMIT_AS)", Resource::As, bytes, bytes)?;
            report
                .applied
                .push(format!("memory limit ({} MiB)", bytes / (1024 * 1024)));
        }
        if let Some(files) = confinement.open_files {
            set("open files (RLIMIT_NOFILE)", Resource::Nofile, files, files)?;
            report.applied.push(format!("open files limit ({files})"));
        }
        if let Some(seconds) = confinement.cpu_seconds {
            // At the soft limit the kernel sends SIGXCPU (which says what
            // happened); one second later, SIGKILL (which cannot be caught).
            set(
                "CPU time (RLIMIT_CPU)",
                Resource::Cpu,
                seconds,
                seconds.saturating_add(1),
            )?;
            report.applied.push(format!("CPU time limit ({seconds} s)"));
        }
        Ok(())
    }

    /// Sets one limit: the soft limit to `soft` and the hard limit to
    /// `hard`, each no higher than the hard limit already in force (a
    /// process without privileges may only lower it).
    fn set(what: &str, resource: Resource, soft: u64, hard: u64) -> Result<(), String> {
        let ceiling = getrlimit(resource).maximum;
        let bound = |value: u64| Some(ceiling.map_or(value, |ceiling| value.min(ceiling)));
        setrlimit(
            resource,
            Rlimit {
                current: bound(soft),
                maximum: bound(hard),
            },
        )
        .map_err(|error| format!("could not limit {what} to {soft}: {error}"))
    }
}

/// No resource limits without Unix.
#[cfg(not(unix))]
mod rlimits {
    use super::{Confinement, SandboxReport};

    /// Reports the limits asked for as unavailable.
    pub(super) fn apply(
        confinement: &Confinement,
        report: &mut SandboxReport,
    ) -> Result<(), String> {
        let asked = confinement.memory_limit.is_some()
            || confinement.open_files.is_some()
            || confinement.cpu_seconds.is_some();
        if asked {
            report.unavailable.push(format!(
                "resource limits: not available on {}",
                std::env::consts::OS
            ));
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeMap;
    use std::io;
    use std::path::Path;

    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, PathFd,
        Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    use rustix::thread::UnshareFlags;
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::SandboxReport;

    /// The newest Landlock ABI asked for; the crate falls back, best
    /// effort, to what the running kernel has. Everything it can handle is
    /// denied except reading the paths below, so a newer ABI only denies
    /// more of what the worker never needs.
    const LANDLOCK_ABI: ABI = ABI::V10;

    /// What the dynamic loader reads to find a library's dependencies.
    const SYSTEM_LIBRARY_PATHS: &[&str] = &[
        "/lib",
        "/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
    ];

    /// `PR_SET_NO_NEW_PRIVS`: no exec can gain privileges again (and
    /// seccomp may be installed without `CAP_SYS_ADMIN`).
    pub(super) fn no_new_privileges(report: &mut SandboxReport) -> Result<(), String> {
        match rustix::thread::set_no_new_privs(true) {
            Ok(()) => report.applied.push("no new privileges".to_owned()),
            Err(rustix::io::Errno::INVAL) => report
                .unavailable
                .push("no new privileges: the kernel does not know PR_SET_NO_NEW_PRIVS".to_owned()),
            Err(error) => return Err(format!("could not set no new privileges: {error}")),
        }
        Ok(())
    }

    /// A new, empty network namespace (only a loopback interface, down):
    /// the worker has no network. Without the privilege for it, tries
    /// inside a new user namespace; when both are refused, reports it and
    /// leaves the network to the seccomp filter.
    pub(super) fn network_namespace(report: &mut SandboxReport) {
        // SAFETY: neither set of flags unshares the file descriptor table,
        // which is what makes `unshare` unsafe.
        let alone = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) };
        let Err(alone) = alone else {
            report.applied.push("network namespace".to_owned());
            return;
        };
        // SAFETY: as above.
        let with_user =
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNET) };
        match with_user {
            Ok(()) => report
                .applied
                .push("network namespace (in a new user namespace)".to_owned()),
            Err(with_user) => report.unavailable.push(format!(
                "network namespace: refused ({alone}), and in a new user namespace too \
                 ({with_user}); network sockets are left to the seccomp filter and Landlock"
            )),
        }
    }

    /// Landlock: read-only access beneath the library and the system's
    /// library paths; no write, no execute, no TCP bind or connect, no
    /// abstract Unix sockets or signals outside the sandbox, with the best
    /// ABI the kernel has.
    pub(super) fn landlock(library: &Path, report: &mut SandboxReport) -> Result<(), String> {
        let failed = |error: landlock::RulesetError| format!("could not apply landlock: {error}");
        let library_rule = PathFd::new(library)
            .map(|fd| PathBeneath::new(fd, AccessFs::ReadFile))
            .map_err(|error| {
                format!(
                    "could not open the library {} for landlock: {error}",
                    library.display()
                )
            })?;
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(LANDLOCK_ABI))
            .and_then(|ruleset| ruleset.handle_access(AccessNet::from_all(LANDLOCK_ABI)))
            .and_then(|ruleset| ruleset.scope(Scope::from_all(LANDLOCK_ABI)))
            .and_then(|ruleset| ruleset.create())
            .and_then(|ruleset| ruleset.add_rule(library_rule))
            .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(SYSTEM_LIBRARY_PATHS, read)))
            .and_then(|ruleset| ruleset.restrict_self())
            .map_err(failed)?;
        match (status.landlock, status.ruleset) {
            (LandlockStatus::NotImplemented, _) => report
                .unavailable
                .push("landlock: not built into this kernel".to_owned()),
            (LandlockStatus::NotEnabled, _) => report
                .unavailable
                .push("landlock: built into this kernel but not enabled at boot".to_owned()),
            (LandlockStatus::Available { .. }, RulesetStatus::NotEnforced) => {
                return Err("could not apply landlock: the kernel enforced none of it".to_owned())
            }
            (
                LandlockStatus::Available {
                    effective_abi,
                    kernel_abi,
                },
                _,
            ) => {
                let used = effective_abi as i32;
                report.applied.push(match kernel_abi {
                    Some(kernel) => format!("landlock (ABI {used}; the kernel has {kernel})"),
                    None => format!("landlock (ABI {used})"),
                });
            }
        }
        Ok(())
    }

    /// A seccomp filter, on top of the rest: refuses (`EPERM`) sockets
    /// other than `AF_UNIX`, running programs, tracing or reading other
    /// processes, mounts, namespaces, BPF, perf, kernel modules,
    /// keyrings and io_uring. Everything else is allowed.
    pub(super) fn seccomp(report: &mut SandboxReport) -> Result<(), String> {
        let Ok(arch) = TargetArch::try_from(std::env::consts::ARCH) else {
            report.unavailable.push(format!(
                "seccomp filter: not available on {}",
                std::env::consts::ARCH
            ));
            return Ok(());
        };
        // SAFETY: PR_GET_SECCOMP takes no pointers.
        if unsafe { libc::prctl(libc::PR_GET_SECCOMP) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
        {
            report
                .unavailable
                .push("seccomp filter: the kernel has no seccomp".to_owned());
            return Ok(());
        }
        let program =
            filter(arch).map_err(|error| format!("could not build the seccomp filter: {error}"))?;
        seccompiler::apply_filter(&program)
            .map_err(|error| format!("could not apply the seccomp filter: {error}"))?;
        report.applied.push("seccomp filter".to_owned());
        Ok(())
    }

    /// The syscalls refused whatever their arguments.
    const REFUSED: &[libc::c_long] = &[
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        // io_uring can open and connect sockets without the `socket` and
        // `connect` syscalls this filter sees.
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];

    /// Builds the filter: allow by default, `EPERM` on a match.
    // `c_long` is `i64` only on 64-bit targets.
    #[allow(clippy::useless_conversion)]
    fn filter(arch: TargetArch) -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED
            .iter()
            .map(|&syscall| (i64::from(syscall), Vec::new()))
            .collect();
        for syscall in [libc::SYS_socket, libc::SYS_socketpair] {
            // The first argument is the address family.
            let not_unix = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?;
            rules.insert(i64::from(syscall), vec![SeccompRule::new(vec![not_unix])?]);
        }
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )?;
        BpfProgram::try_from(filter)
    }
}

/// Each test confines a real process: this test binary, run again with
/// `CONNHOST_SANDBOX_PROBE` set so that only `tests::probe_child` runs,
/// forks a single-threaded process that confines itself, tries one thing
/// and prints the outcome on a `PROBE: ` line; the parent asserts on that
/// line and on how the fork ended.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    use super::{confine, Confinement};

    /// Names the probe a child runs.
    const PROBE_VAR: &str = "CONNHOST_SANDBOX_PROBE";
    /// The library the child is confined to.
    const LIBRARY_VAR: &str = "CONNHOST_SANDBOX_LIBRARY";
    /// The probe's argument (an address, a path).
    const TARGET_VAR: &str = "CONNHOST_SANDBOX_TARGET";
    /// How long a child may run before it is killed.
    const DEADLINE: Duration = Duration::from_secs(20);
    /// A memory limit a worker could well run with.
    const GIB: u64 = 1024 * 1024 * 1024;

    /// How a child ended and what it said.
    struct Child {
        status: ExitStatus,
        stdout: String,
        stderr: String,
    }

    impl Child {
        /// The text after `PROBE <probe>: `, if the child printed it.
        fn outcome(&self) -> Option<&str> {
            self.line("PROBE: ")
        }

        /// The measures the child's confinement applied.
        fn applied(&self) -> Vec<&str> {
            self.list("APPLIED: ")
        }

        /// The measures the child's confinement reported unavailable.
        fn unavailable(&self) -> Vec<&str> {
            self.list("UNAVAILABLE: ")
        }

        /// The rest of the line after `tag` (libtest may print before it
        /// on the same line).
        fn line(&self, tag: &str) -> Option<&str> {
            self.stdout
                .lines()
                .find_map(|line| line.split_once(tag).map(|(_, rest)| rest))
        }

        /// A ` | `-separated list after `tag`.
        fn list(&self, tag: &str) -> Vec<&str> {
            self.line(tag)
                .map(|list| list.split(" | ").filter(|item| !item.is_empty()).collect())
                .unwrap_or_default()
        }

        /// Whether one of `measures` (label prefixes) was applied. When
        /// none was, each must be reported unavailable (with why, which is
        /// printed: the test is skipped); a measure neither applied nor
        /// reported unavailable fails the test.
        fn has_any(&self, measures: &[&str]) -> bool {
            let named = |list: Vec<&str>, measure: &str| {
                list.iter().any(|label| label.starts_with(measure))
            };
            if measures.iter().any(|m| named(self.applied(), m)) {
                return true;
            }
            for measure in measures {
                assert!(
                    named(self.unavailable(), measure),
                    "{measure} neither applied nor reported unavailable\n{}",
                    self.said()
                );
            }
            eprintln!(
                "skipped: none of {measures:?} is available here: {:?}",
                self.unavailable()
            );
            false
        }

        /// The errno of the first of `layers` (measure, the errno it
        /// refuses with) that was applied, or `None` (the test is skipped)
        /// when none was.
        fn first_layer(&self, layers: &[(&str, i32)]) -> Option<i32> {
            let measures: Vec<&str> = layers.iter().map(|(measure, _)| *measure).collect();
            if !self.has_any(&measures) {
                return None;
            }
            let applied = self.applied();
            layers
                .iter()
                .find(|(measure, _)| applied.iter().any(|label| label.starts_with(measure)))
                .map(|(_, errno)| *errno)
        }

        /// Whether the child and its confined fork both exited with 0.
        fn exited_cleanly(&self) -> bool {
            self.status.success() && self.line("ENDED: ") == Some("exit 0")
        }

        /// The signal that ended the confined fork, if one did.
        fn killed_by(&self) -> Option<i32> {
            self.line("ENDED: signal ")
                .and_then(|signal| signal.trim().parse().ok())
        }

        /// Everything the child said, for assertion messages.
        fn said(&self) -> String {
            format!(
                "status {:?}\nstdout:\n{}\nstderr:\n{}",
                self.status, self.stdout, self.stderr
            )
        }
    }

    /// The test name libtest knows `probe_child` by.
    fn probe_test_name() -> String {
        let module = module_path!();
        let (_crate, path) = module.split_once("::").expect("module path has a crate");
        format!("{path}::probe_child")
    }

    /// Runs this test binary as a child that confines itself (to
    /// `library`) and runs `probe` with `target`; kills it after the
    /// deadline.
    fn run_probe(probe: &str, library: &Path, target: &str) -> Child {
        run_probe_as(None, probe, library, target)
    }

    /// [`run_probe`], as the user `uid` (and its group) when given.
    fn run_probe_as(uid: Option<u32>, probe: &str, library: &Path, target: &str) -> Child {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        // A group of its own, so that the deadline kills the fork too.
        command.process_group(0);
        let mut child = command
            .args([
                "--exact",
                &probe_test_name(),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_VAR, probe)
            .env(LIBRARY_VAR, library)
            .env(TARGET_VAR, target)
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

    /// A folder holding a stand-in library file (and, beside it, a file the
    /// sandbox must not let the child read).
    struct Scene {
        dir: tempfile::TempDir,
    }

    impl Scene {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("plugin.so"), b"library bytes").unwrap();
            std::fs::write(dir.path().join("secret.txt"), b"not for plugins").unwrap();
            Self { dir }
        }

        fn library(&self) -> PathBuf {
            self.dir.path().join("plugin.so")
        }

        fn beside(&self) -> PathBuf {
            self.dir.path().join("secret.txt")
        }

        fn probe(&self, probe: &str, target: &str) -> Child {
            run_probe(probe, &self.library(), target)
        }
    }

    /// Asserts the child confined itself, ran its probe and found it
    /// refused with one of `errnos`.
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

    /// Asserts the child confined itself and its probe worked.
    fn assert_works(child: &Child) {
        assert!(child.exited_cleanly(), "{}", child.said());
        let outcome = child
            .outcome()
            .unwrap_or_else(|| panic!("{}", child.said()));
        assert!(outcome.starts_with("ok"), "{}", child.said());
    }

    #[test]
    fn tcp_to_a_loopback_listener_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let child = Scene::new().probe("connect", &address);
        // The first layer in the way answers: seccomp refuses the socket
        // (EPERM), Landlock the connect (EACCES), an empty namespace has
        // no route (ENETUNREACH).
        if let Some(errno) = child.first_layer(&[
            ("seccomp filter", libc::EPERM),
            ("landlock", libc::EACCES),
            ("network namespace", libc::ENETUNREACH),
        ]) {
            assert_refused(&child, &[errno]);
        }
    }

    #[test]
    fn the_network_namespace_is_a_new_one() {
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let child = Scene::new().probe("netns", "");
        if child.has_any(&["network namespace"]) {
            assert_works(&child);
            let theirs = child.outcome().unwrap().trim_start_matches("ok ");
            assert_ne!(theirs, ours.to_string_lossy(), "{}", child.said());
        }
    }

    #[test]
    fn a_unix_socket_pair_still_works() {
        assert_works(&Scene::new().probe("socketpair", ""));
    }

    #[test]
    fn reading_outside_the_allowed_paths_is_refused() {
        let scene = Scene::new();
        let beside = scene.beside();
        for target in [beside.to_str().unwrap(), "/etc/hostname"] {
            let child = scene.probe("read", target);
            if child.has_any(&["landlock"]) {
                assert_refused(&child, &[libc::EACCES]);
            }
        }
    }

    #[test]
    fn reading_the_library_is_allowed() {
        let scene = Scene::new();
        let child = scene.probe("read", scene.library().to_str().unwrap());
        assert_works(&child);
        assert_eq!(child.outcome(), Some("ok 13 bytes"), "{}", child.said());
    }

    #[test]
    fn writing_a_file_in_tmp_is_refused() {
        let child = Scene::new().probe("write", "/tmp");
        if child.has_any(&["landlock"]) {
            assert_refused(&child, &[libc::EACCES]);
        }
    }

    #[test]
    fn running_a_shell_is_refused() {
        let child = Scene::new().probe("exec", "/bin/sh");
        // seccomp refuses execve (EPERM); Landlock grants no execute right
        // (EACCES).
        if let Some(errno) =
            child.first_layer(&[("seccomp filter", libc::EPERM), ("landlock", libc::EACCES)])
        {
            assert_refused(&child, &[errno]);
        }
    }

    #[test]
    fn io_uring_is_refused() {
        let child = Scene::new().probe("io_uring", "");
        if child.has_any(&["seccomp filter"]) {
            assert_refused(&child, &[libc::EPERM]);
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
    fn dlopen_of_the_library_copy_works() {
        let Some(original) = loaded_library_path("libresolv.so.2") else {
            eprintln!("skipped: libresolv.so.2 is not on this system");
            return;
        };
        let scene = Scene::new();
        std::fs::copy(original, scene.library()).unwrap();
        let child = scene.probe("dlopen", scene.library().to_str().unwrap());
        assert_works(&child);
    }

    #[test]
    fn the_open_files_limit_holds() {
        let child = Scene::new().probe("nofile", "");
        assert_works(&child);
        let opened: u64 = child
            .outcome()
            .and_then(|outcome| outcome.strip_prefix("ok opened "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("{}", child.said()));
        assert!(
            opened < NOFILE_LIMIT,
            "opened {opened} files under a limit of {NOFILE_LIMIT}"
        );
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
        let child = Scene::new().probe("allocate", "");
        assert_eq!(child.killed_by(), Some(libc::SIGABRT), "{}", child.said());
        assert!(
            child.stderr.contains("memory allocation"),
            "{}",
            child.said()
        );
        assert!(child.outcome().is_none(), "{}", child.said());
    }

    #[test]
    fn the_cpu_limit_holds() {
        let child = Scene::new().probe("spin", "");
        assert_eq!(child.killed_by(), Some(libc::SIGXCPU), "{}", child.said());
    }

    #[test]
    fn without_the_sandbox_only_limits_apply() {
        let scene = Scene::new();
        let beside = scene.beside();
        let child = scene.probe("read-unsandboxed", beside.to_str().unwrap());
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
    }

    /// The user `nobody` runs as on most systems.
    const NOBODY: u32 = 65534;

    /// Without the privilege for a network namespace of its own, the
    /// child tries one in a new user namespace, or says why it has none;
    /// either way a TCP connect is still refused.
    #[test]
    fn an_unprivileged_child_is_confined_too() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: switching to an unprivileged user needs root");
            return;
        }
        let scene = Scene::new();
        for path in [scene.dir.path(), scene.library().as_path()] {
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(path, mode).unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let child = run_probe_as(Some(NOBODY), "connect", &scene.library(), &address);
        assert!(
            !child.applied().contains(&"network namespace"),
            "an unprivileged process got a network namespace without a user namespace\n{}",
            child.said()
        );
        let in_user_namespace = child
            .applied()
            .contains(&"network namespace (in a new user namespace)");
        let why_not = child.unavailable().join(" | ");
        assert!(
            in_user_namespace
                || why_not.contains("network namespace: refused") && why_not.contains("seccomp"),
            "{}",
            child.said()
        );
        if let Some(errno) =
            child.first_layer(&[("seccomp filter", libc::EPERM), ("landlock", libc::EACCES)])
        {
            assert_refused(&child, &[errno]);
        }
        eprintln!("unprivileged child: {:?}", child.line("APPLIED: "));
    }

    #[test]
    fn a_library_that_cannot_be_opened_is_an_error() {
        let scene = Scene::new();
        let missing = scene.dir.path().join("gone.so");
        let child = run_probe("read", &missing, "/dev/null");
        assert!(child.exited_cleanly(), "{}", child.said());
        let error = child
            .line("CONFINE ERROR: ")
            .unwrap_or_else(|| panic!("{}", child.said()));
        assert!(error.contains("gone.so"), "{error}");
        assert!(child.outcome().is_none(), "{}", child.said());
    }

    /// The open files limit the `nofile` probe runs under.
    const NOFILE_LIMIT: u64 = 16;

    /// Where the dynamic loader finds `soname`: loads it into this (the
    /// parent) process and looks its file up in `/proc/self/maps`.
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

    /// The confinement a probe runs under.
    fn confinement_for(probe: &str, library: PathBuf) -> Confinement {
        let mut confinement = Confinement {
            library,
            sandbox: probe != "read-unsandboxed",
            memory_limit: Some(GIB),
            open_files: Some(64),
            cpu_seconds: Some(30),
        };
        match probe {
            "nofile" => confinement.open_files = Some(NOFILE_LIMIT),
            "allocate" => confinement.memory_limit = Some(GIB / 2),
            "spin" => confinement.cpu_seconds = Some(1),
            _ => {}
        }
        confinement
    }

    /// The child's side: forks, so that the process it confines has one
    /// thread, as the worker has (libtest runs this on a thread of its
    /// own); the fork confines itself, runs the probe and prints
    /// `APPLIED: ...`, `UNAVAILABLE: ...` and `PROBE: ok ...` or `PROBE:
    /// refused errno=N ...`; this process prints how it ended (`ENDED:
    /// exit N` or `ENDED: signal N`). Passes at once when not run as a
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
            confine_and_probe(&probe);
            let _ = std::io::stdout().flush();
            // SAFETY: leaves the fork without running the test harness's
            // exit path.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the fork just made; `status` is a valid int.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
        if libc::WIFSIGNALED(status) {
            println!("ENDED: signal {}", libc::WTERMSIG(status));
        } else {
            println!("ENDED: exit {}", libc::WEXITSTATUS(status));
        }
    }

    /// Confines this (single-threaded) process and runs `probe`.
    fn confine_and_probe(probe: &str) {
        let library = PathBuf::from(std::env::var_os(LIBRARY_VAR).expect("library"));
        let target = std::env::var(TARGET_VAR).unwrap_or_default();
        // Made before confining, as the worker inherits its socket.
        let inherited = std::os::unix::net::UnixStream::pair().unwrap();
        let report = match confine(&confinement_for(probe, library)) {
            Ok(report) => report,
            Err(error) => {
                println!("CONFINE ERROR: {error}");
                return;
            }
        };
        println!("APPLIED: {}", report.applied.join(" | "));
        println!("UNAVAILABLE: {}", report.unavailable.join(" | "));
        std::io::stdout().flush().unwrap();
        let outcome = match run(probe, &target, inherited) {
            Ok(detail) => format!("ok {detail}"),
            Err(error) => format!(
                "refused errno={} {error}",
                error.raw_os_error().unwrap_or(-1)
            ),
        };
        println!("PROBE: {outcome}");
    }

    type Pair = (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    );

    /// Runs one probe in the confined child.
    fn run(probe: &str, target: &str, inherited: Pair) -> std::io::Result<String> {
        match probe {
            "connect" => std::net::TcpStream::connect(target).map(|_| "connected".to_owned()),
            // The thread's own: `unshare` moves the calling thread.
            "netns" => std::fs::read_link("/proc/thread-self/ns/net")
                .map(|link| link.to_string_lossy().into_owned()),
            "socketpair" => {
                let (mut a, mut b) = std::os::unix::net::UnixStream::pair()?;
                a.write_all(b"x")?;
                let mut byte = [0];
                b.read_exact(&mut byte)?;
                Ok("paired".to_owned())
            }
            "read" | "read-unsandboxed" => {
                std::fs::read(target).map(|bytes| format!("{} bytes", bytes.len()))
            }
            "write" => {
                let path = Path::new(target).join(format!("connhost-probe-{}", std::process::id()));
                let written = std::fs::write(&path, b"escaped");
                let _ = std::fs::remove_file(&path);
                written.map(|()| "written".to_owned())
            }
            "exec" => Command::new(target)
                .args(["-c", "true"])
                .status()
                .map(|status| format!("ran: {status}")),
            "tokio" => tokio_ping(inherited),
            "io_uring" => io_uring_setup(),
            "dlopen" => dlopen(target),
            "nofile" => open_until_refused(),
            "allocate" => {
                let huge: Vec<u8> = Vec::with_capacity(std::hint::black_box(GIB as usize));
                Ok(format!(
                    "allocated {}",
                    std::hint::black_box(huge).capacity()
                ))
            }
            "spin" => loop {
                std::hint::spin_loop();
            },
            other => panic!("unknown probe {other}"),
        }
    }

    /// A multi-thread tokio runtime: a task on it sends "ping" over the
    /// socket made before confining, another answers "pong".
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

    /// `dlopen`s `library` (a name or a path) and resolves a symbol in it.
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

    /// Sets up an io_uring instance (and closes it).
    fn io_uring_setup() -> std::io::Result<String> {
        // struct io_uring_params: 120 bytes, zeroed, which the kernel fills.
        let mut params = [0u8; 120];
        // SAFETY: the kernel writes at most the 120 bytes of `params`.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is the descriptor io_uring_setup just returned.
        unsafe { libc::close(fd as libc::c_int) };
        Ok("set up".to_owned())
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
}
