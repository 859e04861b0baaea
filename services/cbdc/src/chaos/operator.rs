//! The banks' side of the workload: exchanges (a bank's vault paying a wallet for its
//! deposit) and redemptions (a bank returning value to the central bank), each an order of
//! the bank's authority sent again with the same request id until its outcome is definite;
//! and, after the run, each ledger's log replayed from its transfers alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cbdc_core::{LedgerId, Txid};
use cbdc_load::setup::Prepared;
use cbdc_load::target::Network;
use cbdc_proto::{requests, v1};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{CALL_TIMEOUT, History, RETRY_AFTER, Work};

/// The value of one exchange or redemption.
pub(super) const ORDER_AMOUNT: &str = "1.00";
/// Pause between two orders.
const ORDER_EVERY: Duration = Duration::from_millis(200);

/// What the orders came to.
#[derive(Default, Debug)]
pub(super) struct Orders {
    /// Exchanges acknowledged: (payer wallet at bank 1, txid, position).
    pub(super) exchanges: Vec<(usize, Txid, Vec<u8>)>,
    /// Redemptions acknowledged, per bank.
    pub(super) redemptions: Vec<u64>,
    /// Orders refused for good, by reason.
    pub(super) refused: std::collections::BTreeMap<String, usize>,
    /// Calls whose outcome was unknown, sent again.
    pub(super) indeterminate: usize,
}

enum Order {
    Exchange { wallet: usize },
    Redeem { bank: u32 },
}

