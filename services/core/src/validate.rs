//! Validation of transfers, in the order `docs/design.md` fixes, returning one exhaustive [`Reject`].
//!
//! 1. structure and bounds ([`Transfer::decode`])
//! 2. duplicate inputs (and duplicate witness keys)
//! 3. zero or overflowing values
//! 4. conservation: Σ inputs = Σ outputs (no fees)
//! 5. expiry (`valid_until` against `now`)
//! 6. signatures (batched across transfers with [`check_stateless_batch`])
//! 7. inputs exist and are unspent on this ledger, with the value the body states
//! 8. each input's spending condition satisfied by the signers; no unused witness
//! 9. wallet status and KYC-tier limits
//!
//! 1–6 are the stateless part and run before any storage read; 7–9 are [`check_stateful`],
//! which takes what the ledger read (the outputs being spent and the wallets involved).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::Amount;
use crate::codec::DecodeError;
use crate::keys::{KeyError, LedgerId, PublicKey};
use crate::kyc::{TierTable, WalletState, WalletStatus};
use crate::signature;
use crate::transfer::{Lock, OutPoint, Output, Transfer, Txid, UnixSeconds};

mod facts;

/// Every business reason a transfer is refused. Infrastructure failures are not here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    // 1. structure and bounds
    #[error("malformed body: {0}")]
    Malformed(#[from] DecodeError),
    #[error("body is {len} bytes; at most {max} are allowed")]
    BodyTooLarge { len: usize, max: usize },
    #[error("transfer has no inputs")]
    NoInputs,
    #[error("transfer has no outputs")]
    NoOutputs,
    #[error("transfer has {count} inputs; at most {max} are allowed")]
    TooManyInputs { count: usize, max: usize },
    #[error("transfer has {count} outputs; at most {max} are allowed")]
    TooManyOutputs { count: usize, max: usize },
    #[error("memo is {len} bytes; at most {max} are allowed")]
    MemoTooLong { len: usize, max: usize },
    #[error("transfer carries no witness (signature)")]
    NoWitnesses,
    #[error("transfer has {count} witnesses; at most {max} are allowed")]
    TooManyWitnesses { count: usize, max: usize },
    #[error("witness {index}: public key is {len} bytes, expected 32")]
    WitnessKeyLength { index: usize, len: usize },
    #[error("witness {index}: signature is {len} bytes, expected 64")]
    WitnessSignatureLength { index: usize, len: usize },
    #[error("witness {index}: {error}")]
    WitnessKey { index: usize, error: KeyError },
    // 2. duplicates
    #[error("input {outpoint} is spent twice in the same transfer")]
    DuplicateInput { outpoint: OutPoint },
    #[error("two witnesses carry the same key {key}")]
    DuplicateWitness { key: PublicKey },
    // 3. values
    #[error("input {index} has zero value")]
    ZeroInput { index: usize },
    #[error("output {index} has zero value")]
    ZeroOutput { index: usize },
    #[error("values overflow when summed")]
    ValueOverflow,
    // 4. conservation
    #[error("value not conserved: inputs total {inputs}, outputs total {outputs}")]
    NotConserved { inputs: Amount, outputs: Amount },
    // 5. expiry
    #[error("transfer expired: valid until {valid_until}, now {now}")]
    Expired {
        valid_until: UnixSeconds,
        now: UnixSeconds,
    },
    // 6. signatures
    #[error("witness {index}: signature does not verify for this txid")]
    BadSignature { index: usize },
    // 7. inputs on this ledger
    #[error("input {outpoint} does not exist on this ledger")]
    InputMissing { outpoint: OutPoint },
    #[error("input {outpoint} was already spent by transfer {spent_by}")]
    InputSpent { outpoint: OutPoint, spent_by: Txid },
    #[error("input {outpoint} holds {actual}, but the transfer states {stated}")]
    InputValueMismatch {
        outpoint: OutPoint,
        stated: Amount,
        actual: Amount,
    },
    // 8. spending conditions
    #[error("input {input}: not signed by {needed}")]
    NotAuthorised { input: usize, needed: &'static str },
    #[error("input {input}: hold expired at {expires_at}; only the payer may reclaim it now")]
    HoldExpired {
        input: usize,
        expires_at: UnixSeconds,
    },
    #[error(
        "input {input}: hold is active until {expires_at}; the payer alone may reclaim it only after that"
    )]
    HoldActive {
        input: usize,
        expires_at: UnixSeconds,
    },
    #[error("input {input}: mandate expired at {expires_at}; only the owner may spend it now")]
    MandateExpired {
        input: usize,
        expires_at: UnixSeconds,
    },
    #[error(
        "mandate of owner {owner}: merchant takes {taken}, more than the per-payment maximum {per_payment_max}"
    )]
    MandateExceeded {
        owner: PublicKey,
        taken: Amount,
        per_payment_max: Amount,
    },
    #[error("witness {index} (key {key}) is not needed by any input")]
    UnusedWitness { index: usize, key: PublicKey },
    // 9. wallets and limits
    #[error("wallet key {key} is not open on {ledger}")]
    UnknownWallet { ledger: LedgerId, key: PublicKey },
    #[error("output {index}: {ledger} {why}; the central bank would refuse the move")]
    DestinationUnavailable {
        index: usize,
        ledger: LedgerId,
        why: &'static str,
    },
    #[error("wallet key {key} is frozen and cannot spend")]
    WalletFrozen { key: PublicKey },
    #[error("wallet key {key} is closed")]
    WalletClosed { key: PublicKey },
    #[error(
        "wallet key {key}: {limit} of {cap} exceeded by a payment of {amount} (would reach {would_be})"
    )]
    LimitExceeded {
        key: PublicKey,
        limit: LimitKind,
        cap: Amount,
        amount: Amount,
        would_be: Amount,
    },
}

