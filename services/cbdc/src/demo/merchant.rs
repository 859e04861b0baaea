//! The demo's merchant scenes, through the gateway's HTTP/JSON API: an e-commerce order paid
//! by QR code from a wallet at another bank and partly refunded; a ride whose hold is
//! captured with a split between driver and platform; a subscription mandate charged and
//! then revoked by its owner. Each step is checked; the statement reconciles to the ledger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cbdc_core::{
    Address, Amount, Keypair, KycTier, LedgerId, Lock, OutPoint, Transfer, TransferBuilder,
    UnixSeconds,
};
use cbdc_merchant::auth::Signer;
use cbdc_merchant::client::Client;
use cbdc_merchant::payments::SignedTransferJson;
use cbdc_proto::{convert, v1};
use serde_json::{Value, json};

use super::{Demo, WAIT, check};
use crate::client;

fn transfer_json(t: &Transfer) -> Value {
    serde_json::to_value(SignedTransferJson::of(t)).expect("serialisable")
}

fn yuan(text: &str) -> Amount {
    Amount::parse(text).expect("an amount")
}

impl Demo {
    /// A transfer the wallet builds and signs itself from its coins: `outputs`, the change
    /// back to it.
    async fn wallet_transfer(
        &mut self,
        ledger: u32,
        wallet: &Keypair,
        outputs: &[(LedgerId, Amount, Lock)],
        memo: &str,
    ) -> Result<Transfer, String> {
        let address = Address::new(LedgerId(ledger), wallet.public());
        let auth = self.read(wallet, &address, false);
        let coins = self
            .bank(ledger)
            .list_coins(v1::ListCoinsRequest {
                address: address.to_string(),
                page: Some(v1::PageRequest {
                    page_size: 100,
                    cursor: String::new(),
                }),
                auth: Some(auth),
            })
            .await
            .map_err(|s| format!("coins: {}", client::status(&s)))?
            .into_inner()
            .coins;
        let total = Amount::checked_sum(outputs.iter().map(|o| o.1)).ok_or("overflow")?;
        let mut b = TransferBuilder::new(UnixSeconds(crate::cli::now_ms() / 1000 + 300))
            .memo(memo.as_bytes().to_vec());
        let mut sum = Amount::ZERO;
        for c in &coins {
            let outpoint =
                convert::outpoint("outpoint", c.outpoint.as_ref()).map_err(|e| e.to_string())?;
            let out = convert::output("output", c.output.as_ref(), Amount::DEFAULT_MAX)
                .map_err(|e| e.to_string())?;
            if sum < total && out.lock == Lock::Key(wallet.public()) {
                b = b.input(outpoint, out.value);
                sum = sum.checked_add(out.value).ok_or("overflow")?;
            }
        }
        check(sum >= total, || {
            format!("the wallet holds {sum}, not {total}")
        })?;
        for (l, a, lock) in outputs {
            b = b.output(*l, *a, *lock);
        }
        if sum > total {
            b = b.output(
                LedgerId(ledger),
                sum.saturating_sub(total),
                Lock::Key(wallet.public()),
            );
        }
        b.sign(&[wallet]).map_err(|e| e.to_string())
    }
}

