// Terminal escapes: what a plugin writes (names, forms, answers, load failure reasons) reaches a terminal escaped in the real binary's human output, in process and isolated, and exact in `--json`.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// The fixture and its provider.
const PLUGIN: &str = "fixture-terminal-escapes";
const PROVIDER: &str = "terminal-escapes";

/// What the fixture writes in every word: a window title, a screen clear
/// and a right-to-left override.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J\u{202e}";
/// How human output shows it.
const SHOWN: &str = r"\x1b]0;pwned\x07\x1b[2J\u{202e}";
/// How JSON writes it, in `--json` (serde_json escapes C0 controls and
/// leaves the rest: that output does not change).
const JSON: &str = "\\u001b]0;pwned\\u0007\\u001b[2J\u{202e}";
/// How `schema`, JSON read on terminals, writes it.
const TERMINAL_JSON: &str = r"\u001b]0;pwned\u0007\u001b[2J\u202e";

/// Where plugins run: the CLI's flags for each mode.
const MODES: [&[&str]; 2] = [&[], &["--isolation", "process"]];

/// Asserts that `text` (a command's stdout or stderr) holds nothing a
/// terminal acts on: no C0 control but the line feed, no DEL, no C1
/// control, no bidirectional control.
fn assert_inert(what: &str, text: &str) {
    let raw = text.char_indices().find(|&(_, c)| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    });
    assert!(
        raw.is_none(),
        "{what} writes {raw:?} raw to the terminal:\n{text:?}"
    );
}

/// Runs `connhost` over `dir` in `mode` with `args`, and checks that
/// neither stdout nor stderr holds anything a terminal acts on.
fn human(dir: &PluginDir, mode: &[&str], args: &[&str]) -> Run {
    let out = run(connhost(dir.path()).args(mode).args(args));
    let what = format!("connhost {} {}", mode.join(" "), args.join(" "));
    assert_inert(&format!("{what} (stdout)"), &out.stdout);
    assert_inert(&format!("{what} (stderr)"), &out.stderr);
    out
}

/// Asserts that `text` shows the hostile words escaped, after `before`.
fn assert_shown(text: &str, before: &str) {
    let shown = format!("{before}{SHOWN}");
    assert!(text.contains(&shown), "{shown:?} missing from:\n{text}");
}

/// Runs `connhost` with `--json`, and checks that the output holds the
/// hostile words as serde_json writes them and decodes to them.
fn json(command: &mut Command) -> Value {
    let out = run(command);
    assert!(
        out.stdout.contains(JSON),
        "{JSON:?} missing from:\n{}",
        out.stdout
    );
    out.json()
}

#[test]
fn providers_and_plugins_show_what_a_plugin_wrote_escaped() {
    let dir = PluginDir::with(&[PLUGIN]);
    for mode in MODES {
        let out = human(&dir, mode, &["providers"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_shown(&out.stdout, "terminal-escapes  Terminal ");
        // One row per provider: the built-in one, the fixture's.
        assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);

        let out = human(&dir, mode, &["plugins"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains(PLUGIN), "{}", out.stdout);

        let list = json(
            connhost(dir.path())
                .args(mode)
                .args(["providers", "--json"]),
        );
        let fixture = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider_id"] == PROVIDER)
            .unwrap_or_else(|| panic!("{PROVIDER} not listed: {list:#}"));
        assert_eq!(
            fixture["display_name"],
            format!("Terminal {HOSTILE} escapes")
        );
        assert_eq!(
            fixture["form_schema"]["fields"][0]["label"],
            format!("Key {HOSTILE}")
        );
    }
}

#[test]
fn validate_shows_messages_usernames_and_labels_escaped() {
    let dir = PluginDir::with(&[PLUGIN]);
    for mode in MODES {
        let rejected = ["validate", PROVIDER, "--field", "api_key=wrong"];
        let out = human(&dir, mode, &rejected);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert_shown(&out.stdout, "rejected: Rejected ");
        let verdict = json(connhost(dir.path()).args(mode).args(rejected).arg("--json"));
        assert_eq!(
            verdict["error"],
            format!("Rejected {HOSTILE} by the provider")
        );

        let accepted = ["validate", PROVIDER, "--field", "api_key=accept"];
        let out = human(&dir, mode, &accepted);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert_shown(&out.stdout, "(account: user ");
        assert!(
            out.stdout
                .contains(&format!("metadata: {{\"note\":\"{TERMINAL_JSON}\"}}")),
            "{}",
            out.stdout
        );
        let verdict = json(connhost(dir.path()).args(mode).args(accepted).arg("--json"));
        assert_eq!(verdict["provider_username"], format!("user {HOSTILE}"));
        assert_eq!(verdict["provider_metadata"]["note"], HOSTILE);

        // The form's rules answer, quoting the field's label.
        let out = human(&dir, mode, &["validate", PROVIDER]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert_shown(&out.stdout, "api_key: Key ");
    }
}

#[test]
fn schema_writes_the_form_as_json_a_terminal_shows_inert() {
    let dir = PluginDir::with(&[PLUGIN]);
    for mode in MODES {
        let out = human(&dir, mode, &["schema", PROVIDER]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        for before in ["\"label\": \"Key ", "\"help_text\": \"Help "] {
            let written = format!("{before}{TERMINAL_JSON}\"");
            assert!(
                out.stdout.contains(&written),
                "{written:?} missing from:\n{}",
                out.stdout
            );
        }
        // The same JSON value as the plugin's.
        let schema = out.json();
        assert_eq!(schema["fields"][0]["label"], format!("Key {HOSTILE}"));
        assert_eq!(
            schema["instructions_markdown"],
            format!("Paste a key {HOSTILE}")
        );
    }
}

#[test]
fn inspect_shows_a_plugins_words_escaped() {
    let dir = PluginDir::with(&[PLUGIN]);
    let file = dir.file(&library_file_name(PLUGIN));
    let file = file.to_str().unwrap();
    for mode in MODES {
        let out = human(&dir, mode, &["inspect", file]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert_shown(&out.stdout, "provider: terminal-escapes (Terminal ");
        let inspection = json(
            connhost(dir.path())
                .args(mode)
                .args(["inspect", file, "--json"]),
        );
        assert_eq!(
            inspection["providers"][0]["display_name"],
            format!("Terminal {HOSTILE} escapes")
        );
    }
}

#[test]
fn a_load_failure_reason_is_shown_escaped_on_stdout_and_stderr() {
    let dir = PluginDir::with(&[PLUGIN]);
    let failing = ["--setting", "fixture-terminal-escapes.fail_init=1"];
    for mode in MODES {
        let mode: Vec<&str> = mode.iter().chain(&failing).copied().collect();
        let out = human(&dir, &mode, &["plugins"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("Not loaded (1)"), "{}", out.stdout);
        assert_shown(&out.stdout, "init refused ");
        let report = json(connhost(dir.path()).args(&mode).args(["plugins", "--json"]));
        let reason = report["failed"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("init refused {HOSTILE} to start")),
            "{reason}"
        );

        // `lock --add` says on stderr why the file was not locked.
        let library = library_file_name(PLUGIN);
        let out = human(&dir, &mode, &["lock", "--add", &library]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert_shown(&out.stderr, "init refused ");
    }
}
