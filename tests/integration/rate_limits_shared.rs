//! Rate limits shared by replicas through a real Redis
//! (`--rate-limit-store`): three `connhost serve` processes behind a
//! round-robin client admit one client's burst once, not three times;
//! when Redis goes away each replica falls back to its own limits (or
//! refuses, in `closed` mode), says so in its log and metrics, and shares
//! again once Redis is back on the same port. One client is one loopback
//! source address, as in `rate_limits.rs`.
//!
//! The script's arithmetic is checked against the local limiter, to the
//! microsecond and on a fake clock, by `connhost-http`'s unit tests
//! (`rate_limit::store`).

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use crate::support::redis_server::Redis;
use crate::support::server::{client_from, get_text, Server};
use crate::support::*;

/// The submitted key: never in an answer.
const KEY: &str = "a-long-enough-api-key-7f3c";

/// The per-client burst the tests set (at 1/h: nothing is earned back
/// during a test).
const BURST: u32 = 30;

/// `POST /v1/providers/mai/validate` of [`KEY`] by `client`.
fn validate(client: &Client, server: &Server) -> Response {
    client
        .post(server.at("/v1/providers/mai/validate"))
        .json(&json!({"fields": {"api_key": KEY}}))
        .send()
        .unwrap()
}

/// The value of one sample in the server's `/metrics` (`None` when
/// absent).
fn metric(server: &Server, sample: &str) -> Option<u64> {
    get_text(server, "/metrics")
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

const UP: &str = "connhost_rate_limit_store_up ";
const FALLBACKS: &str = "connhost_rate_limit_store_fallbacks_total ";

/// `replicas` servers (logging at `info`) with a per-client limit of
/// 1/h, bursts of `burst`, no per-provider limit, and `flags`; each waited
/// for until its store answers when it has one.
fn replicas(dir: &PluginDir, replicas: usize, burst: u32, flags: &[&str]) -> Vec<Server> {
    let servers: Vec<Server> = (0..replicas)
        .map(|_| {
            Server::start(dir.path(), |c| {
                c.env("CONNHOST_LOG", "info")
                    .args(["--client-rate", "1/h", "--client-burst", &burst.to_string()])
                    .args(["--provider-rate", "off"])
                    .args(flags);
            })
        })
        .collect();
    if flags.contains(&"--rate-limit-store") {
        for server in &servers {
            wait_until_up(server);
        }
    }
    servers
}

/// Waits (up to 30 s) until `server` uses its store.
fn wait_until_up(server: &Server) {
    server.wait_until("the store answers", Duration::from_secs(30), || {
        metric(server, UP) == Some(1)
    });
}

/// Sends `requests` validations from `client` to `servers` in turn:
/// how many were admitted (200); every other answer is checked to be the
/// 429 of the per-client limit, as a single server gives it.
fn round_robin(client: &Client, servers: &[Server], requests: usize, burst: u32) -> u32 {
    let mut admitted = 0;
    for n in 0..requests {
        let response = validate(client, &servers[n % servers.len()]);
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => check_refusal(response, burst),
            status => panic!("{status}: {}", response.text().unwrap()),
        }
    }
    admitted
}

/// A 429 of the per-client limit: `Retry-After` in whole seconds (about
/// an hour at 1/h), the JSON error naming the limit, never the key.
fn check_refusal(response: Response, burst: u32) {
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().unwrap();
    assert!(!text.contains(KEY), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("from this client")
            && message.contains(&format!("1/h with bursts of {burst}"))
            && message.contains(&format!("Retry in {retry_after} s.")),
        "{message}"
    );
}

