//! The HTTP/JSON API: bodies JSON of at most [`BODY_MAX`] bytes, every error an HTTP status
//! with a JSON body naming the field. Merchant and bank requests are signed (see
//! [`crate::auth`]); the payer-facing ones (paying an order, revoking a mandate) carry the
//! payer's own signed transfer instead.
//!
//! - `POST /v1/merchants` — a bank onboards a merchant; `GET /v1/merchant` — a merchant
//!   reads its own record.
//! - `POST /v1/orders`, `GET /v1/orders/{out_trade_no}`, `POST …/close`, `GET …/qr.svg`,
//!   `GET …/qr.png` — orders.
//! - `POST /v1/merchants/{merchant_id}/orders/{out_trade_no}/pay` — a payer pays (public).
//! - `POST /v1/refunds`, `GET /v1/refunds/{out_refund_no}` — refunds.
//! - `POST /v1/holds`, `GET /v1/holds/{hold_id}`, `POST …/capture`, `POST …/release`.
//! - `POST /v1/mandates`, `GET /v1/mandates/{mandate_id}`, `POST …/charge`;
//!   `POST /v1/merchants/{merchant_id}/mandates/{mandate_id}/revoke` — the owner (public).
//! - `GET /v1/events?limit=N`, `GET /v1/events/{event_id}`, `POST …/redeliver` — webhooks.
//! - `GET /v1/statements/{date}`, `GET …/csv`, `GET …/reconciliation` — statements.
//! - `GET /v1/webhook-key` — the key webhooks are signed with (public).
//! - `GET /v1/openapi.json` — the OpenAPI document of all this (public).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth;
use crate::error::{ApiError, ErrorBody};
use crate::events::EventView;
use crate::gateway::{CreateOrder, Gateway, Merchant, OnboardRequest, Order};
use crate::locks::{
    AuthorizeHold, CaptureHold, ChargeMandate, CreateMandate, Hold, Mandate, RevokeMandate,
};
use crate::payments::PayOrder;
use crate::qr;
use crate::refunds::{Refund, RefundRequest};
use crate::statements::{Reconciliation, Statement};

/// Largest request body, in bytes.
pub const BODY_MAX: usize = 16 * 1024;

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/merchants", post(onboard))
        .route("/v1/merchant", get(me))
        .route("/v1/orders", post(create_order))
        .route("/v1/orders/{out_trade_no}", get(get_order))
        .route("/v1/orders/{out_trade_no}/close", post(close_order))
        .route("/v1/orders/{out_trade_no}/qr.svg", get(qr_svg))
        .route("/v1/orders/{out_trade_no}/qr.png", get(qr_png))
        .route(
            "/v1/merchants/{merchant_id}/orders/{out_trade_no}/pay",
            post(pay_order),
        )
        .route("/v1/refunds", post(refund))
        .route("/v1/refunds/{out_refund_no}", get(get_refund))
        .route("/v1/holds", post(authorize_hold))
        .route("/v1/holds/{hold_id}", get(get_hold))
        .route("/v1/holds/{hold_id}/capture", post(capture_hold))
        .route("/v1/holds/{hold_id}/release", post(release_hold))
        .route("/v1/mandates", post(create_mandate))
        .route("/v1/mandates/{mandate_id}", get(get_mandate))
        .route("/v1/mandates/{mandate_id}/charge", post(charge_mandate))
        .route(
            "/v1/merchants/{merchant_id}/mandates/{mandate_id}/revoke",
            post(revoke_mandate),
        )
        .route("/v1/events", get(list_events))
        .route("/v1/events/{event_id}", get(get_event))
        .route("/v1/events/{event_id}/redeliver", post(redeliver))
        .route("/v1/statements/{date}", get(statement))
        .route("/v1/statements/{date}/csv", get(statement_csv))
        .route("/v1/statements/{date}/reconciliation", get(reconcile))
        .route("/v1/webhook-key", get(webhook_key))
        .route("/v1/openapi.json", get(openapi))
        .route(
            "/checkout/{merchant_id}/{out_trade_no}/{mac}",
            get(crate::checkout::page),
        )
        .route(
            "/checkout/{merchant_id}/{out_trade_no}/{mac}/status",
            get(crate::checkout::status),
        )
        .route(
            "/checkout/{merchant_id}/{out_trade_no}/{mac}/qr.svg",
            get(crate::checkout::qr),
        )
        .route("/checkout.js", get(crate::checkout::script))
        .route("/checkout.css", get(crate::checkout::style))
        .fallback(|| async { ApiError::not_found("path", "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Larger bodies are cut off by the limit below and answered 413 by `Body`.
        .layer(DefaultBodyLimit::max(BODY_MAX + 1))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway.metrics),
            crate::metrics::http_layer,
        ))
        .with_state(gateway)
}

