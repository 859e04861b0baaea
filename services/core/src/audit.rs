//! What a ledger's audit log commits to, and the offline checks of its checkpoints and
//! receipts.
//!
//! Each ledger sequences what it commits into an append-only RFC 6962 Merkle log: leaf `i`
//! is the `i`-th transfer in commit order, hashed over [`leaf_data`] (ledger, 12-byte log
//! position, txid — and the txid commits to the whole body). Periodically the ledger signs a
//! [`Checkpoint`] with its operator key. A [`Receipt`] — the transfer, its position and index,
//! an inclusion proof and a signed checkpoint — is verified by [`verify_receipt`] with nothing
//! but the ledger operator's public key.

use crate::merkle::{self, Hash, MerkleError};
use crate::{Amount, LedgerId, PublicKey, Transfer};

/// Domain tag of a log leaf.
pub const LEAF_TAG: &[u8] = b"cbdc/v1/leaf";
/// Domain tag of a checkpoint signature.
pub const CHECKPOINT_TAG: &[u8] = b"cbdc/v2/checkpoint";
/// The length of a log position (commit versionstamp, then order within the commit).
pub const POSITION_LEN: usize = 12;

/// The bytes leaf `i` of a ledger's log hashes: tag ‖ ledger (u32 BE) ‖ position ‖ txid.
pub fn leaf_data(ledger: LedgerId, position: &[u8; POSITION_LEN], txid: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEAF_TAG.len() + 4 + POSITION_LEN + 32);
    out.extend_from_slice(LEAF_TAG);
    out.extend_from_slice(&ledger.0.to_be_bytes());
    out.extend_from_slice(position);
    out.extend_from_slice(txid);
    out
}

/// A ledger's signed statement of its log and the value it holds.
///
/// `outstanding` is the value the ledger answers for, counted at its edge:
/// `outstanding = inbound − settled_out`, both running totals — `inbound` counts every
/// central-bank delivery applied (issuance and moves from other ledgers), `settled_out`
/// every outbound move (to other ledgers, or redeemed) the central bank acknowledged. The
/// central bank compares both with its own books.
///
/// What the ledger holds is counted apart, from the outputs themselves: `unspent` is the
/// sum of the values its transfers created minus those they spent over the first `size`
/// leaves of its log, `unspent_set` the [`SetHash`](crate::unspent::SetHash) digest of those
/// outputs, and `outbox` the value committed to leave the ledger and not yet acknowledged.
/// A ledger that creates value, or fails to spend what it consumed, breaks
/// `unspent + outbox = outstanding`; one whose state differs from what its log says is
/// caught by an auditor replaying the log ([`crate::unspent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub ledger: LedgerId,
    pub size: u64,
    pub root: Hash,
    pub outstanding: Amount,
    pub inbound: Amount,
    pub settled_out: Amount,
    pub timestamp_ms: u64,
    pub unspent: Amount,
    pub outbox: Amount,
    pub unspent_set: [u8; 32],
}

/// Bytes of [`Checkpoint::message`].
pub const CHECKPOINT_MESSAGE_BYTES: usize = 18 + 4 + 8 + 32 + 8 * 6 + 32;

/// Why a checkpoint or receipt does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the checkpoint's signature does not verify against the ledger operator's key")]
    BadSignature,
    #[error("the ledger operator's key is not a usable Ed25519 key")]
    BadKey,
    #[error("the checkpoint is for ledger {got}, the receipt for ledger {want}")]
    WrongLedger { got: LedgerId, want: LedgerId },
    #[error("outstanding {outstanding} is not inbound {inbound} − settled out {settled_out}")]
    Unbalanced {
        outstanding: Amount,
        inbound: Amount,
        settled_out: Amount,
    },
    #[error(
        "unspent {unspent} + outbox {outbox} is not the outstanding {outstanding} (inbound − settled out)"
    )]
    HoldsOtherThanOutstanding {
        unspent: Amount,
        outbox: Amount,
        outstanding: Amount,
    },
    #[error("the inclusion proof: {0}")]
    Proof(#[from] MerkleError),
    #[error("the receipt's transfer does not hash to its txid")]
    TxidMismatch,
}

