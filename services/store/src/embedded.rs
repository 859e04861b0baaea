//! The embedded backend: FoundationDB's transaction model on one machine.
//!
//! - **Storage**: fjall, an LSM-tree with a write-ahead journal. Each batch is one atomic
//!   fjall write batch, made durable by one journal fsync; readers open fjall snapshots at the
//!   sequence number published after that fsync, so nothing unacknowledged is ever visible.
//! - **Conflicts**: a resolver modelled on FoundationDB's. Every transaction carries its read
//!   version and the key ranges it read; at commit the resolver refuses it
//!   ([`StoreError::NotCommitted`]) if any key in those ranges was written by a transaction
//!   that committed after that read version. Blind writes and atomic adds never conflict.
//!   Open transactions register their read version; the resolver forgets writes at or below
//!   the oldest one (and any older than the window), so it holds only what can still matter.
//!   Written keys are looked up by a 64-bit hash for point reads (a collision can only add a
//!   conflict, never hide one); range reads, rare on the hot path, binary-search the sorted
//!   keys of each transaction committed since their read version.
//! - **Group commit**, pipelined over two threads: commits queue on a bounded channel to the
//!   resolver thread, which takes everything queued (up to `max_batch`), resolves each
//!   transaction in order and assigns its version; the writer thread applies resolved batches
//!   as one atomic fjall write batch (in key order, which keeps the memtable's skiplist
//!   walks in cache) made durable by one journal fsync. Only then is any of
//!   them acknowledged and the new version published to readers. The resolver works on the
//!   next batch while the writer waits for the disk.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::transaction::{RangeOptions, Versionstamp};

/// A key and its value.
type Row = (Vec<u8>, Vec<u8>);

const DATA: &str = "data";
const META: &str = "meta";
const META_VERSION: &[u8] = b"version";
/// How long the resolver remembers writes: a little more than the 5-second transaction limit.
const CONFLICT_WINDOW: Duration = Duration::from_secs(6);

/// Tuning of the embedded backend.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedOptions {
    /// Transactions resolved and made durable together, at most.
    pub max_batch: usize,
    /// Commits waiting for the resolver, at most; beyond this, commit waits (backpressure).
    pub queue_depth: usize,
    /// fsync every batch before acknowledging it. Only benchmarks and simulations (whose
    /// crashes are in-process, so the OS keeps what was written) turn this off.
    pub fsync: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            max_batch: 4096,
            queue_depth: 16_384,
            fsync: true,
        }
    }
}

/// Counters of the embedded commit pipeline since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Transactions refused for a conflict.
    pub conflicts: u64,
    /// Durable batches written; with fsync on, one fsync each.
    pub batches: u64,
    /// Keys written to storage (sets and clears, after merging a batch's writes to one key).
    pub rows: u64,
}

#[derive(Debug, Default)]
struct EngineStats {
    pub commits: AtomicU64,
    pub conflicts: AtomicU64,
    pub batches: AtomicU64,
    pub rows: AtomicU64,
}

pub(crate) struct Engine {
    shared: Arc<Shared>,
    sender: Option<mpsc::Sender<CommitRequest>>,
    /// The resolver, then the writer; each ends when its input channel closes.
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    keyspace: Keyspace,
    data: PartitionHandle,
    meta: PartitionHandle,
    /// The newest version whose batch is durable; new transactions read at it.
    committed: AtomicU64,
    /// The fjall sequence number that makes exactly the durable batches visible.
    visible: AtomicU64,
    /// Read versions of open transactions (version → how many). The resolver forgets writes
    /// at or below the oldest, since no open transaction can conflict with them.
    active: Mutex<BTreeMap<u64, u32>>,
    stats: EngineStats,
}

impl Shared {
    /// The version below which no open transaction reads: the oldest open read version, or
    /// the committed version when none is open.
    fn oldest_reader(&self) -> u64 {
        let active = self.active.lock().expect("active readers lock");
        match active.keys().next() {
            Some(v) => *v,
            None => self.committed.load(Ordering::Acquire),
        }
    }

