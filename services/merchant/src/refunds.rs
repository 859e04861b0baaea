//! Refunds out of a collection wallet: asked for by the merchant (several partial ones, each
//! idempotent by `out_refund_no`, their sum never above what the order was paid), or
//! automatic for a payment that arrives when its order can no longer take it.
//!
//! Keys: `f\0<merchant>\0<out_refund_no>` a refund; `rq\0<merchant>\0<out_refund_no>` a
//! refund not yet settled (the refund worker's queue).

use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{
    Gateway, OrderStatus, decode, get_json, identifier, key, order_key, prefix_end, put_json,
    read_order,
};
use crate::payments::{
    Expected, ExpectedKind, SignedTransferJson, amount_of, expect, ledger_error, parse_address,
    parse_amount,
};
use crate::{events, statements};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A refund out of a collection wallet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Refund {
    pub merchant_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub amount: String,
    pub reason: String,
    pub to_address: String,
    pub status: RefundStatus,
    /// Made by the gateway for a payment its order could not take.
    pub automatic: bool,
    /// The payment it gives back (automatic refunds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_txid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<SignedTransferJson>,
    pub created_at_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A merchant's refund request.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub out_refund_no: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub out_trade_no: String,
    #[schema(pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub amount: String,
    #[serde(default)]
    #[schema(max_length = 80)]
    pub reason: String,
}

/// Longest refund reason, in bytes.
pub const REASON_MAX: usize = 80;
/// Refunds the worker settles per pass, at most.
const REFUND_PAGE: usize = 64;

pub(crate) fn refund_key(merchant: &str, no: &str) -> Vec<u8> {
    key(&[b"f", merchant.as_bytes(), no.as_bytes()])
}

pub(crate) fn refund_queue_key(merchant: &str, no: &str) -> Vec<u8> {
    key(&[b"rq", merchant.as_bytes(), no.as_bytes()])
}

