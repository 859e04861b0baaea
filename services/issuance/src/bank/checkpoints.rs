//! Accepting a ledger's signed checkpoints: only one that extends the last accepted (by its
//! consistency proof), whose totals did not go back and are within the books.

use cbdc_core::LedgerId;
use cbdc_core::audit::Checkpoint;
use cbdc_core::merkle::Hash;
use cbdc_runtime::ServiceError;
use cbdc_runtime::error::abort;
use cbdc_store::TxError;

use super::CentralBank;
use crate::records::{AcceptedCheckpoint, counter_amount};

/// The answer to a submitted checkpoint: accepted, or not because `old_size` was not the
/// size held (`known_size` says which it is, so the ledger retries with the right proof).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointAnswer {
    pub accepted: bool,
    pub known_size: u64,
}

impl CentralBank {
    /// Accepts a ledger's signed checkpoint if it extends the last accepted one (checked with
    /// the consistency proof from `old_size`) and its totals are within the books.
    pub async fn submit_checkpoint(
        &self,
        cp: Checkpoint,
        signature: &[u8],
        old_size: u64,
        proof: Vec<Hash>,
    ) -> Result<CheckpointAnswer, ServiceError> {
        let op = self.operator(cp.ledger).await?.ok_or_else(|| {
            ServiceError::PermissionDenied(format!(
                "checkpoint.ledger_id: ledger {} is not a registered bank",
                cp.ledger.0
            ))
        })?;
        cp.verify_signature(&op.key, signature)
            .map_err(|e| ServiceError::PermissionDenied(format!("checkpoint.signature: {e}")))?;
        // A signed checkpoint whose figures do not add up is the bank's own statement that
        // it holds other than it should: accepted as its latest word (so the audit uses it)
        // and the first such kept as evidence the audit reports.
        let faulty = cp.check_figures().is_err();
        let record = AcceptedCheckpoint {
            checkpoint: cp,
            signature: signature.try_into().map_err(|_| {
                ServiceError::PermissionDenied("checkpoint.signature: not 64 bytes".into())
            })?,
        }
        .encode();
        let out = self.transact(move |me, tx| {
                let proof = proof.clone();
                let record = record.clone();
                Box::pin(async move {
                    let k = me.keys();
                    let previous = match tx.get(&k.checkpoint(cp.ledger)).await? {
                        None => None,
                        Some(p) => Some(AcceptedCheckpoint::decode(&p).map_err(abort)?.checkpoint),
                    };
                    let held = previous.map_or(0, |p| p.size);
                    if old_size != held {
                        return Ok(CheckpointAnswer { accepted: false, known_size: held });
                    }
                    if let Some(p) = previous {
                        check_extends(&p, &cp, &proof).map_err(abort)?;
                    } else if !proof.is_empty() {
                        return Err(abort(ServiceError::InvalidArgument(
                            "consistency_proof: must be empty for a ledger's first checkpoint".into(),
                        )));
                    }
                    let reversed = counter_amount(tx.get(&k.book_reversed(cp.ledger)).await?.as_deref(), "books").map_err(abort)?;
                    let sent_in = counter_amount(tx.get(&k.book_in(cp.ledger)).await?.as_deref(), "books")
                        .map_err(abort)?
                        .checked_sub(reversed)
                        .ok_or_else(|| abort(ServiceError::corrupt("books")))?;
                    let out = counter_amount(tx.get(&k.book_out(cp.ledger)).await?.as_deref(), "books").map_err(abort)?;
                    if cp.inbound > sent_in {
                        return Err(abort(ServiceError::FailedPrecondition(format!(
                            "checkpoint.inbound: {} exceeds the {} the central bank ever sent ledger {}",
                            cp.inbound, sent_in, cp.ledger.0
                        ))));
                    }
                    if cp.settled_out > out {
                        return Err(abort(ServiceError::FailedPrecondition(format!(
                            "checkpoint.settled_out: {} exceeds the {} the central bank settled out of ledger {}",
                            cp.settled_out, out, cp.ledger.0
                        ))));
                    }
                    if faulty && tx.get(&k.faulty_checkpoint(cp.ledger)).await?.is_none() {
                        tx.set(k.faulty_checkpoint(cp.ledger), record.clone())?;
                    }
                    tx.set(k.checkpoint(cp.ledger), record)?;
                    Ok::<_, TxError<ServiceError>>(CheckpointAnswer { accepted: true, known_size: cp.size })
                })
            })
            .await?;
        Ok(out)
    }

    /// The latest accepted checkpoint of `ledger`.
    pub async fn accepted_checkpoint(
        &self,
        ledger: LedgerId,
    ) -> Result<Option<Checkpoint>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        match tx.get_snapshot(&self.keys().checkpoint(ledger)).await? {
            None => Ok(None),
            Some(v) => Ok(Some(AcceptedCheckpoint::decode(&v)?.checkpoint)),
        }
    }
}

/// Checks that `new` extends `old`: the log did not shrink, its history did not change (the
/// consistency proof), and its running totals did not go back.
fn check_extends(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<(), ServiceError> {
    if new.size < old.size {
        return Err(ServiceError::FailedPrecondition(format!(
            "checkpoint.size: {} would shrink the log from the accepted {}",
            new.size, old.size
        )));
    }
    cbdc_core::merkle::verify_consistency(old.size, new.size, proof, &old.root, &new.root).map_err(|e| {
        ServiceError::FailedPrecondition(format!(
            "checkpoint.root: does not extend the accepted log of {} leaves (history changed?): {e}",
            old.size
        ))
    })?;
    if new.inbound < old.inbound || new.settled_out < old.settled_out {
        return Err(ServiceError::FailedPrecondition(format!(
            "checkpoint: running totals went back (inbound {} → {}, settled out {} → {})",
            old.inbound, new.inbound, old.settled_out, new.settled_out
        )));
    }
    Ok(())
}
