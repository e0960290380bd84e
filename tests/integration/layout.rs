//! The crate layout holds what ARCHITECTURE.md says: the embeddable core
//! (`connhost`) pulls in no HTTP server, command line or OpenAPI crate.
//! (reqwest, the HTTP client providers call vendors with, brings hyper's
//! client half and a few tower crates: that is the client, checked below.)

use std::process::Command;

use crate::support::workspace_root;

/// `cargo tree` for the core's normal dependencies, with `args` added.
fn cargo_tree(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "tree",
            "--locked",
            "--package",
            "connhost",
            "--edges",
            "normal",
        ])
        .args(args)
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

#[test]
fn the_core_library_has_no_http_server_cli_or_openapi_crate_in_its_tree() {
    let tree = cargo_tree(&["--prefix", "none", "--format", "{p}"]);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"connhost-plugin-api"), "{tree}");
    for banned in [
        "axum",
        "axum-core",
        "clap",
        "utoipa",
        "pulldown-cmark",
        "prometheus-client",
        "tracing-subscriber",
        "connhost-http",
    ] {
        assert!(
            !crates.contains(&banned),
            "the core library depends on {banned}:\n{tree}"
        );
    }
}

#[test]
fn hyper_reaches_the_core_only_as_the_http_clients_engine_never_as_a_server() {
    // reqwest (the HTTP capability providers call vendors with) is built on
    // hyper's client; hyper's server half must stay out.
    let features = cargo_tree(&["--edges", "normal,features", "--invert", "hyper"]);
    assert!(features.contains("reqwest"), "{features}");
    for server in ["hyper feature \"server\"", "hyper-util feature \"server\""] {
        assert!(
            !features.contains(server),
            "the core library enables {server}:\n{features}"
        );
    }
}
