//! One transfer's validation against the ledger's state and its writes, inside a store
//! transaction.

use super::*;

impl Ledger {
    /// Validates `t` against the ledger's state and writes its effects, inside `tx`.
    pub(super) async fn apply(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        now_ms: u64,
        kind: TransferKind,
        order: u16,
    ) -> Result<Applied, TxError<ServiceError>> {
        let l = self.layout();
        let txid = t.txid();
        let body = t.body();
        let mut states = Vec::with_capacity(body.inputs.len());
        for input in &body.inputs {
            states.push(match tx.get(&l.output(&input.outpoint)).await? {
                None => InputState::Missing,
                Some(v) => match OutputState::decode(&v).map_err(corrupt)? {
                    OutputState::Unspent(o) => InputState::Unspent(o),
                    OutputState::Spent { by } => InputState::Spent { by },
                },
            });
        }
        // A transfer committed here spent its inputs under its own txid, and one delivered
        // from another ledger has no inputs here: only then can its record exist. A fresh
        // transfer (every input unspent) skips the lookup, which would miss in every
        // segment of the store. Two racing copies of one transfer both write its first
        // input, so the loser retries and finds it spent by this txid.
        let maybe_done = body.inputs.is_empty()
            || states.iter().any(|s| match s {
                InputState::Missing => true,
                InputState::Spent { by } => *by == txid,
                InputState::Unspent(_) => false,
            });
        if maybe_done && let Some(bytes) = tx.get(&l.transfer(&txid)).await? {
            return Ok(Applied::Already(
                TransferRecord::decode(&bytes).map_err(corrupt)?,
            ));
        }
        // Refuse a missing or spent input before reading any wallet.
        for (input, state) in body.inputs.iter().zip(&states) {
            match state {
                InputState::Missing => {
                    return Err(abort(Reject::InputMissing {
                        outpoint: input.outpoint,
                    }));
                }
                InputState::Spent { by } => {
                    return Err(abort(Reject::InputSpent {
                        outpoint: input.outpoint,
                        spent_by: *by,
                    }));
                }
                InputState::Unspent(_) => {}
            }
        }
        let day = self.day(now_ms);
        let tiers = &self.inner.settings.tiers;
        let mut wallets = BTreeMap::new();
        for key in parties(t, self.id(), &states) {
            let Some(bytes) = tx.get(&l.wallet(&key)).await? else {
                continue; // check_stateful names it as unknown
            };
            let record = WalletRecord::decode(&bytes).map_err(corrupt)?;
            let limits = tiers.limits(record.tier);
            // Read (and so conflict on) balances and day totals only where a cap needs them:
            // uncapped wallets, like a busy merchant's, take payments without conflicts.
            let balance = if limits.balance_cap.is_some() {
                counter_amount(tx.get(&l.balance(&key)).await?.as_deref()).map_err(corrupt)?
            } else {
                Amount::ZERO
            };
            let spent_today = if limits.daily_outgoing_cap.is_some() {
                counter_amount(tx.get(&l.daily(&key, day)).await?.as_deref()).map_err(corrupt)?
            } else {
                Amount::ZERO
            };
            wallets.insert(
                key,
                WalletState {
                    status: record.status,
                    tier: record.tier,
                    balance,
                    spent_today,
                },
            );
        }
        let ctx = StatefulContext {
            ledger: self.id(),
            now: UnixSeconds(now_ms / 1000),
            inputs: &states,
            wallets: &wallets,
            tiers,
        };
        let effects = match kind {
            TransferKind::Local => check_stateful(t, &ctx).map_err(abort)?,
            TransferKind::Inbound => unreachable!("inbound deliveries use apply_inbound"),
        };
        // Spend.
        let mut utxo_delta: BTreeMap<PublicKey, i64> = BTreeMap::new();
        let spent_marker = OutputState::Spent { by: txid }.encode();
        for (outpoint, state) in effects.spent.iter().zip(&states) {
            let InputState::Unspent(output) = state else {
                unreachable!("checked above");
            };
            let owner = output.lock.owner();
            tx.set(l.output(outpoint), &spent_marker)?;
            tx.clear(l.owned(&owner, outpoint))?;
            *utxo_delta.entry(owner).or_default() -= 1;
        }
        // Create.
        for (outpoint, output) in &effects.created {
            let owner = output.lock.owner();
            tx.set(l.output(outpoint), OutputState::Unspent(*output).encode())?;
            tx.set(l.owned(&owner, outpoint), output.value.fen().to_be_bytes())?;
            *utxo_delta.entry(owner).or_default() += 1;
        }
        for (outpoint, output) in &effects.outbound {
            tx.set(l.outbox(outpoint), output.encode())?;
        }
        for (key, delta) in utxo_delta {
            if delta != 0 {
                tx.atomic_add(l.utxo_count(&key), delta)?;
            }
        }
        let memo = &body.memo;
        let mut lines = Vec::with_capacity(effects.wallet_changes.len());
        for change in &effects.wallet_changes {
            let net = change.incoming.fen() as i64 - change.outgoing.fen() as i64;
            if net != 0 {
                tx.atomic_add(l.balance(&change.key), net)?;
            }
            if !change.outgoing.is_zero() {
                let capped = wallets
                    .get(&change.key)
                    .is_some_and(|w| tiers.limits(w.tier).daily_outgoing_cap.is_some());
                if capped {
                    tx.atomic_add(l.daily(&change.key, day), change.outgoing.fen() as i64)?;
                }
            }
            let (amount, incoming) = if change.incoming.is_zero() {
                (change.outgoing, false)
            } else {
                (change.incoming, true)
            };
            let record = HistoryRecord {
                txid,
                amount,
                incoming,
                committed_at_ms: now_ms,
                memo: memo.clone(),
            };
            self.write_history(tx, &change.key, &record, order)?;
            lines.push((change.key, record));
        }
        self.write_transfer(tx, t, now_ms, TransferKind::Local, order)?;
        Ok(Applied::New(lines))
    }

