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
//!
//! **Time.** Every limiter reads one governor [`Clock`]: the monotonic
//! [`DefaultClock`] in a server, a [`FakeRelativeClock`] that the unit
//! tests advance (instead of sleeping) to check the waits, the sweeps and
//! the recovery to the nanosecond. The limits, the sweeps and the
//! once-a-minute log all read that one clock.
//!
//! **Shared.** With a [`RateLimitStore`] (`serve --rate-limit-store`),
//! the same limits live in Redis, so that replicas behind a load balancer
//! share them: the `store` module runs the same GCRA there, and these
//! limiters decide only while the store does not answer (or not at all,
//! in [`StoreFailure::Closed`] mode).
//!
//! [`FakeRelativeClock`]: governor::clock::FakeRelativeClock

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;
use sha2::{Digest as _, Sha256};

use super::error::{ApiError, ErrorCode};

mod store;

pub(crate) use store::StoreMetrics;
pub use store::{RateLimitStore, StoreFailure};

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

    /// The key in hex, as the shared store names it: `4-` and an IPv4
    /// address, `6-` and an IPv6 /64, or `none`; then `-` and the token's
    /// digest when there is one (never the token).
    pub(crate) fn hex(&self) -> String {
        use std::fmt::Write as _;
        let (tag, bytes): (&str, &[u8]) = match &self.network {
            Network::V4(octets) => ("4-", octets),
            Network::V6(prefix) => ("6-", prefix),
            Network::Unknown => ("none", &[]),
        };
        let mut text = String::with_capacity(2 + 2 * 8 + 1 + 2 * 16);
        text.push_str(tag);
        let token = self.token.as_ref().map_or(&[][..], |t| &t[..]);
        for (index, byte) in bytes.iter().chain(token).enumerate() {
            if index == bytes.len() {
                text.push('-');
            }
            let _ = write!(text, "{byte:02x}");
        }
        text
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

/// The governor limiter a [`Keyed`] holds: a keyed GCRA over a `DashMap`
/// (what `RateLimiter::keyed` builds), on the clock `C`.
type GovernorLimiter<K, C> =
    governor::RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limiter with its memory bound, on the clock `C` (the
/// monotonic [`DefaultClock`] but in tests).
struct Keyed<K: Hash + Eq + Clone, C: Clock> {
    limit: RateLimit,
    limiter: ArcSwap<GovernorLimiter<K, C>>,
    /// The limiter's clock (each new limiter gets a clone: clones of a
    /// fake clock share its time).
    clock: C,
    max_keys: usize,
    /// Checks since the last sweep.
    checks: AtomicUsize,
    /// When the last sweep ran; locked by the one thread sweeping.
    last_sweep: Mutex<C::Instant>,
    /// When a reset was last logged.
    last_reset_logged: Mutex<Option<C::Instant>>,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Keyed<K, C> {
    /// A limiter on `clock`.
    fn with_clock(limit: RateLimit, max_keys: usize, clock: C) -> Self {
        Self {
            limit,
            limiter: ArcSwap::from_pointee(Self::empty(limit, &clock)),
            last_sweep: Mutex::new(clock.now()),
            clock,
            max_keys,
            checks: AtomicUsize::new(0),
            last_reset_logged: Mutex::new(None),
        }
    }

    /// A limiter for `limit` with no keys yet.
    fn empty(limit: RateLimit, clock: &C) -> GovernorLimiter<K, C> {
        governor::RateLimiter::dashmap_with_clock(limit.quota(), clock.clone())
    }

    /// How long ago `then` was on this limiter's clock (zero if later).
    fn since(&self, then: C::Instant) -> Duration {
        self.clock.now().duration_since(then).into()
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
        *last_sweep = self.clock.now();
        let limiter = self.limiter.load();
        limiter.retain_recent();
        let live = limiter.len();
        if live >= half {
            self.limiter
                .store(Arc::new(Self::empty(self.limit, &self.clock)));
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
            .is_ok_and(|last| self.since(*last) >= SWEEP_EVERY)
    }

    /// Logs a start-over, at most once a minute.
    fn log_reset(&self, live: usize) {
        let mut last = self
            .last_reset_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| self.since(at) >= Duration::from_secs(60)) {
            tracing::warn!(
                live_keys = live,
                max_keys = self.max_keys,
                "a rate limiter tracks too many clients (addresses rotating?): it starts over with an empty map"
            );
            *last = Some(self.clock.now());
        }
    }

    /// How many keys the limiter holds now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.load().len()
    }
}

/// The limiters of one server, on the clock `C` (the monotonic
/// [`DefaultClock`] but in tests).
pub(crate) struct Limiters<C: Clock = DefaultClock> {
    client: Option<Keyed<ClientKey, C>>,
    provider: Option<Keyed<String, C>>,
    /// Whether the missing peer address was logged.
    warned_no_address: AtomicBool,
    /// The store the limits are shared through, if any (the limiters
    /// above decide while it does not answer, in `local` mode).
    store: Option<Arc<store::Store>>,
}

impl Limiters {
    /// Limiters for `limits`, on the monotonic clock.
    pub(crate) fn new(limits: &RateLimits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }

    /// Limiters for `limits` shared through `store` (connected in the
    /// background from now if this runs within a tokio runtime, else on
    /// the first decision), with its metrics.
    pub(crate) fn shared(
        limits: &RateLimits,
        store: &RateLimitStore,
        metrics: StoreMetrics,
    ) -> Self {
        let mut limiters = Self::new(limits);
        if limits.per_client.is_none() && limits.per_provider.is_none() {
            // Nothing to share.
            return limiters;
        }
        let store = Arc::new(store::Store::new(
            store,
            limits.per_client,
            limits.per_provider,
            metrics,
        ));
        if tokio::runtime::Handle::try_current().is_ok() {
            store.start();
        }
        limiters.store = Some(store);
        limiters
    }

    /// Decides at once on a validation of `provider` (which exists) by
    /// `client` when no store shares the limits: by this server's own
    /// limiters ([`Limiters::check`]). `None` with a store: then
    /// [`Limiters::decide`] asks it (a round trip, so a future of its own,
    /// which a server without a store does not build).
    pub(crate) fn decide_locally(
        &self,
        client: &ClientKey,
        provider: &str,
    ) -> Option<Result<(), Refusal>> {
        match self.store {
            Some(_) => None,
            None => Some(self.check(client, provider).map_err(Refusal::Limited)),
        }
    }

    /// Decides on a validation of `provider` (which exists) by `client`:
    /// through the shared store when there is one and it answers, else by
    /// this server's own limiters ([`Limiters::check`]), or refused when
    /// the store does not answer in `closed` mode.
    pub(crate) async fn decide(&self, client: &ClientKey, provider: &str) -> Result<(), Refusal> {
        let Some(store) = &self.store else {
            return self.check(client, provider).map_err(Refusal::Limited);
        };
        self.warn_without_address(client);
        match store.decide(client, provider).await {
            Some(store::Decision::Admitted) => Ok(()),
            Some(store::Decision::Refused(scope, wait)) => {
                let limit = match scope {
                    Scope::Client => self.client.as_ref().map(|l| l.limit),
                    Scope::Provider => self.provider.as_ref().map(|l| l.limit),
                };
                let limit = limit.expect("the store refuses only by a limit that is on");
                Err(Refusal::Limited(RateLimited::new(
                    scope, limit, wait, provider,
                )))
            }
            None => match store.on_failure() {
                StoreFailure::Local => self.check(client, provider).map_err(Refusal::Limited),
                StoreFailure::Closed => Err(Refusal::StoreUnavailable),
            },
        }
    }
}

impl<C: Clock> Limiters<C> {
    /// Whether a per-client limit is on (it needs each request's peer
    /// address).
    pub(crate) fn per_client(&self) -> bool {
        self.client.is_some()
    }
}

impl<C: Clock + Clone> Limiters<C> {
    /// Limiters for `limits` on `clock`.
    fn with_clock(limits: &RateLimits, clock: C) -> Self {
        Self {
            client: limits
                .per_client
                .map(|l| Keyed::with_clock(l, MAX_KEYS, clock.clone())),
            provider: limits
                .per_provider
                .map(|l| Keyed::with_clock(l, MAX_KEYS, clock.clone())),
            warned_no_address: AtomicBool::new(false),
            store: None,
        }
    }

    /// Logs once that the per-client limit sees no peer address.
    fn warn_without_address(&self, client: &ClientKey) {
        if self.client.is_some()
            && !client.has_address()
            && !self.warned_no_address.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "the per-client rate limit sees no peer address (serve the router with into_make_service_with_connect_info::<SocketAddr>()): clients without a token share one limit"
            );
        }
    }

    /// Charges one validation of `provider` (which exists) by `client`:
    /// the client's limit first, so that a client over its own limit
    /// spends none of the provider's.
    pub(crate) fn check(&self, client: &ClientKey, provider: &str) -> Result<(), RateLimited> {
        self.warn_without_address(client);
        if let Some(limiter) = &self.client {
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

/// Why a validation was refused before its body was read.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Over a limit: 429.
    Limited(RateLimited),
    /// The shared store does not answer and the server is set to refuse
    /// then (`closed`): 503 `rate_limit_unavailable`.
    StoreUnavailable,
}

impl Refusal {
    /// The answer, counted in `metrics` (a refusal by a limit, by its
    /// scope).
    pub(crate) fn answer(self, metrics: &super::metrics::Metrics) -> Response {
        match self {
            Refusal::Limited(limited) => {
                metrics.rate_limited(limited.scope.as_str());
                limited.into_response()
            }
            Refusal::StoreUnavailable => ApiError::new(
                ErrorCode::RateLimitUnavailable,
                "The rate limits on validations cannot be checked now (their shared store does not answer), and this server refuses validations until they can. Retry later.",
            )
            .into_response(),
        }
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

    #[test]
    fn the_metrics_label_every_scope_as_the_scope_names_itself() {
        assert_eq!(
            crate::metrics::RATE_LIMIT_SCOPES,
            [Scope::Client.as_str(), Scope::Provider.as_str()]
        );
    }
    use governor::clock::FakeRelativeClock;
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

    /// One nanosecond: the fake clock's resolution.
    const NS: Duration = Duration::from_nanos(1);

    /// A limit of `rate` with bursts of `burst`.
    fn limit(rate: &str, burst: u32) -> RateLimit {
        RateLimit::new(rate.parse().unwrap(), NonZeroU32::new(burst).unwrap())
    }

    /// A keyed limiter on a fake clock, and the clock (at zero) to advance.
    fn fake_keyed<K: Hash + Eq + Clone>(
        limit: RateLimit,
        max_keys: usize,
    ) -> (Keyed<K, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Keyed::with_clock(limit, max_keys, clock.clone()), clock)
    }

    /// Checks `key` until refused (at most 10,000 times, the clock standing
    /// still): how many were admitted, and the wait of the refusal.
    fn admitted_until_refused<C: Clock + Clone>(
        keyed: &Keyed<u32, C>,
        key: u32,
    ) -> (u32, Duration) {
        for admitted in 0..10_000 {
            if let Err(wait) = keyed.check(&key) {
                return (admitted, wait);
            }
        }
        panic!("10,000 checks of key {key} and no refusal");
    }

    #[test]
    fn in_a_server_the_limiter_is_governors_default_keyed_one() {
        // Compiles only if a server's limiter has the very type that
        // `RateLimiter::keyed` builds (same map, same monotonic clock).
        let keyed: GovernorLimiter<ClientKey, DefaultClock> =
            governor::RateLimiter::keyed(DEFAULT_CLIENT_LIMIT.quota());
        assert!(keyed.is_empty());
    }

    #[test]
    fn a_key_past_its_burst_is_refused_with_the_exact_wait_and_others_are_not() {
        // One a second, bursts of 3.
        let (keyed, _clock) = fake_keyed::<u32>(limit("60/min", 3), MAX_KEYS);
        for _ in 0..3 {
            assert_eq!(keyed.check(&1), Ok(()));
        }
        // The burst is spent at once: the next is earned in one interval.
        assert_eq!(keyed.check(&1), Err(Duration::from_secs(1)));
        // Refusals are not charged: asking again does not push it back.
        for _ in 0..100 {
            assert_eq!(keyed.check(&1), Err(Duration::from_secs(1)));
        }
        // Another key has its whole burst.
        assert_eq!(
            admitted_until_refused(&keyed, 2),
            (3, Duration::from_secs(1))
        );
    }

    #[test]
    fn a_refused_key_is_admitted_exactly_when_its_wait_has_passed() {
        let (keyed, clock) = fake_keyed::<u32>(limit("60/min", 3), MAX_KEYS);
        let (admitted, wait) = admitted_until_refused(&keyed, 1);
        assert_eq!((admitted, wait), (3, Duration::from_secs(1)));
        // Not a nanosecond before: the wait counts down with the clock.
        clock.advance(wait - NS);
        assert_eq!(keyed.check(&1), Err(NS));
        clock.advance(NS);
        assert_eq!(keyed.check(&1), Ok(()));
        // That one spent what was earned: the next waits a whole interval.
        assert_eq!(keyed.check(&1), Err(Duration::from_secs(1)));

        // An interval that is not whole seconds: 60/7 s, to the nanosecond.
        let rate: Rate = "7/min".parse().unwrap();
        let (keyed, clock) = fake_keyed::<u32>(RateLimit::new(rate, nonzero(1)), MAX_KEYS);
        assert_eq!(keyed.check(&1), Ok(()));
        let wait = keyed.check(&1).unwrap_err();
        assert_eq!(wait, rate.interval());
        assert_eq!(wait, Duration::from_nanos(8_571_428_571));
        clock.advance(wait - NS);
        assert_eq!(keyed.check(&1), Err(NS));
        clock.advance(NS);
        assert_eq!(keyed.check(&1), Ok(()));
    }

    #[test]
    fn the_sustained_rate_is_one_per_interval_and_idle_time_earns_back_at_most_the_burst() {
        let (keyed, clock) = fake_keyed::<u32>(limit("60/min", 3), MAX_KEYS);
        assert_eq!(admitted_until_refused(&keyed, 1).0, 3);
        // Asked for without pause: exactly one more each second.
        for second in 1..=10 {
            clock.advance(Duration::from_secs(1));
            assert_eq!(
                admitted_until_refused(&keyed, 1),
                (1, Duration::from_secs(1)),
                "second {second}"
            );
        }
        // Idle for two intervals: two earned back.
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            admitted_until_refused(&keyed, 1),
            (2, Duration::from_secs(1))
        );
        // Idle for an hour: the burst, never more.
        clock.advance(Duration::from_secs(3600));
        assert_eq!(
            admitted_until_refused(&keyed, 1),
            (3, Duration::from_secs(1))
        );

        // A client asking ten times a second for a minute, from fresh: the
        // burst at once, then one a second (at 1 s, 2 s, ... 60 s).
        let (keyed, clock) = fake_keyed::<u32>(limit("60/min", 3), MAX_KEYS);
        let mut admitted = 0;
        for tick in 0..=600 {
            if tick > 0 {
                clock.advance(Duration::from_millis(100));
            }
            admitted += u32::from(keyed.check(&1).is_ok());
        }
        assert_eq!(admitted, 3 + 60);
    }

    #[test]
    fn the_sweep_drops_idle_keys_every_sweep_every_and_keeps_limited_ones() {
        // One a second, bursts of 2; far more keys allowed than used, so
        // only the time since the last sweep brings one on.
        let (keyed, clock) = fake_keyed::<u32>(limit("1/s", 2), MAX_KEYS);
        let idle = 1;
        let busy = 2;
        assert_eq!(keyed.check(&idle), Ok(()));
        assert_eq!(keyed.check(&busy), Ok(()));
        clock.advance(Duration::from_millis(9_500));
        // The busy key spends its burst just before the sweep.
        assert_eq!(
            admitted_until_refused(&keyed, busy),
            (2, Duration::from_secs(1))
        );
        // Just before SWEEP_EVERY: the idle key has long recovered but is
        // still held.
        clock.advance(SWEEP_EVERY - Duration::from_millis(9_500) - NS);
        assert_eq!(keyed.check(&3), Ok(()));
        assert_eq!(keyed.len(), 3);
        // At SWEEP_EVERY the next check sweeps (before adding its key): the
        // idle key goes, the busy one and key 3 (still recovering) stay.
        clock.advance(NS);
        assert_eq!(keyed.check(&4), Ok(()));
        assert_eq!(keyed.len(), 3);
        // The sweep kept the busy key's state: still limited, not fresh.
        assert_eq!(keyed.check(&busy), Err(Duration::from_millis(500)));
        // The next sweep is SWEEP_EVERY later, not before.
        clock.advance(SWEEP_EVERY - NS);
        assert_eq!(keyed.check(&5), Ok(()));
        assert_eq!(keyed.len(), 4);
        clock.advance(NS);
        assert_eq!(keyed.check(&6), Ok(()));
        // Keys 2, 3 and 4 recovered by then; 5, checked 1 ns ago, has not.
        assert_eq!(keyed.len(), 2);
    }

    #[test]
    fn recovered_keys_are_swept_after_half_the_bound_of_checks() {
        // Keys recover within 2 µs: long before SWEEP_EVERY.
        let (keyed, clock) = fake_keyed::<u32>(limit("1000000/s", 1), 100);
        for key in 0..49 {
            assert_eq!(keyed.check(&key), Ok(()));
        }
        assert_eq!(keyed.len(), 49);
        clock.advance(Duration::from_micros(2));
        // The 50th check sweeps: every earlier key has recovered.
        assert_eq!(keyed.check(&1000), Ok(()));
        assert_eq!(keyed.len(), 1);
    }

    #[test]
    fn keys_stay_bounded_when_every_request_comes_from_a_new_address() {
        // The clock stands still: no key ever recovers, so only starting
        // over can drop them.
        let (keyed, _clock) = fake_keyed::<u32>(limit("1/h", 1), 100);
        let mut most = 0;
        for key in 0..10_000 {
            assert_eq!(keyed.check(&key), Ok(()), "a new key is never limited");
            most = most.max(keyed.len());
        }
        assert!(most < 100, "{most} keys held");
        assert!(most >= 50, "{most} keys held: it starts over too soon");
    }

    #[test]
    fn starting_over_gives_every_client_a_fresh_limit() {
        let (keyed, _clock) = fake_keyed::<u32>(limit("1/h", 1), 10);
        assert_eq!(keyed.check(&0), Ok(()));
        assert_eq!(keyed.check(&0), Err(Duration::from_secs(3600)));
        // Ten new keys that stay live: more than half the bound, so the
        // limiter starts over, and key 0 with it.
        for key in 1..=10 {
            assert_eq!(keyed.check(&key), Ok(()));
        }
        assert!(keyed.len() < 10, "{} keys held", keyed.len());
        assert_eq!(keyed.check(&0), Ok(()));
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

    /// Limiters for `limits` on a fake clock, and the clock (at zero).
    fn fake_limiters(limits: RateLimits) -> (Limiters<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiters::with_clock(&limits, clock.clone()), clock)
    }

    /// The client at `address`, without a token.
    fn at(address: &str) -> ClientKey {
        ClientKey::new(Some(address.parse().unwrap()), None)
    }

    #[test]
    fn the_client_limit_comes_first_and_each_answer_names_its_limit() {
        let (limiters, _clock) = fake_limiters(RateLimits {
            per_client: Some(limit("1/h", 1)),
            per_provider: Some(limit("1/h", 2)),
        });
        let (a, b, c) = (at("192.0.2.1"), at("192.0.2.2"), at("192.0.2.3"));
        limiters.check(&a, "p").unwrap();
        let refused = limiters.check(&a, "p").unwrap_err();
        assert_eq!(refused.scope, Scope::Client);
        assert!(refused
            .message
            .contains("per client is 1/h with bursts of 1"));
        assert_eq!(refused.retry_after, 3600);
        assert!(refused.message.contains("Retry in 3600 s."));
        // A's refusals spent none of the provider's limit.
        limiters.check(&b, "p").unwrap();
        let refused = limiters.check(&c, "p").unwrap_err();
        assert_eq!(refused.scope, Scope::Provider);
        assert!(
            refused.message.contains("provider \"p\""),
            "{}",
            refused.message
        );
        limiters.check(&at("192.0.2.4"), "q").unwrap();
        let off = Limiters::new(&RateLimits::OFF);
        for _ in 0..100 {
            off.check(&a, "p").unwrap();
        }
    }

    /// What the end-to-end test checks up to the 429 (a client past its
    /// burst of 2 at 60/min is told `Retry-After: 1`, another client is
    /// not limited), and then what it cannot without sleeping: after
    /// Retry-After the client is admitted again, not before.
    #[test]
    fn after_retry_after_a_refused_client_is_admitted_again_and_not_before() {
        let (limiters, clock) = fake_limiters(RateLimits {
            per_client: Some(limit("60/min", 2)),
            per_provider: Some(DEFAULT_PROVIDER_LIMIT),
        });
        let (first, second) = (at("127.0.0.1"), at("127.0.0.2"));
        limiters.check(&first, "mai").unwrap();
        limiters.check(&first, "mai").unwrap();
        let refused = limiters.check(&first, "mai").unwrap_err();
        assert_eq!((refused.scope, refused.retry_after), (Scope::Client, 1));
        for _ in 0..2 {
            limiters.check(&second, "mai").unwrap();
        }
        clock.advance(Duration::from_secs(refused.retry_after) - NS);
        let again = limiters.check(&first, "mai").unwrap_err();
        assert_eq!(again.retry_after, 1, "a nanosecond to go rounds up");
        clock.advance(NS);
        limiters.check(&first, "mai").unwrap();

        // Retry-After rounds a wait of 60/7 s up to 9 s: waiting 9 s is
        // enough, 8 s is not.
        let (limiters, clock) = fake_limiters(RateLimits {
            per_client: Some(limit("7/min", 1)),
            per_provider: None,
        });
        limiters.check(&first, "mai").unwrap();
        let refused = limiters.check(&first, "mai").unwrap_err();
        assert_eq!(refused.retry_after, 9);
        assert!(
            refused.message.contains("Retry in 9 s."),
            "{}",
            refused.message
        );
        clock.advance(Duration::from_secs(refused.retry_after - 1));
        assert_eq!(limiters.check(&first, "mai").unwrap_err().retry_after, 1);
        clock.advance(Duration::from_secs(1));
        limiters.check(&first, "mai").unwrap();
    }

    #[test]
    fn the_provider_limit_counts_every_client_and_recovers_at_its_rate() {
        let (limiters, clock) = fake_limiters(RateLimits {
            per_client: None,
            per_provider: Some(limit("1/h", 3)),
        });
        for n in 1..=3 {
            limiters.check(&at(&format!("192.0.2.{n}")), "mai").unwrap();
        }
        let refused = limiters.check(&at("192.0.2.4"), "mai").unwrap_err();
        assert_eq!(
            (refused.scope, refused.retry_after),
            (Scope::Provider, 3600)
        );
        // Another provider has its own limit.
        limiters.check(&at("192.0.2.4"), "bedrock").unwrap();
        // After the wait, one more for anyone; then one an hour.
        clock.advance(Duration::from_secs(3599));
        let refused = limiters.check(&at("192.0.2.5"), "mai").unwrap_err();
        assert_eq!(refused.retry_after, 1);
        clock.advance(Duration::from_secs(1));
        limiters.check(&at("192.0.2.5"), "mai").unwrap();
        let refused = limiters.check(&at("192.0.2.6"), "mai").unwrap_err();
        assert_eq!(
            (refused.scope, refused.retry_after),
            (Scope::Provider, 3600)
        );
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_each_ipv4_address_its_own() {
        let (limiters, _clock) = fake_limiters(RateLimits {
            per_client: Some(limit("1/h", 1)),
            per_provider: None,
        });
        let refused = |address: &str| limiters.check(&at(address), "p").is_err();
        // Anywhere in one /64: one limit.
        assert!(!refused("2001:db8:1:2::1"));
        assert!(refused("2001:db8:1:2::2"));
        assert!(refused("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        // The next /64 is another client.
        assert!(!refused("2001:db8:1:3::1"));
        // IPv4, also IPv4-mapped: one limit per address.
        assert!(!refused("192.0.2.1"));
        assert!(refused("::ffff:192.0.2.1"));
        assert!(!refused("::ffff:192.0.2.2"));
        assert!(refused("192.0.2.2"));
    }
}
