//! Providers compiled into the host, registered through `inventory` exactly
//! as a third-party crate linked into the host would register its own, and
//! [`compiled_in`], which turns everything `inventory` collected into
//! registry entries.

mod openai;
mod simulator;

use std::sync::Arc;

use connhost_plugin_api::panic::catch_panic;
use connhost_plugin_api::{builtin_providers, ConnectionProvider, ProviderDescriptor};

use crate::backend::{Backend, CompiledIn};
use crate::model::origin::Origin;
use crate::model::report::{FailureKind, LoadFailure};
use crate::registry::RegisteredProvider;

/// The path a failure of a built-in provider is reported under.
pub const BUILTIN_PATH: &str = "(built in)";

/// The providers compiled into this binary (see
/// [`connhost_plugin_api::ConnectionProviderPlugin`]), experimental-only
/// ones only when `experimental` is true, in the order `inventory` lists
/// them.
///
/// Like plugins, built-ins are checked: one whose factory or descriptive
/// methods panic, or whose description is unusable, is left out and
/// returned as a failure (with the path [`BUILTIN_PATH`]) instead of
/// stopping the host.
pub(crate) fn compiled_in(experimental: bool) -> (Vec<Arc<RegisteredProvider>>, Vec<LoadFailure>) {
    let mut entries = Vec::new();
    let mut failures = Vec::new();
    let fail = |reason: String| LoadFailure::new(BUILTIN_PATH, FailureKind::ProviderFault, reason);
    for plugin in builtin_providers() {
        if plugin.experimental_only && !experimental {
            continue;
        }
        let provider: Arc<dyn ConnectionProvider> = match catch_panic(plugin.factory) {
            Ok(provider) => Arc::from(provider),
            Err(panic) => {
                failures.push(fail(format!(
                    "a built-in provider panicked while being constructed: {panic}"
                )));
                continue;
            }
        };
        let descriptor = match ProviderDescriptor::capture_catching(provider.as_ref()) {
            Ok(descriptor) => descriptor,
            Err(message) => {
                failures.push(fail(format!("a built-in {message}")));
                continue;
            }
        };
        let problems = descriptor.problems();
        if !problems.is_empty() {
            failures.push(fail(format!(
                "built-in provider \"{}\" has an unusable description: {}",
                descriptor.provider_id,
                problems.join("; ")
            )));
            continue;
        }
        let backend = Backend::CompiledIn(CompiledIn::new(provider));
        entries.push(Arc::new(RegisteredProvider::new(
            descriptor,
            plugin.experimental_only,
            Origin::Builtin,
            backend,
        )));
    }
    (entries, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experimental_built_ins_come_only_when_asked() {
        let ids = |experimental| {
            let (entries, failures) = compiled_in(experimental);
            assert!(failures.is_empty(), "{failures:?}");
            entries
                .iter()
                .map(|e| e.id().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(ids(false).contains(&"openai".to_owned()));
        assert!(!ids(false).contains(&"simulator".to_owned()));
        assert!(ids(true).contains(&"simulator".to_owned()));
    }
}
