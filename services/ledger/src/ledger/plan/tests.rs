//! Property tests of the pure pair without a store: prefetch reads from a map, the plan's
//! writes are applied to the same map, and every figure the tests check is computed apart
//! from the counters the plan maintains — by scanning the output rows and the owner index,
//! and by an oracle that keeps its own coins, balances and day totals.

use std::collections::{BTreeMap, BTreeSet};

use cbdc_core::{
    Amount, Keypair, KycTier, Lock, OutPoint, Output, TierLimits, TransferBuilder, Txid,
    WalletStatus,
};
use proptest::prelude::*;

use super::*;

const LEDGER: LedgerId = LedgerId(1);
const NOW_MS: u64 = 1_800_000_000_000;
const DAY: i64 = 20_833;

/// Small caps, so that random payments meet them often, at and around the boundary.
fn tiers() -> TierTable {
    let caps = |balance: u64, per_payment: u64, daily: u64| TierLimits {
        balance_cap: Some(Amount::from_fen(balance)),
        per_payment_cap: Some(Amount::from_fen(per_payment)),
        daily_outgoing_cap: Some(Amount::from_fen(daily)),
    };
    TierTable {
        class1: TierLimits::UNLIMITED,
        class2: caps(5_000, 2_000, 3_000),
        class3: caps(1_500, 600, 900),
        class4_anonymous: caps(1_000, 400, 700),
    }
}

/// Wallet `i`: its tier and status.
const WALLETS: [(KycTier, WalletStatus); 6] = [
    (KycTier::Class1, WalletStatus::Active),
    (KycTier::Class2, WalletStatus::Active),
    (KycTier::Class3, WalletStatus::Active),
    (KycTier::Class4Anonymous, WalletStatus::Active),
    (KycTier::Class3, WalletStatus::Active),
    (KycTier::Class1, WalletStatus::Frozen),
];

fn key(i: usize) -> Keypair {
    Keypair::from_seed(&[i as u8 + 1; 32])
}

/// The store, as a map.
#[derive(Default)]
struct Model {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    commits: u64,
    /// Every key read, in order.
    reads: Vec<Vec<u8>>,
}

impl Reader for Model {
    fn read(
        &mut self,
        key: Vec<u8>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        let v = self.kv.get(&key).cloned();
        self.reads.push(key);
        async move { Ok(v) }
    }
}

impl Model {
    /// Applies a plan's writes as one commit, stamping what the store would stamp.
    fn commit(&mut self, writes: Vec<Write>) {
        self.commits += 1;
        let mut stamp = [0u8; 10];
        stamp[..8].copy_from_slice(&self.commits.to_be_bytes());
        for w in writes {
            match w {
                Write::Set(k, v) => {
                    self.kv.insert(k, v);
                }
                Write::Clear(k) => {
                    self.kv.remove(&k);
                }
                Write::Add(k, d) => {
                    let v = cbdc_store::counter(self.kv.get(&k).map(Vec::as_slice)) + d;
                    self.kv.insert(k, v.to_le_bytes().to_vec());
                }
                Write::StampedKey(mut k, offset, v) => {
                    k[offset as usize..offset as usize + 10].copy_from_slice(&stamp);
                    self.kv.insert(k, v);
                }
                Write::StampedValue(k, mut v) => {
                    v[..10].copy_from_slice(&stamp);
                    self.kv.insert(k, v);
                }
            }
        }
    }

    fn counter(&self, k: Vec<u8>) -> i64 {
        cbdc_store::counter(self.kv.get(&k).map(Vec::as_slice))
    }

    fn range(&self, (b, e): (Vec<u8>, Vec<u8>)) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.kv.range(b..e)
    }
}

/// What the oracle knows, kept apart from the model's counters.
#[derive(Default)]
struct Oracle {
    unspent: BTreeMap<OutPoint, (usize, u64)>,
    spent: BTreeSet<OutPoint>,
    balance: BTreeMap<usize, u64>,
    spent_today: BTreeMap<usize, u64>,
}

/// Plans at `NOW_MS`, first in their commit.
fn ctx<'a>(layout: &'a Layout, tiers: &'a TierTable) -> PlanContext<'a> {
    PlanContext {
        layout,
        ledger: LEDGER,
        tiers,
        now_ms: NOW_MS,
        day: DAY,
        order: 0,
        faults: Default::default(),
    }
}

