//! Money into and out of merchants' collection wallets: orders paid by a payer's signed
//! transfer (from any bank), credits matched to what they pay, and refunds — asked for by
//! the merchant, or automatic for a payment that arrives when its order can no longer take
//! it (expired, closed, paid by another payment, or the wrong amount).
//!
//! Keys: `p\0<txid>` what a transfer the gateway handled is for ([`Expected`]);
//! `c\0<merchant>\0<txid>` a credit already counted; `f\0<merchant>\0<out_refund_no>` a
//! refund; `rq\0<merchant>\0<out_refund_no>` a refund not yet settled (the refund worker's
//! queue).

use cbdc_core::{Address, Amount, Lock, Transfer};
use cbdc_proto::keycache::KeyCache;
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{
    Gateway, Order, OrderStatus, decode, get_json, identifier, key, order_key, prefix_end,
    put_json, read_order,
};
use crate::{events, statements};

/// A signed transfer in JSON: the exact body bytes and each witness, in hex.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedTransferJson {
    pub body: String,
    pub witnesses: Vec<WitnessJson>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WitnessJson {
    pub public_key: String,
    pub signature: String,
}

impl SignedTransferJson {
    pub fn of(t: &Transfer) -> SignedTransferJson {
        SignedTransferJson {
            body: hex::encode(t.body_bytes()),
            witnesses: t
                .witnesses()
                .iter()
                .map(|w| WitnessJson {
                    public_key: hex::encode(w.key.as_bytes()),
                    signature: hex::encode(w.signature),
                })
                .collect(),
        }
    }

    /// The transfer, decoded and its structure checked (naming `field`), its witnesses' keys
    /// checked through `keys`.
    pub fn decode(&self, field: &str, keys: &KeyCache) -> Result<Transfer, ApiError> {
        let hexed = |what: &str, text: &str| {
            hex::decode(text).map_err(|_| ApiError::invalid(field, format!("{what}: not hex")))
        };
        let body = hexed("body", &self.body)?;
        if self.witnesses.len() > cbdc_core::transfer::MAX_WITNESSES {
            return Err(ApiError::invalid(field, "too many witnesses"));
        }
        let witnesses = self
            .witnesses
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let k = hexed("witnesses.public_key", &w.public_key)?;
                let s = hexed("witnesses.signature", &w.signature)?;
                cbdc_core::Witness::from_slices_with(i, &k, &s, |k| keys.checked_key(k))
                    .map_err(|e| ApiError::invalid(field, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Transfer::decode(body, witnesses).map_err(|e| ApiError::invalid(field, e.to_string()))
    }
}

/// What a transfer the gateway handled is for, so that its credit is matched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Expected {
    pub merchant_id: String,
    pub kind: ExpectedKind,
    /// The order, hold, mandate or refund it belongs to.
    pub reference: String,
    pub payer_address: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExpectedKind {
    Order,
    Capture,
    Charge,
    Refund,
}

pub(crate) fn payment_key(txid: &str) -> Vec<u8> {
    key(&[b"p", txid.as_bytes()])
}

/// Registers what `txid` is for (the same registration again is harmless; another is
/// refused).
pub(crate) async fn expect(
    tx: &mut cbdc_store::Transaction,
    txid: &str,
    e: &Expected,
) -> Result<(), TxError<ApiError>> {
    let k = payment_key(txid);
    match get_json::<Expected>(tx, &k).await? {
        Some(old) if old != *e => Err(TxError::Abort(ApiError::conflict(
            "transfer",
            format!("this transfer is already registered for {}", old.reference),
        ))),
        Some(_) => Ok(()),
        None => put_json(tx, k, e),
    }
}

/// A ledger's answer as the gateway's: a refusal for good names `field`; a ledger that is
/// busy or unreachable is UNAVAILABLE (try again).
pub(crate) fn ledger_error(field: &str, e: cbdc_client::Error) -> ApiError {
    match e {
        cbdc_client::Error::Rpc(e) if retryable(e.code) => {
            ApiError::unavailable(format!("the ledger: {e}"))
        }
        cbdc_client::Error::Rpc(e) => {
            ApiError::rejected(field, format!("{}: {}", e.reason, e.message))
        }
        cbdc_client::Error::Connect(e) => ApiError::unavailable(format!("the ledger: {e}")),
        other => ApiError::rejected(field, other.to_string()),
    }
}

pub(crate) fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}

/// Parses an address, naming `field`. Parsing checks the key is a usable curve point (about
/// as costly as a signature check), so addresses parsed before are remembered: the answer
/// is a pure function of the text.
pub(crate) fn parse_address(field: &str, text: &str) -> Result<Address, ApiError> {
    static PARSED: std::sync::LazyLock<
        std::sync::RwLock<std::collections::HashMap<String, Address>>,
    > = std::sync::LazyLock::new(Default::default);
    /// Addresses remembered, at most.
    const REMEMBERED: usize = 100_000;
    let text = text.trim();
    if let Some(a) = PARSED.read().expect("not poisoned").get(text) {
        return Ok(*a);
    }
    let a: Address = text
        .parse()
        .map_err(|e| ApiError::invalid(field, format!("{e}")))?;
    let mut parsed = PARSED.write().expect("not poisoned");
    if parsed.len() >= REMEMBERED {
        parsed.clear();
    }
    parsed.insert(text.to_string(), a);
    Ok(a)
}

pub(crate) fn parse_amount(field: &str, text: &str) -> Result<Amount, ApiError> {
    let a = Amount::parse(text).map_err(|e| ApiError::invalid(field, e.to_string()))?;
    if a.is_zero() {
        return Err(ApiError::invalid(field, "must be above 0.00"));
    }
    Ok(a)
}

fn amount_of(text: &str) -> Result<Amount, TxError<ApiError>> {
    Amount::parse(text)
        .map_err(|e| TxError::Abort(ApiError::internal(format!("a stored amount: {e}"))))
}

/// A payer's request to pay an order.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayOrder {
    /// The paying wallet (one of the transfer's signers): refunds go back to it.
    pub payer_address: String,
    pub transfer: SignedTransferJson,
}

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

