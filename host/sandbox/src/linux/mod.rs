//! The jail on Linux: the order of the layers, and the keeper, init and
//! runner processes.
//!
//! The order matters. The keeper (the process the host started, on its
//! only thread) starts a session of its own, joins its cgroups, unshares
//! its namespaces, builds the runner's root and pivots into it (all of
//! which need privileges), then forks the PID namespace's init and the
//! runner. The runner drops its identity and capabilities, sets no new
//! privileges (seccomp requires it), its resource limits, Landlock, and
//! last the seccomp filter (which refuses what the steps before it need).
//!
//! Why three processes: the runner is not the namespace's PID 1, because
//! the kernel drops signals a PID 1 sends itself with their default action
//! (a plugin's `abort` would turn into a segfault, and `RLIMIT_CPU`'s
//! SIGXCPU into nothing); and the keeper stays outside, so the host waits
//! for a process of its own namespace and sees the runner's status.
//! Facts this relies on: a change of user clears `PR_SET_PDEATHSIG` (each
//! process asks again after dropping to another user); a descriptor opened
//! before the mount namespace was unshared cannot be bind-mounted in it
//! (the library is copied into the root instead).

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};

use crate::{fd_path, missing_message, Entered, Inherited, Jail, Layer, SandboxReport};

mod identity;
mod landlock;
mod mounts;
mod namespaces;
mod rlimits;

/// Confines the calling process; see [`crate::enter`].
pub(crate) fn enter(jail: &Jail, inherited: &Inherited) -> Result<Entered, String> {
    let mut report = SandboxReport::default();
    if !jail.sandbox {
        rlimits::apply(jail, &mut report)?;
        report.miss("sandbox: turned off by the operator ([worker] sandbox = false)");
        return finish(jail, report, fd_path(inherited.library));
    }
    // SAFETY: getppid has no preconditions.
    let starter = Parent::Starter(unsafe { libc::getppid() });
    // Out of the host's session and process group: a signal to "my group"
    // reaches no one but the jail.
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    join_cgroups(jail, &mut report);
    let spaces = namespaces::unshare(&mut report);
    // Still dying with the host, whatever a new user namespace did to it.
    starter.die_with();
    let library = if spaces.mount {
        mounts::build_root(jail, inherited)
            .map_err(|e| format!("could not build the worker's root: {e}"))?;
        report.apply(
            Some(Layer::MountNamespace),
            "mount namespace (a read-only root of the system's libraries, the plugin and a private /tmp)",
        );
        // The root holds a copy: the host's file is of no more use.
        // SAFETY: closes the inherited descriptor, which nothing else owns.
        unsafe { libc::close(inherited.library) };
        mounts::library_path(&inherited.library_name)
    } else {
        fd_path(inherited.library)
    };
    rlimits::no_core_dumps();
    // The parent to die with: the keeper (with a PID namespace), or
    // whoever started this process.
    let parent = if spaces.pid {
        let alive = keep(inherited)?;
        report.apply(
            Some(Layer::PidNamespace),
            "pid namespace (its init's death kills every process in it)",
        );
        Parent::Keeper(alive)
    } else {
        starter
    };
    identity::drop_privileges(jail, spaces.user, &mut report)?;
    // A change of user clears the parent-death signal: ask again.
    parent.die_with();
    rlimits::apply(jail, &mut report)?;
    landlock::restrict(spaces.mount, inherited, &mut report)?;
    crate::seccomp::install(&mut report)?;
    finish(jail, report, library)
}

/// Fails when a required layer is missing.
fn finish(
    jail: &Jail,
    report: SandboxReport,
    library: std::path::PathBuf,
) -> Result<Entered, String> {
    let missing = report.missing(&jail.require);
    if !missing.is_empty() {
        return Err(missing_message(&missing, &report));
    }
    Ok(Entered { report, library })
}

/// Writes this process into each cgroup the host made for it.
fn join_cgroups(jail: &Jail, report: &mut SandboxReport) {
    let pid = std::process::id().to_string();
    for join in &jail.cgroups {
        match std::fs::write(&join.procs, &pid) {
            Ok(()) => {
                for layer in &join.layers {
                    if !report.layers.contains(layer) {
                        report.layers.push(*layer);
                    }
                }
                report.applied.push(join.label.clone());
            }
            Err(e) => report.miss(format!(
                "{}: could not join {} ({e})",
                join.label,
                join.procs.display()
            )),
        }
    }
    for (_, reason) in &jail.cgroups_unavailable {
        report.miss(reason.clone());
    }
}