struct World {
    layout: Layout,
    tiers: TierTable,
    model: Model,
    oracle: Oracle,
    total: u64,
    /// The plans' deltas folded, as the sequencer folds the commit log's.
    deltas: cbdc_core::unspent::Delta,
}

impl World {
    /// Opens every wallet and gives each three coins.
    fn new() -> World {
        let layout = Layout::new(LEDGER);
        let mut w = World {
            layout,
            tiers: tiers(),
            model: Model::default(),
            oracle: Oracle::default(),
            total: 0,
            deltas: Default::default(),
        };
        for (i, (tier, status)) in WALLETS.iter().enumerate() {
            let pk = key(i).public();
            let record = WalletRecord {
                status: *status,
                tier: *tier,
                opened_at_ms: 0,
                phone_hash: None,
            };
            let mut writes = vec![Write::Set(w.layout.wallet(&pk), record.encode())];
            for c in 0..3u16 {
                let value = 100 + 50 * (i as u64) + 10 * u64::from(c);
                let outpoint = OutPoint {
                    txid: Txid([0xF0 ^ i as u8; 32]),
                    index: c,
                };
                let output = Output {
                    ledger: LEDGER,
                    value: Amount::from_fen(value),
                    lock: Lock::Key(pk),
                };
                writes.push(Write::Set(
                    w.layout.output(&outpoint),
                    OutputState::Unspent(output).encode(),
                ));
                writes.push(Write::Set(
                    w.layout.owned(&pk, &outpoint),
                    value.to_be_bytes().to_vec(),
                ));
                writes.push(Write::Add(w.layout.utxo_count(&pk), 1));
                writes.push(Write::Add(w.layout.balance(&pk), value as i64));
                w.oracle.unspent.insert(outpoint, (i, value));
                *w.oracle.balance.entry(i).or_default() += value;
                w.total += value;
                w.deltas.create(&outpoint, &output);
            }
            w.model.commit(writes);
        }
        w
    }

    fn run(&mut self, t: &Transfer) -> Result<Prefetched, TxError<ServiceError>> {
        let ctx = ctx(&self.layout, &self.tiers);
        futures::executor::block_on(prefetch(&mut self.model, &ctx, t))
    }

    /// Every figure, recomputed from the rows, against the counters and the oracle.
    fn check(&self) {
        let mut by_owner: BTreeMap<PublicKey, (u64, i64)> = BTreeMap::new();
        let mut sum = 0u64;
        let mut set = cbdc_core::unspent::SetHash::default();
        for (k, v) in self.model.range(self.layout.outputs()) {
            if let OutputState::Unspent(o) = OutputState::decode(v).unwrap() {
                let e = by_owner.entry(o.lock.owner()).or_default();
                e.0 += o.value.fen();
                e.1 += 1;
                sum += o.value.fen();
                set.insert(&self.layout.output_outpoint(k).unwrap(), &o);
            }
        }
        assert_eq!(sum, self.total, "value was created or destroyed");
        // What the plans said they did to the unspent outputs is what the rows show.
        assert_eq!(
            self.deltas.net(),
            i128::from(sum),
            "the plans' deltas vs the unspent rows"
        );
        assert_eq!(
            self.deltas.set, set,
            "the plans' set hash vs the unspent rows"
        );
        for (i, (tier, _)) in WALLETS.iter().enumerate() {
            let pk = key(i).public();
            let (value, count) = by_owner.get(&pk).copied().unwrap_or_default();
            assert_eq!(
                self.model.counter(self.layout.balance(&pk)),
                value as i64,
                "wallet {i}: balance counter vs its unspent outputs"
            );
            assert_eq!(
                value,
                self.oracle.balance.get(&i).copied().unwrap_or_default(),
                "wallet {i}: unspent outputs vs the oracle"
            );
            let indexed: Vec<_> = self.model.range(self.layout.owned_range(&pk)).collect();
            assert_eq!(
                self.model.counter(self.layout.utxo_count(&pk)),
                count,
                "wallet {i}: output count"
            );
            assert_eq!(indexed.len() as i64, count, "wallet {i}: owner index");
            if *tier != KycTier::Class1 {
                assert_eq!(
                    self.model.counter(self.layout.daily(&pk, DAY)),
                    self.oracle.spent_today.get(&i).copied().unwrap_or_default() as i64,
                    "wallet {i}: day total"
                );
            }
        }
    }
}

