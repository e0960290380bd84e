//! `rate-store [REDIS_URL]`: the latency a shared rate limit store
//! (`serve --rate-limit-store`) adds to a validation, against the same
//! router with the local limiter, in one process and one run.
//!
//! Starts a `redis-server` of its own on a free loopback port (without
//! persistence; stopped at the end) unless given a URL; builds two
//! routers, one limiting locally and one through the store, with limits
//! that never refuse (so every request makes its round trip), and sends
//! both `POST /v1/providers/openai/validate` with an empty form (422 from
//! the form's rules: the limit is charged, no provider is called), in
//! alternating blocks of 100, from the main thread of a tokio runtime with
//! one worker (which runs the Redis connection's task, as a server's
//! workers would). Fails if any decision was made without the store.
//! Writes `rate-store.json`: each router's p50, p99 and p99.9 and their
//! differences, in microseconds. Run it with `cargo build --release -p
//! connhost-bench --bin rate-store && target/release/rate-store`.
//! Settings (env): `CONNHOST_BENCH_RATE_STORE_REQUESTS` (per router,
//! default 5000).

use std::net::TcpListener;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use connhost_bench::write_result;
use connhost_http::{AppState, HttpConfig, RateLimit, RateLimitStore, RateLimits};
use serde_json::json;
use tower::ServiceExt as _;

fn main() -> ExitCode {
    let requests: usize = std::env::var("CONNHOST_BENCH_RATE_STORE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (url, mut redis) = match std::env::args().nth(1) {
        Some(url) => (url, None),
        None => {
            let (url, child) = start_redis();
            (url, Some(child))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let result = runtime.block_on(measure(&url, requests));
    if let Some(child) = redis.as_mut() {
        // SIGTERM: `timeout` passes it on to redis-server.
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rate-store: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A `redis-server` on a free loopback port (at most 10 minutes), once it
/// accepts connections.
fn start_redis() -> (String, Child) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let child = Command::new("timeout")
        .args(["--signal=KILL", "600", "redis-server"])
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("run redis-server (Debian's redis-server package)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (format!("redis://127.0.0.1:{port}/0"), child)
}

/// A router limiting locally (`store` `None`) or through `store`, with
/// limits that never refuse here (a million a second, bursts of a
/// billion).
fn router(store: Option<RateLimitStore>) -> axum::Router {
    let never: RateLimit = RateLimit::new(
        "1000000/s".parse().expect("a rate"),
        std::num::NonZeroU32::new(1_000_000_000).expect("non-zero"),
    );
    let config = HttpConfig {
        rate_limits: RateLimits {
            per_client: Some(never),
            per_provider: Some(never),
        },
        rate_limit_store: store,
        ..HttpConfig::default()
    };
    let state = AppState::new(&config);
    state.set_host(connhost::Connhost::start(&connhost::HostConfig::default()));
    connhost_http::router(state, &config)
}

/// One validation: its latency in nanoseconds.
async fn validate(app: &axum::Router) -> Result<u64, String> {
    let request = Request::post("/v1/providers/openai/validate")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"fields": {}}"#))
        .expect("a request");
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.expect("infallible");
    let elapsed = started.elapsed();
    if response.status() != StatusCode::UNPROCESSABLE_ENTITY {
        return Err(format!("answered {} instead of 422", response.status()));
    }
    Ok(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// The value of the sample `name` in `app`'s `/metrics`.
async fn sample(app: &axum::Router, name: &str) -> Result<Option<u64>, String> {
    let metrics = app
        .clone()
        .oneshot(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("infallible");
    let text = axum::body::to_bytes(metrics.into_body(), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&text).lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    }))
}

/// The `q` quantile of sorted `values`, in microseconds.
fn quantile(sorted: &[u64], q: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[at] as f64 / 1000.0
}

async fn measure(url: &str, requests: usize) -> Result<(), String> {
    let store = RateLimitStore::parse(url)?;
    let local = router(None);
    let shared = router(Some(store));
    // Connected in the background (the sleeps let that task run): wait
    // until the store is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&shared, "connhost_rate_limit_store_up").await? != Some(1) {
        if Instant::now() > deadline {
            return Err(format!("the store at {url} did not answer within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..500 {
        validate(&local).await?;
        validate(&shared).await?;
    }
    let (mut without, mut with) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    while with.len() < requests {
        for _ in 0..100 {
            without.push(validate(&local).await?);
        }
        for _ in 0..100 {
            with.push(validate(&shared).await?);
        }
    }
    // Every decision went through the store.
    let fallbacks = sample(&shared, "connhost_rate_limit_store_fallbacks_total").await?;
    if fallbacks != Some(0) {
        return Err(format!(
            "{fallbacks:?} decisions were made without the store"
        ));
    }
    without.sort_unstable();
    with.sort_unstable();
    let row = |sorted: &[u64]| {
        json!({
            "p50_us": quantile(sorted, 0.50),
            "p99_us": quantile(sorted, 0.99),
            "p999_us": quantile(sorted, 0.999),
        })
    };
    let added = |q: f64| quantile(&with, q) - quantile(&without, q);
    let result = json!({
        "requests_each": with.len(),
        "local": row(&without),
        "shared": row(&with),
        "added_p50_us": added(0.50),
        "added_p99_us": added(0.99),
    });
    println!(
        "validation (422, limits charged) over {} requests each: local p50 {:.1} µs p99 {:.1} µs; \
         through Redis p50 {:.1} µs p99 {:.1} µs; added p50 {:.1} µs, p99 {:.1} µs",
        with.len(),
        quantile(&without, 0.5),
        quantile(&without, 0.99),
        quantile(&with, 0.5),
        quantile(&with, 0.99),
        added(0.5),
        added(0.99),
    );
    let path = write_result("rate-store.json", &result);
    println!("wrote {}", path.display());
    Ok(())
}
