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
pub const CHECKPOINT_TAG: &[u8] = b"cbdc/v1/checkpoint";
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
/// `outstanding` is the value the ledger answers for: its unspent outputs plus what waits
/// in its outbox for the central bank. It moves only when value crosses the ledger's edge,
/// so `outstanding = inbound − settled_out`, both running totals: `inbound` counts every
/// central-bank delivery applied (issuance and moves from other ledgers), `settled_out`
/// every outbound move (to other ledgers, or redeemed to the central bank) the central bank
/// acknowledged. The central bank compares both totals with its own books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub ledger: LedgerId,
    pub size: u64,
    pub root: Hash,
    pub outstanding: Amount,
    pub inbound: Amount,
    pub settled_out: Amount,
    pub timestamp_ms: u64,
}

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
    #[error("the inclusion proof: {0}")]
    Proof(#[from] MerkleError),
    #[error("the receipt's transfer does not hash to its txid")]
    TxidMismatch,
}

impl Checkpoint {
    /// The exact bytes the operator signs.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 4 + 8 + 32 + 8 * 4);
        m.extend_from_slice(CHECKPOINT_TAG);
        m.extend_from_slice(&self.ledger.0.to_be_bytes());
        m.extend_from_slice(&self.size.to_be_bytes());
        m.extend_from_slice(&self.root);
        m.extend_from_slice(&self.outstanding.fen().to_be_bytes());
        m.extend_from_slice(&self.inbound.fen().to_be_bytes());
        m.extend_from_slice(&self.settled_out.fen().to_be_bytes());
        m.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        m
    }

    /// Checks the signature by `operator` and that the figures add up.
    pub fn verify(&self, operator: &PublicKey, signature: &[u8]) -> Result<(), AuditError> {
        let key = operator.checked_key().map_err(|_| AuditError::BadKey)?;
        let sig: &[u8; 64] = signature.try_into().map_err(|_| AuditError::BadSignature)?;
        if !crate::signature::verify(&key, &self.message(), sig) {
            return Err(AuditError::BadSignature);
        }
        if self.inbound.checked_sub(self.settled_out) != Some(self.outstanding) {
            return Err(AuditError::Unbalanced {
                outstanding: self.outstanding,
                inbound: self.inbound,
                settled_out: self.settled_out,
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
