//! A loaded plugin, wherever its code runs: its name, version, providers'
//! descriptions and egress, and the entries it offers the registry. The
//! loader makes one in this process (`crate::loader`); the catalog makes
//! one around a started worker ([`Plugin::isolated`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use connhost_plugin_api::abi::PluginModuleRef;
use connhost_plugin_api::ProviderDescriptor;

use crate::backend::isolated::{Started, Supervisor};
use crate::backend::{Backend, InProcess, Isolated};
use crate::model::config::{HostConfig, Isolation};
use crate::model::egress::Egress;
use crate::model::origin::Origin;
use crate::model::report::{FailureKind, LoadFailure};
use crate::model::worker_status::WorkerStatus;
use crate::registry::RegisteredProvider;

/// Where a library's code runs.
#[derive(Clone)]
pub(crate) enum Code {
    /// Loaded into this process.
    InProcess(PluginModuleRef),
    /// Loaded into a worker process of its own.
    Isolated(Arc<Supervisor>),
}

/// A library after `init` and `providers` (in process: cached per library,
/// since the same file opened twice is the same object in the process).
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) code: Code,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) api_version: String,
    pub(crate) providers: Vec<Result<(u32, ProviderDescriptor), String>>,
    /// The settings `init` ran with; they stay in effect for the process.
    pub(crate) settings: BTreeMap<String, String>,
    /// What its providers declare and its operator granted, in force for
    /// its HTTP (as its settings, fixed when it was initialised).
    pub(crate) egress: Egress,
}

/// A plugin library that opened, passed every check and initialised (in
/// this process or in a worker), with its providers' descriptions: ready
/// to be registered (any number of times, into any number of registries).
/// An in-process library is never unloaded; an isolated one's worker
/// stops when the last handle to it goes.
#[derive(Clone)]
pub(crate) struct Plugin {
    pub(crate) init: Loaded,
    path: PathBuf,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("plugin", &self.init.name)
            .field("version", &self.init.version)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name.
    pub(crate) fn name(&self) -> &str {
        &self.init.name
    }

    /// The plugin's version.
    pub(crate) fn version(&self) -> &str {
        &self.init.version
    }

    /// The file it is reported as.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Where its code runs.
    pub(crate) fn isolation(&self) -> Isolation {
        match self.init.code {
            Code::InProcess(_) => Isolation::InProcess,
            Code::Isolated(_) => Isolation::Process,
        }
    }

    /// The hosts its providers declare and its operator's grant, in force
    /// for its HTTP.
    pub(crate) fn egress(&self) -> &Egress {
        &self.init.egress
    }

    /// Its worker's status, when it is isolated.
    pub(crate) fn worker_status(&self) -> Option<WorkerStatus> {
        match &self.init.code {
            Code::InProcess(_) => None,
            Code::Isolated(supervisor) => Some(supervisor.status()),
        }
    }

    /// Keeps its worker running while the catalog serves the plugin, and
    /// stops it while it does not (none of its providers registered: a
    /// conflict); nothing for a plugin loaded into this process.
    pub(crate) fn keep_worker(&self, served: bool) {
        if let Code::Isolated(supervisor) = &self.init.code {
            if served {
                supervisor.start_again();
            } else {
                supervisor.stop();
            }
        }
    }

    /// Lets an isolated plugin parked after a crash loop start again.
    pub(crate) fn unpark(&self) {
        if let Code::Isolated(supervisor) = &self.init.code {
            supervisor.unpark();
        }
    }

    /// The module, when the library is loaded into this process.
    pub(crate) fn module(&self) -> Option<PluginModuleRef> {
        match self.init.code {
            Code::InProcess(module) => Some(module),
            Code::Isolated(_) => None,
        }
    }