impl Reject {
    /// A stable machine-readable code for the rejection (carried in result rows and
    /// metrics): several rejections of one family share a code.
    pub fn code(&self) -> &'static str {
        use Reject::*;
        match self {
            Malformed(_)
            | BodyTooLarge { .. }
            | NoInputs
            | NoOutputs
            | TooManyInputs { .. }
            | TooManyOutputs { .. }
            | MemoTooLong { .. }
            | NoWitnesses
            | TooManyWitnesses { .. }
            | WitnessKeyLength { .. }
            | WitnessSignatureLength { .. }
            | WitnessKey { .. } => "MALFORMED",
            DuplicateInput { .. } | DuplicateWitness { .. } => "DUPLICATE",
            ZeroInput { .. } | ZeroOutput { .. } | ValueOverflow => "BAD_VALUE",
            NotConserved { .. } => "NOT_CONSERVED",
            Expired { .. } => "EXPIRED",
            BadSignature { .. } => "BAD_SIGNATURE",
            InputMissing { .. } => "INPUT_MISSING",
            InputSpent { .. } => "INPUT_SPENT",
            InputValueMismatch { .. } => "INPUT_VALUE_MISMATCH",
            NotAuthorised { .. }
            | HoldExpired { .. }
            | HoldActive { .. }
            | MandateExpired { .. }
            | MandateExceeded { .. }
            | UnusedWitness { .. } => "NOT_AUTHORISED",
            UnknownWallet { .. } => "UNKNOWN_WALLET",
            DestinationUnavailable { .. } => "DESTINATION_UNAVAILABLE",
            WalletFrozen { .. } => "WALLET_FROZEN",
            WalletClosed { .. } => "WALLET_CLOSED",
            LimitExceeded { .. } => "LIMIT_EXCEEDED",
        }
    }
}

/// Which KYC-tier cap a transfer breached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    BalanceCap,
    PerPaymentCap,
    DailyOutgoingCap,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::BalanceCap => "balance cap",
            LimitKind::PerPaymentCap => "per-payment cap",
            LimitKind::DailyOutgoingCap => "daily outgoing cap",
        })
    }
}

