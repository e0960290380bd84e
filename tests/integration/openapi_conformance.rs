//! The served OpenAPI document describes every route and every real
//! answer. The routes are the router's own (`connhost_http::routes()`,
//! the table the router is built from): each must be in the served
//! `/openapi.json` and each documented path must be served, so an
//! undocumented new route fails here. A child `connhost serve` (and, for
//! the 503s of a server still loading, the same router served in process)
//! is asked every route with every status it can answer; each request and
//! answer is recorded and checked against the document by a real
//! validator, Python's openapi-core (`tests/openapi/validate.py`). The
//! statuses to cover are the document's own, so a newly documented answer
//! without a request here fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use connhost_http::Route;
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::external_tools::{python, python_has, require};
use crate::support::server::{api_key_body, validate_path, Server, NO_RATE_LIMITS};
use crate::support::vendor::Vendor;
use crate::support::*;

/// The access token of the server under test (not a secret).
const TOKEN: &str = "conformance-token";

/// What Prometheus sends.
const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The openapi-core version `cargo xtask test` installs.
const OPENAPI_CORE: &str = "0.23.1";

/// Requests sent and answers received, in the form `validate.py` reads.
struct Recorder {
    client: Client,
    exchanges: Vec<Value>,
}

/// One request to record.
struct Ask {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    /// Sent by [`Recorder::send_trickled`] instead (a body that never
    /// finishes arriving).
    trickled: bool,
}

impl Ask {
    fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
            trickled: false,
        }
    }

    /// A POST to `path` whose body announces 64 bytes and sends one.
    fn trickled(path: &str) -> Self {
        Self {
            trickled: true,
            ..Self::new("POST", path)
        }
    }

    fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A POST of this JSON body.
    fn post_json(path: impl Into<String>, body: Value) -> Self {
        Self::new("POST", path)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }

    fn token(self) -> Self {
        self.header("authorization", format!("Bearer {TOKEN}"))
    }
}

impl Recorder {
    fn new() -> Self {
        Self {
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            exchanges: Vec::new(),
        }
    }

    /// Sends `ask` to `base`, asserts the status (so each request covers
    /// what it is meant to), records the exchange, and returns the body.
    fn send(&mut self, base: &str, ask: Ask, expected: u16) -> String {
        if ask.trickled {
            return self.send_trickled(base, &ask.path, expected);
        }
        let method = reqwest::Method::from_bytes(ask.method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{base}{}", ask.path));
        for (name, value) in &ask.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &ask.body {
            request = request.body(body.clone());
        }
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("{} {}: {e}", ask.method, ask.path));
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let body = response.text().unwrap();
        assert_eq!(
            status, expected,
            "{} {} answered {status}: {body}",
            ask.method, ask.path
        );
        let request_headers: BTreeMap<&str, &str> = ask
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        self.exchanges.push(json!({
            "method": ask.method,
            "path": ask.path,
            "request_headers": request_headers,
            "request_body": ask.body,
            "status": status,
            "response_headers": headers,
            "response_body": body,
        }));
        body
    }
}

impl Recorder {
    /// POSTs to `path` a body that announces 64 bytes and sends one, then
    /// nothing (the trickling client the body timeout is for), over a raw
    /// socket; records the answer like [`send`](Self::send).
    fn send_trickled(&mut self, base: &str, path: &str, expected: u16) -> String {
        use std::io::{Read as _, Write as _};
        let address = base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{{"
        )
        .unwrap();
        // The server answers and closes once the timeout passes.
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete answer: {raw:?}"));
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {raw:?}"));
        let headers: BTreeMap<String, String> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        assert_eq!(
            status, expected,
            "POST {path} (trickled) answered {status}: {body}"
        );
        self.exchanges.push(json!({
            "method": "POST",
            "path": path,
            "request_headers": {"content-type": "application/json", "authorization": format!("Bearer {TOKEN}")},
            "request_body": "{",
            "status": status,
            "response_headers": headers,
            "response_body": body,
        }));
        body.to_owned()
    }
}

/// `/v1/providers/{id}` as a pattern matching `/v1/providers/mai`.
fn matches_template(template: &str, path: &str) -> bool {
    let (template, path): (Vec<_>, Vec<_>) =
        (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// Every (method, path template, status, media type) the document lists.
fn documented_answers(document: &Value) -> Vec<(String, String, String, String)> {
    let mut answers = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let media_types: Vec<String> = match response["content"].as_object() {
                    Some(content) => content.keys().cloned().collect(),
                    None => vec![String::new()],
                };
                for media_type in media_types {
                    answers.push((
                        method.to_uppercase(),
                        template.clone(),
                        status.clone(),
                        media_type,
                    ));
                }
            }
        }
    }
    answers
}

