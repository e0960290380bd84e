//! Prometheus metrics: requests by route and status, validation outcomes
//! and latency by provider, plugins loaded and failed.
//!
//! `/metrics` speaks both text formats and labels each with its own content
//! type: OpenMetrics 1.0.0 to a scraper whose `Accept` asks for it (as
//! Prometheus does), and otherwise the classic Prometheus text format
//! 0.0.4, which every tool reads (`curl | promtool check metrics`, older
//! scrapers, agents that ask for `text/plain`). The two differ for counters:
//! OpenMetrics names the family `connhost_http_requests` and its sample
//! `connhost_http_requests_total`; the classic format's `# HELP` and `# TYPE`
//! name the sample itself, and it has no `# EOF`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::paths;
use connhost::Connhost;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

/// The values of the `scope` label of `rate_limited`: the rate limits'
/// [`crate::rate_limit::Scope`]s, named as that type names them.
pub(crate) const RATE_LIMIT_SCOPES: [&str; 2] = ["client", "provider"];

/// The shared rate limit store's two metrics: handles on series
/// registered in the server's registry ([`Metrics::rate_limit_store`]).
#[derive(Clone, Default)]
pub(crate) struct StoreMetrics {
    /// 1 while the store answers, 0 while decisions are made without it.
    pub(crate) up: Gauge<i64, AtomicI64>,
    /// Decisions made without the store.
    pub(crate) fallbacks: Counter,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Each route's request counters seen so far, by [`paths::index`]:
    /// (method, status, a handle on the family's counter).
    route_requests: Vec<RwLock<Vec<RequestSeries>>>,
    /// The latency histogram of each route, by [`paths::index`]: looked up
    /// once here rather than hashed on every request.
    route_seconds: Vec<Histogram>,
    validations: Family<OutcomeLabels, Counter>,
    validation_seconds: Family<ProviderLabels, Histogram>,
    /// Each provider's series of the two above, found by its id as `&str`
    /// (a family's lookup needs its owned labels: a `String` per call).
    by_provider: RwLock<ByProvider>,
    rate_limited: Family<ScopeLabels, Counter>,
    plugins_loaded: Gauge<i64, AtomicI64>,
    plugins_failed: Gauge<i64, AtomicI64>,
    providers: Gauge<i64, AtomicI64>,
    plugins_folder_unreadable: Gauge<i64, AtomicI64>,
    /// The host the collectors read.
    served: Served,
    /// What `serve --sync` published (`crate::sync`).
    pub(crate) sync: crate::sync::Published,
}

type AtomicI64 = std::sync::atomic::AtomicI64;

/// Each provider's validation series, by provider id. The ids are the
/// loaded providers' (a validation of an unknown id records nothing), so
/// a short string hash will do: FNV-1a, instead of SipHash's rounds on
/// every validation.
type ByProvider =
    std::collections::HashMap<Box<str>, ProviderSeries, std::hash::BuildHasherDefault<Fnv1a>>;

/// The 64-bit FNV-1a hash.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The host being served, as the collectors read it at each scrape (the
/// counts are the host's own, kept across hot reloads of its catalog).
type Served = Arc<arc_swap::ArcSwapOption<Connhost>>;

/// Isolated plugins' worker crashes and restarts, read from the served
/// host's counts at each scrape.
#[derive(Debug)]
struct WorkerCollector(Served);

