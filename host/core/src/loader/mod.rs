//! Loading one plugin library into this process: from a checked copy to a
//! [`Plugin`] whose providers are ready to register. (A plugin that runs in
//! a worker is started by the catalog through `crate::backend::isolated`;
//! the worker itself loads its library with this module.)
//!
//! Each file goes through: check it from a non-blocking descriptor (a
//! regular file, under the size limit, a complete shared library by its
//! headers), open it, find connhost's entry point, check the plugin API
//! version and the layout of every type that crosses the boundary
//! (`crate::library`), call the plugin's `init` with the host's
//! capabilities, and ask for its providers. A failure at any step is a
//! [`LoadFailure`] for that file. Which files are loaded, from which copy,
//! and in what order their providers are registered is the catalog's
//! business.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use connhost_plugin_api::abi::PluginModuleRef;

use crate::capabilities;
use crate::library::Checks;
use crate::model::config::HostConfig;
use crate::model::egress::Egress;
use crate::model::report::{FailureKind, LoadFailure};
use crate::plugin::{declared_egress, describe, Code, Loaded, Plugin};
use crate::state::HostState;

/// A library's `init` outcome, kept for the life of the process.
type InitOutcome = Result<Loaded, (FailureKind, String)>;

/// Every library initialised in this process, by its address. Process-wide,
/// as the system loader: a file opened twice is one object, initialised
/// once.
static INITIALIZED: Mutex<BTreeMap<usize, Arc<InitOutcome>>> = Mutex::new(BTreeMap::new());

fn initialize(
    path: &Path,
    config: &HostConfig,
    state: &HostState,
    checks: Checks,
) -> Result<Loaded, LoadFailure> {
    let opened = crate::library::open_as(path, config.max_plugin_size, checks)?;
    let mut cache = INITIALIZED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache
        .entry(opened.identity)
        .or_insert_with(|| Arc::new(run_init(opened.module, opened.api_version, config, state)))
        .clone();
    drop(cache);
    match &*entry {
        Ok(init) => {
            let wanted = config.settings_of(&init.name);
            if wanted != init.settings || config.egress_of(&init.name) != init.egress.granted {
                tracing::warn!(
                    path = %path.display(),
                    plugin = %init.name,
                    "this library is already loaded in this process with other settings; \
                     those (and its egress grants) stay in effect (a library is initialised once)"
                );
            }
            Ok(init.clone())
        }
        Err((kind, reason)) => Err(LoadFailure::new(path, *kind, reason.clone())),
    }
}

fn run_init(
    module: PluginModuleRef,
    api_version: &str,
    config: &HostConfig,
    state: &HostState,
) -> InitOutcome {
    let name = module.plugin_name().as_str().to_owned();
    let version = module.plugin_version().as_str().to_owned();
    let settings = config.settings_of(&name);
    let token = capabilities::register_plugin(&name, settings.clone(), state.refusals.clone());
    capabilities::set_http_limits(token, config.http);
    let mut egress = Egress {
        declared: Vec::new(),
        granted: config.egress_of(&name),
    };
    capabilities::set_egress(token, &name, &egress);
    if let Err(message) = (module.init())(capabilities::context_for(token)).into_result() {
        return Err((
            FailureKind::InitFailed,
            format!("plugin {name} {version} failed to initialise: {message}"),
        ));
    }
    let providers: Vec<_> = (module.providers())()
        .into_iter()
        .map(|entry| {
            let entry = entry.into_result().map_err(|m| m.into_string())?;
            describe(entry.handle, entry.descriptor_json.as_str())
        })
        .collect();
    egress.declared = declared_egress(&providers);
    capabilities::set_egress(token, &name, &egress);
    Ok(Loaded {
        code: Code::InProcess(module),
        name,
        version,
        api_version: api_version.to_owned(),
        providers,
        settings,
        egress,
    })
}

/// Opens the library at `load_path` with every check of
/// [`open_in_process`] but without initialising it, and
/// returns its plugin's name. Failures name `path`. (A worker says whose
/// plugin it holds before the host hands it that plugin's settings.)
pub(crate) fn plugin_name(
    load_path: &Path,
    path: &Path,
    max_plugin_size: u64,
) -> Result<String, LoadFailure> {
    crate::library::open(load_path, max_plugin_size)
        .map(|opened| opened.module.plugin_name().as_str().to_owned())
        .map_err(|failure| failure.reported_as(load_path, path))
}

/// Opens, checks and initialises the library copy at `load_path` in this
/// process, reporting it (in origins and failures) as `path`, the file
/// the copy was made from: a failure names `path` wherever its text named
/// the copy (the system loader's message names the file it was given).
/// A library is initialised once per process, with the settings of the
/// first `config` that opened it, its egress refusals counted in the
/// first `state`'s (each catalog loads copies of its own, so each host
/// initialises its own instances).
pub(crate) fn open_in_process(
    load_path: &Path,
    path: &Path,
    config: &HostConfig,
    state: &HostState,
) -> Result<Plugin, LoadFailure> {
    open_in_process_as(load_path, path, config, state, Checks::All)
}

/// [`open_in_process`], checking the file as `checks` says.
pub(crate) fn open_in_process_as(
    load_path: &Path,
    path: &Path,
    config: &HostConfig,
    state: &HostState,
    checks: Checks,
) -> Result<Plugin, LoadFailure> {
    initialize(load_path, config, state, checks)
        .map(|init| Plugin::new(init, path))
        .map_err(|failure| failure.reported_as(load_path, path))
}
