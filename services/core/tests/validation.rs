//! Every rejection, reached through the public API, in the documented order.

mod common;

use cbdc_core::transfer::{MAX_OUTPUTS, MAX_WITNESSES, sign_body};
use cbdc_core::validate::{InputState, check_stateless_batch};
use cbdc_core::{
    Keypair, KycTier, LimitKind, Lock, Reject, Transfer, TransferBuilder, Txid, UnixSeconds,
    WalletStatus, Witness,
};
use common::*;

/// alice (anonymous class) holds ¥1,000 at outpoint 1; bob is class 2; merchant is class 1.
fn world() -> (World, Keypair, Keypair, Keypair) {
    let (alice, bob, merchant) = (key(1), key(2), key(3));
    let mut w = World::new();
    w.wallet(&alice, KycTier::Class4Anonymous);
    w.wallet(&bob, KycTier::Class2);
    w.wallet(&merchant, KycTier::Class1);
    w.fund(outpoint(1), yuan(1_000), Lock::Key(alice.public()));
    (w, alice, bob, merchant)
}

fn pay(from: &Keypair, to: &Keypair, amount: u64, change: u64) -> TransferBuilder {
    let mut b = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(amount + change))
        .output(LEDGER, yuan(amount), Lock::Key(to.public()));
    if change > 0 {
        b = b.output(LEDGER, yuan(change), Lock::Key(from.public()));
    }
    b
}

#[test]
fn a_valid_payment_has_the_right_effects() {
    let (w, alice, bob, _) = world();
    let t = pay(&alice, &bob, 300, 700).sign(&[&alice]).unwrap();
    let effects = w.check(&t).unwrap();
    assert_eq!(effects.spent, vec![outpoint(1)]);
    assert_eq!(effects.created.len(), 2);
    assert!(effects.outbound.is_empty());
    let alice_change = effects
        .wallet_changes
        .iter()
        .find(|c| c.key == alice.public())
        .unwrap();
    assert_eq!(alice_change.outgoing, yuan(300));
    let bob_change = effects
        .wallet_changes
        .iter()
        .find(|c| c.key == bob.public())
        .unwrap();
    assert_eq!(bob_change.incoming, yuan(300));
}

#[test]
fn cross_ledger_outputs_are_outbound() {
    let (w, alice, bob, _) = world();
    let t = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(1_000))
        .output(OTHER_LEDGER, yuan(100), Lock::Key(bob.public()))
        .output(LEDGER, yuan(900), Lock::Key(alice.public()))
        .sign(&[&alice])
        .unwrap();
    let effects = w.check(&t).unwrap();
    assert_eq!(effects.outbound.len(), 1);
    assert_eq!(effects.outbound[0].0.index, 0);
    assert_eq!(effects.created.len(), 1);
}

#[test]
fn stateless_rejections_in_order() {
    let (w, alice, bob, _) = world();
    // duplicate input comes before zero value and conservation.
    let t = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(1))
        .input(outpoint(1), yuan(0))
        .output(LEDGER, yuan(5), Lock::Key(bob.public()))
        .sign(&[&alice])
        .unwrap();
    assert_eq!(
        w.check(&t),
        Err(Reject::DuplicateInput {
            outpoint: outpoint(1)
        })
    );
    let t = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(1))
        .output(LEDGER, yuan(0), Lock::Key(bob.public()))
        .output(LEDGER, yuan(1), Lock::Key(bob.public()))
        .sign(&[&alice])
        .unwrap();
    assert_eq!(w.check(&t), Err(Reject::ZeroOutput { index: 0 }));
    let t = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), cbdc_core::Amount::from_fen(u64::MAX))
        .input(outpoint(2), yuan(1))
        .output(LEDGER, yuan(1), Lock::Key(bob.public()))
        .sign(&[&alice])
        .unwrap();
    assert_eq!(w.check(&t), Err(Reject::ValueOverflow));
    let t = pay(&alice, &bob, 300, 700)
        .output(LEDGER, yuan(1), Lock::Key(bob.public()))
        .sign(&[&alice])
        .unwrap();
    assert_eq!(
        w.check(&t),
        Err(Reject::NotConserved {
            inputs: yuan(1000),
            outputs: yuan(1001)
        })
    );
    let t = TransferBuilder::new(UnixSeconds(NOW.0 - 1))
        .input(outpoint(1), yuan(1000))
        .output(LEDGER, yuan(1000), Lock::Key(bob.public()))
        .sign(&[&alice])
        .unwrap();
    assert!(matches!(w.check(&t), Err(Reject::Expired { .. })));
    // A signature by the wrong key over the right txid fails; so does one over another body.
    let good = pay(&alice, &bob, 300, 700).sign(&[&alice]).unwrap();
    let other = pay(&alice, &bob, 200, 800).sign(&[&alice]).unwrap();
    let forged = Transfer::decode(good.body_bytes().to_vec(), other.witnesses().to_vec()).unwrap();
    assert_eq!(w.check(&forged), Err(Reject::BadSignature { index: 0 }));
    let dup = Transfer::decode(
        good.body_bytes().to_vec(),
        vec![good.witnesses()[0], good.witnesses()[0]],
    )
    .unwrap();
    assert!(matches!(
        w.check(&dup),
        Err(Reject::DuplicateWitness { .. })
    ));
}

