//! The ledger's logic over the store: wallets, transfers, the operator vault, inbound
//! deliveries. The gRPC layer (`service/`) only converts and calls in here.
//!
//! One room per seam: [`wallets`](self::wallets) (open, read, freeze/unfreeze/close), the
//! commit path ([`commit`](self::commit): verifier → committer → store transactions;
//! [`apply`](self::apply): one transfer's reads and writes inside a transaction), coin
//! selection ([`coins`](self::coins)), the operator vault ([`vault`](self::vault)),
//! deliveries from the central bank ([`inbound`](self::inbound)), and reads and audit
//! figures ([`reads`](self::reads)). This file holds the `Ledger` handle and the types they
//! share.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cbdc_core::messages::{Countersignature, OpenProof, OperatorOrder, SignatureError, Signed};
use cbdc_core::unspent::Delta;
use cbdc_core::{
    Address, Amount, Input, KycTier, LedgerId, Lock, OutPoint, Output, PublicKey, Reject,
    TierTable, Transfer, TransferBody, Txid, UnixSeconds, WalletStatus, Witness,
};
use cbdc_runtime::error::abort;
pub use cbdc_runtime::orders::Seen;
use cbdc_store::{Database, RangeOptions, StoreError, Transaction, TxError};

use crate::batcher::{Batcher, Lane, Stopped};
use crate::layout::{LOG_ENTRY_TXIDS_MAX, Layout, POSITION_LEN, STAMP_LEN};
use crate::metrics::LedgerMetrics;
use crate::records::{
    Corrupt, HistoryRecord, OutputState, TransferKind, TransferRecord, WalletRecord, counter,
    counter_amount,
};
use crate::verifier::{Verdict, Verifier};

mod apply;
mod coins;
mod commit;
mod inbound;
mod plan;
mod reads;
mod reversal;
mod vault;
mod wallets;

pub use cbdc_runtime::ServiceError;
pub use cbdc_runtime::clock::Clock;
pub use coins::COIN_SCAN_MAX;
pub use vault::{VAULT_ATTEMPTS, VAULT_MIN_COINS, VAULT_SPLIT};
pub use wallets::{TIER_CHANGES_MAX, TierChange};

use coins::CoinPolicy;

/// Transfers committed in one store transaction, at most.
pub const COMMIT_GROUP_MAX: usize = 128;
/// Store transactions of grouped transfers in flight, at most.
pub const COMMIT_GROUPS_IN_FLIGHT: usize = 64;
/// Of those, groups led by batches (`SubmitTransfers`), at most: the store commits groups in
/// order, so a wallet's single call waits behind at most this many batch groups.
pub const COMMIT_GROUPS_IN_FLIGHT_BULK: usize = 4;

/// A log position: the commit's versionstamp, then the order within that commit.
pub fn position(stamp: [u8; STAMP_LEN], order: u16) -> [u8; POSITION_LEN] {
    let mut p = [0u8; POSITION_LEN];
    p[..STAMP_LEN].copy_from_slice(&stamp);
    p[STAMP_LEN..].copy_from_slice(&order.to_be_bytes());
    p
}

/// A refused signature from the wire as `PERMISSION_DENIED`: `field` names it, `signer` says
/// whose it should be, `failure` what a wrong one means.
fn signature_error(e: SignatureError, field: &str, signer: &str, failure: &str) -> ServiceError {
    match e {
        SignatureError::Length(n) => ServiceError::PermissionDenied(format!(
            "{field}: {n} bytes, expected a 64-byte Ed25519 signature by {signer}"
        )),
        SignatureError::Mismatch => ServiceError::PermissionDenied(format!("{field}: {failure}")),
    }
}

/// One item's outcome inside a transaction shared by several: applied anew, it takes the next
/// order number within the commit; refused, the refusal is its own result; a store error ends
/// the whole transaction.
type Ordered = Result<(Applied, u16), ServiceError>;

fn in_order(
    order: &mut u16,
    r: Result<Applied, TxError<ServiceError>>,
) -> Result<Ordered, TxError<ServiceError>> {
    match r {
        Ok(applied) => {
            let used = *order;
            if matches!(applied, Applied::New(..)) {
                *order += 1;
            }
            Ok(Ok((applied, used)))
        }
        Err(TxError::Abort(e)) => Ok(Err(e)),
        Err(TxError::Store(e)) => Err(TxError::Store(e)),
    }
}

