//! Reversals: a delivery the payee's ledger refused for good (the payee unknown, closed or at
//! its cap) is taken off the queue and out of that ledger's books and sent back to the
//! payer's ledger, countersigned as a reversal, in one transaction, once.

use std::sync::Arc;

use cbdc_core::messages::{Reversal, Signed, reversal_id};
use cbdc_core::{LedgerId, Txid};
use cbdc_runtime::ServiceError;
use cbdc_runtime::error::abort;
use cbdc_store::TxError;

use super::CentralBank;
use crate::records::{Settlement, decode_queued, encode_queued_reversal};

impl CentralBank {
    /// Reverses the queued delivery of `txid` to `refused_by`: `Ok(false)` if there is none
    /// (delivered, or reversed already).
    pub async fn reverse(
        &self,
        refused_by: LedgerId,
        txid: Txid,
        reason: &str,
    ) -> Result<bool, ServiceError> {
        let reason: Arc<str> = reason.into();
        self.transact(move |me, tx| {
            let reason = Arc::clone(&reason);
            Box::pin(async move {
                let k = me.keys();
                let Some(row) = tx.get(&k.queued(refused_by, &txid)).await? else {
                    return Ok(false);
                };
                let (settlement, transfer, reversal) = decode_queued(&row).map_err(abort)?;
                if reversal.is_some() {
                    // A reversal the payer's own ledger refused: nothing more can be done
                    // by the central bank; it stays queued for an operator to see.
                    return Err(abort(ServiceError::FailedPrecondition(format!(
                        "the reversal {txid} was refused by ledger {}: {reason}",
                        refused_by.0
                    ))));
                }
                let payer = settlement.from;
                if payer == cbdc_core::messages::CENTRAL_BANK {
                    // An issue refused: there is no payer to return it to; it stays queued
                    // for an operator to see.
                    return Err(abort(ServiceError::FailedPrecondition(format!(
                        "the issue {txid} was refused by ledger {}: {reason}",
                        refused_by.0
                    ))));
                }
                let amount = settlement.amount;
                let countersignature = Reversal {
                    network: &me.inner.network,
                    txid,
                    refused_by,
                    to_ledger: payer,
                    amount,
                    reason: &reason,
                }
                .sign(&me.inner.signing);
                let back = Settlement {
                    from: refused_by,
                    to: payer,
                    amount,
                    countersignature,
                };
                let id = reversal_id(&txid, refused_by);
                tx.clear(k.queued(refused_by, &txid))?;
                tx.atomic_add(k.book_reversed(refused_by), amount.fen() as i64)?;
                tx.atomic_add(k.book_in(payer), amount.fen() as i64)?;
                tx.set(
                    k.queued(payer, &id),
                    encode_queued_reversal(&back, &transfer, &reason),
                )?;
                tx.set(k.reversed(&txid, refused_by), id.0)?;
                Ok::<_, TxError<ServiceError>>(true)
            })
        })
        .await
    }
}
