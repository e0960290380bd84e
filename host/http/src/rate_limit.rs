//! Rate limits on validations, so that `POST /v1/providers/{id}/validate`
//! cannot serve as a credential-guessing oracle: one limit per client and
//! one per provider, each a keyed GCRA limiter (the `governor` crate).
//!
//! **Keys.** A client is its peer address (an IPv6 peer: its /64, the
//! smallest block a host is usually given, so one machine cannot walk its
//! own prefix to get fresh limits), together with, when the server has an
//! access token, a digest of the bearer token the request presented (only
//! the digest's first 16 bytes are kept, never the token). A provider is
//! its id, charged only once the provider is known to exist, so made-up
//! ids cannot grow the map.
//!
//! **Memory.** An attacker who rotates addresses creates a key per
//! address. Each limiter drops the keys whose limit has fully recovered
//! ([`governor::RateLimiter::retain_recent`]) every [`SWEEP_EVERY`] or
//! after [`MAX_KEYS`]` / 2` checks, whichever comes first; if more than
//! half of [`MAX_KEYS`] keys are still live after a sweep, it starts over
//! with an empty map (logged at most once a minute). Starting over gives
//! every client a fresh limit, which an attacker who rotates addresses has
//! anyway; the per-provider limit still bounds the guesses per provider.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;
use sha2::{Digest as _, Sha256};

use super::error::{ApiError, ErrorCode};

/// The most keys a limiter holds; see the module's documentation.
pub(crate) const MAX_KEYS: usize = 100_000;

/// How often a limiter drops the keys whose limit has recovered.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The period of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// `/s`
    Second,
    /// `/min`
    Minute,
    /// `/h`
    Hour,
}

impl Per {
    /// The period's length.
    pub const fn duration(self) -> Duration {
        match self {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
            Per::Hour => Duration::from_secs(3600),
        }
    }

    /// The unit as written: `s`, `min` or `h`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
            Per::Hour => "h",
        }
    }
}

/// A sustained rate: `count` requests per second, minute or hour. Written
/// (and parsed) as `30/min`, `5/s` or `100/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Per,
}

impl Rate {
    /// `count` requests per `per`.
    pub const fn new(count: NonZeroU32, per: Per) -> Self {
        Self { count, per }
    }

    /// How many requests per period.
    pub const fn count(self) -> NonZeroU32 {
        self.count
    }

    /// The period.
    pub const fn per(self) -> Per {
        self.per
    }

    /// The time one request takes to be earned back: the period divided
    /// by the count (never zero: parsing refuses such rates).
    pub fn interval(self) -> Duration {
        self.per.duration() / self.count.get()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.as_str())
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `N/s`, `N/min` or `N/h`, N a whole number of 1 or more.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage =
            || format!("{text:?} is not a rate: give N/s, N/min or N/h (such as 30/min), or off");
        let (count, unit) = text.trim().split_once('/').ok_or_else(usage)?;
        let per = match unit.trim() {
            "s" => Per::Second,
            "min" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(usage()),
        };
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        let count = NonZeroU32::new(count).ok_or_else(|| {
            format!(
                "{text:?}: a rate needs at least 1 request per period (off turns the limit off)"
            )
        })?;
        let rate = Rate::new(count, per);
        if rate.interval().is_zero() {
            return Err(format!(
                "{text:?} is too fast to measure: at most 1000000000/s"
            ));
        }
        Ok(rate)
    }
}

/// Parses a rate setting (`--client-rate`, `--provider-rate`, their
/// environment variables and configuration keys): a [`Rate`], or `off`
/// (`None`: no limit).
pub fn parse_rate(text: &str) -> Result<Option<Rate>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some)
}

/// A limit: a sustained [`Rate`], with bursts of up to `burst` requests at
/// once (a client that sent nothing for a while may send `burst` at once;
/// then one more per [`Rate::interval`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate.
    pub rate: Rate,
    /// The most requests at once.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `rate`, with bursts of up to `burst`.
    pub const fn new(rate: Rate, burst: NonZeroU32) -> Self {
        Self { rate, burst }
    }

    /// The limit as governor takes it.
    fn quota(self) -> Quota {
        Quota::with_period(self.rate.interval())
            .expect("a rate's interval is never zero")
            .allow_burst(self.burst)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with bursts of {}", self.rate, self.burst)
    }
}

