//! connhost plugins as OCI artifacts: the artifact's layout
//! ([`artifact`]) and a registry client ([`Registry`]) that pushes a
//! plugin's libraries (one per platform) with their signatures, and pulls
//! the one for this host, checking every digest it downloads.
//!
//! This crate knows nothing of the connhost host: the `connhost` binary
//! reads what it pushes from a sandboxed inspection of the file, and checks
//! what it pulls (signature, lock file) with the host's trust gate.
//!
//! ```no_run
//! # async fn f() -> Result<(), connhost_oci::Error> {
//! use connhost_oci::{Options, Platform, Registry};
//! let registry = Registry::new(Options::default());
//! let pulled = registry
//!     .pull("registry.example.com/plugins/daytona:1.2.0", &Platform::host())
//!     .await?;
//! println!("{} {}", pulled.selected.config.file, pulled.selected.library.digest);
//! # Ok(()) }
//! ```
//!
//! Transport: HTTPS, except to a registry on this machine (`localhost`,
//! 127.0.0.0/8, ::1) or one listed in [`Options::insecure_registries`].
//! Credentials: docker's config.json ([`DockerCredentials`]), anonymous
//! when it has none for the registry; basic authentication, or a token
//! from the registry's token service, as the registry asks.

pub mod artifact;
mod auth;
mod client;
mod platform;

pub use artifact::{digest_of, is_digest, PluginConfig, ProviderSummary};
pub use auth::{allows_plain_http, is_loopback, Auth, CredentialsError, DockerCredentials};
pub use client::{
    Error, Options, PlatformPush, Pulled, Pushed, Registry, Selected, DEFAULT_MAX_LIBRARY_SIZE,
};
pub use platform::{Platform, PlatformError};
