//! What a ledger's checkpoints say about its unspent outputs: their sum, and a commitment to
//! the set itself that is updated one output at a time.
//!
//! The commitment is a homomorphic multiset hash, LtHash (Bellare–Micciancio's additive
//! construction with the parameters Lewi, Kim, Maykov and Weis chose for Facebook's update
//! propagation, 2019): each output is hashed to a vector of 1,024 16-bit lanes (BLAKE3 in
//! extendable-output mode, 2,048 bytes), and the set's hash is the lane-wise sum modulo
//! 2¹⁶ — an output created adds its vector, an output spent subtracts it. Order does not
//! matter, so many commits can each carry their own [`Delta`] and a follower folds them in any
//! grouping; finding two different sets with one hash reduces to a short-integer-solution
//! problem in 1,024 dimensions. A hash of a Ristretto point per output (the other common
//! choice) costs two Elligator maps, about ten times the BLAKE3 expansion measured here.
//!
//! A checkpoint carries the [`SetHash::digest`] (BLAKE3 of the lanes) and the sum: an auditor
//! replaying the ledger's log recomputes both from the transfers alone.

use crate::{OutPoint, Output};

/// Lanes of the hash.
pub const LANES: usize = 1024;
/// Bytes of a hash's lanes.
pub const SET_HASH_BYTES: usize = 2 * LANES;
/// Domain tag of an output's element.
const ELEMENT_TAG: &[u8] = b"cbdc/v1/unspent";

/// The multiset hash of a set of outputs (LtHash, 1,024 lanes of 16 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct SetHash(Box<[u16; LANES]>);

impl Default for SetHash {
    fn default() -> SetHash {
        SetHash(Box::new([0; LANES]))
    }
}

impl std::fmt::Debug for SetHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SetHash(")?;
        for b in &self.digest()[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The bytes an unspent output is hashed over: tag ‖ txid ‖ index ‖ output.
fn element(outpoint: &OutPoint, output: &Output) -> Vec<u8> {
    let encoded = output.encode();
    let mut e = Vec::with_capacity(ELEMENT_TAG.len() + 34 + encoded.len());
    e.extend_from_slice(ELEMENT_TAG);
    e.extend_from_slice(&outpoint.txid.0);
    e.extend_from_slice(&outpoint.index.to_be_bytes());
    e.extend_from_slice(&encoded);
    e
}

/// An output's lanes.
fn lanes(outpoint: &OutPoint, output: &Output) -> [u8; SET_HASH_BYTES] {
    let mut out = [0u8; SET_HASH_BYTES];
    blake3::Hasher::new()
        .update(&element(outpoint, output))
        .finalize_xof()
        .fill(&mut out);
    out
}

impl SetHash {
    /// Adds an output to the set.
    pub fn insert(&mut self, outpoint: &OutPoint, output: &Output) {
        let l = lanes(outpoint, output);
        for (a, c) in self.0.iter_mut().zip(l.chunks_exact(2)) {
            *a = a.wrapping_add(u16::from_le_bytes([c[0], c[1]]));
        }
    }

    /// Takes an output out of the set.
    pub fn remove(&mut self, outpoint: &OutPoint, output: &Output) {
        let l = lanes(outpoint, output);
        for (a, c) in self.0.iter_mut().zip(l.chunks_exact(2)) {
            *a = a.wrapping_sub(u16::from_le_bytes([c[0], c[1]]));
        }
    }

    /// Adds another hash's set (a delta folded into a running hash).
    pub fn combine(&mut self, other: &SetHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// The 32 bytes a checkpoint carries: BLAKE3 of the lanes.
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// The lanes, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SET_HASH_BYTES);
        for lane in self.0.iter() {
            out.extend_from_slice(&lane.to_le_bytes());
        }
        out
    }

    /// Reads lanes written by [`SetHash::to_bytes`]; `None` unless exactly
    /// [`SET_HASH_BYTES`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<SetHash> {
        if bytes.len() != SET_HASH_BYTES {
            return None;
        }
        let mut h = SetHash::default();
        for (a, c) in h.0.iter_mut().zip(bytes.chunks_exact(2)) {
            *a = u16::from_le_bytes([c[0], c[1]]);
        }
        Some(h)
    }

    pub fn is_empty_set(&self) -> bool {
        self.0.iter().all(|&a| a == 0)
    }
}

/// What one transfer, or one commit of many, does to a ledger's unspent outputs: value
/// created minus value spent, and the set hash of what was created minus what was spent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Fen created (wrapping: a ledger's lifetime total stays far below 2⁶⁴ fen).
    pub created: u64,
    /// Fen spent.
    pub spent: u64,
    pub set: SetHash,
}

