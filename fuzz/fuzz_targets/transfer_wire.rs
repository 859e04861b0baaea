//! A signed transfer as it arrives over gRPC: protobuf decoding, the conversion to the core
//! type (witness keys checked) and the stateless checks must never panic; what converts
//! converts back to the same transfer.
#![no_main]

use cbdc_core::UnixSeconds;
use cbdc_core::validate::check_stateless;
use cbdc_proto::convert::{signed_transfer, to_signed_transfer};
use cbdc_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = v1::SignedTransfer::decode(data) else {
        return;
    };
    let Ok(transfer) = signed_transfer("transfer", Some(&wire)) else {
        return;
    };
    let _ = check_stateless(&transfer, UnixSeconds(1_700_000_000));
    let again = signed_transfer("transfer", Some(&to_signed_transfer(&transfer)))
        .expect("a converted transfer converts again");
    assert_eq!(again.txid(), transfer.txid());
    assert_eq!(again.witnesses().len(), transfer.witnesses().len());
});
