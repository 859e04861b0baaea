//! Every message signed between parties, as types: one type per authority, each one's
//! signing bytes defined once here, and one function, [`verify`], that checks any of them.
//! A signature made for one purpose never verifies for another, and a signed message parses
//! one way only: every message starts with its authority's domain tag and the action's
//! name, and every variable field is length-prefixed (a 4-byte big-endian length, then the
//! bytes).
//!
//! | authority | type | tag |
//! |---|---|---|
//! | a wallet's key, proving possession when it opens | [`OpenProof`] | `cbdc/v2/open` |
//! | a wallet's key (or its bank's authority), reading it | [`ReadGrant`] | `cbdc/v2/read` |
//! | a bank's authority key, to its own ledger | [`OperatorOrder`] | `cbdc/v2/op` |
//! | a bank's settlement key, to the central bank | [`BankRequest`] | `cbdc/v2/bank` |
//! | the central bank's administrator | [`AdminOrder`] | `cbdc/v2/admin` |
//! | the central bank, countersigning a move | [`Countersignature`] | `cbdc/v2/settle` |
//!
//! Orders (the operator's and the administrator's) carry a [`Header`]: the network they are
//! for, their target (a ledger id, or 0 for the central bank), a request id and an expiry.
//! A server refuses an order for another network or target, or past its expiry, and records
//! each request id with the [`Order::content_digest`] of what it asked: the same id with
//! the same content answers with the first result, with other content it is refused.

use crate::keys::CheckedKey;
use sha2::Digest;

use crate::{Keypair, KycTier, LedgerId, PublicKey, Txid};

/// Domain tag of a wallet's proof of key possession when it is opened.
pub const OPEN_TAG: &[u8] = b"cbdc/v2/open";
/// Domain tag of a wallet's grant to read it.
pub const READ_TAG: &[u8] = b"cbdc/v2/read";
/// Domain tag of orders a bank's authority key signs to its own ledger.
pub const OPERATOR_TAG: &[u8] = b"cbdc/v2/op";
/// Domain tag of the central bank's countersignature on a settlement.
pub const SETTLE_TAG: &[u8] = b"cbdc/v2/settle";
/// Domain tag of requests a bank's settlement key signs to the central bank.
pub const BANK_TAG: &[u8] = b"cbdc/v2/bank";
/// Domain tag of orders the central bank's administrator signs.
pub const ADMIN_TAG: &[u8] = b"cbdc/v2/admin";
/// Domain tag of the reserve outpoint an issue spends (see [`reserve_txid`]).
pub const RESERVE_TAG: &[u8] = b"cbdc/v1/reserve";

/// The ledger id that stands for the central bank: outputs naming it are redeemed, and
/// orders to the central bank name it as their target.
pub const CENTRAL_BANK: LedgerId = LedgerId(0);

/// A network id's length, at most.
pub const NETWORK_MAX: usize = 64;
/// A request id's length, at most.
pub const REQUEST_ID_MAX: usize = 128;
/// How far ahead an order's expiry may be: a server keeps every request id, and refuses an
/// order that would stay valid longer than this.
pub const ORDER_LIFETIME_MAX_MS: u64 = 24 * 3600 * 1000;
/// How far ahead a read grant's expiry may be.
pub const READ_LIFETIME_MAX_MS: u64 = 15 * 60 * 1000;

/// A message some key signs: its exact bytes, defined once.
pub trait Signed {
    /// The bytes the signature covers (domain tag first).
    fn signing_bytes(&self) -> Vec<u8>;

    /// Signs the message with `key`.
    fn sign(&self, key: &Keypair) -> [u8; 64] {
        key.sign(&self.signing_bytes())
    }
}

/// Builds signing bytes: the tag, then length-prefixed fields and fixed-width integers.
struct Encoder(Vec<u8>);