/// The documented answers no recorded exchange produced.
fn uncovered(document: &Value, exchanges: &[Value]) -> Vec<String> {
    documented_answers(document)
        .into_iter()
        .filter(|(method, template, status, media_type)| {
            !exchanges.iter().any(|e| {
                let content_type = e["response_headers"]["content-type"].as_str().unwrap_or("");
                e["method"] == method.as_str()
                    && matches_template(template, e["path"].as_str().unwrap())
                    && e["status"].as_u64().map(|s| s.to_string()).as_deref()
                        == Some(status.as_str())
                    && content_type.split(';').next().unwrap_or("").trim() == media_type
            })
        })
        .map(|(method, template, status, media_type)| {
            format!("{method} {template} -> {status} {media_type}")
        })
        .collect()
}

/// The route's name in messages, such as `GET /v1/providers/{id}`.
fn name(route: &Route) -> String {
    format!("{} {}", route.method, route.path)
}

/// The (method, path template) of every operation the document lists.
fn documented_operations(document: &Value) -> BTreeSet<String> {
    let mut operations = BTreeSet::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            operations.insert(format!("{} {template}", method.to_uppercase()));
        }
    }
    operations
}

/// Every route the router serves is in the document, except the ones the
/// route list itself says are left out (with a reason), which must not
/// be; and every operation in the document is served.
fn assert_the_document_lists_exactly_the_served_routes(document: &Value) {
    let documented = documented_operations(document);
    let mut served = BTreeSet::new();
    for route in connhost_http::routes() {
        match route.undocumented {
            None => {
                served.insert(name(route));
            }
            Some(reason) => {
                assert!(!reason.trim().is_empty(), "{}: no reason", name(route));
                assert!(
                    !documented.contains(&name(route)),
                    "{} is documented, but the route list says it is left out: {reason}",
                    name(route)
                );
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes the router serves that the OpenAPI document lacks (document them, or mark them undocumented with a reason): {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "operations the OpenAPI document lists that the router does not serve: {unserved:?}"
    );
}

/// Whether the document lists a `status` answer for `route`.
fn documents_status(document: &Value, route: &Route, status: &str) -> bool {
    document["paths"][route.path][route.method.as_str().to_lowercase()]["responses"]
        .get(status)
        .is_some()
}

/// A request for `route` a server still loading gets, with a concrete id.
fn ask_while_starting(route: &'static Route) -> Ask {
    let path = route.path.replace("{id}", "mai");
    if route.method == "POST" && route.path.ends_with("/validate") {
        Ask::post_json(
            path,
            json!({"fields": {"api_key": "a-long-enough-api-key"}}),
        )
    } else {
        Ask::new(route.method.as_str(), path)
    }
}

/// Records every route of a server whose plugins are not loaded yet (and
/// that then starts draining): the real router, served in process on a
/// loopback socket, since a child `connhost serve` leaves that state too
/// quickly to be caught reliably. A route that documents a 503 must
/// answer it (it needs the provider set, or, for a rescan, a hot-reload
/// task this server lacks); any other must answer 200.
fn record_a_server_still_starting(recorder: &mut Recorder, document: &Value) {
    let runtime = runtime();
    let config = connhost_http::HttpConfig::default();
    let state = connhost_http::AppState::new(&config);
    let app = connhost_http::router(state.clone(), &config);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(connhost_http::serve(
        listener,
        app,
        state.clone(),
        async {
            let _ = stopped.await;
        },
        connhost_http::ServeOptions {
            grace: Duration::from_secs(5),
            max_connections: 64,
        },
    ));
    for route in connhost_http::routes().filter(|route| route.undocumented.is_none()) {
        let expected = if documents_status(document, route, "503") {
            503
        } else {
            200
        };
        recorder.send(&base, ask_while_starting(route), expected);
    }
    state.drain();
    let draining = recorder.send(&base, Ask::get("/readyz"), 503);
    assert!(draining.contains("draining"), "{draining}");
    let _ = stop.send(());
    runtime.block_on(serving).unwrap().unwrap();
}

/// One request to the running server, the status it must get, and a text
/// its body must contain or lack.
struct Check {
    ask: Ask,
    status: u16,
    needle: Option<&'static str>,
    absent: Option<&'static str>,
}

impl Check {
    fn new(ask: Ask, status: u16) -> Self {
        Self {
            ask,
            status,
            needle: None,
            absent: None,
        }
    }

    fn lacking(mut self, absent: &'static str) -> Self {
        self.absent = Some(absent);
        self
    }

    fn containing(mut self, needle: &'static str) -> Self {
        self.needle = Some(needle);
        self
    }
}

/// A validation of `key` by `provider`, with the token.
fn validate(provider: &str, key: &str) -> Ask {
    Ask::post_json(validate_path(provider), api_key_body(key)).token()
}

/// The requests for one route of the running server (token set, example
/// plugins, daytona pointed at a loopback vendor, a 1 s timeout, a 4 KiB
/// body limit, a 1 s body timeout, one validation in flight per
/// provider): every answer the route documents. A route without an arm
/// here fails the test.
fn checks_for(route: &Route) -> Vec<Check> {
    let path = "/v1/providers/daytona/validate";
    match (route.method.as_str(), route.path) {
        ("GET", "/v1/providers") => vec![
            Check::new(Ask::get("/v1/providers").token(), 200),
            Check::new(Ask::get("/v1/providers"), 401),
            Check::new(
                Ask::get("/v1/providers").header("authorization", "Bearer wrong"),
                401,
            ),
        ],
        ("GET", "/v1/providers/{id}") => vec![
            Check::new(Ask::get("/v1/providers/mai").token(), 200),
            Check::new(Ask::get("/v1/providers/nope").token(), 404),
            Check::new(Ask::get("/v1/providers/%FF").token(), 400),
            Check::new(Ask::get("/v1/providers/mai"), 401),
        ],
        ("POST", "/v1/providers/{id}/validate") => vec![
            // Every verdict the loopback vendor and the fixtures can produce.
            Check::new(validate("daytona", "good-key"), 200).containing("\"valid\":true"),
            Check::new(validate("daytona", "wrong-key"), 200)
                .containing("\"outcome\":\"rejected\""),
            Check::new(validate("daytona", "broken"), 200)
                .containing("\"outcome\":\"inconclusive\""),
            Check::new(validate("daytona", "rate-limited"), 200)
                .containing("\"outcome\":\"inconclusive\""),
            Check::new(validate("hangs-forever", "k-key"), 200)
                .containing("\"outcome\":\"timed_out\""),
            Check::new(validate("panics-in-validate", "some-key"), 200)
                .containing("\"outcome\":\"provider_fault\""),
            // Blocks its thread for 3 s: the 1 s timeout answers, and the
            // provider's one in-flight slot stays taken until the thread is
            // free.
            Check::new(validate("blocks-thread", "3000"), 200)
                .containing("\"outcome\":\"timed_out\""),
            Check::new(validate("blocks-thread", "1"), 200).containing("\"outcome\":\"busy\""),
            Check::new(
                Ask::post_json(
                    path,
                    json!({"fields": {"api_key": "good-key"}, "include_document": true}),
                )
                .token(),
                200,
            )
            .containing("\"credential_document\":\"good-key\""),
            Check::new(
                Ask::post_json(
                    "/v1/providers/mai/validate",
                    json!({"fields": {"tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}),
                )
                .token(),
                422,
            )
            .containing("invalid_fields"),
            Check::new(
                Ask::post_json(path, json!({"fields": {"api_key": 5}})).token(),
                422,
            )
            .containing("invalid_body"),
            Check::new(Ask::post_json(path, json!({"field": {}})).token(), 422),
            Check::new(
                Ask::new("POST", path)
                    .header("content-type", "application/json")
                    .body("{\"fields\": {".to_owned())
                    .token(),
                400,
            ),
            Check::new(
                Ask::new("POST", path)
                    .header("content-type", "text/plain")
                    .body("api_key=x".to_owned())
                    .token(),
                415,
            ),
            Check::new(
                Ask::post_json(path, json!({"fields": {"api_key": "x".repeat(8192)}})).token(),
                413,
            ),
            Check::new(
                Ask::post_json("/v1/providers/nope/validate", json!({"fields": {}})).token(),
                404,
            ),
            Check::new(Ask::trickled(path), 408),
            Check::new(
                Ask::post_json(path, json!({"fields": {"api_key": "good-key"}})),
                401,
            ),
        ],
        ("GET", "/v1/plugins") => vec![
            Check::new(Ask::get("/v1/plugins").token(), 200),
            Check::new(Ask::get("/v1/plugins"), 401),
        ],
        ("POST", "/v1/plugins/rescan") => vec![
            Check::new(Ask::new("POST", "/v1/plugins/rescan").token(), 200),
            Check::new(Ask::new("POST", "/v1/plugins/rescan"), 401),
        ],
        ("GET", "/healthz") => vec![Check::new(Ask::get("/healthz"), 200)],
        ("GET", "/readyz") => vec![Check::new(Ask::get("/readyz"), 200)],
        ("GET", "/metrics") => vec![
            // The classic text format unless OpenMetrics is asked for.
            Check::new(Ask::get("/metrics").token(), 200).lacking("# EOF"),
            Check::new(
                Ask::get("/metrics")
                    .header("accept", OPENMETRICS_ACCEPT)
                    .token(),
                200,
            )
            .containing("# EOF\n"),
            Check::new(Ask::get("/metrics"), 401),
        ],
        ("GET", "/openapi.json") => vec![Check::new(Ask::get("/openapi.json"), 200)],
        ("GET", "/") => vec![Check::new(Ask::get("/"), 200)],
        // The page's scripts, each at its own path.
        ("GET", script @ "/assets/app.js")
        | ("GET", script @ "/assets/api.js")
        | ("GET", script @ "/assets/dom.js")
        | ("GET", script @ "/assets/forms.js")
        | ("GET", script @ "/assets/plugins.js")
        | ("GET", script @ "/assets/providers.js") => vec![Check::new(Ask::get(script), 200)],
        ("GET", "/assets/app.css") => vec![Check::new(Ask::get("/assets/app.css"), 200)],
        ("GET", "/ui/instructions") => vec![
            Check::new(Ask::get("/ui/instructions").token(), 200),
            Check::new(Ask::get("/ui/instructions"), 401),
        ],
        _ => panic!(
            "{}: no requests for this route: add an arm to checks_for producing each answer it documents",
            name(route)
        ),
    }
}

/// Records every route of a real `connhost serve` with each status it
/// answers, then the fallbacks.
fn record_a_running_server(recorder: &mut Recorder, server: &Server) {
    let base = server.url().to_owned();
    for route in connhost_http::routes().filter(|route| route.undocumented.is_none()) {
        for check in checks_for(route) {
            let body = recorder.send(&base, check.ask, check.status);
            if let Some(needle) = check.needle {
                assert!(
                    body.contains(needle),
                    "{}: {needle} missing from {body}",
                    name(route)
                );
            }
            if let Some(absent) = check.absent {
                assert!(
                    !body.contains(absent),
                    "{}: {absent} in {body}",
                    name(route)
                );
            }
        }
    }

    // The fallbacks.
    let mut send = |ask: Ask, status: u16| recorder.send(&base, ask, status);
    send(Ask::get("/no/such/page"), 404);
    send(Ask::get("/v1/nothing/here").token(), 404);
    send(Ask::new("DELETE", "/v1/providers").token(), 405);
    send(Ask::get("/v1/providers/mai/validate").token(), 405);
    send(Ask::new("POST", "/healthz"), 405);
}

/// A validation over the rate limit, from a server that allows one
/// validation an hour per client: 429 `rate_limited` with `Retry-After`.
fn record_a_rate_limit(recorder: &mut Recorder, plugins: &std::path::Path) {
    let limited = Server::start(plugins, |c| {
        c.env("CONNHOST_TOKEN", TOKEN)
            .args(["--client-rate", "1/h", "--client-burst", "1"]);
    });
    let base = limited.url().to_owned();
    let ask = || validate("mai", "a-long-enough-api-key");
    recorder.send(&base, ask(), 200);
    let body = recorder.send(&base, ask(), 429);
    assert!(body.contains("\"rate_limited\""), "{body}");
}

#[test]
fn every_answer_of_every_route_is_described_by_the_served_document() {
    if !require(
        python_has("openapi_core"),
        "Python's openapi-core",
        &format!("pip install openapi-core=={OPENAPI_CORE}"),
    ) {
        return;
    }
    let vendor = Vendor::start();
    let dir = PluginDir::with(&[
        "daytona",
        "mai",
        "github",
        "fixture-hang",
        "fixture-panicky",
    ]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .env("CONNHOST_TOKEN", TOKEN)
            .args(["--timeout", "1", "--body-limit", "4096"])
            .args(["--body-timeout", "1", "--max-in-flight", "1"])
            // Far more validations than a client's burst: the 429s come
            // from a server of their own.
            .args(NO_RATE_LIMITS);
    });
    let document: Value = reqwest::blocking::get(server.at("/openapi.json"))
        .unwrap()
        .json()
        .unwrap();

    assert_the_document_lists_exactly_the_served_routes(&document);

    let mut recorder = Recorder::new();
    record_a_running_server(&mut recorder, &server);
    record_a_rate_limit(&mut recorder, dir.path());
    record_a_server_still_starting(&mut recorder, &document);

    let missing = uncovered(&document, &recorder.exchanges);
    assert!(
        missing.is_empty(),
        "the document lists answers this test never produced (add a request for each):\n  {}",
        missing.join("\n  ")
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        serde_json::to_vec(&json!({"document": document, "exchanges": recorder.exchanges}))
            .unwrap(),
    )
    .unwrap();
    let script = workspace_root().join("tests/openapi/validate.py");
    let output = std::process::Command::new(python())
        .arg(&script)
        .arg(file.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tests/openapi/validate.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "answers that the served OpenAPI document does not describe (openapi-core):\n{stdout}\n{stderr}"
    );
}
