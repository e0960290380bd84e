//! Catching panics so that none crosses the plugin boundary.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs `f`, turning a panic into `Err(message)`.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panic_message)
}

/// The message a panic was raised with (`panic!("...")`), or a placeholder
/// when the payload is not a string.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic with a non-string payload)".to_owned()
    }
}

/// A future that resolves to `Err(message)` if polling `F` panics, and
/// that swallows a panic raised while dropping `F` (a cancelled future whose
/// state panics in `Drop`), so neither reaches the caller.
#[derive(Debug)]
pub struct CatchPanic<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> CatchPanic<F> {
    /// Wraps a future.
    pub fn new(inner: F) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err("polled after completion".to_owned()));
        };
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        let output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => Ok(value),
            Err(payload) => Err(panic_message(payload)),
        };
        drop_catching(self.inner.take());
        Poll::Ready(output)
    }
}

impl<F> Drop for CatchPanic<F> {
    fn drop(&mut self) {
        drop_catching(self.inner.take());
    }
}

/// Drops `value`, swallowing a panic from its destructor.
fn drop_catching<T>(value: T) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_str_and_string_payloads() {
        assert_eq!(catch_panic(|| panic!("boom")), Err::<(), _>("boom".into()));
        let n = 3;
        assert_eq!(
            catch_panic(|| panic!("boom {n}")),
            Err::<(), _>("boom 3".into())
        );
        assert_eq!(catch_panic(|| 7), Ok(7));
    }

    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("drop exploded");
        }
    }

    #[test]
    fn a_panic_while_dropping_a_cancelled_future_is_contained() {
        let future = CatchPanic::new(async {
            let _bomb = Bomb;
            std::future::pending::<()>().await;
        });
        let mut future = Box::pin(future);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        drop(future); // must not panic
    }
}
