//! Signed requests, after WeChat Pay v3 and Stripe: every request carries
//!
//! ```text
//! Authorization: CBDC-ED25519 merchant_id="m-1",nonce="…",timestamp="1764460800",signature="<128 hex>"
//! ```
//!
//! (or `bank="1"` instead of `merchant_id` for a bank onboarding a merchant), where the
//! signature is Ed25519 over
//!
//! ```text
//! METHOD\nPATH\nTIMESTAMP\nNONCE\nBODY\n
//! ```
//!
//! with the merchant's API key (or the bank's authority key). The timestamp must be within
//! [`REPLAY_WINDOW_S`] of the gateway's clock and the nonce unused by that signer within the
//! window; the gateway remembers nonces for the window, so a recorded request replayed later
//! is refused either as stale or as a reused nonce.

use cbdc_core::keys::CheckedKey;

use crate::error::ApiError;

/// How far a request's timestamp may be from the gateway's clock, in seconds.
pub const REPLAY_WINDOW_S: u64 = 300;
/// The scheme name in the `Authorization` header.
pub const SCHEME: &str = "CBDC-ED25519";
/// Longest nonce accepted.
pub const NONCE_MAX: usize = 64;

/// Who signed a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    Merchant(String),
    Bank(u32),
}

/// An `Authorization` header, parsed (not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub signer: Signer,
    pub nonce: String,
    pub timestamp: u64,
    pub signature: [u8; 64],
}

/// The bytes a request's signature covers.
pub fn message(method: &str, path: &str, timestamp: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{method}\n{path}\n{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The `Authorization` header value for a request signed by `key` as `signer`.
pub fn authorization(
    key: &cbdc_core::Keypair,
    signer: &Signer,
    method: &str,
    path: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    let signature = key.sign(&message(method, path, timestamp, nonce, body));
    let who = match signer {
        Signer::Merchant(id) => format!("merchant_id=\"{id}\""),
        Signer::Bank(id) => format!("bank=\"{id}\""),
    };
    format!(
        "{SCHEME} {who},nonce=\"{nonce}\",timestamp=\"{timestamp}\",signature=\"{}\"",
        hex::encode(signature)
    )
}

fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::unauthenticated("authorization", message)
}

/// Parses an `Authorization` header value.
pub fn parse(header: Option<&str>) -> Result<Credentials, ApiError> {
    let header = header.ok_or_else(|| unauthenticated("missing: sign the request"))?;
    let rest = header
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| unauthenticated(format!("the scheme must be {SCHEME}")))?;
    let (mut merchant, mut bank, mut nonce, mut timestamp, mut signature) =
        (None, None, None, None, None);
    for part in rest.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| unauthenticated(format!("{part:?}: expected name=\"value\"")))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| unauthenticated(format!("{name}: the value must be quoted")))?;
        let slot = match name {
            "merchant_id" => &mut merchant,
            "bank" => &mut bank,
            "nonce" => &mut nonce,
            "timestamp" => &mut timestamp,
            "signature" => &mut signature,
            other => return Err(unauthenticated(format!("{other}: unknown parameter"))),
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(unauthenticated(format!("{name}: given twice")));
        }
    }
    let signer = match (merchant, bank) {
        (Some(m), None) => Signer::Merchant(m),
        (None, Some(b)) => Signer::Bank(
            b.parse()
                .map_err(|_| unauthenticated("bank: a ledger id (a number)"))?,
        ),
        _ => return Err(unauthenticated("name exactly one of merchant_id and bank")),
    };
    let nonce = nonce.ok_or_else(|| unauthenticated("nonce: missing"))?;
    if nonce.is_empty()
        || nonce.len() > NONCE_MAX
        || !nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(unauthenticated(format!(
            "nonce: 1 to {NONCE_MAX} letters, digits, '-' or '_'"
        )));
    }
    let timestamp = timestamp
        .ok_or_else(|| unauthenticated("timestamp: missing"))?
        .parse()
        .map_err(|_| unauthenticated("timestamp: Unix seconds"))?;
    let signature: [u8; 64] = signature
        .as_deref()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| unauthenticated("signature: 128 hex digits"))?;
    Ok(Credentials {
        signer,
        nonce,
        timestamp,
        signature,
    })
}

