//! Backends: the code behind a registered provider, and the one seam where
//! a new way of running providers slots in.
//!
//! [`Backend`] is a closed enum on purpose: the registry stores it, the
//! caller ([`crate::call`]) asks it for a [`ProviderOutcome`], and nothing
//! else looks inside. A new backend is a variant here, with its module
//! beside [`compiled_in`], [`in_process`] and [`isolated`] and one arm in
//! [`Backend::validate_fields`] and [`Backend::identity`]; a way to make a
//! `plugin::Plugin` of it; and a branch in `catalog/placement.rs`, which
//! decides per file where a plugin runs. What operators see of it (the
//! configuration, the report, the CLI and HTTP views) grows with it, as it
//! did for the isolated backend.

mod compiled_in;
mod in_process;
pub(crate) mod isolated;

use connhost_plugin_api::{
    ConnectionValidation, CredentialFields, ValidationError, ValidationErrorKind,
};

pub(crate) use compiled_in::CompiledIn;
pub(crate) use in_process::InProcess;
pub(crate) use isolated::Isolated;

/// The code behind a registered provider.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// Compiled into this binary, called directly.
    CompiledIn(CompiledIn),
    /// Inside a plugin library loaded into this process, called through
    /// its ABI-stable module.
    InProcess(InProcess),
    /// Inside a plugin library loaded into a worker process of its own,
    /// called over its socket.
    Isolated(Isolated),
}

/// What a provider's `validate_fields` produced, before the host adds its
/// own checks (timeout, scrubbing, the form's rules): the backend's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ProviderOutcome {
    /// The credential works.
    Valid(ConnectionValidation),
    /// The vendor refused it.
    Rejected(String),
    /// No decision (network, vendor outage).
    Inconclusive(String),
    /// The provider failed (panicked, answered nonsense).
    Fault(String),
    /// An isolated provider's worker process failed (crashed, was stopped,
    /// is parked); `retryable` when a new worker may answer.
    WorkerFault {
        /// What happened.
        message: String,
        /// Whether asking again may help.
        retryable: bool,
    },
}

impl ProviderOutcome {
    /// An accepted credential as a plugin reports it across a boundary
    /// (the ABI, a worker's socket): the username, and the metadata as
    /// JSON text, which makes it a fault when it is not JSON.
    pub(crate) fn valid_from_plugin(username: Option<String>, metadata_json: Option<&str>) -> Self {
        let provider_metadata = match metadata_json.map(serde_json::from_str) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => {
                return ProviderOutcome::Fault(format!("returned metadata that is not JSON: {e}"))
            }
        };
        ProviderOutcome::Valid(ConnectionValidation {
            provider_username: username,
            provider_metadata,
        })
    }

    /// An accepted credential as an in-process plugin reports it through
    /// `validate_lent`: the metadata in `value_codec`'s encoding, which
    /// makes it a fault when it does not decode.
    pub(crate) fn valid_from_encoded(username: Option<String>, metadata: &[u8]) -> Self {
        match connhost_plugin_api::value_codec::decode(metadata) {
            Ok(value) => ProviderOutcome::Valid(ConnectionValidation {
                provider_username: username,
                provider_metadata: Some(value),
            }),
            Err(e) => {
                ProviderOutcome::Fault(format!("returned metadata that does not decode: {e}"))
            }
        }
    }
}

impl From<Result<ConnectionValidation, ValidationError>> for ProviderOutcome {
    fn from(result: Result<ConnectionValidation, ValidationError>) -> Self {
        match result {
            Ok(validation) => ProviderOutcome::Valid(validation),
            Err(error) => match error.kind {
                ValidationErrorKind::Rejected => ProviderOutcome::Rejected(error.message),
                ValidationErrorKind::Inconclusive => ProviderOutcome::Inconclusive(error.message),
            },
        }
    }
}

impl Backend {
    /// Runs the provider's validation. There is no timeout, no scrubbing
    /// and no panic containment here: [`crate::call`] adds those (a
    /// plugin's own panics are also caught on its side of the boundary,
    /// since none may cross it).
    pub(crate) async fn validate_fields(&self, fields: CredentialFields) -> ProviderOutcome {
        match self {
            Backend::CompiledIn(provider) => provider.validate_fields(fields).await,
            Backend::InProcess(provider) => provider.validate_fields(fields).await,
            Backend::Isolated(provider) => provider.validate_fields(fields).await,
        }
    }

    /// Which code this is in this process (a library's address and the
    /// provider's handle in it; `(0, 0)` when compiled in): two entries
    /// with the same id and identity share one bound on calls in flight.
    pub(crate) fn identity(&self) -> (usize, u32) {
        match self {
            Backend::CompiledIn(_) => (0, 0),
            Backend::InProcess(provider) => provider.identity(),
            Backend::Isolated(provider) => provider.identity(),
        }
    }

    /// Whether the provider's code runs in this process, and so may hold a
    /// thread (an isolated one only ever awaits its worker's answer).
    pub(crate) fn runs_here(&self) -> bool {
        !matches!(self, Backend::Isolated(_))
    }

    /// Its worker's status, when the provider is isolated.
    pub(crate) fn worker_status(&self) -> Option<crate::model::worker_status::WorkerStatus> {
        match self {
            Backend::Isolated(provider) => Some(provider.status()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_that_does_not_decode_is_a_fault_naming_what_and_where() {
        let mut encoded = Vec::new();
        connhost_plugin_api::value_codec::encode(
            &serde_json::json!({"region": "eu"}),
            &mut encoded,
        )
        .unwrap();
        assert_eq!(
            ProviderOutcome::valid_from_encoded(Some("a".into()), &encoded),
            ProviderOutcome::Valid(ConnectionValidation {
                provider_username: Some("a".into()),
                provider_metadata: Some(serde_json::json!({"region": "eu"})),
            })
        );
        encoded.truncate(encoded.len() - 1);
        assert_eq!(
            ProviderOutcome::valid_from_encoded(Some("a".into()), &encoded),
            ProviderOutcome::Fault(
                "returned metadata that does not decode: a length longer than the input at byte 16"
                    .into()
            )
        );
    }
}
