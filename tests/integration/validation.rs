// Validating submissions: the form's rules, then real async validation over loopback HTTP.

use connhost::{Outcome, Verdict};
use serde_json::json;

use crate::support::vendor::Vendor;
use crate::support::*;

fn daytona_host(vendor: &Vendor) -> (PluginDir, connhost::Connhost) {
    let dir = PluginDir::with(&["daytona", "github"]);
    let host = host_with(&dir, |config| {
        set(config, "daytona", "api_url", vendor.url());
        set(config, "github", "api_url", vendor.url());
        vendor.grant(config, &["daytona", "github"]);
    });
    (dir, host)
}

#[test]
fn a_good_key_is_accepted_by_a_real_http_check() {
    let vendor = Vendor::start();
    let (_dir, host) = daytona_host(&vendor);
    let verdict = runtime()
        .block_on(host.validate("daytona", fields(&[("api_key", "good-key")])))
        .unwrap();
    let Verdict::Valid(accepted) = &verdict else {
        panic!("expected valid, got {verdict:?}");
    };
    assert_eq!(accepted.provider_metadata, Some(json!({"sandboxes": 2})));
    // A lone api_key is stored raw.
    assert_eq!(accepted.document.as_ref().unwrap().expose(), "good-key");
    assert_eq!(vendor.paths(), ["/sandbox"]);
}

#[test]
fn a_refused_key_is_rejected_not_inconclusive() {
    let vendor = Vendor::start();
    let (_dir, host) = daytona_host(&vendor);
    let verdict = runtime()
        .block_on(host.validate("daytona", fields(&[("api_key", "wrong-key")])))
        .unwrap();
    assert_eq!(verdict.outcome(), Outcome::Rejected, "{verdict:?}");
    assert!(!verdict.is_retryable());
    assert_eq!(vendor.requests(), 1);
}

#[test]
fn vendor_trouble_is_inconclusive_and_retryable() {
    let vendor = Vendor::start();
    let (_dir, host) = daytona_host(&vendor);
    let rt = runtime();
    for key in ["rate-limited", "broken"] {
        let verdict = rt
            .block_on(host.validate("daytona", fields(&[("api_key", key)])))
            .unwrap();
        assert_eq!(
            verdict.outcome(),
            Outcome::Inconclusive,
            "{key}: {verdict:?}"
        );
        assert!(verdict.is_retryable());
    }
}

#[test]
fn an_unreachable_vendor_is_inconclusive() {
    // Bind a port, then close it: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = PluginDir::with(&["daytona"]);
    let host = host_with(&dir, |c| {
        set(c, "daytona", "api_url", &format!("http://127.0.0.1:{port}"));
        grant(c, "daytona", &format!("http://127.0.0.1:{port}"));
    });
    let verdict = runtime()
        .block_on(host.validate("daytona", fields(&[("api_key", "good-key")])))
        .unwrap();
    assert_eq!(verdict.outcome(), Outcome::Inconclusive, "{verdict:?}");
    let message = verdict.error_message().unwrap();
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(!message.contains("good-key"), "{message}");
}

#[test]
fn schema_errors_are_all_returned_and_the_provider_is_not_called() {
    let vendor = Vendor::start();
    let (_dir, host) = daytona_host(&vendor);
    let verdict = runtime()
        .block_on(host.validate("daytona", fields(&[("api_key", "   ")])))
        .unwrap();
    let Verdict::InvalidFields(errors) = verdict else {
        panic!("expected invalid fields");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field.as_deref(), Some("api_key"));
    assert_eq!(errors[0].message, "API Key is required.");
    assert_eq!(vendor.requests(), 0, "the provider must not be called");
}

#[test]
fn either_or_groups_are_enforced_before_the_provider_runs() {
    let dir = PluginDir::with(&["mai"]);
    let host = host_with(&dir, |_| {});
    let rt = runtime();
    let none = rt.block_on(host.validate("mai", fields(&[]))).unwrap();
    assert_eq!(
        none,
        Verdict::InvalidFields(vec![connhost::FieldError {
            field: None,
            message: "Provide credentials for one of the available methods.".into()
        }])
    );
    let partial = rt
        .block_on(host.validate(
            "mai",
            fields(&[("tenant_id", "00000000-0000-0000-0000-000000000000")]),
        ))
        .unwrap();
    let Verdict::InvalidFields(errors) = partial else {
        panic!("{partial:?}")
    };
    let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "Client ID (Entra ID OAuth) is required.",
            "Client Secret (Entra ID OAuth) is required."
        ]
    );
    let entra = rt
        .block_on(host.validate(
            "mai",
            fields(&[
                ("tenant_id", "11111111-2222-3333-4444-555555555555"),
                ("client_id", "66666666-7777-8888-9999-000000000000"),
                ("client_secret", "a-client-secret-value"),
            ]),
        ))
        .unwrap();
    let Verdict::Valid(accepted) = entra else {
        panic!("{entra:?}")
    };
    // Multi-field credentials are stored as sorted JSON.
    let document: serde_json::Value =
        serde_json::from_str(accepted.document.unwrap().expose()).unwrap();
    assert_eq!(document["client_secret"], "a-client-secret-value");
    assert_eq!(document.as_object().unwrap().len(), 3);
}

