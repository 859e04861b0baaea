//! The exact bytes each party signs between services, with their domain tags. A signature
//! made for one purpose never verifies for another: every message starts with its own tag.

use crate::{LedgerId, Txid};

/// Domain tag of the central bank's countersignature on a settlement.
pub const SETTLE_TAG: &[u8] = b"cbdc/v1/settle";
/// Domain tag of requests a bank's operator signs to the central bank.
pub const BANK_TAG: &[u8] = b"cbdc/v1/bank";
/// Domain tag of requests the central bank's administrator signs.
pub const ADMIN_TAG: &[u8] = b"cbdc/v1/admin";
/// Domain tag of the reserve outpoint an issue spends (see [`reserve_txid`]).
pub const RESERVE_TAG: &[u8] = b"cbdc/v1/reserve";

/// The message the central bank signs to countersign a move of `txid` to `to_ledger`.
pub fn settle_message(txid: &Txid, to_ledger: LedgerId) -> Vec<u8> {
    let mut m = SETTLE_TAG.to_vec();
    m.extend_from_slice(&txid.0);
    m.extend_from_slice(&to_ledger.0.to_be_bytes());
    m
}

/// The message a bank's operator signs to hand `txid` to the central bank for settlement.
pub fn bank_settle_message(from: LedgerId, txid: &Txid) -> Vec<u8> {
    let mut m = BANK_TAG.to_vec();
    m.extend_from_slice(b"settle\0");
    m.extend_from_slice(&from.0.to_be_bytes());
    m.extend_from_slice(&txid.0);
    m
}

/// The message a bank's operator signs to hand a batch of transfers to the central bank.
pub fn bank_settle_batch_message(from: LedgerId, txids: &[Txid]) -> Vec<u8> {
    let mut m = BANK_TAG.to_vec();
    m.extend_from_slice(b"settle-batch\0");
    m.extend_from_slice(&from.0.to_be_bytes());
    for t in txids {
        m.extend_from_slice(&t.0);
    }
    m
}

/// The message the administrator signs for `action`: the tag, the action, then each part,
/// each followed by 0.
pub fn admin_message(action: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = ADMIN_TAG.to_vec();
    m.extend_from_slice(action.as_bytes());
    m.push(0);
    for p in parts {
        m.extend_from_slice(p);
        m.push(0);
    }
    m
}

/// The txid of the reserve entry an issue with `request_id` spends: issuance is a transfer
/// from the central bank's reserve, whose single input is `(reserve_txid, 0)`.
pub fn reserve_txid(request_id: &str) -> Txid {
    use sha2::Digest;
    Txid(
        sha2::Sha256::new()
            .chain_update(RESERVE_TAG)
            .chain_update(request_id.as_bytes())
            .finalize()
            .into(),
    )
}

/// The ledger id that stands for the central bank: outputs naming it are redeemed.
pub const CENTRAL_BANK: LedgerId = LedgerId(0);
