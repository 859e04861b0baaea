//! Outputs, spending conditions and signed transfers, with their canonical encoding.
//!
//! A transfer is `{ body, witnesses }`. `body` is the exact bytes of a [`TransferBody`] in the
//! encoding below; the ledger decodes what it verified and never re-encodes it.
//! `txid = SHA-256(TXID_TAG ‖ body)`; each witness is an Ed25519 signature over
//! `SIGNATURE_TAG ‖ txid`.
//!
//! Body encoding, version 1 (all integers big-endian):
//! ```text
//! version u8 = 1 | valid_until u64
//! n_inputs u16  | n × (txid [32] | index u16 | value u64)
//! n_outputs u16 | n × (ledger u32 | value u64 | lock)
//! memo_len u16  | memo bytes
//! lock = 0 | key [32]
//!      | 1 | payer [32] | payee [32] | expires_at u64                           (Hold)
//!      | 2 | owner [32] | merchant [32] | per_payment_max u64 | expires_at u64  (Mandate)
//! ```
//! Each input names the value it spends, so the signer commits to the amount and conservation
//! is checked before any storage read; the ledger checks the stated value against its books.

use std::fmt;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::Amount;
use crate::codec::{DecodeError, Reader};
use crate::keys::{CheckedKey, KeyError, Keypair, LedgerId, PublicKey};
use crate::validate::Reject;

/// Domain tag hashed before the body to form the txid.
pub const TXID_TAG: &[u8] = b"cbdc/v1/txid";
/// Domain tag signed before the txid by every witness.
pub const SIGNATURE_TAG: &[u8] = b"cbdc/v1/sig";
pub const BODY_VERSION: u8 = 1;
pub const MAX_INPUTS: usize = 32;
pub const MAX_OUTPUTS: usize = 32;
pub const MAX_WITNESSES: usize = 8;
pub const MAX_MEMO_BYTES: usize = 256;
const INPUT_BYTES: usize = 32 + 2 + 8;
const OUTPUT_BYTES_MAX: usize = 4 + 8 + 1 + 32 + 32 + 8 + 8;
/// The largest body any valid transfer can have.
pub const MAX_BODY_BYTES: usize =
    1 + 8 + 2 + MAX_INPUTS * INPUT_BYTES + 2 + MAX_OUTPUTS * OUTPUT_BYTES_MAX + 2 + MAX_MEMO_BYTES;

/// Seconds since the Unix epoch, UTC. Always passed in; core never reads a clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixSeconds(pub u64);

/// Seconds since the epoch, as messages show them.
impl std::fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix time {}", self.0)
    }
}

/// `SHA-256(TXID_TAG ‖ body)`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Txid(pub [u8; 32]);

impl Txid {
    pub fn of_body(body: &[u8]) -> Txid {
        let mut hasher = Sha256::new();
        hasher.update(TXID_TAG);
        hasher.update(body);
        Txid(hasher.finalize().into())
    }

    /// The exact message every witness signs.
    pub fn signing_message(&self) -> [u8; SIGNATURE_TAG.len() + 32] {
        let mut message = [0u8; SIGNATURE_TAG.len() + 32];
        message[..SIGNATURE_TAG.len()].copy_from_slice(SIGNATURE_TAG);
        message[SIGNATURE_TAG.len()..].copy_from_slice(&self.0);
        message
    }
}

impl fmt::Display for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Txid({self})")
    }
}

/// One output of a committed transfer: `{ txid, index }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutPoint {
    pub txid: Txid,
    pub index: u16,
}

impl fmt::Display for OutPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.txid, self.index)
    }
}