impl Encoder {
    fn new(tag: &[u8], kind: &str) -> Encoder {
        let mut e = Encoder(tag.to_vec());
        e.field(kind.as_bytes());
        e
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Encoder {
        self.0
            .extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    fn u32(&mut self, v: u32) -> &mut Encoder {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Encoder {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
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

/// The one check of a signed message: `signature` is `key`'s signature over `message`'s
/// signing bytes, under the one rule of [`crate::signature`].
pub fn verify(
    key: &CheckedKey,
    message: &impl Signed,
    signature: &[u8],
) -> Result<(), SignatureError> {
    verify_bytes(key, &message.signing_bytes(), signature)
}

/// [`verify`] over bytes already built (a caller checking many signatures of one message
/// kind builds each message once for a batch verification).
pub fn verify_bytes(
    key: &CheckedKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let signature: &[u8; 64] = signature
        .try_into()
        .map_err(|_| SignatureError::Length(signature.len()))?;
    if crate::signature::verify(key, message, signature) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks many `(key, message, signature)` triples at once (one batch, bisected if it
/// fails). One result per triple, in order, each exactly what [`verify_bytes`] says of it.
pub fn verify_each(items: &[(&CheckedKey, &[u8], &[u8])]) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
    let mut batch = Vec::with_capacity(items.len());
    let mut slots = Vec::with_capacity(items.len());
    for (slot, &(key, message, signature)) in items.iter().enumerate() {
        match <&[u8; 64]>::try_from(signature) {
            Ok(signature) => {
                results.push(Err(SignatureError::Mismatch));
                batch.push(crate::signature::Item {
                    key,
                    message,
                    signature,
                });
                slots.push(slot);
            }
            Err(_) => results.push(Err(SignatureError::Length(signature.len()))),
        }
    }
    for (slot, ok) in slots.into_iter().zip(crate::signature::verify_many(&batch)) {
        if ok {
            results[slot] = Ok(());
        }
    }
    results
}

/// What every order carries besides its own fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The network the order is for (a deployment's name; a devnet's is random).
    pub network: &'a str,
    /// The ledger the order is for; [`CENTRAL_BANK`] for the central bank.
    pub target: LedgerId,
    /// Names the order: done at most once, and answered alike when sent again.
    pub request_id: &'a str,
    /// After this (Unix milliseconds) the order is refused.
    pub expires_unix_ms: u64,
}

/// Why an order's header was refused; each names the wire field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header.network: the order is for network {signed:?}, this is {ours:?}")]
    Network { signed: String, ours: String },
    #[error("header.target: the order is for ledger {signed}, this is {ours}")]
    Target { signed: u32, ours: u32 },
    #[error("header.request_id: {0} bytes; required, at most 128")]
    RequestId(usize),
    #[error("header.expires_at_unix_ms: the order expired at {at} (now {now})")]
    Expired { at: u64, now: u64 },
    #[error(
        "header.expires_at_unix_ms: {at} is more than {max_ms} ms after now ({now}); orders are short-lived"
    )]
    TooLong { at: u64, now: u64, max_ms: u64 },
}

impl HeaderError {
    /// An expired order is a precondition that no longer holds; the rest are bad arguments.
    pub fn is_expired(&self) -> bool {
        matches!(self, HeaderError::Expired { .. })
    }
}

impl Header<'_> {
    /// Checks the order is for `network` and `target`, names itself, and is valid at `now_ms`.
    pub fn check(&self, network: &str, target: LedgerId, now_ms: u64) -> Result<(), HeaderError> {
        if self.network != network {
            return Err(HeaderError::Network {
                signed: self.network.chars().take(NETWORK_MAX).collect(),
                ours: network.to_string(),
            });
        }
        if self.target != target {
            return Err(HeaderError::Target {
                signed: self.target.0,
                ours: target.0,
            });
        }
        if self.request_id.is_empty() || self.request_id.len() > REQUEST_ID_MAX {
            return Err(HeaderError::RequestId(self.request_id.len()));
        }
        check_expiry(self.expires_unix_ms, now_ms, ORDER_LIFETIME_MAX_MS)
    }

    fn encode(&self, e: &mut Encoder, with_expiry: bool) {
        e.field(self.network.as_bytes())
            .u32(self.target.0)
            .field(self.request_id.as_bytes());
        if with_expiry {
            e.u64(self.expires_unix_ms);
        }
    }
}

fn check_expiry(at: u64, now: u64, max_ms: u64) -> Result<(), HeaderError> {
    if at <= now {
        return Err(HeaderError::Expired { at, now });
    }
    if at - now > max_ms {
        return Err(HeaderError::TooLong { at, now, max_ms });
    }
    Ok(())
}

/// An order: a [`Header`] and what it asks, signed together.
pub trait Order: Signed {
    fn header(&self) -> &Header<'_>;

    /// The kind of order: each kind has its own space of request ids.
    fn kind(&self) -> &'static str;

    /// What the order asks, without its expiry: sent again with a later expiry, the same
    /// order has the same digest.
    fn content_digest(&self) -> [u8; 32];
}

/// A wallet proves it holds the key it opens on `ledger` of `network`, with `phone` (the
/// anonymous tier's phone number, as sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenProof<'a> {
    pub network: &'a str,
    pub ledger: LedgerId,
    pub key: PublicKey,
    pub phone: &'a str,
}

impl Signed for OpenProof<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(OPEN_TAG, "open");
        e.field(self.network.as_bytes())
            .u32(self.ledger.0)
            .field(self.key.as_bytes())
            .field(self.phone.as_bytes());
        e.0
    }
}

/// Lets whoever holds it read the wallet at `address` on `ledger` until `expires_unix_ms`:
/// signed by the wallet's own key, or by its bank's authority key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadGrant<'a> {
    pub network: &'a str,
    pub ledger: LedgerId,
    pub address: &'a str,
    pub expires_unix_ms: u64,
}

