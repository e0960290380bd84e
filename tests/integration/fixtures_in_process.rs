// The sandbox-probe fixture loaded in process, before any sandbox: each
// probe reaches what it asks for (a loopback listener, a file, a shell),
// and says which operation failed when it cannot. The isolated tests rely
// on both. (The fault fixtures are never loaded in process: they would
// take this test binary down.)

use connhost::{Outcome, Verdict};
use serde_json::json;

use crate::support::*;

/// A host with the sandbox-probe fixture alone.
fn probe_host() -> (PluginDir, connhost::Connhost) {
    let dir = PluginDir::with(&["fixture-sandbox-probe"]);
    let host = host_with(&dir, |_| {});
    (dir, host)
}

/// Validates `provider` with `form` and asserts the probe reached its
/// target.
fn assert_reached(host: &connhost::Connhost, provider: &str, form: &[(&str, &str)]) {
    let verdict = runtime()
        .block_on(host.validate(provider, fields(form)))
        .unwrap();
    let Verdict::Valid(accepted) = &verdict else {
        panic!("{provider}: expected valid, got {verdict:?}");
    };
    assert_eq!(
        accepted.provider_metadata,
        Some(json!({"reached": true})),
        "{provider}"
    );
}

#[test]
fn the_probes_reach_what_they_ask_for_in_process() {
    let (_dir, host) = probe_host();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    assert_reached(&host, "probe-connect", &[("address", &address)]);
    // The connection really arrived.
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_ok(),
        "no connection reached the listener"
    );

    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("readable.txt");
    std::fs::write(&file, b"probe me").unwrap();
    assert_reached(&host, "probe-read", &[("path", file.to_str().unwrap())]);

    assert_reached(&host, "probe-exec", &[]);
}

#[test]
fn a_failed_probe_is_a_provider_fault_naming_the_operation() {
    let (_dir, host) = probe_host();
    let files = tempfile::tempdir().unwrap();
    let missing = files.path().join("missing.txt");
    let missing = missing.to_str().unwrap();
    let verdict = runtime()
        .block_on(host.validate("probe-read", fields(&[("path", missing)])))
        .unwrap();
    assert_eq!(verdict.outcome(), Outcome::ProviderFault, "{verdict:?}");
    let message = verdict.error_message().unwrap();
    assert!(
        message.contains(&format!("read of {missing} refused")),
        "{message}"
    );
}
