// Plugins and hosts built against different releases of
// connhost-plugin-api 0.1, both ways: a plugin built against 0.1.0 (its
// module ends at `validate`) in this host, in process and isolated; and a
// current plugin in a host built against 0.1.0 (`older-host`, which knows
// no `validate_lent`). Every other test runs current plugins, which this
// host calls through `validate_lent`.

use std::process::Command;

use connhost::{Connhost, HostConfig, Verdict};

use crate::isolation::isolated;
use crate::support::*;

/// A host over `config`'s folder (a plugin built against 0.1.0 beside a
/// current one): the older plugin's verdicts for a good and a bad key.
/// The current plugin answers too: checking the older one's layout twice
/// (the current declaration, then 0.1.0's) left nothing behind.
fn verdicts(config: &HostConfig) -> (Verdict, Verdict) {
    let host = Connhost::start(config);
    let report = host.load_report();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut loaded: Vec<_> = report.loaded.iter().map(|p| p.plugin.as_str()).collect();
    loaded.sort();
    assert_eq!(loaded, ["fixture-bench-trivial", "fixture-older-api"]);
    let rt = runtime();
    let current = rt
        .block_on(host.validate(
            "bench-trivial",
            fields(&[("account", "a"), ("secret", "s"), ("region", "eu")]),
        ))
        .expect("known provider");
    let Verdict::Valid(accepted) = &current else {
        panic!("expected valid, got {current:?}");
    };
    assert_eq!(
        accepted.provider_metadata,
        Some(serde_json::json!({"region": "eu"}))
    );
    let validate = |key: &str| {
        rt.block_on(host.validate("older-api", fields(&[("api_key", key)])))
            .expect("known provider")
    };
    (validate("good"), validate("bad"))
}

#[test]
fn a_plugin_built_against_0_1_0_answers_through_the_entry_it_has() {
    let dir = PluginDir::with(&["fixture-older-api", "fixture-bench-trivial"]);
    let metadata: serde_json::Value =
        serde_json::from_str(fixture_older_api_metadata()).expect("JSON");
    for (placement, config) in [
        ("in process", HostConfig::with_plugins_dir(dir.path())),
        ("isolated", isolated(&dir)),
    ] {
        let (good, bad) = verdicts(&config);
        let Verdict::Valid(accepted) = &good else {
            panic!("{placement}: expected valid, got {good:?}");
        };
        assert_eq!(accepted.provider_username.as_deref(), Some("older"));
        assert_eq!(
            accepted.provider_metadata.as_ref(),
            Some(&metadata),
            "{placement}"
        );
        assert!(
            matches!(&bad, Verdict::Rejected { message } if message == "wrong key"),
            "{placement}: {bad:?}"
        );
    }
}

/// `fixture_older_api::METADATA_JSON` (the fixture is a cdylib this crate
/// does not link).
fn fixture_older_api_metadata() -> &'static str {
    r#"{"built_against":"0.1.0","numbers":[1,-2,0.5],"nothing":null,"nested":{"yes":true}}"#
}

#[test]
fn a_host_built_against_0_1_0_validates_with_a_current_plugin() {
    let dir = PluginDir::with(&["fixture-bench-trivial"]);
    let plugin = dir.file(&library_file_name("fixture-bench-trivial"));
    let older_host = build_artifacts().join(format!("older-host{}", std::env::consts::EXE_SUFFIX));
    let answer = |submission: &[&str]| -> serde_json::Value {
        let out = Command::new(&older_host)
            .arg(&plugin)
            .args(submission)
            .output()
            .expect("run older-host");
        assert!(
            out.status.success(),
            "older-host refused a current plugin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    };
    assert_eq!(
        answer(&["account=a", "secret=s", "region=eu"]),
        serde_json::json!({
            "provider": "bench-trivial",
            "kind": 0,
            "message": "",
            "username": "a",
            "metadata_json": r#"{"region":"eu"}"#,
        })
    );
    assert_eq!(
        answer(&["account=a", "secret=", "region=eu"]),
        serde_json::json!({
            "provider": "bench-trivial",
            "kind": 1,
            "message": "secret is empty.",
            "username": null,
            "metadata_json": null,
        })
    );
}
