//! The file's top level: the global options (the flags every command
//! takes, by the names of [`connhost::HostConfig`]'s fields), the trust
//! keys, and the tables.

use std::path::PathBuf;

use connhost::Isolation;

use super::egress::EgressFile;
use super::plugin::Plugins;
use super::serve::ServeFile;
use super::values::{InFlightBound, Int, Seconds};
use super::worker::WorkerFile;

/// A registry as `--insecure-registry` takes it: `HOST[:PORT]`, without a
/// scheme or a path.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RegistryHost(String);

impl TryFrom<String> for RegistryHost {
    type Error = String;

    fn try_from(host: String) -> Result<Self, String> {
        if host.is_empty()
            || host.contains("://")
            || host.contains('/')
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{host:?} is not a registry: give HOST or HOST:PORT, without a scheme or a path"
            ));
        }
        Ok(RegistryHost(host))
    }
}

table! {
    /// A configuration file as read: every key optional, every value checked.
    pub(crate) struct ConfigFile {
        /// The plugins folder.
        plugins: PathBuf [relative]
            => host.plugins_dir = Some, unless flag "plugins";
        /// Also register experimental providers.
        experimental: bool
            => host.experimental, unless flag "experimental";
        /// Where plugins run unless their table says otherwise.
        isolation: Isolation
            => host.isolation, unless flag "isolation";
        /// The longest a validation may take.
        validation_timeout: Seconds
            => host.validation_timeout = |s| s.0, unless flag "timeout";
        /// The most validations one provider may have in flight.
        max_in_flight: InFlightBound
            => host.max_in_flight = InFlightBound::to_usize, unless flag "max_in_flight";
        /// The largest plugin file loaded, in bytes.
        max_plugin_size: Int<1, { i64::MAX }>
            => host.max_plugin_size = Int::get, unless flag "max_plugin_size";
        /// Where every command copies plugin files before loading them
        /// (kept between starts).
        cache_dir: PathBuf [relative]
            => host.cache_dir = Some, unless flag "cache_dir";

        // Which plugin files may load: the host's `TrustConfig`.

        /// Do not check who may write the plugins folder, the plugin files,
        /// the trusted keys and the lock file.
        insecure_permissions: bool
            => host.trust.check_permissions = |insecure: bool| !insecure,
            unless flag "insecure_permissions";
        /// A folder of trusted minisign public keys.
        trusted_keys: PathBuf [relative]
            => host.trust.trusted_keys = Some, unless flag "trusted_keys";
        /// The lock file.
        lock_file: PathBuf [relative]
            => host.trust.lock_file = Some, unless flag "lock_file";
        /// Load only the plugin files the lock file lists.
        locked: bool
            => host.trust.locked, unless flag "locked";

        // How `push`, `pull` and `serve --sync` reach registries.

        /// Registries (`HOST:PORT`, or `HOST` for all its ports) spoken to
        /// in plain HTTP although they are not on loopback.
        insecure_registries: Vec<RegistryHost>
            => registry.insecure_registries = |hosts| hosts.into_iter().map(|h| h.0).collect(),
            unless flag "insecure_registries";
    } tables {
        /// The `serve` command's options.
        serve: ServeFile,
        /// [`connhost::HostConfig::worker`].
        worker: WorkerFile,
        /// [`connhost::HostConfig::http`]: bounds on the HTTP the host
        /// performs for each plugin.
        egress: EgressFile,
        /// `[plugin.NAME]` tables.
        plugin: Plugins,
    }
}
