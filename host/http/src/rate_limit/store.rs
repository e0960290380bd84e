//! Rate limits shared by every replica through Redis (or Valkey): the
//! same GCRA as the local limiter, run by a Lua script on the Redis server,
//! on the server's clock (`TIME`), so that replicas' clocks do not matter.
//!
//! **One round trip per decision.** The script is loaded once (`SCRIPT
//! LOAD` when connecting) and called with `EVALSHA` (the client falls back
//! to `SCRIPT LOAD` and `EVALSHA` again on `NOSCRIPT`, after a restart of
//! Redis). It checks the client's limit, then the provider's, charging
//! each that admits, as the local limiter does, and answers which refused
//! and how long to wait.
//!
//! **Keys.** `connhost:rl:client:<hex>` (the client key's bytes in hex:
//! its network and the digest of its token, never a token) and
//! `connhost:rl:provider:<id>`. Each holds its theoretical arrival time
//! (microseconds on the server's clock) and expires when that time has
//! passed, when it would mean no more than a fresh key: Redis holds only
//! keys that are still limited.
//!
//! **Refused locally.** A refusal's wait is kept on this replica (by key,
//! at most [`MAX_REFUSED`] keys): until then, that key is refused without
//! a round trip, with the wait left. The wait is counted from when the
//! request was sent, so it never outlasts the store's.
//!
//! **When the store does not answer** (an error, or no answer within
//! [`ROUND_TRIP_TIMEOUT`]): the decision is made without it, by this
//! replica's own limiter ([`StoreFailure::Local`]) or refused 503
//! `rate_limit_unavailable` ([`StoreFailure::Closed`]); the change is
//! logged once, the gauge `connhost_rate_limit_store_up` drops to 0 and
//! `connhost_rate_limit_store_fallbacks_total` counts the decisions made
//! without the store. A task reconnects in the background (after
//! [`FIRST_PROBE_AFTER`], then backing off up to [`LAST_PROBE_EVERY`]) and
//! the store is used again as soon as it answers.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use super::{ClientKey, RateLimit, Scope};
pub(crate) use crate::metrics::StoreMetrics;

/// The longest a decision waits for the store before it is made without.
pub(crate) const ROUND_TRIP_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest connecting (and loading the script) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long after the store failed the first reconnection is tried.
pub(crate) const FIRST_PROBE_AFTER: Duration = Duration::from_millis(100);

/// The longest pause between two reconnection attempts.
pub(crate) const LAST_PROBE_EVERY: Duration = Duration::from_secs(2);

/// The most keys kept as refused on one replica; past it, the expired
/// ones go, then all of them if still too many.
pub(crate) const MAX_REFUSED: usize = 10_000;

/// The GCRA, one limit after the other (see the module's documentation),
/// as governor's: a key's state is its theoretical arrival time (TAT); a
/// request at `now` is refused while `now < TAT - tolerance` (wait that
/// long), else admitted and the TAT moves to `max(TAT, now) + interval`.
///
/// `KEYS[i]` is a limit's key, `ARGV[2i-1]` and `ARGV[2i]` its interval
/// and its tolerance (the burst less one, in intervals), in microseconds.
/// Answers `{0, 0}` when every limit admits (each charged), else `{i,
/// wait}`: the first limit that refused and the microseconds to wait,
/// rounded up (the limits after it are neither checked nor charged). With
/// no key it only reads the clock: the probe of a reconnection. One more
/// argument after the limits' is the time to use instead of the server's
/// (the unit tests' fake clock; a server never sends it).
///
/// Times are microseconds since 2023-11-14 on the server's clock, as Lua
/// numbers (doubles): exact to a few nanoseconds for decades, which keeps
/// the nanoseconds of an interval such as 60/7 s. They are stored with 17
/// significant digits, which keeps a double exactly.
pub(crate) const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local now = tonumber(ARGV[2 * #KEYS + 1])
if not now then
  local time = redis.call('TIME')
  now = (tonumber(time[1]) - 1700000000) * 1000000 + tonumber(time[2])
end
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local earliest = tat - tolerance
  if now < earliest then
    return {i, math.ceil(earliest - now)}
  end
  local next = tat + interval
  local ttl = math.max(1, math.ceil((next - now) / 1000))
  redis.call('SET', KEYS[i], string.format('%.17g', next), 'PX', ttl)
end
return {0, 0}
";

/// What a replica does while the shared store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreFailure {
    /// Each replica applies its own limits (the limits multiply by the
    /// number of replicas meanwhile).
    #[default]
    Local,
    /// Validations are refused: 503 `rate_limit_unavailable`.
    Closed,
}

impl StoreFailure {
    /// `local` or `closed`, as written in a setting.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreFailure::Local => "local",
            StoreFailure::Closed => "closed",
        }
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreFailure {
    type Err = String;

    /// `local` or `closed`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "local" => Ok(StoreFailure::Local),
            "closed" => Ok(StoreFailure::Closed),
            _ => Err(format!(
                "{text:?}: give local (each replica limits on its own while the store does not answer) or closed (validations are refused)"
            )),
        }
    }
}

