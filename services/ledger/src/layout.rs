//! Where a ledger keeps what, as tuple keys under its subspace `("ledger", id)`:
//!
//! | key | value |
//! |---|---|
//! | `("w", key)` | wallet record: status, tier, opened at, phone hash |
//! | `("b", key)` | balance in fen, i64 LE, atomic add |
//! | `("c", key)` | number of unspent outputs, i64 LE, atomic add |
//! | `("d", key, day)` | outgoing total of that local day, i64 LE, atomic add |
//! | `("u", txid, index)` | output state: `0 ‖ output` unspent or `1 ‖ spender txid` spent |
//! | `("o", key, txid, index)` | owner index of unspent outputs: value, u64 BE |
//! | `("t", txid)` | transfer record (log position first) |
//! | `("h", key) ‖ position` | a wallet's history in commit order (versionstamped key) |
//! | `("l",) ‖ position` | the ledger's commit log: what the transfers one store transaction committed from `position` on did to the unspent outputs (one [`cbdc_core::unspent::Delta`]), then their txids in order, 32 bytes each, at most [`LOG_ENTRY_TXIDS_MAX`] per entry (versionstamped key) |
//! | `("x", request_id)` | an operator request done: its txid or outcome |
//! | `("ob", txid, index)` | outbox: a committed output for another ledger, until delivered |
//! | `("rf", txid)` | the key a transfer with outputs for other ledgers credits if reversed (its first input's owner) |
//! | `("rv", txid, by)` | a reversed move of a transfer, by the ledger that refused it (0: the central bank refused to settle it): the reversal's txid, then the reason |
//! | `("dl", txid)` | the central bank said every payee's ledger credited this transfer's moves (empty) |
//! | `("ms",)` | audit-log sequencer: leaves sequenced, last log position, right-edge hashes |
//! | `("mn", first)` | audit log: a chunk of at most [`NODE_CHUNK_LEAVES`] consecutive leaves from `first` on: `first` (u64 BE), then for each leaf the hashes of the perfect subtrees it completes, 32 bytes each by level from 0 (the leaf's own hash); subtree `(level, index)` is stored with leaf `((index + 1) << level) - 1` |
//! | `("mx", stamp)` | audit log: the leaf index of the first transfer the store transaction with that versionstamp committed, u64 BE (the others follow in order) |
//! | `("ck",)` | the latest signed checkpoint |
//! | `("cp", size)` | every signed checkpoint, by log size (what a replaying auditor checks) |
//! | `("ct", "in" \| "out" \| "ob")` | value delivered in / settled out / in the outbox, i64 LE, atomic add |
//!
//! Double spends conflict on `("u", outpoint)`; payments into one wallet touch only its
//! atomic counters and fresh keys, so a busy merchant's incoming payments never conflict
//! (unless its tier caps the balance, which then must be read).

use cbdc_core::{LedgerId, OutPoint, PublicKey, Txid};
use cbdc_store::keys::{Subspace, TuplePack, ledger_subspace, pack_into, strinc};

/// The length of a commit versionstamp.
pub const STAMP_LEN: usize = 10;
/// The length of a log position: the commit's versionstamp, then the transfer's order within
/// that commit (u16, big-endian), since one store transaction may commit several transfers.
/// History and log keys end with it.
pub const POSITION_LEN: usize = STAMP_LEN + 2;
/// Txids in one commit-log entry, at most: a commit of more writes several entries (keeping
/// each value under the store's value limit).
pub const LOG_ENTRY_TXIDS_MAX: usize = 1024;
/// Leaves in one stored chunk of the audit tree, at most (a chunk's value then stays under the
/// store's value limit: leaves complete fewer than two subtrees each on average).
pub const NODE_CHUNK_LEAVES: u64 = 1024;

