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
//! The path of a plugin file: the [`Catalog`] (the one place a plugin file
//! becomes a provider) has each file admitted and copied, decides where it
//! runs (in this process, or in a sandboxed worker it starts and owns),
//! and assembles the compiled-in providers and the plugins into one
//! [`ProviderRegistry`] (entries with their [`Origin`]) with a
//! [`LoadReport`]. [`Connhost`] lists, describes and validates over that
//! set, each validation ending in a [`Verdict`]. [`reload`] keeps a
//! catalog in step with its folder. This crate knows nothing of the
//! command line or of HTTP servers: `connhost-http` serves it,
//! `connhost-cli` is the binary.

// The layers, bottom up, each a numbered group: a module imports only
// from the groups above it here (never from its own group or below).
// `tests/integration/layout.rs` reads this list and fails on any other
// import. See ARCHITECTURE.md.

// 0. Plain data: configuration, reports, origins, verdicts, what an
//    operator sees of workers, trust and egress.
mod model;
#[cfg(feature = "openapi")]
#[doc(hidden)]
pub mod schema_doc;

// 1. Mechanisms that stand alone: who may write a file, scrubbing secrets,
//    bounds on calls in flight, opening a library, the worker protocol,
//    the egress policy.
mod egress;
mod in_flight;
mod library;
mod permissions;
mod protocol;
mod redact;

// 2. The private cache of plugin copies (its folder's permissions).
mod cache_dir;

// 3. The trust checks (signatures, the lock file, the cache folder).
mod trust;

// 4. What the host lends to providers (knowing nothing of workers).
mod capabilities;

// 5. What one host owns: bounds, counts, its compiled-in providers' slot,
//    its supervisors' runtime.
mod state;

// 6. The code behind a provider: compiled in, in process, isolated (the
//    worker's host side).
mod backend;

// 7. The provider set.
mod registry;

// 8. Entries for it: the built-ins, and a loaded plugin's.
mod builtin;
mod plugin;

// 9. Loading a library into this process.
mod loader;

// 10. Calling a provider.
mod call;

// 11. Where each plugin file runs, and the set they make.
mod catalog;

// 12. The host.
mod service;

// 13. Keeping a host in step with its folder.
pub mod reload;

// 14. The worker process's own entry point.
pub mod worker;

pub use builtin::BUILTIN_PATH;
pub use cache_dir::clean as clean_cache_dir;
pub use capabilities::{BUILTIN_SCOPE, PLUGIN_LOG_TARGET};
pub use catalog::{inspect, Catalog, Inspection, RescanOutcome};
pub use connhost_plugin_api as plugin_api;
pub use connhost_plugin_api::{CredentialFields, CredentialFormSchema, FieldError};
pub use egress::Pattern as EgressPattern;
pub use model::config::{
    HostConfig, HttpLimits, Identity, Isolation, Layer, PluginPolicy, WorkerConfig,
    DEFAULT_HTTP_MAX_BODY, DEFAULT_HTTP_MAX_CONCURRENT, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_PLUGIN_SIZE, DEFAULT_VALIDATION_TIMEOUT, DEFAULT_WORKER_MEMORY,
    DEFAULT_WORKER_OPEN_FILES, DEFAULT_WORKER_THREADS, HOST_MAX_IN_FLIGHT,
};
pub use model::egress::Egress;
pub use model::names::setting_env_var;
pub use model::origin::Origin;
pub use model::report::rfc3339;
pub use model::report::{
    FailureKind, LoadFailure, LoadReport, LoadedPlugin, RetiredLibrary, LOAD_LOG_TARGET,
};
pub use model::trust::{PluginTrust, SignatureInfo, TrustConfig, TrustError};
pub use model::verdict::{Accepted, BusyBound, CredentialDocument, Outcome, Verdict};
pub use model::worker_status::{WorkerCounts, WorkerState, WorkerStatus};
pub use registry::{Conflict, ProviderRegistry, RegisteredProvider};
pub use service::{Connhost, ProviderInfo, UnknownProvider, Validation};
pub use trust::check_config;
pub use trust::lock::{LockEntry, LockFile};
