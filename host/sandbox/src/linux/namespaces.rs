//! Unsharing the worker's namespaces.
//!
//! As root (with `CAP_SYS_ADMIN`), the keeper unshares the mount, PID,
//! network, IPC, UTS and cgroup namespaces at once. As another user it
//! does so inside a new user namespace that maps its own user and group
//! to themselves (it can map nothing else), which gives it the
//! capabilities to build the runner's root in that namespace only.
//!
//! Root without `CAP_SYS_ADMIN` gets no namespaces: a user namespace would
//! have to map the runner to root outside (the only id it may map), and a
//! process that owns root's files is no sandbox. The report says so, and
//! Landlock and the seccomp allowlist remain.

use super::{read_text, write_text};
use crate::{Layer, SandboxReport};

/// The namespaces in force after [`unshare`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Spaces {
    /// In a new user namespace (the host is not root).
    pub(super) user: bool,
    /// A new PID namespace for the children to come.
    pub(super) pid: bool,
    /// A new mount namespace.
    pub(super) mount: bool,
}

const ALL: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Unshares what can be had, reporting each.
pub(super) fn unshare(report: &mut SandboxReport) -> Spaces {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let full = if root {
        call(ALL).map(|()| false)
    } else {
        call(ALL | libc::CLONE_NEWUSER).and_then(|()| map_self().map(|()| true))
    };
    match full {
        Ok(user) => {
            if user {
                report.apply(
                    None,
                    "user namespace (the host's user, mapped to itself only)",
                );
            }
            report.apply(
                Some(Layer::NetworkNamespace),
                "network namespace (no network)",
            );
            report.apply(Some(Layer::IpcNamespace), "ipc, uts and cgroup namespaces");
            Spaces {
                user,
                pid: true,
                mount: true,
            }
        }
        Err(full) => {
            let why = if root {
                format!("refused ({full}): the host lacks CAP_SYS_ADMIN")
            } else {
                format!(
                    "refused ({full}): this system does not let unprivileged users make user namespaces"
                )
            };
            for what in ["pid namespace", "mount namespace", "ipc namespace"] {
                report.miss(format!("{what}: {why}"));
            }
            report.miss(format!(
                "network namespace: {why}; network sockets are left to the seccomp filter and Landlock"
            ));
            Spaces::default()
        }
    }
}

fn call(flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: unshare takes flags only; the process has one thread.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// In a new user namespace: maps this process's user and group to
/// themselves (and gives up supplementary groups, which the kernel
/// requires first).
fn map_self() -> std::io::Result<()> {
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    write_text("/proc/self/setgroups", "deny")?;
    write_text("/proc/self/uid_map", &format!("{uid} {uid} 1\n"))?;
    write_text("/proc/self/gid_map", &format!("{gid} {gid} 1\n"))?;
    // The maps took: this process is its own user in the namespace.
    let _ = read_text("/proc/self/uid_map")?;
    Ok(())
}
