//! A transfer body as a wallet sends it: decoding must never panic, whatever decodes must
//! encode back to the same bytes (one body, one txid), and a decoded body signed by its
//! owner goes through the stateless checks a ledger runs (values, expiry, signatures).
#![no_main]

use std::sync::LazyLock;

use cbdc_core::transfer::{TransferBody, sign_body};
use cbdc_core::validate::check_stateless;
use cbdc_core::{Keypair, UnixSeconds};
use libfuzzer_sys::fuzz_target;

static SIGNER: LazyLock<Keypair> = LazyLock::new(|| Keypair::from_seed(&[7; 32]));

fuzz_target!(|data: &[u8]| {
    let Ok(body) = TransferBody::decode(data) else {
        return;
    };
    assert_eq!(body.encode(), data, "a body decodes from one encoding only");
    let Ok(transfer) = sign_body(data.to_vec(), &[&*SIGNER]) else {
        return;
    };
    assert_eq!(transfer.body(), &body);
    let _ = check_stateless(&transfer, UnixSeconds(1_700_000_000));
});
