//! The combined API: one set of providers, built-in and loaded, behind
//! list / describe / validate. The CLI and the HTTP service are thin layers
//! over [`Connhost`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connhost_plugin_api::{
    assemble_credential_document, ConnectionType, CredentialFields, CredentialFormSchema,
};
use serde::Serialize;
use tracing::Instrument as _;

use crate::loader::{load_directory, LoadOptions, LoadReport};
use crate::redact::{RedactedFields, Secrets, WithSecrets};
use crate::registry::{Origin, ProviderRegistry, RegisteredProvider};
use crate::validation::{Accepted, CredentialDocument, ProviderOutcome, Verdict};

/// The default bound on one validation.
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How to assemble a [`Connhost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The folder to load plugins from; `None` loads none.
    pub plugins_dir: Option<PathBuf>,
    /// Register experimental-only built-in providers too.
    pub experimental: bool,
    /// Register the providers compiled into the binary.
    pub builtins: bool,
    /// The longest a provider may take to validate.
    pub validation_timeout: Duration,
    /// Per-plugin settings (plugin name -> key -> value); the built-in
    /// providers' scope is `"builtin"`.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            plugins_dir: None,
            experimental: false,
            builtins: true,
            validation_timeout: DEFAULT_VALIDATION_TIMEOUT,
            settings: BTreeMap::new(),
        }
    }
}

impl HostConfig {
    /// The default configuration, loading plugins from `dir`.
    pub fn with_plugins_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            plugins_dir: Some(dir.into()),
            ..Self::default()
        }
    }
}

/// A provider as listed by the API: the JSON contract of
/// `connhost providers --json` and `GET /v1/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    /// Stable id.
    pub provider_id: String,
    /// Name shown to users.
    pub display_name: String,
    /// One sentence.
    pub description: String,
    /// A Lucide icon name.
    pub icon: String,
    /// `"oauth"` or `"api_key"`.
    #[schema(value_type = crate::schema_doc::ConnectionType)]
    pub connection_type: ConnectionType,
    /// The credential form (`null` for OAuth).
    #[schema(value_type = Option<crate::schema_doc::CredentialFormSchema>)]
    pub form_schema: Option<CredentialFormSchema>,
    /// Registered only because experimental features are on.
    pub experimental: bool,
    /// Built in, or the plugin file it came from.
    pub origin: Origin,
}

impl From<&RegisteredProvider> for ProviderInfo {
    fn from(entry: &RegisteredProvider) -> Self {
        let d = entry.descriptor();
        Self {
            provider_id: d.provider_id.clone(),
            display_name: d.display_name.clone(),
            description: d.description.clone(),
            icon: d.icon.clone(),
            connection_type: d.connection_type,
            form_schema: d.form_schema.clone(),
            experimental: entry.is_experimental(),
            origin: entry.origin().clone(),
        }
    }
}

/// No provider has the requested id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no provider \"{provider_id}\" is registered (known: {})", known.join(", "))]
pub struct UnknownProvider {
    /// The requested id.
    pub provider_id: String,
    /// The ids that are registered.
    pub known: Vec<String>,
}

/// connhost's core: the provider set and the operations on it.
#[derive(Debug, Clone)]
pub struct Connhost {
    registry: Arc<ProviderRegistry>,
    report: Arc<LoadReport>,
    validation_timeout: Duration,
}

impl Connhost {
    /// Registers the built-in providers, loads the plugins folder, and
    /// returns the combined set. Never fails: files that do not load are in
    /// [`load_report`](Self::load_report).
    pub fn start(config: &HostConfig) -> Self {
        crate::capabilities::install_for_builtins(
            config
                .settings
                .get(crate::capabilities::BUILTIN_SCOPE)
                .cloned()
                .unwrap_or_default(),
        );
        let mut registry = ProviderRegistry::new();
        if config.builtins {
            registry.register_builtins(config.experimental);
        }
        let report = match &config.plugins_dir {
            Some(dir) => load_directory(
                dir,
                &mut registry,
                &LoadOptions {
                    settings: config.settings.clone(),
                },
            ),
            None => LoadReport::default(),
        };
        Self::from_parts(registry, report, config.validation_timeout)
    }

