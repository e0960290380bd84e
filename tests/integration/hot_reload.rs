// Hot reload in a running `connhost serve`: plugin files added, replaced and removed while clients keep validating.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::server::{
    client, get, rescan, validate_in_background, validate_path, Server, NO_RATE_LIMITS,
};
use crate::support::vendor::Vendor;
use crate::support::*;

/// The version of the plugin serving `provider`, if it is listed.
fn version_of(server: &Server, provider: &str) -> Option<String> {
    get(server, "/v1/providers")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider_id"] == provider)
        .map(|p| {
            p["origin"]["version"]
                .as_str()
                .unwrap_or("builtin")
                .to_owned()
        })
}

fn greeter_file() -> String {
    library_file_name("greeter")
}

fn serve(dir: &PluginDir, vendor: Option<&Vendor>) -> Server {
    Server::start(dir.path(), |c| {
        // Reload tests validate in loops: the rate limits are not theirs.
        c.env("CONNHOST_LOG", "info").args(NO_RATE_LIMITS);
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

#[test]
fn a_plugin_dropped_into_the_folder_is_served_without_a_restart() {
    let dir = PluginDir::with(&["mai"]);
    let server = serve(&dir, None);
    assert_eq!(version_of(&server, "greeter"), None);
    install(dir.path(), "fixture-greeter-v1", &greeter_file());
    wait_until("greeter is listed", || {
        version_of(&server, "greeter").is_some()
    });
    assert_eq!(version_of(&server, "greeter").as_deref(), Some("1.0.0"));
    assert_eq!(
        server.validate("greeter", "k-1")["provider_username"],
        "greeter 1.0.0"
    );
    let origin = &get(&server, "/v1/providers/greeter")["origin"];
    assert_eq!(
        origin["path"],
        dir.file(&greeter_file()).display().to_string(),
        "origins name the watched file, not the private copy"
    );
}

#[test]
fn a_replaced_file_is_swapped_in_while_calls_in_flight_finish_on_the_old_version() {
    let vendor = Vendor::start();
    let dir = PluginDir::empty();
    install(dir.path(), "fixture-greeter-v1", &greeter_file());
    let server = serve(&dir, Some(&vendor));
    assert_eq!(version_of(&server, "greeter").as_deref(), Some("1.0.0"));

    let in_flight = validate_in_background(&server, "greeter", "vendor:hold");
    vendor.wait_for_held(1);

    install(dir.path(), "fixture-greeter-v2", &greeter_file());
    wait_until("version 2.0.0 is listed", || {
        version_of(&server, "greeter").as_deref() == Some("2.0.0")
    });
    assert_eq!(
        server.validate("greeter", "k-2")["provider_username"],
        "greeter 2.0.0"
    );

    vendor.release();
    let old = in_flight.join().unwrap();
    assert_eq!(old["provider_username"], "greeter 1.0.0", "{old}");

    let report = get(&server, "/v1/plugins");
    assert_eq!(report["retired"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["retired"][0]["version"], "1.0.0");
    assert!(report["retired"][0]["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_file_written_in_place_by_cp_is_picked_up_too() {
    let dir = PluginDir::empty();
    install(dir.path(), "fixture-greeter-v1", &greeter_file());
    let server = serve(&dir, None);
    // cp truncates and rewrites the watched file itself.
    std::fs::copy(
        built_library("fixture-greeter-v2"),
        dir.file(&greeter_file()),
    )
    .unwrap();
    wait_until("version 2.0.0 is listed", || {
        version_of(&server, "greeter").as_deref() == Some("2.0.0")
    });
}

#[test]
fn a_removed_file_leaves_the_set_and_its_library_is_counted_as_retired() {
    let dir = PluginDir::with(&["mai"]);
    install(dir.path(), "fixture-greeter-v1", &greeter_file());
    let server = serve(&dir, None);
    assert!(version_of(&server, "greeter").is_some());
    std::fs::remove_file(dir.file(&greeter_file())).unwrap();
    wait_until("greeter is gone", || {
        version_of(&server, "greeter").is_none()
    });
    let report = get(&server, "/v1/plugins");
    assert_eq!(
        report["retired"][0]["plugin"], "fixture-greeter-v1",
        "{report}"
    );
    assert_eq!(
        server.validate("mai", "a-long-enough-api-key")["valid"],
        true
    );
    let gone = client()
        .get(server.at("/v1/providers/greeter"))
        .send()
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[test]
fn a_slow_partial_copy_is_never_loaded_half_written_and_loads_once_complete() {
    let dir = PluginDir::with(&["mai"]);
    let server = serve(&dir, None);
    let bytes = std::fs::read(built_library("daytona")).unwrap();
    let target = dir.file(&library_file_name("daytona"));
    let mut file = std::fs::File::create(&target).unwrap();
    let half = bytes.len() / 2;
    for chunk in bytes[..half].chunks(bytes.len() / 20) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        // Not a wait: a slow writer, the case under test.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Half a library: the server is alive, serves everything else, and has
    // neither loaded it nor called it broken (it may still be copying).
    assert_eq!(
        server.validate("mai", "a-long-enough-api-key")["valid"],
        true
    );
    assert_eq!(version_of(&server, "daytona"), None);
    file.write_all(&bytes[half..]).unwrap();
    drop(file);
    wait_until("daytona is listed", || {
        version_of(&server, "daytona").is_some()
    });
    let report = get(&server, "/v1/plugins");
    assert_eq!(report["failed"], json!([]), "{report}");
}

#[test]
fn a_file_that_stays_broken_is_reported_like_any_bad_file() {
    let dir = PluginDir::with(&["mai"]);
    let server = serve(&dir, None);
    let bytes = std::fs::read(built_library("daytona")).unwrap();
    std::fs::write(
        dir.file(&library_file_name("daytona")),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    wait_until("the truncated file is reported", || {
        get(&server, "/v1/plugins")["failed"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let report = get(&server, "/v1/plugins");
    assert!(
        report["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{report}"
    );
    assert_eq!(
        server.validate("mai", "a-long-enough-api-key")["valid"],
        true
    );
}

#[test]
fn a_broken_replacement_keeps_the_old_version_serving() {
    let dir = PluginDir::empty();
    install(dir.path(), "fixture-greeter-v1", &greeter_file());
    let server = serve(&dir, None);
    install(dir.path(), "fixture-abi-version", &greeter_file());
    wait_until("the incompatible build is reported", || {
        !get(&server, "/v1/plugins")["failed"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let report = get(&server, "/v1/plugins");
    let reason = report["failed"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("0.2.0"), "{reason}");
    assert!(
        reason.contains("The previous version (fixture-greeter-v1 1.0.0) keeps serving."),
        "{reason}"
    );
    assert_eq!(version_of(&server, "greeter").as_deref(), Some("1.0.0"));
    assert_eq!(
        server.validate("greeter", "k")["provider_username"],
        "greeter 1.0.0"
    );
    // A good build afterwards replaces it, and the failure is gone.
    install(dir.path(), "fixture-greeter-v2", &greeter_file());
    wait_until("version 2.0.0 is listed", || {
        version_of(&server, "greeter").as_deref() == Some("2.0.0")
    });
    assert_eq!(get(&server, "/v1/plugins")["failed"], json!([]));
}

#[test]
fn a_new_file_never_takes_over_an_id_another_file_holds() {
    let dir = PluginDir::empty();
    install(
        dir.path(),
        "fixture-greeter-v2",
        &library_file_name("zz-greeter"),
    );
    let server = serve(&dir, None);
    // Sorted by name this newcomer would come first; it still may not take
    // "greeter" from the file that holds it.
    install(
        dir.path(),
        "fixture-greeter-v1",
        &library_file_name("aa-greeter"),
    );
    wait_until("the conflict is reported", || {
        get(&server, "/v1/plugins")["failed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "conflict")
    });
    assert_eq!(version_of(&server, "greeter").as_deref(), Some("2.0.0"));
    // Once the holder leaves, the other file's provider is served.
    std::fs::remove_file(dir.file(&library_file_name("zz-greeter"))).unwrap();
    wait_until("version 1.0.0 takes over", || {
        version_of(&server, "greeter").as_deref() == Some("1.0.0")
    });
}

#[test]
fn without_watching_sighup_and_the_rescan_endpoint_pick_up_changes() {
    let dir = PluginDir::empty();
    let server = Server::start(dir.path(), |c| {
        c.arg("--no-watch");
    });
    install(dir.path(), "fixture-greeter-v1", &greeter_file());
    let report = rescan(&server);
    assert_eq!(
        report["loaded"][0]["plugin"], "fixture-greeter-v1",
        "{report}"
    );
    assert_eq!(version_of(&server, "greeter").as_deref(), Some("1.0.0"));

    install(dir.path(), "fixture-greeter-v2", &greeter_file());
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("SIGHUP rescanned", || {
        version_of(&server, "greeter").as_deref() == Some("2.0.0")
    });
}

#[test]
fn a_file_changed_since_it_was_loaded_never_lends_its_digest_to_the_loaded_version() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.arg("--no-watch");
    });
    // Written in place (the same file, new bytes after its last segment)
    // before anyone asked for the loaded version's digest, and not
    // rescanned yet: the digest is not known, rather than the new bytes'.
    let mai = dir.file(&library_file_name("mai"));
    let mut changed = std::fs::read(&mai).unwrap();
    changed.extend_from_slice(&[0x5a; 4096]);
    std::fs::write(&mai, &changed).unwrap();
    let report = get(&server, "/v1/plugins");
    assert_eq!(report["loaded"][0]["trust"]["digest"], "", "{report:#}");
    // A rescan: the same library, now standing for the new file.
    let report = rescan(&server);
    assert_eq!(
        report["loaded"][0]["trust"]["digest"],
        digest_of(&changed),
        "{report:#}"
    );
}

/// What a rescan reports after one round of
/// [`reloading_in_a_loop_never_fails_a_request_for_another_provider`]: the
/// churn file holding `greeter` and its version, the churn files whose
/// `greeter` is refused as a conflict, and the greeter builds retired (in
/// memory, used by no file).
type Round = (
    (usize, &'static str),
    &'static [usize],
    &'static [&'static str],
);

/// `libchurn_<n>.so`.
fn churn_file(n: usize) -> String {
    library_file_name(&format!("churn-{n}"))
}

/// The file name of each path in `entries` (a report list), with each
/// entry's `field` (`plugin`, `kind`), sorted.
fn listed(entries: &Value, field: &str) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = Path::new(e["path"].as_str().unwrap());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                e[field].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    listed.sort();
    listed
}

#[test]
fn reloading_in_a_loop_never_fails_a_request_for_another_provider() {
    const V1: &str = "fixture-greeter-v1";
    const V2: &str = "fixture-greeter-v2";
    // Round r writes churn file r % 3 with v1 (even r) or v2 (odd r), and
    // removes it again at once every fourth round. Files keep their place
    // in arrival order, so the first file still present that arrived holds
    // `greeter` and the others are conflicts. Each file loaded is a library
    // of its own (its own copy), retired once its file is replaced or
    // removed; the retired stay listed, in the order they were retired.
    const ROUNDS: [Round; 12] = [
        ((0, "1.0.0"), &[], &[]),
        ((0, "1.0.0"), &[1], &[]),
        ((0, "1.0.0"), &[1, 2], &[]),
        ((1, "2.0.0"), &[2], &[V1]),
        ((1, "1.0.0"), &[2], &[V1, V2]),
        ((1, "1.0.0"), &[2], &[V1, V2, V1]),
        ((1, "1.0.0"), &[0, 2], &[V1, V2, V1]),
        ((2, "2.0.0"), &[0], &[V1, V2, V1, V1]),
        ((2, "1.0.0"), &[0], &[V1, V2, V1, V1, V2]),
        ((2, "1.0.0"), &[0], &[V1, V2, V1, V1, V2, V1]),
        ((2, "1.0.0"), &[0, 1], &[V1, V2, V1, V1, V2, V1]),
        ((0, "2.0.0"), &[1], &[V1, V2, V1, V1, V2, V1, V1]),
    ];
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    let dir = PluginDir::with(&["mai"]);
    let server = serve(&dir, None);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // Valid answers to mai, from every client together.
    let answered = std::sync::Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = server.at(&validate_path("mai"));
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let client = client();
                // How many requests got which answer.
                let mut answers = std::collections::BTreeMap::<String, u32>::new();
                while !stop.load(SeqCst) {
                    let answer = match client
                        .post(&url)
                        .json(&json!({"fields": {"api_key": "a-long-enough-api-key"}}))
                        .send()
                    {
                        Ok(r) if r.status() == 200 => match r.json::<Value>() {
                            Ok(v) if v["valid"] == true => {
                                answered.fetch_add(1, SeqCst);
                                "200 valid".to_owned()
                            }
                            other => format!("200 {other:?}"),
                        },
                        other => format!("{other:?}"),
                    };
                    *answers.entry(answer).or_default() += 1;
                }
                answers
            })
        })
        .collect();
    for (round, &(holder, conflicts, retired)) in ROUNDS.iter().enumerate() {
        let name = churn_file(round % 3);
        let version = if round % 2 == 0 { V1 } else { V2 };
        let before = answered.load(SeqCst);
        install(dir.path(), version, &name);
        if round % 4 == 3 {
            std::fs::remove_file(dir.file(&name)).unwrap();
        }
        // The rescan answers once the folder has settled.
        let report = rescan(&server);
        let (holder, holder_version) = holder;
        let holder_plugin = if holder_version == "1.0.0" { V1 } else { V2 };
        assert_eq!(
            listed(&report["loaded"], "plugin"),
            [
                (churn_file(holder), holder_plugin.to_owned()),
                (library_file_name("mai"), "mai".to_owned()),
            ],
            "round {round}: {report:#}"
        );
        let conflicts: Vec<_> = conflicts
            .iter()
            .map(|&n| (churn_file(n), "conflict".to_owned()))
            .collect();
        assert_eq!(
            listed(&report["failed"], "kind"),
            conflicts,
            "round {round}: {report:#}"
        );
        let now_retired: Vec<&str> = report["retired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["plugin"].as_str().unwrap())
            .collect();
        assert_eq!(now_retired, retired, "round {round}: {report:#}");
        assert_eq!(
            version_of(&server, "greeter").as_deref(),
            Some(holder_version),
            "round {round}"
        );
        // Requests keep being answered through every round.
        wait_until(&format!("mai answers after round {round}"), || {
            answered.load(SeqCst) > before
        });
    }
    stop.store(true, SeqCst);
    let mut total = 0;
    for handle in clients {
        let answers = handle.join().unwrap();
        let valid = answers.get("200 valid").copied().unwrap_or(0);
        assert!(valid > 0, "a client got no answer: {answers:?}");
        assert_eq!(
            answers.len(),
            1,
            "every request during the reloads is a valid 200: {answers:?}"
        );
        total += valid;
    }
    assert_eq!(total, answered.load(SeqCst));
    assert!(total >= ROUNDS.len() as u32, "{total}");
    // Once every churned file is gone, every library loaded for them is
    // retired: nine (six of v1, three of v2), each in memory once.
    for round in 0..3 {
        let _ = std::fs::remove_file(dir.file(&churn_file(round)));
    }
    let report = rescan(&server);
    assert_eq!(
        listed(&report["loaded"], "plugin"),
        [(library_file_name("mai"), "mai".to_owned())],
        "{report:#}"
    );
    assert_eq!(report["failed"], json!([]), "{report:#}");
    let mut retired: Vec<&str> = report["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["plugin"].as_str().unwrap())
        .collect();
    retired.sort_unstable();
    assert_eq!(retired, [V1, V1, V1, V1, V1, V1, V2, V2, V2], "{report:#}");
}

#[test]
fn the_default_cache_goes_with_the_process_and_a_killed_one_is_swept_at_the_next_start() {
    let dir = PluginDir::with(&["mai"]);
    let tmp = tempfile::tempdir().unwrap();
    let start = || {
        Server::start(dir.path(), |c| {
            c.env("TMPDIR", tmp.path());
        })
    };

    // The folder of the process with this pid (`connhost-<pid>-<random>`).
    let folder_of = |pid: u32| {
        let folders = cache_folders_of(tmp.path(), pid);
        assert_eq!(folders.len(), 1, "one folder for {pid}: {folders:?}");
        folders[0].clone()
    };

    // A clean exit removes the folder.
    let server = start();
    let folder = folder_of(server.pid());
    assert!(folder.is_dir(), "{:?}", cache_folders(tmp.path()));
    drop(server);
    assert_eq!(cache_folders(tmp.path()), Vec::<std::path::PathBuf>::new());

    // A killed process cannot; the next one sweeps its folder, and leaves
    // the folder of a process that still runs alone.
    let killed = start();
    let stale = folder_of(killed.pid());
    killed.kill();
    assert!(stale.is_dir(), "the killed server's folder is left behind");
    let running = start();
    assert!(!stale.exists(), "the next start sweeps it");
    let second = start();
    assert!(
        folder_of(running.pid()).is_dir(),
        "a running server's folder is never swept"
    );
    drop((running, second));
    assert_eq!(cache_folders(tmp.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_named_cache_dir_is_kept_with_its_copies_and_index_at_exit_and_holds_nothing_else() {
    let dir = PluginDir::with(&["mai"]);
    let cache = tempfile::tempdir().unwrap();
    let precious = cache.path().join("precious.txt");
    std::fs::write(&precious, b"not the cache's").unwrap();
    let server = Server::start(dir.path(), |c| {
        c.arg("--cache-dir").arg(cache.path());
    });
    let copies = || cached_copies(cache.path()).len();
    assert_eq!(copies(), 1, "mai's private copy");
    drop(server);
    assert_eq!(copies(), 1, "kept for the next start");
    assert!(cache.path().join("connhost-cache-index.json").is_file());
    assert!(precious.exists(), "a file the cache did not create stays");
    let names: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "the copy, the index, precious.txt: {names:?}"
    );
}