/// A `NonZeroU32` from a constant (compile-time checked).
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

/// The default limit per client: 30 validations a minute, bursts of 10.
/// A person filling in a form submits a few times a minute at most; 30 a
/// minute (43,200 a day) is useless for guessing a credential.
pub const DEFAULT_CLIENT_LIMIT: RateLimit =
    RateLimit::new(Rate::new(nonzero(30), Per::Minute), nonzero(10));

/// The default limit per provider, over all clients: 600 validations a
/// minute, bursts of 100. It bounds the guesses against one provider even
/// from many addresses, and keeps connhost from spending a vendor's own
/// rate limit.
pub const DEFAULT_PROVIDER_LIMIT: RateLimit =
    RateLimit::new(Rate::new(nonzero(600), Per::Minute), nonzero(100));

/// The limits on validation requests (`POST /v1/providers/{id}/validate`,
/// which the settings page uses too). Every other route is unlimited.
///
/// On by default ([`DEFAULT_CLIENT_LIMIT`], [`DEFAULT_PROVIDER_LIMIT`]);
/// [`RateLimits::OFF`] (or `None` for either) turns them off. A client over
/// a limit is answered 429 `rate_limited` with `Retry-After`.
///
/// The per-client limit tells clients apart by their peer address, which
/// the router reads from axum's `ConnectInfo<SocketAddr>`: serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` (as
/// [`serve`](crate::serve) does). Without it, every client shares one
/// limit (logged once). Behind a reverse proxy every client has the
/// proxy's address: raise the per-client limit, or limit at the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// The limit for each client; `None`: no limit.
    pub per_client: Option<RateLimit>,
    /// The limit for each provider, over all clients; `None`: no limit.
    pub per_provider: Option<RateLimit>,
}

impl RateLimits {
    /// No limits.
    pub const OFF: RateLimits = RateLimits {
        per_client: None,
        per_provider: None,
    };
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_client: Some(DEFAULT_CLIENT_LIMIT),
            per_provider: Some(DEFAULT_PROVIDER_LIMIT),
        }
    }
}

/// Who a validation request comes from, as the per-client limit counts:
/// the network of its peer address and, when the server has a token, a
/// digest of the token it presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    network: Network,
    /// The first 16 bytes of the SHA-256 digest of the bearer token.
    token: Option<[u8; 16]>,
}

/// The part of a peer address that identifies a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    /// An IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    V4([u8; 4]),
    /// The /64 of an IPv6 address.
    V6([u8; 8]),
    /// No peer address was given to the router.
    Unknown,
}

impl ClientKey {
    /// The key of a request from `peer` that presented `token` (pass the
    /// token only when the server checks tokens: otherwise anyone could
    /// send a new made-up token with each request to get a fresh limit).
    pub(crate) fn new(peer: Option<IpAddr>, token: Option<&str>) -> Self {
        let network = match peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Network::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Network::V6(prefix)
            }
            None => Network::Unknown,
        };
        let token = token.map(|token| {
            let digest = Sha256::digest(token.trim().as_bytes());
            let mut kept = [0; 16];
            kept.copy_from_slice(&digest[..16]);
            kept
        });
        Self { network, token }
    }

    /// Whether the router knew the peer's address.
    pub(crate) fn has_address(&self) -> bool {
        self.network != Network::Unknown
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The client's own.
    Client,
    /// The provider's, over all clients.
    Provider,
}

impl Scope {
    /// The metric label: `client` or `provider`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Provider => "provider",
        }
    }
}

