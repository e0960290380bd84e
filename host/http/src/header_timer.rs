//! hyper's timer for one connection's header-read timeout, made cheap per
//! request.
//!
//! hyper asks its timer for a new sleep at the start of every request's
//! head and drops it once the head is read. With `TokioTimer` that is a
//! registration in the runtime's timer wheel and a removal from it per
//! request (and an allocation), although the timeout almost never fires.
//! [`HeaderTimer`] keeps one runtime timer per connection instead, armed at
//! the earliest deadline still wanted, and moves it lazily: a sleep whose
//! deadline is later than the armed one leaves the timer alone; when the
//! timer fires before a sleep's own deadline, that sleep re-arms it at its
//! deadline. A request's head thus still fails exactly at its deadline, and
//! a busy connection touches the timer wheel about once per timeout period
//! instead of twice per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The runtime timer a connection's sleeps share, made on first use.
type Armed = Arc<Mutex<Option<Shared>>>;

/// A connection's runtime timer: armed at one deadline, with the waker it
/// was last polled with.
struct Shared {
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The waker the timer holds; `None` after a reset (it must be polled
    /// again).
    polled_by: Option<std::task::Waker>,
}

/// A `hyper::rt::Timer` for one connection (see the module's
/// documentation); a clone shares the connection's runtime timer.
#[derive(Clone, Default)]
pub(crate) struct HeaderTimer(Armed);

impl hyper::rt::Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LazySleep {
            deadline: tokio::time::Instant::from_std(deadline),
            armed: self.0.clone(),
        })
    }

    fn now(&self) -> Instant {
        // The runtime's clock, as `TokioTimer` reads it.
        tokio::time::Instant::now().into_std()
    }
}

/// A sleep until `deadline` on its connection's shared runtime timer.
struct LazySleep {
    deadline: tokio::time::Instant,
    armed: Armed,
}

impl Future for LazySleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        let Shared { timer, polled_by } = armed.get_or_insert_with(|| Shared {
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            polled_by: None,
        });
        // Armed later than this sleep needs (a deadline can only grow
        // between requests, but nothing here relies on it): bring it in.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
            *polled_by = None;
        }
        // Armed at or before `deadline`, not fired yet, and it will wake
        // this task when it fires: nothing to do.
        if !timer.is_elapsed()
            && polled_by
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                // Armed at or before `deadline`, with this task's waker.
                if !polled_by
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()))
                {
                    *polled_by = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if timer.deadline() >= deadline {
                return Poll::Ready(());
            }
            // It fired for an earlier request's deadline: wait for this
            // one's (an elapsed one fires at the timer's next turn).
            timer.as_mut().reset(deadline);
            *polled_by = None;
        }
    }
}

impl hyper::rt::Sleep for LazySleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer as _;

    /// Polls `sleep` once.
    fn poll_once(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        let waker = std::task::Waker::noop();
        sleep.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[tokio::test]
    async fn each_sleep_ends_at_its_own_deadline_on_one_shared_timer() {
        let timer = HeaderTimer::default();
        let start = Instant::now();
        // The first request arms the shared timer at its deadline.
        let mut first = timer.sleep_until(start + Duration::from_millis(100));
        assert!(poll_once(&mut first).is_pending());
        drop(first);
        // A later request's sleep leaves it armed at the earlier deadline,
        // and is not over when that one passes.
        let mut second = timer.sleep_until(start + Duration::from_millis(400));
        assert!(poll_once(&mut second).is_pending());
        tokio::time::sleep_until((start + Duration::from_millis(200)).into()).await;
        assert!(poll_once(&mut second).is_pending());
        // It ends at its own deadline.
        second.as_mut().await;
        assert!(start.elapsed() >= Duration::from_millis(400));
        // An earlier deadline than the armed one is honoured too.
        let mut third = timer.sleep_until(Instant::now() + Duration::from_secs(60));
        assert!(poll_once(&mut third).is_pending());
        let begun = Instant::now();
        timer.sleep(Duration::from_millis(50)).await;
        assert!(begun.elapsed() >= Duration::from_millis(50));
        assert!(poll_once(&mut third).is_pending());
        // A deadline already passed is over at the runtime timer's next
        // turn.
        timer.sleep_until(Instant::now()).await;
    }
}
