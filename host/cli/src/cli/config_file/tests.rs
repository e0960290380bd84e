//! The configuration file's unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use connhost::{HostConfig, Isolation, PluginPolicy};

use super::super::args::{RateSetting, RegistryArgs, ServeArgs};
use super::egress::EgressFile;
use super::plugin::PluginFile;
use super::serve::ServeFile;
use super::table::{Key, Table as _};
use super::worker::WorkerFile;
use super::{ConfigFile, Given};

fn parse(text: &str) -> ConfigFile {
    ConfigFile::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    ConfigFile::parse(text).expect_err("an error")
}

/// The file's values, filled into a default configuration.
fn host(text: &str) -> HostConfig {
    let mut config = HostConfig::default();
    parse(text).fill_host(&mut config, &Given(None));
    config
}

#[test]
fn every_key_reaches_the_configuration() {
    let config = host(
        r#"
plugins = "/srv/plugins"
experimental = true
isolation = "process"
validation_timeout = 2.5
max_in_flight = 7
max_plugin_size = 1000

[worker]
sandbox = false
memory_limit_mb = 0
open_files = 64
cpu_seconds = 9
start_timeout = 3
crash_limit = 2
crash_window = 20

[plugin.daytona]
isolation = "in-process"
validation_timeout = 10
max_in_flight = 8
max_concurrent = 4
egress = ["127.0.0.1:9999", "*.daytona.io"]
[plugin.daytona.settings]
api_url = "http://127.0.0.1:9999"
retries = 3

[plugin.builtin.settings]
openai_base_url = "http://127.0.0.1:1"
"#,
    );
    assert_eq!(config.plugins_dir, Some(PathBuf::from("/srv/plugins")));
    assert!(config.experimental);
    assert_eq!(config.isolation, Isolation::Process);
    assert_eq!(config.validation_timeout, Duration::from_millis(2500));
    assert_eq!((config.max_in_flight, config.max_plugin_size), (7, 1000));
    let worker = &config.worker;
    assert!(!worker.sandbox);
    assert_eq!(worker.memory_limit, None, "0 is no limit");
    assert_eq!((worker.open_files, worker.cpu_seconds), (Some(64), Some(9)));
    assert_eq!(worker.start_timeout, Duration::from_secs(3));
    assert_eq!((worker.crash_limit, worker.crash_window.as_secs()), (2, 20));
    assert_eq!(
        config.policy_for("daytona"),
        PluginPolicy::default()
            .with_isolation(Isolation::InProcess)
            .with_validation_timeout(Duration::from_secs(10))
            .with_max_in_flight(8)
            .with_max_concurrent(4)
            .with_egress(vec!["127.0.0.1:9999".into(), "*.daytona.io".into()])
    );
    assert_eq!(
        config.settings["daytona"]["api_url"],
        "http://127.0.0.1:9999"
    );
    assert_eq!(config.settings["daytona"]["retries"], "3");
    assert_eq!(
        config.settings["builtin"]["openai_base_url"],
        "http://127.0.0.1:1"
    );
    assert!(!config.plugins.contains_key("builtin"));
}

#[test]
fn an_empty_file_changes_nothing() {
    let config = host("# nothing\n");
    let default = HostConfig::default();
    assert_eq!(config.validation_timeout, default.validation_timeout);
    assert_eq!(config.worker, default.worker);
    assert!(config.plugins.is_empty() && config.settings.is_empty());
}

#[test]
fn memory_is_given_in_mebibytes() {
    let config = host("[worker]\nmemory_limit_mb = 512\n");
    assert_eq!(config.worker.memory_limit, Some(512 << 20));
}

