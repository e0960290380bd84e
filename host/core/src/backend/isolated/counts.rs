//! Crashes and restarts of each plugin's workers, for `/metrics`.

use std::sync::Mutex;

use crate::model::worker_status::WorkerCounts;

static COUNTS: Mutex<std::collections::BTreeMap<String, WorkerCounts>> =
    Mutex::new(std::collections::BTreeMap::new());

pub(super) fn count(plugin: &str, update: impl FnOnce(&mut WorkerCounts)) {
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    update(counts.entry(plugin.to_owned()).or_default());
}

/// Every plugin's worker crashes and restarts in this process so far, by
/// plugin name (monotonic: for counters).
pub fn counts() -> Vec<(String, WorkerCounts)> {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
