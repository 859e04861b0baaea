//! One retry queue for every worker that hands stored rows on until they are acknowledged:
//! the ledger's outbox (to the central bank), the central bank's deliveries (to the
//! ledgers), and the merchant gateway's webhooks after them.
//!
//! It is sans-IO, in the manner of `quinn-proto`: it reads nothing and sends nothing. The
//! worker asks it where the next page of rows starts ([`RetryQueue::next_page`]), reads that
//! page from its store, hands it to [`RetryQueue::plan`] — which drops what is waiting for its
//! backoff or dead, and cuts the rest into chunks bounded by count **and** bytes, never mixing
//! groups (destinations) — sends each chunk, and reports each row's outcome
//! ([`RetryQueue::succeeded`], [`RetryQueue::failed`]). Time is the caller's milliseconds, and
//! jitter is a hash of the key and its failure count, so a simulation driving it is
//! reproducible from its seed.
//!
//! Bounds: pages are read in rotation (a full page resumes after its last row next time, so
//! rows waiting at the front never hide those behind them); at most
//! [`RetryOptions::schedules_max`] retry schedules are kept (beyond it, the one due soonest
//! is forgotten, which only makes that row due now); at most
//! [`RetryOptions::dead_letters_max`] dead letters. A permanent failure is never retried: the
//! row is a dead letter until its worker deals with it (or the process restarts).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The first retry waits this long; each further failure doubles the wait, up to
/// [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts for one item.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry schedules kept, at most (by default).
pub const SCHEDULES_MAX: usize = 65_536;
/// Dead letters remembered, at most (by default).
pub const DEAD_LETTERS_MAX: usize = 65_536;

/// How a queue retries and chunks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryOptions {
    pub base: Duration,
    pub max: Duration,
    /// Each wait is shortened by up to this fraction (0 to 1), so rows that failed together
    /// do not all come due in the same millisecond.
    pub jitter: f64,
    pub schedules_max: usize,
    pub dead_letters_max: usize,
    /// Rows per chunk (one request), at most.
    pub chunk_items_max: usize,
    /// Bytes per chunk, at most; a single row larger than this travels alone.
    pub chunk_bytes_max: usize,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            base: BACKOFF_BASE,
            max: BACKOFF_MAX,
            jitter: 0.2,
            schedules_max: SCHEDULES_MAX,
            dead_letters_max: DEAD_LETTERS_MAX,
            chunk_items_max: 1024,
            chunk_bytes_max: 16 << 20,
        }
    }
}

/// A stored row to hand on: its key, the group it may travel with (a destination; rows of
/// different groups never share a chunk), its size, and what the worker needs to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item<K, T> {
    pub key: K,
    pub group: u64,
    pub bytes: usize,
    pub value: T,
}

/// What to send now: chunks in page order, and how many rows were held back.
#[derive(Debug)]
pub struct Plan<K, T> {
    pub chunks: Vec<Vec<Item<K, T>>>,
    /// Rows waiting for their backoff.
    pub waiting: usize,
    /// Rows that failed permanently.
    pub dead: usize,
}

/// How an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The peer was busy, unreachable or not ready: try again later.
    Retryable(String),
    /// The peer refused the row for good: never try it again.
    Permanent(String),
}

/// What the queue does with a failed row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tried again after `wait`; `failures` in a row so far.
    Retry { failures: u32, wait: Duration },
    /// Not tried again.
    Dead,
}

/// Figures for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Rows in the last page read.
    pub depth: usize,
    /// Rows with a retry schedule.
    pub scheduled: usize,
    pub dead: usize,
    /// How long the row failing for longest has been failing, in milliseconds.
    pub oldest_failing_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    failures: u32,
    next_ms: u64,
    first_failed_ms: u64,
}

/// The retry state of one worker's queue.
#[derive(Debug)]
pub struct RetryQueue<K> {
    options: RetryOptions,
    schedules: HashMap<K, Schedule>,
    dead: HashMap<K, String>,
    /// Where the next page starts, after a full page.
    resume: Option<Vec<u8>>,
    /// The page being read started at the beginning of the queue.
    from_start: bool,
    depth: usize,
}