    fn release_reader(&self, version: u64) {
        let mut active = self.active.lock().expect("active readers lock");
        if let Some(n) = active.get_mut(&version) {
            *n -= 1;
            if *n == 0 {
                active.remove(&version);
            }
        }
    }
}

impl Engine {
    pub(crate) fn open(dir: &Path, options: EmbeddedOptions) -> Result<Engine, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(format!("creating {}: {e}", dir.display())))?;
        // Size-tiered compaction: the ledger writes many small fresh keys and reads points
        // through bloom filters, so write amplification matters more than read amplification
        // (measured: +15% store transactions of a transfer's shape, +10% ledger transfers).
        let data_options = PartitionCreateOptions::default().compaction_strategy(
            fjall::compaction::Strategy::SizeTiered(fjall::compaction::SizeTiered::default()),
        );
        let keyspace = fjall::Config::new(dir).open().map_err(io)?;
        let data = keyspace.open_partition(DATA, data_options).map_err(io)?;
        let meta = keyspace
            .open_partition(META, PartitionCreateOptions::default())
            .map_err(io)?;
        let version = match meta.get(META_VERSION).map_err(io)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| io("stored version is not 8 bytes"))?,
            ),
            None => 0,
        };
        let visible = keyspace.instant();
        let shared = Arc::new(Shared {
            keyspace,
            data,
            meta,
            committed: AtomicU64::new(version),
            visible: AtomicU64::new(visible),
            active: Mutex::new(BTreeMap::new()),
            stats: EngineStats::default(),
        });
        let (sender, receiver) = mpsc::channel(options.queue_depth.max(1));
        // Two resolved batches may wait for the writer; beyond that the resolver waits too.
        let (to_writer, from_resolver) = std::sync::mpsc::sync_channel(2);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_shared, from_resolver, options.fsync))
            .map_err(|e| io(format!("starting writer: {e}")))?;
        let resolver_shared = Arc::clone(&shared);
        let max_batch = options.max_batch.max(1);
        let resolver = std::thread::Builder::new()
            .name("store-resolver".into())
            .spawn(move || resolver_loop(receiver, to_writer, resolver_shared, max_batch, version))
            .map_err(|e| io(format!("starting resolver: {e}")))?;
        Ok(Engine {
            shared,
            sender: Some(sender),
            threads: vec![resolver, writer],
        })
    }

    pub(crate) fn begin(&self) -> Result<EmbeddedTx, StoreError> {
        // Read the version first: the snapshot opened after it is at least that new, so the
        // conflict check (writes newer than the read version) can only be conservative.
        // Registering under the lock the resolver reads keeps it from forgetting writes this
        // transaction may still conflict with.
        let read_version = {
            let mut active = self.shared.active.lock().expect("active readers lock");
            let v = self.shared.committed.load(Ordering::Acquire);
            *active.entry(v).or_default() += 1;
            v
        };
        let seqno = self.shared.visible.load(Ordering::Acquire);
        let snapshot = self.shared.data.snapshot_at(seqno);
        Ok(EmbeddedTx {
            read_version,
            shared: Arc::clone(&self.shared),
            snapshot,
            sender: self.sender.clone().ok_or(StoreError::Closed)?,
            writes: BTreeMap::new(),
            cleared: Vec::new(),
            versionstamped: Vec::new(),
            reads: Vec::new(),
            point_reads: Default::default(),
        })
    }

    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.stats.commits.load(Ordering::Relaxed),
            conflicts: self.shared.stats.conflicts.load(Ordering::Relaxed),
            batches: self.shared.stats.batches.load(Ordering::Relaxed),
            rows: self.shared.stats.rows.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.sender.take();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Jittered exponential backoff before retry `attempt` (1-based): 1 ms doubling to 64 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base_us = 1_000u64 << attempt.saturating_sub(1).min(6);
    let jitter = rand::thread_rng().gen_range(base_us / 2..=base_us);
    Duration::from_micros(jitter)
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