fn json(value: &impl serde::Serialize) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(value).expect("serialisable"),
    )
        .into_response()
}

/// A request's body within [`BODY_MAX`], JSON when a POST carries one.
pub struct Body {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map_or(req.uri().path(), |p| p.as_str())
            .to_string();
        let headers = req.headers().clone();
        let too_large = || ApiError::too_large(format!("the body is larger than {BODY_MAX} bytes"));
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| too_large())?;
        if bytes.len() > BODY_MAX {
            return Err(too_large());
        }
        if method == Method::POST && !bytes.is_empty() {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::unsupported_media(format!(
                    "{content_type:?}: send application/json"
                )));
            }
        }
        Ok(Body {
            method,
            path,
            headers,
            bytes,
        })
    }
}

/// A signed request: its [`Body`] and credentials whose signature by the named signer over
/// this method, path and body was checked, within the replay window. The nonce is checked
/// with the request's effect.
pub struct Signed {
    pub credentials: auth::Credentials,
    /// The path and query signed.
    pub path: String,
    pub body: Bytes,
}

impl FromRequest<Gateway> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, gateway: &Gateway) -> Result<Signed, ApiError> {
        let b = Body::from_request(req, gateway).await?;
        let credentials = auth::parse(
            b.headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )?;
        gateway
            .authenticate(&credentials, b.method.as_str(), &b.path, &b.bytes)
            .await?;
        Ok(Signed {
            credentials,
            path: b.path,
            body: b.bytes,
        })
    }
}

type Answer = Result<Response, ApiError>;

/// A bank onboards a merchant (signed by the bank's authority key).
#[utoipa::path(
    post,
    path = "/v1/merchants",
    request_body(content = OnboardRequest, content_type = "application/json"),
    responses((status = 200, description = "OK", body = Merchant), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn onboard(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.onboard(&s.credentials, &s.body).await?))
}

/// The signing merchant's own record, its collection wallet among it.
#[utoipa::path(
    get,
    path = "/v1/merchant",
    responses((status = 200, description = "OK", body = Merchant), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn me(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.me(&s.credentials).await?))
}

/// Creates an order (idempotent by `out_trade_no`).
#[utoipa::path(
    post,
    path = "/v1/orders",
    request_body(content = CreateOrder, content_type = "application/json"),
    responses((status = 200, description = "OK", body = Order), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn create_order(State(g): State<Gateway>, s: Signed) -> Answer {
    let order = g.create_order(&s.credentials, &s.body).await?;
    Ok(json(&order.view(g.now())))
}

/// Reads an order.
#[utoipa::path(
    get,
    path = "/v1/orders/{out_trade_no}",
    params(("out_trade_no" = String, Path, description = "the merchant's order id", pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Order), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn get_order(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.get_order(&s.credentials, &otn).await?;
    Ok(json(&order.view(g.now())))
}

/// Closes an unpaid order.
#[utoipa::path(
    post,
    path = "/v1/orders/{out_trade_no}/close",
    params(("out_trade_no" = String, Path, description = "the merchant's order id", pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Order), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn close_order(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.close_order(&s.credentials, &otn).await?;
    Ok(json(&order.view(g.now())))
}

/// The order's payment QR code as SVG.
#[utoipa::path(
    get,
    path = "/v1/orders/{out_trade_no}/qr.svg",
    params(("out_trade_no" = String, Path, description = "the merchant's order id", pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = String, content_type = "image/svg+xml"), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn qr_svg(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.get_order(&s.credentials, &otn).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        qr::svg(&order.payment_uri)?,
    )
        .into_response())
}

/// The order's payment QR code as PNG.
#[utoipa::path(
    get,
    path = "/v1/orders/{out_trade_no}/qr.png",
    params(("out_trade_no" = String, Path, description = "the merchant's order id", pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = String, content_type = "image/png"), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn qr_png(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.get_order(&s.credentials, &otn).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/png")],
        qr::png(&order.payment_uri)?,
    )
        .into_response())
}

/// A payer pays an order with its signed transfer (no merchant signature).
#[utoipa::path(
    post,
    path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}/pay",
    request_body(content = PayOrder, content_type = "application/json"),
    params(("merchant_id" = String, Path, pattern = "^[A-Za-z0-9_-]{1,32}$"), ("out_trade_no" = String, Path, description = "the merchant's order id", pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Order), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    tag = "merchant gateway"
)]
async fn pay_order(
    State(g): State<Gateway>,
    Path((merchant_id, otn)): Path<(String, String)>,
    b: Body,
) -> Answer {
    let order = g.pay_order(&merchant_id, &otn, &b.bytes).await?;
    Ok(json(&order.view(g.now())))
}

