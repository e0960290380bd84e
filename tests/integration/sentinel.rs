// One sentinel secret pushed through every path a submission takes (the
// CLI, HTTP, plugin logs at trace level from every thread, error answers,
// panics, metrics, in process and isolated) never appears anywhere.

use std::process::Command;

use serde_json::json;

use crate::support::server::{client, get_text, Server};
use crate::support::*;

/// Long and unlike anything else, so any appearance is a leak.
const SENTINEL: &str = "sentinel-7c1e9b2d-never-shown";

/// Put in the query and user info of URLs the egress policy refuses.
const QUERY_MARKER: &str = "query-marker-51d0e6";

/// The providers of `fixture-panicky` that see the submitted key: one
/// echoes it in its answer, one panics with it, one logs it from a thread
/// of its own at every level, one panics after awaiting.
const PROVIDERS: [&str; 4] = [
    "echoes-secret",
    "panics-with-secret",
    "logs-secret-from-thread",
    "panics-after-await",
];

fn assert_absent(what: &str, text: &str) {
    assert!(
        !text.contains(SENTINEL),
        "the sentinel secret appeared in {what}:\n{text}"
    );
}

/// `connhost` at trace level, with every plugin run as `isolation` says.
fn traced(dir: &PluginDir, isolation: &str) -> Command {
    let mut command = connhost(dir.path());
    command
        .env("CONNHOST_LOG", "trace")
        .env("CONNHOST_ISOLATION", isolation);
    command
}

#[test]
fn the_sentinel_never_appears_in_the_clis_output_or_log() {
    let dir = PluginDir::with(&["fixture-panicky"]);
    let field = format!("api_key={SENTINEL}");
    for isolation in ["in-process", "process"] {
        for provider in PROVIDERS {
            for json in [false, true] {
                let mut command = traced(&dir, isolation);
                command.args(["validate", provider, "-f", &field]);
                if json {
                    command.arg("--json");
                }
                let out = run(&mut command);
                let what = format!("validate {provider} ({isolation}, json: {json})");
                assert_absent(&format!("{what} stdout"), &out.stdout);
                assert_absent(&format!("{what} stderr"), &out.stderr);
                assert!(
                    out.stderr.contains("TRACE"),
                    "{what}: the log is not at trace level:\n{}",
                    out.stderr
                );
            }
        }
        // Read from stdin.
        let out = run_with_stdin(
            traced(&dir, isolation).args(["validate", "panics-with-secret", "-f", "api_key=-"]),
            &format!("{SENTINEL}\n"),
        );
        assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
        assert_absent("stdin validation", &format!("{}{}", out.stdout, out.stderr));
    }
    // A usage error does not echo the value it could not parse.
    let out =
        run(traced(&dir, "in-process").args(["validate", "echoes-secret", "--field", SENTINEL]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_absent("a usage error", &format!("{}{}", out.stdout, out.stderr));
}

#[test]
fn the_sentinel_never_appears_in_http_answers_logs_metrics_or_pages() {
    let dir = PluginDir::with(&[
        "fixture-panicky",
        "fixture-greeter-v1",
        "fixture-probe-http",
    ]);
    for isolation in ["in-process", "process"] {
        let server = Server::start(dir.path(), |c| {
            c.env("CONNHOST_LOG", "trace")
                .env("CONNHOST_ISOLATION", isolation);
        });
        let post = |path: &str, body: String| -> String {
            client()
                .post(server.at(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .expect("POST")
                .text()
                .expect("an answer")
        };
        let good = json!({"fields": {"api_key": SENTINEL}}).to_string();
        for provider in PROVIDERS.iter().chain(&["greeter"]) {
            let answer = post(&format!("/v1/providers/{provider}/validate"), good.clone());
            assert_absent(&format!("the answer of {provider} ({isolation})"), &answer);
        }
        // URLs the egress policy refuses, with a marker in their query and
        // user info: a refusal names the host only. (A URL field is a text
        // field, not a secret: the debug log shows it, so the marker is not
        // the sentinel.)
        for url in [
            format!("http://169.254.169.254/latest/meta-data?token={QUERY_MARKER}"),
            format!("http://127.0.0.1:9/check?key={QUERY_MARKER}"),
            format!("http://user:{QUERY_MARKER}@10.0.0.1/"),
        ] {
            let answer = post(
                "/v1/providers/probe-http/validate",
                json!({"fields": {"url": url}}).to_string(),
            );
            assert!(answer.contains("egress refused"), "{answer}");
            assert!(!answer.contains(QUERY_MARKER), "{answer}");
        }
        // Malformed bodies, an unknown provider, a wrong type, extra fields:
        // refused without echoing what was sent.
        for (path, body) in [
            (
                "/v1/providers/echoes-secret/validate",
                format!("{{\"fields\": {{\"api_key\": \"{SENTINEL}\""),
            ),
            (
                "/v1/providers/echoes-secret/validate",
                format!("{{\"fields\": {{\"api_key\": [\"{SENTINEL}\"]}}}}"),
            ),
            (
                "/v1/providers/echoes-secret/validate",
                format!("{{\"fields\": {{\"api_key\": \"x\"}}, \"extra\": \"{SENTINEL}\"}}"),
            ),
            ("/v1/providers/no-such-provider/validate", good.clone()),
            ("/v1/providers/echoes-secret/validate", SENTINEL.to_string()),
        ] {
            let answer = post(path, body);
            assert_absent(
                &format!("the answer to a bad request ({isolation})"),
                &answer,
            );
        }
        // Past the client's rate limit: the 429 does not echo either.
        let mut limited = None;
        for _ in 0..40 {
            let response = client()
                .post(server.at("/v1/providers/echoes-secret/validate"))
                .header("content-type", "application/json")
                .body(good.clone())
                .send()
                .expect("POST");
            if response.status() == 429 {
                limited = Some(response.text().expect("an answer"));
                break;
            }
        }
        let limited = limited.expect("the client's rate limit never answered 429");
        assert_absent(&format!("a 429 answer ({isolation})"), &limited);
        for path in [
            "/metrics",
            "/v1/plugins",
            "/v1/providers",
            "/",
            "/openapi.json",
        ] {
            assert_absent(
                &format!("GET {path} ({isolation})"),
                &get_text(&server, path),
            );
        }
        let log = server.log();
        assert!(
            log.contains("TRACE"),
            "the log is not at trace level:\n{log}"
        );
        assert!(
            log.contains("thread info: key <redacted>"),
            "the plugin thread's line is missing ({isolation}):\n{log}"
        );
        assert_absent(&format!("the server's log ({isolation})"), &log);
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("egress refused"))
            .collect();
        assert!(!refusals.is_empty(), "no egress refusal logged:\n{log}");
        for line in refusals {
            assert!(!line.contains(QUERY_MARKER), "{line}");
        }
        assert!(!get_text(&server, "/metrics").contains(QUERY_MARKER));
    }
}
