//! The HTTP/JSON API: bodies JSON of at most [`BODY_MAX`] bytes, every error an HTTP status
//! with a JSON body naming the field. Merchant and bank requests are signed (see
//! [`crate::auth`]); the payer-facing ones (paying an order, revoking a mandate) carry the
//! payer's own signed transfer instead.
//!
//! - `POST /v1/merchants` — a bank onboards a merchant.
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

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::qr;

/// Largest request body, in bytes.
pub const BODY_MAX: usize = 16 * 1024;

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/merchants", post(onboard))
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
        .fallback(|| async { ApiError::not_found("path", "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Larger bodies are cut off by the limit below and answered 413 by `Body`.
        .layer(DefaultBodyLimit::max(BODY_MAX + 1))
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

async fn onboard(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.onboard(&s.credentials, &s.body).await?))
}

async fn create_order(State(g): State<Gateway>, s: Signed) -> Answer {
    let order = g.create_order(&s.credentials, &s.body).await?;
    Ok(json(&order.view(g.now())))
}

async fn get_order(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.get_order(&s.credentials, &otn).await?;
    Ok(json(&order.view(g.now())))
}

async fn close_order(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.close_order(&s.credentials, &otn).await?;
    Ok(json(&order.view(g.now())))
}

async fn qr_svg(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.get_order(&s.credentials, &otn).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        qr::svg(&order.payment_uri)?,
    )
        .into_response())
}

async fn qr_png(State(g): State<Gateway>, Path(otn): Path<String>, s: Signed) -> Answer {
    let order = g.get_order(&s.credentials, &otn).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/png")],
        qr::png(&order.payment_uri)?,
    )
        .into_response())
}

async fn pay_order(
    State(g): State<Gateway>,
    Path((merchant_id, otn)): Path<(String, String)>,
    b: Body,
) -> Answer {
    let order = g.pay_order(&merchant_id, &otn, &b.bytes).await?;
    Ok(json(&order.view(g.now())))
}

async fn refund(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.refund(&s.credentials, &s.body).await?))
}

async fn get_refund(State(g): State<Gateway>, Path(no): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.get_refund(&s.credentials, &no).await?))
}

async fn authorize_hold(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.authorize_hold(&s.credentials, &s.body).await?))
}

async fn get_hold(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.get_hold(&s.credentials, &id).await?))
}

async fn capture_hold(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(
        &g.settle_hold(&s.credentials, &id, &s.body, false).await?,
    ))
}

async fn release_hold(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(
        &g.settle_hold(&s.credentials, &id, &s.body, true).await?,
    ))
}

async fn create_mandate(State(g): State<Gateway>, s: Signed) -> Answer {
    Ok(json(&g.create_mandate(&s.credentials, &s.body).await?))
}

async fn get_mandate(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.get_mandate(&s.credentials, &id).await?))
}

async fn charge_mandate(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    let order = g.charge_mandate(&s.credentials, &id, &s.body).await?;
    Ok(json(&order.view(g.now())))
}

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

async fn list_events(State(g): State<Gateway>, s: Signed) -> Answer {
    let limit = limit(&s.path)?;
    Ok(json(&g.events(&s.credentials, limit).await?))
}

async fn get_event(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.event(&s.credentials, &id).await?))
}

async fn redeliver(State(g): State<Gateway>, Path(id): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.redeliver(&s.credentials, &id).await?))
}

async fn statement(State(g): State<Gateway>, Path(date): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.statement(&s.credentials, &date).await?))
}

async fn statement_csv(State(g): State<Gateway>, Path(date): Path<String>, s: Signed) -> Answer {
    let st = g.statement(&s.credentials, &date).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        st.csv(),
    )
        .into_response())
}

async fn reconcile(State(g): State<Gateway>, Path(date): Path<String>, s: Signed) -> Answer {
    Ok(json(&g.reconcile(&s.credentials, &date).await?))
}

async fn webhook_key(State(g): State<Gateway>) -> Answer {
    Ok(json(&serde_json::json!({
        "algorithm": "ed25519",
        "public_key": hex::encode(g.webhook_key().as_bytes()),
    })))
}