/// Where the rate limits are shared: a Redis (or Valkey) server, given as
/// `redis://HOST:PORT[/DB]` (a password as `redis://:PASSWORD@HOST:PORT`;
/// it is never shown), and what to do while it does not answer.
#[derive(Clone)]
pub struct RateLimitStore {
    /// Shared: a client holds the whole connection information.
    client: Arc<redis::Client>,
    /// `redis://HOST:PORT/DB`, without credentials.
    shown: String,
    /// What to do while the store does not answer.
    pub on_failure: StoreFailure,
}

impl RateLimitStore {
    /// Parses `redis://HOST:PORT[/DB]`; other schemes (TLS, Unix sockets)
    /// are refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let usage = |why: &str| format!("{why}: give redis://HOST:PORT[/DB]");
        if !url.starts_with("redis://") {
            return Err(usage("not a redis:// address"));
        }
        let client = redis::Client::open(url).map_err(|e| usage(&e.to_string()))?;
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = &info.addr else {
            return Err(usage("not a TCP address"));
        };
        let shown = format!("redis://{host}:{port}/{}", info.redis.db);
        Ok(Self {
            client: Arc::new(client),
            shown,
            on_failure: StoreFailure::default(),
        })
    }

    /// The same store with `on_failure`.
    pub fn with_failure(mut self, on_failure: StoreFailure) -> Self {
        self.on_failure = on_failure;
        self
    }
}

impl FromStr for RateLimitStore {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        Self::parse(url)
    }
}

impl fmt::Display for RateLimitStore {
    /// `redis://HOST:PORT/DB`: never a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RateLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitStore")
            .field("address", &self.shown)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

/// What the store decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Every limit admitted (and was charged).
    Admitted,
    /// `scope`'s limit refused: retry after `wait`.
    Refused(Scope, Duration),
}

/// A key as refused locally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RefusedKey {
    Client(ClientKey),
    Provider(Box<str>),
}

/// The shared store of one server: its connection (while it answers),
/// the keys known to be refused, and the state the logs and metrics show.
pub(crate) struct Store {
    config: RateLimitStore,
    script: redis::Script,
    client_limit: Option<RateLimit>,
    provider_limit: Option<RateLimit>,
    /// The connection, while the store answers.
    connection: ArcSwapOption<MultiplexedConnection>,
    /// Whether a task is reconnecting.
    probing: AtomicBool,
    /// Whether it answers, since when, and the pause between attempts to
    /// reconnect; changes under this lock only.
    state: Mutex<State>,
    /// Keys refused until when (by this replica's clock).
    refused: Mutex<HashMap<RefusedKey, Instant>>,
    metrics: StoreMetrics,
}

/// When the store stopped answering, and the fallbacks counted then.
#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    fallbacks: u64,
}

/// The store's state, as the logs and the reconnections see it.
#[derive(Debug)]
struct State {
    /// Since when it has not answered (`None`: it answers, or it has not
    /// been reached yet).
    down: Option<Down>,
    /// Since when it has answered.
    up_since: Option<Instant>,
    /// The pause before the next attempt to reconnect: from
    /// [`FIRST_PROBE_AFTER`], doubled up to [`LAST_PROBE_EVERY`] after each
    /// failed attempt and each time the store fails within
    /// [`STABLE_AFTER`] of answering again (a store that answers the probe
    /// but fails every decision is not reconnected to in a loop).
    pause: Duration,
}

/// How long the store must have answered for a failure to be retried at
/// once again.
const STABLE_AFTER: Duration = Duration::from_secs(10);

