// A crowded, hostile or failing plugins folder: listing errors, FIFOs and other special entries, files touched or copied again, huge files, an idle server, and a starved blocking pool.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connhost::FailureKind;
use serde_json::Value;

use crate::support::procfs::{bytes_read, cpu_ticks, is_zombie_or_gone};
use crate::support::server::{
    get, get_text, provider_ids, rescan, rescan_within, Server, NO_RATE_LIMITS,
};
use crate::support::*;

/// The failures a report lists for `path`.
fn failures_for<'a>(report: &'a Value, path: &Path) -> Vec<&'a Value> {
    let path = path.display().to_string();
    report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"] == path.as_str())
        .collect()
}

/// The one failure a report lists for `path`.
fn failure_for<'a>(report: &'a Value, path: &Path) -> &'a Value {
    let found = failures_for(report, path);
    assert_eq!(
        found.len(),
        1,
        "one failure for {}: {report:#}",
        path.display()
    );
    found[0]
}

/// The plugins folder's own failure, if the report has one.
fn folder_failure(report: &Value) -> Option<&Value> {
    report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "folder_unreadable")
}

/// `mkfifo PATH`.
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Sends SIGTERM and asserts the server exits within `limit`.
fn terminates_within(server: Server, limit: Duration) {
    let pid = server.pid();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    server.wait_until(
        &format!("the server exits (within {limit:?} of SIGTERM)"),
        limit,
        || is_zombie_or_gone(pid),
    );
    assert_eq!(server.wait(), Some(0));
}

/// Runs a command, killing it if it has not finished within `limit`.
fn run_within(command: &mut Command, limit: Duration) -> Run {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if exit_within(&mut child, limit).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not finish within {limit:?}");
    }
    child.wait_with_output().unwrap().into()
}

#[test]
fn a_folder_that_cannot_be_listed_keeps_the_set_is_reported_and_is_retried_until_it_can() {
    let dir = PluginDir::with(&["mai", "daytona"]);
    // No watcher: only the retry can notice that the folder is back.
    let server = Server::start(dir.path(), |c| {
        // (reload=debug: each rescan, a retry too, logs a line.)
        c.arg("--no-watch")
            .env("CONNHOST_LOG", "info,connhost::reload=debug");
    });
    let rescans = || {
        server
            .log()
            .matches("rescanning the plugins folder")
            .count()
    };
    let served = provider_ids(&server);
    assert!(served.contains(&"mai".to_owned()) && served.contains(&"daytona".to_owned()));

    // Listing now fails with ENOTDIR (as root, permission bits would not).
    let away = dir.path().with_extension("away");
    std::fs::rename(dir.path(), &away).unwrap();
    std::fs::write(dir.path(), b"not a folder").unwrap();
    let report = rescan(&server);
    let restore = || {
        std::fs::remove_file(dir.path()).unwrap();
        std::fs::rename(&away, dir.path()).unwrap();
    };
    let failure = folder_failure(&report).cloned();
    let loaded = report["loaded"].as_array().unwrap().len();
    let after = provider_ids(&server);
    let metrics = get_text(&server, "/metrics");
    // Further retries happen meanwhile (the backoff: 100 ms, doubling);
    // they must not log again. Wait for three of them. (The log is read in
    // order: once the warning is in, so is every rescan before it.)
    server.wait_for_log("the plugins folder could not be listed");
    let failed_at = rescans();
    let retried = poll_until(Duration::from_secs(30), || rescans() >= failed_at + 3);
    restore();

    assert!(
        retried,
        "the folder was not retried three times:\n{}",
        server.log()
    );
    let failure = failure.unwrap_or_else(|| panic!("no folder failure: {report:#}"));
    assert_eq!(failure["path"], dir.path().display().to_string());
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.contains("Not a directory"), "{reason}");
    assert!(reason.contains("keep serving"), "{reason}");
    assert!(
        failure["since"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{failure}"
    );
    assert_eq!(loaded, 2, "the last good set stays: {report:#}");
    assert_eq!(after, served, "every provider is still served");
    assert!(
        metrics.contains("connhost_plugins_folder_unreadable 1"),
        "{metrics}"
    );
    assert_eq!(
        server
            .log()
            .matches("the plugins folder could not be listed")
            .count(),
        1,
        "one warning per failure, not per retry:\n{}",
        server.log()
    );

    // Nothing but the retry (no watcher, no request that rescans) brings
    // the report back to clean.
    wait_until("the retry finds the folder again", || {
        folder_failure(&get(&server, "/v1/plugins")).is_none()
    });
    let report = get(&server, "/v1/plugins");
    assert!(
        report["failed"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(report["loaded"].as_array().unwrap().len(), 2);
    assert!(report["retired"].as_array().unwrap().is_empty());
    assert_eq!(provider_ids(&server), served);
    let metrics = get_text(&server, "/metrics");
    assert!(
        metrics.contains("connhost_plugins_folder_unreadable 0"),
        "{metrics}"
    );
}

#[test]
fn a_fifo_at_start_or_renamed_in_is_reported_and_never_blocks_reload_or_shutdown() {
    let dir = PluginDir::with(&["mai"]);
    mkfifo(&dir.file("libx.so"));
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "info");
    });
    // `connhost inspect` does not block on it either.
    let run = run_within(
        connhost(dir.path())
            .args(["inspect", "--json"])
            .arg(dir.file("libx.so")),
        Duration::from_secs(30),
    );
    assert_eq!(run.json()["failure"]["kind"], "not_a_regular_file");
    let report = get(&server, "/v1/plugins");
    let failure = failure_for(&report, &dir.file("libx.so"));
    assert_eq!(failure["kind"], "not_a_regular_file", "{failure}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("named pipe (FIFO)"),
        "{failure}"
    );

    // A FIFO made elsewhere and renamed in while the server runs.
    let outside = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
    mkfifo(&outside.path().join("liby.so"));
    std::fs::rename(outside.path().join("liby.so"), dir.file("liby.so")).unwrap();
    let report = rescan_within(&server, Duration::from_secs(10));
    let failure = failure_for(&report, &dir.file("liby.so"));
    assert_eq!(failure["kind"], "not_a_regular_file", "{failure}");

    // Reload still works: a plugin dropped in afterwards loads.
    install(dir.path(), "daytona", &library_file_name("daytona"));
    wait_until("daytona is served", || {
        provider_ids(&server).contains(&"daytona".to_owned())
    });
    let report = rescan_within(&server, Duration::from_secs(10));
    assert_eq!(report["loaded"].as_array().unwrap().len(), 2, "{report:#}");
    terminates_within(server, Duration::from_secs(5));
}

