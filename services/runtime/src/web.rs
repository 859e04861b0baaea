//! Pages people open in a browser (the central bank's console, a merchant's checkout page):
//! the headers every such answer carries.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `body` as `content_type`, with `csp` as its Content-Security-Policy, and the headers a
/// private page needs: its address or contents must not leak through a referrer or a shared
/// cache, and it is never sniffed as another type.
pub fn private(content_type: &'static str, csp: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
