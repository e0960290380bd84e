//! Calling a provider: the one place a registered provider's code runs.
//!
//! [`validate`] is the whole policy, in order: the form's rules (all field
//! errors at once; the provider is not called when any fails), a slot from
//! the bounds on calls in flight (the provider's, its plugin's when the
//! operator set one, the host's), the backend's call on a thread
//! of its own under the host's timeout (panics contained), the submitted
//! secrets scrubbed from whatever comes back, and the outcome mapped to a
//! [`Verdict`]. [`RegisteredProvider::call_provider`] is the same call and the same mapping
//! without the policy, for measuring the raw cost of a call. The backend
//! (compiled in, in process, ...) is chosen by the entry: see
//! [`crate::backend`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use connhost_plugin_api::panic::CatchPanic;
use connhost_plugin_api::schema::is_filled;
use connhost_plugin_api::{assemble_credential_document, CredentialFields, FieldError};
use tracing::Instrument as _;

use crate::backend::ProviderOutcome;
use crate::capabilities::AsBuiltin;
use crate::in_flight::{Full, Slot};
use crate::model::verdict::{Accepted, BusyBound, CredentialDocument, Verdict};
use crate::redact::{RedactedFields, Secrets, WithSecrets};
use crate::registry::RegisteredProvider;
use crate::state::HostState;

/// The host's bounds on one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The longest a provider may take.
    pub(crate) timeout: Duration,
    /// The most calls one provider's code may have in flight.
    pub(crate) max_in_flight: usize,
    /// The most calls its plugin's providers may have in flight together.
    pub(crate) plugin_max_concurrent: Option<usize>,
}

/// Validates a submission with the host's whole policy (see the module's
/// documentation). Plugin log lines emitted while the provider runs land
/// in a `validate` span naming the provider.
pub(crate) async fn validate(
    entry: Arc<RegisteredProvider>,
    fields: CredentialFields,
    limits: Limits,
    host: &Arc<HostState>,
) -> Verdict {
    match begin(&entry, fields) {
        Begun::Refused(verdict) => verdict,
        Begun::Checked(checked) => checked.call(limits, host).await,
    }
}

/// A submission the form's rules let through ([`begin`]), in its
/// `validate` span: what is left is the call ([`Checked::call`]).
pub(crate) struct Checked {
    entry: Arc<RegisteredProvider>,
    fields: CredentialFields,
    span: tracing::Span,
}

/// The first step of [`validate`]: the form's rules.
pub(crate) enum Begun {
    /// The form's rules refused the submission: the verdict
    /// (`InvalidFields`); the provider is not called.
    Refused(Verdict),
    /// The submission passed the rules: the provider is to be called.
    Checked(Checked),
}

/// Checks a submission against the form's rules, in its `validate` span,
/// without a future: a refusal (every empty submission of a form, say) is
/// answered at once, and the call is only prepared when it is needed.
pub(crate) fn begin(entry: &Arc<RegisteredProvider>, fields: CredentialFields) -> Begun {
    let span = tracing::info_span!("validate", provider = entry.id());
    match span.in_scope(|| form_rules(entry, fields)) {
        Ok(fields) => Begun::Checked(Checked {
            entry: entry.clone(),
            fields,
            span,
        }),
        Err(verdict) => Begun::Refused(verdict),
    }
}

impl Checked {
    /// The provider to call.
    pub(crate) fn entry(&self) -> &RegisteredProvider {
        &self.entry
    }

    /// The rest of the policy, in the submission's `validate` span.
    pub(crate) async fn call(self, limits: Limits, host: &Arc<HostState>) -> Verdict {
        let Checked {
            entry,
            fields,
            span,
        } = self;
        run(entry, fields, limits, host).instrument(span).await
    }
}

