//! Tools from outside the workspace that some tests drive (promtool, a
//! Prometheus server, Python's openapi-core): `cargo xtask test` installs
//! them. A test whose tool is missing says so loudly; under `CI=true` it
//! fails, elsewhere it is skipped with the reason printed.

use std::process::{Command, Stdio};

/// Whether `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `python3` imports `module`.
pub fn python_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Python interpreter: `$PYTHON`, or `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Returns whether the test can go on: `true` when `available`; otherwise
/// fails under `CI=true` and, elsewhere, prints why the test is skipped.
pub fn require(available: bool, what: &str, install: &str) -> bool {
    if available {
        return true;
    }
    let message = format!(
        "THIS TEST NEEDS {what}, WHICH IS MISSING: {install} (`cargo xtask test` installs it)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}
