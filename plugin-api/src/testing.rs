//! Helpers for a provider crate's own unit tests, which run in-process
//! without a host.
//!
//! Without a host, [`crate::http`] requests fail with
//! [`ErrorKind::Unavailable`](crate::http::ErrorKind::Unavailable) and
//! [`crate::config`] returns `None`; [`crate::sleep`] still works.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Wakes the thread parked in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current thread: enough to call a
/// provider's `validate` in a unit test without an async runtime.
///
/// ```
/// let answer = connhost_plugin_api::testing::block_on(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Submitted fields from `(name, value)` pairs.
///
/// ```
/// let fields = connhost_plugin_api::testing::fields(&[("api_key", "k-123")]);
/// assert_eq!(fields["api_key"], "k-123");
/// ```
pub fn fields(pairs: &[(&str, &str)]) -> crate::CredentialFields {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}
