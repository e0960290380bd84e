//! `connhost serve --sync REF`: two replicas keep their plugins folders in
//! step with a tag in a real registry (Debian's `docker-registry`,
//! `support::registry`). Both serve what the tag names and report the
//! same digest in `/v1/plugins`; a moved tag reaches both; a registry that
//! goes down leaves both serving their last set and saying why in
//! `/v1/plugins` and `/metrics`; a reference no longer listed at the next
//! start has its file removed; a poll that finds nothing changed is one
//! manifest request.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::registry::{docker_config, Registry};
use crate::support::server::{get, get_text, Server};
use crate::support::{
    built_library, connhost, library_file_name, run, wait_until_within, PluginDir,
};
use crate::trust::{keys_dir, Key};

/// The poll interval the replicas run with.
pub(crate) const INTERVAL: &str = "1s";
/// How long a change may take to reach a replica: twice the interval, and
/// a pull (a load in a worker) and a hot reload on a busy machine.
pub(crate) const CONVERGE_WITHIN: Duration = Duration::from_secs(15);
/// How long the first pull at start may take.
pub(crate) const FIRST_WITHIN: Duration = Duration::from_secs(30);

/// The greeter fixture `crate_name` built, as a vendor names its release
/// (`libgreeter.so`), in a folder of its own under `dir`.
pub(crate) fn vendor_file(dir: &Path, crate_name: &str) -> PathBuf {
    let folder = dir.join(crate_name);
    std::fs::create_dir_all(&folder).expect("vendor folder");
    let file = folder.join(library_file_name("greeter"));
    std::fs::copy(built_library(crate_name), &file).expect("copy library");
    file
}

/// `connhost push FILE REF --json`, which must work: the index's digest.
pub(crate) fn push(docker: &Path, file: &Path, reference: &str) -> String {
    let mut command = connhost(file.parent().expect("a folder"));
    command
        .env("DOCKER_CONFIG", docker)
        .env_remove("CONNHOST_INSECURE_REGISTRIES")
        .arg("push")
        .arg(file)
        .arg(reference)
        .arg("--json");
    let out = run(&mut command);
    assert_eq!(out.code, 0, "push failed:\n{}", out.stderr);
    out.json()["digest"].as_str().expect("a digest").to_owned()
}

/// `connhost serve --sync REF... --sync-interval 1s ARGS...` over
/// `plugins`.
pub(crate) fn replica(
    plugins: &Path,
    docker: &Path,
    references: &[&str],
    args: &[&OsStr],
) -> Server {
    Server::start(plugins, |c| {
        c.env("DOCKER_CONFIG", docker)
            .env("CONNHOST_LOG", "info")
            .env_remove("CONNHOST_INSECURE_REGISTRIES")
            .env_remove("CONNHOST_SYNC")
            .args(["--sync-interval", INTERVAL])
            .args(args);
        for reference in references {
            c.args(["--sync", reference]);
        }
    })
}

/// The loaded plugin serving `greeter` in `/v1/plugins`, if any.
fn greeter(report: &Value) -> Option<Value> {
    report["loaded"]
        .as_array()?
        .iter()
        .find(|p| {
            p["providers"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id == "greeter"))
        })
        .cloned()
}

/// Whether `server` serves greeter `version` synced from `reference` at
/// `digest`.
pub(crate) fn serves(server: &Server, version: &str, reference: &str, digest: &str) -> bool {
    let report = get(server, "/v1/plugins");
    greeter(&report).is_some_and(|p| {
        p["version"] == version
            && p["source"]["reference"] == reference
            && p["source"]["digest"] == digest
    })
}

