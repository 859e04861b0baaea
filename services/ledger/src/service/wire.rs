//! Conversions between the ledger's answers and their wire messages.

use cbdc_core::{Reject, Transfer, Txid};
use cbdc_proto::convert::{self, WireError};
use cbdc_proto::v1;
use tonic::Status;

use crate::layout::POSITION_LEN;
use crate::ledger::{Committed, HistoryItem, ServiceError, WalletView};

pub(super) fn wallet_msg(w: &WalletView) -> v1::Wallet {
    v1::Wallet {
        address: w.address.to_string(),
        tier: convert::to_kyc_tier(w.tier) as i32,
        status: convert::to_wallet_status(w.status) as i32,
        balance: w.balance.to_string(),
        spent_today: w.spent_today.to_string(),
        tier_changes: w
            .tier_changes
            .iter()
            .map(|c| v1::TierChange {
                from: convert::to_kyc_tier(c.from) as i32,
                to: convert::to_kyc_tier(c.to) as i32,
                reason: c.reason.clone(),
                request_id: c.request_id.clone(),
                at_unix_ms: c.at_ms,
            })
            .collect(),
    }
}

pub(super) fn committed_msg(c: &Committed) -> v1::TransferResult {
    v1::TransferResult {
        txid: c.txid.0.to_vec(),
        outcome: Some(v1::transfer_result::Outcome::Committed(v1::Committed {
            log_position: c.position.to_vec(),
            committed_at_unix_ms: c.committed_at_ms,
            already_committed: c.already,
        })),
    }
}

pub(super) fn rejected_msg(txid: Option<Txid>, e: &ServiceError) -> v1::TransferResult {
    let detail = e.detail();
    v1::TransferResult {
        txid: txid.map(|t| t.0.to_vec()).unwrap_or_default(),
        outcome: Some(v1::transfer_result::Outcome::Rejected(v1::Rejected {
            code: detail.reason.to_string(),
            message: e.to_string(),
            metadata: detail
                .metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            field: detail.field.map(|(f, _)| f).unwrap_or_default(),
        })),
    }
}

pub(super) fn entry_msg(item: &HistoryItem) -> v1::HistoryEntry {
    let r = &item.record;
    match &r.tier_change {
        None => v1::HistoryEntry {
            txid: r.txid.0.to_vec(),
            amount: r.amount.to_string(),
            incoming: r.incoming,
            log_position: item.position.to_vec(),
            committed_at_unix_ms: r.committed_at_ms,
            cursor: hex::encode(item.position),
            memo: r.memo.clone(),
            tier_change: None,
        },
        Some(note) => v1::HistoryEntry {
            amount: r.amount.to_string(),
            committed_at_unix_ms: r.committed_at_ms,
            cursor: hex::encode(item.position),
            tier_change: Some(v1::TierChange {
                from: convert::to_kyc_tier(note.from) as i32,
                to: convert::to_kyc_tier(note.to) as i32,
                reason: note.reason.clone(),
                request_id: note.request_id.clone(),
                at_unix_ms: r.committed_at_ms,
            }),
            ..Default::default()
        },
    }
}

pub(super) fn cursor(
    field: &'static str,
    text: &str,
) -> Result<Option<[u8; POSITION_LEN]>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let bytes = hex::decode(text)
        .ok()
        .and_then(|b| <[u8; POSITION_LEN]>::try_from(b).ok())
        .ok_or_else(|| {
            cbdc_runtime::error::invalid(format!(
                "{field}: not a cursor this ledger issued (expected {} hex digits)",
                POSITION_LEN * 2
            ))
        })?;
    Ok(Some(bytes))
}

/// Decodes a wire transfer, keeping a structural rejection as a per-item result.
pub(super) fn decode(
    keys: &cbdc_proto::keycache::KeyCache,
    t: &v1::SignedTransfer,
) -> Result<Transfer, Reject> {
    match keys.signed_transfer("transfer", Some(t)) {
        Ok(t) => Ok(t),
        Err(WireError::Transfer { reject, .. }) => Err(reject),
        Err(other) => unreachable!("a present transfer fails only as a transfer: {other}"),
    }
}
