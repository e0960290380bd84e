//! The plugin side of the ABI: what [`export_plugin!`](crate::export_plugin)
//! expands to calls into here. Every `extern "C"` function catches panics.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::{Arc, OnceLock};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RErr, ROk, RResult, RSlice, RStr, RString, RVec};
use async_ffi::{BorrowingFfiFuture, FfiFuture};

use crate::abi::{
    outcome, FfiField, FfiFieldRef, FfiOutcome, FfiProviderEntry, FfiVerdict, HostContext,
    PluginModule, PluginModuleRef,
};
use crate::panic::{catch_panic, CatchPanic};
use crate::provider::{
    ConnectionProvider, ConnectionValidation, ProviderDescriptor, ValidationErrorKind,
};
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
        validate_lent: plugin_validate_lent,
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

/// The submitted fields as a provider of this plugin sees them: a map of the
/// host's own strings, lent for the call rather than copied into this
/// library's allocator (a copy would cost an allocation and a free per name
/// and per value, on every call).
///
/// The strings' memory stays the host's: `owner` (the vector the host
/// handed over to [`PluginModule::validate`], or the slice it lent to
/// [`PluginModule::validate_lent`] for the length of the call) holds it,
/// and the host frees it. The map only borrows it, and this type keeps to
/// what that needs:
/// - the provider sees the map only as `&CredentialFields`, and a `String`
///   cannot be grown, shrunk or freed through a shared reference (a clone
///   is a new string of this library's);
/// - the map never drops a lent string: [`Drop`] forgets every one, so this
///   library's allocator never frees or resizes memory it did not allocate;
/// - the map goes before `owner` does (`Drop::drop` runs before the fields
///   are dropped, and a lent slice outlives the future holding the map),
///   and `owner` is never touched while it lives.
///
/// When `names_owned`, the map's names are this library's own copies and
/// only its values are lent: such a map is kept as a [`Spare`] for the
/// provider's next call on this thread ([`SPARES`]), and a next call with
/// the same names (a provider's form rarely changes) only lends it the new
/// values, without building a map (an allocation, a search per name and a
/// free, on every call).
struct LentFields<'a> {
    map: ManuallyDrop<CredentialFields>,
    names_owned: bool,
    handle: u32,
    owner: Owner<'a>,
}

/// Whose strings a [`LentFields`] lends.
enum Owner<'a> {
    /// Handed over to [`PluginModule::validate`]: freed (with the host's
    /// destructor) when this is dropped.
    Handed(RVec<FfiField>),
    /// Lent to [`PluginModule::validate_lent`] for the length of the call.
    Lent(RSlice<'a, FfiFieldRef<'a>>),
}

impl Owner<'_> {
    fn len(&self) -> usize {
        match self {
            Owner::Handed(fields) => fields.len(),
            Owner::Lent(fields) => fields.len(),
        }
    }

    /// The `index`th name and value.
    fn field(&self, index: usize) -> (&str, &str) {
        match self {
            Owner::Handed(fields) => (fields[index].name.as_str(), fields[index].value.as_str()),
            Owner::Lent(fields) => (fields[index].name.as_str(), fields[index].value.as_str()),
        }
    }
}

/// Providers with a handle below this keep a spare map per thread.
const MAX_SPARES: usize = 32;

/// The map of a provider's last call, kept for its next one: its names are
/// this library's own strings; its values are *stale*, the strings that
/// call was lent, whose memory may be gone. Nothing reads them: the next
/// call overwrites every one before the provider sees the map, or forgets
/// them all. They are never dropped (this type's `Drop` forgets them), so
/// keeping the map costs no pass over its values.
struct Spare(CredentialFields);

impl Spare {
    /// The map, its values still stale.
    fn into_map(mut self) -> CredentialFields {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        forget_values(&mut self.0);
    }
}

/// Forgets `map`'s values (lent or stale strings), leaving it with empty
/// ones, which own nothing.
fn forget_values(map: &mut CredentialFields) {
    for value in map.values_mut() {
        std::mem::forget(std::mem::take(value));
    }
}