/// `/v1/plugins`' status of `reference`.
pub(crate) fn status(server: &Server, reference: &str) -> Value {
    get(server, "/v1/plugins")["sync"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["reference"] == reference).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn two_replicas_follow_a_moved_tag_and_keep_serving_when_the_registry_is_down() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    let reference = registry.reference("plugins/greeter:stable");
    let v1 = push(
        docker.path(),
        &vendor_file(vendor.path(), "fixture-greeter-v1"),
        &reference,
    );

    let folders = [PluginDir::empty(), PluginDir::empty()];
    // The second replica does not watch its folder: the sync asks it to
    // rescan.
    let replicas = [
        replica(folders[0].path(), docker.path(), &[&reference], &[]),
        replica(
            folders[1].path(),
            docker.path(),
            &[&reference],
            &[OsStr::new("--no-watch")],
        ),
    ];
    for server in &replicas {
        wait_until_within(
            "both replicas serve greeter 1.0.0 from the tag",
            FIRST_WITHIN,
            || serves(server, "1.0.0", &reference, &v1),
        );
        // The sync's record and staging folders are nothing the catalog
        // reports on.
        let report = get(server, "/v1/plugins");
        assert_eq!(report["failed"], serde_json::json!([]), "{report}");
        let status = status(server, &reference);
        assert_eq!(status["digest"], v1.as_str(), "{status}");
        assert_eq!(status["file"], library_file_name("greeter"), "{status}");
        assert!(status["last_success"].is_string(), "{status}");
        assert!(status.get("last_error").is_none(), "{status}");
        let metrics = get_text(server, "/metrics");
        assert!(
            metrics.contains(&format!(
                "connhost_sync_last_success_timestamp_seconds{{reference=\"{reference}\"}}"
            )),
            "{metrics}"
        );
    }

    // The vendor moves the tag: both replicas follow.
    let v2 = push(
        docker.path(),
        &vendor_file(vendor.path(), "fixture-greeter-v2"),
        &reference,
    );
    assert_ne!(v1, v2);
    let moved = std::time::Instant::now();
    for server in &replicas {
        wait_until_within(
            "both replicas serve greeter 2.0.0 from the moved tag",
            CONVERGE_WITHIN,
            || serves(server, "2.0.0", &reference, &v2),
        );
    }
    // For the record (not asserted): how long the fleet took.
    eprintln!(
        "sync: both replicas served the moved tag {:?} after the push",
        moved.elapsed()
    );

    // The registry goes down: both keep serving 2.0.0, and say why.
    drop(registry);
    for server in &replicas {
        wait_until_within(
            "both replicas report the registry's error",
            CONVERGE_WITHIN,
            || status(server, &reference)["last_error"].is_string(),
        );
        assert!(serves(server, "2.0.0", &reference, &v2));
        let status = status(server, &reference);
        assert!(
            status["last_error"].as_str().unwrap().contains(&reference),
            "{status}"
        );
        assert!(status["errors"].as_u64().unwrap() >= 1, "{status}");
        let metrics = get_text(server, "/metrics");
        let errors = format!("connhost_sync_errors_total{{reference=\"{reference}\"}} ");
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(errors.as_str()))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert!(count.is_some_and(|n| n >= 1), "{metrics}");
    }

    // A replica restarted without the reference removes the file it wrote,
    // and so the plugin.
    let mut replicas = replicas.into_iter();
    let first = replicas.next().expect("a replica");
    first.kill();
    // A pull the kill interrupted left its staging folder: the next start
    // removes it (no process has that id: ids are below 2^22).
    let stale = folders[0].path().join(".connhost-pull-4294967295-00000000");
    std::fs::create_dir(&stale).expect("a stale staging folder");
    let restarted = replica(folders[0].path(), docker.path(), &[], &[]);
    wait_until_within(
        "the unlisted reference's file is removed",
        CONVERGE_WITHIN,
        || {
            !folders[0].file(&library_file_name("greeter")).exists()
                && greeter(&get(&restarted, "/v1/plugins")).is_none()
        },
    );
    assert!(!stale.exists(), "the stale staging folder is removed");
    assert!(!folders[0].path().join(".connhost-sync.json").exists());
    // The other replica, which still lists it, keeps it.
    let second = replicas.next().expect("a replica");
    assert!(folders[1].file(&library_file_name("greeter")).exists());
    assert!(serves(&second, "2.0.0", &reference, &v2));
    // `connhost plugins --json` reads the sync's record for the source.
    let out = run(connhost(folders[1].path()).args(["plugins", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plugin = greeter(&out.json()).expect("greeter is loaded");
    assert_eq!(
        plugin["source"]["reference"],
        reference.as_str(),
        "{plugin}"
    );
    assert_eq!(plugin["source"]["digest"], v2.as_str(), "{plugin}");
}

#[test]
fn an_unsigned_artifact_is_refused_under_trusted_keys_and_nothing_is_written() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    let reference = registry.reference("plugins/greeter:unsigned");
    let digest = push(
        docker.path(),
        &vendor_file(vendor.path(), "fixture-greeter-v1"),
        &reference,
    );
    let key = Key::new();
    let keys = keys_dir(&[(&key, "vendor")]);
    let plugins = PluginDir::empty();
    let server = replica(
        plugins.path(),
        docker.path(),
        &[&reference],
        &[OsStr::new("--trusted-keys"), keys.path().as_os_str()],
    );
    wait_until_within("the sync reports its refusal", FIRST_WITHIN, || {
        status(&server, &reference)["last_error"].is_string()
    });
    let status = status(&server, &reference);
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains(&reference) && error.contains(&digest) && error.contains("not signed"),
        "{status}"
    );
    assert!(status.get("digest").is_none(), "{status}");
    assert!(!plugins.file(&library_file_name("greeter")).exists());
    assert!(greeter(&get(&server, "/v1/plugins")).is_none());
}

