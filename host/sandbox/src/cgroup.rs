//! The host's side of a worker's cgroups: made before the worker starts
//! (it joins them first thing: [`crate::CgroupJoin`]), read for its real
//! memory, emptied and removed when it dies.
//!
//! A cgroup counts what resource limits cannot: memory a process maps
//! from `memfd`, System V or POSIX shared memory and tmpfs pages (which
//! `RLIMIT_AS` does not see), and every thread of every process in it.
//! Both kinds of hierarchy are handled: cgroup v1, where the `memory` and
//! `pids` controllers each have a hierarchy of their own (as on hosts that
//! mount them under `/sys/fs/cgroup/memory` and `/sys/fs/cgroup/pids`),
//! and cgroup v2, where the controllers must be enabled in the host's own
//! cgroup (`cgroup.subtree_control`), as systemd's `Delegate=yes` allows.
//! Under v2, when the host's cgroup still holds the host itself (which v2
//! forbids once controllers are enabled below it), the host first moves
//! itself into a leaf of its own, `connhost-supervisor`, as systemd's
//! documentation on delegation recommends; it does so only when it is the
//! cgroup's only process.
//!
//! Each worker gets `connhost-<host pid>-w<n>` beneath the host's own
//! cgroup. A host that was killed cannot remove its workers' cgroups: the
//! next one removes those of hosts that no longer run ([`Cgroup::create`]
//! sweeps once per process).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{CgroupJoin, Layer};

/// The limits a worker's cgroup sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes, shared memory and tmpfs included; `None` counts
    /// without a bound.
    pub memory: Option<u64>,
    /// Processes and threads; `None` counts without a bound.
    pub pids: Option<u64>,
}

/// Which kind of hierarchy a folder is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One folder of a worker's cgroup (one per v1 hierarchy; one in all
/// under v2).
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    version: Version,
    layers: Vec<Layer>,
    label: String,
}

/// A worker's cgroups. Dropping it kills what is left in them and
/// removes them.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<Dir>,
}

/// Where a controller can be had: the host's own cgroup folder in the
/// hierarchy that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Home {
    dir: PathBuf,
    version: Version,
}

/// The prefix of every folder this module makes.
const PREFIX: &str = "connhost-";

impl Cgroup {
    /// Makes the cgroups for one worker under the host's own, with
    /// `limits`. Returns them (`None` when none could be made) and, for
    /// each layer it could not provide, why.
    pub fn create(limits: &Limits) -> (Option<Cgroup>, Vec<(Layer, String)>) {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_stale);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{PREFIX}{}-w{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut dirs: Vec<Dir> = Vec::new();
        let mut unavailable = Vec::new();
        for (controller, layer) in [("memory", Layer::MemoryCgroup), ("pids", Layer::PidsCgroup)] {
            let home = match home_of(controller) {
                Ok(home) => home,
                Err(why) => {
                    unavailable.push((layer, format!("{}: {why}", layer_words(layer))));
                    continue;
                }
            };
            let path = home.dir.join(&name);
            let label = label(layer, limits);
            if let Some(dir) = dirs.iter_mut().find(|d| d.path == path) {
                match set_limit(dir.version, &dir.path, layer, limits) {
                    Ok(()) => {
                        dir.layers.push(layer);
                        dir.label = format!("{}, {label}", dir.label);
                    }
                    Err(e) => unavailable.push((layer, format!("{}: {e}", layer_words(layer)))),
                }
                continue;
            }
            let made = std::fs::create_dir(&path)
                .map_err(|e| format!("could not make {} ({e})", path.display()))
                .and_then(|()| {
                    set_limit(home.version, &path, layer, limits).inspect_err(|_| {
                        let _ = std::fs::remove_dir(&path);
                    })
                });
            match made {
                Ok(()) => dirs.push(Dir {
                    path,
                    version: home.version,
                    layers: vec![layer],
                    label,
                }),
                Err(e) => unavailable.push((layer, format!("{}: {e}", layer_words(layer)))),
            }
        }
        let cgroup = (!dirs.is_empty()).then_some(Cgroup { dirs });
        (cgroup, unavailable)
    }

