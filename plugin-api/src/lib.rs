//! The interface a [connhost] connection provider is written against.
//!
//! A connection provider knows one external service: it describes the
//! credential form a user fills in ([`CredentialFormSchema`]) and checks a
//! submitted credential ([`ConnectionProvider::validate_fields`]). The same
//! trait serves providers compiled into the host and providers shipped as
//! plugin libraries; this crate is the only dependency a plugin needs.
//!
//! # Writing a plugin
//!
//! A plugin is one small crate with `crate-type = ["cdylib", "rlib"]` and a
//! dependency on this crate. Implement [`ConnectionProvider`] and call
//! [`export_plugin!`] once:
//!
//! ```
//! use connhost_plugin_api::prelude::*;
//!
//! #[derive(Default)]
//! struct Acme;
//!
//! #[async_trait]
//! impl ConnectionProvider for Acme {
//!     fn provider_id(&self) -> &str { "acme" }
//!     fn display_name(&self) -> &str { "Acme" }
//!     fn description(&self) -> &str { "Acme's rocket API" }
//!     fn icon(&self) -> &str { "rocket" }
//!     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
//!     fn form_schema(&self) -> Option<CredentialFormSchema> {
//!         Some(CredentialFormSchema::api_key("Create a key in Acme's console."))
//!     }
//!     async fn validate(&self, key: &str) -> ValidationResult {
//!         let base = connhost_plugin_api::config("base_url")
//!             .unwrap_or_else(|| "https://api.acme.test".into());
//!         let response = http::Request::get(format!("{base}/me")).bearer_auth(key).send().await?;
//!         match response.status() {
//!             200 => Ok(ConnectionValidation::valid()),
//!             401 | 403 => Err("Acme refused the key.".into()),
//!             s => Err(ValidationError::inconclusive(format!("Acme answered {s}"))),
//!         }
//!     }
//! }
//!
//! connhost_plugin_api::export_plugin!(Acme::default());
//! ```
//!
//! # What the SDK guarantees
//!
//! - **No panic crosses the boundary.** Every exported function, and every
//!   poll of a validation future, catches panics inside the plugin and
//!   returns them to the host as errors; the host reports a *provider fault*
//!   and keeps serving.
//! - **Logs reach the host.** `tracing` events from the plugin are forwarded
//!   to the host's subscriber, tagged with the plugin's name. A panic's
//!   message goes to the host's log, not to stderr.
//! - **I/O works without a runtime.** Use [`http`] and [`sleep`]: the host
//!   performs them on its own runtime (see [`host`]). Do not use
//!   `tokio::net` or `tokio::time` in a plugin: the plugin's copy of tokio has
//!   no reactor.
//!
//! # Compatibility
//!
//! The host checks the plugin's `connhost-plugin-api` version and the layout
//! of every type that crosses the boundary before calling into it. While this
//! crate is `0.y`, a plugin loads into hosts with the same `y`. See [`abi`]
//! for how the interface evolves.
//!
//! [connhost]: https://github.com/connhost/connhost

pub mod abi;
mod builtin;
pub mod document;
#[doc(hidden)]
pub mod export;
pub mod host;
pub mod http;
mod log_bridge;
pub mod panic;
mod provider;
pub mod schema;
pub mod testing;
pub mod value_codec;

pub use async_trait::async_trait;
pub use builtin::{builtin_providers, ConnectionProviderPlugin};
pub use document::{assemble_credential_document, parse_credential_document};
pub use host::{config, sleep};
pub use provider::{
    ConnectionProvider, ConnectionType, ConnectionValidation, ProviderDescriptor, ValidationError,
    ValidationErrorKind, ValidationResult,
};
pub use schema::{CredentialFields, CredentialFormSchema, FieldError, FieldType, FormField};
/// The `tracing` crate, re-exported so a plugin's log calls use the copy the
/// SDK forwards to the host.
pub use tracing;

/// The version of this crate a plugin or host was built against.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a provider implementation usually needs.
pub mod prelude {
    pub use crate::http;
    pub use crate::{
        async_trait, config, sleep, ConnectionProvider, ConnectionType, ConnectionValidation,
        CredentialFields, CredentialFormSchema, FieldType, FormField, ValidationError,
        ValidationErrorKind, ValidationResult,
    };
}

/// Host and macro plumbing. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
    pub use inventory;

    pub use crate::export::plugin_module;

    /// Installs host capabilities for providers compiled into the host
    /// (the host process's own copy of this crate).
    pub fn install_host(host: crate::abi::HostContext) -> bool {
        crate::host::install(host)
    }
}