#[test]
fn an_idle_server_with_a_quiet_folder_does_no_work() {
    let dir = PluginDir::with(&["mai", "daytona"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "warn,connhost::reload=debug");
    });
    let rescans = || {
        server
            .log()
            .matches("rescanning the plugins folder")
            .count()
    };
    // Let the first load's own after-effects pass (the access time of a
    // file read for the first time changes once): wait until a quarter of
    // a second goes by without a CPU tick or a rescan.
    let sample = || (cpu_ticks(server.pid()), rescans());
    let mut last = sample();
    server.wait_until(
        "the server is quiet after its first load",
        Duration::from_secs(30),
        || {
            // The span each sample covers, not a wait for an event.
            std::thread::sleep(Duration::from_millis(250));
            let now = sample();
            std::mem::replace(&mut last, now) == now
        },
    );
    let (ticks_before, rescans_before) = (cpu_ticks(server.pid()), rescans());
    let window = Duration::from_secs(3);
    // Not a wait: the window under test, in which nothing may happen.
    std::thread::sleep(window);
    let ticks = cpu_ticks(server.pid()) - ticks_before;
    let rescanned = rescans() - rescans_before;
    eprintln!(
        "idle for {window:?}: {ticks} CPU ticks ({:.2}% of one core), {rescanned} rescans ({:.1}/s)",
        ticks as f64 / window.as_secs_f64(),
        rescanned as f64 / window.as_secs_f64()
    );
    assert_eq!(rescanned, 0, "an idle server rescans:\n{}", server.log());
    assert!(
        ticks < 10,
        "an idle server used {ticks} CPU ticks in {window:?}"
    );

    // A rescan's own reads of the folder never wake it either.
    let before_own = rescans();
    rescan(&server);
    server.wait_until(
        "the asked-for rescan is logged",
        Duration::from_secs(30),
        || rescans() > before_own,
    );
    let after_own = rescans();
    // Not a wait: the window in which no rescan may follow.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        rescans(),
        after_own,
        "the rescan woke the watcher:\n{}",
        server.log()
    );
    // A real change still does.
    std::fs::copy(
        built_library("github"),
        dir.file(&library_file_name("github")),
    )
    .unwrap();
    wait_until("github is served", || {
        provider_ids(&server).contains(&"github".to_owned())
    });
}

