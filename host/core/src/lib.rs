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
//! The path of a plugin file: the [`Catalog`] (`catalog/mod.rs`, the one
//! place a plugin file becomes a provider) has each file checked, copied
//! and loaded by the [`loader`], and assembles the compiled-in providers
//! and the plugins into one [`ProviderRegistry`] (entries with their
//! [`Origin`]) with a [`LoadReport`]. [`Connhost`] lists, describes and
//! validates over that set; `call.rs` is the one place a provider is
//! called, producing a [`Verdict`]. [`reload`] keeps a catalog in step
//! with its folder. This crate knows nothing of the command line or of
//! HTTP servers: `connhost-http` serves it, `connhost-cli` is the binary.

mod backend;
mod builtin;
pub mod cache_dir;
mod call;
pub mod capabilities;
pub mod catalog;
mod config;
pub mod egress;
mod in_flight;
pub mod loader;
pub mod redact;
mod registry;
pub mod reload;
mod report;
#[cfg(feature = "openapi")]
#[doc(hidden)]
pub mod schema_doc;
mod service;
pub mod trust;
mod verdict;
pub mod worker;

pub use builtin::BUILTIN_PATH;
pub use capabilities::HttpLimits;
pub use catalog::{Catalog, RescanOutcome};
pub use config::{
    HostConfig, Identity, Isolation, Layer, PluginPolicy, WorkerConfig, DEFAULT_VALIDATION_TIMEOUT,
    DEFAULT_WORKER_MEMORY, DEFAULT_WORKER_OPEN_FILES, DEFAULT_WORKER_THREADS,
};
pub use connhost_plugin_api as plugin_api;
pub use connhost_plugin_api::{CredentialFields, CredentialFormSchema, FieldError};
pub use in_flight::{DEFAULT_MAX_IN_FLIGHT, HOST_MAX_IN_FLIGHT};
pub use loader::{LoadOptions, PluginLibrary};
pub use registry::{Conflict, Origin, ProviderRegistry, RegisteredProvider, RegistryBuilder};
pub use report::{
    FailureKind, LoadFailure, LoadReport, LoadedPlugin, RetiredLibrary, LOAD_LOG_TARGET,
};
pub use service::{Connhost, ProviderInfo, UnknownProvider};
pub use verdict::{
    Accepted, BusyBound, CredentialDocument, FieldErrorBody, NotValidBody, Outcome, ValidBody,
    Verdict, VerdictBody,
};