const _: () = assert!(
    cbdc_core::unspent::DELTA_BYTES + LOG_ENTRY_TXIDS_MAX * 32
        <= cbdc_store::limits::VALUE_BYTES_MAX
);
const _: () =
    assert!(8 + (2 * NODE_CHUNK_LEAVES as usize + 64) * 32 <= cbdc_store::limits::VALUE_BYTES_MAX);

#[derive(Clone, Debug)]
pub struct Layout {
    sub: Subspace,
    /// The packed `(subspace, tag)` prefixes of the hot-path key families, so that building a
    /// key packs only its variable part into a buffer allocated once at its final size.
    wallet: Vec<u8>,
    balance: Vec<u8>,
    utxo_count: Vec<u8>,
    daily: Vec<u8>,
    output: Vec<u8>,
    owned: Vec<u8>,
    transfer: Vec<u8>,
    history: Vec<u8>,
    log: Vec<u8>,
    node: Vec<u8>,
    leaf_index: Vec<u8>,
}

/// Room for the variable part of the longest hot key, the owner index's: two packed 32-byte
/// strings (with a few escaped zero bytes) and an integer (a smaller guess made every owner
/// key grow once).
const VARIABLE_PART: usize = 88;

/// `prefix` followed by the packed `rest`: equal to packing the whole tuple, since a tuple
/// packs as the concatenation of its packed elements.
fn packed(prefix: &[u8], rest: &impl TuplePack) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + VARIABLE_PART);
    k.extend_from_slice(prefix);
    pack_into(rest, &mut k);
    k
}

impl Layout {
    pub fn new(ledger: LedgerId) -> Layout {
        let sub = ledger_subspace(ledger.0);
        let tag = |t: &str| sub.pack(&(t,));
        Layout {
            wallet: tag("w"),
            balance: tag("b"),
            utxo_count: tag("c"),
            daily: tag("d"),
            output: tag("u"),
            owned: tag("o"),
            transfer: tag("t"),
            history: tag("h"),
            log: tag("l"),
            node: tag("mn"),
            leaf_index: tag("mx"),
            sub,
        }
    }

    /// The key families kept in memory by the embedded store, with its journal as their
    /// durable copy: wallet records, balances and output counts, read or added to by every
    /// transfer, one key each per wallet (so their size is bounded by the wallets opened).
    pub fn memory_families(&self) -> Vec<Vec<u8>> {
        vec![
            self.wallet.clone(),
            self.balance.clone(),
            self.utxo_count.clone(),
        ]
    }

    fn k(key: &PublicKey) -> &[u8] {
        key.as_bytes().as_slice()
    }

    pub fn wallet(&self, key: &PublicKey) -> Vec<u8> {
        packed(&self.wallet, &(Self::k(key),))
    }

    pub fn wallets(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("w",));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    pub fn balance(&self, key: &PublicKey) -> Vec<u8> {
        packed(&self.balance, &(Self::k(key),))
    }

    pub fn utxo_count(&self, key: &PublicKey) -> Vec<u8> {
        packed(&self.utxo_count, &(Self::k(key),))
    }

    pub fn daily(&self, key: &PublicKey, day: i64) -> Vec<u8> {
        packed(&self.daily, &(Self::k(key), day))
    }

    pub fn output(&self, o: &OutPoint) -> Vec<u8> {
        packed(&self.output, &(o.txid.0.as_slice(), i64::from(o.index)))
    }

    pub fn owned(&self, key: &PublicKey, o: &OutPoint) -> Vec<u8> {
        packed(
            &self.owned,
            &(Self::k(key), o.txid.0.as_slice(), i64::from(o.index)),
        )
    }

