// `connhost inspect`: what a plugin file holds and whether this host can load it, without registering it.

use crate::support::*;

#[test]
fn inspect_describes_a_loadable_plugin() {
    let dir = PluginDir::with(&["mai"]);
    let file = dir.file(&library_file_name("mai"));
    let out = run(connhost(dir.path()).arg("inspect").arg(&file));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("plugin: mai 0.1.0"), "{}", out.stdout);
    assert!(out.stdout.contains("loadable: yes"), "{}", out.stdout);
    assert!(
        out.stdout.contains("provider: mai (Microsoft AI"),
        "{}",
        out.stdout
    );

    let json = run(connhost(dir.path()).arg("inspect").arg(&file).arg("--json")).json();
    assert_eq!(json["loadable"], true);
    assert_eq!(json["plugin"], "mai");
    assert_eq!(
        json["api_version"],
        connhost::plugin_api::PLUGIN_API_VERSION
    );
    assert_eq!(json["providers"][0]["provider_id"], "mai");
}

#[test]
fn inspect_shows_the_full_layout_difference_of_an_incompatible_plugin() {
    let dir = PluginDir::with(&["fixture-abi-layout"]);
    let file = dir.file(&library_file_name("fixture-abi-layout"));
    let out = run(connhost(dir.path()).arg("inspect").arg(&file));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("loadable: no"), "{}", out.stdout);
    // Past the one-line summary, abi_stable's whole diff: both layouts and
    // the error block with what was expected and what was found.
    let (_, diff) = out
        .stdout
        .split_once("full layout difference:\n")
        .unwrap_or_else(|| panic!("no full layout difference:\n{}", out.stdout));
    for needle in [
        "Compared <this>:",
        "To <other>:",
        "Error:mismatched type",
        "Expected:",
        "Found:",
        "RSlice<'a>",
    ] {
        assert!(diff.contains(needle), "{needle:?} missing from:\n{diff}");
    }
}

#[test]
fn inspect_explains_a_file_that_is_not_a_library() {
    let dir = PluginDir::empty();
    let file = dir.add_file("notes.so", b"hello");
    let out = run(connhost(dir.path()).arg("inspect").arg(&file));
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("not a shared library"),
        "{}",
        out.stdout
    );
}

#[test]
fn inspect_registers_nothing() {
    // Inspecting a plugin whose id clashes with a built-in reports it as
    // loadable (no registry is involved) and lists its providers.
    let dir = PluginDir::with(&["fixture-duplicate"]);
    let file = dir.file(&library_file_name("fixture-duplicate"));
    let json = run(connhost(dir.path()).arg("inspect").arg(&file).arg("--json")).json();
    assert_eq!(json["loadable"], true);
    let ids: Vec<_> = json["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"openai".to_owned()), "{ids:?}");
}
