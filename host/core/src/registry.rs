//! The provider set: a plain map of entries by id, each with its origin
//! and its backend. It runs nothing (see `call.rs`) and loads nothing (see
//! the catalog).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use connhost_plugin_api::{ConnectionProvider, ProviderDescriptor};

use crate::backend::{Backend, CompiledIn};
use crate::model::origin::Origin;

/// A provider in the registry: what it describes, where it comes from, and
/// the code to validate with.
#[derive(Clone)]
pub struct RegisteredProvider {
    descriptor: ProviderDescriptor,
    experimental: bool,
    origin: Origin,
    backend: Backend,
    own_limits: OwnLimits,
}

/// Bounds the operator set for one provider (its plugin's policy, see
/// [`crate::PluginPolicy`]); `None` keeps the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OwnLimits {
    /// The longest one of its validations may take.
    pub(crate) timeout: Option<Duration>,
    /// The most validations it may have in flight.
    pub(crate) max_in_flight: Option<usize>,
    /// The most validations its plugin's providers may have in flight
    /// together.
    pub(crate) plugin_max_concurrent: Option<usize>,
}

impl fmt::Debug for RegisteredProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredProvider")
            .field("provider_id", &self.descriptor.provider_id)
            .field("experimental", &self.experimental)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl RegisteredProvider {
    /// A provider compiled into the host. Reads its descriptive methods now
    /// (a panic there is the embedder's bug, and propagates).
    pub(crate) fn native(provider: Arc<dyn ConnectionProvider>, experimental: bool) -> Self {
        let descriptor = ProviderDescriptor::capture(provider.as_ref());
        let backend = Backend::CompiledIn(CompiledIn::new(provider));
        Self::new(descriptor, experimental, Origin::Builtin, backend)
    }

    /// An entry for a provider whose descriptor was already read (and
    /// checked) by whoever built the backend.
    pub(crate) fn new(
        descriptor: ProviderDescriptor,
        experimental: bool,
        origin: Origin,
        backend: Backend,
    ) -> Self {
        Self {
            descriptor,
            experimental,
            origin,
            backend,
            own_limits: OwnLimits::default(),
        }
    }

    /// The same entry with bounds of its own (its plugin's policy).
    pub(crate) fn with_own_limits(mut self, own_limits: OwnLimits) -> Self {
        self.own_limits = own_limits;
        self
    }

    /// The bounds set for this provider alone (none: the host's apply).
    pub(crate) fn own_limits(&self) -> OwnLimits {
        self.own_limits
    }

    /// The provider's id.
    pub fn id(&self) -> &str {
        &self.descriptor.provider_id
    }

    /// What the provider's descriptive methods returned.
    pub fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    /// Whether the provider is registered only with experimental features.
    pub fn is_experimental(&self) -> bool {
        self.experimental
    }

    /// Where the provider comes from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The name its code's logs and settings go by: its plugin's name, or
    /// [`crate::capabilities::BUILTIN_SCOPE`] when compiled in.
    pub(crate) fn plugin_scope(&self) -> &str {
        match &self.origin {
            Origin::Builtin => crate::capabilities::BUILTIN_SCOPE,
            Origin::Plugin { plugin, .. } => plugin,
        }
    }

    /// The code behind it.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// Why a provider was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider \"{provider_id}\" is already registered by {existing}; refused the one from {refused}")]
#[non_exhaustive]
pub struct Conflict {
    /// The contested id.
    pub provider_id: String,
    /// Who holds it.
    pub existing: Origin,
    /// Who was refused.
    pub refused: Origin,
}

/// The set of providers a host serves, keyed by provider id.
///
/// Embedders can edit it before serving: [`register`](Self::register)
/// replaces a provider with the same id (a deliberate choice in code), while
/// the catalog registers plugins with [`try_register`](Self::try_register), which never
/// replaces: a dropped-in file cannot take over an existing id.
#[derive(Debug, Clone, Default)]
pub struct ProviderRegistry {
    entries: BTreeMap<String, Arc<RegisteredProvider>>,
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a provider compiled into the embedding program,
    /// replacing any provider with the same id (a deliberate choice in
    /// code). Returns the replaced one.
    pub fn register<P: ConnectionProvider + 'static>(
        &mut self,
        provider: P,
    ) -> Option<Arc<RegisteredProvider>> {
        let entry = RegisteredProvider::native(Arc::new(provider), false);
        self.entries.insert(entry.id().to_owned(), Arc::new(entry))
    }

    /// Registers a provider compiled into the embedding program unless its
    /// id is taken, as the catalog registers plugins: the conflict names
    /// who holds the id.
    pub fn try_register<P: ConnectionProvider + 'static>(
        &mut self,
        provider: P,
    ) -> Result<(), Box<Conflict>> {
        self.try_insert(Arc::new(RegisteredProvider::native(
            Arc::new(provider),
            false,
        )))
    }

    /// Inserts an entry unless its id is taken (the catalog puts the same
    /// entries into every snapshot it builds).
    pub(crate) fn try_insert(
        &mut self,
        entry: Arc<RegisteredProvider>,
    ) -> Result<(), Box<Conflict>> {
        if let Some(existing) = self.entries.get(entry.id()) {
            return Err(Box::new(Conflict {
                provider_id: entry.id().to_owned(),
                existing: existing.origin.clone(),
                refused: entry.origin.clone(),
            }));
        }
        self.entries.insert(entry.id().to_owned(), entry);
        Ok(())
    }

    /// Removes a provider; returns it.
    pub fn unregister(&mut self, provider_id: &str) -> Option<Arc<RegisteredProvider>> {
        self.entries.remove(provider_id)
    }

    /// The provider with this id.
    pub fn get(&self, provider_id: &str) -> Option<Arc<RegisteredProvider>> {
        self.entries.get(provider_id).cloned()
    }

    /// Whether a provider with this id is registered.
    pub fn has(&self, provider_id: &str) -> bool {
        self.entries.contains_key(provider_id)
    }

    /// All providers, ordered by id.
    pub fn list(&self) -> Vec<Arc<RegisteredProvider>> {
        self.entries.values().cloned().collect()
    }

    /// How many providers are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no provider is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The hosts the compiled-in providers among `entries` declare, once each.
