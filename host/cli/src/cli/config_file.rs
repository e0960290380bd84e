//! The configuration file (`--config FILE`, env `CONNHOST_CONFIG`): the
//! global defaults, the `serve` command's options, the worker processes'
//! limits, and a table per plugin (`[plugin.NAME]`: isolation, bounds,
//! egress grants, settings). See `connhost.example.toml` at the repository's root.
//!
//! **Precedence.** A flag given on the command line, then its environment
//! variable, then the file, then the built-in default: the file only fills
//! in what no flag or variable gave ([`ConfigFile::fill_host`],
//! [`ConfigFile::fill_serve`]). A plugin's own table wins over the global
//! default wherever that came from.
//!
//! **Errors** name the file, the line and the key:
//! `connhost.toml:7: unknown key "isolaton" in [plugin.daytona]; expected
//! one of ...`. Every table refuses unknown keys, and every value is
//! checked where it is read, so the parser's span points at it.
//!
//! Relative paths in the file (`plugins`, `cache_dir`, `token_file`) are
//! taken from the file's own folder.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::ArgMatches;
use connhost::{HostConfig, Isolation, PluginPolicy, WorkerConfig};
use serde::{Deserialize, Deserializer};

use super::args::{RateSetting, ServeArgs};

/// The settings scope of the built-in providers, `[plugin.builtin]`.
const BUILTIN: &str = "builtin";

/// A configuration file as read: every key optional, every value checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// `--plugins`.
    plugins: Option<PathBuf>,
    /// `--experimental`.
    experimental: Option<bool>,
    /// `--isolation`: where plugins run unless their table says otherwise.
    isolation: Option<Isolation>,
    /// `--timeout`.
    validation_timeout: Option<Seconds>,
    /// `--max-in-flight`.
    max_in_flight: Option<InFlightBound>,
    /// `--max-plugin-size`.
    max_plugin_size: Option<Int<1, { i64::MAX }>>,
    /// `serve --cache-dir`.
    cache_dir: Option<PathBuf>,
    /// `--insecure-permissions`.
    insecure_permissions: Option<bool>,
    /// `--trusted-keys`.
    trusted_keys: Option<PathBuf>,
    /// `--lock-file`.
    lock_file: Option<PathBuf>,
    /// `--locked`.
    locked: Option<bool>,
    /// The `serve` command's options.
    #[serde(default)]
    serve: ServeFile,
    /// [`HostConfig::worker`].
    #[serde(default)]
    worker: WorkerFile,
    /// [`HostConfig::http`]: bounds on the HTTP the host performs for
    /// each plugin.
    #[serde(default)]
    egress: EgressFile,
    /// `[plugin.NAME]` tables.
    #[serde(default)]
    plugin: BTreeMap<String, toml::Spanned<PluginFile>>,
}

/// The `[serve]` table: `connhost serve`'s flags, by the same names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    cors_origins: Option<Vec<CorsOrigin>>,
    metrics_open: Option<bool>,
    body_limit: Option<Int<1, { i64::MAX }>>,
    body_timeout: Option<Seconds>,
    no_watch: Option<bool>,
    shutdown_grace: Option<GraceSeconds>,
    max_connections: Option<Int<1, { u32::MAX as i64 }>>,
    client_rate: Option<RateText>,
    client_burst: Option<Int<1, { u32::MAX as i64 }>>,
    provider_rate: Option<RateText>,
    provider_burst: Option<Int<1, { u32::MAX as i64 }>>,
}

/// The `[worker]` table: [`WorkerConfig`]. A limit of 0 sets none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerFile {
    sandbox: Option<bool>,
    memory_limit_mb: Option<Int<0, { (u64::MAX >> 20) as i64 }>>,
    open_files: Option<Int<0, { i64::MAX }>>,
    cpu_seconds: Option<Int<0, { i64::MAX }>>,
    max_threads: Option<Int<0, { i64::MAX }>>,
    user: Option<WorkerUser>,
    tmp_size_mb: Option<Int<1, { (u64::MAX >> 20) as i64 }>>,
    require: Option<Vec<RequiredLayers>>,
    start_timeout: Option<Seconds>,
    crash_limit: Option<Int<1, { u32::MAX as i64 }>>,
    crash_window: Option<Seconds>,
}

