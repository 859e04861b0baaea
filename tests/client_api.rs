//! The wallet-facing API as a client developer meets it, through real gRPC: reflection in
//! both protocol versions listing exactly what each server serves, gRPC-Web over HTTP/1.1,
//! the rich error model (reasons, facts, fields) on single calls and batch rows alike,
//! coins and decoded transfers, consistency proofs between checkpoints, and a transfer
//! SETTLED only once the payee's ledger credited it.

use std::time::{Duration, Instant};

use cbdc_core::merkle::verify_consistency;
use cbdc_core::{KycTier, LedgerId, Lock, OutPoint, TransferBuilder, Txid, UnixSeconds};
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_tests::network::Network;
use cbdc_tests::{LedgerNet, committed, error_info, rejected, yuan};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

/// The services a reflection endpoint lists, in v1 and in v1alpha.
async fn listed(channel: tonic::transport::Channel) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::v1 as r1;
    use tonic_reflection::pb::v1alpha as r0;
    let mut v1 = r1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut responses = v1
        .server_reflection_info(tokio_stream::iter(vec![r1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut a: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    let mut v0 = r0::server_reflection_client::ServerReflectionClient::new(channel);
    let mut responses = v0
        .server_reflection_info(tokio_stream::iter(vec![r0::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r0::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let Some(r0::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut b: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    a.sort();
    b.sort();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_exactly_what_each_server_serves_in_both_versions() {
    let net = Network::start(1).await;
    let bank = &net.banks[0];
    let ledger =
        tonic::transport::Endpoint::from_shared(format!("https://{}", bank.running().grpc_addr))
            .unwrap()
            .tls_config(cbdc_tests::tls_client(
                bank.config.tls.ca_file.as_ref().unwrap().parent().unwrap(),
                Some(cbdc_runtime::tls::CENTRAL_BANK_NAME),
                &cbdc_runtime::tls::bank_name(1),
            ))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let (v1, v1alpha) = listed(ledger).await;
    assert_eq!(
        v1,
        [
            "cbdc.v1.LedgerService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
    assert_eq!(
        v1alpha,
        [
            "cbdc.v1.LedgerService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"
        ]
    );
    let (v1, v1alpha) = listed(net.cb_channel_as(cbdc_runtime::tls::ADMIN_NAME).await).await;
    assert_eq!(
        v1,
        [
            "cbdc.v1.IssuanceService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
    assert_eq!(
        v1alpha,
        [
            "cbdc.v1.IssuanceService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"
        ]
    );
    net.stop().await;
}

/// One gRPC-Web call over HTTP/1.1 on a plain TCP socket: the response's data frames, and
/// its status lines (from the trailers frame, or from the headers of a trailers-only
/// response), lower-cased.
fn grpc_web_call(addr: std::net::SocketAddr, method: &str, message: &[u8]) -> (Vec<u8>, String) {
    use std::io::{Read, Write};
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /cbdc.v1.LedgerService/{method} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/grpc-web+proto"),
        "{head}"
    );
    let mut rest = &raw[split + 4..];
    // The body is chunked: undo it.
    let mut payload = Vec::new();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            payload.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else {
        payload = rest.to_vec();
    }
    let (mut data, mut trailers) = (Vec::new(), String::new());
    let mut p = &payload[..];
    while p.len() >= 5 {
        let flag = p[0];
        let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
        let frame = &p[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(frame));
        } else {
            data.extend_from_slice(frame);
        }
        p = &p[5 + len..];
    }
    if trailers.is_empty() {
        trailers = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("grpc-"))
            .map(|l| l.replace(": ", ":"))
            .collect::<Vec<_>>()
            .join("\r\n");
    }
    (data, trailers.to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_wallet_calls_the_ledger_with_grpc_web_over_http1() {
    use prost::Message;
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("100")).await;
    let addr = net.running().grpc_addr;
    // Wait for the first checkpoint, then read it over gRPC-Web.
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.ledger().checkpoint().await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while net
        .ledger()
        .checkpoint()
        .await
        .unwrap()
        .unwrap()
        .checkpoint
        .size
        == 0
    {
        assert!(Instant::now() < deadline, "no checkpoint of the issue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = v1::GetCheckpointRequest {}.encode_to_vec();
    let (data, trailers) =
        tokio::task::spawn_blocking(move || grpc_web_call(addr, "GetCheckpoint", &request))
            .await
            .unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let cp = v1::Checkpoint::decode(&data[..]).unwrap();
    assert_eq!(cp.ledger_id, 1);
    assert!(cp.size >= 1);
    assert_eq!(cp.outstanding, "100.00");

    // A refusal arrives in the trailers, with its details.
    let request = v1::GetTransferRequest {
        txid: vec![1; 5],
        ..Default::default()
    }
    .encode_to_vec();
    let (data, trailers) =
        tokio::task::spawn_blocking(move || grpc_web_call(addr, "GetTransfer", &request))
            .await
            .unwrap();
    assert!(data.is_empty());
    assert!(trailers.contains("grpc-status:3"), "{trailers:?}");
    assert!(trailers.contains("grpc-message:txid"), "{trailers:?}");
    assert!(trailers.contains("grpc-status-details-bin"), "{trailers}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_a_stable_reason_facts_and_the_field_on_calls_and_batch_rows() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("10000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, KycTier::Class4Anonymous).await;
    net.exchange_in(&alice.public(), "100.00", "x-a")
        .await
        .unwrap();
    let bob_addr = net.address(&bob.public());

    // A double spend: the input and the transfer that spent it, on a call and in a batch.
    let first = net
        .build_signed(&alice, &[(&bob_addr, "1.00")])
        .await
        .unwrap();
    let input = first.body().inputs[0].outpoint;
    let second = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
        .input(input, first.body().inputs[0].value)
        .output(
            LedgerId(1),
            first.body().inputs[0].value,
            Lock::Key(alice.public()),
        )
        .sign(&[&alice])
        .unwrap();
    net.submit(&first).await.unwrap();
    let status = net.submit(&second).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = error_info(&status).unwrap();
    assert_eq!(info.reason, "INPUT_SPENT");
    assert_eq!(info.metadata["input"], input.to_string());
    assert_eq!(info.metadata["spent_by"], first.txid().to_string());
    let rows = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![to_signed_transfer(&second)],
            return_outputs: false,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let row = rejected(&rows[0]);
    assert_eq!(row.code, info.reason);
    assert_eq!(row.metadata, info.metadata.into_iter().collect());

    // A cap: which limit, the cap and the amount (an anonymous wallet pays at most 2,000).
    net.exchange_in(&bob.public(), "2500.00", "x-b")
        .await
        .unwrap();
    let alice_addr = net.address(&alice.public());
    let status = net.pay(&bob, &alice_addr, "2100.00").await.unwrap_err();
    let info = error_info(&status).unwrap();
    assert_eq!(info.reason, "LIMIT_EXCEEDED");
    assert_eq!(info.metadata["limit"], "per_payment_cap");
    assert_eq!(info.metadata["cap"], "2000.00");
    assert_eq!(info.metadata["amount"], "2100.00");
    assert_eq!(info.metadata["key"], bob.public().to_string());
    assert!(status.get_details_retry_info().is_none());

    // A bad field: named in BadRequest.
    let status = net
        .client
        .build_transfer(v1::BuildTransferRequest {
            from_address: net.address(&alice.public()),
            payments: vec![v1::Payment {
                to_address: bob_addr.clone(),
                amount: "1.234".into(),
            }],
            auth: Some(net.read_auth(&alice, &net.address(&alice.public()))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_info(&status).unwrap().reason, "INVALID_FIELD");
    let bad = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "payments.amount");

    // A bad signature in a batch row: the same reason the call gets, with the witness.
    let mut forged = to_signed_transfer(
        &net.build_signed(&alice, &[(&bob_addr, "1.00")])
            .await
            .unwrap(),
    );
    forged.witnesses[0].signature[5] ^= 1;
    let rows = net
        .client
        .submit_transfers(v1::SubmitTransfersRequest {
            transfers: vec![forged.clone()],
            return_outputs: false,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let row = rejected(&rows[0]);
    assert_eq!(row.code, "BAD_SIGNATURE");
    assert_eq!(row.metadata["witness"], "0");
    let status = net
        .client
        .submit_transfer(v1::SubmitTransferRequest {
            transfer: Some(forged),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_info(&status).unwrap().reason, "BAD_SIGNATURE");

    // What the gRPC library answers by itself carries a reason too.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", net.running().grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cbdc.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_info(&status).unwrap().reason, "NOT_FOUND");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_lists_its_coins_builds_its_own_transfer_and_reads_it_decoded() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, KycTier::Class2).await;
    let alice_addr = net.address(&alice.public());
    let bob_addr = net.address(&bob.public());

    // Every call that creates outputs returns them.
    let mut funded = Vec::new();
    for (i, amount) in ["30.00", "20.00", "5.00"].iter().enumerate() {
        let r = net
            .exchange_in(&alice.public(), amount, &format!("x-{i}"))
            .await
            .unwrap();
        let c = committed(&r);
        let mine: Vec<_> = c
            .outputs
            .iter()
            .filter(|coin| {
                coin.output.as_ref().unwrap().lock
                    == Some(cbdc_proto::convert::to_lock(&Lock::Key(alice.public())))
            })
            .collect();
        assert_eq!(mine.len(), 1, "{c:?}");
        assert_eq!(mine[0].output.as_ref().unwrap().value, *amount);
        assert_eq!(mine[0].outpoint.as_ref().unwrap().txid, r.txid);
        funded.push(mine[0].clone());
    }

    // Listing coins, a page at a time, finds exactly those.
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = net
            .client
            .list_coins(v1::ListCoinsRequest {
                address: alice_addr.clone(),
                page: Some(v1::PageRequest {
                    page_size: 2,
                    cursor: cursor.clone(),
                }),
                auth: Some(net.read_auth(&alice, &alice_addr)),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.coins.len() <= 2);
        listed.extend(page.coins);
        cursor = page.page.unwrap().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    let key = |c: &v1::Coin| c.outpoint.as_ref().unwrap().txid.clone();
    let mut want = funded.clone();
    want.sort_by_key(key);
    listed.sort_by_key(key);
    assert_eq!(listed, want);
    // Someone else's grant lists nothing of Alice's.
    let status = net
        .client
        .list_coins(v1::ListCoinsRequest {
            address: alice_addr.clone(),
            page: None,
            auth: Some(net.read_auth(&bob, &alice_addr)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The client builds and signs its own transfer from the listed coins, no BuildTransfer.
    let coin = listed
        .iter()
        .find(|c| c.output.as_ref().unwrap().value == "30.00")
        .unwrap();
    let outpoint = OutPoint {
        txid: Txid(
            coin.outpoint
                .as_ref()
                .unwrap()
                .txid
                .clone()
                .try_into()
                .unwrap(),
        ),
        index: coin.outpoint.as_ref().unwrap().index as u16,
    };
    let t = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
        .input(outpoint, yuan("30.00"))
        .output(LedgerId(1), yuan("12.50"), Lock::Key(bob.public()))
        .output(LedgerId(1), yuan("17.50"), Lock::Key(alice.public()))
        .memo(b"order 42".to_vec())
        .sign(&[&alice])
        .unwrap();
    let r = net.submit(&t).await.unwrap();
    assert_eq!(committed(&r).outputs.len(), 2);

    // The payer reads it decoded, whole; the payee only its own output.
    let read =
        |net: &LedgerNet, reader: &cbdc_core::Keypair, address: &str| v1::GetTransferRequest {
            txid: t.txid().0.to_vec(),
            address: address.to_string(),
            auth: Some(net.read_auth(reader, address)),
        };
    let request = read(&net, &alice, &alice_addr);
    let payer = net.client.get_transfer(request).await.unwrap().into_inner();
    let view = payer.decoded.unwrap();
    assert_eq!(view.txid, t.txid().0.to_vec());
    assert_eq!(view.inputs.len(), 1);
    assert_eq!(view.inputs[0].value, "30.00");
    assert_eq!(view.outputs.len(), 2);
    assert_eq!(view.total, "30.00");
    assert_eq!(view.memo, b"order 42");
    assert!(payer.transfer.is_some());
    let request = read(&net, &bob, &bob_addr);
    let payee = net.client.get_transfer(request).await.unwrap().into_inner();
    let view = payee.decoded.unwrap();
    assert!(view.inputs.is_empty());
    assert_eq!(view.outputs.len(), 1);
    assert_eq!(view.outputs[0].output.as_ref().unwrap().value, "12.50");
    assert_eq!(view.total, "12.50");
    assert!(payee.transfer.is_none());
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_checks_that_the_log_only_grew_between_two_checkpoints() {
    let mut net = LedgerNet::start_with(1, |c| c.checkpoint_interval_ms = 50).await;
    net.issue(yuan("1000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    net.exchange_in(&alice.public(), "100.00", "x")
        .await
        .unwrap();
    let checkpoint = |net: &LedgerNet, at_least: u64| {
        let ledger = net.ledger().clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(c) = ledger.checkpoint().await.unwrap()
                    && c.checkpoint.size >= at_least
                {
                    return c.checkpoint;
                }
                assert!(Instant::now() < deadline, "no checkpoint of {at_least}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let old = checkpoint(&net, 2).await;
    let bob = net.address(&alice.public());
    for _ in 0..5 {
        net.pay(&alice, &bob, "1.00").await.unwrap();
    }
    let new = checkpoint(&net, old.size + 5).await;
    let got = net
        .client
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            old_size: old.size,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let cp = got.checkpoint.unwrap();
    assert!(cp.size >= new.size);
    let proof: Vec<[u8; 32]> = got
        .proof
        .iter()
        .map(|h| h.clone().try_into().unwrap())
        .collect();
    let new_root: [u8; 32] = cp.root.clone().try_into().unwrap();
    verify_consistency(old.size, cp.size, &proof, &old.root, &new_root).expect("consistent");
    // A log rewritten under the client (another old root) fails the check.
    let mut forged = old.root;
    forged[0] ^= 1;
    assert!(verify_consistency(old.size, cp.size, &proof, &forged, &new_root).is_err());
    // The proof to the exact checkpoint the client asks for.
    let exact = net
        .client
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            old_size: old.size,
            new_size: new.size,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exact.checkpoint.unwrap().root, new.root.to_vec());

    let status = net
        .client
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            old_size: cp.size + 1,
            new_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(error_info(&status).unwrap().reason, "INVALID_FIELD");
    let status = net
        .client
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            old_size: 1,
            new_size: 1_000_000,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_ledger_payment_is_settled_only_once_the_payee_ledger_credited_it() {
    let mut net = Network::start(2).await;
    net.mint(1, "1000.00", "m1").await.unwrap();
    net.quiesce().await;
    let alice = net.bank(1).open_wallet(0xa1, KycTier::Class2).await;
    let bob = net.bank(2).open_wallet(0xb0, KycTier::Class2).await;
    net.bank(1)
        .exchange_in(&alice.public(), "100.00", "x-a")
        .await
        .unwrap();
    net.quiesce().await;
    let bob_addr = net.bank(2).address(&bob.public());

    // The payee's ledger is down: the central bank settles the move but cannot deliver it.
    net.bank(2).stop().await;
    let paid = net.bank(1).pay(&alice, &bob_addr, "25.00").await.unwrap();
    let txid = paid.txid.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !net
        .bank(1)
        .ledger()
        .totals()
        .await
        .unwrap()
        .outbox
        .is_zero()
    {
        assert!(Instant::now() < deadline, "the central bank never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Out of the outbox, yet not credited: SETTLING, for as long as the payee is down.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let got = net.bank(1).get_transfer(&txid).await;
        assert_eq!(
            got.status,
            v1::TransferStatus::Settling as i32,
            "reported before the payee's ledger credited it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = net.audit().await;
    let to_bank_2 = audit.ledgers.iter().find(|l| l.ledger_id == 2).unwrap();
    assert_eq!(to_bank_2.in_flight_in, "25.00");

    // The payee's ledger comes back and credits it: now SETTLED.
    net.bank(2).restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = net.bank(1).get_transfer(&txid).await;
        if got.status == v1::TransferStatus::Settled as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(net.bank(2).balance(&bob.public()).await, "25.00");

    // Only the paying bank learns where its transfers are: bank 2 asking about bank 1's
    // payment hears nothing, and cannot ask in bank 1's name.
    let ask = |ledger_id| v1::GetSettlementStatusRequest {
        ledger_id,
        txids: vec![txid.clone(), vec![7; 32]],
    };
    let states = net
        .cb_as(&cbdc_runtime::tls::bank_name(1))
        .await
        .get_settlement_status(ask(1))
        .await
        .unwrap()
        .into_inner()
        .states;
    assert_eq!(
        states,
        [
            v1::SettlementState::Delivered as i32,
            v1::SettlementState::Unknown as i32
        ]
    );
    let mut bank_2 = net.cb_as(&cbdc_runtime::tls::bank_name(2)).await;
    let states = bank_2
        .get_settlement_status(ask(2))
        .await
        .unwrap()
        .into_inner()
        .states;
    assert_eq!(states[0], v1::SettlementState::Unknown as i32);
    let status = bank_2.get_settlement_status(ask(1)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    net.stop().await;
}
