//! What a merchant platform sends the gateway: the `Authorization` header (parsed, its
//! signature checked) and each JSON body, including the signed transfer a payer hands over.
//! Nothing may panic. The first line of the input is the header, the rest the body.
#![no_main]

use std::sync::LazyLock;

use cbdc_core::Keypair;
use cbdc_merchant::auth;
use cbdc_merchant::locks::{
    AuthorizeHold, CaptureHold, ChargeMandate, CreateMandate, RevokeMandate,
};
use cbdc_merchant::orders::CreateOrder;
use cbdc_merchant::payments::PayOrder;
use cbdc_merchant::refunds::RefundRequest;
use cbdc_proto::keycache::KeyCache;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<cbdc_core::keys::CheckedKey> =
    LazyLock::new(|| Keypair::from_seed(&[9; 32]).checked_key());
static KEYS: LazyLock<KeyCache> = LazyLock::new(KeyCache::default);

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let (header, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(h) = std::str::from_utf8(header)
        && let Ok(c) = auth::parse(Some(h))
    {
        let _ = auth::verify(&c, &KEY, "POST", "/v1/orders", rest, 1_700_000_000);
    }
    let _ = body::<CreateOrder>(rest);
    let _ = body::<RefundRequest>(rest);
    let _ = body::<AuthorizeHold>(rest);
    let _ = body::<CaptureHold>(rest);
    let _ = body::<CreateMandate>(rest);
    let _ = body::<ChargeMandate>(rest);
    let _ = body::<RevokeMandate>(rest);
    if let Some(p) = body::<PayOrder>(rest) {
        let _ = p.transfer.decode("transfer", &KEYS);
    }
});
