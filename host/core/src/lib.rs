//! connhost: hosts connection providers, compiled in or loaded from plugin
//! libraries at run time, behind one schema-and-validation API.
//!
//! ```no_run
//! use connhost::{Connhost, HostConfig};
//!
//! # async fn demo() {
//! let host = Connhost::start(&HostConfig::with_plugins_dir("./plugins"));
//! for failure in &host.load_report().failed {
//!     eprintln!("skipped {failure}");
//! }
//! let mut fields = connhost::CredentialFields::new();
//! fields.insert("api_key".into(), "dtn_...".into());
//! let verdict = host.validate("daytona", fields).await.expect("registered");
//! println!("{:?}", verdict.outcome());
//! # }
//! ```
//!
//! The pieces: [`ProviderRegistry`] (the provider set, each entry with its
//! [`Origin`]), [`loader`] (plugin files -> providers, with a
//! [`LoadReport`]), [`Connhost`] (list, describe, validate into a
//! [`Verdict`]). The host's core knows nothing of the command line or HTTP.

mod builtin;
pub mod cache_dir;
pub mod capabilities;
mod in_flight;
pub mod loader;
mod plugin_provider;
pub mod plugin_set;
pub mod redact;
mod registry;
pub mod reload;
#[cfg(feature = "openapi")]
#[doc(hidden)]
pub mod schema_doc;
mod service;
mod validation;

pub use connhost_plugin_api as plugin_api;
pub use connhost_plugin_api::{CredentialFields, CredentialFormSchema, FieldError};
pub use in_flight::{DEFAULT_MAX_IN_FLIGHT, HOST_MAX_IN_FLIGHT};
pub use loader::{
    FailureKind, LoadFailure, LoadOptions, LoadReport, LoadedPlugin, PluginLibrary, RetiredLibrary,
};
pub use plugin_set::{PluginSet, RescanOutcome};
pub use registry::{
    Conflict, Origin, ProviderRegistry, RegisteredProvider, RegistryBuilder, BUILTIN_PATH,
};
pub use service::{
    Connhost, HostConfig, ProviderInfo, UnknownProvider, DEFAULT_VALIDATION_TIMEOUT,
};
pub use validation::{
    Accepted, CredentialDocument, FieldErrorBody, NotValidBody, Outcome, ValidBody, Verdict,
    VerdictBody,
};
