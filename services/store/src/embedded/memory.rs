//! Memory-resident key families: FoundationDB's "memory" storage engine for the keys a
//! service reads and rewrites on every request (a ledger's wallet records, balances and
//! output counts).
//!
//! A key under one of the configured prefixes lives only here, never in the LSM tree:
//!
//! - **Reads** look it up in an ordered map, versioned like the rest of the store. Each key
//!   keeps its newest value and the older values an open reader may still need (one per
//!   version at or above the oldest open read version, plus the newest at or below it); a
//!   read at version `R` takes the newest value written at or before `R`, so a transaction
//!   sees exactly the batches its read version covers.
//! - **Writes** reach the map from the writer thread after the batch is durable and before
//!   its version is published, as the read cache's do. An atomic add's base is the map's
//!   newest value: the writer is the only writer, so it never reads storage.
//! - **Durability**: the batch's net writes to these keys travel as one record in the same
//!   fjall write batch as everything else (partition `memlog`, keyed by the batch's version),
//!   so one journal fsync makes both durable together. The LSM tree sees one insert per batch
//!   instead of one per key, and nothing to compact but the log itself.
//! - **Snapshots** bound recovery: once the log since the last snapshot outgrows a bound, a
//!   thread writes every key's value at one version `S` to `memory.snapshot` (checksummed,
//!   written beside and renamed over the old one after an fsync), then deletes the log's
//!   records up to `S`. Opening loads the snapshot and replays the log records after it.
//!
//! Shards under their own locks keep readers and the writer apart; a range read (rare on the
//! hot path) merges every shard's part of the range.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::error::StoreError;

/// Shards of the map, each under its own lock.
const SHARDS: usize = 16;
/// Keys a snapshot copies under one shard lock before letting the writer in.
const SNAPSHOT_CHUNK: usize = 4096;
/// The snapshot file's first bytes (format version 1).
const SNAPSHOT_MAGIC: &[u8; 8] = b"cbdcmem1";
pub(super) const SNAPSHOT_FILE: &str = "memory.snapshot";

/// A value: `None` is a cleared key.
type Value = Option<Box<[u8]>>;

/// One key's values: the newest, and older ones open readers may still need (ascending).
struct Chain {
    version: u64,
    value: Value,
    older: Vec<(u64, Value)>,
}

impl Chain {
    /// The value as of read version `at` (`None`: absent then).
    fn at(&self, at: u64) -> Option<&[u8]> {
        if self.version <= at {
            return self.value.as_deref();
        }
        self.older
            .iter()
            .rev()
            .find(|(v, _)| *v <= at)
            .and_then(|(_, value)| value.as_deref())
    }

    /// Replaces the value at `version`, keeping what readers at or above `floor` (the oldest
    /// open read version) may need: every value newer than `floor`, and the newest at or
    /// below it unless that is a clear (absence needs no entry).
    fn write(&mut self, version: u64, value: Value, floor: u64) {
        let old = std::mem::replace(&mut self.value, value);
        let old_version = std::mem::replace(&mut self.version, version);
        self.older.push((old_version, old));
        // The newest entry at or below the floor: everything before it is unreachable.
        if let Some(keep) = self.older.iter().rposition(|(v, _)| *v <= floor) {
            let start = if self.older[keep].1.is_none() {
                keep + 1
            } else {
                keep
            };
            self.older.drain(..start);
        }
    }
}

type Shard = BTreeMap<Box<[u8]>, Chain>;

pub(crate) struct Memory {
    prefixes: Box<[Vec<u8>]>,
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    /// Keys cleared, with the version that cleared them, in order: dropped from the map once
    /// no reader can see them (see [`Memory::forget_cleared`]).
    cleared: Mutex<VecDeque<(u64, Box<[u8]>)>>,
}

/// A batch's net write to one memory key, as the writer hands it over.
pub(super) type Row<'a> = (&'a [u8], Option<&'a [u8]>);

impl Memory {
    /// The families under `prefixes` (none: a map that covers no key, for recovery).
    pub(super) fn new(prefixes: &[Vec<u8>]) -> Memory {
        Memory {
            prefixes: prefixes.to_vec().into_boxed_slice(),
            shards: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
            hasher: RandomState::new(),
            cleared: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether `key` belongs to a memory family.
    pub(super) fn covers(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p))
    }

    /// Whether `[begin, end)` holds keys of a memory family.
    pub(super) fn overlaps(&self, begin: &[u8], end: &[u8]) -> bool {
        self.prefixes.iter().any(|p| {
            p.as_slice() < end
                && match crate::keys::strinc(p) {
                    Some(after) => begin < after.as_slice(),
                    None => true,
                }
        })
    }

