//! Verdicts: what validating a submission concluded, told apart so that a
//! wrong credential is never reported as a network problem or the reverse.

use std::fmt;
use std::time::Duration;

use connhost_plugin_api::FieldError;
use serde::Serialize;

/// An assembled credential document (see
/// [`connhost_plugin_api::assemble_credential_document`]). It holds secrets:
/// its `Debug` and `Display` never show them; call
/// [`expose`](Self::expose) where the value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialDocument(String);

impl CredentialDocument {
    pub(crate) fn new(document: String) -> Self {
        Self(document)
    }

    /// The document itself, for storing. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredentialDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialDocument(<redacted, {} bytes>)", self.0.len())
    }
}

/// A validation that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The account the credential belongs to, when the provider says.
    pub provider_username: Option<String>,
    /// Whatever else the provider reported.
    pub provider_metadata: Option<serde_json::Value>,
    /// The credential document to store, assembled from the submitted
    /// fields; `None` when every field was empty (keyless providers).
    pub document: Option<CredentialDocument>,
}

/// The answer to "is this credential good?".
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The provider accepted the credential.
    Valid(Accepted),
    /// The submission breaks the form's rules; the provider was not called.
    InvalidFields(Vec<FieldError>),
    /// The provider says the credential is wrong.
    Rejected {
        /// The provider's explanation.
        message: String,
    },
    /// The check could not be completed (network failure, rate limit, vendor
    /// outage). Says nothing about the credential; worth retrying.
    Inconclusive {
        /// What went wrong.
        message: String,
    },
    /// The provider did not answer within the host's timeout.
    TimedOut {
        /// The timeout that passed.
        after: Duration,
    },
    /// The provider misbehaved: it panicked, returned something unusable,
    /// or its worker process crashed.
    ProviderFault {
        /// What happened.
        message: String,
        /// Whether asking again may give another answer: true when an
        /// isolated plugin's worker crashed and is being restarted (the
        /// crash may have been another validation's doing).
        retryable: bool,
    },
    /// The provider already had as many validations in flight as it may
    /// (see [`crate::HostConfig::max_in_flight`]), or its plugin, or the
    /// host; it was not called. Says nothing about the credential; worth
    /// retrying shortly.
    Busy {
        /// The bound that was reached.
        limit: usize,
        /// Whose bound it is.
        bound: BusyBound,
    },
}

/// Whose bound on validations in flight a [`Verdict::Busy`] reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyBound {
    /// The provider's own ([`crate::PluginPolicy::max_in_flight`], or the
    /// host's default for each provider).
    Provider,
    /// Its plugin's, across all its providers
    /// ([`crate::PluginPolicy::max_concurrent`]).
    Plugin,
    /// The host's, across all providers ([`crate::HOST_MAX_IN_FLIGHT`]).
    Host,
}

/// The machine-readable name of a verdict's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// [`Verdict::Valid`].
    Valid,
    /// [`Verdict::InvalidFields`].
    InvalidFields,
    /// [`Verdict::Rejected`].
    Rejected,
    /// [`Verdict::Inconclusive`].
    Inconclusive,
    /// [`Verdict::TimedOut`].
    TimedOut,
    /// [`Verdict::ProviderFault`].
    ProviderFault,
    /// [`Verdict::Busy`].
    Busy,
}

impl Outcome {
    /// The wire name (`"rejected"`, `"timed_out"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::InvalidFields => "invalid_fields",
            Outcome::Rejected => "rejected",
            Outcome::Inconclusive => "inconclusive",
            Outcome::TimedOut => "timed_out",
            Outcome::ProviderFault => "provider_fault",
            Outcome::Busy => "busy",
        }
    }
}

impl Verdict {
    /// Which outcome this is.
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Valid(_) => Outcome::Valid,
            Verdict::InvalidFields(_) => Outcome::InvalidFields,
            Verdict::Rejected { .. } => Outcome::Rejected,
            Verdict::Inconclusive { .. } => Outcome::Inconclusive,
            Verdict::TimedOut { .. } => Outcome::TimedOut,
            Verdict::ProviderFault { .. } => Outcome::ProviderFault,
            Verdict::Busy { .. } => Outcome::Busy,
        }
    }

    /// Whether the credential was accepted.
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid(_))
    }

    /// Whether asking again with the same credential may give another
    /// answer (inconclusive, timed out, busy, or a crashed worker).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Verdict::Inconclusive { .. }
                | Verdict::TimedOut { .. }
                | Verdict::Busy { .. }
                | Verdict::ProviderFault {
                    retryable: true,
                    ..
                }
        )
    }

    /// A one-line explanation for a failed verdict (`None` when valid).
    pub fn error_message(&self) -> Option<String> {
        match self {
            Verdict::Valid(_) => None,
            Verdict::InvalidFields(errors) => Some(
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Verdict::Rejected { message }
            | Verdict::Inconclusive { message }
            | Verdict::ProviderFault { message, .. } => Some(message.clone()),
            Verdict::TimedOut { after } => Some(format!(
                "The provider did not answer within {:.1} s.",
                after.as_secs_f64()
            )),
            Verdict::Busy {
                limit,
                bound: BusyBound::Provider,
            } => Some(format!(
                "The provider is busy: it already has {limit} validations in flight, the most it is allowed. Retry shortly."
            )),
            Verdict::Busy {
                limit,
                bound: BusyBound::Plugin,
            } => Some(format!(
                "The provider's plugin is busy: its providers already have {limit} validations in flight, the most the operator allows it. Retry shortly."
            )),
            Verdict::Busy {
                limit,
                bound: BusyBound::Host,
            } => Some(format!(
                "connhost is busy: {limit} validations are in flight across all providers, the most it runs at once. Retry shortly."
            )),
        }
    }
}
