//! The read cache: values of recently read keys, kept current by the writer, so that a hot
//! key (a wallet's record, its balance) is read from memory instead of being looked up in
//! the memtables and every segment's bloom filter and blocks.
//!
//! An entry `(version, value)` says: `value` is the key's value at every version from
//! `version` up to the newest published one. A read at read version `R` may use it only if
//! `version ≤ R`; otherwise it reads its snapshot as before. Conflict tracking is untouched:
//! the transaction records the read exactly as it would a snapshot read.
//!
//! Two things keep entries true:
//!
//! - **The writer** updates every cached key a batch writes to the batch's value and version
//!   before it publishes that version, so no reader can see the new version with the old
//!   value (and readers of older versions see an entry newer than they are, and miss).
//! - **A read offers** what its snapshot returned, as an entry at its read version `R`. The
//!   cache takes it only if nothing written after `R` can hide behind it: per hash slot it
//!   remembers the newest version that wrote any key hashing there, and refuses the offer
//!   if that is newer than `R`. Slots and entries change under the shard's lock, so an offer
//!   either comes before the writer's update (which then overwrites it) or sees the slot the
//!   update raised. A range clear reaches the cache as a clear of every key it removed (the
//!   writer lists them to write the batch).
//!
//! Bounded: a shard that is full is emptied (an entry may always be dropped: the next read
//! misses and offers again). Keys are hashed with a per-process random key, so the slots and
//! shards an adversary's keys land in cannot be chosen.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards, each under its own lock.
const SHARDS: usize = 64;
/// Hash slots per shard that remember the newest version writing a key of theirs.
const SLOTS_PER_SHARD: usize = 4096;

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// The key's value (`None`: absent) at the reader's version.
    Hit(Option<Vec<u8>>),
    /// Not cached, or cached only as of a newer version.
    Miss,
}

struct Entry {
    version: u64,
    value: Option<Vec<u8>>,
}

struct Shard {
    entries: HashMap<Vec<u8>, Entry, RandomState>,
    /// Per slot: the newest version that wrote a key hashing to it.
    written: Box<[u64]>,
}

pub(crate) struct ReadCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    entries_per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadCache {
    /// A cache of at most about `entries` entries; `None` for zero (no cache).
    pub(crate) fn new(entries: usize) -> Option<ReadCache> {
        if entries == 0 {
            return None;
        }
        let hasher = RandomState::new();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::with_hasher(hasher.clone()),
                    written: vec![0; SLOTS_PER_SHARD].into_boxed_slice(),
                })
            })
            .collect();
        Some(ReadCache {
            shards,
            hasher,
            entries_per_shard: entries.div_ceil(SHARDS).max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The shard and slot of `key`.
    fn place(&self, key: &[u8]) -> (&Mutex<Shard>, usize) {
        let h = self.hasher.hash_one(key);
        let shard = (h >> 58) as usize % SHARDS;
        let slot = (h as usize) % SLOTS_PER_SHARD;
        (&self.shards[shard], slot)
    }

    fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` at `read_version`, if the cache knows it.
    pub(crate) fn get(&self, key: &[u8], read_version: u64) -> Cached {
        let (shard, _) = self.place(key);
        let found = match Self::lock(shard).entries.get(key) {
            Some(e) if e.version <= read_version => Cached::Hit(e.value.clone()),
            _ => Cached::Miss,
        };
        match found {
            Cached::Hit(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            Cached::Miss => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    /// Offers what a snapshot at `read_version` (or newer) read for `key`; taken only if no
    /// batch after `read_version` wrote a key of its slot.
    pub(crate) fn offer(&self, key: &[u8], read_version: u64, value: &Option<Vec<u8>>) {
        let (shard, slot) = self.place(key);
        let mut s = Self::lock(shard);
        if s.written[slot] > read_version {
            return;
        }
        if s.entries.contains_key(key) {
            return; // the writer's value, or another reader's: as true as this one
        }
        if s.entries.len() >= self.entries_per_shard {
            s.entries.clear();
        }
        s.entries.insert(
            key.to_vec(),
            Entry {
                version: read_version,
                value: value.clone(),
            },
        );
    }

    /// The writer: the batch publishing `version` wrote `key` (value `None`: cleared).
    /// Called before the version is published.
    pub(crate) fn wrote(&self, key: &[u8], value: Option<&[u8]>, version: u64) {
        let (shard, slot) = self.place(key);
        let mut s = Self::lock(shard);
        s.written[slot] = s.written[slot].max(version);
        if let Some(e) = s.entries.get_mut(key) {
            e.version = version;
            match (&mut e.value, value) {
                (Some(old), Some(new)) => {
                    old.clear();
                    old.extend_from_slice(new);
                }
                (old, new) => *old = new.map(<[u8]>::to_vec),
            }
        }
    }

    /// Lookups answered from the cache, and lookups that read the snapshot.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &[u8]) -> Option<Vec<u8>> {
        Some(b.to_vec())
    }

    #[test]
    fn an_offer_is_used_from_its_version_on() {
        let c = ReadCache::new(1000).unwrap();
        c.offer(b"k", 5, &v(b"a"));
        assert_eq!(c.get(b"k", 5), Cached::Hit(v(b"a")));
        assert_eq!(c.get(b"k", 9), Cached::Hit(v(b"a")));
        assert_eq!(c.get(b"k", 4), Cached::Miss, "older than what was read");
        // Absence is cached too.
        c.offer(b"gone", 5, &None);
        assert_eq!(c.get(b"gone", 6), Cached::Hit(None));
        assert_eq!(c.counts(), (3, 1));
    }

    #[test]
    fn the_writer_keeps_entries_current() {
        let c = ReadCache::new(1000).unwrap();
        c.offer(b"k", 5, &v(b"a"));
        c.wrote(b"k", Some(b"b"), 7);
        assert_eq!(c.get(b"k", 6), Cached::Miss, "a reader before the write");
        assert_eq!(c.get(b"k", 7), Cached::Hit(v(b"b")));
        c.wrote(b"k", None, 8);
        assert_eq!(c.get(b"k", 8), Cached::Hit(None));
        // A key not cached is not added by a write.
        c.wrote(b"new", Some(b"x"), 9);
        assert_eq!(c.get(b"new", 9), Cached::Miss);
    }

    /// The race the slots close: a reader reads its snapshot at version 5, the writer then
    /// writes the key at 7 (not cached: nothing to update), and only then does the reader
    /// offer its (now stale) value. Taking it would answer a reader at 7 or later with it.
    #[test]
    fn a_stale_offer_after_a_write_is_refused() {
        let c = ReadCache::new(1000).unwrap();
        c.wrote(b"k", Some(b"new"), 7);
        c.offer(b"k", 5, &v(b"old"));
        assert_eq!(c.get(b"k", 7), Cached::Miss);
        assert_eq!(c.get(b"k", 100), Cached::Miss);
        // A reader that read at 7 or later may offer.
        c.offer(b"k", 7, &v(b"new"));
        assert_eq!(c.get(b"k", 7), Cached::Hit(v(b"new")));
    }

    #[test]
    fn a_full_shard_starts_over() {
        // One entry per shard at most.
        let c = ReadCache::new(SHARDS).unwrap();
        for i in 0..10_000u32 {
            c.offer(&i.to_be_bytes(), 1, &v(b"x"));
        }
        let held: usize = c
            .shards
            .iter()
            .map(|s| ReadCache::lock(s).entries.len())
            .sum();
        assert!(held <= SHARDS, "{held} entries");
        assert!(ReadCache::new(0).is_none());
    }
}
