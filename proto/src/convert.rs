//! Conversions between wire (protobuf) and core types. Every failure names the field.

use cbdc_core::validate::Reject;
use cbdc_core::{
    Address, Amount, AmountError, KycTier, LedgerId, Lock, OutPoint, Output, PublicKey, Transfer,
    Txid, UnixSeconds, WalletStatus, Witness,
};

use cbdc_core::keys::{CheckedKey, KeyError};

use crate::v1;

/// A wire value that cannot become a core value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{field}: required field is missing")]
    Missing { field: &'static str },
    #[error("{field}: {len} bytes, expected {expected}")]
    Length {
        field: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{field}: {error}")]
    Amount {
        field: &'static str,
        error: AmountError,
    },
    #[error("{field}: {error}")]
    Address {
        field: &'static str,
        error: cbdc_core::AddressError,
    },
    #[error("{field}: value {value} is out of range")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("{field}: {value}; at most {max}")]
    TooLarge {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{field}: unknown or unspecified enum value {value}")]
    Enum { field: &'static str, value: i32 },
    #[error("{field}: {reject}")]
    Transfer { field: &'static str, reject: Reject },
}

pub fn amount(field: &'static str, text: &str, max: Amount) -> Result<Amount, WireError> {
    Amount::parse_with_max(text, max).map_err(|error| WireError::Amount { field, error })
}

pub fn address(field: &'static str, text: &str) -> Result<Address, WireError> {
    text.parse()
        .map_err(|error| WireError::Address { field, error })
}

pub fn bytes32(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], WireError> {
    bytes.try_into().map_err(|_| WireError::Length {
        field,
        len: bytes.len(),
        expected: 32,
    })
}

pub fn txid(field: &'static str, bytes: &[u8]) -> Result<Txid, WireError> {
    bytes32(field, bytes).map(Txid)
}

pub fn public_key(field: &'static str, bytes: &[u8]) -> Result<PublicKey, WireError> {
    bytes32(field, bytes).map(PublicKey::from_bytes)
}

pub fn outpoint(field: &'static str, o: Option<&v1::OutPoint>) -> Result<OutPoint, WireError> {
    let o = o.ok_or(WireError::Missing { field })?;
    let index = u16::try_from(o.index).map_err(|_| WireError::OutOfRange {
        field,
        value: u64::from(o.index),
    })?;
    Ok(OutPoint {
        txid: txid(field, &o.txid)?,
        index,
    })
}

/// Decodes a signed transfer: witness lengths and keys, then the body's structure and bounds.
pub fn signed_transfer(
    field: &'static str,
    t: Option<&v1::SignedTransfer>,
) -> Result<Transfer, WireError> {
    signed_transfer_with(field, t, &PublicKey::checked_key)
}

/// [`signed_transfer`] with witness keys decompressed by `decompress` (a cache).
pub fn signed_transfer_with(
    field: &'static str,
    t: Option<&v1::SignedTransfer>,
    decompress: &dyn Fn(&PublicKey) -> Result<CheckedKey, KeyError>,
) -> Result<Transfer, WireError> {
    let t = t.ok_or(WireError::Missing { field })?;
    let reject = |reject| WireError::Transfer { field, reject };
    if t.witnesses.len() > cbdc_core::transfer::MAX_WITNESSES {
        return Err(reject(Reject::TooManyWitnesses {
            count: t.witnesses.len(),
            max: cbdc_core::transfer::MAX_WITNESSES,
        }));
    }
    let witnesses = t
        .witnesses
        .iter()
        .enumerate()
        .map(|(i, w)| Witness::from_slices_with(i, &w.public_key, &w.signature, decompress))
        .collect::<Result<Vec<_>, _>>()
        .map_err(reject)?;
    Transfer::decode(t.body.clone(), witnesses).map_err(reject)
}

/// A transfer kept as its stored parts (exact body bytes, then each witness's key and
/// signature), on the wire.
pub fn to_signed_parts(body: Vec<u8>, witnesses: &[([u8; 32], [u8; 64])]) -> v1::SignedTransfer {
    v1::SignedTransfer {
        body,
        witnesses: witnesses
            .iter()
            .map(|(k, s)| v1::Witness {
                public_key: k.to_vec(),
                signature: s.to_vec(),
            })
            .collect(),
    }
}

pub fn to_signed_transfer(t: &Transfer) -> v1::SignedTransfer {
    v1::SignedTransfer {
        body: t.body_bytes().to_vec(),
        witnesses: t
            .witnesses()
            .iter()
            .map(|w| v1::Witness {
                public_key: w.key.as_bytes().to_vec(),
                signature: w.signature.to_vec(),
            })
            .collect(),
    }
}

pub fn to_outpoint(o: &OutPoint) -> v1::OutPoint {
    v1::OutPoint {
        txid: o.txid.0.to_vec(),
        index: u32::from(o.index),
    }
}

pub fn lock(field: &'static str, l: Option<&v1::Lock>, max: Amount) -> Result<Lock, WireError> {
    use v1::lock::Kind;
    let kind = l
        .and_then(|l| l.kind.as_ref())
        .ok_or(WireError::Missing { field })?;
    Ok(match kind {
        Kind::Key(k) => Lock::Key(public_key(field, &k.public_key)?),
        Kind::Hold(h) => Lock::Hold {
            payer: public_key("hold.payer", &h.payer)?,
            payee: public_key("hold.payee", &h.payee)?,
            expires_at: UnixSeconds(h.expires_at_unix_s),
        },
        Kind::Mandate(m) => Lock::Mandate {
            owner: public_key("mandate.owner", &m.owner)?,
            merchant: public_key("mandate.merchant", &m.merchant)?,
            per_payment_max: amount("mandate.per_payment_max", &m.per_payment_max, max)?,
            expires_at: UnixSeconds(m.expires_at_unix_s),
        },
    })
}

pub fn to_lock(l: &Lock) -> v1::Lock {
    use v1::lock::Kind;
    let kind = match *l {
        Lock::Key(k) => Kind::Key(v1::KeyLock {
            public_key: k.as_bytes().to_vec(),
        }),
        Lock::Hold {
            payer,
            payee,
            expires_at,
        } => Kind::Hold(v1::HoldLock {
            payer: payer.as_bytes().to_vec(),
            payee: payee.as_bytes().to_vec(),
            expires_at_unix_s: expires_at.0,
        }),
        Lock::Mandate {
            owner,
            merchant,
            per_payment_max,
            expires_at,
        } => Kind::Mandate(v1::MandateLock {
            owner: owner.as_bytes().to_vec(),
            merchant: merchant.as_bytes().to_vec(),
            per_payment_max: per_payment_max.to_string(),
            expires_at_unix_s: expires_at.0,
        }),
    };
    v1::Lock { kind: Some(kind) }
}

pub fn output(
    field: &'static str,
    o: Option<&v1::Output>,
    max: Amount,
) -> Result<Output, WireError> {
    let o = o.ok_or(WireError::Missing { field })?;
    Ok(Output {
        ledger: LedgerId(o.ledger_id),
        value: amount(field, &o.value, max)?,
        lock: lock(field, o.lock.as_ref(), max)?,
    })
}

pub fn to_output(o: &Output) -> v1::Output {
    v1::Output {
        ledger_id: o.ledger.0,
        value: o.value.to_string(),
        lock: Some(to_lock(&o.lock)),
    }
}

pub fn kyc_tier(field: &'static str, value: i32) -> Result<KycTier, WireError> {
    match v1::KycTier::try_from(value) {
        Ok(v1::KycTier::Class1) => Ok(KycTier::Class1),
        Ok(v1::KycTier::Class2) => Ok(KycTier::Class2),
        Ok(v1::KycTier::Class3) => Ok(KycTier::Class3),
        Ok(v1::KycTier::Class4Anonymous) => Ok(KycTier::Class4Anonymous),
        Ok(v1::KycTier::Operator) => Ok(KycTier::Operator),
        Ok(v1::KycTier::Unspecified) | Err(_) => Err(WireError::Enum { field, value }),
    }
}

pub fn to_kyc_tier(t: KycTier) -> v1::KycTier {
    match t {
        KycTier::Class1 => v1::KycTier::Class1,
        KycTier::Class2 => v1::KycTier::Class2,
        KycTier::Class3 => v1::KycTier::Class3,
        KycTier::Class4Anonymous => v1::KycTier::Class4Anonymous,
        KycTier::Operator => v1::KycTier::Operator,
    }
}

pub fn to_wallet_status(s: WalletStatus) -> v1::WalletStatus {
    match s {
        WalletStatus::Active => v1::WalletStatus::Active,
        WalletStatus::Frozen => v1::WalletStatus::Frozen,
        WalletStatus::Closed => v1::WalletStatus::Closed,
    }
}

/// A stable machine-readable code for each rejection, carried in `Rejected.code`.
pub fn reject_code(r: &Reject) -> &'static str {
    r.code()
}

pub use cbdc_runtime::error::reject_status;

impl WireError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            WireError::Missing { field }
            | WireError::Length { field, .. }
            | WireError::Amount { field, .. }
            | WireError::Address { field, .. }
            | WireError::OutOfRange { field, .. }
            | WireError::TooLarge { field, .. }
            | WireError::Enum { field, .. }
            | WireError::Transfer { field, .. } => field,
        }
    }
}