/// Checks 2–6 for one transfer, verifying each signature on its own
/// ([`signature::verify`]).
pub fn check_stateless(transfer: &Transfer, now: UnixSeconds) -> Result<(), Reject> {
    check_values(transfer, now)?;
    verify_each_witness(transfer)
}

/// The stateless checks for transfers another party already committed (the central bank
/// settling a bank's outbox), batched like [`check_stateless_batch`]: everything it checks
/// except expiry, since a committed transfer may be delivered after its `valid_until`.
pub fn check_committed_batch<'a, I>(transfers: I) -> Vec<Result<(), Reject>>
where
    I: IntoIterator<Item = &'a Transfer>,
{
    batch_with(transfers, |t| t.body().valid_until)
}

/// Checks 2–6 for many transfers, verifying all their signatures in one Ed25519 batch
/// ([`signature::verify_many`]: a failed batch is bisected to find the bad ones). Each
/// transfer gets the verdict [`check_stateless`] would give it.
pub fn check_stateless_batch<'a, I>(transfers: I, now: UnixSeconds) -> Vec<Result<(), Reject>>
where
    I: IntoIterator<Item = &'a Transfer>,
{
    batch_with(transfers, |_| now)
}

fn batch_with<'a, I>(
    transfers: I,
    now: impl Fn(&Transfer) -> UnixSeconds,
) -> Vec<Result<(), Reject>>
where
    I: IntoIterator<Item = &'a Transfer>,
{
    let transfers: Vec<&Transfer> = transfers.into_iter().collect();
    let mut results: Vec<Result<(), Reject>> =
        transfers.iter().map(|t| check_values(t, now(t))).collect();
    let passing: Vec<usize> = (0..transfers.len())
        .filter(|&i| results[i].is_ok())
        .collect();
    if passing.is_empty() {
        return results;
    }
    let messages: Vec<[u8; 43]> = passing
        .iter()
        .map(|&i| transfers[i].txid().signing_message())
        .collect();
    let mut items = Vec::new();
    for (slot, &i) in passing.iter().enumerate() {
        for witness in transfers[i].witnesses() {
            items.push(signature::Item {
                key: witness.checked_key(),
                message: &messages[slot],
                signature: &witness.signature,
            });
        }
    }
    let verdicts = signature::verify_many(&items);
    let mut next = verdicts.into_iter();
    for &i in &passing {
        let mut bad = None;
        for index in 0..transfers[i].witnesses().len() {
            let ok = next.next().expect("one verdict per witness");
            if !ok && bad.is_none() {
                bad = Some(index);
            }
        }
        if let Some(index) = bad {
            results[i] = Err(Reject::BadSignature { index });
        }
    }
    results
}

fn check_values(transfer: &Transfer, now: UnixSeconds) -> Result<(), Reject> {
    let body = transfer.body();
    // 2. duplicates
    let mut seen = HashSet::with_capacity(body.inputs.len());
    for input in &body.inputs {
        if !seen.insert(input.outpoint) {
            return Err(Reject::DuplicateInput {
                outpoint: input.outpoint,
            });
        }
    }
    let witnesses = transfer.witnesses();
    for (i, w) in witnesses.iter().enumerate() {
        if witnesses[..i].iter().any(|o| o.key == w.key) {
            return Err(Reject::DuplicateWitness { key: w.key });
        }
    }
    // 3. zero or overflowing values
    if let Some(index) = body.inputs.iter().position(|i| i.value.is_zero()) {
        return Err(Reject::ZeroInput { index });
    }
    if let Some(index) = body.outputs.iter().position(|o| o.value.is_zero()) {
        return Err(Reject::ZeroOutput { index });
    }
    let inputs =
        Amount::checked_sum(body.inputs.iter().map(|i| i.value)).ok_or(Reject::ValueOverflow)?;
    let outputs =
        Amount::checked_sum(body.outputs.iter().map(|o| o.value)).ok_or(Reject::ValueOverflow)?;
    // 4. conservation
    if inputs != outputs {
        return Err(Reject::NotConserved { inputs, outputs });
    }
    // 5. expiry: valid through the second `valid_until`.
    if now > body.valid_until {
        return Err(Reject::Expired {
            valid_until: body.valid_until,
            now,
        });
    }
    Ok(())
}

