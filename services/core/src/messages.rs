//! Every message signed between parties, as types: one enum (or struct) per authority, each
//! variant's signing bytes defined once here, and one function, [`verify`], that checks any
//! of them. A signature made for one purpose never verifies for another: every message
//! starts with its authority's domain tag, and within an authority with the action's name.
//!
//! | authority | type | tag |
//! |---|---|---|
//! | a wallet's key, proving possession when it opens | [`OpenProof`] | `cbdc/v1/open` |
//! | a bank's operator, to its own ledger | [`OperatorOrder`] | `cbdc/v1/op` |
//! | a bank's operator, to the central bank | [`BankRequest`] | `cbdc/v1/bank` |
//! | the central bank's administrator | [`AdminOrder`] | `cbdc/v1/admin` |
//! | the central bank, countersigning a move | [`Countersignature`] | `cbdc/v1/settle` |

use ed25519_dalek::VerifyingKey;

use crate::{Keypair, LedgerId, PublicKey, Txid};

/// Domain tag of a wallet's proof of key possession when it is opened.
pub const OPEN_TAG: &[u8] = b"cbdc/v1/open";
/// Domain tag of requests a bank's operator signs to its own ledger.
pub const OPERATOR_TAG: &[u8] = b"cbdc/v1/op";
/// Domain tag of the central bank's countersignature on a settlement.
pub const SETTLE_TAG: &[u8] = b"cbdc/v1/settle";
/// Domain tag of requests a bank's operator signs to the central bank.
pub const BANK_TAG: &[u8] = b"cbdc/v1/bank";
/// Domain tag of requests the central bank's administrator signs.
pub const ADMIN_TAG: &[u8] = b"cbdc/v1/admin";
/// Domain tag of the reserve outpoint an issue spends (see [`reserve_txid`]).
pub const RESERVE_TAG: &[u8] = b"cbdc/v1/reserve";

/// The ledger id that stands for the central bank: outputs naming it are redeemed.
pub const CENTRAL_BANK: LedgerId = LedgerId(0);

/// A message some key signs: its exact bytes, defined once.
pub trait Signed {
    /// The bytes the signature covers (domain tag first).
    fn signing_bytes(&self) -> Vec<u8>;

    /// Signs the message with `key`.
    fn sign(&self, key: &Keypair) -> [u8; 64] {
        key.sign(&self.signing_bytes())
    }
}

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0} bytes, expected a 64-byte Ed25519 signature")]
    Length(usize),
    #[error("does not verify")]
    Mismatch,
}

/// The one check of a signed message: `signature` is `key`'s strict Ed25519 signature over
/// `message`'s signing bytes.
pub fn verify(
    key: &VerifyingKey,
    message: &impl Signed,
    signature: &[u8],
) -> Result<(), SignatureError> {
    verify_bytes(key, &message.signing_bytes(), signature)
}

/// [`verify`] over bytes already built (a caller checking many signatures of one message
/// kind builds each message once for a batch verification, and falls back to this).
pub fn verify_bytes(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| SignatureError::Length(signature.len()))?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks many `(key, message, signature)` triples at once: one Ed25519 batch verification
/// over the well-formed ones and, only if the batch fails, each on its own to name the bad
/// ones. One result per triple, in order; accepts exactly what [`verify_bytes`] accepts,
/// but for the residual small-torsion case described in ARCHITECTURE.md (keys of small
/// order are refused before any signature is checked).
pub fn verify_each(items: &[(&VerifyingKey, &[u8], &[u8])]) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = items
        .iter()
        .map(|(_, _, sig)| match sig.len() {
            64 => Ok(()),
            n => Err(SignatureError::Length(n)),
        })
        .collect();
    let passing: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_ok()).collect();
    if passing.is_empty() {
        return results;
    }
    let messages: Vec<&[u8]> = passing.iter().map(|&i| items[i].1).collect();
    let signatures: Vec<ed25519_dalek::Signature> = passing
        .iter()
        .map(|&i| ed25519_dalek::Signature::from_slice(items[i].2).expect("64 bytes"))
        .collect();
    let keys: Vec<VerifyingKey> = passing.iter().map(|&i| *items[i].0).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
        for &i in &passing {
            let (key, message, signature) = items[i];
            results[i] = verify_bytes(key, message, signature);
        }
    }
    results
}

/// A wallet proves it holds the key it opens on `ledger`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenProof {
    pub ledger: LedgerId,
    pub key: PublicKey,
}

