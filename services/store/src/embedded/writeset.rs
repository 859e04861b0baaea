//! A committing transaction's writes, packed into one buffer.

use std::collections::BTreeMap;

use crate::transaction::Versionstamp;

#[derive(Clone, Debug)]
pub(super) enum LocalOp {
    Set(Vec<u8>),
    Clear,
    /// An atomic add whose base value was not read.
    Add(i64),
}

pub(super) struct VersionstampedOp {
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    pub(super) offset: u32,
    pub(super) in_key: bool,
}

/// One write of a [`WriteSet`]: byte ranges into its buffer.
#[derive(Clone, Copy)]
pub(super) struct PackedWrite {
    pub(super) key: (u32, u32),
    pub(super) op: PackedOp,
}

#[derive(Clone, Copy)]
pub(super) enum PackedOp {
    Set(u32, u32),
    Clear,
    Add(i64),
}

/// A write as the resolver and the writer see it, borrowing from a [`WriteSet`].
#[derive(Clone, Copy)]
pub(super) enum Write<'a> {
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
pub(super) struct WriteSet {
    pub(super) bytes: Vec<u8>,
    pub(super) writes: Vec<PackedWrite>,
    /// Where in `bytes` each versionstamp goes (10 bytes each), filled in by the resolver.
    pub(super) stamps: Vec<u32>,
}

impl WriteSet {
    /// Packs `writes` (sorted by key), then the versionstamped sets.
    pub(super) fn pack(
        writes: &BTreeMap<Vec<u8>, LocalOp>,
        versionstamped: &[VersionstampedOp],
    ) -> WriteSet {
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

    pub(super) fn append(&mut self, bytes: &[u8]) -> (u32, u32) {
        let begin = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        (begin, self.bytes.len() as u32)
    }

    pub(super) fn range(&self, (b, e): (u32, u32)) -> &[u8] {
        &self.bytes[b as usize..e as usize]
    }

    /// Writes `stamp` into every versionstamp placeholder.
    pub(super) fn fill_stamps(&mut self, stamp: &Versionstamp) {
        for &at in &self.stamps {
            let at = at as usize;
            self.bytes[at..at + 10].copy_from_slice(&stamp.0);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], Write<'_>)> {
        self.writes.iter().map(|w| {
            let op = match w.op {
                PackedOp::Set(b, e) => Write::Set(self.range((b, e))),
                PackedOp::Clear => Write::Clear,
                PackedOp::Add(delta) => Write::Add(delta),
            };
            (self.range(w.key), op)
        })
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.writes.iter().map(|w| self.range(w.key))
    }

    pub(super) fn len(&self) -> usize {
        self.writes.len()
    }
}

/// FoundationDB's ADD on a 64-bit little-endian operand: the base is zero-extended or
/// truncated to 8 bytes; the sum wraps.
pub(super) fn apply_add(base: Option<&[u8]>, delta: i64) -> Vec<u8> {
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
