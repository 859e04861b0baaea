//! `cbdc wallet …`: keys, opening, balance, payments, history, watching, receipts.

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

/// The bank holding the wallet at `address`, through the client library, and the wallet's
/// key from `key` (read before connecting, so a bad key file is named first).
async fn as_wallet(
    address_text: &str,
    key: &std::path::Path,
    target: &Target,
) -> Result<(cbdc_client::Ledger, Keypair), String> {
    let addr = address(address_text)?;
    let k = read_key(key)?;
    if addr.key != k.public() {
        return Err(format!(
            "--key {}: holds the key of another wallet than {address_text}",
            key.display()
        ));
    }
    Ok((bank_of(addr.ledger, target).await?, k))
}

async fn bank_of(ledger: LedgerId, target: &Target) -> Result<cbdc_client::Ledger, String> {
    let channel = cbdc_client::connect(&target.bank(ledger)?, "bank ledger")
        .await
        .map_err(|e| e.to_string())?;
    Ok(cbdc_client::Ledger::from_channel(
        channel,
        ledger,
        &target.network()?,
    ))
}

/// Where a wallet keeps the last checkpoint it accepted of `ledger`: beside its key file.
fn kept_checkpoint(key: &std::path::Path, ledger: LedgerId) -> std::path::PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".ledger-{}.checkpoint", ledger.0));
    key.with_file_name(name)
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
            let (mut bank, k) = as_wallet(&a, &key, &target).await?;
            let b = bank.balance(&k).await.map_err(|e| e.to_string())?;
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
            let mut bank = bank_of(ledger, &target).await?;
            let value = cbdc_core::Amount::parse(&a).map_err(|e| format!("amount {a:?}: {e}"))?;
            let t = bank
                .pay(&k, &[(to_addr, value)], b"")
                .await
                .map_err(|e| e.to_string())?;
            out.emit(
                format!("paid {a} to {to}: txid {}", t.txid),
                json!({"txid": t.txid.to_string(), "amount": a, "to": to, "from": from.to_string()}),
            );
        }
        WalletCommand::History {
            address: a,
            key,
            target,
        } => {
            let (mut bank, k) = as_wallet(&a, &key, &target).await?;
            let h = bank.history(&k, "", 0).await.map_err(|e| e.to_string())?;
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
            let (mut bank, k) = as_wallet(&a, &key, &target).await?;
            let mut stream = bank.watch(&k, &cursor).await.map_err(|e| e.to_string())?;
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
            let mut bank = bank_of(ledger, &target).await?;
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
            let operator = cbdc_core::PublicKey::from_bytes(
                op.operator_public_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| "the registry's key is malformed".to_string())?,
            );
            let receipt = bank
                .receipt(&k, &id, &operator)
                .await
                .map_err(|e| match e {
                    cbdc_client::Error::Verify(why) => {
                        format!("the receipt does not verify: {why}")
                    }
                    other => other.to_string(),
                })?;
            // The log this wallet was shown before must be a prefix of this one.
            let kept_file = kept_checkpoint(&key, ledger);
            let kept = cbdc_client::trust::load(&kept_file).map_err(|e| e.to_string())?;
            let (kept_now, before) = match &kept {
                None => (receipt.checkpoint, None),
                Some(kept) => (
                    cbdc_client::trust::advance(&mut bank, &operator, kept, &receipt.checkpoint)
                        .await
                        .map_err(|e| {
                            format!("the ledger's log is not the one it showed before: {e}")
                        })?,
                    Some(kept.size),
                ),
            };
            cbdc_client::trust::save(&kept_file, &kept_now).map_err(|e| e.to_string())?;
            let consistency = match before {
                None => format!(
                    "first checkpoint of ledger {} kept in {}",
                    ledger.0,
                    kept_file.display()
                ),
                Some(size) => format!("the log extends the {size}-leaf one seen before"),
            };
            out.emit(
                format!(
                    "verified: txid {txid} is leaf {} of the {}-leaf log of ledger {}, checkpoint signed by its operator; {consistency}",
                    receipt.index, receipt.checkpoint.size, ledger.0
                ),
                json!({"verified": true, "index": receipt.index, "size": receipt.checkpoint.size, "root": hex::encode(receipt.checkpoint.root), "consistent_with": before, "kept": kept_file}),
            );
        }
    }
    Ok(())
}