#[test]
fn the_jail_and_egress_bounds_are_configured() {
    let config = host(
        "[worker]\nuser = \"1234:5678\"\nmax_threads = 40\ntmp_size_mb = 2\nrequire = [\"cgroup\", \"seccomp\", \"seccomp\"]\n\n[egress]\nmax_body_mb = 1\nmax_concurrent = 3\n",
    );
    let worker = &config.worker;
    assert_eq!(
        worker.user,
        Some(connhost::Identity {
            uid: 1234,
            gid: 5678
        })
    );
    assert_eq!(worker.max_threads, Some(40));
    assert_eq!(worker.tmp_size, 2 << 20);
    assert_eq!(
        worker.require,
        [
            connhost::Layer::Seccomp,
            connhost::Layer::MemoryCgroup,
            connhost::Layer::PidsCgroup
        ]
    );
    assert_eq!(config.http.max_body_bytes, 1 << 20);
    assert_eq!(config.http.max_concurrent, 3);
    assert_eq!(
        host("[worker]\nuser = 4321\n").worker.user.unwrap().gid,
        4321
    );
    for (text, expected) in [
        (
            "[worker]\nuser = \"root\"\n",
            "2: user in [worker]: \"root\" is root",
        ),
        (
            "[worker]\nuser = \"0:0\"\n",
            "workers must run as an unprivileged user",
        ),
        (
            "[worker]\nrequire = [\"pid-namespace\"]\n",
            "unknown sandbox layer \"pid-namespace\"",
        ),
        ("[egress]\nmax_body_mb = 0\n", "2: max_body_mb in [egress]"),
    ] {
        let message = error(text);
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[test]
fn an_unknown_key_names_its_line_table_and_the_keys_there_are() {
    let text =
        "validation_timeout = 3\n\n[plugin.daytona]\nmax_in_flight = 2\nisolaton = \"process\"\n";
    let message = error(text);
    assert!(
        message.starts_with("5: unknown key \"isolaton\" in [plugin.daytona]; expected one of"),
        "{message}"
    );
    assert!(message.contains("isolation"), "{message}");
    let message = error("listn = \"127.0.0.1:1\"\n");
    assert!(
        message.starts_with("1: unknown key \"listn\" at the top level"),
        "{message}"
    );
    let message = error("[serve]\nlistn = \"127.0.0.1:1\"\n");
    assert!(
        message.starts_with("2: unknown key \"listn\" in [serve]"),
        "{message}"
    );
}

#[test]
fn a_bad_value_names_its_line_and_key() {
    let cases = [
        (
            "validation_timeout = 0\n",
            "1: validation_timeout: must be a positive number of seconds, got 0",
        ),
        (
            "\n[plugin.x]\nvalidation_timeout = -1\n",
            "3: validation_timeout in [plugin.x]: must be a positive number of seconds",
        ),
        (
            "max_in_flight = 0\n",
            "1: max_in_flight: must be from 1 to 65536, got 0",
        ),
        (
            "[plugin.x]\nmax_in_flight = 100000\n",
            "2: max_in_flight in [plugin.x]: must be from 1 to 65536",
        ),
        (
            "isolation = \"sandboxed\"\n",
            "1: isolation: unknown variant `sandboxed`",
        ),
        ("[serve]\nlisten = \"localhost\"\n", "2: listen in [serve]:"),
        (
            "[serve]\ncors_origins = [\"https://a.example/path\"]\n",
            "2: cors_origins in [serve]:",
        ),
        (
            "[worker]\ncrash_limit = 0\n",
            "2: crash_limit in [worker]: must be from 1 to",
        ),
        (
            "[worker]\nopen_files = -1\n",
            "2: open_files in [worker]: must be 0 or more, got -1",
        ),
        ("experimental = \"yes\"\n", "1: experimental: invalid type"),
        (
            "[serve]\n\nclient_rate = \"30/m\"\n",
            "3: client_rate in [serve]: \"30/m\" is not a rate: give N/s, N/min or N/h",
        ),
        (
            "[serve]\nprovider_rate = \"0/s\"\n",
            "2: provider_rate in [serve]: \"0/s\": a rate needs at least 1",
        ),
        (
            "[serve]\nclient_burst = 0\n",
            "2: client_burst in [serve]: must be from 1 to",
        ),
        (
            "[serve]\nrate_limit_store = \"127.0.0.1:6379\"\n",
            "2: rate_limit_store in [serve]: not a redis:// address: give redis://HOST:PORT[/DB]",
        ),
        (
            "[serve]\nrate_limit_store_failure = \"open\"\n",
            "2: rate_limit_store_failure in [serve]: \"open\": give local",
        ),
        (
            "[plugin.x]\negress = [\"https://api.example.com/\"]\n",
            "2: egress in [plugin.x]: \"https://api.example.com/\" is not an egress pattern",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(message.starts_with(expected), "{text:?}: {message}");
    }
}

#[test]
fn the_builtins_take_only_settings() {
    let message = error("\n[plugin.builtin]\nvalidation_timeout = 3\n");
    assert!(
        message.starts_with("2: [plugin.builtin] takes only settings and egress"),
        "{message}"
    );
    let config = host("[plugin.builtin]\negress = [\"api.openai.com\"]\n");
    assert_eq!(
        config.policy_for("builtin").egress,
        Some(vec!["api.openai.com".to_owned()])
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let message = error("plugins = \"a\"\nexperimental = \n");
    assert!(message.starts_with("2:"), "{message}");
}

#[test]
fn load_names_the_file_and_resolves_paths_from_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connhost.toml");
    std::fs::write(
        &path,
        "plugins = \"plugins\"\ncache_dir = \"/abs\"\nbogus = 1\n",
    )
    .unwrap();
    let message = format!("{:#}", ConfigFile::load(&path).unwrap_err());
    assert!(
        message.starts_with(&format!("{}:3: unknown key \"bogus\"", path.display())),
        "{message}"
    );
    std::fs::write(&path, "plugins = \"plugins\"\ncache_dir = \"/abs\"\n").unwrap();
    let file = ConfigFile::load(&path).unwrap();
    assert_eq!(file.plugins, Some(dir.path().join("plugins")));
    assert_eq!(file.cache_dir, Some(PathBuf::from("/abs")));
    let missing = dir.path().join("missing.toml");
    let message = format!("{:#}", ConfigFile::load(&missing).unwrap_err());
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

/// `connhost serve ARGS`' flags with the file's `[serve]` filled in.
fn serve_args(args: &[&str], text: &str) -> ServeArgs {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = super::super::Cli::command()
        .try_get_matches_from(["connhost", "serve"].iter().chain(args))
        .unwrap();
    let cli = super::super::Cli::from_arg_matches(&matches).unwrap();
    let super::super::Command::Serve(mut serve) = cli.command else {
        unreachable!("the serve command")
    };
    let given = Given::new(matches.subcommand().unwrap().1);
    parse(text).fill_serve(&mut serve, &given);
    serve
}

#[test]
fn rate_limits_default_on_the_file_fills_them_and_flags_win() {
    let n = |n| NonZeroU32::new(n).unwrap();
    let default = serve_args(&[], "");
    assert_eq!(
        default.client_rate.with_burst(default.client_burst),
        Some(connhost_http::DEFAULT_CLIENT_LIMIT)
    );
    assert_eq!(
        default.provider_rate.with_burst(default.provider_burst),
        Some(connhost_http::DEFAULT_PROVIDER_LIMIT)
    );
    let file = "[serve]\nclient_rate = \"off\"\nclient_burst = 3\nprovider_rate = \"5/s\"\nprovider_burst = 7\n";
    let filled = serve_args(&[], file);
    assert_eq!(filled.client_rate, RateSetting(None));
    assert_eq!(filled.client_burst, n(3));
    assert_eq!(filled.provider_rate.to_string(), "5/s");
    assert_eq!(filled.provider_burst, n(7));
    let flags = serve_args(&["--client-rate", "2/h", "--provider-burst", "9"], file);
    assert_eq!(flags.client_rate.to_string(), "2/h", "the flag wins");
    assert_eq!(flags.client_burst, n(3), "the file fills in");
    assert_eq!(flags.provider_burst, n(9), "the flag wins");
    use clap::CommandFactory as _;
    let error = super::super::Cli::command()
        .try_get_matches_from(["connhost", "serve", "--client-rate", "3/m"])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--client-rate") && error.contains("give N/s, N/min or N/h"),
        "{error}"
    );
}

#[test]
fn sync_references_and_interval_come_from_the_file_and_flags_win() {
    let default = serve_args(&[], "");
    assert!(default.sync.is_empty());
    assert_eq!(default.sync_interval, Duration::from_secs(60));
    let file = "[serve]\nsync = [\"r.example/a:1\", \"r.example/b:2\"]\nsync_interval = \"5m\"\n";
    let filled = serve_args(&[], file);
    assert_eq!(filled.sync, ["r.example/a:1", "r.example/b:2"]);
    assert_eq!(filled.sync_interval, Duration::from_secs(300));
    assert_eq!(
        serve_args(&[], "[serve]\nsync_interval = 30\n").sync_interval,
        Duration::from_secs(30)
    );
    let flags = serve_args(&["--sync", "r.example/c:3", "--sync-interval", "1s"], file);
    assert_eq!(flags.sync, ["r.example/c:3"], "the flag wins");
    assert_eq!(flags.sync_interval, Duration::from_secs(1), "the flag wins");
    for (text, expected) in [
        (
            "[serve]\nsync_interval = \"soon\"\n",
            "2: sync_interval in [serve]: \"soon\" is not a duration",
        ),
        (
            "[serve]\nsync_interval = 0\n",
            "2: sync_interval in [serve]: must be a positive number of seconds",
        ),
    ] {
        let message = error(text);
        assert!(message.starts_with(expected), "{text:?}: {message}");
    }
}

#[test]
fn flags_given_win_over_the_file_and_settings_fill_in() {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = super::super::Cli::command()
        .try_get_matches_from([
            "connhost",
            "providers",
            "--timeout",
            "5",
            "--setting",
            "p.a=flag",
        ])
        .unwrap();
    let cli = super::super::Cli::from_arg_matches(&matches).unwrap();
    let mut config = super::super::host_config(&cli.global).unwrap();
    parse("validation_timeout = 9\nmax_in_flight = 3\n[plugin.p.settings]\na = \"file\"\nb = \"file\"\n")
        .fill_host(&mut config, &Given::new(&matches));
    assert_eq!(
        config.validation_timeout,
        Duration::from_secs(5),
        "the flag wins"
    );
    assert_eq!(config.max_in_flight, 3, "the file fills in the default");
    assert_eq!(config.settings["p"]["a"], "flag");
    assert_eq!(config.settings["p"]["b"], "file");
}

#[test]
fn the_trust_keys_reach_the_configuration() {
    let config = host(
        "insecure_permissions = true\ntrusted_keys = \"/etc/connhost/keys\"\nlock_file = \"/etc/connhost/connhost.lock\"\nlocked = true\n",
    );
    assert_eq!(
        config.trust,
        connhost::TrustConfig::default()
            .with_check_permissions(false)
            .with_trusted_keys(PathBuf::from("/etc/connhost/keys"))
            .with_lock_file(PathBuf::from("/etc/connhost/connhost.lock"))
            .with_locked(true)
    );
    assert!(host("").trust.check_permissions, "on by default");
}

/// Every table [`table!`] declares, by its header in the file (`""`: the
/// top level; a plugin's table as the example names one).
fn tables() -> [(&'static str, &'static [Key]); 5] {
    [
        ("", ConfigFile::KEYS),
        ("serve", ServeFile::KEYS),
        ("worker", WorkerFile::KEYS),
        ("egress", EgressFile::KEYS),
        ("plugin.daytona", PluginFile::KEYS),
    ]
}

#[test]
fn every_option_the_file_gives_way_to_is_one_of_its_command() {
    use clap::CommandFactory as _;
    let cli = super::super::Cli::command();
    let sub = |name: &str| cli.find_subcommand(name).expect("a command");
    for (table, keys) in tables() {
        for key in keys {
            let commands = match key.sink {
                "host" => vec![&cli],
                "serve" => vec![sub("serve")],
                // Every command that reaches a registry.
                "registry" => vec![sub("push"), sub("pull"), sub("serve")],
                _ => {
                    assert_eq!(key.flag, None, "[{table}] {key:?}");
                    continue;
                }
            };
            for command in commands {
                if let Some(id) = key.flag {
                    assert!(
                        command.get_arguments().any(|arg| arg.get_id() == id),
                        "[{table}] {key:?}: `connhost {}` has no option {id:?}",
                        command.get_name()
                    );
                }
            }
        }
    }
}

/// The keys `connhost.example.toml` shows, set or commented out, by the
/// header of their table (`""`: the top level).
fn example_keys() -> BTreeMap<String, BTreeSet<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../connhost.example.toml");
    let text = std::fs::read_to_string(path).expect("connhost.example.toml");
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            table = header[..header.find(']').expect("a header")].to_owned();
            continue;
        }
        let line = line.strip_prefix('#').map_or(line, str::trim_start);
        if let Some((key, _)) = line.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                keys.entry(table.clone())
                    .or_default()
                    .insert(key.to_owned());
            }
        }
    }
    keys
}