#[test]
fn structural_rejections() {
    let (_, alice, bob, _) = world();
    assert_eq!(
        Transfer::decode(vec![1, 2, 3], vec![]),
        Err(Reject::NoWitnesses)
    );
    let good = pay(&alice, &bob, 1, 0).sign(&[&alice]).unwrap();
    let w = good.witnesses()[0];
    assert_eq!(
        Transfer::decode(good.body_bytes().to_vec(), vec![w; MAX_WITNESSES + 1]),
        Err(Reject::TooManyWitnesses {
            count: MAX_WITNESSES + 1,
            max: MAX_WITNESSES
        })
    );
    assert_eq!(
        Witness::from_slices(0, &[0; 31], &[0; 64]),
        Err(Reject::WitnessKeyLength { index: 0, len: 31 })
    );
    assert_eq!(
        Witness::from_slices(1, alice.public().as_bytes(), &[0; 63]),
        Err(Reject::WitnessSignatureLength { index: 1, len: 63 })
    );
    let mut b = TransferBuilder::new(NOW).input(outpoint(1), yuan(1));
    for _ in 0..=MAX_OUTPUTS {
        b = b.output(LEDGER, yuan(1), Lock::Key(bob.public()));
    }
    assert!(matches!(
        b.sign(&[&alice]),
        Err(Reject::TooManyOutputs { .. })
    ));
    let no_outputs = TransferBuilder::new(NOW).input(outpoint(1), yuan(1));
    assert_eq!(
        no_outputs.sign(&[&alice]).map(|_| ()),
        Err(Reject::NoOutputs)
    );
    let mut bytes = good.body_bytes().to_vec();
    bytes[0] = 9;
    assert!(matches!(
        sign_body(bytes, &[&alice]),
        Err(Reject::Malformed(_))
    ));
}