impl Checkpoint {
    /// The exact bytes the operator signs.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHECKPOINT_MESSAGE_BYTES);
        m.extend_from_slice(CHECKPOINT_TAG);
        m.extend_from_slice(&self.ledger.0.to_be_bytes());
        m.extend_from_slice(&self.size.to_be_bytes());
        m.extend_from_slice(&self.root);
        m.extend_from_slice(&self.outstanding.fen().to_be_bytes());
        m.extend_from_slice(&self.inbound.fen().to_be_bytes());
        m.extend_from_slice(&self.settled_out.fen().to_be_bytes());
        m.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        m.extend_from_slice(&self.unspent.fen().to_be_bytes());
        m.extend_from_slice(&self.outbox.fen().to_be_bytes());
        m.extend_from_slice(&self.unspent_set);
        m
    }

    /// Reads the bytes [`Checkpoint::message`] wrote; `None` if they are anything else.
    pub fn from_message(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != CHECKPOINT_MESSAGE_BYTES || !b.starts_with(CHECKPOINT_TAG) {
            return None;
        }
        let at = CHECKPOINT_TAG.len();
        let u = |i: usize| {
            // The size, then (after the root) outstanding … outbox.
            let from = if i == 0 { at + 4 } else { at + 28 + 8 * i };
            u64::from_be_bytes(b[from..from + 8].try_into().expect("8 bytes"))
        };
        let ledger = LedgerId(u32::from_be_bytes(b[at..at + 4].try_into().ok()?));
        let size = u(0);
        let root: Hash = b[at + 12..at + 44].try_into().ok()?;
        let outstanding = Amount::from_fen(u(2));
        let inbound = Amount::from_fen(u(3));
        let settled_out = Amount::from_fen(u(4));
        let timestamp_ms = u(5);
        let unspent = Amount::from_fen(u(6));
        let outbox = Amount::from_fen(u(7));
        let unspent_set = b[b.len() - 32..].try_into().ok()?;
        Some(Checkpoint {
            ledger,
            size,
            root,
            outstanding,
            inbound,
            settled_out,
            timestamp_ms,
            unspent,
            outbox,
            unspent_set,
        })
    }

    /// Checks the signature by `operator` ([`Checkpoint::verify_signature`]) and that the
    /// figures add up ([`Checkpoint::check_figures`]).
    pub fn verify(&self, operator: &PublicKey, signature: &[u8]) -> Result<(), AuditError> {
        self.verify_signature(operator, signature)?;
        self.check_figures()
    }

    /// The operator's signature over [`Checkpoint::message`].
    pub fn verify_signature(
        &self,
        operator: &PublicKey,
        signature: &[u8],
    ) -> Result<(), AuditError> {
        let key = operator.checked_key().map_err(|_| AuditError::BadKey)?;
        let sig: &[u8; 64] = signature.try_into().map_err(|_| AuditError::BadSignature)?;
        if !crate::signature::verify(&key, &self.message(), sig) {
            return Err(AuditError::BadSignature);
        }
        Ok(())
    }

    /// `outstanding = inbound − settled_out`, and `unspent + outbox = outstanding`: the value
    /// counted at the edge is the value held.
    pub fn check_figures(&self) -> Result<(), AuditError> {
        if self.inbound.checked_sub(self.settled_out) != Some(self.outstanding) {
            return Err(AuditError::Unbalanced {
                outstanding: self.outstanding,
                inbound: self.inbound,
                settled_out: self.settled_out,
            });
        }
        if self.unspent.checked_add(self.outbox) != Some(self.outstanding) {
            return Err(AuditError::HoldsOtherThanOutstanding {
                unspent: self.unspent,
                outbox: self.outbox,
                outstanding: self.outstanding,
            });
        }
        Ok(())
    }
}