/// The form's rules: the fields the form knows, or the `InvalidFields`
/// verdict (logged) when the submission breaks them.
fn form_rules(
    entry: &RegisteredProvider,
    mut fields: CredentialFields,
) -> Result<CredentialFields, Verdict> {
    let schema = entry.descriptor().form_schema.as_ref();
    if let Some(schema) = schema {
        fields.retain(|name, _| schema.field(name).is_some());
        let errors = schema.check(&fields);
        if !errors.is_empty() {
            tracing::info!(
                errors = errors.len(),
                "submission refused by the form's rules"
            );
            return Err(Verdict::InvalidFields(errors));
        }
    }
    if schema.is_none() && !fields.keys().any(|name| is_filled(&fields, name)) {
        return Err(Verdict::InvalidFields(vec![FieldError {
            field: None,
            message: "Provide the credential to check (for an OAuth provider, its access_token)."
                .to_owned(),
        }]));
    }
    Ok(fields)
}

/// The policy after the form's rules (which `fields` passed).
async fn run(
    entry: Arc<RegisteredProvider>,
    fields: CredentialFields,
    limits: Limits,
    host: &Arc<HostState>,
) -> Verdict {
    let schema = entry.descriptor().form_schema.as_ref();
    // Taken before anything else is spent on the call, and held by the
    // thread that runs it until that thread is free again.
    let plugin_bound = limits
        .plugin_max_concurrent
        .map(|max| (entry.plugin_scope(), max));
    let (library, handle) = entry.backend().identity();
    let slot = match host.bounds.try_acquire(
        (entry.id(), library, handle),
        limits.max_in_flight,
        plugin_bound,
    ) {
        Ok(slot) => slot,
        Err(full) => return busy(full),
    };
    tracing::debug!(fields = ?RedactedFields::new(schema, &fields), "validating");
    let secrets = Arc::new(Secrets::of(schema, &fields));
    let started = Instant::now();
    let outcome = if entry.backend().runs_here() {
        run_on_own_thread(
            entry,
            slot,
            fields.clone(),
            secrets.clone(),
            limits.timeout,
            host.builtin_token(),
        )
        .await
    } else {
        // An isolated provider only awaits its worker: no thread of its
        // own, and a timeout drops the wait (which cancels the validation
        // in the worker, or stops the worker).
        let _slot = slot;
        let validating = WithSecrets::new(
            entry.plugin_scope(),
            secrets.clone(),
            backend_call(&entry, fields.clone()),
        );
        tokio::time::timeout(limits.timeout, validating).await.ok()
    };
    let verdict = match outcome {
        None => Verdict::TimedOut {
            after: limits.timeout,
        },
        Some(outcome) => {
            let document = assemble_credential_document(&fields).map(CredentialDocument::new);
            verdict_of(outcome, Some(&secrets), document)
        }
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &verdict {
        Verdict::ProviderFault { message, .. } => {
            tracing::error!(elapsed_ms, "provider fault: {message}")
        }
        Verdict::TimedOut { .. } => tracing::warn!(elapsed_ms, "validation timed out"),
        other => tracing::info!(outcome = other.outcome().as_str(), elapsed_ms, "validated"),
    }
    verdict
}

/// The answer when a bound on calls in flight is reached.
fn busy(full: Full) -> Verdict {
    match full {
        Full::Provider(limit) => {
            tracing::warn!(
                limit,
                "provider busy: its validations in flight are at its bound"
            );
            Verdict::Busy {
                limit,
                bound: BusyBound::Provider,
            }
        }
        Full::Plugin(limit) => {
            tracing::warn!(
                limit,
                "plugin busy: its providers' validations in flight are at its bound"
            );
            Verdict::Busy {
                limit,
                bound: BusyBound::Plugin,
            }
        }
        Full::Host(limit) => {
            tracing::warn!(
                limit,
                "host busy: validations in flight across all providers are at the bound"
            );
            Verdict::Busy {
                limit,
                bound: BusyBound::Host,
            }
        }
    }
}

impl RegisteredProvider {
    /// Calls the provider's `validate_fields` directly, on the caller's
    /// task: panics are caught, but there are no form rules, no timeout, no
    /// thread of its own, no bound on calls in flight and no scrubbing. For
    /// embedders that apply their own policy, and for measuring the raw
    /// cost of a call; everyone else wants [`crate::Connhost::validate`].
    /// A valid verdict carries no credential document. Called this way, a
    /// compiled-in provider belongs to no host: it reads no settings and
    /// may call no address.
    pub async fn call_provider(&self, fields: CredentialFields) -> Verdict {
        verdict_of(backend_call(self, fields).await, None, None)
    }
}

/// The backend's answer, with a panic while it is polled turned into a
/// fault (the one place the host contains a provider's panic).
async fn backend_call(entry: &RegisteredProvider, fields: CredentialFields) -> ProviderOutcome {
    match CatchPanic::new(entry.backend().validate_fields(fields)).await {
        Ok(outcome) => outcome,
        Err(panic) => ProviderOutcome::Fault(format!("panicked while validating: {panic}")),
    }
}

/// Maps what the backend answered to a verdict: the one place this is
/// done. With `secrets`, every text that came back is scrubbed of them.
fn verdict_of(
    outcome: ProviderOutcome,
    secrets: Option<&Secrets>,
    document: Option<CredentialDocument>,
) -> Verdict {
    let scrub = |message: String| match secrets {
        Some(secrets) => secrets.scrub(&message).into_owned(),
        None => message,
    };
    match outcome {
        ProviderOutcome::Valid(validation) => Verdict::Valid(Accepted {
            provider_username: validation.provider_username.map(scrub),
            provider_metadata: validation.provider_metadata.map(|mut metadata| {
                if let Some(secrets) = secrets {
                    secrets.scrub_json(&mut metadata);
                }
                metadata
            }),
            document,
        }),
        ProviderOutcome::Rejected(message) => Verdict::Rejected {
            message: scrub(message),
        },
        ProviderOutcome::Inconclusive(message) => Verdict::Inconclusive {
            message: scrub(message),
        },
        ProviderOutcome::Fault(message) => Verdict::ProviderFault {
            message: format!("The provider failed: {}", scrub(message)),
            retryable: false,
        },
        ProviderOutcome::WorkerFault { message, retryable } => Verdict::ProviderFault {
            message: format!("The provider failed: {}", scrub(message)),
            retryable,
        },
    }
}

/// Runs a provider's validation on a blocking-pool thread of its own,
/// driven by the host's runtime, and waits for it at most `timeout`.
/// Returns `None` on timeout.
///
/// Polling a provider inline would let one that blocks its thread (blocking
/// I/O or a busy loop inside `async`) hold a runtime worker and outlive any
/// timeout; on its own thread, the caller's timeout always fires, and the
/// future is dropped (cancelling its requests) as soon as it yields. A
/// provider that never yields keeps only its own thread, and its `slot`
/// (so the provider's bound on validations in flight counts it).
async fn run_on_own_thread(
    entry: Arc<RegisteredProvider>,
    slot: Slot,
    fields: CredentialFields,
    secrets: Arc<Secrets>,
    timeout: Duration,
    builtin_token: u64,
) -> Option<ProviderOutcome> {
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    let mut task = AbortUnstarted(tokio::task::spawn_blocking(move || {
        let _slot = slot;
        runtime.block_on(
            async move {
                // A compiled-in provider's settings, egress and HTTP
                // bounds are its host's while it is polled.
                let validating = WithSecrets::new(
                    entry.plugin_scope(),
                    secrets,
                    AsBuiltin::new(builtin_token, backend_call(&entry, fields)),
                );
                tokio::select! {
                    // A caller that gave up before this thread started:
                    // the provider is never called.
                    biased;
                    _ = cancelled => None,
                    outcome = validating => Some(outcome),
                }
            }
            .instrument(span),
        )
    }));
    let outcome = match tokio::time::timeout(timeout, &mut task.0).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(failed)) => Some(ProviderOutcome::Fault(format!(
            "the validation task failed: {failed}"
        ))),
        Err(_) => None,
    };
    drop(cancel);
    outcome
}

/// A blocking task that is aborted when its caller stops waiting: one that
/// has not started yet never runs (one that runs finishes on its own).
struct AbortUnstarted<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortUnstarted<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
