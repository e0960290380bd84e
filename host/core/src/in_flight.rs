//! How many validations each provider has in flight, bounded so that one
//! provider that blocks its thread cannot take every thread the host has.
//!
//! A validation holds its slot until the thread running it is free again,
//! not until its caller gives up: a provider that blocks its thread past
//! the timeout keeps the slot, and that is the point. Counters are kept per
//! provider *code* (its id and the library it lives in), process-wide: every
//! snapshot that hot reload builds over the same library shares the count,
//! and a replaced library starts afresh. A plugin's own bound across its
//! providers (`max_concurrent`) counts by the plugin's name
//! ([`PluginInFlight`]): its vendor does not care which version calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::config::HOST_MAX_IN_FLIGHT;

/// Validations in flight across all providers.
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Why a validation could not take a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The provider has `max` validations in flight.
    Provider(usize),
    /// The provider's plugin has `max` validations in flight.
    Plugin(usize),
    /// The host has [`HOST_MAX_IN_FLIGHT`] validations in flight.
    Host(usize),
}

/// What identifies a provider's code: its id, the library it lives in (0
/// for compiled-in code) and its handle there.
type Key = (String, usize, u32);

static COUNTERS: Mutex<BTreeMap<Key, Arc<AtomicUsize>>> = Mutex::new(BTreeMap::new());

/// The in-flight counter of one provider's code.
#[derive(Clone, Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// The counter of the provider `provider_id` of the library at address
    /// `library` (0: compiled in), handle `handle`.
    pub(crate) fn of(provider_id: &str, library: usize, handle: u32) -> Self {
        let mut counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
        let counter = counters
            .entry((provider_id.to_owned(), library, handle))
            .or_default()
            .clone();
        Self(counter)
    }

    /// Takes a slot if the provider has fewer than `max` validations in
    /// flight, its plugin fewer than the bound given with its counter (if
    /// any), and the host fewer than [`HOST_MAX_IN_FLIGHT`].
    pub(crate) fn try_acquire(
        &self,
        max: usize,
        plugin: Option<(PluginInFlight, usize)>,
    ) -> Result<Slot, Full> {
        self.try_acquire_within(max, plugin, &TOTAL, HOST_MAX_IN_FLIGHT)
    }

    /// [`try_acquire`](Self::try_acquire) against a given host-wide count.
    fn try_acquire_within(
        &self,
        max: usize,
        plugin: Option<(PluginInFlight, usize)>,
        total: &'static AtomicUsize,
        host_max: usize,
    ) -> Result<Slot, Full> {
        if !take(total, host_max) {
            return Err(Full::Host(host_max));
        }
        let plugin = match plugin {
            Some((counter, plugin_max)) => {
                if !take(&counter.0, plugin_max) {
                    total.fetch_sub(1, Ordering::AcqRel);
                    return Err(Full::Plugin(plugin_max));
                }
                Some(counter.0)
            }
            None => None,
        };
        if !take(&self.0, max) {
            if let Some(plugin) = &plugin {
                plugin.fetch_sub(1, Ordering::AcqRel);
            }
            total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Provider(max));
        }
        Ok(Slot {
            provider: self.0.clone(),
            plugin,
            total,
        })
    }

    /// How many slots are taken now.
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

static PLUGIN_COUNTERS: Mutex<BTreeMap<String, Arc<AtomicUsize>>> = Mutex::new(BTreeMap::new());

/// The in-flight counter of one plugin, across all its providers and
/// libraries (by its name, so a hot-replaced version shares it: the bound
/// protects its vendor, which does not care which version calls).
#[derive(Clone, Debug)]
pub(crate) struct PluginInFlight(Arc<AtomicUsize>);

impl PluginInFlight {
    /// The counter of the plugin named `plugin`.
    pub(crate) fn of(plugin: &str) -> Self {
        let mut counters = PLUGIN_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
        Self(counters.entry(plugin.to_owned()).or_default().clone())
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
    total: &'static AtomicUsize,
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
        let counter = InFlight::of("in-flight-test", 1, 7);
        let first = counter.try_acquire(2, None).unwrap();
        let _second = counter.try_acquire(2, None).unwrap();
        assert_eq!(counter.try_acquire(2, None).unwrap_err(), Full::Provider(2));
        assert_eq!(counter.current(), 2);
        drop(first);
        assert!(counter.try_acquire(2, None).is_ok());
    }

    #[test]
    fn the_same_code_shares_a_counter_and_other_code_does_not() {
        let a = InFlight::of("in-flight-shared", 2, 0);
        let _slot = a.try_acquire(1, None).unwrap();
        assert!(InFlight::of("in-flight-shared", 2, 0)
            .try_acquire(1, None)
            .is_err());
        assert!(InFlight::of("in-flight-shared", 3, 0)
            .try_acquire(1, None)
            .is_ok());
    }

    #[test]
    fn the_host_wide_bound_holds_across_providers_and_is_freed_with_the_slots() {
        // A count of its own, so other tests' validations do not share it.
        static TOTAL: AtomicUsize = AtomicUsize::new(0);
        let acquire = |handle| {
            InFlight::of("in-flight-host", 4, handle).try_acquire_within(1, None, &TOTAL, 3)
        };
        let mut held: Vec<Slot> = (0..3).map(|h| acquire(h).unwrap()).collect();
        assert_eq!(acquire(3).unwrap_err(), Full::Host(3));
        // A refusal by the provider's own bound gives the host's slot back.
        assert_eq!(acquire(0).unwrap_err(), Full::Host(3));
        held.pop();
        assert_eq!(acquire(0).unwrap_err(), Full::Provider(1));
        assert_eq!(TOTAL.load(Ordering::Acquire), 2);
        assert!(acquire(3).is_ok());
        drop(held);
        assert_eq!(TOTAL.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_plugin_bound_holds_across_its_providers_and_gives_slots_back_on_refusal() {
        let plugin = || Some((PluginInFlight::of("in-flight-plugin"), 2));
        let a = InFlight::of("in-flight-plugin-a", 5, 0);
        let b = InFlight::of("in-flight-plugin-b", 5, 0);
        let first = a.try_acquire(1, plugin()).unwrap();
        // The provider's own bound refuses, and gives the plugin's slot back.
        assert_eq!(a.try_acquire(1, plugin()).unwrap_err(), Full::Provider(1));
        let _second = b.try_acquire(5, plugin()).unwrap();
        assert_eq!(b.try_acquire(5, plugin()).unwrap_err(), Full::Plugin(2));
        // Another plugin's providers are not bound by it.
        assert!(InFlight::of("in-flight-plugin-c", 5, 0)
            .try_acquire(5, Some((PluginInFlight::of("in-flight-other"), 2)))
            .is_ok());
        drop(first);
        assert!(b.try_acquire(5, plugin()).is_ok());
    }
}
