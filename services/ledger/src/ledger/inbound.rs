//! Deliveries from the central bank: issuance to the vault and moves from other ledgers,
//! countersigned, each credited once per txid.

use super::plan::{Write, history_write, transfer_write, write};
use super::*;

impl Ledger {
    // ----- inbound from the central bank -----

    /// Credits the outputs of a transfer the central bank countersigned for this ledger
    /// (issuance to the vault, or a move from another ledger). Idempotent by txid.
    pub async fn deliver_inbound(
        &self,
        transfer: Transfer,
        from_ledger: LedgerId,
        amount: Amount,
        countersignature: &[u8],
    ) -> Result<Committed, ServiceError> {
        self.deliver_inbound_batch(vec![Inbound {
            transfer,
            from_ledger,
            amount,
            countersignature: countersignature.to_vec(),
            reversal: None,
        }])
        .await
        .remove(0)
    }

    /// [`Ledger::deliver_inbound`] for many deliveries: the countersignatures are checked
    /// with one Ed25519 batch verification and the deliveries applied in one store
    /// transaction (each on its own if that transaction cannot commit). One result per item.
    pub async fn deliver_inbound_batch(
        &self,
        items: Vec<Inbound>,
    ) -> Vec<Result<Committed, ServiceError>> {
        let mut results: Vec<Option<Result<Committed, ServiceError>>> =
            (0..items.len()).map(|_| None).collect();
        // Both signatures: the central bank's countersignature and the payers' own (without
        // expiry: a committed transfer may arrive after its `valid_until`), each kind in one
        // batch verification, off the async threads.
        let me = self.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let countersigned = me.check_countersignatures(&items);
            let witnessed =
                cbdc_core::validate::check_committed_batch(items.iter().map(|i| &i.transfer));
            let checked: Vec<Result<(), ServiceError>> = countersigned
                .into_iter()
                .zip(witnessed)
                .map(|(c, w)| c.and_then(|()| w.map_err(ServiceError::from)))
                .collect();
            (items, checked)
        })
        .await;
        let (items, checked) = match checked {
            Ok(done) => done,
            Err(e) => {
                let e = ServiceError::Unavailable(format!("signature check: {e}"));
                return results.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let mut good: Vec<InboundItem> = Vec::new();
        let mut reversals = Vec::new();
        for (i, (item, ok)) in items.into_iter().zip(checked).enumerate() {
            if item.reversal.is_some() {
                match ok.and_then(|()| self.reversed_amount(&item)) {
                    Ok(()) => reversals.push((i, item)),
                    Err(e) => results[i] = Some(Err(e)),
                }
                continue;
            }
            match ok.and_then(|()| self.inbound_outputs(&item)) {
                Ok(ours) => good.push((i, Arc::new(item.transfer), Arc::new(ours), item.amount)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !good.is_empty() {
            let now_ms = self.now_ms();
            let batch = Arc::new(good);
            let b = Arc::clone(&batch);
            let outcome = self
                .transact_stamped(move |me, tx| {
                    let b = Arc::clone(&b);
                    Box::pin(async move {
                        let mut out = Vec::with_capacity(b.len());
                        let mut order: u16 = 0;
                        let mut logged = Vec::with_capacity(b.len());
                        for (_, t, ours, amount) in b.iter() {
                            let r = me.apply_inbound(tx, t, ours, *amount, now_ms, order).await;
                            let r = in_order(&mut order, r)?;
                            if let Ok((Applied::New(_, delta), _)) = &r {
                                logged.push((t.txid(), delta.clone()));
                            }
                            out.push(r);
                        }
                        me.write_log(tx, &logged)?;
                        Ok::<_, TxError<ServiceError>>(out)
                    })
                })
                .await;
            match outcome {
                Ok((applied, stamp)) => {
                    for ((i, t, _, _), r) in batch.iter().zip(applied) {
                        results[*i] = Some(r.map(|(applied, order)| {
                            self.finish(t.txid(), applied, stamp.0, order, now_ms)
                        }));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    results[batch[0].0] = Some(Err(e.into()));
                }
                Err(e) => {
                    tracing::debug!(error = %ServiceError::from(e), "inbound batch failed; applying one by one");
                    for (i, t, ours, amount) in batch.iter() {
                        let single = (0, Arc::clone(t), Arc::clone(ours), *amount);
                        results[*i] = Some(self.apply_inbound_alone(single).await);
                    }
                }
            }
        }
        // Reversals are rare: each in its own transaction.
        for (i, item) in reversals {
            results[i] = Some(self.apply_reversal_alone(item).await);
        }
        results
            .into_iter()
            .map(|r| r.expect("every item answered"))
            .collect()
    }

    /// A reversal's amount is what the transfer moved to the ledger that refused it.
    fn reversed_amount(&self, item: &Inbound) -> Result<(), ServiceError> {
        let moved = Amount::checked_sum(
            item.transfer
                .body()
                .outputs
                .iter()
                .filter(|o| o.ledger == item.from_ledger)
                .map(|o| o.value),
        )
        .ok_or(Reject::ValueOverflow)?;
        if item.from_ledger == self.id() || moved.is_zero() || moved != item.amount {
            return Err(ServiceError::InvalidArgument(format!(
                "settlement.amount: a reversal of {} from ledger {}, but the transfer moved {moved} there",
                item.amount, item.from_ledger.0
            )));
        }
        Ok(())
    }

    async fn apply_reversal_alone(&self, item: Inbound) -> Result<Committed, ServiceError> {
        let now_ms = self.now_ms();
        let txid = item.transfer.txid();
        let reason = item.reversal.unwrap_or_default();
        let source = super::reversal::ReversalSource::CentralBank {
            amount: item.amount,
            refused_by: item.from_ledger,
        };
        let (applied, stamp) = self
            .transact_stamped(move |me, tx| {
                let reason = reason.clone();
                Box::pin(async move {
                    let applied = me
                        .apply_reversal(tx, txid, &reason, source, now_ms, 0)
                        .await?;
                    if let Some((reversal, Applied::New(_, delta))) = &applied {
                        me.write_log(tx, &[(*reversal, delta.clone())])?;
                    }
                    Ok(applied)
                })
            })
            .await?;
        let (reversal, applied) = applied.ok_or_else(|| {
            ServiceError::FailedPrecondition(format!("txid: {txid}: nothing to reverse"))
        })?;
        Ok(self.finish(reversal, applied, stamp.0, 0, now_ms))
    }

    async fn apply_inbound_alone(
        &self,
        (_, t, ours, amount): InboundItem,
    ) -> Result<Committed, ServiceError> {
        let now_ms = self.now_ms();
        let tt = Arc::clone(&t);
        let (applied, stamp) = self
            .transact_stamped(move |me, tx| {
                let t = Arc::clone(&tt);
                let ours = Arc::clone(&ours);
                Box::pin(async move {
                    let applied = me.apply_inbound(tx, &t, &ours, amount, now_ms, 0).await?;
                    if let Applied::New(_, delta) = &applied {
                        me.write_log(tx, &[(t.txid(), delta.clone())])?;
                    }
                    Ok(applied)
                })
            })
            .await?;
        Ok(self.finish(t.txid(), applied, stamp.0, 0, now_ms))
    }

    /// Checks every item's countersignature with one batch verification (one by one only
    /// if the batch fails, to name the bad ones).
    fn check_countersignatures(&self, items: &[Inbound]) -> Vec<Result<(), ServiceError>> {
        let Some(vk) = self.inner.central_bank_key else {
            return items
                .iter()
                .map(|_| {
                    Err(ServiceError::FailedPrecondition(
                        "this ledger has no central bank key configured".into(),
                    ))
                })
                .collect();
        };
        let messages: Vec<Vec<u8>> = items
            .iter()
            .map(|item| match &item.reversal {
                None => Countersignature {
                    network: &self.inner.settings.network,
                    txid: item.transfer.txid(),
                    to_ledger: self.id(),
                }
                .signing_bytes(),
                Some(reason) => cbdc_core::messages::Reversal {
                    network: &self.inner.settings.network,
                    txid: item.transfer.txid(),
                    refused_by: item.from_ledger,
                    to_ledger: self.id(),
                    amount: item.amount,
                    reason,
                }
                .signing_bytes(),
            })
            .collect();
        let checks: Vec<_> = items
            .iter()
            .zip(&messages)
            .map(|(item, m)| (&vk, &m[..], &item.countersignature[..]))
            .collect();
        cbdc_core::messages::verify_each(&checks)
            .into_iter()
            .map(|r| {
                r.map_err(|e| {
                    signature_error(
                        e,
                        "settlement.central_bank_signature",
                        "the central bank's key",
                        "does not verify against the central bank's key",
                    )
                })
            })
            .collect()
    }

    /// The outputs of an inbound delivery that this ledger credits, after the checks that
    /// need no storage.
    fn inbound_outputs(&self, item: &Inbound) -> Result<Vec<(u16, Output)>, ServiceError> {
        if item.from_ledger == self.id() {
            return Err(ServiceError::InvalidArgument(
                "settlement.from_ledger_id: a delivery cannot come from this ledger itself".into(),
            ));
        }
        let max = self.inner.settings.amount_max;
        if item.from_ledger != cbdc_core::messages::CENTRAL_BANK && item.amount > max {
            return Err(ServiceError::Refused(format!(
                "settlement.amount: {} is over this bank's maximum of {max}",
                item.amount
            )));
        }
        let ours: Vec<(u16, Output)> = item
            .transfer
            .body()
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.ledger == self.id())
            .map(|(i, o)| (i as u16, *o))
            .collect();
        if let Some((index, _)) = ours.iter().find(|(_, o)| o.value.is_zero()) {
            return Err(Reject::ZeroOutput {
                index: usize::from(*index),
            }
            .into());
        }
        let total =
            Amount::checked_sum(ours.iter().map(|(_, o)| o.value)).ok_or(Reject::ValueOverflow)?;
        if ours.is_empty() || total != item.amount {
            return Err(ServiceError::InvalidArgument(format!(
                "settlement.amount: {}, but the transfer's outputs for ledger {} total {total}",
                item.amount,
                self.id().0
            )));
        }
        Ok(ours)
    }

    /// Applies one inbound delivery inside `tx`: every payee wallet is checked before
    /// anything is written, so a refused delivery leaves nothing behind in a shared
    /// transaction.
    async fn apply_inbound(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        ours: &[(u16, Output)],
        amount: Amount,
        now_ms: u64,
        order: u16,
    ) -> Result<Applied, TxError<ServiceError>> {
        let l = self.layout();
        let txid = t.txid();
        if let Some(bytes) = tx.get(&l.transfer(&txid)).await? {
            return Ok(Applied::Already(
                TransferRecord::decode(&bytes).map_err(corrupt)?,
            ));
        }
        // Each payee must be able to take what it is paid: open, not closed (a frozen
        // wallet still receives), and within its tier's balance cap. Otherwise the move is
        // refused for good and the central bank returns it to the payer.
        let mut incoming: std::collections::BTreeMap<PublicKey, Amount> = Default::default();
        for (_, output) in ours {
            let e = incoming.entry(output.lock.owner()).or_default();
            *e = e
                .checked_add(output.value)
                .ok_or_else(|| abort(Reject::ValueOverflow))?;
        }
        for (owner, amount) in incoming {
            let refuse = |why: String| {
                abort(ServiceError::Refused(format!(
                    "payee {owner} on ledger {}: {why}",
                    self.id().0
                )))
            };
            let Some(record) = tx.get(&l.wallet(&owner)).await? else {
                return Err(refuse("no such wallet is open".into()));
            };
            let record = WalletRecord::decode(&record).map_err(corrupt)?;
            if record.status == cbdc_core::WalletStatus::Closed {
                return Err(refuse("the wallet is closed".into()));
            }
            if let Some(cap) = self.inner.settings.tiers.limits(record.tier).balance_cap {
                let balance = counter_amount(tx.get(&l.balance(&owner)).await?.as_deref())
                    .map_err(corrupt)?;
                let would_be = balance
                    .checked_add(amount)
                    .unwrap_or(Amount::from_fen(u64::MAX));
                if would_be > cap {
                    return Err(refuse(format!(
                        "its balance cap of {cap} would be exceeded ({balance} + {amount})"
                    )));
                }
            }
        }
        let mut lines = Vec::with_capacity(ours.len());
        let mut writes = Vec::with_capacity(5 * ours.len() + 2);
        let mut delta = Delta::default();
        for (index, output) in ours {
            let owner = output.lock.owner();
            let outpoint = t.outpoint(*index);
            delta.create(&outpoint, output);
            writes.push(Write::Set(
                l.output(&outpoint),
                OutputState::Unspent(*output).encode(),
            ));
            writes.push(Write::Set(
                l.owned(&owner, &outpoint),
                output.value.fen().to_be_bytes().to_vec(),
            ));
            writes.push(Write::Add(l.utxo_count(&owner), 1));
            writes.push(Write::Add(l.balance(&owner), output.value.fen() as i64));
            let record = HistoryRecord {
                txid,
                amount: output.value,
                incoming: true,
                committed_at_ms: now_ms,
                memo: t.body().memo.clone(),
                tier_change: None,
            };
            writes.push(history_write(l, &owner, &record, order));
            lines.push((owner, record));
        }
        writes.push(transfer_write(l, t, now_ms, TransferKind::Inbound, order));
        writes.push(Write::Add(l.inbound_total(), amount.fen() as i64));
        write(tx, writes)?;
        Ok(Applied::New(lines, delta))
    }
}
