//! `cbdc wallet …`: keys, opening, balance, payments, history, watching, receipts.

use cbdc_core::transfer::sign_body;
use cbdc_core::{Address, Keypair, KycTier, LedgerId, Txid};
use cbdc_proto::convert;
use cbdc_proto::v1;
use serde_json::json;

use super::*;

fn passphrase(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err(format!(
            "--passphrase-env {var}: the variable is not set or empty"
        )),
    }
}
use crate::client;

/// A client of the bank holding the wallet at `address`, and a read grant signed with the
/// wallet's key in `key` (read before connecting, so a bad key file is named first).
async fn as_wallet(
    address_text: &str,
    key: &std::path::Path,
    target: &Target,
) -> Result<
    (
        cbdc_proto::v1::ledger_service_client::LedgerServiceClient<tonic::transport::Channel>,
        v1::ReadAuth,
    ),
    String,
> {
    let addr = address(address_text)?;
    let k = read_key(key)?;
    let c = client::ledger(&target.bank(addr.ledger)?).await?;
    Ok((c, read_auth(&k, target, &addr, false)?))
}

pub(super) async fn wallet(w: WalletCommand, out: &mut Out) -> Result<(), String> {
    match w {
        WalletCommand::New {
            key,
            passphrase_env,
        } => {
            let pass = passphrase_env.as_deref().map(passphrase).transpose()?;
            let seed = cbdc_runtime::secret::create_seed(&key, pass.as_deref())?;
            let k = Keypair::from_seed(&seed);
            let pk = hex::encode(k.public().as_bytes());
            out.emit(
                format!(
                    "new wallet key in {} (mode 0600); public key {pk}",
                    key.display()
                ),
                json!({"key_file": key, "public_key": pk}),
            );
        }
        WalletCommand::Open {
            key,
            ledger,
            phone,
            tier,
            target,
        } => {
            let k = read_key(&key)?;
            let ledger = LedgerId(ledger);
            let mut c = client::ledger(&target.bank(ledger)?).await?;
            let mut request =
                cbdc_proto::requests::open_wallet(&k, &target.network()?, ledger, &phone);
            request.tier = convert::to_kyc_tier(KycTier::from(tier)) as i32;
            let w = c
                .open_wallet(request)
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!("opened {} (anonymous)", w.address),
                json!({"address": w.address, "balance": w.balance}),
            );
        }
        WalletCommand::Balance {
            address: a,
            key,
            target,
        } => {
            let (mut c, auth) = as_wallet(&a, &key, &target).await?;
            let b = c
                .get_balance(v1::GetBalanceRequest {
                    address: a.clone(),
                    auth: Some(auth),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!("{a}: {} (spent today {})", b.balance, b.spent_today),
                json!({"address": a, "balance": b.balance, "spent_today": b.spent_today, "unspent_outputs": b.unspent_outputs}),
            );
        }
        WalletCommand::Pay {
            key,
            ledger,
            to,
            amount: a,
            target,
        } => {
            let k = read_key(&key)?;
            let to_addr = address(&to)?;
            amount(&a)?;
            let ledger = LedgerId(ledger);
            let from = Address::new(ledger, k.public());
            let mut c = client::ledger(&target.bank(ledger)?).await?;
            let auth = read_auth(&k, &target, &from, false)?;
            let built = c
                .build_transfer(v1::BuildTransferRequest {
                    from_address: from.to_string(),
                    auth: Some(auth),
                    payments: vec![v1::Payment {
                        to_address: to_addr.to_string(),
                        amount: a.clone(),
                    }],
                    memo: Vec::new(),
                    valid_for_s: 0,
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            let t = sign_body(built.body, &[&k]).map_err(|e| e.to_string())?;
            c.submit_transfer(v1::SubmitTransferRequest {
                transfer: Some(convert::to_signed_transfer(&t)),
            })
            .await
            .map_err(|s| client::status(&s))?;
            out.emit(
                format!("paid {a} to {to}: txid {}", t.txid()),
                json!({"txid": t.txid().to_string(), "amount": a, "to": to}),
            );
        }
        WalletCommand::History {
            address: a,
            key,
            target,
        } => {
            let (mut c, auth) = as_wallet(&a, &key, &target).await?;
            let h = c
                .list_history(v1::ListHistoryRequest {
                    address: a.clone(),
                    page: None,
                    auth: Some(auth),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            for e in &h.entries {
                if let Some(c) = &e.tier_change {
                    let tier =
                        |t: i32| format!("{:?}", v1::KycTier::try_from(t).unwrap_or_default());
                    out.emit(
                        format!("tier {} → {}: {}", tier(c.from), tier(c.to), c.reason),
                        json!({"tier_change": {"from": tier(c.from), "to": tier(c.to), "reason": c.reason}}),
                    );
                    continue;
                }
                out.emit(
                    format!(
                        "{} {} {}",
                        if e.incoming { "in " } else { "out" },
                        e.amount,
                        hex::encode(&e.txid)
                    ),
                    json!({"incoming": e.incoming, "amount": e.amount, "txid": hex::encode(&e.txid)}),
                );
            }
        }
        WalletCommand::Watch {
            address: a,
            key,
            cursor,
            count,
            target,
        } => {
            let (mut c, auth) = as_wallet(&a, &key, &target).await?;
            let mut stream = c
                .watch_wallet(v1::WatchWalletRequest {
                    address: a.clone(),
                    cursor,
                    auth: Some(auth),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            let mut seen = 0usize;
            while count.is_none_or(|n| seen < n) {
                let Some(e) = stream.message().await.map_err(|s| client::status(&s))? else {
                    break;
                };
                seen += 1;
                let line = if out.json {
                    json!({"incoming": e.incoming, "amount": e.amount, "txid": hex::encode(&e.txid), "cursor": e.cursor}).to_string()
                } else {
                    format!(
                        "{} {} {}",
                        if e.incoming { "in " } else { "out" },
                        e.amount,
                        hex::encode(&e.txid)
                    )
                };
                println!("{line}");
            }
        }
        WalletCommand::Receipt(ReceiptCommand::Verify {
            txid,
            ledger,
            key,
            target,
        }) => {
            let id = Txid(
                hex::decode(&txid)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("txid {txid:?}: expected 64 hex digits"))?,
            );
            let ledger = LedgerId(ledger);
            let k = read_key(&key)?;
            let reader = Address::new(ledger, k.public());
            let mut c = client::ledger(&target.bank(ledger)?).await?;
            let auth = read_auth(&k, &target, &reader, false)?;
            let r = c
                .get_receipt(v1::GetReceiptRequest {
                    txid: id.0.to_vec(),
                    address: reader.to_string(),
                    auth: Some(auth),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            let mut cb = client::issuance(&target.central_bank()?).await?;
            let ops = cb
                .list_operators(v1::ListOperatorsRequest { page: None })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner()
                .operators;
            let op = ops
                .iter()
                .find(|o| o.ledger_id == ledger.0)
                .ok_or_else(|| {
                    format!("ledger {}: not in the central bank's registry", ledger.0)
                })?;
            let key = cbdc_core::PublicKey::from_bytes(
                op.operator_public_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| "the registry's key is malformed".to_string())?,
            );
            let receipt = convert::receipt(&r).map_err(|e| e.to_string())?;
            cbdc_core::audit::verify_receipt(&receipt, ledger, &key)
                .map_err(|e| format!("the receipt does not verify: {e}"))?;
            out.emit(
                format!(
                    "verified: txid {txid} is leaf {} of the {}-leaf log of ledger {}, checkpoint signed by its operator",
                    receipt.index, receipt.checkpoint.size, ledger.0
                ),
                json!({"verified": true, "index": receipt.index, "size": receipt.checkpoint.size, "root": hex::encode(receipt.checkpoint.root)}),
            );
        }
    }
    Ok(())
}