fn verify_each_witness(transfer: &Transfer) -> Result<(), Reject> {
    let message = transfer.txid().signing_message();
    for (index, witness) in transfer.witnesses().iter().enumerate() {
        if !signature::verify(witness.checked_key(), &message, &witness.signature) {
            return Err(Reject::BadSignature { index });
        }
    }
    Ok(())
}

/// What the ledger knows about one input's outpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputState {
    Unspent(Output),
    Spent { by: Txid },
    Missing,
}

/// What [`check_stateful`] needs, prefetched by the ledger.
#[derive(Clone, Copy, Debug)]
pub struct StatefulContext<'a> {
    /// The ledger validating (and holding the inputs).
    pub ledger: LedgerId,
    pub now: UnixSeconds,
    /// One entry per body input, in order.
    pub inputs: &'a [InputState],
    /// Every wallet of this ledger that [`parties`] names.
    pub wallets: &'a BTreeMap<PublicKey, WalletState>,
    pub tiers: &'a TierTable,
}

/// What a valid transfer does, for the ledger to write in one store transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effects {
    pub spent: Vec<OutPoint>,
    /// Outputs this ledger now holds.
    pub created: Vec<(OutPoint, Output)>,
    /// Outputs for other ledgers, to be delivered through the central bank.
    pub outbound: Vec<(OutPoint, Output)>,
    /// Per wallet of this ledger: net change of balance.
    pub wallet_changes: Vec<WalletChange>,
}

/// Net effect of a transfer on one wallet of the validating ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletChange {
    pub key: PublicKey,
    /// Net value leaving the wallet (counts toward per-payment and daily caps).
    pub outgoing: Amount,
    /// Net value arriving.
    pub incoming: Amount,
}

/// Which of a party's limit counters [`check_stateful`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterReads {
    /// The wallet pays out on net: its outgoing total of the day (daily cap).
    pub spent_today: bool,
    /// The wallet is paid on net: its balance (balance cap).
    pub balance: bool,
}

/// The wallets of `ledger` whose state [`check_stateful`] reads — owners of the inputs being
/// spent and of the outputs this ledger will hold — each with the limit counters it reads
/// (those of its net direction; both if the sums overflow, which the check then refuses).
pub fn parties(
    transfer: &Transfer,
    ledger: LedgerId,
    inputs: &[InputState],
) -> BTreeMap<PublicKey, CounterReads> {
    let spent = inputs.iter().filter_map(|state| match state {
        InputState::Unspent(output) => Some(output),
        _ => None,
    });
    let (flows, overflow) = net_flows(transfer, ledger, spent);
    flows
        .into_iter()
        .map(|(key, (out_total, in_total))| {
            let reads = CounterReads {
                spent_today: overflow || out_total > in_total,
                balance: overflow || in_total > out_total,
            };
            (key, reads)
        })
        .collect()
}

/// Per wallet of `ledger`: the value `spent` takes out of it and the value `transfer`'s
/// outputs held by `ledger` put into it; and whether a sum overflowed (it then stops short).
fn net_flows<'a>(
    transfer: &Transfer,
    ledger: LedgerId,
    spent: impl IntoIterator<Item = &'a Output>,
) -> (BTreeMap<PublicKey, (Amount, Amount)>, bool) {
    let mut flows: BTreeMap<PublicKey, (Amount, Amount)> = BTreeMap::new();
    let mut overflow = false;
    let mut add = |sum: &mut Amount, value: Amount| match sum.checked_add(value) {
        Some(total) => *sum = total,
        None => overflow = true,
    };
    for output in spent {
        add(
            &mut flows.entry(output.lock.owner()).or_default().0,
            output.value,
        );
    }
    for output in &transfer.body().outputs {
        if output.ledger == ledger {
            add(
                &mut flows.entry(output.lock.owner()).or_default().1,
                output.value,
            );
        }
    }
    (flows, overflow)
}