/// Whom the runner dies with.
enum Parent {
    /// The keeper; the read end of a pipe whose write end it holds.
    Keeper(OwnedFd),
    /// The process that started this one (no keeper), by pid.
    Starter(libc::pid_t),
}

impl Parent {
    /// Asks to be killed when the parent dies, and leaves at once if it
    /// already has.
    fn die_with(&self) {
        match self {
            Parent::Keeper(alive) => die_with_parent(alive),
            Parent::Starter(pid) => {
                // SAFETY: PR_SET_PDEATHSIG takes a signal number; getppid
                // has no preconditions.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    if libc::getppid() != *pid {
                        libc::_exit(crate::EXIT_KEEPER_GONE);
                    }
                }
            }
        }
    }
}

/// With a PID namespace unshared: forks its init and the runner, and
/// returns in the runner with the read end of a pipe whose write end the
/// keeper holds (end of file: the keeper is gone). The calling process
/// (the keeper) waits for the runner and ends as it ended, never
/// returning.
fn keep(inherited: &Inherited) -> Result<OwnedFd, String> {
    // Each child checks its parent is still there once it has asked to die
    // with it: the read end sees end-of-file when the keeper is gone.
    let (alive_read, alive_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("could not make a pipe: {e}"))?;
    let init = fork().map_err(|e| format!("could not start the pid namespace's init: {e}"))?;
    if init == 0 {
        drop(alive_write);
        run_init(&alive_read);
    }
    let runner = match fork() {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: kill only sends a signal to the init just forked.
            unsafe { libc::kill(init, libc::SIGKILL) };
            return Err(format!("could not start the runner: {e}"));
        }
    };
    if runner == 0 {
        drop(alive_write);
        die_with_parent(&alive_read);
        return Ok(alive_read);
    }
    drop(alive_read);
    // The runner holds the socket now.
    // SAFETY: closes this process's copy of a descriptor it owns.
    unsafe { libc::close(inherited.socket) };
    let status = wait_for(runner);
    // SAFETY: kills the init forked above (and so the whole namespace).
    unsafe { libc::kill(init, libc::SIGKILL) };
    let _ = wait_for(init);
    drop(alive_write);
    end_as(status)
}

/// `fork`: the child's 0, or the child's pid.
fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the process has one thread (the caller's contract), so the
    // child may go on running ordinary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Asks to be killed when the parent dies, then checks it has not died
/// already (before the request).
fn die_with_parent(alive: &OwnedFd) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut poll = libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one descriptor this process owns, without waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    if ready != 0 {
        // SAFETY: leaves at once; nothing needs running.
        unsafe { libc::_exit(crate::EXIT_KEEPER_GONE) };
    }
}

/// The PID namespace's init: reaps whatever is orphaned into it, holds
/// nothing, and dies with the keeper (taking the namespace with it).
fn run_init(alive: &OwnedFd) -> ! {
    die_with_parent(alive);
    // SAFETY: closes every descriptor but the pipe (which it keeps so the
    // keeper's death is also seen here), then ignores SIGCHLD so the
    // kernel reaps orphans at once.
    unsafe {
        let keep = alive.as_raw_fd();
        for fd in 0..keep {
            libc::close(fd);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let _ = identity::become_nobody_quietly();
    // A change of user clears the parent-death signal: ask again.
    die_with_parent(alive);
    loop {
        // SAFETY: waits for a signal; none is handled.
        unsafe { libc::pause() };
    }
}

/// Waits for `pid` and returns its wait status.
fn wait_for(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: waits for a child of this process; `status` is valid.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            return status;
        }
        if waited < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 0;
        }
    }
}

/// Ends this process the way a child with wait status `status` ended:
/// killed by the same signal, or exiting with the same code.
fn end_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restores the default action of `signal`, unblocks it and
        // sends it to this process, which it ends (no core dump: the limit
        // is 0). Falls through to `_exit` if it somehow does not.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
            libc::_exit(128 + signal);
        }
    }
    // SAFETY: leaves with the runner's exit code.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

/// Reads `path` whole, in the keeper (where the host's `/proc` is).
fn read_text(path: &str) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// Writes `text` to `path` (a `/proc` or `/sys` control file).
fn write_text(path: &str, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(text.as_bytes())
}
