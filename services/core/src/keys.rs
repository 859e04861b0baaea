//! Ed25519 keys, ledger ids and checksummed wallet addresses.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

/// Identifies one commercial-bank ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerId(pub u32);

impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ledger-{}", self.0)
    }
}

/// The 32 bytes of an Ed25519 public key.
///
/// Constructing one from untrusted bytes is cheap and unchecked ([`PublicKey::from_bytes`]):
/// an output may name any 32 bytes (the ledger only credits keys of opened wallets, and those
/// are checked when the wallet is opened). Where a key must be usable — opening a wallet,
/// parsing an address, verifying a witness — [`PublicKey::checked`] and
/// [`PublicKey::verifying_key`] refuse bytes that are not a curve point, small-order ("weak")
/// keys, under which one signature can be valid for many messages, and keys with a torsion
/// component, under which verification equations can disagree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key is not a valid Ed25519 point")]
    NotAPoint,
    #[error("public key is of small order (weak) and cannot own value")]
    Weak,
    #[error("public key has a small-order (torsion) component and cannot own value")]
    Torsion,
}

impl PublicKey {
    /// Unchecked: any 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// Checked: a valid, non-weak Ed25519 key.
    pub fn checked(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        let key = PublicKey(*bytes);
        key.verifying_key()?;
        Ok(key)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Decompresses the key (a few microseconds), refusing invalid and weak keys.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        self.checked_key().map(|k| k.0)
    }

    /// [`PublicKey::verifying_key`], as a [`CheckedKey`] that need not be checked again.
    pub fn checked_key(&self) -> Result<CheckedKey, KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::NotAPoint)?;
        // The small-order test costs about as much again as the decompression (it compresses
        // the cofactor multiple), which is why a checked key is worth keeping.
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        // A key with a torsion component could make signatures that one verification
        // equation accepts and another refuses; an honest key (`[a]B`) never has one. The
        // test is a scalar multiplication by the group order, again worth caching.
        if !torsion_free(&key.to_edwards()) {
            return Err(KeyError::Torsion);
        }
        Ok(CheckedKey(key))
    }
}

/// `[ℓ]A = 0`, asked as `[ℓ − 1]A = −A` in variable time (a public key is public), which
/// costs about three quarters of the constant-time `EdwardsPoint::is_torsion_free`: for `A = P + T`,
/// `[ℓ − 1]A = −P + [ℓ − 1]T`, equal to `−P − T` only when `[ℓ]T = 0`, i.e. `T = 0`, since
/// `ℓ` is prime to the cofactor.
fn torsion_free(a: &curve25519_dalek::EdwardsPoint) -> bool {
    use curve25519_dalek::Scalar;
    let minus_one = -Scalar::ONE; // ℓ − 1
    curve25519_dalek::EdwardsPoint::vartime_double_scalar_mul_basepoint(
        &minus_one,
        a,
        &Scalar::ZERO,
    ) == -a
}

/// A decompressed Ed25519 key known to be a valid point of the prime-order subgroup (not of
/// small order, no torsion component): only
/// [`PublicKey::checked_key`] and [`Keypair::checked_key`] make one, so whoever holds one (a
/// cache of signers' keys, say) need not check it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedKey(VerifyingKey);

impl CheckedKey {
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

/// The full key in hex, as messages name it.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.as_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A wallet's signing key. Lives only in the wallet (or, for the bank vault, the operator).
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh key from 32 bytes of `rng` (what `SigningKey::generate` does).
    pub fn generate<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Keypair {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let key = Keypair(SigningKey::from_bytes(&seed));
        seed.fill(0);
        key
    }

    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(seed))
    }

    pub fn seed(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn public(&self) -> PublicKey {
        // A key derived from a secret scalar is never of small order.
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        self.0.as_ref()
    }

    /// The public key, checked: a key derived from a secret scalar is never of small order.
    pub fn checked_key(&self) -> CheckedKey {
        CheckedKey(*self.0.as_ref())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

/// A wallet as people see it: ledger id and public key, bech32m-encoded with human-readable
/// part `ecny`. Bech32m's checksum detects every single-character typo (and any error in up to
/// four characters), so a typo is a checksum error, never a different wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub ledger: LedgerId,
    pub key: PublicKey,
}

pub const ADDRESS_HRP: &str = "ecny";
const ADDRESS_PAYLOAD_LEN: usize = 4 + 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is not valid bech32m (a character is mistyped or missing): {0}")]
    Checksum(String),
    #[error("address must start with '{ADDRESS_HRP}1', found prefix '{0}'")]
    WrongPrefix(String),
    #[error("address carries {0} bytes; expected {ADDRESS_PAYLOAD_LEN}")]
    WrongLength(usize),
    #[error("address key: {0}")]
    Key(#[from] KeyError),
}

impl Address {
    pub fn new(ledger: LedgerId, key: PublicKey) -> Address {
        Address { ledger, key }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut payload = [0u8; ADDRESS_PAYLOAD_LEN];
        payload[..4].copy_from_slice(&self.ledger.0.to_be_bytes());
        payload[4..].copy_from_slice(self.key.as_bytes());
        let hrp = Hrp::parse_unchecked(ADDRESS_HRP);
        match bech32::encode::<Bech32m>(hrp, &payload) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Address, AddressError> {
        let checked = CheckedHrpstring::new::<Bech32m>(text)
            .map_err(|e| AddressError::Checksum(e.to_string()))?;
        let hrp = checked.hrp();
        if hrp.as_str() != ADDRESS_HRP {
            return Err(AddressError::WrongPrefix(hrp.to_string()));
        }
        let payload: Vec<u8> = checked.byte_iter().collect();
        if payload.len() != ADDRESS_PAYLOAD_LEN {
            return Err(AddressError::WrongLength(payload.len()));
        }
        let mut ledger = [0u8; 4];
        ledger.copy_from_slice(&payload[..4]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&payload[4..]);
        Ok(Address {
            ledger: LedgerId(u32::from_be_bytes(ledger)),
            key: PublicKey::checked(&key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips() {
        let key = Keypair::from_seed(&[7; 32]).public();
        let address = Address::new(LedgerId(42), key);
        let text = address.to_string();
        assert!(text.starts_with("ecny1"), "{text}");
        assert_eq!(text.parse::<Address>(), Ok(address));
    }

    #[test]
    fn every_single_character_typo_is_a_checksum_error() {
        const CHARSET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        let key = Keypair::from_seed(&[9; 32]).public();
        let text = Address::new(LedgerId(3), key).to_string();
        for position in ADDRESS_HRP.len() + 1..text.len() {
            for replacement in CHARSET.chars() {
                let mut typo: Vec<char> = text.chars().collect();
                if typo[position] == replacement {
                    continue;
                }
                typo[position] = replacement;
                let typo: String = typo.into_iter().collect();
                assert!(
                    matches!(typo.parse::<Address>(), Err(AddressError::Checksum(_))),
                    "{typo} was accepted"
                );
            }
        }
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::checked(&identity), Err(KeyError::Weak));
        let wrong_prefix =
            bech32::encode::<Bech32m>(Hrp::parse_unchecked("btc"), &[0u8; 36]).expect("encodes");
        assert!(matches!(
            wrong_prefix.parse::<Address>(),
            Err(AddressError::WrongPrefix(_))
        ));
    }
}
