//! `cbdc bank …`: orders of the bank's authority key: exchanges, freezes, unfreezes, tier
//! changes, and reading a wallet as the bank.

use cbdc_core::messages;
use cbdc_core::{Address, KycTier};
use cbdc_proto::{requests, v1};
use serde_json::json;

use super::*;
use crate::client;

fn wallet_line(w: &v1::Wallet, out: &mut Out) {
    let status = format!(
        "{:?}",
        v1::WalletStatus::try_from(w.status).unwrap_or_default()
    );
    let tier = format!("{:?}", v1::KycTier::try_from(w.tier).unwrap_or_default());
    out.emit(
        format!(
            "{}: {status}, tier {tier}, balance {}",
            w.address, w.balance
        ),
        json!({"address": w.address, "status": status, "tier": tier, "balance": w.balance,
               "tier_changes": w.tier_changes.iter().map(|c| json!({
                   "from": format!("{:?}", v1::KycTier::try_from(c.from).unwrap_or_default()),
                   "to": format!("{:?}", v1::KycTier::try_from(c.to).unwrap_or_default()),
                   "reason": c.reason, "request_id": c.request_id, "at_unix_ms": c.at_unix_ms,
               })).collect::<Vec<_>>()}),
    );
}

/// The authority key and the header of an order about `addr`.
fn order_parts(
    order: &AuthorityOrder,
    addr: &Address,
) -> Result<(cbdc_core::Keypair, v1::RequestHeader), String> {
    let authority = read_key(&authority_key_file(
        order.authority_key.clone(),
        &order.target,
        addr.ledger,
    )?)?;
    let request_id = order.request_id.clone().unwrap_or_else(fresh_request_id);
    Ok((authority, header(&order.target, addr.ledger, &request_id)?))
}

pub(super) async fn bank(b: BankCommand, out: &mut Out) -> Result<(), String> {
    let (action, a) = match b {
        BankCommand::Exchange {
            address: a,
            order:
                OperatorPayment {
                    amount: x,
                    request_id,
                    authority_key,
                    target,
                },
        } => {
            let addr = address(&a)?;
            amount(&x)?;
            let authority = read_key(&authority_key_file(authority_key, &target, addr.ledger)?)?;
            let request = requests::exchange(
                &authority,
                header(&target, addr.ledger, &request_id)?,
                &a,
                &x,
                None,
            );
            let mut c = client::ledger(&target.bank(addr.ledger)?).await?;
            let r = c
                .exchange(request)
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "paid {x} from the vault to {a}: txid {}",
                    hex::encode(&r.txid)
                ),
                json!({"address": a, "amount": x, "txid": hex::encode(&r.txid)}),
            );
            return Ok(());
        }
        BankCommand::SetTier {
            address: a,
            tier,
            reason,
            order,
        } => {
            let addr = address(&a)?;
            let (authority, h) = order_parts(&order, &addr)?;
            let request =
                requests::set_wallet_tier(&authority, h, &a, KycTier::from(tier), &reason);
            let mut c = client::ledger(&order.target.bank(addr.ledger)?).await?;
            let w = c
                .set_wallet_tier(request)
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            wallet_line(&w, out);
            return Ok(());
        }
        BankCommand::Show { address: a, order } => {
            let addr = address(&a)?;
            let (authority, _) = order_parts(&order, &addr)?;
            let auth = read_auth(&authority, &order.target, &addr, true)?;
            let mut c = client::ledger(&order.target.bank(addr.ledger)?).await?;
            let w = c
                .get_wallet(v1::GetWalletRequest {
                    address: a.clone(),
                    auth: Some(auth),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            wallet_line(&w, out);
            if !out.json {
                let tier = |t: i32| format!("{:?}", v1::KycTier::try_from(t).unwrap_or_default());
                for c in &w.tier_changes {
                    out.emit(
                        format!(
                            "  tier {} → {}: {} (request {})",
                            tier(c.from),
                            tier(c.to),
                            c.reason,
                            c.request_id
                        ),
                        json!({}),
                    );
                }
            }
            return Ok(());
        }
        BankCommand::Freeze(a) => (messages::WalletAction::Freeze, a),
        BankCommand::Unfreeze(a) => (messages::WalletAction::Unfreeze, a),
    };
    let addr = address(&a.address)?;
    let (authority, h) = order_parts(&a.order, &addr)?;
    let request = requests::wallet_action(&authority, h, action, &a.address, &a.reason);
    let mut c = client::ledger(&a.order.target.bank(addr.ledger)?).await?;
    let w = if action == messages::WalletAction::Freeze {
        c.freeze_wallet(request).await
    } else {
        c.unfreeze_wallet(request).await
    }
    .map_err(|s| client::status(&s))?
    .into_inner();
    wallet_line(&w, out);
    Ok(())
}
