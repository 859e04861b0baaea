//! Amounts and addresses as people type them: parsing must never panic, and whatever parses
//! prints back to text that parses to the same value.
#![no_main]

use cbdc_core::{Address, Amount};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = Amount::parse(text) {
        assert_eq!(Amount::parse(&a.to_string()), Ok(a), "{text:?}");
    }
    let _ = Amount::parse_with_max(text, Amount::from_fen(1_000_000_00));
    let _ = cbdc_proto::convert::amount("amount", text, Amount::from_fen(1_000_000_00));
    if let Ok(a) = text.parse::<Address>() {
        assert_eq!(a.to_string().parse::<Address>().ok(), Some(a), "{text:?}");
    }
});
