//! The isolated backend: a provider inside a plugin that runs in a worker
//! process of its own ([`crate::worker`]), called over its socket.

use std::sync::Arc;

use connhost_plugin_api::CredentialFields;

use super::ProviderOutcome;
use crate::worker::{Supervisor, WorkerStatus};

/// A handle to one provider of an isolated plugin. Cheap to clone; the
/// worker stops when the last handle (and the catalog's) is gone.
#[derive(Debug, Clone)]
pub(crate) struct Isolated {
    supervisor: Arc<Supervisor>,
    handle: u32,
}

impl Isolated {
    pub(crate) fn new(supervisor: Arc<Supervisor>, handle: u32) -> Self {
        Self { supervisor, handle }
    }

    /// The supervisor's address and the provider's handle: which code this
    /// is, in this process.
    pub(crate) fn identity(&self) -> (usize, u32) {
        (Arc::as_ptr(&self.supervisor) as usize, self.handle)
    }

    /// Its worker's status.
    pub(crate) fn status(&self) -> WorkerStatus {
        self.supervisor.status()
    }

    /// Calls the provider in its worker. The secrets of the validation
    /// being polled (see [`crate::redact::WithSecrets`]) go along, so the
    /// worker's log lines are scrubbed of them.
    pub(crate) async fn validate_fields(&self, fields: CredentialFields) -> ProviderOutcome {
        let secrets = crate::redact::active_secrets();
        self.supervisor.validate(self.handle, fields, secrets).await
    }
}