#[test]
fn stateful_rejections() {
    let (mut w, alice, bob, merchant) = world();
    let t = pay(&alice, &bob, 300, 700).sign(&[&alice]).unwrap();
    // Wrong stated value.
    let lie = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(999))
        .output(LEDGER, yuan(999), Lock::Key(bob.public()))
        .sign(&[&alice])
        .unwrap();
    assert!(matches!(
        w.check(&lie),
        Err(Reject::InputValueMismatch { .. })
    ));
    // Not the owner's signature.
    let theft = pay(&alice, &bob, 300, 700).sign(&[&bob]).unwrap();
    assert!(matches!(
        w.check(&theft),
        Err(Reject::NotAuthorised { input: 0, .. })
    ));
    // An unneeded extra witness.
    let extra = pay(&alice, &bob, 300, 700)
        .sign(&[&alice, &merchant])
        .unwrap();
    assert!(matches!(
        w.check(&extra),
        Err(Reject::UnusedWitness { index: 1, .. })
    ));
    // Payee without a wallet here.
    let stranger = key(77);
    let t2 = pay(&alice, &stranger, 300, 700).sign(&[&alice]).unwrap();
    assert!(matches!(w.check(&t2), Err(Reject::UnknownWallet { .. })));
    // Per-payment cap of the anonymous class (¥2,000) is fine at ¥300; ¥5,000 daily cap binds.
    w.wallets.get_mut(&alice.public()).unwrap().spent_today = yuan(4_800);
    assert_eq!(
        w.check(&t),
        Err(Reject::LimitExceeded {
            key: alice.public(),
            limit: LimitKind::DailyOutgoingCap,
            cap: yuan(5_000),
            amount: yuan(300),
            would_be: yuan(5_100),
        })
    );
    w.wallets.get_mut(&alice.public()).unwrap().spent_today = yuan(0);
    // Receiver's balance cap.
    w.wallets.get_mut(&bob.public()).unwrap().balance = yuan(499_800);
    assert!(matches!(
        w.check(&t),
        Err(Reject::LimitExceeded {
            limit: LimitKind::BalanceCap,
            ..
        })
    ));
    w.wallets.get_mut(&bob.public()).unwrap().balance = yuan(0);
    // Frozen can't spend but can receive; closed can't receive.
    w.wallets.get_mut(&alice.public()).unwrap().status = WalletStatus::Frozen;
    assert_eq!(
        w.check(&t),
        Err(Reject::WalletFrozen {
            key: alice.public()
        })
    );
    w.wallets.get_mut(&alice.public()).unwrap().status = WalletStatus::Active;
    w.wallets.get_mut(&bob.public()).unwrap().status = WalletStatus::Closed;
    assert_eq!(w.check(&t), Err(Reject::WalletClosed { key: bob.public() }));
    w.wallets.get_mut(&bob.public()).unwrap().status = WalletStatus::Frozen;
    assert!(w.check(&t).is_ok(), "a frozen wallet may receive");
    // Spent and missing inputs.
    w.outputs
        .insert(outpoint(1), InputState::Spent { by: Txid([5; 32]) });
    assert_eq!(
        w.check(&t),
        Err(Reject::InputSpent {
            outpoint: outpoint(1),
            spent_by: Txid([5; 32])
        })
    );
    w.outputs.remove(&outpoint(1));
    assert_eq!(
        w.check(&t),
        Err(Reject::InputMissing {
            outpoint: outpoint(1)
        })
    );
}

#[test]
fn per_payment_cap() {
    let (w, alice, bob, _) = world();
    let mut w = w;
    w.fund(outpoint(2), yuan(3_000), Lock::Key(alice.public()));
    let t = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(2), yuan(3_000))
        .output(LEDGER, yuan(2_500), Lock::Key(bob.public()))
        .output(LEDGER, yuan(500), Lock::Key(alice.public()))
        .sign(&[&alice])
        .unwrap();
    assert!(matches!(
        w.check(&t),
        Err(Reject::LimitExceeded {
            limit: LimitKind::PerPaymentCap,
            ..
        })
    ));
}

#[test]
fn holds() {
    let (mut w, alice, _, merchant) = world();
    let expires_at = UnixSeconds(NOW.0 + 3600);
    let hold = Lock::Hold {
        payer: alice.public(),
        payee: merchant.public(),
        expires_at,
    };
    w.fund(outpoint(9), yuan(100), hold);
    let capture = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(9), yuan(100))
        .output(LEDGER, yuan(60), Lock::Key(merchant.public()))
        .output(LEDGER, yuan(40), Lock::Key(alice.public()));
    assert!(
        w.check(&capture.clone().sign(&[&merchant]).unwrap())
            .is_ok()
    );
    assert!(
        w.check(&capture.clone().sign(&[&alice, &merchant]).unwrap())
            .is_ok()
    );
    assert_eq!(
        w.check(&capture.clone().sign(&[&alice]).unwrap()),
        Err(Reject::HoldActive {
            input: 0,
            expires_at
        })
    );
    w.now = UnixSeconds(expires_at.0);
    let late = TransferBuilder::new(UnixSeconds(w.now.0 + 60))
        .input(outpoint(9), yuan(100))
        .output(LEDGER, yuan(100), Lock::Key(alice.public()));
    assert!(w.check(&late.clone().sign(&[&alice]).unwrap()).is_ok());
    assert_eq!(
        w.check(&late.sign(&[&merchant]).unwrap()),
        Err(Reject::HoldExpired {
            input: 0,
            expires_at
        })
    );
}

