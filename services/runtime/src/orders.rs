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
            .checked_key()
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

#[cfg(test)]
mod tests {
    use cbdc_core::Keypair;
    use cbdc_core::messages::{Header, OperatorAction, OperatorOrder, Signed};
    use cbdc_store::{Database, EmbeddedOptions};

    use super::*;

    fn order(amount: &'static str, expires: u64) -> OperatorOrder<'static> {
        OperatorOrder {
            header: Header {
                network: "net",
                target: LedgerId(1),
                request_id: "r-1",
                expires_unix_ms: expires,
            },
            action: OperatorAction::Redeem { amount },
        }
    }

    #[test]
    fn an_order_is_checked_for_its_key_then_its_header() {
        let key = Keypair::from_seed(&[1; 32]);
        let public = key.public();
        let authority = Authority {
            key: &public,
            field: "authority_signature",
            whose: "the authority",
            network: "net",
            target: LedgerId(1),
        };
        let o = order("1.00", 100);
        assert_eq!(authority.check(&o, &o.sign(&key), 99), Ok(()));
        let stranger = Keypair::from_seed(&[2; 32]);
        let e = authority.check(&o, &o.sign(&stranger), 99).unwrap_err();
        assert!(
            matches!(&e, ServiceError::PermissionDenied(m) if m == "authority_signature: does not verify against the authority"),
            "{e:?}"
        );
        let e = authority.check(&o, &[0; 10], 99).unwrap_err();
        assert!(
            matches!(&e, ServiceError::PermissionDenied(m) if m.contains("10 bytes")),
            "{e:?}"
        );
        // Signed correctly but expired: a precondition, not a bad argument.
        let e = authority.check(&o, &o.sign(&key), 100).unwrap_err();
        assert!(matches!(e, ServiceError::FailedPrecondition(_)), "{e:?}");
        let elsewhere = Authority {
            target: LedgerId(2),
            ..authority
        };
        let e = elsewhere.check(&o, &o.sign(&key), 99).unwrap_err();
        assert!(matches!(e, ServiceError::InvalidArgument(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_request_id_answers_alike_for_its_content_and_refuses_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_embedded(dir.path(), EmbeddedOptions::default()).unwrap();
        let first = Seen::of(&order("1.00", 100), b"x-r-1".to_vec());
        let resent = Seen::of(&order("1.00", 200), b"x-r-1".to_vec());
        let other = Seen::of(&order("2.00", 100), b"x-r-1".to_vec());
        let step = |seen: Seen, record: Option<&'static [u8]>| {
            let db = db.clone();
            async move {
                db.run(move |tx| {
                    let seen = seen.clone();
                    Box::pin(async move {
                        let found = seen.first_result(tx).await?;
                        if found.is_none()
                            && let Some(r) = record
                        {
                            seen.record(tx, r)?;
                        }
                        Ok::<_, TxError<ServiceError>>(found)
                    })
                })
                .await
            }
        };
        assert_eq!(step(first.clone(), None).await.unwrap(), None, "new");
        assert_eq!(step(first, Some(b"txid")).await.unwrap(), None);
        assert_eq!(
            step(resent, None).await.unwrap(),
            Some(b"txid".to_vec()),
            "the same content with a later expiry answers with the first result"
        );
        match step(other, None).await {
            Err(TxError::Abort(ServiceError::AlreadyExists(m))) => assert_eq!(
                m,
                "header.request_id: \"r-1\" was already used for a different redeem order"
            ),
            other => panic!("{other:?}"),
        }
        drop(db);
    }
}