impl Signed for OpenProof {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut m = OPEN_TAG.to_vec();
        m.extend_from_slice(&self.ledger.0.to_be_bytes());
        m.extend_from_slice(self.key.as_bytes());
        m
    }
}

/// What a wallet action does to the wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalletAction {
    Freeze,
    Unfreeze,
    Close,
}

impl WalletAction {
    /// The action's name in the signed bytes and in logs.
    pub fn name(self) -> &'static str {
        match self {
            WalletAction::Freeze => "freeze",
            WalletAction::Unfreeze => "unfreeze",
            WalletAction::Close => "close",
        }
    }
}

/// What a bank's operator orders its own ledger to do. Text fields are signed as they
/// travel (the address string, the decimal amount), so what was signed is what was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorOrder<'a> {
    /// Freeze, unfreeze or close the wallet at `address`.
    Wallet {
        action: WalletAction,
        address: &'a str,
        request_id: &'a str,
        reason: &'a str,
    },
    /// Exchange deposits and digital currency with the wallet at `address`; `direction` is
    /// the wire enum's value, `wallet_transfer` the txid of the wallet's payment when it
    /// pays the vault.
    Exchange {
        address: &'a str,
        request_id: &'a str,
        amount: &'a str,
        direction: i32,
        wallet_transfer: Option<Txid>,
    },
    /// Return `amount` from the vault to the central bank.
    Redeem {
        amount: &'a str,
        request_id: &'a str,
    },
}

impl Signed for OperatorOrder<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut m = OPERATOR_TAG.to_vec();
        // The tag, then each part followed by 0.
        let mut part = |p: &[u8]| {
            m.extend_from_slice(p);
            m.push(0);
        };
        match self {
            OperatorOrder::Wallet {
                action,
                address,
                request_id,
                reason,
            } => {
                part(action.name().as_bytes());
                part(address.as_bytes());
                part(request_id.as_bytes());
                part(reason.as_bytes());
            }
            OperatorOrder::Exchange {
                address,
                request_id,
                amount,
                direction,
                wallet_transfer,
            } => {
                part(b"exchange");
                part(address.as_bytes());
                part(request_id.as_bytes());
                part(amount.as_bytes());
                part(&[*direction as u8]);
                part(wallet_transfer.as_ref().map_or(&[][..], |t| &t.0[..]));
            }
            OperatorOrder::Redeem { amount, request_id } => {
                part(b"redeem");
                part(amount.as_bytes());
                part(request_id.as_bytes());
            }
        }
        m
    }
}

/// What a bank's operator key signs to the central bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankRequest<'a> {
    /// Settle one committed transfer leaving ledger `from`.
    Settle { from: LedgerId, txid: &'a Txid },
    /// Settle a batch of them, in this order.
    SettleBatch { from: LedgerId, txids: &'a [Txid] },
}

impl Signed for BankRequest<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut m = BANK_TAG.to_vec();
        match self {
            BankRequest::Settle { from, txid } => {
                m.extend_from_slice(b"settle\0");
                m.extend_from_slice(&from.0.to_be_bytes());
                m.extend_from_slice(&txid.0);
            }
            BankRequest::SettleBatch { from, txids } => {
                m.extend_from_slice(b"settle-batch\0");
                m.extend_from_slice(&from.0.to_be_bytes());
                for t in *txids {
                    m.extend_from_slice(&t.0);
                }
            }
        }
        m
    }
}

/// An operator's status as the administrator sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorStatus {
    Active,
    Suspended,
}

impl OperatorStatus {
    pub fn name(self) -> &'static str {
        match self {
            OperatorStatus::Active => "active",
            OperatorStatus::Suspended => "suspended",
        }
    }
}

/// What the central bank's administrator orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOrder<'a> {
    /// Register (or update the name and endpoint of) the operator of `ledger`.
    Register {
        ledger: LedgerId,
        name: &'a str,
        operator_key: &'a [u8],
        endpoint: &'a str,
    },
    /// Set the operator of `ledger` active or suspended.
    SetStatus {
        ledger: LedgerId,
        status: OperatorStatus,
        request_id: &'a str,
    },
    /// Issue `amount` (as sent, a decimal string) to `ledger`'s vault.
    Mint {
        request_id: &'a str,
        ledger: LedgerId,
        amount: &'a str,
        reserve_reference: &'a str,
    },
}

