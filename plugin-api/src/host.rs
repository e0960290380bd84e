//! Capabilities the host lends to providers: HTTP, timers and configuration.
//!
//! A plugin library has its own copy of every crate it links, tokio
//! included, so a provider in a plugin cannot use the host's tokio runtime
//! directly (`tokio::net` or `tokio::time` panic with "there is no reactor
//! running"). Instead, the host implements I/O and lends it through these
//! functions: the future they return is host code, polled on the host's
//! runtime, so a provider needs no runtime of its own, dropping the
//! validation future cancels the request, and the host can apply timeouts and
//! per-plugin policy. Built-in providers use the same functions, so a
//! provider behaves the same compiled in or loaded.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use abi_stable::std_types::RStr;

use crate::abi::HostContext;

static HOST: OnceLock<HostContext> = OnceLock::new();

/// Installs the host's capabilities for this copy of the crate. The first
/// call wins; later calls return false.
pub(crate) fn install(host: HostContext) -> bool {
    HOST.set(host).is_ok()
}

/// The installed host, if any.
pub(crate) fn current() -> Option<&'static HostContext> {
    HOST.get()
}

/// A configuration value the host's operator set for this plugin (for
/// example a base URL pointing at a test server), or `None`.
///
/// Keys are scoped to the plugin: a plugin can read only its own settings.
/// How an operator sets them is up to the host (connhost reads environment
/// variables `CONNHOST_PLUGIN_<PLUGIN>_<KEY>` and its library configuration).
pub fn config(key: &str) -> Option<String> {
    let host = current()?;
    (host.vtable.config())(host.plugin, RStr::from_str(key))
        .into_option()
        .map(|s| s.into_string())
}

/// Waits for `duration` on the host's timer. Works inside plugins, where
/// `tokio::time::sleep` does not.
pub async fn sleep(duration: Duration) {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    match current() {
        Some(host) => (host.vtable.sleep())(host.plugin, millis).await,
        None => ThreadSleep::new(duration).await,
    }
}

/// Whether the timer fired, and who to wake when it does.
type TimerState = std::sync::Arc<std::sync::Mutex<(bool, Option<Waker>)>>;

/// A timer for when no host is installed (unit tests of a provider crate).
struct ThreadSleep {
    duration: Duration,
    state: Option<TimerState>,
}

impl ThreadSleep {
    fn new(duration: Duration) -> Self {
        Self {
            duration,
            state: None,
        }
    }
}

impl Future for ThreadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let duration = self.duration;
        let state = self.state.get_or_insert_with(|| {
            let state: TimerState = Default::default();
            let timer = state.clone();
            std::thread::spawn(move || {
                std::thread::sleep(duration);
                let mut guard = timer.lock().unwrap_or_else(|e| e.into_inner());
                guard.0 = true;
                if let Some(waker) = guard.1.take() {
                    waker.wake();
                }
            });
            state
        });
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        if guard.0 {
            Poll::Ready(())
        } else {
            guard.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}