impl prometheus_client::collector::Collector for WorkerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::TypedMetric as _;
        let counts = self
            .0
            .load()
            .as_ref()
            .map(|host| host.worker_counts())
            .unwrap_or_default();
        if counts.is_empty() {
            // No plugin was ever isolated: no series, so no metadata
            // without one.
            return Ok(());
        }
        type Pick = fn(&connhost::WorkerCounts) -> u64;
        let series: [(&str, &str, Pick); 2] = [
            (
                "worker_crashes",
                "Isolated plugins' worker processes that died without the host asking, by plugin.",
                |c| c.crashes,
            ),
            (
                "worker_restarts",
                "Isolated plugins' worker processes started again after one died, by plugin.",
                |c| c.restarts,
            ),
        ];
        for (name, help, pick) in series {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstCounter::<u64>::TYPE)?;
            for (plugin, counts) in &counts {
                let labels = [("plugin", plugin.as_str())];
                ConstCounter::new(pick(counts)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Requests the egress policy refused, by plugin and reason (never by
/// host: a host named in a form field would make the series unbounded),
/// read from the served host's counts at each scrape.
#[derive(Debug)]
struct EgressCollector(Served);

impl prometheus_client::collector::Collector for EgressCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::TypedMetric as _;
        let refusals = self
            .0
            .load()
            .as_ref()
            .map(|host| host.egress_refusals())
            .unwrap_or_default();
        if refusals.is_empty() {
            // Nothing refused yet: no series, so no metadata without one.
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "egress_refused",
            "Plugins' HTTP requests refused by their egress policy, by plugin and reason (not_granted, private_address).",
            None,
            ConstCounter::<u64>::TYPE,
        )?;
        for (plugin, reason, count) in &refusals {
            let labels = [("plugin", plugin.as_str()), ("reason", *reason)];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A request counter with its method and status (its route is where it
/// is kept).
type RequestSeries = (&'static str, u16, Counter);

/// One provider's validation series: handles on the families' own
/// metrics (a clone shares the value).
struct ProviderSeries {
    seconds: Histogram,
    /// By outcome; only outcomes seen so far (a series appears with its
    /// first validation, as the family's would).
    outcomes: Vec<(&'static str, Counter)>,
}

impl ProviderSeries {
    /// Records a validation with `outcome` that took `seconds`; `None`
    /// (nothing recorded) when the outcome has no series yet.
    fn record(&self, outcome: &str, seconds: f64) -> Option<()> {
        let (_, counter) = self.outcomes.iter().find(|(known, _)| *known == outcome)?;
        counter.inc();
        self.seconds.observe(seconds);
        Some(())
    }
}

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
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Validation requests refused by a rate limit, by scope (client or provider)",
            rate_limited.clone(),
        );
        // Both series exist from the start (at zero).
        for scope in RATE_LIMIT_SCOPES {
            let _ = rate_limited.get_or_create(&ScopeLabels { scope });
        }
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
        let served = Served::default();
        registry.register_collector(Box::new(WorkerCollector(served.clone())));
        registry.register_collector(Box::new(EgressCollector(served.clone())));
        let sync = crate::sync::Published::default();
        registry.register_collector(Box::new(crate::sync::SyncCollector(sync.clone())));
        // Every route's series exists from the start (at zero).
        let route_seconds = (0..=paths::TABLE.len())
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
            route_requests: (0..=paths::TABLE.len())
                .map(|_| RwLock::default())
                .collect(),
            route_seconds,
            validations,
            validation_seconds,
            by_provider: Default::default(),
            rate_limited,
            plugins_loaded,
            plugins_failed,
            providers,
            plugins_folder_unreadable,
            served,
            sync,
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
        self.served.store(Some(Arc::new(host.clone())));
    }

    /// Records one validation.
    pub(crate) fn validation(&self, provider: &str, outcome: &'static str, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        let known = self
            .by_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(provider)
            .and_then(|series| series.record(outcome, elapsed))
            .is_some();
        if known {
            return;
        }
        // A provider or outcome seen for the first time: its series are
        // made (with their owned labels) once, then looked up by `&str`.
        let mut by_provider = self
            .by_provider
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let series = by_provider
            .entry(provider.into())
            .or_insert_with(|| ProviderSeries {
                seconds: self
                    .validation_seconds
                    .get_or_create(&ProviderLabels {
                        provider: provider.to_owned(),
                    })
                    .clone(),
                outcomes: Vec::new(),
            });
        if !series.outcomes.iter().any(|(known, _)| *known == outcome) {
            let counter = self
                .validations
                .get_or_create(&OutcomeLabels {
                    provider: provider.to_owned(),
                    outcome,
                })
                .clone();
            series.outcomes.push((outcome, counter));
        }
        let recorded = series.record(outcome, elapsed);
        debug_assert!(recorded.is_some(), "the series were just made");
    }

    /// Registers the shared rate limit store's series (only a server
    /// with a store has them): the gauge `rate_limit_store_up` (1 while
    /// the store answers, 0 while decisions are made without it; 0 until
    /// first reached) and the counter `rate_limit_store_fallbacks`.
    pub(crate) fn rate_limit_store(&mut self) -> StoreMetrics {
        let store = StoreMetrics::default();
        self.registry.register(
            "rate_limit_store_up",
            "1 while the shared rate limit store answers, 0 while validations are decided without it",
            store.up.clone(),
        );
        self.registry.register(
            "rate_limit_store_fallbacks",
            "Validations decided without the shared rate limit store (it did not answer): by this replica's own limits, or refused 503 in closed mode",
            store.fallbacks.clone(),
        );
        store
    }

    /// Records one request refused by a rate limit of `scope` (one of
    /// [`RATE_LIMIT_SCOPES`]).
    pub(crate) fn rate_limited(&self, scope: &'static str) {
        self.rate_limited
            .get_or_create(&ScopeLabels { scope })
            .inc();
    }

    /// The metrics in `format`.
    pub(crate) fn encode(&self, format: Exposition) -> String {
        let mut text = String::new();
        // prometheus_client writes OpenMetrics 1.0.0 text.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Exposition::OpenMetrics => text,
            Exposition::Classic => openmetrics_to_classic(&text),
        }
    }

    /// Counts a request of `route` (by [`paths::index`]), `method` and
    /// `status`: its counter found among the route's few series without
    /// hashing labels (as the family's lookup does), made on first use.
    fn count_request(&self, route: usize, method: &'static str, status: u16) {
        let Some(seen) = self.route_requests.get(route) else {
            self.requests_family(route, method, status).inc();
            return;
        };
        let find = |seen: &[RequestSeries]| {
            seen.iter()
                .position(|(m, s, _)| *s == status && *m == method)
        };
        {
            let seen = seen.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = find(&seen) {
                seen[at].2.inc();
                return;
            }
        }
        let mut seen = seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = find(&seen) {
            seen[at].2.inc();
            return;
        }
        let counter = self.requests_family(route, method, status);
        counter.inc();
        seen.push((method, status, counter));
    }

    /// The family's own request counter for these labels.
    fn requests_family(&self, route: usize, method: &'static str, status: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                route: paths::label(route),
                method,
                status,
            })
            .clone()
    }

    /// Records one answered request: counted and timed by its route
    /// template (never the raw path, which would make unbounded labels),
    /// and logged.
    pub(crate) fn request(
        &self,
        route: usize,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        if let Some(histogram) = self.route_seconds.get(route) {
            histogram.observe(elapsed.as_secs_f64());
        }
        self.count_request(route, method, status);
        let route = paths::label(route);
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

/// A text format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposition {
    /// OpenMetrics 1.0.0 (`application/openmetrics-text`).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (`text/plain`).
    Classic,
}

impl Exposition {
    /// The content type of OpenMetrics text.
    pub(crate) const OPENMETRICS: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
    /// The content type of the classic text format.
    pub(crate) const CLASSIC: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// The format for a request with this `Accept` header: OpenMetrics when
    /// the client lists `application/openmetrics-text` (version 1.0.0,
    /// 0.0.1 or none) with a quality above zero and no lower than what it
    /// gives `text/plain` (named, or through `text/*` or `*/*`); otherwise
    /// classic, including when there is no `Accept` or nothing acceptable
    /// (a scrape is better answered than refused with 406).
    pub(crate) fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Exposition::Classic;
        };
        let mut openmetrics = 0.0_f32;
        let mut text_named: Option<f32> = None;
        let mut text_wildcard = 0.0_f32;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut quality = 1.0_f32;
            let mut version = None;
            for parameter in parts {
                let Some((name, value)) = parameter.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    // An unreadable quality makes the range unusable.
                    "q" => quality = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) =>
                {
                    openmetrics = openmetrics.max(quality);
                }
                "text/plain" if matches!(version.as_deref(), None | Some("0.0.4")) => {
                    text_named = Some(text_named.unwrap_or(0.0).max(quality));
                }
                "text/*" | "*/*" => text_wildcard = text_wildcard.max(quality),
                _ => {}
            }
        }
        let text = text_named.unwrap_or(text_wildcard);
        if openmetrics > 0.0 && openmetrics >= text {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    /// The `Content-Type` of this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => Self::OPENMETRICS,
            Exposition::Classic => Self::CLASSIC,
        }
    }
}

