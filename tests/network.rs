//! The two tiers end to end through real gRPC on loopback: the central bank (`cbdc-issuance`)
//! and two bank ledgers, each with its own durable store. Mint → distribute to wallets →
//! cross-ledger payment → redemption, with the audit balanced at every step; receipts
//! verified offline; and hostile inputs to the central bank refused with nothing changed.

use cbdc_core::audit::{Checkpoint, verify_receipt};
use cbdc_core::messages::{BankRequest, Countersignature, OperatorStatus, Signed};
use cbdc_core::{Amount, Keypair, KycTier, LedgerId, PublicKey, Txid};
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_tests::network::Network;
use cbdc_tests::{committed, yuan};
use tonic::Code;

fn txid_of(r: &v1::TransferResult) -> Txid {
    Txid(r.txid.as_slice().try_into().expect("32 bytes"))
}

async fn status_of(net: &mut Network, bank: u32, txid: &Txid) -> v1::TransferStatus {
    let r = net.bank(bank).get_transfer(&txid.0).await;
    v1::TransferStatus::try_from(r.status).expect("status")
}

fn ledger_audit(a: &v1::AuditResponse, id: u32) -> &v1::LedgerAudit {
    a.ledgers
        .iter()
        .find(|l| l.ledger_id == id)
        .expect("ledger in audit")
}

