//! The writer thread: merges a resolved batch's writes per key, writes them as one atomic
//! fjall batch, fsyncs the journal once, then publishes and acknowledges.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use fjall::PersistMode;

use super::resolver::Resolved;
use super::writeset::{Write, apply_add};
use std::sync::Arc;

use super::{META_VERSION, Shared, io, memory};
use crate::error::StoreError;

/// The writer thread: applies resolved batches in order, each as one atomic fjall write
/// batch and one journal fsync, then publishes the new version and acknowledges.
///
/// Fail-stop: after the first failed write or fsync nothing more is applied or published.
/// A failed batch may sit in the memtable, and a later successful fsync could make it look
/// durable while the failed pages were dropped (the "fsyncgate" failure); so every later
/// commit is refused with [`StoreError::Failed`] until the store is reopened and recovers
/// from its journal.
pub(super) fn writer_loop(
    shared: Arc<Shared>,
    receiver: std::sync::mpsc::Receiver<Vec<Resolved>>,
    options: super::EmbeddedOptions,
    snapshots: std::sync::mpsc::SyncSender<()>,
) {
    let mut counters = CounterCache::default();
    // Bytes of memory-family records logged since the last snapshot request.
    let mut logged = 0u64;
    let mut stopped: Option<StoreError> = None;
    let mut batches = 0u64;
    // Transactions in the last durable batch: more than one means committers are waiting
    // on each other, and a short wait for more saves fsyncs.
    let mut last_batch = 0usize;
    while let Ok(mut batch) = receiver.recv() {
        // Whatever else is already resolved joins this fsync (bounded by the channel).
        while let Ok(more) = receiver.try_recv() {
            batch.extend(more);
        }
        if !options.commit_delay.is_zero() && last_batch > 1 {
            let deadline = std::time::Instant::now() + options.commit_delay;
            while batch.len() < options.max_batch {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
        }
        last_batch = batch.len();
        if let Some(e) = &stopped {
            for r in batch {
                let _ = r.reply.send(Err(e.clone()));
            }
            continue;
        }
        let Some(last) = batch.last().map(|r| r.stamp.version()) else {
            continue;
        };
        let inject = options.fail_fsync_at_batch == Some(batches);
        batches += 1;
        match apply_batch(&shared, &batch, last, options.fsync, inject, &mut counters) {
            Ok(memory_bytes) => {
                logged += memory_bytes;
                // A full request channel means a snapshot is under way: ask again later.
                let due = options
                    .memory_snapshot_bytes
                    .max(shared.snapshot_size.load(Ordering::Relaxed));
                if logged >= due && snapshots.try_send(()).is_ok() {
                    logged = 0;
                }
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
                if options.fsync {
                    shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                }
                for r in batch {
                    let _ = r.reply.send(Ok(r.stamp));
                }
            }
            Err(e) => {
                // What reached storage is uncertain: stop here.
                counters.values.clear();
                shared.stats.failed.store(true, Ordering::Release);
                eprintln!("store: stopping after a failed write or fsync: {e}");
                stopped = Some(StoreError::Failed(e.to_string()));
                // This batch may or may not be in the journal that recovery reads.
                for r in batch {
                    let _ = r.reply.send(Err(StoreError::CommitUnknownResult));
                }
            }
        }
    }
}

/// Values of keys recently changed by atomic adds, as the writer last wrote them. The writer
/// is the only one writing, so these are the stored values and an add needs no storage read
/// for a hot counter (a busy wallet's balance). Bounded: when full it starts over.
#[derive(Default)]
pub(super) struct CounterCache {
    pub(super) values: rustc_hash::FxHashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Counter values kept by the writer, at most (about 150 bytes each). A transfer adds to a
/// few per-wallet counters (balances, day totals), so with 10⁵ wallets paying a smaller cache
/// started over every few thousand transfers and most adds read their base from storage.
pub(super) const COUNTER_CACHE_MAX: usize = 1 << 19;

/// Applies resolved transactions, in order, as one atomic fjall write batch and one journal
/// fsync; the memory families' net writes travel in it as one log record. Returns the bytes
/// of that record.
pub(super) fn apply_batch(
    shared: &Shared,
    batch: &[Resolved],
    last_version: u64,
    fsync: bool,
    fail_fsync: bool,
    counters: &mut CounterCache,
) -> Result<u64, StoreError> {
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
    let mut bytes = 0u64;
    let memory = shared.memory.as_ref().map(|(m, _)| m);
    let in_memory = |key: &[u8]| memory.is_some_and(|m| m.covers(key));
    let mut record = Vec::new();
    for (key, value) in &rows {
        bytes += (key.len() + value.as_ref().map_or(0, |v| v.len())) as u64;
        if in_memory(key) {
            continue;
        }
        match value {
            Some(v) => write.insert(&shared.data, key.as_ref(), v.as_ref()),
            None => write.remove(&shared.data, key.as_ref()),
        }
    }
    if let Some((memory, memlog)) = &shared.memory {
        let hot = rows.iter().filter(|(k, _)| memory.covers(k));
        memory::encode_rows(hot.map(|(k, v)| (k.as_ref(), v.as_deref())), &mut record);
        if !record.is_empty() {
            write.insert(memlog, last_version.to_be_bytes(), record.as_slice());
        }
    }
    shared.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    write.insert(&shared.meta, META_VERSION, last_version.to_be_bytes());
    write.commit().map_err(io)?;
    if fsync {
        // The batch is in the journal; if the fsync fails it may or may not survive a crash.
        if fail_fsync {
            return Err(StoreError::Io("fsync failed (injected)".into()));
        }
        shared
            .keyspace
            .persist(PersistMode::SyncData)
            .map_err(|e| StoreError::Io(format!("fsync: {e}")))?;
    }
    // Durable: the memory families and the read cache take the batch's values before its
    // version is published. A range clear's rows list every key it removed.
    if let Some((memory, _)) = &shared.memory
        && !record.is_empty()
    {
        let floor = shared.oldest_reader();
        let hot: Vec<memory::Row<'_>> = rows
            .iter()
            .filter(|(k, _)| memory.covers(k))
            .map(|(k, v)| (k.as_ref(), v.as_deref()))
            .collect();
        memory.apply(&hot, last_version, floor);
        memory.forget_cleared(floor);
    }
    if let Some(cache) = &shared.cache {
        for (key, value) in &rows {
            if !in_memory(key) {
                cache.wrote(key, value.as_deref(), last_version);
            }
        }
    }
    Ok(record.len() as u64)
}

/// A batch's net writes, one per key in key order (value `None` = cleared).
pub(super) type NetWrites<'a> = Vec<(Cow<'a, [u8]>, Option<Cow<'a, [u8]>>)>;

/// The stored value of `key` before this batch, for an atomic add: a memory family's newest,
/// else the counter cache's if it has the key, else storage's.
pub(super) fn add_base(
    shared: &Shared,
    counters: &CounterCache,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some((memory, _)) = &shared.memory
        && memory.covers(key)
    {
        return Ok(memory.latest(key));
    }
    match counters.values.get(key) {
        Some(cached) => Ok(cached.clone()),
        None => stored_latest(shared, key),
    }
}

/// The newest stored value of `key`: what the writer has applied so far.
fn stored_latest(shared: &Shared, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some((memory, _)) = &shared.memory
        && memory.covers(key)
    {
        return Ok(memory.latest(key));
    }
    Ok(shared.data.get(key).map_err(io)?.map(|v| v.to_vec()))
}

/// The common case, a batch without range clears: every write, sorted by key (stably, so one
/// key's writes stay in commit order), folded per key, later transactions building on
/// earlier ones. One sort and no map: most keys are written once.
pub(super) fn merge_sorted<'a>(
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
        if added && !shared.memory.as_ref().is_some_and(|(m, _)| m.covers(key)) {
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
pub(super) fn merge_with_range_clears<'a>(
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
            if let Some((memory, _)) = &shared.memory
                && memory.overlaps(b, e)
            {
                for (k, _) in memory.range(b, e, u64::MAX, false, usize::MAX) {
                    overlay.insert(Cow::Owned(k), None);
                }
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
                        None => stored_latest(shared, key)?,
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
