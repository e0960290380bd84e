//! The jail a connhost worker process runs an isolated plugin in.
//!
//! A worker is the host's own executable started in a hidden mode, with
//! its socket to the host and its plugin library as inherited descriptors.
//! Before it loads the library (loading runs the library's code), it calls
//! [`enter`], which confines it in the manner of bubblewrap, nsjail and
//! Chromium's Linux sandbox, in layers:
//!
//! 1. **Namespaces**: its own PID namespace (no process of the host, or of
//!    anyone else, has a pid in it; its init's death kills everything in
//!    it), mount namespace, network namespace (no interface but a loopback
//!    that is down; abstract Unix sockets are per network namespace), IPC
//!    and UTS namespaces, and a user namespace when the host is not root.
//! 2. **A root of its own**: a read-only tmpfs holding only the system's
//!    library folders (read-only binds), the plugin library (one read-only
//!    file), `/dev/null`, `/dev/zero`, `/dev/random`, `/dev/urandom`, and a
//!    small private `/tmp`. Nothing the host uses is reachable by any path.
//! 3. **No privileges**: an unprivileged identity when the host is root
//!    ([`Jail::user`]), every capability dropped (bounding set and ambient
//!    set cleared), no new privileges, not dumpable.
//! 4. **Limits**: resource limits ([`Jail::memory_limit`] and friends), and
//!    the cgroups the host made for it ([`cgroup`]), which account memory
//!    that rlimits do not see (shared memory, tmpfs pages) and bound its
//!    threads.
//! 5. **Landlock** (file access, TCP, abstract sockets and signals), then
//!    a **seccomp allowlist** (`seccomp.rs` lists what a Rust plugin needs;
//!    everything else, `fork` and `execve` included, is refused).
//!
//! Each layer this kernel or this host cannot provide is named, with why,
//! in the [`SandboxReport`]; [`Jail::require`] makes a missing layer fatal.
//!
//! The process structure, when a PID namespace can be had: the process the
//! host started (the *keeper*) stays outside it, forks the namespace's
//! init (which only reaps) and the *runner* (which returns from [`enter`]
//! and runs the plugin), waits for the runner, kills the init (and so
//! everything left in the namespace), and ends the way the runner ended,
//! so the host sees the runner's exit status or signal. Every one of them
//! dies with its parent (`PR_SET_PDEATHSIG`).
//!
//! This crate knows nothing of plugins or of connhost's protocol.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod seccomp;

/// One layer of the jail, as an operator names it in
/// `[worker] require` ([`Jail::require`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// A PID namespace of its own.
    PidNamespace,
    /// A mount namespace whose root holds only what the worker needs.
    MountNamespace,
    /// A network namespace of its own (no network).
    NetworkNamespace,
    /// IPC and UTS namespaces of its own.
    IpcNamespace,
    /// Not root, and not the host's user when the host is root.
    Unprivileged,
    /// Every capability dropped, the bounding set cleared.
    NoCapabilities,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivileges,
    /// Landlock file, TCP and scope restrictions.
    Landlock,
    /// The seccomp allowlist.
    Seccomp,
    /// A memory cgroup: all its memory (shared memory and tmpfs too)
    /// counted and bounded.
    MemoryCgroup,
    /// A pids cgroup: its processes and threads bounded.
    PidsCgroup,
}

impl Layer {
    /// Every layer, in the order they are listed.
    pub const ALL: [Layer; 11] = [
        Layer::PidNamespace,
        Layer::MountNamespace,
        Layer::NetworkNamespace,
        Layer::IpcNamespace,
        Layer::Unprivileged,
        Layer::NoCapabilities,
        Layer::NoNewPrivileges,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::MemoryCgroup,
        Layer::PidsCgroup,
    ];

