//! The combined API: one set of providers, built-in and loaded, behind
//! list / describe / validate. The CLI and the HTTP service are thin layers
//! over [`Connhost`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connhost_plugin_api::schema::is_filled;
use connhost_plugin_api::{
    assemble_credential_document, ConnectionType, CredentialFields, CredentialFormSchema,
};
use serde::Serialize;
use tracing::Instrument as _;

use crate::in_flight::{Full, Slot, DEFAULT_MAX_IN_FLIGHT};
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
    /// The most validations one provider may have in flight (counted until
    /// the thread running each is free again, even past its timeout);
    /// beyond it the provider answers [`Verdict::Busy`] at once.
    pub max_in_flight: usize,
    /// The largest plugin file loaded, in bytes (see
    /// [`LoadOptions::max_plugin_size`]).
    pub max_plugin_size: u64,
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
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_plugin_size: crate::loader::DEFAULT_MAX_PLUGIN_SIZE,
            settings: BTreeMap::new(),
        }
    }
}

impl HostConfig {
    /// What the loader needs of this configuration.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            settings: self.settings.clone(),
            max_plugin_size: self.max_plugin_size,
        }
    }

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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderInfo {
    /// Stable id.
    pub provider_id: String,
    /// Name shown to users.
    pub display_name: String,
    /// One sentence.
    pub description: String,
    /// A Lucide icon name.
    pub icon: String,
    /// `"o_auth"` or `"api_key"`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema_doc::ConnectionType))]
    pub connection_type: ConnectionType,
    /// The credential form (`null` for OAuth).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema_doc::CredentialFormSchema>))]
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
    max_in_flight: usize,
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
        let builtin_failures = if config.builtins {
            registry.register_builtins(config.experimental)
        } else {
            Vec::new()
        };
        let mut report = match &config.plugins_dir {
            Some(dir) => load_directory(dir, &mut registry, &config.load_options()),
            None => LoadReport::default(),
        };
        for failure in &builtin_failures {
            tracing::error!("{failure}");
        }
        report.failed.splice(0..0, builtin_failures);
        Self::from_parts(registry, report, config.validation_timeout)
            .with_max_in_flight(config.max_in_flight)
    }

    /// Serves a registry assembled by the embedder. Built-in providers get
    /// the host's capabilities (HTTP, timers) with default settings, unless
    /// [`start`](Self::start) installed them first.
    pub fn from_parts(
        registry: ProviderRegistry,
        report: LoadReport,
        validation_timeout: Duration,
    ) -> Self {
        crate::capabilities::install_for_builtins(BTreeMap::new());
        Self {
            registry: Arc::new(registry),
            report: Arc::new(report),
            validation_timeout,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Bounds each provider's validations in flight (default
    /// [`DEFAULT_MAX_IN_FLIGHT`]; at least 1): see
    /// [`HostConfig::max_in_flight`].
    #[must_use]
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
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

    /// The registered provider, or which ids exist.
    pub fn entry(&self, provider_id: &str) -> Result<Arc<RegisteredProvider>, UnknownProvider> {
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
    /// A field's default value only seeds the form's input: it is never
    /// filled in here, so a required field left out is an error, and the
    /// credential document holds only what was submitted. Keys that are not
    /// in the form are dropped. Messages that come back from the
    /// provider are scrubbed of the submission's secrets.
    pub async fn validate(
        &self,
        provider_id: &str,
        fields: CredentialFields,
    ) -> Result<Verdict, UnknownProvider> {
        let entry = self.entry(provider_id)?;
        Ok(self.validate_entry(entry, fields).await)
    }

    /// [`Connhost::validate`] with the provider already looked up.
    pub async fn validate_entry(
        &self,
        entry: Arc<RegisteredProvider>,
        fields: CredentialFields,
    ) -> Verdict {
        // Plugin log lines emitted while the provider is polled land in
        // this span.
        let span = tracing::info_span!("validate", provider = entry.id());
        self.run(entry, fields).instrument(span).await
    }

    async fn run(&self, entry: Arc<RegisteredProvider>, mut fields: CredentialFields) -> Verdict {
        let schema = entry.descriptor().form_schema.as_ref();
        if let Some(schema) = schema {
            fields.retain(|name, _| schema.field(name).is_some());
            let errors = schema.check(&fields);
            if !errors.is_empty() {
                tracing::info!(
                    errors = errors.len(),
                    "submission refused by the form's rules"
                );
                return Verdict::InvalidFields(errors);
            }
        }
        if schema.is_none() && !fields.keys().any(|name| is_filled(&fields, name)) {
            return Verdict::InvalidFields(vec![connhost_plugin_api::FieldError {
                field: None,
                message:
                    "Provide the credential to check (for an OAuth provider, its access_token)."
                        .to_owned(),
            }]);
        }
        // Taken before anything else is spent on the call, and held by the
        // thread that runs it until that thread is free again.
        let slot = match entry.in_flight().try_acquire(self.max_in_flight) {
            Ok(slot) => slot,
            Err(Full::Provider(limit)) => {
                tracing::warn!(
                    limit,
                    "provider busy: its validations in flight are at its bound"
                );
                return Verdict::Busy {
                    limit,
                    host_wide: false,
                };
            }
            Err(Full::Host(limit)) => {
                tracing::warn!(
                    limit,
                    "host busy: validations in flight across all providers are at the bound"
                );
                return Verdict::Busy {
                    limit,
                    host_wide: true,
                };
            }
        };
        tracing::debug!(fields = ?RedactedFields::new(schema, &fields), "validating");
        let secrets = Arc::new(Secrets::of(schema, &fields));
        let started = Instant::now();
        let outcome = run_isolated(
            entry,
            slot,
            fields.clone(),
            secrets.clone(),
            self.validation_timeout,
        )
        .await;
        let scrub = |message: String| secrets.scrub(&message).into_owned();
        let verdict = match outcome {
            None => Verdict::TimedOut {
                after: self.validation_timeout,
            },
            Some(ProviderOutcome::Valid(validation)) => Verdict::Valid(Accepted {
                provider_username: validation.provider_username.map(scrub),
                provider_metadata: validation.provider_metadata.map(|mut metadata| {
                    secrets.scrub_json(&mut metadata);
                    metadata
                }),
                document: assemble_credential_document(&fields).map(CredentialDocument::new),
            }),
            Some(ProviderOutcome::Rejected(message)) => Verdict::Rejected {
                message: scrub(message),
            },
            Some(ProviderOutcome::Inconclusive(message)) => Verdict::Inconclusive {
                message: scrub(message),
            },
            Some(ProviderOutcome::Fault(message)) => Verdict::ProviderFault {
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
async fn run_isolated(
    entry: Arc<RegisteredProvider>,
    slot: Slot,
    fields: CredentialFields,
    secrets: Arc<Secrets>,
    timeout: Duration,
) -> Option<ProviderOutcome> {
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    let mut task = AbortUnstarted(tokio::task::spawn_blocking(move || {
        let _slot = slot;
        runtime.block_on(
            async move {
                let validating = WithSecrets::new(secrets, entry.run_validation(fields));
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

#[cfg(test)]
mod tests {
    use super::*;

    use connhost_plugin_api::testing::fields;

    /// A provider an embedder writes, calling a URL through the host.
    struct Pinger(String);

    #[connhost_plugin_api::async_trait]
    impl connhost_plugin_api::ConnectionProvider for Pinger {
        fn provider_id(&self) -> &str {
            "pinger"
        }
        fn display_name(&self) -> &str {
            "Pinger"
        }
        fn description(&self) -> &str {
            "test"
        }
        fn icon(&self) -> &str {
            "plug"
        }
        fn connection_type(&self) -> ConnectionType {
            ConnectionType::Oauth
        }
        fn form_schema(&self) -> Option<CredentialFormSchema> {
            None
        }
        async fn validate(&self, _: &str) -> connhost_plugin_api::ValidationResult {
            let response = connhost_plugin_api::http::Request::get(&self.0)
                .send()
                .await?;
            Ok(connhost_plugin_api::ConnectionValidation::valid()
                .with_username(format!("status {}", response.status())))
        }
    }

    #[test]
    fn an_embedders_registry_gets_the_hosts_http_capability() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ping", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        });
        let registry = ProviderRegistry::builder().provider(Pinger(url)).build();
        let host = Connhost::from_parts(registry, LoadReport::default(), Duration::from_secs(10));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdict = runtime
            .block_on(host.validate("pinger", fields(&[("token", "t-123")])))
            .unwrap();
        let Verdict::Valid(accepted) = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(accepted.provider_username.as_deref(), Some("status 204"));
    }

    /// A provider with an either-or form and an optional field with a
    /// default, accepting anything the form lets through.
    struct Forms;

    #[connhost_plugin_api::async_trait]
    impl connhost_plugin_api::ConnectionProvider for Forms {
        fn provider_id(&self) -> &str {
            "forms"
        }
        fn display_name(&self) -> &str {
            "Forms"
        }
        fn description(&self) -> &str {
            "test"
        }
        fn icon(&self) -> &str {
            "plug"
        }
        fn connection_type(&self) -> ConnectionType {
            ConnectionType::ApiKey
        }
        fn form_schema(&self) -> Option<CredentialFormSchema> {
            use connhost_plugin_api::FormField;
            Some(
                CredentialFormSchema::new("")
                    .with_field(FormField::text("region", "Region").required())
                    .with_field(FormField::url("endpoint", "Endpoint").with_default("https://x"))
                    .with_field(FormField::password("key", "Key").required().in_group("Key"))
                    .with_field(FormField::text("user", "User").required().in_group("Login"))
                    .with_field(
                        FormField::password("pass", "Pass")
                            .required()
                            .in_group("Login"),
                    ),
            )
        }
        async fn validate_fields(
            &self,
            _: &CredentialFields,
        ) -> connhost_plugin_api::ValidationResult {
            Ok(connhost_plugin_api::ConnectionValidation::valid())
        }
        async fn validate(&self, _: &str) -> connhost_plugin_api::ValidationResult {
            unreachable!("validate_fields is overridden")
        }
    }

    fn forms_host() -> Connhost {
        let registry = ProviderRegistry::builder().provider(Forms).build();
        Connhost::from_parts(registry, LoadReport::default(), Duration::from_secs(5))
    }

    #[test]
    fn an_unfilled_optional_field_stays_out_of_the_document_whatever_its_default() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdict = runtime
            .block_on(forms_host().validate("forms", fields(&[("region", "eu"), ("key", "k-1")])))
            .unwrap();
        let Verdict::Valid(accepted) = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(
            accepted.document.unwrap().expose(),
            r#"{"key":"k-1","region":"eu"}"#
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever is submitted, validation answers (never panics), and a
        /// refusal names only the form's own fields.
        #[test]
        fn validation_never_panics_on_arbitrary_field_maps(
            submitted in proptest::collection::btree_map(
                proptest::prop_oneof![
                    proptest::strategy::Just("region".to_owned()),
                    proptest::strategy::Just("key".to_owned()),
                    proptest::strategy::Just("user".to_owned()),
                    proptest::strategy::Just("pass".to_owned()),
                    proptest::arbitrary::any::<String>(),
                ],
                proptest::arbitrary::any::<String>(),
                0..8,
            )
        ) {
            static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
            let runtime = RUNTIME.get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
            });
            let verdict = runtime.block_on(forms_host().validate("forms", submitted.clone())).unwrap();
            match verdict {
                Verdict::Valid(accepted) => {
                    let document = accepted.document.expect("something was filled");
                    let stored = connhost_plugin_api::parse_credential_document(Some(document.expose()));
                    for name in stored.keys() {
                        proptest::prop_assert!(["region", "endpoint", "key", "user", "pass"].contains(&name.as_str()));
                    }
                }
                Verdict::InvalidFields(errors) => {
                    for error in errors {
                        if let Some(field) = error.field {
                            proptest::prop_assert!(["region", "key", "user", "pass"].contains(&field.as_str()));
                        }
                    }
                }
                other => proptest::prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn the_host_can_be_shared_across_threads_and_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Connhost>();
        assert_send_sync::<Verdict>();
    }
}
