//! The one guard around every handler and the fallbacks: one wrapper and
//! one future per request, written out by hand, instead of a stack of
//! layers that each clone the services below them, box a future and a
//! `Next` per request. It wraps each handler itself ([`Guards::wrap`]),
//! where `Router::layer` would put it (around each method's handler, inside
//! the route's `Allow` and `Content-Length` handling), so axum clones one
//! boxed service per request instead of a boxed layer around another.
//!
//! What it does, in the order a request meets it (the order the stack of
//! separate layers had, outermost first):
//!
//! 1. every answer gets `X-Content-Type-Options: nosniff`;
//! 2. every answer is counted and timed by its route template, and logged
//!    ([`Metrics::request`](crate::metrics::Metrics));
//! 3. a request still running when the shutdown grace ends answers 503
//!    `draining` (`Connection: close`) at once;
//! 4. a handler that panics answers 500 `internal` (the panic is logged);
//! 5. with an access token, a guarded path needs it (401 otherwise);
//! 6. a declared body length over the limit is refused (413) before a byte
//!    of the body is read; any other body is read under the size limit and
//!    a total deadline ([`BoundedBody`]).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse as _, Response};
use http_body::Body as _;

use super::auth::RequireToken;
use super::body::{payload_too_large, BodyBounds, BoundedBody};
use super::error::{ApiError, ErrorCode};
use super::{paths, AppState};

/// What [`Guarded`] needs, shared by every handler's copy of it.
struct Config {
    state: AppState,
    /// The token check; `None` when the server has no token.
    token: Option<RequireToken>,
    bounds: BodyBounds,
}

/// Wraps each handler of `state`'s router in its guard.
#[derive(Clone)]
pub(crate) struct Guards(Arc<Config>);

impl Guards {
    /// The guard for `state`'s routes: `token` checked when set, bodies
    /// held to `bounds`.
    pub(crate) fn new(state: AppState, token: Option<RequireToken>, bounds: BodyBounds) -> Self {
        Self(Arc::new(Config {
            state,
            token,
            bounds,
        }))
    }

    /// `handler`, guarded.
    pub(crate) fn wrap<H>(&self, handler: H) -> Guarded<H> {
        Guarded {
            handler,
            config: self.0.clone(),
        }
    }
}

/// A handler with its guard ([`Guards::wrap`]).
#[derive(Clone)]
pub(crate) struct Guarded<H> {
    handler: H,
    config: Arc<Config>,
}

impl Config {
    /// The answer to a request refused before its handler runs: no token
    /// (or the wrong one), or a declared body over the limit.
    fn refusal(&self, request: &Request) -> Option<Response> {
        if let Some(token) = &self.token {
            if let Some(refused) = token.refusal(request) {
                return Some(refused);
            }
        }
        // hyper's size hint is exactly the `Content-Length` when there is
        // one (it has checked the header), and 0 for a chunked body.
        let declared = request.body().size_hint().lower();
        let limit = u64::try_from(self.bounds.limit).unwrap_or(u64::MAX);
        (declared > limit).then(|| payload_too_large().into_response())
    }
}

impl<H, T, S> Handler<T, S> for Guarded<H>
where
    H: Handler<T, S>,
    T: 'static,
    S: Send + 'static,
{
    type Future = GuardFuture<H::Future>;

    fn call(self, mut request: Request, state: S) -> Self::Future {
        let started = Instant::now();
        let matched = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let route = match matched {
            Some(_) => paths::index(matched),
            // The fallback, which serves the validate route too.
            None => paths::fallback_index(request.uri().path()),
        };
        debug_assert!(
            matched.is_none() || route < paths::TABLE.len(),
            "route {matched:?} is missing from http::paths::TABLE"
        );
        let method = method_label(request.method());
        let config = self.config;
        let stage = match config.refusal(&request) {
            Some(response) => Stage::Answered {
                response: Some(response),
            },
            None => {
                // A request without a body (most GETs) has nothing to bound.
                if !request.body().is_end_stream() {
                    let bounds = config.bounds;
                    request =
                        request.map(|body| Body::new(BoundedBody::since(body, bounds, started)));
                }
                let handler = self.handler;
                match catch_unwind(AssertUnwindSafe(move || handler.call(request, state))) {
                    Ok(future) => Stage::Running { future },
                    Err(panic) => Stage::Answered {
                        response: Some(panic_response(panic)),
                    },
                }
            }
        };
        GuardFuture {
            stage,
            grace: None,
            config,
            started,
            route,
            method,
        }
    }
}

/// The method as a metrics label: only known methods become labels, since
/// anyone can send a made-up one.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Resolves once the shutdown grace is over.
type GraceOver = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project_lite::pin_project! {
    /// A request being answered.
    pub(crate) struct GuardFuture<F> {
        #[pin]
        stage: Stage<F>,
        // Subscribed to only once the handler has to wait: a request
        // answered at its first poll never touches the shutdown signal.
        grace: Option<GraceOver>,
        config: Arc<Config>,
        started: Instant,
        route: usize,
        method: &'static str,
    }
}

pin_project_lite::pin_project! {
    /// Where a request is.
    #[project = StageProjection]
    enum Stage<F> {
        // Its handler runs.
        Running { #[pin] future: F },
        // It was answered without its handler (or the handler panicked
        // when called); the answer is taken when polled.
        Answered { response: Option<Response> },
        // Answered: the handler's future is dropped.
        Done,
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Response>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.stage.as_mut().project() {
            StageProjection::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Ready(response)) => response,
                    Ok(Poll::Pending) => {
                        let state = &this.config.state;
                        let grace = this
                            .grace
                            .get_or_insert_with(|| Box::pin(grace_over(state.clone())));
                        if grace.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        draining_response()
                    }
                    Err(panic) => panic_response(panic),
                }
            }
            StageProjection::Answered { response } => match response.take() {
                Some(response) => response,
                None => panic!("a guarded request was polled after it was answered"),
            },
            StageProjection::Done => panic!("a guarded request was polled after it was answered"),
        };
        // Drops the handler's future (a request cut by the grace's end
        // stops here).
        this.stage.set(Stage::Done);
        let mut response = response;
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        this.config.state.0.metrics.request(
            *this.route,
            this.method,
            response.status().as_u16(),
            this.started.elapsed(),
        );
        Poll::Ready(response)
    }
}

/// Resolves once `state`'s shutdown grace is over.
async fn grace_over(state: AppState) {
    let mut over = state.0.grace_over.subscribe();
    // The sender lives as long as the state: an error cannot happen, and
    // would not end the grace.
    if over.wait_for(|over| *over).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The answer to a request still running when the shutdown grace ends.
fn draining_response() -> Response {
    (
        [(header::CONNECTION, HeaderValue::from_static("close"))],
        ApiError::new(
            ErrorCode::Draining,
            "connhost shut down before this request finished; retry it against another replica or after the restart.",
        ),
    )
        .into_response()
}

/// The answer to a request whose handler panicked; the panic's payload is
/// not shown to the client (nor logged: it may quote a submitted value).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        ErrorCode::Internal,
        "connhost hit an internal error; it is logged.",
    )
    .into_response()
}