/// The `[egress]` table: [`connhost::HttpLimits`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressFile {
    max_body_mb: Option<Int<1, { (u64::MAX >> 20) as i64 }>>,
    max_concurrent: Option<Int<1, { u32::MAX as i64 }>>,
}

/// `[worker] user`: a user name, `UID` or `UID:GID`, checked where it is
/// read (and looked up then).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "toml::Value")]
struct WorkerUser(connhost::Identity);

impl TryFrom<toml::Value> for WorkerUser {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, String> {
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            other => return Err(format!("a user name, UID or \"UID:GID\", got {other}")),
        };
        text.parse().map(WorkerUser)
    }
}

/// One entry of `[worker] require`: a layer, or a group of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct RequiredLayers(Vec<connhost::Layer>);

impl TryFrom<String> for RequiredLayers {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        connhost::Layer::parse_group(&name).map(RequiredLayers)
    }
}

/// A `[plugin.NAME]` table: [`PluginPolicy`] and the plugin's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFile {
    isolation: Option<Isolation>,
    validation_timeout: Option<Seconds>,
    max_in_flight: Option<InFlightBound>,
    max_concurrent: Option<InFlightBound>,
    /// The hosts the plugin may call ([`connhost::egress::Pattern`]s),
    /// instead of those its providers declare.
    egress: Option<Vec<EgressPattern>>,
    #[serde(default)]
    settings: BTreeMap<String, SettingValue>,
}

/// An egress pattern, checked where it is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct EgressPattern(String);

impl TryFrom<String> for EgressPattern {
    type Error = String;

    fn try_from(pattern: String) -> Result<Self, String> {
        pattern.parse::<connhost::egress::Pattern>()?;
        Ok(EgressPattern(pattern))
    }
}

/// A positive number of seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "f64")]
struct Seconds(Duration);

impl TryFrom<f64> for Seconds {
    type Error = String;

    fn try_from(seconds: f64) -> Result<Self, String> {
        Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Seconds)
            .ok_or_else(|| format!("must be a positive number of seconds, got {seconds}"))
    }
}

/// A number of seconds, 0 or more.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "f64")]
struct GraceSeconds(f64);

impl TryFrom<f64> for GraceSeconds {
    type Error = String;

    fn try_from(seconds: f64) -> Result<Self, String> {
        Duration::try_from_secs_f64(seconds)
            .map(|_| GraceSeconds(seconds))
            .map_err(|_| format!("must be a number of seconds, 0 or more, got {seconds}"))
    }
}

/// An integer from `MIN` to `MAX`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
struct Int<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> TryFrom<i64> for Int<MIN, MAX> {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Int(value))
        } else if MAX == i64::MAX {
            Err(format!("must be {MIN} or more, got {value}"))
        } else {
            Err(format!("must be from {MIN} to {MAX}, got {value}"))
        }
    }
}

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    /// The value (never negative: every `MIN` here is 0 or 1).
    fn get(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0)
    }

    /// The value, `None` for 0 ("no limit").
    fn limit(self) -> Option<u64> {
        Some(self.get()).filter(|&v| v > 0)
    }
}

/// The bound on validations in flight: as `--max-in-flight` takes it.
type InFlightBound = Int<1, 65_536>;

/// A rate limit's rate, as `--client-rate` takes it: `30/min`, or `off`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct RateText(RateSetting);

impl TryFrom<String> for RateText {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        connhost_http::parse_rate(&text).map(|rate| RateText(RateSetting(rate)))
    }
}

/// A burst, as `--client-burst` takes it.
fn burst(n: Int<1, { u32::MAX as i64 }>) -> NonZeroU32 {
    u32::try_from(n.get())
        .ok()
        .and_then(NonZeroU32::new)
        .unwrap_or(NonZeroU32::MAX)
}