/// Proof that a transfer is in a ledger's log.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// The transfer the leaf commits to.
    pub txid: crate::Txid,
    /// Its body and witnesses: given to the payer, withheld from a payee (the leaf commits
    /// to the txid only, so a payee verifies without seeing the payer's inputs and change).
    pub transfer: Option<Transfer>,
    pub position: [u8; POSITION_LEN],
    pub index: u64,
    pub proof: Vec<Hash>,
    pub checkpoint: Checkpoint,
    pub checkpoint_signature: Vec<u8>,
}

/// Verifies a receipt offline: the checkpoint is signed by `operator` (the operator key of
/// `ledger`), and the transfer's leaf is at `index` in the checkpoint's tree.
pub fn verify_receipt(
    receipt: &Receipt,
    ledger: LedgerId,
    operator: &PublicKey,
) -> Result<(), AuditError> {
    let cp = &receipt.checkpoint;
    if cp.ledger != ledger {
        return Err(AuditError::WrongLedger {
            got: cp.ledger,
            want: ledger,
        });
    }
    cp.verify(operator, &receipt.checkpoint_signature)?;
    if let Some(t) = &receipt.transfer
        && t.txid() != receipt.txid
    {
        return Err(AuditError::TxidMismatch);
    }
    let leaf = merkle::leaf_hash(&leaf_data(ledger, &receipt.position, &receipt.txid.0));
    merkle::verify_inclusion(&leaf, receipt.index, cp.size, &receipt.proof, &cp.root)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            ledger: LedgerId(7),
            size: 11,
            root: [3; 32],
            outstanding: Amount::from_fen(900),
            inbound: Amount::from_fen(1000),
            settled_out: Amount::from_fen(100),
            timestamp_ms: 1_700_000_000_123,
            unspent: Amount::from_fen(850),
            outbox: Amount::from_fen(50),
            unspent_set: [9; 32],
        }
    }

    #[test]
    fn the_message_reads_back_field_by_field() {
        let cp = checkpoint();
        assert_eq!(cp.message().len(), CHECKPOINT_MESSAGE_BYTES);
        assert_eq!(Checkpoint::from_message(&cp.message()), Some(cp));
        // Every field is signed: changing any one changes the message.
        let variants = [
            Checkpoint { size: 12, ..cp },
            Checkpoint {
                root: [4; 32],
                ..cp
            },
            Checkpoint {
                timestamp_ms: 1,
                ..cp
            },
            Checkpoint {
                unspent: Amount::from_fen(851),
                ..cp
            },
            Checkpoint {
                outbox: Amount::from_fen(49),
                ..cp
            },
            Checkpoint {
                unspent_set: [8; 32],
                ..cp
            },
            Checkpoint {
                ledger: LedgerId(8),
                ..cp
            },
        ];
        for v in variants {
            assert_ne!(v.message(), cp.message(), "{v:?}");
            assert_eq!(Checkpoint::from_message(&v.message()), Some(v));
        }
        assert_eq!(Checkpoint::from_message(&cp.message()[1..]), None);
    }

    #[test]
    fn the_figures_must_add_up_both_ways() {
        let op = Keypair::from_seed(&[1; 32]);
        let cp = checkpoint();
        assert_eq!(cp.verify(&op.public(), &op.sign(&cp.message())), Ok(()));
        let created = Checkpoint {
            unspent: Amount::from_fen(851),
            ..cp
        };
        assert_eq!(
            created.verify(&op.public(), &op.sign(&created.message())),
            Err(AuditError::HoldsOtherThanOutstanding {
                unspent: Amount::from_fen(851),
                outbox: Amount::from_fen(50),
                outstanding: Amount::from_fen(900),
            })
        );
        let lost = Checkpoint {
            outbox: Amount::from_fen(49),
            ..cp
        };
        assert!(lost.check_figures().is_err());
        let edge = Checkpoint {
            outstanding: Amount::from_fen(901),
            ..cp
        };
        assert!(matches!(
            edge.check_figures(),
            Err(AuditError::Unbalanced { .. })
        ));
        let other = Keypair::from_seed(&[2; 32]);
        assert_eq!(
            cp.verify(&op.public(), &other.sign(&cp.message())),
            Err(AuditError::BadSignature)
        );
    }
}
