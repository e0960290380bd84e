//! The `[worker]` table: how worker processes (plugins with
//! `isolation = "process"`) are run, [`connhost::WorkerConfig`].

use serde::Deserialize;

use super::values::{Int, Mebibytes, Seconds, U32Count};

table! {
    /// The `[worker]` table: [`connhost::WorkerConfig`]. A limit of 0 sets
    /// none.
    pub(super) struct WorkerFile {
        sandbox: bool
            => host.worker.sandbox;
        memory_limit_mb: Mebibytes<0>
            => host.worker.memory_limit = |mb| mb.limit().map(|mb| mb << 20);
        open_files: Int<0, { i64::MAX }>
            => host.worker.open_files = Int::limit;
        cpu_seconds: Int<0, { i64::MAX }>
            => host.worker.cpu_seconds = Int::limit;
        max_threads: Int<0, { i64::MAX }>
            => host.worker.max_threads = Int::limit;
        user: WorkerUser
            => host.worker.user = |user| Some(user.0);
        tmp_size_mb: Mebibytes<1>
            => host.worker.tmp_size = Int::mebibytes;
        require: Vec<RequiredLayers>
            => host.worker.require = layers;
        start_timeout: Seconds
            => host.worker.start_timeout = |t| t.0;
        crash_limit: U32Count
            => host.worker.crash_limit = |n| u32::try_from(n.get()).unwrap_or(u32::MAX);
        crash_window: Seconds
            => host.worker.crash_window = |t| t.0;
    }
}

/// `[worker] user`: a user name, `UID` or `UID:GID`, checked where it is
/// read (and looked up then).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "toml::Value")]
pub(super) struct WorkerUser(connhost::Identity);

impl TryFrom<toml::Value> for WorkerUser {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, String> {
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            other => return Err(format!("a user name, UID or \"UID:GID\", got {other}")),
        };
        text.parse().map(WorkerUser)
    }
}

/// One entry of `[worker] require`: a layer, or a group of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RequiredLayers(Vec<connhost::Layer>);

impl TryFrom<String> for RequiredLayers {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        connhost::Layer::parse_group(&name).map(RequiredLayers)
    }
}

/// The layers `require` names, each once, in order.
fn layers(require: Vec<RequiredLayers>) -> Vec<connhost::Layer> {
    let mut layers: Vec<connhost::Layer> = require.into_iter().flat_map(|r| r.0).collect();
    layers.sort();
    layers.dedup();
    layers
}