/// A browser origin, as `--cors-origin` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct CorsOrigin(String);

impl TryFrom<String> for CorsOrigin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        connhost_http::parse_cors_origin(&origin)?;
        Ok(CorsOrigin(origin))
    }
}

/// A plugin setting: a string, or a number or boolean taken as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SettingValue(String);

impl<'de> Deserialize<'de> for SettingValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SettingValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which options a command line gave, itself or through an environment
/// variable: those the file must not change.
pub(crate) struct Given<'a>(Option<&'a ArgMatches>);

impl<'a> Given<'a> {
    /// The options given in `matches`.
    pub(crate) fn new(matches: &'a ArgMatches) -> Self {
        Given(Some(matches))
    }

    /// Whether the option `id` (clap's id: the field's name) was given on
    /// the command line or in its environment variable.
    pub(crate) fn has(&self, id: &str) -> bool {
        self.0.is_some_and(|m| {
            matches!(
                m.try_get_raw(id).ok().and_then(|_| m.value_source(id)),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
    }
}

impl ConfigFile {
    /// Reads and checks the file at `path`. Its errors name the file, and
    /// for what is in it the line and the key.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the configuration file {}", path.display()))?;
        let mut file = Self::parse(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for relative in [
            &mut file.plugins,
            &mut file.cache_dir,
            &mut file.serve.token_file,
            &mut file.trusted_keys,
            &mut file.lock_file,
        ] {
            if let Some(p) = relative.as_mut() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Parses the text of a file; an error is `LINE: message` (or
    /// ` message` when the parser knows no place).
    fn parse(text: &str) -> Result<Self, String> {
        let file: Self = toml::from_str(text).map_err(|e| describe(text, &e))?;
        if let Some(builtin) = file.plugin.get(BUILTIN) {
            let own = builtin.get_ref();
            if own.isolation.is_some()
                || own.validation_timeout.is_some()
                || own.max_in_flight.is_some()
                || own.max_concurrent.is_some()
            {
                return Err(format!(
                    "{}: [plugin.{BUILTIN}] takes only settings and egress: the built-in providers run in the host, with the global isolation and bounds",
                    line_of(text, builtin.span().start)
                ));
            }
        }
        Ok(file)
    }

    /// Fills `config` (built from the flags) with what the file sets and no
    /// flag or environment variable gave. Settings: a `--setting` or a
    /// `CONNHOST_PLUGIN_<PLUGIN>_<KEY>` variable wins over the file.
    pub(crate) fn fill_host(&self, config: &mut HostConfig, given: &Given<'_>) {
        fill(
            given,
            "plugins",
            &mut config.plugins_dir,
            self.plugins.clone().map(Some),
        );
        fill(
            given,
            "experimental",
            &mut config.experimental,
            self.experimental,
        );
        fill(given, "isolation", &mut config.isolation, self.isolation);
        fill(
            given,
            "timeout",
            &mut config.validation_timeout,
            self.validation_timeout.map(|s| s.0),
        );
        fill(
            given,
            "max_in_flight",
            &mut config.max_in_flight,
            self.max_in_flight.map(in_flight),
        );
        fill(
            given,
            "max_plugin_size",
            &mut config.max_plugin_size,
            self.max_plugin_size.map(Int::get),
        );
        self.fill_trust(&mut config.trust, given);
        self.worker.fill(&mut config.worker);
        if let Some(mb) = self.egress.max_body_mb {
            config.http.max_body_bytes = mb.get() * (1 << 20);
        }
        if let Some(n) = self.egress.max_concurrent {
            config.http.max_concurrent = usize::try_from(n.get()).unwrap_or(usize::MAX);
        }
        for (name, table) in &self.plugin {
            let table = table.get_ref();
            if name != BUILTIN || table.egress.is_some() {
                config.plugins.insert(name.clone(), table.policy());
            }
            for (key, value) in &table.settings {
                let variable = connhost::capabilities::setting_env_var(name, key);
                if std::env::var_os(variable).is_some() {
                    continue;
                }
                config
                    .settings
                    .entry(name.clone())
                    .or_default()
                    .entry(key.clone())
                    .or_insert_with(|| value.0.clone());
            }
        }
    }

    /// Fills the trust configuration (built from the flags) with what the
    /// file's top-level trust keys set and no flag or variable gave.
    fn fill_trust(&self, trust: &mut connhost::trust::TrustConfig, given: &Given<'_>) {
        fill(
            given,
            "insecure_permissions",
            &mut trust.check_permissions,
            self.insecure_permissions.map(|insecure| !insecure),
        );
        fill(
            given,
            "trusted_keys",
            &mut trust.trusted_keys,
            self.trusted_keys.clone().map(Some),
        );
        fill(
            given,
            "lock_file",
            &mut trust.lock_file,
            self.lock_file.clone().map(Some),
        );
        fill(given, "locked", &mut trust.locked, self.locked);
    }

    /// Fills `args` (the `serve` flags) with what the file's `[serve]`
    /// table (and `cache_dir`) sets and no flag or variable gave.
    pub(crate) fn fill_serve(&self, args: &mut ServeArgs, given: &Given<'_>) {
        let serve = &self.serve;
        fill(given, "listen", &mut args.listen, serve.listen);
        // CONNHOST_TOKEN, the token's variable, wins over a file's token_file.
        if std::env::var_os(super::serve::TOKEN_ENV).is_none_or(|t| t.is_empty()) {
            fill(
                given,
                "token_file",
                &mut args.token_file,
                serve.token_file.clone().map(Some),
            );
        }
        let origins = serve
            .cors_origins
            .as_ref()
            .map(|o| o.iter().map(|o| o.0.clone()).collect());
        fill(given, "cors_origins", &mut args.cors_origins, origins);
        fill(
            given,
            "metrics_open",
            &mut args.metrics_open,
            serve.metrics_open,
        );
        let body_limit = serve
            .body_limit
            .map(|b| usize::try_from(b.get()).unwrap_or(usize::MAX));
        fill(given, "body_limit", &mut args.body_limit, body_limit);
        fill(
            given,
            "body_timeout",
            &mut args.body_timeout,
            serve.body_timeout.map(|s| s.0.as_secs_f64()),
        );
        fill(given, "no_watch", &mut args.no_watch, serve.no_watch);
        fill(
            given,
            "cache_dir",
            &mut args.cache_dir,
            self.cache_dir.clone().map(Some),
        );
        fill(
            given,
            "shutdown_grace",
            &mut args.shutdown_grace,
            serve.shutdown_grace.map(|s| Some(s.0)),
        );
        let max_connections = serve.max_connections.map(|n| u32::try_from(n.get()).ok());
        fill(
            given,
            "max_connections",
            &mut args.max_connections,
            max_connections,
        );
        fill(
            given,
            "client_rate",
            &mut args.client_rate,
            serve.client_rate.map(|r| r.0),
        );
        fill(
            given,
            "client_burst",
            &mut args.client_burst,
            serve.client_burst.map(burst),
        );
        fill(
            given,
            "provider_rate",
            &mut args.provider_rate,
            serve.provider_rate.map(|r| r.0),
        );
        fill(
            given,
            "provider_burst",
            &mut args.provider_burst,
            serve.provider_burst.map(burst),
        );
    }
}

impl WorkerFile {
    /// Sets what the table sets.
    fn fill(&self, worker: &mut WorkerConfig) {
        if let Some(sandbox) = self.sandbox {
            worker.sandbox = sandbox;
        }
        if let Some(mb) = self.memory_limit_mb {
            worker.memory_limit = mb.limit().map(|mb| mb << 20);
        }
        if let Some(n) = self.open_files {
            worker.open_files = n.limit();
        }
        if let Some(n) = self.cpu_seconds {
            worker.cpu_seconds = n.limit();
        }
        if let Some(n) = self.max_threads {
            worker.max_threads = n.limit();
        }
        if let Some(user) = self.user {
            worker.user = Some(user.0);
        }
        if let Some(mb) = self.tmp_size_mb {
            worker.tmp_size = mb.get() * (1 << 20);
        }
        if let Some(require) = &self.require {
            let mut layers: Vec<connhost::Layer> =
                require.iter().flat_map(|r| r.0.iter().copied()).collect();
            layers.sort();
            layers.dedup();
            worker.require = layers;
        }
        if let Some(t) = self.start_timeout {
            worker.start_timeout = t.0;
        }
        if let Some(n) = self.crash_limit {
            worker.crash_limit = u32::try_from(n.get()).unwrap_or(u32::MAX);
        }
        if let Some(t) = self.crash_window {
            worker.crash_window = t.0;
        }
    }
}

impl PluginFile {
    /// The table's policy.
    fn policy(&self) -> PluginPolicy {
        PluginPolicy {
            isolation: self.isolation,
            validation_timeout: self.validation_timeout.map(|s| s.0),
            max_in_flight: self.max_in_flight.map(in_flight),
            max_concurrent: self.max_concurrent.map(in_flight),
            egress: self
                .egress
                .as_ref()
                .map(|hosts| hosts.iter().map(|h| h.0.clone()).collect()),
        }
    }
}

/// The bound as a `usize`.
fn in_flight(bound: InFlightBound) -> usize {
    usize::try_from(bound.get()).unwrap_or(usize::MAX)
}

/// Sets `slot` to the file's `value` unless the option `id` was given.
fn fill<T>(given: &Given<'_>, id: &str, slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        if !given.has(id) {
            *slot = value;
        }
    }
}

/// A parse error as `LINE: message`, naming the key and its table.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return format!(" {message}");
    };
    let line = line_of(text, span.start);
    let table = table_at(text, span.start);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(',').trim();
        let expected = if expected.starts_with("there are no fields") {
            "this table takes no keys".to_owned()
        } else {
            expected.replace('`', "")
        };
        let place = table.map_or_else(|| "at the top level".to_owned(), |t| format!("in {t}"));
        return format!("{line}: unknown key \"{key}\" {place}; {expected}");
    }
    match (key_at(text, span.start), table) {
        (Some(key), Some(table)) => format!("{line}: {key} in {table}: {message}"),
        (Some(key), None) => format!("{line}: {key}: {message}"),
        (None, _) => format!("{line}: {message}"),
    }
}

/// The 1-based line number of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The text of the line holding byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    &text[start..end]
}

