//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`) are made here, from the real
//! encoders, so that they stay valid as the formats change: this test fails when a committed
//! seed is not what the current code makes. `CBDC_WRITE_FUZZ_SEEDS=1` writes them afresh.

use std::path::{Path, PathBuf};

use cbdc_core::{
    Address, Amount, Keypair, LedgerId, Lock, OutPoint, TransferBuilder, Txid, UnixSeconds,
};
use cbdc_merchant::auth::{Signer, authorization};
use cbdc_merchant::payments::SignedTransferJson;
use prost::Message;

fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

/// Three transfers: to a key, under a hold, under a mandate (two inputs, three outputs).
fn transfers() -> Vec<cbdc_core::Transfer> {
    let (payer, payee) = (key(1), key(2));
    let until = UnixSeconds(1_700_003_600);
    let input = |n: u8| OutPoint {
        txid: Txid([n; 32]),
        index: u16::from(n),
    };
    let plain = TransferBuilder::new(until)
        .input(input(1), Amount::from_fen(10_000))
        .output(
            LedgerId(1),
            Amount::from_fen(2_500),
            Lock::Key(payee.public()),
        )
        .output(
            LedgerId(1),
            Amount::from_fen(7_500),
            Lock::Key(payer.public()),
        )
        .memo(b"order:shop-1:T-000001".to_vec())
        .sign(&[&payer])
        .unwrap();
    let hold = TransferBuilder::new(until)
        .input(input(2), Amount::from_fen(5_000))
        .output(
            LedgerId(2),
            Amount::from_fen(5_000),
            Lock::Hold {
                payer: payer.public(),
                payee: payee.public(),
                expires_at: UnixSeconds(1_700_007_200),
            },
        )
        .sign(&[&payer])
        .unwrap();
    let mandate = TransferBuilder::new(until)
        .input(input(3), Amount::from_fen(3_000))
        .input(input(4), Amount::from_fen(4_000))
        .output(
            LedgerId(1),
            Amount::from_fen(6_000),
            Lock::Mandate {
                owner: payer.public(),
                merchant: payee.public(),
                per_payment_max: Amount::from_fen(1_500),
                expires_at: UnixSeconds(1_800_000_000),
            },
        )
        .output(
            LedgerId(1),
            Amount::from_fen(500),
            Lock::Key(payer.public()),
        )
        .output(
            LedgerId(3),
            Amount::from_fen(500),
            Lock::Key(payee.public()),
        )
        .memo(b"mandate".to_vec())
        .sign(&[&payer])
        .unwrap();
    vec![plain, hold, mandate]
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let ts = transfers();
    for (i, t) in ts.iter().enumerate() {
        out.push((
            "transfer_body",
            format!("body-{i}"),
            t.body_bytes().to_vec(),
        ));
        out.push((
            "transfer_wire",
            format!("signed-{i}"),
            cbdc_proto::convert::to_signed_transfer(t).encode_to_vec(),
        ));
    }
    let address = Address::new(LedgerId(7), key(3).public()).to_string();
    for (i, text) in [
        "0.01",
        "123456789.99",
        "1",
        "0.10",
        "1e3",
        "1.234",
        "-1",
        " 2.50",
        &address,
    ]
    .iter()
    .enumerate()
    {
        out.push((
            "amount_address",
            format!("text-{i}"),
            text.as_bytes().to_vec(),
        ));
    }
    let payer = Address::new(LedgerId(1), key(1).public()).to_string();
    let transfer = serde_json::to_value(SignedTransferJson::of(&ts[0])).unwrap();
    let bodies = [
        serde_json::json!({"out_trade_no": "T-000001", "amount": "25.00", "description": "a book", "expires_in_s": 600}),
        serde_json::json!({"payer_address": payer, "transfer": transfer}),
        serde_json::json!({"out_refund_no": "R-000001", "out_trade_no": "T-000001", "amount": "5.00", "reason": "damaged"}),
        serde_json::json!({"hold_id": "ride-0001", "payer_address": payer, "transfer": transfer}),
        serde_json::json!({"splits": [{"to_address": address, "amount": "20.00"}]}),
        serde_json::json!({"mandate_id": "sub-0001", "owner_address": payer, "transfer": transfer}),
        serde_json::json!({"out_trade_no": "M-000001", "amount": "15.00", "description": "month 1"}),
    ];
    for (i, b) in bodies.iter().enumerate() {
        let body = serde_json::to_vec(b).unwrap();
        let header = authorization(
            &key(9),
            &Signer::Merchant("shop-1".into()),
            "POST",
            "/v1/orders",
            1_700_000_000,
            &format!("nonce-{i}"),
            &body,
        );
        let mut seed = header.into_bytes();
        seed.push(b'\n');
        seed.extend_from_slice(&body);
        out.push(("merchant_request", format!("request-{i}"), seed));
    }
    out
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn the_committed_fuzz_seeds_are_what_the_encoders_make() {
    let write = std::env::var_os("CBDC_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = corpus().join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (CBDC_WRITE_FUZZ_SEEDS=1 makes it)", path.display())
        });
        assert!(
            committed == bytes,
            "{}: not what the encoders make now (CBDC_WRITE_FUZZ_SEEDS=1 remakes it)",
            path.display()
        );
    }
    // Each kind decodes as its target expects.
    for t in transfers() {
        assert_eq!(
            cbdc_core::transfer::TransferBody::decode(t.body_bytes())
                .unwrap()
                .encode(),
            t.body_bytes()
        );
    }
}
