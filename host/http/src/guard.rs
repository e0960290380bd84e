//! The one middleware around every route and the fallbacks: one service and
//! one future per request, written out by hand, instead of a stack of
//! layers that each clone the services below them, box a future and a
//! `Next` per request.
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

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse as _, Response};
use http_body::Body as _;
use tower::{Layer, Service};

use super::auth::RequireToken;
use super::body::{payload_too_large, BodyBounds, BoundedBody};
use super::error::{ApiError, ErrorCode};
use super::{paths, AppState};

/// What [`Guard`] needs, shared by every route's copy of it.
struct Config {
    state: AppState,
    /// The token check; `None` when the server has no token.
    token: Option<RequireToken>,
    bounds: BodyBounds,
}

/// Builds [`Guard`] around each route (with `Router::layer`, so it runs
/// after routing and sees the matched route).
#[derive(Clone)]
pub(crate) struct GuardLayer(Arc<Config>);

impl GuardLayer {
    /// The guard for `state`'s routes: `token` checked when set, bodies
    /// held to `bounds`.
    pub(crate) fn new(state: AppState, token: Option<RequireToken>, bounds: BodyBounds) -> Self {
        Self(Arc::new(Config {
            state,
            token,
            bounds,
        }))
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            config: self.0.clone(),
        }
    }
}

/// The service [`GuardLayer`] wraps around each route.
#[derive(Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Guard<S> {
    /// The answer to a request refused before its handler runs: no token
    /// (or the wrong one), or a declared body over the limit.
    fn refusal(&self, request: &Request) -> Option<Response> {
        if let Some(token) = &self.config.token {
            if let Some(refused) = token.refusal(request) {
                return Some(refused);
            }
        }
        // hyper's size hint is exactly the `Content-Length` when there is
        // one (it has checked the header), and 0 for a chunked body.
        let declared = request.body().size_hint().lower();
        let limit = u64::try_from(self.config.bounds.limit).unwrap_or(u64::MAX);
        (declared > limit).then(|| payload_too_large().into_response())
    }
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let matched = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let route = paths::index(matched);
        debug_assert!(
            matched.is_none() || route < paths::TABLE.len(),
            "route {matched:?} is missing from http::paths::TABLE"
        );
        let method = method_label(request.method());
        let stage = match self.refusal(&request) {
            Some(response) => Stage::Answered {
                response: Some(response),
            },
            None => {
                // A request without a body (most GETs) has nothing to bound.
                if !request.body().is_end_stream() {
                    let bounds = self.config.bounds;
                    request = request.map(|body| Body::new(BoundedBody::new(body, bounds)));
                }
                match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
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
            config: self.config.clone(),
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
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.stage.as_mut().project() {
            StageProjection::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Ready(Ok(response))) => response,
                    Ok(Poll::Ready(Err(never))) => match never {},
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
        Poll::Ready(Ok(response))
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
