//! The merchant phase (`--phases merchant:C`): C shoppers at once, each buying in a loop
//! through the merchant gateway, end to end — the merchant creates an order (a signed HTTP
//! request), the shopper's wallet signs a payment of it and hands it to the gateway, and the
//! order counts as done when the gateway's signed `order.paid` webhook reaches the
//! merchant's endpoint (run here, checking every signature). Latency is from the order's
//! creation to its webhook.
//!
//! Its own set-up: a merchant onboarded by bank 1 for this run, its collection wallet
//! raised to class 1, C shoppers at bank 1 funded through the same fan-out as the transfer
//! phases. Afterwards it checks what it did: every order's webhook delivered exactly once,
//! the merchant's statement holding every payment, and its reconciliation with the ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cbdc_core::{Address, Amount, KycTier, LedgerId, Lock, OutPoint, TransferBuilder, UnixSeconds};
use cbdc_merchant::auth::Signer;
use cbdc_merchant::client::Client;
use cbdc_merchant::payments::SignedTransferJson;
use cbdc_proto::requests;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::LoadArgs;
use crate::report::{Latency, Server};
use crate::setup::now_ms;
use crate::target::{Network, process_usage};

/// Shoppers at once, at most.
pub const SHOPPERS_MAX: usize = 1024;
/// What each order costs (a shopper's 100.00 lasts 2,000 orders).
const PRICE: &str = "0.05";
/// How long a shopper waits for an order's webhook.
const WEBHOOK_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize)]
pub struct Checks {
    /// Orders whose webhook never came.
    pub webhooks_missing: u64,
    /// Deliveries of an event id already accepted.
    pub webhooks_duplicated: u64,
    pub bad_signatures: u64,
    /// The statement holds a line for every paid order, and its total.
    pub statement_lines: u64,
    pub statement_total_in: String,
    pub expected_total_in: String,
    /// The statement reconciles with the collection wallet's history on the ledger.
    pub reconciled: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub shoppers: usize,
    pub window_s: f64,
    pub warmup_s: u64,
    /// Orders whose webhook arrived within the window (after the warm-up).
    pub orders: u64,
    pub orders_per_s: f64,
    /// Order created → webhook received.
    pub latency: Latency,
    /// The three steps' medians: create, pay (answered PAID), webhook after payment.
    pub step_p50_ms: BTreeMap<String, f64>,
    pub errors: BTreeMap<String, u64>,
    /// The single-call rate of the closed-loop `closed:1xC` phase before this one, on the
    /// same network, and this phase's share of it.
    pub ledger_single_calls_per_s: Option<f64>,
    pub share_of_single_calls: Option<f64>,
    pub servers: Vec<Server>,
    pub checks: Checks,
}

impl Report {
    pub fn checks_pass(&self) -> bool {
        let c = &self.checks;
        c.webhooks_missing == 0
            && c.webhooks_duplicated == 0
            && c.bad_signatures == 0
            && c.statement_total_in == c.expected_total_in
            && c.reconciled
    }

    pub fn summary(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "merchant orders: {:.0}/s end to end ({} orders, {} shoppers, {:.1} s), p50 {:.1} ms, p99 {:.1} ms",
                self.orders_per_s,
                self.orders,
                self.shoppers,
                self.window_s,
                self.latency.p50_ms,
                self.latency.p99_ms
            ),
            format!(
                "  steps (p50): create {:.1} ms, pay {:.1} ms, webhook {:.1} ms",
                self.step_p50_ms["create"], self.step_p50_ms["pay"], self.step_p50_ms["webhook"]
            ),
        ];
        if let (Some(l), Some(r)) = (self.ledger_single_calls_per_s, self.share_of_single_calls) {
            lines.push(format!(
                "  ledger single calls in the same run: {l:.0}/s; orders are {:.0}% of it",
                r * 100.0
            ));
        }
        for s in &self.servers {
            lines.push(format!(
                "  {}: {:.0} µs CPU per order",
                s.name, s.cpu_us_per_transfer
            ));
        }
        if !self.errors.is_empty() {
            lines.push(format!("  errors: {:?}", self.errors));
        }
        lines.push(format!(
            "  checks: {} ({:?})",
            if self.checks_pass() { "pass" } else { "FAIL" },
            self.checks
        ));
        lines
    }
}

#[derive(Default)]
struct Hooks {
    waiting: HashMap<String, oneshot::Sender<Instant>>,
    accepted: HashMap<String, u32>,
    paid: u64,
    bad_signatures: u64,
}

