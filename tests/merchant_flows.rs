//! The three platform flows end to end over HTTP, against a real network of a central bank
//! and two bank ledgers talking mutual TLS: an e-commerce order paid by QR from a wallet at
//! another bank and partly refunded; a ride whose hold is captured with a split between
//! driver and platform; a subscription mandate charged and revoked. A webhook receiver in
//! the test checks every delivery's signature, fails the first attempts on purpose, and sees
//! exactly one accepted delivery per event id. Statements reconcile to the ledger, and a
//! spend the gateway did not make shows up as a difference. Money is conserved throughout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cbdc_core::{
    Address, Amount, KycTier, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, Txid,
    UnixSeconds,
};
use cbdc_merchant::payments::SignedTransferJson;
use cbdc_proto::v1;
use cbdc_tests::merchant::MerchantNet;
use cbdc_tests::{LedgerNet, yuan};
use serde_json::{Value, json};

/// Deliveries of each event id the receiver refuses before it accepts one.
const REFUSE_FIRST: u32 = 2;

#[derive(Default)]
struct Received {
    attempts: HashMap<String, u32>,
    accepted: HashMap<String, u32>,
    events: Vec<Value>,
    bad_signatures: u32,
}

/// A merchant's webhook endpoint: checks the signature, refuses the first attempts of each
/// event, records the accepted ones.
async fn webhook_receiver(
    gateway_key: cbdc_core::keys::CheckedKey,
) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let timestamp: u64 = h("cbdc-timestamp").parse().unwrap_or(0);
                let now = cbdc_tests::merchant::now();
                let mut r = state.lock().unwrap();
                if let Err(e) = cbdc_merchant::events::verify(
                    &gateway_key,
                    timestamp,
                    &h("cbdc-signature"),
                    &body,
                    now,
                    300,
                ) {
                    r.bad_signatures += 1;
                    return (StatusCode::BAD_REQUEST, e);
                }
                let event: Value = serde_json::from_slice(&body).unwrap();
                let id = h("cbdc-event-id");
                assert_eq!(event["id"], id.as_str());
                let n = r.attempts.entry(id.clone()).or_default();
                *n += 1;
                if *n <= REFUSE_FIRST {
                    return (StatusCode::SERVICE_UNAVAILABLE, "busy, try later".into());
                }
                *r.accepted.entry(id).or_default() += 1;
                r.events.push(event);
                (StatusCode::OK, String::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks"), received)
}

/// Waits until the receiver accepted an event of `kind` about `reference` (matched in its
/// data); returns it.
async fn delivered(
    net: &MerchantNet,
    r: &Arc<Mutex<Received>>,
    kind: &str,
    field: &str,
    value: &str,
) -> Value {
    net.eventually(
        &format!("a delivered {kind} for {value}"),
        || {
            let found = r
                .lock()
                .unwrap()
                .events
                .iter()
                .find(|e| e["type"] == kind && e["data"][field] == value)
                .cloned()
                .unwrap_or(Value::Null);
            async move { found }
        },
        |v| !v.is_null(),
    )
    .await
}