impl<K: Eq + Hash + Clone> RetryQueue<K> {
    pub fn new(options: RetryOptions) -> RetryQueue<K> {
        RetryQueue {
            options,
            schedules: HashMap::new(),
            dead: HashMap::new(),
            resume: None,
            from_start: true,
            depth: 0,
        }
    }

    /// Where the next page of rows starts: `None` for the beginning of the queue, else the
    /// key after the last row of the previous full page.
    pub fn next_page(&mut self) -> Option<Vec<u8>> {
        let from = self.resume.take();
        self.from_start = from.is_none();
        from
    }

    /// Takes the page read from [`RetryQueue::next_page`]: `next` is where the following
    /// page starts if this one was full (`None` if it reached the end). Returns the rows due
    /// now, in chunks.
    pub fn plan<T>(
        &mut self,
        page: Vec<Item<K, T>>,
        next: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Plan<K, T> {
        let whole = self.from_start && next.is_none();
        self.resume = next;
        self.depth = page.len();
        // Rows no longer stored have no schedule to keep: known only when this page was the
        // whole queue.
        if whole && !(self.schedules.is_empty() && self.dead.is_empty()) {
            let keys: std::collections::HashSet<&K> = page.iter().map(|i| &i.key).collect();
            self.schedules.retain(|k, _| keys.contains(k));
            self.dead.retain(|k, _| keys.contains(k));
        }
        let mut plan = Plan {
            chunks: Vec::new(),
            waiting: 0,
            dead: 0,
        };
        let mut bytes = 0usize;
        for item in page {
            if self.dead.contains_key(&item.key) {
                plan.dead += 1;
                continue;
            }
            if self
                .schedules
                .get(&item.key)
                .is_some_and(|s| s.next_ms > now_ms)
            {
                plan.waiting += 1;
                continue;
            }
            let fits = plan.chunks.last().is_some_and(|c: &Vec<Item<K, T>>| {
                c.len() < self.options.chunk_items_max
                    && c[0].group == item.group
                    && bytes + item.bytes <= self.options.chunk_bytes_max
            });
            if fits {
                bytes += item.bytes;
                plan.chunks.last_mut().expect("a chunk").push(item);
            } else {
                bytes = item.bytes;
                plan.chunks.push(vec![item]);
            }
        }
        plan
    }

    /// The row was acknowledged: forget its schedule.
    pub fn succeeded(&mut self, key: &K) {
        self.schedules.remove(key);
    }

    /// The row's attempt failed at `now_ms`.
    pub fn failed(&mut self, key: K, failure: Failure, now_ms: u64) -> Verdict {
        match failure {
            Failure::Permanent(reason) => {
                self.schedules.remove(&key);
                if self.dead.len() >= self.options.dead_letters_max
                    && let Some(k) = self.dead.keys().next().cloned()
                {
                    self.dead.remove(&k);
                }
                self.dead.insert(key, reason);
                Verdict::Dead
            }
            Failure::Retryable(_) => {
                if !self.schedules.contains_key(&key)
                    && self.schedules.len() >= self.options.schedules_max
                {
                    self.forget_soonest();
                }
                let s = self.schedules.entry(key.clone()).or_insert(Schedule {
                    failures: 0,
                    next_ms: now_ms,
                    first_failed_ms: now_ms,
                });
                s.failures = s.failures.saturating_add(1);
                let failures = s.failures;
                let wait = self.wait(&key, failures);
                let s = self.schedules.get_mut(&key).expect("just inserted");
                s.next_ms = now_ms.saturating_add(wait.as_millis() as u64);
                Verdict::Retry { failures, wait }
            }
        }
    }

    /// Whether `key` may be tried at `now_ms`.
    pub fn due(&self, key: &K, now_ms: u64) -> bool {
        !self.dead.contains_key(key) && self.schedules.get(key).is_none_or(|s| s.next_ms <= now_ms)
    }

    /// Why `key` is a dead letter, if it is one.
    pub fn dead_letter(&self, key: &K) -> Option<&str> {
        self.dead.get(key).map(String::as_str)
    }

    pub fn stats(&self, now_ms: u64) -> QueueStats {
        QueueStats {
            depth: self.depth,
            scheduled: self.schedules.len(),
            dead: self.dead.len(),
            oldest_failing_ms: self
                .schedules
                .values()
                .map(|s| now_ms.saturating_sub(s.first_failed_ms))
                .max()
                .unwrap_or(0),
        }
    }

    /// The wait after `failures` failures in a row: doubling from the base, capped, then
    /// shortened by a jitter fraction that is a hash of the key and the count.
    fn wait(&self, key: &K, failures: u32) -> Duration {
        let o = &self.options;
        let full = o
            .base
            .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
            .min(o.max);
        if o.jitter <= 0.0 {
            return full;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        failures.hash(&mut h);
        let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
        full.mul_f64(1.0 - o.jitter.min(1.0) * unit)
    }

    /// Drops the schedule due soonest: of all rows, it is the one whose retry comes first
    /// anyway, so forgetting it changes least.
    fn forget_soonest(&mut self) {
        if let Some(k) = self
            .schedules
            .iter()
            .min_by_key(|(_, s)| s.next_ms)
            .map(|(k, _)| k.clone())
        {
            self.schedules.remove(&k);
        }
    }
}

/// Prometheus figures of one retry queue, named `{prefix}_…`.
#[derive(Clone)]
pub struct RetryMetrics {
    pub depth: prometheus::IntGauge,
    pub scheduled: prometheus::IntGauge,
    pub dead: prometheus::IntGauge,
    pub oldest_failing_seconds: prometheus::Gauge,
}

impl RetryMetrics {
    /// The queue's gauges, registered in `registry`; `what` says what the rows are.
    pub fn register(registry: &prometheus::Registry, prefix: &str, what: &str) -> RetryMetrics {
        let m = RetryMetrics {
            depth: prometheus::IntGauge::new(
                format!("{prefix}_queue_depth"),
                format!("{what} in the last page read"),
            )
            .expect("metric"),
            scheduled: prometheus::IntGauge::new(
                format!("{prefix}_retry_scheduled"),
                format!("{what} waiting for a retry"),
            )
            .expect("metric"),
            dead: prometheus::IntGauge::new(
                format!("{prefix}_dead_letters"),
                format!("{what} refused for good, not retried"),
            )
            .expect("metric"),
            oldest_failing_seconds: prometheus::Gauge::new(
                format!("{prefix}_oldest_failing_seconds"),
                format!("How long the {what} failing longest has been failing"),
            )
            .expect("metric"),
        };
        for c in [
            Box::new(m.depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.scheduled.clone()),
            Box::new(m.dead.clone()),
            Box::new(m.oldest_failing_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        m
    }

    pub fn set(&self, s: QueueStats) {
        self.depth.set(s.depth as i64);
        self.scheduled.set(s.scheduled as i64);
        self.dead.set(s.dead as i64);
        self.oldest_failing_seconds
            .set(s.oldest_failing_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: u32, group: u64, bytes: usize) -> Item<u32, ()> {
        Item {
            key,
            group,
            bytes,
            value: (),
        }
    }

    fn no_jitter() -> RetryOptions {
        RetryOptions {
            jitter: 0.0,
            ..RetryOptions::default()
        }
    }

    fn retry(v: Verdict) -> Duration {
        match v {
            Verdict::Retry { wait, .. } => wait,
            Verdict::Dead => panic!("dead"),
        }
    }

    #[test]
    fn waits_double_up_to_the_cap_and_success_resets() {
        let mut q = RetryQueue::new(no_jitter());
        assert!(q.due(&1, 0));
        let waits: Vec<u64> = (0..12)
            .map(|_| retry(q.failed(1, Failure::Retryable("x".into()), 0)).as_millis() as u64)
            .collect();
        assert_eq!(&waits[..4], &[100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), 30_000);
        assert!(!q.due(&1, 29_999));
        assert!(q.due(&1, 30_000));
        q.succeeded(&1);
        assert_eq!(
            retry(q.failed(1, Failure::Retryable("x".into()), 0)),
            BACKOFF_BASE
        );
    }

    #[test]
    fn jitter_shortens_waits_within_its_fraction_and_repeats_for_the_same_key() {
        let options = RetryOptions::default();
        let waits = |key: u32| {
            let mut q = RetryQueue::new(options);
            (0..10)
                .map(|_| retry(q.failed(key, Failure::Retryable("x".into()), 0)))
                .collect::<Vec<_>>()
        };
        let a = waits(1);
        assert_eq!(a, waits(1), "the same key and count give the same wait");
        let exact = waits_without_jitter();
        for (w, full) in a.iter().zip(&exact) {
            assert!(
                *w <= *full && w.as_secs_f64() >= full.as_secs_f64() * 0.8,
                "{w:?} vs {full:?}"
            );
        }
        let spread: std::collections::HashSet<Duration> = (0..50).map(|k| waits(k)[3]).collect();
        assert!(
            spread.len() > 10,
            "keys that failed together come due apart"
        );
    }

    fn waits_without_jitter() -> Vec<Duration> {
        let mut q = RetryQueue::new(no_jitter());
        (0..10)
            .map(|_| retry(q.failed(1, Failure::Retryable("x".into()), 0)))
            .collect()
    }

    #[test]
    fn chunks_are_bounded_by_count_and_bytes_and_never_mix_groups() {
        let mut q = RetryQueue::new(RetryOptions {
            chunk_items_max: 3,
            chunk_bytes_max: 100,
            ..no_jitter()
        });
        let page = vec![
            item(1, 7, 10),
            item(2, 7, 10),
            item(3, 7, 10),
            item(4, 7, 10),  // the count bound starts a chunk
            item(5, 7, 85),  // the byte bound starts a chunk: 10 + 85 ≤ 100, so it fits
            item(6, 7, 10),  // 95 + 10 > 100
            item(7, 8, 10),  // another group
            item(8, 8, 500), // larger than the byte bound: alone
            item(9, 8, 1),
        ];
        q.next_page();
        let plan = q.plan(page, None, 0);
        let keys: Vec<Vec<u32>> = plan
            .chunks
            .iter()
            .map(|c| c.iter().map(|i| i.key).collect())
            .collect();
        assert_eq!(
            keys,
            vec![
                vec![1, 2, 3],
                vec![4, 5],
                vec![6],
                vec![7],
                vec![8],
                vec![9]
            ]
        );
        for c in &plan.chunks {
            assert!(c.len() <= 3);
            assert!(c.len() == 1 || c.iter().map(|i| i.bytes).sum::<usize>() <= 100);
            assert!(c.iter().all(|i| i.group == c[0].group));
        }
    }

    #[test]
    fn waiting_and_dead_rows_are_held_back_and_dead_ones_never_retried() {
        let mut q = RetryQueue::new(no_jitter());
        q.failed(2, Failure::Retryable("busy".into()), 1_000);
        assert_eq!(
            q.failed(3, Failure::Permanent("no such ledger".into()), 1_000),
            Verdict::Dead
        );
        let page = || (1..=4).map(|k| item(k, 0, 1)).collect::<Vec<_>>();
        q.next_page();
        let plan = q.plan(page(), None, 1_050);
        assert_eq!((plan.waiting, plan.dead), (1, 1));
        assert_eq!(
            plan.chunks
                .concat()
                .iter()
                .map(|i| i.key)
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        // Much later: the backoff has passed, the dead letter is still held back.
        q.next_page();
        let plan = q.plan(page(), None, 1_000_000);
        assert_eq!((plan.waiting, plan.dead), (0, 1));
        assert_eq!(q.dead_letter(&3), Some("no such ledger"));
        assert!(!q.due(&3, u64::MAX));
        let s = q.stats(1_000_000);
        assert_eq!((s.depth, s.scheduled, s.dead), (4, 1, 1));
        assert_eq!(s.oldest_failing_ms, 999_000);
    }

    #[test]
    fn pages_rotate_and_only_a_whole_pass_forgets_rows_that_left() {
        let mut q = RetryQueue::new(no_jitter());
        q.failed(9, Failure::Retryable("x".into()), 0);
        // A full first page: the next read resumes after it, and nothing is forgotten.
        assert_eq!(q.next_page(), None);
        let plan = q.plan(vec![item(1, 0, 1)], Some(b"after-1".to_vec()), 0);
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(q.stats(0).scheduled, 1);
        assert_eq!(q.next_page(), Some(b"after-1".to_vec()));
        q.plan(vec![item(2, 0, 1)], None, 0);
        // That page did not start at the beginning: still not a whole pass.
        assert_eq!(q.stats(0).scheduled, 1);
        assert_eq!(q.next_page(), None);
        q.plan(vec![item(1, 0, 1), item(2, 0, 1)], None, 0);
        assert_eq!(q.stats(0).scheduled, 0, "row 9 left the store");
    }

    #[test]
    fn schedules_stay_bounded_by_forgetting_the_one_due_soonest() {
        let mut q = RetryQueue::new(RetryOptions {
            schedules_max: 3,
            ..no_jitter()
        });
        q.failed(1, Failure::Retryable("x".into()), 0); // due at 100
        q.failed(2, Failure::Retryable("x".into()), 50); // due at 150
        q.failed(2, Failure::Retryable("x".into()), 50); // due at 250
        q.failed(3, Failure::Retryable("x".into()), 10); // due at 110
        q.failed(4, Failure::Retryable("x".into()), 20); // full: forgets 1
        assert_eq!(q.stats(0).scheduled, 3);
        assert!(q.due(&1, 0));
        assert!(!q.due(&2, 200) && !q.due(&3, 100) && !q.due(&4, 100));
    }

    #[test]
    fn a_row_is_due_exactly_when_its_wait_ends() {
        let mut q = RetryQueue::new(no_jitter());
        q.failed(1, Failure::Retryable("x".into()), 1_000); // due at 1,100
        for (now, due) in [(1_099, false), (1_100, true)] {
            q.next_page();
            let plan = q.plan(vec![item(1, 0, 1)], None, now);
            assert_eq!(plan.chunks.len(), usize::from(due), "at {now}");
            assert_eq!(plan.waiting, usize::from(!due), "at {now}");
        }
    }

    #[test]
    fn dead_letters_stay_bounded() {
        let mut q = RetryQueue::new(RetryOptions {
            dead_letters_max: 2,
            ..no_jitter()
        });
        for k in 0..5 {
            assert_eq!(
                q.failed(k, Failure::Permanent("no".into()), 0),
                Verdict::Dead
            );
            assert!(q.stats(0).dead <= 2, "after {k}: {:?}", q.stats(0));
        }
        assert_eq!(q.stats(0).dead, 2);
        assert!(q.dead_letter(&4).is_some(), "the newest is kept");
    }

    #[test]
    fn metrics_show_the_queue() {
        let registry = prometheus::Registry::new();
        let m = RetryMetrics::register(&registry, "outbox", "transfers");
        m.set(QueueStats {
            depth: 7,
            scheduled: 3,
            dead: 2,
            oldest_failing_ms: 2_500,
        });
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut buf,
            )
            .unwrap();
            String::from_utf8(buf).unwrap()
        };
        for line in [
            "outbox_queue_depth 7",
            "outbox_retry_scheduled 3",
            "outbox_dead_letters 2",
            "outbox_oldest_failing_seconds 2.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