#[test]
fn the_example_file_shows_every_key_and_no_other() {
    let example = example_keys();
    for (table, keys) in tables() {
        let names: BTreeSet<String> = keys.iter().map(|k| k.name.to_owned()).collect();
        let shown = example.get(table).cloned().unwrap_or_default();
        assert_eq!(
            shown, names,
            "[{table}]: the keys connhost.example.toml shows (left) and those there are (right)"
        );
    }
}

#[test]
fn a_rate_limit_store_comes_from_the_file_unless_a_flag_gives_one() {
    use connhost_http::StoreFailure;
    let default = serve_args(&[], "");
    assert!(default.rate_limit_store.is_none());
    assert_eq!(default.rate_limit_store_failure, StoreFailure::Local);
    let file = "[serve]\nrate_limit_store = \"redis://10.0.0.5:6379/1\"\nrate_limit_store_failure = \"closed\"\n";
    let filled = serve_args(&[], file);
    assert_eq!(
        filled.rate_limit_store.unwrap().to_string(),
        "redis://10.0.0.5:6379/1"
    );
    assert_eq!(filled.rate_limit_store_failure, StoreFailure::Closed);
    let flags = serve_args(
        &[
            "--rate-limit-store",
            "redis://:pw@127.0.0.1:7000",
            "--rate-limit-store-failure",
            "local",
        ],
        file,
    );
    assert_eq!(
        flags.rate_limit_store.unwrap().to_string(),
        "redis://127.0.0.1:7000/0",
        "the flag wins, and its password is not shown"
    );
    assert_eq!(flags.rate_limit_store_failure, StoreFailure::Local);
}