/// Exports a plugin library's providers to connhost.
///
/// Call it once, at the crate root of a `cdylib` crate, with one expression
/// per provider (each a value implementing [`ConnectionProvider`]):
///
/// ```
/// # use connhost_plugin_api::prelude::*;
/// # #[derive(Default)] struct First;
/// # #[async_trait] impl ConnectionProvider for First {
/// #     fn provider_id(&self) -> &str { "first" }
/// #     fn display_name(&self) -> &str { "X" }
/// #     fn description(&self) -> &str { "X" }
/// #     fn icon(&self) -> &str { "plug" }
/// #     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
/// #     fn form_schema(&self) -> Option<CredentialFormSchema> { None }
/// #     async fn validate(&self, _: &str) -> ValidationResult { Ok(ConnectionValidation::valid()) }
/// # }
/// # use connhost_plugin_api::prelude::*;
/// # #[derive(Default)] struct Second;
/// # #[async_trait] impl ConnectionProvider for Second {
/// #     fn provider_id(&self) -> &str { "second" }
/// #     fn display_name(&self) -> &str { "X" }
/// #     fn description(&self) -> &str { "X" }
/// #     fn icon(&self) -> &str { "plug" }
/// #     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
/// #     fn form_schema(&self) -> Option<CredentialFormSchema> { None }
/// #     async fn validate(&self, _: &str) -> ValidationResult { Ok(ConnectionValidation::valid()) }
/// # }
/// connhost_plugin_api::export_plugin!(First::default(), Second::default());
/// # fn main() {}
/// ```
///
/// An optional init hook (a `fn() -> Result<(), String>`) runs once when the
/// host loads the library, before any provider is built:
///
/// ```
/// # use connhost_plugin_api::prelude::*;
/// # #[derive(Default)] struct Daytona;
/// # #[async_trait] impl ConnectionProvider for Daytona {
/// #     fn provider_id(&self) -> &str { "daytona" }
/// #     fn display_name(&self) -> &str { "X" }
/// #     fn description(&self) -> &str { "X" }
/// #     fn icon(&self) -> &str { "plug" }
/// #     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
/// #     fn form_schema(&self) -> Option<CredentialFormSchema> { None }
/// #     async fn validate(&self, _: &str) -> ValidationResult { Ok(ConnectionValidation::valid()) }
/// # }
/// fn setup() -> Result<(), String> {
///     connhost_plugin_api::tracing::info!("daytona plugin loaded");
///     Ok(())
/// }
///
/// connhost_plugin_api::export_plugin! {
///     providers: [Daytona::default()],
///     init: setup,
/// }
/// # fn main() {}
/// ```
///
/// The plugin's name and version are the crate's (`CARGO_PKG_NAME`,
/// `CARGO_PKG_VERSION`).
#[macro_export]
macro_rules! export_plugin {
    (providers: [$($provider:expr),+ $(,)?], init: $init:expr $(,)?) => {
        $crate::export_plugin!(@export [$($provider),+] ::core::option::Option::Some($init));
    };
    (providers: [$($provider:expr),+ $(,)?] $(,)?) => {
        $crate::export_plugin!(@export [$($provider),+] ::core::option::Option::None);
    };
    (@export [$($provider:expr),+] $init:expr) => {
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::abi_stable::library::LibHeader = {
            extern "C" fn __connhost_root_module() -> $crate::__private::abi_stable::library::RootModuleResult {
                #[allow(clippy::default_constructed_unit_structs)]
                fn factory() -> ::std::vec::Vec<::std::boxed::Box<dyn $crate::ConnectionProvider>> {
                    ::std::vec![$(::std::boxed::Box::new($provider) as ::std::boxed::Box<dyn $crate::ConnectionProvider>),+]
                }
                fn module() -> $crate::abi::PluginModuleRef {
                    $crate::__private::plugin_module(
                        ::core::env!("CARGO_PKG_NAME"),
                        ::core::env!("CARGO_PKG_VERSION"),
                        factory,
                        $init,
                    )
                }
                $crate::__private::abi_stable::library::__call_root_module_loader(module)
            }
            // SAFETY: the constructor returns a `PluginModuleRef`, the module
            // type named here, exactly as abi_stable's `#[export_root_module]`
            // would generate.
            unsafe {
                $crate::__private::abi_stable::library::LibHeader::from_constructor::<$crate::abi::PluginModuleRef>(
                    __connhost_root_module,
                    $crate::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
    ($($provider:expr),+ $(,)?) => {
        $crate::export_plugin!(@export [$($provider),+] ::core::option::Option::None);
    };
}
