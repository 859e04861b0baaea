//! A transfer's state transition as a pure pair, in TigerBeetle's manner:
//!
//! - [`prefetch`] says which keys a transfer needs and reads them through whatever reader it
//!   is given (a store transaction in the service, a map in the tests): its inputs, then —
//!   only if an input is spent by this very txid or missing — its record, then its parties'
//!   wallets, then only the limit counters a cap checks (a capped payee's balance, a capped
//!   payer's day total);
//! - [`plan`] turns that snapshot into the [`Write`]s the transfer makes, or a [`Reject`],
//!   with no clock, store or randomness of its own.
//!
//! [`apply`](super::apply) runs the two inside a store transaction and writes the plan;
//! the property tests at the end of this file run them over an in-memory map.

use std::collections::BTreeMap;

use cbdc_core::unspent::Delta;
use cbdc_core::validate::{InputState, StatefulContext, check_stateful, parties};
use cbdc_core::{
    Amount, LedgerId, OutPoint, Output, PublicKey, Reject, TierTable, Transfer, UnixSeconds,
    WalletState,
};
use cbdc_runtime::ServiceError;
use cbdc_runtime::error::abort;
use cbdc_store::{StoreError, Transaction, TxError};

use super::position;
use crate::layout::{Layout, STAMP_LEN};
use crate::records::{
    Corrupt, HistoryRecord, OutputState, TransferKind, TransferRecord, WalletRecord, counter_amount,
};

/// What a plan depends on besides the snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanContext<'a> {
    pub layout: &'a Layout,
    pub ledger: LedgerId,
    pub tiers: &'a TierTable,
    pub now_ms: u64,
    /// The local day of `now_ms` (daily caps).
    pub day: i64,
    /// The transfer's order within its commit.
    pub order: u16,
    /// Planted faults (tests only).
    pub faults: super::Faults,
}

/// What [`plan`] reads, prefetched: each input's state, and the wallets of the parties
/// (balances and day totals filled in only where a cap needs them, zero otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub inputs: Vec<InputState>,
    pub wallets: BTreeMap<PublicKey, WalletState>,
}

/// What prefetching found.
#[derive(Debug)]
pub(crate) enum Prefetched {
    /// The transfer was committed before: its record.
    Already(TransferRecord),
    /// What the plan needs.
    Ready(Snapshot),
}

/// One write of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    /// An atomic add to a 64-bit little-endian counter.
    Add(Vec<u8>, i64),
    /// A key whose 10 bytes at the offset the store fills with the commit's versionstamp.
    StampedKey(Vec<u8>, u32, Vec<u8>),
    /// A value whose first 10 bytes the store fills with the commit's versionstamp.
    StampedValue(Vec<u8>, Vec<u8>),
}

/// What a transfer does: its writes, each wallet's history line (for watchers), and what it
/// does to the unspent outputs (for the commit log, and so the checkpoints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Planned {
    pub writes: Vec<Write>,
    pub lines: Vec<(PublicKey, HistoryRecord)>,
    pub delta: Delta,
}

/// Point reads, with a conflict: a store transaction in the service, a map in the tests.
pub(crate) trait Reader {
    fn read(
        &mut self,
        key: Vec<u8>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
}

impl Reader for Transaction {
    async fn read(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&key).await
    }
}

fn corrupt(e: Corrupt) -> TxError<ServiceError> {
    TxError::Abort(e.into())
}

