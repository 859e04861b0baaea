//! Subscription mandates: a sub-wallet the merchant may charge, at most a maximum per
//! payment until it expires, and the owner may revoke.

use cbdc_core::{Address, LedgerId, Lock, OutPoint, TransferBuilder, UnixSeconds};
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use super::{VALID_FOR_S, outpoint_text, parse_outpoint, stored_amount, the_output};
use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{
    Gateway, Order, OrderStatus, decode, get_json, identifier, key, order_key, put_json,
};
use crate::payments::{
    Expected, ExpectedKind, SignedTransferJson, expect, parse_address, parse_amount,
};
use crate::{events, qr};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MandateStatus {
    Creating,
    Active,
    Revoked,
    /// Charged down to nothing.
    Exhausted,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Mandate {
    pub merchant_id: String,
    pub mandate_id: String,
    pub owner_address: String,
    pub per_payment_max: String,
    pub expires_at_unix_s: u64,
    /// What is left under the lock.
    pub remaining: String,
    /// The output holding it, `txid:index` (none once revoked or exhausted).
    pub outpoint: Option<String>,
    pub status: MandateStatus,
    pub charges: u32,
    pub txid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMandate {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub mandate_id: String,
    pub owner_address: String,
    pub transfer: SignedTransferJson,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeMandate {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub out_trade_no: String,
    #[schema(pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub amount: String,
    #[serde(default)]
    #[schema(max_length = 127)]
    pub description: String,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeMandate {
    /// The owner's transfer spending the mandate's output back to itself.
    pub transfer: SignedTransferJson,
}

fn mandate_key(m: &str, id: &str) -> Vec<u8> {
    key(&[b"md", m.as_bytes(), id.as_bytes()])
}

impl Gateway {
    /// A merchant registers a mandate: the owner's signed transfer funding a mandate output
    /// for the merchant's collection key. `mandate_id` is the idempotency key.
    pub async fn create_mandate(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<Mandate, ApiError> {
        let m = self.merchant_signer(credentials)?;
        let r: CreateMandate = decode(body)?;
        identifier("mandate_id", &r.mandate_id, 6, 32)?;
        let owner = parse_address("owner_address", &r.owner_address)?;
        let t = r.transfer.decode("transfer", &self.keys)?;
        let collection = self.custody.collection(&m).public();
        let (index, out) = the_output(
            &t,
            "transfer",
            "mandate for this merchant",
            |l| matches!(l, Lock::Mandate { merchant, .. } if *merchant == collection),
        )?;
        let Lock::Mandate {
            owner: holder,
            per_payment_max,
            expires_at,
            ..
        } = out.lock
        else {
            unreachable!("a mandate was asked for");
        };
        if holder != owner.key || out.ledger != owner.ledger {
            return Err(ApiError::invalid(
                "owner_address",
                "the mandate must be the owner's, on the owner's ledger",
            ));
        }
        if !t.witnesses().iter().any(|w| w.key == owner.key) {
            return Err(ApiError::invalid(
                "owner_address",
                "its key did not sign the transfer",
            ));
        }
        if per_payment_max.is_zero() {
            return Err(ApiError::invalid(
                "transfer",
                "the mandate's per-payment maximum is 0.00",
            ));
        }
        self.lock_expiry("transfer", expires_at)?;
        if !self.ledgers.knows(owner.ledger.0) {
            return Err(ApiError::invalid(
                "owner_address",
                format!("ledger {}: not served here", owner.ledger.0),
            ));
        }
        let mandate = Mandate {
            merchant_id: m.clone(),
            mandate_id: r.mandate_id.clone(),
            owner_address: owner.to_string(),
            per_payment_max: per_payment_max.to_string(),
            expires_at_unix_s: expires_at.0,
            remaining: out.value.to_string(),
            outpoint: Some(outpoint_text(&t.outpoint(index))),
            status: MandateStatus::Creating,
            charges: 0,
            txid: t.txid().to_string(),
            failure: None,
        };
        let k = mandate_key(&m, &r.mandate_id);
        let stored = self
            .once(credentials, {
                let (k, mandate) = (k.clone(), mandate.clone());
                move |tx| {
                    let (k, mandate) = (k.clone(), mandate.clone());
                    Box::pin(async move {
                        if let Some(old) = get_json::<Mandate>(tx, &k).await? {
                            return if old.txid == mandate.txid {
                                Ok(old)
                            } else {
                                Err(TxError::Abort(ApiError::conflict(
                                    "mandate_id",
                                    format!(
                                        "{} was used with another transfer",
                                        mandate.mandate_id
                                    ),
                                )))
                            };
                        }
                        put_json(tx, k, &mandate)?;
                        Ok(mandate)
                    })
                }
            })
            .await?;
        if stored.status != MandateStatus::Creating {
            return Ok(stored);
        }
        let outcome = self.submit_to(owner.ledger.0, &t).await;
        let now_ms = self.now_ms();
        self.tx(move |tx| {
            let (k, outcome) = (k.clone(), outcome.clone());
            Box::pin(async move {
                let mut md: Mandate = get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::internal("the mandate vanished")))?;
                if md.status != MandateStatus::Creating {
                    return Ok(md);
                }
                match outcome {
                    Ok(_) => {
                        md.status = MandateStatus::Active;
                        events::emit(
                            tx,
                            &md.merchant_id,
                            "mandate.created",
                            &md.mandate_id,
                            now_ms,
                            &md,
                        )?;
                    }
                    Err(e) if e.code == "LEDGER_REJECTED" => {
                        md.status = MandateStatus::Failed;
                        md.failure = Some(e.message);
                    }
                    Err(e) => return Err(TxError::Abort(e)),
                }
                put_json(tx, k, &md)?;
                Ok(md)
            })
        })
        .await
    }

    /// A merchant charges a mandate: an order `out_trade_no`, paid from the mandate at once.
    pub async fn charge_mandate(
        &self,
        credentials: &Credentials,
        mandate_id: &str,
        body: &[u8],
    ) -> Result<Order, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("mandate_id", mandate_id, 6, 32)?;
        let r: ChargeMandate = decode(body)?;
        identifier("out_trade_no", &r.out_trade_no, 6, 32)?;
        let amount = parse_amount("amount", &r.amount)?;
        if r.description.len() > crate::gateway::DESCRIPTION_MAX
            || r.description.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "description",
                "at most 127 bytes, no control characters",
            ));
        }
        let merchant = self
            .merchant(&m)
            .await?
            .ok_or_else(|| ApiError::not_found("merchant_id", "not onboarded"))?;
        let collection = std::sync::Arc::new(self.custody.collection(&m));
        let sender = self.sender(&m);
        let _one_at_a_time = sender.lock().await;
        let (mk, ok) = (mandate_key(&m, mandate_id), order_key(&m, &r.out_trade_no));
        let now = self.now();
        let now_ms = self.now_ms();
        let network = self.network.clone();
        let (order, transfer, owner_ledger) = self
            .once(credentials, {
                let (mk, ok, r, merchant, collection) = (
                    mk.clone(),
                    ok.clone(),
                    r.clone(),
                    merchant.clone(),
                    collection.clone(),
                );
                move |tx| {
                    let (mk, ok, r, merchant, collection, network) = (
                        mk.clone(),
                        ok.clone(),
                        r.clone(),
                        merchant.clone(),
                        collection.clone(),
                        network.clone(),
                    );
                    Box::pin(async move {
                        let abort = |e| Err(TxError::Abort(e));
                        let md: Mandate = get_json(tx, &mk).await?.ok_or_else(|| {
                            TxError::Abort(ApiError::not_found("mandate_id", "no such mandate"))
                        })?;
                        let owner: Address = md
                            .owner_address
                            .parse()
                            .map_err(|_| TxError::Abort(ApiError::internal("a stored address")))?;
                        if let Some(old) = get_json::<Order>(tx, &ok).await? {
                            let same = old.amount == amount.to_string()
                                && old.memo
                                    == format!("charge:{}:{}", md.merchant_id, md.mandate_id);
                            return if same {
                                Ok((old, None, owner.ledger))
                            } else {
                                abort(ApiError::conflict(
                                    "out_trade_no",
                                    format!("{} was used with other content", r.out_trade_no),
                                ))
                            };
                        }
                        if md.status != MandateStatus::Active {
                            return abort(ApiError::precondition(
                                "mandate_id",
                                format!("the mandate is {:?}", md.status),
                            ));
                        }
                        if now >= md.expires_at_unix_s {
                            return abort(ApiError::precondition(
                                "mandate_id",
                                "the mandate has expired",
                            ));
                        }
                        let max = stored_amount(&md.per_payment_max)?;
                        if amount > max {
                            return abort(ApiError::precondition(
                                "amount",
                                format!(
                                    "{amount} is above the mandate's per-payment maximum {max}"
                                ),
                            ));
                        }
                        let remaining = stored_amount(&md.remaining)?;
                        if amount > remaining {
                            return abort(ApiError::precondition(
                                "amount",
                                format!("{amount} is above what the mandate holds, {remaining}"),
                            ));
                        }
                        let Some(outpoint) = &md.outpoint else {
                            return abort(ApiError::precondition(
                                "mandate_id",
                                "the mandate holds nothing",
                            ));
                        };
                        let outpoint = parse_outpoint(outpoint).map_err(TxError::Abort)?;
                        let memo = format!("charge:{}:{}", md.merchant_id, md.mandate_id);
                        let lock = Lock::Mandate {
                            owner: owner.key,
                            merchant: collection.public(),
                            per_payment_max: max,
                            expires_at: UnixSeconds(md.expires_at_unix_s),
                        };
                        let mut b = TransferBuilder::new(UnixSeconds(now + VALID_FOR_S))
                            .memo(memo.clone().into_bytes())
                            .input(outpoint, remaining)
                            .output(
                                LedgerId(merchant.bank),
                                amount,
                                Lock::Key(collection.public()),
                            );
                        let rest = remaining.saturating_sub(amount);
                        if !rest.is_zero() {
                            b = b.output(owner.ledger, rest, lock);
                        }
                        let t = b.sign(&[&*collection]).map_err(|e| {
                            TxError::Abort(ApiError::invalid("amount", e.to_string()))
                        })?;
                        let txid = t.txid().to_string();
                        expect(
                            tx,
                            &txid,
                            &Expected {
                                merchant_id: md.merchant_id.clone(),
                                kind: ExpectedKind::Charge,
                                reference: r.out_trade_no.clone(),
                                payer_address: Some(md.owner_address.clone()),
                            },
                        )
                        .await?;
                        let order = Order {
                            merchant_id: md.merchant_id.clone(),
                            out_trade_no: r.out_trade_no.clone(),
                            amount: amount.to_string(),
                            description: r.description.clone(),
                            status: OrderStatus::Created,
                            created_at_unix_s: now,
                            expires_at_unix_s: now + VALID_FOR_S,
                            payment_uri: qr::payment_uri(
                                &merchant.collection_address,
                                &amount.to_string(),
                                &memo,
                                &network,
                            ),
                            memo,
                            txid: None,
                            paid_at_unix_ms: None,
                            payer_address: Some(md.owner_address.clone()),
                            pending_txid: Some(txid),
                            refunded: "0.00".into(),
                            // Charged by the mandate: no payer opens a checkout page.
                            checkout_path: None,
                        };
                        put_json(tx, ok.to_vec(), &order)?;
                        Ok((order, Some(t), owner.ledger))
                    })
                }
            })
            .await?;
        let Some(transfer) = transfer else {
            return Ok(order);
        };
        let outcome = self.submit_to(owner_ledger.0, &transfer).await;
        let order = self
            .tx(move |tx| {
                let (mk, ok, outcome, transfer_txid) =
                    (mk.clone(), ok.clone(), outcome.clone(), transfer.txid());
                Box::pin(async move {
                    let mut md: Mandate = get_json(tx, &mk).await?.ok_or_else(|| {
                        TxError::Abort(ApiError::internal("the mandate vanished"))
                    })?;
                    let mut order: Order = get_json(tx, &ok)
                        .await?
                        .ok_or_else(|| TxError::Abort(ApiError::internal("the order vanished")))?;
                    if order.status != OrderStatus::Created {
                        return Ok(order);
                    }
                    match outcome {
                        Ok(c) => {
                            let remaining = stored_amount(&md.remaining)?.saturating_sub(amount);
                            md.remaining = remaining.to_string();
                            md.charges += 1;
                            md.outpoint = (!remaining.is_zero()).then(|| {
                                outpoint_text(&OutPoint {
                                    txid: transfer_txid,
                                    index: 1,
                                })
                            });
                            if remaining.is_zero() {
                                md.status = MandateStatus::Exhausted;
                            }
                            order.status = OrderStatus::Paid;
                            order.txid = order.pending_txid.take();
                            order.paid_at_unix_ms = Some(c.committed_at_unix_ms);
                            events::emit(
                                tx,
                                &md.merchant_id,
                                "mandate.charged",
                                &order.out_trade_no,
                                now_ms,
                                &order,
                            )?;
                            put_json(tx, mk, &md)?;
                            put_json(tx, ok, &order)?;
                            Ok(order)
                        }
                        Err(e) if e.code == "LEDGER_REJECTED" => {
                            // The owner spent it (revoked at the ledger), or it expired.
                            md.status = MandateStatus::Revoked;
                            md.outpoint = None;
                            md.failure = Some(e.message.clone());
                            order.status = OrderStatus::Closed;
                            put_json(tx, mk, &md)?;
                            put_json(tx, ok, &order)?;
                            events::emit(
                                tx,
                                &md.merchant_id,
                                "mandate.revoked",
                                &md.mandate_id,
                                now_ms,
                                &md,
                            )?;
                            Err(TxError::Abort(ApiError::precondition(
                                "mandate_id",
                                format!("the ledger refused the charge: {}", e.message),
                            )))
                        }
                        Err(e) => Err(TxError::Abort(e)),
                    }
                })
            })
            .await?;
        if owner_ledger.0 == merchant.bank
            && order.status == OrderStatus::Paid
            && let Some(txid) = &order.txid
        {
            self.credit(
                &m,
                txid,
                amount,
                order.memo.as_bytes(),
                order.paid_at_unix_ms.unwrap_or(now_ms),
            )
            .await?;
        }
        Ok(order)
    }

    pub async fn get_mandate(
        &self,
        credentials: &Credentials,
        mandate_id: &str,
    ) -> Result<Mandate, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("mandate_id", mandate_id, 6, 32)?;
        let k = mandate_key(&m, mandate_id);
        self.once(credentials, move |tx| {
            let k = k.clone();
            Box::pin(async move {
                get_json(tx, &k).await?.ok_or_else(|| {
                    TxError::Abort(ApiError::not_found("mandate_id", "no such mandate"))
                })
            })
        })
        .await
    }

    /// The owner revokes a mandate by spending its output back (the transfer is the owner's
    /// signature: no merchant credentials are needed, and none can stop it).
    pub async fn revoke_mandate(
        &self,
        merchant_id: &str,
        mandate_id: &str,
        body: &[u8],
    ) -> Result<Mandate, ApiError> {
        identifier("merchant_id", merchant_id, 1, 32)?;
        identifier("mandate_id", mandate_id, 6, 32)?;
        let r: RevokeMandate = decode(body)?;
        let t = r.transfer.decode("transfer", &self.keys)?;
        let sender = self.sender(merchant_id);
        let _one_at_a_time = sender.lock().await;
        let k = mandate_key(merchant_id, mandate_id);
        let md: Mandate = {
            let k = k.clone();
            self.tx(move |tx| {
                let k = k.clone();
                Box::pin(async move {
                    get_json(tx, &k).await?.ok_or_else(|| {
                        TxError::Abort(ApiError::not_found("mandate_id", "no such mandate"))
                    })
                })
            })
            .await?
        };
        let owner = parse_address("owner_address", &md.owner_address)?;
        if md.status == MandateStatus::Revoked {
            return Ok(md);
        }
        let Some(outpoint) = md.outpoint.as_deref().map(parse_outpoint).transpose()? else {
            return Err(ApiError::precondition(
                "mandate_id",
                format!("the mandate is {:?}", md.status),
            ));
        };
        if !t.body().inputs.iter().any(|i| i.outpoint == outpoint) {
            return Err(ApiError::invalid(
                "transfer",
                "does not spend the mandate's output",
            ));
        }
        if !t.witnesses().iter().any(|w| w.key == owner.key) {
            return Err(ApiError::invalid(
                "transfer",
                "the mandate's owner did not sign it",
            ));
        }
        self.submit_to(owner.ledger.0, &t).await?;
        let now_ms = self.now_ms();
        self.tx(move |tx| {
            let k = k.clone();
            Box::pin(async move {
                let mut md: Mandate = get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::internal("the mandate vanished")))?;
                if md.status == MandateStatus::Revoked {
                    return Ok(md);
                }
                md.status = MandateStatus::Revoked;
                md.outpoint = None;
                md.remaining = "0.00".into();
                events::emit(
                    tx,
                    &md.merchant_id,
                    "mandate.revoked",
                    &md.mandate_id,
                    now_ms,
                    &md,
                )?;
                put_json(tx, k, &md)?;
                Ok(md)
            })
        })
        .await
    }
}
