//! Orders (e-commerce): created by a merchant with its own `out_trade_no` (the idempotency
//! key), read, closed; paid by a payer's transfer ([`crate::payments`]).
//!
//! Keys: `o\0<merchant>\0<out_trade_no>` an order.

use cbdc_core::Amount;
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{Gateway, decode, get_json, identifier, key};
use crate::qr;

/// Longest description of an order, in bytes.
pub const DESCRIPTION_MAX: usize = 127;
/// An order's validity: at least a minute, at most a week; two hours by default.
pub const EXPIRY_MIN_S: u64 = 60;
pub const EXPIRY_MAX_S: u64 = 7 * 24 * 3600;
pub const EXPIRY_DEFAULT_S: u64 = 2 * 3600;

/// What a merchant sends to create an order.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub out_trade_no: String,
    #[schema(pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub amount: String,
    #[schema(max_length = 127)]
    pub description: String,
    #[serde(default)]
    #[schema(minimum = 60, maximum = 604800)]
    pub expires_in_s: Option<u64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Created,
    Paid,
    Closed,
    /// Paid, and refunded in full.
    Refunded,
    /// Not paid by its expiry (never stored: how an unpaid order past its expiry reads).
    Expired,
}

/// An order as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Order {
    pub merchant_id: String,
    pub out_trade_no: String,
    pub amount: String,
    pub description: String,
    pub status: OrderStatus,
    pub created_at_unix_s: u64,
    pub expires_at_unix_s: u64,
    /// What the payer's wallet scans.
    pub payment_uri: String,
    /// The memo the payment carries.
    pub memo: String,
    /// The payment that paid it, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_address: Option<String>,
    /// The last payment handed to the gateway for it (on its way when the payer is at
    /// another bank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_txid: Option<String>,
    /// Refunded so far.
    #[serde(default = "zero")]
    pub refunded: String,
    /// The checkout page a payer opens (on the gateway's HTTP address): the order's QR
    /// code, turning to paid when the payment lands. Its last segment is a capability:
    /// anyone with the address sees the order's amount, description and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_path: Option<String>,
}

fn zero() -> String {
    "0.00".into()
}

impl Order {
    /// The order as a merchant reads it at `now`: an unpaid order past its expiry is
    /// `EXPIRED`.
    pub fn view(&self, now: u64) -> Order {
        let mut v = self.clone();
        if v.status == OrderStatus::Created && now >= v.expires_at_unix_s {
            v.status = OrderStatus::Expired;
        }
        v
    }
}

pub(crate) fn order_key(merchant: &str, out_trade_no: &str) -> Vec<u8> {
    key(&[b"o", merchant.as_bytes(), out_trade_no.as_bytes()])
}

/// An order as stored, or not found (naming `out_trade_no`).
pub(crate) async fn read_order(
    tx: &mut cbdc_store::Transaction,
    merchant: &str,
    out_trade_no: &str,
) -> Result<Order, TxError<ApiError>> {
    get_json(tx, &order_key(merchant, out_trade_no))
        .await?
        .ok_or_else(|| TxError::Abort(ApiError::not_found("out_trade_no", "no such order")))
}

