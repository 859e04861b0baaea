//! Deliveries from the central bank: settlements checked at the wire, applied by the ledger,
//! each answered delivered, failed (tried again) or refused for good (reversed).

use cbdc_core::Amount;
use cbdc_proto::convert;
use cbdc_proto::v1;
use tonic::{Request, Response, Status};

use super::LedgerGrpc;
use crate::ledger::{Committed, Inbound, ServiceError};

/// Bytes of a reversal's reason kept, at most.
pub const REVERSAL_REASON_MAX: usize = 200;

/// Settlements per `DeliverInboundBatch` request, at most.
pub const DELIVER_BATCH_MAX: usize = 1024;

impl LedgerGrpc {
    /// `DeliverInboundBatch`.
    pub(super) async fn deliver_many(
        &self,
        request: Request<v1::DeliverInboundBatchRequest>,
    ) -> Result<Response<v1::DeliverInboundBatchResponse>, Status> {
        self.caller_is_central_bank(&request)?;
        let settlements = request.into_inner().settlements;
        if settlements.is_empty() || settlements.len() > DELIVER_BATCH_MAX {
            return Err(cbdc_runtime::error::invalid(format!(
                "settlements: {} settlements; between 1 and {DELIVER_BATCH_MAX} are accepted",
                settlements.len()
            )));
        }
        let mut slots: Vec<Result<usize, Status>> = Vec::with_capacity(settlements.len());
        let mut items = Vec::new();
        for s in settlements {
            slots.push(self.inbound(s).map(|item| {
                items.push(item);
                items.len() - 1
            }));
        }
        let mut applied: Vec<Option<Result<Committed, ServiceError>>> = self
            .ledger
            .deliver_inbound_batch(items)
            .await
            .into_iter()
            .map(Some)
            .collect();
        let results = slots
            .into_iter()
            .map(|slot| {
                // A payee that cannot take the value refuses it for good: the central bank
                // returns it to the payer. Anything else it tries again.
                let outcome = match slot {
                    Err(s) => Err((false, s)),
                    Ok(i) => applied[i]
                        .take()
                        .expect("one result per item")
                        .map_err(|e| (matches!(e, ServiceError::Refused(_)), Status::from(e))),
                };
                use v1::deliver_inbound_result::Outcome;
                v1::DeliverInboundResult {
                    outcome: Some(match outcome {
                        Ok(c) => Outcome::Delivered(v1::DeliverInboundResponse {
                            already_delivered: c.already,
                        }),
                        Err((true, s)) => Outcome::Refused(convert::to_failure(&s)),
                        Err((false, s)) => Outcome::Failed(convert::to_failure(&s)),
                    }),
                }
            })
            .collect();
        Ok(Response::new(v1::DeliverInboundBatchResponse { results }))
    }

    /// A settlement from the wire, checked for this ledger.
    pub(super) fn inbound(&self, s: v1::Settlement) -> Result<Inbound, Status> {
        let transfer = self
            .keys
            .signed_transfer("settlement.transfer", s.transfer.as_ref())?;
        if s.to_ledger_id != self.ledger.id().0 {
            return Err(cbdc_runtime::error::invalid(format!(
                "settlement.to_ledger_id: {}, but this is ledger {}",
                s.to_ledger_id,
                self.ledger.id().0
            )));
        }
        // Only the form here: an amount over this bank's maximum is the ledger's to refuse
        // (for good, so that it goes back to the payer).
        let amount = convert::amount("settlement.amount", &s.amount, Amount::DEFAULT_MAX)?;
        if amount.is_zero() {
            return Err(cbdc_runtime::error::invalid(
                "settlement.amount: must be above zero",
            ));
        }
        Ok(Inbound {
            transfer,
            from_ledger: cbdc_core::LedgerId(s.from_ledger_id),
            amount,
            countersignature: s.central_bank_signature,
            reversal: (!s.reversal_reason.is_empty()).then(|| {
                let mut r = s.reversal_reason;
                let mut end = r.len().min(REVERSAL_REASON_MAX);
                while !r.is_char_boundary(end) {
                    end -= 1;
                }
                r.truncate(end);
                r
            }),
        })
    }
}