/// Refunds part or all of a paid order (idempotent by `out_refund_no`).
#[utoipa::path(
    post,
    path = "/v1/refunds",
    request_body(content = RefundRequest, content_type = "application/json"),
    responses((status = 200, description = "OK", body = Refund), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn refund(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.refund(&s.credentials, &s.body).await?))
}

/// Reads a refund.
#[utoipa::path(
    get,
    path = "/v1/refunds/{out_refund_no}",
    params(("out_refund_no" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Refund), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn get_refund(State(g): State<Gateway>, Path(no): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.get_refund(&s.credentials, &no).await?))
}

/// Authorises a hold with the rider's signed transfer (idempotent by `hold_id`).
#[utoipa::path(
    post,
    path = "/v1/holds",
    request_body(content = AuthorizeHold, content_type = "application/json"),
    responses((status = 200, description = "OK", body = Hold), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn authorize_hold(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.authorize_hold(&s.credentials, &s.body).await?))
}

/// Reads a hold.
#[utoipa::path(
    get,
    path = "/v1/holds/{hold_id}",
    params(("hold_id" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Hold), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn get_hold(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.get_hold(&s.credentials, &id).await?))
}

/// Captures a hold with splits; the rest goes back to the rider.
#[utoipa::path(
    post,
    path = "/v1/holds/{hold_id}/capture",
    request_body(content = CaptureHold, content_type = "application/json"),
    params(("hold_id" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Hold), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn capture_hold(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(
        &g.settle_hold(&s.credentials, &id, &s.body, false).await?,
    ))
}

/// Releases a hold whole.
#[utoipa::path(
    post,
    path = "/v1/holds/{hold_id}/release",
    params(("hold_id" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Hold), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn release_hold(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(
        &g.settle_hold(&s.credentials, &id, &s.body, true).await?,
    ))
}

/// Registers a mandate funded by the owner's signed transfer (idempotent by `mandate_id`).
#[utoipa::path(
    post,
    path = "/v1/mandates",
    request_body(content = CreateMandate, content_type = "application/json"),
    responses((status = 200, description = "OK", body = Mandate), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn create_mandate(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.create_mandate(&s.credentials, &s.body).await?))
}

/// Reads a mandate.
#[utoipa::path(
    get,
    path = "/v1/mandates/{mandate_id}",
    params(("mandate_id" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Mandate), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn get_mandate(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.get_mandate(&s.credentials, &id).await?))
}

/// Charges a mandate: an order paid from it at once.
#[utoipa::path(
    post,
    path = "/v1/mandates/{mandate_id}/charge",
    request_body(content = ChargeMandate, content_type = "application/json"),
    params(("mandate_id" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Order), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn charge_mandate(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    let order = g.charge_mandate(&s.credentials, &id, &s.body).await?;
    Ok(json(&order.view(g.now())))
}

/// The owner revokes a mandate with its own signed transfer.
#[utoipa::path(
    post,
    path = "/v1/merchants/{merchant_id}/mandates/{mandate_id}/revoke",
    request_body(content = RevokeMandate, content_type = "application/json"),
    params(("merchant_id" = String, Path, pattern = "^[A-Za-z0-9_-]{1,32}$"), ("mandate_id" = String, Path, pattern = "^[A-Za-z0-9_-]{6,32}$")),
    responses((status = 200, description = "OK", body = Mandate), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    tag = "merchant gateway"
)]
async fn revoke_mandate(
    State(g): State<Gateway>,
    Path((merchant_id, id)): Path<(String, String)>,
    b: Body,
) -> Answer {
    Ok(json(&g.revoke_mandate(&merchant_id, &id, &b.bytes).await?))
}