/// One payment attempt: from `payer` to `payee`, and ways to make it wrong.
#[derive(Clone, Debug)]
struct Attempt {
    payer: usize,
    payee: usize,
    amount: u64,
    /// Spend a coin spent before (a double spend), if there is one.
    respend: Option<usize>,
    /// State one input's value wrong by one fen.
    misstate: bool,
}

fn attempts() -> impl Strategy<Value = Vec<Attempt>> {
    let one = (
        0..WALLETS.len(),
        1..WALLETS.len(),
        1u64..1_200,
        prop::option::weighted(0.15, 0usize..64),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(payer, offset, amount, respend, misstate)| Attempt {
            payer,
            payee: (payer + offset) % WALLETS.len(),
            amount,
            respend,
            misstate,
        });
    prop::collection::vec(one, 1..40)
}

/// What the oracle says of an attempt that spends only unspent coins with true values.
fn oracle_accepts(w: &World, a: &Attempt) -> bool {
    let limits = |i: usize| w.tiers.limits(WALLETS[i].0);
    if WALLETS[a.payer].1 == WalletStatus::Frozen {
        return false;
    }
    let payer = limits(a.payer);
    if payer.per_payment_cap.is_some_and(|c| a.amount > c.fen()) {
        return false;
    }
    let today = w
        .oracle
        .spent_today
        .get(&a.payer)
        .copied()
        .unwrap_or_default();
    if payer
        .daily_outgoing_cap
        .is_some_and(|c| today + a.amount > c.fen())
    {
        return false;
    }
    let balance = w.oracle.balance.get(&a.payee).copied().unwrap_or_default();
    limits(a.payee)
        .balance_cap
        .is_none_or(|c| balance + a.amount <= c.fen())
}

