// Broken, foreign, incompatible and misbehaving plugin files: each gets a precise reason, and everything else keeps working.

use std::time::{Duration, Instant};

use connhost::{FailureKind, Outcome};

use crate::support::*;

/// Loads `dir`, asserts that the example plugins next to the bad files still
/// load and validate, and returns the host.
fn load_beside_good_plugins(dir: &PluginDir) -> connhost::Connhost {
    dir.add_library("bedrock");
    dir.add_library("mai");
    let host = host_with(dir, |c| c.validation_timeout = Duration::from_secs(2));
    assert!(host.registry().has("bedrock"), "{:#?}", host.load_report());
    assert!(host.registry().has("mai"));
    let verdict = runtime()
        .block_on(host.validate("mai", fields(&[("api_key", "a-long-enough-api-key")])))
        .unwrap();
    assert!(verdict.is_valid(), "{verdict:?}");
    host
}

/// The one failure recorded for `file`.
fn failure_for(host: &connhost::Connhost, file: &std::path::Path) -> connhost::LoadFailure {
    let failures: Vec<_> = host
        .load_report()
        .failed
        .iter()
        .filter(|f| f.path == file)
        .cloned()
        .collect();
    assert_eq!(failures.len(), 1, "{:#?}", host.load_report());
    failures.into_iter().next().unwrap()
}

fn check(
    file_setup: impl FnOnce(&PluginDir) -> std::path::PathBuf,
    kind: FailureKind,
    needles: &[&str],
) {
    let dir = PluginDir::empty();
    let file = file_setup(&dir);
    let host = load_beside_good_plugins(&dir);
    let failure = failure_for(&host, &file);
    assert_eq!(failure.kind, kind, "{failure:?}");
    for needle in needles {
        assert!(
            failure.reason.contains(needle),
            "{needle:?} missing from: {}",
            failure.reason
        );
    }
}

#[test]
fn random_bytes_are_not_a_shared_library() {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    check(
        |d| d.add_file(&library_file_name("random"), &bytes),
        FailureKind::NotASharedLibrary,
        &[
            "not a shared library",
            "does not start with an ELF header",
            "from a `cdylib` crate",
        ],
    );
}

#[test]
fn an_empty_file_is_reported_as_empty() {
    check(
        |d| d.add_file(&library_file_name("empty"), b""),
        FailureKind::NotASharedLibrary,
        &["empty (0 bytes)", "once the copy is complete"],
    );
}

#[test]
fn a_truncated_library_is_refused_before_it_can_crash_the_host() {
    let bytes = std::fs::read(built_library("daytona")).unwrap();
    check(
        |d| d.add_file(&library_file_name("truncated"), &bytes[..4096]),
        FailureKind::NotASharedLibrary,
        &["truncated", "once the copy is complete"],
    );
}

#[test]
fn a_shared_library_that_is_not_a_plugin_is_named_as_such() {
    check(
        |d| d.add_library("fixture-not-a-plugin"),
        FailureKind::NotAPlugin,
        &["not a connhost plugin", "export_plugin!"],
    );
}

#[test]
fn a_plugin_built_against_a_newer_plugin_api_is_refused_with_both_versions() {
    check(
        |d| d.add_library("fixture-abi-version"),
        FailureKind::IncompatibleApi,
        &["0.2.0", "0.1.x", "Rebuild the plugin"],
    );
}

#[test]
fn a_plugin_with_a_different_layout_is_refused_with_the_layout_summary() {
    let dir = PluginDir::empty();
    let file = dir.add_library("fixture-abi-layout");
    let host = load_beside_good_plugins(&dir);
    let failure = failure_for(&host, &file);
    assert_eq!(failure.kind, FailureKind::IncompatibleApi);
    let rebuild = format!(
        "Rebuild the plugin against connhost-plugin-api {}",
        connhost_plugin_api::PLUGIN_API_VERSION
    );
    for needle in [
        "different layout",
        // The summary is the diff's last error, on one line.
        "(mismatched type: expected RStr<'a>, found RSlice<'a>)",
        &rebuild,
        "`connhost inspect` shows the full layout difference",
    ] {
        assert!(
            failure.reason.contains(needle),
            "{needle:?} missing from: {}",
            failure.reason
        );
    }
    assert!(
        failure.reason.len() < 1200,
        "the summary should be short: {}",
        failure.reason
    );
    let detail = failure.detail.expect("the full diff is kept");
    assert!(detail.lines().count() > failure.reason.lines().count());
    assert!(detail.contains("RSlice"), "{detail}");
}

