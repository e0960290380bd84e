// Hot reload in a running `connhost serve`: plugin files added, replaced and removed while clients keep validating.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::server::{client, get, rescan, Server};
use crate::support::vendor::Vendor;
use crate::support::*;

fn validate(server: &Server, provider: &str, key: &str) -> Value {
    client()
        .post(server.at(&format!("/v1/providers/{provider}/validate")))
        .json(&json!({"fields": {"api_key": key}}))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

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

/// Writes a built library into `dir` as `name` the way a careful installer
/// does: a temporary file, then a rename over the target.
fn install(dir: &Path, crate_name: &str, name: &str) {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::copy(built_library(crate_name), &temporary).unwrap();
    std::fs::rename(&temporary, dir.join(name)).unwrap();
}

fn greeter_file() -> String {
    library_file_name("greeter")
}

fn serve(dir: &PluginDir, vendor: Option<&Vendor>) -> Server {
    Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "info");
        if let Some(vendor) = vendor {
            c.env("CONNHOST_PLUGIN_FIXTURE_GREETER_V1_API_URL", vendor.url());
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
        validate(&server, "greeter", "k-1")["provider_username"],
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

    let url = server.at("/v1/providers/greeter/validate");
    let in_flight = std::thread::spawn(move || {
        client()
            .post(url)
            .json(&json!({"fields": {"api_key": "vendor:hold"}}))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    vendor.wait_for_held(1);

    install(dir.path(), "fixture-greeter-v2", &greeter_file());
    wait_until("version 2.0.0 is listed", || {
        version_of(&server, "greeter").as_deref() == Some("2.0.0")
    });
    assert_eq!(
        validate(&server, "greeter", "k-2")["provider_username"],
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
        validate(&server, "mai", "a-long-enough-api-key")["valid"],
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
        std::thread::sleep(Duration::from_millis(20)); // a slow writer
    }
    // Half a library: the server is alive, serves everything else, and has
    // neither loaded it nor called it broken (it may still be copying).
    assert_eq!(
        validate(&server, "mai", "a-long-enough-api-key")["valid"],
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
        validate(&server, "mai", "a-long-enough-api-key")["valid"],
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
        validate(&server, "greeter", "k")["provider_username"],
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
fn reloading_in_a_loop_never_fails_a_request_for_another_provider() {
    let dir = PluginDir::with(&["mai"]);
    let server = serve(&dir, None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = server.at("/v1/providers/mai/validate");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = client();
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match client
                        .post(&url)
                        .json(&json!({"fields": {"api_key": "a-long-enough-api-key"}}))
                        .send()
                    {
                        Ok(r) if r.status() == 200 => match r.json::<Value>() {
                            Ok(v) if v["valid"] == true => ok += 1,
                            other => failed.push(format!("{other:?}")),
                        },
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for round in 0..12 {
        let name = library_file_name(&format!("churn-{}", round % 3));
        let version = if round % 2 == 0 {
            "fixture-greeter-v1"
        } else {
            "fixture-greeter-v2"
        };
        install(dir.path(), version, &name);
        if round % 4 == 3 {
            std::fs::remove_file(dir.file(&name)).unwrap();
        }
        // Let the reload happen while the clients run.
        let rescanned = rescan(&server);
        assert!(rescanned["loaded"].is_array());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for handle in clients {
        let (ok, failed) = handle.join().unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 0);
    // Once every churned file is gone, both versions are retired, each
    // counted once however often it was loaded (it is in memory once).
    for round in 0..3 {
        let _ = std::fs::remove_file(dir.file(&library_file_name(&format!("churn-{round}"))));
    }
    let report = rescan(&server);
    let mut retired: Vec<&str> = report["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["plugin"].as_str().unwrap())
        .collect();
    retired.sort_unstable();
    assert_eq!(
        retired,
        ["fixture-greeter-v1", "fixture-greeter-v2"],
        "{report:#}"
    );
}

/// The cache folders (`connhost-<pid>-<n>`) in `tmp`.
fn cache_folders(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("connhost-"))
        })
        .collect()
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

    // A clean exit removes the folder.
    let server = start();
    let folder = tmp.path().join(format!("connhost-{}-0", server.pid()));
    assert!(folder.is_dir(), "{:?}", cache_folders(tmp.path()));
    drop(server);
    assert_eq!(cache_folders(tmp.path()), Vec::<std::path::PathBuf>::new());

    // A killed process cannot; the next one sweeps its folder, and leaves
    // the folder of a process that still runs alone.
    let killed = start();
    let stale = tmp.path().join(format!("connhost-{}-0", killed.pid()));
    killed.kill();
    assert!(stale.is_dir(), "the killed server's folder is left behind");
    let running = start();
    assert!(!stale.exists(), "the next start sweeps it");
    let second = start();
    assert!(
        tmp.path()
            .join(format!("connhost-{}-0", running.pid()))
            .is_dir(),
        "a running server's folder is never swept"
    );
    drop((running, second));
    assert_eq!(cache_folders(tmp.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_named_cache_dir_loses_only_the_copies_at_exit() {
    let dir = PluginDir::with(&["mai"]);
    let cache = tempfile::tempdir().unwrap();
    let precious = cache.path().join("precious.txt");
    std::fs::write(&precious, b"not the cache's").unwrap();
    let server = Server::start(dir.path(), |c| {
        c.arg("--cache-dir").arg(cache.path());
    });
    let copies = || {
        std::fs::read_dir(cache.path())
            .unwrap()
            .filter(|e| {
                e.as_ref().unwrap().path().extension()
                    == Some(std::env::consts::DLL_EXTENSION.as_ref())
            })
            .count()
    };
    assert_eq!(copies(), 1, "mai's private copy");
    drop(server);
    assert_eq!(copies(), 0);
    assert!(precious.exists(), "a file the cache did not create stays");
}
