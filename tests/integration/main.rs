//! connhost's integration tests: the example plugins and misbehaving fixture
//! plugins are built by cargo, copied into temporary plugin folders, loaded
//! with dlopen, and driven through the library API and the real binary.

mod support;

mod api_versions;
mod bad_plugins;
mod broken_pipe;
mod browser;
mod cli;
mod config_file;
// The attack suite of a hostile isolated plugin: Linux's jail.
#[cfg(target_os = "linux")]
mod containment;
mod crowded_folder;
mod egress;
mod examples;
mod external_tools;
mod fixtures_in_process;
mod hostile_clients;
mod hot_reload;
mod http;
mod isolation;
mod isolation_serve;
mod layout;
mod listing;
mod logging;
mod metrics_interop;
mod oci;
mod one_shot;
mod openapi_conformance;
mod packaged_api;
mod planted_cache;
// Tells clients apart by loopback source address (127.0.0.2, ...): all of
// 127/8 answers on Linux only.
#[cfg(target_os = "linux")]
mod rate_limits;
// Loopback source addresses too, and a redis-server the tests start.
#[cfg(target_os = "linux")]
mod rate_limits_shared;
mod readme;
mod sentinel;
mod starved;
mod sync;
mod terminal_escapes;
mod third_party;
mod trust;
mod two_hosts;
mod validation;
mod warm_cache;
#[cfg(target_os = "linux")]
mod worker_ownership;