#[test]
fn a_plugin_that_panics_in_init_is_reported_and_the_host_survives() {
    check(
        |d| d.add_library("fixture-panic-init"),
        FailureKind::InitFailed,
        &["panicked during init", "fixture: init exploded"],
    );
}

#[test]
fn providers_that_panic_while_describing_themselves_are_refused_by_method() {
    let dir = PluginDir::empty();
    let file = dir.add_library("fixture-panicky");
    let host = load_beside_good_plugins(&dir);
    let reasons: Vec<_> = host
        .load_report()
        .failed
        .iter()
        .filter(|f| f.path == file)
        .map(|f| {
            assert_eq!(f.kind, FailureKind::ProviderFault);
            f.reason.clone()
        })
        .collect();
    for method in ["provider_id", "display_name", "form_schema"] {
        assert!(
            reasons
                .iter()
                .any(|r| r.contains(&format!("panicked in {method}"))
                    && r.contains(&format!("fixture: {method} exploded"))),
            "no failure for {method}: {reasons:#?}"
        );
    }
    // The plugin's well-behaved providers still load.
    assert!(host.registry().has("panicky-healthy"));
    let loaded = host
        .load_report()
        .loaded
        .iter()
        .find(|p| p.path == file)
        .unwrap();
    assert!(loaded.providers.contains(&"panicky-healthy".to_owned()));
}

#[test]
fn a_provider_that_panics_while_validating_is_a_provider_fault() {
    let dir = PluginDir::empty();
    dir.add_library("fixture-panicky");
    let host = load_beside_good_plugins(&dir);
    let rt = runtime();
    for provider in ["panics-in-validate", "panics-after-await"] {
        let verdict = rt
            .block_on(host.validate(provider, fields(&[("api_key", "some-key-value")])))
            .unwrap();
        assert_eq!(
            verdict.outcome(),
            Outcome::ProviderFault,
            "{provider}: {verdict:?}"
        );
        assert!(
            verdict.error_message().unwrap().contains("exploded"),
            "{verdict:?}"
        );
    }
    // Still serving, including the same plugin's healthy provider.
    let healthy = rt
        .block_on(host.validate("panicky-healthy", fields(&[("api_key", "x-key")])))
        .unwrap();
    assert!(healthy.is_valid(), "{healthy:?}");
}

#[test]
fn a_panic_message_never_carries_the_submitted_secret() {
    let dir = PluginDir::with(&["fixture-panicky"]);
    let host = host_with(&dir, |_| {});
    let verdict = runtime()
        .block_on(host.validate(
            "panics-with-secret",
            fields(&[("api_key", "hunter2-very-secret")]),
        ))
        .unwrap();
    assert_eq!(verdict.outcome(), Outcome::ProviderFault);
    let message = verdict.error_message().unwrap();
    assert!(!message.contains("hunter2-very-secret"), "{message}");
    assert!(message.contains("<redacted>"), "{message}");
    assert!(!format!("{verdict:?}").contains("hunter2-very-secret"));
}

#[test]
fn a_provider_that_never_answers_times_out_and_others_keep_working() {
    let dir = PluginDir::empty();
    dir.add_library("fixture-hang");
    let host = load_beside_good_plugins(&dir);
    let rt = runtime();
    let started = Instant::now();
    let verdict = rt
        .block_on(host.validate("hangs-forever", fields(&[("api_key", "k-key")])))
        .unwrap();
    assert_eq!(verdict.outcome(), Outcome::TimedOut, "{verdict:?}");
    assert!(verdict.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(20));
    // A slow provider under the limit answers normally.
    let slow = rt
        .block_on(host.validate("slow", fields(&[("api_key", "50")])))
        .unwrap();
    assert!(slow.is_valid(), "{slow:?}");
}

