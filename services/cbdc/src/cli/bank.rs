//! `cbdc bank …`: the bank operator's exchanges, freezes and unfreezes.

use cbdc_core::messages::{self, OperatorOrder, Signed};
use cbdc_proto::v1;
use serde_json::json;

use super::*;
use crate::client;

pub(super) async fn bank(b: BankCommand, out: &mut Out) -> Result<(), String> {
    let (action, a) = match b {
        BankCommand::Exchange {
            address: a,
            order:
                OperatorPayment {
                    amount: x,
                    request_id,
                    operator_key,
                    target,
                },
        } => {
            let addr = address(&a)?;
            amount(&x)?;
            let operator = read_key(&operator_key_file(operator_key, &target, addr.ledger)?)?;
            let direction = v1::exchange_request::Direction::DepositToWallet as i32;
            let sig = OperatorOrder::Exchange {
                address: &a,
                request_id: &request_id,
                amount: &x,
                direction,
                wallet_transfer: None,
            }
            .sign(&operator)
            .to_vec();
            let mut c = client::ledger(&target.bank(addr.ledger)?).await?;
            let r = c
                .exchange(v1::ExchangeRequest {
                    address: a.clone(),
                    amount: x.clone(),
                    direction,
                    request_id,
                    wallet_transfer: None,
                    operator_signature: sig,
                })
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
        BankCommand::Freeze(a) => (messages::WalletAction::Freeze, a),
        BankCommand::Unfreeze(a) => (messages::WalletAction::Unfreeze, a),
    };
    let addr = address(&a.address)?;
    let key_file = operator_key_file(a.operator_key.clone(), &a.target, addr.ledger)?;
    let operator = read_key(&key_file)?;
    let request_id = format!("{}-{}-{}", action.name(), a.address, a.reason);
    let request = v1::WalletActionRequest {
        operator_signature: OperatorOrder::Wallet {
            action,
            address: &a.address,
            request_id: &request_id,
            reason: &a.reason,
        }
        .sign(&operator)
        .to_vec(),
        address: a.address.clone(),
        reason: a.reason.clone(),
        request_id,
    };
    let mut c = client::ledger(&a.target.bank(addr.ledger)?).await?;
    let w = if action == messages::WalletAction::Freeze {
        c.freeze_wallet(request).await
    } else {
        c.unfreeze_wallet(request).await
    }
    .map_err(|s| client::status(&s))?
    .into_inner();
    let status = format!(
        "{:?}",
        v1::WalletStatus::try_from(w.status).unwrap_or_default()
    );
    out.emit(
        format!("{}: {status}", w.address),
        json!({"address": w.address, "status": status}),
    );
    Ok(())
}