impl From<Corrupt> for ServiceError {
    fn from(e: Corrupt) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

fn corrupt(e: Corrupt) -> TxError<ServiceError> {
    TxError::Abort(e.into())
}

/// A wallet as the ledger reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletView {
    pub address: Address,
    pub tier: KycTier,
    pub status: WalletStatus,
    pub balance: Amount,
    pub spent_today: Amount,
    pub unspent_outputs: u64,
    /// Every change of tier by the bank's authority, oldest first.
    pub tier_changes: Vec<wallets::TierChange>,
}

/// A committed transfer's place in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub txid: Txid,
    /// Its position in the ledger's log (commit versionstamp, then order in that commit).
    pub position: [u8; POSITION_LEN],
    pub committed_at_ms: u64,
    /// This txid was committed before; nothing was applied now.
    pub already: bool,
}

/// One wallet's line in a committed transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    pub position: [u8; POSITION_LEN],
    pub record: HistoryRecord,
}

/// A committed transfer, as handed to the watchers of the wallets it touched.
#[derive(Clone, Debug)]
pub struct CommitEvent {
    pub position: [u8; POSITION_LEN],
    pub lines: Vec<(PublicKey, HistoryRecord)>,
}

/// What `apply` did inside a transaction.
enum Applied {
    Already(TransferRecord),
    /// Committed now: each wallet's history line, and what it did to the unspent outputs.
    New(Vec<(PublicKey, HistoryRecord)>, Delta),
}

/// A transfer's status as `GetTransfer` reports it.
#[derive(Clone, Debug)]
pub struct TransferInfo {
    pub record: TransferRecord,
    /// Outputs for other ledgers not yet delivered.
    pub settling: bool,
    /// Why its moves off this ledger were refused for good and credited back, if they were.
    pub reversal: Option<String>,
    /// The central bank said every payee's ledger credited its moves off this ledger.
    pub delivered: bool,
}

/// An unsigned transfer built for a wallet.
#[derive(Clone, Debug)]
pub struct Built {
    pub body: Vec<u8>,
    pub txid: Txid,
    pub inputs: Vec<(OutPoint, Output)>,
}

/// A delivery from the central bank: a transfer, where it comes from, the amount for this
/// ledger, and the central bank's countersignature.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub transfer: Transfer,
    pub from_ledger: LedgerId,
    pub amount: Amount,
    pub countersignature: Vec<u8>,
    /// Set on a reversal: `transfer` was committed here, its move to `from_ledger` was
    /// refused for good for this reason, and `amount` goes back to its payer.
    pub reversal: Option<String>,
}

/// An inbound delivery ready to apply: its slot in the request, the transfer, the outputs
/// this ledger credits, and the amount.
type InboundItem = (usize, Arc<Transfer>, Arc<Vec<(u16, Output)>>, Amount);

/// Figures for an audit of one ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub unspent: Amount,
    pub unspent_outputs: u64,
    /// The set hash digest of the unspent outputs scanned (`cbdc_core::unspent`).
    pub unspent_set: [u8; 32],
    pub balances: Amount,
    /// Transfers in the commit log (each log entry holds one commit's transfers).
    pub log_entries: u64,
    /// Value in the outbox: committed here, not yet acknowledged by the central bank.
    pub outbox: Amount,
    /// Running totals: value delivered in, and value out the central bank acknowledged.
    pub inbound: Amount,
    pub settled_out: Amount,
}

/// Settings the ledger runs with (from its configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    pub ledger: LedgerId,
    pub tiers: TierTable,
    pub utc_offset_minutes: i32,
    pub max_batch: usize,
    pub page_size_max: u32,
    pub default_valid_for_s: u64,
    pub amount_max: Amount,
    pub central_bank: Option<PublicKey>,
    /// The network this ledger belongs to: orders and grants must name it.
    pub network: String,
    /// The bank's authority key: it signs freezes, tier changes, exchanges and
    /// redemptions, and may read any wallet. Separate from the operator (vault and
    /// settlement) key, which signs payments automatically and so lives on the server.
    pub authority: PublicKey,
    /// The bank's secret that keys the phone-number hash (HMAC-SHA-256), so the stored
    /// hashes cannot be reversed by trying every number.
    pub phone_key: cbdc_runtime::secret::Seed,
    /// Planted faults (tests only; a configuration file cannot set them).
    pub faults: Faults,
}

