//! Hostile requests against the ledger service over gRPC: each is answered with a precise
//! status and message, and none of them changes a balance, a wallet or the log.

use cbdc_core::messages::WalletAction;
use cbdc_core::transfer::sign_body;
use cbdc_core::{
    Address, Amount, Keypair, KycTier, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, Txid,
    UnixSeconds,
};
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_tests::{ANON, LedgerNet, NETWORK, Table, yuan};
use tonic::Code;

/// Everything a hostile request must leave unchanged.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    totals: cbdc_ledger::ledger::Totals,
    wallets: Vec<(String, i32, i32, String, String, usize)>,
}

async fn snapshot(net: &mut LedgerNet, keys: &[cbdc_core::PublicKey]) -> Snapshot {
    let totals = net.ledger().totals().await.unwrap();
    let mut wallets = Vec::new();
    for k in keys {
        let w = net
            .client
            .get_wallet(v1::GetWalletRequest {
                address: net.address(k),
                auth: Some(net.authority_read(&net.address(k))),
            })
            .await
            .unwrap()
            .into_inner();
        let history = net.ledger().history(k, None, 10_000).await.unwrap().len();
        wallets.push((
            w.address,
            w.status,
            w.tier,
            w.balance,
            w.spent_today,
            history,
        ));
    }
    Snapshot { totals, wallets }
}