impl Gateway {
    /// A merchant refunds part or all of a paid order. `out_refund_no` is the idempotency
    /// key. The refunds of an order never add up to more than it was paid.
    pub async fn refund(&self, credentials: &Credentials, body: &[u8]) -> Result<Refund, ApiError> {
        let merchant_id = self.merchant_signer(credentials)?;
        let r: RefundRequest = decode(body)?;
        identifier("out_refund_no", &r.out_refund_no, 6, 32)?;
        identifier("out_trade_no", &r.out_trade_no, 6, 32)?;
        let amount = parse_amount("amount", &r.amount)?;
        if r.reason.len() > REASON_MAX || r.reason.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "reason",
                format!("at most {REASON_MAX} bytes, no control characters"),
            ));
        }
        let now_ms = self.now_ms();
        let m = merchant_id.clone();
        let refund = self
            .once(credentials, move |tx| {
                let (m, r) = (m.clone(), r.clone());
                Box::pin(async move {
                    let k = refund_key(&m, &r.out_refund_no);
                    if let Some(old) = get_json::<Refund>(tx, &k).await? {
                        return if old.out_trade_no == r.out_trade_no
                            && old.amount == amount.to_string()
                            && !old.automatic
                        {
                            Ok(old)
                        } else {
                            Err(TxError::Abort(ApiError::conflict(
                                "out_refund_no",
                                format!("{} was used with other content", r.out_refund_no),
                            )))
                        };
                    }
                    let mut order = read_order(tx, &m, &r.out_trade_no).await?;
                    if !matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded) {
                        return Err(TxError::Abort(ApiError::precondition(
                            "out_trade_no",
                            "the order is not paid",
                        )));
                    }
                    let paid = amount_of(&order.amount)?;
                    let before = amount_of(&order.refunded)?;
                    let after = before.checked_add(amount).filter(|a| *a <= paid);
                    let Some(after) = after else {
                        return Err(TxError::Abort(ApiError::precondition(
                            "amount",
                            format!(
                                "{before} of {paid} is refunded already; at most {} more",
                                paid.saturating_sub(before)
                            ),
                        )));
                    };
                    order.refunded = after.to_string();
                    if after == paid {
                        order.status = OrderStatus::Refunded;
                    }
                    let to = order.payer_address.clone().ok_or_else(|| {
                        TxError::Abort(ApiError::internal("a paid order without its payer"))
                    })?;
                    put_json(tx, order_key(&m, &r.out_trade_no), &order)?;
                    let refund = Refund {
                        merchant_id: m.clone(),
                        out_refund_no: r.out_refund_no.clone(),
                        out_trade_no: r.out_trade_no.clone(),
                        amount: amount.to_string(),
                        reason: r.reason.clone(),
                        to_address: to,
                        status: RefundStatus::Pending,
                        automatic: false,
                        payment_txid: order.txid.clone(),
                        txid: None,
                        transfer: None,
                        created_at_unix_ms: now_ms,
                        done_at_unix_ms: None,
                        failure: None,
                    };
                    put_json(tx, k, &refund)?;
                    tx.set(refund_queue_key(&m, &r.out_refund_no), b"")?;
                    Ok(refund)
                })
            })
            .await?;
        if refund.status == RefundStatus::Pending {
            // Settle it now; if the ledger is away, the refund worker finishes it.
            if let Err(e) = self
                .settle_refund(&merchant_id, &refund.out_refund_no)
                .await
            {
                tracing::warn!(error = %e.message, "a refund waits for its ledger");
            }
        }
        self.read_refund(&merchant_id, &refund.out_refund_no).await
    }

    pub async fn read_refund(&self, merchant_id: &str, no: &str) -> Result<Refund, ApiError> {
        let k = refund_key(merchant_id, no);
        self.tx(move |tx| {
            let k = k.clone();
            Box::pin(async move {
                get_json(tx, &k).await?.ok_or_else(|| {
                    TxError::Abort(ApiError::not_found("out_refund_no", "no such refund"))
                })
            })
        })
        .await
    }

    /// A merchant reads one of its refunds.
    pub async fn get_refund(
        &self,
        credentials: &Credentials,
        no: &str,
    ) -> Result<Refund, ApiError> {
        let merchant_id = self.merchant_signer(credentials)?;
        identifier("out_refund_no", no, 6, 40)?;
        self.read_refund(&merchant_id, no).await
    }

    /// Pays a pending refund: builds and signs its transfer once (kept with the refund, so a
    /// retry sends the same transfer and the ledger answers the first commit), submits it,
    /// and records the outcome.
    pub(crate) async fn settle_refund(&self, merchant_id: &str, no: &str) -> Result<(), ApiError> {
        let sender = self.sender(merchant_id);
        let _one_at_a_time = sender.lock().await;
        let refund = self.read_refund(merchant_id, no).await?;
        if refund.status != RefundStatus::Pending {
            return Ok(());
        }
        let merchant = self
            .merchant(merchant_id)
            .await?
            .ok_or_else(|| ApiError::internal("a refund of an unknown merchant"))?;
        let collection = self.custody.collection(merchant_id);
        let mut ledger = self.ledgers.get("merchant_id", merchant.bank).await?;
        let transfer = match &refund.transfer {
            Some(t) => t.decode("transfer", &self.keys)?,
            None => {
                let to = parse_address("to_address", &refund.to_address)?;
                let amount = parse_amount("amount", &refund.amount)?;
                let memo = format!("refund:{merchant_id}:{no}");
                let built = ledger
                    .build(&collection, &[(to, amount)], memo.as_bytes())
                    .await;
                let t = match built {
                    Ok(t) => t,
                    Err(e) => return self.refund_failed(merchant_id, no, e).await,
                };
                let (m, n, txid, json) = (
                    merchant_id.to_string(),
                    no.to_string(),
                    t.txid().to_string(),
                    SignedTransferJson::of(&t),
                );
                self.tx(move |tx| {
                    let (m, n, txid, json) = (m.clone(), n.clone(), txid.clone(), json.clone());
                    Box::pin(async move {
                        let k = refund_key(&m, &n);
                        let mut r: Refund = get_json(tx, &k).await?.ok_or_else(|| {
                            TxError::Abort(ApiError::internal("the refund vanished"))
                        })?;
                        if r.transfer.is_some() {
                            return Err(TxError::Abort(ApiError::unavailable(
                                "the refund is being settled elsewhere",
                            )));
                        }
                        expect(
                            tx,
                            &txid,
                            &Expected {
                                merchant_id: m.clone(),
                                kind: ExpectedKind::Refund,
                                reference: n.clone(),
                                payer_address: None,
                            },
                        )
                        .await?;
                        r.txid = Some(txid);
                        r.transfer = Some(json);
                        put_json(tx, k, &r)
                    })
                })
                .await?;
                t
            }
        };
        match self.ledgers.submit(merchant.bank, &transfer).await {
            Ok(committed) => {
                let (m, n) = (merchant_id.to_string(), no.to_string());
                let at = committed.committed_at_unix_ms;
                self.tx(move |tx| {
                    let (m, n) = (m.clone(), n.clone());
                    Box::pin(async move {
                        let k = refund_key(&m, &n);
                        let mut r: Refund = get_json(tx, &k).await?.ok_or_else(|| {
                            TxError::Abort(ApiError::internal("the refund vanished"))
                        })?;
                        if r.status != RefundStatus::Pending {
                            return Ok(());
                        }
                        r.status = RefundStatus::Succeeded;
                        r.done_at_unix_ms = Some(at);
                        statements::record(
                            tx,
                            &m,
                            &statements::Line {
                                at_unix_ms: at,
                                txid: r.txid.clone().unwrap_or_default(),
                                kind: if r.automatic {
                                    "automatic_refund".into()
                                } else {
                                    "refund".into()
                                },
                                reference: r.out_trade_no.clone(),
                                amount: r.amount.clone(),
                                incoming: false,
                            },
                        )?;
                        let kind = if r.automatic {
                            "payment.refunded"
                        } else {
                            "refund.succeeded"
                        };
                        events::emit(tx, &m, kind, &n, at, &r)?;
                        put_json(tx, k, &r)?;
                        tx.clear(refund_queue_key(&m, &n))?;
                        Ok(())
                    })
                })
                .await
            }
            Err(e) => self.refund_failed(merchant_id, no, e).await,
        }
    }

    /// A refund's transfer could not be made or was refused: a refusal for good fails the
    /// refund (giving its amount back to the order's refundable sum); anything else is
    /// retried later.
    async fn refund_failed(
        &self,
        merchant_id: &str,
        no: &str,
        e: cbdc_client::Error,
    ) -> Result<(), ApiError> {
        let err = ledger_error("transfer", e);
        if err.code != "LEDGER_REJECTED" {
            return Err(err);
        }
        let (m, n, why) = (merchant_id.to_string(), no.to_string(), err.message.clone());
        let now = self.now_ms();
        self.tx(move |tx| {
            let (m, n, why) = (m.clone(), n.clone(), why.clone());
            Box::pin(async move {
                let k = refund_key(&m, &n);
                let mut r: Refund = get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::internal("the refund vanished")))?;
                if r.status != RefundStatus::Pending {
                    return Ok(());
                }
                r.status = RefundStatus::Failed;
                r.failure = Some(why);
                r.done_at_unix_ms = Some(now);
                if !r.automatic {
                    let mut order = read_order(tx, &m, &r.out_trade_no).await?;
                    let back = amount_of(&order.refunded)?.saturating_sub(amount_of(&r.amount)?);
                    order.refunded = back.to_string();
                    order.status = OrderStatus::Paid;
                    put_json(tx, order_key(&m, &r.out_trade_no), &order)?;
                }
                events::emit(tx, &m, "refund.failed", &n, now, &r)?;
                put_json(tx, k, &r)?;
                tx.clear(refund_queue_key(&m, &n))?;
                Ok(())
            })
        })
        .await?;
        Err(err)
    }

    /// One pass of the refund worker: settles up to a page of pending refunds.
    pub(crate) async fn settle_pending_refunds(&self) -> Result<usize, ApiError> {
        let begin = b"rq\0".to_vec();
        let end = prefix_end(&begin);
        let rows = self
            .scan(begin, end, cbdc_store::RangeOptions::snapshot(REFUND_PAGE))
            .await?;
        let mut settled = 0;
        for (k, _) in rows {
            let mut parts = k[3..].splitn(2, |b| *b == 0);
            let (Some(m), Some(n)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (m, n) = (String::from_utf8_lossy(m), String::from_utf8_lossy(n));
            match self.settle_refund(&m, &n).await {
                Ok(()) => settled += 1,
                Err(e) => {
                    tracing::debug!(merchant = %m, refund = %n, error = %e.message, "refund waits")
                }
            }
        }
        Ok(settled)
    }
}
