//! connhost's HTTP service over the combined provider set: what `connhost
//! serve` runs, and a router an embedder can mount in its own axum app.
//!
//! A JSON API under `/v1` (providers, validation, the load report), probes
//! (`/healthz`, `/readyz`), Prometheus `/metrics`, `/openapi.json`, and a
//! settings page at `/` that renders every provider's form from its schema.
//! [`router`] builds the whole app, so embedders and tests can serve it on
//! their own listener; [`serve`] runs it with a connection cap,
//! per-connection timeouts and graceful shutdown.
//!
//! The service is stateless: every replica with the same plugins folder
//! answers the same, so it scales behind any load balancer.

mod auth;
mod body;
mod error;
mod extract;
mod guard;
mod header_timer;
mod metrics;
mod openapi;
mod paths;
mod rate_limit;
mod routes;
mod server;
mod sync;
mod ui;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::http::header;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::AccessToken;
pub use error::{ApiError, ErrorCode};
pub use paths::Route;
pub use rate_limit::{
    parse_rate, Per, Rate, RateLimit, RateLimitStore, RateLimits, StoreFailure,
    DEFAULT_CLIENT_LIMIT, DEFAULT_PROVIDER_LIMIT,
};

/// A header value (a CORS origin in [`HttpConfig::cors_origins`]): re-exported so
/// that a caller needs no direct `axum` dependency to build one.
pub use axum::http::HeaderValue;
/// An HTTP method ([`Route::method`]), re-exported for the same reason.
pub use axum::http::Method;
/// An HTTP status ([`ErrorCode::status`]), re-exported for the same reason.
pub use axum::http::StatusCode;
pub use server::{
    default_max_connections, serve, ServeOptions, BODY_READ_TIMEOUT, DRAIN_ANSWER_TIMEOUT,
    HEADER_READ_TIMEOUT, WRITE_TIMEOUT,
};
pub use sync::{report_with_sources, SyncStatus};
pub use ui::render_markdown;
pub use wire::{FieldErrorBody, NotValidBody, ValidBody, VerdictBody};

use connhost::Connhost;

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How the HTTP service behaves.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Required on `/v1` routes when set.
    pub token: Option<AccessToken>,
    /// Origins allowed to call the API from a browser; CORS is off when
    /// empty.
    pub cors_origins: Vec<HeaderValue>,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// How long a request's whole body may take to arrive, from the end of
    /// its headers (default [`BODY_READ_TIMEOUT`]).
    pub body_timeout: Duration,
    /// With a token, leave `/metrics` open to anyone (by default it needs
    /// the token too).
    pub metrics_open: bool,
    /// The limits on validations, per client and per provider: on by
    /// default; [`RateLimits::OFF`] turns them off. Read by
    /// [`AppState::new`].
    pub rate_limits: RateLimits,
    /// Where the rate limits are shared with other replicas (a Redis
    /// server); `None` (the default): each server limits on its own.
    pub rate_limit_store: Option<RateLimitStore>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            token: None,
            cors_origins: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: BODY_READ_TIMEOUT,
            metrics_open: false,
            rate_limits: RateLimits::default(),
            rate_limit_store: None,
        }
    }
}