/// Checks the timestamp against `now` and the signature against `key`; the nonce is checked
/// (and remembered) by the caller in the same transaction as the request's effect.
pub fn verify(
    credentials: &Credentials,
    key: &CheckedKey,
    method: &str,
    path: &str,
    body: &[u8],
    now: u64,
) -> Result<(), ApiError> {
    if credentials.timestamp.abs_diff(now) > REPLAY_WINDOW_S {
        return Err(unauthenticated(format!(
            "timestamp: {} is more than {REPLAY_WINDOW_S} s from the gateway's clock ({now})",
            credentials.timestamp
        )));
    }
    let message = message(
        method,
        path,
        credentials.timestamp,
        &credentials.nonce,
        body,
    );
    // The ledger's one Ed25519 rule: the key was checked once (valid, torsion-free) when
    // it was cached, so only the signature's own checks remain.
    if !cbdc_core::signature::verify(key, &message, &credentials.signature) {
        return Err(unauthenticated(
            "signature: does not verify for this request",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_header_parses_and_verifies_and_any_change_does_not() {
        let key = cbdc_core::Keypair::from_seed(&[4; 32]);
        let signer = Signer::Merchant("m-1".into());
        let h = authorization(&key, &signer, "POST", "/v1/orders", 1000, "n1", b"{}");
        let c = parse(Some(&h)).unwrap();
        assert_eq!(c.signer, signer);
        verify(&c, &key.checked_key(), "POST", "/v1/orders", b"{}", 1000).unwrap();
        // Another body, path, method, clock far off, or key: refused.
        assert!(verify(&c, &key.checked_key(), "POST", "/v1/orders", b"{ }", 1000).is_err());
        assert!(verify(&c, &key.checked_key(), "POST", "/v1/order", b"{}", 1000).is_err());
        assert!(verify(&c, &key.checked_key(), "GET", "/v1/orders", b"{}", 1000).is_err());
        assert!(verify(&c, &key.checked_key(), "POST", "/v1/orders", b"{}", 1301).is_err());
        assert!(verify(&c, &key.checked_key(), "POST", "/v1/orders", b"{}", 1300).is_ok());
        let other = cbdc_core::Keypair::from_seed(&[5; 32]).checked_key();
        assert!(verify(&c, &other, "POST", "/v1/orders", b"{}", 1000).is_err());
    }

    #[test]
    fn a_nonce_is_1_to_64_safe_characters() {
        let key = cbdc_core::Keypair::from_seed(&[4; 32]);
        let signer = Signer::Merchant("m-1".into());
        let header = |nonce: &str| authorization(&key, &signer, "GET", "/", 1, nonce, b"");
        assert!(parse(Some(&header(&"a".repeat(NONCE_MAX)))).is_ok());
        assert!(parse(Some(&header("a"))).is_ok());
        for bad in ["".to_string(), "a".repeat(NONCE_MAX + 1), "a/b".into()] {
            let e = parse(Some(&header(&bad))).unwrap_err();
            assert!(e.message.starts_with("nonce"), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn malformed_headers_are_named() {
        for (header, names) in [
            (None, "missing"),
            (Some("Bearer x"), "scheme"),
            (Some("CBDC-ED25519 merchant_id=m"), "quoted"),
            (
                Some("CBDC-ED25519 merchant_id=\"m\",bank=\"1\""),
                "exactly one",
            ),
            (
                Some("CBDC-ED25519 merchant_id=\"m\",nonce=\"a b\""),
                "nonce",
            ),
            (
                Some("CBDC-ED25519 merchant_id=\"m\",nonce=\"a\",timestamp=\"x\""),
                "timestamp",
            ),
            (
                Some("CBDC-ED25519 merchant_id=\"m\",nonce=\"a\",timestamp=\"1\",signature=\"00\""),
                "signature",
            ),
            (Some("CBDC-ED25519 who=\"m\""), "unknown"),
        ] {
            let e = parse(header).unwrap_err();
            assert!(e.message.contains(names), "{header:?}: {}", e.message);
            assert_eq!(e.field, "authorization");
        }
    }
}