/// Checks 7–9 and returns the effects to write. Assumes [`check_stateless`] passed.
pub fn check_stateful(transfer: &Transfer, ctx: &StatefulContext<'_>) -> Result<Effects, Reject> {
    let body = transfer.body();
    assert_eq!(
        ctx.inputs.len(),
        body.inputs.len(),
        "one InputState per input"
    );

    // 7. inputs exist, are unspent and hold what the body states.
    let mut spent_outputs = Vec::with_capacity(body.inputs.len());
    for (input, state) in body.inputs.iter().zip(ctx.inputs) {
        let outpoint = input.outpoint;
        match *state {
            InputState::Missing => return Err(Reject::InputMissing { outpoint }),
            InputState::Spent { by } => {
                return Err(Reject::InputSpent {
                    outpoint,
                    spent_by: by,
                });
            }
            InputState::Unspent(output) => {
                if output.ledger != ctx.ledger {
                    return Err(Reject::InputMissing { outpoint });
                }
                if output.value != input.value {
                    return Err(Reject::InputValueMismatch {
                        outpoint,
                        stated: input.value,
                        actual: output.value,
                    });
                }
                spent_outputs.push(output);
            }
        }
    }

    // 8. spending conditions.
    let signers: BTreeSet<PublicKey> = transfer.witnesses().iter().map(|w| w.key).collect();
    check_conditions(transfer, &spent_outputs, &signers, ctx.now)?;

    // 9. wallet status and tier limits.
    let wallet_changes = check_wallets(transfer, &spent_outputs, ctx)?;

    let mut created = Vec::new();
    let mut outbound = Vec::new();
    for (index, output) in body.outputs.iter().enumerate() {
        let outpoint = transfer.outpoint(index as u16);
        if output.ledger == ctx.ledger {
            created.push((outpoint, *output));
        } else {
            outbound.push((outpoint, *output));
        }
    }
    Ok(Effects {
        spent: body.inputs.iter().map(|i| i.outpoint).collect(),
        created,
        outbound,
        wallet_changes,
    })
}

fn check_conditions(
    transfer: &Transfer,
    spent: &[Output],
    signers: &BTreeSet<PublicKey>,
    now: UnixSeconds,
) -> Result<(), Reject> {
    let signed = |k: &PublicKey| signers.contains(k);
    let mut used: BTreeSet<PublicKey> = BTreeSet::new();
    // Mandates the merchant spends alone: lock → value taken out of it.
    let mut merchant_mandates: Vec<(Lock, Amount)> = Vec::new();
    for (input, output) in spent.iter().enumerate() {
        match output.lock {
            Lock::Key(key) => {
                if !signed(&key) {
                    return Err(Reject::NotAuthorised {
                        input,
                        needed: "the owner of the key",
                    });
                }
                used.insert(key);
            }
            Lock::Hold {
                payer,
                payee,
                expires_at,
            } => {
                let active = now < expires_at;
                match (signed(&payer), signed(&payee)) {
                    (true, true) => {}
                    (false, true) if active => {}
                    (true, false) if !active => {}
                    (false, true) => return Err(Reject::HoldExpired { input, expires_at }),
                    (true, false) => return Err(Reject::HoldActive { input, expires_at }),
                    (false, false) => {
                        return Err(Reject::NotAuthorised {
                            input,
                            needed: "the hold's payee (before expiry) or payer (after expiry)",
                        });
                    }
                }
                used.extend([payer, payee].into_iter().filter(|k| signed(k)));
            }
            Lock::Mandate {
                owner,
                merchant,
                expires_at,
                ..
            } => {
                if signed(&owner) {
                    used.insert(owner);
                    if signed(&merchant) {
                        used.insert(merchant);
                    }
                } else if signed(&merchant) {
                    if now >= expires_at {
                        return Err(Reject::MandateExpired { input, expires_at });
                    }
                    used.insert(merchant);
                    match merchant_mandates
                        .iter_mut()
                        .find(|(l, _)| *l == output.lock)
                    {
                        Some((_, total)) => {
                            *total = total
                                .checked_add(output.value)
                                .ok_or(Reject::ValueOverflow)?
                        }
                        None => merchant_mandates.push((output.lock, output.value)),
                    }
                } else {
                    return Err(Reject::NotAuthorised {
                        input,
                        needed: "the mandate's owner, or its merchant before expiry",
                    });
                }
            }
        }
    }
    for (lock, spent_total) in merchant_mandates {
        let Lock::Mandate {
            owner,
            per_payment_max,
            ..
        } = lock
        else {
            unreachable!("only mandate locks are collected");
        };
        let kept = Amount::checked_sum(
            transfer
                .body()
                .outputs
                .iter()
                .filter(|o| o.lock == lock)
                .map(|o| o.value),
        )
        .ok_or(Reject::ValueOverflow)?;
        let taken = spent_total.saturating_sub(kept);
        if taken > per_payment_max {
            return Err(Reject::MandateExceeded {
                owner,
                taken,
                per_payment_max,
            });
        }
    }
    for (index, witness) in transfer.witnesses().iter().enumerate() {
        if !used.contains(&witness.key) {
            return Err(Reject::UnusedWitness {
                index,
                key: witness.key,
            });
        }
    }
    Ok(())
}

