//! The `[serve]` table: `connhost serve`'s flags, by the same names.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use connhost_http::{RateLimitStore, StoreFailure};
use serde::Deserialize;

use super::super::args::RateSetting;
use super::super::serve::TOKEN_ENV;
use super::values::{GraceSeconds, Int, Seconds, U32Count};

table! {
    /// The `[serve]` table: `connhost serve`'s flags, by the same names.
    pub(super) struct ServeFile {
        listen: SocketAddr
            => serve.listen, unless flag "listen";
        /// CONNHOST_TOKEN, the token's variable, wins over it too.
        token_file: PathBuf [relative]
            => serve.token_file = Some, unless flag "token_file", unless env TOKEN_ENV;
        cors_origins: Vec<CorsOrigin>
            => serve.cors_origins = |o| o.into_iter().map(|o| o.0).collect(),
            unless flag "cors_origins";
        metrics_open: bool
            => serve.metrics_open, unless flag "metrics_open";
        body_limit: Int<1, { i64::MAX }>
            => serve.body_limit = Int::to_usize, unless flag "body_limit";
        body_timeout: Seconds
            => serve.body_timeout = |s| s.0.as_secs_f64(), unless flag "body_timeout";
        no_watch: bool
            => serve.no_watch, unless flag "no_watch";
        sync: Vec<String>
            => serve.sync, unless flag "sync";
        sync_interval: Interval
            => serve.sync_interval = |i| i.0, unless flag "sync_interval";
        shutdown_grace: GraceSeconds
            => serve.shutdown_grace = |s| Some(s.0), unless flag "shutdown_grace";
        max_connections: U32Count
            => serve.max_connections = |n| u32::try_from(n.get()).ok(),
            unless flag "max_connections";
        client_rate: RateText
            => serve.client_rate = |r| r.0, unless flag "client_rate";
        client_burst: U32Count
            => serve.client_burst = burst, unless flag "client_burst";
        provider_rate: RateText
            => serve.provider_rate = |r| r.0, unless flag "provider_rate";
        provider_burst: U32Count
            => serve.provider_burst = burst, unless flag "provider_burst";
        rate_limit_store: StoreText
            => serve.rate_limit_store = |s| Some(s.0), unless flag "rate_limit_store";
        rate_limit_store_failure: FailureText
            => serve.rate_limit_store_failure = |f| f.0,
            unless flag "rate_limit_store_failure";
    }
}

/// A rate limit's rate, as `--client-rate` takes it: `30/min`, or `off`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RateText(RateSetting);

impl TryFrom<String> for RateText {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        connhost_http::parse_rate(&text).map(|rate| RateText(RateSetting(rate)))
    }
}

/// A duration, as `--sync-interval` takes it (`"30s"`, `"5m"`), or a
/// number of seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "IntervalText")]
pub(super) struct Interval(std::time::Duration);

/// What [`Interval`] is read from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IntervalText {
    Seconds(f64),
    Text(String),
}

impl TryFrom<IntervalText> for Interval {
    type Error = String;

    fn try_from(given: IntervalText) -> Result<Self, String> {
        match given {
            IntervalText::Seconds(seconds) => {
                super::values::Seconds::try_from(seconds).map(|s| Interval(s.0))
            }
            IntervalText::Text(text) => super::super::args::parse_interval(&text).map(Interval),
        }
    }
}

/// A burst, as `--client-burst` takes it.
fn burst(n: U32Count) -> NonZeroU32 {
    u32::try_from(n.get())
        .ok()
        .and_then(NonZeroU32::new)
        .unwrap_or(NonZeroU32::MAX)
}

/// A browser origin, as `--cors-origin` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct CorsOrigin(String);

impl TryFrom<String> for CorsOrigin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        connhost_http::parse_cors_origin(&origin)?;
        Ok(CorsOrigin(origin))
    }
}

/// A rate limit store, as `--rate-limit-store` takes it:
/// `redis://HOST:PORT[/DB]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct StoreText(RateLimitStore);

impl TryFrom<String> for StoreText {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        RateLimitStore::parse(&url).map(StoreText)
    }
}

/// What to do while the store does not answer, as
/// `--rate-limit-store-failure` takes it: `local` or `closed`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct FailureText(StoreFailure);

impl TryFrom<String> for FailureText {
    type Error = String;

    fn try_from(mode: String) -> Result<Self, String> {
        mode.parse().map(FailureText)
    }
}
