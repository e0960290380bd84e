//! Rate limits on validations, against the real `connhost serve`: a client
//! over its limit gets 429 with `Retry-After` and the JSON error, other
//! clients do not, the per-provider limit counts every client, `off` turns
//! the limits off, and the metric counts the refusals. Distinct clients are
//! distinct loopback source addresses (127.0.0.1, 127.0.0.2, ...: all of
//! 127/8 is loopback on Linux).
//!
//! That waiting `Retry-After` is enough (and a moment less is not) is
//! proven without sleeping, by the unit tests of `connhost-http`'s
//! `rate_limit` module on governor's fake clock
//! (`after_retry_after_a_refused_client_is_admitted_again_and_not_before`
//! and the others there).

use std::time::Instant;

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use crate::support::server::{client_from, get_text, Server};
use crate::support::*;

/// The submitted key: never in an answer.
const KEY: &str = "a-long-enough-api-key-7f3c";

/// `POST /v1/providers/{provider}/validate` of [`KEY`] by `client`, with
/// `token` if given.
fn validate(client: &Client, server: &Server, provider: &str, token: Option<&str>) -> Response {
    let mut request = client
        .post(server.at(&format!("/v1/providers/{provider}/validate")))
        .json(&json!({"fields": {"api_key": KEY}}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap()
}

/// A 429's `Retry-After` (checked to be whole seconds, at least 1) and its
/// JSON error, checked to be `rate_limited` without the submission.
fn refused(response: Response) -> (u64, Value) {
    assert_eq!(response.status(), 429);
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().unwrap();
    assert!(
        !text.contains(KEY),
        "the answer echoes the submission: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    (retry_after, body)
}

/// The value of one sample in the server's `/metrics` (0 when absent).
fn metric(server: &Server, sample: &str) -> u64 {
    get_text(server, "/metrics")
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Validates as `client` until refused (at most 20 tries: at the rates
/// these tests set, 20 in a row cannot all pass unless each took a
/// second); returns the answers that passed and the refusal.
fn until_refused(client: &Client, server: &Server, token: Option<&str>) -> (u32, Response) {
    for served in 0..20 {
        let response = validate(client, server, "mai", token);
        if response.status() == 429 {
            return (served, response);
        }
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    }
    panic!("20 validations in a row and no 429");
}

#[test]
fn a_client_over_its_limit_is_told_retry_after_and_other_clients_are_unaffected() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.args(["--client-rate", "60/min", "--client-burst", "2"]);
    });
    let (first, second) = (client_from(1), client_from(2));

    let (served, response) = until_refused(&first, &server, None);
    assert!(served >= 2, "the burst of 2 passes: {served}");
    let (retry_after, body) = refused(response);
    assert!(retry_after <= 2, "one validation a second: {retry_after}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("from this client")
            && message.contains("60/min with bursts of 2")
            && message.contains(&format!("Retry in {retry_after} s")),
        "{message}"
    );

    // Another client has its own limit, untouched.
    for _ in 0..2 {
        assert_eq!(validate(&second, &server, "mai", None).status(), 200);
    }

    // One refusal counted; refused validations never reached the provider.
    assert_eq!(
        metric(&server, "connhost_rate_limited_total{scope=\"client\"}"),
        1
    );
    assert_eq!(
        metric(&server, "connhost_rate_limited_total{scope=\"provider\"}"),
        0
    );
    assert_eq!(
        metric(
            &server,
            "connhost_validations_total{provider=\"mai\",outcome=\"valid\"}"
        ),
        u64::from(served) + 2
    );
}

#[test]
fn with_a_token_each_client_still_has_its_own_limit() {
    const TOKEN: &str = "rate-limit-test-token";
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_TOKEN", TOKEN)
            .args(["--client-rate", "1/h", "--client-burst", "1"]);
    });
    let (first, second) = (client_from(1), client_from(2));
    assert_eq!(validate(&first, &server, "mai", Some(TOKEN)).status(), 200);
    let (retry_after, _) = refused(validate(&first, &server, "mai", Some(TOKEN)));
    assert!(
        (3500..=3600).contains(&retry_after),
        "one an hour: {retry_after}"
    );
    // The token is checked first: a wrong one is 401, not a way around.
    assert_eq!(
        validate(&first, &server, "mai", Some("wrong")).status(),
        401
    );
    assert_eq!(validate(&second, &server, "mai", Some(TOKEN)).status(), 200);
    refused(validate(&second, &server, "mai", Some(TOKEN)));
}