thread_local! {
    /// Per provider handle, the map of its last call on this thread, kept
    /// for its next call.
    static SPARES: RefCell<Vec<Option<Spare>>> = const { RefCell::new(Vec::new()) };
}

/// Takes the spare map of the provider behind `handle`, if this thread has
/// one.
fn take_spare(handle: u32) -> Option<Spare> {
    SPARES
        .try_with(|spares| {
            spares
                .try_borrow_mut()
                .ok()?
                .get_mut(handle as usize)?
                .take()
        })
        .ok()
        .flatten()
}

/// Keeps `spare` for the next call of the provider behind `handle` on this
/// thread; drops it when it cannot be kept.
fn put_spare(handle: u32, spare: Spare) {
    let index = handle as usize;
    if index >= MAX_SPARES {
        return;
    }
    let _ = SPARES.try_with(|spares| {
        if let Ok(mut spares) = spares.try_borrow_mut() {
            if spares.len() <= index {
                spares.resize_with(index + 1, || None);
            }
            spares[index] = Some(spare);
        }
    });
}

impl<'a> LentFields<'a> {
    /// Lends `owner`'s strings to the provider behind `handle`; a name
    /// given twice takes its last value, as inserting each field in turn
    /// would.
    fn new(owner: Owner<'a>, handle: u32) -> Self {
        let names_owned = (handle as usize) < MAX_SPARES;
        // Built in place, so that whatever happens while it is built, the
        // map is forgotten as `Drop` does.
        let mut lent = Self {
            map: ManuallyDrop::new(take_spare(handle).map(Spare::into_map).unwrap_or_default()),
            names_owned,
            handle,
            owner,
        };
        // A spare map with these very names, in this order (so each once):
        // it only needs the values, lent as the names are compared.
        let mut same_names = !lent.map.is_empty() && lent.map.len() == lent.owner.len();
        if same_names {
            for (index, (name, slot)) in lent.map.iter_mut().enumerate() {
                let (field_name, value) = lent.owner.field(index);
                if name.as_str() != field_name {
                    same_names = false;
                    break;
                }
                // SAFETY: see the type's docs: the strings are only read,
                // and forgotten before `owner` frees them. The spare's
                // value replaced is stale: forgotten, never dropped.
                std::mem::forget(std::mem::replace(slot, unsafe { lend(value) }));
            }
        }
        if same_names {
            return lent;
        }
        // Another form: a map of its own. The spare's names are this
        // library's: it is dropped once its values (stale, or lent so far)
        // are forgotten.
        let mut spare = std::mem::take(&mut *lent.map);
        forget_values(&mut spare);
        drop(spare);
        // The host sends the names in order, each once (its own map's
        // order): a name after the last one is new, without a search.
        let mut last: Option<&str> = None;
        for index in 0..lent.owner.len() {
            let (name, value) = lent.owner.field(index);
            // SAFETY: as above.
            let value = unsafe { lend(value) };
            let after_last = last.is_none_or(|last| name > last);
            let taken = if after_last {
                last = Some(name);
                None
            } else {
                lent.map.get_mut(name)
            };
            match taken {
                Some(slot) => std::mem::forget(std::mem::replace(slot, value)),
                None if names_owned => {
                    lent.map.insert(name.to_owned(), value);
                }
                None => {
                    // SAFETY: as above.
                    lent.map.insert(unsafe { lend(name) }, value);
                }
            }
        }
        lent
    }

    /// The fields, for the provider.
    fn map(&self) -> &CredentialFields {
        &self.map
    }
}

impl Drop for LentFields<'_> {
    fn drop(&mut self) {
        // SAFETY: the map is taken once, here, and never used again.
        let map = unsafe { ManuallyDrop::take(&mut self.map) };
        if self.names_owned {
            // Its names are this library's: the map is kept for the next
            // call, its values (lent) now stale.
            put_spare(self.handle, Spare(map));
        } else {
            for (name, value) in map {
                std::mem::forget(name);
                std::mem::forget(value);
            }
        }
        // `self.owner` is dropped next: a handed-over vector frees the
        // strings' memory with the host's destructor.
    }
}