    /// `[begin, end)` of a wallet's owner index.
    pub fn owned_range(&self, key: &PublicKey) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("o", Self::k(key)));
        // A packed byte string ends with 0x00; every entry extends it.
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    /// The outpoint of an owner-index key.
    pub fn owned_outpoint(&self, key: &[u8]) -> Option<OutPoint> {
        let (_, _, txid, index): (String, Vec<u8>, Vec<u8>, i64) = self.sub.unpack(key).ok()?;
        Some(OutPoint {
            txid: Txid(txid.try_into().ok()?),
            index: u16::try_from(index).ok()?,
        })
    }

    /// The outpoint of an output-state key.
    pub fn output_outpoint(&self, key: &[u8]) -> Option<OutPoint> {
        let (_, txid, index): (String, Vec<u8>, i64) = self.sub.unpack(key).ok()?;
        Some(OutPoint {
            txid: Txid(txid.try_into().ok()?),
            index: u16::try_from(index).ok()?,
        })
    }

    /// `[begin, end)` of all output states.
    pub fn outputs(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("u",));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    /// `[begin, end)` of all balances.
    pub fn balances(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("b",));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    pub fn transfer(&self, txid: &Txid) -> Vec<u8> {
        packed(&self.transfer, &(txid.0.as_slice(),))
    }

    /// The prefix of a wallet's history; entries append a versionstamp.
    pub fn history_prefix(&self, key: &PublicKey) -> Vec<u8> {
        packed(&self.history, &(Self::k(key),))
    }

    pub fn log_prefix(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.log.len() + crate::layout::POSITION_LEN);
        k.extend_from_slice(&self.log);
        k
    }

    /// An order's request id, per kind of order.
    pub fn request(&self, kind: &str, request_id: &str) -> Vec<u8> {
        self.sub.pack(&("x", kind, request_id))
    }

    /// The wallet opened with a phone number (by its keyed hash).
    pub fn phone(&self, hash: &[u8; 32]) -> Vec<u8> {
        self.sub.pack(&("ph", hash.as_slice()))
    }

    /// A wallet's tier change at `at_ms` by `request_id`.
    pub fn tier_change(&self, key: &PublicKey, at_ms: u64, request_id: &str) -> Vec<u8> {
        self.sub
            .pack(&("tc", Self::k(key), at_ms as i64, request_id))
    }

    /// The time and request id of a tier-change key.
    pub fn tier_change_parts(&self, key: &[u8]) -> Option<(u64, String)> {
        let (_, _, at, request_id): (String, Vec<u8>, i64, String) = self.sub.unpack(key).ok()?;
        Some((u64::try_from(at).ok()?, request_id))
    }

    /// Every tier change of a wallet, oldest first.
    pub fn tier_changes(&self, key: &PublicKey) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("tc", Self::k(key)));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    pub fn outbox(&self, o: &OutPoint) -> Vec<u8> {
        self.sub
            .pack(&("ob", o.txid.0.as_slice(), i64::from(o.index)))
    }

    pub fn outbox_of(&self, txid: &Txid) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("ob", txid.0.as_slice()));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    pub fn sequencer(&self) -> Vec<u8> {
        self.sub.pack(&("ms",))
    }

    /// The key of the audit-tree chunk starting at leaf `first`.
    pub fn node_chunk(&self, first: u64) -> Vec<u8> {
        packed(&self.node, &(first as i64,))
    }

    /// The range whose last key is the chunk holding leaf `leaf` (read it in reverse, one row).
    pub fn node_chunks_upto(&self, leaf: u64) -> (Vec<u8>, Vec<u8>) {
        let mut end = self.node_chunk(leaf);
        end.push(0);
        (self.node.clone(), end)
    }

    /// The key holding the first leaf index of the transfers committed under `stamp`.
    pub fn first_leaf(&self, stamp: &[u8; STAMP_LEN]) -> Vec<u8> {
        packed(&self.leaf_index, &(stamp.as_slice(),))
    }

    pub fn checkpoint(&self) -> Vec<u8> {
        self.sub.pack(&("ck",))
    }

    /// Running total of value delivered in (issuance and moves from other ledgers).
    pub fn inbound_total(&self) -> Vec<u8> {
        self.sub.pack(&("ct", "in"))
    }

    /// Running total of value that left and the central bank acknowledged.
    pub fn settled_out_total(&self) -> Vec<u8> {
        self.sub.pack(&("ct", "out"))
    }

    /// The key a transfer moving value off this ledger credits if the move is reversed (its
    /// first input's owner).
    pub fn refund(&self, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("rf", txid.0.as_slice()))
    }

    /// A reversed move of a transfer, by the ledger that refused it (0: the central bank
    /// refused the settlement): the reversal's txid, then the reason.
    pub fn reversal(&self, txid: &Txid, by: LedgerId) -> Vec<u8> {
        self.sub.pack(&("rv", txid.0.as_slice(), i64::from(by.0)))
    }

    /// `[begin, end)` of a transfer's reversals.
    pub fn reversals(&self, txid: &Txid) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("rv", txid.0.as_slice()));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    /// The mark of a transfer whose moves every payee's ledger credited.
    pub fn delivered(&self, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("dl", txid.0.as_slice()))
    }

    /// Value in the outbox (committed to leave, not yet acknowledged).
    pub fn outbox_total(&self) -> Vec<u8> {
        self.sub.pack(&("ct", "ob"))
    }

    /// Every signed checkpoint, by log size.
    pub fn checkpoint_at(&self, size: u64) -> Vec<u8> {
        self.sub.pack(&("cp", size))
    }

    /// `[begin, end)` of the checkpoints of log sizes `from` and above.
    pub fn checkpoints_from(&self, from: u64) -> (Vec<u8>, Vec<u8>) {
        let end = strinc(&self.sub.pack(&("cp",))).expect("prefix has a non-0xff byte");
        (self.checkpoint_at(from), end)
    }

    /// `[begin, end)` of the whole outbox.
    pub fn outbox_all(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("ob",));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    /// The outpoint of an outbox key.
    pub fn outbox_outpoint(&self, key: &[u8]) -> Option<OutPoint> {
        let (_, txid, index): (String, Vec<u8>, i64) = self.sub.unpack(key).ok()?;
        Some(OutPoint {
            txid: Txid(txid.try_into().ok()?),
            index: u16::try_from(index).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix-and-rest keys are byte for byte the keys packed from whole tuples.
    #[test]
    fn keys_equal_whole_tuple_packing() {
        let ledger = LedgerId(7);
        let l = Layout::new(ledger);
        let sub = ledger_subspace(ledger.0);
        // Bytes that need escaping (0x00) and ones that do not.
        for fill in [0u8, 1, 0xff] {
            let key = PublicKey::from_bytes([fill; 32]);
            let txid = Txid([fill; 32]);
            let k = key.as_bytes().as_slice();
            for index in [0u16, 1, 255, 256, u16::MAX] {
                let o = OutPoint { txid, index };
                let t = txid.0.as_slice();
                let i = i64::from(index);
                assert_eq!(l.output(&o), sub.pack(&("u", t, i)));
                assert_eq!(l.owned(&key, &o), sub.pack(&("o", k, t, i)));
                assert_eq!(
                    l.node_chunk(u64::from(index) << 40),
                    sub.pack(&("mn", i << 40))
                );
            }
            let t = txid.0.as_slice();
            assert_eq!(l.wallet(&key), sub.pack(&("w", k)));
            assert_eq!(l.balance(&key), sub.pack(&("b", k)));
            assert_eq!(l.utxo_count(&key), sub.pack(&("c", k)));
            assert_eq!(l.daily(&key, -3), sub.pack(&("d", k, -3i64)));
            assert_eq!(l.daily(&key, 20_000), sub.pack(&("d", k, 20_000i64)));
            assert_eq!(l.transfer(&txid), sub.pack(&("t", t)));
            assert_eq!(l.history_prefix(&key), sub.pack(&("h", k)));
            let stamp = [fill; STAMP_LEN];
            assert_eq!(l.first_leaf(&stamp), sub.pack(&("mx", stamp.as_slice())));
        }
        assert_eq!(l.log_prefix(), sub.pack(&("l",)));
    }
}
