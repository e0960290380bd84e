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
mod routes;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            token: None,
            cors_origins: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// The state handlers share: the current provider set (empty while the
/// plugins load; swapped atomically, so readers never wait), the access
/// token, and metrics.
#[derive(Clone)]
pub struct AppState {
    host: Arc<ArcSwapOption<Connhost>>,
    token: Option<Arc<AccessToken>>,
    metrics: Arc<metrics::Metrics>,
    reload: Arc<std::sync::OnceLock<crate::reload::ReloadHandle>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("ready", &self.host.load().is_some())
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state with no provider set yet (`/readyz` answers 503).
    pub fn new(config: &HttpConfig) -> Self {
        Self {
            host: Arc::new(ArcSwapOption::empty()),
            token: config.token.clone().map(Arc::new),
            metrics: metrics::Metrics::new(),
            reload: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Enables `POST /v1/plugins/rescan` through this hot-reload task.
    pub fn set_reload(&self, handle: crate::reload::ReloadHandle) {
        let _ = self.reload.set(handle);
    }

    /// Installs (or replaces) the provider set; requests in flight finish
    /// with the set they started with.
    pub fn set_host(&self, host: Connhost) {
        self.metrics.set_host(&host);
        self.host.store(Some(Arc::new(host)));
    }

    /// The current provider set, or 503 while loading.
    fn host(&self) -> Result<Arc<Connhost>, ApiError> {
        self.host.load_full().ok_or_else(ApiError::starting)
    }
}

/// The whole app: API, probes, metrics, OpenAPI and the settings page.
pub fn router(state: AppState, config: &HttpConfig) -> Router {
    let api = Router::new()
        .route("/v1/providers", get(routes::list_providers))
        .route("/v1/providers/{id}", get(routes::get_provider))
        .route("/v1/providers/{id}/validate", post(routes::validate))
        .route("/v1/plugins", get(routes::plugins))
        .route("/v1/plugins/rescan", post(routes::rescan))
        .route("/ui/instructions", get(ui::instructions))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let open = Router::new()
        .route("/", get(ui::index))
        .route("/assets/app.js", get(ui::app_js))
        .route("/assets/app.css", get(ui::app_css))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi));
    let mut app = api
        .merge(open)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state);
    if !config.cors_origins.is_empty() {
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(config.cors_origins.clone()))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        );
    }
    app
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

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting connections and lets requests in flight finish for at most
/// `grace`. Returns whether everything finished in time.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<bool> {
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            result.map_err(std::io::Error::other)??;
            Ok(true)
        }
        _ = signalled_rx => {
            tracing::info!("shutting down: waiting up to {grace:?} for requests in flight");
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => {
                    result.map_err(std::io::Error::other)??;
                    Ok(true)
                }
                Err(_) => {
                    tracing::warn!("requests still in flight after {grace:?}; exiting anyway");
                    Ok(false)
                }
            }
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
