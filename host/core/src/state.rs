//! What one host owns and nothing else shares: its bounds on validations
//! in flight, its counts of egress refusals and of worker crashes and
//! restarts, its compiled-in providers' slot (their settings, egress grant
//! and HTTP bounds), and the runtime its workers' supervisors run on. A
//! [`crate::Catalog`] makes one and every host it serves shares it, across
//! hot reloads; it goes when the last of them (and the last worker it
//! supervises) does. Two hosts in one process are independent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::capabilities::{self, BUILTIN_SCOPE};
use crate::egress::{Reason, Refusals};
use crate::in_flight::Bounds;
use crate::model::config::HostConfig;
use crate::model::egress::Egress;
use crate::model::worker_status::WorkerCounts;

/// One host's own state (see the module's documentation).
pub(crate) struct HostState {
    /// Its bounds on validations in flight.
    pub(crate) bounds: Bounds,
    /// Its plugins' egress refusals, by plugin and reason.
    pub(crate) refusals: Arc<Refusals>,
    /// Its plugins' worker crashes and restarts, by plugin name.
    worker_counts: Mutex<BTreeMap<String, WorkerCounts>>,
    /// The slot of its compiled-in providers in `capabilities`.
    builtin_token: u64,
    /// The operator's egress grant for its compiled-in providers.
    builtin_grant: Option<Vec<String>>,
    /// The runtime its workers' supervisors run on, made with the first.
    supervisors: OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("builtin_token", &self.builtin_token)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// A host's state for `config`: its compiled-in providers' settings,
    /// egress grant (`[plugin.builtin]`) and HTTP bounds. They may call
    /// nothing until their declarations are put in force
    /// ([`declare_builtin`](Self::declare_builtin), which whoever serves
    /// them calls once it knows them).
    pub(crate) fn new(config: &HostConfig) -> Arc<Self> {
        let refusals = Arc::new(Refusals::default());
        let builtin_token =
            capabilities::register_builtin(config.settings_of(BUILTIN_SCOPE), refusals.clone());
        capabilities::set_http_limits(builtin_token, config.http);
        Arc::new(Self {
            bounds: Bounds::default(),
            refusals,
            worker_counts: Mutex::default(),
            builtin_token,
            builtin_grant: config.egress_of(BUILTIN_SCOPE),
            supervisors: OnceLock::new(),
        })
    }

    /// The slot of its compiled-in providers, which their calls run under
    /// ([`capabilities::AsBuiltin`]).
    pub(crate) fn builtin_token(&self) -> u64 {
        self.builtin_token
    }

    /// Puts in force the hosts its compiled-in providers declare, under the
    /// operator's grant.
    pub(crate) fn declare_builtin(&self, declared: Vec<String>) {
        let egress = Egress {
            declared,
            granted: self.builtin_grant.clone(),
        };
        capabilities::set_egress(self.builtin_token, BUILTIN_SCOPE, &egress);
    }

    /// Counts a worker event of the plugin `plugin`.
    pub(crate) fn count_worker(&self, plugin: &str, update: impl FnOnce(&mut WorkerCounts)) {
        let mut counts = self.worker_counts.lock().unwrap_or_else(|e| e.into_inner());
        update(counts.entry(plugin.to_owned()).or_default());
    }

    /// Its plugins' worker crashes and restarts so far, by plugin name.
    pub(crate) fn worker_counts(&self) -> Vec<(String, WorkerCounts)> {
        let counts = self.worker_counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Its plugins' egress refusals so far, by plugin name and reason.
    pub(crate) fn egress_refusals(&self) -> Vec<(String, Reason, u64)> {
        self.refusals.counts()
    }

    /// The runtime its workers' supervisors run on.
    pub(crate) fn supervisors(&self) -> tokio::runtime::Handle {
        self.supervisors
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("connhost-supervisor")
                    .enable_all()
                    .build()
                    .expect("connhost: cannot start the worker supervisor runtime")
            })
            .handle()
            .clone()
    }
}

impl Drop for HostState {
    /// Stops its supervisors' runtime without waiting (it may be dropped on
    /// one of that runtime's own threads).
    fn drop(&mut self) {
        if let Some(runtime) = self.supervisors.take() {
            runtime.shutdown_background();
        }
    }
}
