//! The audit: the central bank's books reconciled with every ledger's latest accepted
//! checkpoint, in one snapshot of its store.

use cbdc_core::{Amount, LedgerId};
use cbdc_runtime::ServiceError;

use super::CentralBank;
use crate::records::{AcceptedCheckpoint, counter_amount};

/// The audit of one ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerAudit {
    pub ledger: LedgerId,
    /// The central bank's figure: delivered in − settled out.
    pub books: Amount,
    /// From the ledger's latest accepted checkpoint.
    pub reported: Amount,
    /// Settled or minted toward the ledger, not in its checkpoint yet.
    pub in_flight_in: Amount,
    /// Settled out of the ledger, still counted by its checkpoint.
    pub unacknowledged_out: Amount,
    pub balanced: bool,
    /// Settled toward the ledger (and minted into it), less what it refused: only grows.
    pub received: Amount,
    /// Settled out of the ledger: only grows.
    pub sent: Amount,
    pub checkpoint_size: u64,
    /// When the ledger signed its latest accepted checkpoint (0: none yet).
    pub checkpoint_timestamp_ms: u64,
    /// Why the ledger's own figures do not add up: in its latest checkpoint, or in the
    /// first faulty one it ever signed (kept as evidence).
    pub fault: Option<String>,
}

/// The audit of the whole network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub issued: Amount,
    pub redeemed: Amount,
    /// issued − redeemed.
    pub outstanding: Amount,
    pub ledgers: Vec<LedgerAudit>,
    /// issued − redeemed = Σ books = Σ (reported + in flight in − unacknowledged out), and
    /// each ledger's reported totals are within the central bank's.
    pub balanced: bool,
}

impl CentralBank {
    /// Reconciles the books with every ledger's latest accepted checkpoint, in one snapshot
    /// of the central bank's store.
    pub async fn audit(&self) -> Result<AuditReport, ServiceError> {
        let corrupt = ServiceError::corrupt;
        let operators = self.operators().await?;
        let mut tx = self.inner.db.create_transaction()?;
        let k = self.keys();
        let issued = counter_amount(tx.get_snapshot(&k.issued()).await?.as_deref(), "totals")?;
        let redeemed = counter_amount(tx.get_snapshot(&k.redeemed()).await?.as_deref(), "totals")?;
        let outstanding = issued
            .checked_sub(redeemed)
            .ok_or_else(|| corrupt("totals"))?;
        let mut ledgers = Vec::with_capacity(operators.len());
        let mut books_sum = Amount::ZERO;
        let mut explained_sum: i128 = 0;
        let mut balanced = true;
        for op in &operators {
            let l = op.ledger;
            // Value settled toward the ledger, less what it refused and was sent back.
            let reversed = counter_amount(
                tx.get_snapshot(&k.book_reversed(l)).await?.as_deref(),
                "books",
            )?;
            let sent_in =
                counter_amount(tx.get_snapshot(&k.book_in(l)).await?.as_deref(), "books")?
                    .checked_sub(reversed)
                    .ok_or_else(|| corrupt("books"))?;
            let out = counter_amount(tx.get_snapshot(&k.book_out(l)).await?.as_deref(), "books")?;
            let books = sent_in.checked_sub(out).ok_or_else(|| corrupt("books"))?;
            let cp = match tx.get_snapshot(&k.checkpoint(l)).await? {
                None => None,
                Some(v) => Some(AcceptedCheckpoint::decode(&v)?.checkpoint),
            };
            // What the ledger holds, counted from its outputs and outbox — not its edge
            // totals, which would make the comparison below an identity.
            let (reported, inbound, settled_out, size, timestamp_ms) = match &cp {
                None => (Amount::ZERO, Amount::ZERO, Amount::ZERO, 0, 0),
                Some(c) => (
                    c.unspent
                        .checked_add(c.outbox)
                        .ok_or_else(|| corrupt("checkpoint"))?,
                    c.inbound,
                    c.settled_out,
                    c.size,
                    c.timestamp_ms,
                ),
            };
            let first_fault = match tx.get_snapshot(&k.faulty_checkpoint(l)).await? {
                None => None,
                Some(v) => Some(AcceptedCheckpoint::decode(&v)?.checkpoint),
            };
            let fault = cp.iter().chain(first_fault.iter()).find_map(|c| {
                c.check_figures()
                    .err()
                    .map(|e| format!("checkpoint at log size {}: {e}", c.size))
            });
            let in_flight_in = sent_in.checked_sub(inbound);
            let unacknowledged_out = out.checked_sub(settled_out);
            let ok = match (in_flight_in, unacknowledged_out) {
                (Some(i), Some(u)) => {
                    i128::from(reported.fen()) + i128::from(i.fen()) - i128::from(u.fen())
                        == i128::from(books.fen())
                }
                _ => false,
            };
            let ok = ok && fault.is_none();
            balanced &= ok;
            books_sum = books_sum
                .checked_add(books)
                .ok_or_else(|| corrupt("books"))?;
            explained_sum += i128::from(reported.fen())
                + in_flight_in.map_or(0, |a| i128::from(a.fen()))
                - unacknowledged_out.map_or(0, |a| i128::from(a.fen()));
            ledgers.push(LedgerAudit {
                ledger: l,
                books,
                reported,
                in_flight_in: in_flight_in.unwrap_or(Amount::ZERO),
                unacknowledged_out: unacknowledged_out.unwrap_or(Amount::ZERO),
                balanced: ok,
                received: sent_in,
                sent: out,
                checkpoint_size: size,
                checkpoint_timestamp_ms: timestamp_ms,
                fault,
            });
        }
        balanced &= books_sum == outstanding && explained_sum == i128::from(outstanding.fen());
        Ok(AuditReport {
            issued,
            redeemed,
            outstanding,
            ledgers,
            balanced,
        })
    }
}