/// `limit` from the query string (default 20).
fn limit(path: &str) -> Result<usize, ApiError> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let mut limit = 20;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", v)) => {
                limit = v
                    .parse()
                    .map_err(|_| ApiError::invalid("limit", "a whole number"))?;
            }
            _ => {
                return Err(ApiError::invalid(
                    "query",
                    format!("{pair:?}: only limit=N"),
                ));
            }
        }
    }
    Ok(limit)
}

/// The merchant's latest events, newest first, with their deliveries.
#[utoipa::path(
    get,
    path = "/v1/events",
    params(("limit" = Option<u32>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100)),
    responses((status = 200, description = "OK", body = Vec<EventView>), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn list_events(State(g): State<Gateway>, s: Signed) -> Answer {
    let limit = limit(&s.path)?;
    Ok(json(&g.events(&s.credentials, limit).await?))
}

/// An event and its delivery log.
#[utoipa::path(
    get,
    path = "/v1/events/{event_id}",
    params(("event_id" = String, Path, pattern = "^evt_[0-9a-f]{32}$")),
    responses((status = 200, description = "OK", body = EventView), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn get_event(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.event(&s.credentials, &id).await?))
}

/// Delivers an event again.
#[utoipa::path(
    post,
    path = "/v1/events/{event_id}/redeliver",
    params(("event_id" = String, Path, pattern = "^evt_[0-9a-f]{32}$")),
    responses((status = 200, description = "OK", body = EventView), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn redeliver(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.redeliver(&s.credentials, &id).await?))
}

/// The day's statement as JSON.
#[utoipa::path(
    get,
    path = "/v1/statements/{date}",
    params(("date" = String, Path, description = "YYYY-MM-DD, UTC", pattern = "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")),
    responses((status = 200, description = "OK", body = Statement), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn statement(State(g): State<Gateway>, Path(date): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.statement(&s.credentials, &date).await?))
}

/// The day's statement as CSV.
#[utoipa::path(
    get,
    path = "/v1/statements/{date}/csv",
    params(("date" = String, Path, description = "YYYY-MM-DD, UTC", pattern = "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")),
    responses((status = 200, description = "OK", body = String, content_type = "text/csv"), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn statement_csv(State(g): State<Gateway>, Path(date): Path<String>, s: Signed) -> Answer {
    let st = g.statement(&s.credentials, &date).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        st.csv(),
    )
        .into_response())
}

/// The day's statement compared with the ledger.
#[utoipa::path(
    get,
    path = "/v1/statements/{date}/reconciliation",
    params(("date" = String, Path, description = "YYYY-MM-DD, UTC", pattern = "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")),
    responses((status = 200, description = "OK", body = Reconciliation), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    security(("cbdc_signature" = [])),
    tag = "merchant gateway"
)]
async fn reconcile(State(g): State<Gateway>, Path(date): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.reconcile(&s.credentials, &date).await?))
}

/// The public key webhooks are signed with.
#[utoipa::path(
    get,
    path = "/v1/webhook-key",
    responses((status = 200, description = "OK", body = WebhookKey), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    tag = "merchant gateway"
)]
async fn webhook_key(State(g): State<Gateway>) -> Answer {
    Ok(json(&WebhookKey {
        algorithm: "ed25519".into(),
        public_key: hex::encode(g.webhook_key().as_bytes()),
    }))
}

/// The key that signs webhooks.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookKey {
    pub algorithm: String,
    /// 64 hex digits.
    pub public_key: String,
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    responses((status = 200, description = "OK", body = Object), (status = "4XX", description = "refused: the JSON error names the field", body = ErrorBody), (status = "5XX", description = "the gateway or a ledger is unavailable", body = ErrorBody)),
    tag = "merchant gateway"
)]
async fn openapi() -> Response {
    json(&crate::openapi::document())
}
