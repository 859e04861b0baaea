//! The one Ed25519 verification rule of the ledger, for one signature and for many.
//!
//! A signature `(R, S)` by a checked key `A` (a valid point in the prime-order subgroup: see
//! [`PublicKey::checked_key`](crate::keys::PublicKey::checked_key)) over a message `M` is
//! valid when
//!
//! 1. `S` is canonical (below the group order `ℓ`),
//! 2. `R` decodes to a curve point that is not of small order, and
//! 3. `[8]([S]B − R − [k]A)` is the identity, with `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
//!
//! Equation 3 is RFC 8032's cofactored equation, the one ZIP-215 chose so that single and
//! batch verification agree: with the cofactor multiplied out, a batch
//! `[8]Σ zᵢ([Sᵢ]B − Rᵢ − [kᵢ]Aᵢ)` is the identity — for coefficients `zᵢ` the signer cannot
//! predict — exactly when every term is, so whether a signature is accepted never depends on
//! which others share its batch. (A cofactorless batch accepts a signature whose `R` carries a
//! small-order component whenever that component's `zᵢ` multiple vanishes, which a signer can
//! arrange; a cofactorless single check refuses it.) Rules 1 and 2 and the key check make the
//! accepted set narrower than ZIP-215's: no small-order `R`, no key with a torsion component.
//!
//! [`verify_many`] checks a whole batch with one multiscalar multiplication and, when the
//! batch fails, bisects it: a half that passes is cleared as a whole, so one bad signature in
//! `n` costs about two batches of `n`, not `n` single verifications.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use crate::keys::CheckedKey;

/// Domain tag of the batch coefficients' hash.
const BATCH_TAG: &[u8] = b"cbdc/v1/sig-batch";

/// One signature to check.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub key: &'a CheckedKey,
    pub message: &'a [u8],
    pub signature: &'a [u8; 64],
}

/// Checks one signature under the rule in the module's documentation.
pub fn verify(key: &CheckedKey, message: &[u8], signature: &[u8; 64]) -> bool {
    prepare(&Item {
        key,
        message,
        signature,
    })
    .is_some_and(|p| p.holds())
}

/// Checks many signatures: one result per item, in order, each exactly what [`verify`] says
/// of it.
pub fn verify_many(items: &[Item<'_>]) -> Vec<bool> {
    let mut results = vec![false; items.len()];
    let mut prepared = Vec::with_capacity(items.len());
    let mut slots = Vec::with_capacity(items.len());
    for (slot, item) in items.iter().enumerate() {
        if let Some(p) = prepare(item) {
            prepared.push(p);
            slots.push(slot);
        }
    }
    if prepared.is_empty() {
        return results;
    }
    let zs = coefficients(&prepared);
    let mut good = vec![false; prepared.len()];
    settle(&prepared, &zs, 0, &mut good, false);
    for (slot, ok) in slots.into_iter().zip(good) {
        results[slot] = ok;
    }
    results
}

/// A signature decoded and hashed, ready for the equation.
struct Prepared {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
    a: EdwardsPoint,
    /// `SHA-512(R ‖ A ‖ M)`, kept for the batch coefficients.
    hram: [u8; 64],
}

/// Rules 1 and 2 and the hash `k`; `None` when the signature fails either rule.
fn prepare(item: &Item<'_>) -> Option<Prepared> {
    let (r_bytes, s_bytes) = item.signature.split_at(32);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(
        s_bytes.try_into().expect("32 bytes"),
    ))?;
    let r = CompressedEdwardsY(r_bytes.try_into().expect("32 bytes")).decompress()?;
    if r.is_small_order() {
        return None;
    }
    let vk = item.key.verifying_key();
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(vk.as_bytes());
    h.update(item.message);
    let hram: [u8; 64] = h.finalize().into();
    Some(Prepared {
        r,
        s,
        k: Scalar::from_bytes_mod_order_wide(&hram),
        a: vk.to_edwards(),
        hram,
    })
}