/// The merchant's webhook endpoint: checks each signature, wakes the shopper waiting for
/// the order.
async fn receiver(
    gateway_key: cbdc_core::keys::CheckedKey,
) -> Result<(String, Arc<Mutex<Hooks>>), String> {
    use axum::http::{HeaderMap, StatusCode};
    let hooks = Arc::new(Mutex::new(Hooks::default()));
    let state = Arc::clone(&hooks);
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = Arc::clone(&state);
            async move {
                let at = Instant::now();
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
                let ts: u64 = h("cbdc-timestamp").parse().unwrap_or(0);
                // Checked before the shared state is locked: the signature is the costly part,
                // and the other deliveries need not wait for it.
                let verified = cbdc_merchant::events::verify(
                    &gateway_key,
                    ts,
                    h("cbdc-signature"),
                    &body,
                    now_ms() / 1000,
                    300,
                );
                let event = serde_json::from_slice::<Value>(&body);
                let mut hooks = state.lock().expect("not poisoned");
                if verified.is_err() {
                    hooks.bad_signatures += 1;
                    return StatusCode::BAD_REQUEST;
                }
                let Ok(event) = event else {
                    return StatusCode::BAD_REQUEST;
                };
                *hooks
                    .accepted
                    .entry(h("cbdc-event-id").to_string())
                    .or_default() += 1;
                if event["type"] == "order.paid" {
                    hooks.paid += 1;
                    if let Some(otn) = event["data"]["out_trade_no"].as_str()
                        && let Some(tx) = hooks.waiting.remove(otn)
                    {
                        let _ = tx.send(at);
                    }
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hooks"), hooks))
}

/// A call to the gateway; a refusal as its status and code (the error's kind, for counting).
async fn call(client: &Client, method: &str, path: &str, body: &Value) -> Result<Value, String> {
    client
        .call(method, path, body)
        .await
        .map_err(|e| format!("{} {}", e.status, e.code))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs the merchant phase with `shoppers` at once.
pub async fn run(
    network: &Network,
    args: &LoadArgs,
    shoppers: usize,
    single_calls: Option<f64>,
) -> Result<Report, String> {
    let addr = network
        .file
        .merchant_gateway
        .ok_or("the devnet runs no merchant gateway")?;
    let gateway = Client::new(format!("http://{addr}"));
    let key = call(&gateway, "GET", "/v1/webhook-key", &Value::Null).await?;
    let gateway_key =
        cbdc_merchant::parse_key("public_key", key["public_key"].as_str().unwrap_or(""))
            .map_err(|e| e.message)?
            .checked_key()
            .map_err(|e| format!("the gateway's webhook key: {e}"))?;
    let (url, hooks) = receiver(gateway_key).await?;

    // The merchant, onboarded by bank 1 for this run.
    let run: [u8; 8] = now_ms().to_be_bytes();
    let merchant_id = format!("load-{}", hex::encode(&run[2..]));
    let api = cbdc_core::Keypair::generate(&mut rand::rngs::OsRng);
    let authority = &network.authorities[0];
    let bank1 = gateway.signed(
        Arc::new(cbdc_core::Keypair::from_seed(authority.seed())),
        Signer::Bank(1),
    );
    let merchant = call(
        &bank1,
        "POST",
        "/v1/merchants",
        &json!({
            "merchant_id": merchant_id,
            "settlement_address": Address::new(LedgerId(1), api.public()).to_string(),
            "api_public_key": hex::encode(api.public().as_bytes()),
            "webhook_url": url,
            "contact_phone": format!("+86139{:08}", u64::from_be_bytes(run) % 100_000_000),
        }),
    )
    .await
    .map_err(|e| format!("onboarding the merchant: {e}"))?;
    let collection: Address = merchant["collection_address"]
        .as_str()
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("the collection address: {e}"))?;
    let mut bank = network.bank(LedgerId(1)).await?;
    let header = requests::header(
        &network.file.network,
        LedgerId(1),
        &format!("load-{}-merchant-tier", hex::encode(run)),
        now_ms() + requests::ORDER_VALID_FOR_MS,
    );
    bank.rpc()
        .set_wallet_tier(requests::set_wallet_tier(
            authority,
            header,
            &collection.to_string(),
            KycTier::Class1,
            "load generator merchant",
        ))
        .await
        .map_err(|s| {
            format!(
                "raising the collection wallet: {}",
                cbdc_client::RpcError::from(s)
            )
        })?;

    // The shoppers, funded like the transfer phases' wallets.
    let keys: Arc<Vec<cbdc_core::Keypair>> = Arc::new(
        (0..shoppers)
            .map(|i| crate::setup::wallet_key(&run, b"shopper", i))
            .collect(),
    );
    let mut cb = network.central_bank().await?;
    let total = Amount::from_fen(
        Amount::parse(crate::setup::FUNDING).expect("amount").fen() * 2 * (shoppers as u64 + 64),
    );
    let header = requests::header(
        &network.file.network,
        cbdc_core::messages::CENTRAL_BANK,
        &format!("load-{}-merchant-mint", hex::encode(run)),
        now_ms() + requests::ORDER_VALID_FOR_MS,
    );
    cb.mint(requests::mint(
        &network.admin,
        header,
        LedgerId(1),
        &total.to_string(),
        "load run: shoppers",
    ))
    .await
    .map_err(|s| format!("mint: {}", cbdc_client::RpcError::from(s)))?;
    crate::setup::open_wallets(network, LedgerId(1), run, &keys, 0).await?;
    let coins = crate::setup::fund(network, run, &keys).await?;

    let price = Amount::parse(PRICE).expect("price");
    let shop = gateway.signed(Arc::new(api), Signer::Merchant(merchant_id.clone()));
    let start = Instant::now();
    let warmup = args.warmup();
    let end = start + args.duration();
    let before: Vec<(String, u32, f64)> = network
        .processes()
        .into_iter()
        .filter_map(|(n, pid)| process_usage(pid).map(|(cpu, _)| (n, pid, cpu)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (w, coin) in coins.into_iter().enumerate() {
        let (gateway, shop, hooks, keys, merchant_id) = (
            gateway.clone(),
            shop.clone(),
            Arc::clone(&hooks),
            Arc::clone(&keys),
            merchant_id.clone(),
        );
        tasks.spawn(async move {
            let wallet = &keys[w];
            let payer = Address::new(LedgerId(1), wallet.public()).to_string();
            let (mut outpoint, mut value): (OutPoint, Amount) = coin;
            let (mut all, mut create, mut pay, mut hook) =
                (histogram(), histogram(), histogram(), histogram());
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let (mut done, mut paid_total) = (0u64, 0u64);
            let mut seq = 0u64;
            while Instant::now() < end {
                if value < price {
                    *errors.entry("shopper out of money".into()).or_default() += 1;
                    break;
                }
                seq += 1;
                let otn = format!("L{w:04}x{seq:08}");
                let (tx, rx) = oneshot::channel();
                hooks
                    .lock()
                    .expect("not poisoned")
                    .waiting
                    .insert(otn.clone(), tx);
                let t0 = Instant::now();
                let order = call(
                    &shop,
                    "POST",
                    "/v1/orders",
                    &json!({"out_trade_no": otn, "amount": PRICE, "description": "load"}),
                )
                .await;
                let order = match order {
                    Ok(o) => o,
                    Err(e) => {
                        *errors.entry(format!("create: {e}")).or_default() += 1;
                        continue;
                    }
                };
                let t1 = Instant::now();
                let memo = order["memo"].as_str().unwrap_or("").to_string();
                let mut b = TransferBuilder::new(UnixSeconds(now_ms() / 1000 + 300))
                    .memo(memo.into_bytes())
                    .input(outpoint, value)
                    .output(collection.ledger, price, Lock::Key(collection.key));
                let change = value.saturating_sub(price);
                if !change.is_zero() {
                    b = b.output(LedgerId(1), change, Lock::Key(wallet.public()));
                }
                let t = b.sign(&[wallet]).expect("signs");
                let path = format!("/v1/merchants/{merchant_id}/orders/{otn}/pay");
                match call(
                    &gateway,
                    "POST",
                    &path,
                    &json!({"payer_address": payer, "transfer": SignedTransferJson::of(&t)}),
                )
                .await
                {
                    Ok(_) => {
                        outpoint = t.outpoint(1);
                        value = change;
                        paid_total += 1;
                    }
                    Err(e) => {
                        *errors.entry(format!("pay: {e}")).or_default() += 1;
                        hooks.lock().expect("not poisoned").waiting.remove(&otn);
                        continue;
                    }
                }
                let t2 = Instant::now();
                let Ok(Ok(t3)) = tokio::time::timeout(WEBHOOK_WAIT, rx).await else {
                    *errors.entry("no webhook within 30 s".into()).or_default() += 1;
                    continue;
                };
                if t0 >= start + warmup && t3 <= end {
                    let us = |d: Duration| (d.as_micros() as u64).max(1);
                    let _ = all.record(us(t3 - t0));
                    let _ = create.record(us(t1 - t0));
                    let _ = pay.record(us(t2 - t1));
                    let _ = hook.record(us(t3.saturating_duration_since(t2)));
                    done += 1;
                }
            }
            (all, create, pay, hook, errors, done, paid_total)
        });
    }
    let (mut all, mut create, mut pay, mut hook) =
        (histogram(), histogram(), histogram(), histogram());
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut orders, mut paid) = (0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        let (a, c, p, h, e, d, n) = r.map_err(|e| e.to_string())?;
        all.add(a).map_err(|e| e.to_string())?;
        create.add(c).map_err(|e| e.to_string())?;
        pay.add(p).map_err(|e| e.to_string())?;
        hook.add(h).map_err(|e| e.to_string())?;
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
        orders += d;
        paid += n;
    }
    let window_s = args
        .duration()
        .saturating_sub(warmup)
        .as_secs_f64()
        .max(1e-9);
    let servers: Vec<Server> = before
        .into_iter()
        .filter_map(|(name, pid, cpu0)| {
            let (cpu1, rss) = process_usage(pid)?;
            let cpu_s = cpu1 - cpu0;
            Some(Server {
                name,
                pid,
                cpu_s,
                cpu_us_per_transfer: cpu_s * 1e6 / paid.max(1) as f64,
                rss_bytes: rss,
                rss_max_bytes: rss,
            })
        })
        .collect();

    // The checks: every webhook once, the statement whole, reconciled with the ledger.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooks.lock().expect("not poisoned").paid < paid && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (delivered, duplicated, bad_signatures) = {
        let h = hooks.lock().expect("not poisoned");
        (
            h.paid,
            h.accepted
                .values()
                .map(|n| u64::from(n.saturating_sub(1)))
                .sum(),
            h.bad_signatures,
        )
    };
    let today = cbdc_merchant::statements::day(now_ms());
    let path = format!("/v1/statements/{today}");
    let statement = call(&shop, "GET", &path, &Value::Null).await?;
    let rec_path = format!("/v1/statements/{today}/reconciliation");
    let reconciliation = call(&shop, "GET", &rec_path, &Value::Null).await?;
    let checks = Checks {
        webhooks_missing: paid.saturating_sub(delivered),
        webhooks_duplicated: duplicated,
        bad_signatures,
        statement_lines: statement["lines"].as_array().map_or(0, |l| l.len() as u64),
        statement_total_in: statement["total_in"].as_str().unwrap_or("").to_string(),
        expected_total_in: Amount::from_fen(price.fen() * paid).to_string(),
        reconciled: reconciliation["reconciled"] == true,
    };
    let orders_per_s = orders as f64 / window_s;
    let latency = Latency {
        p50_ms: ms(all.value_at_quantile(0.5)),
        p90_ms: ms(all.value_at_quantile(0.9)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        p999_ms: ms(all.value_at_quantile(0.999)),
        max_ms: ms(all.max()),
    };
    Ok(Report {
        mode: format!("merchant orders, {shoppers} shoppers"),
        shoppers,
        window_s,
        warmup_s: warmup.as_secs(),
        orders,
        orders_per_s,
        latency,
        step_p50_ms: BTreeMap::from([
            ("create".to_string(), ms(create.value_at_quantile(0.5))),
            ("pay".to_string(), ms(pay.value_at_quantile(0.5))),
            ("webhook".to_string(), ms(hook.value_at_quantile(0.5))),
        ]),
        errors,
        ledger_single_calls_per_s: single_calls,
        share_of_single_calls: single_calls.map(|l| orders_per_s / l.max(1e-9)),
        servers,
        checks,
    })
}

/// The report as a picture: orders/s beside the ledger's single calls/s, and the latency
/// of each step.
pub fn svg(r: &Report) -> Result<String, String> {
    use plotters::prelude::*;
    crate::plot::ensure_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(
                &format!(
                    "cbdc load: merchant orders end to end, {} shoppers",
                    r.shoppers
                ),
                ("sans-serif", 20),
            )
            .map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(450);
        let bars = [
            (
                "ledger single calls/s",
                r.ledger_single_calls_per_s.unwrap_or(0.0),
            ),
            ("orders/s end to end", r.orders_per_s),
        ];
        let top = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&left)
            .caption("throughput (same run)", ("sans-serif", 16))
            .margin(15)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..2f64, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("per second")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, v)) in bars.iter().enumerate() {
            let x = i as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.15, 0.0), (x + 0.85, *v)],
                    BLUE.mix(0.6).filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.0}"),
                    (x + 0.35, v + top * 0.02),
                    ("sans-serif", 14),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.to_string(),
                    (x + 0.1, top * 0.97),
                    ("sans-serif", 13),
                )))
                .map_err(|e| e.to_string())?;
        }
        let steps = [
            ("create p50", r.step_p50_ms["create"]),
            ("pay p50", r.step_p50_ms["pay"]),
            ("webhook p50", r.step_p50_ms["webhook"]),
            ("total p50", r.latency.p50_ms),
            ("total p99", r.latency.p99_ms),
        ];
        let top = steps.iter().map(|s| s.1).fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(&right)
            .caption("latency, ms", ("sans-serif", 16))
            .margin(15)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..5f64, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("ms")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, v)) in steps.iter().enumerate() {
            let x = i as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.15, 0.0), (x + 0.85, *v)],
                    RED.mix(0.5).filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.1}"),
                    (x + 0.2, v + top * 0.02),
                    ("sans-serif", 13),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.to_string(),
                    (x + 0.05, top * 0.95),
                    ("sans-serif", 11),
                )))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}