impl Signed for AdminOrder<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut m = ADMIN_TAG.to_vec();
        // The tag, the action, then each part, each followed by 0.
        let mut part = |p: &[u8]| {
            m.extend_from_slice(p);
            m.push(0);
        };
        match self {
            AdminOrder::Register {
                ledger,
                name,
                operator_key,
                endpoint,
            } => {
                part(b"register");
                part(ledger.0.to_string().as_bytes());
                part(name.as_bytes());
                part(operator_key);
                part(endpoint.as_bytes());
            }
            AdminOrder::SetStatus {
                ledger,
                status,
                request_id,
            } => {
                part(b"status");
                part(ledger.0.to_string().as_bytes());
                part(status.name().as_bytes());
                part(request_id.as_bytes());
            }
            AdminOrder::Mint {
                request_id,
                ledger,
                amount,
                reserve_reference,
            } => {
                part(b"mint");
                part(request_id.as_bytes());
                part(ledger.0.to_string().as_bytes());
                part(amount.as_bytes());
                part(reserve_reference.as_bytes());
            }
        }
        m
    }
}

/// The central bank's countersignature on the move of `txid` to `to_ledger`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Countersignature {
    pub txid: Txid,
    pub to_ledger: LedgerId,
}

impl Signed for Countersignature {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut m = SETTLE_TAG.to_vec();
        m.extend_from_slice(&self.txid.0);
        m.extend_from_slice(&self.to_ledger.0.to_be_bytes());
        m
    }
}