/// The state handlers share: the current provider set (empty while the
/// plugins load; swapped atomically, so readers never wait), the access
/// token, and metrics. Cloning it (axum does, for every request) is one
/// reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
struct Shared {
    host: ArcSwapOption<Snapshot>,
    token: Option<AccessToken>,
    metrics: metrics::Metrics,
    /// The rate limits on validations.
    limiters: rate_limit::Limiters,
    /// The `invalid_fields` answers given lately.
    invalid_fields: error::InvalidFieldsBodies,
    reload: std::sync::OnceLock<connhost::reload::ReloadHandle>,
    draining: std::sync::atomic::AtomicBool,
    /// Set once the shutdown grace is over: requests still running answer
    /// 503 `draining` at once.
    grace_over: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("ready", &self.0.host.load().is_some())
            .field("token", &self.0.token.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state with no provider set yet (`/readyz` answers 503), with the
    /// access token and rate limits of `config` (with a rate limit store,
    /// called within a tokio runtime, it starts connecting to the store).
    pub fn new(config: &HttpConfig) -> Self {
        let mut metrics = metrics::Metrics::new();
        let limiters = match &config.rate_limit_store {
            Some(store) => {
                let store_metrics = metrics.rate_limit_store();
                rate_limit::Limiters::shared(&config.rate_limits, store, store_metrics)
            }
            None => rate_limit::Limiters::new(&config.rate_limits),
        };
        Self(Arc::new(Shared {
            host: ArcSwapOption::empty(),
            token: config.token.clone(),
            metrics,
            limiters,
            invalid_fields: error::InvalidFieldsBodies::default(),
            reload: std::sync::OnceLock::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            grace_over: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on,
    /// so load balancers stop sending new traffic.
    pub fn drain(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ends the shutdown grace: every request still running answers 503
    /// `draining` (with `Connection: close`) instead of finishing.
    pub fn end_grace(&self) {
        self.0.grace_over.send_replace(true);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Enables `POST /v1/plugins/rescan` through this hot-reload task.
    pub fn set_reload(&self, handle: connhost::reload::ReloadHandle) {
        let _ = self.0.reload.set(handle);
    }

    /// Publishes the status of each reference `connhost serve --sync`
    /// keeps the plugins folder in step with: shown under `sync` in
    /// `/v1/plugins` (with each synced plugin's `source`) and as the
    /// `connhost_sync_*` metrics from now on.
    pub fn set_sync(&self, statuses: Vec<SyncStatus>) {
        self.0.metrics.sync.store(Some(Arc::new(statuses)));
    }

    /// Installs (or replaces) the provider set; requests in flight finish
    /// with the set they started with.
    pub fn set_host(&self, host: Connhost) {
        self.0.metrics.set_host(&host);
        // The listing is the same for every request until the next swap:
        // serialise it once.
        let providers_json = axum::body::Bytes::from(
            serde_json::to_vec(&host.providers()).expect("the provider listing serialises"),
        );
        self.0.host.store(Some(Arc::new(Snapshot {
            host,
            providers_json,
        })));
    }

    /// The current provider set, or 503 while loading.
    fn host(&self) -> Result<Arc<Snapshot>, ApiError> {
        self.0.host.load_full().ok_or_else(ApiError::starting)
    }
}

/// One published provider set, with what is derived from it once.
pub(crate) struct Snapshot {
    host: Connhost,
    /// `GET /v1/providers`, serialised.
    providers_json: axum::body::Bytes,
}

impl std::ops::Deref for Snapshot {
    type Target = Connhost;

    fn deref(&self) -> &Connhost {
        &self.host
    }
}

/// The whole app: API, probes, metrics, OpenAPI and the settings page.
pub fn router(state: AppState, config: &HttpConfig) -> Router {
    // One guard around every handler and the fallbacks (`guard.rs`):
    // security header, metrics, the shutdown grace, panics, the token
    // (around the fallbacks too, so unmatched /v1 paths and wrong methods
    // need it: nothing under /v1 answers an anonymous caller) and the
    // body's bounds.
    let guards = guard::Guards::new(
        state.clone(),
        state
            .0
            .token
            .clone()
            .map(|token| auth::RequireToken::new(token, config.metrics_open)),
        body::BodyBounds {
            limit: config.body_limit,
            timeout: config.body_timeout,
        },
    );
    // The table is the only place a route is registered: `routes()` lists
    // exactly what is served.
    let app = paths::TABLE
        .iter()
        .fold(Router::new(), |app, entry| {
            match entry.method_router(&guards) {
                Some(method_router) => app.route(entry.route.path, method_router),
                None => app,
            }
        })
        // (Which also serves the validate route: see `paths::TABLE`.)
        .fallback(guards.wrap(routes::Fallback))
        .method_not_allowed_fallback(guards.wrap(routes::method_not_allowed))
        .with_state(state);
    if config.cors_origins.is_empty() {
        app
    } else {
        app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(config.cors_origins.clone()))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
                // So that a page on an allowed origin can read when to
                // retry a 429.
                .expose_headers([header::RETRY_AFTER]),
        )
    }
}

/// Every route [`router`] serves, as a method and a path template, in the
/// order it registers them: the router registers these and nothing else
/// (any other path answers 404 `not_found`, another method on a listed
/// path 405 `method_not_allowed`). Each is in the served OpenAPI document
/// (`/openapi.json`) unless its [`Route::undocumented`] says why not.
pub fn routes() -> impl ExactSizeIterator<Item = &'static Route> {
    paths::TABLE.iter().map(|entry| &entry.route)
}

/// Checks an allowed CORS origin: `scheme://host[:port]`, nothing else.
pub fn parse_cors_origin(origin: &str) -> Result<HeaderValue, String> {
    let origin = origin.trim();
    let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
        && origin.split("://").nth(1).is_some_and(|rest| {
            !rest.is_empty() && !rest.contains('/') && !rest.contains('*') && !rest.contains('?')
        });
    if !valid {
        return Err(format!(
            "{origin:?} is not an origin: give scheme://host[:port], such as https://app.example.com (no path, no wildcard)"
        ));
    }
    HeaderValue::from_str(origin).map_err(|e| format!("{origin:?}: {e}"))
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
