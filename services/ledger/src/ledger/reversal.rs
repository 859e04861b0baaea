//! Reversals: the value of a committed move off this ledger that was refused for good — by
//! the central bank (a destination not registered or not active) or by the payee's ledger (a
//! payee unknown, closed or at its cap) — credited back to the payer, once per transfer.
//!
//! A reversal is itself a logged transfer, so the audit log, the checkpoints and a replaying
//! auditor account for the value it creates: one input naming the refused transfer (its
//! txid, index 0, the amount), one output of the amount to the payer's key on this ledger,
//! the reason as memo, signed by the operator. It spends nothing here.

use super::plan::{Write, history_write, transfer_write, write};
use super::*;
use cbdc_core::transfer::MAX_MEMO_BYTES;
use cbdc_core::{Input, Lock, TransferBody};

/// Where a reversed value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReversalSource {
    /// Still in this ledger's outbox: the central bank refused to settle it.
    Outbox,
    /// Settled out and refused by the payee's ledger `refused_by`: the central bank
    /// delivers it back (an inbound delivery, counted in the inbound total).
    CentralBank {
        amount: Amount,
        refused_by: LedgerId,
    },
}

impl ReversalSource {
    /// What a reversal is keyed by besides the txid: the ledger that refused it, or 0 (the
    /// central bank) for a settlement it refused.
    fn by(self) -> LedgerId {
        match self {
            ReversalSource::Outbox => cbdc_core::messages::CENTRAL_BANK,
            ReversalSource::CentralBank { refused_by, .. } => refused_by,
        }
    }
}

impl Ledger {
    /// Credits back to its payer the value of `txid`'s moves still in the outbox, which the
    /// central bank refused for good. Once: a second call changes nothing. `Ok(false)` when
    /// there is nothing to reverse (not in the outbox, or reversed already).
    pub async fn reverse_outbox(&self, txid: Txid, reason: &str) -> Result<bool, ServiceError> {
        let reason = reason.to_string();
        let now_ms = self.now_ms();
        let (applied, _) = self
            .transact_stamped(move |me, tx| {
                let reason = reason.clone();
                Box::pin(async move {
                    let applied = me
                        .apply_reversal(tx, txid, &reason, ReversalSource::Outbox, now_ms, 0)
                        .await?;
                    if let Some((reversal, Applied::New(_, delta))) = &applied {
                        me.write_log(tx, &[(*reversal, delta.clone())])?;
                    }
                    Ok(applied)
                })
            })
            .await?;
        Ok(matches!(applied, Some((_, Applied::New(..)))))
    }

    /// Applies a reversal of `txid` inside `tx`: `None` if there is nothing to reverse,
    /// else the reversal's txid and what was applied (`Already` if reversed before).
    pub(super) async fn apply_reversal(
        &self,
        tx: &mut Transaction,
        txid: Txid,
        reason: &str,
        source: ReversalSource,
        now_ms: u64,
        order: u16,
    ) -> Result<Option<(Txid, Applied)>, TxError<ServiceError>> {
        let l = self.layout();
        if let Some(done) = tx.get(&l.reversal(&txid, source.by())).await? {
            let reversal = Txid(
                done.get(..32)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt(Corrupt { what: "reversal" }))?,
            );
            let record = tx
                .get(&l.transfer(&reversal))
                .await?
                .ok_or_else(|| corrupt(Corrupt { what: "reversal" }))?;
            let record = TransferRecord::decode(&record).map_err(corrupt)?;
            return Ok(Some((reversal, Applied::Already(record))));
        }
        let mut writes = Vec::new();
        let amount = match source {
            ReversalSource::Outbox => {
                let (b, e) = l.outbox_of(&txid);
                let rows = tx.get_range(&b, &e, RangeOptions::default()).await?;
                let mut sum = Amount::ZERO;
                for (k, v) in &rows {
                    let o = Output::decode(v).map_err(|_| corrupt(Corrupt { what: "outbox" }))?;
                    sum = sum
                        .checked_add(o.value)
                        .ok_or_else(|| corrupt(Corrupt { what: "outbox" }))?;
                    writes.push(Write::Clear(k.clone()));
                }
                if sum.is_zero() {
                    return Ok(None);
                }
                writes.push(Write::Add(l.outbox_total(), -(sum.fen() as i64)));
                sum
            }
            ReversalSource::CentralBank { amount, .. } => {
                writes.push(Write::Add(l.inbound_total(), amount.fen() as i64));
                amount
            }
        };
        let refund = tx
            .get(&l.refund(&txid))
            .await?
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(PublicKey::from_bytes)
            .ok_or_else(|| {
                abort(ServiceError::FailedPrecondition(format!(
                    "txid: {txid} moved no value off this ledger; nothing to reverse"
                )))
            })?;
        let mut memo = match source {
            ReversalSource::Outbox => format!("reversal of {txid}: {reason}"),
            ReversalSource::CentralBank { refused_by, .. } => {
                format!(
                    "reversal of {txid} (refused by ledger {}): {reason}",
                    refused_by.0
                )
            }
        }
        .into_bytes();
        memo.truncate(MAX_MEMO_BYTES);
        let output = Output {
            ledger: self.id(),
            value: amount,
            lock: Lock::Key(refund),
        };
        let body = TransferBody {
            inputs: vec![Input {
                outpoint: OutPoint { txid, index: 0 },
                value: amount,
            }],
            outputs: vec![output],
            memo,
            valid_until: UnixSeconds(0),
        };
        let reversal = cbdc_core::transfer::sign_body(body.encode(), &[self.operator()])
            .map_err(|e| abort(ServiceError::from(e)))?;
        let outpoint = reversal.outpoint(0);
        let mut delta = Delta::default();
        delta.create(&outpoint, &output);
        writes.push(Write::Set(
            l.output(&outpoint),
            OutputState::Unspent(output).encode(),
        ));
        writes.push(Write::Set(
            l.owned(&refund, &outpoint),
            amount.fen().to_be_bytes().to_vec(),
        ));
        writes.push(Write::Add(l.utxo_count(&refund), 1));
        writes.push(Write::Add(l.balance(&refund), amount.fen() as i64));
        let line = HistoryRecord {
            txid: reversal.txid(),
            amount,
            incoming: true,
            committed_at_ms: now_ms,
            memo: reversal.body().memo.clone(),
            tier_change: None,
        };
        writes.push(history_write(l, &refund, &line, order));
        writes.push(transfer_write(
            l,
            &reversal,
            now_ms,
            TransferKind::Reversal,
            order,
        ));
        let mut done = reversal.txid().0.to_vec();
        done.extend_from_slice(reason.as_bytes());
        writes.push(Write::Set(l.reversal(&txid, source.by()), done));
        write(tx, writes)?;
        Ok(Some((
            reversal.txid(),
            Applied::New(vec![(refund, line)], delta),
        )))
    }
}
