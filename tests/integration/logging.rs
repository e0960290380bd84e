// Plugin log lines reach the host's subscriber, tagged with the plugin's name, and never carry secrets.

use crate::support::vendor::Vendor;
use crate::support::*;

#[test]
fn plugin_tracing_events_reach_the_host_log_tagged_with_the_plugin() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let out = run(connhost(dir.path())
        .env("CONNHOST_LOG", "info")
        .env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
        .args(["validate", "daytona", "-f", "api_key=good-key"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("checking a Daytona API key"))
        .unwrap_or_else(|| panic!("the plugin's log line is missing:\n{}", out.stderr));
    assert!(line.contains("connhost::plugin"), "{line}");
    assert!(line.contains("plugin=daytona"), "{line}");
    assert!(
        !out.stderr.contains("good-key"),
        "a secret reached the log:\n{}",
        out.stderr
    );
}

#[test]
fn the_host_log_level_applies_to_plugins() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let out = run(connhost(dir.path())
        .env("CONNHOST_LOG", "warn")
        .env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
        .args(["validate", "daytona", "-f", "api_key=good-key"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("checking a Daytona API key"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_panic_in_a_plugin_is_logged_by_the_host_with_secrets_scrubbed() {
    let dir = PluginDir::with(&["fixture-panicky"]);
    let out = run(connhost(dir.path()).env("CONNHOST_LOG", "info").args([
        "validate",
        "panics-with-secret",
        "-f",
        "api_key=hunter2-very-secret",
    ]));
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("provider fault"), "{}", out.stdout);
    assert!(out.stdout.contains("<redacted>"), "{}", out.stdout);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !all.contains("hunter2-very-secret"),
        "a secret leaked:\n{all}"
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("panicked at") && l.contains("plugin=fixture-panicky")),
        "the panic should be in the host's log:\n{}",
        out.stderr
    );
}