/// What the sync logs (at debug) after a poll that found the folder in
/// step with the reference.
const UNCHANGED: &str = "sync: the reference is unchanged";

#[cfg(unix)]
#[test]
fn a_poll_that_finds_nothing_changed_is_one_manifest_request() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    idle_polls_are_one_manifest_request_each(&registry, docker.path());
}

/// With credentials, the registry's challenge and the credentials are
/// asked for and sent once, not at every poll.
#[cfg(unix)]
#[test]
fn a_poll_that_finds_nothing_changed_is_one_manifest_request_with_credentials_too() {
    let registry = Registry::with_basic_auth("sync", "s3cret");
    let docker = docker_config(registry.host(), Some(("sync", "s3cret")));
    idle_polls_are_one_manifest_request_each(&registry, docker.path());
}

/// Serves `--sync` a tag of `registry` (pushed with the credentials of
/// `docker`) until three polls found it unchanged, and checks that the
/// registry answered one manifest request per such poll and nothing else.
#[cfg(unix)]
fn idle_polls_are_one_manifest_request_each(registry: &Registry, docker: &Path) {
    let vendor = tempfile::tempdir().unwrap();
    let reference = registry.reference("plugins/greeter:stable");
    let digest = push(
        docker,
        &vendor_file(vendor.path(), "fixture-greeter-v1"),
        &reference,
    );
    let plugins = PluginDir::empty();
    let server = Server::start(plugins.path(), |c| {
        c.env("DOCKER_CONFIG", docker)
            .env("CONNHOST_LOG", "warn,connhost::cli::sync=debug")
            .env_remove("CONNHOST_INSECURE_REGISTRIES")
            .env_remove("CONNHOST_SYNC")
            .args(["--sync-interval", INTERVAL, "--sync", &reference]);
    });
    wait_until_within(
        "the server serves greeter from the tag",
        FIRST_WITHIN,
        || serves(&server, "1.0.0", &reference, &digest),
    );
    wait_until_within("three polls found nothing changed", CONVERGE_WITHIN, || {
        server.log().matches(UNCHANGED).count() >= 3
    });
    // The server stops where it is; every request it made is then in the
    // registry's log, and every poll it finished in its own.
    // SAFETY: kill sends a signal to the test's own child process.
    assert_eq!(
        unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGSTOP) },
        0
    );
    let requests = registry.settled_requests();
    let polls = server.log().matches(UNCHANGED).count();
    // SAFETY: as above; the server is killed when dropped.
    unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGCONT) };

    // The first poll pulled (its last request the library's blob); every
    // request since is an idle poll's.
    let pulled = requests
        .iter()
        .rposition(|r| r.contains("/blobs/"))
        .expect("the first poll pulled the library");
    let idle = &requests[pulled + 1..];
    let manifest = |r: &String| {
        (r.starts_with("GET ") || r.starts_with("HEAD "))
            && r.ends_with("/v2/plugins/greeter/manifests/stable")
    };
    eprintln!(
        "sync: {polls} idle polls made {} requests: {idle:#?}",
        idle.len()
    );
    assert!(
        idle.iter().all(manifest),
        "an idle poll made other requests than the manifest's: {idle:#?}"
    );
    // The last poll may have been stopped after its request and before
    // its log line.
    assert!(
        idle.len() == polls || idle.len() == polls + 1,
        "{polls} idle polls made {} manifest requests: {idle:#?}",
        idle.len()
    );
}
