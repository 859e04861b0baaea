//! The merchant gateway over HTTP: a bank onboards a merchant, the merchant creates, reads
//! and closes an order whose QR code scans back to its payment URI; and hostile requests
//! are refused with a status and a JSON error naming the field, changing nothing.

use cbdc_core::{Address, Keypair, LedgerId};
use cbdc_merchant::auth::{self, Signer};
use cbdc_tests::merchant::{Call, MerchantNet as Net, nonce, now};
use serde_json::{Value, json};

fn order(out_trade_no: &str, amount: &str) -> Value {
    json!({"out_trade_no": out_trade_no, "amount": amount, "description": "2 × noodles"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_onboards_a_merchant_who_creates_reads_and_closes_an_order_with_a_scannable_qr_code()
{
    let net = Net::start(1).await;
    let merchant = net.onboard().await;
    // Onboarding again with the same details answers the same merchant.
    assert_eq!(net.onboard().await, merchant);
    let collection = merchant["collection_address"].as_str().unwrap();
    assert!(collection.starts_with("ecny1"), "{merchant}");

    let (status, created) = net
        .json(&net.as_merchant("POST", "/v1/orders", &order("T20261130001", "12.3")))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["status"], "CREATED");
    assert_eq!(created["amount"], "12.30");
    let uri = created["payment_uri"].as_str().unwrap().to_string();
    assert_eq!(
        uri,
        format!(
            "cbdc:{}?amount=12.30&memo=order:m-1:T20261130001&network=cbdc-test",
            collection
        )
    );
    // The same out_trade_no with the same content: the same order.
    let (status, again) = net
        .json(&net.as_merchant("POST", "/v1/orders", &order("T20261130001", "12.30")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, created);

    let (status, read) = net
        .json(&net.as_merchant("GET", "/v1/orders/T20261130001", &Value::Null))
        .await;
    assert_eq!((status, &read), (200, &created));

    // The QR code scans back to the payment URI.
    let (status, png_bytes) = net
        .send(&net.as_merchant("GET", "/v1/orders/T20261130001/qr.png", &Value::Null))
        .await;
    assert_eq!(status, 200);
    // To look at it: CBDC_QR_OUT=/tmp/qr.png cargo test -p cbdc-tests --test merchant_http
    if let Some(path) = std::env::var_os("CBDC_QR_OUT") {
        std::fs::write(path, &png_bytes).unwrap();
    }
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, uri);
    let (status, svg) = net
        .send(&net.as_merchant("GET", "/v1/orders/T20261130001/qr.svg", &Value::Null))
        .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&svg).contains("<svg"));

    // Closed, and closing again answers the closed order.
    for _ in 0..2 {
        let (status, closed) = net
            .json(&net.as_merchant("POST", "/v1/orders/T20261130001/close", &Value::Null))
            .await;
        assert_eq!(status, 200, "{closed}");
        assert_eq!(closed["status"], "CLOSED");
    }
    net.stop().await;
}

