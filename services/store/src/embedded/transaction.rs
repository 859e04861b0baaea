//! One open embedded transaction: a fjall snapshot, the keys and ranges it read, and a local
//! write buffer; committing packs the writes and hands them to the resolver.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::cache::Cached;
use super::writeset::{LocalOp, VersionstampedOp, WriteSet, apply_add};
use super::{Shared, io};
use crate::error::StoreError;
use crate::transaction::{RangeOptions, Versionstamp};

/// A key and its value.
pub(super) type Row = (Vec<u8>, Vec<u8>);

pub(super) struct CommitRequest {
    pub(super) read_version: u64,
    /// Keys read one at a time with a conflict.
    pub(super) points: Vec<Vec<u8>>,
    /// Ranges read with a conflict, `[begin, end)`.
    pub(super) reads: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) cleared: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) writes: WriteSet,
    pub(super) reply: oneshot::Sender<Result<Versionstamp, StoreError>>,
}

/// One embedded transaction: a fjall snapshot plus a local write buffer.
pub(crate) struct EmbeddedTx {
    pub(super) read_version: u64,
    /// For releasing the read version when the transaction ends.
    pub(super) shared: Arc<Shared>,
    pub(super) snapshot: fjall::Snapshot,
    pub(super) sender: mpsc::Sender<CommitRequest>,
    pub(super) writes: BTreeMap<Vec<u8>, LocalOp>,
    pub(super) cleared: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) versionstamped: Vec<VersionstampedOp>,
    /// Read conflict ranges, `[begin, end)`, of range reads.
    pub(super) reads: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys read one at a time: the stored value once fetched (the snapshot never changes,
    /// so a key read again, like a wallet paying twice in one group, costs no lookup) and
    /// whether the read is a conflict (each key goes to the resolver once).
    pub(super) point_reads: rustc_hash::FxHashMap<Vec<u8>, PointRead>,
}

#[derive(Default)]
pub(super) struct PointRead {
    pub(super) stored: Option<Option<Vec<u8>>>,
    pub(super) conflict: bool,
}

pub(super) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

impl Drop for EmbeddedTx {
    fn drop(&mut self) {
        self.shared.release_reader(self.read_version);
    }
}

impl EmbeddedTx {
    pub(super) fn in_cleared(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    /// The value in the snapshot, fetched once per key; `conflict` records a read conflict
    /// on it (sent to the resolver once). One lookup when the key was read before; a miss
    /// fetches and records it in one insert.
    pub(super) fn stored(
        &mut self,
        key: &[u8],
        conflict: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(read) = self.point_reads.get_mut(key) {
            read.conflict |= conflict;
            if let Some(v) = &read.stored {
                return Ok(v.clone());
            }
        }
        let memory = self.shared.memory.as_ref().map(|(m, _)| m);
        let v = match self.shared.cache.as_ref() {
            _ if memory.is_some_and(|m| m.covers(key)) => {
                memory.expect("checked").get(key, self.read_version)
            }
            None => self.snapshot.get(key).map_err(io)?.map(|v| v.to_vec()),
            Some(cache) => match cache.get(key, self.read_version) {
                Cached::Hit(v) => v,
                Cached::Miss => {
                    let v = self.snapshot.get(key).map_err(io)?.map(|v| v.to_vec());
                    cache.offer(key, self.read_version, &v);
                    v
                }
            },
        };
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
    pub(super) fn base(
        &mut self,
        key: &[u8],
        conflict: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
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
            let mut stored = self.stored_range(begin, end, options.reverse);
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

    /// The stored rows of `[begin, end)` in scan order: the snapshot's, merged with the
    /// memory families' at this transaction's read version (a key lives in one or the
    /// other).
    fn stored_range<'s>(
        &'s self,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<Row, StoreError>> + 's> {
        let memory = self
            .shared
            .memory
            .as_ref()
            .map(|(m, _)| m)
            .filter(|m| m.overlaps(begin, end));
        let memory_range = |m| MemoryRange {
            memory: m,
            begin: begin.to_vec(),
            end: end.to_vec(),
            at: self.read_version,
            reverse,
            page: std::collections::VecDeque::new(),
            done: false,
        };
        if let Some(m) = memory
            && m.contains_range(begin, end)
        {
            return Box::new(memory_range(m).map(Ok));
        }
        let stored = self.snapshot.range(begin.to_vec()..end.to_vec());
        let stored = stored.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io));
        let stored: Box<dyn Iterator<Item = Result<Row, StoreError>>> = if reverse {
            Box::new(stored.rev())
        } else {
            Box::new(stored)
        };
        match memory {
            None => stored,
            Some(m) => Box::new(MergedRows {
                a: stored.peekable(),
                b: memory_range(m).map(Ok).peekable(),
                reverse,
            }),
        }
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

/// Rows of a memory family's range at one version, fetched a page at a time.
struct MemoryRange<'m> {
    memory: &'m super::memory::Memory,
    /// What is left of the range: a page moves one bound past the rows it took.
    begin: Vec<u8>,
    end: Vec<u8>,
    at: u64,
    reverse: bool,
    page: std::collections::VecDeque<Row>,
    done: bool,
}

/// Rows a memory range fetches at once.
const MEMORY_PAGE: usize = 256;

impl Iterator for MemoryRange<'_> {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        if self.page.is_empty() && !self.done {
            let rows =
                self.memory
                    .range(&self.begin, &self.end, self.at, self.reverse, MEMORY_PAGE);
            self.done = rows.len() < MEMORY_PAGE;
            if let Some((last, _)) = rows.last() {
                if self.reverse {
                    self.end = last.clone();
                } else {
                    self.begin = key_after(last);
                }
            }
            self.page.extend(rows);
        }
        self.page.pop_front()
    }
}

/// Two scans of disjoint keys merged into one, in scan order.
struct MergedRows<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    reverse: bool,
}

impl<A, B> Iterator for MergedRows<A, B>
where
    A: Iterator<Item = Result<Row, StoreError>>,
    B: Iterator<Item = Result<Row, StoreError>>,
{
    type Item = Result<Row, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // An error comes out first.
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => (ka < kb) != self.reverse,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}
