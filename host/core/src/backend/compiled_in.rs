//! The compiled-in backend: a provider linked into this binary (collected
//! with `inventory`, or registered by an embedder in code), called
//! directly.

use std::fmt;
use std::sync::Arc;

use connhost_plugin_api::{ConnectionProvider, CredentialFields};

use super::ProviderOutcome;

/// A provider compiled into this process.
#[derive(Clone)]
pub(crate) struct CompiledIn(Arc<dyn ConnectionProvider>);

impl fmt::Debug for CompiledIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledIn")
            .field("provider_id", &self.0.provider_id())
            .finish()
    }
}

impl CompiledIn {
    /// Wraps a provider. The host's capabilities (HTTP, timers, settings,
    /// logging) are installed for this process's copy of the plugin API
    /// here, the one place every compiled-in provider passes through. The
    /// hosts it declares are put in force by each host that serves it,
    /// for that host's calls.
    pub(crate) fn new(provider: Arc<dyn ConnectionProvider>) -> Self {
        crate::capabilities::install_for_compiled_in();
        Self(provider)
    }

    /// Calls the provider's `validate_fields`. It may panic: the caller
    /// (`crate::call`) contains that.
    pub(crate) async fn validate_fields(&self, fields: CredentialFields) -> ProviderOutcome {
        ProviderOutcome::from(self.0.validate_fields(&fields).await)
    }
}
