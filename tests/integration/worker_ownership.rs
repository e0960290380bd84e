//! The catalog owns the workers it starts: a plugin none of whose
//! providers registered (another file holds its ids) keeps no worker
//! process, and gets one again when it comes to be served. Judged from
//! outside, by counting the server's worker processes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::server::{get, rescan, Server, NO_RATE_LIMITS};
use crate::support::*;

/// The server's worker processes: its children started in worker mode
/// (each the keeper of one worker's jail).
fn workers_of(server: &Server) -> Vec<u32> {
    let pid = server.pid();
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            listed
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    children
        .into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == connhost::worker::WORKER_ARG.as_bytes())
            }) && alive(*child)
        })
        .collect()
}

/// Waits (at most 20 s) until the server runs `count` workers.
fn until_workers(server: &Server, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = workers_of(server);
        if workers.len() == count {
            return workers;
        }
        assert!(
            Instant::now() < deadline,
            "the server still runs {} workers, not {count}: {workers:?}\n{}",
            workers.len(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn loaded(report: &Value) -> Vec<&Value> {
    report["loaded"].as_array().unwrap().iter().collect()
}

#[test]
fn plugins_refused_as_conflicts_keep_no_worker_and_one_served_again_gets_its_own() {
    let dir = PluginDir::empty();
    for i in 0..10 {
        install(
            dir.path(),
            "fixture-greeter-v1",
            &library_file_name(&format!("greeter_{i}")),
        );
    }
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_ISOLATION", "process").args(NO_RATE_LIMITS);
    });

    // One file registers; nine are conflicts. One worker runs.
    let report = get(&server, "/v1/plugins");
    let served = loaded(&report);
    assert_eq!(served.len(), 1, "{report:#}");
    assert!(served[0]["path"]
        .as_str()
        .unwrap()
        .ends_with(&library_file_name("greeter_0")));
    let conflicts = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "conflict")
        .count();
    assert_eq!(conflicts, 9, "{report:#}");
    let workers = until_workers(&server, 1);
    assert_eq!(
        Some(u64::from(workers[0])),
        served[0]["worker"]["pid"].as_u64(),
        "the one worker is the served plugin's"
    );

    // The holder goes: the next file registers, and its worker starts
    // again. Still one worker, and it is the newly served plugin's.
    std::fs::remove_file(dir.file(&library_file_name("greeter_0"))).unwrap();
    let report = rescan(&server);
    let served = loaded(&report);
    assert_eq!(served.len(), 1, "{report:#}");
    assert!(served[0]["path"]
        .as_str()
        .unwrap()
        .ends_with(&library_file_name("greeter_1")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let report = get(&server, "/v1/plugins");
        let worker = &loaded(&report)[0]["worker"];
        if worker["state"] == "ready" {
            break worker["pid"].as_u64().unwrap() as u32;
        }
        assert!(
            Instant::now() < deadline,
            "its worker did not start: {report:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let workers = until_workers(&server, 1);
    assert_eq!(workers, [pid]);
}