#[derive(Clone, Debug)]
enum LocalOp {
    Set(Vec<u8>),
    Clear,
    /// An atomic add whose base value was not read.
    Add(i64),
}

struct VersionstampedOp {
    key: Vec<u8>,
    value: Vec<u8>,
    offset: u32,
    in_key: bool,
}

/// One write of a [`WriteSet`]: byte ranges into its buffer.
#[derive(Clone, Copy)]
struct PackedWrite {
    key: (u32, u32),
    op: PackedOp,
}

#[derive(Clone, Copy)]
enum PackedOp {
    Set(u32, u32),
    Clear,
    Add(i64),
}

/// A write as the resolver and the writer see it, borrowing from a [`WriteSet`].
#[derive(Clone, Copy)]
enum Write<'a> {
    Set(&'a [u8]),
    Clear,
    Add(i64),
}

/// A committing transaction's writes, packed into one buffer: the transaction's thread frees
/// its many small keys and values itself, and the writer thread, which applies them, frees
/// two buffers (freeing another thread's small allocations had cost the writer ~15% of its
/// time). Offsets are `u32`: a transaction holds at most
/// [`crate::limits::TRANSACTION_BYTES_MAX`] bytes.
#[derive(Default)]
struct WriteSet {
    bytes: Vec<u8>,
    writes: Vec<PackedWrite>,
    /// Where in `bytes` each versionstamp goes (10 bytes each), filled in by the resolver.
    stamps: Vec<u32>,
}

impl WriteSet {
    /// Packs `writes` (sorted by key), then the versionstamped sets.
    fn pack(writes: &BTreeMap<Vec<u8>, LocalOp>, versionstamped: &[VersionstampedOp]) -> WriteSet {
        let bytes: usize = writes
            .iter()
            .map(|(k, op)| k.len() + if let LocalOp::Set(v) = op { v.len() } else { 0 })
            .chain(versionstamped.iter().map(|o| o.key.len() + o.value.len()))
            .sum();
        let mut set = WriteSet {
            bytes: Vec::with_capacity(bytes),
            writes: Vec::with_capacity(writes.len() + versionstamped.len()),
            stamps: Vec::with_capacity(versionstamped.len()),
        };
        for (key, op) in writes {
            let key = set.append(key);
            let op = match op {
                LocalOp::Set(v) => {
                    let (b, e) = set.append(v);
                    PackedOp::Set(b, e)
                }
                LocalOp::Clear => PackedOp::Clear,
                LocalOp::Add(delta) => PackedOp::Add(*delta),
            };
            set.writes.push(PackedWrite { key, op });
        }
        for op in versionstamped {
            let key = set.append(&op.key);
            let (b, e) = set.append(&op.value);
            let base = if op.in_key { key.0 } else { b };
            set.stamps.push(base + op.offset);
            set.writes.push(PackedWrite {
                key,
                op: PackedOp::Set(b, e),
            });
        }
        set
    }

    fn append(&mut self, bytes: &[u8]) -> (u32, u32) {
        let begin = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        (begin, self.bytes.len() as u32)
    }

    fn range(&self, (b, e): (u32, u32)) -> &[u8] {
        &self.bytes[b as usize..e as usize]
    }

    /// Writes `stamp` into every versionstamp placeholder.
    fn fill_stamps(&mut self, stamp: &Versionstamp) {
        for &at in &self.stamps {
            let at = at as usize;
            self.bytes[at..at + 10].copy_from_slice(&stamp.0);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], Write<'_>)> {
        self.writes.iter().map(|w| {
            let op = match w.op {
                PackedOp::Set(b, e) => Write::Set(self.range((b, e))),
                PackedOp::Clear => Write::Clear,
                PackedOp::Add(delta) => Write::Add(delta),
            };
            (self.range(w.key), op)
        })
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.writes.iter().map(|w| self.range(w.key))
    }