    /// Whether `[begin, end)` lies inside one memory family (no stored key can be in it).
    pub(super) fn contains_range(&self, begin: &[u8], end: &[u8]) -> bool {
        self.prefixes.iter().any(|p| {
            begin.starts_with(p)
                && crate::keys::strinc(p).is_some_and(|after| end <= after.as_slice())
        })
    }

    pub(super) fn prefixes(&self) -> &[Vec<u8>] {
        &self.prefixes
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn read(shard: &RwLock<Shard>) -> std::sync::RwLockReadGuard<'_, Shard> {
        shard.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(shard: &RwLock<Shard>) -> std::sync::RwLockWriteGuard<'_, Shard> {
        shard.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` at read version `at`.
    pub(super) fn get(&self, key: &[u8], at: u64) -> Option<Vec<u8>> {
        Self::read(self.shard(key))
            .get(key)
            .and_then(|c| c.at(at).map(<[u8]>::to_vec))
    }

    /// The newest value of `key` (the writer's view: everything applied so far).
    pub(super) fn latest(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key, u64::MAX)
    }

    /// Every key with a value at `at` in `[begin, end)`, in key order (descending if
    /// `reverse`), at most `limit`.
    pub(super) fn range(
        &self,
        begin: &[u8],
        end: &[u8],
        at: u64,
        reverse: bool,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        if begin >= end || limit == 0 {
            return out;
        }
        let bounds = (Bound::Included(begin), Bound::Excluded(end));
        for shard in self.shards.iter() {
            let shard = Self::read(shard);
            let rows = shard.range::<[u8], _>(bounds);
            let rows: Box<dyn Iterator<Item = (&Box<[u8]>, &Chain)>> = if reverse {
                Box::new(rows.rev())
            } else {
                Box::new(rows)
            };
            let before = out.len();
            for (k, chain) in rows {
                if out.len() - before >= limit {
                    break;
                }
                if let Some(v) = chain.at(at) {
                    out.push((k.to_vec(), v.to_vec()));
                }
            }
        }
        if reverse {
            out.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        } else {
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        out.truncate(limit);
        out
    }

    /// Applies a durable batch's net writes at `version`, before it is published. `floor` is
    /// the oldest open read version.
    pub(super) fn apply(&self, rows: &[Row<'_>], version: u64, floor: u64) {
        // Grouped by shard, so each lock is taken once per batch.
        let mut by_shard: Vec<Vec<&Row<'_>>> = vec![Vec::new(); SHARDS];
        for row in rows {
            by_shard[self.hasher.hash_one(row.0) as usize % SHARDS].push(row);
        }
        let mut cleared = Vec::new();
        for (shard, rows) in self.shards.iter().zip(by_shard) {
            if rows.is_empty() {
                continue;
            }
            let mut shard = Self::write_lock(shard);
            for (key, value) in rows {
                let value: Value = value.map(Box::from);
                match shard.get_mut(*key) {
                    Some(chain) => {
                        if value.is_none() {
                            cleared.push(Box::from(*key));
                        }
                        chain.write(version, value, floor);
                    }
                    None if value.is_some() => {
                        let chain = Chain {
                            version,
                            value,
                            older: Vec::new(),
                        };
                        shard.insert(Box::from(*key), chain);
                    }
                    None => {} // clearing an absent key changes nothing
                }
            }
        }
        if !cleared.is_empty() {
            let mut queue = self.cleared.lock().unwrap_or_else(|p| p.into_inner());
            queue.extend(cleared.into_iter().map(|k| (version, k)));
        }
    }

    /// Drops keys cleared at or below `floor` (the oldest open read version) and not written
    /// since: no reader can see their old values any more. The writer calls it per batch.
    pub(super) fn forget_cleared(&self, floor: u64) {
        let mut queue = self.cleared.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((version, _)) = queue.front()
            && *version <= floor
        {
            let (_, key) = queue.pop_front().expect("present");
            let mut shard = Self::write_lock(self.shard(&key));
            if let Some(chain) = shard.get(&key)
                && chain.value.is_none()
                && chain.version <= floor
            {
                shard.remove(&key);
            }
        }
    }

    /// Recovery: sets `key` to `value` with no history (nothing reads during recovery).
    pub(super) fn load(&self, key: &[u8], value: Option<&[u8]>) {
        let mut shard = Self::write_lock(self.shard(key));
        match value {
            Some(v) => {
                shard.insert(
                    Box::from(key),
                    Chain {
                        version: 0,
                        value: Some(Box::from(v)),
                        older: Vec::new(),
                    },
                );
            }
            None => {
                shard.remove(key);
            }
        }
    }

    /// Recovery: the keys held that no family covers (the families changed since they were
    /// written), with their values, taken out of the map.
    pub(super) fn take_uncovered(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = Self::write_lock(shard);
            shard.retain(|k, c| {
                if self.prefixes.iter().any(|p| k.starts_with(p)) {
                    return true;
                }
                if let Some(v) = c.at(u64::MAX) {
                    out.push((k.to_vec(), v.to_vec()));
                }
                false
            });
        }
        out
    }

    /// Keys held (with a value or a clear still visible to some reader).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::read(s).len()).sum()
    }

    /// Every key and its value at version `at`, in chunks of at most [`SNAPSHOT_CHUNK`]
    /// keys per lock: `each` is called with each chunk's rows. The caller keeps `at`
    /// registered as an open read version, so the values at `at` stay in the chains.
    pub(super) fn scan_at(
        &self,
        at: u64,
        mut each: impl FnMut(&[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for shard in self.shards.iter() {
            let mut after: Option<Box<[u8]>> = None;
            loop {
                let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK);
                let mut last = None;
                {
                    let shard = Self::read(shard);
                    let from = match &after {
                        Some(k) => Bound::Excluded(k.as_ref()),
                        None => Bound::Unbounded,
                    };
                    for (k, c) in shard
                        .range::<[u8], _>((from, Bound::Unbounded))
                        .take(SNAPSHOT_CHUNK)
                    {
                        if let Some(v) = c.at(at) {
                            chunk.push((k.to_vec(), v.to_vec()));
                        }
                        last = Some(k);
                    }
                    // The last key looked at, value or not, is where the next chunk starts.
                    after = last.cloned();
                }
                each(&chunk)?;
                if after.is_none() {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Encodes a batch's memory rows as one log record: for each row the key's length (u32 LE),
/// the key, then `u32::MAX` for a clear or the value's length and the value.
pub(super) fn encode_rows<'a>(rows: impl Iterator<Item = Row<'a>>, out: &mut Vec<u8>) {
    for (key, value) in rows {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
}

/// Decodes a log record or a snapshot's body into `each(key, value)`.
pub(super) fn decode_rows(
    mut bytes: &[u8],
    mut each: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<(), StoreError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        if bytes.len() < n {
            return Err(StoreError::Io("memory log record is truncated".into()));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn len(bytes: &mut &[u8]) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            take(bytes, 4)?.try_into().expect("4 bytes"),
        ))
    }
    while !bytes.is_empty() {
        let n = len(&mut bytes)? as usize;
        let key = take(&mut bytes, n)?;
        match len(&mut bytes)? {
            u32::MAX => each(key, None),
            n => each(key, Some(take(&mut bytes, n as usize)?)),
        }
    }
    Ok(())
}

/// Writes every key's value at `version` to `dir/memory.snapshot`, atomically: a temporary
/// file, fsynced, renamed over the old one, then the directory fsynced. Layout: the magic,
/// the version (u64 BE), the rows as [`encode_rows`] writes them, then the BLAKE3 hash of
/// everything before it. Returns the file's size.
pub(super) fn write_snapshot(memory: &Memory, dir: &Path, version: u64) -> std::io::Result<u64> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let file = std::fs::File::create(&tmp)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut hash = blake3::Hasher::new();
    let mut put = |bytes: &[u8], out: &mut std::io::BufWriter<std::fs::File>| {
        hash.update(bytes);
        out.write_all(bytes)
    };
    put(SNAPSHOT_MAGIC, &mut out)?;
    put(&version.to_be_bytes(), &mut out)?;
    let mut buf = Vec::new();
    let mut size = (SNAPSHOT_MAGIC.len() + 8 + 32) as u64;
    memory.scan_at(version, |rows| {
        buf.clear();
        encode_rows(rows.iter().map(|(k, v)| (&k[..], Some(&v[..]))), &mut buf);
        size += buf.len() as u64;
        put(&buf, &mut out)
    })?;
    let digest = hash.finalize();
    out.write_all(digest.as_bytes())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(size)
}

/// Loads `dir/memory.snapshot` into `memory`: the version it holds (`None`: no snapshot).
pub(super) fn load_snapshot(memory: &Memory, dir: &Path) -> Result<Option<u64>, StoreError> {
    let path: PathBuf = dir.join(SNAPSHOT_FILE);
    let mut bytes = Vec::new();
    match std::fs::File::open(&path) {
        Ok(mut f) => f
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::Io(format!("reading {}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(format!("opening {}: {e}", path.display()))),
    };
    let corrupt = || StoreError::Io(format!("{} is damaged", path.display()));
    if bytes.len() < 8 + 8 + 32 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != digest {
        return Err(corrupt());
    }
    let version = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
    decode_rows(&body[16..], |k, v| memory.load(k, v))?;
    Ok(Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> Memory {
        Memory::new(&[b"m/".to_vec()])
    }

    #[test]
    fn a_read_sees_the_value_of_its_version() {
        let m = mem();
        m.apply(&[(b"m/a", Some(b"1"))], 5, 0);
        m.apply(&[(b"m/a", Some(b"2"))], 7, 0);
        m.apply(&[(b"m/a", None)], 9, 0);
        assert_eq!(m.get(b"m/a", 4), None, "before it was written");
        assert_eq!(m.get(b"m/a", 5).as_deref(), Some(&b"1"[..]));
        assert_eq!(m.get(b"m/a", 8).as_deref(), Some(&b"2"[..]));
        assert_eq!(m.get(b"m/a", 9), None, "cleared");
        assert_eq!(m.latest(b"m/a"), None);
    }

    #[test]
    fn values_no_reader_can_see_are_dropped_and_the_rest_kept() {
        let m = mem();
        for v in 1..=10u64 {
            m.apply(&[(b"m/a", Some(&v.to_le_bytes()))], v, 6);
        }
        let shard = Memory::read(m.shard(b"m/a"));
        let chain = shard.get(&b"m/a"[..]).unwrap();
        let versions: Vec<u64> = chain.older.iter().map(|(v, _)| *v).collect();
        // A reader at 6 needs the value written at 6; nothing before it.
        assert_eq!(versions, vec![6, 7, 8, 9]);
        assert_eq!(chain.at(6), Some(&6u64.to_le_bytes()[..]));
    }

    #[test]
    fn a_cleared_key_is_forgotten_once_no_reader_needs_it() {
        let m = mem();
        m.apply(&[(b"m/a", Some(b"1"))], 1, 0);
        m.apply(&[(b"m/a", None)], 2, 1);
        assert_eq!(m.len(), 1, "a reader at 1 still sees the value");
        assert_eq!(m.get(b"m/a", 1).as_deref(), Some(&b"1"[..]));
        m.forget_cleared(2);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn ranges_merge_every_shard_in_order_and_respect_the_limit() {
        let m = mem();
        let keys: Vec<Vec<u8>> = (0..100u8).map(|i| vec![b'm', b'/', i]).collect();
        let rows: Vec<Row<'_>> = keys.iter().map(|k| (&k[..], Some(&k[2..]))).collect();
        m.apply(&rows, 3, 0);
        let all = m.range(b"m/", b"m0", 3, false, usize::MAX);
        assert_eq!(all.len(), 100);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let last5 = m.range(b"m/", b"m0", 3, true, 5);
        let want: Vec<Vec<u8>> = (95..100u8).rev().map(|i| vec![b'm', b'/', i]).collect();
        assert_eq!(last5.into_iter().map(|r| r.0).collect::<Vec<_>>(), want);
        assert!(m.range(b"m/", b"m0", 2, false, 10).is_empty(), "before");
    }

    #[test]
    fn families_cover_their_prefixes_only() {
        let m = mem();
        assert!(m.covers(b"m/x"));
        assert!(!m.covers(b"m"));
        assert!(!m.covers(b"n/x"));
        assert!(m.overlaps(b"a", b"z"));
        assert!(!m.overlaps(b"m0", b"z"), "after the family");
        assert!(!m.overlaps(b"a", b"m/"), "ends where it begins");
        assert!(m.contains_range(b"m/a", b"m/b"));
        assert!(!m.contains_range(b"m/a", b"n"));
    }

    #[test]
    fn a_snapshot_round_trips_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = mem();
        m.apply(&[(b"m/a", Some(b"1")), (b"m/b", Some(b""))], 4, 0);
        m.apply(&[(b"m/a", Some(b"2")), (b"m/c", Some(b"3"))], 6, 4);
        write_snapshot(&m, dir.path(), 4).unwrap();
        let back = mem();
        assert_eq!(load_snapshot(&back, dir.path()).unwrap(), Some(4));
        assert_eq!(back.latest(b"m/a").as_deref(), Some(&b"1"[..]));
        assert_eq!(back.latest(b"m/b").as_deref(), Some(&b""[..]));
        assert_eq!(
            back.latest(b"m/c"),
            None,
            "written after the snapshot's version"
        );
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(load_snapshot(&mem(), dir.path()).is_err());
        assert_eq!(
            load_snapshot(&mem(), tempfile::tempdir().unwrap().path()).unwrap(),
            None
        );
    }
}
