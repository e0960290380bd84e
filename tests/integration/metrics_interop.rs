//! `/metrics` against the real tools: who may read it when a token is set,
//! `promtool check metrics` on a real scrape, and a real Prometheus server
//! scraping a child `connhost serve` (with the token, as the README says to
//! configure it).

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::external_tools::{require, runs};
use crate::support::server::{client, validate_path, Server};
use crate::support::vendor::Vendor;
use crate::support::*;

/// What Prometheus 2.42 sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const TOKEN: &str = "metrics-test-token";

/// `GET /metrics` with these headers: the status, content type and body.
fn scrape(server: &Server, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = client().get(server.at("/metrics"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().unwrap())
}

/// A few validations, so that the request and validation counters have
/// series.
fn exercise(server: &Server, token: Option<&str>) {
    for key in ["good-key", "wrong-key"] {
        let mut request = client()
            .post(server.at(&validate_path("daytona")))
            .json(&json!({"fields": {"api_key": key}}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().unwrap().status(), 200);
    }
}

#[test]
fn with_a_token_metrics_need_it_unless_the_operator_opens_them() {
    let dir = PluginDir::with(&["mai"]);
    let bearer = format!("Bearer {TOKEN}");

    let guarded = Server::start(dir.path(), |c| {
        c.env("CONNHOST_TOKEN", TOKEN);
    });
    let (status, content_type, body) = scrape(&guarded, &[]);
    assert_eq!(status, 401, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(body.contains("\"unauthorized\""), "{body}");
    let (status, ..) = scrape(&guarded, &[("authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    let (status, _, body) = scrape(&guarded, &[("authorization", &bearer)]);
    assert_eq!(status, 200);
    assert!(body.contains("connhost_plugins_loaded 1"), "{body}");
    drop(guarded);

    for open in [
        Server::start(dir.path(), |c| {
            c.env("CONNHOST_TOKEN", TOKEN).arg("--metrics-open");
        }),
        Server::start(dir.path(), |c| {
            c.env("CONNHOST_TOKEN", TOKEN)
                .env("CONNHOST_METRICS_OPEN", "true");
        }),
    ] {
        let (status, _, body) = scrape(&open, &[]);
        assert_eq!(status, 200, "{body}");
        // Opening the metrics opens nothing else.
        let api = client().get(open.at("/v1/providers")).send().unwrap();
        assert_eq!(api.status(), 401);
    }

    // Without a token nothing changes: everything is open.
    let tokenless = Server::start(dir.path(), |_| {});
    assert_eq!(scrape(&tokenless, &[]).0, 200);
}

#[test]
fn promtool_accepts_a_real_scrape() {
    if !require(runs("promtool"), "promtool", "apt-get install prometheus") {
        return;
    }
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona", "mai"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]));
    });
    exercise(&server, None);

    // Anyone who does not ask for OpenMetrics (curl, promtool, agents that
    // ask for text/plain) gets the classic format, labelled as such.
    for accept in [None, Some("text/plain"), Some("*/*")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (status, content_type, body) = scrape(&server, &headers);
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!body.contains("# EOF"), "{body}");
        assert!(
            body.contains("# HELP connhost_http_requests_total ")
                && body.contains("# TYPE connhost_http_requests_total counter\n"),
            "{body}"
        );
        let (code, output) = promtool_check_metrics(&body);
        assert!(
            code == Some(0) && output.trim().is_empty(),
            "promtool check metrics (exit {code:?}) on a scrape with Accept {accept:?}:\n{output}\n--- the scrape:\n{body}"
        );
    }

    // Prometheus asks for OpenMetrics first, and gets it, labelled as such.
    let (status, content_type, body) = scrape(&server, &[("accept", PROMETHEUS_ACCEPT)]);
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE connhost_http_requests counter\n")
            && body.contains("connhost_http_requests_total{"),
        "{body}"
    );
}

/// Runs `promtool check metrics` on `text`: its exit code and everything it
/// printed.
fn promtool_check_metrics(text: &str) -> (Option<i32>, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A Prometheus server on a loopback port, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) every second with
    /// the bearer token in `token_file`: the README's scrape config.
    fn start(target: &str, token_file: &std::path::Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("connhost-prometheus-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: connhost\n    \
                 authorization:\n      credentials_file: {}\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .unwrap();
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run prometheus");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// What Prometheus logged.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET` of an API path's `data`, or `None` while Prometheus is not up
    /// or answers an error.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = client()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .ok()?;
        let body: Value = response.json().ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// Polls `probe` until it returns something, for at most 60 s; panics
    /// with `what` and Prometheus's log otherwise, or as soon as Prometheus
    /// exits.
    fn wait_for<T>(&mut self, what: &str, mut probe: impl FnMut(&Self) -> Option<T>) -> T {
        let mut found = None;
        let limit = Duration::from_secs(60);
        let arrived = poll_until(limit, || {
            found = probe(self);
            if found.is_none() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("prometheus exited ({status}):\n{}", self.log());
                }
            }
            found.is_some()
        });
        assert!(
            arrived,
            "timed out after {limit:?} waiting for {what}; prometheus logged:\n{}",
            self.log()
        );
        found.unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_series_and_their_metadata_with_the_token() {
    if !require(
        runs("prometheus"),
        "the Prometheus server",
        "apt-get install prometheus",
    ) {
        return;
    }
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona", "mai"]);
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.path();
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
            .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]))
            .arg("--token-file")
            .arg(token_file);
    });
    exercise(&server, Some(TOKEN));
    let target = server.address().to_owned();
    let mut prometheus = Prometheus::start(&target, token_file);

    // The target is up: scraped with the token, parsed without error.
    prometheus.wait_for("the connhost target to be up", |p| {
        let targets = p.api("/api/v1/targets", &[])?;
        let target = targets["activeTargets"].as_array()?.first()?.clone();
        match target["health"].as_str()? {
            "up" => Some(()),
            "down" => panic!(
                "prometheus cannot scrape connhost: {}\n{}",
                target["lastError"],
                p.log()
            ),
            _ => None,
        }
    });

    // The series, under the sample's name.
    let series = prometheus.wait_for("connhost_http_requests_total", |p| {
        let data = p.api(
            "/api/v1/query",
            &[(
                "query",
                "connhost_http_requests_total{route=\"/v1/providers/{id}/validate\"}",
            )],
        )?;
        let result = data["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    });
    assert_eq!(series[0]["value"][1], "2", "{series:?}");
    assert_eq!(series[0]["metric"]["job"], "connhost");

    // The metadata: Prometheus asked for OpenMetrics and got it, so it
    // files a counter's HELP and TYPE under the OpenMetrics family name
    // (`connhost_http_requests`, whose sample is `..._total`), gauges and
    // histograms under their own.
    let metadata = prometheus.wait_for("the metadata", |p| {
        let data = p.api("/api/v1/metadata", &[])?;
        data.get("connhost_http_requests").is_some().then_some(data)
    });
    for (family, kind, help) in [
        (
            "connhost_http_requests",
            "counter",
            "HTTP requests by route, method and status.",
        ),
        (
            "connhost_validations",
            "counter",
            "Validations by provider and outcome.",
        ),
        (
            "connhost_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route.",
        ),
        ("connhost_plugins_loaded", "gauge", "Plugin files loaded."),
    ] {
        let entry = &metadata[family][0];
        assert_eq!(entry["type"], kind, "{family}: {metadata}");
        assert_eq!(entry["help"], help, "{family}: {metadata}");
    }
    // Every family it knows has series: none is filed under a name that
    // matches nothing.
    for family in metadata.as_object().unwrap().keys() {
        if !family.starts_with("connhost_") {
            continue;
        }
        let selector = format!("{{__name__=~\"{family}(_total|_bucket|_count|_sum)?\"}}");
        let data = prometheus
            .api("/api/v1/query", &[("query", &selector)])
            .expect("query");
        assert!(
            !data["result"].as_array().unwrap().is_empty(),
            "Prometheus has metadata for {family} but no series of it"
        );
    }
    drop(prometheus);
}
