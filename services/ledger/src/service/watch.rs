//! `WatchWallet`: history from a cursor, then live commits.

use cbdc_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

use crate::layout::POSITION_LEN;
use cbdc_runtime::shutdown::Shutdown;

use crate::ledger::{HistoryItem, Ledger};

use super::WATCH_QUEUE;
use super::wire::entry_msg;

/// Feeds a watcher: history after `after` from the store, then live commits of its wallet;
/// if the live feed overflows, catches up from the store again. Ends when the client goes
/// away.
pub(super) async fn watch(
    ledger: Ledger,
    key: cbdc_core::PublicKey,
    after: Option<[u8; POSITION_LEN]>,
    mut live: crate::hub::Subscription,
    sender: mpsc::Sender<Result<v1::HistoryEntry, Status>>,
    shutdown: Shutdown,
) {
    // Everything at or below `caught_up` has been sent from the store.
    let mut caught_up: Option<[u8; POSITION_LEN]> = None;
    let mut from_store = after.is_some();
    let mut cursor = after;
    // Live entries sent above `caught_up` (commits are acknowledged slightly out of order).
    let mut sent_live: std::collections::BTreeSet<[u8; POSITION_LEN]> = Default::default();
    loop {
        if from_store {
            loop {
                let page = match ledger.history(&key, cursor, 256).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = sender.send(Err(e.into())).await;
                        return;
                    }
                };
                let done = page.len() < 256;
                for item in page {
                    cursor = Some(item.position);
                    if sent_live.contains(&item.position) {
                        continue;
                    }
                    if sender.send(Ok(entry_msg(&item))).await.is_err() {
                        return;
                    }
                }
                if done {
                    break;
                }
            }
            caught_up = cursor;
            sent_live.clear();
            from_store = false;
        }
        if live.take_lagged() {
            // Commits were dropped from the full live queue: the store has them.
            cursor = caught_up.or(after).or(cursor);
            from_store = true;
            continue;
        }
        let next = tokio::select! {
            next = live.recv() => next,
            // The client went away: free its slot now, not at the next commit.
            () = sender.closed() => return,
            () = shutdown.wait() => {
                let _ = sender
                    .send(Err(cbdc_runtime::error::unavailable(
                        "the ledger is shutting down; watch again from the last cursor",
                    )))
                    .await;
                return;
            }
        };
        match next {
            Some(event) => {
                if caught_up.is_some_and(|c| event.position <= c) {
                    continue;
                }
                for (owner, record) in &event.lines {
                    if *owner != key {
                        continue;
                    }
                    let item = HistoryItem {
                        position: event.position,
                        record: record.clone(),
                    };
                    if sender.send(Ok(entry_msg(&item))).await.is_err() {
                        return;
                    }
                    sent_live.insert(event.position);
                    if cursor.is_none_or(|c| event.position > c) {
                        cursor = Some(event.position);
                    }
                }
                if sent_live.len() > WATCH_QUEUE * 16 {
                    // Re-anchor on the store rather than remember without bound.
                    cursor = caught_up.or(cursor);
                    from_store = true;
                }
            }
            None => return,
        }
    }
}