    /// The name used in configuration and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::PidNamespace => "pid_namespace",
            Layer::MountNamespace => "mount_namespace",
            Layer::NetworkNamespace => "network_namespace",
            Layer::IpcNamespace => "ipc_namespace",
            Layer::Unprivileged => "unprivileged",
            Layer::NoCapabilities => "no_capabilities",
            Layer::NoNewPrivileges => "no_new_privileges",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::MemoryCgroup => "memory_cgroup",
            Layer::PidsCgroup => "pids_cgroup",
        }
    }

    /// Parses a name of `require`: one layer's name, or `cgroup` (both
    /// cgroups), `namespaces` (all four) or `all`.
    pub fn parse_group(name: &str) -> Result<Vec<Layer>, String> {
        match name {
            "cgroup" => Ok(vec![Layer::MemoryCgroup, Layer::PidsCgroup]),
            "namespaces" => Ok(vec![
                Layer::PidNamespace,
                Layer::MountNamespace,
                Layer::NetworkNamespace,
                Layer::IpcNamespace,
            ]),
            "all" => Ok(Layer::ALL.to_vec()),
            one => one.parse().map(|layer| vec![layer]),
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layer::ALL
            .into_iter()
            .find(|layer| layer.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Layer::ALL.iter().map(|l| l.as_str()).collect();
                format!(
                    "unknown sandbox layer \"{s}\": use one of {}, or cgroup, namespaces, all",
                    names.join(", ")
                )
            })
    }
}

/// A user and group to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl FromStr for Identity {
    type Err = String;

    /// `UID`, `UID:GID`, or a user name (with its primary group), as the
    /// system's user database has it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |text: &str| text.parse::<u32>().ok();
        let identity = match s.split_once(':') {
            Some((uid, gid)) => match (number(uid), number(gid)) {
                (Some(uid), Some(gid)) => Identity { uid, gid },
                _ => return Err(format!("\"{s}\" is not UID:GID")),
            },
            None => match number(s) {
                Some(uid) => Identity { uid, gid: uid },
                None => lookup_user(s)?,
            },
        };
        if identity.uid == 0 || identity.gid == 0 {
            return Err(format!(
                "\"{s}\" is root (uid or gid 0): workers must run as an unprivileged user"
            ));
        }
        Ok(identity)
    }
}

/// A user's ids by name, from the system's user database.
#[cfg(unix)]
fn lookup_user(name: &str) -> Result<Identity, String> {
    let c_name =
        std::ffi::CString::new(name).map_err(|_| format!("\"{name}\" is not a user name"))?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r fills `entry` and `buffer` (of the size given)
    // and sets `found` to `entry` or null.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let status = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() {
        return Err(format!(
            "no user \"{name}\" on this system (make one with `useradd --system {name}`, or give UID:GID)"
        ));
    }
    Ok(Identity {
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

#[cfg(not(unix))]
fn lookup_user(name: &str) -> Result<Identity, String> {
    Err(format!("no user database to look \"{name}\" up in"))
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// The identity workers take when the host runs as root and names none:
/// `nobody` on most systems.
pub const NOBODY: Identity = Identity {
    uid: 65534,
    gid: 65534,
};

/// A cgroup the worker joins before anything else (the host made it and
/// set its limits: [`cgroup::Cgroup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupJoin {
    /// Its `cgroup.procs` file.
    pub procs: PathBuf,
    /// The layers it provides.
    pub layers: Vec<Layer>,
    /// What it is, for the report (e.g. `memory cgroup (limit 256 MiB)`).
    pub label: String,
}

/// What to confine a worker to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jail {
    /// Apply the sandbox (everything but resource limits). Off only to
    /// debug a plugin.
    pub sandbox: bool,
    /// `RLIMIT_AS` in bytes.
    pub memory_limit: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// `RLIMIT_CPU` in seconds.
    pub cpu_seconds: Option<u64>,
    /// The most threads (and processes) it may have: the pids cgroup's
    /// bound, or `RLIMIT_NPROC` without one.
    pub max_threads: Option<u64>,
    /// Who the worker runs as when the host is root (without it:
    /// [`NOBODY`]). A host that is not root runs workers as itself, in a
    /// user namespace.
    pub user: Option<Identity>,
    /// The size of its private `/tmp`, in bytes.
    pub tmp_size: u64,
    /// The cgroups to join.
    pub cgroups: Vec<CgroupJoin>,
    /// Cgroup layers the host could not provide, with why.
    pub cgroups_unavailable: Vec<(Layer, String)>,
    /// Layers whose absence is fatal: the worker refuses to load its
    /// plugin without them.
    pub require: Vec<Layer>,
}

impl Default for Jail {
    fn default() -> Self {
        Self {
            sandbox: true,
            memory_limit: None,
            open_files: None,
            cpu_seconds: None,
            max_threads: None,
            user: None,
            tmp_size: DEFAULT_TMP_SIZE,
            cgroups: Vec::new(),
            cgroups_unavailable: Vec::new(),
            require: Vec::new(),
        }
    }
}

/// The exit code of a jailed process whose keeper died before it could
/// ask to die with it.
pub const EXIT_KEEPER_GONE: i32 = 71;

/// The default size of a worker's private `/tmp`: 8 MiB.
pub const DEFAULT_TMP_SIZE: u64 = 8 << 20;

/// What confining did: each measure in force, and each one this system
/// could not apply (with why), for the host's log and the plugin's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// Measures in force, in words, e.g. `"landlock (ABI 7)"`.
    pub applied: Vec<String>,
    /// Measures not in force, each with its reason.
    pub unavailable: Vec<String>,
    /// The layers in force.
    pub layers: Vec<Layer>,
}