impl ReadGrant<'_> {
    /// Checks the grant is for `network` and `ledger` and valid at `now_ms`.
    pub fn check(&self, network: &str, ledger: LedgerId, now_ms: u64) -> Result<(), HeaderError> {
        if self.network != network {
            return Err(HeaderError::Network {
                signed: self.network.chars().take(NETWORK_MAX).collect(),
                ours: network.to_string(),
            });
        }
        if self.ledger != ledger {
            return Err(HeaderError::Target {
                signed: self.ledger.0,
                ours: ledger.0,
            });
        }
        check_expiry(self.expires_unix_ms, now_ms, READ_LIFETIME_MAX_MS)
    }
}

impl Signed for ReadGrant<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(READ_TAG, "read");
        e.field(self.network.as_bytes())
            .u32(self.ledger.0)
            .field(self.address.as_bytes())
            .u64(self.expires_unix_ms);
        e.0
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

/// Which way an exchange goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeDirection {
    /// The bank debits a deposit account and pays the wallet from its vault.
    DepositToWallet,
    /// The wallet pays the vault and the bank credits a deposit account.
    WalletToDeposit,
}

/// The name of a tier in signed bytes.
pub fn tier_name(tier: KycTier) -> &'static str {
    match tier {
        KycTier::Class1 => "class1",
        KycTier::Class2 => "class2",
        KycTier::Class3 => "class3",
        KycTier::Class4Anonymous => "class4-anonymous",
        KycTier::Operator => "operator",
    }
}

/// What a bank's authority orders its own ledger to do. Text fields are signed as they
/// travel (the address string, the decimal amount), so what was signed is what was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorAction<'a> {
    /// Freeze, unfreeze or close the wallet at `address`.
    Wallet {
        action: WalletAction,
        address: &'a str,
        reason: &'a str,
    },
    /// Move the wallet at `address` to `tier`, after the identity check `reason` names.
    SetTier {
        address: &'a str,
        tier: KycTier,
        reason: &'a str,
    },
    /// Exchange deposits and digital currency with the wallet at `address`;
    /// `wallet_transfer` is the txid of the wallet's payment when it pays the vault.
    Exchange {
        address: &'a str,
        amount: &'a str,
        direction: ExchangeDirection,
        wallet_transfer: Option<Txid>,
    },
    /// Return `amount` from the vault to the central bank.
    Redeem { amount: &'a str },
}

/// An order of a bank's authority key to its ledger (the header's target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorOrder<'a> {
    pub header: Header<'a>,
    pub action: OperatorAction<'a>,
}

impl OperatorOrder<'_> {
    fn encode(&self, with_expiry: bool) -> Vec<u8> {
        let mut e = Encoder::new(OPERATOR_TAG, self.kind());
        self.header.encode(&mut e, with_expiry);
        match self.action {
            OperatorAction::Wallet {
                action,
                address,
                reason,
            } => {
                e.field(action.name().as_bytes())
                    .field(address.as_bytes())
                    .field(reason.as_bytes());
            }
            OperatorAction::SetTier {
                address,
                tier,
                reason,
            } => {
                e.field(address.as_bytes())
                    .field(tier_name(tier).as_bytes())
                    .field(reason.as_bytes());
            }
            OperatorAction::Exchange {
                address,
                amount,
                direction,
                wallet_transfer,
            } => {
                let direction: &[u8] = match direction {
                    ExchangeDirection::DepositToWallet => b"deposit-to-wallet",
                    ExchangeDirection::WalletToDeposit => b"wallet-to-deposit",
                };
                e.field(address.as_bytes())
                    .field(amount.as_bytes())
                    .field(direction)
                    .field(wallet_transfer.as_ref().map_or(&[][..], |t| &t.0[..]));
            }
            OperatorAction::Redeem { amount } => {
                e.field(amount.as_bytes());
            }
        }
        e.0
    }
}

impl Signed for OperatorOrder<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        self.encode(true)
    }
}

impl Order for OperatorOrder<'_> {
    fn header(&self) -> &Header<'_> {
        &self.header
    }

    fn kind(&self) -> &'static str {
        match self.action {
            OperatorAction::Wallet { .. } => "wallet",
            OperatorAction::SetTier { .. } => "tier",
            OperatorAction::Exchange { .. } => "exchange",
            OperatorAction::Redeem { .. } => "redeem",
        }
    }

    fn content_digest(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.encode(false)).into()
    }
}

/// What a bank's settlement key signs to the central bank. Settling is idempotent by txid,
/// so these carry no request id; they name the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankRequest<'a> {
    /// Settle one committed transfer leaving ledger `from`.
    Settle {
        network: &'a str,
        from: LedgerId,
        txid: &'a Txid,
    },
    /// Settle a batch of them, in this order.
    SettleBatch {
        network: &'a str,
        from: LedgerId,
        txids: &'a [Txid],
    },
}