/// Rewrites OpenMetrics text (as prometheus_client writes it) into the
/// classic text format 0.0.4: a counter's `# HELP` and `# TYPE` name its
/// `_total` sample, `unknown` becomes `untyped`, `# UNIT` and `# EOF` go,
/// and `HELP` keeps only the escapes the classic format knows (`\\`, `\n`).
/// Gauges and histograms are written the same in both formats.
fn openmetrics_to_classic(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let classic_name = |name: &str| -> String {
        if counters.contains(name) {
            format!("{name}_total")
        } else {
            name.to_owned()
        }
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            out.push_str(&classic_name(name));
            out.push(' ');
            // OpenMetrics also escapes `"` in HELP; the classic format
            // refuses that escape.
            out.push_str(&help.replace("\\\"", "\""));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = if kind == "unknown" { "untyped" } else { kind };
            out.push_str("# TYPE ");
            out.push_str(&classic_name(name));
            out.push(' ');
            out.push_str(kind);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.42 sends.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_goes_to_clients_that_ask_for_it_and_classic_to_the_rest() {
        for (accept, expected) in [
            (Some(PROMETHEUS_ACCEPT), Exposition::OpenMetrics),
            (
                Some("application/openmetrics-text"),
                Exposition::OpenMetrics,
            ),
            (
                Some("Application/OpenMetrics-Text; Version=1.0.0; q=0.9, text/plain;q=0.9"),
                Exposition::OpenMetrics,
            ),
            (None, Exposition::Classic),
            (Some("*/*"), Exposition::Classic),
            (Some("text/plain"), Exposition::Classic),
            (Some("text/plain;version=0.0.4"), Exposition::Classic),
            (Some("application/json"), Exposition::Classic),
            (
                Some("application/openmetrics-text;q=0.4, text/plain;q=0.5"),
                Exposition::Classic,
            ),
            (
                Some("application/openmetrics-text;q=0"),
                Exposition::Classic,
            ),
            (
                Some("application/openmetrics-text;q=x"),
                Exposition::Classic,
            ),
            (
                Some("application/openmetrics-text;version=9.9.9"),
                Exposition::Classic,
            ),
        ] {
            assert_eq!(Exposition::negotiate(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn the_classic_text_names_each_sample_in_help_and_type() {
        let metrics = Metrics::new();
        metrics.request(0, "GET", 200, Duration::from_millis(3));
        metrics.validation("daytona", "valid", Instant::now());
        let open = metrics.encode(Exposition::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE connhost_http_requests counter\n"));

        let classic = metrics.encode(Exposition::Classic);
        assert!(!classic.contains("# EOF"), "{classic}");
        for needle in [
            "# HELP connhost_http_requests_total HTTP requests by route, method and status.\n",
            "# TYPE connhost_http_requests_total counter\n",
            "connhost_http_requests_total{route=\"/v1/providers\",method=\"GET\",status=\"200\"} 1\n",
            "# TYPE connhost_validations_total counter\n",
            "# TYPE connhost_http_request_duration_seconds histogram\n",
            "# TYPE connhost_plugins_loaded gauge\n",
        ] {
            assert!(classic.contains(needle), "{needle} missing from:\n{classic}");
        }
        // Every sample's family is announced under the sample's own name
        // (or its histogram's), as the classic format requires.
        let typed: Vec<&str> = classic
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for sample in classic.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(
                typed.iter().any(|family| name == *family
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{family}{suffix}"))),
                "{name} has no TYPE in:\n{classic}"
            );
        }
    }

    #[test]
    fn help_escapes_are_the_classic_ones() {
        let open = "# HELP a_b Say \\\"hi\\\" \\\\ now\\n.\n# TYPE a_b counter\n# UNIT a_b seconds\na_b_total 1\n# TYPE c unknown\nc 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(open),
            "# HELP a_b_total Say \"hi\" \\\\ now\\n.\n# TYPE a_b_total counter\na_b_total 1\n# TYPE c untyped\nc 2\n"
        );
    }
}
