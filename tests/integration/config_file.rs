// The configuration file (`--config FILE`, `CONNHOST_CONFIG`), with the real
// binary: the example parses, settings reach providers, flags and env win
// over the file, errors name file, line and key, and a plugin's own
// validation timeout and bound on validations in flight apply to it alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::server::Server;
use crate::support::vendor::Vendor;
use crate::support::*;

/// A configuration file in a temporary folder of its own.
struct ConfigFile {
    dir: tempfile::TempDir,
}

impl ConfigFile {
    /// `connhost.toml` holding `text`.
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("connhost.toml"), text).expect("write config");
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("connhost.toml")
    }
}

/// `connhost --plugins DIR --config FILE ...`.
fn with_config(plugins: &Path, file: &ConfigFile) -> Command {
    let mut command = connhost(plugins);
    command.arg("--config").arg(file.path());
    command
}

/// `connhost validate ID -f api_key=KEY --json` on `command`.
fn validate(mut command: Command, id: &str, key: &str) -> Value {
    let out = run(command.args(["validate", id, "-f", &format!("api_key={key}"), "--json"]));
    out.json()
}

#[test]
fn the_example_file_is_valid() {
    // No --plugins: the example's `plugins = "plugins"` is the repository's
    // folder of example crates (relative to the file), which exists.
    let binary = build_artifacts().join(format!("connhost{}", std::env::consts::EXE_SUFFIX));
    let example = workspace_root().join("connhost.example.toml");
    let out = run(Command::new(binary)
        .env_remove("CONNHOST_PLUGINS")
        .env("CONNHOST_LOG", "error")
        .current_dir(std::env::temp_dir())
        .arg("--config")
        .arg(&example)
        .args(["plugins", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["failed"], json!([]), "{}", out.stdout);
}

#[test]
fn a_plugin_setting_from_the_file_reaches_its_provider() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let file = ConfigFile::new(&format!(
        "[plugin.daytona]\negress = [\"{}\"]\n[plugin.daytona.settings]\napi_url = \"{}\"\n",
        loopback_grant(vendor.url()),
        vendor.url()
    ));
    let verdict = validate(with_config(dir.path(), &file), "daytona", "good-key");
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(
        vendor.requests(),
        1,
        "the vendor named in the file was asked"
    );
}

#[test]
fn flags_and_environment_variables_win_over_the_file() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona", "fixture-hang"]);
    // Nothing listens on port 1: with the file's URL the check fails.
    let file = ConfigFile::new(&format!(
        "validation_timeout = 1\n[plugin.daytona]\negress = [\"127.0.0.1:1\", \"{}\"]\n[plugin.daytona.settings]\napi_url = \"http://127.0.0.1:1\"\n",
        loopback_grant(vendor.url())
    ));
    let verdict = validate(with_config(dir.path(), &file), "daytona", "good-key");
    assert_eq!(
        verdict["outcome"], "inconclusive",
        "the file's URL: {verdict}"
    );

    let setting = format!("daytona.api_url={}", vendor.url());
    let mut flag = with_config(dir.path(), &file);
    flag.args(["--setting", &setting]);
    let verdict = validate(flag, "daytona", "good-key");
    assert_eq!(verdict["valid"], true, "--setting wins: {verdict}");

    let mut env = with_config(dir.path(), &file);
    env.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url());
    let verdict = validate(env, "daytona", "good-key");
    assert_eq!(verdict["valid"], true, "the variable wins: {verdict}");
    assert_eq!(vendor.requests(), 2);

    // The file's global timeout (1 s) against --timeout and CONNHOST_TIMEOUT.
    let verdict = validate(with_config(dir.path(), &file), "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.0 s."
    );
    let mut flag = with_config(dir.path(), &file);
    flag.args(["--timeout", "1.5"]);
    let verdict = validate(flag, "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.5 s."
    );
    let mut env = with_config(dir.path(), &file);
    env.env("CONNHOST_TIMEOUT", "1.2");
    let verdict = validate(env, "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.2 s."
    );
}

