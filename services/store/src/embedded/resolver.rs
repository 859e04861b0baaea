//! FoundationDB-style conflict detection and version assignment: the [`Resolver`] is a pure
//! state machine over recently committed writes; [`resolver_loop`] is its thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::transaction::CommitRequest;
use super::writeset::WriteSet;
use super::{CONFLICT_WINDOW, Shared};
use crate::error::StoreError;
use crate::transaction::Versionstamp;

/// The keys one transaction wrote, sorted, in one buffer (key `i` ends at `ends[i]`), for
/// checking range reads by binary search; point reads use the resolver's hash map.
pub(super) struct WrittenKeys {
    pub(super) bytes: Vec<u8>,
    pub(super) ends: Vec<u32>,
}

impl WrittenKeys {
    pub(super) fn new(writes: &WriteSet) -> WrittenKeys {
        let mut keys: Vec<&[u8]> = writes.keys().collect();
        // The transaction's writes arrive sorted, with its versionstamped keys after them:
        // a stable sort finds those two runs and merges them.
        keys.sort();
        let mut bytes = Vec::with_capacity(keys.iter().map(|k| k.len()).sum());
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys {
            bytes.extend_from_slice(k);
            ends.push(bytes.len() as u32);
        }
        WrittenKeys { bytes, ends }
    }

    pub(super) fn key(&self, i: usize) -> &[u8] {
        let begin = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[begin..self.ends[i] as usize]
    }

