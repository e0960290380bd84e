//! Providers compiled into the host, collected with `inventory`.

use crate::provider::ConnectionProvider;

/// A provider compiled into the host. Submit one with
/// [`register_provider!`](crate::register_provider) (or
/// `inventory::submit!`) from any crate linked into the host.
///
/// A crate the host never names in code is not linked, and its submissions
/// silently disappear: the host must `use the_crate as _;`. A submission
/// inside a plugin library registers into the plugin's own copy of the
/// collection, which the host never sees: plugins use
/// [`export_plugin!`](crate::export_plugin) instead.
#[derive(Debug)]
pub struct ConnectionProviderPlugin {
    /// Registered only when the host enables experimental features.
    pub experimental_only: bool,
    /// Builds the provider.
    pub factory: fn() -> Box<dyn ConnectionProvider>,
}

inventory::collect!(ConnectionProviderPlugin);

/// Every provider compiled into this binary.
pub fn builtin_providers() -> impl Iterator<Item = &'static ConnectionProviderPlugin> {
    inventory::iter::<ConnectionProviderPlugin>.into_iter()
}

/// Registers a provider compiled into the host.
///
/// ```
/// # use connhost_plugin_api::prelude::*;
/// # #[derive(Default)] struct MyProvider;
/// # #[async_trait] impl ConnectionProvider for MyProvider {
/// #     fn provider_id(&self) -> &str { "mine" }
/// #     fn display_name(&self) -> &str { "X" }
/// #     fn description(&self) -> &str { "X" }
/// #     fn icon(&self) -> &str { "plug" }
/// #     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
/// #     fn form_schema(&self) -> Option<CredentialFormSchema> { None }
/// #     async fn validate(&self, _: &str) -> ValidationResult { Ok(ConnectionValidation::valid()) }
/// # }
/// # use connhost_plugin_api::prelude::*;
/// # #[derive(Default)] struct Simulator;
/// # #[async_trait] impl ConnectionProvider for Simulator {
/// #     fn provider_id(&self) -> &str { "sim" }
/// #     fn display_name(&self) -> &str { "X" }
/// #     fn description(&self) -> &str { "X" }
/// #     fn icon(&self) -> &str { "plug" }
/// #     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
/// #     fn form_schema(&self) -> Option<CredentialFormSchema> { None }
/// #     async fn validate(&self, _: &str) -> ValidationResult { Ok(ConnectionValidation::valid()) }
/// # }
/// connhost_plugin_api::register_provider!(|| Box::new(MyProvider));
/// connhost_plugin_api::register_provider!(experimental: || Box::new(Simulator));
///
/// let ids: Vec<_> = connhost_plugin_api::builtin_providers()
///     .map(|p| (p.factory)().provider_id().to_owned())
///     .collect();
/// assert!(ids.contains(&"mine".to_owned()));
/// ```
#[macro_export]
macro_rules! register_provider {
    (experimental: $factory:expr) => {
        $crate::__private::inventory::submit! {
            $crate::ConnectionProviderPlugin { experimental_only: true, factory: $factory }
        }
    };
    ($factory:expr) => {
        $crate::__private::inventory::submit! {
            $crate::ConnectionProviderPlugin { experimental_only: false, factory: $factory }
        }
    };
}
