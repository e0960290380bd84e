// Egress grants and SSRF protection in the host's HTTP capability, through
// the real `connhost serve` with the probe-http fixture (which GETs the URL
// in its form through the capability), in process and isolated: what a
// grant opens, what it does not, the restricted addresses no wildcard or
// declaration opens (checked on the URL, on the resolved address and on
// every redirect), the refusal's words, the metrics, and what the operator
// sees in the load report.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::server::{get, get_text, Server};
use crate::support::*;

const PLUGIN: &str = "fixture-probe-http";

/// A loopback server answering every request with the same response,
/// counting the connections it accepted.
struct Fixed {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl Fixed {
    fn start(response: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        line.clear();
                    }
                    let _ = stream.write_all(response.as_bytes());
                });
            }
        });
        Self { url, accepted }
    }

    /// Answers 200 with a small body.
    fn ok() -> Self {
        Self::start(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned(),
        )
    }

    /// Answers 302 to `location`.
    fn redirect(location: &str) -> Self {
        Self::start(format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// `127.0.0.1:PORT`
    fn authority(&self) -> String {
        loopback_grant(&self.url)
    }
}

/// A configuration file for the probe: `egress` (None: no grant) and its
/// isolation.
fn config_file(egress: Option<&[String]>, isolation: &str) -> tempfile::TempPath {
    let mut text = format!("[plugin.{PLUGIN}]\nisolation = \"{isolation}\"\n");
    if let Some(hosts) = egress {
        let quoted: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        text.push_str(&format!("egress = [{}]\n", quoted.join(", ")));
    }
    let file = tempfile::Builder::new()
        .prefix("connhost-egress-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), text).unwrap();
    file.into_temp_path()
}

fn serve(dir: &PluginDir, config: &tempfile::TempPath) -> Server {
    let config = config.to_path_buf();
    Server::start(dir.path(), move |c| {
        c.env("CONNHOST_CONFIG", &config)
            .env("CONNHOST_LOG", "warn");
    })
}

/// The probe's verdict for `url`.
fn probe(server: &Server, url: &str) -> Value {
    server.validate_body("probe-http", &json!({"fields": {"url": url}}))
}

/// The refusal text of a verdict that must be a refusal.
fn refusal(verdict: &Value) -> String {
    assert_eq!(verdict["valid"], false, "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("http denied: egress refused: "), "{verdict}");
    error
}

/// `connhost_egress_refused_total{plugin, reason}` from `/metrics`.
fn refused_total(server: &Server, reason: &str) -> u64 {
    let wanted =
        format!("connhost_egress_refused_total{{plugin=\"{PLUGIN}\",reason=\"{reason}\"}} ");
    get_text(server, "/metrics")
        .lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Everything a grant of one loopback port must and must not allow, with
/// the probe running `isolation`.
fn grants_and_refusals(isolation: &str) {
    let dir = PluginDir::with(&[PLUGIN]);
    let granted = Fixed::ok();
    let other = Fixed::ok();
    let to_other_port = Fixed::redirect(&format!("{}/elsewhere?key=k3y", other.url));
    let to_metadata = Fixed::redirect("http://169.254.169.254/latest/meta-data/");
    let config = config_file(
        Some(&[
            granted.authority(),
            to_other_port.authority(),
            to_metadata.authority(),
            "*".to_owned(),
        ]),
        isolation,
    );
    let server = serve(&dir, &config);
    let plugin = get(&server, "/v1/plugins")["loaded"][0].clone();
    assert_eq!(plugin["isolation"], isolation, "{plugin}");

    // The granted port answers.
    let verdict = probe(&server, &format!("{}/ok", granted.url));
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["provider_metadata"]["status"], 200, "{verdict}");
    assert_eq!(granted.accepted(), 1);

    // Another loopback port is refused, though `*` is granted: the grants
    // that name 127.0.0.1 decide its ports. Nothing connects to it.
    let error = refusal(&probe(
        &server,
        &format!("{}/private/path?key=s3cret-query", other.url),
    ));
    assert_eq!(
        error,
        format!(
            "http denied: egress refused: plugin \"{PLUGIN}\" may not call {} (not granted; grant it in [plugin.{PLUGIN}] egress)",
            other.authority()
        )
    );
    assert!(!error.contains("private/path") && !error.contains("s3cret"));

    // The metadata address: refused before any connection (an unroutable
    // address would otherwise time out, not be denied).
    let error = refusal(&probe(
        &server,
        "http://169.254.169.254/latest/meta-data/iam?token=abc",
    ));
    assert!(
        error.contains("may not call 169.254.169.254:80: a cloud metadata address"),
        "{error}"
    );
    assert!(
        !error.contains("meta-data") && !error.contains("token"),
        "{error}"
    );

    // Another loopback address, which `*` allows but does not open.
    let error = refusal(&probe(&server, "http://127.0.0.2:9/x?key=k"));
    assert_eq!(
        error,
        format!(
            "http denied: egress refused: plugin \"{PLUGIN}\" may not call 127.0.0.2:9: a loopback address, which needs an explicit grant in [plugin.{PLUGIN}] egress"
        )
    );

    // A redirect from a granted port to a refused port or to the metadata
    // address stops there.
    let error = refusal(&probe(&server, &format!("{}/start", to_other_port.url)));
    assert!(
        error.contains(&format!("may not call {} (not granted;", other.authority())),
        "{error}"
    );
    assert!(
        !error.contains("elsewhere") && !error.contains("k3y"),
        "{error}"
    );
    let error = refusal(&probe(&server, &format!("{}/start", to_metadata.url)));
    assert!(
        error.contains("169.254.169.254:80: a cloud metadata address"),
        "{error}"
    );
    assert_eq!((to_other_port.accepted(), to_metadata.accepted()), (1, 1));

    // A name that resolves to loopback (granted by `*`, never enough).
    let port = other.authority().rsplit(':').next().unwrap().to_owned();
    let error = refusal(&probe(&server, &format!("http://localhost:{port}/x?key=k")));
    assert!(
        error.contains(&format!(
            "plugin \"{PLUGIN}\" may not call localhost: it resolves to "
        )) && error.contains("a loopback address, which needs an explicit grant"),
        "{error}"
    );
    assert_eq!(
        other.accepted(),
        0,
        "the refused port was never connected to"
    );

    // Counted by plugin and reason: the other port twice (directly and
    // redirected to), the metadata address twice, 127.0.0.2 and the name
    // once each.
    assert_eq!(refused_total(&server, "not_granted"), 2);
    assert_eq!(refused_total(&server, "private_address"), 4);
    // And logged, without the path or the query.
    server.wait_for_log("egress refused");
    let log = server.log();
    assert!(!log.contains("s3cret") && !log.contains("k3y"), "{log}");
}

#[test]
fn a_grant_opens_one_loopback_port_and_nothing_else_in_process() {
    grants_and_refusals("in-process");
}

#[test]
fn a_grant_opens_one_loopback_port_and_nothing_else_isolated() {
    grants_and_refusals("process");
}

/// Without a grant, the probe may call only what it declares
/// (`vendor.invalid`); with one, only what it is granted. Both show in the
/// load report.
#[test]
fn declarations_apply_until_the_operator_grants_and_both_are_shown() {
    let dir = PluginDir::with(&[PLUGIN]);
    let vendor = Fixed::ok();
    let config = config_file(None, "process");
    let server = serve(&dir, &config);
    let plugin = get(&server, "/v1/plugins")["loaded"][0].clone();
    assert_eq!(
        plugin["egress"],
        json!({"declared": ["vendor.invalid"], "granted": null}),
        "{plugin}"
    );
    let error = refusal(&probe(&server, &format!("{}/path?q=1", vendor.url)));
    assert_eq!(
        error,
        format!(
            "http denied: egress refused: plugin \"{PLUGIN}\" may not call {} (not granted; grant it in [plugin.{PLUGIN}] egress)",
            vendor.authority()
        )
    );
    assert_eq!(vendor.accepted(), 0);
    assert_eq!(refused_total(&server, "not_granted"), 1);
    drop(server);

    let config = config_file(Some(&[vendor.authority()]), "in-process");
    let report = run(connhost(dir.path())
        .env("CONNHOST_CONFIG", &config)
        .args(["plugins", "--json"]))
    .json();
    assert_eq!(
        report["loaded"][0]["egress"],
        json!({"declared": ["vendor.invalid"], "granted": [vendor.authority()]})
    );
    let text = run(connhost(dir.path())
        .env("CONNHOST_CONFIG", &config)
        .arg("plugins"));
    assert!(
        text.stdout.contains(&format!(
            "{PLUGIN}: egress granted {} (declares vendor.invalid)",
            vendor.authority()
        )),
        "{}",
        text.stdout
    );
}

/// A grant that names `localhost` exactly opens it (and only on its port).
#[test]
fn an_explicit_grant_of_a_name_opens_its_loopback_address() {
    let dir = PluginDir::with(&[PLUGIN]);
    let vendor = Fixed::ok();
    let port = vendor.authority().rsplit(':').next().unwrap().to_owned();
    let config = config_file(Some(&[format!("localhost:{port}")]), "in-process");
    let server = serve(&dir, &config);
    let verdict = probe(&server, &format!("http://localhost:{port}/"));
    assert_eq!(verdict["provider_metadata"]["status"], 200, "{verdict}");
    let error = refusal(&probe(&server, &format!("{}/", vendor.url)));
    assert!(error.contains("(not granted;"), "{error}");
}

/// The compiled-in providers are granted in `[plugin.builtin]`: openai,
/// pointed at a loopback vendor, reaches it only with that grant.
#[test]
fn the_builtins_reach_what_plugin_builtin_grants() {
    let vendor = crate::support::vendor::Vendor::start();
    let dir = PluginDir::empty();
    let write = |grant: &str| {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(
            file.path(),
            format!(
                "[plugin.builtin]\n{grant}\n[plugin.builtin.settings]\nopenai_base_url = \"{}\"\n",
                vendor.url()
            ),
        )
        .unwrap();
        file.into_temp_path()
    };
    let validate = |config: &tempfile::TempPath| {
        run(connhost(dir.path()).env("CONNHOST_CONFIG", config).args([
            "validate",
            "openai",
            "--field",
            "api_key=good-key",
            "--json",
        ]))
        .json()
    };
    let granted = write(&format!("egress = [\"{}\"]", loopback_grant(vendor.url())));
    let verdict = validate(&granted);
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(vendor.requests(), 1);

    let declared_only = write("");
    let verdict = validate(&declared_only);
    assert_eq!(verdict["outcome"], "inconclusive", "{verdict}");
    assert!(
        verdict["error"].as_str().unwrap().contains(&format!(
            "egress refused: plugin \"builtin\" may not call {} (not granted; grant it in [plugin.builtin] egress)",
            loopback_grant(vendor.url())
        )),
        "{verdict}"
    );
    assert_eq!(vendor.requests(), 1);
}
