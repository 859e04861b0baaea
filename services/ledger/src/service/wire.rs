//! Conversions between the ledger's answers and their wire messages.

use cbdc_core::{Amount, OutPoint, Output, Reject, Transfer, TransferBody, Txid};
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

/// An output at its outpoint.
pub(super) fn coin_msg(outpoint: OutPoint, output: &Output) -> v1::Coin {
    v1::Coin {
        outpoint: Some(convert::to_outpoint(&outpoint)),
        output: Some(convert::to_output(output)),
    }
}

/// Every output of transfer `txid`, at its outpoint.
pub(super) fn coins_of(txid: Txid, outputs: &[Output]) -> Vec<v1::Coin> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            coin_msg(
                OutPoint {
                    txid,
                    index: i as u16,
                },
                o,
            )
        })
        .collect()
}

/// A transfer decoded for a reader: the payer sees its inputs and every output, a payee
/// only `mine`, the indexes of the outputs paying it.
pub(super) fn transfer_view(
    txid: Txid,
    body: &TransferBody,
    whole: bool,
    mine: &[usize],
) -> v1::TransferView {
    let shown: Vec<usize> = if whole {
        (0..body.outputs.len()).collect()
    } else {
        mine.to_vec()
    };
    let total = Amount::checked_sum(shown.iter().map(|&i| body.outputs[i].value));
    v1::TransferView {
        txid: txid.0.to_vec(),
        inputs: if whole {
            body.inputs
                .iter()
                .map(|i| v1::Input {
                    outpoint: Some(convert::to_outpoint(&i.outpoint)),
                    value: i.value.to_string(),
                })
                .collect()
        } else {
            Vec::new()
        },
        outputs: shown
            .iter()
            .map(|&i| {
                coin_msg(
                    OutPoint {
                        txid,
                        index: i as u16,
                    },
                    &body.outputs[i],
                )
            })
            .collect(),
        memo: body.memo.clone(),
        valid_until_unix_s: body.valid_until.0,
        total: total.unwrap_or(Amount::ZERO).to_string(),
    }
}

/// A committed transfer's result, with the outputs it created.
pub(super) fn committed_msg(c: &Committed, outputs: &[Output]) -> v1::TransferResult {
    v1::TransferResult {
        txid: c.txid.0.to_vec(),
        outcome: Some(v1::transfer_result::Outcome::Committed(v1::Committed {
            log_position: c.position.to_vec(),
            committed_at_unix_ms: c.committed_at_ms,
            already_committed: c.already,
            outputs: coins_of(c.txid, outputs),
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

/// A coin page's cursor: the last outpoint's txid and index in hex (68 digits).
pub(super) fn coin_cursor(field: &'static str, text: &str) -> Result<Option<OutPoint>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let bytes = hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 34]>::try_from(b).ok())
        .ok_or_else(|| {
            cbdc_runtime::error::invalid(format!(
                "{field}: not a cursor this ledger issued (expected 68 hex digits)"
            ))
        })?;
    let mut txid = [0; 32];
    txid.copy_from_slice(&bytes[..32]);
    Ok(Some(OutPoint {
        txid: Txid(txid),
        index: u16::from_be_bytes([bytes[32], bytes[33]]),
    }))
}
