//! Checked Ed25519 keys of recent signers. Checking a key (decompression, then the small-order
//! and torsion tests, the last a scalar multiplication) costs about as much as a single
//! signature verification, and the same wallets sign again and again.

use cbdc_core::PublicKey;
use cbdc_core::keys::{CheckedKey, KeyError};

/// Keys kept, at most (a million wallets' keys, about 250 MiB when full); beyond that the
/// cache forgets the keys least worth keeping (S3-FIFO: one-off signers first).
pub const KEY_CACHE_MAX: usize = 1 << 20;

pub struct KeyCache {
    keys: quick_cache::sync::Cache<[u8; 32], CheckedKey>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::with_capacity(KEY_CACHE_MAX)
    }
}

impl KeyCache {
    /// A cache of at most `keys` keys.
    pub fn with_capacity(keys: usize) -> KeyCache {
        KeyCache {
            keys: quick_cache::sync::Cache::new(keys.max(1)),
        }
    }

    /// A signed transfer from the wire, its witness keys checked through this cache.
    pub fn signed_transfer(
        &self,
        field: &'static str,
        t: Option<&crate::v1::SignedTransfer>,
    ) -> Result<cbdc_core::Transfer, crate::convert::WireError> {
        crate::convert::signed_transfer_with(field, t, &|k| self.checked_key(k))
    }

    /// The key decompressed and checked (not of small order, torsion-free), from the cache if it is there.
    /// Keys that fail the check are not cached.
    pub fn checked_key(&self, key: &PublicKey) -> Result<CheckedKey, KeyError> {
        if let Some(vk) = self.keys.get(key.as_bytes()) {
            return Ok(vk);
        }
        let vk = key.checked_key()?;
        self.keys.insert(*key.as_bytes(), vk);
        Ok(vk)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_good_keys_and_refuses_bad_ones() {
        let cache = KeyCache::default();
        let k = cbdc_core::Keypair::from_seed(&[3; 32]).public();
        assert_eq!(cache.checked_key(&k), k.checked_key());
        assert_eq!(cache.checked_key(&k), k.checked_key());
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            cache.checked_key(&PublicKey::from_bytes(not_a_point)),
            Err(KeyError::NotAPoint)
        );
        let mut identity = [0u8; 32];
        identity[0] = 1; // the identity point: small order
        assert_eq!(
            cache.checked_key(&PublicKey::from_bytes(identity)),
            Err(KeyError::Weak)
        );
        assert_eq!(cache.len(), 1);
    }
}
