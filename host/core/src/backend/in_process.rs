//! The in-process plugin backend: a provider inside a plugin library
//! loaded into this process, called through the ABI-stable module.

use std::cell::Cell;
use std::fmt;

use abi_stable::std_types::{RSlice, RVec};
use async_ffi::BorrowingFfiFuture;
use connhost_plugin_api::abi::{outcome, FfiField, FfiFieldRef, FfiVerdict, PluginModuleRef};
use connhost_plugin_api::CredentialFields;
use smallvec::SmallVec;

use super::ProviderOutcome;

/// [`connhost_plugin_api::abi::PluginModule::validate_lent`]'s type.
type ValidateLent = for<'a> extern "C" fn(
    u32,
    RSlice<'a, FfiFieldRef<'a>>,
    &'a mut RVec<u8>,
) -> BorrowingFfiFuture<'a, FfiVerdict>;

/// The most a metadata buffer may keep between calls: a provider that
/// once reported large metadata does not hold on to that memory.
const KEPT_BUFFER: usize = 4096;

thread_local! {
    /// A metadata buffer for the next call on this thread, kept empty:
    /// most calls then allocate none.
    static BUFFER: Cell<RVec<u8>> = const { Cell::new(RVec::new()) };
}

/// A handle to one provider of a loaded plugin. Cheap to clone; the library
/// it points into is never unloaded.
#[derive(Clone, Copy)]
pub(crate) struct InProcess {
    module: PluginModuleRef,
    handle: u32,
    /// The module's `validate_lent`, when the plugin was built against an
    /// API that has it (0.1.1 on).
    validate_lent: Option<ValidateLent>,
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
        Self {
            module,
            handle,
            validate_lent: module.validate_lent(),
        }
    }

    /// The library's module address and the provider's handle in it:
    /// which code this is, in this process.
    pub(crate) fn identity(&self) -> (usize, u32) {
        (self.module.0.to_raw_ptr() as usize, self.handle)
    }

    /// Calls the plugin's validation. The SDK on the other side catches
    /// panics and reports them as [`outcome::FAULT`].
    pub(crate) async fn validate_fields(&self, fields: CredentialFields) -> ProviderOutcome {
        match self.validate_lent {
            Some(validate) => {
                // The strings are lent for the call, from a list on the
                // stack for a form of up to 8 fields: nothing to allocate,
                // and the fields are dropped here, after the call.
                let mut lent = SmallVec::<[FfiFieldRef<'_>; 8]>::new();
                lent.extend(fields.iter().map(|(name, value)| FfiFieldRef {
                    name: name.as_str().into(),
                    value: value.as_str().into(),
                }));
                let mut buffer = BUFFER.try_with(Cell::take).unwrap_or_default();
                let verdict = validate(self.handle, RSlice::from_slice(&lent), &mut buffer).await;
                let outcome = outcome_of(
                    verdict.kind,
                    verdict.message,
                    verdict.username,
                    verdict
                        .has_metadata
                        .then_some(Metadata::Encoded(buffer.as_slice())),
                );
                if buffer.capacity() <= KEPT_BUFFER {
                    buffer.clear();
                    let _ = BUFFER.try_with(|kept| kept.set(buffer));
                }
                outcome
            }
            None => self.validate_handing_over(fields).await,
        }
    }

    /// The call through `validate`, which plugins built against 0.1.0
    /// have alone: the fields are handed over, the metadata is JSON text.
    async fn validate_handing_over(&self, fields: CredentialFields) -> ProviderOutcome {
        // Each string moves into the vector as is (no copy), and the
        // vector is allocated once, at its final size.
        let mut ffi_fields = RVec::with_capacity(fields.len());
        for (name, value) in fields {
            ffi_fields.push(FfiField {
                name: name.into(),
                value: value.into(),
            });
        }
        let result = (self.module.validate())(self.handle, ffi_fields).await;
        outcome_of(
            result.kind,
            result.message,
            result.username,
            result
                .metadata_json
                .as_ref()
                .map(|json| Metadata::Json(json.as_str()))
                .into_option(),
        )
    }
}

/// An accepted validation's metadata as it crossed.
enum Metadata<'a> {
    Json(&'a str),
    Encoded(&'a [u8]),
}

/// The outcome a plugin's answer stands for.
fn outcome_of(
    kind: u8,
    message: abi_stable::std_types::RString,
    username: abi_stable::std_types::ROption<abi_stable::std_types::RString>,
    metadata: Option<Metadata<'_>>,
) -> ProviderOutcome {
    match kind {
        outcome::VALID => {
            let username = username.into_option().map(|s| s.into_string());
            match metadata {
                None => ProviderOutcome::valid_from_plugin(username, None),
                Some(Metadata::Json(json)) => {
                    ProviderOutcome::valid_from_plugin(username, Some(json))
                }
                Some(Metadata::Encoded(encoded)) => {
                    ProviderOutcome::valid_from_encoded(username, encoded)
                }
            }
        }
        outcome::REJECTED => ProviderOutcome::Rejected(message.into_string()),
        outcome::INCONCLUSIVE => ProviderOutcome::Inconclusive(message.into_string()),
        outcome::FAULT => ProviderOutcome::Fault(message.into_string()),
        other => ProviderOutcome::Fault(format!("returned an unknown outcome code {other}")),
    }
}
