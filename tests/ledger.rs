//! The ledger service through a real gRPC client on 127.0.0.1: every RPC's happy path, the
//! operator vault, a concurrent double-spend race, a restart mid-stream, day boundaries,
//! watching a wallet, metrics, health and reflection.

use std::time::Duration;

use cbdc_core::messages::WalletAction;
use cbdc_core::transfer::sign_body;
use cbdc_core::{KycTier, Lock, TransferBuilder, Txid};
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_tests::{ANON, LedgerNet, committed, rejected, yuan};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_vault_payments_history_and_replay() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, ANON).await;

    // Opening again is idempotent.
    let again = net.open_wallet_key(&alice, KycTier::Class2).await.unwrap();
    assert_eq!(again.address, net.address(&alice.public()));
    assert_eq!(again.status, v1::WalletStatus::Active as i32);

    // Deposits exchanged into Alice's wallet through the vault, once per request id.
    let first = net
        .exchange_in(&alice.public(), "5000.00", "dep-1")
        .await
        .unwrap();
    let replay = net
        .exchange_in(&alice.public(), "5000.00", "dep-1")
        .await
        .unwrap();
    assert_eq!(first.txid, replay.txid);
    assert!(!committed(&first).already_committed);
    assert!(committed(&replay).already_committed);
    assert_eq!(net.balance(&alice.public()).await, "5000.00");

    // Alice pays Bob.
    let bob_addr = net.address(&bob.public());
    let paid = net.pay(&alice, &bob_addr, "123.45").await.unwrap();
    let c = committed(&paid).clone();
    assert_eq!(c.log_position.len(), 12);
    assert_eq!(net.balance(&alice.public()).await, "4876.55");
    assert_eq!(net.balance(&bob.public()).await, "123.45");

    // Resubmitting the same signed transfer returns the first result.
    let got = net.get_transfer(&paid.txid).await;
    assert_eq!(got.status, v1::TransferStatus::Committed as i32);
    assert_eq!(got.log_position, c.log_position);
    let stored = got.transfer.unwrap();
    let resubmit = net
        .client
        .submit_transfer(v1::SubmitTransferRequest {
            transfer: Some(stored.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(committed(&resubmit).already_committed);
    assert_eq!(committed(&resubmit).log_position, c.log_position);
    assert_eq!(net.balance(&bob.public()).await, "123.45");

    // ... even after it has expired.
    net.advance_clock(3_600_000);
    let late = net
        .client
        .submit_transfer(v1::SubmitTransferRequest {
            transfer: Some(stored),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(committed(&late).already_committed);

    // Unknown txid.
    let unknown = net.get_transfer(&[7; 32]).await;
    assert_eq!(unknown.status, v1::TransferStatus::Unknown as i32);

    // Wallet and balance views.
    let w = net
        .client
        .get_wallet(v1::GetWalletRequest {
            address: net.address(&alice.public()),
            auth: Some(net.read_auth(&alice, &net.address(&alice.public()))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.balance, "4876.55");
    assert_eq!(w.tier, v1::KycTier::Class2 as i32);
    let b = net
        .client
        .get_balance(v1::GetBalanceRequest {
            address: net.address(&alice.public()),
            auth: Some(net.read_auth(&alice, &net.address(&alice.public()))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.unspent_outputs, 1);

    // History with cursor pagination: several payments, pages of 2.
    for i in 0..4 {
        net.pay(&alice, &bob_addr, &format!("1.0{i}"))
            .await
            .unwrap();
    }
    let mut cursor = String::new();
    let mut seen = Vec::new();
    loop {
        let page = net
            .client
            .list_history(v1::ListHistoryRequest {
                address: net.address(&alice.public()),
                page: Some(v1::PageRequest {
                    page_size: 2,
                    cursor: cursor.clone(),
                }),
                auth: Some(net.read_auth(&alice, &net.address(&alice.public()))),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.iter().map(|e| match &e.tier_change {
            Some(c) => {
                assert!(e.txid.is_empty() && e.log_position.is_empty(), "{e:?}");
                assert_eq!(c.to, v1::KycTier::Class2 as i32);
                ("tier".to_string(), false)
            }
            None => (e.amount.clone(), e.incoming),
        }));
        cursor = page.page.unwrap().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    // The bank's upgrade of Alice to class 2 comes first, in order with her payments.
    let expected: Vec<(String, bool)> = [
        ("tier", false),
        ("5000.00", true),
        ("123.45", false),
        ("1.00", false),
        ("1.01", false),
        ("1.02", false),
        ("1.03", false),
    ]
    .iter()
    .map(|(a, i)| (a.to_string(), *i))
    .collect();
    assert_eq!(seen, expected);

    // Redeem: Bob pays the vault back and the bank credits his deposit account.
    let vault = net.address(&net.operator.public());
    let t = net.build_signed(&bob, &[(&vault, "100.00")]).await.unwrap();
    let address = net.address(&bob.public());
    let request = cbdc_proto::requests::exchange(
        &net.authority,
        net.header("red-1"),
        &address,
        "100.00",
        Some(&t),
    );
    let redeemed = net.client.exchange(request).await.unwrap().into_inner();
    committed(&redeemed);
    assert_eq!(net.balance(&bob.public()).await, "27.51");

    let totals = net.assert_conserved(yuan("1000000")).await;
    // issuance, exchange, 5 payments, redemption
    assert_eq!(totals.log_entries, 8);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_pays_once_even_when_raced() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let a = net.open_wallet(1, KycTier::Class1).await;
    let address = net.address(&a.public());
    let request =
        cbdc_proto::requests::exchange(&net.authority, net.header("same"), &address, "10.00", None);
    let calls = (0..8).map(|_| {
        let mut client = net.client.clone();
        let request = request.clone();
        async move { client.exchange(request).await.map(|r| r.into_inner()) }
    });
    let results = futures::future::join_all(calls).await;
    let txids: std::collections::BTreeSet<Vec<u8>> = results
        .iter()
        .map(|r| r.as_ref().expect("every attempt answers").txid.clone())
        .collect();
    assert_eq!(txids.len(), 1, "one request id, one transfer");
    let first = results
        .iter()
        .filter(|r| !committed(r.as_ref().unwrap()).already_committed)
        .count();
    assert_eq!(first, 1);
    assert_eq!(net.balance(&a.public()).await, "10.00");
    net.assert_conserved(yuan("1000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exchanges_from_one_vault_all_complete() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100000")).await;
    let mut wallets = Vec::new();
    for i in 0..64u8 {
        wallets.push(net.open_wallet(100 + i, KycTier::Class1).await);
    }
    // Warm up: the vault splits its change while it holds few coins.
    net.exchange_in(&wallets[0].public(), "1.00", "warm")
        .await
        .unwrap();
    let calls = wallets.iter().enumerate().map(|(i, w)| {
        let mut client = net.client.clone();
        let request = cbdc_proto::requests::exchange(
            &net.authority,
            net.header(&format!("dep-{i}")),
            &net.address(&w.public()),
            "50.00",
            None,
        );
        async move { client.exchange(request).await }
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(net.balance(&wallets[5].public()).await, "50.00");
    net.assert_conserved(yuan("100000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_report_each_transfer() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("10000")).await;
    let payer = net.open_wallet(1, KycTier::Class1).await;
    let payee = net.open_wallet(2, KycTier::Class1).await;
    net.exchange_in(&payer.public(), "100.00", "d")
        .await
        .unwrap();
    let good = net
        .build_signed(&payer, &[(&net.address(&payee.public()), "10.00")])
        .await
        .unwrap();
    // A second transfer spending the same coin: the batch commits one and refuses the other.
    let conflicting = sign_body(
        {
            let mut body = good.body().clone();
            body.memo = b"twin".to_vec();
            body.encode()
        },
        &[&payer],
    )
    .unwrap();
    let mut garbage = to_signed_transfer(&good);
    garbage.body = vec![1, 2, 3];
    let response = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![
                to_signed_transfer(&good),
                garbage,
                to_signed_transfer(&conflicting),
            ],
            return_outputs: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 3);
    // Asked for, the winner's row carries the outputs it created.
    let winner = response
        .results
        .iter()
        .find_map(|r| match &r.outcome {
            Some(v1::transfer_result::Outcome::Committed(c)) => Some((r, c)),
            _ => None,
        })
        .unwrap();
    assert!(!winner.1.outputs.is_empty());
    assert_eq!(
        winner.1.outputs[0].outpoint.as_ref().unwrap().txid,
        winner.0.txid
    );
    let outcomes: Vec<bool> = response
        .results
        .iter()
        .map(|r| matches!(r.outcome, Some(v1::transfer_result::Outcome::Committed(_))))
        .collect();
    assert_eq!(outcomes.iter().filter(|c| **c).count(), 1, "{response:?}");
    assert!(outcomes[0] ^ outcomes[2]);
    assert_eq!(rejected(&response.results[1]).code, "MALFORMED");
    let loser = if outcomes[0] { 2 } else { 0 };
    assert_eq!(rejected(&response.results[loser]).code, "INPUT_SPENT");
    assert_eq!(net.balance(&payee.public()).await, "10.00");
    net.assert_conserved(yuan("10000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_double_spends_exactly_one_wins() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("10000")).await;
    let payer = net.open_wallet(1, KycTier::Class1).await;
    net.exchange_in(&payer.public(), "50.00", "d")
        .await
        .unwrap();
    let mut payees = Vec::new();
    for i in 0..16u8 {
        payees.push(net.open_wallet(10 + i, KycTier::Class1).await);
    }
    // 16 different transfers, each spending the payer's one coin to a different payee.
    let base = net
        .build_signed(&payer, &[(&net.address(&payees[0].public()), "50.00")])
        .await
        .unwrap();
    let transfers: Vec<_> = payees
        .iter()
        .map(|p| {
            TransferBuilder::new(base.body().valid_until)
                .input(base.body().inputs[0].outpoint, base.body().inputs[0].value)
                .output(net.ledger_id(), yuan("50.00"), Lock::Key(p.public()))
                .sign(&[&payer])
                .unwrap()
        })
        .collect();
    let calls = transfers.iter().map(|t| {
        let mut client = net.client.clone();
        let wire = to_signed_transfer(t);
        async move {
            client
                .submit_transfer(v1::SubmitTransferRequest {
                    transfer: Some(wire),
                })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = Txid(
        winners[0]
            .as_ref()
            .unwrap()
            .get_ref()
            .txid
            .clone()
            .try_into()
            .unwrap(),
    );
    let outpoint = base.body().inputs[0].outpoint;
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), tonic::Code::FailedPrecondition, "{r:?}");
        assert!(r.message().starts_with("INPUT_SPENT"), "{}", r.message());
        assert!(
            r.message().contains(&outpoint.to_string()),
            "{}",
            r.message()
        );
        assert!(r.message().contains(&winner.to_string()), "{}", r.message());
    }
    net.assert_conserved(yuan("10000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transfer_submitted_concurrently_commits_once() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("10000")).await;
    let payer = net.open_wallet(1, KycTier::Class1).await;
    let payee = net.open_wallet(2, KycTier::Class1).await;
    net.exchange_in(&payer.public(), "50.00", "d")
        .await
        .unwrap();
    let t = net
        .build_signed(&payer, &[(&net.address(&payee.public()), "20.00")])
        .await
        .unwrap();
    let wire = to_signed_transfer(&t);
    // Eight single calls and two batches holding it twice each, all at once.
    let singles = (0..8).map(|_| {
        let mut client = net.client.clone();
        let wire = wire.clone();
        async move {
            let r = client
                .submit_transfer(v1::SubmitTransferRequest {
                    transfer: Some(wire),
                })
                .await
                .expect("commits");
            vec![r.into_inner()]
        }
    });
    let batches = (0..2).map(|_| {
        let mut client = net.client.clone();
        let wire = wire.clone();
        async move {
            client
                .submit_transfers(v1::SubmitTransfersRequest {
                    transfers: vec![wire.clone(), wire],
                    return_outputs: false,
                })
                .await
                .expect("answers")
                .into_inner()
                .results
        }
    });
    let (a, b) = futures::future::join(
        futures::future::join_all(singles),
        futures::future::join_all(batches),
    )
    .await;
    let results: Vec<v1::TransferResult> = a.into_iter().chain(b).flatten().collect();
    assert_eq!(results.len(), 12);
    let committed: Vec<&v1::Committed> = results
        .iter()
        .map(|r| match &r.outcome {
            Some(v1::transfer_result::Outcome::Committed(c)) => c,
            other => panic!("not committed: {other:?}"),
        })
        .collect();
    assert!(results.iter().all(|r| r.txid == t.txid().0.to_vec()));
    assert_eq!(committed.iter().filter(|c| !c.already_committed).count(), 1);
    assert!(
        committed
            .iter()
            .all(|c| c.log_position == committed[0].log_position)
    );
    assert_eq!(net.balance(&payee.public()).await, "20.00");
    assert_eq!(net.balance(&payer.public()).await, "30.00");
    net.assert_conserved(yuan("10000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_keeps_every_acknowledged_transfer() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100000")).await;
    let wallets: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..8u8 {
            v.push(net.open_wallet(20 + i, KycTier::Class1).await);
        }
        v
    };
    for (i, w) in wallets.iter().enumerate() {
        net.exchange_in(&w.public(), "1000.00", &format!("d{i}"))
            .await
            .unwrap();
    }
    // Each wallet streams payments to the next; the service restarts in the middle.
    let mut tasks = Vec::new();
    for (i, w) in wallets.iter().enumerate() {
        let mut client = net.client.clone();
        let from = cbdc_core::Keypair::from_seed(w.seed());
        let to = net.address(&wallets[(i + 1) % wallets.len()].public());
        let from_addr = net.address(&w.public());
        let auth = net.read_auth(&from, &from_addr);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for _ in 0..200 {
                let built = match client
                    .build_transfer(v1::BuildTransferRequest {
                        from_address: from_addr.clone(),
                        payments: vec![v1::Payment {
                            to_address: to.clone(),
                            amount: "0.01".into(),
                        }],
                        memo: Vec::new(),
                        valid_for_s: 0,
                        auth: Some(auth.clone()),
                    })
                    .await
                {
                    Ok(b) => b.into_inner(),
                    Err(_) => break,
                };
                let t = sign_body(built.body, &[&from]).unwrap();
                match client
                    .submit_transfer(v1::SubmitTransferRequest {
                        transfer: Some(to_signed_transfer(&t)),
                    })
                    .await
                {
                    Ok(_) => acked.push(t.txid()),
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => continue,
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    net.restart().await;
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        !acked.is_empty(),
        "some transfers were acknowledged before the restart"
    );
    for txid in &acked {
        let got = net.get_transfer(&txid.0).await;
        assert_eq!(got.status, v1::TransferStatus::Committed as i32, "{txid}");
    }
    net.assert_conserved(yuan("100000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_cap_resets_at_local_midnight_and_frozen_wallets_only_receive() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100000")).await;
    let anon = net.open_wallet(1, ANON).await;
    let shop = net.open_wallet(2, KycTier::Class1).await;
    let shop_addr = net.address(&shop.public());
    // Start the day at 00:30 China Standard Time (16:30 UTC).
    let now = net.clock_ms.load(std::sync::atomic::Ordering::SeqCst);
    let day = 86_400_000;
    let cst_midnight = (now + 8 * 3_600_000) / day * day + day - 8 * 3_600_000;
    net.clock_ms.store(
        cst_midnight + 30 * 60_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    net.exchange_in(&anon.public(), "9000.00", "d")
        .await
        .unwrap();
    for _ in 0..2 {
        net.pay(&anon, &shop_addr, "2000.00").await.unwrap();
    }
    net.pay(&anon, &shop_addr, "1000.00").await.unwrap();
    // 5,000 spent today: the next fen breaches the daily cap.
    let err = net.pay(&anon, &shop_addr, "0.01").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("daily outgoing cap of 5000.00"),
        "{}",
        err.message()
    );
    // After local midnight the cap is fresh.
    net.advance_clock(day);
    net.pay(&anon, &shop_addr, "0.01").await.unwrap();
    assert_eq!(net.balance(&anon.public()).await, "3999.99");

    // Frozen: cannot spend, can receive; unfrozen: spends again. Close needs zero balance.
    let freeze = net.wallet_action(&net.authority, WalletAction::Freeze, &anon.public(), "f1");
    let w = net.client.freeze_wallet(freeze).await.unwrap().into_inner();
    assert_eq!(w.status, v1::WalletStatus::Frozen as i32);
    let err = net.pay(&anon, &shop_addr, "1.00").await.unwrap_err();
    assert!(
        err.message().starts_with("WALLET_FROZEN"),
        "{}",
        err.message()
    );
    net.pay(&shop, &net.address(&anon.public()), "1.00")
        .await
        .unwrap();
    let unfreeze = net.wallet_action(&net.authority, WalletAction::Unfreeze, &anon.public(), "f2");
    net.client.unfreeze_wallet(unfreeze).await.unwrap();
    let close = net.wallet_action(&net.authority, WalletAction::Close, &anon.public(), "c1");
    let err = net.client.close_wallet(close.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("zero balance"), "{}", err.message());
    net.pay(&anon, &shop_addr, "2000.00").await.unwrap();
    net.pay(&anon, &shop_addr, "2000.00").await.unwrap();
    net.pay(&anon, &shop_addr, "0.99").await.unwrap();
    let w = net.client.close_wallet(close).await.unwrap().into_inner();
    assert_eq!(w.status, v1::WalletStatus::Closed as i32);
    let err = net
        .pay(&shop, &net.address(&anon.public()), "1.00")
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("WALLET_CLOSED"),
        "{}",
        err.message()
    );
    net.assert_conserved(yuan("100000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_live_and_resumes_from_a_cursor() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("10000")).await;
    let a = net.open_wallet(1, KycTier::Class1).await;
    let b = net.open_wallet(2, KycTier::Class1).await;
    net.exchange_in(&a.public(), "100.00", "d").await.unwrap();
    let b_addr = net.address(&b.public());
    let mut stream = net
        .client
        .watch_wallet(v1::WatchWalletRequest {
            address: b_addr.clone(),
            cursor: String::new(),
            auth: Some(net.read_auth(&b, &b_addr)),
        })
        .await
        .unwrap()
        .into_inner();
    for amount in ["1.00", "2.00", "3.00"] {
        net.pay(&a, &b_addr, amount).await.unwrap();
    }
    let mut live = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("entry arrives")
            .unwrap()
            .unwrap();
        assert!(e.incoming);
        live.push(e);
    }
    assert_eq!(
        live.iter().map(|e| e.amount.as_str()).collect::<Vec<_>>(),
        ["1.00", "2.00", "3.00"]
    );
    // A tier change by the bank arrives live too.
    let r = net.tier_request(&net.authority, &b_addr, KycTier::Class2, "down-to-2");
    net.client.set_wallet_tier(r).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the tier change arrives")
        .unwrap()
        .unwrap();
    let change = e.tier_change.expect("a tier change entry");
    assert_eq!(
        (change.from, change.to),
        (v1::KycTier::Class1 as i32, v1::KycTier::Class2 as i32)
    );
    drop(stream);
    // Resume after the first entry: the other two come from the store, then new ones live.
    let mut resumed = net
        .client
        .watch_wallet(v1::WatchWalletRequest {
            address: b_addr.clone(),
            cursor: live[0].cursor.clone(),
            auth: Some(net.read_auth(&b, &b_addr)),
        })
        .await
        .unwrap()
        .into_inner();
    net.pay(&a, &b_addr, "4.00").await.unwrap();
    let mut amounts = Vec::new();
    for _ in 0..4 {
        let e = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .expect("entry arrives")
            .unwrap()
            .unwrap();
        amounts.push(e.amount);
    }
    assert_eq!(
        amounts,
        ["2.00", "3.00", "0.00", "4.00"],
        "the tier change in order"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_reflection_are_served() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100")).await;
    let a = net.open_wallet(1, KycTier::Class1).await;
    net.exchange_in(&a.public(), "10.00", "d").await.unwrap();
    let err = net
        .pay(&a, &net.address(&a.public()), "20.00")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let t = net
        .build_signed(&a, &[(&net.address(&net.operator.public()), "1.00")])
        .await
        .unwrap();
    net.submit(&t).await.unwrap();
    let mut bad = to_signed_transfer(&t);
    bad.witnesses[0].signature[0] ^= 1;
    let _ = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![bad],
            return_outputs: false,
        })
        .await
        .unwrap();

    // Prometheus text over plain HTTP.
    let addr = net.running().metrics_addr;
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    // Issuance, the exchange and one payment.
    assert!(
        body.contains("cbdc_ledger_transfers_committed_total{ledger=\"1\"} 3"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("cbdc_ledger_transfers_rejected_total")
                && l.contains("reason=\"BAD_SIGNATURE\"")
                && l.ends_with(" 1")),
        "{body}"
    );
    assert!(
        body.contains("cbdc_ledger_submit_latency_seconds_bucket"),
        "{body}"
    );
    assert!(
        body.contains("cbdc_ledger_verify_batch_size_count"),
        "{body}"
    );
    assert!(body.contains("cbdc_ledger_store_retries_total"), "{body}");

    // Health.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", net.running().grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cbdc.v1.LedgerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection lists the ledger service.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let first = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"cbdc.v1.LedgerService"), "{names:?}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_ledger_outputs_wait_in_the_outbox() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100")).await;
    let a = net.open_wallet(1, KycTier::Class1).await;
    net.exchange_in(&a.public(), "10.00", "d").await.unwrap();
    let elsewhere = cbdc_core::Address::new(
        cbdc_core::LedgerId(2),
        cbdc_core::Keypair::from_seed(&[9; 32]).public(),
    );
    let r = net.pay(&a, &elsewhere.to_string(), "4.00").await.unwrap();
    let got = net.get_transfer(&r.txid).await;
    assert_eq!(got.status, v1::TransferStatus::Settling as i32);
    // 4.00 left this ledger: it is in flight, no longer unspent here.
    let totals = net.ledger().totals().await.unwrap();
    assert_eq!(totals.unspent, yuan("96.00"));
    assert_eq!(totals.balances, yuan("96.00"));
    net.stop().await;
}

/// The audit log over more leaves than a few: every transfer's receipt verifies offline at
/// every leaf position of a tree that is not a power of two, and a checkpoint taken midway is
/// consistent with the final one (the stored subtree hashes are found wherever a proof needs
/// them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receipt_verifies_and_checkpoints_stay_consistent() {
    use cbdc_core::audit::verify_receipt;
    use cbdc_core::merkle::verify_consistency;

    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, KycTier::Class2).await;
    net.exchange_in(&alice.public(), "1000.00", "d")
        .await
        .unwrap();
    let bob_addr = net.address(&bob.public());
    let mut txids = Vec::new();
    let mut midway = None;
    for i in 0..37 {
        let paid = net.pay(&alice, &bob_addr, "1.00").await.unwrap();
        committed(&paid);
        txids.push(Txid(paid.txid.as_slice().try_into().unwrap()));
        if i == 12 {
            net.ledger().sequence_all().await.unwrap();
            midway = net.ledger().checkpoint().await.unwrap();
        }
    }
    let ledger = net.ledger().clone();
    ledger.sequence_all().await.unwrap();
    let last = ledger.checkpoint().await.unwrap().expect("a checkpoint");
    let operator = ledger.operator_key();
    for txid in &txids {
        let receipt = ledger.receipt(txid).await.unwrap();
        assert_eq!(
            receipt.transfer.as_ref().expect("the payer's view").txid(),
            *txid
        );
        verify_receipt(&receipt, ledger.id(), &operator).expect("verifies offline");
    }
    let midway = midway.expect("a midway checkpoint").checkpoint;
    let (old, new) = (midway.size, last.checkpoint.size);
    assert!(old < new && new >= 37, "{old} {new}");
    for (from, to, from_root, to_root) in [
        (old, new, midway.root, last.checkpoint.root),
        (new, new, last.checkpoint.root, last.checkpoint.root),
    ] {
        let proof = ledger.consistency(from, to).await.unwrap();
        verify_consistency(from, to, &proof, &from_root, &to_root).expect("consistent");
    }
    net.stop().await;
}

/// The commit log keeps one entry per store transaction and the audit tree one key per chunk
/// of leaves: transfers committed together take consecutive leaves in their order, and
/// receipts and consistency proofs hold across commits and across chunk boundaries.
#[tokio::test]
async fn grouped_commits_take_consecutive_leaves_across_tree_chunks() {
    use cbdc_core::audit::verify_receipt;
    use cbdc_core::merkle::verify_consistency;
    use cbdc_core::{OutPoint, UnixSeconds};
    use cbdc_ledger::audit::SEQUENCE_LEAVES_MAX;
    use cbdc_ledger::layout::NODE_CHUNK_LEAVES;
    use sha2::Digest;

    // The test sequences by hand: the service's own sequencer steps once at start, then
    // waits an hour.
    let mut net = LedgerNet::start_with(1, |c| c.sequencer_interval_ms = 3_600_000).await;
    let ledger = net.ledger().clone();
    let vault = ledger.operator_key();
    let amount = yuan("1.00");
    let mut txids = Vec::new();
    let mut checkpoints = Vec::new();
    // Deliveries in batches (one store transaction each), sequenced after some of them, so
    // that chunks and commits start and end at different leaves; the last sequencing has
    // more leaves than one sequencer step takes.
    let batches = [5usize, 700, 1, 400, 300, 1024, 1024, 1024, 1000, 7];
    for (b, &n) in batches.iter().enumerate() {
        let settlements = (0..n)
            .map(|i| {
                let source = OutPoint {
                    txid: Txid(sha2::Sha256::digest(format!("reserve-{b}-{i}")).into()),
                    index: 0,
                };
                let t = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
                    .input(source, amount)
                    .output(net.ledger_id(), amount, Lock::Key(vault))
                    .sign(&[&net.central_bank])
                    .expect("signs");
                txids.push(t.txid());
                net.settlement(&t, amount, &net.central_bank)
            })
            .collect();
        let results = net
            .client
            .clone()
            .deliver_inbound_batch(v1::DeliverInboundBatchRequest { settlements })
            .await
            .expect("delivered")
            .into_inner()
            .results;
        assert_eq!(results.len(), n);
        if b == 1 || b == 3 {
            ledger.sequence_all().await.unwrap();
            checkpoints.push(ledger.checkpoint().await.unwrap().expect("a checkpoint"));
        }
    }
    let step = ledger.sequence().await.unwrap();
    assert!(
        !step.caught_up,
        "one step stops after {SEQUENCE_LEAVES_MAX} leaves"
    );
    assert!(step.appended >= SEQUENCE_LEAVES_MAX);
    ledger.sequence_all().await.unwrap();
    let last = ledger.checkpoint().await.unwrap().expect("a checkpoint");
    let total = txids.len() as u64;
    assert!(total > NODE_CHUNK_LEAVES + 1);
    assert_eq!(last.checkpoint.size, total);
    assert_eq!(ledger.totals().await.unwrap().log_entries, total);
    // Delivered in order, one batch per commit: the leaves are the delivery order.
    for (i, txid) in txids.iter().enumerate() {
        let receipt = ledger.receipt(txid).await.unwrap();
        assert_eq!(receipt.index, i as u64, "leaf of delivery {i}");
        verify_receipt(&receipt, ledger.id(), &vault).expect("verifies offline");
    }
    checkpoints.push(last);
    for old in &checkpoints {
        for new in &checkpoints {
            let (o, n) = (old.checkpoint.size, new.checkpoint.size);
            if o <= n {
                let proof = ledger.consistency(o, n).await.unwrap();
                verify_consistency(o, n, &proof, &old.checkpoint.root, &new.checkpoint.root)
                    .expect("consistent");
            }
        }
    }
    net.stop().await;
}
