//! Orders as every service takes them: the signature checked, then the header (network,
//! target, request id, expiry), and each request id recorded in the store with the digest
//! of what it asked, in the same transaction as what it did.
//!
//! Sent again, an order with the same id and the same content answers with what it did the
//! first time and changes nothing; the same id with other content is `ALREADY_EXISTS`
//! naming the id. Ids are per kind of order (`Order::kind`), so an exchange and a
//! redemption never share one.

use cbdc_core::messages::{HeaderError, Order, SignatureError};
use cbdc_core::{LedgerId, PublicKey};
use cbdc_store::{Transaction, TxError};

use crate::ServiceError;
use crate::error::abort;

impl From<HeaderError> for ServiceError {
    fn from(e: HeaderError) -> Self {
        if e.is_expired() {
            ServiceError::FailedPrecondition(e.to_string())
        } else {
            ServiceError::InvalidArgument(e.to_string())
        }
    }
}

/// A refused signature as `PERMISSION_DENIED`, naming the field and whose key it should be.
pub fn signature_error(e: SignatureError, field: &str, whose: &str) -> ServiceError {
    ServiceError::PermissionDenied(match e {
        SignatureError::Length(n) => {
            format!("{field}: {n} bytes, expected a 64-byte Ed25519 signature by {whose}")
        }
        SignatureError::Mismatch => format!("{field}: does not verify against {whose}"),
    })
}

/// Who an order must come from, as a service checks it.
#[derive(Clone, Copy, Debug)]
pub struct Authority<'a> {
    /// The key that must have signed.
    pub key: &'a PublicKey,
    /// The signature's wire field, for errors.
    pub field: &'a str,
    /// Whose key it is, for errors ("the bank's authority key").
    pub whose: &'a str,
    /// This service's network and id (the orders' target).
    pub network: &'a str,
    pub target: LedgerId,
}

impl Authority<'_> {
    /// Checks `order` was signed by this authority and is for this service, now.
    pub fn check(
        &self,
        order: &impl Order,
        signature: &[u8],
        now_ms: u64,
    ) -> Result<(), ServiceError> {
        let vk = self
            .key
            .verifying_key()
            .map_err(|e| ServiceError::Internal(format!("{}: {e}", self.whose)))?;
        cbdc_core::messages::verify(&vk, order, signature)
            .map_err(|e| signature_error(e, self.field, self.whose))?;
        order.header().check(self.network, self.target, now_ms)?;
        Ok(())
    }
}

/// A request id's record: where it is kept and the digest of what it asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub key: Vec<u8>,
    pub digest: [u8; 32],
    pub request_id: String,
    pub kind: &'static str,
}

impl Seen {
    pub fn of(order: &impl Order, key: Vec<u8>) -> Seen {
        Seen {
            key,
            digest: order.content_digest(),
            request_id: order.header().request_id.to_string(),
            kind: order.kind(),
        }
    }

    /// What the order did the first time, if it was done: `Ok(None)` if the id is new;
    /// `ALREADY_EXISTS` if it was used for other content. Reads with a conflict, so two
    /// attempts with one id never both pass.
    pub async fn first_result(
        &self,
        tx: &mut Transaction,
    ) -> Result<Option<Vec<u8>>, TxError<ServiceError>> {
        match tx.get(&self.key).await? {
            None => Ok(None),
            Some(v) if v.len() >= 32 && v[..32] == self.digest => Ok(Some(v[32..].to_vec())),
            Some(_) => Err(abort(ServiceError::AlreadyExists(format!(
                "header.request_id: {:?} was already used for a different {} order",
                self.request_id, self.kind
            )))),
        }
    }

    /// Records the id with what the order did.
    pub fn record(&self, tx: &mut Transaction, result: &[u8]) -> Result<(), TxError<ServiceError>> {
        let mut v = Vec::with_capacity(32 + result.len());
        v.extend_from_slice(&self.digest);
        v.extend_from_slice(result);
        tx.set(&self.key, v)?;
        Ok(())
    }
}