/// The txid of the reserve entry an issue with `request_id` spends: issuance is a transfer
/// from the central bank's reserve, whose single input is `(reserve_txid, 0)`.
pub fn reserve_txid(request_id: &str) -> Txid {
    use sha2::Digest;
    Txid(
        sha2::Sha256::new()
            .chain_update(RESERVE_TAG)
            .chain_update(request_id.as_bytes())
            .finalize()
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp(n: u8) -> Keypair {
        Keypair::from_seed(&[n; 32])
    }

    /// Every kind of message, with fields that differ in one place from the next, so two
    /// kinds never share bytes.
    fn every_kind() -> Vec<(&'static str, Vec<u8>)> {
        let txid = Txid([7; 32]);
        let txids = [Txid([1; 32]), Txid([2; 32])];
        vec![
            (
                "open",
                OpenProof {
                    ledger: LedgerId(1),
                    key: kp(1).public(),
                }
                .signing_bytes(),
            ),
            (
                "freeze",
                OperatorOrder::Wallet {
                    action: WalletAction::Freeze,
                    address: "ecny1x",
                    request_id: "r",
                    reason: "court",
                }
                .signing_bytes(),
            ),
            (
                "unfreeze",
                OperatorOrder::Wallet {
                    action: WalletAction::Unfreeze,
                    address: "ecny1x",
                    request_id: "r",
                    reason: "court",
                }
                .signing_bytes(),
            ),
            (
                "exchange",
                OperatorOrder::Exchange {
                    address: "ecny1x",
                    request_id: "r",
                    amount: "1.00",
                    direction: 1,
                    wallet_transfer: None,
                }
                .signing_bytes(),
            ),
            (
                "redeem",
                OperatorOrder::Redeem {
                    amount: "1.00",
                    request_id: "r",
                }
                .signing_bytes(),
            ),
            (
                "settle",
                BankRequest::Settle {
                    from: LedgerId(1),
                    txid: &txid,
                }
                .signing_bytes(),
            ),
            (
                "settle-batch",
                BankRequest::SettleBatch {
                    from: LedgerId(1),
                    txids: &txids,
                }
                .signing_bytes(),
            ),
            (
                "register",
                AdminOrder::Register {
                    ledger: LedgerId(1),
                    name: "bank",
                    operator_key: &[3; 32],
                    endpoint: "http://x",
                }
                .signing_bytes(),
            ),
            (
                "status",
                AdminOrder::SetStatus {
                    ledger: LedgerId(1),
                    status: OperatorStatus::Suspended,
                    request_id: "r",
                }
                .signing_bytes(),
            ),
            (
                "mint",
                AdminOrder::Mint {
                    request_id: "r",
                    ledger: LedgerId(1),
                    amount: "1.00",
                    reserve_reference: "ref",
                }
                .signing_bytes(),
            ),
            (
                "countersignature",
                Countersignature {
                    txid,
                    to_ledger: LedgerId(2),
                }
                .signing_bytes(),
            ),
        ]
    }

    #[test]
    fn the_signed_bytes_are_the_contract() {
        // The exact bytes, written out by hand: a change here breaks every signer in the
        // field, so it must be deliberate.
        let mut expected = b"cbdc/v1/opfreeze\0ecny1x\0r\0court\0".to_vec();
        assert_eq!(every_kind()[1].1, expected);
        expected = b"cbdc/v1/adminstatus\x001\0suspended\0r\0".to_vec();
        assert_eq!(every_kind()[8].1, expected);
        expected = b"cbdc/v1/opexchange\0ecny1x\0r\x001.00\0\x01\0\0".to_vec();
        assert_eq!(every_kind()[3].1, expected);
        let mut settle = b"cbdc/v1/banksettle\0".to_vec();
        settle.extend_from_slice(&1u32.to_be_bytes());
        settle.extend_from_slice(&[7; 32]);
        assert_eq!(every_kind()[5].1, settle);
        let mut open = b"cbdc/v1/open".to_vec();
        open.extend_from_slice(&1u32.to_be_bytes());
        open.extend_from_slice(kp(1).public().as_bytes());
        assert_eq!(every_kind()[0].1, open);
    }

    #[test]
    fn a_signature_for_one_kind_verifies_for_no_other() {
        let signer = kp(9);
        let kinds = every_kind();
        for (i, (name, bytes)) in kinds.iter().enumerate() {
            let sig = signer.sign(bytes);
            assert_eq!(verify_bytes(signer.verifying_key(), bytes, &sig), Ok(()));
            assert_eq!(
                verify_bytes(kp(8).verifying_key(), bytes, &sig),
                Err(SignatureError::Mismatch),
                "{name} verified under another key"
            );
            for (j, (other, other_bytes)) in kinds.iter().enumerate() {
                if i != j {
                    assert_eq!(
                        verify_bytes(signer.verifying_key(), other_bytes, &sig),
                        Err(SignatureError::Mismatch),
                        "a {name} signature verified as {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn many_signatures_are_checked_together_and_each_bad_one_named() {
        let signer = kp(5);
        let messages: Vec<Vec<u8>> = (0..6u8)
            .map(|n| {
                Countersignature {
                    txid: Txid([n; 32]),
                    to_ledger: LedgerId(2),
                }
                .signing_bytes()
            })
            .collect();
        let mut sigs: Vec<Vec<u8>> = messages.iter().map(|m| signer.sign(m).to_vec()).collect();
        let all: Vec<_> = (0..6)
            .map(|i| (signer.verifying_key(), &messages[i][..], &sigs[i][..]))
            .collect();
        assert!(verify_each(&all).iter().all(Result::is_ok));
        sigs[2] = signer.sign(&messages[3]).to_vec();
        sigs[4].truncate(10);
        let some_bad: Vec<_> = (0..6)
            .map(|i| (signer.verifying_key(), &messages[i][..], &sigs[i][..]))
            .collect();
        let results = verify_each(&some_bad);
        assert_eq!(results[2], Err(SignatureError::Mismatch));
        assert_eq!(results[4], Err(SignatureError::Length(10)));
        for i in [0, 1, 3, 5] {
            assert_eq!(results[i], Ok(()), "item {i}");
        }
    }

    #[test]
    fn verify_names_a_short_signature_and_checks_the_message_type() {
        let signer = kp(4);
        let order = OperatorOrder::Redeem {
            amount: "5.00",
            request_id: "r-1",
        };
        let sig = order.sign(&signer);
        assert_eq!(verify(signer.verifying_key(), &order, &sig), Ok(()));
        assert_eq!(
            verify(signer.verifying_key(), &order, &sig[..63]),
            Err(SignatureError::Length(63))
        );
        let other = OperatorOrder::Redeem {
            amount: "50.00",
            request_id: "r-1",
        };
        assert_eq!(
            verify(signer.verifying_key(), &other, &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn each_issue_request_spends_its_own_reserve_entry() {
        use sha2::Digest;
        let expected: [u8; 32] = sha2::Sha256::new()
            .chain_update(b"cbdc/v1/reserve")
            .chain_update(b"issue-1")
            .finalize()
            .into();
        assert_eq!(reserve_txid("issue-1"), Txid(expected));
        assert_ne!(reserve_txid("issue-1"), reserve_txid("issue-2"));
    }
}