/// One keyed limiter with its memory bound.
struct Keyed<K: Hash + Eq + Clone> {
    limit: RateLimit,
    limiter: ArcSwap<governor::RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>>,
    clock: DefaultClock,
    max_keys: usize,
    /// Checks since the last sweep.
    checks: AtomicUsize,
    /// When the last sweep ran; locked by the one thread sweeping.
    last_sweep: Mutex<Instant>,
    /// When a reset was last logged.
    last_reset_logged: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit,
            limiter: ArcSwap::from_pointee(governor::RateLimiter::keyed(limit.quota())),
            clock: DefaultClock::default(),
            max_keys,
            checks: AtomicUsize::new(0),
            last_sweep: Mutex::new(Instant::now()),
            last_reset_logged: Mutex::new(None),
        }
    }

    /// Charges one request to `key`: `Err` with how long to wait when the
    /// key is over its limit.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.keep_bounded();
        self.limiter
            .load()
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Sweeps the recovered keys when one is due, and starts over when too
    /// many keys are still live. Every check can add at most one key, so
    /// sweeping after `max_keys / 2` checks, and starting over whenever
    /// more than `max_keys / 2` stay, keeps the map under `max_keys`.
    fn keep_bounded(&self) {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let half = (self.max_keys / 2).max(1);
        if checks < half && !self.sweep_is_due() {
            return;
        }
        // One sweeper at a time; the others carry on.
        let Ok(mut last_sweep) = self.last_sweep.try_lock() else {
            return;
        };
        self.checks.store(0, Ordering::Relaxed);
        *last_sweep = Instant::now();
        let limiter = self.limiter.load();
        limiter.retain_recent();
        let live = limiter.len();
        if live >= half {
            self.limiter
                .store(Arc::new(governor::RateLimiter::keyed(self.limit.quota())));
            self.log_reset(live);
        } else {
            limiter.shrink_to_fit();
        }
    }

    /// Whether [`SWEEP_EVERY`] has passed since the last sweep (`false`
    /// while another thread sweeps).
    fn sweep_is_due(&self) -> bool {
        self.last_sweep
            .try_lock()
            .is_ok_and(|last| last.elapsed() >= SWEEP_EVERY)
    }

    /// Logs a start-over, at most once a minute.
    fn log_reset(&self, live: usize) {
        let mut last = self
            .last_reset_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            tracing::warn!(
                live_keys = live,
                max_keys = self.max_keys,
                "a rate limiter tracks too many clients (addresses rotating?): it starts over with an empty map"
            );
            *last = Some(Instant::now());
        }
    }

    /// How many keys the limiter holds now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.load().len()
    }
}

/// The limiters of one server.
pub(crate) struct Limiters {
    client: Option<Keyed<ClientKey>>,
    provider: Option<Keyed<String>>,
    /// Whether the missing peer address was logged.
    warned_no_address: AtomicBool,
}

impl Limiters {
    /// Limiters for `limits`.
    pub(crate) fn new(limits: &RateLimits) -> Self {
        Self {
            client: limits.per_client.map(|l| Keyed::new(l, MAX_KEYS)),
            provider: limits.per_provider.map(|l| Keyed::new(l, MAX_KEYS)),
            warned_no_address: AtomicBool::new(false),
        }
    }

    /// Charges one validation of `provider` (which exists) by `client`:
    /// the client's limit first, so that a client over its own limit
    /// spends none of the provider's.
    pub(crate) fn check(&self, client: &ClientKey, provider: &str) -> Result<(), RateLimited> {
        if let Some(limiter) = &self.client {
            if !client.has_address() && !self.warned_no_address.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the per-client rate limit sees no peer address (serve the router with into_make_service_with_connect_info::<SocketAddr>()): clients without a token share one limit"
                );
            }
            limiter
                .check(client)
                .map_err(|wait| RateLimited::new(Scope::Client, limiter.limit, wait, provider))?;
        }
        if let Some(limiter) = &self.provider {
            // The map is keyed by owned ids: only ids that exist get here.
            limiter
                .check(&provider.to_owned())
                .map_err(|wait| RateLimited::new(Scope::Provider, limiter.limit, wait, provider))?;
        }
        Ok(())
    }
}

/// A request refused by a rate limit: 429 `rate_limited`, with
/// `Retry-After` in whole seconds (rounded up, at least 1).
#[derive(Debug)]
pub(crate) struct RateLimited {
    /// Which limit.
    pub(crate) scope: Scope,
    /// Whole seconds until a retry can succeed.
    pub(crate) retry_after: u64,
    message: String,
}

impl RateLimited {
    fn new(scope: Scope, limit: RateLimit, wait: Duration, provider: &str) -> Self {
        let retry_after = retry_after_seconds(wait);
        let message = match scope {
            Scope::Client => format!(
                "Too many validations from this client: the limit per client is {limit}. Retry in {retry_after} s."
            ),
            Scope::Provider => format!(
                "Too many validations with provider \"{provider}\" from all clients: the limit per provider is {limit}. Retry in {retry_after} s."
            ),
        };
        Self {
            scope,
            retry_after,
            message,
        }
    }
}

