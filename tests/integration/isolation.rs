// Isolated plugins (`isolation = "process"`): each in a sandboxed worker
// process of its own, answering through the same API as in process.

use std::time::Duration;

use connhost::{Connhost, HostConfig, Isolation, Verdict};

use crate::support::vendor::Vendor;
use crate::support::*;

/// The `connhost` binary, which is the worker program too.
pub fn connhost_binary() -> std::path::PathBuf {
    build_artifacts().join(format!("connhost{}", std::env::consts::EXE_SUFFIX))
}

/// A configuration isolating every plugin of `dir`.
pub fn isolated(dir: &PluginDir) -> HostConfig {
    let mut config = HostConfig::with_plugins_dir(dir.path());
    config.isolation = Isolation::Process;
    config.worker.program = Some(connhost_binary());
    config
}

fn validate(host: &Connhost, provider: &str, key: &str) -> Verdict {
    runtime()
        .block_on(host.validate(provider, fields(&[("api_key", key)])))
        .expect("known provider")
}

#[test]
fn an_isolated_plugin_answers_like_an_in_process_one_and_its_http_goes_through_the_host() {
    let dir = PluginDir::with(&["fixture-greeter-v1"]);
    let vendor = Vendor::start();
    let mut config = isolated(&dir);
    set(&mut config, "fixture-greeter-v1", "api_url", vendor.url());
    config.validation_timeout = Duration::from_secs(20);
    let host = Connhost::start(&config);
    assert!(
        host.load_report().failed.is_empty(),
        "{:?}",
        host.load_report().failed
    );
    let plugin = &host.load_report().loaded[0];
    assert_eq!(plugin.plugin, "fixture-greeter-v1");
    let Verdict::Valid(accepted) = validate(&host, "greeter", "plain") else {
        panic!("not valid")
    };
    assert_eq!(accepted.provider_username.as_deref(), Some("greeter 1.0.0"));
    // Through the host's HTTP capability to the loopback vendor.
    assert!(validate(&host, "greeter", "vendor:good-key").is_valid());
    assert_eq!(vendor.requests(), 1);
    let refused = validate(&host, "greeter", "vendor:wrong");
    assert!(
        refused
            .error_message()
            .unwrap()
            .contains("the vendor answered 401"),
        "{refused:?}"
    );
}