/// Bytes of an encoded [`Delta`].
pub const DELTA_BYTES: usize = 16 + SET_HASH_BYTES;

impl Delta {
    pub fn create(&mut self, outpoint: &OutPoint, output: &Output) {
        self.created = self.created.wrapping_add(output.value.fen());
        self.set.insert(outpoint, output);
    }

    pub fn spend(&mut self, outpoint: &OutPoint, output: &Output) {
        self.spent = self.spent.wrapping_add(output.value.fen());
        self.set.remove(outpoint, output);
    }

    /// created − spent: what the delta adds to the unspent sum (negative when it takes away).
    pub fn net(&self) -> i128 {
        i128::from(self.created) - i128::from(self.spent)
    }

    /// Folds `other` in.
    pub fn combine(&mut self, other: &Delta) {
        self.created = self.created.wrapping_add(other.created);
        self.spent = self.spent.wrapping_add(other.spent);
        self.set.combine(&other.set);
    }

    /// created (u64 BE) ‖ spent (u64 BE) ‖ lanes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DELTA_BYTES);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.spent.to_be_bytes());
        out.extend_from_slice(&self.set.to_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Delta> {
        if bytes.len() != DELTA_BYTES {
            return None;
        }
        let u = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        Some(Delta {
            created: u(0),
            spent: u(8),
            set: SetHash::from_bytes(&bytes[16..])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Amount, LedgerId, Lock, PublicKey, Txid};

    fn out(i: u8, fen: u64) -> (OutPoint, Output) {
        (
            OutPoint {
                txid: Txid([i; 32]),
                index: u16::from(i),
            },
            Output {
                ledger: LedgerId(1),
                value: Amount::from_fen(fen),
                lock: Lock::Key(PublicKey::from_bytes([i; 32])),
            },
        )
    }

    #[test]
    fn the_hash_is_of_the_set_not_of_the_order_or_the_history() {
        let items: Vec<_> = (1..=6).map(|i| out(i, 100 * u64::from(i))).collect();
        let mut forward = SetHash::default();
        for (p, o) in &items {
            forward.insert(p, o);
        }
        let mut backward = SetHash::default();
        for (p, o) in items.iter().rev() {
            backward.insert(p, o);
        }
        assert_eq!(forward.digest(), backward.digest());
        // Adding and spending an output leaves the hash as it was.
        let (p, o) = out(9, 5);
        let mut churn = forward.clone();
        churn.insert(&p, &o);
        assert_ne!(churn.digest(), forward.digest());
        churn.remove(&p, &o);
        assert_eq!(churn, forward);
        // Deltas folded in any grouping give the same hash.
        let mut a = Delta::default();
        a.create(&items[0].0, &items[0].1);
        a.create(&items[1].0, &items[1].1);
        let mut b = Delta::default();
        for (p, o) in &items[2..] {
            b.create(p, o);
        }
        let mut folded = Delta::default();
        folded.combine(&b);
        folded.combine(&a);
        assert_eq!(folded.set, forward);
        assert_eq!(folded.created, 2100);
        assert_eq!(Delta::decode(&folded.encode()), Some(folded));
        assert!(SetHash::default().is_empty_set());
    }

    #[test]
    fn every_field_of_an_output_is_committed_to() {
        let (p, o) = out(3, 700);
        let mut base = SetHash::default();
        base.insert(&p, &o);
        let mut other_value = o;
        other_value.value = Amount::from_fen(701);
        let mut other_lock = o;
        other_lock.lock = Lock::Key(PublicKey::from_bytes([4; 32]));
        let mut other_ledger = o;
        other_ledger.ledger = LedgerId(2);
        let mut other_index = p;
        other_index.index += 1;
        for (p2, o2) in [
            (p, other_value),
            (p, other_lock),
            (p, other_ledger),
            (other_index, o),
        ] {
            let mut h = SetHash::default();
            h.insert(&p2, &o2);
            assert_ne!(h.digest(), base.digest());
        }
    }
}
