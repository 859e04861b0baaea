//! Live commits for watchers, routed by wallet: a commit wakes only the watchers of the
//! wallets it touched. (A broadcast of every commit to every watcher costs watchers ×
//! commits wake-ups: ten thousand watch streams at tens of thousands of transfers a second
//! would take the whole machine.)
//!
//! Each subscription has a bounded queue. When it is full the commit is not queued and the
//! subscription is marked lagged; its watcher then catches up from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cbdc_core::PublicKey;
use tokio::sync::mpsc;

use crate::ledger::CommitEvent;

/// Commits one subscription may have queued; beyond this it is marked lagged.
pub const SUBSCRIPTION_QUEUE: usize = 1024;

struct Slot {
    id: u64,
    sender: mpsc::Sender<Arc<CommitEvent>>,
    lagged: Arc<AtomicBool>,
}

/// The registry of subscriptions, by wallet.
#[derive(Default)]
pub struct Hub {
    slots: Mutex<HashMap<PublicKey, Vec<Slot>>>,
    next: AtomicU64,
}

/// One watcher's feed of the commits that touched its wallet. Dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    key: PublicKey,
    id: u64,
    receiver: mpsc::Receiver<Arc<CommitEvent>>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    /// Subscribes to the commits that touch `key`'s wallet from now on.
    pub fn subscribe(self: &Arc<Self>, key: PublicKey) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        self.slots
            .lock()
            .expect("hub")
            .entry(key)
            .or_default()
            .push(Slot {
                id,
                sender,
                lagged: Arc::clone(&lagged),
            });
        Subscription {
            hub: Arc::clone(self),
            key,
            id,
            receiver,
            lagged,
        }
    }

    /// Hands `event` to the subscribers of each wallet it touched (once per subscription).
    pub fn publish(&self, event: Arc<CommitEvent>) {
        let slots = self.slots.lock().expect("hub");
        if slots.is_empty() {
            return;
        }
        for (i, (owner, _)) in event.lines.iter().enumerate() {
            // A wallet on several lines of one commit is handed the commit once.
            if event.lines[..i].iter().any(|(o, _)| o == owner) {
                continue;
            }
            for slot in slots.get(owner).into_iter().flatten() {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    slot.sender.try_send(Arc::clone(&event))
                {
                    slot.lagged.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Open subscriptions (for tests and metrics).
    pub fn subscriptions(&self) -> usize {
        self.slots.lock().expect("hub").values().map(Vec::len).sum()
    }
}

impl Subscription {
    /// The next commit that touched the wallet; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<Arc<CommitEvent>> {
        self.receiver.recv().await
    }

    /// Whether commits were dropped since the last call (the queue was full); clears it.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut slots = self.hub.slots.lock().expect("hub");
        if let Some(list) = slots.get_mut(&self.key) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::HistoryRecord;

    fn event(n: u8, owners: &[PublicKey]) -> Arc<CommitEvent> {
        let mut position = [0u8; crate::layout::POSITION_LEN];
        position[0] = n;
        Arc::new(CommitEvent {
            position,
            lines: owners
                .iter()
                .map(|o| {
                    let line = HistoryRecord {
                        txid: cbdc_core::Txid([n; 32]),
                        amount: cbdc_core::Amount::from_fen(1),
                        incoming: true,
                        committed_at_ms: 0,
                        memo: Vec::new(),
                        tier_change: None,
                    };
                    (*o, line)
                })
                .collect(),
        })
    }

    fn key(n: u8) -> PublicKey {
        cbdc_core::Keypair::from_seed(&[n; 32]).public()
    }

    /// A commit reaches the watchers of the wallets it touched, once each, and no one else;
    /// a full queue marks the watcher lagged; dropping a subscription removes it.
    #[tokio::test]
    async fn routes_by_wallet_and_marks_overflow() {
        let hub = Arc::new(Hub::default());
        let (a, b, c) = (key(1), key(2), key(3));
        let mut sa = hub.subscribe(a);
        let mut sb = hub.subscribe(b);
        hub.publish(event(1, &[a, a, c]));
        assert_eq!(sa.recv().await.unwrap().position[0], 1);
        assert!(sa.receiver.try_recv().is_err(), "handed once per commit");
        assert!(sb.receiver.try_recv().is_err(), "b was not touched");
        for n in 0..=SUBSCRIPTION_QUEUE {
            hub.publish(event(n as u8, &[b]));
        }
        assert!(sb.take_lagged());
        assert!(!sb.take_lagged(), "cleared once taken");
        assert!(!sa.take_lagged());
        assert_eq!(hub.subscriptions(), 2);
        drop(sa);
        assert_eq!(hub.subscriptions(), 1);
        drop(sb);
        assert_eq!(hub.subscriptions(), 0);
        assert!(hub.slots.lock().unwrap().is_empty());
    }
}