/// The key of the `key = value` line holding byte `offset`, if it is one.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line = line_at(text, offset).trim_start();
    if line.starts_with('[') {
        return None;
    }
    let (key, _) = line.split_once('=')?;
    Some(key.trim().trim_matches('"').to_owned())
}

/// The table that byte `offset` is in, as its header (`[plugin.daytona]`);
/// `None` at the top level.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| {
            // Without a trailing comment.
            let end = header.find(']').map_or(header.len(), |i| i + 1);
            header[..end].to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            PluginPolicy {
                isolation: Some(Isolation::InProcess),
                validation_timeout: Some(Duration::from_secs(10)),
                max_in_flight: Some(8),
                max_concurrent: Some(4),
                egress: Some(vec!["127.0.0.1:9999".into(), "*.daytona.io".into()]),
            }
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
        let text = "validation_timeout = 3\n\n[plugin.daytona]\nmax_in_flight = 2\nisolaton = \"process\"\n";
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
            connhost::trust::TrustConfig {
                check_permissions: false,
                trusted_keys: Some(PathBuf::from("/etc/connhost/keys")),
                lock_file: Some(PathBuf::from("/etc/connhost/connhost.lock")),
                locked: true,
            }
        );
        assert!(host("").trust.check_permissions, "on by default");
    }
}
