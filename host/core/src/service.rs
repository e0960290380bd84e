//! The combined API: one set of providers, built-in and loaded, behind
//! list / describe / validate. The CLI and the HTTP service are thin layers
//! over [`Connhost`]; the [`Catalog`] builds the set, `call.rs` runs a
//! provider.

use std::sync::Arc;

use connhost_plugin_api::{ConnectionType, CredentialFields, CredentialFormSchema};
use serde::Serialize;

use crate::cache_dir::LoadedCopies;
use crate::call::{self, Limits};
use crate::catalog::{Catalog, Served};
use crate::model::config::HostConfig;
use crate::model::origin::Origin;
use crate::model::report::LoadReport;
use crate::model::verdict::Verdict;
use crate::model::worker_status::WorkerCounts;
use crate::registry::{declared_by_compiled_in, ProviderRegistry, RegisteredProvider};
use crate::state::HostState;

/// A validation begun with [`Connhost::begin_validation`].
pub enum Validation {
    /// The form's rules refused the submission (an `InvalidFields`
    /// verdict): the provider is not called.
    Answered(Verdict),
    /// The submission passed the form's rules: the provider's call, with
    /// the rest of the policy, to await.
    Calling(std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send>>),
}

impl std::fmt::Debug for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Validation::Answered(verdict) => f.debug_tuple("Answered").field(verdict).finish(),
            Validation::Calling(_) => f.write_str("Calling(..)"),
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
#[non_exhaustive]
pub struct UnknownProvider {
    /// The requested id.
    pub provider_id: String,
    /// The ids that are registered.
    pub known: Vec<String>,
}

/// connhost's core: a provider set (built by the [`Catalog`], or by an
/// embedder from its own [`ProviderRegistry`]) and the queries and
/// validation over it. Cheap to clone; a snapshot never changes (hot
/// reload publishes a new one).
#[derive(Debug, Clone)]
pub struct Connhost {
    registry: Arc<ProviderRegistry>,
    report: Arc<LoadReport>,
    /// The copies its plugins were loaded from, for the digests not
    /// computed at load time.
    copies: Arc<LoadedCopies>,
    limits: Limits,
    /// What this host owns (shared by every snapshot of one catalog).
    state: Arc<HostState>,
}

impl Connhost {
    /// Registers the built-in providers, loads the plugins folder once,
    /// and returns the combined set: a [`Catalog`] for `config`,
    /// [scanned](Catalog::scan_now), [served](Self::from_catalog). Never
    /// fails: files that do not load are in
    /// [`load_report`](Self::load_report). Each call loads its own
    /// instance of every plugin (never unloaded): call it once, or keep a
    /// [`Catalog`].
    pub fn start(config: &HostConfig) -> Self {
        let mut catalog = Catalog::new(config);
        catalog.scan_now();
        Self::from_catalog(&catalog)
    }

