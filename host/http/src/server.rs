//! The accept loop: a cap on open connections, per-connection timeouts,
//! accept errors that back off instead of spinning, and a graceful
//! shutdown that answers whatever is still running when its grace ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;

/// How long a client may take to send a request's headers; also how long
/// a kept-alive connection may stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's whole body may take to arrive, counted from the
/// end of its headers (a total, not a per-read, bound).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write to a client may stay blocked (the client reads nothing)
/// before the connection is dropped and its memory freed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the shutdown grace, how long the `draining` answers to requests
/// still running get to be written before the process exits.
pub const DRAIN_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The default cap on open connections: half the open-files limit (the
/// other half is for the plugins folder, plugin copies, logs and whatever
/// the providers open), and never more than 4096.
pub fn default_max_connections(open_files_limit: Option<u64>) -> usize {
    const MOST: usize = 4096;
    open_files_limit
        .map(|limit| usize::try_from(limit / 2).unwrap_or(MOST).clamp(1, MOST))
        .unwrap_or(MOST)
}

/// How [`serve`] treats connections and shutdown.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// On shutdown, how long requests in flight may take to finish; those
    /// still running then are answered 503 `draining`.
    pub grace: Duration,
    /// The most connections open at once. Beyond it, new connections wait
    /// in the kernel's listen backlog, unaccepted, so they hold no file
    /// descriptor of this process.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, marks `state` as draining (`/readyz` answers 503), and lets
/// requests in flight finish for at most `options.grace`. Requests still
/// running then get a 503 `draining` answer (`Connection: close`) before
/// their connection closes. Returns whether everything finished within the
/// grace.
///
/// Per connection: headers within [`HEADER_READ_TIMEOUT`] (also the idle
/// bound between requests), blocked writes for at most [`WRITE_TIMEOUT`];
/// bodies are bounded by the router (see [`BODY_READ_TIMEOUT`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<bool> {
    use hyper_util::server::graceful::GracefulShutdown;

    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut cap = CapLog::new(options.max_connections);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        // A slot first: while none is free, nothing is accepted and excess
        // connections wait in the kernel's backlog, costing no descriptor.
        let slot = tokio::select! {
            slot = cap.acquire(&slots) => slot,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(error) => {
                // Out of descriptors (EMFILE) and the like: wait, do not spin.
                let pause = backoff.failed(&error);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        // Only the per-client rate limit reads the peer address.
        let peer = state.0.limiters.per_client().then_some(ConnectInfo(peer));
        let connection = graceful.watch(connection(stream, peer, &app));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    state.drain();
    tracing::info!(
        "shutting down: waiting up to {:?} for requests in flight",
        options.grace
    );
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    if tokio::time::timeout(options.grace, &mut all_closed)
        .await
        .is_ok()
    {
        return Ok(true);
    }
    tracing::warn!(
        "requests still in flight after {:?}: answering them 503 draining and exiting",
        options.grace
    );
    state.end_grace();
    let _ = tokio::time::timeout(DRAIN_ANSWER_TIMEOUT, &mut all_closed).await;
    Ok(false)
}

/// A client's socket, with a bound on blocked writes.
type ClientIo = hyper_util::rt::TokioIo<
    std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>,
>;

/// One HTTP/1 connection over `stream` from `peer` (given to each request
/// when set), with its header, idle and write timeouts.
fn connection(
    stream: tokio::net::TcpStream,
    peer: Option<ConnectInfo<SocketAddr>>,
    app: &Router,
) -> hyper::server::conn::http1::Connection<
    ClientIo,
    hyper_util::service::TowerToHyperService<WithPeer>,
> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    // Reads are bounded by the header and body timeouts; a read timeout
    // here would also fire while a long validation runs (hyper keeps a
    // read pending to notice a client that leaves).
    stream.set_write_timeout(Some(WRITE_TIMEOUT));
    hyper::server::conn::http1::Builder::new()
        // (One runtime timer per connection: see `header_timer`.)
        .timer(super::header_timer::HeaderTimer::default())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(WithPeer {
                app: app.clone(),
                peer,
            }),
        )
}

/// The router, giving each request its connection's peer address as
/// axum's `ConnectInfo<SocketAddr>` (what `axum::serve` does with
/// `into_make_service_with_connect_info`) when the per-client rate limit,
/// which reads it, is on.
#[derive(Clone)]
struct WithPeer {
    app: Router,
    peer: Option<ConnectInfo<SocketAddr>>,
}

impl<B> tower::Service<axum::http::Request<B>> for WithPeer
where
    Router: tower::Service<axum::http::Request<B>>,
{
    type Response = <Router as tower::Service<axum::http::Request<B>>>::Response;
    type Error = <Router as tower::Service<axum::http::Request<B>>>::Error;
    type Future = <Router as tower::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        self.app.call(request)
    }
}

/// Takes connection slots, and logs when the cap is reached: once when it
/// is first reached, then at most once a minute while it keeps being hit.
struct CapLog {
    max: usize,
    last_logged: Option<Instant>,
    waits_since_logged: u64,
}

impl CapLog {
    /// How often, at most, reaching the cap is logged.
    const EVERY: Duration = Duration::from_secs(60);

    fn new(max: usize) -> Self {
        Self {
            max,
            last_logged: None,
            waits_since_logged: 0,
        }
    }

    /// A free slot, waiting for one when all are taken.
    async fn acquire(&mut self, slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return slot;
        }
        self.waits_since_logged += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Self::EVERY)
        {
            tracing::warn!(
                max_connections = self.max,
                times_reached = self.waits_since_logged,
                "the connection cap is reached: new connections wait in the listen backlog until one closes (see --max-connections)"
            );
            self.last_logged = Some(Instant::now());
            self.waits_since_logged = 0;
        }
        slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }
}

/// Backoff after failed accepts, as Go's `net/http` does it: 5 ms, doubling
/// up to 1 s, reset by the next success. Logs the first failure of a run
/// and the recovery, not every failure.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MOST: Duration = Duration::from_secs(1);

    /// Records a failure; returns how long to wait before accepting again.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(
                "accepting a connection failed: {error}; backing off (up to {:?} between tries) until it works again",
                Self::MOST
            );
        } else {
            tracing::debug!("accepting a connection failed again: {error}");
        }
        self.failures = self.failures.saturating_add(1);
        Self::FIRST
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(Self::MOST)
    }

    /// Records a success.
    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_is_half_the_descriptors_and_at_most_4096() {
        assert_eq!(default_max_connections(Some(256)), 128);
        assert_eq!(default_max_connections(Some(1024)), 512);
        assert_eq!(default_max_connections(Some(1 << 20)), 4096);
        assert_eq!(default_max_connections(Some(1)), 1);
        assert_eq!(default_max_connections(None), 4096);
    }

    #[test]
    fn accept_backoff_doubles_up_to_a_second_and_resets() {
        let error = std::io::Error::from_raw_os_error(24);
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<_> = (0..10).map(|_| backoff.failed(&error)).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert_eq!(pauses[9], Duration::from_secs(1));
        backoff.succeeded();
        assert_eq!(backoff.failed(&error), Duration::from_millis(5));
    }
}