fn with_body(t: &Transfer, body: Vec<u8>) -> v1::SignedTransfer {
    let mut w = to_signed_transfer(t);
    w.body = body;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_precisely_and_change_nothing() {
    let mut net = LedgerNet::start_with(1, |c| c.max_batch = 64).await;
    let issued = yuan("1000000");
    net.issue(issued).await;
    let alice = net.open_wallet(1, KycTier::Class1).await;
    let anon = net.open_wallet(2, ANON).await;
    let full = net.open_wallet(3, ANON).await;
    let frozen = net.open_wallet(4, KycTier::Class1).await;
    let mallory = Keypair::from_seed(&[66; 32]);
    let stranger = Keypair::from_seed(&[77; 32]); // never opened
    for (wallet, amount, request_id) in [
        (&alice, "10000.00", "a"),
        (&anon, "9000.00", "b"),
        (&full, "9999.00", "c"),
        (&frozen, "100.00", "d"),
    ] {
        net.exchange_in(&wallet.public(), amount, request_id)
            .await
            .unwrap();
    }
    let alice_addr = net.address(&alice.public());
    // Anon spends 5,000 today: at its daily cap.
    for amount in ["2000.00", "2000.00", "1000.00"] {
        net.pay(&anon, &alice_addr, amount).await.unwrap();
    }
    // A coin of Alice's that is then spent, for the replay case.
    let spent = net
        .build_signed(&alice, &[(&net.address(&anon.public()), "1.00")])
        .await
        .unwrap();
    net.submit(&spent).await.unwrap();
    let freeze = net.wallet_action(&net.authority, WalletAction::Freeze, &frozen.public(), "fz");
    net.client.freeze_wallet(freeze).await.unwrap();

    let keys = [
        alice.public(),
        anon.public(),
        full.public(),
        frozen.public(),
        net.operator.public(),
    ];
    let before = snapshot(&mut net, &keys).await;

    let good = net
        .build_signed(&alice, &[(&net.address(&anon.public()), "1.00")])
        .await
        .unwrap();
    let coin = good.body().inputs[0];
    let valid_until = good.body().valid_until;
    let ledger = net.ledger_id();
    let to_anon = Lock::Key(anon.public());
    let mut t = Table::default();

    // ----- malformed transfers -----
    // Wire transfers broken one way each, in order: (name, transfer, code, needle).
    let mut trailing = good.body_bytes().to_vec();
    trailing.push(0);
    let mut version = good.body_bytes().to_vec();
    version[0] = 9;
    let wire = || to_signed_transfer(&good);
    let mut flipped = wire();
    flipped.witnesses[0].signature[10] ^= 0x40;
    let mut unsigned = wire();
    unsigned.witnesses.clear();
    let mut short_key = wire();
    short_key.witnesses[0].public_key.pop();
    let mut short_sig = wire();
    short_sig.witnesses[0].signature.pop();
    let mut nine = wire();
    nine.witnesses = vec![nine.witnesses[0].clone(); 9];
    let long_memo = TransferBuilder::new(valid_until)
        .input(coin.outpoint, coin.value)
        .output(ledger, coin.value, to_anon)
        .memo(vec![b'x'; 300]);
    let mut malformed = vec![
        (
            "missing transfer".to_string(),
            None,
            Code::InvalidArgument,
            "transfer: required field is missing",
        ),
        (
            "garbage body".to_string(),
            Some(with_body(&good, b"\x01garbage".to_vec())),
            Code::InvalidArgument,
            "MALFORMED",
        ),
        (
            "trailing bytes".into(),
            Some(with_body(&good, trailing)),
            Code::InvalidArgument,
            "1 trailing bytes",
        ),
        (
            "unknown body version".into(),
            Some(with_body(&good, version)),
            Code::InvalidArgument,
            "version 9 is unknown",
        ),
        (
            "flipped signature bit".into(),
            Some(flipped),
            Code::PermissionDenied,
            "BAD_SIGNATURE",
        ),
        (
            "no signature".into(),
            Some(unsigned),
            Code::InvalidArgument,
            "carries no witness",
        ),
        (
            "31-byte witness key".into(),
            Some(short_key),
            Code::InvalidArgument,
            "public key is 31 bytes",
        ),
    ];
    // Witness keys that cannot own value: the identity point (small order: one signature
    // could be valid for many messages) and bytes that are no curve point. Each twice: a
    // refused key is not cached, so the second is refused the same way.
    for (name, first_byte, needle) in [
        (
            "small-order witness key",
            1u8,
            "witness 0: public key is of small order (weak)",
        ),
        (
            "witness key not on the curve",
            2u8,
            "witness 0: public key is not a valid Ed25519 point",
        ),
    ] {
        for round in ["", " again"] {
            let mut bad_key = wire();
            let mut key = vec![0u8; 32];
            key[0] = first_byte;
            bad_key.witnesses[0].public_key = key;
            malformed.push((
                format!("{name}{round}"),
                Some(bad_key),
                Code::InvalidArgument,
                needle,
            ));
        }
    }
    malformed.extend([
        (
            "63-byte signature".to_string(),
            Some(short_sig),
            Code::InvalidArgument,
            "signature is 63 bytes",
        ),
        (
            "nine witnesses".into(),
            Some(nine),
            Code::InvalidArgument,
            "at most 8 are allowed",
        ),
        (
            "memo of 300 bytes".into(),
            Some(with_body(&good, long_memo.body().encode())),
            Code::InvalidArgument,
            "memo is 300 bytes",
        ),
    ]);
    for (name, transfer, code, needle) in malformed {
        let r = net
            .client
            .submit_transfer(v1::SubmitTransferRequest { transfer })
            .await;
        t.check(&name, r, code, needle);
    }

    // ----- values -----
    let build = |input: (OutPoint, Amount),
                 outputs: &[(Amount, Lock)],
                 until: UnixSeconds,
                 signer: &Keypair| {
        let mut b = TransferBuilder::new(until).input(input.0, input.1);
        for (v, l) in outputs {
            b = b.output(ledger, *v, *l);
        }
        b.sign(&[signer]).unwrap()
    };
    let c = (coin.outpoint, coin.value);
    let dup = TransferBuilder::new(valid_until)
        .input(coin.outpoint, coin.value)
        .input(coin.outpoint, coin.value)
        .output(ledger, Amount::from_fen(coin.value.fen() * 2), to_anon)
        .sign(&[&alice])
        .unwrap();
    let overstated = Amount::from_fen(coin.value.fen() + 100);
    let nowhere = OutPoint {
        txid: Txid([0xee; 32]),
        index: 0,
    };
    let old = spent.body().inputs[0];
    let more = coin.value.checked_add(Amount::from_fen(1)).unwrap();
    let past = UnixSeconds(net.now_s() - 1);
    let cases: Vec<(&str, Transfer, Code, String)> = vec![
        // ----- values -----
        (
            "outputs exceed inputs",
            build(c, &[(more, to_anon)], valid_until, &alice),
            Code::InvalidArgument,
            "NOT_CONSERVED".into(),
        ),
        (
            "zero output",
            build(
                c,
                &[(coin.value, to_anon), (Amount::ZERO, to_anon)],
                valid_until,
                &alice,
            ),
            Code::InvalidArgument,
            "output 1 has zero value".into(),
        ),
        (
            "duplicate input",
            dup,
            Code::InvalidArgument,
            "spent twice in the same transfer".into(),
        ),
        (
            "input value overstated",
            build(
                (coin.outpoint, overstated),
                &[(overstated, to_anon)],
                valid_until,
                &alice,
            ),
            Code::InvalidArgument,
            "INPUT_VALUE_MISMATCH".into(),
        ),
        (
            "expired",
            build(c, &[(coin.value, to_anon)], past, &alice),
            Code::FailedPrecondition,
            "EXPIRED".into(),
        ),
        // ----- inputs and authority -----
        (
            "unknown input",
            build(
                (nowhere, coin.value),
                &[(coin.value, to_anon)],
                valid_until,
                &alice,
            ),
            Code::NotFound,
            "INPUT_MISSING".into(),
        ),
        (
            "replayed spent input",
            build(
                (old.outpoint, old.value),
                &[(old.value, to_anon)],
                valid_until,
                &alice,
            ),
            Code::FailedPrecondition,
            format!("already spent by transfer {}", spent.txid()),
        ),
        (
            "signed by a stranger",
            build(
                c,
                &[(coin.value, Lock::Key(mallory.public()))],
                valid_until,
                &mallory,
            ),
            Code::PermissionDenied,
            "NOT_AUTHORISED".into(),
        ),
        (
            "pay an unopened wallet",
            build(
                c,
                &[(coin.value, Lock::Key(stranger.public()))],
                valid_until,
                &alice,
            ),
            Code::NotFound,
            "UNKNOWN_WALLET".into(),
        ),
    ];
    for (name, transfer, code, needle) in cases {
        let r = net.submit(&transfer).await;
        t.check(name, r, code, &needle);
    }

    // ----- wallets and limits -----
    let frozen_addr = net.address(&frozen.public());
    let frozen_t = TransferBuilder::new(valid_until);
    let _ = frozen_t;
    let built = net
        .client
        .build_transfer(v1::BuildTransferRequest {
            from_address: frozen_addr.clone(),
            payments: vec![v1::Payment {
                to_address: alice_addr.clone(),
                amount: "1.00".into(),
            }],
            memo: Vec::new(),
            valid_for_s: 0,
            auth: Some(net.read_auth(&frozen, &frozen_addr)),
        })
        .await
        .unwrap()
        .into_inner();
    let r = net
        .submit(&sign_body(built.body, &[&frozen]).unwrap())
        .await;
    t.check(
        "frozen wallet spends",
        r,
        Code::FailedPrecondition,
        "WALLET_FROZEN",
    );
    let r = net.pay(&anon, &alice_addr, "2000.01").await;
    t.check(
        "per-payment cap",
        r,
        Code::FailedPrecondition,
        "per-payment cap of 2000.00 exceeded by a payment of 2000.01",
    );
    let r = net.pay(&anon, &alice_addr, "0.01").await;
    t.check(
        "daily cap",
        r,
        Code::FailedPrecondition,
        "daily outgoing cap of 5000.00 exceeded by a payment of 0.01 (would reach 5000.01)",
    );
    let r = net.pay(&alice, &net.address(&full.public()), "1.01").await;
    t.check(
        "balance cap",
        r,
        Code::FailedPrecondition,
        "balance cap of 10000.00 exceeded by a payment of 1.01 (would reach 10000.01)",
    );

    // ----- batches -----
    let r = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![to_signed_transfer(&good); 65],
            return_outputs: false,
        })
        .await;
    t.check(
        "oversized batch",
        r,
        Code::InvalidArgument,
        "65 transfers; at most 64 per request",
    );
    let r = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![],
            return_outputs: false,
        })
        .await;
    t.check(
        "empty batch",
        r,
        Code::InvalidArgument,
        "the batch is empty",
    );
    let limit = cbdc_ledger::request_bytes_max(64);
    let r = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![with_body(&good, vec![0; limit + 1])],
            return_outputs: false,
        })
        .await;
    t.check(
        "request over the size limit",
        r,
        Code::ResourceExhausted,
        "too large",
    );

    // ----- amounts and addresses at the boundary -----
    let bad = Code::InvalidArgument;
    for (name, amount, code, needle) in [
        ("negative amount", "-5.00", bad, "payments.amount"),
        ("three decimal places", "1.234", bad, "3 decimal places"),
        (
            "overflowing amount",
            "18446744073709551616",
            bad,
            "payments.amount",
        ),
        ("exponent", "1e3", bad, "payments.amount"),
        ("zero amount", "0.00", bad, "must be more than zero"),
        (
            "insufficient funds",
            "999999.00",
            Code::FailedPrecondition,
            "insufficient funds",
        ),
    ] {
        let r = net
            .client
            .build_transfer(v1::BuildTransferRequest {
                from_address: alice_addr.clone(),
                payments: vec![v1::Payment {
                    to_address: net.address(&anon.public()),
                    amount: amount.into(),
                }],
                memo: Vec::new(),
                valid_for_s: 0,
                auth: Some(net.read_auth(&alice, &alice_addr)),
            })
            .await;
        t.check(name, r, code, needle);
    }
    let elsewhere = Address::new(LedgerId(9), alice.public()).to_string();
    let mut typo = alice_addr.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'q' { 'p' } else { 'q' });
    for (name, address, needle) in [
        (
            "address on another ledger",
            elsewhere,
            "address is on ledger 9, this is ledger 1",
        ),
        ("address typo", typo, "address:"),
    ] {
        let r = net
            .client
            .get_balance(v1::GetBalanceRequest {
                address,
                auth: None,
            })
            .await;
        t.check(name, r, Code::InvalidArgument, needle);
    }

    // ----- the bank's authority -----
    let mut unsigned =
        net.wallet_action(&net.authority, WalletAction::Freeze, &alice.public(), "x1");
    unsigned.authority_signature.clear();
    let r = net.client.freeze_wallet(unsigned).await;
    t.check(
        "freeze without the authority's signature",
        r,
        Code::PermissionDenied,
        "authority_signature: 0 bytes",
    );
    let forged = net.wallet_action(&mallory, WalletAction::Freeze, &alice.public(), "x2");
    let r = net.client.freeze_wallet(forged).await;
    t.check(
        "freeze signed by a stranger",
        r,
        Code::PermissionDenied,
        "does not verify",
    );
    let mut swapped = net.wallet_action(
        &net.authority,
        WalletAction::Unfreeze,
        &alice.public(),
        "x3",
    );
    swapped.reason = "changed after signing".into();
    let r = net.client.freeze_wallet(swapped).await;
    t.check(
        "freeze with a signature for another action",
        r,
        Code::PermissionDenied,
        "does not verify",
    );
    let steal = cbdc_proto::requests::exchange(
        &mallory,
        net.header("steal"),
        &net.address(&anon.public()),
        "1000.00",
        None,
    );
    let r = net.client.exchange(steal).await;
    t.check(
        "exchange with a forged authority signature",
        r,
        Code::PermissionDenied,
        "authority_signature",
    );
    let mut nodir = cbdc_proto::requests::exchange(
        &net.authority,
        net.header("nodir"),
        &net.address(&anon.public()),
        "1.00",
        None,
    );
    nodir.direction = 0;
    let r = net.client.exchange(nodir).await;
    t.check(
        "exchange without a direction",
        r,
        Code::InvalidArgument,
        "direction",
    );
    let to_vault = net
        .build_signed(&alice, &[(&net.address(&net.operator.public()), "5.00")])
        .await
        .unwrap();
    let r = net
        .client
        .exchange(cbdc_proto::requests::exchange(
            &net.authority,
            net.header("red"),
            &alice_addr,
            "6.00",
            Some(&to_vault),
        ))
        .await;
    t.check(
        "redeem paying the vault another amount",
        r,
        Code::InvalidArgument,
        "pays the vault 5.00, but amount is 6.00",
    );

    // ----- opening wallets -----
    let newcomer = Keypair::from_seed(&[88; 32]);
    let phone = LedgerNet::phone(&newcomer.public());
    // An open request for the newcomer's key at `tier`, its proof signed by `signer`.
    let open = |tier: v1::KycTier, signer: &Keypair, phone: &str| {
        let mut r = cbdc_proto::requests::open_wallet(signer, NETWORK, ledger, phone);
        r.public_key = newcomer.public().as_bytes().to_vec();
        r.tier = tier as i32;
        r
    };
    for (name, request, code, needle) in [
        (
            "open with a forged proof of key",
            open(v1::KycTier::Class4Anonymous, &mallory, &phone),
            Code::PermissionDenied,
            "does not prove possession",
        ),
        (
            "open without a phone number",
            open(v1::KycTier::Class4Anonymous, &newcomer, ""),
            Code::InvalidArgument,
            "phone_number",
        ),
        (
            "open with a phone number already used at this bank",
            open(
                v1::KycTier::Class4Anonymous,
                &newcomer,
                &LedgerNet::phone(&anon.public()),
            ),
            Code::AlreadyExists,
            "phone_number: this number has already opened",
        ),
        (
            "open an operator-tier wallet",
            open(v1::KycTier::Operator, &newcomer, &phone),
            Code::PermissionDenied,
            "tier: a customer opens an anonymous wallet only",
        ),
    ] {
        let r = net.client.open_wallet(request).await;
        t.check(name, r, code, needle);
    }

    // ----- the central bank's countersignature -----
    let mint = TransferBuilder::new(UnixSeconds(net.now_s() + 60))
        .input(
            OutPoint {
                txid: Txid([0xcc; 32]),
                index: 0,
            },
            yuan("1000000"),
        )
        .output(ledger, yuan("1000000"), Lock::Key(mallory.public()))
        .sign(&[&mallory])
        .unwrap();
    let forged = net.settlement(&mint, yuan("1000000"), &mallory);
    let mut misrouted = net.settlement(&mint, yuan("1000000"), &net.central_bank);
    misrouted.to_ledger_id = 2;
    for (name, settlement, code, needle) in [
        (
            "issuance with a forged central bank signature",
            forged,
            Code::PermissionDenied,
            "central_bank_signature",
        ),
        (
            "settlement for another ledger",
            misrouted,
            Code::InvalidArgument,
            "to_ledger_id: 2",
        ),
    ] {
        let r = net
            .client
            .deliver_inbound(v1::DeliverInboundRequest {
                settlement: Some(settlement),
            })
            .await;
        t.check(name, r, code, needle);
    }

    // ----- reads -----
    for (name, page_size, cursor, needle) in [
        (
            "page size over the maximum",
            5000,
            "",
            "page.page_size: 5000; at most 1000",
        ),
        ("forged cursor", 10, "not-a-cursor", "page.cursor"),
    ] {
        let r = net
            .client
            .list_history(v1::ListHistoryRequest {
                address: alice_addr.clone(),
                page: Some(v1::PageRequest {
                    page_size,
                    cursor: cursor.into(),
                }),
                auth: Some(net.read_auth(&alice, &alice_addr)),
            })
            .await;
        t.check(name, r, Code::InvalidArgument, needle);
    }
    let r = net
        .client
        .get_transfer(v1::GetTransferRequest {
            txid: vec![1; 5],
            address: alice_addr.clone(),
            auth: Some(net.read_auth(&alice, &alice_addr)),
        })
        .await;
    t.check(
        "txid of 5 bytes",
        r,
        Code::InvalidArgument,
        "txid: 5 bytes, expected 32",
    );

    assert!(t.rows.len() >= 25, "{} hostile cases", t.rows.len());
    let after = snapshot(&mut net, &keys).await;
    assert_eq!(before, after, "a hostile request changed the ledger");
    net.assert_conserved(issued).await;
    t.print();
    println!(
        "{} hostile requests refused, ledger unchanged",
        t.rows.len()
    );
    net.stop().await;
}

