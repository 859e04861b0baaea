//! Exponential backoff per item, for workers that retry deliveries until acknowledged.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// The first retry waits this long; each further failure doubles the wait, up to
/// [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts for one item.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    next_ms: u64,
}

/// The retry schedule of failed items, by key. Times are milliseconds of the caller's clock.
#[derive(Debug)]
pub struct Backoffs<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Backoffs<K> {
    fn default() -> Self {
        Backoffs {
            entries: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Backoffs<K> {
    /// Whether `key` may be tried at `now_ms`.
    pub fn due(&self, key: &K, now_ms: u64) -> bool {
        self.entries.get(key).is_none_or(|e| e.next_ms <= now_ms)
    }

    /// Records a failure at `now_ms`; returns how many in a row and the wait before the next
    /// attempt.
    pub fn failed(&mut self, key: K, now_ms: u64) -> (u32, Duration) {
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            next_ms: now_ms,
        });
        e.failures = e.failures.saturating_add(1);
        let wait = BACKOFF_BASE
            .saturating_mul(1u32 << e.failures.min(16).saturating_sub(1))
            .min(BACKOFF_MAX);
        e.next_ms = now_ms.saturating_add(wait.as_millis() as u64);
        (e.failures, wait)
    }

    /// Forgets `key` (it succeeded).
    pub fn succeeded(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// How many items have a schedule.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps only the keys `keep` accepts (the items still pending), so the map stays
    /// bounded by the work in hand.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_success_resets() {
        let mut b = Backoffs::default();
        assert!(b.due(&1, 0));
        let waits: Vec<u64> = (0..12)
            .map(|_| b.failed(1, 0).1.as_millis() as u64)
            .collect();
        assert_eq!(&waits[..4], &[100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), 30_000);
        assert!(!b.due(&1, 29_999));
        assert!(b.due(&1, 30_000));
        b.succeeded(&1);
        assert_eq!(b.failed(1, 0).1, BACKOFF_BASE);
        b.retain(|k| *k != 1);
        assert!(b.due(&1, 0));
    }
}
