//! How many validations each provider has in flight, bounded so that one
//! provider that blocks its thread cannot take every thread the host has.
//!
//! A validation holds its slot until the thread running it is free again,
//! not until its caller gives up: a provider that blocks its thread past
//! the timeout keeps the slot, and that is the point. Counters are kept per
//! provider *code* (its id and the library it lives in), process-wide: every
//! snapshot that hot reload builds over the same library shares the count,
//! and a replaced library starts afresh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The default bound on one provider's validations in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

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

    /// Takes a slot if fewer than `max` are taken.
    pub(crate) fn try_acquire(&self, max: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.0.clone()))
    }

    /// How many slots are taken now.
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One validation's slot; freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let counter = InFlight::of("in-flight-test", 1, 7);
        let first = counter.try_acquire(2).unwrap();
        let _second = counter.try_acquire(2).unwrap();
        assert!(counter.try_acquire(2).is_none());
        assert_eq!(counter.current(), 2);
        drop(first);
        assert!(counter.try_acquire(2).is_some());
    }

    #[test]
    fn the_same_code_shares_a_counter_and_other_code_does_not() {
        let a = InFlight::of("in-flight-shared", 2, 0);
        let _slot = a.try_acquire(1).unwrap();
        assert!(InFlight::of("in-flight-shared", 2, 0)
            .try_acquire(1)
            .is_none());
        assert!(InFlight::of("in-flight-shared", 3, 0)
            .try_acquire(1)
            .is_some());
    }
}
