//! `connhost serve`: bind, start answering, load the plugins, report ready,
//! and shut down gracefully on SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use connhost::{Catalog, Connhost, HostConfig};
use connhost_http::HeaderValue;
use connhost_http::{AccessToken, AppState, HttpConfig, RateLimit, RateLimits, ServeOptions};

use super::args::ServeArgs;

/// Where the access token comes from when not in a file.
pub(super) const TOKEN_ENV: &str = "CONNHOST_TOKEN";

pub(crate) fn run(host_config: HostConfig, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args)?;
    if token.is_none() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without an access token: anyone who can reach that address could use the API. \
             Set {TOKEN_ENV} or pass --token-file FILE, or listen on a loopback address such as 127.0.0.1:{}",
            args.listen,
            args.listen.port()
        );
    }
    // By default, validations in flight get their whole timeout to finish.
    let grace = match args.shutdown_grace {
        Some(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| {
            anyhow::anyhow!("--shutdown-grace must be a number of seconds, got {seconds}")
        })?,
        None => host_config.validation_timeout + Duration::from_secs(5),
    };
    let cors_origins = args
        .cors_origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .map(|origin| {
            connhost_http::parse_cors_origin(origin)
                .map_err(|e| anyhow::anyhow!("--cors-origin: {e}"))
        })
        .collect::<anyhow::Result<Vec<HeaderValue>>>()?;
    let body_timeout = Duration::try_from_secs_f64(args.body_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--body-timeout must be a positive number of seconds, got {}",
                args.body_timeout
            )
        })?;
    let rate_limits = RateLimits {
        per_client: args.client_rate.with_burst(args.client_burst),
        per_provider: args.provider_rate.with_burst(args.provider_burst),
    };
    tracing::info!(
        per_client = %describe_limit(rate_limits.per_client),
        per_provider = %describe_limit(rate_limits.per_provider),
        "rate limits on validations"
    );
    let rate_limit_store = args
        .rate_limit_store
        .clone()
        .map(|store| store.with_failure(args.rate_limit_store_failure));
    if let Some(store) = &rate_limit_store {
        tracing::info!(
            %store,
            on_failure = %store.on_failure,
            "rate limits shared with other replicas through a store"
        );
    }
    let http_config = HttpConfig {
        token,
        cors_origins,
        body_limit: args.body_limit,
        body_timeout,
        metrics_open: args.metrics_open,
        rate_limits,
        rate_limit_store,
    };
    let open_files = raise_open_files_limit();
    let max_connections = match args.max_connections {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => connhost_http::default_max_connections(open_files),
    };
    tracing::info!(max_connections, "connection cap");
    let options = ServeOptions {
        grace,
        max_connections,
    };

    let sync = super::sync::Sync::new(&host_config, &args)?;
    // The catalog's files are read once the server answers probes.
    let set = Catalog::new(&host_config);
    // Its own cache folder goes at exit; one the operator named is kept
    // for the next start.
    let own_cache = set
        .cache_dir()
        .filter(|_| host_config.cache_dir.is_none())
        .map(Path::to_owned);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("connhost")
        .build()
        .context("could not start the async runtime")?;
    let finished = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("could not listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        super::terminal::print_status(&format!("connhost: listening on http://{address}\n"));
        tracing::info!(%address, "listening");

        let state = AppState::new(&http_config);
        let sync_reload = sync.as_ref().map(super::sync::Sync::reload_slot);
        if let Some(sync) = sync {
            sync.start(state.clone())?;
        }
        let serving = state.clone();
        let app = connhost_http::router(state.clone(), &http_config);
        // Answer probes (and 503 on the API) while the plugins load.
        let watch = !args.no_watch;
        tokio::spawn(async move {
            let publishing = state.clone();
            let handle = connhost::reload::start(set, watch, move |host: Connhost| {
                tracing::info!(
                    providers = host.registry().len(),
                    plugins_loaded = host.load_report().loaded.len(),
                    plugins_failed = host.load_report().failed.len(),
                    "serving a new provider set"
                );
                publishing.set_host(host);
            })
            .await;
            state.set_reload(handle.clone());
            if let Some(slot) = sync_reload {
                let _ = slot.set(handle.clone());
            }
            super::terminal::print_status("connhost: ready\n");
            rescan_on_hangup(handle).await;
        });
        connhost_http::serve(
            listener,
            app,
            serving,
            connhost_http::shutdown_signal(),
            options,
        )
        .await
        .context("the server failed")
    })?;
    // Do not wait for providers that never finished.
    runtime.shutdown_timeout(Duration::from_millis(100));
    // The libraries stay mapped until the process exits; the names can go.
    if let Some(cache_dir) = &own_cache {
        connhost::clean_cache_dir(cache_dir);
    }
    if finished {
        Ok(super::success())
    } else {
        Ok(ExitCode::from(1))
    }
}

/// A rate limit for the log: `30/min with bursts of 10`, or `off`.
fn describe_limit(limit: Option<RateLimit>) -> String {
    limit.map_or_else(|| "off".to_owned(), |limit| limit.to_string())
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// and many servers do (the soft limit is often 1024 while the hard one is
/// far higher), and logs both. Returns the soft limit now in force, `None`
/// when unlimited or unknown.
fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let (Some(soft), hard) = (limit.current, limit.maximum) else {
            return None;
        };
        // An unlimited hard limit is left alone: macOS refuses a soft limit
        // above its per-process maximum.
        let Some(hard) = hard.filter(|&hard| hard > soft) else {
            tracing::info!(soft, hard = ?limit.maximum, "open-files limit");
            return Some(soft);
        };
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(
                    soft = hard,
                    hard,
                    was = soft,
                    "raised the open-files limit to the hard limit"
                );
                Some(hard)
            }
            Err(error) => {
                tracing::warn!(
                    soft,
                    hard,
                    "could not raise the open-files limit to the hard limit: {error}"
                );
                Some(soft)
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Rescans the plugins folder on every SIGHUP.
async fn rescan_on_hangup(handle: connhost::reload::ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: rescanning the plugins folder");
            handle.rescan().await;
        }
    }
    #[cfg(not(unix))]
    drop(handle);
}

fn read_token(args: &ServeArgs) -> anyhow::Result<Option<AccessToken>> {
    let raw = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("could not read the token file {}", path.display()))?,
        ),
        None => std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
    };
    raw.map(|raw| {
        AccessToken::new(&raw).map_err(|e| match &args.token_file {
            Some(path) => anyhow::anyhow!("{e} (in {})", path.display()),
            None => anyhow::anyhow!("{e} (in {TOKEN_ENV})"),
        })
    })
    .transpose()
}