/// A wrong field is `INVALID_FIELD` with a `BadRequest` violation naming it; a transfer that
/// breaks a rule of the money model answers with the rule's own code, reason and facts, and
/// names the field too.
impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> tonic::Status {
        use cbdc_runtime::error::{ServiceError, status};
        match &e {
            WireError::Transfer { field, reject } => {
                let service = ServiceError::Reject(reject.clone());
                let mut detail = service.detail();
                detail.field = Some((field.to_string(), reject.to_string()));
                status(
                    service.grpc_code(),
                    format!("{}: {e}", reject_code(reject)),
                    detail,
                )
            }
            _ => {
                let problem = e.to_string();
                let problem = problem
                    .strip_prefix(&format!("{}: ", e.field()))
                    .unwrap_or(&problem);
                ServiceError::field(e.field(), problem).into()
            }
        }
    }
}

/// The page size a list request asks for: `default` when it leaves it 0, refused above `max`.
pub fn page_size(page: &v1::PageRequest, default: u32, max: u32) -> Result<usize, WireError> {
    match page.page_size {
        0 => Ok(default.min(max) as usize),
        n if n > max => Err(WireError::TooLarge {
            field: "page.page_size",
            value: u64::from(n),
            max: u64::from(max),
        }),
        n => Ok(n as usize),
    }
}