    /// What the worker joins.
    pub fn joins(&self) -> Vec<CgroupJoin> {
        self.dirs
            .iter()
            .map(|dir| CgroupJoin {
                procs: dir.path.join("cgroup.procs"),
                layers: dir.layers.clone(),
                label: dir.label.clone(),
            })
            .collect()
    }

    /// The memory its processes use now (all of it: heap, shared memory,
    /// tmpfs, page cache charged to it), when a memory cgroup counts it.
    pub fn memory_current(&self) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = match dir.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        read_number(&dir.path.join(file))
    }

    /// How many of its processes the kernel killed for memory.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.memory_dir() else {
            return 0;
        };
        let file = match dir.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        std::fs::read_to_string(dir.path.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Its memory limit in bytes, when it has one.
    pub fn memory_limit(&self) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = match dir.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        read_number(&dir.path.join(file)).filter(|&n| n < (1 << 62))
    }

    /// How many processes and threads are in it now.
    pub fn pids_current(&self) -> Option<u64> {
        let dir = self
            .dirs
            .iter()
            .find(|d| d.layers.contains(&Layer::PidsCgroup))?;
        read_number(&dir.path.join("pids.current"))
    }

    /// The ids (in this host's PID namespace) of the processes in it.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|dir| std::fs::read_to_string(dir.path.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in it.
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            kill_dir(&dir.path, dir.version);
        }
    }

    /// Removes its folders, waiting (at most `patience`) for the processes
    /// in them to be gone. True when all are removed.
    pub fn remove(&self, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let left: Vec<&Dir> = self
                .dirs
                .iter()
                .filter(|dir| {
                    let gone = std::fs::remove_dir(&dir.path);
                    !matches!(&gone, Ok(())) && dir.path.exists()
                })
                .collect();
            if left.is_empty() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            for dir in left {
                kill_dir(&dir.path, dir.version);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn memory_dir(&self) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.layers.contains(&Layer::MemoryCgroup))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        self.remove(Duration::from_millis(200));
    }
}

/// The words for a layer in reports.
fn layer_words(layer: Layer) -> &'static str {
    match layer {
        Layer::MemoryCgroup => "memory cgroup",
        _ => "pids cgroup",
    }
}

fn label(layer: Layer, limits: &Limits) -> String {
    match (layer, limits.memory, limits.pids) {
        (Layer::MemoryCgroup, Some(bytes), _) => format!(
            "memory cgroup (limit {} MiB, shared memory and tmpfs counted)",
            bytes >> 20
        ),
        (Layer::MemoryCgroup, None, _) => "memory cgroup (counted, no limit)".to_owned(),
        (_, _, Some(n)) => format!("pids cgroup (at most {n} threads)"),
        _ => "pids cgroup (counted, no limit)".to_owned(),
    }
}

/// Sets `layer`'s limit in the folder `path`.
fn set_limit(version: Version, path: &Path, layer: Layer, limits: &Limits) -> Result<(), String> {
    let write = |file: &str, value: String| {
        std::fs::write(path.join(file), &value).map_err(|e| {
            format!(
                "could not write {value} to {} ({e})",
                path.join(file).display()
            )
        })
    };
    match (layer, version) {
        (Layer::MemoryCgroup, Version::V1) => {
            if let Some(bytes) = limits.memory {
                write("memory.limit_in_bytes", bytes.to_string())?;
                if path.join("memory.memsw.limit_in_bytes").exists() {
                    write("memory.memsw.limit_in_bytes", bytes.to_string())?;
                }
            }
        }
        (Layer::MemoryCgroup, Version::V2) => {
            if let Some(bytes) = limits.memory {
                write("memory.max", bytes.to_string())?;
                if path.join("memory.swap.max").exists() {
                    write("memory.swap.max", "0".to_owned())?;
                }
            }
            if path.join("memory.oom.group").exists() {
                write("memory.oom.group", "1".to_owned())?;
            }
        }
        (_, _) => {
            if let Some(n) = limits.pids {
                write("pids.max", n.to_string())?;
            }
        }
    }
    Ok(())
}