    /// Its providers as a worker reports them to its host.
    pub(crate) fn wire_providers(&self) -> Vec<crate::protocol::WireProvider> {
        self.init
            .providers
            .iter()
            .map(|provider| {
                provider
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|(handle, descriptor)| {
                        serde_json::to_string(descriptor)
                            .map(|json| (*handle, json))
                            .map_err(|e| format!("a provider's description could not be sent: {e}"))
                    })
            })
            .collect()
    }

    /// The `connhost-plugin-api` version it was built against.
    pub(crate) fn api_version(&self) -> &str {
        &self.init.api_version
    }

    /// The ids of the providers it offers (those that described
    /// themselves), in the order the plugin lists them.
    pub(crate) fn provider_ids(&self) -> impl Iterator<Item = &str> {
        self.init
            .providers
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(_, d)| d.provider_id.as_str()))
    }

    /// Its providers, in the order the plugin lists them: each an entry
    /// ready to register (origin: this plugin and [`path`](Self::path);
    /// backend: in process), or the failure of a provider that could not
    /// describe itself.
    pub(crate) fn providers(&self) -> Vec<Result<RegisteredProvider, LoadFailure>> {
        let init = &self.init;
        let origin = Origin::Plugin {
            plugin: init.name.clone(),
            version: init.version.clone(),
            path: self.path.clone(),
        };
        init.providers
            .iter()
            .map(|provider| match provider {
                Err(message) => Err(LoadFailure::new(
                    &self.path,
                    FailureKind::ProviderFault,
                    format!(
                        "plugin {} {}: {message}; its other providers still load.",
                        init.name, init.version
                    ),
                )),
                Ok((handle, descriptor)) => Ok(RegisteredProvider::new(
                    descriptor.clone(),
                    false,
                    origin.clone(),
                    match &init.code {
                        Code::InProcess(module) => {
                            Backend::InProcess(InProcess::new(*module, *handle))
                        }
                        Code::Isolated(supervisor) => {
                            Backend::Isolated(Isolated::new(supervisor.clone(), *handle))
                        }
                    },
                )),
            })
            .collect()
    }
}

impl Plugin {
    /// A loaded plugin of `init`, reported as the file `path`.
    pub(crate) fn new(init: Loaded, path: &Path) -> Self {
        Self {
            init,
            path: path.to_owned(),
        }
    }

    /// The plugin a started worker holds, reported as the file `path`: its
    /// providers' descriptions checked, and its egress (what they declare,
    /// what `config` grants) put in force for the HTTP its worker asks for.
    pub(crate) fn isolated(started: Started, path: &Path, config: &HostConfig) -> Self {
        let Started {
            supervisor,
            ready,
            token,
        } = started;
        let providers: Vec<_> = ready
            .providers
            .into_iter()
            .map(|provider| provider.and_then(|(handle, json)| describe(handle, &json)))
            .collect();
        let egress = Egress {
            declared: declared_egress(&providers),
            granted: config.egress_of(&ready.name),
        };
        crate::capabilities::set_egress(token, &ready.name, &egress);
        Self::new(
            Loaded {
                code: Code::Isolated(Arc::new(supervisor)),
                settings: config.settings_of(&ready.name),
                name: ready.name,
                version: ready.version,
                api_version: ready.api_version,
                providers,
                egress,
            },
            path,
        )
    }
}

/// The hosts a plugin's providers declare, once each.
pub(crate) fn declared_egress(
    providers: &[Result<(u32, ProviderDescriptor), String>],
) -> Vec<String> {
    Egress::declared_by(
        providers
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(_, d)| &d.egress)),
    )
}

/// A provider's handle and description from its JSON, checked.
pub(crate) fn describe(handle: u32, json: &str) -> Result<(u32, ProviderDescriptor), String> {
    let descriptor: ProviderDescriptor = serde_json::from_str(json)
        .map_err(|e| format!("a provider returned a description the host cannot read: {e}"))?;
    let problems = descriptor.problems();
    if !problems.is_empty() {
        return Err(format!(
            "provider \"{}\" has an unusable description: {}",
            descriptor.provider_id,
            problems.join("; ")
        ));
    }
    Ok((handle, descriptor))
}
