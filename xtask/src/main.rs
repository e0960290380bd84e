//! Developer tasks, run as `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask run [-- CONNHOST ARGS]`: builds the `connhost` binary and
//!   the example plugins, stages the plugin libraries in
//!   `target/plugins/`, and runs connhost with `--plugins target/plugins`
//!   (by default `serve`: the API and settings page on 127.0.0.1:8080).
//! - `cargo xtask plugins`: only builds and stages the example plugins.
//! - `cargo xtask test`: the whole test suite. Makes sure Chromium (for the
//!   settings page's browser test), curl (for the README's examples),
//!   Prometheus and promtool (for `/metrics`), minisign (for signed
//!   plugins), docker-registry, skopeo and htpasswd (for plugins as OCI
//!   artifacts) and Python's openapi-core (for the OpenAPI document) are
//!   installed, installing Debian's packages and
//!   the pinned openapi-core when it can, then runs `cargo test --workspace`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The example plugins under `plugins/`.
const EXAMPLE_PLUGINS: &[&str] = &["daytona", "bedrock", "mai", "github"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "run" => run(rest),
        "plugins" => stage_plugins().map(|dir| println!("plugins staged in {}", dir.display())),
        "test" => test(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask run [-- CONNHOST ARGS] | cargo xtask plugins | cargo xtask test [-- CARGO TEST ARGS]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Builds connhost and the example plugins, copies the libraries into
/// `target/plugins/` (a fresh copy each time), and returns that folder.
fn stage_plugins() -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args(["build", "--package", "connhost-cli"]);
    for plugin in EXAMPLE_PLUGINS {
        build.args(["--package", plugin]);
    }
    let status = build
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build failed".into());
    }
    let staged = target_dir().join("plugins");
    std::fs::create_dir_all(&staged).map_err(|e| format!("{}: {e}", staged.display()))?;
    for plugin in EXAMPLE_PLUGINS {
        let file = format!(
            "{}{plugin}.{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_EXTENSION
        );
        let from = target_dir().join("debug").join(&file);
        let to = staged.join(&file);
        // Write a new file and rename it over the old one: overwriting a
        // library that a running connhost has mapped would crash it.
        let partial = staged.join(format!(".{file}.partial"));
        std::fs::copy(&from, &partial).map_err(|e| format!("{}: {e}", from.display()))?;
        std::fs::rename(&partial, &to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(staged)
}

fn run(args: &[String]) -> Result<(), String> {
    let staged = stage_plugins()?;
    let binary = target_dir()
        .join("debug")
        .join(format!("connhost{}", std::env::consts::EXE_SUFFIX));
    let args: Vec<String> = args.iter().filter(|a| *a != "--").cloned().collect();
    let args = if args.is_empty() {
        vec!["serve".to_owned()]
    } else {
        args
    };
    let status = Command::new(&binary)
        .arg("--plugins")
        .arg(&staged)
        .args(&args)
        .status()
        .map_err(|e| format!("could not run {}: {e}", binary.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("connhost {} exited with {status}", args.join(" ")))
    }
}

/// Where the browser test looks for Chromium (it honours `CHROME` too).
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where Debian's docker-registry package puts the registry.
const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// The openapi-core version `tests/openapi/validate.py` is pinned to.
const OPENAPI_CORE: &str = "0.23.1";

fn test(args: &[String]) -> Result<(), String> {
    ensure_test_tools()?;
    ensure_openapi_core()?;
    let args: Vec<&String> = args.iter().filter(|a| *a != "--").collect();
    let status = cargo()
        .args(["test", "--workspace"])
        .args(args)
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("tests failed".into())
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tests drive Chromium (the settings page), curl (the README's
/// examples), tar (the packaged plugin API), Prometheus and promtool
/// (`/metrics`), minisign (signed plugins), Python (the OpenAPI check),
/// docker-registry, skopeo and htpasswd (plugins as OCI artifacts).
/// Installs Debian's packages for whichever is missing when this is a
/// Debian-like system and we are root; otherwise says what to do.
fn ensure_test_tools() -> Result<(), String> {
    let mut missing = Vec::new();
    match std::env::var_os("CHROME") {
        Some(chrome) if !Path::new(&chrome).exists() => {
            return Err(format!(
                "CHROME={} does not exist",
                Path::new(&chrome).display()
            ));
        }
        Some(_) => {}
        None if Path::new(CHROMIUM).exists() => {}
        None => missing.push("chromium"),
    }
    if !on_path("curl") {
        missing.push("curl");
    }
    // Unpacks the `cargo package`d plugin API (Debian's base has it).
    if !on_path("tar") {
        missing.push("tar");
    }
    // Debian's `prometheus` ships both the server and promtool.
    if !on_path("prometheus") || !on_path("promtool") {
        missing.push("prometheus");
    }
    // Signs plugin files in the trust tests (`minisign -v`: it has no
    // --version).
    let minisign = Command::new("minisign")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !minisign {
        missing.push("minisign");
    }
    if !on_path("python3") {
        missing.extend(["python3", "python3-pip"]);
    }
    // The OCI artifact tests push to and pull from a real registry
    // (Debian's docker-registry, run from its binary), check what they
    // wrote with a second client (skopeo), and make the registry's
    // htpasswd file with apache2-utils' htpasswd (bcrypt).
    if !Path::new(DOCKER_REGISTRY).exists() {
        missing.push("docker-registry");
    }
    if !on_path("skopeo") {
        missing.push("skopeo");
    }
    let htpasswd = Command::new("htpasswd")
        .args(["-nbB", "x", "x"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !htpasswd {
        missing.push("apache2-utils");
    }
    // The shared rate limit tests start their own Redis.
    if !on_path("redis-server") {
        missing.push("redis-server");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !(is_root && Path::new("/usr/bin/apt-get").exists()) {
        return Err(format!(
            "the tests need {}: install {} (`sudo apt-get install -y {}` on Debian or Ubuntu; \
             for Chromium you may instead point CHROME at a Chrome binary)",
            missing.join(" and "),
            if missing.len() == 1 { "it" } else { "them" },
            missing.join(" ")
        ));
    }
    eprintln!(
        "xtask: installing {} for the tests (apt-get)",
        missing.join(", ")
    );
    let update = ["update".to_owned()];
    let install: Vec<String> = ["install", "-y", "--no-install-recommends"]
        .into_iter()
        .chain(missing.iter().copied())
        .map(str::to_owned)
        .collect();
    for args in [&update[..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("could not run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed", args.join(" ")));
        }
    }
    Ok(())
}

/// The OpenAPI conformance test validates real answers with Python's
/// openapi-core: installs the pinned version with pip unless it is there.
fn ensure_openapi_core() -> Result<(), String> {
    let check =
        format!("import sys, openapi_core; sys.exit(openapi_core.__version__ != '{OPENAPI_CORE}')");
    let installed = Command::new("python3")
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing openapi-core=={OPENAPI_CORE} for the tests (pip)");
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .arg(format!("openapi-core=={OPENAPI_CORE}"))
        // A Debian system Python refuses pip installs otherwise (PEP 668);
        // older pips ignore it.
        .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
        .status()
        .map_err(|e| format!("could not run python3 -m pip: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "pip install openapi-core=={OPENAPI_CORE} failed: install it yourself (python3 -m pip install openapi-core=={OPENAPI_CORE})"
        ))
    }
}
