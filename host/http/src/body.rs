//! Request bodies under two bounds that hold whatever the client does: a
//! declared length over the limit is refused before a byte of the body is
//! read, and the whole body must arrive within a total time (tower-http's
//! `RequestBodyTimeoutLayer` restarts its clock on every frame, so a body
//! trickled one byte a second would never time out).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::BoxError;
use http_body::{Frame, SizeHint};

use super::error::{ApiError, ErrorCode};

/// What [`guard_body`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyBounds {
    /// The largest body accepted, in bytes.
    pub(crate) limit: usize,
    /// How long the whole body may take to arrive, from the end of the
    /// headers.
    pub(crate) timeout: Duration,
}

/// The 413 answer, shared by the declared-length check and the extractor
/// (for bodies without a `Content-Length` that grow over the limit).
pub(crate) fn payload_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "The body is larger than this server accepts (see --body-limit).",
    )
}

/// Middleware: refuses a declared length over the limit at once (413,
/// nothing of the body read), and puts the rest of the body under a total
/// deadline.
pub(crate) async fn guard_body(
    State(bounds): State<BodyBounds>,
    request: Request,
    next: Next,
) -> Response {
    // hyper's size hint is exactly the `Content-Length` when there is one
    // (it has checked the header), and 0 for a chunked body.
    let declared = http_body::Body::size_hint(request.body()).lower();
    if declared > u64::try_from(bounds.limit).unwrap_or(u64::MAX) {
        return payload_too_large().into_response();
    }
    let request = request.map(|body| Body::new(TotalTimeoutBody::new(body, bounds.timeout)));
    next.run(request).await
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

/// The timeout that passed, when `error` (or an error it wraps) is a
/// [`BodyTimedOut`].
pub(crate) fn body_timeout(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return Some(timed_out.0);
        }
        current = error.source();
    }
    None
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTimedOut`] once its deadline passes,
    /// however steadily its frames arrive.
    pub(crate) struct TotalTimeoutBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl<B> TotalTimeoutBody<B> {
    /// `inner` must end within `timeout` from now.
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

impl<B> http_body::Body for TotalTimeoutBody<B>
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
        let this = self.project();
        // Checked first, so a steady trickle cannot keep it from firing.
        if this.deadline.poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(*this.timeout)))));
        }
        this.inner
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(Into::into)))
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
        let error = collect(TotalTimeoutBody::new(
            trickle(100),
            Duration::from_millis(500),
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
        let body = collect(TotalTimeoutBody::new(trickle(3), Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(body, b"   ");
    }
}
