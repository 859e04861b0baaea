//! The OpenAPI 3.1 document of the HTTP/JSON API, generated from the handlers' and types'
//! annotations (utoipa). Served at `GET /v1/openapi.json`; `docs/merchant-openapi.json` is a
//! copy a test keeps equal to it.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cbdc merchant gateway",
        description = "Orders and QR codes, ride holds with splits, refunds, mandates, signed webhooks and statements. Merchant and bank requests carry `Authorization: CBDC-ED25519 merchant_id=\"…\"|bank=\"…\",nonce=\"…\",timestamp=\"…\",signature=\"…\"`, an Ed25519 signature over `METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nBODY\\n`."
    ),
    paths(
        crate::http::onboard,
        crate::http::me,
        crate::http::create_order,
        crate::http::get_order,
        crate::http::close_order,
        crate::http::qr_svg,
        crate::http::qr_png,
        crate::http::pay_order,
        crate::http::refund,
        crate::http::get_refund,
        crate::http::authorize_hold,
        crate::http::get_hold,
        crate::http::capture_hold,
        crate::http::release_hold,
        crate::http::create_mandate,
        crate::http::get_mandate,
        crate::http::charge_mandate,
        crate::http::revoke_mandate,
        crate::http::list_events,
        crate::http::get_event,
        crate::http::redeliver,
        crate::http::statement,
        crate::http::statement_csv,
        crate::http::reconcile,
        crate::http::webhook_key,
        crate::http::openapi,
    ),
    modifiers(&Signature)
)]
struct ApiDoc;

struct Signature;

impl utoipa::Modify for Signature {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cbdc_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "CBDC-ED25519 merchant_id=\"…\" (or bank=\"N\"), nonce, timestamp (Unix seconds, within 300 s), signature (hex Ed25519 over METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nBODY\\n)",
            ))),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    /// The copy in `docs/` is the document the code generates (`CBDC_WRITE_OPENAPI=1` writes
    /// it).
    #[test]
    fn the_documented_openapi_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/merchant-openapi.json");
        let generated = serde_json::to_string_pretty(&super::document()).expect("json") + "\n";
        if std::env::var_os("CBDC_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("writes");
        }
        let documented = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            documented == generated,
            "docs/merchant-openapi.json is stale: CBDC_WRITE_OPENAPI=1 cargo test -p cbdc-merchant openapi"
        );
    }
}