fn refund_key(merchant: &str, no: &str) -> Vec<u8> {
    key(&[b"f", merchant.as_bytes(), no.as_bytes()])
}

fn refund_queue_key(merchant: &str, no: &str) -> Vec<u8> {
    key(&[b"rq", merchant.as_bytes(), no.as_bytes()])
}

impl Gateway {
    /// An order as stored.
    pub async fn order(&self, merchant_id: &str, out_trade_no: &str) -> Result<Order, ApiError> {
        let (m, o) = (merchant_id.to_string(), out_trade_no.to_string());
        self.tx(move |tx| {
            let (m, o) = (m.clone(), o.clone());
            Box::pin(async move { read_order(tx, &m, &o).await })
        })
        .await
    }

    /// A payer pays an order: the transfer must pay exactly the order's amount to the
    /// merchant's collection wallet with the order's memo, signed by `payer_address`. It is
    /// checked against the order, registered, then submitted to the payer's ledger. An order
    /// paid at the payer's own bank is paid when this returns; from another bank, once the
    /// credit arrives (`pending_txid` names it meanwhile). Sending the same transfer again
    /// answers the same.
    pub async fn pay_order(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
        body: &[u8],
    ) -> Result<Order, ApiError> {
        identifier("merchant_id", merchant_id, 1, 32)?;
        identifier("out_trade_no", out_trade_no, 6, 32)?;
        let r: PayOrder = decode(body)?;
        let payer = parse_address("payer_address", &r.payer_address)?;
        let transfer = r.transfer.decode("transfer", &self.keys)?;
        let merchant = self
            .merchant(merchant_id)
            .await?
            .ok_or_else(|| ApiError::not_found("merchant_id", "not onboarded"))?;
        let collection = parse_address("collection_address", &merchant.collection_address)?;
        let mut paid = Amount::ZERO;
        for o in &transfer.body().outputs {
            if o.lock == Lock::Key(collection.key) {
                if o.ledger != collection.ledger {
                    return Err(ApiError::invalid(
                        "transfer",
                        format!(
                            "pays the merchant's key on ledger {}, not on its bank's ledger {}",
                            o.ledger.0, collection.ledger.0
                        ),
                    ));
                }
                paid = paid
                    .checked_add(o.value)
                    .ok_or_else(|| ApiError::invalid("transfer", "outputs overflow"))?;
            }
        }
        if !transfer.witnesses().iter().any(|w| w.key == payer.key) {
            return Err(ApiError::invalid(
                "payer_address",
                "its key did not sign the transfer",
            ));
        }
        if !self.ledgers.knows(payer.ledger.0) {
            return Err(ApiError::invalid(
                "payer_address",
                format!(
                    "ledger {}: this gateway is not connected to it",
                    payer.ledger.0
                ),
            ));
        }
        let txid = transfer.txid().to_string();
        let memo = transfer.body().memo.clone();
        let now = self.now();
        let (m, o, t, p) = (
            merchant_id.to_string(),
            out_trade_no.to_string(),
            txid.clone(),
            payer.to_string(),
        );
        let order = self
            .tx(move |tx| {
                let (m, o, t, p, memo) = (m.clone(), o.clone(), t.clone(), p.clone(), memo.clone());
                Box::pin(async move {
                    let mut order = read_order(tx, &m, &o).await?;
                    let abort = |e| Err(TxError::Abort(e));
                    if memo != order.memo.as_bytes() {
                        return abort(ApiError::invalid(
                            "transfer",
                            format!("its memo must be {:?}", order.memo),
                        ));
                    }
                    if paid.to_string() != order.amount {
                        return abort(ApiError::invalid(
                            "transfer",
                            format!(
                                "pays {paid} to the merchant; the order is for {}",
                                order.amount
                            ),
                        ));
                    }
                    match order.status {
                        OrderStatus::Paid | OrderStatus::Refunded => {
                            return if order.txid.as_deref() == Some(t.as_str()) {
                                Ok(order)
                            } else {
                                abort(ApiError::precondition(
                                    "out_trade_no",
                                    "the order is paid already",
                                ))
                            };
                        }
                        OrderStatus::Closed => {
                            return abort(ApiError::precondition(
                                "out_trade_no",
                                "the order is closed",
                            ));
                        }
                        OrderStatus::Expired => {
                            return abort(ApiError::precondition(
                                "out_trade_no",
                                "the order expired",
                            ));
                        }
                        OrderStatus::Created if now >= order.expires_at_unix_s => {
                            return abort(ApiError::precondition(
                                "out_trade_no",
                                format!("the order expired at {}", order.expires_at_unix_s),
                            ));
                        }
                        OrderStatus::Created => {}
                    }
                    expect(
                        tx,
                        &t,
                        &Expected {
                            merchant_id: m.clone(),
                            kind: ExpectedKind::Order,
                            reference: o.clone(),
                            payer_address: Some(p),
                        },
                    )
                    .await?;
                    order.pending_txid = Some(t);
                    put_json(tx, order_key(&m, &o), &order)?;
                    Ok(order)
                })
            })
            .await?;
        if order.status != OrderStatus::Created {
            return Ok(order);
        }
        let mut ledger = self.ledgers.get("payer_address", payer.ledger.0).await?;
        let committed = match ledger.submit(&transfer).await {
            Ok(c) => c,
            Err(e) => {
                let e = ledger_error("transfer", e);
                if e.code == "LEDGER_REJECTED" {
                    // Refused for good: it will never be credited, so its registration goes
                    // (a stream of refused transfers leaves nothing behind).
                    self.unregister(merchant_id, out_trade_no, &txid).await?;
                }
                return Err(e);
            }
        };
        if payer.ledger == collection.ledger {
            // The credit is this commit: count it now rather than when the wallet is read.
            self.credit(
                merchant_id,
                &txid,
                paid,
                &transfer.body().memo,
                committed.committed_at_unix_ms,
            )
            .await?;
        }
        self.order(merchant_id, out_trade_no).await
    }