    /// Serves a registry assembled by the embedder.
    pub fn from_parts(
        registry: ProviderRegistry,
        report: LoadReport,
        validation_timeout: Duration,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            report: Arc::new(report),
            validation_timeout,
        }
    }

    /// The provider set.
    pub fn registry(&self) -> &ProviderRegistry {
        &self.registry
    }

    /// What loaded from the plugins folder and what did not.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// Every provider, ordered by id.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.registry
            .list()
            .iter()
            .map(|e| ProviderInfo::from(e.as_ref()))
            .collect()
    }

    fn entry(&self, provider_id: &str) -> Result<Arc<RegisteredProvider>, UnknownProvider> {
        self.registry
            .get(provider_id)
            .ok_or_else(|| UnknownProvider {
                provider_id: provider_id.to_owned(),
                known: self
                    .registry
                    .list()
                    .iter()
                    .map(|e| e.id().to_owned())
                    .collect(),
            })
    }

    /// One provider.
    pub fn provider(&self, provider_id: &str) -> Result<ProviderInfo, UnknownProvider> {
        self.entry(provider_id)
            .map(|e| ProviderInfo::from(e.as_ref()))
    }

    /// A provider's credential form (`None` for OAuth providers).
    pub fn schema(
        &self,
        provider_id: &str,
    ) -> Result<Option<CredentialFormSchema>, UnknownProvider> {
        self.entry(provider_id)
            .map(|e| e.descriptor().form_schema.clone())
    }

    /// Validates a submission: the form's rules first (all field errors at
    /// once; the provider is not called when any fails), then the provider
    /// under the host's timeout, then, on success, the credential document.
    ///
    /// Empty fields that have a default in the form take it. Keys that are
    /// not in the form are dropped. Messages that come back from the
    /// provider are scrubbed of the submission's secrets.
    pub async fn validate(
        &self,
        provider_id: &str,
        fields: CredentialFields,
    ) -> Result<Verdict, UnknownProvider> {
        let entry = self.entry(provider_id)?;
        // Plugin log lines emitted while the provider is polled land in
        // this span.
        let span = tracing::info_span!("validate", provider = provider_id);
        Ok(self.run(&entry, fields).instrument(span).await)
    }

    async fn run(&self, entry: &RegisteredProvider, mut fields: CredentialFields) -> Verdict {
        let schema = entry.descriptor().form_schema.as_ref();
        if let Some(schema) = schema {
            fields.retain(|name, _| schema.field(name).is_some());
            for field in &schema.fields {
                if let Some(default) = &field.default_value {
                    let value = fields.entry(field.name.clone()).or_default();
                    if value.trim().is_empty() {
                        *value = default.clone();
                    }
                }
            }
            let errors = schema.check(&fields);
            if !errors.is_empty() {
                tracing::info!(
                    errors = errors.len(),
                    "submission refused by the form's rules"
                );
                return Verdict::InvalidFields(errors);
            }
        }
        tracing::debug!(fields = ?RedactedFields::new(schema, &fields), "validating");
        let secrets = Arc::new(Secrets::of(schema, &fields));
        let started = Instant::now();
        let running = WithSecrets::new(secrets.clone(), entry.run_validation(fields.clone()));
        let outcome = tokio::time::timeout(self.validation_timeout, running).await;
        let scrub = |message: String| secrets.scrub(&message).into_owned();
        let verdict = match outcome {
            Err(_) => Verdict::TimedOut {
                after: self.validation_timeout,
            },
            Ok(ProviderOutcome::Valid(validation)) => Verdict::Valid(Accepted {
                provider_username: validation.provider_username,
                provider_metadata: validation.provider_metadata,
                document: assemble_credential_document(&fields).map(CredentialDocument::new),
            }),
            Ok(ProviderOutcome::Rejected(message)) => Verdict::Rejected {
                message: scrub(message),
            },
            Ok(ProviderOutcome::Inconclusive(message)) => Verdict::Inconclusive {
                message: scrub(message),
            },
            Ok(ProviderOutcome::Fault(message)) => Verdict::ProviderFault {
                message: format!("The provider failed: {}", scrub(message)),
            },
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &verdict {
            Verdict::ProviderFault { message } => {
                tracing::error!(elapsed_ms, "provider fault: {message}")
            }
            Verdict::TimedOut { .. } => {
                tracing::warn!(elapsed_ms, "validation timed out")
            }
            other => {
                tracing::info!(outcome = other.outcome().as_str(), elapsed_ms, "validated")
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_can_be_shared_across_threads_and_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Connhost>();
        assert_send_sync::<Verdict>();
    }
}
