//! Money into merchants' collection wallets: orders paid by a payer's signed transfer (from
//! any bank), and credits matched to what they pay. A payment that arrives when its order
//! can no longer take it (expired, closed, paid by another payment, or the wrong amount) is
//! refunded automatically ([`crate::refunds`]).
//!
//! Keys: `p\0<txid>` what a transfer the gateway handled is for ([`Expected`]);
//! `c\0<merchant>\0<txid>` a credit already counted.

use cbdc_core::{Address, Amount, Lock, Transfer};
use cbdc_proto::keycache::KeyCache;
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::gateway::{
    Gateway, Order, OrderStatus, decode, get_json, identifier, key, order_key, put_json, read_order,
};
use crate::refunds::{Refund, RefundStatus, refund_key, refund_queue_key};
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
        cbdc_client::Error::Rpc(e) if cbdc_client::transient(e.code) => {
            ApiError::unavailable(format!("the ledger: {e}"))
        }
        cbdc_client::Error::Rpc(e) => {
            ApiError::rejected(field, format!("{}: {}", e.reason, e.message))
        }
        cbdc_client::Error::Connect(e) => ApiError::unavailable(format!("the ledger: {e}")),
        other => ApiError::rejected(field, other.to_string()),
    }
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

pub(crate) fn amount_of(text: &str) -> Result<Amount, TxError<ApiError>> {
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
        let committed = match self.ledgers.submit(payer.ledger.0, &transfer).await {
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
            let credited = self
                .credit(
                    merchant_id,
                    &txid,
                    paid,
                    &transfer.body().memo,
                    committed.committed_at_unix_ms,
                )
                .await?;
            if let Some(order) = credited.filter(|o| o.out_trade_no == out_trade_no) {
                return Ok(order);
            }
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
    /// unmatched receipt, reported to the merchant. Returns the order this credit paid, as
    /// it now is (`None` for anything else, or a credit counted before).
    pub async fn credit(
        &self,
        merchant_id: &str,
        txid: &str,
        amount: Amount,
        memo: &[u8],
        at_ms: u64,
    ) -> Result<Option<Order>, ApiError> {
        let (m, t, memo) = (
            merchant_id.to_string(),
            txid.to_string(),
            String::from_utf8_lossy(memo).into_owned(),
        );
        let paid = self
            .tx(move |tx| {
                let (m, t, memo) = (m.clone(), t.clone(), memo.clone());
                Box::pin(async move {
                    let seen = key(&[b"c", m.as_bytes(), t.as_bytes()]);
                    if tx.get(&seen).await?.is_some() {
                        return Ok(Credited::default());
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
                                return Ok(Credited {
                                    paid: Some(order),
                                    event: true,
                                    refund: false,
                                });
                            };
                            let Some(to) = payer_address else {
                                return Ok(Credited::default());
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
                            Ok(Credited {
                                refund: true,
                                ..Credited::default()
                            })
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
                            Ok(Credited::default())
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
                            Ok(Credited {
                                event: true,
                                ..Credited::default()
                            })
                        }
                    }
                })
            })
            .await?;
        // Only the workers with something new to do: each wake-up is a pass over its queue.
        if paid.event {
            self.wake_webhooks.notify_one();
        }
        if paid.refund {
            self.wake_refunds.notify_one();
        }
        Ok(paid.paid)
    }
}

/// What counting a credit did, for the workers it wakes.
#[derive(Default)]
struct Credited {
    /// The order it paid.
    paid: Option<Order>,
    /// An event was emitted.
    event: bool,
    /// An automatic refund was queued.
    refund: bool,
}
