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
use hmac::{Hmac, KeyInit, Mac};
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

    fn secret(&self, purpose: &str, name: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"cbdc/merchant/v1/");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.seed.as_slice());
        h.update([0]);
        h.update(name.as_bytes());
        h.finalize().into()
    }

    fn derive(&self, purpose: &str, name: &str) -> Keypair {
        Keypair::from_seed(&self.secret(purpose, name))
    }

    fn checkout_tag(&self, merchant_id: &str, out_trade_no: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret("checkout", ""))
            .expect("HMAC takes any key length");
        m.update(merchant_id.as_bytes());
        m.update(&[0]);
        m.update(out_trade_no.as_bytes());
        m
    }

    /// The capability in an order's checkout page address: the first 128 bits of
    /// HMAC-SHA-256 over the merchant and order ids under a key derived from the seed, so
    /// only whoever the merchant gives the address to can see the page.
    pub fn checkout_mac(&self, merchant_id: &str, out_trade_no: &str) -> String {
        let tag = self
            .checkout_tag(merchant_id, out_trade_no)
            .finalize()
            .into_bytes();
        hex::encode(&tag[..16])
    }

    /// Whether `mac` is the order's checkout capability (compared in constant time).
    pub fn checkout_ok(&self, merchant_id: &str, out_trade_no: &str, mac: &str) -> bool {
        match hex::decode(mac) {
            Ok(bytes) if bytes.len() == 16 => self
                .checkout_tag(merchant_id, out_trade_no)
                .verify_truncated_left(&bytes)
                .is_ok(),
            _ => false,
        }
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

    #[test]
    fn a_checkout_capability_opens_its_own_order_only() {
        let a = Custody::new(Seed::new([1; 32]));
        let b = Custody::new(Seed::new([2; 32]));
        let mac = a.checkout_mac("m1", "T000001");
        assert_eq!(mac.len(), 32);
        assert!(a.checkout_ok("m1", "T000001", &mac));
        assert!(!a.checkout_ok("m1", "T000002", &mac));
        assert!(!a.checkout_ok("m2", "T000001", &mac));
        assert!(!b.checkout_ok("m1", "T000001", &mac));
        // The ids are separated: ("m1", "0T…") and ("m10", "T…") do not share a tag.
        assert_ne!(
            a.checkout_mac("m1", "0T00001"),
            a.checkout_mac("m10", "T00001")
        );
        let mut flipped = mac.clone().into_bytes();
        flipped[31] = if flipped[31] == b'0' { b'1' } else { b'0' };
        assert!(!a.checkout_ok("m1", "T000001", std::str::from_utf8(&flipped).unwrap()));
        assert!(!a.checkout_ok("m1", "T000001", &mac[..30]));
        assert!(!a.checkout_ok("m1", "T000001", "not hex at all, not hex at all!!"));
    }
}