/// One page of a list read with one row more than `size` (to learn whether more follow):
/// the first `size` rows, and the cursor of the next page (empty when this is the last),
/// made from the page's last row by `cursor_of`.
pub fn paginate<T>(
    mut rows: Vec<T>,
    size: usize,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, v1::PageResponse) {
    let more = rows.len() > size;
    rows.truncate(size);
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => cursor_of(last),
        _ => String::new(),
    };
    (rows, v1::PageResponse { next_cursor })
}

/// A failed item of a batch on the wire: its status's code, message, reason and facts.
pub fn to_failure(status: &tonic::Status) -> v1::Failure {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info();
    v1::Failure {
        code: status.code() as i32,
        message: status.message().to_string(),
        reason: info
            .as_ref()
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| cbdc_runtime::error::code_reason(status.code()).to_string()),
        metadata: info
            .map(|i| i.metadata.into_iter().collect())
            .unwrap_or_default(),
    }
}

/// A failed item of a batch from the wire, as the status it stands for (its reason and facts
/// in the details again).
pub fn failure(f: v1::Failure) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut details = ErrorDetails::new();
    details.set_error_info(
        f.reason,
        cbdc_runtime::error::ERROR_DOMAIN,
        f.metadata
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    tonic::Status::with_error_details(tonic::Code::from(f.code), f.message, details)
}

