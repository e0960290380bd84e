//! How many validations each provider has in flight, bounded so that one
//! provider that blocks its thread cannot take every thread the host has.
//!
//! A validation holds its slot until the thread running it is free again,
//! not until its caller gives up: a provider that blocks its thread past
//! the timeout keeps the slot, and that is the point. A host's [`Bounds`]
//! keep a counter per provider *code* (its id and the library it lives
//! in): every snapshot that hot reload builds over the same library shares
//! the count, and a replaced library starts afresh. A plugin's own bound
//! across its providers (`max_concurrent`) counts by the plugin's name: its
//! vendor does not care which version calls. Each host has bounds of its
//! own: two hosts in one process do not count each other's calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::config::HOST_MAX_IN_FLIGHT;

/// Why a validation could not take a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The provider has `max` validations in flight.
    Provider(usize),
    /// The provider's plugin has `max` validations in flight.
    Plugin(usize),
    /// The host has `max` validations in flight ([`HOST_MAX_IN_FLIGHT`]).
    Host(usize),
}

/// What identifies a provider's code: its id, the library it lives in (0
/// for compiled-in code) and its handle there.
pub(crate) type CodeKey<'a> = (&'a str, usize, u32);

/// Counters by name.
type Counters = BTreeMap<String, Arc<AtomicUsize>>;

/// One host's counts of validations in flight: across all its providers,
/// per provider code, and per plugin.
#[derive(Debug)]
pub(crate) struct Bounds {
    total: Arc<AtomicUsize>,
    host_max: usize,
    /// By the library (0: compiled in) and handle, then the provider id:
    /// looked up by `&str`, so a call allocates nothing once its counter
    /// exists.
    providers: Mutex<BTreeMap<(usize, u32), Counters>>,
    plugins: Mutex<Counters>,
}

impl Default for Bounds {
    fn default() -> Self {
        Self::with_host_max(HOST_MAX_IN_FLIGHT)
    }
}

impl Bounds {
    /// Bounds that hold at most `host_max` validations in flight across
    /// all providers.
    pub(crate) fn with_host_max(host_max: usize) -> Self {
        Self {
            total: Arc::default(),
            host_max,
            providers: Mutex::default(),
            plugins: Mutex::default(),
        }
    }

    /// Takes a slot for the provider code `code` if it has fewer than
    /// `max` validations in flight, its plugin (when `plugin` names it and
    /// its bound) fewer than that bound, and the host fewer than its own.
    pub(crate) fn try_acquire(
        &self,
        code: CodeKey<'_>,
        max: usize,
        plugin: Option<(&str, usize)>,
    ) -> Result<Slot, Full> {
        if !take(&self.total, self.host_max) {
            return Err(Full::Host(self.host_max));
        }
        let plugin = match plugin {
            Some((name, plugin_max)) => {
                let counter = self.plugin_counter(name);
                if !take(&counter, plugin_max) {
                    self.total.fetch_sub(1, Ordering::AcqRel);
                    return Err(Full::Plugin(plugin_max));
                }
                Some(counter)
            }
            None => None,
        };
        let provider = self.provider_counter(code);
        if !take(&provider, max) {
            if let Some(plugin) = &plugin {
                plugin.fetch_sub(1, Ordering::AcqRel);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Provider(max));
        }
        Ok(Slot {
            provider,
            plugin,
            total: self.total.clone(),
        })
    }

    fn provider_counter(&self, (id, library, handle): CodeKey<'_>) -> Arc<AtomicUsize> {
        let mut counters = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        let by_id = counters.entry((library, handle)).or_default();
        match by_id.get(id) {
            Some(counter) => counter.clone(),
            None => by_id.entry(id.to_owned()).or_default().clone(),
        }
    }

    fn plugin_counter(&self, name: &str) -> Arc<AtomicUsize> {
        let mut counters = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        match counters.get(name) {
            Some(counter) => counter.clone(),
            None => counters.entry(name.to_owned()).or_default().clone(),
        }
    }

    /// How many validations are in flight across all providers.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Adds one to `counter` if it is under `max`.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// One validation's slot (in its provider's count, its plugin's when
/// bounded, and the host's); freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    provider: Arc<AtomicUsize>,
    plugin: Option<Arc<AtomicUsize>>,
    total: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.provider.fetch_sub(1, Ordering::AcqRel);
        if let Some(plugin) = &self.plugin {
            plugin.fetch_sub(1, Ordering::AcqRel);
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let bounds = Bounds::default();
        let code = ("p", 1, 7);
        let first = bounds.try_acquire(code, 2, None).unwrap();
        let _second = bounds.try_acquire(code, 2, None).unwrap();
        assert_eq!(
            bounds.try_acquire(code, 2, None).unwrap_err(),
            Full::Provider(2)
        );
        assert_eq!(bounds.total(), 2);
        drop(first);
        assert!(bounds.try_acquire(code, 2, None).is_ok());
    }

    #[test]
    fn the_same_code_shares_a_counter_and_other_code_and_other_hosts_do_not() {
        let bounds = Bounds::default();
        let _slot = bounds.try_acquire(("shared", 2, 0), 1, None).unwrap();
        assert!(bounds.try_acquire(("shared", 2, 0), 1, None).is_err());
        assert!(bounds.try_acquire(("shared", 3, 0), 1, None).is_ok());
        let other_host = Bounds::default();
        assert!(other_host.try_acquire(("shared", 2, 0), 1, None).is_ok());
    }

    #[test]
    fn the_host_wide_bound_holds_across_providers_and_is_freed_with_the_slots() {
        let bounds = Bounds::with_host_max(3);
        let acquire = |handle| bounds.try_acquire(("host", 4, handle), 1, None);
        let mut held: Vec<Slot> = (0..3).map(|h| acquire(h).unwrap()).collect();
        assert_eq!(acquire(3).unwrap_err(), Full::Host(3));
        // A refusal by the provider's own bound gives the host's slot back.
        assert_eq!(acquire(0).unwrap_err(), Full::Host(3));
        held.pop();
        assert_eq!(acquire(0).unwrap_err(), Full::Provider(1));
        assert_eq!(bounds.total(), 2);
        assert!(acquire(3).is_ok());
        drop(held);
        assert_eq!(bounds.total(), 0);
    }

    #[test]
    fn a_plugin_bound_holds_across_its_providers_and_gives_slots_back_on_refusal() {
        let bounds = Bounds::default();
        let plugin = Some(("plugin", 2));
        let a = ("plugin-a", 5, 0);
        let b = ("plugin-b", 5, 0);
        let first = bounds.try_acquire(a, 1, plugin).unwrap();
        // The provider's own bound refuses, and gives the plugin's slot back.
        assert_eq!(
            bounds.try_acquire(a, 1, plugin).unwrap_err(),
            Full::Provider(1)
        );
        let _second = bounds.try_acquire(b, 5, plugin).unwrap();
        assert_eq!(
            bounds.try_acquire(b, 5, plugin).unwrap_err(),
            Full::Plugin(2)
        );
        // Another plugin's providers are not bound by it.
        assert!(bounds
            .try_acquire(("plugin-c", 5, 0), 5, Some(("other", 2)))
            .is_ok());
        drop(first);
        assert!(bounds.try_acquire(b, 5, plugin).is_ok());
    }
}
