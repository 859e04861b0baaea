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

//!
//! The rooms: [`transaction`] (an open transaction's snapshot reads and local writes),
//! [`writeset`] (a committing transaction's writes packed into one buffer), [`resolver`]
//! (conflict checks and versions, pure; its thread) and [`writer`] (merging a batch and making
//! it durable; its thread). This file opens the engine and starts the two threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use rand::Rng;
use tokio::sync::mpsc;

use crate::error::StoreError;

mod cache;
mod memory;
mod resolver;
mod transaction;
mod writer;
mod writeset;

use resolver::resolver_loop;
use transaction::CommitRequest;
pub(crate) use transaction::EmbeddedTx;
use writer::writer_loop;

const DATA: &str = "data";
const META: &str = "meta";
const META_VERSION: &[u8] = b"version";
/// The memory families' log: one record per durable batch, keyed by its version (u64 BE).
const MEMLOG: &str = "memlog";
/// How long the resolver remembers writes: a little more than the 5-second transaction limit.
const CONFLICT_WINDOW: Duration = Duration::from_secs(6);

/// Tuning of the embedded backend.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Transactions resolved and made durable together, at most.
    pub max_batch: usize,
    /// Commits waiting for the resolver, at most; beyond this, commit waits (backpressure).
    pub queue_depth: usize,
    /// fsync every batch before acknowledging it. Only benchmarks and simulations (whose
    /// crashes are in-process, so the OS keeps what was written) turn this off.
    pub fsync: bool,
    /// A fault for tests: the fsync of batch number `n` (counting from 0 since opening)
    /// fails as a real one would, after the batch reached the journal.
    pub fail_fsync_at_batch: Option<u64>,
    /// Bytes of decompressed blocks kept in memory. A transfer reads its inputs, its wallets
    /// and their limits at random across every wallet, so the block cache should hold the
    /// hot part of the data: at 10⁵ wallets the 32 MiB default left most reads decoding a
    /// block from the file again.
    pub cache_bytes: u64,
    /// Group commit (PostgreSQL's `commit_delay`): when the last durable batch held more
    /// than one transaction, the writer waits up to this long for more to join the next
    /// fsync. Each commit may wait this much longer; a service whose transactions are many
    /// and small saves most of its fsyncs. A lone committer never waits (its batches hold
    /// one). Zero (the default) never waits: the ledger groups its own commits.
    pub commit_delay: std::time::Duration,
    /// Keys whose values the read cache keeps, at most (zero: no cache). A transfer reads
    /// its parties' wallet records and limit counters, hot keys that otherwise walk the
    /// memtables and the segments' bloom filters on every read (see `cache`).
    pub read_cache_entries: usize,
    /// Key prefixes whose keys live in memory, with the journal as their durable copy
    /// (see `memory`): the families a service reads and rewrites on every request. Their
    /// size is bounded by what the service keeps under them, and all of it is in memory.
    /// Changing the list moves keys between memory and storage when the store opens.
    pub memory_families: Vec<Vec<u8>>,
    /// Bytes of memory-family writes in the journal after which a snapshot of the families
    /// is written and the journal's older records dropped, at least: a snapshot waits
    /// until the log has outgrown the last snapshot too, so snapshots cost at most as many
    /// bytes as the log, and recovery replays at most about that much.
    pub memory_snapshot_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            max_batch: 4096,
            queue_depth: 16_384,
            fsync: true,
            fail_fsync_at_batch: None,
            cache_bytes: 256 << 20,
            commit_delay: std::time::Duration::ZERO,
            read_cache_entries: 1 << 18,
            memory_families: Vec::new(),
            memory_snapshot_bytes: 64 << 20,
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
    /// Journal fsyncs made (one per batch with fsync on; none with it off).
    pub fsyncs: u64,
    /// Keys written to storage (sets and clears, after merging a batch's writes to one key).
    pub rows: u64,
    /// Bytes of those keys and their values (a cleared key counts its key's bytes).
    pub bytes: u64,
    /// The store stopped after a failed write or fsync: it commits nothing more until
    /// reopened.
    pub failed: bool,
    /// Point reads answered by the read cache.
    pub cache_hits: u64,
    /// Point reads that read storage (the cache did not know the key at their version).
    pub cache_misses: u64,
    /// Snapshots of the memory families written since opening.
    pub memory_snapshots: u64,
}