fn check_wallets(
    transfer: &Transfer,
    spent: &[Output],
    ctx: &StatefulContext<'_>,
) -> Result<Vec<WalletChange>, Reject> {
    // Net flow per wallet of this ledger: (out of it, into it).
    let (flows, overflow) = net_flows(transfer, ctx.ledger, spent);
    if overflow {
        return Err(Reject::ValueOverflow);
    }
    let mut changes = Vec::with_capacity(flows.len());
    for (key, (out_total, in_total)) in flows {
        let wallet = ctx.wallets.get(&key).ok_or(Reject::UnknownWallet {
            ledger: ctx.ledger,
            key,
        })?;
        let limits = ctx.tiers.limits(wallet.tier);
        let spends = !out_total.is_zero();
        match wallet.status {
            WalletStatus::Closed => return Err(Reject::WalletClosed { key }),
            WalletStatus::Frozen if spends => return Err(Reject::WalletFrozen { key }),
            WalletStatus::Frozen | WalletStatus::Active => {}
        }
        let outgoing = out_total.saturating_sub(in_total);
        let incoming = in_total.saturating_sub(out_total);
        if !outgoing.is_zero() {
            if let Some(cap) = limits.per_payment_cap
                && outgoing > cap
            {
                return Err(Reject::LimitExceeded {
                    key,
                    limit: LimitKind::PerPaymentCap,
                    cap,
                    amount: outgoing,
                    would_be: outgoing,
                });
            }
            if let Some(cap) = limits.daily_outgoing_cap {
                let would_be = wallet
                    .spent_today
                    .checked_add(outgoing)
                    .ok_or(Reject::ValueOverflow)?;
                if would_be > cap {
                    return Err(Reject::LimitExceeded {
                        key,
                        limit: LimitKind::DailyOutgoingCap,
                        cap,
                        amount: outgoing,
                        would_be,
                    });
                }
            }
        }
        if !incoming.is_zero()
            && let Some(cap) = limits.balance_cap
        {
            let would_be = wallet
                .balance
                .checked_add(incoming)
                .ok_or(Reject::ValueOverflow)?;
            if would_be > cap {
                return Err(Reject::LimitExceeded {
                    key,
                    limit: LimitKind::BalanceCap,
                    cap,
                    amount: incoming,
                    would_be,
                });
            }
        }
        changes.push(WalletChange {
            key,
            outgoing,
            incoming,
        });
    }
    Ok(changes)
}