impl Store {
    /// The store of `config` for these limits; not connected yet (call
    /// [`Store::start`] from within a tokio runtime).
    pub(crate) fn new(
        config: &RateLimitStore,
        client_limit: Option<RateLimit>,
        provider_limit: Option<RateLimit>,
        metrics: StoreMetrics,
    ) -> Self {
        Self {
            config: config.clone(),
            script: redis::Script::new(SCRIPT),
            client_limit,
            provider_limit,
            connection: ArcSwapOption::empty(),
            probing: AtomicBool::new(false),
            state: Mutex::new(State {
                down: None,
                up_since: None,
                pause: FIRST_PROBE_AFTER,
            }),
            refused: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// What to do while the store does not answer.
    pub(crate) fn on_failure(&self) -> StoreFailure {
        self.config.on_failure
    }

    /// Connects in the background (if not connected or connecting).
    pub(crate) fn start(self: &Arc<Self>) {
        if self.connection.load().is_some() || self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let pause = store.state().pause;
            if pause > FIRST_PROBE_AFTER {
                // It failed again soon after answering: not at once.
                tokio::time::sleep(pause).await;
            }
            loop {
                match store.connect().await {
                    Ok(connection) => {
                        // Cleared before the connection is published: a
                        // failure on it must be able to start a new probe.
                        store.probing.store(false, Ordering::Release);
                        store.came_up(connection);
                        return;
                    }
                    Err(why) => {
                        store.went_down(None, &why);
                        let pause = {
                            let mut state = store.state();
                            let pause = state.pause;
                            state.pause = (pause * 2).min(LAST_PROBE_EVERY);
                            pause
                        };
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        });
    }

    /// A new connection with the script loaded, checked by running it
    /// once (with no key: it only reads the clock).
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let attempt = async {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(CONNECT_TIMEOUT);
            let mut connection = self
                .config
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.script
                .prepare_invoke()
                .load_async(&mut connection)
                .await?;
            let _: (i64, i64) = self
                .script
                .prepare_invoke()
                .invoke_async(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>(connection)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
        }
    }

    /// The state, locked.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a working connection: shared limits from now on.
    fn came_up(&self, connection: MultiplexedConnection) {
        let mut state = self.state();
        if state.up_since.is_some() {
            // Another probe got there first.
            return;
        }
        self.connection.store(Some(Arc::new(connection)));
        self.metrics.up.set(1);
        state.up_since = Some(Instant::now());
        match state.down.take() {
            // A warning, as its start was: it closes that one.
            Some(Down { since, fallbacks }) => tracing::warn!(
                store = %self.config,
                down_for = ?since.elapsed(),
                decided_without = self.metrics.fallbacks.get().saturating_sub(fallbacks),
                "the rate limit store answers again: rate limits are shared again"
            ),
            None => tracing::info!(
                store = %self.config,
                "rate limits are shared through the store"
            ),
        }
    }

    /// The store failed (on `failed`, the connection a decision used, or
    /// while connecting): drops that connection, logs the change once,
    /// and reconnects in the background.
    fn went_down(self: &Arc<Self>, failed: Option<&Arc<MultiplexedConnection>>, why: &str) {
        {
            let mut state = self.state();
            if let Some(failed) = failed {
                // Only the connection that failed goes (a probe may have
                // published a new one meanwhile).
                let current = self.connection.load();
                if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
                    return;
                }
                self.connection.store(None);
                let stable = state
                    .up_since
                    .take()
                    .is_some_and(|since| since.elapsed() >= STABLE_AFTER);
                state.pause = if stable {
                    FIRST_PROBE_AFTER
                } else {
                    (state.pause * 2).min(LAST_PROBE_EVERY)
                };
            }
            if state.down.is_none() {
                state.down = Some(Down {
                    since: Instant::now(),
                    fallbacks: self.metrics.fallbacks.get(),
                });
                self.metrics.up.set(0);
                match self.config.on_failure {
                    StoreFailure::Local => tracing::warn!(
                        store = %self.config,
                        "the rate limit store does not answer ({why}): this replica applies its own limits until it answers again"
                    ),
                    StoreFailure::Closed => tracing::warn!(
                        store = %self.config,
                        "the rate limit store does not answer ({why}): validations are refused (503) until it answers again"
                    ),
                }
            }
        }
        if failed.is_some() {
            self.start();
        }
    }

    /// Charges a validation of `provider` by `client` in the store: `None`
    /// when the store did not answer (the caller decides without it; the
    /// fallback is counted).
    pub(crate) async fn decide(
        self: &Arc<Self>,
        client: &ClientKey,
        provider: &str,
    ) -> Option<Decision> {
        if let Some(refused) = self.known_refusal(client, provider) {
            return Some(refused);
        }
        let Some(connection) = self.connection.load_full() else {
            self.start();
            self.metrics.fallbacks.inc();
            return None;
        };
        let mut invocation = self.script.prepare_invoke();
        let mut scopes = Vec::with_capacity(2);
        for (scope, limit) in [
            (Scope::Client, self.client_limit),
            (Scope::Provider, self.provider_limit),
        ] {
            let Some(limit) = limit else { continue };
            match scope {
                Scope::Client => invocation.key(format!("connhost:rl:client:{}", client.hex())),
                Scope::Provider => invocation.key(format!("connhost:rl:provider:{provider}")),
            };
            let (interval, tolerance) = gcra_arguments(limit);
            invocation.arg(interval).arg(tolerance);
            scopes.push(scope);
        }
        if scopes.is_empty() {
            return Some(Decision::Admitted);
        }
        let sent = Instant::now();
        let mut used = (*connection).clone();
        let answer = tokio::time::timeout(
            ROUND_TRIP_TIMEOUT,
            invocation.invoke_async::<(i64, i64)>(&mut used),
        )
        .await;
        let (which, wait) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.went_down(Some(&connection), &error.to_string());
                self.metrics.fallbacks.inc();
                return None;
            }
            Err(_) => {
                self.went_down(
                    Some(&connection),
                    &format!("no answer within {ROUND_TRIP_TIMEOUT:?}"),
                );
                self.metrics.fallbacks.inc();
                return None;
            }
        };
        let Some(&scope) = usize::try_from(which - 1)
            .ok()
            .and_then(|index| scopes.get(index))
        else {
            return Some(Decision::Admitted);
        };
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        let key = match scope {
            Scope::Client => RefusedKey::Client(*client),
            Scope::Provider => RefusedKey::Provider(provider.into()),
        };
        self.remember_refusal(key, sent + wait);
        Some(Decision::Refused(scope, wait))
    }

