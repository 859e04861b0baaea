//! `cbdc audit …`: auditing a bank from its log alone.

use cbdc_core::{LedgerId, PublicKey};
use cbdc_ledger::replay::{ReplayError, replay_stream};
use cbdc_proto::v1;
use serde_json::json;

use super::*;
use crate::client;

pub(super) async fn audit(c: AuditCommand, out: &mut Out) -> Result<(), String> {
    match c {
        AuditCommand::Replay {
            ledger,
            operator_key,
            admin_cert,
            target,
        } => {
            let operator = match operator_key {
                Some(hex_key) => {
                    let bytes: [u8; 32] = hex::decode(&hex_key)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or("--operator-key: 64 hex digits")?;
                    PublicKey::checked(&bytes).map_err(|e| format!("--operator-key: {e}"))?
                }
                None => {
                    let f = DevnetFile::load(&target.devnet)?;
                    let file = f
                        .operator_keys
                        .get((ledger as usize).wrapping_sub(1))
                        .ok_or_else(|| format!("--ledger: the devnet has no bank {ledger}"))?;
                    read_key(file)?.public()
                }
            };
            let dial = target.as_admin(target.bank(LedgerId(ledger))?, &admin_cert)?;
            let mut c = client::ledger(&dial).await?;
            let stream = c
                .stream_log(v1::StreamLogRequest {})
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            match replay_stream(stream, LedgerId(ledger), operator).await {
                Ok(r) => out.emit(
                    format!(
                        "bank {ledger}: {} transfers replayed, {} checkpoints checked; the log gives unspent {}, as its checkpoints say",
                        r.leaves, r.checkpoints, r.unspent
                    ),
                    json!({"ledger": ledger, "ok": true, "leaves": r.leaves, "checkpoints": r.checkpoints, "unspent": r.unspent.to_string()}),
                ),
                Err(ReplayError::Fault(f)) => {
                    out.emit(
                        format!("FAULT: {f}"),
                        json!({"ledger": ledger, "ok": false, "at": f.at, "checkpoint_size": f.checkpoint_size, "fault": f.what}),
                    );
                    return Err(format!("bank {ledger}'s log does not give what it signed"));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(())
}