impl SandboxReport {
    fn apply(&mut self, layer: Option<Layer>, label: impl Into<String>) {
        self.applied.push(label.into());
        if let Some(layer) = layer {
            if !self.layers.contains(&layer) {
                self.layers.push(layer);
            }
        }
    }

    fn miss(&mut self, reason: impl Into<String>) {
        self.unavailable.push(reason.into());
    }

    /// The layers of `required` not in force.
    pub fn missing(&self, required: &[Layer]) -> Vec<Layer> {
        let mut missing: Vec<Layer> = required
            .iter()
            .copied()
            .filter(|layer| !self.layers.contains(layer))
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }
}

/// The descriptors the worker inherited and keeps.
#[derive(Debug, Clone)]
pub struct Inherited {
    /// Its socket to the host.
    pub socket: i32,
    /// The plugin library, opened for reading.
    pub library: i32,
    /// The name the library gets inside the jail (e.g. `<hash>.so`).
    pub library_name: String,
}

/// The runner, confined.
#[derive(Debug, Clone)]
pub struct Entered {
    /// What is in force.
    pub report: SandboxReport,
    /// The path to load the library from, as the runner sees it.
    pub library: PathBuf,
}

/// Confines this process (which must have one thread) and returns in the
/// process that is to run the plugin. An error means a measure that must
/// hold could not be applied (or one that [`Jail::require`] names is
/// missing): the plugin must not be loaded.
///
/// With a PID namespace, only the runner returns: the process that called
/// it stays outside the jail as the runner's keeper and ends as the
/// runner ends, without returning.
pub fn enter(jail: &Jail, inherited: &Inherited) -> Result<Entered, String> {
    #[cfg(target_os = "linux")]
    {
        linux::enter(jail, inherited)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut report = SandboxReport::default();
        report.miss(format!(
            "sandbox: not available on {}",
            std::env::consts::OS
        ));
        let missing = report.missing(&jail.require);
        if !missing.is_empty() {
            return Err(missing_message(&missing, &report));
        }
        Ok(Entered {
            report,
            library: fd_path(inherited.library),
        })
    }
}

/// The path a process reaches its descriptor `fd` by.
fn fd_path(fd: i32) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// Why a worker refuses to load: the required layers it lacks.
fn missing_message(missing: &[Layer], report: &SandboxReport) -> String {
    let names: Vec<&str> = missing.iter().map(|l| l.as_str()).collect();
    let reasons = if report.unavailable.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.unavailable.join("; "))
    };
    format!(
        "[worker] require names {}, which this system could not provide{reasons}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_parse_by_name_and_group() {
        for layer in Layer::ALL {
            assert_eq!(layer.as_str().parse::<Layer>(), Ok(layer));
        }
        assert_eq!(
            Layer::parse_group("cgroup").unwrap(),
            [Layer::MemoryCgroup, Layer::PidsCgroup]
        );
        assert_eq!(Layer::parse_group("all").unwrap().len(), Layer::ALL.len());
        let error = Layer::parse_group("pid-namespace").unwrap_err();
        assert!(error.contains("pid_namespace"), "{error}");
    }

    #[test]
    fn a_report_says_which_required_layers_are_missing() {
        let mut report = SandboxReport::default();
        report.apply(Some(Layer::Seccomp), "seccomp allowlist");
        report.miss("pid namespace: refused");
        let missing = report.missing(&[Layer::Seccomp, Layer::PidNamespace, Layer::PidNamespace]);
        assert_eq!(missing, [Layer::PidNamespace]);
        let message = missing_message(&missing, &report);
        assert!(message.contains("pid_namespace"), "{message}");
        assert!(message.contains("refused"), "{message}");
    }
}
