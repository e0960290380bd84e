//! The ABI between the host and a plugin library. Host plumbing: plugin
//! authors never touch these types (they use [`export_plugin!`]).
//!
//! # Evolving the ABI
//!
//! [`PluginModule`] and [`HostVTable`] are abi_stable *prefix types*. A later
//! `0.y.z` of this crate may only **append** fields after the field marked
//! `#[sabi(last_prefix_field)]`, each with `#[sabi(missing_field(option))]`:
//! its accessor reads the peer's own field count, so it answers `None` for
//! a peer built before the field existed. Inserting, removing, reordering
//! or retyping a field is a breaking change: it needs a new minor version
//! (`0.y`), and the host refuses plugins built against another `0.y`.
//! Descriptors cross as JSON ([`FfiProviderEntry::descriptor_json`]) so they
//! can grow optional keys without touching the layout.
//!
//! abi_stable's layout check accepts a library whose prefix type has *more*
//! fields than the host's declaration, never fewer. So a host built
//! against `0.1.1` loads a plugin built against `0.1.0` only by checking
//! it against the declaration `0.1.0` had, which stays here ([`v0_1_0`]);
//! an appended field keeps the previous declaration the same way (the
//! host's own [`HostVTable`] would need it as well, inside that module's
//! `init`). The `api_versions` integration tests load a plugin built
//! against `0.1.0` into this host, and a plugin built against this crate
//! into a host built against `0.1.0`.
//!
//! Every function a plugin exports catches panics on the plugin side and
//! returns them as errors: a panic never unwinds into the host.
//!
//! [`export_plugin!`]: crate::export_plugin

#![allow(missing_docs)] // the fields are documented at the type level

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::StableAbi;
use async_ffi::{BorrowingFfiFuture, FfiFuture};

/// One submitted form value.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct FfiField {
    pub name: RString,
    pub value: RString,
}

/// A provider a plugin offers: a handle for [`PluginModule::validate`] and
/// its [`ProviderDescriptor`](crate::ProviderDescriptor) as JSON.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiProviderEntry {
    pub handle: u32,
    pub descriptor_json: RString,
}

/// Outcome codes of [`FfiOutcome::kind`].
pub mod outcome {
    /// Accepted.
    pub const VALID: u8 = 0;
    /// The provider rejected the credential.
    pub const REJECTED: u8 = 1;
    /// The check could not be completed.
    pub const INCONCLUSIVE: u8 = 2;
    /// The provider panicked or misbehaved.
    pub const FAULT: u8 = 3;
}

/// What a validation returned. `kind` is one of [`outcome`]; on
/// [`outcome::VALID`] `username` and `metadata_json` are set as the provider
/// said, otherwise `message` explains.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiOutcome {
    pub kind: u8,
    pub message: RString,
    pub username: ROption<RString>,
    pub metadata_json: ROption<RString>,
}

/// One submitted form value, lent by the host for one call of
/// [`PluginModule::validate_lent`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiFieldRef<'a> {
    pub name: RStr<'a>,
    pub value: RStr<'a>,
}

/// What [`PluginModule::validate_lent`] returned: an [`FfiOutcome`] whose
/// metadata, when `has_metadata` (only on [`outcome::VALID`], and only
/// when the provider reported metadata), is in the buffer the host lent
/// the call, in [`value_codec`](crate::value_codec)'s encoding.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiVerdict {
    pub kind: u8,
    pub has_metadata: bool,
    pub message: RString,
    pub username: ROption<RString>,
}

/// The root module a plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The plugin's name (its crate name).
    pub plugin_name: RStr<'static>,
    /// The plugin's version (its crate version).
    pub plugin_version: RStr<'static>,
    /// Called once, before anything else, with the host's capabilities.
    pub init: extern "C" fn(host: HostContext) -> RResult<(), RString>,
    /// The plugin's providers; a provider whose descriptive methods panic is
    /// an `RErr` naming it and the method.
    pub providers: extern "C" fn() -> RVec<RResult<FfiProviderEntry, RString>>,
    /// Validates a submitted form with the provider behind `handle`.
    #[sabi(last_prefix_field)]
    pub validate: extern "C" fn(handle: u32, fields: RVec<FfiField>) -> FfiFuture<FfiOutcome>,
    /// Since 0.1.1 (`None` in plugins built against 0.1.0): as
    /// [`validate`](Self::validate), with the fields lent for the length
    /// of the returned future instead of handed over, and the metadata
    /// appended to `metadata` (empty when lent; its memory the host's) in
    /// [`value_codec`](crate::value_codec)'s encoding: no allocation of
    /// the plugin's crosses for it, and the host reuses the buffer. A
    /// host uses it when the plugin has it; the plugin keeps `validate`
    /// for older hosts.
    #[sabi(missing_field(option))]
    pub validate_lent: for<'a> extern "C" fn(
        handle: u32,
        fields: RSlice<'a, FfiFieldRef<'a>>,
        metadata: &'a mut RVec<u8>,
    ) -> BorrowingFfiFuture<'a, FfiVerdict>,
}