#[test]
fn a_default_only_seeds_the_form_so_a_required_field_left_out_is_an_error() {
    let dir = PluginDir::with(&["bedrock"]);
    let host = host_with(&dir, |_| {});
    let rt = runtime();
    let key = [
        ("access_key_id", "AKIAIOSFODNN7EXAMPLE"),
        (
            "secret_access_key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    ];
    // The form pre-fills `region` with us-east-1; an API client that leaves
    // it out is told, as the seed platform does.
    let without_region = rt.block_on(host.validate("bedrock", fields(&key))).unwrap();
    let Verdict::InvalidFields(errors) = &without_region else {
        panic!("{without_region:?}")
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field.as_deref(), Some("region"));
    assert_eq!(errors[0].message, "Region is required.");

    let mut submitted = fields(&key);
    submitted.insert("region".into(), "eu-west-1".into());
    let good = rt.block_on(host.validate("bedrock", submitted)).unwrap();
    let Verdict::Valid(accepted) = good else {
        panic!("{good:?}")
    };
    assert_eq!(
        accepted.provider_metadata.as_ref().unwrap()["region"],
        "eu-west-1"
    );
    let document: serde_json::Value =
        serde_json::from_str(accepted.document.unwrap().expose()).unwrap();
    assert_eq!(document["region"], "eu-west-1");
    assert_eq!(
        document.as_object().unwrap().len(),
        3,
        "the document holds what was submitted, nothing more: {document}"
    );

    let bad = rt
        .block_on(host.validate(
            "bedrock",
            fields(&[
                ("access_key_id", "not-an-aws-key"),
                (
                    "secret_access_key",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                ),
                ("region", "eu-west-1"),
            ]),
        ))
        .unwrap();
    assert_eq!(bad.outcome(), Outcome::Rejected, "{bad:?}");
    assert!(!bad.error_message().unwrap().contains("not-an-aws-key"));
}

#[test]
fn an_oauth_provider_validates_a_stored_token() {
    let vendor = Vendor::start();
    let (_dir, host) = daytona_host(&vendor);
    let verdict = runtime()
        .block_on(host.validate("github", fields(&[("access_token", "good-github-token")])))
        .unwrap();
    let Verdict::Valid(accepted) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(accepted.provider_username.as_deref(), Some("octocat"));
}

#[test]
fn cli_validate_exit_codes_tell_valid_rejected_and_undecided_apart() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let validate = |key: &str| {
        run(connhost(dir.path())
            .args(["--setting", &format!("daytona.api_url={}", vendor.url())])
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .args(["validate", "daytona", "--field", &format!("api_key={key}")]))
    };
    let valid = validate("good-key");
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    assert!(valid.stdout.starts_with("valid"), "{}", valid.stdout);
    assert!(
        !valid.stdout.contains("good-key"),
        "the document is shown only on request"
    );

    let rejected = validate("wrong-key");
    assert_eq!(rejected.code, 1, "{}", rejected.stdout);
    assert!(
        rejected.stdout.starts_with("rejected"),
        "{}",
        rejected.stdout
    );

    let undecided = validate("broken");
    assert_eq!(undecided.code, 3, "{}", undecided.stdout);
    assert!(
        undecided.stdout.contains("retryable"),
        "{}",
        undecided.stdout
    );

    let missing = run(connhost(dir.path()).args(["validate", "daytona"]));
    assert_eq!(missing.code, 1);
    assert!(
        missing.stdout.contains("api_key: API Key is required."),
        "{}",
        missing.stdout
    );
}

#[test]
fn cli_reads_a_secret_from_stdin_and_shows_the_document_only_when_asked() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let out = run_with_stdin(
        connhost(dir.path())
            .env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .args([
                "validate",
                "daytona",
                "--field",
                "api_key=-",
                "--json",
                "--show-document",
            ]),
        "good-key\n",
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let verdict = out.json();
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["provider_metadata"], json!({"sandboxes": 2}));
    assert_eq!(verdict["credential_document"], "good-key");

    let without = run_with_stdin(
        connhost(dir.path())
            .env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .args(["validate", "daytona", "-f", "api_key=-", "--json"]),
        "good-key\n",
    );
    assert!(without.json().get("credential_document").is_none());
}

#[test]
fn cli_usage_errors_exit_2_without_echoing_values() {
    let dir = PluginDir::empty();
    let out = run(connhost(dir.path()).args(["validate", "openai", "--field", "sk-live-secret"]));
    assert_eq!(out.code, 2);
    assert!(!out.stderr.contains("sk-live-secret"), "{}", out.stderr);
    let out = run(connhost(dir.path()).args(["validate"]));
    assert_eq!(out.code, 2);
}