    /// Forgets the registration of a payment the ledger refused for good.
    async fn unregister(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
        txid: &str,
    ) -> Result<(), ApiError> {
        let (m, o, t) = (
            merchant_id.to_string(),
            out_trade_no.to_string(),
            txid.to_string(),
        );
        self.tx(move |tx| {
            let (m, o, t) = (m.clone(), o.clone(), t.clone());
            Box::pin(async move {
                tx.clear(payment_key(&t))?;
                let mut order = read_order(tx, &m, &o).await?;
                if order.pending_txid.as_deref() == Some(t.as_str()) {
                    order.pending_txid = None;
                    put_json(tx, order_key(&m, &o), &order)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Counts a credit of `amount` by `txid` into the merchant's collection wallet, committed
    /// at `at_ms` (once: a credit seen again changes nothing). A payment for an order pays it
    /// if the order could take it when the ledger committed it; else it is refunded. A
    /// capture or mandate charge the gateway made is a statement line; anything else is an
    /// unmatched receipt, reported to the merchant.
    pub async fn credit(
        &self,
        merchant_id: &str,
        txid: &str,
        amount: Amount,
        memo: &[u8],
        at_ms: u64,
    ) -> Result<(), ApiError> {
        let (m, t, memo) = (
            merchant_id.to_string(),
            txid.to_string(),
            String::from_utf8_lossy(memo).into_owned(),
        );
        // Whether a refund was queued; either way the workers are woken below.
        let _refund_queued = self
            .tx(move |tx| {
                let (m, t, memo) = (m.clone(), t.clone(), memo.clone());
                Box::pin(async move {
                    let seen = key(&[b"c", m.as_bytes(), t.as_bytes()]);
                    if tx.get(&seen).await?.is_some() {
                        return Ok(false);
                    }
                    tx.set(seen, b"")?;
                    let expected = get_json::<Expected>(tx, &payment_key(&t))
                        .await?
                        .filter(|e| e.merchant_id == m);
                    let line = |kind: &'static str, reference: String| statements::Line {
                        at_unix_ms: at_ms,
                        txid: t.clone(),
                        kind: kind.to_string(),
                        reference,
                        amount: amount.to_string(),
                        incoming: true,
                    };
                    match expected {
                        Some(Expected {
                            kind: ExpectedKind::Order,
                            reference,
                            payer_address,
                            ..
                        }) => {
                            statements::record(tx, &m, &line("payment", reference.clone()))?;
                            let mut order = read_order(tx, &m, &reference).await?;
                            let refusal = if order.status != OrderStatus::Created {
                                Some(format!(
                                    "the order was {:?} when the payment arrived",
                                    order.status
                                ))
                            } else if at_ms / 1000 >= order.expires_at_unix_s {
                                Some("the order had expired when the payment arrived".into())
                            } else if amount.to_string() != order.amount {
                                Some(format!("paid {amount}; the order is for {}", order.amount))
                            } else {
                                None
                            };
                            let Some(reason) = refusal else {
                                order.status = OrderStatus::Paid;
                                order.txid = Some(t.clone());
                                order.paid_at_unix_ms = Some(at_ms);
                                order.payer_address = payer_address;
                                order.pending_txid = None;
                                put_json(tx, order_key(&m, &reference), &order)?;
                                events::emit(tx, &m, "order.paid", &reference, at_ms, &order)?;
                                return Ok(false);
                            };
                            let Some(to) = payer_address else {
                                return Ok(false);
                            };
                            let refund = Refund {
                                merchant_id: m.clone(),
                                out_refund_no: format!("auto-{}", &t[..24]),
                                out_trade_no: reference,
                                amount: amount.to_string(),
                                reason,
                                to_address: to,
                                status: RefundStatus::Pending,
                                automatic: true,
                                payment_txid: Some(t.clone()),
                                txid: None,
                                transfer: None,
                                created_at_unix_ms: at_ms,
                                done_at_unix_ms: None,
                                failure: None,
                            };
                            put_json(tx, refund_key(&m, &refund.out_refund_no), &refund)?;
                            tx.set(refund_queue_key(&m, &refund.out_refund_no), b"")?;
                            Ok(true)
                        }
                        Some(Expected {
                            kind, reference, ..
                        }) => {
                            let kind = match kind {
                                ExpectedKind::Capture => "capture",
                                ExpectedKind::Charge => "mandate_charge",
                                _ => "transfer",
                            };
                            statements::record(tx, &m, &line(kind, reference))?;
                            Ok(false)
                        }
                        None => {
                            statements::record(tx, &m, &line("unmatched", memo.clone()))?;
                            events::emit(
                                tx,
                                &m,
                                "payment.unmatched",
                                &t,
                                at_ms,
                                &serde_json::json!({
                                    "txid": t, "amount": amount.to_string(), "memo": memo,
                                }),
                            )?;
                            Ok(false)
                        }
                    }
                })
            })
            .await?;
        // The webhook worker (an event may be waiting) and the refund worker.
        self.wake_webhooks.notify_one();
        self.wake_refunds.notify_one();
        Ok(())
    }

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

    /// The lock that lets one outgoing transfer at a time spend a collection wallet.
    pub(crate) fn sender(&self, merchant_id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut senders = self.senders.lock().expect("not poisoned");
        std::sync::Arc::clone(senders.entry(merchant_id.to_string()).or_default())
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
        match ledger.submit(&transfer).await {
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