/// Lays out every kind of entry that is named like a library but is not a
/// loadable file, plus a symbolic link to a good library and one good
/// file. Returns the entries with the kind and a piece of the reason each
/// must be reported with.
fn special_entries(dir: &PluginDir) -> Vec<(PathBuf, &'static str, &'static str)> {
    let mut expected = Vec::new();
    let folder = dir.file("folder.so");
    std::fs::create_dir(&folder).unwrap();
    expected.push((folder, "not_a_regular_file", "a directory"));
    let dangling = dir.file("dangling.so");
    std::os::unix::fs::symlink(dir.file("nowhere.so.gone"), &dangling).unwrap();
    expected.push((dangling, "broken_link", "does not exist"));
    let looping = dir.file("looping.so");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    expected.push((looping, "broken_link", "loops"));
    let fifo = dir.file("fifo.so");
    mkfifo(&fifo);
    expected.push((fifo, "not_a_regular_file", "named pipe (FIFO)"));
    // Root reads any file whatever its permission bits, so the case of an
    // unreadable file only exists for other users.
    if !running_as_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let unreadable = dir.add_file(
            "unreadable.so",
            &std::fs::read(built_library("github")).unwrap(),
        );
        std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
        expected.push((unreadable, "unreadable", "may not read"));
    }
    std::os::unix::fs::symlink(
        built_library("daytona"),
        dir.file(&library_file_name("daytona")),
    )
    .unwrap();
    dir.add_library("mai");
    expected
}

fn assert_special_entries_reported(report: &Value, expected: &[(PathBuf, &str, &str)]) {
    for (path, kind, reason) in expected {
        let failure = failure_for(report, path);
        assert_eq!(failure["kind"], *kind, "{}: {failure}", path.display());
        assert!(
            failure["reason"].as_str().unwrap().contains(reason),
            "{}: {failure}",
            path.display()
        );
    }
}

#[test]
fn special_entries_named_like_libraries_are_each_reported_and_a_symlink_to_a_library_loads() {
    // At start, through the library (what `connhost plugins` uses).
    let dir = PluginDir::empty();
    let expected = special_entries(&dir);
    let host = host_with(&dir, |_| {});
    let report = serde_json::to_value(host.load_report()).unwrap();
    assert_special_entries_reported(&report, &expected);
    assert!(host.registry().has("daytona"), "through the symbolic link");
    assert!(host.registry().has("mai"));
    assert_eq!(
        host.load_report().failed.len(),
        expected.len(),
        "{report:#}"
    );
    assert!(host
        .load_report()
        .failed
        .iter()
        .any(|f| f.kind == FailureKind::NotARegularFile));

    // The CLI, which must not block on the FIFO either.
    let run = run_within(
        connhost(dir.path()).args(["plugins", "--json"]),
        Duration::from_secs(30),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_special_entries_reported(&run.json(), &expected);

    // In hot reload, the same entries appearing while the server runs.
    let dir = PluginDir::empty();
    let server = Server::start(dir.path(), |_| {});
    let expected = special_entries(&dir);
    wait_until("mai and daytona are served", || {
        let ids = provider_ids(&server);
        ids.contains(&"mai".to_owned()) && ids.contains(&"daytona".to_owned())
    });
    let report = rescan(&server);
    assert_special_entries_reported(&report, &expected);
    assert_eq!(report["loaded"].as_array().unwrap().len(), 2, "{report:#}");
}

#[test]
fn touching_or_copying_the_same_bytes_again_changes_nothing() {
    let dir = PluginDir::with(&["mai", "daytona"]);
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "info")
            .arg("--cache-dir")
            .arg(cache.path());
    });
    let report = get(&server, "/v1/plugins");
    let providers = get(&server, "/v1/providers");
    let copies = || cached_copies(cache.path()).len();
    assert_eq!(copies(), 2);
    let mai = dir.file(&library_file_name("mai"));

    // touch: new times, same bytes.
    let file = std::fs::File::options().write(true).open(&mai).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    drop(file);
    assert_eq!(rescan(&server), report);
    // The same bytes written in place.
    std::fs::copy(built_library("mai"), &mai).unwrap();
    assert_eq!(rescan(&server), report);
    // The same bytes as a new file renamed over it.
    let temporary = dir.file(".mai.tmp");
    std::fs::copy(built_library("mai"), &temporary).unwrap();
    std::fs::rename(&temporary, &mai).unwrap();
    assert_eq!(rescan(&server), report);
    assert_eq!(get(&server, "/v1/providers"), providers);
    assert_eq!(copies(), 2, "no new copy in the cache");

    // Removed, then recreated with a rescan in between: a new file, loaded
    // anew (a new file is copied by the kernel, never read or hashed by
    // the host); the old library is reported retired, still in memory.
    std::fs::remove_file(&mai).unwrap();
    let without = rescan(&server);
    assert!(
        without["loaded"].as_array().unwrap().len() == 1,
        "{without:#}"
    );
    std::fs::copy(built_library("mai"), &mai).unwrap();
    let back = rescan(&server);
    assert_eq!(back["retired"].as_array().unwrap().len(), 1, "{back:#}");
    assert_eq!(back["loaded"].as_array().unwrap().len(), 2, "{back:#}");
    assert_eq!(get(&server, "/v1/providers"), providers);
    assert_eq!(copies(), 2, "the old copy's name is gone from the cache");
    assert_eq!(
        server.log().matches("plugin replaced").count(),
        0,
        "{}",
        server.log()
    );
}

