//! Property tests: conservation, tamper evidence, no overflow, no panics on arbitrary input.

mod common;

use cbdc_core::validate::check_stateless;
use cbdc_core::{
    Amount, KycTier, Lock, OutPoint, Transfer, TransferBody, TransferBuilder, Txid, UnixSeconds,
    Witness,
};
use common::*;
use proptest::prelude::*;

fn small_amounts(max_len: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..200_000, 1..max_len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the inputs and outputs, an accepted transfer moves exactly the value it spends.
    #[test]
    fn accepted_transfers_conserve_value(
        inputs in small_amounts(5),
        outputs in small_amounts(5),
        nudge in 0u64..3,
    ) {
        let owner = key(1);
        let payee = key(2);
        let mut w = World::new();
        w.wallet(&owner, KycTier::Class1);
        w.wallet(&payee, KycTier::Class1);
        let mut builder = TransferBuilder::new(UnixSeconds(NOW.0 + 1));
        for (i, fen) in inputs.iter().enumerate() {
            let at = OutPoint { txid: Txid([i as u8 + 1; 32]), index: 0 };
            w.fund(at, Amount::from_fen(*fen), Lock::Key(owner.public()));
            builder = builder.input(at, Amount::from_fen(*fen));
        }
        // Scale outputs so they usually conserve, and with nudge 2 miss by one fen.
        let total_in: u64 = inputs.iter().sum();
        let total_out: u64 = outputs.iter().sum::<u64>().max(1);
        let mut scaled: Vec<u64> = outputs.iter().map(|o| o * total_in / total_out).collect();
        let diff = total_in - scaled.iter().sum::<u64>();
        scaled[0] += diff + u64::from(nudge == 2);
        for fen in &scaled {
            builder = builder.output(LEDGER, Amount::from_fen(*fen), Lock::Key(payee.public()));
        }
        let transfer = builder.sign(&[&owner]).unwrap();
        if let Ok(effects) = w.check(&transfer) {
            let spent: u64 = effects.spent.iter().map(|o| match w.outputs[o] {
                cbdc_core::validate::InputState::Unspent(out) => out.value.fen(),
                _ => unreachable!(),
            }).sum();
            let created: u64 = effects.created.iter().chain(&effects.outbound).map(|(_, o)| o.value.fen()).sum();
            prop_assert_eq!(spent, created);
            prop_assert!(effects.spent.len() == inputs.len());
        }
    }

    /// Any single bit flip in the body or in a signature makes the transfer invalid.
    #[test]
    fn flipping_any_bit_is_rejected(bit in any::<prop::sample::Index>(), in_signature in any::<bool>()) {
        let (a, b) = (key(1), key(2));
        let t = TransferBuilder::new(UnixSeconds(NOW.0 + 1))
            .input(OutPoint { txid: Txid([4; 32]), index: 3 }, Amount::from_fen(10_000))
            .output(LEDGER, Amount::from_fen(3_000), Lock::Key(b.public()))
            .output(LEDGER, Amount::from_fen(7_000), Lock::Key(a.public()))
            .memo(b"lunch".to_vec())
            .sign(&[&a]).unwrap();
        prop_assert!(check_stateless(&t, NOW).is_ok());
        let mut body = t.body_bytes().to_vec();
        let mut witness = t.witnesses()[0];
        if in_signature {
            let i = bit.index(64 * 8);
            witness.signature[i / 8] ^= 1 << (i % 8);
        } else {
            let i = bit.index(body.len() * 8);
            body[i / 8] ^= 1 << (i % 8);
        }
        let verdict = Transfer::decode(body, vec![witness]).and_then(|t| check_stateless(&t, NOW));
        prop_assert!(verdict.is_err());
    }

    /// Values anywhere in u64 never overflow silently or panic.
    #[test]
    fn huge_values_never_overflow(values in prop::collection::vec(any::<u64>(), 1..6), out in any::<u64>()) {
        let a = key(1);
        let mut builder = TransferBuilder::new(UnixSeconds(NOW.0 + 1));
        for (i, v) in values.iter().enumerate() {
            builder = builder.input(OutPoint { txid: Txid([i as u8; 32]), index: 0 }, Amount::from_fen(*v));
        }
        let builder = builder.output(LEDGER, Amount::from_fen(out), Lock::Key(a.public()));
        let t = builder.sign(&[&a]).unwrap();
        let sum = values.iter().try_fold(0u64, |acc, v| acc.checked_add(*v));
        let verdict = check_stateless(&t, NOW);
        match sum {
            Some(s) if s == out && values.iter().all(|v| *v > 0) && out > 0 => prop_assert!(verdict.is_ok()),
            _ => prop_assert!(verdict.is_err()),
        }
    }

    /// Arbitrary bytes never panic the decoder or the validator.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..600),
                                   key_bytes in prop::collection::vec(any::<u8>(), 0..40),
                                   sig in prop::collection::vec(any::<u8>(), 0..70)) {
        let _ = TransferBody::decode(&body);
        let witness = Witness::from_slices(0, &key_bytes, &sig);
        let witnesses = match witness { Ok(w) => vec![w], Err(_) => vec![Witness::new(0, key(5).public(), [0; 64]).unwrap()] };
        if let Ok(t) = Transfer::decode(body.clone(), witnesses) {
            let w = World::new();
            let _ = w.check(&t);
        }
    }

    /// Arbitrary bytes mutated from a valid body (more likely to pass early checks) never panic.
    #[test]
    fn mutated_bodies_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (a, b) = (key(1), key(2));
        let t = TransferBuilder::new(UnixSeconds(NOW.0 + 1))
            .input(OutPoint { txid: Txid([4; 32]), index: 0 }, Amount::from_fen(100))
            .output(LEDGER, Amount::from_fen(100), Lock::Hold { payer: a.public(), payee: b.public(), expires_at: NOW })
            .sign(&[&a]).unwrap();
        let mut body = t.body_bytes().to_vec();
        for (i, v) in edits { let n = body.len(); body[i.index(n)] = v; }
        if let Ok(t) = Transfer::decode(body, t.witnesses().to_vec()) {
            let mut w = World::new();
            w.wallet(&a, KycTier::Class4Anonymous);
            let _ = w.check(&t);
        }
    }
}