/// Kills every process in one folder.
fn kill_dir(path: &Path, version: Version) {
    if version == Version::V2 && std::fs::write(path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..20 {
        let Ok(text) = std::fs::read_to_string(path.join("cgroup.procs")) else {
            return;
        };
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: sends SIGKILL to a process of this cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The folder of this process's own cgroup in the hierarchy that has
/// `controller`, ready for children that use it.
fn home_of(controller: &str) -> Result<Home, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo ({e})"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup ({e})"))?;
    let mounts = parse_mounts(&mounts);
    // A v1 hierarchy of its own first.
    if let Some(mount) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))
    {
        let path = own
            .lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_owned())
            })
            .ok_or_else(|| format!("/proc/self/cgroup names no {controller} cgroup"))?;
        let dir = under(&mount.point, &mount.root, &path)?;
        writable(&dir)?;
        return Ok(Home {
            dir,
            version: Version::V1,
        });
    }
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or_else(|| {
            format!("no cgroup hierarchy with the {controller} controller is mounted")
        })?;
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
        .ok_or_else(|| "/proc/self/cgroup names no cgroup v2 path".to_owned())?;
    let dir = under(&mount.point, &mount.root, &path)?;
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == controller) {
        return Err(format!(
            "the {controller} controller is not delegated to this host's cgroup {} (run connhost under systemd with Delegate=yes, or give it a cgroup with the controller)",
            dir.display()
        ));
    }
    enable_v2(&dir, controller)?;
    Ok(Home {
        dir,
        version: Version::V2,
    })
}

/// Enables `controller` for the children of the v2 folder `dir`, moving
/// this process into a leaf of its own first when `dir` holds it (and
/// nothing else).
fn enable_v2(dir: &Path, controller: &str) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = |dir: &Path| {
        std::fs::read_to_string(dir.join("cgroup.subtree_control"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == controller)
    };
    if enabled(dir) {
        return Ok(());
    }
    let first = std::fs::write(&control, format!("+{controller}"));
    if first.is_ok() {
        return Ok(());
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let me = std::process::id().to_string();
    let only_me = procs.lines().all(|l| l.trim() == me || l.trim().is_empty());
    if !only_me {
        return Err(format!(
            "could not enable it in {} ({}), which holds other processes than this host",
            control.display(),
            first.unwrap_err()
        ));
    }
    let leaf = dir.join(format!("{PREFIX}supervisor"));
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("could not make {} ({e})", leaf.display())),
    }
    std::fs::write(leaf.join("cgroup.procs"), &me)
        .map_err(|e| format!("could not move this host into {} ({e})", leaf.display()))?;
    std::fs::write(&control, format!("+{controller}"))
        .map_err(|e| format!("could not enable it in {} ({e})", control.display()))
}

/// `path` (a cgroup path as `/proc/self/cgroup` gives it) in the mount at
/// `point` whose root is `root`.
fn under(point: &Path, root: &str, path: &str) -> Result<PathBuf, String> {
    let relative = if root == "/" {
        path
    } else {
        path.strip_prefix(root).ok_or_else(|| {
            format!(
                "this host's cgroup {path} is outside the hierarchy mounted at {}",
                point.display()
            )
        })?
    };
    Ok(point.join(relative.trim_start_matches('/')))
}

/// Fails unless children can be made in `dir`.
fn writable(dir: &Path) -> Result<(), String> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} has a NUL byte", dir.display()))?;
    // SAFETY: access reads a C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "this host may not make cgroups in {} ({})",
            dir.display(),
            io::Error::last_os_error()
        ))
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug)]
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: String,
}

fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?.to_owned();
            let _source = after.next()?;
            let options = after.next().unwrap_or("").to_owned();
            Some(Mount {
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
                fstype,
                options,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kills what is left in the workers' cgroups this process made and
/// removes them (waiting at most `patience` for their processes to go):
/// for a host about to exit, which would otherwise leave them to the next
/// host's sweep.
pub fn remove_all_of_this_process(patience: Duration) {
    let deadline = std::time::Instant::now() + patience;
    let own = std::process::id() as i32;
    for_each_worker_cgroup(|path, version, host| {
        if host != own {
            return;
        }
        loop {
            kill_dir(path, version);
            if std::fs::remove_dir(path).is_ok()
                || !path.exists()
                || std::time::Instant::now() >= deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// Removes the workers' cgroups of hosts that no longer run.
fn sweep_stale() {
    for_each_worker_cgroup(|path, version, host| {
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(host, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            kill_dir(path, version);
            let _ = std::fs::remove_dir(path);
        }
    });
}

/// Calls `visit` with every worker's cgroup folder (`connhost-<host
/// pid>-w<n>`) under this process's own cgroups, its hierarchy's kind and
/// the pid of the host that made it.
fn for_each_worker_cgroup(mut visit: impl FnMut(&Path, Version, i32)) {
    for controller in ["memory", "pids"] {
        let Ok(home) = home_of(controller) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&home.dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let host = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|rest| rest.split_once("-w"))
                .and_then(|(pid, _)| pid.parse::<i32>().ok());
            if let Some(host) = host {
                visit(&entry.path(), home.version, host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_their_escapes() {
        let text = "32 31 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    40 31 0:35 /a\\040b /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let mounts = parse_mounts(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "cgroup");
        assert_eq!(mounts[0].options, "rw,memory");
        assert_eq!(mounts[1].root, "/a b");
        assert_eq!(mounts[1].point, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn a_cgroup_path_is_found_under_its_mount() {
        let point = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(
            under(point, "/", "/a/b").unwrap(),
            Path::new("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            under(point, "/docker/x", "/docker/x/y").unwrap(),
            Path::new("/sys/fs/cgroup/memory/y")
        );
        assert!(under(point, "/docker/x", "/elsewhere").is_err());
    }

    /// On a machine where this process may make cgroups (as root here),
    /// a worker's cgroup is made with its limits, counts what a process
    /// in it uses, and is gone once dropped.
    #[test]
    fn a_cgroup_is_made_with_its_limits_and_removed_when_dropped() {
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(7),
        };
        let (cgroup, unavailable) = Cgroup::create(&limits);
        let Some(cgroup) = cgroup else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no cgroup could be made under CI: {unavailable:?}"
            );
            eprintln!("skipped: no cgroup here: {unavailable:?}");
            return;
        };
        if std::env::var_os("CI").is_some() {
            assert!(unavailable.is_empty(), "{unavailable:?}");
        }
        let joins = cgroup.joins();
        assert!(!joins.is_empty());
        if joins
            .iter()
            .any(|j| j.layers.contains(&Layer::MemoryCgroup))
        {
            assert_eq!(cgroup.memory_limit(), Some(64 << 20));
        }
        // A child joins, and the cgroup sees it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        for join in &joins {
            std::fs::write(&join.procs, child.id().to_string()).unwrap();
        }
        assert_eq!(cgroup.processes(), [child.id()]);
        if joins.iter().any(|j| j.layers.contains(&Layer::PidsCgroup)) {
            assert_eq!(cgroup.pids_current(), Some(1));
        }
        let dirs: Vec<PathBuf> = joins
            .iter()
            .map(|j| j.procs.parent().unwrap().to_owned())
            .collect();
        drop(cgroup);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        for dir in dirs {
            assert!(!dir.exists(), "{} is left", dir.display());
        }
    }
}