/// Tries an attempt; returns whether it committed.
fn attempt(w: &mut World, a: &Attempt) -> bool {
    let payer = key(a.payer);
    let mut coins: Vec<(OutPoint, u64)> = w
        .oracle
        .unspent
        .iter()
        .filter(|(_, (owner, _))| *owner == a.payer)
        .map(|(o, (_, v))| (*o, *v))
        .collect();
    coins.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    let mut chosen = Vec::new();
    let mut sum = 0;
    for c in coins {
        if sum >= a.amount {
            break;
        }
        sum += c.1;
        chosen.push(c);
    }
    if sum < a.amount {
        return false; // nothing to try: the payer cannot cover it
    }
    let respent = a.respend.and_then(|n| {
        let spent: Vec<_> = w.oracle.spent.iter().copied().collect();
        (!spent.is_empty()).then(|| spent[n % spent.len()])
    });
    let mut b = TransferBuilder::new(UnixSeconds(NOW_MS / 1000 + 600));
    for (i, (o, v)) in chosen.iter().enumerate() {
        let stated = if a.misstate && i == 0 { v + 1 } else { *v };
        b = b.input(*o, Amount::from_fen(stated));
    }
    let change = sum - a.amount;
    b = b.output(
        LEDGER,
        Amount::from_fen(a.amount),
        Lock::Key(key(a.payee).public()),
    );
    if let Some(o) = respent {
        // The respent coin's value (known from its row) goes back to the payer.
        let Some(v) = w.model.kv.get(&w.layout.output(&o)) else {
            unreachable!("a spent coin keeps its row");
        };
        let OutputState::Spent { .. } = OutputState::decode(v).unwrap() else {
            panic!("a coin the oracle spent is not spent in the store");
        };
        b = b.input(o, Amount::from_fen(1));
        b = b.output(LEDGER, Amount::from_fen(1), Lock::Key(payer.public()));
    }
    if change > 0 {
        b = b.output(LEDGER, Amount::from_fen(change), Lock::Key(payer.public()));
    }
    let t = b.sign(&[&payer]).expect("signs");
    let prefetched = w.run(&t);
    let planned = match prefetched {
        Err(TxError::Abort(ServiceError::Reject(r))) => Err(r),
        Err(e) => panic!("prefetch failed: {e:?}"),
        Ok(Prefetched::Already(_)) => panic!("a fresh transfer was found committed"),
        Ok(Prefetched::Ready(snapshot)) => plan(&ctx(&w.layout, &w.tiers), &t, &snapshot),
    };
    // The oracle's verdict, computed without the ledger's code.
    let expected = if respent.is_some() {
        Err("InputSpent")
    } else if a.misstate {
        Err("InputValueMismatch")
    } else if oracle_accepts(w, a) {
        Ok(())
    } else {
        Err("a wallet status or limit")
    };
    match (&planned, expected) {
        (Ok(_), Ok(())) => {}
        (Err(Reject::InputSpent { .. }), Err("InputSpent")) => {}
        (Err(Reject::InputValueMismatch { .. }), Err("InputValueMismatch")) => {}
        (
            Err(Reject::LimitExceeded { .. } | Reject::WalletFrozen { .. }),
            Err("a wallet status or limit"),
        ) => {}
        (got, want) => panic!("{a:?}: the plan says {got:?}, the oracle {want:?}"),
    }
    let Ok(planned) = planned else {
        return false;
    };
    w.deltas.combine(&planned.delta);
    w.model.commit(planned.writes);
    let txid = t.txid();
    for (o, v) in &chosen {
        w.oracle.unspent.remove(o);
        w.oracle.spent.insert(*o);
        *w.oracle.balance.get_mut(&a.payer).unwrap() -= v;
    }
    for (index, o) in t.body().outputs.iter().enumerate() {
        let owner = if o.lock == Lock::Key(payer.public()) {
            a.payer
        } else {
            a.payee
        };
        let outpoint = OutPoint {
            txid,
            index: index as u16,
        };
        w.oracle.unspent.insert(outpoint, (owner, o.value.fen()));
        *w.oracle.balance.entry(owner).or_default() += o.value.fen();
    }
    if WALLETS[a.payer].0 != KycTier::Class1 {
        *w.oracle.spent_today.entry(a.payer).or_default() += a.amount;
    }
    // Committed once, found again: a replay is answered from its record.
    match w.run(&t) {
        Ok(Prefetched::Already(record)) => assert_eq!(record.body, t.body_bytes()),
        other => panic!("a committed transfer was not found again: {other:?}"),
    }
    // Every input is spent by this transfer.
    for (o, _) in &chosen {
        let row = OutputState::decode(&w.model.kv[&w.layout.output(o)]).unwrap();
        assert_eq!(row, OutputState::Spent { by: txid });
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random payments, double spends and misstated inputs between wallets of every tier:
    /// the plan accepts exactly what the oracle accepts, value is conserved, and every
    /// counter equals what the rows say.
    #[test]
    fn plans_conserve_value_and_keep_counters_equal_to_the_rows(attempts in attempts()) {
        let mut w = World::new();
        w.check();
        for a in &attempts {
            attempt(&mut w, a);
            w.check();
        }
    }
}

/// The caps at their boundary: a payment that brings the payee exactly to its balance cap,
/// the payer exactly to its per-payment and daily caps, is accepted; one fen more is not.
#[test]
fn caps_hold_at_exactly_the_cap_and_refuse_one_fen_more() {
    // Wallet 3 (anonymous: balance cap 1,000) holds 250 + 260 + 270 = 780.
    let mut w = World::new();
    let over = Attempt {
        payer: 0,
        payee: 3,
        amount: 221,
        respend: None,
        misstate: false,
    };
    assert!(!attempt(&mut w, &over), "one fen over the balance cap");
    let exact = Attempt {
        amount: 220,
        ..over
    };
    assert!(attempt(&mut w, &exact), "exactly at the balance cap");
    w.check();

    // Wallet 2 (class 3: per payment 600, daily 900) holds 200 + 210 + 220 = 630 and pays
    // wallet 0, uncapped.
    let mut w = World::new();
    let per_payment = Attempt {
        payer: 2,
        payee: 0,
        amount: 601,
        respend: None,
        misstate: false,
    };
    assert!(
        !attempt(&mut w, &per_payment),
        "one fen over the per-payment cap"
    );
    let per_payment = Attempt {
        amount: 600,
        ..per_payment
    };
    assert!(
        attempt(&mut w, &per_payment),
        "exactly at the per-payment cap"
    );
    let per_payment = Attempt {
        amount: 301,
        ..per_payment
    };
    // 600 spent today; wallet 0 refunds it so wallet 2 can spend up to the daily cap.
    let fund = Attempt {
        payer: 0,
        payee: 2,
        amount: 600,
        ..per_payment
    };
    assert!(attempt(&mut w, &fund));
    let one_over_daily = Attempt {
        amount: 900 - 600 + 1,
        ..per_payment
    };
    assert!(
        !attempt(&mut w, &one_over_daily),
        "one fen over the daily cap"
    );
    let exactly_daily = Attempt {
        amount: 900 - 600,
        ..per_payment
    };
    assert!(attempt(&mut w, &exactly_daily), "exactly at the daily cap");
    w.check();
}

/// A payment reads what its checks need and nothing more: the input, both wallets, the
/// payer's day total (it pays out) and the payee's balance (it is paid); not the payer's
/// balance nor the payee's day total, which no cap checks here and which would only add
/// reads and conflicts.
#[test]
fn a_payment_reads_only_the_counters_its_caps_check() {
    // Wallet 2 (class 3) and wallet 3 (anonymous) are capped every way.
    let mut w = World::new();
    w.model.reads.clear();
    let pay = Attempt {
        payer: 2,
        payee: 3,
        amount: 100,
        respend: None,
        misstate: false,
    };
    assert!(attempt(&mut w, &pay));
    let (payer, payee) = (key(2).public(), key(3).public());
    let reads: BTreeSet<_> = w.model.reads.iter().cloned().collect();
    assert!(reads.contains(&w.layout.daily(&payer, DAY)));
    assert!(reads.contains(&w.layout.balance(&payee)));
    assert!(
        !reads.contains(&w.layout.balance(&payer)),
        "the payer's balance"
    );
    assert!(
        !reads.contains(&w.layout.daily(&payee, DAY)),
        "the payee's day total"
    );
    // The payment: one input, two wallets, two counters; then its replay, answered from its
    // record after reading its input.
    assert_eq!(w.model.reads.len(), 5 + 2, "{:?}", w.model.reads);

    // A wallet paying itself neither pays out nor is paid on net: no counter is read.
    let mut w = World::new();
    w.model.reads.clear();
    assert!(attempt(&mut w, &Attempt { payee: 2, ..pay }));
    assert_eq!(w.model.reads.len(), 2 + 2, "{:?}", w.model.reads);
}

/// The plan judges locks at the context's time: a hold the payee captures before it expires
/// and one the payer takes back after it expired are both accepted at `NOW_MS`.
#[test]
fn holds_are_judged_at_the_plans_time() {
    let mut w = World::new();
    let (payer, payee) = (key(0), key(1));
    let now_s = NOW_MS / 1000;
    let mut writes = Vec::new();
    let mut holds = Vec::new();
    for (index, expires_at) in [(0u16, now_s + 60), (1, now_s - 60)] {
        let outpoint = OutPoint {
            txid: Txid([0xAB; 32]),
            index,
        };
        let output = Output {
            ledger: LEDGER,
            value: Amount::from_fen(50),
            lock: Lock::Hold {
                payer: payer.public(),
                payee: payee.public(),
                expires_at: UnixSeconds(expires_at),
            },
        };
        writes.push(Write::Set(
            w.layout.output(&outpoint),
            OutputState::Unspent(output).encode(),
        ));
        holds.push(outpoint);
    }
    w.model.commit(writes);
    let spend = |outpoint: OutPoint, to: &Keypair, signer: &Keypair| {
        TransferBuilder::new(UnixSeconds(now_s + 600))
            .input(outpoint, Amount::from_fen(50))
            .output(LEDGER, Amount::from_fen(50), Lock::Key(to.public()))
            .sign(&[signer])
            .unwrap()
    };
    for (outpoint, signer, what) in [
        (holds[0], &payee, "the payee captures an active hold"),
        (holds[1], &payer, "the payer takes back an expired hold"),
    ] {
        let t = spend(outpoint, signer, signer);
        let Ok(Prefetched::Ready(snapshot)) = w.run(&t) else {
            panic!("{what}: prefetch failed");
        };
        let planned = plan(&ctx(&w.layout, &w.tiers), &t, &snapshot);
        assert!(planned.is_ok(), "{what}: {planned:?}");
    }
    // And the other way round, each is refused.
    for (outpoint, signer, what) in [
        (holds[0], &payer, "the payer takes back an active hold"),
        (holds[1], &payee, "the payee captures an expired hold"),
    ] {
        let t = spend(outpoint, signer, signer);
        let Ok(Prefetched::Ready(snapshot)) = w.run(&t) else {
            panic!("{what}: prefetch failed");
        };
        let planned = plan(&ctx(&w.layout, &w.tiers), &t, &snapshot);
        assert!(
            matches!(
                planned,
                Err(Reject::HoldActive { .. } | Reject::HoldExpired { .. })
            ),
            "{what}: {planned:?}"
        );
    }
}
