//! Command-line flags. Parsed here, and never seen by the library.

use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};
use connhost::Isolation;
use connhost_http::{Rate, RateLimit, RateLimitStore, StoreFailure};

/// connhost: connection providers, built in and from plugin libraries,
/// behind one schema-and-validation API.
#[derive(Debug, Parser)]
#[command(name = "connhost", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// A configuration file (TOML; see connhost.example.toml). Flags and
    /// environment variables override what it sets.
    #[arg(long, global = true, env = "CONNHOST_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Where plugins run unless the configuration file's table for a plugin
    /// says otherwise: in the host's process, or each in a sandboxed worker
    /// process of its own.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_ISOLATION",
        default_value = "in-process",
        value_parser = isolation_parser(),
        value_name = "MODE"
    )]
    pub(crate) isolation: Isolation,

    /// The folder to load plugin libraries from.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_PLUGINS",
        default_value = "./plugins",
        value_name = "DIR"
    )]
    pub(crate) plugins: PathBuf,

    /// Also register experimental providers.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_EXPERIMENTAL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) experimental: bool,

    /// The longest a provider may take to validate, in seconds.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_TIMEOUT",
        default_value_t = 30.0,
        value_name = "SECONDS"
    )]
    pub(crate) timeout: f64,

    /// The most validations one provider may have in flight; beyond it, the
    /// provider answers at once with a retryable "busy" verdict.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_MAX_IN_FLIGHT",
        default_value_t = connhost::DEFAULT_MAX_IN_FLIGHT,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536),
        value_name = "N"
    )]
    pub(crate) max_in_flight: usize,

    /// A plugin setting, as PLUGIN.KEY=VALUE (repeatable). Environment
    /// variables CONNHOST_PLUGIN_<PLUGIN>_<KEY> work too.
    #[arg(long = "setting", global = true, value_name = "PLUGIN.KEY=VALUE")]
    pub(crate) settings: Vec<String>,

    /// Where private copies of plugin files are loaded from, for every
    /// command (default: a new folder of this process under the system's
    /// temp dir, mode 0700, removed at exit and, after a crash, by the next
    /// start). A folder named here is kept, with an index of its copies:
    /// the next start (of any command) maps the copies of unchanged files
    /// directly, without reading, copying or hashing them. It must be this
    /// user's alone: a real folder (not a link), owned by this user,
    /// writable by no one else, under folders only this user or root may
    /// write (or sticky, as /tmp); otherwise the command refuses to start.
    /// A missing one is created with mode 0700.
    #[arg(long, global = true, env = "CONNHOST_CACHE_DIR", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,

    /// The largest plugin file loaded, in bytes; a larger file is refused
    /// before anything reads it.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_MAX_PLUGIN_SIZE",
        default_value_t = connhost::DEFAULT_MAX_PLUGIN_SIZE,
        value_name = "BYTES"
    )]
    pub(crate) max_plugin_size: u64,

    /// Do not check who may write the plugins folder, the plugin files,
    /// the trusted keys and the lock file (for development only: anyone
    /// who can write them can run code in this host). Warned at each load.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_INSECURE_PERMISSIONS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) insecure_permissions: bool,

    /// A folder of trusted minisign public keys (*.pub): only plugin files
    /// with a signature (FILE.minisig) by one of them load.
    #[arg(long, global = true, env = "CONNHOST_TRUSTED_KEYS", value_name = "DIR")]
    pub(crate) trusted_keys: Option<PathBuf>,

    /// The lock file `connhost lock` writes and --locked reads (default:
    /// connhost.lock in the plugins folder).
    #[arg(long, global = true, env = "CONNHOST_LOCK_FILE", value_name = "FILE")]
    pub(crate) lock_file: Option<PathBuf>,

    /// Load only the plugin files the lock file lists, with the digest it
    /// records.
    #[arg(
        long,
        global = true,
        env = "CONNHOST_LOCKED",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) locked: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List every provider, built in and loaded.
    Providers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a provider's credential form schema as JSON (null for OAuth).
    Schema {
        /// The provider id.
        provider: String,
    },
    /// Validate a credential with a provider.
    ///
    /// Exit status: 0 valid; 1 rejected or invalid fields; 2 usage or setup
    /// error; 3 undecided (inconclusive, timed out, or the provider failed).
    Validate {
        /// The provider id.
        provider: String,
        /// A form field, as NAME=VALUE (repeatable). A VALUE of `-` is read
        /// from standard input, which keeps secrets out of shell history.
        #[arg(long = "field", short = 'f', value_name = "NAME=VALUE")]
        fields: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also print the assembled credential document (it holds secrets).
        #[arg(long)]
        show_document: bool,
    },
    /// Show what loaded from the plugins folder and what did not, and why.
    Plugins {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API and the settings page.
    ///
    /// Binding to an address other than loopback requires an access token
    /// (--token-file, or the CONNHOST_TOKEN environment variable), which
    /// every /v1 request must then present as `Authorization: Bearer`.
    Serve(ServeArgs),
    /// Record the digest, name and version of every plugin file that loads
    /// in the lock file (trust on first use), for --locked.
    ///
    /// Without --add, writes the lock file anew from what loads now. Every
    /// check but the lock itself applies (permissions, signatures).
    Lock {
        /// Admit this plugin file (a path, or a name in the plugins
        /// folder) as it is now: replaces its entry and keeps the others
        /// (repeatable).
        #[arg(long, value_name = "FILE")]
        add: Vec<PathBuf>,
    },
    /// Push a plugin file to an OCI registry, as an artifact other hosts
    /// pull (for vendors).
    ///
    /// What the artifact says of the plugin (name, version, plugin API
    /// version, providers) comes from loading FILE in a sandboxed worker,
    /// never in this process. FILE is the library for this host's
    /// platform; FILE.minisig beside it (or --signature) is pushed with it.
    Push(PushArgs),
    /// Pull a plugin from an OCI registry into the plugins folder (for
    /// operators).
    ///
    /// Picks the library for this host's platform, checks every digest it
    /// downloads, the signature under --trusted-keys (an unsigned artifact
    /// is refused then), the lock file under --locked, and that the library
    /// loads here (in a sandboxed worker); then writes the signature and
    /// the library into the folder, each under a temporary name renamed
    /// into place, so a serving host reloads a consistent pair.
    Pull(PullArgs),
    /// Examine a plugin file without registering it: what it contains and
    /// whether this host can load it.
    Inspect {
        /// The plugin library file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How `push` and `pull` reach a registry.
#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    /// A registry (HOST:PORT, or HOST for all its ports) to speak plain
    /// HTTP to although it is not on this machine (repeatable, or
    /// comma-separated in CONNHOST_INSECURE_REGISTRIES; the configuration
    /// file's insecure_registries when neither is given). Registries on
    /// loopback (localhost, 127.0.0.0/8, ::1) always are; all others are
    /// spoken to in HTTPS. Credentials come from docker's config.json
    /// (DOCKER_CONFIG, else ~/.docker/config.json).
    #[arg(
        long = "insecure-registry",
        env = "CONNHOST_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub(crate) insecure_registries: Vec<String>,
}

/// Flags of `connhost push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The plugin library for this host's platform.
    pub(crate) file: PathBuf,
    /// Where to push it: REGISTRY/REPOSITORY:TAG.
    pub(crate) reference: String,
    /// The library for another platform, as OS/ARCH[/VARIANT][+LIBC]=FILE
    /// (linux/arm64=target/aarch64-unknown-linux-gnu/release/libfoo.so;
    /// the C library on Linux is gnu unless +musl). Repeatable. Its
    /// FILE.minisig, if there is one, is pushed with it.
    #[arg(long = "platform", value_name = "OS/ARCH=FILE")]
    pub(crate) platforms: Vec<String>,
    /// FILE's signature, when it is not FILE.minisig.
    #[arg(long, value_name = "FILE")]
    pub(crate) signature: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Flags of `connhost pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// What to pull: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@DIGEST.
    pub(crate) reference: String,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Flags of `connhost serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on.
    #[arg(
        long,
        env = "CONNHOST_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub(crate) listen: std::net::SocketAddr,

    /// A file holding the access token (or set CONNHOST_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// An origin allowed to call the API from a browser (repeatable, or
    /// comma-separated in CONNHOST_CORS_ORIGINS). CORS is off without one.
    #[arg(
        long = "cors-origin",
        env = "CONNHOST_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub(crate) cors_origins: Vec<String>,

    /// With a token, let anyone read /metrics (by default it needs the
    /// token, like the API).
    #[arg(long, env = "CONNHOST_METRICS_OPEN")]
    pub(crate) metrics_open: bool,

    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = connhost_http::DEFAULT_BODY_LIMIT, value_name = "BYTES")]
    pub(crate) body_limit: usize,

    /// How long a request's whole body may take to arrive, in seconds,
    /// from the end of its headers (answered 408 `body_timeout` after).
    #[arg(long, default_value_t = connhost_http::BODY_READ_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    pub(crate) body_timeout: f64,

    /// Do not watch the plugins folder for changes (rescan on SIGHUP or
    /// POST /v1/plugins/rescan only).
    #[arg(long)]
    pub(crate) no_watch: bool,

    /// Keep the plugins folder in step with this OCI reference
    /// (REGISTRY/REPOSITORY:TAG or @DIGEST; repeatable, or comma-separated
    /// in CONNHOST_SYNC): pulled as `connhost pull` pulls it, again when
    /// its tag moves; a reference no longer listed has its file removed.
    #[arg(
        long = "sync",
        env = "CONNHOST_SYNC",
        value_delimiter = ',',
        value_name = "REF"
    )]
    pub(crate) sync: Vec<String>,

    /// How often each --sync reference is polled (one manifest request
    /// when nothing changed; ±10% jitter, longer after errors): 30s, 5m,
    /// 1h, 500ms, or a number of seconds.
    #[arg(long, default_value = "60s", value_parser = parse_interval, value_name = "DURATION")]
    pub(crate) sync_interval: std::time::Duration,

    #[command(flatten)]
    pub(crate) registry: RegistryArgs,

    /// On SIGINT/SIGTERM, how long requests in flight may take to finish, in
    /// seconds (default: the validation timeout plus 5).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) shutdown_grace: Option<f64>,

    /// The most connections open at once; more wait in the listen backlog
    /// (default: half the open-files limit, at most 4096).
    #[arg(
        long,
        env = "CONNHOST_MAX_CONNECTIONS",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(crate) max_connections: Option<u32>,

    /// The most validations one client may make (a client is its address,
    /// an IPv6 address's /64, and its token when the server has one): N/s,
    /// N/min or N/h, or off. Over it: 429 with Retry-After.
    #[arg(
        long,
        env = "CONNHOST_CLIENT_RATE",
        default_value_t = RateSetting(Some(connhost_http::DEFAULT_CLIENT_LIMIT.rate)),
        value_parser = rate_setting,
        value_name = "RATE"
    )]
    pub(crate) client_rate: RateSetting,

    /// How many validations one client may make at once, within its rate.
    #[arg(
        long,
        env = "CONNHOST_CLIENT_BURST",
        default_value_t = connhost_http::DEFAULT_CLIENT_LIMIT.burst,
        value_name = "N"
    )]
    pub(crate) client_burst: NonZeroU32,

    /// The most validations with one provider, from all clients together:
    /// N/s, N/min or N/h, or off. Over it: 429 with Retry-After.
    #[arg(
        long,
        env = "CONNHOST_PROVIDER_RATE",
        default_value_t = RateSetting(Some(connhost_http::DEFAULT_PROVIDER_LIMIT.rate)),
        value_parser = rate_setting,
        value_name = "RATE"
    )]
    pub(crate) provider_rate: RateSetting,

    /// How many validations with one provider may come at once, within
    /// its rate.
    #[arg(
        long,
        env = "CONNHOST_PROVIDER_BURST",
        default_value_t = connhost_http::DEFAULT_PROVIDER_LIMIT.burst,
        value_name = "N"
    )]
    pub(crate) provider_burst: NonZeroU32,

    /// Share the rate limits with the other replicas through this Redis
    /// (or Valkey) server: redis://HOST:PORT[/DB]. Without it, each
    /// server limits on its own.
    #[arg(
        long,
        env = "CONNHOST_RATE_LIMIT_STORE",
        value_parser = RateLimitStore::parse,
        value_name = "URL"
    )]
    pub(crate) rate_limit_store: Option<RateLimitStore>,

    /// While the rate limit store does not answer: local (this server
    /// applies its own limits) or closed (validations are refused, 503).
    #[arg(
        long,
        env = "CONNHOST_RATE_LIMIT_STORE_FAILURE",
        default_value_t = StoreFailure::Local,
        value_parser = store_failure_parser(),
        value_name = "MODE"
    )]
    pub(crate) rate_limit_store_failure: StoreFailure,
}