#[test]
fn a_cancelled_validation_that_panics_while_being_dropped_does_not_take_the_host_down() {
    let dir = PluginDir::empty();
    dir.add_library("fixture-panicky");
    let host = load_beside_good_plugins(&dir);
    let rt = runtime();
    let verdict = rt
        .block_on(host.validate("panics-on-drop", fields(&[("api_key", "k-key")])))
        .unwrap();
    assert_eq!(verdict.outcome(), Outcome::TimedOut, "{verdict:?}");
    let healthy = rt
        .block_on(host.validate("panicky-healthy", fields(&[("api_key", "x-key")])))
        .unwrap();
    assert!(healthy.is_valid(), "{healthy:?}");
}

#[test]
fn cli_timeout_flag_bounds_a_hanging_provider() {
    let dir = PluginDir::with(&["fixture-hang"]);
    let started = Instant::now();
    let out = run(connhost(dir.path()).args([
        "--timeout",
        "0.5",
        "validate",
        "hangs-forever",
        "-f",
        "api_key=k-key",
    ]));
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("timed out"), "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_duplicate_provider_id_is_refused_and_both_origins_are_named() {
    let dir = PluginDir::empty();
    let github = dir.add_library("github");
    // Sorted by file name, libfixture_duplicate comes first: the built-in
    // openai still wins, and so does the plugin loaded first for github.
    let duplicate = dir.add_library("fixture-duplicate");
    let host = load_beside_good_plugins(&dir);
    let conflicts: Vec<_> = host
        .load_report()
        .failed
        .iter()
        .filter(|f| f.kind == FailureKind::Conflict)
        .cloned()
        .collect();
    assert_eq!(conflicts.len(), 2, "{conflicts:#?}");
    let openai = conflicts
        .iter()
        .find(|f| f.reason.contains("\"openai\""))
        .unwrap();
    assert_eq!(openai.path, duplicate);
    assert!(
        openai.reason.contains("the host (built in)"),
        "{}",
        openai.reason
    );
    assert!(
        openai.reason.contains("fixture-duplicate"),
        "{}",
        openai.reason
    );
    assert_eq!(
        host.provider("openai").unwrap().origin,
        connhost::Origin::Builtin
    );

    let github_conflict = conflicts
        .iter()
        .find(|f| f.reason.contains("\"github\""))
        .unwrap();
    assert!(github_conflict
        .reason
        .contains(&duplicate.display().to_string()));
    assert!(github_conflict
        .reason
        .contains(&github.display().to_string()));
    // The unique provider of the conflicting plugin still loads.
    assert!(host.registry().has("duplicate-unique"));
}