    fn len(&self) -> usize {
        self.writes.len()
    }
}

struct CommitRequest {
    read_version: u64,
    /// Keys read one at a time with a conflict.
    points: Vec<Vec<u8>>,
    /// Ranges read with a conflict, `[begin, end)`.
    reads: Vec<(Vec<u8>, Vec<u8>)>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    writes: WriteSet,
    reply: oneshot::Sender<Result<Versionstamp, StoreError>>,
}

/// One embedded transaction: a fjall snapshot plus a local write buffer.
pub(crate) struct EmbeddedTx {
    read_version: u64,
    /// For releasing the read version when the transaction ends.
    shared: Arc<Shared>,
    snapshot: fjall::Snapshot,
    sender: mpsc::Sender<CommitRequest>,
    writes: BTreeMap<Vec<u8>, LocalOp>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    versionstamped: Vec<VersionstampedOp>,
    /// Read conflict ranges, `[begin, end)`, of range reads.
    reads: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys read one at a time: the stored value once fetched (the snapshot never changes,
    /// so a key read again, like a wallet paying twice in one group, costs no lookup) and
    /// whether the read is a conflict (each key goes to the resolver once).
    point_reads: rustc_hash::FxHashMap<Vec<u8>, PointRead>,
}

#[derive(Default)]
struct PointRead {
    stored: Option<Option<Vec<u8>>>,
    conflict: bool,
}

fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// FoundationDB's ADD on a 64-bit little-endian operand: the base is zero-extended or
/// truncated to 8 bytes; the sum wraps.
fn apply_add(base: Option<&[u8]>, delta: i64) -> Vec<u8> {
    let mut le = [0u8; 8];
    if let Some(base) = base {
        let n = base.len().min(8);
        le[..n].copy_from_slice(&base[..n]);
    }
    i64::from_le_bytes(le)
        .wrapping_add(delta)
        .to_le_bytes()
        .to_vec()
}

impl Drop for EmbeddedTx {
    fn drop(&mut self) {
        self.shared.release_reader(self.read_version);
    }
}

impl EmbeddedTx {
    fn in_cleared(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    /// The value in the snapshot, fetched once per key; `conflict` records a read conflict
    /// on it (sent to the resolver once). One lookup when the key was read before; a miss
    /// fetches and records it in one insert.
    fn stored(&mut self, key: &[u8], conflict: bool) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(read) = self.point_reads.get_mut(key) {
            read.conflict |= conflict;
            if let Some(v) = &read.stored {
                return Ok(v.clone());
            }
        }
        let v = self.snapshot.get(key).map_err(io)?.map(|v| v.to_vec());
        match self.point_reads.get_mut(key) {
            Some(read) => read.stored = Some(v.clone()),
            None => {
                self.point_reads.insert(
                    key.to_vec(),
                    PointRead {
                        stored: Some(v.clone()),
                        conflict,
                    },
                );
            }
        }
        Ok(v)
    }

    /// The value as this transaction sees it before its local write to `key` (if any): none
    /// under a range it cleared (the read still conflicts), else the stored one.
    fn base(&mut self, key: &[u8], conflict: bool) -> Result<Option<Vec<u8>>, StoreError> {
        if self.in_cleared(key) {
            if conflict {
                self.point_reads.entry(key.to_vec()).or_default().conflict = true;
            }
            return Ok(None);
        }
        self.stored(key, conflict)
    }

    pub(crate) async fn get(
        &mut self,
        key: &[u8],
        snapshot: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(LocalOp::Set(v)) => return Ok(Some(v.clone())),
            Some(LocalOp::Clear) => return Ok(None),
            Some(LocalOp::Add(delta)) => {
                let delta = *delta;
                let base = self.base(key, !snapshot)?;
                return Ok(Some(apply_add(base.as_deref(), delta)));
            }
            None => {}
        }
        if self.in_cleared(key) {
            return Ok(None);
        }
        self.stored(key, !snapshot)
    }

