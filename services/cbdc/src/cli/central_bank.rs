//! `cbdc central-bank …`: mint, redeem, audit.

use cbdc_core::LedgerId;
use cbdc_core::messages::{AdminOrder, OperatorOrder, Signed};
use cbdc_proto::v1;
use serde_json::json;

use super::*;
use crate::client;

pub(super) async fn central_bank(c: CentralBankCommand, out: &mut Out) -> Result<(), String> {
    match c {
        CentralBankCommand::Mint {
            ledger,
            amount: a,
            request_id,
            reserve_reference,
            admin_key,
            target,
        } => {
            amount(&a)?;
            let admin_file = match admin_key {
                Some(k) => k,
                None => DevnetFile::load(&target.devnet)?.admin_key,
            };
            let admin = read_key(&admin_file)?;
            let sig = AdminOrder::Mint {
                request_id: &request_id,
                ledger: LedgerId(ledger),
                amount: &a,
                reserve_reference: &reserve_reference,
            }
            .sign(&admin);
            let mut cb = client::issuance(&target.central_bank()?).await?;
            let r = cb
                .mint(v1::MintRequest {
                    request_id,
                    ledger_id: ledger,
                    amount: a.clone(),
                    reserve_reference,
                    admin_signature: sig.to_vec(),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "{} {a} to bank {ledger}; its outstanding is {}",
                    if r.already_minted { "already issued" } else { "issued" },
                    r.outstanding
                ),
                json!({"ledger": ledger, "amount": a, "outstanding": r.outstanding, "already_minted": r.already_minted}),
            );
        }
        CentralBankCommand::Redeem {
            ledger,
            order:
                OperatorPayment {
                    amount: a,
                    request_id,
                    operator_key,
                    target,
                },
        } => {
            amount(&a)?;
            let operator = read_key(&operator_key_file(operator_key, &target, LedgerId(ledger))?)?;
            let sig = OperatorOrder::Redeem {
                amount: &a,
                request_id: &request_id,
            }
            .sign(&operator);
            let mut c = client::ledger(&target.bank(LedgerId(ledger))?).await?;
            let r = c
                .redeem(v1::RedeemRequest {
                    amount: a.clone(),
                    request_id,
                    operator_signature: sig.to_vec(),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "bank {ledger} returns {a} to the central bank: txid {}",
                    hex::encode(&r.txid)
                ),
                json!({"ledger": ledger, "amount": a, "txid": hex::encode(&r.txid)}),
            );
        }
        CentralBankCommand::Audit { target } => {
            let mut cb = client::issuance(&target.central_bank()?).await?;
            let a = cb
                .audit(v1::AuditRequest {})
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "issued {} − redeemed {} = {}; {}",
                    a.issued,
                    a.redeemed,
                    a.outstanding,
                    if a.balanced { "balanced" } else { "NOT balanced" }
                ),
                json!({"issued": a.issued, "redeemed": a.redeemed, "outstanding": a.outstanding, "balanced": a.balanced}),
            );
            for l in &a.ledgers {
                out.emit(
                    format!(
                        "  bank {}: books {}, reported {}, in flight {}, unacknowledged {}{}",
                        l.ledger_id,
                        l.outstanding_books,
                        l.outstanding_reported,
                        l.in_flight_in,
                        l.unacknowledged_out,
                        if l.balanced { "" } else { " — NOT balanced" }
                    ),
                    json!({"ledger": l.ledger_id, "books": l.outstanding_books, "reported": l.outstanding_reported, "balanced": l.balanced}),
                );
            }
        }
    }
    Ok(())
}