    /// Whether a key in `[begin, end)` was written.
    pub(super) fn any_in(&self, begin: &[u8], end: &[u8]) -> bool {
        // The first key at or after `begin`, by binary search over the sorted keys.
        let (mut lo, mut hi) = (0, self.ends.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < begin {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo < self.ends.len() && self.key(lo) < end
    }
}

/// The 64-bit hash standing for a key in the resolver's map. Two keys with the same hash
/// share an entry, which can only make a conflict more likely, never miss one.
pub(super) fn key_hash(key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(key);
    h.finish()
}

/// Whether `[begin, end)` holds exactly `begin`: a point read.
pub(super) fn is_point(begin: &[u8], end: &[u8]) -> bool {
    end.len() == begin.len() + 1 && end.last() == Some(&0) && end.starts_with(begin)
}

/// One committed transaction's writes, remembered until no open transaction can conflict
/// with them.
pub(super) struct Written {
    pub(super) when: Instant,
    pub(super) version: u64,
    pub(super) hashes: Vec<u64>,
    pub(super) keys: WrittenKeys,
}

/// FoundationDB-style conflict detection over recently committed writes.
pub(super) struct Resolver {
    /// Newest commit version that wrote a key of each hash, for keys written within the
    /// window.
    pub(super) point_writes: rustc_hash::FxHashMap<u64, u64>,
    /// Cleared ranges within the window: (begin, end, version, when).
    pub(super) range_writes: VecDeque<(Vec<u8>, Vec<u8>, u64, Instant)>,
    /// The writes within the window, oldest first.
    pub(super) history: VecDeque<Written>,
    /// Read versions older than this can no longer be checked.
    pub(super) oldest_checkable: u64,
}

impl Resolver {
    pub(super) fn new(version: u64) -> Resolver {
        Resolver {
            point_writes: Default::default(),
            range_writes: VecDeque::new(),
            history: VecDeque::new(),
            oldest_checkable: version,
        }
    }

    /// Whether any key of `points` or any range of `ranges` was written after
    /// `read_version`.
    pub(super) fn conflicts(
        &self,
        read_version: u64,
        points: &[Vec<u8>],
        ranges: &[(Vec<u8>, Vec<u8>)],
    ) -> bool {
        let cleared_after = |b: &[u8], e: &[u8]| {
            self.range_writes
                .iter()
                .any(|(wb, we, v, _)| *v > read_version && wb.as_slice() < e && b < we.as_slice())
        };
        points.iter().any(|k| {
            self.point_writes
                .get(&key_hash(k))
                .is_some_and(|v| *v > read_version)
                || self
                    .range_writes
                    .iter()
                    .any(|(wb, we, v, _)| *v > read_version && wb <= k && k < we)
        }) || ranges.iter().any(|(b, e)| {
            let written = if is_point(b, e) {
                self.point_writes
                    .get(&key_hash(b))
                    .is_some_and(|v| *v > read_version)
            } else {
                self.history
                    .iter()
                    .rev()
                    .take_while(|w| w.version > read_version)
                    .any(|w| w.keys.any_in(b, e))
            };
            written || cleared_after(b, e)
        })
    }

    pub(super) fn record(
        &mut self,
        version: u64,
        now: Instant,
        writes: &WriteSet,
        ranges: &[(Vec<u8>, Vec<u8>)],
    ) {
        let mut hashes = Vec::with_capacity(writes.len());
        for k in writes.keys() {
            let h = key_hash(k);
            self.point_writes.insert(h, version);
            hashes.push(h);
        }
        for (b, e) in ranges {
            self.range_writes
                .push_back((b.clone(), e.clone(), version, now));
        }
        self.history.push_back(Written {
            when: now,
            version,
            hashes,
            keys: WrittenKeys::new(writes),
        });
    }

    /// Forgets writes no open transaction can conflict with (at or below `oldest_reader`),
    /// and any older than the conflict window.
    pub(super) fn expire(&mut self, now: Instant, oldest_reader: u64) {
        while let Some(w) = self.history.front() {
            if w.version > oldest_reader && now.duration_since(w.when) < CONFLICT_WINDOW {
                break;
            }
            let w = self.history.pop_front().expect("present");
            for h in w.hashes {
                if self.point_writes.get(&h) == Some(&w.version) {
                    self.point_writes.remove(&h);
                }
            }
            self.oldest_checkable = self.oldest_checkable.max(w.version);
        }
        while let Some((_, _, version, when)) = self.range_writes.front() {
            if *version > oldest_reader && now.duration_since(*when) < CONFLICT_WINDOW {
                break;
            }
            self.oldest_checkable = self.oldest_checkable.max(*version);
            self.range_writes.pop_front();
        }
    }
}

/// A transaction that passed the resolver, with its version fixed and its versionstamps
/// filled in; the writer applies it.
pub(super) struct Resolved {
    pub(super) cleared: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) writes: WriteSet,
    pub(super) reply: oneshot::Sender<Result<Versionstamp, StoreError>>,
    pub(super) stamp: Versionstamp,
}

/// The resolver thread: conflict checks and version assignment, in commit order. It never
/// touches storage, so it resolves batch N+1 while the writer makes batch N durable.
pub(super) fn resolver_loop(
    mut receiver: mpsc::Receiver<CommitRequest>,
    writer: std::sync::mpsc::SyncSender<Vec<Resolved>>,
    shared: Arc<Shared>,
    max_batch: usize,
    start_version: u64,
) {
    let mut resolver = Resolver::new(start_version);
    let mut next_version = start_version + 1;
    let mut batch: Vec<CommitRequest> = Vec::with_capacity(max_batch);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if shared.stats.failed.load(Ordering::Acquire) {
            // Fail-stop: nothing more is resolved (versions assigned now would outrun the
            // published version for good, and every later transaction would look too old).
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(StoreError::Failed(
                    "the store stopped after a failed write or fsync; reopen it".into(),
                )));
            }
            continue;
        }
        let now = Instant::now();
        resolver.expire(now, shared.oldest_reader());
        let mut resolved = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            if request.read_version < resolver.oldest_checkable {
                let _ = request.reply.send(Err(StoreError::TransactionTooOld));
                continue;
            }
            if resolver.conflicts(request.read_version, &request.points, &request.reads) {
                shared.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                let _ = request.reply.send(Err(StoreError::NotCommitted));
                continue;
            }
            let version = next_version;
            next_version += 1;
            let stamp = Versionstamp::from_parts(version, 0);
            let mut writes = request.writes;
            writes.fill_stamps(&stamp);
            resolver.record(version, now, &writes, &request.cleared);
            resolved.push(Resolved {
                cleared: request.cleared,
                writes,
                reply: request.reply,
                stamp,
            });
        }
        if !resolved.is_empty() && writer.send(resolved).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::transaction::key_after;
    use super::super::writeset::{PackedOp, PackedWrite};
    use super::*;

    impl Resolver {
        /// Ranges of one key go in as points, as transactions send them.
        fn conflicts_in(&self, v: u64, ranges: &[(Vec<u8>, Vec<u8>)]) -> bool {
            let (points, ranges): (Vec<_>, Vec<_>) =
                ranges.iter().cloned().partition(|(b, e)| is_point(b, e));
            let points: Vec<Vec<u8>> = points.into_iter().map(|(b, _)| b).collect();
            let by_point = self.conflicts(v, &points, &ranges);
            // The same reads as plain ranges give the same answer.
            let all: Vec<_> = ranges
                .iter()
                .cloned()
                .chain(points.iter().map(|k| (k.clone(), key_after(k))))
                .collect();
            assert_eq!(by_point, self.conflicts(v, &[], &all));
            by_point
        }
    }

    /// Sets of `keys` (the sorted ones first, then those written as versionstamped keys, as
    /// a transaction sends them), packed.
    fn sets(keys: &[&[u8]]) -> WriteSet {
        let mut set = WriteSet::default();
        for key in keys {
            let key = set.append(key);
            let value = set.append(b"v");
            set.writes.push(PackedWrite {
                key,
                op: PackedOp::Set(value.0, value.1),
            });
        }
        set
    }

    fn point(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (key.to_vec(), key_after(key))
    }

    #[test]
    fn point_and_range_reads_conflict_only_with_newer_writes_they_cover() {
        let now = Instant::now();
        let mut r = Resolver::new(0);
        r.record(5, now, &sets(&[b"b", b"d\x00x"]), &[]);
        // A point read of a written key, newer than the read version.
        assert!(r.conflicts_in(4, &[point(b"b")]));
        assert!(!r.conflicts_in(5, &[point(b"b")]));
        // Neighbours of a written key are not written.
        assert!(!r.conflicts_in(0, &[point(b"a")]));
        assert!(!r.conflicts_in(0, &[point(b"d")]));
        // Ranges: inside, and at both ends ([begin, end)).
        assert!(r.conflicts_in(4, &[(b"c".to_vec(), b"e".to_vec())]));
        assert!(r.conflicts_in(4, &[(b"b".to_vec(), b"c".to_vec())]));
        assert!(!r.conflicts_in(4, &[(b"a".to_vec(), b"b".to_vec())]));
        assert!(!r.conflicts_in(4, &[(b"b\x00\x00".to_vec(), b"d".to_vec())]));
        assert!(!r.conflicts_in(5, &[(b"a".to_vec(), b"z".to_vec())]));
        // Cleared ranges conflict with point reads inside them.
        r.record(6, now, &sets(&[]), &[(b"m".to_vec(), b"p".to_vec())]);
        assert!(r.conflicts_in(5, &[point(b"n")]));
        assert!(!r.conflicts_in(5, &[point(b"p")]));
        // Versionstamped keys come after the sorted writes, out of order.
        r.record(7, now, &sets(&[b"q", b"s", b"e"]), &[]);
        assert!(r.conflicts_in(6, &[(b"e".to_vec(), b"f".to_vec())]));
        assert!(!r.conflicts_in(6, &[(b"r".to_vec(), b"s".to_vec())]));
        assert!(r.conflicts_in(6, &[(b"r".to_vec(), b"t".to_vec())]));
        assert!(!r.conflicts_in(6, &[(b"f".to_vec(), b"m".to_vec())]));
    }

    #[test]
    fn expiry_forgets_what_no_reader_can_conflict_with() {
        let now = Instant::now();
        let mut r = Resolver::new(0);
        r.record(1, now, &sets(&[b"k"]), &[]);
        r.record(2, now, &sets(&[b"k"]), &[]);
        // A reader at version 1 still conflicts with the write at 2.
        r.expire(now, 1);
        assert!(r.conflicts_in(1, &[point(b"k")]));
        assert_eq!(r.oldest_checkable, 1);
        // With no reader below 2, everything is forgotten and older reads are refused.
        r.expire(now, 2);
        assert!(r.point_writes.is_empty());
        assert!(r.history.is_empty());
        assert_eq!(r.oldest_checkable, 2);
        // Past the window, even a reader that is still open stops protecting them.
        r.record(3, now, &sets(&[b"k"]), &[]);
        r.expire(now + CONFLICT_WINDOW, 0);
        assert!(r.history.is_empty());
        assert_eq!(r.oldest_checkable, 3);
    }

    /// A transaction of the model: what it reads (conflict ranges, `[begin, end)`), writes
    /// and clears.
    #[derive(Clone, Debug)]
    struct ModelTx {
        reads: Vec<(Vec<u8>, Vec<u8>)>,
        writes: Vec<Vec<u8>>,
        clears: Vec<(Vec<u8>, Vec<u8>)>,
    }

    fn model_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(b'a'..=b'e', 1..=2)
    }

    fn model_range() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        prop_oneof![
            // A point read, as transactions send them.
            model_key().prop_map(|k| point(&k)),
            (model_key(), model_key()).prop_map(|(a, b)| if a <= b { (a, b) } else { (b, a) }),
        ]
    }

    fn model_tx() -> impl Strategy<Value = ModelTx> {
        (
            prop::collection::vec(model_range(), 0..4),
            prop::collection::vec(model_key(), 1..4),
            prop::collection::vec(model_range(), 0..2),
        )
            .prop_map(|(reads, writes, clears)| ModelTx {
                reads,
                writes,
                clears: clears.into_iter().filter(|(b, e)| b < e).collect(),
            })
    }

    /// Transactions and an interleaving of their begins and commits: each transaction's
    /// begin comes before its commit.
    fn schedule() -> impl Strategy<Value = (Vec<ModelTx>, Vec<(usize, bool)>)> {
        prop::collection::vec(model_tx(), 1..12).prop_flat_map(|txs| {
            let n = txs.len();
            let events: Vec<(usize, bool)> = (0..n).flat_map(|i| [(i, false), (i, true)]).collect();
            (Just(txs), Just(events).prop_shuffle()).prop_map(|(txs, mut events)| {
                // Repair the order so that each begin precedes its commit.
                let mut begun = vec![false; txs.len()];
                for e in events.iter_mut() {
                    if e.1 && !begun[e.0] {
                        e.1 = false;
                    }
                    if !e.1 {
                        if begun[e.0] {
                            e.1 = true;
                        } else {
                            begun[e.0] = true;
                        }
                    }
                }
                (txs, events)
            })
        })
    }

    type Ranges = Vec<(Vec<u8>, Vec<u8>)>;

    fn covers(range: &(Vec<u8>, Vec<u8>), key: &[u8]) -> bool {
        range.0.as_slice() <= key && key < range.1.as_slice()
    }

    fn overlaps(a: &(Vec<u8>, Vec<u8>), b: &(Vec<u8>, Vec<u8>)) -> bool {
        a.0 < b.1 && b.0 < a.1
    }

    /// The state a transaction reads: the value of every key in its read ranges.
    fn read_set(
        state: &std::collections::BTreeMap<Vec<u8>, u64>,
        reads: &[(Vec<u8>, Vec<u8>)],
    ) -> Vec<(Vec<u8>, u64)> {
        reads
            .iter()
            .flat_map(|(b, e)| state.range(b.clone()..e.clone()))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Random interleavings of transactions against two oracles: FoundationDB's rule
        /// (a transaction conflicts exactly when a transaction that committed after its
        /// read version wrote or cleared something it read), computed naively from every
        /// commit ever made; and serialisability (what each committed transaction read at
        /// its read version is what it would read at its place in commit order). Expiry
        /// runs before every commit with the open transactions' oldest read version.
        #[test]
        fn the_resolver_agrees_with_a_naive_serialisability_oracle((txs, events) in schedule()) {
            let now = Instant::now();
            let mut r = Resolver::new(0);
            let mut version = 0u64;
            // Every commit: its version, written keys and cleared ranges.
            let mut log: Vec<(u64, Vec<Vec<u8>>, Ranges)> = Vec::new();
            // The store's state after each version (index = version).
            let mut states = vec![std::collections::BTreeMap::<Vec<u8>, u64>::new()];
            let mut read_version: Vec<Option<u64>> = vec![None; txs.len()];
            for (i, commit) in events {
                if !commit {
                    read_version[i] = Some(version);
                    continue;
                }
                let rv = read_version[i].expect("begun");
                let oldest = read_version.iter().flatten().min().copied().unwrap_or(version);
                r.expire(now, oldest);
                prop_assert!(rv >= r.oldest_checkable, "an open reader's writes were forgotten");
                let t = &txs[i];
                let expected = log.iter().any(|(v, written, cleared)| {
                    *v > rv
                        && (t.reads.iter().any(|read| written.iter().any(|k| covers(read, k)))
                            || t.reads.iter().any(|read| cleared.iter().any(|c| overlaps(read, c))))
                });
                let got = r.conflicts_in(rv, &t.reads);
                prop_assert_eq!(got, expected, "transaction {} read at {}: {:?}", i, rv, t);
                if !got {
                    prop_assert_eq!(
                        read_set(&states[rv as usize], &t.reads),
                        read_set(&states[version as usize], &t.reads),
                        "a committed transaction read a state that changed under it"
                    );
                    version += 1;
                    let mut keys: Vec<&[u8]> = t.writes.iter().map(Vec::as_slice).collect();
                    keys.sort();
                    keys.dedup();
                    r.record(version, now, &sets(&keys), &t.clears);
                    let mut state = states[version as usize - 1].clone();
                    for c in &t.clears {
                        state.retain(|k, _| !covers(c, k));
                    }
                    for k in &t.writes {
                        state.insert(k.clone(), version);
                    }
                    states.push(state);
                    log.push((version, t.writes.clone(), t.clears.clone()));
                }
                read_version[i] = None;
            }
        }
    }
}