#[test]
fn the_cli_reports_every_bad_file_and_still_serves_the_rest() {
    let dir = PluginDir::with(&[
        "daytona",
        "fixture-not-a-plugin",
        "fixture-panic-init",
        "fixture-abi-version",
    ]);
    dir.add_file(&library_file_name("junk"), b"definitely not ELF");
    // Each bad file, with its kind and what its reason must say: what is
    // wrong with it, at which step, and what to do about it.
    let rebuild = format!(
        "Rebuild the plugin against connhost-plugin-api {}, or upgrade connhost",
        connhost_plugin_api::PLUGIN_API_VERSION
    );
    let expected: [(&str, &str, &[&str]); 4] = [
        (
            "fixture-abi-version",
            "incompatible_api",
            &[
                "version 0.2.0",
                "this host loads plugins built against 0.1.x",
                &rebuild,
            ],
        ),
        (
            "fixture-not-a-plugin",
            "not_a_plugin",
            &[
                "not a connhost plugin",
                "does not export connhost's plugin entry point",
                "must call `connhost_plugin_api::export_plugin!`",
            ],
        ),
        (
            "fixture-panic-init",
            "init_failed",
            &[
                "plugin fixture-panic-init 0.1.0 failed to initialise",
                "panicked during init: fixture: init exploded",
            ],
        ),
        (
            "junk",
            "not_a_shared_library",
            &["not a shared library", "does not start with an ELF header"],
        ),
    ];
    let report = run(connhost(dir.path()).args(["plugins", "--json"])).json();
    let loaded = report["loaded"].as_array().unwrap();
    assert_eq!(loaded.len(), 1, "{report:#}");
    assert_eq!(loaded[0]["plugin"], "daytona", "{report:#}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), expected.len(), "{report:#}");
    let human = run(connhost(dir.path()).arg("plugins"));
    assert!(human.stdout.contains("Not loaded (4)"), "{}", human.stdout);
    for (file, kind, needles) in expected {
        let path = dir.file(&library_file_name(file)).display().to_string();
        let failure = failed
            .iter()
            .find(|f| f["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no failure for {path}: {report:#}"));
        assert_eq!(failure["kind"], kind, "{failure}");
        let reason = failure["reason"].as_str().unwrap();
        for needle in needles {
            assert!(reason.contains(needle), "{needle:?} missing from: {reason}");
        }
        // The human listing names the file with its reason under it.
        assert!(
            human.stdout.contains(&format!("  {path}\n    {reason}")),
            "{path} and its reason are not listed:\n{}",
            human.stdout
        );
    }
    let providers = run(connhost(dir.path()).arg("providers"));
    assert_eq!(providers.code, 0);
    assert!(providers.stdout.contains("daytona"));
    assert!(
        providers.stderr.contains("4 plugin file(s)"),
        "{}",
        providers.stderr
    );
}

#[test]
fn a_provider_that_blocks_its_thread_still_times_out_and_others_keep_working() {
    let dir = PluginDir::empty();
    dir.add_library("fixture-hang");
    let host = load_beside_good_plugins(&dir);
    let rt = runtime();
    let started = Instant::now();
    // Two blocked providers at once: more than would be enough to starve a
    // runtime whose workers polled them directly.
    let (first, second) = rt.block_on(async {
        tokio::join!(
            host.validate("blocks-thread", fields(&[("api_key", "60000")])),
            host.validate("blocks-thread", fields(&[("api_key", "60000")])),
        )
    });
    assert_eq!(first.unwrap().outcome(), Outcome::TimedOut);
    assert_eq!(second.unwrap().outcome(), Outcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let other = rt
        .block_on(host.validate("slow", fields(&[("api_key", "10")])))
        .unwrap();
    assert!(other.is_valid(), "{other:?}");
}

#[test]
fn a_plugin_using_the_host_timer_outside_any_runtime_does_not_crash_the_host() {
    // fixture-hang's init waits on the host's timer with no runtime around
    // (the CLI loads plugins before it starts one).
    let dir = PluginDir::with(&["fixture-hang"]);
    let out = run(connhost(dir.path()).args(["providers", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"slow\""), "{}", out.stdout);
}

#[test]
fn usernames_and_metadata_are_scrubbed_of_the_submitted_secret() {
    let dir = PluginDir::with(&["fixture-panicky"]);
    let host = host_with(&dir, |_| {});
    let verdict = runtime()
        .block_on(host.validate(
            "echoes-secret",
            fields(&[("api_key", "hunter2-very-secret")]),
        ))
        .unwrap();
    let connhost::Verdict::Valid(accepted) = &verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!(
        accepted.provider_username.as_deref(),
        Some("user-<redacted>")
    );
    assert_eq!(
        accepted.provider_metadata,
        Some(serde_json::json!({"seen": {"key": "<redacted>"}, "keys": ["<redacted>"]}))
    );
    // The document is the one place the secret belongs.
    assert_eq!(
        accepted.document.as_ref().unwrap().expose(),
        "hunter2-very-secret"
    );
}

#[test]
fn an_init_that_returns_an_error_is_reported_with_its_message() {
    let dir = PluginDir::with(&["fixture-panic-init", "mai"]);
    let report = run(connhost(dir.path())
        .env("FIXTURE_INIT", "error")
        .args(["plugins", "--json"]))
    .json();
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["kind"], "init_failed");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("init failed: fixture: init refused"),
        "{reason}"
    );
    assert_eq!(report["loaded"].as_array().unwrap().len(), 1);
}

#[test]
fn a_provider_factory_that_panics_is_reported_and_the_host_survives() {
    let dir = PluginDir::with(&["fixture-panic-init", "mai"]);
    let report = run(connhost(dir.path())
        .env("FIXTURE_INIT", "factory")
        .args(["plugins", "--json"]))
    .json();
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["kind"], "provider_fault");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("panicked while constructing its providers"),
        "{reason}"
    );
    assert!(reason.contains("fixture: factory exploded"), "{reason}");
}
