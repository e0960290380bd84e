// A provider that blocks its thread, hammered until it would take every
// thread the host has: it must hold no more than its bound, answer "busy"
// beyond it, and leave every other provider and hot reload working.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::server::{Server, NO_RATE_LIMITS};
use crate::support::*;

/// More validations than tokio's blocking pool has threads (512).
const FLOOD: usize = 530;

/// POSTs `body` to `url` and returns the status and JSON body.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[test]
fn a_provider_that_blocks_its_threads_cannot_starve_the_other_providers() {
    let dir = PluginDir::with(&["fixture-hang", "bedrock", "mai"]);
    let server = Server::start(dir.path(), |c| {
        c.args(["--timeout", "2", "--max-in-flight", "16"])
            .args(NO_RATE_LIMITS);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let validate = |id: &str| server.at(&format!("/v1/providers/{id}/validate"));

    // Each call blocks its thread for 30 s, well past the 2 s timeout.
    let blocking = validate("blocks-thread");
    let outcomes: Vec<Value> = runtime.block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..FLOOD {
            let client = client.clone();
            let url = blocking.clone();
            calls.spawn(async move {
                post(&client, &url, &json!({"fields": {"api_key": "30000"}})).await
            });
        }
        let mut outcomes = Vec::new();
        while let Some(answer) = calls.join_next().await {
            let (status, body) = answer.unwrap();
            assert_eq!(status, 200, "{body}");
            outcomes.push(body);
        }
        outcomes
    });
    let count = |outcome: &str| outcomes.iter().filter(|b| b["outcome"] == outcome).count();
    assert_eq!(count("timed_out"), 16, "exactly the bound ran");
    assert_eq!(count("busy"), FLOOD - 16, "the rest were turned away");
    let busy = outcomes.iter().find(|b| b["outcome"] == "busy").unwrap();
    assert_eq!(busy["valid"], false);
    assert_eq!(busy["retryable"], true);
    assert!(
        busy["error"]
            .as_str()
            .unwrap()
            .contains("16 validations in flight"),
        "{busy}"
    );

    // The blocked threads are still held (for 30 s): other providers answer.
    runtime.block_on(async {
        let (status, body) = post(
            &client,
            &validate("bedrock"),
            &json!({"fields": {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "region": "eu-west-1"
            }}),
        )
        .await;
        assert_eq!((status, &body["valid"]), (200, &json!(true)), "{body}");
        let (status, body) = post(
            &client,
            &validate("mai"),
            &json!({"fields": {"api_key": "0123456789abcdef0123456789abcdef"}}),
        )
        .await;
        assert_eq!((status, &body["valid"]), (200, &json!(true)), "{body}");
        // The blocking provider itself is still bounded, not queued.
        let (_, body) = post(&client, &blocking, &json!({"fields": {"api_key": "1"}})).await;
        assert_eq!(body["outcome"], "busy", "{body}");
    });

    // Hot reload still loads a new plugin, and a rescan answers.
    dir.add_library("fixture-greeter-v1");
    let report: Value = runtime.block_on(async {
        client
            .post(server.at("/v1/plugins/rescan"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let loaded = report["loaded"].as_array().unwrap();
    assert_eq!(loaded.len(), 4, "{report}");
    assert!(
        loaded.iter().any(|p| p["providers"] == json!(["greeter"])),
        "the new plugin loaded: {report}"
    );
}

#[test]
fn the_in_flight_bound_must_be_a_positive_number() {
    let dir = PluginDir::empty();
    let out = run(connhost(dir.path()).args(["--max-in-flight", "0", "providers"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--max-in-flight"), "{}", out.stderr);
    assert!(
        out.stderr.contains("0 is not in 1..=65536"),
        "{}",
        out.stderr
    );
}
