//! Who may do what, and only once: every row is an order or a read from someone who may not
//! make it (or may not make it again), refused with a precise status and message, and the
//! ledger and the central bank's registry are unchanged afterwards.

use cbdc_core::messages::{OperatorStatus, WalletAction};
use cbdc_core::{Keypair, KycTier, LedgerId};
use cbdc_proto::requests;
use cbdc_proto::v1;
use cbdc_tests::network::Network;
use cbdc_tests::{ANON, LedgerNet, NETWORK, Table, yuan};
use tonic::Code;

/// What a refused order must leave unchanged: every wallet as the bank sees it (status,
/// tier, tier changes, balance) and the ledger's totals.
async fn snapshot(
    net: &mut LedgerNet,
    keys: &[cbdc_core::PublicKey],
) -> (cbdc_ledger::ledger::Totals, Vec<v1::Wallet>) {
    let totals = net.ledger().totals().await.unwrap();
    let mut wallets = Vec::new();
    for k in keys {
        let address = net.address(k);
        let w = net
            .client
            .get_wallet(v1::GetWalletRequest {
                auth: Some(net.authority_read(&address)),
                address,
            })
            .await
            .unwrap()
            .into_inner();
        wallets.push(w);
    }
    (totals, wallets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_bank_authority_orders_and_each_order_counts_once() {
    let mut net = LedgerNet::start(1).await;
    let issued = yuan("100000");
    net.issue(issued).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, ANON).await;
    let court = net.open_wallet(3, KycTier::Class1).await;
    let mallory = net.open_wallet(4, ANON).await;
    net.exchange_in(&alice.public(), "5.00", "x-5")
        .await
        .unwrap();
    net.exchange_in(&court.public(), "50.00", "x-court")
        .await
        .unwrap();
    let redeemed = requests::redeem(&net.authority, net.header("r-1"), "1.00");
    net.client.redeem(redeemed).await.unwrap();
    let (alice_addr, bob_addr) = (net.address(&alice.public()), net.address(&bob.public()));
    let tier = |net: &LedgerNet, signer: &Keypair, id: &str, tier: KycTier| {
        net.tier_request(signer, &bob_addr, tier, id)
    };
    net.client
        .set_wallet_tier(tier(&net, &net.authority, "kyc-bob", KycTier::Class3))
        .await
        .unwrap();
    // Freeze, unfreeze, freeze again by a later court order: the recorded unfreeze must not
    // lift the later freeze.
    let order = |net: &LedgerNet, action, id: &str| {
        net.wallet_action(&net.authority, action, &court.public(), id)
    };
    net.client
        .freeze_wallet(order(&net, WalletAction::Freeze, "f-1"))
        .await
        .unwrap();
    let unfreeze = order(&net, WalletAction::Unfreeze, "u-1");
    net.client.unfreeze_wallet(unfreeze.clone()).await.unwrap();
    net.client
        .freeze_wallet(order(&net, WalletAction::Freeze, "f-2"))
        .await
        .unwrap();

    let keys = [
        alice.public(),
        bob.public(),
        court.public(),
        mallory.public(),
        net.operator.public(),
    ];
    let before = snapshot(&mut net, &keys).await;
    let mut t = Table::default();

    // ----- opening: anonymous only -----
    for (name, tier) in [
        ("self-opening at class 1", v1::KycTier::Class1),
        ("self-opening at class 2", v1::KycTier::Class2),
        ("self-opening at class 3", v1::KycTier::Class3),
    ] {
        let newcomer = Keypair::from_seed(&[90; 32]);
        let mut r = net.open_request(&newcomer);
        r.tier = tier as i32;
        let r = net.client.open_wallet(r).await;
        t.check(
            name,
            r,
            Code::PermissionDenied,
            "tier: a customer opens an anonymous wallet only",
        );
    }

    // ----- the authority key, not the wallet's, not the hot key -----
    let r = net
        .client
        .set_wallet_tier(tier(&net, &bob, "self-up", KycTier::Class1))
        .await;
    t.check(
        "a wallet upgrades itself",
        r,
        Code::PermissionDenied,
        "authority_signature: does not verify against the bank's authority key",
    );
    let r = net
        .client
        .set_wallet_tier(tier(&net, &net.operator, "hot-up", KycTier::Class1))
        .await;
    t.check(
        "a tier change signed by the hot operator key",
        r,
        Code::PermissionDenied,
        "authority_signature: does not verify against the bank's authority key",
    );
    let r = net
        .client
        .unfreeze_wallet(net.wallet_action(
            &net.operator,
            WalletAction::Unfreeze,
            &court.public(),
            "hot-u",
        ))
        .await;
    t.check(
        "an unfreeze signed by the hot operator key",
        r,
        Code::PermissionDenied,
        "authority_signature",
    );
    let r = net
        .client
        .exchange(requests::exchange(
            &net.operator,
            net.header("hot-x"),
            &net.address(&mallory.public()),
            "100.00",
            None,
        ))
        .await;
    t.check(
        "an exchange signed by the hot operator key",
        r,
        Code::PermissionDenied,
        "authority_signature",
    );

    // ----- once per request id -----
    // Sent again as recorded, the unfreeze answers with the wallet as it is: still frozen.
    let replayed = net
        .client
        .unfreeze_wallet(unfreeze.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.status, v1::WalletStatus::Frozen as i32);
    t.rows.push(
        "a recorded unfreeze replayed after a later freeze: answered with the wallet as it is, still Frozen"
            .into(),
    );
    let r = net
        .client
        .unfreeze_wallet(net.wallet_action(
            &net.authority,
            WalletAction::Unfreeze,
            &court.public(),
            "f-2",
        ))
        .await;
    t.check(
        "a wallet order's id reused for another action",
        r,
        Code::AlreadyExists,
        "header.request_id: \"f-2\" was already used for a different wallet order",
    );
    let r = net
        .client
        .set_wallet_tier(tier(&net, &net.authority, "kyc-bob", KycTier::Class1))
        .await;
    t.check(
        "a tier change's id reused for another tier",
        r,
        Code::AlreadyExists,
        "header.request_id: \"kyc-bob\" was already used for a different tier order",
    );
    // The confirmed attack: an exchange to another wallet under an earlier exchange's id.
    let r = net.exchange_in(&bob.public(), "7.00", "x-5").await;
    t.check(
        "an exchange's id reused for another wallet and amount",
        r,
        Code::AlreadyExists,
        "header.request_id: \"x-5\" was already used for a different exchange order",
    );
    let r = net
        .client
        .redeem(requests::redeem(&net.authority, net.header("r-1"), "2.00"))
        .await;
    t.check(
        "a redemption's id reused for another amount",
        r,
        Code::AlreadyExists,
        "was already used for a different redeem order",
    );

    // ----- for this network, this ledger, now -----
    let now = net.clock_ms.load(std::sync::atomic::Ordering::SeqCst);
    type Bend = fn(&mut v1::RequestHeader, u64);
    let bent: [(&str, Bend, Code, &str); 4] = [
        (
            "an expired order",
            |h, now| h.expires_at_unix_ms = now - 1,
            Code::FailedPrecondition,
            "header.expires_at_unix_ms: the order expired",
        ),
        (
            "an order valid for two days",
            |h, now| h.expires_at_unix_ms = now + 2 * 24 * 3600 * 1000,
            Code::InvalidArgument,
            "orders are short-lived",
        ),
        (
            "an order signed for another network",
            |h, _| h.network = "cbdc-main".into(),
            Code::InvalidArgument,
            "header.network: the order is for network \"cbdc-main\"",
        ),
        (
            "an order signed for another ledger",
            |h, _| h.target = 2,
            Code::InvalidArgument,
            "header.target: the order is for ledger 2, this is 1",
        ),
    ];
    for (name, bend, code, needle) in bent {
        let mut h = net.header(name);
        bend(&mut h, now);
        let signed = requests::exchange(&net.authority, h, &bob_addr, "1.00", None);
        let r = net.client.exchange(signed).await;
        t.check(name, r, code, needle);
    }
    let mut missing = requests::exchange(
        &net.authority,
        net.header("no-header"),
        &bob_addr,
        "1.00",
        None,
    );
    missing.header = None;
    let r = net.client.exchange(missing).await;
    t.check(
        "an order without its header",
        r,
        Code::InvalidArgument,
        "header: required field is missing",
    );

    // ----- private reads -----
    let r = net
        .client
        .get_balance(v1::GetBalanceRequest {
            address: alice_addr.clone(),
            auth: None,
        })
        .await;
    t.check(
        "an unsigned balance read",
        r,
        Code::Unauthenticated,
        "auth: required",
    );
    let r = net
        .client
        .list_history(v1::ListHistoryRequest {
            address: alice_addr.clone(),
            page: None,
            auth: Some(net.read_auth(&mallory, &alice_addr)),
        })
        .await;
    t.check(
        "a history read signed by another wallet's key",
        r,
        Code::PermissionDenied,
        "auth.signature",
    );
    let mut stale = net.read_auth(&alice, &alice_addr);
    stale.expires_at_unix_ms = now;
    stale.signature = cbdc_core::messages::Signed::sign(
        &cbdc_core::messages::ReadGrant {
            network: NETWORK,
            ledger: LedgerId(1),
            address: &alice_addr,
            expires_unix_ms: now,
        },
        &alice,
    )
    .to_vec();
    let r = net
        .client
        .get_wallet(v1::GetWalletRequest {
            address: alice_addr.clone(),
            auth: Some(stale),
        })
        .await;
    t.check(
        "an expired read grant",
        r,
        Code::Unauthenticated,
        "auth.expires_at_unix_ms",
    );
    let mut forged_authority = net.read_auth(&mallory, &alice_addr);
    forged_authority.by_authority = true;
    let r = net
        .client
        .get_balance(v1::GetBalanceRequest {
            address: alice_addr.clone(),
            auth: Some(forged_authority),
        })
        .await;
    t.check(
        "a read claiming the authority, signed by a wallet",
        r,
        Code::PermissionDenied,
        "must be signed by the bank's authority key",
    );
    let r = net
        .client
        .watch_wallet(v1::WatchWalletRequest {
            address: alice_addr.clone(),
            cursor: String::new(),
            auth: None,
        })
        .await;
    t.check(
        "an unsigned watch",
        r,
        Code::Unauthenticated,
        "auth: required",
    );
    let r = net
        .client
        .build_transfer(v1::BuildTransferRequest {
            from_address: alice_addr.clone(),
            payments: vec![v1::Payment {
                to_address: net.address(&mallory.public()),
                amount: "1.00".into(),
            }],
            memo: Vec::new(),
            valid_for_s: 0,
            auth: Some(net.read_auth(&mallory, &alice_addr)),
        })
        .await;
    t.check(
        "building from another wallet's coins",
        r,
        Code::PermissionDenied,
        "auth.signature",
    );

    let after = snapshot(&mut net, &keys).await;
    assert_eq!(before, after, "a refused order or read changed the ledger");
    // 1.00 left the vault for the central bank (in the outbox: no central bank runs here).
    net.assert_conserved(issued.checked_sub(yuan("1.00")).unwrap())
        .await;
    t.print();
    println!(
        "{} hostile orders and reads refused, ledger unchanged",
        t.rows.len()
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payee_sees_its_outputs_and_a_stranger_sees_nothing() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let alice = net.open_wallet(1, KycTier::Class2).await;
    let bob = net.open_wallet(2, ANON).await;
    let eve = net.open_wallet(3, ANON).await;
    net.exchange_in(&alice.public(), "100.00", "x")
        .await
        .unwrap();
    let (alice_addr, bob_addr, eve_addr) = (
        net.address(&alice.public()),
        net.address(&bob.public()),
        net.address(&eve.public()),
    );
    let paid = net.pay(&alice, &bob_addr, "30.00").await.unwrap();
    net.ledger().sequence_all().await.unwrap();
    let get = |net: &LedgerNet, who: &Keypair, addr: &str| v1::GetTransferRequest {
        txid: paid.txid.clone(),
        address: addr.to_string(),
        auth: Some(net.read_auth(who, addr)),
    };

    // The payer sees everything, with the change.
    let payer = net
        .client
        .get_transfer(get(&net, &alice, &alice_addr))
        .await
        .unwrap()
        .into_inner();
    let body = payer.transfer.expect("the payer's view has the body").body;
    let body = cbdc_core::TransferBody::decode(&body).unwrap();
    assert_eq!(body.outputs.len(), 2, "payment and change");

    // The payee sees the output paying it, not the body, not the change.
    let payee = net
        .client
        .get_transfer(get(&net, &bob, &bob_addr))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payee.status, v1::TransferStatus::Committed as i32);
    assert!(payee.transfer.is_none(), "{payee:?}");
    assert_eq!(payee.received.len(), 1);
    assert_eq!(
        payee.received[0].output.as_ref().unwrap().value,
        "30.00".to_string()
    );
    let receipt = net
        .client
        .get_receipt(v1::GetReceiptRequest {
            txid: paid.txid.clone(),
            address: bob_addr.clone(),
            auth: Some(net.read_auth(&bob, &bob_addr)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.transfer.is_none());
    // The payee's receipt still verifies offline: the leaf commits to the txid.
    let decoded = cbdc_proto::convert::receipt(&receipt).unwrap();
    cbdc_core::audit::verify_receipt(&decoded, LedgerId(1), &net.operator.public())
        .expect("the payee's receipt verifies");

    // A stranger learns nothing: the transfer is unknown to it, the receipt not found.
    let stranger = net
        .client
        .get_transfer(get(&net, &eve, &eve_addr))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stranger.status, v1::TransferStatus::Unknown as i32);
    assert!(stranger.transfer.is_none() && stranger.received.is_empty());
    let r = net
        .client
        .get_receipt(v1::GetReceiptRequest {
            txid: paid.txid.clone(),
            address: eve_addr.clone(),
            auth: Some(net.read_auth(&eve, &eve_addr)),
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_changes_only_by_new_administrator_orders() {
    let mut net = Network::start(2).await;
    let mut t = Table::default();
    let status = |net: &Network, id: &str, to: OperatorStatus| {
        requests::set_operator_status(&net.admin, net.header(id), LedgerId(1), to)
    };
    // Suspended, reactivated, then the recorded suspension replayed: it changes nothing.
    let suspend = status(&net, "suspend-0", OperatorStatus::Suspended);
    net.cb.set_operator_status(suspend.clone()).await.unwrap();
    net.cb
        .set_operator_status(status(&net, "activate-0", OperatorStatus::Active))
        .await
        .unwrap();
    let replayed = net
        .cb
        .set_operator_status(suspend)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.status, v1::OperatorStatus::Active as i32);
    t.rows.push(
        "a recorded suspension replayed after a reactivation: answered, the bank stays Active"
            .into(),
    );
    net.cb
        .set_operator_status(status(&net, "suspend-1", OperatorStatus::Suspended))
        .await
        .unwrap();
    let operators = |net: &mut Network| {
        let mut cb = net.cb.clone();
        async move {
            cb.list_operators(v1::ListOperatorsRequest { page: None })
                .await
                .unwrap()
                .into_inner()
                .operators
        }
    };
    let before = operators(&mut net).await;
    assert_eq!(before[0].status, v1::OperatorStatus::Suspended as i32);

    // The original registration, replayed: answered, and the bank stays suspended.
    let replay = net.register_request(&net.banks[0]);
    let answered = net.cb.register_operator(replay).await.unwrap().into_inner();
    assert_eq!(answered.status, v1::OperatorStatus::Suspended as i32);
    t.rows
        .push("a registration replayed for a suspended bank: answered, still Suspended".into());
    // A fresh registration with the same key (an endpoint change) keeps the status too.
    let mut fresh = net.register_request(&net.banks[0]);
    fresh.header = Some(net.header("register-again"));
    let fresh = cbdc_proto::requests::register_operator(
        &net.admin,
        net.header("register-again"),
        LedgerId(1),
        &net.banks[0].operator.public(),
        &fresh.operator.as_ref().unwrap().endpoint,
    );
    let answered = net.cb.register_operator(fresh).await.unwrap().into_inner();
    assert_eq!(answered.status, v1::OperatorStatus::Suspended as i32);
    t.rows
        .push("a new registration of a suspended bank: its status is kept".into());

    let r = net
        .cb
        .set_operator_status(requests::set_operator_status(
            &net.admin,
            net.header("suspend-1"),
            LedgerId(1),
            OperatorStatus::Active,
        ))
        .await;
    t.check(
        "a status order's id reused to reactivate",
        r,
        Code::AlreadyExists,
        "header.request_id: \"suspend-1\" was already used for a different status order",
    );
    net.mint(2, "10.00", "m-1").await.unwrap();
    let r = net.mint(2, "10000.00", "m-1").await;
    t.check(
        "a mint's id reused for another amount",
        r,
        Code::AlreadyExists,
        "was already used for a different mint order",
    );
    let mut h = net.header("m-old");
    h.expires_at_unix_ms = 1_000;
    let r = net
        .cb
        .mint(requests::mint(&net.admin, h, LedgerId(2), "1.00", "ref"))
        .await;
    t.check("an expired mint", r, Code::FailedPrecondition, "expired");
    let mut h = net.header("m-net");
    h.network = "cbdc-main".into();
    let r = net
        .cb
        .mint(requests::mint(&net.admin, h, LedgerId(2), "1.00", "ref"))
        .await;
    t.check(
        "a mint signed for another network",
        r,
        Code::InvalidArgument,
        "header.network",
    );
    let mut h = net.header("m-target");
    h.target = 2;
    let r = net
        .cb
        .mint(requests::mint(&net.admin, h, LedgerId(2), "1.00", "ref"))
        .await;
    t.check(
        "a mint addressed to a bank's ledger",
        r,
        Code::InvalidArgument,
        "header.target",
    );
    let signing = Keypair::from_seed(&cbdc_tests::network::CENTRAL_BANK_SEED);
    let r = net
        .cb
        .mint(requests::mint(
            &signing,
            net.header("m-hot"),
            LedgerId(2),
            "1.00",
            "ref",
        ))
        .await;
    t.check(
        "a mint signed by the central bank's countersigning key",
        r,
        Code::PermissionDenied,
        "admin_signature: does not verify against the central bank administrator's key",
    );

    let after = operators(&mut net).await;
    assert_eq!(before, after, "a refused order changed the registry");
    assert_eq!(net.audit().await.issued, "10.00");
    t.print();
    net.stop().await;
}

/// A service refuses to start when its authority key is its hot key.
#[tokio::test]
async fn the_authority_key_must_not_be_the_hot_key() {
    let dir = tempfile::tempdir().unwrap();
    let operator = Keypair::from_seed(&[5; 32]);
    let mut config =
        cbdc_ledger::config::LedgerConfig::local(1, dir.path(), NETWORK, &operator.public());
    cbdc_runtime::secret::write_private(
        &config.operator_key_file,
        hex::encode(operator.seed()).as_bytes(),
    )
    .unwrap();
    config.central_bank_public_key = None;
    let err = cbdc_ledger::serve(config, cbdc_runtime::shutdown::Shutdown::new())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("authority_public_key: is the operator key"),
        "{err}"
    );
}

/// Mutual TLS between the services: a caller without a certificate, with one from another
/// CA, or with another service's, is refused; plaintext is not served at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_strangers_and_impostors() {
    use cbdc_proto::v1::issuance_service_client::IssuanceServiceClient;
    use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let mut net = Network::start(2).await;
    net.mint(1, "100.00", "m-1").await.unwrap();
    net.quiesce().await;
    let mut t = Table::default();
    let bank1 = format!("https://{}", net.banks[0].running().grpc_addr);
    let cb = format!("https://{}", net.cb_addr());
    let ca_pem = net.ca.cert_pem();
    // Client settings trusting the network's CA, presenting `identity` (cert, key) if any.
    let tls = |peer: &str, identity: Option<(String, String)>| {
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .domain_name(peer);
        if let Some((cert, key)) = identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    };
    let issued = |name: &str| {
        let i = net.ca.issue(name).unwrap();
        Some((i.cert_pem, i.key_pem))
    };
    let connect = async |url: &str, tls: ClientTlsConfig| {
        Endpoint::from_shared(url.to_string())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
    };
    let delivery = v1::DeliverInboundBatchRequest {
        settlements: vec![v1::Settlement::default()],
    };

    // A wallet-like client without a certificate: served, but not for deliveries.
    let channel = connect(&bank1, tls("bank-1", None)).await.unwrap();
    let r = LedgerServiceClient::new(channel)
        .deliver_inbound_batch(delivery.clone())
        .await;
    t.check(
        "a delivery from a client without a certificate",
        r,
        Code::Unauthenticated,
        "this call is for the central-bank service only",
    );
    // Another bank's valid certificate is not the central bank's.
    let channel = connect(&bank1, tls("bank-1", issued("bank-2")))
        .await
        .unwrap();
    let r = LedgerServiceClient::new(channel)
        .deliver_inbound_batch(delivery.clone())
        .await;
    t.check(
        "a delivery with bank 2's certificate",
        r,
        Code::PermissionDenied,
        "the client certificate names another",
    );
    // The whole log is for the central bank and the administrator: not for a wallet, not for
    // another bank; the administrator's certificate reads it.
    for (who, identity, code) in [
        (
            "a client without a certificate",
            None,
            Code::PermissionDenied,
        ),
        (
            "bank 2's certificate",
            issued("bank-2"),
            Code::PermissionDenied,
        ),
        ("the administrator's certificate", issued("admin"), Code::Ok),
    ] {
        let channel = connect(&bank1, tls("bank-1", identity)).await.unwrap();
        let r = LedgerServiceClient::new(channel)
            .stream_log(v1::StreamLogRequest {})
            .await;
        match (code, r) {
            (Code::Ok, Ok(_)) => t.rows.push(format!("StreamLog with {who}: served")),
            (_, r) => t.check(
                &format!("StreamLog with {who}"),
                r.map(|_| ()),
                code,
                "StreamLog is for the central bank's or the administrator's certificate",
            ),
        }
    }
    // A certificate from another CA, even naming the central bank, fails the handshake.
    let rogue = cbdc_runtime::tls::DevCa::new("rogue CA").unwrap();
    let forged = rogue.issue("central-bank").unwrap();
    let r = connect(
        &bank1,
        tls("bank-1", Some((forged.cert_pem, forged.key_pem))),
    )
    .await;
    // The handshake fails at connect, or (TLS 1.3 reports a refused client certificate
    // after the client's side of the handshake) at the first call: a transport error
    // (the server's alert, a reset or a broken pipe, as the race falls), never an answer.
    let refused = match r {
        Err(e) => format!("connect: {e:?}"),
        Ok(channel) => {
            let s = LedgerServiceClient::new(channel)
                .deliver_inbound_batch(delivery.clone())
                .await
                .expect_err("a rogue certificate must not be served");
            assert!(
                matches!(
                    s.code(),
                    Code::Unknown | Code::Cancelled | Code::Unavailable
                ) && s.message().contains("transport error")
                    || s.message().contains("canceled")
                    || s.message().contains("connection"),
                "{s:?}"
            );
            format!("{:?}: {}", s.code(), s.message())
        }
    };
    t.rows.push(format!(
        "a delivery with a certificate from another CA (naming central-bank): handshake refused ({refused})"
    ));
    // A client that trusts another CA does not accept the ledger's certificate.
    let r = Endpoint::from_shared(bank1.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(rogue.cert_pem()))
                .domain_name("bank-1"),
        )
        .unwrap()
        .connect()
        .await;
    assert!(
        r.is_err(),
        "a server certificate from another CA was accepted"
    );
    t.rows
        .push("a client trusting another CA: the ledger's certificate refused".into());
    // The right CA, the wrong name: bank 1 is not bank 2.
    let r = connect(&bank1, tls("bank-2", None)).await;
    assert!(r.is_err(), "bank 1's certificate passed for bank 2's");
    t.rows
        .push("a client expecting bank 2 at bank 1's address: refused".into());
    // Plaintext is not served.
    let plain = format!("http://{}", net.banks[0].running().grpc_addr);
    let r = async {
        let channel = Endpoint::from_shared(plain)
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        LedgerServiceClient::new(channel)
            .get_checkpoint(v1::GetCheckpointRequest {})
            .await
    }
    .await;
    assert!(r.is_err(), "plaintext was served: {r:?}");
    t.rows.push("a plaintext client: refused".into());

    // The central bank: the administrator's orders need the admin certificate, a bank's
    // settlements its own.
    let channel = connect(&cb, tls("central-bank", None)).await.unwrap();
    let mut anonymous = IssuanceServiceClient::new(channel);
    let r = anonymous.mint(net.mint_request(1, "1.00", "m-anon")).await;
    t.check(
        "a mint from a client without a certificate",
        r,
        Code::Unauthenticated,
        "this call is for the admin service only",
    );
    let audit = anonymous.audit(v1::AuditRequest {}).await;
    assert!(audit.is_ok(), "reads need no certificate: {audit:?}");
    let channel = connect(&cb, tls("central-bank", issued("bank-2")))
        .await
        .unwrap();
    let r = IssuanceServiceClient::new(channel)
        .settle_batch(v1::SettleBatchRequest {
            from_ledger_id: 1,
            transfers: vec![],
            operator_signature: vec![],
        })
        .await;
    t.check(
        "bank 2's certificate settling for ledger 1",
        r,
        Code::PermissionDenied,
        "this call is for the bank-1 service only",
    );
    let r = net
        .cb_as("bank-1")
        .await
        .mint(net.mint_request(1, "1.00", "m-bank"))
        .await;
    t.check(
        "a mint with a bank's certificate",
        r,
        Code::PermissionDenied,
        "this call is for the admin service only",
    );
    assert_eq!(net.audit().await.issued, "100.00");
    t.print();
    net.stop().await;
}

/// Watch streams are bounded per wallet: the ninth is refused, and closing one frees its
/// slot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_bounded_per_wallet() {
    let mut net = LedgerNet::start(1).await;
    let a = net.open_wallet(1, ANON).await;
    let address = net.address(&a.public());
    let watch = |net: &LedgerNet| {
        let mut client = net.client.clone();
        let request = v1::WatchWalletRequest {
            address: address.clone(),
            cursor: String::new(),
            auth: Some(net.read_auth(&a, &address)),
        };
        async move { client.watch_wallet(request).await }
    };
    let mut open = Vec::new();
    for _ in 0..cbdc_ledger::service::WATCHERS_PER_WALLET {
        open.push(watch(&net).await.expect("within the bound"));
    }
    let r = watch(&net).await;
    let s = r.expect_err("over the bound");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().contains("watch streams of this wallet"),
        "{s:?}"
    );
    drop(open.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match watch(&net).await {
            Ok(stream) => {
                open.push(stream);
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the slot was never freed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    net.stop().await;
}
