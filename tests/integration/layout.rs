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

/// The core's top-level modules by layer, as `lib.rs` declares them: each
/// `// N.` comment starts layer N, and the modules declared after it (until
/// the next) are in it.
fn declared_layers(lib_rs: &str) -> Vec<(String, usize)> {
    let mut layer = 0;
    let mut modules = Vec::new();
    for line in lib_rs.lines() {
        let line = line.trim();
        if let Some(number) = line
            .strip_prefix("// ")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(n, _)| n.parse::<usize>().ok())
        {
            layer = number;
            continue;
        }
        let rest = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(name) = rest.and_then(|r| r.strip_suffix(';')) {
            modules.push((name.to_owned(), layer));
        }
    }
    modules
}

/// A file's code as the import check reads it: comments and its unit
/// tests (which may use anything) left out.
fn code_of(text: &str) -> String {
    let without_tests = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    without_tests
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `code` (`crate::a`, and each
/// name in `crate::{a, b::c}`).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Every import in the crate at `src` that does not point downward: a
/// module may use only the modules `lib.rs` declares before it, and only
/// through their paths (`crate::Type`, a root re-export, would hide which
/// layer it comes from).
fn upward_imports(src: &std::path::Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let layers = declared_layers(&lib);
    let rank = |name: &str| layers.iter().find(|(m, _)| m == name).map(|(_, l)| *l);
    let mut files = Vec::new();
    let mut pending = vec![src.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list the sources") {
            let path = entry.expect("a source entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" {
            continue;
        }
        let Some(own) = rank(&top) else {
            upward.push(format!(
                "{}: its module is not declared in lib.rs",
                relative.display()
            ));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let mut used = paths_after(&code, "crate::");
        // `super::x` from a top-level module's own file is `crate::x`.
        let depth = relative.components().count();
        if depth == 1 || (depth == 2 && relative.ends_with("mod.rs")) {
            used.extend(paths_after(&code, "super::"));
        }
        for name in used {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                upward.push(format!(
                    "{}: uses crate::{name}, a root re-export: import it from its module",
                    relative.display()
                ));
            } else if let Some(theirs) = rank(&name) {
                if theirs > own {
                    upward.push(format!(
                        "{}: {top} imports {name}, a layer above it",
                        relative.display()
                    ));
                } else if theirs == own && name != top {
                    upward.push(format!(
                        "{}: {top} imports {name}, in its own layer",
                        relative.display()
                    ));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    upward
}

#[test]
fn the_cores_modules_import_only_from_the_layers_below_them() {
    let src = workspace_root().join("host/core/src");
    let upward = upward_imports(&src);
    assert!(
        upward.is_empty(),
        "imports in host/core that do not point down (the layers are lib.rs's numbered groups):\n{}",
        upward.join("\n")
    );
    let layers = declared_layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    for (lower, upper) in [
        ("model", "library"),
        ("capabilities", "backend"),
        ("backend", "registry"),
        ("registry", "loader"),
        ("loader", "catalog"),
        ("catalog", "service"),
        ("service", "worker"),
    ] {
        let at = |m: &str| layers.iter().find(|(x, _)| x == m).expect(m).1;
        assert!(
            at(lower) < at(upper),
            "{lower} sits below {upper}: {layers:?}"
        );
    }
}

#[test]
fn the_layer_check_catches_an_upward_import_a_root_path_and_a_super_path() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    std::fs::write(
        src.join("lib.rs"),
        "// 0. Low.\nmod low;\nmod beside;\n// 1. High.\nmod high;\n",
    )
    .unwrap();
    std::fs::write(src.join("beside.rs"), "use crate::low::Thing;\n").unwrap();
    std::fs::write(src.join("high.rs"), "use crate::low::Thing;\n").unwrap();
    std::fs::write(
        src.join("low.rs"),
        "// crate::high in a comment is fine\nuse crate::{high::X, low};\nfn f() { super::high::g(); crate::Root; }\n#[cfg(test)]\nmod tests { use crate::high::Y; }\n",
    )
    .unwrap();
    let found = upward_imports(src);
    assert_eq!(
        found,
        [
            "beside.rs: beside imports low, in its own layer",
            "low.rs: low imports high, a layer above it",
            "low.rs: uses crate::Root, a root re-export: import it from its module",
        ],
        "{found:#?}"
    );
}
