//! The checkout page a payer sees: the order's amount, description, QR code and payment URI,
//! turning to "paid" when the payment lands. Served by the gateway at the order's
//! `checkout_path`, `/checkout/<merchant_id>/<out_trade_no>/<capability>`, where the
//! capability is [`Custody::checkout_mac`](crate::custody::Custody::checkout_mac): without it
//! the page is not found, so one order's page gives nothing about another. The page needs no
//! resource from outside the gateway (its script and style are served beside it, the QR code
//! is an SVG from the gateway), and its Content-Security-Policy allows nothing else.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::orders::{Order, OrderStatus};

/// What the page reads every second.
#[derive(Serialize)]
struct Status<'a> {
    status: OrderStatus,
    amount: &'a str,
    description: &'a str,
    payment_uri: &'a str,
    expires_at_unix_s: u64,
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers every checkout answer carries: the capability is in the path, so it must not
/// leak through a referrer or a shared cache.
fn private(content_type: &'static str, body: impl IntoResponse) -> Response {
    cbdc_runtime::web::private(content_type, CSP, body)
}

/// Text for HTML: the description is the merchant's, never markup.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Gateway {
    /// The order behind a checkout address, if `mac` is its capability.
    async fn checkout_order(&self, m: &str, o: &str, mac: &str) -> Result<Order, ApiError> {
        if !self.custody.checkout_ok(m, o, mac) {
            return Err(ApiError::not_found("checkout", "no such checkout page"));
        }
        Ok(self.order(m, o).await?.view(self.now()))
    }
}

type Ids = Path<(String, String, String)>;

pub(crate) async fn page(State(g): State<Gateway>, Path((m, o, mac)): Ids) -> Response {
    match g.checkout_order(&m, &o, &mac).await {
        Ok(order) => private("text/html; charset=utf-8", render(&order, &mac)),
        Err(e) => e.into_response(),
    }
}

fn render(order: &Order, mac: &str) -> String {
    let base = format!(
        "/checkout/{}/{}/{mac}",
        order.merchant_id, order.out_trade_no
    );
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pay {amount} — {merchant}</title>
<link rel="stylesheet" href="/checkout.css">
<script src="/checkout.js" defer></script>
</head>
<body data-status-url="{base}/status">
<main>
  <p class="merchant">{merchant}</p>
  <h1 id="amount">¥{amount}</h1>
  <p id="description">{description}</p>
  <div id="pay">
    <img id="qr" src="{base}/qr.svg" width="256" height="256" alt="QR code of the payment">
    <p>Scan with your digital-yuan wallet, or open:</p>
    <p><code id="payment-uri">{uri}</code></p>
  </div>
  <p id="status" class="status" data-status="{status}">{status_text}</p>
  <p class="order">Order {otn}</p>
</main>
</body>
</html>
"#,
        amount = escaped(&order.amount),
        merchant = escaped(&order.merchant_id),
        description = escaped(&order.description),
        uri = escaped(&order.payment_uri),
        otn = escaped(&order.out_trade_no),
        status = status_name(order.status),
        status_text = status_text(order.status),
    )
}

fn status_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Created => "CREATED",
        OrderStatus::Paid => "PAID",
        OrderStatus::Closed => "CLOSED",
        OrderStatus::Refunded => "REFUNDED",
        OrderStatus::Expired => "EXPIRED",
    }
}

fn status_text(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Created => "Waiting for payment…",
        OrderStatus::Paid => "Paid ✓",
        OrderStatus::Closed => "This order was closed.",
        OrderStatus::Refunded => "Paid, and refunded.",
        OrderStatus::Expired => "This order expired.",
    }
}

pub(crate) async fn status(State(g): State<Gateway>, Path((m, o, mac)): Ids) -> Response {
    match g.checkout_order(&m, &o, &mac).await {
        Ok(order) => private(
            "application/json",
            serde_json::to_string(&Status {
                status: order.status,
                amount: &order.amount,
                description: &order.description,
                payment_uri: &order.payment_uri,
                expires_at_unix_s: order.expires_at_unix_s,
            })
            .expect("serialisable"),
        ),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn qr(State(g): State<Gateway>, Path((m, o, mac)): Ids) -> Response {
    let answer = async {
        let order = g.checkout_order(&m, &o, &mac).await?;
        crate::qr::svg(&order.payment_uri)
    };
    match answer.await {
        Ok(svg) => private("image/svg+xml", svg),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn script() -> Response {
    private("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    private("text/css; charset=utf-8", STYLE)
}

/// Polls the order's status every second and shows it; stops once it is final.
const SCRIPT: &str = r#""use strict";
const TEXT = {
  CREATED: "Waiting for payment…",
  PAID: "Paid ✓",
  CLOSED: "This order was closed.",
  REFUNDED: "Paid, and refunded.",
  EXPIRED: "This order expired.",
};
async function poll() {
  const url = document.body.dataset.statusUrl;
  const el = document.getElementById("status");
  try {
    const r = await fetch(url, { cache: "no-store" });
    if (r.ok) {
      const s = await r.json();
      el.dataset.status = s.status;
      el.textContent = TEXT[s.status] || s.status;
      document.getElementById("pay").hidden = s.status !== "CREATED";
      if (s.status !== "CREATED") return;
    }
  } catch (e) {
    el.textContent = "Reconnecting…";
  }
  setTimeout(poll, 1000);
}
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("pay").hidden = document.getElementById("status").dataset.status !== "CREATED";
  poll();
});
"#;

const STYLE: &str = r#"body { font-family: system-ui, sans-serif; background: #f4f1ec; margin: 0; }
main { max-width: 420px; margin: 40px auto; background: #fff; border-radius: 12px;
       padding: 28px; text-align: center; box-shadow: 0 2px 12px rgba(0,0,0,.08); }
.merchant { color: #666; margin: 0; }
h1 { font-size: 2.4em; margin: 8px 0; color: #b3261e; }
#qr { margin: 12px auto; display: block; }
code { word-break: break-all; font-size: .8em; color: #444; }
.status { font-size: 1.3em; font-weight: 600; padding: 10px; border-radius: 8px; background: #fff4e5; }
.status[data-status="PAID"] { background: #e6f4ea; color: #1e6b34; }
.status[data-status="CLOSED"], .status[data-status="EXPIRED"] { background: #eee; color: #555; }
.order { color: #999; font-size: .8em; }
"#;
