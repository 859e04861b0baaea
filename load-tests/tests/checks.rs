//! The load report's read-back check can fail: against a real ledger, a genuinely
//! acknowledged transfer is found, while a txid never committed and a committed transfer
//! claimed at another log position are each reported missing.

use std::sync::Arc;

use cbdc_core::{KycTier, Txid};
use cbdc_load::report::read_back;
use cbdc_tests::{LedgerNet, NETWORK, committed, yuan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_back_finds_what_committed_and_names_what_did_not() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, KycTier::Class2).await;
    net.exchange_in(&alice.public(), "10.00", "x")
        .await
        .unwrap();
    let paid = net
        .pay(&alice, &net.address(&bob.public()), "1.00")
        .await
        .unwrap();
    let txid = Txid(paid.txid.clone().try_into().unwrap());
    let position = committed(&paid).log_position.clone();

    let dial = cbdc_client::Dial::new(format!("http://{}", net.running().grpc_addr), "bank-1");
    let client = cbdc_client::Ledger::connect(&dial, net.ledger_id(), NETWORK)
        .await
        .unwrap();
    let authority = Arc::new(cbdc_core::Keypair::from_seed(net.authority.seed()));
    let mut moved = position.clone();
    moved[11] ^= 1;
    let got = read_back(
        &client,
        authority,
        NETWORK,
        net.ledger_id(),
        vec![
            (alice.public(), txid, position),
            // Acknowledged but never committed (a planted fault of the ledger's answer).
            (alice.public(), Txid([7; 32]), vec![0; 12]),
            // Committed, but not where it was acknowledged.
            (alice.public(), txid, moved),
        ],
    )
    .await
    .unwrap();
    assert_eq!(got.read, 3);
    assert_eq!(got.found, 1, "{got:?}");
    assert_eq!(got.missing.len(), 2, "{got:?}");
    net.stop().await;
}
