//! Prometheus metrics: requests by route and status, validation outcomes
//! and latency by provider, plugins loaded and failed.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::Connhost;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
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
    request_seconds: Family<RouteLabels, Histogram>,
    validations: Family<OutcomeLabels, Counter>,
    validation_seconds: Family<ProviderLabels, Histogram>,
    plugins_loaded: Gauge<i64, AtomicI64>,
    plugins_failed: Gauge<i64, AtomicI64>,
    providers: Gauge<i64, AtomicI64>,
}

type AtomicI64 = std::sync::atomic::AtomicI64;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
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
        Arc::new(Self {
            registry,
            requests: requests.clone(),
            request_seconds,
            validations,
            validation_seconds,
            plugins_loaded,
            plugins_failed,
            providers,
        })
    }

    /// Records the provider set after (re)loading.
    pub(crate) fn set_host(&self, host: &Connhost) {
        self.plugins_loaded
            .set(host.load_report().loaded.len() as i64);
        self.plugins_failed
            .set(host.load_report().failed.len() as i64);
        self.providers.set(host.registry().len() as i64);
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
}

/// Counts and times every request by its route template (never the raw
/// path, which would make unbounded labels), and logs it.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only known methods become labels: anyone can send a made-up one.
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        axum::http::Method::OPTIONS => "OPTIONS",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "connhost::http",
        method,
        route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}
