//! The runnable examples, built by cargo and run the way their headers say:
//! `host/core/examples/embed.rs` (the library with a provider of its own
//! and a plugins folder) and `host/http/examples/mount.rs` (connhost's
//! router nested inside another axum app).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{
    build_artifacts, exit_within, profile_dir, target_dir, workspace_root, PluginDir,
};

/// Builds both examples once (`cargo build --examples`) into the tests'
/// own target dir; returns the folder the example binaries are in.
fn examples_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_artifacts();
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(workspace_root())
            .args(["build", "--examples", "--package", "connhost"])
            .args(["--package", "connhost-http", "--target-dir"])
            .arg(target_dir());
        if profile_dir().file_name().is_some_and(|p| p == "release") {
            command.arg("--release");
        }
        let output = command.output().expect("run cargo build --examples");
        assert!(
            output.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        profile_dir().join("examples")
    })
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_embedding_example_serves_its_own_provider_next_to_the_folders_plugins() {
    let dir = PluginDir::with(&["daytona", "bedrock"]);
    let broken = dir.add_file("libbroken.so", b"not a shared library");
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Running(
        Command::new(examples_dir().join("embed"))
            .arg(dir.path())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .expect("run the embed example"),
    );
    let status = exit_within(&mut child.0, Duration::from_secs(60))
        .expect("the embed example did not finish within 60 s");
    let stdout = std::fs::read_to_string(out.path()).unwrap();
    let stderr = std::fs::read_to_string(err.path()).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    for expected in [
        "acme       compiled in",
        "openai     compiled in",
        "acme: valid (as acme-service-account)",
        "acme: rejected (Acme keys start with acme_; this one does not.)",
    ] {
        assert!(
            lines.contains(&expected),
            "no line {expected:?} in:\n{stdout}"
        );
    }
    for plugin in ["daytona", "bedrock"] {
        assert!(
            lines.iter().any(
                |l| l.starts_with(&format!("{plugin:<10} plugin {plugin} ("))
                    && l.contains(dir.path().to_str().unwrap())
            ),
            "{plugin} is not listed as loaded from the folder:\n{stdout}"
        );
    }
    let not_loaded = format!("not loaded: {}: ", broken.display());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&not_loaded) && l.contains("not a shared library")),
        "the broken file is not reported with its reason:\n{stdout}"
    );
}

#[test]
fn the_mounting_example_serves_connhost_under_a_prefix_beside_the_apps_own_routes() {
    let dir = PluginDir::with(&["daytona"]);
    let mut child = Running(
        Command::new(examples_dir().join("mount"))
            .arg(dir.path())
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the mount example"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let base = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the mount example did not print its address within 60 s");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("{base}{path}")).send().expect(path);

    // The app's own route is untouched.
    let own = get("/");
    assert_eq!(own.status(), 200);
    assert_eq!(own.text().unwrap(), "my app: connhost is at /connhost/\n");

    // connhost answers under the prefix: first `starting`, then the set.
    crate::support::wait_until("the mounted API serves the plugins", || {
        get("/connhost/v1/providers").status() == 200
    });
    let providers: serde_json::Value = get("/connhost/v1/providers").json().unwrap();
    let ids: Vec<&str> = providers
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["provider_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"daytona") && ids.contains(&"openai"),
        "{ids:?}"
    );

    // The settings page and its assets, through relative links.
    let redirect = get("/connhost");
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/connhost/");
    let page = get("/connhost/").text().unwrap();
    assert!(page.contains(r#"src="assets/app.js""#), "{page}");
    assert_eq!(get("/connhost/assets/app.js").status(), 200);

    // Validation with connhost's own errors, under the prefix.
    let refused = client
        .post(format!("{base}/connhost/v1/providers/daytona/validate"))
        .json(&serde_json::json!({ "fields": {} }))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "invalid_fields");
    drop(child);
}