/// A checkpoint and its signature on the wire.
pub fn to_checkpoint(cp: &cbdc_core::audit::Checkpoint, signature: &[u8]) -> v1::Checkpoint {
    v1::Checkpoint {
        ledger_id: cp.ledger.0,
        size: cp.size,
        root: cp.root.to_vec(),
        outstanding: cp.outstanding.to_string(),
        timestamp_unix_ms: cp.timestamp_ms,
        signature: signature.to_vec(),
        inbound: cp.inbound.to_string(),
        settled_out: cp.settled_out.to_string(),
        unspent: cp.unspent.to_string(),
        outbox: cp.outbox.to_string(),
        unspent_set: cp.unspent_set.to_vec(),
    }
}

/// A checkpoint from the wire (the signature is returned, not checked).
pub fn checkpoint(
    c: &v1::Checkpoint,
) -> Result<(cbdc_core::audit::Checkpoint, Vec<u8>), WireError> {
    Ok((
        cbdc_core::audit::Checkpoint {
            ledger: LedgerId(c.ledger_id),
            size: c.size,
            root: bytes32("checkpoint.root", &c.root)?,
            outstanding: amount(
                "checkpoint.outstanding",
                &c.outstanding,
                Amount::DEFAULT_MAX,
            )?,
            inbound: amount("checkpoint.inbound", &c.inbound, Amount::DEFAULT_MAX)?,
            settled_out: amount(
                "checkpoint.settled_out",
                &c.settled_out,
                Amount::DEFAULT_MAX,
            )?,
            timestamp_ms: c.timestamp_unix_ms,
            unspent: amount("checkpoint.unspent", &c.unspent, Amount::DEFAULT_MAX)?,
            outbox: amount("checkpoint.outbox", &c.outbox, Amount::DEFAULT_MAX)?,
            unspent_set: bytes32("checkpoint.unspent_set", &c.unspent_set)?,
        },
        c.signature.clone(),
    ))
}

/// An exchange's direction on the wire.
pub fn to_direction(d: cbdc_core::messages::ExchangeDirection) -> v1::exchange_request::Direction {
    use cbdc_core::messages::ExchangeDirection;
    match d {
        ExchangeDirection::DepositToWallet => v1::exchange_request::Direction::DepositToWallet,
        ExchangeDirection::WalletToDeposit => v1::exchange_request::Direction::WalletToDeposit,
    }
}

/// An exchange's direction from the wire.
pub fn direction(
    field: &'static str,
    value: i32,
) -> Result<cbdc_core::messages::ExchangeDirection, WireError> {
    use cbdc_core::messages::ExchangeDirection;
    use v1::exchange_request::Direction;
    match Direction::try_from(value) {
        Ok(Direction::DepositToWallet) => Ok(ExchangeDirection::DepositToWallet),
        Ok(Direction::WalletToDeposit) => Ok(ExchangeDirection::WalletToDeposit),
        _ => Err(WireError::Enum { field, value }),
    }
}

/// An order's header from the wire (borrowed: the signature covers it as sent).
pub fn header<'a>(
    field: &'static str,
    h: Option<&'a v1::RequestHeader>,
) -> Result<cbdc_core::messages::Header<'a>, WireError> {
    let h = h.ok_or(WireError::Missing { field })?;
    Ok(cbdc_core::messages::Header {
        network: &h.network,
        target: LedgerId(h.target),
        request_id: &h.request_id,
        expires_unix_ms: h.expires_at_unix_ms,
    })
}

/// An order's header on the wire.
pub fn to_header(h: &cbdc_core::messages::Header<'_>) -> v1::RequestHeader {
    v1::RequestHeader {
        network: h.network.to_string(),
        target: h.target.0,
        request_id: h.request_id.to_string(),
        expires_at_unix_ms: h.expires_unix_ms,
    }
}

