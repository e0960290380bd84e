//! What Linux's `/proc` tells about a process: its state, CPU time,
//! memory, descriptors, reads and children. The tests that watch the
//! server or a worker from outside read it through these.

use std::path::PathBuf;

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may hold spaces): the state is `[0]`, utime `[11]`,
/// stime `[12]`, nice `[16]`, policy `[38]`. `None` when there is no such
/// process.
pub fn try_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let end = stat.rfind(')')?;
    Some(
        stat.get(end + 2..)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// The fields of `/proc/PID/stat` after the command name (see
/// [`try_stat_fields`]); panics when there is no such process.
pub fn stat_fields(pid: u32) -> Vec<String> {
    try_stat_fields(pid).unwrap_or_else(|| panic!("no /proc/{pid}/stat: the process is gone"))
}

/// Whether the process `pid` has exited: it is gone, or a zombie (only its
/// entry is left for its parent to reap).
pub fn is_zombie_or_gone(pid: u32) -> bool {
    try_stat_fields(pid).is_none_or(|fields| fields.first().is_none_or(|state| state == "Z"))
}

/// Whether the process `pid` still runs (neither gone nor a zombie).
pub fn alive(pid: u32) -> bool {
    !is_zombie_or_gone(pid)
}

/// A process's CPU time so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    let ticks = |i: usize| -> u64 {
        fields[i]
            .parse()
            .unwrap_or_else(|e| panic!("/proc/{pid}/stat field {i} ({}): {e}", fields[i]))
    };
    ticks(11) + ticks(12)
}

/// The number in a `Name:   123 kB` line of a `/proc` file.
fn kb_line(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        (name == field)
            .then(|| rest.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// A field of `/proc/PID/status` given in kB (`VmRSS`, `VmHWM`, ...).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    kb_line(&status, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A field of `/proc/meminfo` (`Shmem`, ...), in kB.
pub fn meminfo_kb(field: &str) -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    kb_line(&meminfo, field).unwrap_or_else(|| panic!("no {field} in /proc/meminfo"))
}

/// What the open descriptors of the process `pid` point at.
fn descriptor_targets(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .collect()
}

/// How many descriptors the process `pid` has open.
pub fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count()
}

/// How many sockets the process `pid` has open.
pub fn open_sockets(pid: u32) -> usize {
    descriptor_targets(pid)
        .iter()
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// The bytes the process `pid` has read so far (`rchar` in
/// `/proc/PID/io`).
pub fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/io: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io"))
}

/// The text of `/proc/PID/limits`.
pub fn limits(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/limits: {e}"))
}

/// `pid` and every descendant of it.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        all.push(pid);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}