#[test]
fn mandates() {
    let (mut w, alice, _, merchant) = world();
    let expires_at = UnixSeconds(NOW.0 + 86_400);
    let mandate = Lock::Mandate {
        owner: alice.public(),
        merchant: merchant.public(),
        per_payment_max: yuan(50),
        expires_at,
    };
    w.fund(outpoint(8), yuan(200), mandate);
    let take = |amount: u64, change_lock: Lock| {
        TransferBuilder::new(UnixSeconds(NOW.0 + 60))
            .input(outpoint(8), yuan(200))
            .output(LEDGER, yuan(amount), Lock::Key(merchant.public()))
            .output(LEDGER, yuan(200 - amount), change_lock)
    };
    assert!(
        w.check(&take(50, mandate).sign(&[&merchant]).unwrap())
            .is_ok()
    );
    assert_eq!(
        w.check(&take(51, mandate).sign(&[&merchant]).unwrap()),
        Err(Reject::MandateExceeded {
            owner: alice.public(),
            taken: yuan(51),
            per_payment_max: yuan(50)
        })
    );
    // Change that does not keep the identical terms counts as taken.
    let changed = Lock::Mandate {
        owner: alice.public(),
        merchant: merchant.public(),
        per_payment_max: yuan(5_000),
        expires_at,
    };
    assert!(matches!(
        w.check(&take(10, changed).sign(&[&merchant]).unwrap()),
        Err(Reject::MandateExceeded { .. })
    ));
    // The owner may do anything.
    assert!(
        w.check(
            &take(150, Lock::Key(alice.public()))
                .sign(&[&alice])
                .unwrap()
        )
        .is_ok()
    );
    w.now = expires_at;
    let late = TransferBuilder::new(UnixSeconds(w.now.0 + 60))
        .input(outpoint(8), yuan(200))
        .output(LEDGER, yuan(10), Lock::Key(merchant.public()))
        .output(LEDGER, yuan(190), mandate);
    assert_eq!(
        w.check(&late.sign(&[&merchant]).unwrap()),
        Err(Reject::MandateExpired {
            input: 0,
            expires_at
        })
    );
}

#[test]
fn batch_finds_the_one_bad_transfer() {
    let (w, alice, bob, _) = world();
    let mut transfers: Vec<Transfer> = (0..20)
        .map(|i| pay(&alice, &bob, 1 + i, 999 - i).sign(&[&alice]).unwrap())
        .collect();
    let results = check_stateless_batch(&transfers, w.now);
    assert!(results.iter().all(|r| r.is_ok()));
    let other = pay(&alice, &bob, 500, 500).sign(&[&alice]).unwrap();
    transfers[7] = Transfer::decode(
        transfers[7].body_bytes().to_vec(),
        other.witnesses().to_vec(),
    )
    .unwrap();
    let results = check_stateless_batch(&transfers, w.now);
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert_eq!(*r, Err(Reject::BadSignature { index: 0 }));
        } else {
            assert_eq!(*r, Ok(()), "transfer {i}");
        }
    }
}

#[test]
fn a_witness_key_from_a_cache_must_be_the_same_key() {
    use cbdc_core::Witness;
    let alice = Keypair::from_seed(&[41; 32]);
    let mallory = Keypair::from_seed(&[42; 32]);
    let sig = [7u8; 64];
    // A cache answering with another key's decompression is ignored.
    let w = Witness::from_slices_with(0, alice.public().as_bytes(), &sig, |_| {
        Ok(mallory.checked_key())
    })
    .unwrap();
    assert_eq!(w.verifying_key(), alice.verifying_key());
    assert_eq!(w.key, alice.public());
}

/// Alice's payment with its witness made by hand (see `signature::crafted`).
fn crafted(body: &[u8], seed: &[u8; 32], torsion: usize, small_order: bool) -> Transfer {
    let message = cbdc_core::Txid::of_body(body).signing_message();
    let sig = cbdc_core::signature::crafted::sign(seed, &message, torsion, small_order);
    let key = Keypair::from_seed(seed).public();
    let witness = cbdc_core::Witness::new(0, key, sig).unwrap();
    Transfer::decode(body.to_vec(), vec![witness]).unwrap()
}

