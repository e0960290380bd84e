//! The seccomp allowlist: the system calls a Rust plugin (its threads, a
//! tokio runtime, the dynamic loader, the allocator, files under the
//! runner's `/tmp`) needs, and nothing else. Anything not listed fails
//! with `EPERM`: among them `fork`, `execve`, `socket`, `connect`, `kill`,
//! `ptrace`, `mount`, `chmod`/`chown`/`setxattr`/`utimensat` (metadata),
//! `memfd_create` and System V / POSIX shared memory, `fanotify_init`,
//! `syslog`, `reboot`, `sethostname`, `bpf`, `perf_event_open`,
//! `io_uring_*`, `userfaultfd`, `unshare`, `setns`, `keyctl`, and every
//! set-id call.
//!
//! Some are allowed only with some arguments:
//! - `clone` only for threads (`CLONE_THREAD | CLONE_VM | CLONE_SIGHAND`,
//!   no namespace flags); `clone3` answers `ENOSYS` (its flags are in
//!   memory, which seccomp cannot read), so the C library falls back to
//!   `clone`;
//! - `prlimit64` and `setpriority` only on the runner itself (pid 0), so
//!   no other process's limits or nice value can be changed (nor any
//!   process's scheduler: `sched_setscheduler` and friends are refused);
//! - `tgkill` only on the runner's own threads;
//! - `socketpair` only for `AF_UNIX`;
//! - `ioctl` only for `FIONBIO`, `FIOCLEX`, `FIONCLEX`, `FIONREAD` and
//!   `TCGETS` (so not `TIOCSTI`);
//! - `prctl` only to name threads and mappings and read a few flags.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Layer, SandboxReport};

