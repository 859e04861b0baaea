//! Signatures made by hand — small-order and mixed-order `R`, keys with a torsion component,
//! non-canonical `S` — checked alone and in batches with and without other bad signatures:
//! the batch path and the single path give the same verdict on every one.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use proptest::prelude::*;
use sha2::{Digest, Sha512};

use super::{Item, verify, verify_many};
use crate::keys::{CheckedKey, KeyError, PublicKey};

/// A signer whose secret scalar is known, so tests can build any `(R, S)`.
struct Signer {
    a: Scalar,
    key: CheckedKey,
}

impl Signer {
    fn new(seed: u8) -> Signer {
        let a = Scalar::from_bytes_mod_order([seed.wrapping_add(7); 32]) + Scalar::ONE;
        let point = ED25519_BASEPOINT_POINT * a;
        let key = PublicKey::from_bytes(point.compress().to_bytes())
            .checked_key()
            .expect("a multiple of B is a checked key");
        Signer { a, key }
    }

    fn k(&self, r_bytes: &[u8; 32], message: &[u8]) -> Scalar {
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(self.key.verifying_key().as_bytes());
        h.update(message);
        Scalar::from_bytes_mod_order_wide(&h.finalize().into())
    }

    /// `R = [r]B + torsion`, `S = r + k·a`: honest when `torsion` is the identity.
    fn sign_with(&self, message: &[u8], r: Scalar, torsion: EdwardsPoint) -> [u8; 64] {
        let big_r = (ED25519_BASEPOINT_POINT * r + torsion)
            .compress()
            .to_bytes();
        let s = r + self.k(&big_r, message) * self.a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.sign_with(message, nonce(message), EdwardsPoint::default())
    }

    /// `R` a small-order point and `S = k·a`: satisfies the equations up to `R`'s order.
    fn small_order_r(&self, message: &[u8], which: usize) -> [u8; 64] {
        let big_r = EIGHT_TORSION[which].compress().to_bytes();
        let s = self.k(&big_r, message) * self.a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }
}

/// ℓ, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn the_group_order_is_zero_mod_itself() {
    assert_eq!(Scalar::from_bytes_mod_order(GROUP_ORDER), Scalar::ZERO);
    assert!(bool::from(
        Scalar::from_canonical_bytes(GROUP_ORDER).is_none()
    ));
}

fn nonce(message: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&Sha512::digest(message).into())
}

/// Every kind of signature the rule must agree on, with its verdict.
fn zoo(signer: &Signer) -> Vec<(Vec<u8>, [u8; 64], bool, &'static str)> {
    let mut out = Vec::new();
    for i in 0..4u8 {
        let m = vec![b'h', i];
        let sig = signer.sign(&m);
        out.push((m, sig, true, "honest"));
    }
    for which in 0..8 {
        let m = vec![b's', which as u8];
        let sig = signer.small_order_r(&m, which);
        out.push((m, sig, false, "small-order R"));
    }
    for (which, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
        let m = vec![b'm', which as u8];
        let sig = signer.sign_with(&m, nonce(&m), *t);
        out.push((m, sig, true, "mixed-order R by the key's holder"));
    }
    let m = b"wrong".to_vec();
    let mut sig = signer.sign(&m);
    sig[40] ^= 1;
    out.push((m, sig, false, "altered S"));
    let m = b"non-canonical".to_vec();
    let sig = signer.sign(&m);
    let mut big_s = [0u8; 32];
    big_s.copy_from_slice(&sig[32..]);
    // S + ℓ, still below 2^256 for these values: the same scalar, not canonical.
    let mut carry = 0u16;
    let mut sum = [0u8; 32];
    for i in 0..32 {
        let v = u16::from(big_s[i]) + u16::from(GROUP_ORDER[i]) + carry;
        sum[i] = v as u8;
        carry = v >> 8;
    }
    let mut non_canonical = sig;
    non_canonical[32..].copy_from_slice(&sum);
    if carry == 0 {
        out.push((m, non_canonical, false, "non-canonical S"));
    }
    out
}

#[test]
fn each_kind_has_one_verdict_alone() {
    let signer = Signer::new(1);
    for (m, sig, expected, kind) in zoo(&signer) {
        assert_eq!(verify(&signer.key, &m, &sig), expected, "{kind}");
    }
}