/// The spending condition of an output. A closed set, checked by pure code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lock {
    /// Spendable with the key's signature.
    Key(PublicKey),
    /// A pre-authorisation: before `expires_at` the payee may spend it (capture any part, the
    /// rest back to the payer); from `expires_at` on the payer may reclaim it; both together
    /// may spend it at any time.
    Hold {
        payer: PublicKey,
        payee: PublicKey,
        expires_at: UnixSeconds,
    },
    /// A sub-wallet pushed to a merchant app: the owner may spend it at any time; before
    /// `expires_at` the merchant may take at most `per_payment_max` per transfer, and every
    /// other output of that transfer must carry this identical lock.
    Mandate {
        owner: PublicKey,
        merchant: PublicKey,
        per_payment_max: Amount,
        expires_at: UnixSeconds,
    },
}

impl Lock {
    /// The wallet whose money this is (for balances, limits and freezes): the key holder, the
    /// payer of a hold (until captured), the owner of a mandate.
    pub fn owner(&self) -> PublicKey {
        match *self {
            Lock::Key(key) => key,
            Lock::Hold { payer, .. } => payer,
            Lock::Mandate { owner, .. } => owner,
        }
    }
}

/// `{ ledger, value, lock }`: value held on `ledger` under `lock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Output {
    pub ledger: LedgerId,
    pub value: Amount,
    pub lock: Lock,
}

/// An input: the outpoint spent and the value the signer says it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Input {
    pub outpoint: OutPoint,
    pub value: Amount,
}

/// The signed part of a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferBody {
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub memo: Vec<u8>,
    pub valid_until: UnixSeconds,
}

/// One signature over `SIGNATURE_TAG ‖ txid` and the (checked, decompressed) key that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Witness {
    pub key: PublicKey,
    checked: CheckedKey,
    pub signature: [u8; 64],
}

impl Witness {
    /// Builds a witness from wire bytes, refusing wrong lengths and unusable keys.
    pub fn from_slices(index: usize, key: &[u8], signature: &[u8]) -> Result<Witness, Reject> {
        Witness::from_slices_with(index, key, signature, PublicKey::checked_key)
    }

    /// [`Witness::from_slices`] with the key decompressed and checked by `decompress` (for
    /// example a cache of wallets' keys: decompressing and checking costs a few µs). A
    /// [`CheckedKey`] is not of small order by construction; one that is not this key's is
    /// ignored and the key decompressed here instead.
    pub fn from_slices_with(
        index: usize,
        key: &[u8],
        signature: &[u8],
        decompress: impl FnOnce(&PublicKey) -> Result<CheckedKey, KeyError>,
    ) -> Result<Witness, Reject> {
        let key: [u8; 32] = key.try_into().map_err(|_| Reject::WitnessKeyLength {
            index,
            len: key.len(),
        })?;
        let signature: [u8; 64] =
            signature
                .try_into()
                .map_err(|_| Reject::WitnessSignatureLength {
                    index,
                    len: signature.len(),
                })?;
        let key = PublicKey::from_bytes(key);
        let refuse = |error| Reject::WitnessKey { index, error };
        let mut checked = decompress(&key).map_err(refuse)?;
        if checked.verifying_key().as_bytes() != key.as_bytes() {
            // Not this key's decompression: do it here instead.
            checked = key.checked_key().map_err(refuse)?;
        }
        Ok(Witness {
            key,
            checked,
            signature,
        })
    }

    /// Checks that `key` is a usable Ed25519 key (index names the witness in the error).
    pub fn new(index: usize, key: PublicKey, signature: [u8; 64]) -> Result<Witness, Reject> {
        let checked = key
            .checked_key()
            .map_err(|error| Reject::WitnessKey { index, error })?;
        Ok(Witness {
            key,
            checked,
            signature,
        })
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        self.checked.verifying_key()
    }

    pub fn checked_key(&self) -> &CheckedKey {
        &self.checked
    }
}

/// A decoded transfer: the exact body bytes, what they decode to, the txid and witnesses.
/// Fields are private: a `Transfer` always holds a body that decoded from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    body_bytes: Vec<u8>,
    body: TransferBody,
    txid: Txid,
    witnesses: Vec<Witness>,
}