    pub(crate) async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if begin < end {
            let stored = self.snapshot.range(begin.to_vec()..end.to_vec());
            let stored = stored.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io));
            let mut stored: Box<dyn Iterator<Item = Result<Row, StoreError>>> = if options.reverse {
                Box::new(stored.rev())
            } else {
                Box::new(stored)
            };
            let bounds = (
                Bound::Included(begin.to_vec()),
                Bound::Excluded(end.to_vec()),
            );
            let local = self.writes.range::<Vec<u8>, _>(bounds);
            let mut local: Box<dyn Iterator<Item = (&Vec<u8>, &LocalOp)>> = if options.reverse {
                Box::new(local.rev())
            } else {
                Box::new(local)
            };
            let mut next_stored = stored.next().transpose()?;
            let mut next_local = local.next();
            // `first` orders keys in the direction of the scan.
            let first = |a: &[u8], b: &[u8]| if options.reverse { a > b } else { a < b };
            while out.len() < options.limit {
                let take_local = match (&next_stored, &next_local) {
                    (None, None) => break,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some((sk, _)), Some((lk, _))) => !first(sk, lk),
                };
                if take_local {
                    let (key, op) = next_local.take().expect("present");
                    let stored_same = matches!(&next_stored, Some((sk, _)) if sk == key);
                    let base = if stored_same {
                        let (_, v) = next_stored.take().expect("present");
                        next_stored = stored.next().transpose()?;
                        if self.in_cleared(key) { None } else { Some(v) }
                    } else {
                        None
                    };
                    match op {
                        LocalOp::Set(v) => out.push((key.clone(), v.clone())),
                        LocalOp::Clear => {}
                        LocalOp::Add(delta) => {
                            out.push((key.clone(), apply_add(base.as_deref(), *delta)));
                        }
                    }
                    next_local = local.next();
                } else {
                    let (key, value) = next_stored.take().expect("present");
                    if !self.in_cleared(&key) {
                        out.push((key, value));
                    }
                    next_stored = stored.next().transpose()?;
                }
            }
        }
        if !options.snapshot {
            let range = match out.last() {
                Some((last, _)) if out.len() >= options.limit => {
                    if options.reverse {
                        (last.clone(), end.to_vec())
                    } else {
                        (begin.to_vec(), key_after(last))
                    }
                }
                _ => (begin.to_vec(), end.to_vec()),
            };
            self.reads.push(range);
        }
        Ok(out)
    }

    pub(crate) fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, LocalOp::Set(value));
    }

    pub(crate) fn clear(&mut self, key: Vec<u8>) {
        self.writes.insert(key, LocalOp::Clear);
    }

    pub(crate) fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let doomed: Vec<Vec<u8>> = self
            .writes
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.writes.remove(&k);
        }
        self.cleared.push((begin.to_vec(), end.to_vec()));
    }

    pub(crate) fn atomic_add(&mut self, key: Vec<u8>, delta: i64) {
        let cleared = self.in_cleared(&key);
        let op = match self.writes.get(&key) {
            Some(LocalOp::Set(v)) => LocalOp::Set(apply_add(Some(v), delta)),
            Some(LocalOp::Clear) => LocalOp::Set(apply_add(None, delta)),
            Some(LocalOp::Add(d)) => LocalOp::Add(d.wrapping_add(delta)),
            None if cleared => LocalOp::Set(apply_add(None, delta)),
            None => LocalOp::Add(delta),
        };
        self.writes.insert(key, op);
    }

    pub(crate) fn set_versionstamped(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        offset: u32,
        in_key: bool,
    ) {
        self.versionstamped.push(VersionstampedOp {
            key,
            value,
            offset,
            in_key,
        });
    }

    pub(crate) async fn commit(&mut self) -> Result<Versionstamp, StoreError> {
        if self.writes.is_empty() && self.cleared.is_empty() && self.versionstamped.is_empty() {
            // Read-only: nothing to resolve or make durable.
            return Ok(Versionstamp::from_parts(self.read_version, 0));
        }
        let (reply, answer) = oneshot::channel();
        let writes = WriteSet::pack(&self.writes, &self.versionstamped);
        // Freed here, on the thread that allocated them.
        self.writes.clear();
        self.versionstamped.clear();
        let request = CommitRequest {
            read_version: self.read_version,
            points: std::mem::take(&mut self.point_reads)
                .into_iter()
                .filter(|(_, r)| r.conflict)
                .map(|(k, _)| k)
                .collect(),
            reads: std::mem::take(&mut self.reads),
            cleared: std::mem::take(&mut self.cleared),
            writes,
            reply,
        };
        self.sender
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        // If the pipeline vanished after taking the request, the outcome is unknown.
        answer.await.map_err(|_| StoreError::CommitUnknownResult)?
    }
}

