//! A wallet's whole path through the client library, against a ledger this example starts
//! on loopback (with the test harness's central-bank key, so it can issue value to the
//! bank's vault): open two wallets, fund one, pay, list coins, read the payment decoded,
//! verify its receipt and keep the checkpoint.
//!
//! `cargo run -p cbdc-client --example wallet`

use cbdc_client::{Dial, Ledger, trust};
use cbdc_core::{Amount, Keypair};
use cbdc_tests::{LedgerNet, NETWORK, yuan};

#[tokio::main]
async fn main() -> Result<(), cbdc_client::Error> {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;

    let dial = Dial::new(format!("http://{}", net.running().grpc_addr), "bank-1");
    let mut bank = Ledger::connect(&dial, net.ledger_id(), NETWORK).await?;
    let alice = Keypair::from_seed(&[0xa1; 32]);
    let bob = Keypair::from_seed(&[0xb0; 32]);
    bank.open_wallet(&alice, "+8613800000001").await?;
    bank.open_wallet(&bob, "+8613800000002").await?;
    // The bank exchanges 100 yuan of Alice's deposits for e-CNY (an order of its authority).
    net.exchange_in(&alice.public(), "100.00", "deposit-1")
        .await
        .map_err(cbdc_client::Error::from)?;

    let to = bank.address(&bob.public());
    let paid = bank
        .pay(&alice, &[(to, Amount::parse("12.50").unwrap())], b"noodles")
        .await?;
    println!("paid 12.50 to {to}: txid {}", paid.txid);
    for coin in bank.coins(&alice).await? {
        println!("alice holds {} at {}", coin.output.value, coin.outpoint);
    }
    let view = bank
        .transfer(&bob, &paid.txid)
        .await?
        .decoded
        .unwrap_or_default();
    println!(
        "bob sees {} yuan in, memo {:?}",
        view.total,
        String::from_utf8_lossy(&view.memo)
    );

    // Wait for the audit log to cover the payment, then verify the receipt offline.
    let operator = net.operator.public();
    let receipt = loop {
        match bank.receipt(&bob, &paid.txid, &operator).await {
            Ok(r) => break r,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    println!(
        "receipt verified: leaf {} of a {}-leaf log",
        receipt.index, receipt.checkpoint.size
    );
    let kept = std::env::temp_dir().join("cbdc-example-ledger-1.checkpoint");
    trust::save(&kept, &receipt.checkpoint)?;
    println!("checkpoint kept in {}", kept.display());
    net.stop().await;
    Ok(())
}
