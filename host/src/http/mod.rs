//! `connhost serve`: the HTTP service over the combined provider set.
//!
//! A JSON API under `/v1` (providers, validation, the load report), probes
//! (`/healthz`, `/readyz`), Prometheus `/metrics`, `/openapi.json`, and a
//! settings page at `/` that renders every provider's form from its schema.
//! [`router`] builds the whole app, so embedders and tests can serve it on
//! their own listener; [`serve`] runs it with graceful shutdown.
//!
//! The service is stateless: every replica with the same plugins folder
//! answers the same, so it scales behind any load balancer.

mod auth;
mod error;
mod extract;
mod metrics;
mod openapi;
mod paths;
mod routes;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::validate_request::ValidateRequestHeaderLayer;

pub use auth::AccessToken;
use error::ApiError;
pub use ui::render_markdown;

use crate::Connhost;

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
    /// With a token, leave `/metrics` open to anyone (by default it needs
    /// the token too).
    pub metrics_open: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            token: None,
            cors_origins: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            metrics_open: false,
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
    reload: std::sync::OnceLock<crate::reload::ReloadHandle>,
    draining: std::sync::atomic::AtomicBool,
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
    /// A state with no provider set yet (`/readyz` answers 503).
    pub fn new(config: &HttpConfig) -> Self {
        Self(Arc::new(Shared {
            host: ArcSwapOption::empty(),
            token: config.token.clone(),
            metrics: metrics::Metrics::new(),
            reload: std::sync::OnceLock::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on,
    /// so load balancers stop sending new traffic.
    pub fn drain(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Enables `POST /v1/plugins/rescan` through this hot-reload task.
    pub fn set_reload(&self, handle: crate::reload::ReloadHandle) {
        let _ = self.0.reload.set(handle);
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
    let app = Router::new()
        .route(paths::PROVIDERS, get(routes::list_providers))
        .route(paths::PROVIDER, get(routes::get_provider))
        .route(paths::VALIDATE, post(routes::validate))
        .route(paths::PLUGINS, get(routes::plugins))
        .route(paths::RESCAN, post(routes::rescan))
        .route(paths::INSTRUCTIONS, get(ui::instructions))
        .route(paths::INDEX, get(ui::index))
        .route(paths::APP_JS, get(ui::app_js))
        .route(paths::APP_CSS, get(ui::app_css))
        .route(paths::HEALTHZ, get(routes::healthz))
        .route(paths::READYZ, get(routes::readyz))
        .route(paths::METRICS, get(routes::metrics))
        .route(paths::OPENAPI, get(routes::openapi))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // One stack, applied once: `Router::layer` boxes each route's
        // service again for every layer it is given. Outermost first.
        .layer(
            ServiceBuilder::new()
                .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(metrics::TrackLayer::new(state.clone()))
                .layer(CatchPanicLayer::custom(panic_response as fn(_) -> _))
                // Around every route and the fallbacks, so unmatched /v1
                // paths and wrong methods need the token too: nothing under
                // /v1 answers an anonymous caller. No layer without a token.
                .option_layer(state.0.token.clone().map(|token| {
                    ValidateRequestHeaderLayer::custom(auth::RequireToken::new(
                        token,
                        config.metrics_open,
                    ))
                }))
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                    BODY_READ_TIMEOUT,
                ))
                .layer(DefaultBodyLimit::max(config.body_limit)),
        )
        .with_state(state);
    if config.cors_origins.is_empty() {
        app
    } else {
        app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(config.cors_origins.clone()))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        )
    }
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

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "connhost hit an internal error; it is logged.",
    )
    .into_response()
}

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, calls `on_drain`, and lets requests in flight finish for at
/// most `grace`. Returns whether everything finished in time.
///
/// Connections that do not send their headers within
/// [`HEADER_READ_TIMEOUT`] are closed, so a slow or stalled client cannot
/// hold a connection (or delay shutdown) for ever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    on_drain: impl FnOnce(),
) -> std::io::Result<bool> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!("accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    on_drain();
    tracing::info!("shutting down: waiting up to {grace:?} for requests in flight");
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Ok(true),
        Err(_) => {
            tracing::warn!("requests still in flight after {grace:?}; exiting anyway");
            Ok(false)
        }
    }
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