#[test]
fn three_replicas_admit_one_burst_with_the_store_and_three_without() {
    let dir = PluginDir::with(&["mai"]);
    let requests = 4 * BURST as usize;

    let alone = replicas(&dir, 3, BURST, &[]);
    let without = round_robin(&client_from(1), &alone, requests, BURST);
    drop(alone);

    let redis = Redis::start();
    let url = redis.url();
    let shared = replicas(&dir, 3, BURST, &["--rate-limit-store", &url]);
    let with = round_robin(&client_from(1), &shared, requests, BURST);

    eprintln!(
        "admitted of {requests} round-robin requests: {without} without the store, {with} with it"
    );
    assert_eq!(without, 3 * BURST, "each replica admits the burst");
    // At most the burst (+1%); at 1/h nothing is earned back meanwhile.
    assert!(with <= BURST + BURST / 100, "{with} admitted");
    assert_eq!(with, BURST, "the store admits the whole burst");
    for server in &shared {
        assert_eq!(metric(server, UP), Some(1));
        assert_eq!(metric(server, FALLBACKS), Some(0), "{}", server.log());
        assert!(
            server
                .log()
                .contains("rate limits are shared through the store"),
            "{}",
            server.log()
        );
        assert!(!server.log().contains(KEY));
    }
    // Another client has its own burst, once across the replicas.
    assert_eq!(
        round_robin(&client_from(2), &shared, 2 * BURST as usize, BURST),
        BURST
    );
    // The servers without a store have no store metrics.
    let plain = replicas(&dir, 1, BURST, &[]);
    assert_eq!(metric(&plain[0], UP), None);
}

#[test]
fn replicas_fall_back_to_their_own_limits_while_redis_is_down_and_share_again_after() {
    const SMALL: u32 = 5;
    let dir = PluginDir::with(&["mai"]);
    let mut redis = Redis::start();
    let url = redis.url();
    let servers = replicas(&dir, 3, SMALL, &["--rate-limit-store", &url]);
    assert_eq!(round_robin(&client_from(1), &servers, 20, SMALL), SMALL);

    redis.stop();
    // Still answering: each replica by its own limits, so a new client
    // gets a burst from each.
    let alone = round_robin(&client_from(2), &servers, 30, SMALL);
    assert_eq!(alone, 3 * SMALL, "local limits while Redis is down");
    for server in &servers {
        assert_eq!(metric(server, UP), Some(0));
        let fallbacks = metric(server, FALLBACKS).unwrap();
        assert!(fallbacks >= 10, "{fallbacks} fallbacks");
        let log = server.log();
        let said = "the rate limit store does not answer";
        assert_eq!(log.matches(said).count(), 1, "logged once:\n{log}");
        assert!(log.contains("this replica applies its own limits"), "{log}");
    }

    // Back on the same port (empty): every replica shares again.
    redis.start_again();
    for server in &servers {
        wait_until_up(server);
        server.wait_for_log("the rate limit store answers again");
    }
    assert_eq!(round_robin(&client_from(3), &servers, 30, SMALL), SMALL);
    for server in &servers {
        let log = server.log();
        let said = "the rate limit store answers again: rate limits are shared again";
        assert_eq!(log.matches(said).count(), 1, "logged once:\n{log}");
    }
}

#[test]
fn in_closed_mode_validations_are_refused_while_redis_is_down() {
    let dir = PluginDir::with(&["mai"]);
    let mut redis = Redis::start();
    let url = redis.url();
    let servers = replicas(
        &dir,
        2,
        BURST,
        &[
            "--rate-limit-store",
            &url,
            "--rate-limit-store-failure",
            "closed",
        ],
    );
    let client = client_from(1);
    for server in &servers {
        assert_eq!(validate(&client, server).status(), 200);
    }

    redis.stop();
    for server in &servers {
        for _ in 0..3 {
            let response = validate(&client, server);
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["content-type"], "application/json");
            let body: Value = response.json().unwrap();
            assert_eq!(body["error"]["code"], "rate_limit_unavailable", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("Retry later"), "{message}");
            assert!(
                !message.contains("redis://"),
                "the store's address stays private"
            );
        }
        // The rest of the API answers.
        let ready = reqwest::blocking::get(server.at("/readyz")).unwrap();
        assert_eq!(ready.status(), 200);
        assert_eq!(metric(server, UP), Some(0));
        assert!(metric(server, FALLBACKS).unwrap() >= 3);
        assert!(
            server
                .log()
                .contains("validations are refused (503) until it answers again"),
            "{}",
            server.log()
        );
    }

    redis.start_again();
    for server in &servers {
        wait_until_up(server);
        assert_eq!(validate(&client, server).status(), 200);
    }
}