impl RootModule for PluginModuleRef {
    abi_stable::declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "connhost_plugin";
    const NAME: &'static str = "connhost_plugin";
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
}

/// The symbol every plugin library exports (abi_stable's root module loader).
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// An outgoing HTTP request made through the host.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiHttpRequest {
    pub method: RString,
    pub url: RString,
    pub headers: RVec<Tuple2<RString, RString>>,
    pub body: RVec<u8>,
    /// 0 means the host's default.
    pub timeout_ms: u64,
}

/// The host's answer to an [`FfiHttpRequest`].
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiHttpResponse {
    pub status: u16,
    pub headers: RVec<Tuple2<RString, RString>>,
    pub body: RVec<u8>,
}

/// Error codes of [`FfiHttpError::kind`].
pub mod http_error {
    /// Could not connect or the connection broke.
    pub const CONNECT: u8 = 0;
    /// No answer in time.
    pub const TIMEOUT: u8 = 1;
    /// The host does not allow this plugin to reach that address.
    pub const DENIED: u8 = 2;
    /// The request itself is malformed (bad URL, bad header).
    pub const INVALID_REQUEST: u8 = 3;
    /// Anything else.
    pub const OTHER: u8 = 4;
}

/// Why an HTTP request through the host failed.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiHttpError {
    pub kind: u8,
    pub message: RString,
}

/// Log levels of [`HostVTable::log`]: 1 = error ... 5 = trace.
pub mod level {
    /// Error.
    pub const ERROR: u8 = 1;
    /// Warn.
    pub const WARN: u8 = 2;
    /// Info.
    pub const INFO: u8 = 3;
    /// Debug.
    pub const DEBUG: u8 = 4;
    /// Trace.
    pub const TRACE: u8 = 5;
}

/// The capabilities a host gives a plugin. Every function takes the plugin's
/// token from [`HostContext::plugin`], so the host can apply per-plugin
/// policy (log tagging, configuration scope, egress grants).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostVTableRef)))]
#[sabi(missing_field(panic))]
pub struct HostVTable {
    /// Emits a log event in the host.
    pub log: extern "C" fn(plugin: u64, level: u8, target: RStr<'_>, message: RStr<'_>),
    /// Reads a configuration value scoped to the plugin.
    pub config: extern "C" fn(plugin: u64, key: RStr<'_>) -> ROption<RString>,
    /// A timer driven by the host's runtime.
    pub sleep: extern "C" fn(plugin: u64, millis: u64) -> FfiFuture<()>,
    /// Performs an HTTP request on the host's runtime.
    #[sabi(last_prefix_field)]
    pub http: extern "C" fn(
        plugin: u64,
        request: FfiHttpRequest,
    ) -> FfiFuture<RResult<FfiHttpResponse, FfiHttpError>>,
}

/// What [`PluginModule::init`] receives.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostContext {
    /// The host's token for this plugin, passed back in every host call.
    pub plugin: u64,
    /// The most verbose level the host wants ([`level`]); 0 = off.
    pub max_log_level: u8,
    /// The host's functions.
    pub vtable: HostVTableRef,
}

/// The root module as `connhost-plugin-api` 0.1.0 declared it: [`PluginModule`]
/// without [`PluginModule::validate_lent`]. The host checks a plugin that
/// fails the current declaration's layout check against this one (see
/// "Evolving the ABI" above); a plugin that passes is then called through
/// the current [`PluginModuleRef`], whose `validate_lent` answers `None`.
pub mod v0_1_0 {
    use abi_stable::library::RootModule;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::std_types::{RResult, RStr, RString, RVec};
    use abi_stable::StableAbi;
    use async_ffi::FfiFuture;

    use super::{FfiField, FfiOutcome, FfiProviderEntry, HostContext};

    /// [`super::PluginModule`] as of 0.1.0.
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
    #[sabi(missing_field(panic))]
    pub struct PluginModule {
        pub plugin_name: RStr<'static>,
        pub plugin_version: RStr<'static>,
        pub init: extern "C" fn(host: HostContext) -> RResult<(), RString>,
        pub providers: extern "C" fn() -> RVec<RResult<FfiProviderEntry, RString>>,
        #[sabi(last_prefix_field)]
        pub validate: extern "C" fn(handle: u32, fields: RVec<FfiField>) -> FfiFuture<FfiOutcome>,
    }

    impl RootModule for PluginModuleRef {
        abi_stable::declare_root_module_statics! {PluginModuleRef}
        const BASE_NAME: &'static str = "connhost_plugin";
        const NAME: &'static str = "connhost_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings {
            version: RStr::from_str("0.1.0"),
        };
    }
}