/// One signature rule on every path: a witness whose `R` is of small order (`R` the
/// identity, `S = k·a`, which the cofactorless equation accepts) is refused by
/// `SubmitTransfer` and by `SubmitTransfers` alone, among honest transfers and beside a broken
/// one; a mixed-order `R` made by the key's holder commits on both paths. Before the rule was
/// one, the first committed through both calls and was refused only beside a broken transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_gets_one_verdict_on_every_path() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let alice = net.open_wallet(1, KycTier::Class1).await;
    let carol = net.open_wallet(2, KycTier::Class1).await;
    let bob = net.open_wallet(3, KycTier::Class1).await;
    for (w, id) in [(&alice, "a"), (&carol, "c")] {
        net.exchange_in(&w.public(), "100.00", id).await.unwrap();
    }
    let bob_addr = net.address(&bob.public());
    let crafted = |t: &Transfer, torsion: usize, small_order: bool| {
        let message = t.txid().signing_message();
        let mut wire = to_signed_transfer(t);
        wire.witnesses[0].signature =
            cbdc_core::signature::crafted::sign(alice.seed(), &message, torsion, small_order)
                .to_vec();
        wire
    };
    let code = |r: &v1::TransferResult| match &r.outcome {
        Some(v1::transfer_result::Outcome::Committed(_)) => "COMMITTED".to_string(),
        Some(v1::transfer_result::Outcome::Rejected(x)) => x.code.clone(),
        None => "NONE".to_string(),
    };
    for (torsion, small_order, expected) in [
        (0, true, "BAD_SIGNATURE"),
        (4, true, "BAD_SIGNATURE"),
        (2, false, "COMMITTED"),
    ] {
        let kind = if small_order {
            "small-order"
        } else {
            "mixed-order"
        };
        for batch in [
            "single call",
            "alone",
            "among honest",
            "beside a broken one",
        ] {
            let mine = net
                .build_signed(&alice, &[(&bob_addr, "1.00")])
                .await
                .unwrap();
            let wire = crafted(&mine, torsion, small_order);
            let honest = net
                .build_signed(&carol, &[(&bob_addr, "0.01")])
                .await
                .unwrap();
            let mut broken = to_signed_transfer(&honest);
            broken.witnesses[0].signature[3] ^= 1;
            let (results, at) = match batch {
                "single call" => {
                    // A refused single call is a status whose message starts with the code.
                    let code = match net
                        .client
                        .submit_transfer(v1::SubmitTransferRequest {
                            transfer: Some(wire),
                        })
                        .await
                    {
                        Ok(r) => code(&r.into_inner()),
                        Err(s) => s.message().split(':').next().unwrap_or("").to_string(),
                    };
                    (vec![code], 0)
                }
                _ => {
                    let transfers = match batch {
                        "alone" => vec![wire],
                        "among honest" => vec![to_signed_transfer(&honest), wire],
                        _ => vec![broken, wire],
                    };
                    let at = transfers.len() - 1;
                    let r = net
                        .client
                        .submit_transfers(v1::SubmitTransfersRequest {
                            transfers,
                            return_outputs: false,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    (r.results.iter().map(code).collect(), at)
                }
            };
            let name = format!("{kind} R (torsion {torsion}), {batch}");
            assert_eq!(results[at], expected, "{name}");
            println!("{name}: {expected}");
            if batch == "beside a broken one" {
                assert_eq!(results[0], "BAD_SIGNATURE", "{kind}: the neighbour");
            }
        }
    }
    // Four mixed-order payments of 1.00 committed; nothing else of Alice's moved.
    assert_eq!(net.balance(&alice.public()).await, "96.00");
    net.assert_conserved(yuan("1000")).await;
    net.stop().await;
}

/// A reversal delivered to the payer's ledger is the central bank's word, for a move this
/// ledger made, of exactly what it moved, and it is applied once: a reversal signed by
/// another key, a delivery countersignature passed off as a reversal's, the wrong amount, a
/// ledger the transfer never paid and a transfer that moved nothing off this ledger are each
/// refused and change nothing; the genuine one credits the payer once, and sent again it
/// answers as delivered before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_central_banks_reversal_of_a_real_move_comes_back_and_only_once() {
    use cbdc_core::messages::{Countersignature, Reversal, Signed};
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let alice = net.open_wallet(1, KycTier::Class1).await;
    net.exchange_in(&alice.public(), "100.00", "a")
        .await
        .unwrap();
    let away = Address::new(LedgerId(2), Keypair::from_seed(&[9; 32]).public()).to_string();
    let moved = net.build_signed(&alice, &[(&away, "30.00")]).await.unwrap();
    net.submit(&moved).await.unwrap();
    let local = net
        .build_signed(&alice, &[(&net.address(&alice.public()), "1.00")])
        .await
        .unwrap();
    net.submit(&local).await.unwrap();
    assert_eq!(net.balance(&alice.public()).await, "70.00");
    let reversal = |t: &Transfer, by: u32, amount: &str, signer: &Keypair, as_delivery: bool| {
        let reason = "payee closed";
        let signature = if as_delivery {
            Countersignature {
                network: NETWORK,
                txid: t.txid(),
                to_ledger: LedgerId(1),
            }
            .sign(signer)
        } else {
            Reversal {
                network: NETWORK,
                txid: t.txid(),
                refused_by: LedgerId(by),
                to_ledger: LedgerId(1),
                amount: yuan(amount),
                reason,
            }
            .sign(signer)
        };
        v1::Settlement {
            transfer: Some(to_signed_transfer(t)),
            from_ledger_id: by,
            to_ledger_id: 1,
            amount: amount.into(),
            central_bank_signature: signature.to_vec(),
            reversal_reason: reason.into(),
        }
    };
    let cb = Keypair::from_seed(net.central_bank.seed());
    let mallory = Keypair::from_seed(&[66; 32]);
    let deliver = async |net: &mut LedgerNet, s: v1::Settlement| {
        let r = net
            .client
            .deliver_inbound_batch(v1::DeliverInboundBatchRequest {
                settlements: vec![s],
            })
            .await
            .unwrap()
            .into_inner();
        r.results[0].outcome.clone().expect("an outcome")
    };
    use v1::deliver_inbound_result::Outcome;
    for (name, s, needle) in [
        (
            "signed by another key",
            reversal(&moved, 2, "30.00", &mallory, false),
            "central bank",
        ),
        (
            "a delivery's countersignature",
            reversal(&moved, 2, "30.00", &cb, true),
            "central bank",
        ),
        (
            "the wrong amount",
            reversal(&moved, 2, "31.00", &cb, false),
            "settlement.amount",
        ),
        (
            "a ledger the transfer never paid",
            reversal(&moved, 3, "30.00", &cb, false),
            "settlement.amount",
        ),
        (
            "a transfer that moved nothing away",
            reversal(&local, 2, "1.00", &cb, false),
            "settlement.amount",
        ),
    ] {
        match deliver(&mut net, s).await {
            Outcome::Failed(f) => assert!(f.message.contains(needle), "{name}: {f:?}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(net.balance(&alice.public()).await, "70.00", "{name}");
    }
    for already in [false, true] {
        match deliver(&mut net, reversal(&moved, 2, "30.00", &cb, false)).await {
            Outcome::Delivered(d) => assert_eq!(d.already_delivered, already),
            other => panic!("the genuine reversal: {other:?}"),
        }
        assert_eq!(net.balance(&alice.public()).await, "100.00");
    }
    let status = net.get_transfer(&moved.txid().0).await;
    assert_eq!(status.status, v1::TransferStatus::Reversed as i32);
    assert_eq!(status.reversal_reason, "payee closed");
    net.stop().await;
}
