//! The plugin side of the ABI: what [`export_plugin!`](crate::export_plugin)
//! expands to calls into here. Every `extern "C"` function catches panics.

use std::sync::{Arc, OnceLock};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString, RVec};
use async_ffi::FfiFuture;

use crate::abi::{
    outcome, FfiField, FfiOutcome, FfiProviderEntry, HostContext, PluginModule, PluginModuleRef,
};
use crate::panic::{catch_panic, CatchPanic};
use crate::provider::{ConnectionProvider, ProviderDescriptor, ValidationErrorKind};
use crate::schema::CredentialFields;

/// Builds the plugin's providers.
pub type Factory = fn() -> Vec<Box<dyn ConnectionProvider>>;
/// The plugin author's optional init hook.
pub type InitHook = fn() -> Result<(), String>;

struct Registration {
    factory: Factory,
    init: Option<InitHook>,
}

static REGISTRATION: OnceLock<Registration> = OnceLock::new();
static PROVIDERS: OnceLock<Result<Vec<Arc<dyn ConnectionProvider>>, String>> = OnceLock::new();

/// Builds the root module. Called by the function `export_plugin!` exports.
pub fn plugin_module(
    name: &'static str,
    version: &'static str,
    factory: Factory,
    init: Option<InitHook>,
) -> PluginModuleRef {
    let _ = REGISTRATION.set(Registration { factory, init });
    PluginModule {
        plugin_name: RStr::from_str(name),
        plugin_version: RStr::from_str(version),
        init: plugin_init,
        providers: plugin_providers,
        validate: plugin_validate,
    }
    .leak_into_prefix()
}

extern "C" fn plugin_init(host: HostContext) -> RResult<(), RString> {
    let result = catch_panic(|| {
        if crate::host::install(host) {
            let _ =
                tracing::subscriber::set_global_default(crate::log_bridge::Forwarder::new(host));
            crate::log_bridge::install_panic_hook(host);
        }
        match REGISTRATION.get().and_then(|r| r.init) {
            Some(hook) => hook(),
            None => Ok(()),
        }
    });
    match result {
        Ok(Ok(())) => ROk(()),
        Ok(Err(message)) => RErr(format!("init failed: {message}").into()),
        Err(panic) => RErr(format!("panicked during init: {panic}").into()),
    }
}

fn providers() -> &'static Result<Vec<Arc<dyn ConnectionProvider>>, String> {
    PROVIDERS.get_or_init(|| {
        let factory = REGISTRATION
            .get()
            .map(|r| r.factory)
            .ok_or_else(|| "the plugin registered no provider factory".to_owned())?;
        catch_panic(factory)
            .map(|list| list.into_iter().map(Arc::from).collect())
            .map_err(|panic| format!("panicked while constructing its providers: {panic}"))
    })
}

extern "C" fn plugin_providers() -> RVec<RResult<FfiProviderEntry, RString>> {
    let result = catch_panic(|| match providers() {
        Err(message) => vec![RErr(RString::from(message.as_str()))],
        Ok(list) => list
            .iter()
            .enumerate()
            .map(|(index, provider)| {
                let described = ProviderDescriptor::capture_catching(provider.as_ref())
                    .map_err(|m| format!("provider #{}: {m}", index + 1))
                    .and_then(|d| {
                        serde_json::to_string(&d)
                            .map_err(|e| format!("provider #{}: {e}", index + 1))
                    });
                match described {
                    Ok(json) => ROk(FfiProviderEntry {
                        handle: index as u32,
                        descriptor_json: json.into(),
                    }),
                    Err(message) => RErr(message.into()),
                }
            })
            .collect(),
    });
    match result {
        Ok(list) => list.into(),
        Err(panic) => vec![RErr(RString::from(format!(
            "panicked while listing providers: {panic}"
        )))]
        .into(),
    }
}

fn fault(message: String) -> FfiOutcome {
    FfiOutcome {
        kind: outcome::FAULT,
        message: message.into(),
        username: None.into(),
        metadata_json: None.into(),
    }
}

extern "C" fn plugin_validate(handle: u32, fields: RVec<FfiField>) -> FfiFuture<FfiOutcome> {
    let made = catch_panic(move || {
        let provider = match providers() {
            Ok(list) => list.get(handle as usize).cloned(),
            Err(_) => None,
        };
        // One insert per field: cheaper than collecting (which sorts a
        // temporary vector) for the handful of fields a form has.
        let mut owned = CredentialFields::new();
        for field in fields {
            owned.insert(field.name.into_string(), field.value.into_string());
        }
        let fields = owned;
        FfiFuture::new(async move {
            let Some(provider) = provider else {
                return fault(match providers() {
                    Err(message) => format!("the plugin has no providers: {message}"),
                    Ok(_) => format!("no provider with handle {handle}"),
                });
            };
            let validating = async move { provider.validate_fields(&fields).await };
            match CatchPanic::new(validating).await {
                Ok(Ok(validation)) => {
                    // `to_string` writes straight into a buffer; `Display`
                    // goes through the formatting machinery.
                    let metadata = match validation
                        .provider_metadata
                        .as_ref()
                        .map(serde_json::to_string)
                    {
                        None => None,
                        Some(Ok(json)) => Some(RString::from(json)),
                        Some(Err(e)) => {
                            return fault(format!("returned metadata that does not serialise: {e}"))
                        }
                    };
                    FfiOutcome {
                        kind: outcome::VALID,
                        message: RString::new(),
                        username: validation.provider_username.map(RString::from).into(),
                        metadata_json: metadata.into(),
                    }
                }
                Ok(Err(error)) => FfiOutcome {
                    kind: match error.kind {
                        ValidationErrorKind::Rejected => outcome::REJECTED,
                        ValidationErrorKind::Inconclusive => outcome::INCONCLUSIVE,
                    },
                    message: error.message.into(),
                    username: None.into(),
                    metadata_json: None.into(),
                },
                Err(panic) => fault(format!("panicked while validating: {panic}")),
            }
        })
    });
    made.unwrap_or_else(|panic| {
        let message = format!("panicked while starting a validation: {panic}");
        FfiFuture::new(async move { fault(message) })
    })
}
