// The one-shot load (the CLI's commands, `Connhost::start`): it reads the
// folder once, so it reports and logs exactly what it did before the
// catalog took over, and never promises a retry.

use connhost::FailureKind;

use crate::support::*;

/// What `connhost providers` says on stderr when the report has failures.
const NOTE: &str =
    "note: 1 plugin file(s) or provider(s) were not loaded; `connhost plugins` says why.\n";

/// The `failed` list of `connhost plugins --json` over `folder`.
fn failed(folder: &std::path::Path) -> Vec<serde_json::Value> {
    let report = run(connhost(folder).args(["plugins", "--json"])).json();
    report["failed"].as_array().expect("failed").clone()
}

#[test]
fn a_missing_plugins_folder_is_reported_without_a_retry_and_logs_nothing_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("plugins");

    let failed = failed(&missing);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["path"], missing.display().to_string());
    assert_eq!(failed[0]["kind"], "folder_unreadable");
    assert_eq!(
        failed[0]["reason"],
        "the plugins folder does not exist; create it, or point --plugins (CONNHOST_PLUGINS) at the folder that holds your plugins."
    );

    // With the CLI's default log filter: the note, and not a word more.
    let providers = run(connhost(&missing)
        .env_remove("CONNHOST_LOG")
        .arg("providers"));
    assert_eq!(providers.code, 0, "{}", providers.stderr);
    assert_eq!(providers.stderr, NOTE);
}

#[test]
fn a_plugins_folder_that_cannot_be_read_is_reported_with_the_error_and_no_retry() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where the folder should be: listing fails (ENOTDIR,
    // whoever runs the test).
    let not_a_folder = tmp.path().join("plugins");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let error = std::fs::read_dir(&not_a_folder).unwrap_err();

    let failed = failed(&not_a_folder);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["kind"], "folder_unreadable");
    assert_eq!(
        failed[0]["reason"],
        format!("the plugins folder could not be read: {error}.")
    );
    let providers = run(connhost(&not_a_folder)
        .env_remove("CONNHOST_LOG")
        .arg("providers"));
    assert_eq!(providers.stderr, NOTE);
}

/// `liba` is junk; `libb` and `libc` both offer the provider `greeter`.
fn junk_and_a_conflict() -> (PluginDir, [std::path::PathBuf; 3]) {
    let dir = PluginDir::empty();
    let a = dir.add_file(&library_file_name("a"), b"not a library");
    let b = dir.file(&library_file_name("b"));
    std::fs::copy(built_library("fixture-greeter-v1"), &b).unwrap();
    let c = dir.file(&library_file_name("c"));
    std::fs::copy(built_library("fixture-greeter-v2"), &c).unwrap();
    (dir, [a, b, c])
}

#[test]
fn failures_are_listed_file_by_file_in_name_order() {
    let (dir, [a, _, c]) = junk_and_a_conflict();
    let failed = failed(dir.path());
    let listed: Vec<_> = failed
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    let (a, c) = (a.display().to_string(), c.display().to_string());
    assert_eq!(
        listed,
        [
            (a.as_str(), "not_a_shared_library"),
            (c.as_str(), "conflict")
        ],
        "{failed:#?}"
    );
}