/// A receipt from the wire.
pub fn receipt(r: &v1::Receipt) -> Result<cbdc_core::audit::Receipt, WireError> {
    let transfer = match &r.transfer {
        None => None,
        Some(t) => Some(signed_transfer("receipt.transfer", Some(t))?),
    };
    let txid = txid("receipt.txid", &r.txid)?;
    let (checkpoint, checkpoint_signature) =
        checkpoint(r.checkpoint.as_ref().ok_or(WireError::Missing {
            field: "receipt.checkpoint",
        })?)?;
    let position = r
        .log_position
        .as_slice()
        .try_into()
        .map_err(|_| WireError::Length {
            field: "receipt.log_position",
            len: r.log_position.len(),
            expected: cbdc_core::audit::POSITION_LEN,
        })?;
    let proof = r
        .inclusion_proof
        .iter()
        .map(|h| bytes32("receipt.inclusion_proof", h))
        .collect::<Result<_, _>>()?;
    Ok(cbdc_core::audit::Receipt {
        txid,
        transfer,
        position,
        index: r.log_index,
        proof,
        checkpoint,
        checkpoint_signature,
    })
}

/// A receipt on the wire.
pub fn to_receipt(r: &cbdc_core::audit::Receipt) -> v1::Receipt {
    v1::Receipt {
        txid: r.txid.0.to_vec(),
        transfer: r.transfer.as_ref().map(to_signed_transfer),
        log_index: r.index,
        inclusion_proof: r.proof.iter().map(|h| h.to_vec()).collect(),
        checkpoint: Some(to_checkpoint(&r.checkpoint, &r.checkpoint_signature)),
        log_position: r.position.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbdc_core::{Keypair, TransferBuilder};

    #[test]
    fn transfer_round_trips_through_the_wire() {
        let k = Keypair::from_seed(&[1; 32]);
        let t = TransferBuilder::new(UnixSeconds(10))
            .input(
                OutPoint {
                    txid: Txid([2; 32]),
                    index: 1,
                },
                Amount::from_fen(5),
            )
            .output(LedgerId(1), Amount::from_fen(5), Lock::Key(k.public()))
            .sign(&[&k])
            .unwrap();
        let wire = to_signed_transfer(&t);
        assert_eq!(signed_transfer("transfer", Some(&wire)), Ok(t));
    }

    #[test]
    fn errors_name_the_field() {
        let e = amount("payments[0].amount", "1.234", Amount::DEFAULT_MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            "payments[0].amount: amount has 3 decimal places; at most 2 are allowed (1 fen = 0.01)"
        );
        let e = signed_transfer("transfer", None).unwrap_err();
        assert_eq!(e.to_string(), "transfer: required field is missing");
        let bad = v1::SignedTransfer {
            body: vec![1],
            witnesses: vec![v1::Witness {
                public_key: vec![0; 31],
                signature: vec![0; 64],
            }],
        };
        let status: tonic::Status = signed_transfer("transfer", Some(&bad)).unwrap_err().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("witness 0: public key is 31 bytes"),
            "{}",
            status.message()
        );
        assert_eq!(
            kyc_tier("tier", 0),
            Err(WireError::Enum {
                field: "tier",
                value: 0
            })
        );
    }

    #[test]
    fn page_sizes_default_cap_and_pages_carry_a_cursor_only_when_more_follow() {
        let asked = |n| v1::PageRequest {
            page_size: n,
            cursor: String::new(),
        };
        assert_eq!(page_size(&asked(0), 50, 1000), Ok(50));
        assert_eq!(page_size(&asked(0), 50, 20), Ok(20));
        assert_eq!(page_size(&asked(1000), 50, 1000), Ok(1000));
        assert_eq!(
            page_size(&asked(1001), 50, 1000).unwrap_err().to_string(),
            "page.page_size: 1001; at most 1000"
        );
        let cursor = |n: &u32| n.to_string();
        let (rows, page) = paginate(vec![1, 2, 3, 4], 3, cursor);
        assert_eq!((rows, page.next_cursor), (vec![1, 2, 3], "3".to_string()));
        let (rows, page) = paginate(vec![1, 2, 3], 3, cursor);
        assert_eq!((rows, page.next_cursor), (vec![1, 2, 3], String::new()));
        let (rows, page) = paginate(Vec::new(), 3, cursor);
        assert_eq!((rows, page.next_cursor), (Vec::<u32>::new(), String::new()));
    }
}
