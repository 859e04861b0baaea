//! `cbdc central-bank …`: mint, redeem, audit, register a bank.

use cbdc_core::LedgerId;
use cbdc_proto::{requests, v1};
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
            admin_cert,
            target,
        } => {
            amount(&a)?;
            let admin_file = match admin_key {
                Some(k) => k,
                None => DevnetFile::load(&target.devnet)?.admin_key,
            };
            let admin = read_key(&admin_file)?;
            let request = requests::mint(
                &admin,
                header(&target, cbdc_core::messages::CENTRAL_BANK, &request_id)?,
                LedgerId(ledger),
                &a,
                &reserve_reference,
            );
            let mut cb = client::issuance(&target.central_bank_admin(&admin_cert)?).await?;
            let r = cb
                .mint(request)
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
                    authority_key,
                    target,
                },
        } => {
            amount(&a)?;
            let authority = read_key(&authority_key_file(
                authority_key,
                &target,
                LedgerId(ledger),
            )?)?;
            let request = requests::redeem(
                &authority,
                header(&target, LedgerId(ledger), &request_id)?,
                &a,
            );
            let mut c = client::ledger(&target.bank(LedgerId(ledger))?).await?;
            let r = c
                .redeem(request)
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
                        "  bank {}: books {}, held (unspent + outbox) {}, in flight {}, unacknowledged {}{}{}",
                        l.ledger_id,
                        l.outstanding_books,
                        l.outstanding_reported,
                        l.in_flight_in,
                        l.unacknowledged_out,
                        if l.balanced { "" } else { " — NOT balanced" },
                        if l.fault.is_empty() { String::new() } else { format!(": {}", l.fault) }
                    ),
                    json!({"ledger": l.ledger_id, "books": l.outstanding_books, "reported": l.outstanding_reported, "balanced": l.balanced, "fault": l.fault, "checkpoint_size": l.checkpoint_size}),
                );
            }
        }
        CentralBankCommand::RegisterBank {
            ledger,
            operator_public_key,
            operator_key_file,
            bank_endpoint,
            request_id,
            admin_key,
            admin_cert,
            target,
        } => {
            let operator = match (operator_public_key, operator_key_file) {
                (Some(hex), None) => cbdc_issuance::parse_public_key("operator_public_key", &hex)?,
                (None, Some(file)) => read_key(&file)?.public(),
                _ => {
                    return Err(
                        "give the operator's key: --operator-public-key or --operator-key-file"
                            .into(),
                    );
                }
            };
            if !(bank_endpoint.starts_with("https://") || bank_endpoint.starts_with("http://")) {
                return Err(format!(
                    "--bank-endpoint {bank_endpoint}: expected https://host:port"
                ));
            }
            let admin_file = match admin_key {
                Some(k) => k,
                None => DevnetFile::load(&target.devnet)?.admin_key,
            };
            let admin = read_key(&admin_file)?;
            let request = requests::register_operator(
                &admin,
                header(&target, cbdc_core::messages::CENTRAL_BANK, &request_id)?,
                LedgerId(ledger),
                &operator,
                &bank_endpoint,
            );
            let mut cb = client::issuance(&target.central_bank_admin(&admin_cert)?).await?;
            let r = cb
                .register_operator(request)
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "bank {} registered: operator key {}, endpoint {}",
                    r.ledger_id,
                    hex::encode(&r.operator_public_key),
                    r.endpoint
                ),
                json!({"ledger": r.ledger_id, "operator_public_key": hex::encode(&r.operator_public_key), "endpoint": r.endpoint}),
            );
        }
    }
    Ok(())
}
