//! `cbdc merchant hold …` and `cbdc merchant mandate …`: a ride's hold (authorised with the
//! rider's signed transfer, captured with splits, released) and a subscription's mandate
//! (funded by the owner's signed transfer, charged by the merchant).

use cbdc_core::{Address, LedgerId, Lock, UnixSeconds};
use cbdc_merchant::payments::SignedTransferJson;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Gateway, call_show, merchant_collection, wallet_transfer};
use crate::cli::*;

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    Authorize {
        #[arg(long)]
        hold_id: String,
        #[arg(long)]
        amount: String,
        /// The rider's wallet key and ledger.
        #[arg(long)]
        payer_key: PathBuf,
        #[arg(long)]
        payer_ledger: u32,
        #[arg(long, default_value_t = 3600)]
        expires_in_s: u64,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// Capture: each --split is ADDRESS=AMOUNT; the rest goes back to the rider.
    Capture {
        hold_id: String,
        #[arg(long = "split", required = true)]
        splits: Vec<String>,
        #[command(flatten)]
        gateway: Gateway,
    },
    Release {
        hold_id: String,
        #[command(flatten)]
        gateway: Gateway,
    },
    Get {
        hold_id: String,
        #[command(flatten)]
        gateway: Gateway,
    },
}

#[derive(Subcommand, Debug)]
pub enum MandateCommand {
    Create {
        #[arg(long)]
        mandate_id: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        per_payment_max: String,
        #[arg(long, default_value_t = 30 * 86_400)]
        expires_in_s: u64,
        /// The owner's wallet key and ledger.
        #[arg(long)]
        owner_key: PathBuf,
        #[arg(long)]
        owner_ledger: u32,
        #[command(flatten)]
        gateway: Gateway,
    },
    Charge {
        mandate_id: String,
        #[arg(long)]
        out_trade_no: String,
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        gateway: Gateway,
    },
    Get {
        mandate_id: String,
        #[command(flatten)]
        gateway: Gateway,
    },
}

pub(super) async fn hold(h: HoldCommand, out: &mut Out) -> Result<(), String> {
    match h {
        HoldCommand::Authorize {
            hold_id,
            amount: a,
            payer_key,
            payer_ledger,
            expires_in_s,
            gateway,
        } => {
            let rider = read_key(&payer_key)?;
            let merchant = gateway.merchant()?;
            let m = merchant_collection(&gateway).await?;
            let lock = Lock::Hold {
                payer: rider.public(),
                payee: m.key,
                expires_at: UnixSeconds(now_ms() / 1000 + expires_in_s),
            };
            let t = wallet_transfer(
                &gateway.target,
                &rider,
                payer_ledger,
                &[(LedgerId(payer_ledger), amount(&a)?, lock)],
                &format!("hold {hold_id}"),
            )
            .await?;
            let body = json!({"hold_id": hold_id, "payer_address": Address::new(LedgerId(payer_ledger), rider.public()).to_string(), "transfer": SignedTransferJson::of(&t)});
            call_show(out, &merchant, "POST", "/v1/holds", &body).await?;
        }
        HoldCommand::Capture {
            hold_id,
            splits,
            gateway,
        } => {
            let splits = splits
                .iter()
                .map(|s| {
                    let (to, a) = s
                        .split_once('=')
                        .ok_or_else(|| format!("--split {s}: ADDRESS=AMOUNT"))?;
                    Ok(json!({"to_address": to, "amount": a}))
                })
                .collect::<Result<Vec<_>, String>>()?;
            call_show(
                out,
                &gateway.merchant()?,
                "POST",
                &format!("/v1/holds/{hold_id}/capture"),
                &json!({"splits": splits}),
            )
            .await?;
        }
        HoldCommand::Release { hold_id, gateway } => {
            call_show(
                out,
                &gateway.merchant()?,
                "POST",
                &format!("/v1/holds/{hold_id}/release"),
                &Value::Null,
            )
            .await?;
        }
        HoldCommand::Get { hold_id, gateway } => {
            call_show(
                out,
                &gateway.merchant()?,
                "GET",
                &format!("/v1/holds/{hold_id}"),
                &Value::Null,
            )
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn mandate(m: MandateCommand, out: &mut Out) -> Result<(), String> {
    match m {
        MandateCommand::Create {
            mandate_id,
            amount: a,
            per_payment_max,
            expires_in_s,
            owner_key,
            owner_ledger,
            gateway,
        } => {
            let owner = read_key(&owner_key)?;
            let merchant = gateway.merchant()?;
            let c = merchant_collection(&gateway).await?;
            let lock = Lock::Mandate {
                owner: owner.public(),
                merchant: c.key,
                per_payment_max: amount(&per_payment_max)?,
                expires_at: UnixSeconds(now_ms() / 1000 + expires_in_s),
            };
            let t = wallet_transfer(
                &gateway.target,
                &owner,
                owner_ledger,
                &[(LedgerId(owner_ledger), amount(&a)?, lock)],
                &format!("mandate {mandate_id}"),
            )
            .await?;
            let body = json!({"mandate_id": mandate_id, "owner_address": Address::new(LedgerId(owner_ledger), owner.public()).to_string(), "transfer": SignedTransferJson::of(&t)});
            call_show(out, &merchant, "POST", "/v1/mandates", &body).await?;
        }
        MandateCommand::Charge {
            mandate_id,
            out_trade_no,
            amount,
            gateway,
        } => {
            let body = json!({"out_trade_no": out_trade_no, "amount": amount});
            call_show(
                out,
                &gateway.merchant()?,
                "POST",
                &format!("/v1/mandates/{mandate_id}/charge"),
                &body,
            )
            .await?;
        }
        MandateCommand::Get {
            mandate_id,
            gateway,
        } => {
            call_show(
                out,
                &gateway.merchant()?,
                "GET",
                &format!("/v1/mandates/{mandate_id}"),
                &Value::Null,
            )
            .await?;
        }
    }
    Ok(())
}