impl Transfer {
    /// Decodes `body_bytes` (structure and bounds) and attaches the witnesses.
    pub fn decode(body_bytes: Vec<u8>, witnesses: Vec<Witness>) -> Result<Transfer, Reject> {
        if witnesses.is_empty() {
            return Err(Reject::NoWitnesses);
        }
        if witnesses.len() > MAX_WITNESSES {
            return Err(Reject::TooManyWitnesses {
                count: witnesses.len(),
                max: MAX_WITNESSES,
            });
        }
        let body = TransferBody::decode(&body_bytes)?;
        let txid = Txid::of_body(&body_bytes);
        Ok(Transfer {
            body_bytes,
            body,
            txid,
            witnesses,
        })
    }

    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    pub fn body(&self) -> &TransferBody {
        &self.body
    }

    pub fn txid(&self) -> Txid {
        self.txid
    }

    pub fn witnesses(&self) -> &[Witness] {
        &self.witnesses
    }

    /// The outpoint of output `index` of this transfer.
    pub fn outpoint(&self, index: u16) -> OutPoint {
        OutPoint {
            txid: self.txid,
            index,
        }
    }
}

impl Output {
    /// The output's canonical encoding, as inside a body: ledger, value, lock.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OUTPUT_BYTES_MAX);
        out.extend_from_slice(&self.ledger.0.to_be_bytes());
        out.extend_from_slice(&self.value.fen().to_be_bytes());
        encode_lock(&self.lock, &mut out);
        out
    }

    /// Decodes exactly one output encoded by [`Output::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Output, Reject> {
        let mut r = Reader::new(bytes);
        let ledger = LedgerId(r.u32("output ledger")?);
        let value = Amount::from_fen(r.u64("output value")?);
        let lock = decode_lock(&mut r, 0)?;
        r.finish()?;
        Ok(Output {
            ledger,
            value,
            lock,
        })
    }
}

