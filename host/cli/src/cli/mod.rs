//! The `connhost` command line: flags in [`args`], text in [`output`],
//! what reaches the terminal (escaped) and how in [`terminal`], and here
//! the commands themselves, each a thin layer over the library.

mod args;
mod config_file;
mod output;
mod terminal;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{CommandFactory as _, FromArgMatches as _};
use connhost::{Connhost, CredentialFields, HostConfig, Outcome};

mod lock;
mod oci;
mod serve;
mod sync;

pub(crate) use args::Cli;
use args::{Command, GlobalArgs};
use config_file::{ConfigFile, Given};
pub(crate) use terminal::eprint;

/// Exit status for a command that worked (and a valid credential).
const OK: u8 = 0;
/// The credential is wrong (rejected, or the form's rules failed), or the
/// inspected file cannot be loaded.
const INVALID: u8 = 1;
/// Usage or setup error (clap uses 2 as well).
pub(crate) const USAGE: u8 = 2;
/// Exit status for success, as an `ExitCode`.
pub(crate) fn success() -> ExitCode {
    ExitCode::from(OK)
}
/// No decision: inconclusive, timed out, or the provider failed.
const UNDECIDED: u8 = 3;

/// Parses the command line and runs the command.
pub(crate) fn run() -> anyhow::Result<ExitCode> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging();
    let file = cli
        .global
        .config
        .as_deref()
        .map(ConfigFile::load)
        .transpose()?;
    let mut config = configure(&cli.global, file.as_ref(), &Given::new(&matches))?;
    if let Command::Lock { .. } = cli.command {
        // The lock file is what `lock` writes, not what it obeys.
        config.trust.locked = false;
    }
    // `inspect` and `push` read a file named on the command line, not the
    // plugins folder's.
    if !matches!(cli.command, Command::Inspect { .. } | Command::Push(_)) {
        connhost::check_config(&config)?;
    }
    let mut command = cli.command;
    // The file's registries for the commands that reach one, unless a
    // flag or variable gave them.
    if let (Some(file), Some((_, sub))) = (&file, matches.subcommand()) {
        let registry = match &mut command {
            Command::Push(args) => Some(&mut args.registry),
            Command::Pull(args) => Some(&mut args.registry),
            Command::Serve(args) => Some(&mut args.registry),
            _ => None,
        };
        if let Some(registry) = registry {
            file.fill_registry(registry, &Given::new(sub));
        }
    }
    match command {
        Command::Lock { add } => lock::run(&config, &add),
        Command::Push(args) => oci::push(&config, &args),
        Command::Pull(args) => oci::pull(&config, &args),
        Command::Inspect { file, json } => {
            let inspection = connhost::inspect(&file, &config);
            if json {
                terminal::print_json(&inspection)?;
            } else {
                terminal::print(&output::inspection(&inspection))?;
            }
            Ok(ExitCode::from(if inspection.loadable {
                OK
            } else {
                INVALID
            }))
        }
        Command::Serve(mut args) => {
            if let (Some(file), Some((_, serve))) = (&file, matches.subcommand()) {
                file.fill_serve(&mut args, &Given::new(serve));
            }
            serve::run(config, args)
        }
        Command::Providers { json } => {
            let host = Connhost::start(&config);
            let list = host.providers();
            if json {
                terminal::print_json(&list)?;
            } else {
                terminal::print(&output::providers(&list))?;
                warn_failures(&host);
            }
            Ok(ExitCode::from(OK))
        }
        Command::Schema { provider } => {
            let host = Connhost::start(&config);
            let schema = host.schema(&provider)?;
            // JSON is all `schema` prints, and it is read on terminals.
            terminal::print_terminal_json(&schema)?;
            Ok(ExitCode::from(OK))
        }
        Command::Plugins { json } => {
            let host = Connhost::start(&config);
            let synced = config.plugins_dir.as_deref().and_then(sync::recorded);
            if json {
                match synced {
                    // Each plugin `serve --sync` wrote names its source.
                    Some(synced) => terminal::print_json(&connhost_http::report_with_sources(
                        &host.plugins(),
                        &synced,
                    ))?,
                    None => terminal::print_json(&host.plugins())?,
                }
            } else {
                terminal::print(&output::report(&host.plugins()))?;
            }
            Ok(ExitCode::from(OK))
        }
        Command::Validate {
            provider,
            fields,
            json,
            show_document,
        } => {
            let fields = parse_fields(&fields)?;
            let host = Connhost::start(&config);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("could not start the async runtime")?;
            let verdict = runtime.block_on(host.validate(&provider, fields))?;
            // Do not wait for a provider that never finished.
            runtime.shutdown_background();
            if json {
                terminal::print_json(&connhost_http::VerdictBody::json(&verdict, show_document))?;
            } else {
                terminal::print(&output::verdict(&provider, &verdict, show_document))?;
            }
            Ok(ExitCode::from(match verdict.outcome() {
                Outcome::Valid => OK,
                Outcome::InvalidFields | Outcome::Rejected => INVALID,
                Outcome::Inconclusive
                | Outcome::TimedOut
                | Outcome::ProviderFault
                | Outcome::Busy => UNDECIDED,
            }))
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CONNHOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,connhost::loader=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(true)
        .try_init();
}

/// The host's configuration: the flags (and their environment variables)
/// over the configuration `file` over the defaults.
fn configure(
    global: &GlobalArgs,
    file: Option<&ConfigFile>,
    given: &Given<'_>,
) -> anyhow::Result<HostConfig> {
    let mut config = host_config(global)?;
    if let Some(file) = file {
        file.fill_host(&mut config, given);
    }
    Ok(config)
}

/// The host's configuration from the flags alone.
fn host_config(global: &GlobalArgs) -> anyhow::Result<HostConfig> {
    if !(global.timeout.is_finite() && global.timeout > 0.0) {
        bail!(
            "--timeout must be a positive number of seconds, got {}",
            global.timeout
        );
    }
    let mut settings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for setting in &global.settings {
        let (name, value) = setting
            .split_once('=')
            .with_context(|| format!("--setting {setting:?} is not PLUGIN.KEY=VALUE"))?;
        let (plugin, key) = name
            .split_once('.')
            .with_context(|| format!("--setting {setting:?} is not PLUGIN.KEY=VALUE"))?;
        settings
            .entry(plugin.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
    }
    let mut config = HostConfig::with_plugins_dir(&global.plugins)
        .with_experimental(global.experimental)
        .with_validation_timeout(
            Duration::try_from_secs_f64(global.timeout)
                .with_context(|| format!("--timeout {} is too large", global.timeout))?,
        )
        .with_max_in_flight(global.max_in_flight)
        .with_max_plugin_size(global.max_plugin_size)
        .with_isolation(global.isolation)
        .with_trust(
            connhost::TrustConfig::default()
                .with_check_permissions(!global.insecure_permissions)
                .with_locked(global.locked),
        );
    config.settings = settings;
    config.trust.trusted_keys = global.trusted_keys.clone();
    config.trust.lock_file = global.lock_file.clone();
    config.cache_dir = global.cache_dir.clone();
    Ok(config)
}

fn warn_failures(host: &Connhost) {
    let failed = host.load_report().failed.len();
    if failed > 0 {
        eprint(&format!(
            "note: {failed} plugin file(s) or provider(s) were not loaded; `connhost plugins` says why.\n"
        ));
    }
}

/// `NAME=VALUE` pairs; a value of `-` comes from standard input.
fn parse_fields(raw: &[String]) -> anyhow::Result<CredentialFields> {
    let mut fields = CredentialFields::new();
    let mut stdin_used = false;
    for pair in raw {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--field takes NAME=VALUE, got {:?}", redact_pair(pair));
        };
        if name.is_empty() {
            bail!("--field has an empty NAME in {:?}", redact_pair(pair));
        }
        let value = if value == "-" {
            if stdin_used {
                bail!("only one --field may read its value from standard input (-)");
            }
            stdin_used = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .with_context(|| {
                    format!("could not read the value of {name} from standard input")
                })?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_owned()
        } else {
            value.to_owned()
        };
        if fields.insert(name.to_owned(), value).is_some() {
            bail!("--field {name} is given more than once");
        }
    }
    Ok(fields)
}

/// A malformed pair without its value (it may be a secret typed wrongly).
fn redact_pair(pair: &str) -> String {
    if pair.contains('=') {
        format!("{}=<redacted>", pair.split('=').next().unwrap_or(""))
    } else {
        "<redacted>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_malformed_pairs_do_not_echo_values() {
        let parsed = parse_fields(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(parsed["a"], "1");
        assert_eq!(parsed["b"], "x=y");
        let err = parse_fields(&["sk-secret-value".into()])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sk-secret-value"), "{err}");
        let err = parse_fields(&["a=1".into(), "a=2".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than once"), "{err}");
    }
}
