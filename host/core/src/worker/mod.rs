//! The worker process: the child side of an isolated plugin, and the top
//! of the crate (it runs the loader, the capabilities and the protocol in
//! a process of its own; nothing imports it). The host's side is
//! `crate::backend::isolated`.
//!
//! The worker is the host's own executable in a hidden mode: a program
//! that embeds connhost and isolates plugins calls [`run_if_worker`] first
//! thing in `main` (the `connhost` binary does), or names another program
//! that does in [`crate::WorkerConfig::program`].

mod child;
mod pool;

pub use crate::protocol::WORKER_ARG;

/// Stops every worker of this process and removes their cgroups, for a
/// program about to exit (its workers would die with it anyway, but their
/// cgroups would stay until the next host sweeps them). No worker is
/// started or restarted afterwards. Bounded: at most about a second.
pub fn shutdown() {
    crate::backend::isolated::stop_starting_workers();
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