impl TransferBody {
    /// The canonical encoding. Panics never; bounds are the caller's to respect (the decoder
    /// enforces them on the way back in).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            13 + self.inputs.len() * INPUT_BYTES
                + self.outputs.len() * OUTPUT_BYTES_MAX
                + 2
                + self.memo.len(),
        );
        out.push(BODY_VERSION);
        out.extend_from_slice(&self.valid_until.0.to_be_bytes());
        out.extend_from_slice(&(self.inputs.len() as u16).to_be_bytes());
        for input in &self.inputs {
            out.extend_from_slice(&input.outpoint.txid.0);
            out.extend_from_slice(&input.outpoint.index.to_be_bytes());
            out.extend_from_slice(&input.value.fen().to_be_bytes());
        }
        out.extend_from_slice(&(self.outputs.len() as u16).to_be_bytes());
        for output in &self.outputs {
            out.extend_from_slice(&output.ledger.0.to_be_bytes());
            out.extend_from_slice(&output.value.fen().to_be_bytes());
            encode_lock(&output.lock, &mut out);
        }
        out.extend_from_slice(&(self.memo.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.memo);
        out
    }

    /// Decodes and checks structure and bounds, in that order of the bytes.
    pub fn decode(bytes: &[u8]) -> Result<TransferBody, Reject> {
        if bytes.len() > MAX_BODY_BYTES {
            return Err(Reject::BodyTooLarge {
                len: bytes.len(),
                max: MAX_BODY_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != BODY_VERSION {
            return Err(DecodeError::UnknownVersion(version).into());
        }
        let valid_until = UnixSeconds(r.u64("valid_until")?);
        let n_inputs = usize::from(r.u16("input count")?);
        if n_inputs == 0 {
            return Err(Reject::NoInputs);
        }
        if n_inputs > MAX_INPUTS {
            return Err(Reject::TooManyInputs {
                count: n_inputs,
                max: MAX_INPUTS,
            });
        }
        let mut inputs = Vec::with_capacity(n_inputs);
        for _ in 0..n_inputs {
            let txid = Txid(r.array("input txid")?);
            let index = r.u16("input index")?;
            let value = Amount::from_fen(r.u64("input value")?);
            inputs.push(Input {
                outpoint: OutPoint { txid, index },
                value,
            });
        }
        let n_outputs = usize::from(r.u16("output count")?);
        if n_outputs == 0 {
            return Err(Reject::NoOutputs);
        }
        if n_outputs > MAX_OUTPUTS {
            return Err(Reject::TooManyOutputs {
                count: n_outputs,
                max: MAX_OUTPUTS,
            });
        }
        let mut outputs = Vec::with_capacity(n_outputs);
        for index in 0..n_outputs {
            let ledger = LedgerId(r.u32("output ledger")?);
            let value = Amount::from_fen(r.u64("output value")?);
            let lock = decode_lock(&mut r, index)?;
            outputs.push(Output {
                ledger,
                value,
                lock,
            });
        }
        let memo_len = usize::from(r.u16("memo length")?);
        if memo_len > MAX_MEMO_BYTES {
            return Err(Reject::MemoTooLong {
                len: memo_len,
                max: MAX_MEMO_BYTES,
            });
        }
        let memo = r.take(memo_len, "memo")?.to_vec();
        r.finish()?;
        Ok(TransferBody {
            inputs,
            outputs,
            memo,
            valid_until,
        })
    }
}

fn encode_lock(lock: &Lock, out: &mut Vec<u8>) {
    match lock {
        Lock::Key(key) => {
            out.push(0);
            out.extend_from_slice(key.as_bytes());
        }
        Lock::Hold {
            payer,
            payee,
            expires_at,
        } => {
            out.push(1);
            out.extend_from_slice(payer.as_bytes());
            out.extend_from_slice(payee.as_bytes());
            out.extend_from_slice(&expires_at.0.to_be_bytes());
        }
        Lock::Mandate {
            owner,
            merchant,
            per_payment_max,
            expires_at,
        } => {
            out.push(2);
            out.extend_from_slice(owner.as_bytes());
            out.extend_from_slice(merchant.as_bytes());
            out.extend_from_slice(&per_payment_max.fen().to_be_bytes());
            out.extend_from_slice(&expires_at.0.to_be_bytes());
        }
    }
}

fn decode_key(r: &mut Reader<'_>, what: &'static str) -> Result<PublicKey, Reject> {
    Ok(PublicKey::from_bytes(r.array::<32>(what)?))
}

fn decode_lock(r: &mut Reader<'_>, output: usize) -> Result<Lock, Reject> {
    match r.u8("lock tag")? {
        0 => Ok(Lock::Key(decode_key(r, "key")?)),
        1 => Ok(Lock::Hold {
            payer: decode_key(r, "hold payer")?,
            payee: decode_key(r, "hold payee")?,
            expires_at: UnixSeconds(r.u64("hold expiry")?),
        }),
        2 => Ok(Lock::Mandate {
            owner: decode_key(r, "mandate owner")?,
            merchant: decode_key(r, "mandate merchant")?,
            per_payment_max: Amount::from_fen(r.u64("mandate per-payment maximum")?),
            expires_at: UnixSeconds(r.u64("mandate expiry")?),
        }),
        tag => Err(DecodeError::UnknownLockTag { output, tag }.into()),
    }
}

/// Wallet-side helper: assemble a body, encode it once, sign its txid.
#[derive(Clone, Debug, Default)]
pub struct TransferBuilder {
    body: TransferBody,
}

impl Default for TransferBody {
    fn default() -> Self {
        TransferBody {
            inputs: Vec::new(),
            outputs: Vec::new(),
            memo: Vec::new(),
            valid_until: UnixSeconds(u64::MAX),
        }
    }
}

impl TransferBuilder {
    pub fn new(valid_until: UnixSeconds) -> TransferBuilder {
        TransferBuilder {
            body: TransferBody {
                valid_until,
                ..TransferBody::default()
            },
        }
    }

    pub fn input(mut self, outpoint: OutPoint, value: Amount) -> Self {
        self.body.inputs.push(Input { outpoint, value });
        self
    }

    pub fn output(mut self, ledger: LedgerId, value: Amount, lock: Lock) -> Self {
        self.body.outputs.push(Output {
            ledger,
            value,
            lock,
        });
        self
    }

    pub fn memo(mut self, memo: impl Into<Vec<u8>>) -> Self {
        self.body.memo = memo.into();
        self
    }

    pub fn body(&self) -> &TransferBody {
        &self.body
    }

    /// Encodes the body and signs its txid with every key given (in order).
    pub fn sign(self, signers: &[&Keypair]) -> Result<Transfer, Reject> {
        let body_bytes = self.body.encode();
        sign_body(body_bytes, signers)
    }
}

/// Signs exact body bytes (for example an unsigned body a ledger built by coin selection).
pub fn sign_body(body_bytes: Vec<u8>, signers: &[&Keypair]) -> Result<Transfer, Reject> {
    let message = Txid::of_body(&body_bytes).signing_message();
    let witnesses = signers
        .iter()
        .map(|k| Witness {
            key: k.public(),
            checked: k.checked_key(),
            signature: k.sign(&message),
        })
        .collect();
    Transfer::decode(body_bytes, witnesses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::from_seed(&[seed; 32])
    }

    #[test]
    fn body_round_trips_exactly() {
        let (a, b) = (key(1), key(2));
        let body = TransferBody {
            inputs: vec![Input {
                outpoint: OutPoint {
                    txid: Txid([3; 32]),
                    index: 7,
                },
                value: Amount::from_fen(500),
            }],
            outputs: vec![
                Output {
                    ledger: LedgerId(1),
                    value: Amount::from_fen(200),
                    lock: Lock::Key(a.public()),
                },
                Output {
                    ledger: LedgerId(2),
                    value: Amount::from_fen(100),
                    lock: Lock::Hold {
                        payer: a.public(),
                        payee: b.public(),
                        expires_at: UnixSeconds(99),
                    },
                },
                Output {
                    ledger: LedgerId(2),
                    value: Amount::from_fen(200),
                    lock: Lock::Mandate {
                        owner: a.public(),
                        merchant: b.public(),
                        per_payment_max: Amount::from_fen(50),
                        expires_at: UnixSeconds(1000),
                    },
                },
            ],
            memo: b"order 42".to_vec(),
            valid_until: UnixSeconds(1234),
        };
        let bytes = body.encode();
        assert_eq!(TransferBody::decode(&bytes), Ok(body.clone()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            TransferBody::decode(&longer),
            Err(Reject::Malformed(DecodeError::TrailingBytes { count: 1 }))
        );
        for cut in 0..bytes.len() {
            assert!(TransferBody::decode(&bytes[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn bounds_are_named() {
        let a = key(1);
        let mut builder = TransferBuilder::new(UnixSeconds(10));
        for i in 0..=MAX_INPUTS as u16 {
            builder = builder.input(
                OutPoint {
                    txid: Txid([1; 32]),
                    index: i,
                },
                Amount::from_fen(1),
            );
        }
        let builder = builder.output(LedgerId(1), Amount::from_fen(1), Lock::Key(a.public()));
        assert_eq!(
            builder.sign(&[&a]).map(|_| ()),
            Err(Reject::TooManyInputs {
                count: MAX_INPUTS + 1,
                max: MAX_INPUTS
            })
        );
        let long_memo = TransferBuilder::new(UnixSeconds(10))
            .input(
                OutPoint {
                    txid: Txid([1; 32]),
                    index: 0,
                },
                Amount::from_fen(1),
            )
            .output(LedgerId(1), Amount::from_fen(1), Lock::Key(a.public()))
            .memo(vec![b'x'; MAX_MEMO_BYTES + 1]);
        assert_eq!(
            long_memo.sign(&[&a]).map(|_| ()),
            Err(Reject::MemoTooLong {
                len: MAX_MEMO_BYTES + 1,
                max: MAX_MEMO_BYTES
            })
        );
    }
}
