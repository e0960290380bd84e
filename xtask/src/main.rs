//! Developer tasks, run as `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask run [-- CONNHOST ARGS]`: builds the `connhost` binary and
//!   the example plugins, stages the plugin libraries in
//!   `target/plugins/`, and runs connhost with `--plugins target/plugins`
//!   (by default `providers`, then `plugins`).
//! - `cargo xtask plugins`: only builds and stages the example plugins.

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
        _ => {
            eprintln!("usage: cargo xtask run [-- CONNHOST ARGS] | cargo xtask plugins");
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
    build.args(["build", "--package", "connhost"]);
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
    let runs: Vec<Vec<String>> = if args.is_empty() {
        vec![vec!["providers".into()], vec!["plugins".into()]]
    } else {
        vec![args]
    };
    for run in runs {
        let status = Command::new(&binary)
            .arg("--plugins")
            .arg(&staged)
            .args(&run)
            .status()
            .map_err(|e| format!("could not run {}: {e}", binary.display()))?;
        if !status.success() {
            return Err(format!("connhost {} exited with {status}", run.join(" ")));
        }
        println!();
    }
    Ok(())
}