pub(crate) fn declared_by_compiled_in<'a>(
    entries: impl Iterator<Item = &'a RegisteredProvider>,
) -> Vec<String> {
    let compiled_in: Vec<&RegisteredProvider> = entries
        .filter(|e| matches!(e.origin(), Origin::Builtin))
        .collect();
    crate::model::egress::Egress::declared_by(compiled_in.iter().map(|e| &e.descriptor().egress))
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhost_plugin_api::prelude::*;

    struct Named(&'static str, &'static str);

    #[async_trait]
    impl ConnectionProvider for Named {
        fn provider_id(&self) -> &str {
            self.0
        }
        fn display_name(&self) -> &str {
            self.1
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
        async fn validate(&self, _: &str) -> ValidationResult {
            Ok(ConnectionValidation::valid())
        }
    }

    fn plugin_origin() -> Origin {
        Origin::Plugin {
            plugin: "dropped-in".into(),
            version: "9.9.9".into(),
            path: "/plugins/libdropped.so".into(),
        }
    }

    #[test]
    fn register_replaces_by_id_and_returns_the_old_entry() {
        let mut registry = ProviderRegistry::new();
        assert!(registry.is_empty());
        assert!(registry.register(Named("a", "First")).is_none());
        let replaced = registry.register(Named("a", "Second")).expect("replaced");
        assert_eq!(replaced.descriptor().display_name, "First");
        assert_eq!(
            registry.get("a").unwrap().descriptor().display_name,
            "Second"
        );
        assert_eq!(registry.len(), 1);
        registry.register(Named("c", "C"));
        registry.register(Named("b", "B"));
        let ids: Vec<_> = registry.list().iter().map(|e| e.id().to_owned()).collect();
        assert_eq!(ids, ["a", "b", "c"], "listed by id");
        assert!(registry.has("b"));
        assert_eq!(registry.unregister("b").unwrap().id(), "b");
        assert!(!registry.has("b"));
        assert!(registry.unregister("b").is_none());
    }

    #[test]
    fn try_register_refuses_a_taken_id_and_names_both_origins() {
        let mut registry = ProviderRegistry::new();
        registry.register(Named("github", "GitHub"));
        let mut intruder = RegisteredProvider::native(Arc::new(Named("github", "Fake")), false);
        intruder.origin = plugin_origin();
        let conflict = registry.try_insert(Arc::new(intruder)).unwrap_err();
        let same = registry.try_register(Named("github", "Fake")).unwrap_err();
        assert_eq!(same.refused, Origin::Builtin);
        assert_eq!(conflict.existing, Origin::Builtin);
        assert_eq!(conflict.refused, plugin_origin());
        let message = conflict.to_string();
        assert!(message.contains("\"github\""), "{message}");
        assert!(message.contains("the host (built in)"), "{message}");
        assert!(message.contains("/plugins/libdropped.so"), "{message}");
        assert_eq!(
            registry.get("github").unwrap().descriptor().display_name,
            "GitHub"
        );
    }
}
