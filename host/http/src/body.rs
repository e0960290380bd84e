//! Request bodies under two bounds that hold whatever the client does: a
//! declared length over the limit is refused before a byte of the body is
//! read (by the router's guard, `guard.rs`), any other body fails once it
//! grows over the limit, and the whole body must arrive within a total time
//! (tower-http's `RequestBodyTimeoutLayer` restarts its clock on every
//! frame, so a body trickled one byte a second would never time out).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::BoxError;
use http_body::{Frame, SizeHint};

use super::error::{ApiError, ErrorCode};

/// What the router's guard holds every request body to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyBounds {
    /// The largest body accepted, in bytes.
    pub(crate) limit: usize,
    /// How long the whole body may take to arrive, from the end of the
    /// headers.
    pub(crate) timeout: Duration,
}

/// The 413 answer, shared by the declared-length check and the extractor
/// (for bodies without a `Content-Length` that grow over the limit:
/// [`BodyTooLarge`]).
pub(crate) fn payload_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "The body is larger than this server accepts (see --body-limit).",
    )
}

/// The error a body yields once its total time is up.
#[derive(Debug)]
pub(crate) struct BodyTimedOut(pub(crate) Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the body did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for BodyTimedOut {}

/// The error a body yields once more than the limit has arrived.
#[derive(Debug)]
pub(crate) struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body is over the size limit")
    }
}

impl std::error::Error for BodyTooLarge {}

/// The first error of type `E` in `error`'s chain (itself, then what it
/// wraps).
fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The timeout that passed, when `error` (or an error it wraps) is a
/// [`BodyTimedOut`].
pub(crate) fn body_timeout(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    find::<BodyTimedOut>(error).map(|timed_out| timed_out.0)
}

/// Whether `error` (or an error it wraps) is a [`BodyTooLarge`].
pub(crate) fn body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    find::<BodyTooLarge>(error).is_some()
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTimedOut`] once its deadline passes,
    /// however steadily its frames arrive, and with [`BodyTooLarge`] once
    /// more than its limit has arrived.
    pub(crate) struct BoundedBody<B> {
        #[pin]
        inner: B,
        // Wakes the reader at the deadline: armed only once the body has
        // to wait for the client (a body that has already arrived, as most
        // small ones have, never touches the runtime's timers).
        #[pin]
        timer: Option<tokio::time::Sleep>,
        deadline: tokio::time::Instant,
        timeout: Duration,
        // Bytes that may still arrive.
        left: usize,
    }
}

impl<B> BoundedBody<B> {
    /// `inner` must end within `bounds.timeout` from now, and hold at most
    /// `bounds.limit` bytes.
    #[cfg(test)]
    pub(crate) fn new(inner: B, bounds: BodyBounds) -> Self {
        Self::since(inner, bounds, std::time::Instant::now())
    }

    /// `inner` must end within `bounds.timeout` from `start` (the moment
    /// the request's headers were read, which its caller has already
    /// taken from the clock), and hold at most `bounds.limit` bytes.
    pub(crate) fn since(inner: B, bounds: BodyBounds, start: std::time::Instant) -> Self {
        Self {
            inner,
            timer: None,
            // (The runtime's clock is the system's, `std`'s.)
            deadline: tokio::time::Instant::from_std(start) + bounds.timeout,
            timeout: bounds.timeout,
            left: bounds.limit,
        }
    }
}

impl<B> http_body::Body for BoundedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let timed_out = |timeout: Duration| Poll::Ready(Some(Err(BodyTimedOut(timeout).into())));
        // Checked first, so a steady trickle cannot keep it from firing:
        // once the body has had to wait for the client (which arms the
        // timer). Until then every frame asked for was already there, and
        // the clock is not read (a small body that has arrived with its
        // headers, as most have, never reads it).
        if this.timer.is_some() && tokio::time::Instant::now() >= *this.deadline {
            return timed_out(*this.timeout);
        }
        let frame = match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if this.timer.is_none() {
                    this.timer
                        .set(Some(tokio::time::sleep_until(*this.deadline)));
                }
                if let Some(timer) = this.timer.as_pin_mut() {
                    if timer.poll(cx).is_ready() {
                        return timed_out(*this.timeout);
                    }
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            match this.left.checked_sub(data.len()) {
                Some(left) => *this.left = left,
                None => return Poll::Ready(Some(Err(Box::new(BodyTooLarge)))),
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body fed by a channel.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|item| item.map(|b| Ok(Frame::data(b))))
        }
    }

    /// Reads a body to its end (http-body-util is not a dependency).
    async fn collect(
        body: impl http_body::Body<Data = Bytes, Error = BoxError>,
    ) -> Result<Vec<u8>, BoxError> {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    fn bounds(limit: usize, timeout: Duration) -> BodyBounds {
        BodyBounds { limit, timeout }
    }

    /// A body that gets one byte every 100 ms until `total` bytes.
    fn trickle(total: usize) -> ChannelBody {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..total {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if sender.send(Bytes::from_static(b" ")).await.is_err() {
                    return;
                }
            }
        });
        ChannelBody(receiver)
    }

    #[tokio::test]
    async fn a_trickle_is_cut_at_the_total_deadline() {
        let started = std::time::Instant::now();
        // 100 bytes would take 10 s; each comes well within any per-frame
        // timeout.
        let error = collect(BoundedBody::new(
            trickle(100),
            bounds(1 << 20, Duration::from_millis(500)),
        ))
        .await
        .unwrap_err();
        assert!(body_timeout(&*error).is_some(), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_body_in_time_is_untouched() {
        let body = collect(BoundedBody::new(
            trickle(3),
            bounds(3, Duration::from_secs(30)),
        ))
        .await
        .unwrap();
        assert_eq!(body, b"   ");
    }

    #[tokio::test]
    async fn a_body_is_cut_once_it_grows_over_the_limit() {
        let error = collect(BoundedBody::new(
            trickle(4),
            bounds(3, Duration::from_secs(30)),
        ))
        .await
        .unwrap_err();
        assert!(body_too_large(&*error), "{error}");
        assert!(body_timeout(&*error).is_none(), "{error}");
    }
}