/// `wait` in whole seconds, rounded up, at least 1 (`Retry-After: 0`
/// would invite an immediate retry that the limit may still refuse).
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let mut response = ApiError::new(ErrorCode::RateLimited, self.message).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rates_parse_in_three_units_and_print_as_written() {
        for (text, count, per) in [
            ("30/min", 30, Per::Minute),
            ("5/s", 5, Per::Second),
            (" 100 / h ", 100, Per::Hour),
            ("1000000000/s", 1_000_000_000, Per::Second),
        ] {
            let rate: Rate = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((rate.count().get(), rate.per()), (count, per), "{text}");
        }
        assert_eq!("30/min".parse::<Rate>().unwrap().to_string(), "30/min");
        assert_eq!(
            "30/min".parse::<Rate>().unwrap().interval(),
            Duration::from_secs(2)
        );
        assert_eq!(
            "600/min".parse::<Rate>().unwrap().interval(),
            Duration::from_millis(100)
        );
        assert_eq!(DEFAULT_CLIENT_LIMIT.to_string(), "30/min with bursts of 10");
    }

    #[test]
    fn bad_rates_say_what_is_expected() {
        for text in [
            "30",
            "30/m",
            "30/minute",
            "/min",
            "x/min",
            "-1/s",
            "1.5/s",
            "",
        ] {
            let error = text.parse::<Rate>().expect_err(text);
            assert!(
                error.contains("is not a rate: give N/s, N/min or N/h"),
                "{text}: {error}"
            );
        }
        let error = "0/min".parse::<Rate>().unwrap_err();
        assert!(error.contains("at least 1 request per period"), "{error}");
        let error = "4000000000/s".parse::<Rate>().unwrap_err();
        assert!(error.contains("too fast"), "{error}");
    }

    #[test]
    fn off_turns_a_limit_off() {
        assert_eq!(parse_rate("off"), Ok(None));
        assert_eq!(parse_rate(" OFF "), Ok(None));
        assert_eq!(
            parse_rate("2/s"),
            Ok(Some(Rate::new(NonZeroU32::new(2).unwrap(), Per::Second)))
        );
        assert!(parse_rate("none").is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(120)), 120);
    }

    #[test]
    fn ipv4_clients_are_their_address_and_ipv6_clients_their_64() {
        let v4 = |s: &str| ClientKey::new(Some(s.parse().unwrap()), None);
        assert_eq!(v4("192.0.2.1"), v4("192.0.2.1"));
        assert_ne!(v4("192.0.2.1"), v4("192.0.2.2"));
        // One /64 is one client, whatever its interface identifier.
        assert_eq!(
            v4("2001:db8:1:2::1"),
            v4("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(v4("2001:db8:1:2::1"), v4("2001:db8:1:3::1"));
        // IPv4 clients of a dual-stack listener arrive IPv4-mapped: each is
        // still its own client (they would all share ::ffff:0:0/64).
        assert_eq!(v4("::ffff:192.0.2.1"), v4("192.0.2.1"));
        assert_ne!(v4("::ffff:192.0.2.1"), v4("::ffff:192.0.2.2"));
        assert_eq!(
            ClientKey::new(Some(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())), None),
            ClientKey::new(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), None)
        );
        assert_ne!(
            ClientKey::new(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), None),
            ClientKey::new(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), None)
        );
        assert!(!ClientKey::new(None, None).has_address());
    }

    #[test]
    fn a_token_splits_clients_and_only_its_digest_is_kept() {
        let peer = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let a = ClientKey::new(peer, Some("token-a"));
        assert_eq!(a, ClientKey::new(peer, Some("token-a")));
        assert_ne!(a, ClientKey::new(peer, Some("token-b")));
        assert_ne!(a, ClientKey::new(peer, None));
        assert_ne!(
            a,
            ClientKey::new(
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
                Some("token-a")
            )
        );
        let shown = format!("{a:?}");
        assert!(!shown.contains("token-a"), "{shown}");
        let digest = Sha256::digest(b"token-a");
        assert_eq!(a.token, Some(<[u8; 16]>::try_from(&digest[..16]).unwrap()));
    }

    #[test]
    fn a_key_over_its_limit_waits_and_others_do_not() {
        let limit = RateLimit::new("60/min".parse().unwrap(), NonZeroU32::new(2).unwrap());
        let keyed = Keyed::new(limit, MAX_KEYS);
        assert_eq!(keyed.check(&1), Ok(()));
        assert_eq!(keyed.check(&1), Ok(()));
        let wait = keyed.check(&1).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(keyed.check(&2), Ok(()));
    }

    #[test]
    fn keys_stay_bounded_when_every_request_comes_from_a_new_address() {
        // Keys that never recover within the test: only starting over can
        // drop them.
        let limit = RateLimit::new("1/h".parse().unwrap(), NonZeroU32::new(1).unwrap());
        let keyed = Keyed::new(limit, 100);
        let mut most = 0;
        for key in 0..10_000u32 {
            assert_eq!(keyed.check(&key), Ok(()), "a new key is never limited");
            most = most.max(keyed.len());
        }
        assert!(most < 100, "{most} keys held");
    }

    #[test]
    fn recovered_keys_are_swept() {
        let limit = RateLimit::new("1000000/s".parse().unwrap(), NonZeroU32::new(1).unwrap());
        let keyed = Keyed::new(limit, 100);
        for key in 0..49u32 {
            keyed.check(&key).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        // The 50th check sweeps: every earlier key has recovered.
        keyed.check(&1000).unwrap();
        assert!(keyed.len() <= 1, "{} keys held", keyed.len());
    }

    /// The router as an embedder mounts it, without `ConnectInfo`: every
    /// client shares one limit, and the answer is the 429 envelope with
    /// `Retry-After`, counted in the metrics.
    #[tokio::test]
    async fn the_router_answers_429_with_retry_after_even_without_a_peer_address() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use tower::ServiceExt as _;

        let config = crate::HttpConfig {
            rate_limits: RateLimits {
                per_client: Some(RateLimit::new("1/h".parse().unwrap(), nonzero(1))),
                per_provider: None,
            },
            ..crate::HttpConfig::default()
        };
        let state = crate::AppState::new(&config);
        state.set_host(connhost::Connhost::start(&connhost::HostConfig::default()));
        let app = crate::router(state, &config);
        let ask = |path: &str| {
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"fields": {}}"#))
                .unwrap()
        };
        let path = "/v1/providers/openai/validate";
        // An empty form: 422, and the provider is not called.
        let first = app.clone().oneshot(ask(path)).await.unwrap();
        assert_eq!(first.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let second = app.clone().oneshot(ask(path)).await.unwrap();
        assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = second.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((3500..=3600).contains(&retry_after), "{retry_after}");
        let body = axum::body::to_bytes(second.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        // An unknown provider is a 404, never charged.
        let unknown = app
            .clone()
            .oneshot(ask("/v1/providers/nope/validate"))
            .await;
        assert_eq!(unknown.unwrap().status(), StatusCode::NOT_FOUND);
        let metrics = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert!(
            text.contains("connhost_rate_limited_total{scope=\"client\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_client_limit_comes_first_and_each_answer_names_its_limit() {
        let limits = RateLimits {
            per_client: Some(RateLimit::new("1/h".parse().unwrap(), nonzero(1))),
            per_provider: Some(RateLimit::new("1/h".parse().unwrap(), nonzero(2))),
        };
        let limiters = Limiters::new(&limits);
        let a = ClientKey::new(Some("192.0.2.1".parse().unwrap()), None);
        let b = ClientKey::new(Some("192.0.2.2".parse().unwrap()), None);
        let c = ClientKey::new(Some("192.0.2.3".parse().unwrap()), None);
        limiters.check(&a, "p").unwrap();
        let refused = limiters.check(&a, "p").unwrap_err();
        assert_eq!(refused.scope, Scope::Client);
        assert!(refused
            .message
            .contains("per client is 1/h with bursts of 1"));
        assert!(refused.retry_after > 3500 && refused.retry_after <= 3600);
        // A's refusals spent none of the provider's limit.
        limiters.check(&b, "p").unwrap();
        let refused = limiters.check(&c, "p").unwrap_err();
        assert_eq!(refused.scope, Scope::Provider);
        assert!(
            refused.message.contains("provider \"p\""),
            "{}",
            refused.message
        );
        let d = ClientKey::new(Some("192.0.2.4".parse().unwrap()), None);
        limiters.check(&d, "q").unwrap();
        let off = Limiters::new(&RateLimits::OFF);
        for _ in 0..100 {
            off.check(&a, "p").unwrap();
        }
    }
}