#[test]
fn connhost_config_names_the_file_too() {
    let dir = PluginDir::with(&["fixture-hang"]);
    let file = ConfigFile::new("validation_timeout = 1.1\n");
    let mut command = connhost(dir.path());
    command.env("CONNHOST_CONFIG", file.path());
    let verdict = validate(command, "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.1 s."
    );

    // --config wins over the variable.
    let other = ConfigFile::new("validation_timeout = 1.3\n");
    let mut command = with_config(dir.path(), &other);
    command.env("CONNHOST_CONFIG", file.path());
    let verdict = validate(command, "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.3 s."
    );
}

#[test]
fn an_unknown_key_is_an_error_naming_file_line_and_key() {
    let dir = PluginDir::empty();
    let file = ConfigFile::new(
        "# connhost\nvalidation_timeout = 30\n\n[plugin.daytona]\nmax_in_flight = 2\nisolaton = \"process\"\n",
    );
    let out = run(with_config(dir.path(), &file).arg("providers"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let expected = format!(
        "connhost: error: {}:6: unknown key \"isolaton\" in [plugin.daytona]; expected one of isolation, validation_timeout, max_in_flight, max_concurrent, egress, settings\n",
        file.path().display()
    );
    assert_eq!(out.stderr, expected);

    let file = ConfigFile::new("[serve]\nlisten = \"127.0.0.1:0\"\nmax_conections = 4\n");
    let out = run(with_config(dir.path(), &file).arg("serve"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{}:3: unknown key \"max_conections\" in [serve]; expected one of",
            file.path().display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_value_is_an_error_naming_file_line_and_key() {
    let dir = PluginDir::empty();
    let cases = [
        (
            "[plugin.fixture-hang]\nisolation = \"process\"\nvalidation_timeout = 0\n",
            "3: validation_timeout in [plugin.fixture-hang]: must be a positive number of seconds, got 0",
        ),
        (
            "max_in_flight = 0\n",
            "1: max_in_flight: must be from 1 to 65536, got 0",
        ),
        (
            "isolation = \"sandbox\"\n",
            "1: isolation: unknown variant `sandbox`, expected `in-process` or `process`",
        ),
        (
            "\n[worker]\nopen_files = -5\n",
            "3: open_files in [worker]: must be 0 or more, got -5",
        ),
    ];
    for (text, expected) in cases {
        let file = ConfigFile::new(text);
        let out = run(with_config(dir.path(), &file).arg("providers"));
        assert_eq!(out.code, 2, "{text:?}: {}", out.stderr);
        let expected = format!("connhost: error: {}:{expected}", file.path().display());
        assert!(
            out.stderr.starts_with(&expected),
            "{text:?}:\n{}\nexpected:\n{expected}",
            out.stderr
        );
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let dir = PluginDir::empty();
    let missing = dir.path().join("nowhere.toml");
    let out = run(connhost(dir.path())
        .arg("--config")
        .arg(&missing)
        .arg("providers"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "could not read the configuration file {}",
            missing.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_plugins_own_validation_timeout_applies_to_it_alone() {
    let dir = PluginDir::with(&["fixture-hang"]);
    // `_` matches the plugin's `-`.
    let file =
        ConfigFile::new("validation_timeout = 30\n[plugin.fixture_hang]\nvalidation_timeout = 1\n");
    let verdict = validate(with_config(dir.path(), &file), "hangs-forever", "1");
    assert_eq!(verdict["outcome"], "timed_out", "{verdict}");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.0 s."
    );
    // --timeout sets the global value, not the plugin's own.
    let mut flag = with_config(dir.path(), &file);
    flag.args(["--timeout", "2"]);
    let verdict = validate(flag, "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.0 s."
    );

    // Another plugin's table leaves this one on the global value.
    let file =
        ConfigFile::new("validation_timeout = 1.4\n[plugin.daytona]\nvalidation_timeout = 1\n");
    let verdict = validate(with_config(dir.path(), &file), "hangs-forever", "1");
    assert_eq!(
        verdict["error"],
        "The provider did not answer within 1.4 s."
    );
}

#[test]
fn a_plugins_own_bound_on_validations_in_flight_applies_to_it() {
    let dir = PluginDir::with(&["fixture-hang", "fixture-greeter-v1"]);
    let file = ConfigFile::new(
        "max_in_flight = 32\n[plugin.fixture-hang]\nmax_in_flight = 1\nvalidation_timeout = 1\n",
    );
    let server = Server::start(dir.path(), |c| {
        c.arg("--config").arg(file.path());
    });
    let post = |id: &str, key: &str| server.validate(id, key);
    // Times out after 1 s, and holds the only slot while its thread stays
    // blocked (for 60 s: far past this test).
    let first = post("blocks-thread", "60000");
    assert_eq!(first["outcome"], "timed_out", "{first}");
    let second = post("blocks-thread", "1");
    assert_eq!(second["outcome"], "busy", "{second}");
    assert!(
        second["error"]
            .as_str()
            .unwrap()
            .contains("it already has 1 validations in flight"),
        "{second}"
    );
    // Another plugin keeps the global bound (and answers).
    let greeter = post("greeter", "anything");
    assert_eq!(greeter["valid"], true, "{greeter}");
}

#[test]
fn a_plugins_bound_on_concurrent_validations_holds_across_its_providers() {
    let dir = PluginDir::with(&["fixture-hang", "fixture-greeter-v1"]);
    let file =
        ConfigFile::new("[plugin.fixture-hang]\nmax_concurrent = 1\nvalidation_timeout = 1\n");
    let server = Server::start(dir.path(), |c| {
        c.arg("--config").arg(file.path());
    });
    let post = |id: &str, key: &str| server.validate(id, key);
    // Holds the plugin's only slot while its thread stays blocked.
    let first = post("blocks-thread", "60000");
    assert_eq!(first["outcome"], "timed_out", "{first}");
    // Another provider of the same plugin is refused by the plugin's bound
    // (its own bound is the default 32).
    let other = post("slow", "1");
    assert_eq!(other["outcome"], "busy", "{other}");
    assert!(
        other["error"]
            .as_str()
            .unwrap()
            .contains("its providers already have 1 validations in flight"),
        "{other}"
    );
    // Another plugin is not bound by it.
    let greeter = post("greeter", "anything");
    assert_eq!(greeter["valid"], true, "{greeter}");
}

#[test]
fn the_serve_table_fills_in_what_no_flag_or_variable_gave() {
    // Each run stops before serving: a non-loopback address without a
    // token, or a token that cannot be used.
    let dir = PluginDir::empty();
    let serve = |file: &ConfigFile| {
        let mut command = with_config(dir.path(), file);
        command
            .env_remove("CONNHOST_LISTEN")
            .env_remove("CONNHOST_TOKEN")
            .arg("serve");
        command
    };
    let refused =
        |address: &str| format!("refusing to listen on {address} without an access token");

    let file = ConfigFile::new("[serve]\nlisten = \"0.0.0.0:0\"\n");
    let out = run(&mut serve(&file));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&refused("0.0.0.0:0")),
        "the file's address: {}",
        out.stderr
    );
    let out = run(serve(&file).args(["--listen", "0.0.0.0:1"]));
    assert!(
        out.stderr.contains(&refused("0.0.0.0:1")),
        "the flag wins: {}",
        out.stderr
    );
    let out = run(serve(&file).env("CONNHOST_LISTEN", "0.0.0.0:2"));
    assert!(
        out.stderr.contains(&refused("0.0.0.0:2")),
        "the variable wins: {}",
        out.stderr
    );

    // token_file is taken from the file's folder, and CONNHOST_TOKEN wins
    // over it.
    let file = ConfigFile::new("[serve]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"token\"\n");
    let out = run(&mut serve(&file));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let token = file.dir.path().join("token");
    assert!(
        out.stderr.contains(&format!(
            "could not read the token file {}",
            token.display()
        )),
        "{}",
        out.stderr
    );
    let out = run(serve(&file).env("CONNHOST_TOKEN", " "));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the access token is empty (in CONNHOST_TOKEN)"),
        "the variable wins: {}",
        out.stderr
    );
}