    /// A refusal known on this replica, with the wait left: the client's
    /// first, as the store checks them.
    fn known_refusal(&self, client: &ClientKey, provider: &str) -> Option<Decision> {
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.is_empty() {
            return None;
        }
        let now = Instant::now();
        let left = |key: &RefusedKey| {
            refused
                .get(key)
                .and_then(|until| until.checked_duration_since(now))
                .filter(|left| !left.is_zero())
        };
        if self.client_limit.is_some() {
            if let Some(wait) = left(&RefusedKey::Client(*client)) {
                return Some(Decision::Refused(Scope::Client, wait));
            }
        }
        if self.provider_limit.is_some() {
            if let Some(wait) = left(&RefusedKey::Provider(provider.into())) {
                return Some(Decision::Refused(Scope::Provider, wait));
            }
        }
        None
    }

    /// Keeps `key` refused until `until`, within [`MAX_REFUSED`] keys.
    fn remember_refusal(&self, key: RefusedKey, until: Instant) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.len() >= MAX_REFUSED {
            let now = Instant::now();
            refused.retain(|_, until| *until > now);
            if refused.len() >= MAX_REFUSED {
                refused.clear();
            }
        }
        refused.insert(key, until);
    }
}

/// A limit's interval and tolerance ((burst - 1) intervals) in
/// microseconds, as the script takes them: with the fractions of a
/// microsecond that an interval such as 60/7 s has.
pub(crate) fn gcra_arguments(limit: RateLimit) -> (String, String) {
    let interval = limit.rate.interval();
    let micros = |d: Duration| d.as_nanos() as f64 / 1000.0;
    let tolerance = interval * (limit.burst.get() - 1);
    (
        format!("{:.3}", micros(interval)),
        format!("{:.3}", micros(tolerance)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{Limiters, RateLimits};
    use governor::clock::FakeRelativeClock;
    use std::net::TcpListener;
    use std::num::NonZeroU32;
    use std::process::{Child, Command, Stdio};

    /// A `redis-server` of the tests' own on a loopback port, without
    /// persistence; killed when dropped.
    struct TestRedis {
        child: Child,
        port: u16,
    }

    impl TestRedis {
        /// On a free port.
        fn start() -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            Self::start_on(port)
        }

        /// On `port`; returns once it accepts connections (within 10 s).
        fn start_on(port: u16) -> Self {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("could not run redis-server ({e}): these tests need Debian's redis-server package (`cargo xtask test` installs it)")
                });
            let redis = Self { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            redis
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }

        /// A connection of the test's own.
        async fn connection(&self) -> MultiplexedConnection {
            redis::Client::open(self.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn limit(rate: &str, burst: u32) -> RateLimit {
        RateLimit::new(rate.parse().unwrap(), NonZeroU32::new(burst).unwrap())
    }

    /// The script's answer for `keys` (each with its limit) at `now` µs.
    async fn run(
        connection: &mut MultiplexedConnection,
        keys: &[(&str, RateLimit)],
        now: u64,
    ) -> (i64, i64) {
        let script = redis::Script::new(SCRIPT);
        let mut invocation = script.prepare_invoke();
        for (key, limit) in keys {
            let (interval, tolerance) = gcra_arguments(*limit);
            invocation.key(*key).arg(interval).arg(tolerance);
        }
        invocation.arg(now);
        invocation.invoke_async(connection).await.unwrap()
    }

    /// A small deterministic generator (an LCG), for the sequences.
    struct Steps(u64);

    impl Steps {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// The same requests, at the same times (whole microseconds apart),
    /// to the local limiters on a fake clock and to the script with that
    /// time: the same decisions, by the same limit, and the same waits
    /// (the script's rounded up to the microsecond), so the same 429 and
    /// `Retry-After`.
    #[tokio::test]
    async fn the_script_decides_as_the_local_limiters_to_the_microsecond() {
        let redis = TestRedis::start();
        let mut connection = redis.connection().await;
        let cases = [
            (limit("60/min", 3), limit("1/s", 2)),
            (limit("7/min", 1), limit("600/min", 100)),
            (limit("30/min", 10), limit("7/min", 4)),
            (limit("1000/s", 5), limit("3/s", 2)),
        ];
        for (case, (client_limit, provider_limit)) in cases.into_iter().enumerate() {
            let limits = RateLimits {
                per_client: Some(client_limit),
                per_provider: Some(provider_limit),
            };
            let clock = FakeRelativeClock::default();
            let local = Limiters::with_clock(&limits, clock.clone());
            let clients: Vec<ClientKey> = (1..=3)
                .map(|n| ClientKey::new(Some(format!("192.0.2.{n}").parse().unwrap()), None))
                .collect();
            let mut steps = Steps(case as u64);
            // Start well after zero, as the server's clock is.
            let mut now = 1_000_000_000_u64;
            // Pauses up to the longer interval (in µs), often none.
            let longest = client_limit
                .rate
                .interval()
                .max(provider_limit.rate.interval())
                .as_micros() as u64;
            let (mut admitted, mut refused) = (0, 0);
            for step in 0..400 {
                if steps.below(3) == 0 {
                    let pause = steps.below(longest + 1);
                    clock.advance(Duration::from_micros(pause));
                    now += pause;
                }
                let client = &clients[steps.below(3) as usize];
                let provider = ["mai", "bedrock"][steps.below(2) as usize];
                let client_key = format!("test:{case}:client:{}", client.hex());
                let provider_key = format!("test:{case}:provider:{provider}");
                let keys = [
                    (client_key.as_str(), client_limit),
                    (provider_key.as_str(), provider_limit),
                ];
                let (which, wait) = run(&mut connection, &keys, now).await;
                let what = format!("case {case}, step {step}");
                match local.check(client, provider) {
                    Ok(()) => {
                        assert_eq!((which, wait), (0, 0), "{what}");
                        admitted += 1;
                    }
                    Err(limited) => {
                        let scope =
                            [Scope::Client, Scope::Provider][usize::try_from(which - 1).unwrap()];
                        assert_eq!(scope, limited.scope, "{what}");
                        // The local wait, from the fake clock's limiter.
                        let keyed_wait = match scope {
                            Scope::Client => local
                                .client
                                .as_ref()
                                .unwrap()
                                .limiter
                                .load()
                                .check_key(client),
                            Scope::Provider => local
                                .provider
                                .as_ref()
                                .unwrap()
                                .limiter
                                .load()
                                .check_key(&provider.to_owned()),
                        }
                        .map_err(|not| not.wait_time_from(governor::clock::Clock::now(&clock)))
                        .unwrap_err();
                        let micros = keyed_wait.as_nanos().div_ceil(1000);
                        assert_eq!(u128::try_from(wait).unwrap(), micros, "{what}");
                        assert_eq!(
                            crate::rate_limit::retry_after_seconds(Duration::from_micros(
                                u64::try_from(wait).unwrap()
                            )),
                            limited.retry_after,
                            "{what}"
                        );
                        refused += 1;
                    }
                }
            }
            assert!(
                admitted > 20 && refused > 20,
                "case {case}: {admitted} admitted, {refused} refused"
            );
        }
    }

    /// Each key lives as long as its limit is still recovering: no longer
    /// than its TAT, at least a millisecond.
    #[tokio::test]
    async fn keys_expire_when_their_limit_has_recovered() {
        let redis = TestRedis::start();
        let mut connection = redis.connection().await;
        let limit = limit("60/min", 3);
        let now = 5_000_000_000;
        for _ in 0..3 {
            assert_eq!(run(&mut connection, &[("k", limit)], now).await, (0, 0));
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg("k")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((2_900..=3_000).contains(&ttl), "{ttl} ms");
        assert_eq!(
            run(&mut connection, &[("k", limit)], now).await,
            (1, 1_000_000)
        );
        // An interval below a millisecond (even below the clock's
        // resolution, at today's time) still expires, after 1 ms.
        let fastest = self::limit("1000000000/s", 1);
        let today = 96_656_253_388_775;
        for _ in 0..3 {
            assert_eq!(run(&mut connection, &[("f", fastest)], today).await, (0, 0));
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg("f")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((0..=1).contains(&ttl), "{ttl} ms");
    }

    #[test]
    fn the_stores_address_parses_and_never_shows_a_password() {
        let store = RateLimitStore::parse("redis://:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(store.to_string(), "redis://127.0.0.1:6380/2");
        assert!(!format!("{store:?}").contains("s3cret"));
        assert_eq!(
            RateLimitStore::parse("redis://localhost")
                .unwrap()
                .to_string(),
            "redis://localhost:6379/0"
        );
        for bad in [
            "localhost:6379",
            "http://localhost",
            "rediss://localhost",
            "redis+unix:///tmp/r.sock",
        ] {
            let error = RateLimitStore::parse(bad).unwrap_err();
            assert!(
                error.contains("give redis://HOST:PORT[/DB]"),
                "{bad}: {error}"
            );
        }
        assert_eq!("closed".parse(), Ok(StoreFailure::Closed));
        assert_eq!("local".parse(), Ok(StoreFailure::Local));
        assert!("open"
            .parse::<StoreFailure>()
            .unwrap_err()
            .contains("give local"));
    }

    /// A store at `url` with these limits, and its metrics.
    fn store_at(
        url: &str,
        limits: RateLimits,
        on_failure: StoreFailure,
    ) -> (Arc<Store>, StoreMetrics) {
        let metrics = StoreMetrics::default();
        let config = RateLimitStore::parse(url).unwrap().with_failure(on_failure);
        let store = Arc::new(Store::new(
            &config,
            limits.per_client,
            limits.per_provider,
            metrics.clone(),
        ));
        (store, metrics)
    }

    /// Polls `condition` every 10 ms for up to 30 s.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The number of EVALSHA calls the server has answered.
    async fn evalsha_calls(connection: &mut MultiplexedConnection) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(connection)
            .await
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_key_known_to_be_refused_is_refused_without_a_round_trip() {
        let redis = TestRedis::start();
        let mut connection = redis.connection().await;
        let limits = RateLimits {
            per_client: Some(limit("1/h", 2)),
            per_provider: None,
        };
        let (store, metrics) = store_at(&redis.url(), limits, StoreFailure::Local);
        store.start();
        eventually("the store is up", || metrics.up.get() == 1).await;
        let client = ClientKey::new(Some("192.0.2.7".parse().unwrap()), Some("a-token"));
        for _ in 0..2 {
            assert_eq!(store.decide(&client, "p").await, Some(Decision::Admitted));
        }
        let before = evalsha_calls(&mut connection).await;
        let Some(Decision::Refused(Scope::Client, wait)) = store.decide(&client, "p").await else {
            panic!("not refused");
        };
        assert!(
            wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
        for _ in 0..10 {
            let Some(Decision::Refused(Scope::Client, again)) = store.decide(&client, "p").await
            else {
                panic!("not refused");
            };
            assert!(again <= wait);
        }
        assert_eq!(
            evalsha_calls(&mut connection).await,
            before + 1,
            "one round trip"
        );
        // The key names the client by its digest only.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(
            keys[0].starts_with("connhost:rl:client:4-c0000207-"),
            "{keys:?}"
        );
        assert!(!keys[0].contains("a-token"));
        assert_eq!(metrics.fallbacks.get(), 0);
    }

    #[tokio::test]
    async fn without_its_store_a_server_falls_back_and_comes_back_when_it_answers() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let limits = RateLimits {
            per_client: Some(limit("1/h", 1)),
            per_provider: None,
        };
        let url = format!("redis://127.0.0.1:{port}");
        let (store, metrics) = store_at(&url, limits, StoreFailure::Closed);
        let client = ClientKey::new(Some("192.0.2.1".parse().unwrap()), None);
        // Nothing listens: no decision, counted.
        assert_eq!(store.decide(&client, "p").await, None);
        assert_eq!(store.decide(&client, "p").await, None);
        assert_eq!(metrics.fallbacks.get(), 2);
        assert_eq!(metrics.up.get(), 0);
        // Once it listens, the probe finds it.
        let redis = TestRedis::start_on(port);
        eventually("the store is up", || metrics.up.get() == 1).await;
        assert_eq!(store.decide(&client, "p").await, Some(Decision::Admitted));
        assert!(matches!(
            store.decide(&client, "p").await,
            Some(Decision::Refused(Scope::Client, _))
        ));
        // Gone again: the next decision that needs it falls back.
        drop(redis);
        let other = ClientKey::new(Some("192.0.2.2".parse().unwrap()), None);
        assert_eq!(store.decide(&other, "p").await, None);
        assert_eq!(metrics.up.get(), 0);
        // The known refusal still holds without the store.
        assert!(matches!(
            store.decide(&client, "p").await,
            Some(Decision::Refused(Scope::Client, _))
        ));
        let _redis = TestRedis::start_on(port);
        eventually("the store is up again", || metrics.up.get() == 1).await;
        assert_eq!(store.decide(&other, "p").await, Some(Decision::Admitted));
    }

    /// A store that answers with errors (here: out of memory, so it
    /// refuses every script that may write) is a store that does not
    /// answer, until it takes writes again.
    #[tokio::test]
    async fn a_store_that_refuses_writes_is_down_until_it_takes_them_again() {
        let redis = TestRedis::start();
        let mut admin = redis.connection().await;
        let limits = RateLimits {
            per_client: Some(limit("1/h", 5)),
            per_provider: None,
        };
        let (store, metrics) = store_at(&redis.url(), limits, StoreFailure::Local);
        store.start();
        eventually("the store is up", || metrics.up.get() == 1).await;
        let client = ClientKey::new(Some("192.0.2.1".parse().unwrap()), None);
        assert_eq!(store.decide(&client, "p").await, Some(Decision::Admitted));
        let set = |value: &'static str| {
            let mut command = redis::cmd("CONFIG");
            command.arg("SET").arg("maxmemory").arg(value);
            command
        };
        let () = set("1").query_async(&mut admin).await.unwrap();
        assert_eq!(store.decide(&client, "p").await, None);
        assert_eq!(metrics.up.get(), 0);
        // The probe's script is refused too: it stays down.
        tokio::time::sleep(FIRST_PROBE_AFTER * 3).await;
        assert_eq!(store.decide(&client, "p").await, None);
        assert_eq!(metrics.up.get(), 0);
        let () = set("0").query_async(&mut admin).await.unwrap();
        eventually("the store is up again", || metrics.up.get() == 1).await;
        assert_eq!(store.decide(&client, "p").await, Some(Decision::Admitted));
        assert_eq!(metrics.fallbacks.get(), 2);
    }

    #[test]
    fn the_arguments_keep_an_intervals_nanoseconds() {
        assert_eq!(
            gcra_arguments(limit("7/min", 3)),
            ("8571428.571".to_owned(), "17142857.142".to_owned())
        );
        assert_eq!(
            gcra_arguments(limit("60/min", 1)),
            ("1000000.000".to_owned(), "0.000".to_owned())
        );
    }
}
