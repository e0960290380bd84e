//! Prometheus metrics: requests by route and status, validation outcomes
//! and latency by provider, plugins loaded and failed.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use super::{paths, AppState};
use crate::Connhost;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// The latency histogram of each route, by [`paths::index`]: looked up
    /// once here rather than hashed on every request.
    route_seconds: Vec<Histogram>,
    validations: Family<OutcomeLabels, Counter>,
    validation_seconds: Family<ProviderLabels, Histogram>,
    plugins_loaded: Gauge<i64, AtomicI64>,
    plugins_failed: Gauge<i64, AtomicI64>,
    providers: Gauge<i64, AtomicI64>,
    plugins_folder_unreadable: Gauge<i64, AtomicI64>,
}

type AtomicI64 = std::sync::atomic::AtomicI64;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("connhost");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_seconds.clone(),
        );
        let validations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "validations",
            "Validations by provider and outcome",
            validations.clone(),
        );
        let validation_seconds = Family::<ProviderLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "validation_duration_seconds",
            "Validation latency by provider",
            validation_seconds.clone(),
        );
        let plugins_loaded = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plugins_loaded",
            "Plugin files loaded",
            plugins_loaded.clone(),
        );
        let plugins_failed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plugins_failed",
            "Plugin files or providers that failed to load",
            plugins_failed.clone(),
        );
        let providers = Gauge::<i64, AtomicI64>::default();
        registry.register("providers", "Registered providers", providers.clone());
        let plugins_folder_unreadable = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plugins_folder_unreadable",
            "1 while the plugins folder cannot be listed (the last good set keeps serving)",
            plugins_folder_unreadable.clone(),
        );
        // Every route's series exists from the start (at zero).
        let route_seconds = (0..=paths::ALL.len())
            .map(|index| {
                request_seconds
                    .get_or_create(&RouteLabels {
                        route: paths::label(index),
                    })
                    .clone()
            })
            .collect();
        Self {
            registry,
            requests,
            route_seconds,
            validations,
            validation_seconds,
            plugins_loaded,
            plugins_failed,
            providers,
            plugins_folder_unreadable,
        }
    }

    /// Records the provider set after (re)loading.
    pub(crate) fn set_host(&self, host: &Connhost) {
        self.plugins_loaded
            .set(host.load_report().loaded.len() as i64);
        self.plugins_failed
            .set(host.load_report().failed.len() as i64);
        self.providers.set(host.registry().len() as i64);
        self.plugins_folder_unreadable
            .set(host.load_report().folder_failure().is_some().into());
    }

    /// Records one validation.
    pub(crate) fn validation(&self, provider: &str, outcome: &'static str, started: Instant) {
        self.validations
            .get_or_create(&OutcomeLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
        self.validation_seconds
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Records one answered request.
    fn request(&self, route: usize, method: &'static str, status: u16, elapsed: Duration) {
        if let Some(histogram) = self.route_seconds.get(route) {
            histogram.observe(elapsed.as_secs_f64());
        }
        let route = paths::label(route);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        tracing::info!(
            target: "connhost::http",
            method,
            route,
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// Counts and times every request by its route template (never the raw
/// path, which would make unbounded labels), and logs it. Applied with
/// `Router::layer`, so it runs after routing and sees the matched route.
#[derive(Clone)]
pub(crate) struct TrackLayer {
    state: AppState,
}

impl TrackLayer {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`TrackLayer`] wraps around each route.
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    state: AppState,
}

impl<S, B, ResBody> Service<Request<B>> for Track<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let matched = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let route = paths::index(matched);
        debug_assert!(
            matched.is_none() || route < paths::ALL.len(),
            "route {matched:?} is missing from http::paths::ALL"
        );
        // Only known methods become labels: anyone can send a made-up one.
        let method = match *request.method() {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::OPTIONS => "OPTIONS",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            _ => "other",
        };
        let started = Instant::now();
        TrackFuture {
            inner: self.inner.call(request),
            started,
            route,
            method,
            state: self.state.clone(),
        }
    }
}

pin_project! {
    /// A request being answered; records it once answered.
    pub(crate) struct TrackFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: usize,
        method: &'static str,
        state: AppState,
    }
}

impl<F, E, ResBody> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            this.state.0.metrics.request(
                *this.route,
                this.method,
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(result)
    }
}