impl Prepared {
    /// Equation 3 for this signature alone.
    fn holds(&self) -> bool {
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

/// 128-bit coefficients derived from everything the equations depend on (every `R`, `A` and
/// message through their hashes, and every `S`), so no signer can choose them.
fn coefficients(prepared: &[Prepared]) -> Vec<Scalar> {
    let mut seed = Sha512::new();
    seed.update(BATCH_TAG);
    seed.update((prepared.len() as u64).to_be_bytes());
    for p in prepared {
        seed.update(p.hram);
        seed.update(p.s.as_bytes());
    }
    let seed = seed.finalize();
    (0..prepared.len() as u64)
        .map(|i| {
            let mut h = Sha512::new();
            h.update(seed);
            h.update(i.to_be_bytes());
            let bytes: [u8; 64] = h.finalize().into();
            let mut z = [0u8; 32];
            z[..16].copy_from_slice(&bytes[..16]);
            Scalar::from_bytes_mod_order(z)
        })
        .collect()
}

/// Equation 3 for all of `batch` at once, each term weighted by its coefficient.
fn holds_together(batch: &[Prepared], zs: &[Scalar]) -> bool {
    if let [one] = batch {
        return one.holds();
    }
    let b: Scalar = batch.iter().zip(zs).map(|(p, z)| z * p.s).sum();
    let scalars = std::iter::once(-b)
        .chain(zs.iter().copied())
        .chain(batch.iter().zip(zs).map(|(p, z)| z * p.k));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(batch.iter().map(|p| p.r))
        .chain(batch.iter().map(|p| p.a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Marks which of `batch` (starting at `offset` in `good`) hold. `known_bad` says the caller
/// already knows the batch as a whole fails, so it need not be checked again.
fn settle(batch: &[Prepared], zs: &[Scalar], offset: usize, good: &mut [bool], known_bad: bool) {
    if !known_bad && holds_together(batch, zs) {
        good[offset..offset + batch.len()].fill(true);
        return;
    }
    if batch.len() == 1 {
        return;
    }
    let mid = batch.len() / 2;
    let (left, right) = batch.split_at(mid);
    let (zl, zr) = zs.split_at(mid);
    let left_holds = holds_together(left, zl);
    if left_holds {
        good[offset..offset + mid].fill(true);
    } else {
        settle(left, zl, offset, good, true);
    }
    // The whole failed: if the left half holds, the right half cannot.
    settle(right, zr, offset + mid, good, left_holds);
}

/// Signatures made by hand from a seed, for tests that must show what the rule refuses.
#[cfg(any(test, feature = "test-support"))]
pub mod crafted {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};

    use crate::keys::Keypair;

    /// The signature of `Keypair::from_seed(seed)` over `message` with `R = [r]B + T` and
    /// `S = r + k·a` (`T` the `torsion`-th 8-torsion point, index 0 the identity: an honest
    /// signature), or with `small_order`, `R = T` and `S = k·a`.
    pub fn sign(seed: &[u8; 32], message: &[u8], torsion: usize, small_order: bool) -> [u8; 64] {
        let h = Sha512::digest(seed);
        let mut a_bytes = [0u8; 32];
        a_bytes.copy_from_slice(&h[..32]);
        a_bytes[0] &= 248;
        a_bytes[31] &= 127;
        a_bytes[31] |= 64;
        let a = Scalar::from_bytes_mod_order(a_bytes);
        let public = Keypair::from_seed(seed).public();
        let r = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(&h[32..])
                .chain_update(message)
                .finalize()
                .into(),
        );
        let t = EIGHT_TORSION[torsion];
        let big_r = if small_order {
            t
        } else {
            ED25519_BASEPOINT_POINT * r + t
        }
        .compress()
        .to_bytes();
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(big_r)
                .chain_update(public.as_bytes())
                .chain_update(message)
                .finalize()
                .into(),
        );
        let s = if small_order { k * a } else { r + k * a };
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }
}

#[cfg(test)]
mod tests;
