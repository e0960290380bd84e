//! Resource limits: address space, open files, CPU time, and threads when
//! no pids cgroup bounds them.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::{Jail, Layer, SandboxReport};

/// Sets each limit the jail names; leaves the others as they are.
pub(super) fn apply(jail: &Jail, report: &mut SandboxReport) -> Result<(), String> {
    if let Some(bytes) = jail.memory_limit {
        set("address space (RLIMIT_AS)", Resource::As, bytes, bytes)?;
        report.apply(
            None,
            format!("memory limit ({} MiB)", bytes / (1024 * 1024)),
        );
    }
    if let Some(files) = jail.open_files {
        set("open files (RLIMIT_NOFILE)", Resource::Nofile, files, files)?;
        report.apply(None, format!("open files limit ({files})"));
    }
    if let Some(seconds) = jail.cpu_seconds {
        // At the soft limit the kernel sends SIGXCPU (which says what
        // happened); one second later, SIGKILL (which cannot be caught).
        set(
            "CPU time (RLIMIT_CPU)",
            Resource::Cpu,
            seconds,
            seconds.saturating_add(1),
        )?;
        report.apply(None, format!("CPU time limit ({seconds} s)"));
    }
    if let Some(threads) = jail.max_threads {
        if !report.layers.contains(&Layer::PidsCgroup) && jail.sandbox {
            set(
                "processes (RLIMIT_NPROC)",
                Resource::Nproc,
                threads,
                threads,
            )?;
            report.apply(
                None,
                format!("threads limit (RLIMIT_NPROC {threads}, counted per user)"),
            );
        }
    }
    Ok(())
}

/// No core files: a crashing plugin's memory (and its secrets) is not
/// written to disk.
pub(super) fn no_core_dumps() {
    let _ = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
}

/// Sets one limit: the soft limit to `soft` and the hard limit to `hard`,
/// each no higher than the hard limit already in force (a process without
/// privileges may only lower it).
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
