//! The in-process plugin backend: a provider inside a plugin library
//! loaded into this process, called through the ABI-stable module.

use std::fmt;

use abi_stable::std_types::RVec;
use connhost_plugin_api::abi::{outcome, FfiField, PluginModuleRef};
use connhost_plugin_api::CredentialFields;

use super::ProviderOutcome;

/// A handle to one provider of a loaded plugin. Cheap to clone; the library
/// it points into is never unloaded.
#[derive(Clone, Copy)]
pub(crate) struct InProcess {
    module: PluginModuleRef,
    handle: u32,
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcess")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    pub(crate) fn new(module: PluginModuleRef, handle: u32) -> Self {
        Self { module, handle }
    }

    /// The library's module address and the provider's handle in it:
    /// which code this is, in this process.
    pub(crate) fn identity(&self) -> (usize, u32) {
        (self.module.0.to_raw_ptr() as usize, self.handle)
    }

    /// Calls the plugin's validation. The SDK on the other side catches
    /// panics and reports them as [`outcome::FAULT`].
    pub(crate) async fn validate_fields(&self, fields: CredentialFields) -> ProviderOutcome {
        // Each string moves into the vector as is (no copy), and the
        // vector is allocated once, at its final size.
        let mut ffi_fields = RVec::with_capacity(fields.len());
        for (name, value) in fields {
            ffi_fields.push(FfiField {
                name: name.into(),
                value: value.into(),
            });
        }
        let fields = ffi_fields;
        let result = (self.module.validate())(self.handle, fields).await;
        match result.kind {
            outcome::VALID => ProviderOutcome::valid_from_plugin(
                result.username.into_option().map(|s| s.into_string()),
                result
                    .metadata_json
                    .as_ref()
                    .map(|json| json.as_str())
                    .into_option(),
            ),
            outcome::REJECTED => ProviderOutcome::Rejected(result.message.into_string()),
            outcome::INCONCLUSIVE => ProviderOutcome::Inconclusive(result.message.into_string()),
            outcome::FAULT => ProviderOutcome::Fault(result.message.into_string()),
            other => ProviderOutcome::Fault(format!("returned an unknown outcome code {other}")),
        }
    }
}