/// Sends orders until the work stops taking new steps: mostly exchanges into bank 1's
/// paying wallets, and redemptions from bank 1's vault (the one the setup funded; bank 2's
/// vault holds nothing to return).
pub(super) async fn operator_loop(
    network: Arc<Network>,
    prepared: Arc<Prepared>,
    work: Arc<Work>,
    history: History,
    seed: u64,
    banks: u32,
) -> Orders {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6f72_6465_7273);
    let mut orders = Orders {
        redemptions: vec![0; banks as usize],
        ..Orders::default()
    };
    let mut clients: Vec<Option<cbdc_client::Ledger>> = (0..banks).map(|_| None).collect();
    let mut n = 0u64;
    while !work.stop_new.load(Ordering::SeqCst) {
        tokio::time::sleep(ORDER_EVERY).await;
        n += 1;
        let order = if rng.gen_bool(0.6) {
            Order::Exchange {
                wallet: rng.gen_range(0..prepared.chains.payers()),
            }
        } else {
            Order::Redeem { bank: 1 }
        };
        let bank = match order {
            Order::Exchange { .. } => 1,
            Order::Redeem { bank } => bank,
        };
        let authority = &network.authorities[bank as usize - 1];
        let header = requests::header(
            &network.file.network,
            LedgerId(bank),
            &format!("chaos-{seed:x}-{n}"),
            now_unix_ms() + 30 * 60 * 1000,
        );
        let (f, what) = match order {
            Order::Exchange { wallet } => ("exchange", wallet),
            Order::Redeem { bank } => ("redeem", bank as usize),
        };
        history.record(json!({"process": "operator", "type": "invoke", "f": f,
            "bank": bank, "of": what, "request_id": header.request_id}));
        // The same order until its outcome is definite.
        loop {
            let slot = &mut clients[bank as usize - 1];
            if slot.is_none() {
                *slot = tokio::time::timeout(CALL_TIMEOUT, network.bank(LedgerId(bank)))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let Some(client) = slot.as_mut() else {
                orders.indeterminate += 1;
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            };
            let call = async {
                match order {
                    Order::Exchange { wallet } => {
                        let address = cbdc_core::Address {
                            ledger: LedgerId(1),
                            key: prepared.chains.keys[wallet].public(),
                        }
                        .to_string();
                        let r = requests::exchange(
                            authority,
                            header.clone(),
                            &address,
                            ORDER_AMOUNT,
                            None,
                        );
                        client.rpc().exchange(r).await
                    }
                    Order::Redeem { .. } => {
                        let r = requests::redeem(authority, header.clone(), ORDER_AMOUNT);
                        client.rpc().redeem(r).await
                    }
                }
            };
            let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(cbdc_client::RpcError::from(s)),
                Err(_) => Err(cbdc_client::RpcError::from(
                    tonic::Status::deadline_exceeded("timed out"),
                )),
            };
            let committed = match outcome {
                Ok(v1::TransferResult {
                    txid,
                    outcome: Some(v1::transfer_result::Outcome::Committed(c)),
                }) => Ok((txid, c)),
                Ok(v1::TransferResult {
                    outcome: Some(v1::transfer_result::Outcome::Rejected(r)),
                    ..
                }) => Err((false, format!("{}: {}", r.code, r.message))),
                Ok(_) => Err((true, "an empty result".to_string())),
                Err(e) => Err((
                    cbdc_client::transient(e.code),
                    format!("{}: {}", e.reason, e.message),
                )),
            };
            match committed {
                Ok((txid, c)) => {
                    history.record(json!({"process": "operator", "type": "ok", "f": f,
                        "bank": bank, "of": what, "request_id": header.request_id,
                        "txid": hex::encode(&txid), "position": hex::encode(&c.log_position)}));
                    match order {
                        Order::Exchange { wallet } => {
                            if let Ok(txid) = <[u8; 32]>::try_from(txid.as_slice()) {
                                orders.exchanges.push((wallet, Txid(txid), c.log_position));
                            }
                        }
                        Order::Redeem { bank } => {
                            orders.redemptions[bank as usize - 1] +=
                                super::fen(ORDER_AMOUNT).expect("a fixed amount")
                        }
                    }
                    break;
                }
                Err((true, reason)) => {
                    orders.indeterminate += 1;
                    history.record(json!({"process": "operator", "type": "info", "f": f,
                        "bank": bank, "request_id": header.request_id, "error": reason}));
                    clients[bank as usize - 1] = None;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err((false, reason)) => {
                    history.record(json!({"process": "operator", "type": "fail", "f": f,
                        "bank": bank, "request_id": header.request_id, "error": reason}));
                    let code = reason.split(':').next().unwrap_or_default().to_string();
                    *orders.refused.entry(code).or_default() += 1;
                    break;
                }
            }
        }
    }
    orders
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Replays bank `ledger`'s whole log, as the administrator, from its transfers alone (every
/// signed checkpoint checked on the way); the unspent value it gives, in fen. Every transfer
/// replayed goes into `moves`.
pub(super) async fn replay(
    network: &Network,
    dir: &std::path::Path,
    ledger: u32,
    moves: &mut super::moves::Moves,
) -> Result<u64, String> {
    let file = crate::devnet::DevnetFile::load(dir)?;
    let operator_file = file
        .operator_keys
        .get(ledger as usize - 1)
        .ok_or_else(|| format!("bank {ledger}: no operator key"))?;
    let operator = cbdc_runtime::secret::read_seed(operator_file)
        .map(|s| cbdc_core::Keypair::from_seed(&s).public())?;
    let dial = network
        .bank_dial(LedgerId(ledger))?
        .with_identity(&network.file.admin_cert, &network.file.admin_cert_key)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        // What this attempt saw: kept only if it replayed the whole log.
        let mut seen = super::moves::Moves::default();
        let attempt = async {
            let channel = cbdc_client::connect(&dial, "bank")
                .await
                .map_err(|e| e.to_string())?;
            let stream = v1::ledger_service_client::LedgerServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .stream_log(v1::StreamLogRequest {})
                .await
                .map_err(|s| format!("StreamLog: {}", s.message()))?
                .into_inner();
            Ok::<_, String>(
                cbdc_ledger::replay::replay_stream_with(
                    stream,
                    LedgerId(ledger),
                    operator,
                    |kind, t| seen.observe(ledger, kind, t),
                )
                .await,
            )
        };
        match attempt.await {
            Ok(Ok(r)) => {
                moves.merge(seen);
                return Ok(r.unspent.fen());
            }
            // The log does not give what the ledger signed: no retry makes that right.
            Ok(Err(cbdc_ledger::replay::ReplayError::Fault(f))) => {
                return Err(format!("bank {ledger}'s log replay: {f}"));
            }
            Ok(Err(e)) if started.elapsed() > Duration::from_secs(60) => {
                return Err(format!("bank {ledger}'s log replay: {e}"));
            }
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                return Err(format!("bank {ledger}'s log replay: {e}"));
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