/// Calls until `done` holds of the answer (settlement crosses banks), at most [`WAIT`].
async fn until(
    gateway: &Client,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = gateway
            .call("GET", path, &Value::Null)
            .await
            .map_err(|e| e.to_string())?;
        if done(&v) {
            return Ok(v);
        }
        check(Instant::now() < deadline, || {
            format!("waited {WAIT:?} on {path}: {v}")
        })?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn scenes(d: &mut Demo, gateway: std::net::SocketAddr) -> Result<(), String> {
    let base = Client::new(format!("http://{gateway}"));
    let bank1 = base.signed(
        Arc::new(Keypair::from_seed(d.authorities[0].seed())),
        Signer::Bank(1),
    );
    let api = Arc::new(Keypair::from_seed(&[0x5a; 32]));
    let shop = base.signed(Arc::clone(&api), Signer::Merchant("noodle-shop".into()));
    let err = |e: cbdc_merchant::client::CallError| e.to_string();

    // The merchant.
    d.say("Bank 1 onboards a shop with the merchant gateway, which keeps a collection wallet for it at bank 1 (raised to class 1 by the bank).");
    let m = bank1
        .call(
            "POST",
            "/v1/merchants",
            &json!({
                "merchant_id": "noodle-shop",
                "settlement_address": Address::new(LedgerId(1), api.public()).to_string(),
                "api_public_key": hex::encode(api.public().as_bytes()),
                // Nobody listens here in the demo: the gateway retries each webhook on its
                // schedule and logs every attempt.
                "webhook_url": "http://127.0.0.1:9/hooks",
                "contact_phone": "+8613900000088",
            }),
        )
        .await
        .map_err(err)?;
    let collection: Address = m["collection_address"]
        .as_str()
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("{e}"))?;
    d.set_tier(
        1,
        &collection.key,
        KycTier::Class1,
        "merchant onboarding 2026-11-0088",
    )
    .await?;
    d.ok(&format!(
        "merchant noodle-shop, collection wallet {}…",
        &collection.to_string()[..20]
    ));

    // 1. E-commerce: an order paid by QR from another bank, partly refunded.
    d.say("The shop creates order NOODLE-0001 for 88.00; Dora, a customer of bank 2, scans its QR code and pays.");
    let dora = d.open(2, 0xd0, "+8613900000010").await?;
    d.exchange(2, &dora.public(), "300.00").await?;
    let order = shop
        .call("POST", "/v1/orders", &json!({"out_trade_no": "NOODLE-0001", "amount": "88.00", "description": "2 × beef noodles, delivered"}))
        .await
        .map_err(err)?;
    let (_, png) = shop
        .raw("GET", "/v1/orders/NOODLE-0001/qr.png", &Value::Null)
        .await
        .map_err(err)?;
    let uri = order["payment_uri"].as_str().unwrap_or("").to_string();
    (d.out)(&format!("    QR code ({} bytes of PNG): {uri}", png.len()));
    // The wallet reads the URI: address, amount and memo.
    let (to, query) = uri
        .strip_prefix("cbdc:")
        .and_then(|u| u.split_once('?'))
        .ok_or("not a cbdc: URI")?;
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let to: Address = to.parse().map_err(|e| format!("{e}"))?;
    let pay = d
        .wallet_transfer(
            2,
            &dora,
            &[(to.ledger, yuan(&param("amount")), Lock::Key(to.key))],
            &param("memo"),
        )
        .await?;
    let dora_address = Address::new(LedgerId(2), dora.public()).to_string();
    base.call(
        "POST",
        "/v1/merchants/noodle-shop/orders/NOODLE-0001/pay",
        &json!({"payer_address": dora_address, "transfer": transfer_json(&pay)}),
    )
    .await
    .map_err(err)?;
    let paid = until(&shop, "/v1/orders/NOODLE-0001", |o| o["status"] == "PAID").await?;
    d.ok(&format!(
        "PAID by {}…, committed at bank 2 and credited at bank 1 through the central bank",
        &paid["txid"].as_str().unwrap_or("")[..16]
    ));
    d.say("Dora returns one bowl: the shop refunds 20.00; a second refund above what is left is refused.");
    let r = shop
        .call("POST", "/v1/refunds", &json!({"out_refund_no": "NOODLE-0001-R1", "out_trade_no": "NOODLE-0001", "amount": "20.00", "reason": "one bowl returned"}))
        .await
        .map_err(err)?;
    check(r["status"] == "SUCCEEDED", || format!("the refund: {r}"))?;
    match shop
        .call("POST", "/v1/refunds", &json!({"out_refund_no": "NOODLE-0001-R2", "out_trade_no": "NOODLE-0001", "amount": "68.01"}))
        .await
    {
        Err(e) if e.status == 409 && e.field == "amount" => d.ok(&format!("refund refused: {}", e.message)),
        other => return Err(format!("a refund above the paid amount was not refused: {other:?}")),
    }
    d.await_balance(2, &dora.public(), "232.00").await?;
    d.ok("Dora holds 300.00 − 88.00 + 20.00 = 232.00");

    // 2. Ride-hailing: a hold captured with a split.
    d.say("Eli at bank 1 books a ride: his wallet holds the estimated 60.00 for the platform; the final fare 52.50 is split 45.00 to the driver (Fay, bank 2) and 7.50 to the platform.");
    let eli = d.open(1, 0xe1, "+8613900000011").await?;
    d.exchange(1, &eli.public(), "200.00").await?;
    let fay = d.open(2, 0xf0, "+8613900000012").await?;
    let hold = Lock::Hold {
        payer: eli.public(),
        payee: collection.key,
        expires_at: UnixSeconds(crate::cli::now_ms() / 1000 + 900),
    };
    let t = d
        .wallet_transfer(
            1,
            &eli,
            &[(LedgerId(1), yuan("60.00"), hold)],
            "ride 2026-11-30 #7",
        )
        .await?;
    let eli_address = Address::new(LedgerId(1), eli.public()).to_string();
    let h = shop
        .call("POST", "/v1/holds", &json!({"hold_id": "RIDE-00007", "payer_address": eli_address, "transfer": transfer_json(&t)}))
        .await
        .map_err(err)?;
    check(h["status"] == "AUTHORIZED", || format!("the hold: {h}"))?;
    let fay_address = Address::new(LedgerId(2), fay.public()).to_string();
    let captured = shop
        .call(
            "POST",
            "/v1/holds/RIDE-00007/capture",
            &json!({"splits": [
                {"to_address": fay_address, "amount": "45.00"},
                {"to_address": collection.to_string(), "amount": "7.50"},
            ]}),
        )
        .await
        .map_err(err)?;
    check(
        captured["status"] == "CAPTURED" && captured["captured"] == "52.50",
        || format!("the capture: {captured}"),
    )?;
    d.await_balance(2, &fay.public(), "45.00").await?;
    d.await_balance(1, &eli.public(), "147.50").await?;
    d.ok("captured 52.50: Fay has 45.00 at bank 2, Eli 200.00 − 52.50 = 147.50 (the unused 7.50 of the hold came back)");

    // 3. A subscription mandate.
    d.say("Gus at bank 1 subscribes to the shop's soup club: a mandate of 90.00 the shop may charge at most 30.00 at a time; it charges once, is refused 31.00, and Gus revokes.");
    let gus = d.open(1, 0x90, "+8613900000013").await?;
    d.exchange(1, &gus.public(), "150.00").await?;
    let lock = Lock::Mandate {
        owner: gus.public(),
        merchant: collection.key,
        per_payment_max: yuan("30.00"),
        expires_at: UnixSeconds(crate::cli::now_ms() / 1000 + 30 * 86_400),
    };
    let t = d
        .wallet_transfer(1, &gus, &[(LedgerId(1), yuan("90.00"), lock)], "soup club")
        .await?;
    let gus_address = Address::new(LedgerId(1), gus.public()).to_string();
    shop.call("POST", "/v1/mandates", &json!({"mandate_id": "SOUP-CLUB-GUS", "owner_address": gus_address, "transfer": transfer_json(&t)}))
        .await
        .map_err(err)?;
    let charged = shop
        .call(
            "POST",
            "/v1/mandates/SOUP-CLUB-GUS/charge",
            &json!({"out_trade_no": "SOUP-2026-12", "amount": "30.00", "description": "December"}),
        )
        .await
        .map_err(err)?;
    check(charged["status"] == "PAID", || {
        format!("the charge: {charged}")
    })?;
    match shop
        .call(
            "POST",
            "/v1/mandates/SOUP-CLUB-GUS/charge",
            &json!({"out_trade_no": "SOUP-2027-01", "amount": "31.00"}),
        )
        .await
    {
        Err(e) if e.status == 409 && e.field == "amount" => {
            d.ok(&format!("31.00 refused: {}", e.message))
        }
        other => {
            return Err(format!(
                "a charge above the maximum was not refused: {other:?}"
            ));
        }
    }
    let md = shop
        .call("GET", "/v1/mandates/SOUP-CLUB-GUS", &Value::Null)
        .await
        .map_err(err)?;
    let (txid, index) = md["outpoint"]
        .as_str()
        .and_then(|o| o.split_once(':'))
        .ok_or("the mandate's outpoint")?;
    let held = OutPoint {
        txid: cbdc_core::Txid(
            hex::decode(txid)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or("a txid")?,
        ),
        index: index.parse().map_err(|_| "an index")?,
    };
    let back = TransferBuilder::new(UnixSeconds(crate::cli::now_ms() / 1000 + 300))
        .input(held, yuan("60.00"))
        .output(LedgerId(1), yuan("60.00"), Lock::Key(gus.public()))
        .sign(&[&gus])
        .map_err(|e| e.to_string())?;
    let revoked = base
        .call(
            "POST",
            "/v1/merchants/noodle-shop/mandates/SOUP-CLUB-GUS/revoke",
            &json!({"transfer": transfer_json(&back)}),
        )
        .await
        .map_err(err)?;
    check(revoked["status"] == "REVOKED", || {
        format!("the revocation: {revoked}")
    })?;
    d.await_balance(1, &gus.public(), "120.00").await?;
    d.ok("revoked by Gus alone; he holds 150.00 − 30.00 = 120.00");

    // The day's statement, reconciled with the ledger.
    d.say("The shop reads today's statement and reconciles it with its collection wallet's history at bank 1.");
    let today = cbdc_merchant::statements::day(crate::cli::now_ms());
    let st = shop
        .call("GET", &format!("/v1/statements/{today}"), &Value::Null)
        .await
        .map_err(err)?;
    for l in st["lines"].as_array().into_iter().flatten() {
        (d.out)(&format!(
            "    {:<15} {:<14} {} {:>7}  {}…",
            l["kind"].as_str().unwrap_or(""),
            l["reference"].as_str().unwrap_or(""),
            if l["incoming"] == true { "in " } else { "out" },
            l["amount"].as_str().unwrap_or(""),
            &l["txid"].as_str().unwrap_or("")[..12]
        ));
    }
    let rec = shop
        .call(
            "GET",
            &format!("/v1/statements/{today}/reconciliation"),
            &Value::Null,
        )
        .await
        .map_err(err)?;
    check(rec["reconciled"] == true && st["net"] == "105.50", || {
        format!("statement {st}, reconciliation {rec}")
    })?;
    d.ok(&format!(
        "in {} − out {} = {}, every line tied to its txid on the ledger: reconciled",
        st["total_in"].as_str().unwrap_or(""),
        st["total_out"].as_str().unwrap_or(""),
        st["net"].as_str().unwrap_or("")
    ));
    Ok(())
}
