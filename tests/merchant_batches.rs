//! The gateway's transfers go to a ledger in batches (`cbdc_merchant::ledgers`): many
//! submissions at once make fewer calls, each transfer still gets its own outcome (one with a
//! bad signature is refused alone), and a ledger that takes smaller batches than the gateway
//! sends still commits every transfer, one call each.

use cbdc_core::{Keypair, KycTier, Transfer};
use cbdc_tests::merchant::{GATEWAY_NAME, MerchantNet};
use cbdc_tests::network::Network;

/// Funds `n` wallets at bank 1 and has each sign a payment to the next: the transfers.
async fn signed_payments(net: &mut MerchantNet, n: usize) -> Vec<Transfer> {
    let bank = net.net.bank(1);
    bank.issue(cbdc_tests::yuan("1000.00")).await;
    let mut wallets: Vec<Keypair> = Vec::new();
    for i in 0..n {
        let k = bank.open_wallet(10 + i as u8, KycTier::Class2).await;
        let r = bank
            .pay(
                &Keypair::from_seed(bank.operator.seed()),
                &bank.address(&k.public()),
                "5.00",
            )
            .await
            .expect("funds");
        cbdc_tests::committed(&r);
        wallets.push(k);
    }
    let mut transfers = Vec::new();
    for (i, k) in wallets.iter().enumerate() {
        let to = bank.address(&wallets[(i + 1) % n].public());
        transfers.push(
            bank.build_signed(k, &[(&to, "1.00")])
                .await
                .expect("builds"),
        );
    }
    transfers
}

/// The gateway's own ledger clients (its certificate, from the test's CA).
fn ledgers(net: &MerchantNet) -> cbdc_merchant::ledgers::Ledgers {
    let tls = cbdc_runtime::tls::TlsConfig::in_dir(&net.dir.path().join("tls"), GATEWAY_NAME);
    let endpoints = net
        .net
        .banks
        .iter()
        .map(|b| {
            (
                b.ledger_id().0,
                format!("https://{}", b.running().grpc_addr),
            )
        })
        .collect();
    cbdc_merchant::ledgers::Ledgers::new(cbdc_tests::NETWORK, &endpoints, Some(&tls))
        .expect("ledgers")
}

/// Submits every transfer at once through `ledgers`; each one's outcome, in order.
async fn submit_all(
    ledgers: &cbdc_merchant::ledgers::Ledgers,
    transfers: &[Transfer],
) -> Vec<Result<cbdc_proto::v1::Committed, cbdc_client::Error>> {
    let tasks: Vec<_> = transfers
        .iter()
        .cloned()
        .map(|t| {
            let l = ledgers.clone();
            tokio::spawn(async move { l.submit(1, &t).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// `c` is `t`'s own commit: the ledger holds `t` at the position `c` names.
async fn assert_answers(net: &mut MerchantNet, t: &Transfer, c: &cbdc_proto::v1::Committed) {
    let held = net.net.bank(1).get_transfer(&t.txid().0).await;
    assert_eq!(held.log_position, c.log_position, "{}", t.txid());
}

fn calls(net: &mut MerchantNet) -> u64 {
    net.net
        .bank(1)
        .ledger()
        .metrics()
        .request_batch
        .get_sample_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_at_once_share_calls_and_each_gets_its_own_outcome() {
    let mut net = MerchantNet::start(1).await;
    let mut transfers = signed_payments(&mut net, 40).await;
    // One whose witness is another transfer's signature: it does not verify.
    let bad = {
        let t = &transfers[7];
        let mut witnesses = t.witnesses().to_vec();
        witnesses[0].signature = transfers[8].witnesses()[0].signature;
        Transfer::decode(t.body_bytes().to_vec(), witnesses).expect("decodes")
    };
    transfers[7] = bad;
    let ledgers = ledgers(&net);
    let before = calls(&mut net);
    let outcomes = submit_all(&ledgers, &transfers).await;
    let made = calls(&mut net) - before;
    assert!(
        made < transfers.len() as u64,
        "{made} calls for {} transfers",
        transfers.len()
    );
    for (i, o) in outcomes.iter().enumerate() {
        match (i, o) {
            (7, Err(cbdc_client::Error::Rpc(e))) => {
                assert!(!cbdc_client::transient(e.code), "refused for good: {e}");
                assert!(e.reason.contains("SIGNATURE"), "{e}");
            }
            (7, other) => panic!("the bad transfer: {other:?}"),
            (_, Ok(c)) => assert_answers(&mut net, &transfers[i], c).await,
            (_, Err(e)) => panic!("transfer {i}: {e}"),
        }
    }
    // Sent again, each answers its first commit (the bad one is refused again).
    let again = submit_all(&ledgers, &transfers).await;
    for (i, (a, b)) in outcomes.iter().zip(&again).enumerate() {
        if i != 7 {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert!(b.already_committed, "transfer {i}");
            assert_eq!(a.log_position, b.log_position, "transfer {i}");
        }
    }
    net.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_taking_smaller_batches_gets_each_transfer_on_its_own() {
    let small = Network::start_adjusted(1, |_, c| c.max_batch = 2).await;
    let mut net = MerchantNet::start_with(small, |_| {}).await;
    let transfers = signed_payments(&mut net, 24).await;
    let outcomes = submit_all(&ledgers(&net), &transfers).await;
    for (i, o) in outcomes.iter().enumerate() {
        let c = o.as_ref().unwrap_or_else(|e| panic!("transfer {i}: {e}"));
        assert_answers(&mut net, &transfers[i], c).await;
    }
    net.shutdown.trigger();
}