async fn redeem(
    net: &mut Network,
    bank: u32,
    amount: &str,
    request_id: &str,
) -> v1::TransferResult {
    let b = net.bank(bank);
    let request = cbdc_proto::requests::redeem(&b.authority, b.header(request_id), amount);
    b.client.redeem(request).await.expect("redeem").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_distribute_pay_across_banks_redeem_and_verify_a_receipt_with_the_audit_balanced() {
    let mut net = Network::start(2).await;

    // Mint to both banks; the audit balances once the deliveries land.
    let m1 = net.mint(1, "1000.00", "mint-1").await.expect("mints");
    assert_eq!(m1.outstanding, "1000.00");
    assert!(!m1.already_minted);
    net.mint(2, "500.00", "mint-2").await.expect("mints");
    let a = net.quiesce().await;
    assert_eq!(
        (a.issued.as_str(), a.outstanding.as_str()),
        ("1500.00", "1500.00")
    );
    assert!(a.balanced, "{a:#?}");
    let vault1 = net.bank(1).operator.public();
    assert_eq!(net.bank(1).balance(&vault1).await, "1000.00");
    // A repeated mint request issues nothing more.
    let again = net.mint(1, "1000.00", "mint-1").await.expect("answers");
    assert!(again.already_minted);
    assert_eq!(again.transfer, m1.transfer);
    assert_eq!(net.audit().await.issued, "1500.00");

    // Distribute to wallets.
    let alice = net.bank(1).open_wallet(0xa1, KycTier::Class2).await;
    let bob = net.bank(2).open_wallet(0xb0, KycTier::Class2).await;
    net.bank(1)
        .exchange_in(&alice.public(), "300.00", "x-alice")
        .await
        .expect("exchange");
    net.bank(2)
        .exchange_in(&bob.public(), "100.00", "x-bob")
        .await
        .expect("exchange");
    let a = net.quiesce().await;
    assert!(a.balanced);

    // Alice (bank 1) pays Bob (bank 2).
    let bob_addr = net.bank(2).address(&bob.public());
    let paid = net
        .bank(1)
        .pay(&alice, &bob_addr, "120.00")
        .await
        .expect("pays");
    let txid = txid_of(committed_result(&paid));
    let a = net.quiesce().await;
    assert!(a.balanced, "{a:#?}");
    assert_eq!(net.bank(1).balance(&alice.public()).await, "180.00");
    assert_eq!(net.bank(2).balance(&bob.public()).await, "220.00");
    assert_eq!(
        status_of(&mut net, 1, &txid).await,
        v1::TransferStatus::Settled
    );
    assert_eq!(ledger_audit(&a, 1).outstanding_books, "880.00");
    assert_eq!(ledger_audit(&a, 2).outstanding_books, "620.00");
    assert_eq!(ledger_audit(&a, 1).outstanding_reported, "880.00");

    // Bank 2 redeems 200 from its vault.
    let r = redeem(&mut net, 2, "200.00", "redeem-1").await;
    committed_result(&r);
    let again = redeem(&mut net, 2, "200.00", "redeem-1").await;
    assert_eq!(again.txid, r.txid, "once per request id");
    let a = net.quiesce().await;
    assert!(a.balanced, "{a:#?}");
    assert_eq!(
        (
            a.issued.as_str(),
            a.redeemed.as_str(),
            a.outstanding.as_str()
        ),
        ("1500.00", "200.00", "1300.00")
    );
    assert_eq!(ledger_audit(&a, 2).outstanding_books, "420.00");
    let vault2 = net.bank(2).operator.public();
    assert_eq!(net.bank(2).balance(&vault2).await, "200.00");

    // Both ledgers' own scans agree with the central bank's books.
    assert_eq!(net.assert_ledgers_conserve().await, yuan("1300.00"));

    // A receipt for the cross-ledger payment verifies offline with the operator's key from
    // the registry; tampered receipts do not.
    let alice_addr = net.bank(1).address(&alice.public());
    let auth = net.bank(1).read_auth(&alice, &alice_addr);
    let receipt = net
        .bank(1)
        .client
        .get_receipt(v1::GetReceiptRequest {
            txid: txid.0.to_vec(),
            address: alice_addr,
            auth: Some(auth),
        })
        .await
        .expect("receipt")
        .into_inner();
    let ops = net
        .cb
        .list_operators(v1::ListOperatorsRequest { page: None })
        .await
        .expect("operators")
        .into_inner()
        .operators;
    let key1 = PublicKey::from_bytes(ops[0].operator_public_key.as_slice().try_into().unwrap());
    let key2 = PublicKey::from_bytes(ops[1].operator_public_key.as_slice().try_into().unwrap());
    let decoded = convert::receipt(&receipt).expect("decodes");
    assert_eq!(
        decoded.transfer.as_ref().expect("the payer's view").txid(),
        txid
    );
    verify_receipt(&decoded, LedgerId(1), &key1).expect("verifies offline");
    assert!(
        verify_receipt(&decoded, LedgerId(1), &key2).is_err(),
        "another bank's key"
    );
    let mut bad = decoded.clone();
    bad.index ^= 1;
    assert!(
        verify_receipt(&bad, LedgerId(1), &key1).is_err(),
        "wrong index"
    );
    let mut bad = decoded.clone();
    bad.position[11] ^= 1;
    assert!(
        verify_receipt(&bad, LedgerId(1), &key1).is_err(),
        "wrong position"
    );
    let mut bad = decoded.clone();
    bad.checkpoint.size += 1;
    assert!(
        verify_receipt(&bad, LedgerId(1), &key1).is_err(),
        "altered checkpoint"
    );

    net.stop().await;
}

fn committed_result(r: &v1::TransferResult) -> &v1::TransferResult {
    committed(r);
    r
}

async fn submit_checkpoint(
    net: &mut Network,
    cp: v1::Checkpoint,
    old_size: u64,
    proof: Vec<Vec<u8>>,
) -> Result<(), tonic::Status> {
    net.cb_as(&cbdc_runtime::tls::bank_name(cp.ledger_id))
        .await
        .submit_checkpoint(v1::SubmitCheckpointRequest {
            checkpoint: Some(cp),
            old_size,
            consistency_proof: proof,
        })
        .await
        .map(|_| ())
}

/// Two banks; 1,000.00 minted to bank 1; Alice on bank 1 holding `alice_holds`, Bob on
/// bank 2 with nothing. Returns the network, Alice, Bob and Bob's address.
async fn alice_and_bob(alice_holds: &str) -> (Network, Keypair, Keypair, String) {
    let mut net = Network::start(2).await;
    net.mint(1, "1000.00", "mint-1").await.expect("mints");
    let alice = net.bank(1).open_wallet(0xa1, KycTier::Class2).await;
    let bob = net.bank(2).open_wallet(0xb0, KycTier::Class2).await;
    net.quiesce().await;
    net.bank(1)
        .exchange_in(&alice.public(), alice_holds, "x-alice")
        .await
        .expect("exchange");
    let bob_addr = net.bank(2).address(&bob.public());
    (net, alice, bob, bob_addr)
}

/// A checkpoint of bank `id` signed with its real operator key.
fn forged_checkpoint(
    op: &Keypair,
    id: u32,
    size: u64,
    root: [u8; 32],
    inbound: &str,
    out: &str,
) -> v1::Checkpoint {
    let inbound = yuan(inbound);
    let settled_out = yuan(out);
    let cp = Checkpoint {
        ledger: LedgerId(id),
        size,
        root,
        outstanding: inbound.checked_sub(settled_out).expect("in ≥ out"),
        inbound,
        settled_out,
        timestamp_ms: 1,
        unspent: inbound.checked_sub(settled_out).expect("in ≥ out"),
        outbox: Amount::ZERO,
        unspent_set: [0; 32],
    };
    convert::to_checkpoint(&cp, &op.sign(&cp.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_the_central_bank_are_refused_and_change_nothing() {
    let (mut net, alice, bob, bob_addr) = alice_and_bob("300.00").await;
    let paid = net
        .bank(1)
        .pay(&alice, &bob_addr, "50.00")
        .await
        .expect("pays");
    let txid = txid_of(&paid);
    let before = net.quiesce().await;
    let bob_before = net.bank(2).balance(&bob.public()).await;
    assert_eq!(bob_before, "50.00");
    let t = {
        let r = net.bank(1).get_transfer(&txid.0).await;
        r.transfer.expect("transfer")
    };
    let op1 = Keypair::from_seed(net.bank(1).operator.seed());
    let settle = |from: u32, signer: &Keypair| v1::SettleRequest {
        transfer: Some(t.clone()),
        from_ledger_id: from,
        operator_signature: signer
            .sign(
                &BankRequest::Settle {
                    network: cbdc_tests::NETWORK,
                    from: LedgerId(from),
                    txid: &txid,
                }
                .signing_bytes(),
            )
            .to_vec(),
    };
    let stranger = Keypair::from_seed(&[0x55; 32]);

    let mut cases: Vec<(&str, Result<(), tonic::Status>, Code, String)> = Vec::new();
    // An unregistered bank.
    let e = net
        .cb_as("bank-9")
        .await
        .settle(settle(9, &stranger))
        .await
        .map(|_| ());
    cases.push((
        "unregistered bank settles",
        e,
        Code::PermissionDenied,
        "from_ledger_id: ledger 9 is not a registered bank".into(),
    ));
    // A forged bank signature.
    let e = net
        .cb_as("bank-1")
        .await
        .settle(settle(1, &stranger))
        .await
        .map(|_| ());
    cases.push((
        "forged bank signature",
        e,
        Code::PermissionDenied,
        "operator_signature: does not verify against the operator key of ledger 1".into(),
    ));
    // Mint to an unregistered ledger; a forged administrator signature.
    let e = net.mint(7, "1.00", "mint-7").await.map(|_| ());
    cases.push((
        "mint to an unregistered ledger",
        e,
        Code::PermissionDenied,
        "ledger_id: ledger 7 is not a registered bank".into(),
    ));
    let mut forged = net.mint_request(1, "1000000.00", "mint-forged");
    forged.admin_signature = stranger.sign(b"anything").to_vec();
    let e = net.cb.mint(forged).await.map(|_| ());
    cases.push((
        "forged administrator signature",
        e,
        Code::PermissionDenied,
        "admin_signature: does not verify against the central bank administrator's key".into(),
    ));
    let mut reg = net.register_request(&net.banks[0]);
    reg.operator.as_mut().unwrap().operator_public_key = stranger.public().as_bytes().to_vec();
    let e = net.cb.register_operator(reg).await.map(|_| ());
    cases.push((
        "re-register without the admin key",
        e,
        Code::PermissionDenied,
        "admin_signature: does not verify".into(),
    ));
    // Settlements of 50.00 of `transfer` to bank 2, countersigned by `signer`, delivered
    // straight to bank 2.
    let deliver = async |net: &mut Network, transfer: v1::SignedTransfer, signer: &Keypair| {
        let settlement = v1::Settlement {
            transfer: Some(transfer),
            from_ledger_id: 1,
            to_ledger_id: 2,
            amount: "50.00".into(),
            reversal_reason: String::new(),
            central_bank_signature: Countersignature {
                network: cbdc_tests::NETWORK,
                txid,
                to_ledger: LedgerId(2),
            }
            .sign(signer)
            .to_vec(),
        };
        net.bank(2)
            .client
            .deliver_inbound(v1::DeliverInboundRequest {
                settlement: Some(settlement),
            })
            .await
            .map(|_| ())
    };
    // A forged countersignature.
    let e = deliver(&mut net, t.clone(), &stranger).await;
    cases.push((
        "forged countersignature",
        e,
        Code::PermissionDenied,
        "settlement.central_bank_signature: does not verify against the central bank's key".into(),
    ));
    // A genuine countersignature over a transfer whose payer signature is forged: the
    // receiving ledger checks both.
    let mut forged_witness = t.clone();
    forged_witness.witnesses[0].signature[5] ^= 1;
    let cb_key = Keypair::from_seed(&cbdc_tests::network::CENTRAL_BANK_SEED);
    let e = deliver(&mut net, forged_witness, &cb_key).await;
    cases.push((
        "countersigned, but the payer's signature is forged",
        e,
        Code::PermissionDenied,
        "BAD_SIGNATURE: witness 0: signature does not verify for this txid".into(),
    ));
    // Checkpoints that shrink the log or change its history, or claim more than was sent.
    let held = ledger_audit(&before, 1).checkpoint_size;
    assert!(held >= 3, "{before:#?}");
    let cp = forged_checkpoint(&op1, 1, held - 1, [7; 32], "1000.00", "50.00");
    let e = submit_checkpoint(&mut net, cp, held, vec![]).await;
    cases.push((
        "checkpoint shrinks the log",
        e,
        Code::FailedPrecondition,
        format!(
            "checkpoint.size: {} would shrink the log from the accepted {held}",
            held - 1
        ),
    ));
    let cp = forged_checkpoint(&op1, 1, held + 1, [7; 32], "1000.00", "50.00");
    let e = submit_checkpoint(&mut net, cp, held, vec![vec![9; 32]; 3]).await;
    cases.push((
        "checkpoint changes history",
        e,
        Code::FailedPrecondition,
        format!("checkpoint.root: does not extend the accepted log of {held} leaves"),
    ));
    let proof = net.bank(1).ledger().consistency(held, held).await.unwrap();
    let real = net
        .bank(1)
        .ledger()
        .checkpoint()
        .await
        .unwrap()
        .unwrap()
        .checkpoint;
    let cp = forged_checkpoint(&op1, 1, real.size, real.root, "2000.00", "50.00");
    let e = submit_checkpoint(
        &mut net,
        cp,
        held,
        proof.iter().map(|h| h.to_vec()).collect(),
    )
    .await;
    cases.push((
        "checkpoint claims more than was sent",
        e,
        Code::FailedPrecondition,
        "checkpoint.inbound: 2000.00 exceeds the 1000.00 the central bank ever sent ledger 1"
            .into(),
    ));
    let mut cp = forged_checkpoint(&op1, 1, held, [7; 32], "1000.00", "50.00");
    cp.signature = stranger.sign(b"x").to_vec();
    let e = submit_checkpoint(&mut net, cp, held, vec![]).await;
    cases.push((
        "checkpoint not signed by the bank",
        e,
        Code::PermissionDenied,
        "checkpoint.signature: the checkpoint's signature does not verify".into(),
    ));

    for (name, outcome, code, message) in &cases {
        let err = outcome.as_ref().expect_err(name);
        assert_eq!(err.code(), *code, "{name}: {err:?}");
        assert!(
            err.message().contains(message.as_str()),
            "{name}: {:?} does not contain {message:?}",
            err.message()
        );
    }

    // Replays answer the first result and apply nothing.
    let replay = net
        .cb_as("bank-1")
        .await
        .settle(settle(1, &op1))
        .await
        .expect("replay answered")
        .into_inner();
    assert!(replay.already_settled);
    let delivered = net
        .bank(2)
        .client
        .deliver_inbound(v1::DeliverInboundRequest {
            settlement: Some(replay.settlements[0].clone()),
        })
        .await
        .expect("replay answered")
        .into_inner();
    assert!(delivered.already_delivered);

    // Nothing changed.
    let after = net.quiesce().await;
    assert_eq!(after.issued, before.issued);
    for (b, a) in before.ledgers.iter().zip(&after.ledgers) {
        assert_eq!(b.outstanding_books, a.outstanding_books);
    }
    assert_eq!(net.bank(2).balance(&bob.public()).await, bob_before);

    // A suspended bank's outbox waits; reactivated, it settles.
    let set_status = |net: &Network, status: v1::OperatorStatus, id: &str| {
        let signed = match status {
            v1::OperatorStatus::Suspended => OperatorStatus::Suspended,
            _ => OperatorStatus::Active,
        };
        cbdc_proto::requests::set_operator_status(&net.admin, net.header(id), LedgerId(1), signed)
    };
    let r = set_status(&net, v1::OperatorStatus::Suspended, "s1");
    net.cb.set_operator_status(r).await.expect("suspends");
    let paid = net
        .bank(1)
        .pay(&alice, &bob_addr, "25.00")
        .await
        .expect("commits locally");
    let txid = txid_of(&paid);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        status_of(&mut net, 1, &txid).await,
        v1::TransferStatus::Settling
    );
    assert_eq!(net.bank(2).balance(&bob.public()).await, "50.00");
    let a = net.audit().await;
    assert!(a.balanced, "value in the outbox still counts: {a:#?}");
    let r = set_status(&net, v1::OperatorStatus::Active, "s2");
    net.cb.set_operator_status(r).await.expect("reactivates");
    // Retries back off exponentially; move the clock past the longest wait.
    net.bank(1).advance_clock(31_000);
    let a = net.quiesce().await;
    assert!(a.balanced);
    assert_eq!(net.bank(2).balance(&bob.public()).await, "75.00");
    assert_eq!(
        net.assert_ledgers_conserve().await,
        Amount::from_fen(100_000)
    );

    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_central_bank_and_ledger_lose_nothing_in_flight() {
    let (mut net, alice, bob, bob_addr) = alice_and_bob("500.00").await;
    for i in 0..10 {
        net.bank(1)
            .pay(&alice, &bob_addr, "10.00")
            .await
            .unwrap_or_else(|e| panic!("payment {i}: {e}"));
        if i == 3 {
            net.restart_central_bank().await;
        }
        if i == 6 {
            net.bank(2).restart().await;
        }
    }
    net.bank(1).advance_clock(31_000);
    net.bank(2).advance_clock(31_000);
    let a = net.quiesce().await;
    assert!(a.balanced, "{a:#?}");
    assert_eq!(net.bank(2).balance(&bob.public()).await, "100.00");
    assert_eq!(net.bank(1).balance(&alice.public()).await, "400.00");
    assert_eq!(net.assert_ledgers_conserve().await, yuan("1000.00"));
    net.stop().await;
}

/// A dishonest bank (its settlement key, transfers of its own making with inputs that do not
/// exist) cannot settle out or redeem more than the central bank's books say it received:
/// the first move within its headroom passes, the next that would exceed it is refused, and
/// the books never go below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_cannot_settle_out_more_than_it_holds() {
    use cbdc_core::{Lock, OutPoint, TransferBuilder, UnixSeconds};
    let mut net = Network::start(2).await;
    net.mint(1, "100.00", "mint-1").await.expect("mints");
    net.quiesce().await;
    let op1 = Keypair::from_seed(net.bank(1).operator.seed());
    let forger = Keypair::from_seed(&[0x66; 32]);
    // The payee's wallet exists at ledger 2, so the moves that settle are delivered there
    // rather than refused and sent back to ledger 1 (which would raise its headroom while
    // the checks below run).
    net.bank(2)
        .open_wallet_key(&forger, cbdc_core::KycTier::Class2)
        .await
        .expect("opens");
    let cb_key = Keypair::from_seed(&cbdc_tests::network::CENTRAL_BANK_SEED).public();
    let until = UnixSeconds(net.bank(1).now_s() + 600);
    // A transfer spending a made-up coin of `yuan` into `to` (ledger, lock).
    let forged = |n: u8, amount: &str, to: LedgerId, lock: Lock| {
        TransferBuilder::new(until)
            .input(
                OutPoint {
                    txid: Txid([n; 32]),
                    index: 0,
                },
                yuan(amount),
            )
            .output(to, yuan(amount), lock)
            .sign(&[&forger])
            .expect("signs")
    };
    let batch = |ts: &[cbdc_core::Transfer]| {
        let txids: Vec<Txid> = ts.iter().map(cbdc_core::Transfer::txid).collect();
        v1::SettleBatchRequest {
            from_ledger_id: 1,
            transfers: ts.iter().map(convert::to_signed_transfer).collect(),
            operator_signature: BankRequest::SettleBatch {
                network: cbdc_tests::NETWORK,
                from: LedgerId(1),
                txids: &txids,
            }
            .sign(&op1)
            .to_vec(),
        }
    };
    let to_two = Lock::Key(forger.public());
    let moves = [
        forged(1, "60.00", LedgerId(2), to_two),
        forged(2, "60.00", LedgerId(2), to_two),
        forged(3, "40.01", LedgerId(0), Lock::Key(cb_key)),
        forged(4, "40.00", LedgerId(0), Lock::Key(cb_key)),
    ];
    let mut cb = net.cb_as("bank-1").await;
    let results = cb
        .settle_batch(batch(&moves))
        .await
        .expect("answered")
        .into_inner()
        .results;
    let outcome = |i: usize| match &results[i].outcome {
        Some(v1::settle_result::Outcome::Settled(_)) => Ok(()),
        Some(v1::settle_result::Outcome::Failed(f)) => Err(f.clone()),
        Some(v1::settle_result::Outcome::Refused(f)) => panic!("refused: {f:?}"),
        None => panic!("no outcome"),
    };
    assert_eq!(outcome(0), Ok(()), "within the headroom");
    let refused = outcome(1).expect_err("60 more would exceed 100");
    assert!(
        refused
            .message
            .contains("ledger 1 would settle out 60.00 more than it holds: the books say it received 100.00 and settled out 60.00"),
        "{refused:?}"
    );
    let refused = outcome(2).expect_err("a redemption past the headroom");
    assert!(
        refused.message.contains("would settle out 40.01"),
        "{refused:?}"
    );
    assert_eq!(outcome(3), Ok(()), "exactly the rest of the headroom");
    // Nothing is left: one fen more is refused; the books stand at zero, not below.
    let last = forged(5, "0.01", LedgerId(2), to_two);
    let r = cb.settle_batch(batch(&[last])).await.unwrap().into_inner();
    assert!(matches!(
        &r.results[0].outcome,
        Some(v1::settle_result::Outcome::Failed(f)) if f.message.contains("more than it holds")
    ));
    let a = net.audit().await;
    let books = |id: u32| {
        a.ledgers
            .iter()
            .find(|l| l.ledger_id == id)
            .map(|l| l.outstanding_books.clone())
    };
    assert_eq!(books(1).as_deref(), Some("0.00"));
    assert_eq!(a.redeemed, "40.00");
    // The central bank still answers: a later mint works.
    net.mint(1, "1.00", "mint-2").await.expect("mints after");
    net.stop().await;
}

/// Faults planted in one ledger — value created from nothing, a spend skipped, a checkpoint
/// that lies about the unspent sum — each make the central bank's audit name that ledger and
/// the checkpoint at fault, while the honest ledger beside it audits balanced. Without the
/// unspent sum in the checkpoints the first two audited balanced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_a_ledger_that_creates_skips_or_lies() {
    use cbdc_ledger::ledger::Faults;
    let planted = [
        (
            "creates from nothing",
            Faults {
                create_from_nothing: true,
                ..Faults::default()
            },
        ),
        (
            "skips a spend",
            Faults {
                skip_spend: true,
                ..Faults::default()
            },
        ),
        (
            "signs a wrong sum",
            Faults {
                checkpoint_sum_off_by_one: true,
                ..Faults::default()
            },
        ),
    ];
    for (name, faults) in planted {
        let mut net = Network::start_adjusted(2, move |id, c| {
            if id == 2 {
                c.faults = faults;
            }
        })
        .await;
        for bank in [1, 2] {
            net.mint(bank, "1000.00", &format!("mint-{bank}"))
                .await
                .expect("mints");
        }
        // Wait for the issues to arrive (not for the audit: it never balances here).
        for bank in [1, 2] {
            while net.bank(bank).ledger().running_totals().await.unwrap().0 < yuan("1000") {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        for bank in [1, 2] {
            let alice = net.bank(bank).open_wallet(0xa1, KycTier::Class2).await;
            let carol = net.bank(bank).open_wallet(0xc1, KycTier::Class2).await;
            net.bank(bank)
                .exchange_in(&alice.public(), "100.00", "x")
                .await
                .expect("exchange");
            let to = net.bank(bank).address(&carol.public());
            net.bank(bank)
                .pay(&alice, &to, "10.00")
                .await
                .expect("pays");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let audit = loop {
            let a = net.audit().await;
            let two = a
                .ledgers
                .iter()
                .find(|l| l.ledger_id == 2)
                .expect("ledger 2");
            if !two.fault.is_empty() || std::time::Instant::now() > deadline {
                break a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let one = audit.ledgers.iter().find(|l| l.ledger_id == 1).unwrap();
        let two = audit.ledgers.iter().find(|l| l.ledger_id == 2).unwrap();
        println!("{name}: {}", two.fault);
        assert!(one.balanced && one.fault.is_empty(), "{name}: {one:?}");
        assert!(!two.balanced, "{name}: {two:?}");
        assert!(!audit.balanced, "{name}");
        assert!(
            two.fault.starts_with("checkpoint at log size ")
                && two.fault.contains("is not the outstanding"),
            "{name}: {}",
            two.fault
        );
        // The log-replay auditor, from the transfers alone: ledger 1's log gives what its
        // checkpoints say; ledger 2's does not, and it names the checkpoint.
        for id in [1, 2] {
            net.bank(id)
                .ledger()
                .sequence_all()
                .await
                .expect("sequences");
            let operator = net.bank(id).operator.public();
            let stream = net
                .bank(id)
                .client
                .stream_log(v1::StreamLogRequest {})
                .await
                .expect("streams")
                .into_inner();
            let replayed = cbdc_ledger::replay::replay_stream(stream, LedgerId(id), operator).await;
            match (id, replayed) {
                (1, Ok(r)) => {
                    assert!(r.leaves >= 3 && r.checkpoints >= 1, "{r:?}");
                    assert_eq!(r.unspent, yuan("1000.00"));
                }
                (2, Err(cbdc_ledger::replay::ReplayError::Fault(f))) => {
                    println!("{name}, replayed: {f}");
                    assert_eq!(f.ledger, 2);
                    assert!(f.checkpoint_size.is_some(), "{f}");
                    assert!(f.what.contains("it states unspent"), "{f}");
                }
                (id, other) => panic!("{name}: ledger {id}: {other:?}"),
            }
        }
        net.stop().await;
    }
}

/// A move refused for good comes back to the payer instead of being stranded: a destination
/// ledger that does not exist (refused by the central bank), and on the payee's ledger a
/// wallet never opened, a closed wallet and an anonymous wallet that would pass its balance
/// cap (refused by that ledger). A frozen wallet still receives. Each refused payment is
/// REVERSED with its reason, the payer holds what it held before, and the audit, the scan of
/// every ledger and the replay of every log all balance. Before, the payer was debited and
/// the payment stayed SETTLING for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_moves_come_back_to_the_payer() {
    use cbdc_core::messages::WalletAction;
    // Bank 2 takes at most 15,000.00 in one payment.
    let mut net = Network::start_adjusted(2, |id, c| {
        if id == 2 {
            c.amount_max = Some("15000".into());
        }
    })
    .await;
    net.mint(1, "100000.00", "mint-1").await.expect("mints");
    net.mint(2, "1000.00", "mint-2").await.expect("mints");
    net.quiesce().await;
    let alice = net.bank(1).open_wallet(0xa1, KycTier::Class1).await;
    net.bank(1)
        .exchange_in(&alice.public(), "40000.00", "x-alice")
        .await
        .expect("exchange");
    let closed = net.bank(2).open_wallet(0xc1, KycTier::Class2).await;
    let frozen = net.bank(2).open_wallet(0xf1, KycTier::Class2).await;
    for (wallet, action) in [
        (&closed, WalletAction::Close),
        (&frozen, WalletAction::Freeze),
    ] {
        let b2 = net.bank(2);
        let order = b2.wallet_action(&b2.authority, action, &wallet.public(), action.name());
        let done = match action {
            WalletAction::Close => b2.client.close_wallet(order).await,
            _ => b2.client.freeze_wallet(order).await,
        };
        done.expect("the bank's order");
    }
    let anon = net.bank(2).open_wallet(0xa4, cbdc_tests::ANON).await;
    let never_opened = Keypair::from_seed(&[0x77; 32]).public();
    let cases = [
        (
            "a wallet never opened",
            net.bank(2).address(&never_opened),
            "2.00",
            Some("no such wallet is open"),
        ),
        (
            "a closed wallet",
            net.bank(2).address(&closed.public()),
            "3.00",
            Some("the wallet is closed"),
        ),
        (
            "an anonymous wallet past its balance cap",
            net.bank(2).address(&anon.public()),
            "10000.01",
            Some("balance cap of 10000.00 would be exceeded"),
        ),
        (
            "an amount over the payee bank's maximum",
            net.bank(2).address(&frozen.public()),
            "15000.01",
            Some("15000.01 is over this bank's maximum of 15000.00"),
        ),
        (
            "a frozen wallet (still receives)",
            net.bank(2).address(&frozen.public()),
            "4.00",
            None,
        ),
    ];
    let mut paid = Vec::new();
    for (name, to, amount, _) in &cases {
        let r = net.bank(1).pay(&alice, to, amount).await.expect(name);
        committed(&r);
        paid.push(Txid(r.txid.clone().try_into().unwrap()));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for ((name, _, _, refused), txid) in cases.iter().zip(&paid) {
        let want = if refused.is_some() {
            v1::TransferStatus::Reversed
        } else {
            v1::TransferStatus::Settled
        };
        let got = loop {
            let got = net.bank(1).get_transfer(&txid.0).await;
            if got.status == want as i32 || std::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(got.status, want as i32, "{name}: {got:?}");
        if let Some(why) = refused {
            assert!(
                got.reversal_reason.contains(why),
                "{name}: {}",
                got.reversal_reason
            );
        }
        println!("{name}: {:?} {}", want, got.reversal_reason);
    }
    net.quiesce().await;
    // Only the frozen wallet's 4.00 left Alice.
    assert_eq!(net.bank(1).balance(&alice.public()).await, "39996.00");
    assert_eq!(net.bank(2).balance(&frozen.public()).await, "4.00");
    assert_eq!(net.bank(2).balance(&anon.public()).await, "0.00");
    // Alice's history shows each reversal as an incoming line naming the refused txid.
    let b1 = net.bank(1);
    let address = b1.address(&alice.public());
    let auth = Some(b1.authority_read(&address));
    let history = b1
        .client
        .list_history(v1::ListHistoryRequest {
            address,
            auth,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let refused_txids = cases
        .iter()
        .zip(&paid)
        .filter(|(case, _)| case.3.is_some())
        .map(|(_, txid)| txid);
    for txid in refused_txids {
        let needle = format!("reversal of {txid}");
        assert!(
            history
                .entries
                .iter()
                .any(|e| String::from_utf8_lossy(&e.memo).contains(&needle)),
            "{needle} in {:?}",
            history.entries
        );
    }
    // What the payer's ledger can know before committing, it refuses then, from its copy
    // of the central bank's registry: a ledger that does not exist. Nothing moves.
    let nowhere = cbdc_core::Address::new(LedgerId(77), never_opened).to_string();
    let refused = net.bank(1).pay(&alice, &nowhere, "1.00").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("DESTINATION_UNAVAILABLE: output 0: ledger-77 is not a registered bank"),
        "{}",
        refused.message()
    );
    // A bank suspended after that copy was read: the central bank refuses the settlement
    // and the payer's ledger reverses it at once.
    let suspend = cbdc_proto::requests::set_operator_status(
        &net.admin,
        net.header("suspend-2"),
        LedgerId(2),
        OperatorStatus::Suspended,
    );
    net.cb.set_operator_status(suspend).await.expect("suspends");
    let to_frozen = net.bank(2).address(&frozen.public());
    let r = net
        .bank(1)
        .pay(&alice, &to_frozen, "5.00")
        .await
        .expect("commits");
    committed(&r);
    let txid = r.txid.clone();
    let got = loop {
        let got = net.bank(1).get_transfer(&txid).await;
        if got.status == v1::TransferStatus::Reversed as i32
            || std::time::Instant::now() > deadline + std::time::Duration::from_secs(20)
        {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(got.status, v1::TransferStatus::Reversed as i32, "{got:?}");
    assert!(
        got.reversal_reason.contains("ledger 2 is suspended"),
        "{}",
        got.reversal_reason
    );
    assert_eq!(net.bank(1).balance(&alice.public()).await, "39996.00");
    assert_eq!(net.assert_ledgers_conserve().await, yuan("101000"));
    // The logs, replayed from their transfers alone, give what the checkpoints say.
    for id in [1, 2] {
        let operator = net.bank(id).operator.public();
        let stream = net
            .bank(id)
            .client
            .stream_log(v1::StreamLogRequest {})
            .await
            .expect("streams")
            .into_inner();
        let r = cbdc_ledger::replay::replay_stream(stream, LedgerId(id), operator)
            .await
            .unwrap_or_else(|e| panic!("ledger {id}: {e}"));
        assert!(r.checkpoints > 0);
    }
    net.stop().await;
}