/// `local` or `closed`, listed in `--help`.
fn store_failure_parser() -> impl clap::builder::TypedValueParser<Value = StoreFailure> {
    PossibleValuesParser::new([StoreFailure::Local.as_str(), StoreFailure::Closed.as_str()])
        .map(|mode| mode.parse().unwrap_or_default())
}

/// A positive duration: a number with `ms`, `s`, `m` or `h`, or a bare
/// number of seconds (`--sync-interval`, `sync_interval`).
pub(crate) fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| std::time::Duration::try_from_secs_f64(n * scale).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!("{text:?} is not a duration: give a positive number with ms, s, m or h, such as 30s or 5m")
        })
}

/// A rate limit's rate as `--client-rate` and `--provider-rate` take it:
/// `N/s`, `N/min`, `N/h`, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSetting(pub(crate) Option<Rate>);

impl std::fmt::Display for RateSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(rate) => rate.fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl RateSetting {
    /// The limit this rate makes with `burst`; `None` when off.
    pub(crate) fn with_burst(self, burst: NonZeroU32) -> Option<RateLimit> {
        self.0.map(|rate| RateLimit::new(rate, burst))
    }
}

/// Parses a [`RateSetting`] (clap names the flag in its error).
fn rate_setting(text: &str) -> Result<RateSetting, String> {
    connhost_http::parse_rate(text).map(RateSetting)
}

/// `in-process` or `process`, listed in `--help`.
fn isolation_parser() -> impl clap::builder::TypedValueParser<Value = Isolation> {
    PossibleValuesParser::new([Isolation::InProcess.as_str(), Isolation::Process.as_str()])
        .map(|name| name.parse().unwrap_or_default())
}