/// The checkout page: found only at the order's own capability address, the merchant's
/// description shown as text (never markup), private headers, and its status read by the
/// page's script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_page_opens_with_its_capability_only_and_escapes_the_description() {
    let net = Net::start(1).await;
    net.onboard().await;
    let hostile = json!({"out_trade_no": "T20261130777", "amount": "8.80",
        "description": "<script>alert(1)</script> & \"noodles\""});
    let created = net
        .ok(&net.as_merchant("POST", "/v1/orders", &hostile))
        .await;
    let other = net
        .ok(&net.as_merchant("POST", "/v1/orders", &order("T20261130778", "1.00")))
        .await;
    let path = created["checkout_path"].as_str().unwrap().to_string();
    let other_path = other["checkout_path"].as_str().unwrap().to_string();
    assert!(path.starts_with("/checkout/m-1/T20261130777/"), "{path}");
    let get = |p: String| {
        let http = reqwest::Client::new();
        let url = format!("{}{p}", net.base);
        async move { http.get(url).send().await.unwrap() }
    };
    let page = get(path.clone()).await;
    assert_eq!(page.status(), 200);
    let h = |n: &str| page.headers()[n].to_str().unwrap().to_string();
    assert_eq!(h("content-type"), "text/html; charset=utf-8");
    assert!(h("content-security-policy").starts_with("default-src 'none'; script-src 'self'"));
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("cache-control"), "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;noodles&quot;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    // The URI as HTML text: its `&`s escaped.
    let uri = created["payment_uri"].as_str().unwrap();
    assert!(html.contains(&uri.replace('&', "&amp;")), "{html}");
    assert!(html.contains(r#"data-status="CREATED""#));
    let status: Value = get(format!("{path}/status")).await.json().await.unwrap();
    assert_eq!(status["status"], "CREATED");
    assert_eq!(status["payment_uri"], created["payment_uri"]);
    let svg = get(format!("{path}/qr.svg")).await.text().await.unwrap();
    assert!(svg.contains("<svg"));
    assert_eq!(get("/checkout.js".into()).await.status(), 200);

    // Another order's capability, a changed one, or none: not found, naming the checkout.
    let other_mac = other_path.rsplit('/').next().unwrap();
    let mut flipped = path.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    for bad in [
        format!("/checkout/m-1/T20261130777/{other_mac}"),
        String::from_utf8(flipped).unwrap(),
        "/checkout/m-1/T20261130777/00".into(),
        format!("{}/status", "/checkout/m-1/T20261130777/zz"),
    ] {
        let r = get(bad.clone()).await;
        assert_eq!(r.status(), 404, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["field"], "checkout", "{bad}: {v}");
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_with_the_field_named_and_change_nothing() {
    let net = Net::start(1).await;
    net.onboard().await;
    let (status, existing) = net
        .json(&net.as_merchant("POST", "/v1/orders", &order("EXISTING01", "5.00")))
        .await;
    assert_eq!(status, 200);
    // A second merchant, with an order of its own.
    let other = Keypair::from_seed(&[9; 32]);
    let mut onboarding = net.onboarding();
    onboarding["merchant_id"] = "m-2".into();
    onboarding["api_public_key"] = hex::encode(other.public().as_bytes()).into();
    assert_eq!(
        net.json(&net.as_bank("POST", "/v1/merchants", &onboarding))
            .await
            .0,
        200
    );
    let as_other = |method, path, body: &Value| {
        net.signed(&other, Signer::Merchant("m-2".into()), method, path, body)
    };
    assert_eq!(
        net.json(&as_other(
            "POST",
            "/v1/orders",
            &order("OTHERS0001", "1.00")
        ))
        .await
        .0,
        200
    );

    let create = |amount: &str| net.as_merchant("POST", "/v1/orders", &order("NEWORDER01", amount));
    let mut cases: Vec<(&str, Call, u16, &str)> = Vec::new();
    let mut unsigned = create("1.00");
    unsigned.authorization = None;
    cases.push(("no signature", unsigned, 401, "authorization"));
    let mut bearer = create("1.00");
    bearer.authorization = Some("Bearer abc".into());
    cases.push(("another scheme", bearer, 401, "authorization"));
    let mut tampered = create("1.00");
    tampered.body = order("NEWORDER01", "1000.00").to_string().into_bytes();
    cases.push((
        "a body changed after signing",
        tampered,
        401,
        "authorization",
    ));
    let stale_body = order("NEWORDER01", "1.00").to_string().into_bytes();
    let stale = Call {
        method: "POST",
        path: "/v1/orders",
        authorization: Some(auth::authorization(
            &net.merchant,
            &Signer::Merchant("m-1".into()),
            "POST",
            "/v1/orders",
            now() - 301,
            &nonce(),
            &stale_body,
        )),
        body: stale_body.clone(),
        content_type: Some("application/json"),
    };
    cases.push(("a stale timestamp", stale, 401, "authorization"));
    let future = Call {
        authorization: Some(auth::authorization(
            &net.merchant,
            &Signer::Merchant("m-1".into()),
            "POST",
            "/v1/orders",
            now() + 400,
            &nonce(),
            &stale_body,
        )),
        body: stale_body.clone(),
        ..create("1.00")
    };
    cases.push(("a timestamp in the future", future, 401, "authorization"));
    let mut wrong_key = create("1.00");
    wrong_key.authorization = Some(auth::authorization(
        &other,
        &Signer::Merchant("m-1".into()),
        "POST",
        "/v1/orders",
        now(),
        &nonce(),
        &wrong_key.body,
    ));
    cases.push((
        "signed with another merchant's key",
        wrong_key,
        401,
        "authorization",
    ));
    let mut unknown = create("1.00");
    unknown.authorization = Some(auth::authorization(
        &net.merchant,
        &Signer::Merchant("m-404".into()),
        "POST",
        "/v1/orders",
        now(),
        &nonce(),
        &unknown.body,
    ));
    cases.push(("a merchant never onboarded", unknown, 401, "authorization"));
    cases.push((
        "a bank creating an order",
        net.as_bank("POST", "/v1/orders", &order("NEWORDER01", "1.00")),
        403,
        "authorization",
    ));
    cases.push((
        "a merchant onboarding itself",
        net.as_merchant("POST", "/v1/merchants", &net.onboarding()),
        403,
        "authorization",
    ));
    let unknown_bank = net.signed(
        &net.bank,
        Signer::Bank(7),
        "POST",
        "/v1/merchants",
        &net.onboarding(),
    );
    cases.push(("a bank not known here", unknown_bank, 401, "authorization"));
    cases.push((
        "another merchant's order",
        net.as_merchant("GET", "/v1/orders/OTHERS0001", &Value::Null),
        404,
        "out_trade_no",
    ));
    cases.push((
        "closing another merchant's order",
        net.as_merchant("POST", "/v1/orders/OTHERS0001/close", &Value::Null),
        404,
        "out_trade_no",
    ));
    cases.push((
        "an order id reused with other content",
        net.as_merchant("POST", "/v1/orders", &order("EXISTING01", "6.00")),
        409,
        "out_trade_no",
    ));
    let mut details = net.onboarding();
    details["webhook_url"] = "https://elsewhere.example/hooks".into();
    cases.push((
        "a merchant id onboarded again with other details",
        net.as_bank("POST", "/v1/merchants", &details),
        409,
        "merchant_id",
    ));
    let mut malformed = create("1.00");
    malformed.body = b"{\"out_trade_no\": ".to_vec();
    malformed.authorization = Some(auth::authorization(
        &net.merchant,
        &Signer::Merchant("m-1".into()),
        "POST",
        "/v1/orders",
        now(),
        &nonce(),
        &malformed.body,
    ));
    cases.push(("malformed JSON", malformed, 400, "body"));
    cases.push((
        "an unknown field",
        net.as_merchant(
            "POST",
            "/v1/orders",
            &json!({"out_trade_no": "NEWORDER01", "amount": "1.00", "description": "x", "tip": "1"}),
        ),
        400,
        "tip",
    ));
    cases.push((
        "a missing field",
        net.as_merchant(
            "POST",
            "/v1/orders",
            &json!({"out_trade_no": "NEWORDER01", "description": "x"}),
        ),
        400,
        "amount",
    ));
    let mut text = create("1.00");
    text.content_type = Some("text/plain");
    cases.push(("the wrong content type", text, 415, "content-type"));
    let mut huge = create("1.00");
    huge.body = vec![b' '; 20_000];
    cases.push(("an oversized body", huge, 413, "body"));
    cases.push((
        "an amount with three decimals",
        create("1.001"),
        400,
        "amount",
    ));
    cases.push(("an amount with an exponent", create("1e3"), 400, "amount"));
    cases.push(("a negative amount", create("-1.00"), 400, "amount"));
    cases.push(("a zero amount", create("0.00"), 400, "amount"));
    cases.push((
        "a description too long",
        net.as_merchant(
            "POST",
            "/v1/orders",
            &json!({"out_trade_no": "NEWORDER01", "amount": "1.00", "description": "x".repeat(200)}),
        ),
        400,
        "description",
    ));
    cases.push((
        "an expiry too short",
        net.as_merchant(
            "POST",
            "/v1/orders",
            &json!({"out_trade_no": "NEWORDER01", "amount": "1.00", "description": "x", "expires_in_s": 5}),
        ),
        400,
        "expires_in_s",
    ));
    cases.push((
        "an order id too short",
        net.as_merchant("POST", "/v1/orders", &order("T1", "1.00")),
        400,
        "out_trade_no",
    ));
    cases.push((
        "an order id with a slash",
        net.as_merchant("POST", "/v1/orders", &order("T2026/1130", "1.00")),
        400,
        "out_trade_no",
    ));
    let mut elsewhere = net.onboarding();
    elsewhere["merchant_id"] = "m-3".into();
    elsewhere["settlement_address"] =
        Address::new(LedgerId(2), Keypair::from_seed(&[3; 32]).public())
            .to_string()
            .into();
    cases.push((
        "a settlement wallet at another bank",
        net.as_bank("POST", "/v1/merchants", &elsewhere),
        400,
        "settlement_address",
    ));
    let mut typo = net.onboarding();
    typo["merchant_id"] = "m-3".into();
    let mut address = net.settlement();
    address.pop();
    address.push('q');
    typo["settlement_address"] = address.into();
    cases.push((
        "a mistyped settlement address",
        net.as_bank("POST", "/v1/merchants", &typo),
        400,
        "settlement_address",
    ));
    let mut bad_key = net.onboarding();
    bad_key["merchant_id"] = "m-3".into();
    bad_key["api_public_key"] = "abcd".into();
    cases.push((
        "an API key that is not a key",
        net.as_bank("POST", "/v1/merchants", &bad_key),
        400,
        "api_public_key",
    ));
    let mut ftp = net.onboarding();
    ftp["merchant_id"] = "m-3".into();
    ftp["webhook_url"] = "ftp://shop.example".into();
    cases.push((
        "a webhook URL that is not http(s)",
        net.as_bank("POST", "/v1/merchants", &ftp),
        400,
        "webhook_url",
    ));
    cases.push((
        "an order that does not exist",
        net.as_merchant("GET", "/v1/orders/NOSUCHORDER", &Value::Null),
        404,
        "out_trade_no",
    ));
    cases.push((
        "an unknown path",
        net.as_merchant("GET", "/v1/nothing-here", &Value::Null),
        404,
        "path",
    ));
    cases.push((
        "a method the endpoint does not take",
        net.as_merchant("GET", "/v1/refunds", &Value::Null),
        405,
        "method",
    ));
    let mut no_phone = net.onboarding();
    no_phone["merchant_id"] = "m-3".into();
    no_phone["contact_phone"] = "13800000001".into();
    cases.push((
        "a contact number that is not E.164",
        net.as_bank("POST", "/v1/merchants", &no_phone),
        400,
        "contact_phone",
    ));

    // The payment, refund, hold, mandate, event and statement endpoints.
    cases.push((
        "a payment whose transfer is not hex",
        net.public(
            "/v1/merchants/m-1/orders/EXISTING01/pay",
            &json!({"payer_address": net.settlement(), "transfer": {"body": "zz", "witnesses": []}}),
        ),
        400,
        "transfer",
    ));
    cases.push((
        "a payment whose transfer does not decode",
        net.public(
            "/v1/merchants/nobody/orders/EXISTING01/pay",
            &json!({"payer_address": net.settlement(), "transfer": {"body": "00", "witnesses": []}}),
        ),
        400,
        "transfer",
    ));
    cases.push((
        "a refund of an order never paid",
        net.as_merchant(
            "POST",
            "/v1/refunds",
            &json!({"out_refund_no": "REFUND0001", "out_trade_no": "EXISTING01", "amount": "1.00"}),
        ),
        409,
        "out_trade_no",
    ));
    cases.push((
        "a refund with three decimals",
        net.as_merchant("POST", "/v1/refunds", &json!({"out_refund_no": "REFUND0002", "out_trade_no": "EXISTING01", "amount": "1.001"})),
        400,
        "amount",
    ));
    cases.push((
        "a capture of no such hold",
        net.as_merchant(
            "POST",
            "/v1/holds/NOSUCHHOLD/capture",
            &json!({"splits": [{"to_address": net.settlement(), "amount": "1.00"}]}),
        ),
        404,
        "hold_id",
    ));
    cases.push((
        "a charge of no such mandate",
        net.as_merchant(
            "POST",
            "/v1/mandates/NOSUCHMANDATE/charge",
            &json!({"out_trade_no": "CHARGE0001", "amount": "1.00"}),
        ),
        404,
        "mandate_id",
    ));
    cases.push((
        "events, too many at once",
        net.as_merchant("GET", "/v1/events?limit=1000", &Value::Null),
        400,
        "limit",
    ));
    cases.push((
        "a statement of no date",
        net.as_merchant("GET", "/v1/statements/yesterday", &Value::Null),
        400,
        "date",
    ));
    cases.push((
        "another merchant's event",
        net.as_merchant(
            "GET",
            "/v1/events/evt_00000000000000000000000000000000",
            &Value::Null,
        ),
        404,
        "event_id",
    ));

    assert!(cases.len() >= 30, "{}", cases.len());
    for (what, call, status, field) in &cases {
        let (got, body) = net.json(call).await;
        assert_eq!(got, *status, "{what}: {body}");
        assert_eq!(body["error"]["field"], *field, "{what}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }

    // A replay: the same signed request twice is refused the second time.
    let call = net.as_merchant("GET", "/v1/orders/EXISTING01", &Value::Null);
    assert_eq!(net.json(&call).await.0, 200);
    let (status, body) = net.json(&call).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nonce"));

    // Nothing changed: no new order, the existing one as it was, no merchant m-3.
    let (status, _) = net
        .json(&net.as_merchant("GET", "/v1/orders/NEWORDER01", &Value::Null))
        .await;
    assert_eq!(status, 404);
    let (status, read) = net
        .json(&net.as_merchant("GET", "/v1/orders/EXISTING01", &Value::Null))
        .await;
    assert_eq!((status, read), (200, existing));
    let mut m3 = net.onboarding();
    m3["merchant_id"] = "m-3".into();
    m3["api_public_key"] = hex::encode(Keypair::from_seed(&[8; 32]).public().as_bytes()).into();
    let (status, _) = net.json(&net.as_bank("POST", "/v1/merchants", &m3)).await;
    assert_eq!(status, 200, "m-3 was not onboarded by any refused request");
    net.stop().await;
}