#[test]
fn a_build_that_changed_only_what_the_loader_never_reads_stays_loaded_with_the_new_digest() {
    let dir = PluginDir::with(&["mai"]);
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "info");
    });
    let mai = dir.file(&library_file_name("mai"));
    let before = get(&server, "/v1/plugins");
    assert_eq!(
        before["loaded"][0]["trust"]["digest"],
        digest_of(&std::fs::read(&mai).unwrap())
    );
    let providers = get(&server, "/v1/providers");
    // The same library with more after its last segment (as a new
    // comment, symbol table or debug information would add), renamed over
    // the file.
    let mut rebuilt = std::fs::read(built_library("mai")).unwrap();
    rebuilt.extend_from_slice(&[0x5a; 4096]);
    let temporary = dir.file(".mai.tmp");
    std::fs::write(&temporary, &rebuilt).unwrap();
    std::fs::rename(&temporary, &mai).unwrap();
    let after = rescan(&server);
    assert_eq!(after["loaded"].as_array().unwrap().len(), 1, "{after:#}");
    assert_eq!(
        after["loaded"][0]["trust"]["digest"],
        digest_of(&rebuilt),
        "the new file's digest: {after:#}"
    );
    assert_eq!(after["retired"], before["retired"], "nothing retired");
    assert_eq!(get(&server, "/v1/providers"), providers);
    assert_eq!(
        server.log().matches("plugin replaced").count(),
        0,
        "{}",
        server.log()
    );
}

#[test]
fn a_huge_file_is_refused_from_its_size_and_never_read_or_copied() {
    let dir = PluginDir::with(&["mai"]);
    let cache = tempfile::tempdir().unwrap();
    let limit = 100 * 1024 * 1024;
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "info")
            .env("CONNHOST_MAX_PLUGIN_SIZE", limit.to_string())
            .arg("--cache-dir")
            .arg(cache.path());
    });
    let pid = server.pid();
    // The loaded plugin's digest, computed once by a report: reading it
    // is not what is measured.
    get(&server, "/v1/plugins");
    let read_before = bytes_read(pid);
    // 200 MB, sparse: costs no disk, but reading it would read 200 MB.
    let big = dir.file("big.so");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(200 * 1000 * 1000)
        .unwrap();
    let report = rescan(&server);
    let failure = failure_for(&report, &big);
    assert_eq!(failure["kind"], "too_large", "{failure}");
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.contains(&limit.to_string()), "{reason}");
    assert!(reason.contains("--max-plugin-size"), "{reason}");
    let read_refusing = bytes_read(pid) - read_before;
    // Later rescans do not look at it again.
    for _ in 0..3 {
        assert_eq!(rescan(&server), report);
    }
    let read_later = bytes_read(pid) - read_before - read_refusing;
    eprintln!(
        "bytes read: {read_refusing} while refusing big.so, {read_later} over 3 more rescans"
    );
    assert!(read_refusing < 1_000_000, "{read_refusing} bytes read");
    assert!(read_later < 1_000_000, "{read_later} bytes read");
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "connhost-cache-index.json")
        .collect();
    assert_eq!(cached.len(), 1, "only mai's copy: {cached:?}");
    assert_eq!(
        server.log().matches("big.so").count(),
        1,
        "reported once:\n{}",
        server.log()
    );

    // The command line takes the same limit, as a flag.
    let run = run_within(
        connhost(dir.path()).args(["--max-plugin-size", "1000", "plugins", "--json"]),
        Duration::from_secs(30),
    );
    let report = run.json();
    assert_eq!(failure_for(&report, &big)["kind"], "too_large");
    assert_eq!(
        failure_for(&report, &dir.file(&library_file_name("mai")))["kind"],
        "too_large"
    );
}

