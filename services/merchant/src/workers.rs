//! The gateway's background work: reading each collection wallet's new credits from its
//! ledger, settling pending refunds, delivering webhooks and forgetting old nonces. Each is
//! a loop that stops on shutdown; none holds more than a page of rows.
//!
//! Key: `wc\0<merchant>` the history cursor up to which a collection wallet's credits are
//! counted.

use std::time::Duration;

use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::TxError;

use crate::error::ApiError;
use crate::events::Deliveries;
use crate::gateway::{Gateway, Merchant, key, prefix_end};

/// Merchants read per pass, at most (a pass resumes after the last one).
const MERCHANTS_PAGE: usize = 1024;
/// History entries read per wallet per pass, at most.
const HISTORY_PAGE: u32 = 256;

/// What paces the workers.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub poll: Duration,
    pub webhook_base: Duration,
    pub webhook_max: Duration,
    pub webhook_attempts: u32,
}

/// Waits `d`, or until `wake` is notified; false once `shutdown` fires.
async fn pause(shutdown: &Shutdown, wake: Option<&tokio::sync::Notify>, d: Duration) -> bool {
    let woken = async {
        match wake {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown.wait() => false,
        () = tokio::time::sleep(d) => true,
        () = woken => true,
    }
}

/// Runs every worker until `shutdown`.
pub async fn run(gateway: Gateway, pace: Pace, shutdown: Shutdown) {
    let credits = {
        let (g, s) = (gateway.clone(), shutdown.clone());
        async move {
            let mut after = Vec::new();
            while pause(&s, None, pace.poll).await {
                match g.read_credits(&after).await {
                    Ok(next) => after = next,
                    Err(e) => tracing::warn!(error = %e.message, "reading credits"),
                }
            }
        }
    };
    let refunds = {
        let (g, s) = (gateway.clone(), shutdown.clone());
        async move {
            while pause(&s, Some(&g.wake_refunds), pace.poll * 4).await {
                if let Err(e) = g.settle_pending_refunds().await {
                    tracing::warn!(error = %e.message, "settling refunds");
                }
            }
        }
    };
    let webhooks = {
        let (g, s) = (gateway.clone(), shutdown.clone());
        async move {
            let mut d = Deliveries::new(pace.webhook_base, pace.webhook_max, pace.webhook_attempts);
            while pause(&s, Some(&g.wake_webhooks), pace.poll).await {
                if let Err(e) = g.deliver_due(&mut d).await {
                    tracing::warn!(error = %e.message, "delivering webhooks");
                }
            }
        }
    };
    let nonces = {
        let (g, s) = (gateway.clone(), shutdown.clone());
        async move {
            while pause(&s, None, Duration::from_secs(30)).await {
                if let Err(e) = g.prune_nonces().await {
                    tracing::warn!(error = %e.message, "pruning nonces");
                }
            }
        }
    };
    tokio::join!(credits, refunds, webhooks, nonces);
}

impl Gateway {
    /// One pass over a page of merchants after `after`: counts each collection wallet's new
    /// credits. Returns where the next pass starts.
    pub(crate) async fn read_credits(&self, after: &[u8]) -> Result<Vec<u8>, ApiError> {
        let begin = if after.is_empty() {
            b"m\0".to_vec()
        } else {
            let mut k = after.to_vec();
            k.push(0);
            k
        };
        let end = prefix_end(b"m\0");
        let rows = self
            .scan(
                begin,
                end,
                cbdc_store::RangeOptions::snapshot(MERCHANTS_PAGE),
            )
            .await?;
        let next = if rows.len() == MERCHANTS_PAGE {
            rows.last().map(|(k, _)| k.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        for (_, v) in rows {
            let merchant: Merchant = serde_json::from_slice(&v)
                .map_err(|e| ApiError::internal(format!("a merchant record: {e}")))?;
            if let Err(e) = self.read_wallet_credits(&merchant).await {
                tracing::debug!(merchant = %merchant.merchant_id, error = %e.message, "credits wait");
            }
        }
        Ok(next)
    }

    /// Counts the credits of one collection wallet after its saved cursor.
    async fn read_wallet_credits(&self, merchant: &Merchant) -> Result<(), ApiError> {
        let ck = key(&[b"wc", merchant.merchant_id.as_bytes()]);
        let cursor = {
            let ck = ck.clone();
            self.tx(move |tx| {
                let ck = ck.clone();
                Box::pin(async move { Ok(tx.get(&ck).await?) })
            })
            .await?
        };
        let cursor = cursor
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        let collection = self.custody.collection(&merchant.merchant_id);
        let mut ledger = self.ledgers.get("merchant_id", merchant.bank).await?;
        let page = ledger
            .history(&collection, &cursor, HISTORY_PAGE)
            .await
            .map_err(|e| crate::payments::ledger_error("merchant_id", e))?;
        let Some(last) = page.entries.last() else {
            return Ok(());
        };
        let last_cursor = last.cursor.clone();
        let incoming: Vec<&cbdc_proto::v1::HistoryEntry> = page
            .entries
            .iter()
            .filter(|e| e.incoming && !e.txid.is_empty())
            .collect();
        // Most credits were counted already (a payment at the merchant's own bank is counted
        // when it commits): one read finds the ones that were not.
        let txids: Vec<String> = incoming.iter().map(|e| hex::encode(&e.txid)).collect();
        let m = merchant.merchant_id.clone();
        let seen = self
            .tx(move |tx| {
                let (txids, m) = (txids.clone(), m.clone());
                Box::pin(async move {
                    let mut seen = Vec::with_capacity(txids.len());
                    for t in &txids {
                        let k = key(&[b"c", m.as_bytes(), t.as_bytes()]);
                        seen.push(tx.get_snapshot(&k).await?.is_some());
                    }
                    Ok(seen)
                })
            })
            .await?;
        for (e, seen) in incoming.into_iter().zip(seen) {
            if seen {
                continue;
            }
            let amount = crate::payments::parse_amount("amount", &e.amount)?;
            self.credit(
                &merchant.merchant_id,
                &hex::encode(&e.txid),
                amount,
                &e.memo,
                e.committed_at_unix_ms,
            )
            .await?;
        }
        let saved: Result<(), TxError<ApiError>> = self
            .db
            .run(|tx| {
                let (ck, c) = (ck.clone(), last_cursor.clone());
                Box::pin(async move { Ok(tx.set(ck, c.into_bytes())?) })
            })
            .await;
        Ok(saved?)
    }
}