#[test]
fn batches_give_each_signature_its_single_verdict_whatever_its_neighbours() {
    let signer = Signer::new(2);
    let zoo = zoo(&signer);
    // All together, each kind alone with honest neighbours, and pairs of kinds.
    let honest: Vec<_> = zoo.iter().filter(|z| z.2).collect();
    let mut batches: Vec<Vec<usize>> = vec![(0..zoo.len()).collect()];
    for i in 0..zoo.len() {
        batches.push(vec![i]);
        let mut with_honest: Vec<usize> = (0..zoo.len()).filter(|&j| zoo[j].2).collect();
        with_honest.insert(with_honest.len() / 2, i);
        batches.push(with_honest);
        for j in 0..zoo.len() {
            batches.push(vec![i, j]);
        }
    }
    assert!(honest.len() > 4);
    for batch in batches {
        let items: Vec<Item<'_>> = batch
            .iter()
            .map(|&i| Item {
                key: &signer.key,
                message: &zoo[i].0,
                signature: &zoo[i].1,
            })
            .collect();
        let got = verify_many(&items);
        for (slot, &i) in batch.iter().enumerate() {
            assert_eq!(got[slot], zoo[i].2, "{} in batch {batch:?}", zoo[i].3);
        }
    }
}

/// Why one rule matters: the cofactorless batch of `ed25519-dalek` accepts a mixed-order `R`
/// whenever its coefficient kills the torsion component, which the signer can grind for,
/// while `verify_strict` refuses the same signature. Under this module's rule both paths
/// accept it (only the key's holder can make one).
#[test]
fn the_cofactorless_rules_disagree_where_this_rule_does_not() {
    let signer = Signer::new(3);
    let vk = *signer.key.verifying_key();
    let order_two = EIGHT_TORSION[4];
    let mut disagreed = false;
    for attempt in 0u32..64 {
        let m = attempt.to_be_bytes();
        let sig = signer.sign_with(&m, nonce(&m), order_two);
        let dalek_sig = ed25519_dalek::Signature::from_bytes(&sig);
        let strict = vk.verify_strict(&m, &dalek_sig).is_ok();
        let batched = ed25519_dalek::verify_batch(&[&m[..]], &[dalek_sig], &[vk]).is_ok();
        assert!(!strict);
        let item = Item {
            key: &signer.key,
            message: &m,
            signature: &sig,
        };
        assert!(verify(&signer.key, &m, &sig));
        assert_eq!(verify_many(&[item]), vec![true]);
        if batched {
            disagreed = true;
            break;
        }
    }
    assert!(disagreed, "some attempt's coefficient is even");
}

#[test]
fn keys_with_a_torsion_component_are_refused() {
    let signer = Signer::new(4);
    let a = signer.key.verifying_key().to_edwards();
    for t in &EIGHT_TORSION[1..] {
        let mixed = PublicKey::from_bytes((a + t).compress().to_bytes());
        assert_eq!(mixed.checked_key(), Err(KeyError::Torsion));
    }
    for t in &EIGHT_TORSION {
        let weak = PublicKey::from_bytes(t.compress().to_bytes());
        assert_eq!(weak.checked_key(), Err(KeyError::Weak));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Bisection finds exactly the bad ones wherever they sit.
    #[test]
    fn bisection_names_exactly_the_bad_ones(
        bad in proptest::collection::vec(any::<bool>(), 1..70),
    ) {
        let signer = Signer::new(5);
        let messages: Vec<[u8; 2]> = (0..bad.len() as u16).map(u16::to_be_bytes).collect();
        let sigs: Vec<[u8; 64]> = messages
            .iter()
            .zip(&bad)
            .map(|(m, &b)| {
                let mut s = signer.sign(m);
                if b {
                    s[33] ^= 4;
                }
                s
            })
            .collect();
        let items: Vec<Item<'_>> = messages
            .iter()
            .zip(&sigs)
            .map(|(m, s)| Item { key: &signer.key, message: m, signature: s })
            .collect();
        let expected: Vec<bool> = bad.iter().map(|b| !b).collect();
        prop_assert_eq!(verify_many(&items), expected);
    }
}

#[test]
fn honest_signatures_are_the_ones_ed25519_dalek_makes() {
    let kp = crate::keys::Keypair::from_seed(&[9; 32]);
    let key = kp.checked_key();
    let messages: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; i as usize]).collect();
    let sigs: Vec<[u8; 64]> = messages.iter().map(|m| kp.sign(m)).collect();
    for (m, s) in messages.iter().zip(&sigs) {
        assert!(verify(&key, m, s));
    }
    let items: Vec<Item<'_>> = messages
        .iter()
        .zip(&sigs)
        .map(|(m, s)| Item {
            key: &key,
            message: m,
            signature: s,
        })
        .collect();
    assert!(verify_many(&items).into_iter().all(|ok| ok));
    assert!(verify_many(&[]).is_empty());
}