#[test]
fn hot_reload_and_rescans_work_while_blocked_providers_hold_every_blocking_thread() {
    let dir = PluginDir::with(&["fixture-hang", "mai"]);
    // No per-provider bound to speak of (that defence is tested in
    // starved.rs): validations take every blocking thread the host lets
    // them have (`HOST_MAX_IN_FLIGHT`), and rescans must not need one.
    let server = Server::start(dir.path(), |c| {
        c.args(["--timeout", "1", "--max-in-flight", "65536"])
            .args(NO_RATE_LIMITS);
    });
    let address = server.address().to_owned();
    // More validations than tokio's blocking pool has threads (512), each
    // blocking its thread for 25 s; each times out for its client after 1 s.
    let body = r#"{"fields": {"api_key": "25000"}}"#;
    let request = format!(
        "POST /v1/providers/blocks-thread/validate HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let clients: Vec<TcpStream> = (0..530)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Wait until the first ones answered `timed_out`: their threads are
    // still blocked.
    let mut answer = [0u8; 512];
    let mut first = &clients[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let n = first.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).contains("timed_out"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let started = Instant::now();
    let report = rescan_within(&server, Duration::from_secs(10));
    let loaded: Vec<&str> = report["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["fixture-hang", "mai"], "{report:#}");
    dir.add_library("daytona");
    let report = rescan_within(&server, Duration::from_secs(10));
    assert!(
        report["loaded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["plugin"] == "daytona"),
        "{report:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the rescans waited for the blocked threads"
    );
    drop(clients);
}

#[test]
fn a_cache_that_cannot_be_written_is_reported_retried_with_backoff_and_recovers() {
    let dir = PluginDir::with(&["mai"]);
    let scratch = tempfile::tempdir().unwrap();
    // A regular file where the cache folder should be: no copy can be made.
    let cache = scratch.path().join("cache");
    std::fs::write(&cache, b"not a folder").unwrap();
    let server = Server::start(dir.path(), |c| {
        c.env("CONNHOST_LOG", "warn,connhost::reload=debug")
            .arg("--cache-dir")
            .arg(&cache);
    });
    let mai = dir.file(&library_file_name("mai"));
    let report = get(&server, "/v1/plugins");
    let failure = failure_for(&report, &mai);
    assert_eq!(failure["kind"], "cache_failed", "{report}");
    let reason = failure["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not copy the file into the plugin cache")
            && reason.contains(&cache.display().to_string())
            && reason.contains("tried again"),
        "{reason}"
    );
    // Retried with a backoff, not at every settle tick (40 ms).
    let rescans = || {
        server
            .log()
            .matches("rescanning the plugins folder")
            .count()
    };
    let before = rescans();
    // Not a wait: the window over which the retries are counted.
    std::thread::sleep(Duration::from_secs(2));
    let retried = rescans() - before;
    assert!(retried < 15, "{retried} rescans in 2 s:\n{}", server.log());
    assert_eq!(
        server.log().matches("could not copy the file").count(),
        1,
        "reported once:\n{}",
        server.log()
    );

    // Once the cache can be written, a retry loads it: no event, no request.
    std::fs::remove_file(&cache).unwrap();
    std::fs::create_dir(&cache).unwrap();
    server.wait_until("a retry loads mai", Duration::from_secs(30), || {
        provider_ids(&server).contains(&"mai".to_owned())
    });
    assert!(failures_for(&get(&server, "/v1/plugins"), &mai).is_empty());
}