impl Signed for BankRequest<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        match self {
            BankRequest::Settle {
                network,
                from,
                txid,
            } => {
                let mut e = Encoder::new(BANK_TAG, "settle");
                e.field(network.as_bytes()).u32(from.0).field(&txid.0);
                e.0
            }
            BankRequest::SettleBatch {
                network,
                from,
                txids,
            } => {
                let mut e = Encoder::new(BANK_TAG, "settle-batch");
                e.field(network.as_bytes())
                    .u32(from.0)
                    .u32(u32::try_from(txids.len()).unwrap_or(u32::MAX));
                for t in *txids {
                    e.0.extend_from_slice(&t.0);
                }
                e.0
            }
        }
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
pub enum AdminAction<'a> {
    /// Register the operator of `ledger` with its settlement key (a registered bank keeps
    /// its status; only [`AdminAction::SetStatus`] changes it).
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
    },
    /// Issue `amount` (as sent, a decimal string) to `ledger`'s vault.
    Mint {
        ledger: LedgerId,
        amount: &'a str,
        reserve_reference: &'a str,
    },
}

/// An order of the central bank's administrator (target: [`CENTRAL_BANK`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminOrder<'a> {
    pub header: Header<'a>,
    pub action: AdminAction<'a>,
}

impl AdminOrder<'_> {
    fn encode(&self, with_expiry: bool) -> Vec<u8> {
        let mut e = Encoder::new(ADMIN_TAG, self.kind());
        self.header.encode(&mut e, with_expiry);
        match self.action {
            AdminAction::Register {
                ledger,
                name,
                operator_key,
                endpoint,
            } => {
                e.u32(ledger.0)
                    .field(name.as_bytes())
                    .field(operator_key)
                    .field(endpoint.as_bytes());
            }
            AdminAction::SetStatus { ledger, status } => {
                e.u32(ledger.0).field(status.name().as_bytes());
            }
            AdminAction::Mint {
                ledger,
                amount,
                reserve_reference,
            } => {
                e.u32(ledger.0)
                    .field(amount.as_bytes())
                    .field(reserve_reference.as_bytes());
            }
        }
        e.0
    }
}

impl Signed for AdminOrder<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        self.encode(true)
    }
}

impl Order for AdminOrder<'_> {
    fn header(&self) -> &Header<'_> {
        &self.header
    }

    fn kind(&self) -> &'static str {
        match self.action {
            AdminAction::Register { .. } => "register",
            AdminAction::SetStatus { .. } => "status",
            AdminAction::Mint { .. } => "mint",
        }
    }

    fn content_digest(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.encode(false)).into()
    }
}

/// The central bank's countersignature on the move of `txid` to `to_ledger` in `network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Countersignature<'a> {
    pub network: &'a str,
    pub txid: Txid,
    pub to_ledger: LedgerId,
}

impl Signed for Countersignature<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(SETTLE_TAG, "settle");
        e.field(self.network.as_bytes())
            .field(&self.txid.0)
            .u32(self.to_ledger.0);
        e.0
    }
}

/// The central bank's word that a move of `txid` to ledger `refused_by` was refused for good
/// for `reason`, and `amount` goes back to the payer on `to_ledger`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reversal<'a> {
    pub network: &'a str,
    pub txid: Txid,
    pub refused_by: LedgerId,
    pub to_ledger: LedgerId,
    pub amount: crate::Amount,
    pub reason: &'a str,
}

impl Signed for Reversal<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(SETTLE_TAG, "reversal");
        e.field(self.network.as_bytes())
            .field(&self.txid.0)
            .u32(self.refused_by.0)
            .u32(self.to_ledger.0)
            .u64(self.amount.fen())
            .field(self.reason.as_bytes());
        e.0
    }
}

/// The queue id of the reversal of `txid`'s move to `refused_by`: one per refused
/// destination, apart from the txid's own deliveries.
pub fn reversal_id(txid: &Txid, refused_by: LedgerId) -> Txid {
    Txid(
        sha2::Sha256::new()
            .chain_update(b"cbdc/v1/reversal-id")
            .chain_update(txid.0)
            .chain_update(refused_by.0.to_be_bytes())
            .finalize()
            .into(),
    )
}

/// The txid of the reserve entry an issue with `request_id` spends: issuance is a transfer
/// from the central bank's reserve, whose single input is `(reserve_txid, 0)`.
pub fn reserve_txid(request_id: &str) -> Txid {
    Txid(
        sha2::Sha256::new()
            .chain_update(RESERVE_TAG)
            .chain_update(request_id.as_bytes())
            .finalize()
            .into(),
    )
}

#[cfg(test)]
mod tests;
