//! The central bank's keys, as tuples under `("issuance",)`:
//!
//! | key | value |
//! |---|---|
//! | `("op", ledger)` | the registered operator ([`Operator`](crate::records::Operator)) |
//! | `("mint", request_id)` | the issue made for that request ([`SignedParts`](crate::records::SignedParts)) |
//! | `("st", txid)` | the settlement of a bank's outbound transfer ([`Settled`](crate::records::Settled)) |
//! | `("bk", ledger, "in" \| "out")` | value sent to / settled out of a ledger, i64 LE, atomic add |
//! | `("tot", "issued" \| "redeemed")` | running totals, i64 LE, atomic add |
//! | `("dq", ledger, txid)` | a countersigned settlement waiting for delivery, with its transfer |
//! | `("cp", ledger)` | the ledger's latest accepted checkpoint ([`AcceptedCheckpoint`](crate::records::AcceptedCheckpoint)) |

use cbdc_core::{LedgerId, Txid};
use cbdc_store::keys::{Subspace, strinc};

#[derive(Clone)]
pub(super) struct Keys {
    pub(super) sub: Subspace,
}

impl Keys {
    pub(super) fn op(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("op", i64::from(l.0)))
    }
    pub(super) fn ops(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("op",));
        let e = strinc(&p).expect("prefix");
        (p, e)
    }
    /// An administrator's order's request id, per kind of order.
    pub(super) fn request(&self, kind: &str, request_id: &str) -> Vec<u8> {
        self.sub.pack(&("x", kind, request_id))
    }
    pub(super) fn settled(&self, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("st", txid.0.as_slice()))
    }
    pub(super) fn book_in(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("bk", i64::from(l.0), "in"))
    }
    pub(super) fn book_out(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("bk", i64::from(l.0), "out"))
    }
    /// Value settled toward a ledger that it refused for good and that went back.
    pub(super) fn book_reversed(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("bk", i64::from(l.0), "rev"))
    }
    /// A reversal done: its queue id, by the refused transfer's txid and the refusing ledger.
    pub(super) fn reversed(&self, txid: &Txid, by: LedgerId) -> Vec<u8> {
        self.sub.pack(&("rv", txid.0.as_slice(), i64::from(by.0)))
    }
    pub(super) fn issued(&self) -> Vec<u8> {
        self.sub.pack(&("tot", "issued"))
    }
    pub(super) fn redeemed(&self) -> Vec<u8> {
        self.sub.pack(&("tot", "redeemed"))
    }
    pub(super) fn queued(&self, l: LedgerId, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("dq", i64::from(l.0), txid.0.as_slice()))
    }
    pub(super) fn queue(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("dq",));
        let e = strinc(&p).expect("prefix");
        (p, e)
    }
    pub(super) fn queued_key(&self, k: &[u8]) -> Option<(LedgerId, Txid)> {
        let (_, l, txid): (String, i64, Vec<u8>) = self.sub.unpack(k).ok()?;
        Some((
            LedgerId(u32::try_from(l).ok()?),
            Txid(txid.try_into().ok()?),
        ))
    }
    pub(super) fn checkpoint(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("cp", i64::from(l.0)))
    }

    /// The first signed checkpoint of a ledger whose figures did not add up: evidence kept.
    pub(super) fn faulty_checkpoint(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("cf", i64::from(l.0)))
    }
}