/// When a listed system call is allowed.
#[derive(Clone, Copy)]
enum When {
    /// Whatever its arguments.
    Always,
    /// When argument `.0` is one of `.1`.
    ArgIn(u8, &'static [u64]),
    /// When every (argument, value) pair matches.
    ArgsAre(&'static [(u8, u64)]),
    /// When argument `.0` masked with `.1` equals `.2`.
    Masked(u8, u64, u64),
    /// When argument 0 is this process's pid (filled in at install).
    OwnPid,
}

use When::*;

const THREAD_FLAGS: u64 = (libc::CLONE_THREAD | libc::CLONE_VM | libc::CLONE_SIGHAND) as u64;
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `PR_SET_VMA`: names anonymous mappings (the C library does).
const PR_SET_VMA: u64 = 0x53564d41;

/// The allowlist, on every architecture.
// The ioctl numbers' type differs between C libraries.
#[allow(clippy::unnecessary_cast)]
const ALLOWED: &[(libc::c_long, When)] = &[
    // Memory.
    (libc::SYS_brk, Always),
    (libc::SYS_mmap, Always),
    (libc::SYS_munmap, Always),
    (libc::SYS_mremap, Always),
    (libc::SYS_mprotect, Always),
    (libc::SYS_madvise, Always),
    (libc::SYS_mincore, Always),
    (libc::SYS_msync, Always),
    (libc::SYS_membarrier, Always),
    // Threads and synchronisation.
    (
        libc::SYS_clone,
        Masked(0, THREAD_FLAGS | NAMESPACE_FLAGS, THREAD_FLAGS),
    ),
    (libc::SYS_futex, Always),
    (libc::SYS_set_robust_list, Always),
    (libc::SYS_set_tid_address, Always),
    (libc::SYS_rseq, Always),
    (libc::SYS_sched_yield, Always),
    // Reading a thread's affinity, policy or nice value (the C library
    // reads its own threads' by their ids).
    (libc::SYS_sched_getaffinity, Always),
    (libc::SYS_sched_getparam, Always),
    (libc::SYS_sched_getscheduler, Always),
    (libc::SYS_getpriority, Always),
    (libc::SYS_setpriority, ArgsAre(&[(0, 0), (1, 0)])),
    (libc::SYS_prlimit64, ArgIn(0, &[0])),
    (libc::SYS_getrlimit, Always),
    (libc::SYS_exit, Always),
    (libc::SYS_exit_group, Always),
    (libc::SYS_restart_syscall, Always),
    (libc::SYS_wait4, Always),
    (libc::SYS_waitid, Always),
    // Signals (to itself only).
    (libc::SYS_rt_sigaction, Always),
    (libc::SYS_rt_sigprocmask, Always),
    (libc::SYS_rt_sigreturn, Always),
    (libc::SYS_rt_sigpending, Always),
    (libc::SYS_rt_sigtimedwait, Always),
    (libc::SYS_rt_sigsuspend, Always),
    (libc::SYS_sigaltstack, Always),
    (libc::SYS_tgkill, OwnPid),
    // Identity and time (reading).
    (libc::SYS_getpid, Always),
    (libc::SYS_gettid, Always),
    (libc::SYS_getppid, Always),
    (libc::SYS_getuid, Always),
    (libc::SYS_geteuid, Always),
    (libc::SYS_getgid, Always),
    (libc::SYS_getegid, Always),
    (libc::SYS_getresuid, Always),
    (libc::SYS_getresgid, Always),
    (libc::SYS_getgroups, Always),
    (libc::SYS_getpgid, Always),
    (libc::SYS_getsid, Always),
    (libc::SYS_capget, Always),
    (libc::SYS_uname, Always),
    (libc::SYS_sysinfo, Always),
    (libc::SYS_getrusage, Always),
    (libc::SYS_times, Always),
    (libc::SYS_getcpu, Always),
    (libc::SYS_getrandom, Always),
    (libc::SYS_clock_gettime, Always),
    (libc::SYS_clock_getres, Always),
    (libc::SYS_clock_nanosleep, Always),
    (libc::SYS_nanosleep, Always),
    (libc::SYS_gettimeofday, Always),
    (
        libc::SYS_prctl,
        ArgIn(
            0,
            &[
                libc::PR_SET_NAME as u64,
                libc::PR_GET_NAME as u64,
                PR_SET_VMA,
                libc::PR_GET_DUMPABLE as u64,
                libc::PR_GET_SECCOMP as u64,
                libc::PR_GET_NO_NEW_PRIVS as u64,
                libc::PR_CAPBSET_READ as u64,
            ],
        ),
    ),
    // Descriptors.
    (libc::SYS_read, Always),
    (libc::SYS_write, Always),
    (libc::SYS_readv, Always),
    (libc::SYS_writev, Always),
    (libc::SYS_pread64, Always),
    (libc::SYS_pwrite64, Always),
    (libc::SYS_preadv, Always),
    (libc::SYS_pwritev, Always),
    (libc::SYS_lseek, Always),
    (libc::SYS_close, Always),
    (libc::SYS_close_range, Always),
    (libc::SYS_dup, Always),
    (libc::SYS_dup3, Always),
    (libc::SYS_fcntl, Always),
    (
        libc::SYS_ioctl,
        ArgIn(
            1,
            &[
                libc::FIONBIO as u64,
                libc::FIOCLEX as u64,
                libc::FIONCLEX as u64,
                libc::FIONREAD as u64,
                libc::TCGETS as u64,
            ],
        ),
    ),
    (libc::SYS_pipe2, Always),
    (libc::SYS_eventfd2, Always),
    (libc::SYS_epoll_create1, Always),
    (libc::SYS_epoll_ctl, Always),
    (libc::SYS_epoll_pwait, Always),
    (libc::SYS_epoll_pwait2, Always),
    (libc::SYS_ppoll, Always),
    (libc::SYS_pselect6, Always),
    (libc::SYS_timerfd_create, Always),
    (libc::SYS_timerfd_settime, Always),
    (libc::SYS_timerfd_gettime, Always),
    // Sockets it already holds (its socket to the host), and pairs.
    (libc::SYS_socketpair, ArgIn(0, &[libc::AF_UNIX as u64])),
    (libc::SYS_sendto, Always),
    (libc::SYS_recvfrom, Always),
    (libc::SYS_sendmsg, Always),
    (libc::SYS_recvmsg, Always),
    (libc::SYS_sendmmsg, Always),
    (libc::SYS_recvmmsg, Always),
    (libc::SYS_shutdown, Always),
    (libc::SYS_getsockopt, Always),
    (libc::SYS_setsockopt, Always),
    (libc::SYS_getsockname, Always),
    (libc::SYS_getpeername, Always),
    // Files (what Landlock and the root allow: reading, and /tmp).
    (libc::SYS_openat, Always),
    (libc::SYS_newfstatat, Always),
    (libc::SYS_fstat, Always),
    (libc::SYS_statx, Always),
    (libc::SYS_statfs, Always),
    (libc::SYS_fstatfs, Always),
    (libc::SYS_faccessat, Always),
    (libc::SYS_faccessat2, Always),
    (libc::SYS_readlinkat, Always),
    (libc::SYS_getdents64, Always),
    (libc::SYS_getcwd, Always),
    (libc::SYS_chdir, Always),
    (libc::SYS_fchdir, Always),
    (libc::SYS_umask, Always),
    (libc::SYS_mkdirat, Always),
    (libc::SYS_unlinkat, Always),
    (libc::SYS_renameat, Always),
    (libc::SYS_renameat2, Always),
    (libc::SYS_ftruncate, Always),
    (libc::SYS_fallocate, Always),
    (libc::SYS_fsync, Always),
    (libc::SYS_fdatasync, Always),
    (libc::SYS_flock, Always),
];

/// The same, for system calls only x86_64 has (older forms the C library
/// or a plugin may still use).
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[(libc::c_long, When)] = &[
    (libc::SYS_arch_prctl, Always),
    (libc::SYS_open, Always),
    (libc::SYS_stat, Always),
    (libc::SYS_lstat, Always),
    (libc::SYS_access, Always),
    (libc::SYS_readlink, Always),
    (libc::SYS_poll, Always),
    (libc::SYS_select, Always),
    (libc::SYS_pipe, Always),
    (libc::SYS_dup2, Always),
    (libc::SYS_epoll_create, Always),
    (libc::SYS_epoll_wait, Always),
    (libc::SYS_eventfd, Always),
    (libc::SYS_getdents, Always),
    (libc::SYS_mkdir, Always),
    (libc::SYS_rmdir, Always),
    (libc::SYS_unlink, Always),
    (libc::SYS_rename, Always),
    (libc::SYS_time, Always),
    (libc::SYS_getpgrp, Always),
];

#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[(libc::c_long, When)] = &[];

/// Installs the filters on this process (and every thread it starts
/// afterwards). Needs no new privileges (or `CAP_SYS_ADMIN`).
pub(crate) fn install(report: &mut SandboxReport) -> Result<(), String> {
    let Ok(arch) = TargetArch::try_from(std::env::consts::ARCH) else {
        report.miss(format!(
            "seccomp allowlist: not available on {}",
            std::env::consts::ARCH
        ));
        return Ok(());
    };
    // SAFETY: PR_GET_SECCOMP takes no pointers.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
    {
        report.miss("seccomp allowlist: the kernel has no seccomp");
        return Ok(());
    }
    let built =
        |error: seccompiler::BackendError| format!("could not build the seccomp filter: {error}");
    let no_clone3 = no_clone3(arch).map_err(built)?;
    let allowlist = allowlist(arch, std::process::id()).map_err(built)?;
    for program in [&no_clone3, &allowlist] {
        seccompiler::apply_filter(program)
            .map_err(|error| format!("could not apply the seccomp filter: {error}"))?;
    }
    report.apply(
        Some(Layer::Seccomp),
        format!(
            "seccomp allowlist ({} system calls; no fork, exec, sockets, signals to others, metadata changes or shared memory)",
            ALLOWED.len() + ALLOWED_X86_64.len()
        ),
    );
    Ok(())
}

/// The allowlist: `EPERM` for anything it does not allow.
// `c_long` is `i64` only on 64-bit targets.
#[allow(clippy::useless_conversion)]
fn allowlist(arch: TargetArch, own_pid: u32) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let eq = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
    };
    for &(syscall, when) in ALLOWED.iter().chain(ALLOWED_X86_64) {
        let list = match when {
            Always => Vec::new(),
            ArgIn(arg, values) => values
                .iter()
                .map(|&value| SeccompRule::new(vec![eq(arg, value)?]))
                .collect::<Result<_, _>>()?,
            ArgsAre(pairs) => vec![SeccompRule::new(
                pairs
                    .iter()
                    .map(|&(arg, value)| eq(arg, value))
                    .collect::<Result<_, _>>()?,
            )?],
            Masked(arg, mask, value) => vec![SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(mask),
                value,
            )?])?],
            OwnPid => vec![SeccompRule::new(vec![eq(0, u64::from(own_pid))?])?],
        };
        rules.insert(i64::from(syscall), list);
    }
    // Allowed here; the filter installed before this one answers ENOSYS.
    rules.insert(i64::from(libc::SYS_clone3), Vec::new());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;
    BpfProgram::try_from(filter)
}

/// `clone3` answers `ENOSYS`, everything else passes to the allowlist.
#[allow(clippy::useless_conversion)]
fn no_clone3(arch: TargetArch) -> Result<BpfProgram, seccompiler::BackendError> {
    let rules = BTreeMap::from([(i64::from(libc::SYS_clone3), Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    BpfProgram::try_from(filter)
}