impl Gateway {
    /// A merchant creates an order. `out_trade_no` is the idempotency key: the same content
    /// answers the same order, other content is refused with ALREADY_EXISTS.
    pub async fn create_order(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<Order, ApiError> {
        let merchant_id = self.merchant_signer(credentials)?;
        let r: CreateOrder = decode(body)?;
        identifier("out_trade_no", &r.out_trade_no, 6, 32)?;
        let amount =
            Amount::parse(&r.amount).map_err(|e| ApiError::invalid("amount", e.to_string()))?;
        if amount == Amount::ZERO {
            return Err(ApiError::invalid("amount", "must be above 0.00"));
        }
        if r.description.len() > DESCRIPTION_MAX || r.description.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "description",
                format!("at most {DESCRIPTION_MAX} bytes, no control characters"),
            ));
        }
        let expires_in = r.expires_in_s.unwrap_or(EXPIRY_DEFAULT_S);
        if !(EXPIRY_MIN_S..=EXPIRY_MAX_S).contains(&expires_in) {
            return Err(ApiError::invalid(
                "expires_in_s",
                format!("between {EXPIRY_MIN_S} and {EXPIRY_MAX_S} seconds"),
            ));
        }
        let merchant = self
            .merchant(&merchant_id)
            .await?
            .ok_or_else(|| ApiError::not_found("merchant_id", "not onboarded"))?;
        let now = self.now();
        let memo = qr::order_memo(&merchant_id, &r.out_trade_no);
        let order = Order {
            merchant_id: merchant_id.clone(),
            out_trade_no: r.out_trade_no.clone(),
            amount: amount.to_string(),
            description: r.description.clone(),
            status: OrderStatus::Created,
            created_at_unix_s: now,
            expires_at_unix_s: now + expires_in,
            payment_uri: qr::payment_uri(
                &merchant.collection_address,
                &amount.to_string(),
                &memo,
                &self.network,
            ),
            memo,
            txid: None,
            paid_at_unix_ms: None,
            payer_address: None,
            pending_txid: None,
            refunded: zero(),
            checkout_path: Some(format!(
                "/checkout/{merchant_id}/{}/{}",
                r.out_trade_no,
                self.custody.checkout_mac(&merchant_id, &r.out_trade_no)
            )),
        };
        let k = order_key(&merchant_id, &r.out_trade_no);
        self.once(credentials, move |tx| {
            let (k, order) = (k.clone(), order.clone());
            Box::pin(async move {
                if let Some(old) = tx.get(&k).await? {
                    let old: Order = serde_json::from_slice(&old)
                        .map_err(|e| TxError::Abort(ApiError::internal(e.to_string())))?;
                    let same = old.amount == order.amount
                        && old.description == order.description
                        && old.expires_at_unix_s - old.created_at_unix_s
                            == order.expires_at_unix_s - order.created_at_unix_s;
                    return if same {
                        Ok(old)
                    } else {
                        Err(TxError::Abort(ApiError::conflict(
                            "out_trade_no",
                            format!("{} was created with other content", order.out_trade_no),
                        )))
                    };
                }
                tx.set(k, serde_json::to_vec(&order).expect("serialisable"))?;
                Ok(order)
            })
        })
        .await
    }

    /// A merchant reads one of its orders (another merchant's is not found).
    pub async fn get_order(
        &self,
        credentials: &Credentials,
        out_trade_no: &str,
    ) -> Result<Order, ApiError> {
        let merchant_id = self.merchant_signer(credentials)?;
        identifier("out_trade_no", out_trade_no, 6, 32)?;
        let otn = out_trade_no.to_string();
        self.once(credentials, move |tx| {
            let (m, otn) = (merchant_id.clone(), otn.clone());
            Box::pin(async move { read_order(tx, &m, &otn).await })
        })
        .await
    }

    /// A merchant closes an unpaid order (closing it again answers the closed order).
    pub async fn close_order(
        &self,
        credentials: &Credentials,
        out_trade_no: &str,
    ) -> Result<Order, ApiError> {
        let merchant_id = self.merchant_signer(credentials)?;
        identifier("out_trade_no", out_trade_no, 6, 32)?;
        let otn = out_trade_no.to_string();
        self.once(credentials, move |tx| {
            let (m, otn) = (merchant_id.clone(), otn.clone());
            Box::pin(async move {
                let mut order = read_order(tx, &m, &otn).await?;
                let k = order_key(&m, &otn);
                match order.status {
                    OrderStatus::Paid | OrderStatus::Refunded => {
                        Err(TxError::Abort(ApiError::precondition(
                            "out_trade_no",
                            "the order is paid: refund it instead",
                        )))
                    }
                    OrderStatus::Closed => Ok(order),
                    OrderStatus::Created | OrderStatus::Expired => {
                        order.status = OrderStatus::Closed;
                        tx.set(k, serde_json::to_vec(&order).expect("serialisable"))?;
                        Ok(order)
                    }
                }
            })
        })
        .await
    }
}
