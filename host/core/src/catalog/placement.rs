//! Where a plugin runs, decided per file before it is opened: in this
//! process (the loader), or in a sandboxed worker of its own that the
//! catalog starts and owns (`crate::backend::isolated`).

use std::path::Path;
use std::sync::Arc;

use crate::library::Checks;
use crate::model::config::{HostConfig, Isolation};
use crate::model::report::LoadFailure;
use crate::plugin::Plugin;
use crate::state::HostState;

/// Opens the library copy at `load_path`, reported as `path`, where
/// `config` says the plugin of that file runs (by the file's name), for
/// the host whose state is `state`; in process, checked as `checks` says.
pub(crate) fn open(
    load_path: &Path,
    path: &Path,
    config: &HostConfig,
    state: &Arc<HostState>,
    checks: Checks,
) -> Result<Plugin, LoadFailure> {
    match config.isolation_of_file(path) {
        Isolation::InProcess => {
            crate::loader::open_in_process_as(load_path, path, config, state, checks)
        }
        Isolation::Process => open_isolated(load_path, path, config, state),
    }
}

/// Starts a worker that loads the library copy at `load_path`, reported
/// as `path`, and waits until it has.
pub(crate) fn open_isolated(
    load_path: &Path,
    path: &Path,
    config: &HostConfig,
    state: &Arc<HostState>,
) -> Result<Plugin, LoadFailure> {
    crate::backend::isolated::start(load_path, path, config, state)
        .map(|started| Plugin::isolated(started, path, config))
}
