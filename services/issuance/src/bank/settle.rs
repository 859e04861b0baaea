//! Settlement: a registered, active bank hands over committed transfers whose outputs leave
//! its ledger; the central bank records each move in its books, countersigns one settlement
//! per destination and queues it for delivery, once per txid. Outputs to ledger 0 are
//! redeemed. The delivery queue those settlements wait in is read and cleared here too.

use std::collections::BTreeMap;
use std::sync::Arc;

use cbdc_core::messages::{BankRequest, CENTRAL_BANK, OperatorStatus};
use cbdc_core::{Amount, LedgerId, Lock, Transfer, Txid};
use cbdc_runtime::ServiceError;
use cbdc_runtime::error::abort;
use cbdc_store::{RangeOptions, TxError};

use super::{CentralBank, QUEUE_SCAN_MAX, SETTLE_BATCH_MAX, signature_error};
use crate::records::{
    Settled, Settlement, SignedParts, counter_amount, decode_queued, encode_queued,
};

/// Where a settled transfer is, as its sending ledger asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettlementState {
    /// Not settled from that ledger (or not at all).
    Unknown,
    /// Settled; a payee's ledger has not credited it yet.
    InFlight,
    /// Every payee's ledger credited it (redeemed value: the central bank's own).
    Delivered,
    /// A payee's ledger refused it for good; its value goes back to the payer.
    Reversed,
}

/// One transfer's settlement, as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleOutcome {
    pub settled: Settled,
    /// The transfer was settled before; this is the first answer.
    pub already: bool,
}

/// A countersigned settlement waiting for delivery to `ledger`, with its transfer.
#[derive(Clone, Debug)]
pub struct Queued {
    pub ledger: LedgerId,
    pub txid: Txid,
    pub settlement: Settlement,
    pub transfer: SignedParts,
    /// Set on a reversal: why the transfer's move was refused (the settlement goes back to
    /// the payer's ledger, and `txid` is the reversal's queue id).
    pub reversal: Option<String>,
    /// The stored row's size: about what it takes on the wire.
    pub bytes: usize,
}

/// What settling one transfer writes: its record, the value redeemed, and per destination
/// ledger the value and the queued delivery (encoded before the transaction, which may run
/// more than once).
struct Plan {
    txid: Txid,
    settled: Settled,
    redeemed: Amount,
    deliveries: Vec<(LedgerId, Amount, Vec<u8>)>,
}

impl CentralBank {
    /// Settles a transfer bank `from` committed whose outputs leave its ledger: records the
    /// move in the books, countersigns one settlement per destination ledger and queues it
    /// for delivery; outputs to ledger 0 (locked to the central bank's key) are redeemed.
    /// Once per txid: a repeat answers the first result.
    pub async fn settle(
        &self,
        transfer: Transfer,
        from: LedgerId,
        signature: &[u8],
    ) -> Result<SettleOutcome, ServiceError> {
        let txid = transfer.txid();
        let request = BankRequest::Settle {
            network: self.network(),
            from,
            txid: &txid,
        };
        self.authenticate_bank(from, &request, signature).await?;
        self.settle_verified(from, &[transfer]).await.remove(0)
    }

    /// [`CentralBank::settle`] for many transfers under one operator signature: the payers'
    /// signatures are checked in one Ed25519 batch and the moves recorded in one store
    /// transaction. One result per transfer.
    pub async fn settle_batch(
        &self,
        from: LedgerId,
        transfers: &[Transfer],
        signature: &[u8],
    ) -> Result<Vec<Result<SettleOutcome, ServiceError>>, ServiceError> {
        if transfers.is_empty() || transfers.len() > SETTLE_BATCH_MAX {
            return Err(ServiceError::InvalidArgument(format!(
                "transfers: {} transfers; between 1 and {SETTLE_BATCH_MAX} are accepted",
                transfers.len()
            )));
        }
        let txids: Vec<Txid> = transfers.iter().map(Transfer::txid).collect();
        let request = BankRequest::SettleBatch {
            network: self.network(),
            from,
            txids: &txids,
        };
        self.authenticate_bank(from, &request, signature).await?;
        Ok(self.settle_verified(from, transfers).await)
    }