    pub(super) fn write_history(
        &self,
        tx: &mut Transaction,
        key: &PublicKey,
        record: &HistoryRecord,
        order: u16,
    ) -> Result<(), StoreError> {
        let mut hk = self.layout().history_prefix(key);
        let offset = hk.len() as u32;
        hk.extend_from_slice(&position([0; STAMP_LEN], order));
        tx.set_versionstamped_key(hk, offset, record.encode())
    }

    pub(super) fn write_transfer(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        now_ms: u64,
        kind: TransferKind,
        order: u16,
    ) -> Result<(), StoreError> {
        let record = TransferRecord {
            position: position([0; STAMP_LEN], order),
            committed_at_ms: now_ms,
            kind,
            body: t.body_bytes().to_vec(),
            witnesses: TransferRecord::witnesses_of(t.witnesses()),
        };
        tx.set_versionstamped_value(self.layout().transfer(&t.txid()), record.encode(), 0)
    }

    /// Appends the transfers a store transaction commits (`txids`, in order) to the commit
    /// log: one entry per [`LOG_ENTRY_TXIDS_MAX`] of them, keyed by the position of its
    /// first, rather than one key per transfer.
    pub(super) fn write_log(&self, tx: &mut Transaction, txids: &[Txid]) -> Result<(), StoreError> {
        for (i, chunk) in txids.chunks(LOG_ENTRY_TXIDS_MAX).enumerate() {
            // Orders are u16: one commit never holds more than 65,536 transfers.
            let first = (i * LOG_ENTRY_TXIDS_MAX) as u16;
            let mut lk = self.layout().log_prefix();
            let offset = lk.len() as u32;
            lk.extend_from_slice(&position([0; STAMP_LEN], first));
            let mut v = Vec::with_capacity(32 * chunk.len());
            for txid in chunk {
                v.extend_from_slice(&txid.0);
            }
            tx.set_versionstamped_key(lk, offset, v)?;
        }
        Ok(())
    }
}
