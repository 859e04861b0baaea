//! Cost per 1-input/2-output transfer of full stateless validation, single and batched, beside
//! raw Ed25519 single (`verify_strict`) and batch (`verify_batch`) verification measured in the
//! same run, and the cost of one bad signature in a chunk (bisected, against the strict
//! one-by-one fallback it replaced). Prints medians over repeated rounds and ratios.
//!
//! Run: `cargo bench -p cbdc-core --bench validation`

use std::hint::black_box;
use std::time::Instant;

use cbdc_core::validate::{check_stateless, check_stateless_batch};
use cbdc_core::{
    Amount, Keypair, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, Txid, UnixSeconds,
};
use ed25519_dalek::{Signature, VerifyingKey};

const BATCH: usize = 1024;
const ROUNDS: usize = 15;

fn transfers(n: usize) -> Vec<Transfer> {
    (0..n)
        .map(|i| {
            let payer = Keypair::from_seed(&[(i % 251) as u8 + 1; 32]);
            let payee = Keypair::from_seed(&[(i % 13) as u8 + 200; 32]);
            let mut txid = [0u8; 32];
            txid[..8].copy_from_slice(&(i as u64).to_be_bytes());
            TransferBuilder::new(UnixSeconds(2_000_000_000))
                .input(
                    OutPoint {
                        txid: Txid(txid),
                        index: 0,
                    },
                    Amount::from_fen(10_000),
                )
                .output(
                    LedgerId(1),
                    Amount::from_fen(3_000),
                    Lock::Key(payee.public()),
                )
                .output(
                    LedgerId(1),
                    Amount::from_fen(7_000),
                    Lock::Key(payer.public()),
                )
                .sign(&[&payer])
                .expect("valid")
        })
        .collect()
}

/// Median nanoseconds per item over `ROUNDS` rounds of `f` processing `items` items.
fn median_ns_per_item(items: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64 / items as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[ROUNDS / 2]
}

fn main() {
    let now = UnixSeconds(1_700_000_000);
    let ts = transfers(BATCH);
    let messages: Vec<[u8; 43]> = ts.iter().map(|t| t.txid().signing_message()).collect();
    let msg_refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let sigs: Vec<Signature> = ts
        .iter()
        .map(|t| Signature::from_bytes(&t.witnesses()[0].signature))
        .collect();
    let keys: Vec<VerifyingKey> = ts
        .iter()
        .map(|t| *t.witnesses()[0].verifying_key())
        .collect();

    let raw_single = median_ns_per_item(BATCH, || {
        for i in 0..BATCH {
            black_box(keys[i].verify_strict(msg_refs[i], &sigs[i])).expect("valid");
        }
    });
    let raw_batch = median_ns_per_item(BATCH, || {
        black_box(ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys)).expect("valid");
    });
    let full_single = median_ns_per_item(BATCH, || {
        for t in &ts {
            black_box(check_stateless(t, now)).expect("valid");
        }
    });
    let full_batch = median_ns_per_item(BATCH, || {
        let results = check_stateless_batch(&ts, now);
        assert!(results.iter().all(|r| r.is_ok()));
        black_box(results);
    });
    // One bad signature in the chunk: the bisection of today, against what was done before
    // (the cofactorless batch, then `verify_strict` for every transfer of the chunk).
    let mut one_bad = ts.clone();
    let victim = BATCH / 3;
    one_bad[victim] = Transfer::decode(
        ts[victim].body_bytes().to_vec(),
        ts[victim + 1].witnesses().to_vec(),
    )
    .expect("decodes");
    let bisected = median_ns_per_item(BATCH, || {
        let results = check_stateless_batch(&one_bad, now);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        black_box(results);
    });
    let mut bad_sigs = sigs.clone();
    bad_sigs[victim] = sigs[victim + 1];
    let before = median_ns_per_item(BATCH, || {
        if ed25519_dalek::verify_batch(&msg_refs, &bad_sigs, &keys).is_err() {
            let bad = (0..BATCH)
                .filter(|&i| keys[i].verify_strict(msg_refs[i], &bad_sigs[i]).is_err())
                .count();
            assert_eq!(bad, 1);
        }
    });
    let bodies: Vec<(Vec<u8>, Vec<cbdc_core::Witness>)> = ts
        .iter()
        .map(|t| (t.body_bytes().to_vec(), t.witnesses().to_vec()))
        .collect();
    let decode = median_ns_per_item(BATCH, || {
        for (b, w) in &bodies {
            black_box(Transfer::decode(b.clone(), w.clone())).expect("valid");
        }
    });

    let wire: Vec<([u8; 32], [u8; 64])> = ts
        .iter()
        .map(|t| (*t.witnesses()[0].key.as_bytes(), t.witnesses()[0].signature))
        .collect();
    let witness_keys = median_ns_per_item(BATCH, || {
        for (i, (k, s)) in wire.iter().enumerate() {
            black_box(cbdc_core::Witness::from_slices(i, k, s)).expect("valid");
        }
    });

    println!(
        "stateless validation of 1-input/2-output transfers, batch {BATCH}, median of {ROUNDS} rounds"
    );
    println!(
        "{:<44} {:>10} {:>14}",
        "", "µs/transfer", "transfers/s/core"
    );
    let row = |name: &str, ns: f64| println!("{name:<44} {:>10.2} {:>14.0}", ns / 1e3, 1e9 / ns);
    row("raw ed25519 verify_strict (single)", raw_single);
    row("raw ed25519 verify_batch", raw_batch);
    row("decode + txid (SHA-256)", decode);
    row("witness from wire (key decompression)", witness_keys);
    row("check_stateless (single)", full_single);
    row("check_stateless_batch", full_batch);
    row("check_stateless_batch, one bad (bisected)", bisected);
    row("before: dalek batch + strict each, one bad", before);
    println!(
        "per transfer arriving from the wire, batched: {:.2} µs (witness + decode + batch validation)",
        (witness_keys + decode + full_batch) / 1e3
    );
    println!(
        "batched validation / raw batch verify = {:.3} (goal ≤ 1.15); single validation / raw single = {:.3}",
        full_batch / raw_batch,
        full_single / raw_single
    );
    println!(
        "one bad signature in {BATCH}: bisected / all good = {:.2}; before / bisected = {:.2}",
        bisected / full_batch,
        before / bisected
    );
}
