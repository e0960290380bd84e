//! `connhost inspect`: one file examined as the folder would admit it,
//! and loaded in a sandboxed worker, never in this process.

use std::path::{Path, PathBuf};

use connhost_plugin_api::ProviderDescriptor;
use serde::Serialize;

use super::admission::{self, Refused};
use super::placement;
use crate::cache_dir;
use crate::library::{open_regular, OpenError};
use crate::model::config::HostConfig;
use crate::model::report::{FailureKind, LoadFailure};
use crate::model::trust::PluginTrust;
use crate::state::HostState;
use crate::trust::Gate;

/// What `connhost inspect` shows about a file.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Whether this host can load it.
    pub loadable: bool,
    /// The plugin's name, when it got that far.
    pub plugin: Option<String>,
    /// The plugin's version.
    pub version: Option<String>,
    /// The plugin API version it was built against.
    pub api_version: Option<String>,
    /// The providers it offers, as they describe themselves.
    pub providers: Vec<ProviderDescriptor>,
    /// Providers that failed to describe themselves.
    pub provider_errors: Vec<String>,
    /// Why it cannot be loaded.
    pub failure: Option<LoadFailure>,
    /// Long detail (abi_stable's full layout difference).
    pub detail: Option<String>,
    /// What the trust gate checked (its digest, signature, lock), when it
    /// admitted the file.
    pub trust: Option<PluginTrust>,
    /// The sandbox measures of the worker it was loaded in.
    pub sandbox: Vec<String>,
    /// The plugin API version this host speaks.
    pub host_api_version: &'static str,
}

/// Examines a plugin file without registering anything, and without
/// running any of its code in this process: the file passes the same
/// trust gate as a file in the plugins folder (who may write it, its
/// signature against the trusted keys, its digest under `--locked`; the
/// same refusals, worded the same), is copied into a private cache folder
/// of its own (so inspecting it does not initialise the instance a later
/// real load of the same file would get), and is loaded in a sandboxed
/// worker process (`crate::backend::isolated`), whatever `config.isolation` says.
/// The program must start workers: it calls
/// [`crate::worker::run_if_worker`] first thing in `main` (the `connhost`
/// binary does).
pub fn inspect(path: &Path, config: &HostConfig) -> Inspection {
    let mut inspection = Inspection {
        path: path.to_owned(),
        loadable: false,
        plugin: None,
        version: None,
        api_version: None,
        providers: Vec::new(),
        provider_errors: Vec::new(),
        failure: None,
        detail: None,
        trust: None,
        sandbox: Vec::new(),
        host_api_version: connhost_plugin_api::PLUGIN_API_VERSION,
    };
    // The operator's cache folder if one is named (checked to be the
    // host's alone before anything is read), else a folder of its own;
    // either way its copy goes once the worker holds it.
    let given = config.cache_dir.clone();
    if let Some(dir) = &given {
        if let Err(refusal) = cache_dir::prepare_given(dir, config.trust.check_permissions) {
            inspection.failure = Some(LoadFailure::new(
                dir,
                FailureKind::CacheFailed,
                format!("{}. Nothing is wrong with the file.", refusal.reason),
            ));
            return inspection;
        }
    }
    let cache = match given.clone().map_or_else(cache_dir::create_default, Ok) {
        Ok(cache) => cache,
        Err(e) => {
            inspection.failure = Some(LoadFailure::new(
                path,
                FailureKind::CacheFailed,
                format!(
                    "could not make a private folder to copy it into in {}: {e}. Nothing is wrong with the file.",
                    std::env::temp_dir().display()
                ),
            ));
            return inspection;
        }
    };
    let done = |copy: Option<&Path>| match (&given, copy) {
        (None, _) => {
            cache_dir::clean(&cache);
        }
        (Some(_), Some(copy)) => {
            let _ = std::fs::remove_file(copy);
        }
        (Some(_), None) => {}
    };
    let admitted = admit_for_inspection(path, config, &cache);
    let (trust, copy) = match admitted {
        Ok(admitted) => admitted,
        Err(failure) => {
            done(None);
            inspection.detail = failure.detail.clone();
            inspection.failure = Some(failure);
            return inspection;
        }
    };
    inspection.trust = Some(trust);
    // A state of its own: nothing of it outlives the inspection.
    let state = HostState::new(config);
    let opened = placement::open_isolated(&copy, path, config, &state);
    // The worker holds its own descriptor of the copy.
    done(Some(&copy));
    match opened {
        Err(failure) => {
            inspection.detail = failure.detail.clone();
            inspection.failure = Some(failure);
        }
        Ok(library) => {
            inspection.loadable = true;
            inspection.plugin = Some(library.init.name.clone());
            inspection.version = Some(library.init.version.clone());
            inspection.api_version = Some(library.init.api_version.clone());
            inspection.sandbox = library
                .worker_status()
                .map(|status| status.sandbox)
                .unwrap_or_default();
            for provider in &library.init.providers {
                match provider {
                    Ok((_, descriptor)) => inspection.providers.push(descriptor.clone()),
                    Err(message) => inspection.provider_errors.push(message.clone()),
                }
            }
        }
    }
    inspection
}

/// The trust gate's checks on `path` for `inspect`, the catalog's own
/// (`admission.rs`): what was admitted, and the copy in `cache`.
fn admit_for_inspection(
    path: &Path,
    config: &HostConfig,
    cache: &Path,
) -> Result<(PluginTrust, PathBuf), LoadFailure> {
    let folder = config
        .plugins_dir
        .clone()
        .or_else(|| path.parent().map(Path::to_owned))
        .unwrap_or_default();
    let gate = Gate::new(&config.trust, &folder)
        .map_err(|e| LoadFailure::new(path, FailureKind::InsecurePermissions, e.to_string()))?;
    let file = open_regular(path).map_err(|error| match error {
        OpenError::Failed(failure) => failure,
        OpenError::Vanished => LoadFailure::new(
            path,
            FailureKind::Unreadable,
            "the file is gone.".to_owned(),
        ),
        OpenError::Transient(e) => LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not open the file: {e}."),
        ),
    })?;
    let metadata = file.metadata().map_err(|e| {
        LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not read the file: {e}."),
        )
    })?;
    let checked =
        admission::check_before_copy(&gate, path, &file, &metadata, config.max_plugin_size)
            .map_err(|refused| match refused {
                Refused::Trust(failure) | Refused::Headers(failure) => failure,
            })?;
    let copied =
        admission::copy_checked(&gate, path, &file, &checked, cache, true).map_err(|e| {
            LoadFailure::new(
                path,
                FailureKind::Unreadable,
                format!("could not copy the file: {e}."),
            )
        })?;
    match copied.admitted {
        Ok(trust) => Ok((trust, copied.copy.path().to_owned())),
        Err(failure) => {
            copied.copy.discard();
            Err(failure)
        }
    }
}