/// `connhost COMMAND ARGS`' registry flags with the file's filled in.
fn registry_args(command: &str, args: &[&str], text: &str) -> RegistryArgs {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let operand: &[&str] = match command {
        "push" => &["lib.so", "r.example/a:1"],
        "pull" => &["r.example/a:1"],
        _ => &[],
    };
    let matches = super::super::Cli::command()
        .try_get_matches_from(["connhost", command].iter().chain(operand).chain(args))
        .unwrap();
    let cli = super::super::Cli::from_arg_matches(&matches).unwrap();
    let mut registry = match cli.command {
        super::super::Command::Push(a) => a.registry,
        super::super::Command::Pull(a) => a.registry,
        super::super::Command::Serve(a) => a.registry,
        _ => unreachable!("a command that reaches registries"),
    };
    let given = Given::new(matches.subcommand().unwrap().1);
    parse(text).fill_registry(&mut registry, &given);
    registry
}

#[test]
fn insecure_registries_come_from_the_file_for_every_command_that_reaches_one_and_flags_win() {
    let file = "insecure_registries = [\"lab.internal:5000\", \"mirror.lan\"]\n";
    for command in ["push", "pull", "serve"] {
        assert!(
            registry_args(command, &[], "")
                .insecure_registries
                .is_empty(),
            "{command}: none by default"
        );
        assert_eq!(
            registry_args(command, &[], file).insecure_registries,
            ["lab.internal:5000", "mirror.lan"],
            "{command}: the file fills them in"
        );
        assert_eq!(
            registry_args(command, &["--insecure-registry", "other.lan:80"], file)
                .insecure_registries,
            ["other.lan:80"],
            "{command}: the flag wins"
        );
    }
    // The key is the file's top level, not [serve]'s.
    let message = error("[serve]\ninsecure_registries = [\"lab.internal\"]\n");
    assert!(
        message.contains("unknown key \"insecure_registries\" in [serve]"),
        "{message}"
    );
    for (text, expected) in [
        (
            "insecure_registries = [\"http://lab.internal:5000\"]\n",
            "1: insecure_registries: \"http://lab.internal:5000\" is not a registry",
        ),
        (
            "insecure_registries = [\"lab.internal/plugins\"]\n",
            "1: insecure_registries: \"lab.internal/plugins\" is not a registry",
        ),
        (
            "insecure_registries = \"lab.internal\"\n",
            "1: insecure_registries:",
        ),
    ] {
        let message = error(text);
        assert!(message.starts_with(expected), "{text:?}: {message}");
    }
}