/// A `String` over `text`'s bytes without copying them (an empty one owns
/// nothing). Its capacity reads as its length: nothing may grow it.
///
/// # Safety
///
/// The `String` must never be dropped, grown, shrunk or written to (forget
/// it), and must be gone before `text`'s memory is freed or changed: that
/// memory may belong to another library's allocator, or be no allocation
/// of its own at all.
unsafe fn lend(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    // SAFETY: `text`'s bytes are valid UTF-8 and `len` of them are
    // readable; the caller keeps the rest of the contract.
    unsafe { String::from_raw_parts(text.as_ptr().cast_mut(), text.len(), text.len()) }
}

/// What a validation came to, before it is written for the host.
enum Ran {
    Valid(ConnectionValidation),
    /// `kind` is one of [`outcome`]'s other codes.
    Failed {
        kind: u8,
        message: String,
    },
}

impl Ran {
    fn fault(message: String) -> Self {
        Ran::Failed {
            kind: outcome::FAULT,
            message,
        }
    }
}

/// Runs the validation of the provider behind `handle` on `fields`, with
/// its panics caught. The providers live as long as the library (never
/// unloaded): the future borrows its provider rather than counting a
/// reference.
async fn run(handle: u32, fields: LentFields<'_>) -> Ran {
    let provider = match providers() {
        Ok(list) => list.get(handle as usize),
        Err(message) => return Ran::fault(format!("the plugin has no providers: {message}")),
    };
    let Some(provider) = provider else {
        return Ran::fault(format!("no provider with handle {handle}"));
    };
    match CatchPanic::new(provider.validate_fields(fields.map())).await {
        Ok(Ok(validation)) => Ran::Valid(validation),
        Ok(Err(error)) => Ran::Failed {
            kind: match error.kind {
                ValidationErrorKind::Rejected => outcome::REJECTED,
                ValidationErrorKind::Inconclusive => outcome::INCONCLUSIVE,
            },
            message: error.message,
        },
        Err(panic) => Ran::fault(format!("panicked while validating: {panic}")),
    }
}

/// The message of a validation that could not even start.
fn not_started(panic: impl std::fmt::Display) -> String {
    format!("panicked while starting a validation: {panic}")
}

extern "C" fn plugin_validate(handle: u32, fields: RVec<FfiField>) -> FfiFuture<FfiOutcome> {
    let made = catch_panic(move || {
        let fields = LentFields::new(Owner::Handed(fields), handle);
        FfiFuture::new(async move {
            let (kind, message) = match run(handle, fields).await {
                Ran::Valid(validation) => {
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
                    return FfiOutcome {
                        kind: outcome::VALID,
                        message: RString::new(),
                        username: validation.provider_username.map(RString::from).into(),
                        metadata_json: metadata.into(),
                    };
                }
                Ran::Failed { kind, message } => (kind, message),
            };
            FfiOutcome {
                kind,
                message: message.into(),
                username: None.into(),
                metadata_json: None.into(),
            }
        })
    });
    made.unwrap_or_else(|panic| {
        let message = not_started(panic);
        FfiFuture::new(async move { fault(message) })
    })
}