/// The keys one transaction wrote, sorted, in one buffer (key `i` ends at `ends[i]`), for
/// checking range reads by binary search; point reads use the resolver's hash map.
struct WrittenKeys {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl WrittenKeys {
    fn new(writes: &WriteSet) -> WrittenKeys {
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

    fn key(&self, i: usize) -> &[u8] {
        let begin = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[begin..self.ends[i] as usize]
    }

    /// Whether a key in `[begin, end)` was written.
    fn any_in(&self, begin: &[u8], end: &[u8]) -> bool {
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
fn key_hash(key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(key);
    h.finish()
}

/// Whether `[begin, end)` holds exactly `begin`: a point read.
fn is_point(begin: &[u8], end: &[u8]) -> bool {
    end.len() == begin.len() + 1 && end.last() == Some(&0) && end.starts_with(begin)
}

/// One committed transaction's writes, remembered until no open transaction can conflict
/// with them.
struct Written {
    when: Instant,
    version: u64,
    hashes: Vec<u64>,
    keys: WrittenKeys,
}

/// FoundationDB-style conflict detection over recently committed writes.
struct Resolver {
    /// Newest commit version that wrote a key of each hash, for keys written within the
    /// window.
    point_writes: rustc_hash::FxHashMap<u64, u64>,
    /// Cleared ranges within the window: (begin, end, version, when).
    range_writes: VecDeque<(Vec<u8>, Vec<u8>, u64, Instant)>,
    /// The writes within the window, oldest first.
    history: VecDeque<Written>,
    /// Read versions older than this can no longer be checked.
    oldest_checkable: u64,
}

impl Resolver {
    fn new(version: u64) -> Resolver {
        Resolver {
            point_writes: Default::default(),
            range_writes: VecDeque::new(),
            history: VecDeque::new(),
            oldest_checkable: version,
        }
    }

    /// Whether any key of `points` or any range of `ranges` was written after
    /// `read_version`.
    fn conflicts(
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

    fn record(
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
    fn expire(&mut self, now: Instant, oldest_reader: u64) {
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
struct Resolved {
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    writes: WriteSet,
    reply: oneshot::Sender<Result<Versionstamp, StoreError>>,
    stamp: Versionstamp,
}

/// The resolver thread: conflict checks and version assignment, in commit order. It never
/// touches storage, so it resolves batch N+1 while the writer makes batch N durable.
fn resolver_loop(
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

/// The writer thread: applies resolved batches in order, each as one atomic fjall write
/// batch and one journal fsync, then publishes the new version and acknowledges.
fn writer_loop(
    shared: Arc<Shared>,
    receiver: std::sync::mpsc::Receiver<Vec<Resolved>>,
    fsync: bool,
) {
    let mut counters = CounterCache::default();
    while let Ok(mut batch) = receiver.recv() {
        // Whatever else is already resolved joins this fsync (bounded by the channel).
        while let Ok(more) = receiver.try_recv() {
            batch.extend(more);
        }
        let Some(last) = batch.last().map(|r| r.stamp.version()) else {
            continue;
        };
        match apply_batch(&shared, &batch, last, fsync, &mut counters) {
            Ok(()) => {
                // Seqno first, then version: a reader that sees the new version also sees
                // the new data; one that sees only the new data conflicts conservatively.
                shared
                    .visible
                    .store(shared.keyspace.instant(), Ordering::Release);
                shared.committed.store(last, Ordering::Release);
                shared
                    .stats
                    .commits
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                for r in batch {
                    let _ = r.reply.send(Ok(r.stamp));
                }
            }
            Err(e) => {
                // What reached storage is uncertain: forget cached counters rather than guess.
                counters.values.clear();
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Values of keys recently changed by atomic adds, as the writer last wrote them. The writer
/// is the only one writing, so these are the stored values and an add needs no storage read
/// for a hot counter (a busy wallet's balance). Bounded: when full it starts over.
#[derive(Default)]
struct CounterCache {
    values: rustc_hash::FxHashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Counter values kept by the writer, at most.
const COUNTER_CACHE_MAX: usize = 65_536;

/// Applies resolved transactions, in order, as one atomic fjall write batch and one journal
/// fsync.
fn apply_batch(
    shared: &Shared,
    batch: &[Resolved],
    last_version: u64,
    fsync: bool,
    counters: &mut CounterCache,
) -> Result<(), StoreError> {
    // In key order: consecutive inserts into the memtable's skiplist then walk mostly the
    // same (cached) nodes.
    let rows = if batch.iter().all(|tx| tx.cleared.is_empty()) {
        merge_sorted(shared, batch, counters)?
    } else {
        merge_with_range_clears(shared, batch, counters)?
    };
    // Sized up front: the batch's items are large, and growing it moved them all each time.
    // Buffer durability is what `Keyspace::batch` sets; the fsync follows below.
    let mut write = fjall::Batch::with_capacity(shared.keyspace.clone(), rows.len() + 1)
        .durability(Some(PersistMode::Buffer));
    shared
        .stats
        .rows
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    for (key, value) in rows {
        match value {
            Some(v) => write.insert(&shared.data, key.as_ref(), v.as_ref()),
            None => write.remove(&shared.data, key.as_ref()),
        }
    }
    write.insert(&shared.meta, META_VERSION, last_version.to_be_bytes());
    write.commit().map_err(io)?;
    if fsync {
        // The batch is in the journal; if the fsync fails it may or may not survive a crash.
        shared
            .keyspace
            .persist(PersistMode::SyncData)
            .map_err(|_| StoreError::CommitUnknownResult)?;
    }
    Ok(())
}

/// A batch's net writes, one per key in key order (value `None` = cleared).
type NetWrites<'a> = Vec<(Cow<'a, [u8]>, Option<Cow<'a, [u8]>>)>;

/// The stored value of `key` before this batch, for an atomic add: the counter cache's if it
/// has the key, else storage's.
fn add_base(
    shared: &Shared,
    counters: &CounterCache,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    match counters.values.get(key) {
        Some(cached) => Ok(cached.clone()),
        None => Ok(shared.data.get(key).map_err(io)?.map(|v| v.to_vec())),
    }
}

/// The common case, a batch without range clears: every write, sorted by key (stably, so one
/// key's writes stay in commit order), folded per key, later transactions building on
/// earlier ones. One sort and no map: most keys are written once.
fn merge_sorted<'a>(
    shared: &Shared,
    batch: &'a [Resolved],
    counters: &mut CounterCache,
) -> Result<NetWrites<'a>, StoreError> {
    let mut all: Vec<(&'a [u8], Write<'a>)> =
        Vec::with_capacity(batch.iter().map(|tx| tx.writes.len()).sum());
    for tx in batch {
        all.extend(tx.writes.iter());
    }
    all.sort_by(|a, b| a.0.cmp(b.0));
    let mut rows: NetWrites<'a> = Vec::with_capacity(all.len());
    let mut i = 0;
    while i < all.len() {
        let key = all[i].0;
        // The key's value so far in this batch (`None`: not written yet), and whether an
        // atomic add wrote it last.
        let mut value: Option<Option<Cow<'a, [u8]>>> = None;
        let mut added = false;
        while let Some(&(k, op)) = all.get(i)
            && k == key
        {
            match op {
                Write::Set(v) => {
                    value = Some(Some(Cow::Borrowed(v)));
                    added = false;
                }
                Write::Clear => {
                    value = Some(None);
                    added = false;
                }
                Write::Add(delta) => {
                    let base = match value.take() {
                        Some(v) => v.map(Cow::into_owned),
                        None => add_base(shared, counters, key)?,
                    };
                    value = Some(Some(Cow::Owned(apply_add(base.as_deref(), delta))));
                    added = true;
                }
            }
            i += 1;
        }
        let value = value.expect("a run holds at least one write");
        // The cache after this batch: added keys take their new values, other written keys
        // are forgotten; when full it starts over.
        if added {
            let new = value.as_ref().map(|v| v.to_vec());
            match counters.values.get_mut(key) {
                // A hot counter keeps its cached key; only its value is replaced.
                Some(cached) => *cached = new,
                None => {
                    if counters.values.len() >= COUNTER_CACHE_MAX {
                        counters.values.clear();
                    }
                    counters.values.insert(key.to_vec(), new);
                }
            }
        } else if !counters.values.is_empty() {
            counters.values.remove(key);
        }
        rows.push((Cow::Borrowed(key), value));
    }
    Ok(rows)
}

/// A batch with range clears: the batch's writes in a map, so that a range clear also clears
/// what earlier transactions of the batch wrote, and the cache is dropped.
fn merge_with_range_clears<'a>(
    shared: &Shared,
    batch: &'a [Resolved],
    counters: &mut CounterCache,
) -> Result<NetWrites<'a>, StoreError> {
    // The batch's own writes so far (value None = cleared), so that later transactions of the
    // batch build on earlier ones before anything reaches fjall.
    type Overlay<'a> = rustc_hash::FxHashMap<Cow<'a, [u8]>, Option<Cow<'a, [u8]>>>;
    let mut overlay: Overlay<'_> = Default::default();
    overlay.reserve(batch.iter().map(|tx| tx.writes.len()).sum());
    let mut range_cleared = false;
    for tx in batch {
        for (b, e) in &tx.cleared {
            range_cleared = true;
            for (k, v) in overlay.iter_mut() {
                if b.as_slice() <= k.as_ref() && k.as_ref() < e.as_slice() {
                    *v = None;
                }
            }
            for row in shared.data.range(b.clone()..e.clone()) {
                let (k, _) = row.map_err(io)?;
                overlay.insert(Cow::Owned(k.to_vec()), None);
            }
        }
        for (key, op) in tx.writes.iter() {
            let value = match op {
                Write::Set(v) => Some(Cow::Borrowed(v)),
                Write::Clear => None,
                Write::Add(delta) => {
                    let base = match overlay.get(key) {
                        Some(v) => v.as_deref().map(|v| v.to_vec()),
                        None if !range_cleared => add_base(shared, counters, key)?,
                        None => shared.data.get(key).map_err(io)?.map(|v| v.to_vec()),
                    };
                    Some(Cow::Owned(apply_add(base.as_deref(), delta)))
                }
            };
            overlay.insert(Cow::Borrowed(key), value);
        }
    }
    // A range clear may have removed cached counters: forget them all.
    counters.values.clear();
    let mut rows: NetWrites<'a> = overlay.into_iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

#[cfg(test)]
mod tests {
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
}
