//! Latency of every unary read through the client library, on loopback: a ledger in this
//! process (embedded store, fsync on), one connection, calls one after another, each with
//! its read grant signed (and a receipt or checkpoint verified) as a wallet would. Prints
//! p50, p99 and max over `CBDC_BENCH_CALLS` calls (default 1,000) after 100 warm-up calls.
//!
//! `cargo bench -p cbdc-client --bench reads`

use std::time::{Duration, Instant};

use cbdc_client::{Dial, Ledger};
use cbdc_core::{Amount, KycTier, Txid};
use cbdc_tests::{LedgerNet, NETWORK, yuan};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn time<F, Fut, T>(name: &str, calls: usize, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, cbdc_client::Error>>,
{
    for _ in 0..100 {
        call().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<22} p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   ({calls} calls)",
        ms(percentile(&took, 0.50)),
        ms(percentile(&took, 0.99)),
        ms(*took.last().unwrap()),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let calls: usize = std::env::var("CBDC_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000000")).await;
    let alice = net.open_wallet(1, KycTier::Class1).await;
    let bob = net.open_wallet(2, KycTier::Class1).await;
    for i in 0..40 {
        net.exchange_in(&alice.public(), "100.00", &format!("x-{i}"))
            .await
            .unwrap();
    }
    let dial = Dial::new(format!("http://{}", net.running().grpc_addr), "bank-1");
    let mut ledger = Ledger::connect(&dial, net.ledger_id(), NETWORK)
        .await
        .unwrap();
    let bob_addr = ledger.address(&bob.public());
    let mut last = Txid([0; 32]);
    for _ in 0..20 {
        last = ledger
            .pay(&alice, &[(bob_addr, Amount::parse("1.00").unwrap())], b"")
            .await
            .unwrap()
            .txid;
    }
    let operator = net.operator.public();
    // The receipt needs a checkpoint that covers the last payment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger.receipt(&alice, &last, &operator).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint covers the payments"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let size = ledger.checkpoint(&operator).await.unwrap().size;
    println!(
        "read latency on loopback, one connection, sequential calls (machine shared; medians vary run to run)"
    );
    let l = &ledger;
    let a = &alice;
    let operator = &operator;
    time("GetWallet", calls, move || {
        let mut l = l.clone();
        async move { l.wallet(a).await }
    })
    .await;
    time("GetBalance", calls, move || {
        let mut l = l.clone();
        async move { l.balance(a).await }
    })
    .await;
    time("ListHistory (20)", calls, move || {
        let mut l = l.clone();
        async move { l.history(a, "", 20).await }
    })
    .await;
    time("ListCoins (all)", calls, move || {
        let mut l = l.clone();
        async move { l.coins(a).await }
    })
    .await;
    time("GetTransfer", calls, move || {
        let mut l = l.clone();
        async move { l.transfer(a, &last).await }
    })
    .await;
    time("GetReceipt (verified)", calls, move || {
        let mut l = l.clone();
        async move { l.receipt(a, &last, operator).await }
    })
    .await;
    time("GetCheckpoint (verified)", calls, move || {
        let mut l = l.clone();
        async move { l.checkpoint(operator).await }
    })
    .await;
    time("GetConsistencyProof", calls, move || {
        let mut l = l.clone();
        async move { l.consistency(size / 2, size, operator).await }
    })
    .await;
    time("BuildTransfer", calls, move || {
        let mut l = l.clone();
        async move {
            l.build(a, &[(bob_addr, Amount::parse("1.00").unwrap())], b"")
                .await
        }
    })
    .await;
    net.stop().await;
}
