//! The HTTP/JSON API: every request signed (see [`crate::auth`]), bodies JSON of at most
//! [`BODY_MAX`] bytes, every error an HTTP status with a JSON body naming the field.
//!
//! - `POST /v1/merchants` — a bank onboards a merchant.
//! - `POST /v1/orders` — a merchant creates an order (idempotent by `out_trade_no`).
//! - `GET /v1/orders/{out_trade_no}` — reads it; `POST /v1/orders/{out_trade_no}/close`
//!   closes it.
//! - `GET /v1/orders/{out_trade_no}/qr.svg` and `/qr.png` — its payment QR code.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
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
        .fallback(|| async { ApiError::not_found("path", "no such endpoint") })
        // Larger bodies are cut off by the limit below and answered 413 by `signed`.
        .layer(DefaultBodyLimit::max(BODY_MAX + 1))
        .with_state(gateway)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(value).expect("serialisable"),
    )
        .into_response()
}

/// The request's credentials, checked: a JSON body (for a body-carrying request) within the
/// limit, a signature by the named signer over this method, path and body, within the replay
/// window. The nonce is checked with the request's effect.
async fn signed(
    gateway: &Gateway,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<auth::Credentials, ApiError> {
    if body.len() > BODY_MAX {
        return Err(ApiError::too_large(format!(
            "the body is larger than {BODY_MAX} bytes"
        )));
    }
    if *method == Method::POST && !body.is_empty() {
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
    let credentials = auth::parse(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    gateway
        .authenticate(&credentials, method.as_str(), path, body)
        .await?;
    Ok(credentials)
}

async fn onboard(
    State(gateway): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|_| ApiError::too_large(format!("the body is larger than {BODY_MAX} bytes")))?;
    let credentials = signed(&gateway, &method, &uri, &headers, &body).await?;
    let merchant = gateway.onboard(&credentials, &body).await?;
    Ok(json(StatusCode::OK, &merchant))
}

async fn create_order(
    State(gateway): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|_| ApiError::too_large(format!("the body is larger than {BODY_MAX} bytes")))?;
    let credentials = signed(&gateway, &method, &uri, &headers, &body).await?;
    let order = gateway.create_order(&credentials, &body).await?;
    Ok(json(StatusCode::OK, &order.view(gateway.now())))
}

async fn get_order(
    State(gateway): State<Gateway>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let credentials = signed(&gateway, &method, &uri, &headers, b"").await?;
    let order = gateway.get_order(&credentials, &out_trade_no).await?;
    Ok(json(StatusCode::OK, &order.view(gateway.now())))
}

async fn close_order(
    State(gateway): State<Gateway>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|_| ApiError::too_large(format!("the body is larger than {BODY_MAX} bytes")))?;
    let credentials = signed(&gateway, &method, &uri, &headers, &body).await?;
    let order = gateway.close_order(&credentials, &out_trade_no).await?;
    Ok(json(StatusCode::OK, &order.view(gateway.now())))
}

async fn qr_svg(
    State(gateway): State<Gateway>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let credentials = signed(&gateway, &method, &uri, &headers, b"").await?;
    let order = gateway.get_order(&credentials, &out_trade_no).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        qr::svg(&order.payment_uri)?,
    )
        .into_response())
}

async fn qr_png(
    State(gateway): State<Gateway>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let credentials = signed(&gateway, &method, &uri, &headers, b"").await?;
    let order = gateway.get_order(&credentials, &out_trade_no).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/png")],
        qr::png(&order.payment_uri)?,
    )
        .into_response())
}
