// Plugin log lines reach the host's subscriber, tagged with the plugin's name, and never carry secrets.

use crate::support::vendor::Vendor;
use crate::support::*;

/// The host's log line re-emitting the plugin event whose text starts with
/// `message` (the host writes `connhost::plugin: <message> <fields>`).
fn plugin_line<'a>(log: &'a str, message: &str) -> Option<&'a str> {
    let needle = format!("connhost::plugin: {message}");
    log.lines().find(|l| l.contains(&needle))
}

/// Runs `connhost validate daytona` with a good key at this log level,
/// against a fake Daytona.
fn validate_daytona_logging_at(level: &str) -> Run {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let out = run(connhost(dir.path())
        .env("CONNHOST_LOG", level)
        .env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
        .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
        .args(["validate", "daytona", "-f", "api_key=good-key"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("good-key") && !out.stdout.contains("good-key"),
        "a secret reached the output at level {level}:\n{}{}",
        out.stdout,
        out.stderr
    );
    out
}

#[test]
fn plugin_tracing_events_reach_the_host_log_tagged_with_the_plugin() {
    let out = validate_daytona_logging_at("info");
    let line = plugin_line(&out.stderr, "checking a Daytona API key")
        .unwrap_or_else(|| panic!("the plugin's log line is missing:\n{}", out.stderr));
    // Its level, the validation's span, the plugin's name and the module
    // (the plugin event's own target) all come along.
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains(r#"validate{provider="daytona"}: connhost::plugin:"#),
        "{line}"
    );
    assert!(
        line.ends_with("checking a Daytona API key plugin=daytona module=daytona"),
        "{line}"
    );
}

#[test]
fn the_host_log_level_applies_to_plugins() {
    const CHECKING: &str = "checking a Daytona API key";
    // The plugin's debug event, with its own field (the vendor's status).
    const ANSWERED: &str = "Daytona answered the key check status=200";

    let debug = validate_daytona_logging_at("debug");
    let answered = plugin_line(&debug.stderr, ANSWERED)
        .unwrap_or_else(|| panic!("the plugin's debug line is missing:\n{}", debug.stderr));
    assert!(answered.contains(" DEBUG "), "{answered}");
    assert!(
        answered.ends_with("plugin=daytona module=daytona"),
        "{answered}"
    );
    assert!(
        plugin_line(&debug.stderr, CHECKING).is_some(),
        "{}",
        debug.stderr
    );

    let info = validate_daytona_logging_at("info");
    assert!(
        plugin_line(&info.stderr, CHECKING).is_some(),
        "{}",
        info.stderr
    );
    assert!(
        plugin_line(&info.stderr, ANSWERED).is_none(),
        "{}",
        info.stderr
    );

    let warn = validate_daytona_logging_at("warn");
    assert!(
        plugin_line(&warn.stderr, CHECKING).is_none(),
        "{}",
        warn.stderr
    );
    assert!(
        plugin_line(&warn.stderr, ANSWERED).is_none(),
        "{}",
        warn.stderr
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

/// Validates with `logs-secret-from-thread` (whose provider logs the key at
/// every level from a thread it spawned) at trace level, in process or
/// isolated, and returns the host's stderr.
fn log_from_a_plugin_thread(isolation: &str) -> String {
    const KEY: &str = "thread-sentinel-3f9a1c77";
    let dir = PluginDir::with(&["fixture-panicky"]);
    let out = run(connhost(dir.path())
        .env("CONNHOST_LOG", "trace")
        .env("CONNHOST_ISOLATION", isolation)
        .args([
            "validate",
            "logs-secret-from-thread",
            "-f",
            &format!("api_key={KEY}"),
        ]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains(KEY), "a secret leaked ({isolation}):\n{all}");
    out.stderr
}

#[test]
fn events_from_a_thread_a_plugin_spawned_are_scrubbed_in_process_and_isolated() {
    for isolation in ["in-process", "process"] {
        let log = log_from_a_plugin_thread(isolation);
        for (level, message) in [
            ("TRACE", "thread trace: key <redacted>"),
            ("DEBUG", "thread debug: key <redacted>"),
            ("INFO", "thread info: key <redacted>"),
            ("WARN", "thread warn with a field key=<redacted>"),
            ("ERROR", "thread error: key=\"<redacted>\""),
        ] {
            let line = plugin_line(&log, message)
                .unwrap_or_else(|| panic!("{isolation}: no line {message:?}:\n{log}"));
            assert!(line.contains(level), "{isolation}: {line}");
            assert!(
                line.contains("plugin=fixture-panicky"),
                "{isolation}: {line}"
            );
        }
    }
}
