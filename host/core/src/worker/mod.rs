//! Isolated plugins: each in a worker process of its own, sandboxed, which
//! the host supervises (restarts it when it crashes, parks it when it
//! crashes in a loop) and talks to over a Unix socket pair.
//!
//! The worker is the host's own executable in a hidden mode: a program
//! that embeds connhost and isolates plugins calls [`run_if_worker`] first
//! thing in `main` (the `connhost` binary does), or names another program
//! that does in [`crate::config::WorkerConfig::program`].

pub(crate) mod child;
mod death;
pub(crate) mod protocol;
mod spawn;
mod status;
mod supervisor;

pub use status::{counts, WorkerCounts, WorkerState, WorkerStatus};
pub(crate) use supervisor::{Spec, Supervisor};

/// The first argument that starts a program in worker mode.
pub const WORKER_ARG: &str = "__connhost-worker";

/// Stops every worker of this process and removes their cgroups, for a
/// program about to exit (its workers would die with it anyway, but their
/// cgroups would stay until the next host sweeps them). No worker is
/// started or restarted afterwards. Bounded: at most about a second.
pub fn shutdown() {
    supervisor::stop_starting_workers();
    #[cfg(target_os = "linux")]
    connhost_sandbox::cgroup::remove_all_of_this_process(std::time::Duration::from_secs(1));
}

/// When this process was started as a connhost worker, runs the worker and
/// exits; otherwise returns at once. Call it first thing in `main`, before
/// starting threads or a runtime.
pub fn run_if_worker() {
    if std::env::args_os().nth(1).is_some_and(|a| a == WORKER_ARG) {
        child::main();
    }
}