extern "C" fn plugin_validate_lent<'a>(
    handle: u32,
    fields: RSlice<'a, FfiFieldRef<'a>>,
    metadata: &'a mut RVec<u8>,
) -> BorrowingFfiFuture<'a, FfiVerdict> {
    let failed = |kind: u8, message: String| FfiVerdict {
        kind,
        has_metadata: false,
        message: message.into(),
        username: None.into(),
    };
    let made = catch_panic(move || {
        let fields = LentFields::new(Owner::Lent(fields), handle);
        BorrowingFfiFuture::new(async move {
            match run(handle, fields).await {
                Ran::Valid(validation) => {
                    let has_metadata = match &validation.provider_metadata {
                        None => false,
                        Some(value) => {
                            if let Err(e) = crate::value_codec::encode(value, metadata) {
                                return failed(
                                    outcome::FAULT,
                                    format!("returned metadata that does not encode: {e}"),
                                );
                            }
                            true
                        }
                    };
                    FfiVerdict {
                        kind: outcome::VALID,
                        has_metadata,
                        message: RString::new(),
                        username: validation.provider_username.map(RString::from).into(),
                    }
                }
                Ran::Failed { kind, message } => failed(kind, message),
            }
        })
    });
    made.unwrap_or_else(|panic| {
        let message = not_started(panic);
        BorrowingFfiFuture::new(async move { failed(outcome::FAULT, message) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(pairs: &[(&str, &str)]) -> RVec<FfiField> {
        pairs
            .iter()
            .map(|(name, value)| FfiField {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect()
    }

    fn expected(pairs: &[(&str, &str)]) -> CredentialFields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn lent_fields_read_as_the_submission_and_the_last_of_a_repeated_name_wins() {
        let submission = [
            ("secret", "s3cr3t"),
            ("account", "a"),
            ("secret", "other"),
            ("empty", ""),
            ("b", "after a name out of order"),
        ];
        let wanted = expected(&[
            ("account", "a"),
            ("b", "after a name out of order"),
            ("empty", ""),
            ("secret", "other"),
        ]);
        // With names of its own (kept for the next call) and with lent
        // names (a handle past the spares).
        for handle in [0, MAX_SPARES as u32 + 3] {
            let lent = LentFields::new(Owner::Handed(submitted(&submission)), handle);
            assert_eq!(lent.map(), &wanted);
            // Dropping frees each string once (the allocator aborts
            // otherwise).
            drop(lent);
        }
        drop(LentFields::new(Owner::Handed(RVec::new()), 1));
    }

    #[test]
    fn lent_slices_read_as_the_submission_and_outlive_nothing() {
        let handle = 5;
        for round in 0..3 {
            // The host's strings, freed after each call: the spare kept
            // between calls must never read them again (memcheck says so
            // when this test runs under valgrind).
            let names = ["account", "region", "secret"].map(String::from);
            let values = [format!("a{round}"), String::new(), format!("s{round}")];
            let lent: Vec<FfiFieldRef<'_>> = names
                .iter()
                .zip(&values)
                .map(|(name, value)| FfiFieldRef {
                    name: name.as_str().into(),
                    value: value.as_str().into(),
                })
                .collect();
            let fields = LentFields::new(Owner::Lent(RSlice::from_slice(&lent)), handle);
            let wanted: CredentialFields =
                names.iter().cloned().zip(values.iter().cloned()).collect();
            assert_eq!(fields.map(), &wanted);
            drop(fields);
            drop(lent);
            drop(values);
        }
    }

    #[test]
    fn a_spare_map_serves_the_same_names_and_gives_way_to_others() {
        let handle = 2;
        let first = [("account", "a"), ("region", "eu"), ("secret", "s")];
        drop(LentFields::new(Owner::Handed(submitted(&first)), handle));
        // The same names: the spare map, with the new values.
        let again = [("account", "b"), ("region", ""), ("secret", "t")];
        let lent = LentFields::new(Owner::Handed(submitted(&again)), handle);
        assert_eq!(lent.map(), &expected(&again));
        // A second call while the first holds the spare builds its own.
        let meanwhile = LentFields::new(Owner::Handed(submitted(&first)), handle);
        assert_eq!(meanwhile.map(), &expected(&first));
        drop(lent);
        drop(meanwhile);
        // Fewer names, other names, the same names out of order, and a
        // repeated name: each read as submitted.
        for submission in [
            &[("account", "c"), ("secret", "u")][..],
            &[("account", "d"), ("other", "x"), ("secret", "v")][..],
            &[("secret", "w"), ("account", "e"), ("other", "y")][..],
            &[("account", "f"), ("other", "z"), ("other", "last")][..],
            &[][..],
        ] {
            let lent = LentFields::new(Owner::Handed(submitted(submission)), handle);
            let mut wanted = CredentialFields::new();
            for (name, value) in submission {
                wanted.insert((*name).to_owned(), (*value).to_owned());
            }
            assert_eq!(lent.map(), &wanted);
            drop(lent);
        }
        let last = [("account", "g"), ("region", "us"), ("secret", "x")];
        let lent = LentFields::new(Owner::Handed(submitted(&last)), handle);
        assert_eq!(lent.map(), &expected(&last));
    }
}
