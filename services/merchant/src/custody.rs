//! The keys the gateway holds: one collection key per merchant (the wallet payments go to,
//! the payee of holds and the merchant of mandates) and the key that signs webhooks, all
//! derived from one secret seed, so the store holds no private key and a restored store
//! with the same seed holds the same wallets.
//!
//! `key = SHA-256("cbdc/merchant/v1/" ‖ purpose ‖ 0 ‖ seed ‖ 0 ‖ name)`, used as an Ed25519
//! seed: a hash of a uniformly random 32-byte secret under a fixed domain tag is a sound
//! key-derivation function for this (the seed is already uniform; nothing is stretched).

use cbdc_core::Keypair;
use cbdc_runtime::secret::Seed;
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct Custody {
    seed: std::sync::Arc<Seed>,
}

impl Custody {
    pub fn new(seed: Seed) -> Custody {
        Custody {
            seed: std::sync::Arc::new(seed),
        }
    }

    fn derive(&self, purpose: &str, name: &str) -> Keypair {
        let mut h = Sha256::new();
        h.update(b"cbdc/merchant/v1/");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.seed.as_slice());
        h.update([0]);
        h.update(name.as_bytes());
        let derived: [u8; 32] = h.finalize().into();
        Keypair::from_seed(&derived)
    }

    /// The merchant's collection wallet key.
    pub fn collection(&self, merchant_id: &str) -> Keypair {
        self.derive("collection", merchant_id)
    }

    /// The key that signs every webhook.
    pub fn webhook(&self) -> Keypair {
        self.derive("webhook", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_merchant_purpose_and_seed_and_repeat_for_the_same() {
        let a = Custody::new(Seed::new([1; 32]));
        let b = Custody::new(Seed::new([2; 32]));
        assert_eq!(a.collection("m1").public(), a.collection("m1").public());
        assert_ne!(a.collection("m1").public(), a.collection("m2").public());
        assert_ne!(a.collection("m1").public(), b.collection("m1").public());
        assert_ne!(a.collection("").public(), a.webhook().public());
    }
}