#[test]
fn the_provider_limit_counts_every_client_and_only_providers_that_exist() {
    let dir = PluginDir::with(&["mai", "bedrock"]);
    let server = Server::start(dir.path(), |c| {
        c.args(["--client-rate", "off"])
            .args(["--provider-rate", "1/h", "--provider-burst", "3"]);
    });
    for n in 1..=3 {
        let response = validate(&client_from(n), &server, "mai", None);
        assert_eq!(response.status(), 200, "client {n}");
    }
    let (retry_after, body) = refused(validate(&client_from(4), &server, "mai", None));
    assert!(retry_after > 60, "{retry_after}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("provider \"mai\" from all clients")
            && message.contains("1/h with bursts of 3"),
        "{message}"
    );
    // Another provider has its own limit (a 422: bedrock's form wants
    // other fields, and the limit comes first).
    let other = validate(&client_from(4), &server, "bedrock", None);
    assert_eq!(other.status(), 422);
    // An unknown provider is a 404 however often it is asked for.
    for _ in 0..5 {
        assert_eq!(
            validate(&client_from(4), &server, "nope", None).status(),
            404
        );
    }
    assert_eq!(
        metric(&server, "connhost_rate_limited_total{scope=\"provider\"}"),
        1
    );
    assert_eq!(
        metric(&server, "connhost_rate_limited_total{scope=\"client\"}"),
        0
    );
}

#[test]
fn limits_are_on_by_default_and_off_turns_them_off() {
    let dir = PluginDir::with(&["mai"]);
    let default = Server::start(dir.path(), |_| {});
    let client = client_from(1);
    let (served, response) = until_refused(&client, &default, None);
    assert!(served >= 10, "the default burst of 10 passes: {served}");
    let (_, body) = refused(response);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("30/min with bursts of 10"), "{message}");
    drop(default);

    // Off, by flag and by environment variable.
    let flags = ["--client-rate", "off", "--provider-rate", "off"];
    let by_flag = Server::start(dir.path(), |c| {
        c.args(flags);
    });
    let by_env = Server::start(dir.path(), |c| {
        c.env("CONNHOST_CLIENT_RATE", "off")
            .env("CONNHOST_PROVIDER_RATE", "off");
    });
    for server in [&by_flag, &by_env] {
        let started = Instant::now();
        for _ in 0..40 {
            assert_eq!(validate(&client, server, "mai", None).status(), 200);
        }
        assert_eq!(
            metric(server, "connhost_rate_limited_total{scope=\"client\"}"),
            0,
            "after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn bad_rates_are_refused_naming_the_flag_or_the_file_and_line() {
    let dir = PluginDir::with(&[]);
    let Err((code, stderr)) = Server::try_start(dir.path(), |c| {
        c.args(["--client-rate", "30/m"]);
    }) else {
        panic!("a bad --client-rate was accepted");
    };
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--client-rate") && stderr.contains("give N/s, N/min or N/h"),
        "{stderr}"
    );

    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(config.path(), "[serve]\nprovider_rate = \"0/s\"\n").unwrap();
    let Err((_, stderr)) = Server::try_start(dir.path(), |c| {
        c.env("CONNHOST_CONFIG", config.path());
    }) else {
        panic!("a bad provider_rate was accepted");
    };
    let place = format!("{}:2: provider_rate in [serve]", config.path().display());
    assert!(stderr.contains(&place), "{stderr}");
}