/// The payer's coins, as its own wallet lists them.
async fn coins(
    bank: &mut LedgerNet,
    wallet: &cbdc_core::Keypair,
) -> Vec<(OutPoint, cbdc_core::Output)> {
    let address = bank.address(&wallet.public());
    let r = bank
        .client
        .list_coins(v1::ListCoinsRequest {
            auth: Some(bank.read_auth(wallet, &address)),
            address,
            page: Some(v1::PageRequest {
                page_size: 100,
                cursor: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    r.coins
        .iter()
        .map(|c| {
            (
                cbdc_proto::convert::outpoint("outpoint", c.outpoint.as_ref()).unwrap(),
                cbdc_proto::convert::output("output", c.output.as_ref(), Amount::DEFAULT_MAX)
                    .unwrap(),
            )
        })
        .collect()
}

/// A transfer the wallet signs: `amount` under `lock` on `ledger`, the change back to it.
async fn wallet_transfer(
    bank: &mut LedgerNet,
    wallet: &cbdc_core::Keypair,
    outputs: &[(LedgerId, Amount, Lock)],
    memo: &str,
) -> Transfer {
    let total = Amount::checked_sum(outputs.iter().map(|o| o.1)).unwrap();
    let mut b =
        TransferBuilder::new(UnixSeconds(bank.now_s() + 300)).memo(memo.as_bytes().to_vec());
    let mut sum = Amount::ZERO;
    for (outpoint, out) in coins(bank, wallet).await {
        if sum >= total {
            break;
        }
        if out.lock == Lock::Key(wallet.public()) {
            b = b.input(outpoint, out.value);
            sum = sum.checked_add(out.value).unwrap();
        }
    }
    assert!(sum >= total, "the wallet holds {sum}, needs {total}");
    for (l, a, lock) in outputs {
        b = b.output(*l, *a, *lock);
    }
    if sum > total {
        b = b.output(
            bank.ledger_id(),
            sum.checked_sub(total).unwrap(),
            Lock::Key(wallet.public()),
        );
    }
    b.sign(&[wallet]).unwrap()
}

fn transfer_json(t: &Transfer) -> Value {
    serde_json::to_value(SignedTransferJson::of(t)).unwrap()
}

/// The balance of `address` at bank `index + 1`, read by the bank's authority.
async fn balance_at(net: &MerchantNet, index: usize, address: &str) -> Value {
    let bank = &net.net.banks[index];
    let r = bank
        .client
        .clone()
        .get_balance(v1::GetBalanceRequest {
            address: address.to_string(),
            auth: Some(bank.authority_read(address)),
        })
        .await
        .unwrap()
        .into_inner();
    json!(r.balance)
}

/// The wallet pays `amount` to the collection wallet with `memo`.
async fn pay_with(
    bank: &mut LedgerNet,
    who: &cbdc_core::Keypair,
    collection: Address,
    amount: &str,
    memo: &str,
) -> Transfer {
    wallet_transfer(
        bank,
        who,
        &[(collection.ledger, yuan(amount), Lock::Key(collection.key))],
        memo,
    )
    .await
}

/// A network of two banks with money, a gateway, merchant `m-1` onboarded at bank 1 with
/// its collection wallet raised to class 1, and a webhook receiver.
async fn setup() -> (MerchantNet, Arc<Mutex<Received>>, Address) {
    let mut net = MerchantNet::start(2).await;
    net.net.mint(1, "10000.00", "mint-1").await.expect("mints");
    net.net.mint(2, "10000.00", "mint-2").await.expect("mints");
    net.net.quiesce().await;
    let key: Value = net
        .ok(&net.signed(
            &net.bank,
            cbdc_merchant::auth::Signer::Bank(1),
            "GET",
            "/v1/webhook-key",
            &Value::Null,
        ))
        .await;
    let gateway_key = cbdc_merchant::parse_key("public_key", key["public_key"].as_str().unwrap())
        .unwrap()
        .checked_key()
        .unwrap();
    let (url, received) = webhook_receiver(gateway_key).await;
    let merchant = net.onboard_with(&url).await;
    let collection: Address = merchant["collection_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The bank raises its merchant's collection wallet to class 1, as for any business.
    let address = collection.to_string();
    let r = net
        .net
        .bank(1)
        .tier_request(&net.bank, &address, KycTier::Class1, "kyc-m-1");
    net.net
        .bank(1)
        .client
        .set_wallet_tier(r)
        .await
        .expect("tier");
    (net, received, collection)
}

async fn balance(net: &mut MerchantNet, ledger: u32, key: &cbdc_core::PublicKey) -> String {
    net.net.bank(ledger).balance(key).await
}

fn order_body(otn: &str, amount: &str) -> Value {
    json!({"out_trade_no": otn, "amount": amount, "description": "1 × rice cooker"})
}

/// Reads what the receiver accepted and checks: no bad signatures, every event retried
/// after refusals and accepted exactly once.
fn check_deliveries(r: &Arc<Mutex<Received>>) -> usize {
    let r = r.lock().unwrap();
    assert_eq!(r.bad_signatures, 0);
    for (id, n) in &r.accepted {
        assert_eq!(*n, 1, "{id} was accepted {n} times");
        assert_eq!(
            r.attempts[id],
            REFUSE_FIRST + 1,
            "{id}: refused {REFUSE_FIRST} times, then accepted"
        );
    }
    r.accepted.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_by_qr_from_another_bank_partly_refunded_reconciles_to_the_ledger() {
    let (mut net, received, collection) = setup().await;
    let payer = net.net.bank(2).open_wallet(0xb1, KycTier::Class2).await;
    net.net
        .bank(2)
        .exchange_in(&payer.public(), "100.00", "x-payer")
        .await
        .expect("exchange");
    let payer_address = net.net.bank(2).address(&payer.public());

    let order = net
        .ok(&net.as_merchant("POST", "/v1/orders", &order_body("EC20261130001", "12.30")))
        .await;
    // The wallet scans the QR code: its payload names the address, amount and memo.
    let (_, png) = net
        .send(&net.as_merchant("GET", "/v1/orders/EC20261130001/qr.png", &Value::Null))
        .await;
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let w = info.width as usize;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, info.height as usize, |x, y| {
        pixels[y * w + x]
    });
    let (_, uri) = image.detect_grids()[0].decode().unwrap();
    assert_eq!(uri, order["payment_uri"]);
    let (to, query) = uri.strip_prefix("cbdc:").unwrap().split_once('?').unwrap();
    let params: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let to: Address = to.parse().unwrap();
    assert_eq!(to, collection);
    let pay = wallet_transfer(
        net.net.bank(2),
        &payer,
        &[(to.ledger, yuan(params["amount"]), Lock::Key(to.key))],
        params["memo"],
    )
    .await;
    let body = json!({"payer_address": payer_address, "transfer": transfer_json(&pay)});
    let answer = net
        .ok(&net.public("/v1/merchants/m-1/orders/EC20261130001/pay", &body))
        .await;
    // From another bank: on its way until the credit reaches the merchant's bank.
    assert_eq!(answer["pending_txid"], pay.txid().to_string());
    let paid = net
        .eventually(
            "the order paid",
            || async {
                net.ok(&net.as_merchant("GET", "/v1/orders/EC20261130001", &Value::Null))
                    .await
            },
            |o| o["status"] == "PAID",
        )
        .await;
    assert_eq!(paid["txid"], pay.txid().to_string());
    assert_eq!(paid["payer_address"], payer_address);
    delivered(
        &net,
        &received,
        "order.paid",
        "out_trade_no",
        "EC20261130001",
    )
    .await;
    // Paying it again with the same transfer answers the paid order; with another, refused.
    assert_eq!(
        net.ok(&net.public("/v1/merchants/m-1/orders/EC20261130001/pay", &body))
            .await["status"],
        "PAID"
    );

    // Two partial refunds; the first again is the same refund; more than is left is refused.
    let refund = |no: &str, amount: &str| {
        net.as_merchant("POST", "/v1/refunds", &json!({"out_refund_no": no, "out_trade_no": "EC20261130001", "amount": amount, "reason": "one item returned"}))
    };
    let r1 = net.ok(&refund("RF20261130001", "5.00")).await;
    assert_eq!(r1["status"], "SUCCEEDED", "{r1}");
    assert_eq!(r1["to_address"], payer_address);
    assert_eq!(net.ok(&refund("RF20261130001", "5.00")).await, r1);
    let (status, too_much) = net.json(&refund("RF20261130002", "7.31")).await;
    assert_eq!(
        (status, too_much["error"]["field"].as_str()),
        (409, Some("amount")),
        "{too_much}"
    );
    let (status, other) = net.json(&refund("RF20261130001", "1.00")).await;
    assert_eq!(
        (status, other["error"]["field"].as_str()),
        (409, Some("out_refund_no")),
        "{other}"
    );
    let r2 = net.ok(&refund("RF20261130002", "7.30")).await;
    assert_eq!(r2["status"], "SUCCEEDED");
    let order = net
        .ok(&net.as_merchant("GET", "/v1/orders/EC20261130001", &Value::Null))
        .await;
    assert_eq!(
        (order["status"].as_str(), order["refunded"].as_str()),
        (Some("REFUNDED"), Some("12.30"))
    );
    delivered(
        &net,
        &received,
        "refund.succeeded",
        "out_refund_no",
        "RF20261130002",
    )
    .await;
    // The payer has everything back once the refunds cross to its bank.
    net.eventually(
        "the payer refunded",
        || balance_at(&net, 1, &payer_address),
        |v| v == "100.00",
    )
    .await;

    // The day's statement: the payment in, two refunds out, net zero; it reconciles.
    let today = cbdc_merchant::statements::day(net.gateway.now_ms());
    let path = format!("/v1/statements/{today}");
    let st = net.ok(&net.as_merchant("GET", &path, &Value::Null)).await;
    let kinds: Vec<(&str, &str)> = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("payment", "12.30"), ("refund", "5.00"), ("refund", "7.30")]
    );
    assert_eq!(
        (
            st["total_in"].as_str(),
            st["total_out"].as_str(),
            st["net"].as_str()
        ),
        (Some("12.30"), Some("12.30"), Some("0.00"))
    );
    let csv_path = format!("/v1/statements/{today}/csv");
    let (status, csv) = net
        .send(&net.as_merchant("GET", &csv_path, &Value::Null))
        .await;
    assert_eq!(status, 200);
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains(&pay.txid().to_string()));
    let rec_path = format!("/v1/statements/{today}/reconciliation");
    let rec = net
        .ok(&net.as_merchant("GET", &rec_path, &Value::Null))
        .await;
    assert_eq!(rec["reconciled"], true, "{rec}");
    assert_eq!(rec["ledger_entries"], 3);

    // A planted fault: the collection key spends 1.00 behind the gateway's back (a stolen
    // key, say). The statement does not know it; reconciliation finds it.
    net.net
        .bank(2)
        .exchange_in(&payer.public(), "5.00", "x-payer-2")
        .await
        .unwrap();
    let pay2 = wallet_transfer(
        net.net.bank(2),
        &payer,
        &[(collection.ledger, yuan("5.00"), Lock::Key(collection.key))],
        "a tip",
    )
    .await;
    net.net.bank(2).submit(&pay2).await.unwrap();
    net.eventually(
        "the tip counted",
        || async { net.ok(&net.as_merchant("GET", &path, &Value::Null)).await },
        |s| s["lines"].as_array().unwrap().len() == 4,
    )
    .await;
    let seed = cbdc_runtime::secret::read_seed(&net.dir.path().join("gateway.key")).unwrap();
    let stolen = cbdc_merchant::custody::Custody::new(seed).collection("m-1");
    assert_eq!(stolen.public(), collection.key);
    let thief = net.net.bank(1).open_wallet(0x7e, KycTier::Class2).await;
    let theft = wallet_transfer(
        net.net.bank(1),
        &stolen,
        &[(LedgerId(1), yuan("1.00"), Lock::Key(thief.public()))],
        "",
    )
    .await;
    cbdc_tests::committed(&net.net.bank(1).submit(&theft).await.unwrap());
    let rec = net
        .ok(&net.as_merchant("GET", &rec_path, &Value::Null))
        .await;
    assert_eq!(rec["reconciled"], false, "{rec}");
    assert_eq!(
        rec["missing_from_statement"][0]["txid"],
        theft.txid().to_string(),
        "{rec}"
    );
    // The tip was unmatched: on the statement and announced, not lost.
    delivered(
        &net,
        &received,
        "payment.unmatched",
        "txid",
        &pay2.txid().to_string(),
    )
    .await;

    assert!(check_deliveries(&received) >= 4);

    // The delivery log of the order.paid event: two refusals, then accepted; redelivered by
    // hand, the merchant hears it once more.
    let events = net
        .ok(&net.as_merchant("GET", "/v1/events?limit=100", &Value::Null))
        .await;
    let paid_event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["type"] == "order.paid")
        .expect("an order.paid event")
        .clone();
    let id = paid_event["event"]["id"].as_str().unwrap().to_string();
    let log: Vec<u64> = paid_event["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(log, [503, 503, 200], "{paid_event}");
    assert_eq!(paid_event["delivery"]["status"], "DELIVERED");
    let path = format!("/v1/events/{id}/redeliver");
    net.ok(&net.as_merchant("POST", &path, &Value::Null)).await;
    let view_path = format!("/v1/events/{id}");
    net.eventually(
        "the redelivery",
        || async {
            net.ok(&net.as_merchant("GET", &view_path, &Value::Null))
                .await
        },
        |v| v["attempts"].as_array().unwrap().len() == 4 && v["delivery"]["status"] == "DELIVERED",
    )
    .await;
    assert_eq!(received.lock().unwrap().accepted[&id], 2);
    // The gateway's metrics agree with what the receiver saw: every delivery it accepted
    // counted as delivered, every one it refused as to be retried, none given up.
    let (accepted, refused) = {
        let r = received.lock().unwrap();
        let accepted: u32 = r.accepted.values().sum();
        (accepted, r.attempts.values().sum::<u32>() - accepted)
    };
    assert!(accepted > 0 && refused > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let delivered = net
            .metric(
                "cbdc_merchant_webhook_attempts_total",
                &[r#"outcome="delivered""#],
            )
            .await;
        let retry = net
            .metric(
                "cbdc_merchant_webhook_attempts_total",
                &[r#"outcome="retry""#],
            )
            .await;
        if (delivered, retry) == (f64::from(accepted), f64::from(refused)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics: {delivered} delivered and {retry} retried; the receiver accepted \
             {accepted} and refused {refused}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        net.metric(
            "cbdc_merchant_webhook_attempts_total",
            &[r#"outcome="given_up""#]
        )
        .await,
        0.0
    );
    // The store's own counters: every change was a commit, and none made its own fsync
    // twice.
    let commits = net.metric("cbdc_merchant_store_commits_total", &[]).await;
    let fsyncs = net.metric("cbdc_merchant_store_fsyncs_total", &[]).await;
    assert!(
        commits > 0.0 && fsyncs > 0.0 && fsyncs <= commits,
        "{commits} commits, {fsyncs} fsyncs"
    );
    // Requests by route template (not by order id), with their latency.
    let created = net
        .metric(
            "cbdc_merchant_requests_total",
            &[
                r#"api="http""#,
                r#"operation="POST /v1/orders""#,
                r#"code="200""#,
            ],
        )
        .await;
    assert!(created >= 1.0, "{created}");
    let paid = net
        .metric(
            "cbdc_merchant_request_duration_seconds_count",
            &[r#"operation="POST /v1/merchants/{merchant_id}/orders/{out_trade_no}/pay""#],
        )
        .await;
    assert!(paid >= 1.0, "{paid}");
    net.net.quiesce().await;
    assert_eq!(net.net.assert_ledgers_conserve().await, yuan("20000.00"));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_an_order_cannot_take_are_refused_or_refunded_automatically() {
    let (mut net, received, collection) = setup().await;
    let payer = net.net.bank(2).open_wallet(0xb2, KycTier::Class2).await;
    net.net
        .bank(2)
        .exchange_in(&payer.public(), "200.00", "x-payer")
        .await
        .expect("exchange");
    let payer_address = net.net.bank(2).address(&payer.public());
    let local = net.net.bank(1).open_wallet(0xa2, KycTier::Class2).await;
    net.net
        .bank(1)
        .exchange_in(&local.public(), "100.00", "x-local")
        .await
        .expect("exchange");
    let local_address = net.net.bank(1).address(&local.public());

    net.ok(&net.as_merchant("POST", "/v1/orders", &order_body("LATE00000001", "20.00")))
        .await;
    // The wrong amount, the wrong memo, someone else's signature: refused, nothing sent.
    let cases = [
        (
            "19.99",
            "order:m-1:LATE00000001",
            &payer_address,
            "transfer",
        ),
        (
            "20.00",
            "order:m-1:ANOTHER00001",
            &payer_address,
            "transfer",
        ),
        (
            "20.00",
            "order:m-1:LATE00000001",
            &local_address,
            "payer_address",
        ),
    ];
    for (amount, memo, who, field) in cases {
        let t = pay_with(&mut net.net.banks[1], &payer, collection, amount, memo).await;
        let (status, e) = net
            .json(&net.public(
                "/v1/merchants/m-1/orders/LATE00000001/pay",
                &json!({"payer_address": who, "transfer": transfer_json(&t)}),
            ))
            .await;
        assert_eq!(
            (status, e["error"]["field"].as_str()),
            (400, Some(field)),
            "{amount} {memo}: {e}"
        );
    }
    assert_eq!(balance(&mut net, 2, &payer.public()).await, "200.00");
    // A transfer spending a coin that does not exist: the ledger refuses it (422, naming the
    // transfer) and the gateway keeps nothing of it.
    let bogus = TransferBuilder::new(UnixSeconds(net.net.banks[1].now_s() + 300))
        .memo(b"order:m-1:LATE00000001".to_vec())
        .input(
            OutPoint {
                txid: Txid([0x42; 32]),
                index: 0,
            },
            yuan("20.00"),
        )
        .output(collection.ledger, yuan("20.00"), Lock::Key(collection.key))
        .sign(&[&payer])
        .unwrap();
    let (status, e) = net
        .json(&net.public(
            "/v1/merchants/m-1/orders/LATE00000001/pay",
            &json!({"payer_address": payer_address, "transfer": transfer_json(&bogus)}),
        ))
        .await;
    assert_eq!(
        (
            status,
            e["error"]["code"].as_str(),
            e["error"]["field"].as_str()
        ),
        (422, Some("LEDGER_REJECTED"), Some("transfer")),
        "{e}"
    );
    let o = net
        .ok(&net.as_merchant("GET", "/v1/orders/LATE00000001", &Value::Null))
        .await;
    assert_eq!(
        (o["status"].as_str(), o.get("pending_txid")),
        (Some("CREATED"), None),
        "{o}"
    );

    // A payment that commits after its order was closed is refunded automatically. (The
    // close must land while the payment crosses to the merchant's bank; if the payment
    // wins, the close is refused and the round is tried again.)
    let mut refunded = None;
    for round in 0..5 {
        let otn = format!("LATE0000010{round}");
        net.ok(&net.as_merchant("POST", "/v1/orders", &order_body(&otn, "20.00")))
            .await;
        let t = pay_with(
            &mut net.net.banks[1],
            &payer,
            collection,
            "20.00",
            &format!("order:m-1:{otn}"),
        )
        .await;
        let path = format!("/v1/merchants/m-1/orders/{otn}/pay");
        net.ok(&net.public(
            &path,
            &json!({"payer_address": payer_address, "transfer": transfer_json(&t)}),
        ))
        .await;
        let close = format!("/v1/orders/{otn}/close");
        let (status, _) = net
            .json(&net.as_merchant("POST", &close, &Value::Null))
            .await;
        if status == 200 {
            refunded = Some((otn, t));
            break;
        }
        assert_eq!(status, 409);
    }
    let (otn, t) = refunded.expect("a close landed before its payment in five rounds");
    let auto = format!("/v1/refunds/auto-{}", &t.txid().to_string()[..24]);
    let r = net
        .eventually(
            "the automatic refund",
            || async {
                let (status, v) = net.json(&net.as_merchant("GET", &auto, &Value::Null)).await;
                if status == 200 { v } else { Value::Null }
            },
            |v| v["status"] == "SUCCEEDED",
        )
        .await;
    assert_eq!(r["to_address"], payer_address);
    assert!(r["reason"].as_str().unwrap().contains("Closed"), "{r}");
    let o = net
        .ok(&net.as_merchant("GET", &format!("/v1/orders/{otn}"), &Value::Null))
        .await;
    assert_eq!(o["status"], "CLOSED");
    delivered(
        &net,
        &received,
        "payment.refunded",
        "payment_txid",
        &t.txid().to_string(),
    )
    .await;

    // Paid at the merchant's own bank: paid when the call returns; a second payment of the
    // paid order is refused before anything is sent.
    net.ok(&net.as_merchant("POST", "/v1/orders", &order_body("SAMEBANK0001", "10.00")))
        .await;
    let t = pay_with(
        &mut net.net.banks[0],
        &local,
        collection,
        "10.00",
        "order:m-1:SAMEBANK0001",
    )
    .await;
    let paid = net
        .ok(&net.public(
            "/v1/merchants/m-1/orders/SAMEBANK0001/pay",
            &json!({"payer_address": local_address, "transfer": transfer_json(&t)}),
        ))
        .await;
    assert_eq!(paid["status"], "PAID");
    let again = pay_with(
        &mut net.net.banks[0],
        &local,
        collection,
        "10.00",
        "order:m-1:SAMEBANK0001",
    )
    .await;
    let (status, e) = net
        .json(&net.public(
            "/v1/merchants/m-1/orders/SAMEBANK0001/pay",
            &json!({"payer_address": local_address, "transfer": transfer_json(&again)}),
        ))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (409, Some("out_trade_no")),
        "{e}"
    );
    // An expired order refuses payment.
    net.ok(&net.as_merchant("POST", "/v1/orders", &json!({"out_trade_no": "EXPIRES00001", "amount": "1.00", "description": "", "expires_in_s": 60}))).await;
    net.advance(61);
    let t = pay_with(
        &mut net.net.banks[0],
        &local,
        collection,
        "1.00",
        "order:m-1:EXPIRES00001",
    )
    .await;
    let (status, e) = net
        .json(&net.public(
            "/v1/merchants/m-1/orders/EXPIRES00001/pay",
            &json!({"payer_address": local_address, "transfer": transfer_json(&t)}),
        ))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (409, Some("out_trade_no")),
        "{e}"
    );
    assert!(e["error"]["message"].as_str().unwrap().contains("expired"));

    net.eventually(
        "the payer whole again",
        || balance_at(&net, 1, &payer_address),
        |v| v == "200.00",
    )
    .await;
    assert_eq!(balance(&mut net, 1, &local.public()).await, "90.00");
    check_deliveries(&received);
    net.net.quiesce().await;
    assert_eq!(net.net.assert_ledgers_conserve().await, yuan("20000.00"));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ride_hold_is_captured_with_a_split_between_driver_and_platform() {
    let (mut net, received, collection) = setup().await;
    let rider = net.net.bank(1).open_wallet(0xc1, KycTier::Class2).await;
    net.net
        .bank(1)
        .exchange_in(&rider.public(), "100.00", "x-rider")
        .await
        .expect("exchange");
    let rider_address = net.net.bank(1).address(&rider.public());
    let driver = net.net.bank(2).open_wallet(0xd1, KycTier::Class2).await;
    let driver_address = net.net.bank(2).address(&driver.public());
    let hold_lock = |expires_at: u64| Lock::Hold {
        payer: rider.public(),
        payee: collection.key,
        expires_at: UnixSeconds(expires_at),
    };
    let now = net.net.bank(1).now_s();

    // The rider authorises the estimated fare, 50.00.
    let t = wallet_transfer(
        &mut net.net.banks[0],
        &rider,
        &[(LedgerId(1), yuan("50.00"), hold_lock(now + 900))],
        "ride 88",
    )
    .await;
    let authorize = json!({"hold_id": "RIDE00000088", "payer_address": rider_address, "transfer": transfer_json(&t)});
    let hold = net
        .ok(&net.as_merchant("POST", "/v1/holds", &authorize))
        .await;
    assert_eq!(
        (hold["status"].as_str(), hold["amount"].as_str()),
        (Some("AUTHORIZED"), Some("50.00")),
        "{hold}"
    );
    assert_eq!(
        balance(&mut net, 1, &rider.public()).await,
        "100.00",
        "held, still the rider's"
    );
    // A capture above the hold is refused, and changes nothing.
    let capture = |driver_share: &str, fee: &str| {
        json!({"splits": [
            {"to_address": driver_address, "amount": driver_share},
            {"to_address": collection.to_string(), "amount": fee},
        ]})
    };
    let (status, e) = net
        .json(&net.as_merchant(
            "POST",
            "/v1/holds/RIDE00000088/capture",
            &capture("46.01", "4.00"),
        ))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (409, Some("splits")),
        "{e}"
    );
    // The final fare, 42.00: 38.00 to the driver at another bank, 4.00 platform fee.
    let captured = net
        .ok(&net.as_merchant(
            "POST",
            "/v1/holds/RIDE00000088/capture",
            &capture("38.00", "4.00"),
        ))
        .await;
    assert_eq!(
        (captured["status"].as_str(), captured["captured"].as_str()),
        (Some("CAPTURED"), Some("42.00")),
        "{captured}"
    );
    // Capturing again with the same splits answers the same; releasing it now is refused.
    assert_eq!(
        net.ok(&net.as_merchant(
            "POST",
            "/v1/holds/RIDE00000088/capture",
            &capture("38.00", "4.00")
        ))
        .await,
        captured
    );
    let (status, _) = net
        .json(&net.as_merchant("POST", "/v1/holds/RIDE00000088/release", &Value::Null))
        .await;
    assert_eq!(status, 409);
    assert_eq!(balance(&mut net, 1, &rider.public()).await, "58.00");
    net.eventually(
        "the driver paid",
        || balance_at(&net, 1, &driver_address),
        |v| v == "38.00",
    )
    .await;
    delivered(&net, &received, "hold.captured", "hold_id", "RIDE00000088").await;

    // A second ride is cancelled: the hold is released whole.
    let t = wallet_transfer(
        &mut net.net.banks[0],
        &rider,
        &[(LedgerId(1), yuan("30.00"), hold_lock(now + 900))],
        "ride 89",
    )
    .await;
    net.ok(&net.as_merchant("POST", "/v1/holds", &json!({"hold_id": "RIDE00000089", "payer_address": rider_address, "transfer": transfer_json(&t)}))).await;
    let released = net
        .ok(&net.as_merchant("POST", "/v1/holds/RIDE00000089/release", &Value::Null))
        .await;
    assert_eq!(released["status"], "RELEASED");
    delivered(&net, &received, "hold.released", "hold_id", "RIDE00000089").await;

    // A third is forgotten: after expiry the gateway may not capture, and the rider takes
    // it back alone.
    let t = wallet_transfer(
        &mut net.net.banks[0],
        &rider,
        &[(LedgerId(1), yuan("20.00"), hold_lock(now + 120))],
        "ride 90",
    )
    .await;
    net.ok(&net.as_merchant("POST", "/v1/holds", &json!({"hold_id": "RIDE00000090", "payer_address": rider_address, "transfer": transfer_json(&t)}))).await;
    net.advance(121);
    let (status, e) = net
        .json(&net.as_merchant(
            "POST",
            "/v1/holds/RIDE00000090/capture",
            &capture("10.00", "1.00"),
        ))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (409, Some("hold_id")),
        "{e}"
    );
    net.net.bank(1).advance_clock(121_000);
    let held = OutPoint {
        txid: t.txid(),
        index: 0,
    };
    let reclaim = TransferBuilder::new(UnixSeconds(net.net.bank(1).now_s() + 300))
        .input(held, yuan("20.00"))
        .output(LedgerId(1), yuan("20.00"), Lock::Key(rider.public()))
        .sign(&[&rider])
        .unwrap();
    cbdc_tests::committed(&net.net.bank(1).submit(&reclaim).await.unwrap());
    assert_eq!(balance(&mut net, 1, &rider.public()).await, "58.00");

    check_deliveries(&received);
    net.net.quiesce().await;
    assert_eq!(net.net.assert_ledgers_conserve().await, yuan("20000.00"));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_mandate_is_charged_within_its_maximum_and_then_revoked_by_its_owner() {
    let (mut net, received, collection) = setup().await;
    let owner = net.net.bank(1).open_wallet(0xe1, KycTier::Class2).await;
    net.net
        .bank(1)
        .exchange_in(&owner.public(), "150.00", "x-owner")
        .await
        .expect("exchange");
    let owner_address = net.net.bank(1).address(&owner.public());
    let now = net.net.bank(1).now_s();
    let lock = Lock::Mandate {
        owner: owner.public(),
        merchant: collection.key,
        per_payment_max: yuan("30.00"),
        expires_at: UnixSeconds(now + 30 * 86400),
    };
    let t = wallet_transfer(
        &mut net.net.banks[0],
        &owner,
        &[(LedgerId(1), yuan("100.00"), lock)],
        "video membership",
    )
    .await;
    let m = net.ok(&net.as_merchant("POST", "/v1/mandates", &json!({"mandate_id": "SUB000000001", "owner_address": owner_address, "transfer": transfer_json(&t)}))).await;
    assert_eq!(
        (m["status"].as_str(), m["remaining"].as_str()),
        (Some("ACTIVE"), Some("100.00")),
        "{m}"
    );
    delivered(
        &net,
        &received,
        "mandate.created",
        "mandate_id",
        "SUB000000001",
    )
    .await;

    let charge = |otn: &str, amount: &str| {
        net.as_merchant(
            "POST",
            "/v1/mandates/SUB000000001/charge",
            &json!({"out_trade_no": otn, "amount": amount, "description": "monthly"}),
        )
    };
    let c1 = net.ok(&charge("SUBCHG000001", "25.00")).await;
    assert_eq!(c1["status"], "PAID", "{c1}");
    assert_eq!(
        net.ok(&charge("SUBCHG000001", "25.00")).await["txid"],
        c1["txid"]
    );
    let (status, e) = net.json(&charge("SUBCHG000002", "30.01")).await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (409, Some("amount")),
        "{e}"
    );
    net.ok(&charge("SUBCHG000002", "25.00")).await;
    let m = net
        .ok(&net.as_merchant("GET", "/v1/mandates/SUB000000001", &Value::Null))
        .await;
    assert_eq!(
        (m["remaining"].as_str(), m["charges"].as_u64()),
        (Some("50.00"), Some(2)),
        "{m}"
    );
    delivered(
        &net,
        &received,
        "mandate.charged",
        "out_trade_no",
        "SUBCHG000002",
    )
    .await;
    // A charged subscription may be refunded like any order.
    let r = net.ok(&net.as_merchant("POST", "/v1/refunds", &json!({"out_refund_no": "SUBRF0000001", "out_trade_no": "SUBCHG000002", "amount": "5.00"}))).await;
    assert_eq!(r["status"], "SUCCEEDED");

    // The owner revokes: its own transfer takes the rest back, no merchant needed.
    let outpoint = m["outpoint"].as_str().unwrap();
    let (txid, index) = outpoint.split_once(':').unwrap();
    let held = OutPoint {
        txid: Txid(hex::decode(txid).unwrap().try_into().unwrap()),
        index: index.parse().unwrap(),
    };
    let back = TransferBuilder::new(UnixSeconds(net.net.banks[0].now_s() + 300))
        .input(held, yuan("50.00"))
        .output(LedgerId(1), yuan("50.00"), Lock::Key(owner.public()))
        .sign(&[&owner])
        .unwrap();
    let revoked = net
        .ok(&net.public(
            "/v1/merchants/m-1/mandates/SUB000000001/revoke",
            &json!({"transfer": transfer_json(&back)}),
        ))
        .await;
    assert_eq!(revoked["status"], "REVOKED");
    let (status, e) = net.json(&charge("SUBCHG000003", "10.00")).await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (409, Some("mandate_id")),
        "{e}"
    );
    delivered(
        &net,
        &received,
        "mandate.revoked",
        "mandate_id",
        "SUB000000001",
    )
    .await;
    // 150 − 25 − 25 + 5 refunded.
    assert_eq!(balance(&mut net, 1, &owner.public()).await, "105.00");

    check_deliveries(&received);
    net.net.quiesce().await;
    assert_eq!(net.net.assert_ledgers_conserve().await, yuan("20000.00"));
    net.stop().await;
}

/// A gRPC request signed by merchant `m-1` for `method`.
fn grpc_signed<M: prost::Message>(net: &MerchantNet, method: &str, m: M) -> tonic::Request<M> {
    let auth = cbdc_merchant::grpc::authorization(
        &net.merchant,
        "m-1",
        method,
        &m,
        net.gateway.now(),
        &cbdc_tests::merchant::nonce(),
    );
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", auth.parse().unwrap());
    r
}

fn hex_transfer(t: &Transfer) -> v1::TransferHex {
    let j = SignedTransferJson::of(t);
    v1::TransferHex {
        body: j.body,
        witnesses: j
            .witnesses
            .into_iter()
            .map(|w| v1::WitnessHex {
                public_key: w.public_key,
                signature: w.signature,
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_flows_through_grpc() {
    use v1::merchant_gateway_client::MerchantGatewayClient;
    let (mut net, received, collection) = setup().await;
    let mut g = MerchantGatewayClient::connect(net.grpc.clone())
        .await
        .unwrap();
    // The field a refusal names (its BadRequest violation).
    let field = |s: &tonic::Status| {
        tonic_types::StatusExt::get_details_bad_request(s)
            .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
    };

    // An order paid from bank 2, partly refunded, the statement reconciled.
    let payer = net.net.bank(2).open_wallet(0xb7, KycTier::Class2).await;
    net.net
        .bank(2)
        .exchange_in(&payer.public(), "100.00", "x-payer")
        .await
        .expect("exchange");
    let payer_address = net.net.bank(2).address(&payer.public());
    let create = v1::CreateOrderRequest {
        merchant_id: "m-1".into(),
        out_trade_no: "GRPC00000001".into(),
        amount: "30.00".into(),
        description: "grpc".into(),
        expires_in_s: 0,
    };
    let o = g
        .create_order(grpc_signed(&net, "CreateOrder", create.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.status, v1::OrderStatus::Created as i32);
    // Hostile: unsigned; signed over another message; another merchant's id; a replay.
    let e = g
        .create_order(tonic::Request::new(create.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let mut other = grpc_signed(&net, "CreateOrder", create.clone());
    other.get_mut().amount = "3000.00".into();
    assert_eq!(
        g.create_order(other).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut foreign = create.clone();
    foreign.merchant_id = "m-2".into();
    let e = g
        .create_order(grpc_signed(&net, "CreateOrder", foreign))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field(&e).as_deref()),
        (tonic::Code::PermissionDenied, Some("merchant_id")),
        "{e:?}"
    );
    let once = grpc_signed(
        &net,
        "GetOrder",
        v1::GetOrderRequest {
            merchant_id: "m-1".into(),
            out_trade_no: "GRPC00000001".into(),
        },
    );
    let (meta, ext, msg) = once.into_parts();
    g.get_order(tonic::Request::from_parts(
        meta.clone(),
        tonic::Extensions::default(),
        msg.clone(),
    ))
    .await
    .unwrap();
    let _ = ext;
    let e = g
        .get_order(tonic::Request::from_parts(
            meta,
            tonic::Extensions::default(),
            msg,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "a replay: {e:?}");

    let pay = pay_with(net.net.bank(2), &payer, collection, "30.00", &o.memo).await;
    let paid = g
        .pay_order(v1::PayOrderRequest {
            merchant_id: "m-1".into(),
            out_trade_no: "GRPC00000001".into(),
            transfer: Some(hex_transfer(&pay)),
            payer_address: payer_address.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.pending_txid, pay.txid().to_string());
    net.eventually(
        "paid through gRPC",
        || async {
            net.ok(&net.as_merchant("GET", "/v1/orders/GRPC00000001", &Value::Null))
                .await
        },
        |o| o["status"] == "PAID",
    )
    .await;
    let r = g
        .refund(grpc_signed(
            &net,
            "Refund",
            v1::RefundRequest {
                merchant_id: "m-1".into(),
                out_trade_no: "GRPC00000001".into(),
                out_refund_no: "GRPCRF000001".into(),
                amount: "10.00".into(),
                reason: "grpc".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, "SUCCEEDED");
    let e = g
        .refund(grpc_signed(
            &net,
            "Refund",
            v1::RefundRequest {
                merchant_id: "m-1".into(),
                out_trade_no: "GRPC00000001".into(),
                out_refund_no: "GRPCRF000002".into(),
                amount: "20.01".into(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field(&e).as_deref()),
        (tonic::Code::FailedPrecondition, Some("amount")),
        "{e:?}"
    );

    // A ride hold captured with a split.
    let rider = net.net.bank(1).open_wallet(0xc7, KycTier::Class2).await;
    net.net
        .bank(1)
        .exchange_in(&rider.public(), "100.00", "x-rider")
        .await
        .expect("exchange");
    let rider_address = net.net.bank(1).address(&rider.public());
    let driver = net.net.bank(2).open_wallet(0xd7, KycTier::Class2).await;
    let driver_address = net.net.bank(2).address(&driver.public());
    let lock = Lock::Hold {
        payer: rider.public(),
        payee: collection.key,
        expires_at: UnixSeconds(net.net.banks[0].now_s() + 900),
    };
    let t = wallet_transfer(
        net.net.bank(1),
        &rider,
        &[(LedgerId(1), yuan("40.00"), lock)],
        "ride",
    )
    .await;
    let h = g
        .authorize_hold(grpc_signed(
            &net,
            "AuthorizeHold",
            v1::AuthorizeHoldRequest {
                merchant_id: "m-1".into(),
                hold_id: "GRPCRIDE0001".into(),
                transfer: Some(hex_transfer(&t)),
                payer_address: rider_address.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, v1::HoldStatus::Authorized as i32);
    let splits = vec![
        v1::Split {
            to_address: driver_address.clone(),
            amount: "30.00".into(),
        },
        v1::Split {
            to_address: collection.to_string(),
            amount: "5.00".into(),
        },
    ];
    let e = g
        .capture_hold(grpc_signed(
            &net,
            "CaptureHold",
            v1::CaptureHoldRequest {
                merchant_id: "m-1".into(),
                hold_id: "GRPCRIDE0001".into(),
                splits: vec![v1::Split {
                    to_address: driver_address.clone(),
                    amount: "40.01".into(),
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field(&e).as_deref()),
        (tonic::Code::FailedPrecondition, Some("splits")),
        "{e:?}"
    );
    let h = g
        .capture_hold(grpc_signed(
            &net,
            "CaptureHold",
            v1::CaptureHoldRequest {
                merchant_id: "m-1".into(),
                hold_id: "GRPCRIDE0001".into(),
                splits,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (h.status, h.captured.as_str()),
        (v1::HoldStatus::Captured as i32, "35.00")
    );
    assert_eq!(balance(&mut net, 1, &rider.public()).await, "65.00");

    // A mandate charged, refused above its maximum, revoked by its owner.
    let owner = net.net.bank(1).open_wallet(0xe7, KycTier::Class2).await;
    net.net
        .bank(1)
        .exchange_in(&owner.public(), "100.00", "x-owner")
        .await
        .expect("exchange");
    let owner_address = net.net.bank(1).address(&owner.public());
    let lock = Lock::Mandate {
        owner: owner.public(),
        merchant: collection.key,
        per_payment_max: yuan("20.00"),
        expires_at: UnixSeconds(net.net.banks[0].now_s() + 86400),
    };
    let t = wallet_transfer(
        net.net.bank(1),
        &owner,
        &[(LedgerId(1), yuan("50.00"), lock)],
        "club",
    )
    .await;
    let m = g
        .create_mandate(grpc_signed(
            &net,
            "CreateMandate",
            v1::CreateMandateRequest {
                merchant_id: "m-1".into(),
                mandate_id: "GRPCSUB00001".into(),
                transfer: Some(hex_transfer(&t)),
                owner_address: owner_address.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.status, "ACTIVE");
    let charge = |otn: &str, amount: &str| v1::ChargeMandateRequest {
        merchant_id: "m-1".into(),
        mandate_id: "GRPCSUB00001".into(),
        out_trade_no: otn.into(),
        amount: amount.into(),
        description: String::new(),
    };
    let o = g
        .charge_mandate(grpc_signed(
            &net,
            "ChargeMandate",
            charge("GRPCCHG00001", "20.00"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.status, v1::OrderStatus::Paid as i32);
    let e = g
        .charge_mandate(grpc_signed(
            &net,
            "ChargeMandate",
            charge("GRPCCHG00002", "20.01"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field(&e).as_deref()),
        (tonic::Code::FailedPrecondition, Some("amount")),
        "{e:?}"
    );
    let md = net
        .ok(&net.as_merchant("GET", "/v1/mandates/GRPCSUB00001", &Value::Null))
        .await;
    let (txid, index) = md["outpoint"].as_str().unwrap().split_once(':').unwrap();
    let held = OutPoint {
        txid: Txid(hex::decode(txid).unwrap().try_into().unwrap()),
        index: index.parse().unwrap(),
    };
    let back = TransferBuilder::new(UnixSeconds(net.net.banks[0].now_s() + 300))
        .input(held, yuan("30.00"))
        .output(LedgerId(1), yuan("30.00"), Lock::Key(owner.public()))
        .sign(&[&owner])
        .unwrap();
    let m = g
        .revoke_mandate(v1::RevokeMandateRequest {
            merchant_id: "m-1".into(),
            mandate_id: "GRPCSUB00001".into(),
            transfer: Some(hex_transfer(&back)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.status, "REVOKED");
    assert_eq!(balance(&mut net, 1, &owner.public()).await, "80.00");

    // The day's statement through gRPC, reconciled.
    let today = cbdc_merchant::statements::day(net.gateway.now_ms());
    net.eventually(
        "the refund out",
        || async {
            net.ok(&net.as_merchant("GET", &format!("/v1/statements/{today}"), &Value::Null))
                .await
        },
        |s| s["lines"].as_array().unwrap().len() == 4,
    )
    .await;
    let st = g
        .get_statement(grpc_signed(
            &net,
            "GetStatement",
            v1::GetStatementRequest {
                merchant_id: "m-1".into(),
                date: today,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(st.reconciled, "{st:?}");
    assert_eq!(
        (st.total_in.as_str(), st.total_out.as_str()),
        ("55.00", "10.00")
    );
    // Each gRPC call counted by method and code.
    for method in [
        "CreateOrder",
        "CaptureHold",
        "ChargeMandate",
        "GetStatement",
    ] {
        let ok = net
            .metric(
                "cbdc_merchant_requests_total",
                &[
                    r#"api="grpc""#,
                    &format!(r#"operation="{method}""#),
                    r#"code="0""#,
                ],
            )
            .await;
        assert!(ok >= 1.0, "{method}: {ok}");
    }

    check_deliveries(&received);
    net.net.quiesce().await;
    assert_eq!(net.net.assert_ledgers_conserve().await, yuan("20000.00"));
    net.stop().await;
}
