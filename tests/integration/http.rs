// `connhost serve` over real loopback HTTP: every route, every error, auth, CORS, concurrency and shutdown.

use std::time::Duration;

use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::server::{client, get_text, Server, NO_RATE_LIMITS};
use crate::support::vendor::Vendor;
use crate::support::*;

/// Asserts the status and that the body is JSON, and returns it.
fn json_of(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    response.json().expect("a JSON body")
}

/// Asserts an error envelope with this code, and returns its message.
fn error_of(response: Response, status: StatusCode, code: &str) -> String {
    let body = json_of(response, status);
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

fn post_json(server: &Server, path: &str, body: Value) -> Response {
    client().post(server.at(path)).json(&body).send().unwrap()
}

/// A server with the example plugins, daytona pointed at `vendor`.
fn example_server(vendor: &Vendor) -> (PluginDir, Server) {
    let dir = PluginDir::with(&["daytona", "mai", "github", "fixture-hang"]);
    dir.add_file(&library_file_name("broken"), b"not a library");
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .env("CONNHOST_LOG", "debug")
            .args(["--timeout", "1"]);
    });
    (dir, server)
}

#[test]
fn providers_are_listed_with_the_cli_contract() {
    let vendor = Vendor::start();
    let (dir, server) = example_server(&vendor);
    let list = json_of(
        client().get(server.at("/v1/providers")).send().unwrap(),
        StatusCode::OK,
    );
    let cli = run(connhost(dir.path()).args(["providers", "--json"])).json();
    assert_eq!(list, cli, "the HTTP listing and `providers --json` agree");
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_id"].clone())
        .collect();
    assert!(
        ids.contains(&json!("daytona")) && ids.contains(&json!("openai")),
        "{ids:?}"
    );

    let one = json_of(
        client().get(server.at("/v1/providers/mai")).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(one["display_name"], "Microsoft AI");
    assert_eq!(one["origin"]["kind"], "plugin");

    let message = error_of(
        client()
            .get(server.at("/v1/providers/nope"))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "provider_not_found",
    );
    assert!(message.contains("\"nope\""), "{message}");
}

#[test]
fn validation_verdicts_over_http() {
    let vendor = Vendor::start();
    let (_dir, server) = example_server(&vendor);

    let valid = post_json(
        &server,
        "/v1/providers/daytona/validate",
        json!({"fields": {"api_key": "good-key"}}),
    );
    assert_eq!(valid.headers()["cache-control"], "no-store");
    let valid = json_of(valid, StatusCode::OK);
    assert_eq!(
        valid,
        json!({"valid": true, "provider_username": null, "provider_metadata": {"sandboxes": 2}})
    );

    let rejected = json_of(
        post_json(
            &server,
            "/v1/providers/daytona/validate",
            json!({"fields": {"api_key": "wrong-key"}}),
        ),
        StatusCode::OK,
    );
    assert_eq!(rejected["valid"], false);
    assert_eq!(rejected["outcome"], "rejected");
    assert_eq!(rejected["retryable"], false);
    assert!(
        rejected["error"].as_str().unwrap().contains("refused"),
        "{rejected}"
    );

    let inconclusive = json_of(
        post_json(
            &server,
            "/v1/providers/daytona/validate",
            json!({"fields": {"api_key": "broken"}}),
        ),
        StatusCode::OK,
    );
    assert_eq!(inconclusive["outcome"], "inconclusive");
    assert_eq!(inconclusive["retryable"], true);

    let timed_out = json_of(
        post_json(
            &server,
            "/v1/providers/hangs-forever/validate",
            json!({"fields": {"api_key": "k-key"}}),
        ),
        StatusCode::OK,
    );
    assert_eq!(timed_out["outcome"], "timed_out");
    assert_eq!(timed_out["retryable"], true);
}

#[test]
fn schema_errors_are_422_tied_to_fields_and_the_provider_is_not_called() {
    let vendor = Vendor::start();
    let (_dir, server) = example_server(&vendor);
    let response = post_json(
        &server,
        "/v1/providers/mai/validate",
        json!({"fields": {"tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}),
    );
    let body = json_of(response, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_fields");
    assert_eq!(
        body["error"]["fields"],
        json!([
            {"field": "client_id", "message": "Client ID (Entra ID OAuth) is required."},
            {"field": "client_secret", "message": "Client Secret (Entra ID OAuth) is required."}
        ])
    );
    let none = json_of(
        post_json(&server, "/v1/providers/mai/validate", json!({"fields": {}})),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(
        none["error"]["fields"],
        json!([{"field": null, "message": "Provide credentials for one of the available methods."}])
    );

    let missing = post_json(
        &server,
        "/v1/providers/daytona/validate",
        json!({"fields": {"api_key": " "}}),
    );
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(vendor.requests(), 0, "the provider must not be called");
}

#[test]
fn the_credential_document_is_returned_only_when_asked_for() {
    let vendor = Vendor::start();
    let (_dir, server) = example_server(&vendor);
    let plain = json_of(
        post_json(
            &server,
            "/v1/providers/daytona/validate",
            json!({"fields": {"api_key": "good-key"}}),
        ),
        StatusCode::OK,
    );
    assert!(plain.get("credential_document").is_none(), "{plain}");
    let asked = json_of(
        post_json(
            &server,
            "/v1/providers/daytona/validate",
            json!({"fields": {"api_key": "good-key"}, "include_document": true}),
        ),
        StatusCode::OK,
    );
    assert_eq!(asked["credential_document"], "good-key");
    // Nothing of it in the server's log, which runs at debug level here.
    let log = server.log();
    assert!(
        log.contains("validated") || log.contains("request"),
        "the log is captured:\n{log}"
    );
    assert!(
        !log.contains("good-key"),
        "a secret reached the log:\n{log}"
    );
}

#[test]
fn malformed_requests_get_precise_errors() {
    let vendor = Vendor::start();
    let (_dir, server) = example_server(&vendor);
    let path = server.at("/v1/providers/daytona/validate");

    let message = error_of(
        client()
            .post(&path)
            .header("content-type", "application/json")
            .body("{\"fields\": {")
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert!(message.contains("line 1 column"), "{message}");

    let message = error_of(
        client()
            .post(&path)
            .header("content-type", "text/plain")
            .body("api_key=x")
            .send()
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert!(message.contains("application/json"), "{message}");
    error_of(
        client().post(&path).body("{}").send().unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let big = format!(
        "{{\"fields\": {{\"api_key\": \"{}\"}}}}",
        "x".repeat(1024 * 1024 + 1)
    );
    error_of(
        client()
            .post(&path)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let body = json_of(
        post_json(
            &server,
            "/v1/providers/daytona/validate",
            json!({"fields": {"api_key": 987654321}}),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(body["error"]["fields"][0]["field"], "api_key");
    assert!(!body.to_string().contains("987654321"), "{body}");

    error_of(
        post_json(
            &server,
            "/v1/providers/daytona/validate",
            json!({"field": {}}),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    error_of(
        post_json(
            &server,
            "/v1/providers/nope/validate",
            json!({"fields": {}}),
        ),
        StatusCode::NOT_FOUND,
        "provider_not_found",
    );
    error_of(
        client().get(server.at("/v2/things")).send().unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    error_of(
        client().delete(server.at("/v1/providers")).send().unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(vendor.requests(), 0);
}

#[test]
fn a_smaller_body_limit_is_honoured() {
    let dir = PluginDir::with(&["daytona"]);
    let server = Server::start(dir.path(), |c| {
        c.args(["--body-limit", "64"]);
    });
    let body = json!({"fields": {"api_key": "x".repeat(100)}});
    error_of(
        post_json(&server, "/v1/providers/daytona/validate", body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[test]
fn plugins_probes_metrics_and_openapi() {
    let vendor = Vendor::start();
    let (_dir, server) = example_server(&vendor);
    let report = json_of(
        client().get(server.at("/v1/plugins")).send().unwrap(),
        StatusCode::OK,
    );
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert!(failed[0]["path"]
        .as_str()
        .unwrap()
        .ends_with(&library_file_name("broken")));
    assert!(failed[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not a shared library"));
    assert_eq!(report["loaded"].as_array().unwrap().len(), 4);

    assert_eq!(
        json_of(
            client().get(server.at("/healthz")).send().unwrap(),
            StatusCode::OK
        )["status"],
        "ok"
    );
    let ready = json_of(
        client().get(server.at("/readyz")).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["plugins_failed"], 1);

    post_json(
        &server,
        "/v1/providers/daytona/validate",
        json!({"fields": {"api_key": "good-key"}}),
    );
    post_json(
        &server,
        "/v1/providers/daytona/validate",
        json!({"fields": {"api_key": "wrong-key"}}),
    );
    let stray = client().get(server.at("/no/such/page")).send().unwrap();
    assert_eq!(stray.status(), StatusCode::NOT_FOUND);
    let metrics = client().get(server.at("/metrics")).send().unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().unwrap();
    for needle in [
        "connhost_http_requests_total{route=\"/v1/providers/{id}/validate\",method=\"POST\",status=\"200\"} 2",
        "connhost_http_request_duration_seconds_count{route=\"/v1/providers/{id}/validate\"} 2",
        // A raw path never becomes a label.
        "connhost_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        // Every route's latency series exists from the start.
        "connhost_http_request_duration_seconds_count{route=\"/openapi.json\"} 0",
        "connhost_validations_total{provider=\"daytona\",outcome=\"valid\"} 1",
        "connhost_validations_total{provider=\"daytona\",outcome=\"rejected\"} 1",
        "connhost_validation_duration_seconds_count{provider=\"daytona\"} 2",
        "connhost_plugins_loaded 4",
        "connhost_plugins_failed 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    let doc = json_of(
        client().get(server.at("/openapi.json")).send().unwrap(),
        StatusCode::OK,
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/providers/{id}/validate"]["post"].is_object());
    assert!(doc["components"]["schemas"]["ProviderInfo"].is_object());
}

#[test]
fn a_slow_validation_does_not_block_the_others() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona", "mai"]);
    let server = Server::start(dir.path(), |c| {
        // 18 validations from one client: over its default burst.
        c.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .args(NO_RATE_LIMITS)
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]));
    });
    // Two validations wait on the vendor for as long as the test wants.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = server.at("/v1/providers/daytona/validate");
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .json(&json!({"fields": {"api_key": "hold"}}))
                    .send()
                    .unwrap()
                    .json::<Value>()
                    .unwrap()
            })
        })
        .collect();
    vendor.wait_for_held(2);
    // Meanwhile, sixteen others complete.
    let fast: Vec<_> = (0..16)
        .map(|i| {
            let (url, key) = if i % 2 == 0 {
                (server.at("/v1/providers/daytona/validate"), "good-key")
            } else {
                (
                    server.at("/v1/providers/mai/validate"),
                    "a-long-enough-api-key",
                )
            };
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .json(&json!({"fields": {"api_key": key}}))
                    .send()
                    .unwrap()
                    .json::<Value>()
                    .unwrap()
            })
        })
        .collect();
    for handle in fast {
        assert_eq!(handle.join().unwrap()["valid"], true);
    }
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "the held validations are still waiting"
    );
    vendor.release();
    for handle in held {
        assert_eq!(handle.join().unwrap()["valid"], true);
    }
}

#[test]
fn a_token_guards_the_api_and_nothing_else() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_TOKEN", "correct-horse-battery")
            .env("CONNHOST_LOG", "debug");
    });
    let message = error_of(
        client().get(server.at("/v1/providers")).send().unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert!(message.contains("Bearer"), "{message}");
    let wrong = client()
        .get(server.at("/v1/providers"))
        .bearer_auth("correct-horse")
        .send()
        .unwrap();
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    error_of(wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let post = client()
        .post(server.at("/v1/providers/mai/validate"))
        .json(&json!({"fields": {"api_key": "a-long-enough-api-key"}}))
        .send()
        .unwrap();
    error_of(post, StatusCode::UNAUTHORIZED, "unauthorized");

    let ok = client()
        .get(server.at("/v1/providers"))
        .bearer_auth("correct-horse-battery")
        .send()
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // /metrics needs the token too, unless opened (see metrics_interop).
    assert_eq!(
        client().get(server.at("/metrics")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // The page's assets (its styles and each of its scripts), as listed.
    let assets = connhost_http::routes()
        .map(|route| route.path)
        .filter(|path| path.starts_with("/assets/"));
    for open in ["/healthz", "/readyz", "/openapi.json", "/"]
        .into_iter()
        .chain(assets)
    {
        assert_eq!(
            client().get(server.at(open)).send().unwrap().status(),
            StatusCode::OK,
            "{open}"
        );
    }
    let page = client().get(server.at("/")).send().unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!server.log().contains("correct-horse-battery"));
}

#[test]
fn a_token_file_works_too() {
    let dir = PluginDir::with(&["mai"]);
    let token = dir.add_file("token.txt", b"from-a-file\n");
    let server = Server::start(dir.path(), |c| {
        c.arg("--token-file").arg(&token);
    });
    let ok = client()
        .get(server.at("/v1/plugins"))
        .bearer_auth("from-a-file")
        .send()
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        client()
            .get(server.at("/v1/plugins"))
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused() {
    let dir = PluginDir::empty();
    let mut command = connhost(dir.path());
    let out = run(command.args(["serve", "--listen", "0.0.0.0:0"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:0 without an access token"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("CONNHOST_TOKEN"), "{}", out.stderr);
    // With a token it starts (and is then reached over loopback).
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_TOKEN", "t0ken-value")
            .args(["--listen", "0.0.0.0:0"]);
    });
    assert!(server.url().starts_with("http://0.0.0.0:"));
}

#[test]
fn cors_is_off_unless_origins_are_configured() {
    let dir = PluginDir::with(&["mai"]);
    let closed = Server::start(dir.path(), |_| {});
    let response = client()
        .get(closed.at("/v1/providers"))
        .header("origin", "https://app.example")
        .send()
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let open = Server::start(dir.path(), |c| {
        c.args(["--cors-origin", "https://app.example"]);
    });
    let allowed = client()
        .get(open.at("/v1/providers"))
        .header("origin", "https://app.example")
        .send()
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // A page on the origin can read when to retry a 429.
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "retry-after"
    );
    let other = client()
        .get(open.at("/v1/providers"))
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let preflight = client()
        .request(
            reqwest::Method::OPTIONS,
            open.at("/v1/providers/mai/validate"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[test]
fn sigterm_lets_a_validation_in_flight_finish() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .env("CONNHOST_LOG", "info");
    });
    let url = server.at("/v1/providers/daytona/validate");
    let in_flight = std::thread::spawn(move || {
        client()
            .post(url)
            .json(&json!({"fields": {"api_key": "hold"}}))
            .send()
            .unwrap()
    });
    vendor.wait_for_held(1);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_for_log("shutting down");
    // The server has stopped accepting, but the validation in flight gets
    // its answer once the vendor replies.
    vendor.release();
    let response = in_flight.join().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().unwrap()["valid"], true);
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn nothing_under_v1_answers_an_anonymous_caller_when_a_token_is_set() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_TOKEN", "correct-horse-battery");
    });
    for (method, path) in [
        (reqwest::Method::GET, "/v1"),
        (reqwest::Method::GET, "/v1/providers"),
        (reqwest::Method::DELETE, "/v1/providers/mai"),
        (reqwest::Method::GET, "/v1/no-such-route"),
        (reqwest::Method::GET, "/ui/instructions"),
        (reqwest::Method::POST, "/v1/plugins/rescan"),
    ] {
        let response = client()
            .request(method.clone(), server.at(path))
            .send()
            .unwrap();
        error_of(response, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The scheme name is case-insensitive.
    let ok = client()
        .get(server.at("/ui/instructions"))
        .header("authorization", "BEARER correct-horse-battery")
        .send()
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Refusals are counted under the route template, never the raw path.
    let metrics = client()
        .get(server.at("/metrics"))
        .bearer_auth("correct-horse-battery")
        .send()
        .unwrap();
    let text = metrics.text().unwrap();
    for needle in [
        "connhost_http_requests_total{route=\"/v1/providers\",method=\"GET\",status=\"401\"} 1",
        "connhost_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"401\"} 2",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn the_provider_is_looked_up_before_the_body_is_read() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |_| {});
    let response = client()
        .post(server.at("/v1/providers/nope/validate"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    error_of(response, StatusCode::NOT_FOUND, "provider_not_found");
    let response = client()
        .get(format!("{}/v1/providers/%FF", server.url()))
        .send()
        .unwrap();
    let message = error_of(response, StatusCode::BAD_REQUEST, "invalid_path");
    assert!(message.contains("malformed"), "{message}");
    // A percent-encoded id is decoded.
    let response = client()
        .get(format!("{}/v1/providers/m%61i", server.url()))
        .send()
        .unwrap();
    assert_eq!(json_of(response, StatusCode::OK)["provider_id"], "mai");
}

#[test]
fn every_answer_carries_nosniff() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |_| {});
    for (method, path, status) in [
        (reqwest::Method::GET, "/v1/providers", StatusCode::OK),
        (reqwest::Method::GET, "/v1/nope", StatusCode::NOT_FOUND),
        (
            reqwest::Method::DELETE,
            "/v1/providers",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (reqwest::Method::GET, "/healthz", StatusCode::OK),
        (reqwest::Method::GET, "/metrics", StatusCode::OK),
    ] {
        let response = client().request(method, server.at(path)).send().unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
}

#[test]
fn an_oauth_provider_without_a_credential_is_a_422_not_a_vendor_call() {
    let dir = PluginDir::with(&["github"]);
    let server = Server::start(dir.path(), |c| {
        // Unreachable on purpose: the provider must not be called.
        c.env("CONNHOST_PLUGIN_GITHUB_API_URL", "http://127.0.0.1:9");
    });
    let body = json_of(
        post_json(
            &server,
            "/v1/providers/github/validate",
            json!({"fields": {}}),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["error"]["code"], "invalid_fields");
}

#[test]
fn made_up_methods_do_not_become_metric_labels() {
    let dir = PluginDir::empty();
    let server = Server::start(dir.path(), |_| {});
    for i in 0..3 {
        let method = reqwest::Method::from_bytes(format!("ZZZ{i}").as_bytes()).unwrap();
        client()
            .request(method, server.at("/healthz"))
            .send()
            .unwrap();
    }
    let text = get_text(&server, "/metrics");
    assert!(!text.contains("ZZZ"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

#[test]
fn a_wildcard_or_malformed_cors_origin_is_refused_at_start() {
    let dir = PluginDir::empty();
    for origin in ["*", "https://app.example/", "app.example"] {
        let out = run(connhost(dir.path()).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cors-origin",
            origin,
        ]));
        assert_eq!(out.code, 2, "{origin}: {}", out.stderr);
        assert!(
            out.stderr.contains("is not an origin"),
            "{origin}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let dir = PluginDir::empty();
    let server = Server::start(dir.path(), |_| {});
    let address = server.address().to_owned();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buffer = Vec::new();
    // The server gives up on the headers and closes the connection (after
    // answering 408, or not at all): the read ends with EOF, not with our
    // own 30 s read timeout.
    let ended = stream.read_to_end(&mut buffer);
    assert!(
        ended.is_ok(),
        "the server kept the connection open: {ended:?}"
    );
    let text = String::from_utf8_lossy(&buffer);
    assert!(!text.contains("200 OK"), "{text}");
}
