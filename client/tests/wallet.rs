//! The client library against a real ledger on loopback: a wallet opened, paid into, paying
//! with transfers built by the ledger and built here, a batch with a bad row, a verified
//! receipt (and one that does not verify), and a kept checkpoint advanced only by
//! consistency proofs — with a forked log and a rewritten one caught.

use std::time::{Duration, Instant};

use cbdc_client::{Dial, Error, Ledger, trust};
use cbdc_core::audit::Checkpoint;
use cbdc_core::{Amount, Keypair, KycTier};
use cbdc_tests::{LedgerNet, NETWORK, yuan};

fn amount(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

async fn checkpoint_of(
    ledger: &mut Ledger,
    operator: &cbdc_core::PublicKey,
    size: u64,
) -> Checkpoint {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = ledger.checkpoint(operator).await
            && c.size >= size
        {
            return c;
        }
        assert!(Instant::now() < deadline, "no checkpoint of {size}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_pays_reads_and_verifies_through_the_library() {
    let mut net = LedgerNet::start_with(1, |c| c.checkpoint_interval_ms = 50).await;
    net.issue(yuan("10000")).await;
    let dial = Dial::new(format!("http://{}", net.running().grpc_addr), "bank-1");
    let mut ledger = Ledger::connect(&dial, net.ledger_id(), NETWORK)
        .await
        .unwrap();
    let operator = net.operator.public();

    let alice = Keypair::from_seed(&[0xa1; 32]);
    let bob = Keypair::from_seed(&[0xb0; 32]);
    let opened = ledger.open_wallet(&alice, "+8613800000101").await.unwrap();
    assert_eq!(opened.address, ledger.address(&alice.public()).to_string());
    ledger.open_wallet(&bob, "+8613800000102").await.unwrap();
    // One wallet per phone number: the refusal's reason, not its text.
    let again = ledger
        .open_wallet(&Keypair::from_seed(&[3; 32]), "+8613800000101")
        .await
        .unwrap_err();
    assert_eq!(again.reason(), Some("ALREADY_EXISTS"), "{again}");
    net.exchange_in(&alice.public(), "300.00", "x-1")
        .await
        .unwrap();
    net.exchange_in(&alice.public(), "200.00", "x-2")
        .await
        .unwrap();
    let w = ledger.wallet(&alice).await.unwrap();
    assert_eq!(w.address, opened.address);
    assert_eq!(w.balance, "500.00");
    // Coins a page at a time, every page read.
    let mut small_pages = ledger.clone().with_coin_page(1);
    let coins = small_pages.coins(&alice).await.unwrap();
    assert_eq!(coins.len(), 2);
    let history = ledger.history(&alice, "", 1).await.unwrap();
    assert_eq!(history.entries.len(), 1);
    assert_eq!(history.entries[0].amount, "300.00");
    let cursor = history.page.unwrap().next_cursor;
    let rest = ledger.history(&alice, &cursor, 10).await.unwrap();
    assert_eq!(rest.entries.len(), 1);
    assert_eq!(rest.entries[0].amount, "200.00");

    let bob_addr = ledger.address(&bob.public());
    let paid = ledger
        .pay(&alice, &[(bob_addr, amount("12.50"))], b"tea")
        .await
        .unwrap();
    assert_eq!(paid.committed.outputs.len(), 2);
    // Built here from the listed coins: the largest first, change back.
    let t = ledger
        .build_locally(&alice, &[(bob_addr, amount("350.00"))], b"rent")
        .await
        .unwrap();
    assert_eq!(t.body().inputs.len(), 2);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid_until = t.body().valid_until.0;
    assert!(
        (now_s + 590..=now_s + 610).contains(&valid_until),
        "{valid_until} vs {now_s}"
    );
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid_until = t.body().valid_until.0;
    assert!(
        (now_s + 590..=now_s + 610).contains(&valid_until),
        "{valid_until} vs {now_s}"
    );
    ledger.submit(&t).await.unwrap();
    assert_eq!(ledger.balance(&bob).await.unwrap().balance, "362.50");
    assert_eq!(ledger.balance(&alice).await.unwrap().balance, "137.50");
    let coins = ledger.coins(&alice).await.unwrap();
    assert_eq!(coins.len(), 1);
    assert_eq!(coins[0].output.value, amount("137.50"));

    // A batch: the same transfer again answers its first commit; a spent coin is refused
    // with its reason and the spender.
    let spent_again = ledger
        .build_locally(
            &bob,
            &[(ledger.address(&alice.public()), amount("1.00"))],
            b"",
        )
        .await
        .unwrap();
    let outcomes = ledger
        .submit_many(&[t.clone(), spent_again.clone()])
        .await
        .unwrap();
    assert!(outcomes[0].as_ref().unwrap().already_committed);
    assert!(outcomes[1].is_ok());
    let outcomes = ledger
        .submit_many(&[
            cbdc_core::TransferBuilder::new(spent_again.body().valid_until)
                .input(
                    spent_again.body().inputs[0].outpoint,
                    spent_again.body().inputs[0].value,
                )
                .output(
                    net.ledger_id(),
                    spent_again.body().inputs[0].value,
                    cbdc_core::Lock::Key(bob.public()),
                )
                .sign(&[&bob])
                .unwrap(),
        ])
        .await
        .unwrap();
    let refused = outcomes[0].as_ref().unwrap_err();
    assert_eq!(refused.reason, "INPUT_SPENT");
    assert_eq!(refused.metadata["spent_by"], spent_again.txid().to_string());
    // Over what the wallet holds: refused before anything is sent.
    let short = ledger
        .build_locally(&alice, &[(bob_addr, amount("1000.00"))], b"")
        .await
        .unwrap_err();
    assert!(matches!(short, Error::Invalid(_)), "{short}");

    // Status and the decoded view.
    let got = ledger.transfer(&alice, &t.txid()).await.unwrap();
    assert_eq!(
        got.status,
        cbdc_client::v1::TransferStatus::Committed as i32
    );
    assert_eq!(got.decoded.unwrap().memo, b"rent");

    // A receipt verifies against the operator's key, and not against another.
    let deadline = Instant::now() + Duration::from_secs(10);
    let receipt = loop {
        match ledger.receipt(&bob, &t.txid(), &operator).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(receipt.txid, t.txid());
    let stranger = Keypair::from_seed(&[9; 32]).public();
    let wrong = ledger
        .receipt(&bob, &t.txid(), &stranger)
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Verify(_)), "{wrong}");

    // The kept checkpoint advances only along one log.
    let dir = tempfile::tempdir().unwrap();
    let kept_file = dir.path().join("ledger-1.checkpoint");
    assert!(trust::load(&kept_file).unwrap().is_none());
    // A file that cannot be read is an error, not "nothing kept".
    assert!(trust::load(dir.path()).is_err());
    let first = checkpoint_of(&mut ledger, &operator, 1).await;
    trust::save(&kept_file, &first).unwrap();
    for i in 0..3 {
        ledger
            .pay(
                &alice,
                &[(bob_addr, amount("1.00"))],
                format!("{i}").as_bytes(),
            )
            .await
            .unwrap();
    }
    let later = checkpoint_of(&mut ledger, &operator, first.size + 3).await;
    let kept = trust::load(&kept_file).unwrap().unwrap();
    assert_eq!(kept, first);
    let advanced = trust::advance(&mut ledger, &operator, &kept, &later)
        .await
        .unwrap();
    assert_eq!(advanced, later);
    // Either order: the larger is kept.
    assert_eq!(
        trust::advance(&mut ledger, &operator, &later, &kept)
            .await
            .unwrap(),
        later
    );
    // A forked log: the operator's key signs another root at the same size.
    let mut forked = later;
    forked.root[0] ^= 1;
    let e = trust::advance(&mut ledger, &operator, &later, &forked)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("forked"), "{e}");
    // A rewritten history: a kept checkpoint whose root is not a prefix of today's log.
    let mut rewritten = first;
    rewritten.root[5] ^= 1;
    let e = trust::advance(&mut ledger, &operator, &rewritten, &later)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Verify(_)), "{e}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_unreachable_services_are_told_apart() {
    let mut net = LedgerNet::start(1).await;
    net.open_wallet(1, KycTier::Class2).await;
    let dial = Dial::new(format!("http://{}", net.running().grpc_addr), "bank-1");
    let mut ledger = Ledger::connect(&dial, net.ledger_id(), NETWORK)
        .await
        .unwrap();
    let nobody = Keypair::from_seed(&[0x77; 32]);
    let e = ledger.balance(&nobody).await.unwrap_err();
    let Error::Rpc(e) = e else { panic!("{e}") };
    assert_eq!(e.code, tonic::Code::NotFound);
    net.stop().await;
    let e = Ledger::connect(&dial, net.ledger_id(), NETWORK)
        .await
        .err()
        .expect("nothing listens");
    assert!(matches!(e, Error::Connect(_)), "{e}");
    let bad = Dial::new("https://127.0.0.1:1", "bank-1");
    let e = cbdc_client::connect(&bad, "bank ledger").await.unwrap_err();
    assert!(e.to_string().contains("CA certificate"), "{e}");
}