/// Reads what [`plan`] needs for `t` through `read` (a point read with a conflict). A
/// missing or spent input is refused here, before any wallet is read.
pub(crate) async fn prefetch(
    reader: &mut impl Reader,
    ctx: &PlanContext<'_>,
    t: &Transfer,
) -> Result<Prefetched, TxError<ServiceError>> {
    let l = ctx.layout;
    let txid = t.txid();
    let body = t.body();
    let mut inputs = Vec::with_capacity(body.inputs.len());
    for input in &body.inputs {
        inputs.push(match reader.read(l.output(&input.outpoint)).await? {
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
        || inputs.iter().any(|s| match s {
            InputState::Missing => true,
            InputState::Spent { by } => *by == txid,
            InputState::Unspent(_) => false,
        });
    if maybe_done && let Some(bytes) = reader.read(l.transfer(&txid)).await? {
        return Ok(Prefetched::Already(
            TransferRecord::decode(&bytes).map_err(corrupt)?,
        ));
    }
    for (input, state) in body.inputs.iter().zip(&inputs) {
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
    let mut wallets = BTreeMap::new();
    for (key, needs) in parties(t, ctx.ledger, &inputs) {
        let Some(bytes) = reader.read(l.wallet(&key)).await? else {
            continue; // the plan names it as unknown
        };
        let record = WalletRecord::decode(&bytes).map_err(corrupt)?;
        let limits = ctx.tiers.limits(record.tier);
        // Read (and so conflict on) a balance or a day total only where a cap needs it: the
        // balance of a capped wallet paid on net, the day total of a capped wallet paying on
        // net. Uncapped wallets, like a busy merchant's, take payments without conflicts,
        // and a payer's balance or a payee's day total is never read.
        let balance = if needs.balance && limits.balance_cap.is_some() {
            counter_amount(reader.read(l.balance(&key)).await?.as_deref()).map_err(corrupt)?
        } else {
            Amount::ZERO
        };
        let spent_today = if needs.spent_today && limits.daily_outgoing_cap.is_some() {
            counter_amount(reader.read(l.daily(&key, ctx.day)).await?.as_deref())
                .map_err(corrupt)?
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
    Ok(Prefetched::Ready(Snapshot { inputs, wallets }))
}

/// What committing `t` over `snapshot` writes, or why it is refused. Pure.
pub(crate) fn plan(
    ctx: &PlanContext<'_>,
    t: &Transfer,
    snapshot: &Snapshot,
) -> Result<Planned, Reject> {
    let l = ctx.layout;
    let txid = t.txid();
    let mut effects = check_stateful(
        t,
        &StatefulContext {
            ledger: ctx.ledger,
            now: UnixSeconds(ctx.now_ms / 1000),
            inputs: &snapshot.inputs,
            wallets: &snapshot.wallets,
            tiers: ctx.tiers,
        },
    )?;
    let mut writes = Vec::with_capacity(
        3 * effects.spent.len() + 3 * effects.created.len() + 4 * effects.wallet_changes.len() + 1,
    );
    if ctx.faults.create_from_nothing
        && let Some(&(first, output)) = effects.created.first()
    {
        // Planted: one more fen for the first payee, in an output no body names.
        let extra = Output {
            value: Amount::from_fen(1),
            ..output
        };
        let outpoint = OutPoint {
            index: u16::MAX,
            ..first
        };
        effects.created.push((outpoint, extra));
        writes.push(Write::Add(l.balance(&output.lock.owner()), 1));
    }
    let mut delta = Delta::default();
    // Spend.
    let mut utxo_delta: BTreeMap<PublicKey, i64> = BTreeMap::new();
    let spent_marker = OutputState::Spent { by: txid }.encode();
    for (i, (outpoint, state)) in effects.spent.iter().zip(&snapshot.inputs).enumerate() {
        let InputState::Unspent(output) = state else {
            unreachable!("prefetch refuses a missing or spent input");
        };
        if ctx.faults.skip_spend && i == 0 {
            continue; // planted: the input stays unspent
        }
        let owner = output.lock.owner();
        writes.push(Write::Set(l.output(outpoint), spent_marker.clone()));
        writes.push(Write::Clear(l.owned(&owner, outpoint)));
        *utxo_delta.entry(owner).or_default() -= 1;
        delta.spend(outpoint, output);
    }
    // Create.
    for (outpoint, output) in &effects.created {
        delta.create(outpoint, output);
        let owner = output.lock.owner();
        writes.push(Write::Set(
            l.output(outpoint),
            OutputState::Unspent(*output).encode(),
        ));
        writes.push(Write::Set(
            l.owned(&owner, outpoint),
            output.value.fen().to_be_bytes().to_vec(),
        ));
        *utxo_delta.entry(owner).or_default() += 1;
    }
    let mut outbound = 0u64;
    for (outpoint, output) in &effects.outbound {
        writes.push(Write::Set(l.outbox(outpoint), output.encode()));
        outbound += output.value.fen();
    }
    if outbound > 0 {
        writes.push(Write::Add(l.outbox_total(), outbound as i64));
        // Who is credited back if the move is refused for good.
        if let Some(InputState::Unspent(first)) = snapshot.inputs.first() {
            writes.push(Write::Set(
                l.refund(&txid),
                first.lock.owner().as_bytes().to_vec(),
            ));
        }
    }
    for (key, count) in utxo_delta {
        if count != 0 {
            writes.push(Write::Add(l.utxo_count(&key), count));
        }
    }
    let mut lines = Vec::with_capacity(effects.wallet_changes.len());
    for change in &effects.wallet_changes {
        let net = change.incoming.fen() as i64 - change.outgoing.fen() as i64;
        if net != 0 {
            writes.push(Write::Add(l.balance(&change.key), net));
        }
        if !change.outgoing.is_zero() {
            let capped = snapshot
                .wallets
                .get(&change.key)
                .is_some_and(|w| ctx.tiers.limits(w.tier).daily_outgoing_cap.is_some());
            if capped {
                writes.push(Write::Add(
                    l.daily(&change.key, ctx.day),
                    change.outgoing.fen() as i64,
                ));
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
            committed_at_ms: ctx.now_ms,
            memo: t.body().memo.clone(),
            tier_change: None,
        };
        writes.push(history_write(l, &change.key, &record, ctx.order));
        lines.push((change.key, record));
    }
    writes.push(transfer_write(
        l,
        t,
        ctx.now_ms,
        TransferKind::Local,
        ctx.order,
    ));
    Ok(Planned {
        writes,
        lines,
        delta,
    })
}

/// A wallet's history line, under the commit's position.
pub(crate) fn history_write(
    l: &Layout,
    key: &PublicKey,
    record: &HistoryRecord,
    order: u16,
) -> Write {
    let mut hk = l.history_prefix(key);
    let offset = hk.len() as u32;
    hk.extend_from_slice(&position([0; STAMP_LEN], order));
    Write::StampedKey(hk, offset, record.encode())
}

/// A transfer's record, its position filled in at commit.
pub(crate) fn transfer_write(
    l: &Layout,
    t: &Transfer,
    now_ms: u64,
    kind: TransferKind,
    order: u16,
) -> Write {
    let record = TransferRecord {
        position: position([0; STAMP_LEN], order),
        committed_at_ms: now_ms,
        kind,
        body: t.body_bytes().to_vec(),
        witnesses: TransferRecord::witnesses_of(t.witnesses()),
    };
    Write::StampedValue(l.transfer(&t.txid()), record.encode())
}

/// Writes a plan into `tx`.
pub(crate) fn write(tx: &mut Transaction, writes: Vec<Write>) -> Result<(), StoreError> {
    for w in writes {
        match w {
            Write::Set(k, v) => tx.set(k, v)?,
            Write::Clear(k) => tx.clear(k)?,
            Write::Add(k, d) => tx.atomic_add(k, d)?,
            Write::StampedKey(k, offset, v) => tx.set_versionstamped_key(k, offset, v)?,
            Write::StampedValue(k, v) => tx.set_versionstamped_value(k, v, 0)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