#[test]
fn every_load_failure_and_every_loaded_plugin_is_logged_once_under_the_loader_target() {
    let (dir, [_, b, _]) = junk_and_a_conflict();
    // The CLI's default filter hides the loader's lines, and nothing else
    // about loading is logged.
    let quiet = run(connhost(dir.path())
        .env_remove("CONNHOST_LOG")
        .arg("plugins"));
    assert_eq!(quiet.stderr, "");

    // Providers that fail to describe themselves (their panics are logged
    // as the plugin's own errors, under another target).
    let panicky = dir.add_library("fixture-panicky");
    let report = run(connhost(dir.path()).args(["plugins", "--json"])).json();
    let failed = report["failed"].as_array().unwrap();
    assert!(
        failed
            .iter()
            .any(|f| f["path"] == panicky.display().to_string() && f["kind"] == "provider_fault"),
        "{report:#}"
    );

    let loader = run(connhost(dir.path())
        .env("CONNHOST_LOG", "connhost::loader=info")
        .arg("plugins"));
    assert_eq!(
        loader.stderr.matches("plugin not loaded").count(),
        failed.len(),
        "each failure once (junk, conflict, provider faults):\n{}",
        loader.stderr
    );
    let added = loader
        .stderr
        .lines()
        .find(|l| l.contains("plugin added") && l.contains(&b.display().to_string()))
        .unwrap_or_else(|| {
            panic!(
                "no \"plugin added\" for {}:\n{}",
                b.display(),
                loader.stderr
            )
        });
    assert!(added.contains(r#"offers=["greeter"]"#), "{added}");
}

/// A copy of a built plugin that claims to be for another architecture:
/// a complete shared library that the system loader refuses.
fn foreign_library(dir: &PluginDir) -> std::path::PathBuf {
    let mut bytes = std::fs::read(built_library("daytona")).unwrap();
    // e_machine, at byte 18 of an ELF header (little-endian on the
    // platforms the tests run on): x86-64 (62) or AArch64 (183), whichever
    // this is not.
    let other: u16 = if cfg!(target_arch = "x86_64") {
        183
    } else {
        62
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    dir.add_file(&library_file_name("foreign"), &bytes)
}

#[cfg(target_os = "linux")]
#[test]
fn a_library_the_system_refuses_is_named_by_its_own_path_never_by_the_private_copy() {
    let dir = PluginDir::empty();
    let foreign = foreign_library(&dir);
    let cache = tempfile::tempdir().unwrap();
    let host = host_with(&dir, |c| c.cache_dir = Some(cache.path().to_owned()));
    let failure = host
        .load_report()
        .failed
        .iter()
        .find(|f| f.path == foreign)
        .unwrap_or_else(|| panic!("{:#?}", host.load_report()));
    assert_eq!(failure.kind, FailureKind::OpenFailed, "{failure:?}");
    assert!(
        failure.reason.contains(&foreign.display().to_string()),
        "{}",
        failure.reason
    );
    assert!(
        !failure.reason.contains(&cache.path().display().to_string()),
        "{}",
        failure.reason
    );

    // The CLI, with its own cache folder: no copy's name in the reason.
    let failed = failed(dir.path());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&foreign.display().to_string()), "{reason}");
    let hex_run = reason
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max();
    assert!(hex_run < Some(64), "{reason}");
}

#[test]
fn a_cache_that_cannot_be_written_is_reported_without_a_promise_to_retry() {
    let dir = PluginDir::with(&["daytona"]);
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where the cache folder should be: every copy fails.
    let not_a_folder = tmp.path().join("cache");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let host = host_with(&dir, |c| c.cache_dir = Some(not_a_folder.clone()));
    let failed = &host.load_report().failed;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].kind, FailureKind::CacheFailed);
    let reason = &failed[0].reason;
    assert!(
        reason.ends_with("Nothing is wrong with the file."),
        "{reason}"
    );
    assert!(!reason.contains("again"), "{reason}");
}

#[cfg(unix)]
#[test]
fn a_file_that_cannot_be_opened_or_copied_for_now_is_reported_not_dropped() {
    let dir = PluginDir::with(&["daytona"]);
    let file = dir
        .file(&library_file_name("daytona"))
        .display()
        .to_string();
    // Starved of descriptors, the load fails at some step (opening,
    // copying, the system loader) depending on the limit; whichever it
    // is, the file is accounted for. Below 4 the process cannot start.
    for limit in 4..=8 {
        let mut command = connhost(dir.path());
        server::limit_open_files(&mut command, limit);
        let report = run(command.args(["plugins", "--json"])).json();
        let loaded = report["loaded"].as_array().unwrap();
        let failed = report["failed"].as_array().unwrap();
        let accounted = loaded.iter().any(|p| p["path"] == file.as_str())
            || failed.iter().any(|f| f["path"] == file.as_str());
        assert!(accounted, "with {limit} descriptors: {report:#}");
        for failure in failed.iter().filter(|f| f["kind"] == "unreadable") {
            let reason = failure["reason"].as_str().unwrap();
            assert!(reason.contains("Too many open files"), "{reason}");
        }
    }
}
