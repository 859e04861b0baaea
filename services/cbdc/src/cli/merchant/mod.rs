//! `cbdc merchant …`: the merchant gateway from the command line — a bank onboarding a
//! merchant, and the merchant's orders, QR codes, refunds, holds, mandates, statements and
//! webhook events; `pay`, `hold authorize` and `mandate create` sign the payer's side with
//! its wallet key, as a wallet app would.

use std::sync::Arc;

use cbdc_core::{Address, Amount, Keypair, KycTier, LedgerId, Lock, TransferBuilder, UnixSeconds};
use cbdc_merchant::auth::Signer;
use cbdc_merchant::client::Client;
use cbdc_merchant::payments::SignedTransferJson;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::*;

mod locks;
pub use locks::{HoldCommand, MandateCommand};

/// Where the gateway is and who calls it.
#[derive(Args, Debug, Clone)]
pub struct Gateway {
    /// The gateway's base URL (default: the devnet's).
    #[arg(long)]
    pub gateway: Option<String>,
    /// The merchant calling (its requests are signed with --api-key).
    #[arg(long, default_value = "")]
    pub merchant_id: String,
    /// The merchant's API key file.
    #[arg(long)]
    pub api_key: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum MerchantCommand {
    /// A bank onboards a merchant (signed with the bank's authority key) and raises its
    /// collection wallet to class 1.
    Onboard {
        #[arg(long)]
        bank: u32,
        /// The merchant's settlement wallet at the bank (default: the API key's address).
        #[arg(long)]
        settlement_address: Option<String>,
        #[arg(long)]
        webhook_url: String,
        /// The merchant's contact number, E.164.
        #[arg(long)]
        phone: String,
        /// The bank's authority key file (default: the devnet's).
        #[arg(long)]
        authority_key: Option<PathBuf>,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// Orders: create, get, close, and the payment QR code.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Pay an order from a wallet: reads its `cbdc:` payment URI, signs with KEY.
    Pay {
        /// The payment URI (what the QR code holds).
        uri: String,
        #[arg(long)]
        key: PathBuf,
        /// The wallet's ledger.
        #[arg(long)]
        ledger: u32,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// Refund part or all of a paid order.
    Refund {
        #[arg(long)]
        out_trade_no: String,
        #[arg(long)]
        out_refund_no: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// Holds: authorise (the rider's wallet signs), capture with splits, release, get.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Mandates: create (the owner's wallet signs), charge, get.
    #[command(subcommand)]
    Mandate(MandateCommand),
    /// The day's statement (JSON, or CSV with --csv), or its reconciliation with the ledger.
    Statement {
        /// YYYY-MM-DD (UTC); today by default.
        #[arg(long)]
        date: Option<String>,
        #[arg(long)]
        csv: bool,
        #[arg(long)]
        reconcile: bool,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// The latest webhook events and their deliveries; --redeliver ID sends one again.
    Events {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        redeliver: Option<String>,
        #[command(flatten)]
        gateway: Gateway,
    },
}

#[derive(Subcommand, Debug)]
pub enum OrderCommand {
    Create {
        #[arg(long)]
        out_trade_no: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        expires_in_s: Option<u64>,
        #[command(flatten)]
        gateway: Gateway,
    },
    Get {
        out_trade_no: String,
        #[command(flatten)]
        gateway: Gateway,
    },
    Close {
        out_trade_no: String,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// Write the order's QR code to FILE (.png or .svg).
    Qr {
        out_trade_no: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        gateway: Gateway,
    },
}

impl Gateway {
    fn base(&self) -> Result<Client, String> {
        let url = match &self.gateway {
            Some(u) => u.clone(),
            None => {
                let f = DevnetFile::load(&self.target.devnet)?;
                format!(
                    "http://{}",
                    f.merchant_gateway
                        .ok_or("the devnet runs no merchant gateway: give --gateway")?
                )
            }
        };
        Ok(Client::new(url))
    }

    /// The client signing as the merchant.
    fn merchant(&self) -> Result<Client, String> {
        let key = self
            .api_key
            .as_ref()
            .ok_or("--api-key: the merchant's API key file")?;
        if self.merchant_id.is_empty() {
            return Err("--merchant-id: the merchant calling".into());
        }
        Ok(self.base()?.signed(
            Arc::new(read_key(key)?),
            Signer::Merchant(self.merchant_id.clone()),
        ))
    }
}

fn show(out: &mut Out, v: &Value) {
    out.emit(
        serde_json::to_string_pretty(v).unwrap_or_default(),
        v.clone(),
    );
}

/// A transfer the wallet of `key` on `ledger` signs: `outputs`, the change back to it, coins
/// chosen from its own list.
async fn wallet_transfer(
    target: &Target,
    key: &Keypair,
    ledger: u32,
    outputs: &[(LedgerId, Amount, Lock)],
    memo: &str,
) -> Result<cbdc_core::Transfer, String> {
    let mut l = cbdc_client::Ledger::connect(
        &target.bank(LedgerId(ledger))?,
        LedgerId(ledger),
        &target.network()?,
    )
    .await
    .map_err(|e| e.to_string())?;
    let total = Amount::checked_sum(outputs.iter().map(|o| o.1)).ok_or("amounts overflow")?;
    let coins = l.coins(key).await.map_err(|e| e.to_string())?;
    let chosen =
        cbdc_client::select_coins(&coins, &key.public(), total).map_err(|e| e.to_string())?;
    let mut b =
        TransferBuilder::new(UnixSeconds(now_ms() / 1000 + 300)).memo(memo.as_bytes().to_vec());
    let mut sum = Amount::ZERO;
    for c in &chosen {
        b = b.input(c.outpoint, c.output.value);
        sum = sum.checked_add(c.output.value).ok_or("overflow")?;
    }
    for (to, a, lock) in outputs {
        b = b.output(*to, *a, *lock);
    }
    if sum > total {
        b = b.output(
            LedgerId(ledger),
            sum.saturating_sub(total),
            Lock::Key(key.public()),
        );
    }
    b.sign(&[key]).map_err(|e| e.to_string())
}

/// Calls the gateway through `client` and prints its answer.
async fn call_show(
    out: &mut Out,
    client: &Client,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<(), String> {
    show(out, &client.call(method, path, body).await.map_err(err)?);
    Ok(())
}

fn err(e: cbdc_merchant::client::CallError) -> String {
    e.to_string()
}

pub(super) async fn merchant(c: MerchantCommand, out: &mut Out) -> Result<(), String> {
    match c {
        MerchantCommand::Onboard {
            bank,
            settlement_address,
            webhook_url,
            phone,
            authority_key,
            gateway,
        } => {
            let api = read_key(
                gateway
                    .api_key
                    .as_ref()
                    .ok_or("--api-key: the merchant's API key file")?,
            )?;
            let authority = read_key(&authority_key_file(
                authority_key,
                &gateway.target,
                LedgerId(bank),
            )?)?;
            let settlement = settlement_address
                .unwrap_or_else(|| Address::new(LedgerId(bank), api.public()).to_string());
            let m = gateway
                .base()?
                .signed(
                    Arc::new(Keypair::from_seed(authority.seed())),
                    Signer::Bank(bank),
                )
                .call(
                    "POST",
                    "/v1/merchants",
                    &json!({
                        "merchant_id": gateway.merchant_id,
                        "settlement_address": settlement,
                        "api_public_key": hex::encode(api.public().as_bytes()),
                        "webhook_url": webhook_url,
                        "contact_phone": phone,
                    }),
                )
                .await
                .map_err(err)?;
            let collection = m["collection_address"].as_str().unwrap_or("").to_string();
            let request = cbdc_proto::requests::set_wallet_tier(
                &authority,
                header(
                    &gateway.target,
                    LedgerId(bank),
                    &format!("merchant-{}-class1", gateway.merchant_id),
                )?,
                &collection,
                KycTier::Class1,
                "merchant onboarding",
            );
            crate::client::ledger(&gateway.target.bank(LedgerId(bank))?)
                .await?
                .set_wallet_tier(request)
                .await
                .map_err(|s| crate::client::status(&s))?;
            show(out, &m);
        }
        MerchantCommand::Order(o) => match o {
            OrderCommand::Create {
                out_trade_no,
                amount,
                description,
                expires_in_s,
                gateway,
            } => {
                let mut body = json!({"out_trade_no": out_trade_no, "amount": amount, "description": description});
                if let Some(s) = expires_in_s {
                    body["expires_in_s"] = s.into();
                }
                call_show(out, &gateway.merchant()?, "POST", "/v1/orders", &body).await?;
            }
            OrderCommand::Get {
                out_trade_no,
                gateway,
            } => {
                call_show(
                    out,
                    &gateway.merchant()?,
                    "GET",
                    &format!("/v1/orders/{out_trade_no}"),
                    &Value::Null,
                )
                .await?;
            }
            OrderCommand::Close {
                out_trade_no,
                gateway,
            } => {
                call_show(
                    out,
                    &gateway.merchant()?,
                    "POST",
                    &format!("/v1/orders/{out_trade_no}/close"),
                    &Value::Null,
                )
                .await?;
            }
            OrderCommand::Qr {
                out_trade_no,
                out: file,
                gateway,
            } => {
                let kind = if file.extension().is_some_and(|e| e == "svg") {
                    "svg"
                } else {
                    "png"
                };
                let (_, bytes) = gateway
                    .merchant()?
                    .raw(
                        "GET",
                        &format!("/v1/orders/{out_trade_no}/qr.{kind}"),
                        &Value::Null,
                    )
                    .await
                    .map_err(err)?;
                std::fs::write(&file, &bytes).map_err(|e| format!("{}: {e}", file.display()))?;
                out.emit(format!("wrote {}", file.display()), json!({"file": file}));
            }
        },
        MerchantCommand::Pay {
            uri,
            key,
            ledger,
            gateway,
        } => {
            let wallet = read_key(&key)?;
            let (to, query) = uri
                .strip_prefix("cbdc:")
                .and_then(|u| u.split_once('?'))
                .ok_or("a cbdc: payment URI")?;
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix(&format!("{k}=")))
                    .unwrap_or("")
                    .to_string()
            };
            let to = address(to)?;
            let memo = param("memo");
            let mut parts = memo.splitn(3, ':');
            let (Some("order"), Some(m), Some(otn)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("the URI's memo {memo:?} names no order"));
            };
            let t = wallet_transfer(
                &gateway.target,
                &wallet,
                ledger,
                &[(to.ledger, amount(&param("amount"))?, Lock::Key(to.key))],
                &memo,
            )
            .await?;
            let body = json!({
                "payer_address": Address::new(LedgerId(ledger), wallet.public()).to_string(),
                "transfer": SignedTransferJson::of(&t),
            });
            let path = format!("/v1/merchants/{m}/orders/{otn}/pay");
            call_show(out, &gateway.base()?, "POST", &path, &body).await?;
        }
        MerchantCommand::Refund {
            out_trade_no,
            out_refund_no,
            amount,
            reason,
            gateway,
        } => {
            let body = json!({"out_refund_no": out_refund_no, "out_trade_no": out_trade_no, "amount": amount, "reason": reason});
            call_show(out, &gateway.merchant()?, "POST", "/v1/refunds", &body).await?;
        }
        MerchantCommand::Hold(h) => locks::hold(h, out).await?,
        MerchantCommand::Mandate(m) => locks::mandate(m, out).await?,
        MerchantCommand::Statement {
            date,
            csv,
            reconcile,
            gateway,
        } => {
            let date = date.unwrap_or_else(|| cbdc_merchant::statements::day(now_ms()));
            let client = gateway.merchant()?;
            if csv {
                let (_, bytes) = client
                    .raw("GET", &format!("/v1/statements/{date}/csv"), &Value::Null)
                    .await
                    .map_err(err)?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                out.emit(text.trim_end().to_string(), json!({"csv": text}));
            } else if reconcile {
                call_show(
                    out,
                    &client,
                    "GET",
                    &format!("/v1/statements/{date}/reconciliation"),
                    &Value::Null,
                )
                .await?;
            } else {
                call_show(
                    out,
                    &client,
                    "GET",
                    &format!("/v1/statements/{date}"),
                    &Value::Null,
                )
                .await?;
            }
        }
        MerchantCommand::Events {
            limit,
            redeliver,
            gateway,
        } => {
            let client = gateway.merchant()?;
            let v = match redeliver {
                Some(id) => {
                    client
                        .call("POST", &format!("/v1/events/{id}/redeliver"), &Value::Null)
                        .await
                }
                None => {
                    client
                        .call("GET", &format!("/v1/events?limit={limit}"), &Value::Null)
                        .await
                }
            }
            .map_err(err)?;
            show(out, &v);
        }
    }
    Ok(())
}

/// The merchant's collection wallet (the payee of its holds, the merchant of its
/// mandates), as the gateway says it.
async fn merchant_collection(gateway: &Gateway) -> Result<Address, String> {
    let me = gateway
        .merchant()?
        .call("GET", "/v1/merchant", &Value::Null)
        .await
        .map_err(err)?;
    address(me["collection_address"].as_str().unwrap_or(""))
}