/// One signature rule: a small-order `R` is refused, and a mixed-order `R` made by the key's
/// holder accepted, alone and in batches with and without another bad signature.
#[test]
fn a_witness_has_one_verdict_whatever_its_batch() {
    let (w, alice, bob, _) = world();
    let seed = *alice.seed();
    let honest: Vec<Transfer> = (0..12)
        .map(|i| pay(&alice, &bob, 1 + i, 999 - i).sign(&[&alice]).unwrap())
        .collect();
    let broken = {
        let other = pay(&alice, &bob, 500, 500).sign(&[&alice]).unwrap();
        Transfer::decode(honest[0].body_bytes().to_vec(), other.witnesses().to_vec()).unwrap()
    };
    for torsion in 0..8 {
        for small_order in [true, false] {
            if torsion == 0 && !small_order {
                continue; // an honest signature
            }
            let body = pay(&alice, &bob, 100 + torsion as u64, 900).body().encode();
            let t = crafted(&body, &seed, torsion, small_order);
            let expected = if small_order {
                Err(Reject::BadSignature { index: 0 })
            } else {
                Ok(())
            };
            assert_eq!(
                cbdc_core::validate::check_stateless(&t, w.now),
                expected,
                "alone, torsion {torsion}, small order {small_order}"
            );
            for with_broken in [false, true] {
                let mut batch = honest.clone();
                batch.insert(5, t.clone());
                if with_broken {
                    batch.push(broken.clone());
                }
                let results = check_stateless_batch(&batch, w.now);
                assert_eq!(
                    results[5], expected,
                    "torsion {torsion}, with broken {with_broken}"
                );
                assert_eq!(
                    results.iter().filter(|r| r.is_err()).count(),
                    usize::from(expected.is_err()) + usize::from(with_broken)
                );
            }
        }
    }
}

/// `parties` names each wallet of this ledger with the limit counters its net direction
/// makes the checks read: a payer's day total, a payee's balance, nothing for a wallet
/// whose flows cancel; and both for every party when the sums overflow (which the checks
/// then refuse). Owners of outputs for other ledgers are not parties.
#[test]
fn parties_read_the_counters_of_each_wallets_net_direction() {
    use cbdc_core::Amount;
    use cbdc_core::validate::{CounterReads, parties};
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let coin = |fen: u64| {
        InputState::Unspent(cbdc_core::Output {
            ledger: LEDGER,
            value: Amount::from_fen(fen),
            lock: Lock::Key(alice.public()),
        })
    };
    let reads = |spent_today, balance| CounterReads {
        spent_today,
        balance,
    };
    let (pays, paid, both) = (reads(true, false), reads(false, true), reads(true, true));
    let t = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(1_000))
        .output(LEDGER, yuan(300), Lock::Key(bob.public()))
        .output(LEDGER, yuan(700), Lock::Key(alice.public()))
        .output(OTHER_LEDGER, yuan(0), Lock::Key(carol.public()))
        .sign(&[&alice])
        .unwrap();
    let got = parties(&t, LEDGER, &[coin(100_000)]);
    assert_eq!(
        got,
        std::collections::BTreeMap::from([(alice.public(), pays), (bob.public(), paid)])
    );
    // Paying oneself: flows cancel, no counter.
    let own = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(1_000))
        .output(LEDGER, yuan(1_000), Lock::Key(alice.public()))
        .sign(&[&alice])
        .unwrap();
    let got = parties(&own, LEDGER, &[coin(100_000)]);
    assert_eq!(got.get(&alice.public()), Some(&CounterReads::default()));
    // Inputs whose values overflow when summed: every party reads both (alice only spends
    // here, bob is only paid), carol, paid on another ledger, still none.
    let all = TransferBuilder::new(UnixSeconds(NOW.0 + 60))
        .input(outpoint(1), yuan(1_000))
        .output(LEDGER, yuan(1_000), Lock::Key(bob.public()))
        .output(OTHER_LEDGER, yuan(0), Lock::Key(carol.public()))
        .sign(&[&alice])
        .unwrap();
    let huge = u64::MAX / 2 + 1;
    let got = parties(&all, LEDGER, &[coin(huge), coin(huge)]);
    assert_eq!(
        got,
        std::collections::BTreeMap::from([(alice.public(), both), (bob.public(), both)])
    );
}
