//! How to assemble a host: which providers, which plugins folder, and the
//! bounds on each call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::in_flight::DEFAULT_MAX_IN_FLIGHT;
use crate::loader::{LoadOptions, DEFAULT_MAX_PLUGIN_SIZE};

/// The default bound on one validation.
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How to assemble a [`crate::Connhost`].
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
    /// beyond it the provider answers [`crate::Verdict::Busy`] at once.
    pub max_in_flight: usize,
    /// The largest plugin file loaded, in bytes (see
    /// [`LoadOptions::max_plugin_size`]).
    pub max_plugin_size: u64,
    /// Per-plugin settings (plugin name -> key -> value); the built-in
    /// providers' scope is `"builtin"`.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
    /// The folder plugin files are copied into before they are loaded
    /// (see [`crate::cache_dir`]). `None`: each catalog makes a folder of
    /// its own, `<temp dir>/connhost-<pid>-<n>`, and removes it when it is
    /// dropped. A folder named here is the caller's to clean.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            plugins_dir: None,
            experimental: false,
            builtins: true,
            validation_timeout: DEFAULT_VALIDATION_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_plugin_size: DEFAULT_MAX_PLUGIN_SIZE,
            settings: BTreeMap::new(),
            cache_dir: None,
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