/// Faults a test plants in a ledger to show that the central bank's audit and the log-replay
/// auditor catch a dishonest or broken bank. Every one is off unless a test turns it on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Each local transfer also creates a 1-fen output for its first local payee, from
    /// nothing.
    pub create_from_nothing: bool,
    /// Each local transfer leaves its first input unspent (and still spendable).
    pub skip_spend: bool,
    /// Each checkpoint states one fen more unspent than the ledger holds.
    pub checkpoint_sum_off_by_one: bool,
}

struct Inner {
    db: Database,
    layout: Layout,
    settings: Settings,
    operator: cbdc_core::Keypair,
    clock: Clock,
    verifier: Verifier,
    events: Arc<crate::hub::Hub>,
    metrics: LedgerMetrics,
    /// The central bank's key, decompressed once.
    central_bank_key: Option<cbdc_core::keys::CheckedKey>,
    /// The central bank's registry as last read (ledger → active), for the destination
    /// check before commit; `None` until read.
    destinations: std::sync::RwLock<Option<Arc<HashMap<LedgerId, bool>>>>,
    /// Where the registry is read from (the outbox worker's link to the central bank).
    registry_source: std::sync::OnceLock<Arc<dyn crate::outbox::CentralBankLink>>,
    /// Status reads asking the central bank at once, at most ([`reads::DELIVERY_ASKS_MAX`]):
    /// wallets polling a SETTLING transfer cannot flood the central bank.
    delivery_asks: tokio::sync::Semaphore,
    /// When the registry was last read (ledger clock, ms); one read at a time.
    registry_read: tokio::sync::Mutex<Option<u64>>,
}

/// Pages of the registry read at once, at most (of up to 1,000 banks each).
pub const REGISTRY_PAGES_MAX: usize = 16;
/// The registry is read again on a miss at most this often (ms): a payment to a bank
/// registered a moment ago is not refused for long, and payments to ledgers that do not
/// exist cannot make the ledger ask the central bank more often than this.
pub const REGISTRY_MISS_GAP_MS: u64 = 200;

const NOT_REGISTERED: &str = "is not a registered bank";