    /// The catalog's provider set as it stands, to serve (hot reload takes
    /// one after each rescan that changed something).
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let Served {
            registry,
            report,
            copies,
            limits,
            state,
        } = catalog.current();
        Self {
            registry,
            report,
            copies,
            limits,
            state,
        }
    }

    /// Serves a registry the embedder assembled itself, as a host of its
    /// own configured by `config` (its validation timeout and bound on
    /// calls in flight, its compiled-in providers' settings, egress grant
    /// and HTTP bounds; its plugins folder is not read). Its load report is
    /// empty.
    pub fn from_registry(registry: ProviderRegistry, config: &HostConfig) -> Self {
        let state = HostState::new(config);
        state.declare_builtin(declared_by_compiled_in(
            registry.list().iter().map(|e| e.as_ref()),
        ));
        Self {
            registry: Arc::new(registry),
            report: Arc::new(LoadReport::default()),
            copies: Arc::default(),
            limits: Limits {
                timeout: config.validation_timeout,
                max_in_flight: config.max_in_flight.max(1),
                plugin_max_concurrent: None,
            },
            state,
        }
    }

    /// Its plugins' worker crashes and restarts so far, by plugin name
    /// (monotonic, across hot reloads of one catalog: for counters).
    pub fn worker_counts(&self) -> Vec<(String, WorkerCounts)> {
        self.state.worker_counts()
    }

    /// Its plugins' HTTP requests refused by their egress policy so far,
    /// by plugin name and reason (`not_granted`, `private_address`;
    /// monotonic, across hot reloads of one catalog: for counters).
    pub fn egress_refusals(&self) -> Vec<(String, &'static str, u64)> {
        self.state
            .egress_refusals()
            .into_iter()
            .map(|(plugin, reason, n)| (plugin, reason.as_str(), n))
            .collect()
    }

    /// The provider set.
    pub fn registry(&self) -> &ProviderRegistry {
        &self.registry
    }

    /// What loaded from the plugins folder and what did not, as it was
    /// when the set was built. A plugin's `trust.digest` is empty here
    /// when the trust checks did not need it at load time (no lock file in
    /// force): [`plugins`](Self::plugins) computes it.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// The [load report](Self::load_report) with each isolated plugin's
    /// worker as it stands now (state, pid, restarts, last crash), and
    /// every plugin's digest: a digest the trust checks did not need at
    /// load time is computed from the copy that was loaded the first time
    /// it is asked for (one SHA-256 pass over the copy, then remembered).
    pub fn plugins(&self) -> LoadReport {
        let mut report = (*self.report).clone();
        self.copies.fill_digests(&mut report);
        let entries = self.registry.list();
        for plugin in &mut report.loaded {
            let status = entries.iter().find_map(|entry| match entry.origin() {
                crate::model::origin::Origin::Plugin { path, .. } if *path == plugin.path => {
                    entry.backend().worker_status()
                }
                _ => None,
            });
            if status.is_some() {
                plugin.worker = status;
            }
        }
        report
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
    /// provider are scrubbed of the submission's secrets. The whole policy
    /// lives in one module, `call.rs`.
    pub async fn validate(
        &self,
        provider_id: &str,
        fields: CredentialFields,
    ) -> Result<Verdict, UnknownProvider> {
        let entry = self.entry(provider_id)?;
        Ok(self.validate_entry(entry, fields).await)
    }

    /// [`Connhost::validate`] with the provider already looked up (with
    /// [`entry`](Self::entry)).
    pub async fn validate_entry(
        &self,
        entry: Arc<RegisteredProvider>,
        fields: CredentialFields,
    ) -> Verdict {
        let limits = self.limits_for(&entry);
        call::validate(entry, fields, limits, &self.state).await
    }

    /// [`Connhost::validate_entry`] in two steps: the form's rules are
    /// checked at once, and a submission they refuse is answered without
    /// a future ([`Validation::Answered`]); any other is the provider's
    /// call to await ([`Validation::Calling`]). The same policy, verdicts
    /// and log lines as `validate_entry`; a caller that answers many
    /// refused submissions (an HTTP server) keeps its own future small.
    pub fn begin_validation(
        &self,
        entry: &Arc<RegisteredProvider>,
        fields: CredentialFields,
    ) -> Validation {
        match call::begin(entry, fields) {
            call::Begun::Refused(verdict) => Validation::Answered(verdict),
            call::Begun::Checked(checked) => {
                let limits = self.limits_for(checked.entry());
                let host = self.state.clone();
                Validation::Calling(Box::pin(async move { checked.call(limits, &host).await }))
            }
        }
    }

    /// The bounds on a validation by `entry`: its own (its plugin's
    /// policy) where set, the host's otherwise.
    fn limits_for(&self, entry: &RegisteredProvider) -> Limits {
        let own = entry.own_limits();
        Limits {
            timeout: own.timeout.unwrap_or(self.limits.timeout),
            max_in_flight: own
                .max_in_flight
                .unwrap_or(self.limits.max_in_flight)
                .max(1),
            plugin_max_concurrent: own.plugin_max_concurrent.map(|max| max.max(1)),
        }
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
    fn an_embedders_registry_gets_the_hosts_http_capability_and_its_policy() {
        // The host performs the request, under the compiled-in providers'
        // egress policy: a loopback address nobody granted is refused
        // before any connection (tests/integration/egress.rs grants one;
        // tests/integration/two_hosts.rs gives two hosts different grants).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}/ping?key=k");
        let mut registry = ProviderRegistry::new();
        registry.register(Pinger(url));
        let host = Connhost::from_registry(
            registry,
            &HostConfig::default().with_validation_timeout(std::time::Duration::from_secs(10)),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdict = runtime
            .block_on(host.validate("pinger", fields(&[("token", "t-123")])))
            .unwrap();
        let message = verdict.error_message().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "egress refused: plugin \"builtin\" may not call {addr}"
            )) && !message.contains("ping"),
            "{verdict:?}"
        );
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing connected");
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
        let mut registry = ProviderRegistry::new();
        registry.register(Forms);
        Connhost::from_registry(
            registry,
            &HostConfig::default().with_validation_timeout(std::time::Duration::from_secs(5)),
        )
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

    /// A compiled-in provider that panics while validating.
    struct Boom;

    #[connhost_plugin_api::async_trait]
    impl connhost_plugin_api::ConnectionProvider for Boom {
        fn provider_id(&self) -> &str {
            "boom"
        }
        fn display_name(&self) -> &str {
            "Boom"
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
            Some(CredentialFormSchema::api_key(""))
        }
        async fn validate(&self, _: &str) -> connhost_plugin_api::ValidationResult {
            panic!("boom")
        }
    }

    #[test]
    fn a_compiled_in_providers_panic_is_a_fault_with_its_message_on_both_paths() {
        let mut registry = ProviderRegistry::new();
        registry.register(Boom);
        let host = Connhost::from_registry(
            registry,
            &HostConfig::default().with_validation_timeout(std::time::Duration::from_secs(5)),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdict = runtime
            .block_on(host.validate("boom", fields(&[("api_key", "k-123456789")])))
            .unwrap();
        let Verdict::ProviderFault { message, .. } = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(
            message,
            "The provider failed: panicked while validating: boom"
        );
        let entry = host.entry("boom").unwrap();
        let raw = runtime.block_on(entry.call_provider(fields(&[("api_key", "k")])));
        assert_eq!(raw.outcome(), crate::Outcome::ProviderFault, "{raw:?}");
    }

    #[test]
    fn the_host_can_be_shared_across_threads_and_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Connhost>();
        assert_send_sync::<Verdict>();
    }
}