#[derive(Debug, Default)]
struct EngineStats {
    pub commits: AtomicU64,
    pub conflicts: AtomicU64,
    pub batches: AtomicU64,
    pub fsyncs: AtomicU64,
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub failed: std::sync::atomic::AtomicBool,
    pub memory_snapshots: AtomicU64,
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
    /// Values of hot keys, kept current by the writer (`None`: no cache).
    cache: Option<cache::ReadCache>,
    /// The memory-resident families and their log partition (`None`: no families).
    memory: Option<(memory::Memory, PartitionHandle)>,
    /// The size of the last snapshot of the memory families, in bytes.
    snapshot_size: AtomicU64,
    dir: std::path::PathBuf,
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

    /// Registers a reader at the committed version (what `begin` does) and returns it.
    fn register_reader(&self) -> u64 {
        let mut active = self.active.lock().expect("active readers lock");
        let v = self.committed.load(Ordering::Acquire);
        *active.entry(v).or_default() += 1;
        v
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
        let keyspace = fjall::Config::new(dir)
            .cache_size(options.cache_bytes)
            .open()
            .map_err(io)?;
        let data = keyspace.open_partition(DATA, data_options).map_err(io)?;
        let meta = keyspace
            .open_partition(META, PartitionCreateOptions::default())
            .map_err(io)?;
        // Memtables recovered from the journal are queued for flushing without waking the
        // flush worker, yet they count against the write buffer: after a few crashes under
        // load they filled it, fjall halted every write, and nothing woke the worker (a
        // ledger stopped committing for good after its fourth SIGKILL in the bank test).
        // Rotating the recovered active memtables wakes the worker, which flushes every
        // queued one; opening waits for that.
        if keyspace.write_buffer_size() > 0 {
            for p in [&data, &meta] {
                p.rotate_memtable_and_wait().map_err(io)?;
            }
        }
        let version = match meta.get(META_VERSION).map_err(io)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| io("stored version is not 8 bytes"))?,
            ),
            None => 0,
        };
        let memory = open_memory(dir, &keyspace, &data, &options, version)?;
        let snapshot_size =
            std::fs::metadata(dir.join(memory::SNAPSHOT_FILE)).map_or(0, |m| m.len());
        let visible = keyspace.instant();
        let shared = Arc::new(Shared {
            keyspace,
            data,
            meta,
            committed: AtomicU64::new(version),
            visible: AtomicU64::new(visible),
            cache: cache::ReadCache::new(options.read_cache_entries),
            memory,
            snapshot_size: AtomicU64::new(snapshot_size),
            dir: dir.to_path_buf(),
            active: Mutex::new(BTreeMap::new()),
            stats: EngineStats::default(),
        });
        let mut threads = Vec::new();
        // The snapshot thread takes a request from the writer when the memory log has grown;
        // it ends when the writer does.
        let (snapshots, snapshot_requests) = std::sync::mpsc::sync_channel::<()>(1);
        if shared.memory.is_some() {
            let snapshot_shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name("store-snapshot".into())
                    .spawn(move || snapshot_loop(snapshot_shared, snapshot_requests))
                    .map_err(|e| io(format!("starting snapshots: {e}")))?,
            );
        }
        let (sender, receiver) = mpsc::channel(options.queue_depth.max(1));
        // Two resolved batches may wait for the writer; beyond that the resolver waits too.
        let (to_writer, from_resolver) = std::sync::mpsc::sync_channel(2);
        let writer_shared = Arc::clone(&shared);
        let max_batch = options.max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_shared, from_resolver, options, snapshots))
            .map_err(|e| io(format!("starting writer: {e}")))?;
        let resolver_shared = Arc::clone(&shared);
        let resolver = std::thread::Builder::new()
            .name("store-resolver".into())
            .spawn(move || resolver_loop(receiver, to_writer, resolver_shared, max_batch, version))
            .map_err(|e| io(format!("starting resolver: {e}")))?;
        // Joined in this order on drop: each ends when its input closes.
        threads.insert(0, writer);
        threads.insert(0, resolver);
        Ok(Engine {
            shared,
            sender: Some(sender),
            threads,
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
        let (cache_hits, cache_misses) = self.shared.cache.as_ref().map_or((0, 0), |c| c.counts());
        StoreStats {
            commits: self.shared.stats.commits.load(Ordering::Relaxed),
            conflicts: self.shared.stats.conflicts.load(Ordering::Relaxed),
            batches: self.shared.stats.batches.load(Ordering::Relaxed),
            fsyncs: self.shared.stats.fsyncs.load(Ordering::Relaxed),
            rows: self.shared.stats.rows.load(Ordering::Relaxed),
            bytes: self.shared.stats.bytes.load(Ordering::Relaxed),
            failed: self.shared.stats.failed.load(Ordering::Relaxed),
            cache_hits,
            cache_misses,
            memory_snapshots: self.shared.stats.memory_snapshots.load(Ordering::Relaxed),
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

/// Opens the memory families: loads the last snapshot, replays the log records after it,
/// then moves keys whose family changed: a key under a family now but still in storage (the
/// family is new) comes into memory, and a key in memory that no family covers goes to
/// storage. Each move is made durable where it lands before it is removed where it was.
fn open_memory(
    dir: &Path,
    keyspace: &Keyspace,
    data: &PartitionHandle,
    options: &EmbeddedOptions,
    version: u64,
) -> Result<Option<(memory::Memory, PartitionHandle)>, StoreError> {
    let had_log = keyspace.partition_exists(MEMLOG);
    let had_snapshot = dir.join(memory::SNAPSHOT_FILE).exists();
    if options.memory_families.is_empty() && !had_log && !had_snapshot {
        return Ok(None);
    }
    let memory = memory::Memory::new(&options.memory_families);
    let memlog = keyspace
        .open_partition(
            MEMLOG,
            PartitionCreateOptions::default().compression(fjall::CompressionType::None),
        )
        .map_err(io)?;
    let since = memory::load_snapshot(&memory, dir)?.unwrap_or(0);
    if since > version {
        return Err(io(format!(
            "the memory snapshot (version {since}) is newer than the journal (version {version})"
        )));
    }
    for record in memlog.range((since + 1).to_be_bytes()..) {
        let (_, rows) = record.map_err(io)?;
        memory::decode_rows(&rows, |k, v| memory.load(k, v))?;
    }
    // Keys of a family that storage still holds.
    let mut moved_in = Vec::new();
    for prefix in memory.prefixes() {
        for row in data.prefix(prefix) {
            let (k, v) = row.map_err(io)?;
            memory.load(&k, Some(&v));
            moved_in.push(k);
        }
    }
    let moved_out = memory.take_uncovered();
    if !moved_out.is_empty() {
        let mut batch = keyspace.batch();
        for (k, v) in &moved_out {
            batch.insert(data, k.as_slice(), v.as_slice());
        }
        batch.commit().map_err(io)?;
        keyspace.persist(PersistMode::SyncAll).map_err(io)?;
    }
    if !moved_in.is_empty() || !moved_out.is_empty() {
        memory::write_snapshot(&memory, dir, version).map_err(io)?;
        drop_log_through(keyspace, &memlog, version)?;
        let mut batch = keyspace.batch();
        for k in &moved_in {
            batch.remove(data, k.clone());
        }
        batch.commit().map_err(io)?;
        keyspace.persist(PersistMode::SyncAll).map_err(io)?;
    }
    Ok(Some((memory, memlog)))
}

/// Deletes the memory log's records up to `version` (a snapshot at `version` holds them).
fn drop_log_through(
    keyspace: &Keyspace,
    memlog: &PartitionHandle,
    version: u64,
) -> Result<(), StoreError> {
    let mut batch = keyspace.batch();
    for key in memlog.keys().take_while(|k| match k {
        Ok(k) => k.as_ref() <= version.to_be_bytes().as_slice(),
        Err(_) => true,
    }) {
        batch.remove(memlog, key.map_err(io)?);
    }
    batch.commit().map_err(io)
}

/// The snapshot thread: on each request, writes the memory families at the committed
/// version and drops the log records the snapshot holds. A failed snapshot leaves the log
/// as it was (recovery replays more) and is tried again on the next request.
fn snapshot_loop(shared: Arc<Shared>, requests: std::sync::mpsc::Receiver<()>) {
    let Some((memory, memlog)) = &shared.memory else {
        return;
    };
    while requests.recv().is_ok() {
        // Registered as a reader, so the writer keeps every key's value at `at`.
        let at = shared.register_reader();
        // Every batch up to `at` is in the synced journal before the snapshot holds it (a
        // store without fsync syncs here, so a snapshot is never ahead of the storage half
        // of the same transactions).
        let written = shared
            .keyspace
            .persist(PersistMode::SyncData)
            .map_err(std::io::Error::other)
            .and_then(|()| memory::write_snapshot(memory, &shared.dir, at));
        shared.release_reader(at);
        let done = written
            .map_err(io)
            .and_then(|size| drop_log_through(&shared.keyspace, memlog, at).map(|()| size));
        match done {
            Ok(size) => {
                shared.snapshot_size.store(size, Ordering::Relaxed);
                shared
                    .stats
                    .memory_snapshots
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("store: memory snapshot at version {at} failed: {e}"),
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
