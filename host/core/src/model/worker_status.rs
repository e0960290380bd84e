//! What an operator and `/metrics` see of isolated plugins' workers.

/// Where an isolated plugin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Its worker is starting.
    Starting,
    /// Its worker answers.
    Ready,
    /// Its worker died; a new one is being started.
    Restarting,
    /// It crashed too often: parked until its file changes or a rescan.
    Parked,
    /// It was replaced or removed, or it is not served (none of its
    /// providers registered); its worker is stopped.
    Stopped,
}

/// What an operator sees of an isolated plugin's worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct WorkerStatus {
    /// Where it stands.
    pub state: WorkerState,
    /// The worker's process id, while one runs.
    pub pid: Option<u32>,
    /// The memory its processes use, in bytes, while one runs: what its
    /// memory cgroup counts (shared memory and tmpfs included), or the
    /// resident memory of its processes where it has no cgroup.
    pub memory_bytes: Option<u64>,
    /// How many times its worker was restarted.
    pub restarts: u64,
    /// How many times its worker died without the host asking (crashes,
    /// and kills for a validation that would not stop).
    pub crashes: u64,
    /// Why its worker last died (or why it is parked).
    pub last_crash: Option<String>,
    /// The sandbox measures in force in its worker.
    pub sandbox: Vec<String>,
    /// Sandbox measures this system could not apply, with why.
    pub sandbox_unavailable: Vec<String>,
}

/// Crashes and restarts of one plugin's workers in this process, across
/// every version of its file: what `/metrics` counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Worker deaths the host did not ask for.
    pub crashes: u64,
    /// Workers started again after one died.
    pub restarts: u64,
}
