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
//! | `("l",) ‖ position` | the ledger's commit log: txid (versionstamped key) |
//! | `("x", request_id)` | an operator request done: its txid or outcome |
//! | `("ob", txid, index)` | outbox: a committed output for another ledger, until delivered |
//! | `("ms",)` | audit-log sequencer: leaves sequenced, last log position, right-edge hashes |
//! | `("mn", level, index)` | audit log: hash of the perfect subtree `(level, index)` |
//! | `("mx", txid)` | audit log: the transfer's leaf index, u64 BE |
//! | `("ck",)` | the latest signed checkpoint |
//! | `("ct", "in" \| "out")` | value delivered in / settled out, i64 LE, atomic add |
//!
//! Double spends conflict on `("u", outpoint)`; payments into one wallet touch only its
//! atomic counters and fresh keys, so a busy merchant's incoming payments never conflict
//! (unless its tier caps the balance, which then must be read).

use cbdc_core::{LedgerId, OutPoint, PublicKey, Txid};
use cbdc_store::keys::{Subspace, ledger_subspace, strinc};

/// The length of a commit versionstamp.
pub const STAMP_LEN: usize = 10;
/// The length of a log position: the commit's versionstamp, then the transfer's order within
/// that commit (u16, big-endian), since one store transaction may commit several transfers.
/// History and log keys end with it.
pub const POSITION_LEN: usize = STAMP_LEN + 2;

#[derive(Clone, Debug)]
pub struct Layout {
    sub: Subspace,
}

impl Layout {
    pub fn new(ledger: LedgerId) -> Layout {
        Layout {
            sub: ledger_subspace(ledger.0),
        }
    }

    fn k(key: &PublicKey) -> &[u8] {
        key.as_bytes().as_slice()
    }

    pub fn wallet(&self, key: &PublicKey) -> Vec<u8> {
        self.sub.pack(&("w", Self::k(key)))
    }

    pub fn wallets(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("w",));
        let end = strinc(&p).expect("prefix has a non-0xff byte");
        (p, end)
    }

    pub fn balance(&self, key: &PublicKey) -> Vec<u8> {
        self.sub.pack(&("b", Self::k(key)))
    }

    pub fn utxo_count(&self, key: &PublicKey) -> Vec<u8> {
        self.sub.pack(&("c", Self::k(key)))
    }

    pub fn daily(&self, key: &PublicKey, day: i64) -> Vec<u8> {
        self.sub.pack(&("d", Self::k(key), day))
    }

    pub fn output(&self, o: &OutPoint) -> Vec<u8> {
        self.sub
            .pack(&("u", o.txid.0.as_slice(), i64::from(o.index)))
    }

    pub fn owned(&self, key: &PublicKey, o: &OutPoint) -> Vec<u8> {
        self.sub
            .pack(&("o", Self::k(key), o.txid.0.as_slice(), i64::from(o.index)))
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
        self.sub.pack(&("t", txid.0.as_slice()))
    }

    /// The prefix of a wallet's history; entries append a versionstamp.
    pub fn history_prefix(&self, key: &PublicKey) -> Vec<u8> {
        self.sub.pack(&("h", Self::k(key)))
    }

    pub fn log_prefix(&self) -> Vec<u8> {
        self.sub.pack(&("l",))
    }

    pub fn request(&self, request_id: &str) -> Vec<u8> {
        self.sub.pack(&("x", request_id))
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

    pub fn node(&self, level: u32, index: u64) -> Vec<u8> {
        self.sub.pack(&("mn", i64::from(level), index as i64))
    }

    pub fn leaf_index(&self, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("mx", txid.0.as_slice()))
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