    /// `from` is a registered bank and `signature` its operator's over `request`.
    async fn authenticate_bank(
        &self,
        from: LedgerId,
        request: &BankRequest<'_>,
        signature: &[u8],
    ) -> Result<(), ServiceError> {
        let op = self.operator(from).await?.ok_or_else(|| {
            ServiceError::PermissionDenied(format!(
                "from_ledger_id: ledger {} is not a registered bank",
                from.0
            ))
        })?;
        let vk = op
            .key
            .checked_key()
            .map_err(|_| ServiceError::corrupt("operator"))?;
        cbdc_core::messages::verify(&vk, request, signature).map_err(|e| {
            signature_error(
                e,
                "operator_signature",
                &format!("the operator key of ledger {}", from.0),
            )
        })
    }

    /// Settles transfers whose sender is authenticated.
    async fn settle_verified(
        &self,
        from: LedgerId,
        transfers: &[Transfer],
    ) -> Vec<Result<SettleOutcome, ServiceError>> {
        let n = transfers.len();
        let mut results: Vec<Option<Result<SettleOutcome, ServiceError>>> =
            (0..n).map(|_| None).collect();
        // Repeats answer the first result, even from a bank suspended since.
        match self.settled_many(transfers).await {
            Ok(done) => {
                for (i, d) in done.into_iter().enumerate() {
                    if let Some(settled) = d {
                        results[i] = Some(Ok(SettleOutcome {
                            settled,
                            already: true,
                        }));
                    }
                }
            }
            Err(e) => return (0..n).map(|_| Err(e.clone())).collect(),
        }
        if let Err(e) = self.active_operator(from, "from_ledger_id").await {
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(e.clone())))
                .collect();
        }
        let open: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
        let verdicts =
            cbdc_core::validate::check_committed_batch(open.iter().map(|&i| &transfers[i]));
        let mut registered: BTreeMap<LedgerId, Option<OperatorStatus>> = BTreeMap::new();
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        for (&i, verdict) in open.iter().zip(verdicts) {
            let t = &transfers[i];
            let plan = match verdict {
                Err(r) => Err(ServiceError::InvalidArgument(format!("transfer: {r}"))),
                Ok(()) => self.plan(t, from, &mut registered).await,
            };
            match plan {
                Ok(plan) => plans.push((i, plan)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !plans.is_empty() {
            let plans = Arc::new(plans);
            let p = Arc::clone(&plans);
            let outcome = self
                .transact(move |me, tx| {
                    let p = Arc::clone(&p);
                    Box::pin(async move {
                        let k = me.keys();
                        // A ledger never settles out more than the books say it received:
                        // `in` only grows, so a snapshot of it is a safe bound; `out` is
                        // read with a conflict, so two batches of one ledger cannot both
                        // pass on the same headroom.
                        // Less what it refused and was sent back (read with a conflict:
                        // it only grows, so a stale read would loosen the bound).
                        let reversed = counter_amount(
                            tx.get(&k.book_reversed(from)).await?.as_deref(),
                            "books",
                        )
                        .map_err(abort)?;
                        let received = counter_amount(
                            tx.get_snapshot(&k.book_in(from)).await?.as_deref(),
                            "books",
                        )
                        .map_err(abort)?
                        .checked_sub(reversed)
                        .ok_or_else(|| abort(ServiceError::corrupt("books")))?;
                        let mut sent = counter_amount(
                            tx.get(&k.book_out(from)).await?.as_deref(),
                            "books",
                        )
                        .map_err(abort)?;
                        let mut out = Vec::with_capacity(p.len());
                        for (_, plan) in p.iter() {
                            if let Some(done) = tx.get(&k.settled(&plan.txid)).await? {
                                out.push(Ok(SettleOutcome {
                                    settled: Settled::decode(&done).map_err(abort)?,
                                    already: true,
                                }));
                                continue;
                            }
                            let leaving = plan
                                .deliveries
                                .iter()
                                .try_fold(plan.redeemed, |a, (_, b, _)| a.checked_add(*b))
                                .ok_or_else(|| {
                                    abort(ServiceError::InvalidArgument(
                                        "transfer: values overflow".into(),
                                    ))
                                })?;
                            let after = sent.checked_add(leaving).filter(|a| *a <= received);
                            let Some(after) = after else {
                                out.push(Err(ServiceError::FailedPrecondition(format!(
                                    "transfer: ledger {} would settle out {leaving} more than it holds: the books say it received {received} and settled out {sent}",
                                    from.0
                                ))));
                                continue;
                            };
                            sent = after;
                            tx.set(k.settled(&plan.txid), plan.settled.encode())?;
                            tx.atomic_add(k.book_out(from), leaving.fen() as i64)?;
                            for (l, a, queued) in &plan.deliveries {
                                tx.atomic_add(k.book_in(*l), a.fen() as i64)?;
                                tx.set(k.queued(*l, &plan.txid), queued)?;
                            }
                            if !plan.redeemed.is_zero() {
                                tx.atomic_add(k.redeemed(), plan.redeemed.fen() as i64)?;
                            }
                            out.push(Ok(SettleOutcome {
                                settled: plan.settled.clone(),
                                already: false,
                            }));
                        }
                        Ok::<_, TxError<ServiceError>>(out)
                    })
                })
                .await;
            match outcome {
                Ok(outcomes) => {
                    for ((i, _), r) in plans.iter().zip(outcomes) {
                        results[*i] = Some(r);
                    }
                }
                Err(e) => {
                    for (i, _) in plans.iter() {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every transfer answered"))
            .collect()
    }

    /// What settling `t` does: the countersigned settlements, the value redeemed, and the
    /// value per destination ledger.
    async fn plan(
        &self,
        t: &Transfer,
        from: LedgerId,
        registered: &mut BTreeMap<LedgerId, Option<OperatorStatus>>,
    ) -> Result<Plan, ServiceError> {
        let overflow = || ServiceError::InvalidArgument("transfer: values overflow".into());
        let mut to: BTreeMap<LedgerId, Amount> = BTreeMap::new();
        let mut redeemed = Amount::ZERO;
        let cb_lock = Lock::Key(self.public_key());
        for (i, o) in t.body().outputs.iter().enumerate() {
            if o.ledger == from {
                continue;
            }
            if o.ledger == CENTRAL_BANK {
                if o.lock != cb_lock {
                    return Err(ServiceError::InvalidArgument(format!(
                        "transfer.outputs[{i}]: an output to ledger 0 is a redemption and must be locked to the central bank's key"
                    )));
                }
                redeemed = redeemed.checked_add(o.value).ok_or_else(overflow)?;
                continue;
            }
            let status = match registered.get(&o.ledger) {
                Some(k) => *k,
                None => {
                    let k = self.operator(o.ledger).await?.map(|op| op.status);
                    registered.insert(o.ledger, k);
                    k
                }
            };
            // A destination that does not exist or does not take value refuses the move
            // for good: the payer's ledger credits its payer back.
            match status {
                None => {
                    return Err(ServiceError::Refused(format!(
                        "transfer.outputs[{i}]: ledger {} is not a registered bank",
                        o.ledger.0
                    )));
                }
                Some(OperatorStatus::Suspended) => {
                    return Err(ServiceError::Refused(format!(
                        "transfer.outputs[{i}]: ledger {} is suspended",
                        o.ledger.0
                    )));
                }
                Some(OperatorStatus::Active) => {}
            }
            let sum = to.entry(o.ledger).or_default();
            *sum = sum.checked_add(o.value).ok_or_else(overflow)?;
        }
        if to.is_empty() && redeemed.is_zero() {
            return Err(ServiceError::InvalidArgument(format!(
                "transfer: no output leaves ledger {}; nothing to settle",
                from.0
            )));
        }
        let parts = SignedParts::of(t);
        let settlements: Vec<Settlement> = to
            .iter()
            .map(|(l, a)| self.countersign(t, from, *l, *a))
            .collect();
        let deliveries = settlements
            .iter()
            .map(|s| (s.to, s.amount, encode_queued(s, &parts)))
            .collect();
        Ok(Plan {
            txid: t.txid(),
            settled: Settled {
                settlements,
                redeemed,
            },
            redeemed,
            deliveries,
        })
    }

    /// The recorded settlement of each transfer, if any, in one snapshot.
    async fn settled_many(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<Option<Settled>>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let mut out = Vec::with_capacity(transfers.len());
        for t in transfers {
            out.push(
                match tx.get_snapshot(&self.keys().settled(&t.txid())).await? {
                    None => None,
                    Some(v) => Some(Settled::decode(&v)?),
                },
            );
        }
        Ok(out)
    }

    /// Settlements waiting for delivery: a page of at most [`QUEUE_SCAN_MAX`] from `from`
    /// (the start when `None`), and where the next page starts if this one was full.
    pub async fn queued(
        &self,
        from: Option<&[u8]>,
    ) -> Result<(Vec<Queued>, Option<Vec<u8>>), ServiceError> {
        let (b, e) = self.keys().queue();
        let mut tx = self.inner.db.create_transaction()?;
        let rows = tx
            .get_range(
                from.unwrap_or(&b),
                &e,
                RangeOptions::snapshot(QUEUE_SCAN_MAX),
            )
            .await?;
        let next = match rows.last() {
            Some((k, _)) if rows.len() == QUEUE_SCAN_MAX => {
                let mut n = k.clone();
                n.push(0);
                Some(n)
            }
            _ => None,
        };
        let page = rows
            .iter()
            .map(|(k, v)| {
                let (ledger, txid) = self
                    .keys()
                    .queued_key(k)
                    .ok_or_else(|| ServiceError::corrupt("queue key"))?;
                let (settlement, transfer, reversal) = decode_queued(v)?;
                Ok(Queued {
                    reversal,
                    ledger,
                    txid,
                    settlement,
                    transfer,
                    bytes: v.len(),
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        Ok((page, next))
    }

    /// Where each of `txids` settled from ledger `from` is, read in one snapshot: a txid
    /// settled from another ledger is `Unknown`, so a bank learns nothing of others' moves.
    pub async fn settlement_states(
        &self,
        from: LedgerId,
        txids: &[Txid],
    ) -> Result<Vec<SettlementState>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let k = self.keys();
        let mut states = Vec::with_capacity(txids.len());
        for txid in txids {
            let Some(v) = tx.get_snapshot(&k.settled(txid)).await? else {
                states.push(SettlementState::Unknown);
                continue;
            };
            let settled = Settled::decode(&v)?;
            if settled.settlements.iter().any(|s| s.from != from) {
                states.push(SettlementState::Unknown);
                continue;
            }
            let mut state = SettlementState::Delivered;
            for s in &settled.settlements {
                if tx.get_snapshot(&k.reversed(txid, s.to)).await?.is_some() {
                    state = SettlementState::Reversed;
                    break;
                }
                if tx.get_snapshot(&k.queued(s.to, txid)).await?.is_some() {
                    state = SettlementState::InFlight;
                }
            }
            states.push(state);
        }
        Ok(states)
    }

    /// Removes delivered settlements from the queue, in one transaction.
    pub async fn delivered(&self, done: &[(LedgerId, Txid)]) -> Result<(), ServiceError> {
        let keys: Arc<Vec<Vec<u8>>> = Arc::new(
            done.iter()
                .map(|(l, txid)| self.keys().queued(*l, txid))
                .collect(),
        );
        self.inner
            .db
            .run(move |tx| {
                let keys = Arc::clone(&keys);
                Box::pin(async move {
                    for k in keys.iter() {
                        tx.clear(k)?;
                    }
                    Ok::<_, TxError<ServiceError>>(())
                })
            })
            .await?;
        Ok(())
    }
}
