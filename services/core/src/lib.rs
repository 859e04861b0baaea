//! `cbdc-core`: the money model of the ledger, as pure code.
//!
//! This crate does no I/O, reads no clock and draws no randomness of its own: time is a
//! parameter (`now`), randomness comes from the caller's RNG, and storage lookups are done by
//! the caller, who hands the results to [`validate::check_stateful`]. The same code therefore
//! runs in the services, in the load generator and in deterministic simulations.
//!
//! The pieces:
//! - [`Amount`]: fen in a `u64`, checked arithmetic, strict decimal-string parsing.
//! - [`PublicKey`], [`Keypair`], [`Address`]: Ed25519 keys and checksummed wallet addresses.
//! - [`TransferBody`], [`Transfer`], [`Lock`]: the signed UTXO transfer and its canonical
//!   byte encoding (`txid = SHA-256(tag ‖ body)`).
//! - [`validate`]: the ordered checks returning one exhaustive [`Reject`].
//! - [`kyc`]: wallet tiers, their limits and wallet status.
//! - [`merkle`]: RFC 6962 audit-log hashing, inclusion and consistency proofs.
//! - [`messages`]: the signed messages between services and their domain tags.
//! - [`audit`]: log leaves, signed checkpoints, and offline receipt verification.

pub mod amount;
pub mod audit;
pub mod codec;
pub mod keys;
pub mod kyc;
pub mod merkle;
pub mod messages;
pub mod signature;
pub mod transfer;
pub mod unspent;
pub mod validate;

pub use amount::{Amount, AmountError};
pub use keys::{Address, AddressError, Keypair, LedgerId, PublicKey};
pub use kyc::{KycTier, TierLimits, TierTable, WalletState, WalletStatus};
pub use transfer::{
    Input, Lock, OutPoint, Output, Transfer, TransferBody, TransferBuilder, Txid, UnixSeconds,
    Witness,
};
pub use validate::{Effects, LimitKind, Reject};
