// Isolated plugins in `connhost serve`: hot reload under load, the
// operator's view, and worker processes that never outlive their host.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::server::{
    api_key_body, client, get, post_for_json, validate_in_background, validate_path, Server,
    NO_RATE_LIMITS,
};
use crate::support::vendor::Vendor;
use crate::support::*;

fn serve_isolated(dir: &Path, vendor: Option<&Vendor>) -> Server {
    Server::start(dir, |c| {
        c.env("CONNHOST_LOG", "info")
            .env("CONNHOST_ISOLATION", "process")
            .args(NO_RATE_LIMITS);
        if let Some(vendor) = vendor {
            c.env("CONNHOST_PLUGIN_FIXTURE_GREETER_V1_API_URL", vendor.url())
                .env(
                    "CONNHOST_CONFIG",
                    vendor.grants_file(&["fixture-greeter-v1", "fixture-greeter-v2"]),
                );
            c.env("CONNHOST_PLUGIN_FIXTURE_GREETER_V2_API_URL", vendor.url());
        }
    })
}

/// Installs `crate_name` as the greeter's file.
fn install_greeter(dir: &Path, crate_name: &str) {
    install(dir, crate_name, &library_file_name("greeter"));
}

/// The plugin serving `provider` in `/v1/plugins`.
fn plugin_of(server: &Server, provider: &str) -> Option<Value> {
    get(server, "/v1/plugins")["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["providers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|id| id == provider)
        })
        .cloned()
}

fn worker_pid(server: &Server, provider: &str) -> Option<u32> {
    plugin_of(server, provider)?["worker"]["pid"]
        .as_u64()
        .map(|pid| pid as u32)
}

#[test]
fn a_replaced_isolated_plugin_gets_a_new_worker_under_load_and_the_old_one_stops() {
    let vendor = Vendor::start();
    let dir = PluginDir::empty();
    install_greeter(dir.path(), "fixture-greeter-v1");
    let server = serve_isolated(dir.path(), Some(&vendor));
    let plugin = plugin_of(&server, "greeter").expect("greeter is served");
    assert_eq!(plugin["isolation"], "process");
    assert_eq!(plugin["worker"]["state"], "ready");
    let old = worker_pid(&server, "greeter").expect("a worker pid");

    // Load: a client validating all along; a call held in flight.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (server.at(&validate_path("greeter")), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                answers.push(post_for_json(&url, &api_key_body("k")));
            }
            answers
        })
    };
    let held = validate_in_background(&server, "greeter", "vendor:hold");
    vendor.wait_for_held(1);

    install_greeter(dir.path(), "fixture-greeter-v2");
    wait_until("version 2.0.0 is served", || {
        plugin_of(&server, "greeter").is_some_and(|p| p["version"] == "2.0.0")
    });
    let new = worker_pid(&server, "greeter").expect("the new worker's pid");
    assert_ne!(new, old, "a new worker for the new file");
    assert_eq!(
        server.validate("greeter", "k")["provider_username"],
        "greeter 2.0.0"
    );
    assert!(alive(old), "the old worker finishes its call in flight");

    vendor.release();
    let answer = held.join().unwrap();
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["provider_username"], "greeter 1.0.0");
    wait_until("the old worker is gone", || !alive(old));
    assert!(alive(new));

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = load.join().unwrap();
    assert!(!answers.is_empty());
    for answer in &answers {
        assert_eq!(answer["valid"], true, "{answer}");
    }
    // Nothing stays in memory for a replaced isolated plugin.
    assert_eq!(get(&server, "/v1/plugins")["retired"], json!([]));
}

#[test]
fn no_worker_outlives_its_host_killed_or_stopped() {
    let dir = PluginDir::with(&["fixture-greeter-v1"]);
    for graceful in [true, false] {
        let server = serve_isolated(dir.path(), None);
        let worker = worker_pid(&server, "greeter").expect("a worker pid");
        assert!(alive(worker));
        // The worker the host started, and everything in its jail (its
        // PID namespace's init and the runner).
        let tree = process_tree(worker);
        assert!(tree.len() >= 3, "{tree:?}");
        if graceful {
            // SIGTERM, as an operator stops it.
            drop(server);
        } else {
            let host = server.pid();
            std::process::Command::new("kill")
                .args(["-9", &host.to_string()])
                .status()
                .unwrap();
            server.kill();
        }
        wait_until("the worker and its jail are gone with their host", || {
            tree.iter().all(|&pid| !alive(pid))
        });
    }
}

#[test]
fn metrics_count_worker_crashes_and_restarts_by_plugin() {
    let dir = PluginDir::with(&["fixture-greeter-v1"]);
    let server = serve_isolated(dir.path(), None);
    let worker = worker_pid(&server, "greeter").expect("a worker pid");
    std::process::Command::new("kill")
        .args(["-9", &worker.to_string()])
        .status()
        .unwrap();
    wait_until("the worker is restarted", || {
        plugin_of(&server, "greeter").is_some_and(|p| p["worker"]["restarts"] == 1)
    });
    let plugin = plugin_of(&server, "greeter").unwrap();
    assert_eq!(plugin["worker"]["state"], "ready");
    assert!(
        plugin["worker"]["last_crash"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{plugin}"
    );
    let metrics = client()
        .get(server.at("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"connhost_worker_crashes_total{plugin="fixture-greeter-v1"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"connhost_worker_restarts_total{plugin="fixture-greeter-v1"} 1"#),
        "{metrics}"
    );
    assert_eq!(server.validate("greeter", "k")["valid"], true);
}