/// One bank ledger. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl Ledger {
    /// Opens the ledger on `db` and makes sure the operator vault wallet exists. Must run
    /// inside a tokio runtime (the verifier is a task).
    pub async fn open(
        db: Database,
        settings: Settings,
        operator: cbdc_core::Keypair,
        clock: Clock,
    ) -> Result<Ledger, ServiceError> {
        let metrics = LedgerMetrics::new(settings.ledger.0);
        metrics
            .registry
            .register(Box::new(cbdc_store::StoreCollector::new(db.clone())))
            .map_err(|e| ServiceError::Internal(format!("metrics: {e}")))?;
        let events = Arc::new(crate::hub::Hub::default());
        let group_sizes = metrics.commit_group.clone();
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let committer = Batcher::start(
                "committer",
                COMMIT_GROUP_MAX,
                crate::verifier::QUEUE_DEPTH,
                COMMIT_GROUPS_IN_FLIGHT,
                COMMIT_GROUPS_IN_FLIGHT_BULK,
                move |n| group_sizes.observe(n as f64),
                move |transfers: Vec<Transfer>| {
                    let inner = weak.upgrade();
                    async move {
                        match inner {
                            Some(inner) => Ledger { inner }.commit_group(transfers).await,
                            None => transfers
                                .iter()
                                .map(|_| {
                                    Err(ServiceError::Unavailable("the ledger has stopped".into()))
                                })
                                .collect(),
                        }
                    }
                },
            );
            let verifier_clock = clock.clone();
            let verifier = Verifier::start(
                move || UnixSeconds(verifier_clock.now_ms() / 1000),
                metrics.verify_batch.clone(),
                committer.clone(),
            );
            Inner {
                central_bank_key: settings.central_bank.and_then(|k| k.checked_key().ok()),
                destinations: Default::default(),
                registry_source: Default::default(),
                delivery_asks: tokio::sync::Semaphore::new(reads::DELIVERY_ASKS_MAX),
                registry_read: Default::default(),
                db,
                layout: Layout::new(settings.ledger),
                settings,
                operator,
                clock,
                verifier,
                events,
                metrics,
            }
        });
        let ledger = Ledger { inner };
        let vault = ledger.inner.operator.public();
        let me = ledger.clone();
        let now = ledger.now_ms();
        ledger
            .inner
            .db
            .run(move |tx| {
                let key = me.inner.layout.wallet(&vault);
                Box::pin(async move {
                    if tx.get(&key).await?.is_none() {
                        let record = WalletRecord {
                            status: WalletStatus::Active,
                            tier: KycTier::Operator,
                            opened_at_ms: now,
                            phone_hash: None,
                        };
                        tx.set(&key, record.encode())?;
                    }
                    Ok::<(), TxError<ServiceError>>(())
                })
            })
            .await?;
        Ok(ledger)
    }

    pub fn id(&self) -> LedgerId {
        self.inner.settings.ledger
    }

    /// Replaces the registry copy the destination check uses (ledger → active).
    pub fn set_destinations(&self, registry: HashMap<LedgerId, bool>) {
        *self
            .inner
            .destinations
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(registry));
    }

    /// Where to read the registry from.
    pub fn set_registry_source(&self, link: Arc<dyn crate::outbox::CentralBankLink>) {
        let _ = self.inner.registry_source.set(link);
    }

    /// Reads the central bank's registry for the destination check, at most once per
    /// [`REGISTRY_MISS_GAP_MS`]: a call within that gap of the last read waits for its end
    /// (callers queue behind one read, then find the copy fresh). On failure the last copy
    /// stays (or none: the central bank alone judges destinations).
    pub async fn refresh_registry(&self) {
        let Some(link) = self.inner.registry_source.get() else {
            return;
        };
        let asked = self.now_ms();
        let mut last = self.inner.registry_read.lock().await;
        if last.is_some_and(|t| t >= asked) {
            return; // read after this call was made, while it waited
        }
        if let Some(t) = *last {
            let wait = (t + REGISTRY_MISS_GAP_MS).saturating_sub(self.now_ms());
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        *last = Some(self.now_ms());
        let mut registry = HashMap::new();
        let mut cursor = String::new();
        for _ in 0..REGISTRY_PAGES_MAX {
            let page = link
                .list_operators(cbdc_proto::v1::ListOperatorsRequest {
                    page: Some(cbdc_proto::v1::PageRequest {
                        cursor: cursor.clone(),
                        page_size: 1000,
                    }),
                })
                .await;
            let page = match page {
                Ok(p) => p,
                Err(s) => {
                    tracing::debug!(code = ?s.code(), "registry not read: {}", s.message());
                    return;
                }
            };
            for op in &page.operators {
                let active = op.status == cbdc_proto::v1::OperatorStatus::Active as i32;
                registry.insert(LedgerId(op.ledger_id), active);
            }
            match page.page {
                Some(p) if !p.next_cursor.is_empty() => cursor = p.next_cursor,
                _ => {
                    self.set_destinations(registry);
                    return;
                }
            }
        }
        tracing::warn!("the registry is longer than {REGISTRY_PAGES_MAX} pages; not used");
    }

    /// What can be known before committing that the central bank would refuse: an output
    /// for a ledger that is not registered, or suspended. A ledger missing from the copy
    /// of the registry has it read again first (a bank may have just registered). Without
    /// a copy (the central bank not yet reached), nothing is refused here.
    pub async fn check_destinations(&self, t: &Transfer) -> Result<(), Reject> {
        match self.check_destinations_now(t) {
            Err(Reject::DestinationUnavailable { why, .. }) if why == NOT_REGISTERED => {
                self.refresh_registry().await;
                self.check_destinations_now(t)
            }
            other => other,
        }
    }

    fn check_destinations_now(&self, t: &Transfer) -> Result<(), Reject> {
        let registry = self
            .inner
            .destinations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(registry) = registry else {
            return Ok(());
        };
        for (index, o) in t.body().outputs.iter().enumerate() {
            if o.ledger == self.id() || o.ledger == cbdc_core::messages::CENTRAL_BANK {
                continue;
            }
            let why = match registry.get(&o.ledger) {
                Some(true) => continue,
                Some(false) => "is suspended",
                None => NOT_REGISTERED,
            };
            return Err(Reject::DestinationUnavailable {
                index,
                ledger: o.ledger,
                why,
            });
        }
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &LedgerMetrics {
        &self.inner.metrics
    }

    pub fn operator_key(&self) -> PublicKey {
        self.inner.operator.public()
    }

    pub fn vault_address(&self) -> Address {
        Address::new(self.id(), self.operator_key())
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The commits that touch `key`'s wallet from now on.
    pub fn subscribe(&self, key: PublicKey) -> crate::hub::Subscription {
        self.inner.events.subscribe(key)
    }

    /// The local day number (days since the epoch at the configured UTC offset).
    fn day(&self, now_ms: u64) -> i64 {
        let offset = i64::from(self.inner.settings.utc_offset_minutes) * 60_000;
        (now_ms as i64 + offset).div_euclid(86_400_000)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The embedded store's counters (transactions committed, fsyncs, keys written); `None` on
    /// FoundationDB.
    pub fn store_stats(&self) -> Option<cbdc_store::StoreStats> {
        self.inner.db.stats()
    }

    pub(crate) fn operator(&self) -> &cbdc_core::Keypair {
        &self.inner.operator
    }

    /// Refuses an address of another ledger.
    pub fn local_key(&self, field: &str, address: &Address) -> Result<PublicKey, ServiceError> {
        if address.ledger != self.id() {
            return Err(ServiceError::InvalidArgument(format!(
                "{field}: address is on ledger {}, this is ledger {}",
                address.ledger.0,
                self.id().0
            )));
        }
        Ok(address.key)
    }

    /// Runs `f` in a store transaction, retried as the store decides (retries are counted
    /// in the metrics); each attempt gets a handle of its own.
    pub(crate) async fn transact<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        F: for<'t> Fn(
            Ledger,
            &'t mut Transaction,
        ) -> futures::future::BoxFuture<'t, Result<T, TxError<ServiceError>>>,
    {
        Ok(self.transact_stamped(f).await?.0)
    }

    /// [`Ledger::transact`], also returning the commit's versionstamp, and the store's error
    /// as it is (the commit paths fall back on it).
    pub(crate) async fn transact_stamped<T, F>(
        &self,
        f: F,
    ) -> Result<(T, cbdc_store::Versionstamp), TxError<ServiceError>>
    where
        F: for<'t> Fn(
            Ledger,
            &'t mut Transaction,
        ) -> futures::future::BoxFuture<'t, Result<T, TxError<ServiceError>>>,
    {
        let me = self.clone();
        let mut attempts = 0u64;
        let outcome = self
            .inner
            .db
            .run_stamped(|tx| {
                attempts += 1;
                f(me.clone(), tx)
            })
            .await;
        if attempts > 1 {
            self.inner.metrics.store_retries.inc_by(attempts - 1);
        }
        outcome
    }

    /// Checks an order of the bank's authority: its signature, network, target (this
    /// ledger) and expiry. What it asks is checked by the method that does it.
    pub fn check_authority(
        &self,
        order: &OperatorOrder<'_>,
        signature: &[u8],
    ) -> Result<(), ServiceError> {
        cbdc_runtime::orders::Authority {
            key: &self.inner.settings.authority,
            field: "authority_signature",
            whose: "the bank's authority key",
            network: &self.inner.settings.network,
            target: self.id(),
        }
        .check(order, signature, self.now_ms())
    }

    /// The record of an order's request id on this ledger.
    pub fn seen(&self, order: &OperatorOrder<'_>) -> Seen {
        Seen::of(
            order,
            self.layout().request(
                cbdc_core::messages::Order::kind(order),
                order.header.request_id,
            ),
        )
    }

    /// Time spent since `started`, recorded under `rpc`.
    pub fn observe(&self, rpc: &str, started: Instant) {
        self.inner
            .metrics
            .latency
            .with_label_values(&[rpc])
            .observe(started.elapsed().as_secs_f64());
    }
}
