//! Catching panics so that none crosses the plugin boundary.

use std::any::Any;
use std::future::Future;
use std::mem::ManuallyDrop;
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
///
/// `F` is held in place, not boxed (a call's path allocates nothing for
/// it), and dropped as soon as it completes; so `CatchPanic<F>` is `Unpin`
/// only when `F` is: pin it (`std::pin::pin!`, `Box::pin`) to poll it by
/// reference.
#[derive(Debug)]
pub struct CatchPanic<F> {
    /// Pinned with `self`: never moved, dropped in place at most once
    /// (`done` says when it has been).
    inner: ManuallyDrop<F>,
    done: bool,
}

impl<F: Future> CatchPanic<F> {
    /// Wraps a future.
    pub fn new(inner: F) -> Self {
        Self {
            inner: ManuallyDrop::new(inner),
            done: false,
        }
    }
}

impl<F> CatchPanic<F> {
    /// Drops `F` in place, once, swallowing a panic from its destructor
    /// (whatever it left undropped then is leaked, never touched again).
    fn drop_inner(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let inner = &mut self.inner;
        // SAFETY: `done` was set first, so `inner` is dropped at most once
        // and never used after; dropping it in place keeps the pinning
        // promise (its memory is not reused before it is dropped).
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(inner) }));
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self` (only dropped in place, by `drop_inner`), and `CatchPanic`
        // is `Unpin` only when `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        if this.done {
            return Poll::Ready(Err("polled after completion".to_owned()));
        }
        // SAFETY: as above; `done` is false, so `inner` is still alive.
        let inner = unsafe { Pin::new_unchecked(&mut *this.inner) };
        let polled = catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        let output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => Ok(value),
            Err(payload) => Err(panic_message(payload)),
        };
        this.drop_inner();
        Poll::Ready(output)
    }
}

impl<F> Drop for CatchPanic<F> {
    fn drop(&mut self) {
        self.drop_inner();
    }
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

    #[test]
    fn a_panicking_poll_is_an_error_and_the_future_is_done() {
        let mut future = std::pin::pin!(CatchPanic::new(async {
            if std::hint::black_box(true) {
                panic!("poll exploded");
            }
            1u8
        }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = future.as_mut().poll(&mut cx);
        assert_eq!(first, Poll::Ready(Err("poll exploded".to_owned())));
        let again = future.as_mut().poll(&mut cx);
        assert_eq!(
            again,
            Poll::Ready(Err("polled after completion".to_owned()))
        );
    }

    /// Ready at once, and panics when dropped.
    struct ReadyBomb;

    impl Future for ReadyBomb {
        type Output = u8;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u8> {
            Poll::Ready(7)
        }
    }

    impl Drop for ReadyBomb {
        fn drop(&mut self) {
            panic!("drop exploded");
        }
    }

    #[test]
    fn a_panic_while_dropping_a_finished_future_is_contained() {
        let mut future = std::pin::pin!(CatchPanic::new(ReadyBomb));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    }
}
