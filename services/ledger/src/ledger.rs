//! The ledger's logic over the store: wallets, transfers, the operator vault, inbound
//! deliveries. The gRPC layer (`service.rs`) only converts and calls in here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cbdc_core::validate::{InputState, StatefulContext, check_stateful, parties};
use cbdc_core::{
    Address, Amount, Input, KycTier, LedgerId, Lock, OutPoint, Output, PublicKey, Reject,
    TierTable, Transfer, TransferBody, Txid, UnixSeconds, WalletState, WalletStatus, Witness,
};
use cbdc_store::{Database, RangeOptions, StoreError, Transaction, TxError};
use tokio::sync::broadcast;

use crate::batcher::{Batcher, Stopped};
use crate::layout::{LOG_ENTRY_TXIDS_MAX, Layout, POSITION_LEN, STAMP_LEN};
use crate::metrics::LedgerMetrics;
use crate::records::{
    Corrupt, HistoryRecord, OutputState, TransferKind, TransferRecord, WalletRecord, counter,
    counter_amount,
};
use crate::verifier::{Verdict, Verifier};

/// Domain tag of a wallet's proof of key possession when it is opened.
pub const OPEN_TAG: &[u8] = b"cbdc/v1/open";
/// Domain tag of operator-signed requests.
pub const OPERATOR_TAG: &[u8] = b"cbdc/v1/op";
pub use cbdc_core::messages::{SETTLE_TAG, settle_message};
pub use cbdc_runtime::clock::Clock;
/// Committed transfers buffered for watchers; a watcher that falls further behind catches up
/// from the store.
pub const EVENT_BUFFER: usize = 4096;
/// Transfers committed in one store transaction, at most.
pub const COMMIT_GROUP_MAX: usize = 128;
/// Store transactions of grouped transfers in flight, at most.
pub const COMMIT_GROUPS_IN_FLIGHT: usize = 64;
/// Coin selections the vault tries when other payments take its coins first, at most.
pub const VAULT_ATTEMPTS: u32 = 5;
/// While the vault holds fewer coins than this, it splits its change.
pub const VAULT_MIN_COINS: usize = 64;
/// Pieces the vault splits its change into, at most.
pub const VAULT_SPLIT: usize = 8;

/// How coins are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CoinPolicy {
    /// Largest first, one change output: few inputs, few outputs.
    Wallet,
    /// One covering coin picked by the given spread (a hash of the request), change split
    /// while coins are few: many concurrent payments from one vault rarely pick the same
    /// coin, and a replayed request picks the same way.
    Vault(u64),
}
/// Owner-index rows examined by coin selection, at most.
pub const COIN_SCAN_MAX: usize = 1000;

/// The message a wallet signs to prove it holds the key it opens.
pub fn open_message(ledger: LedgerId, key: &PublicKey) -> Vec<u8> {
    let mut m = OPEN_TAG.to_vec();
    m.extend_from_slice(&ledger.0.to_be_bytes());
    m.extend_from_slice(key.as_bytes());
    m
}

/// The message the operator signs for an action: the tag, then each part followed by 0.
pub fn operator_message(parts: &[&[u8]]) -> Vec<u8> {
    let mut m = OPERATOR_TAG.to_vec();
    for p in parts {
        m.extend_from_slice(p);
        m.push(0);
    }
    m
}

/// A log position: the commit's versionstamp, then the order within that commit.
pub fn position(stamp: [u8; STAMP_LEN], order: u16) -> [u8; POSITION_LEN] {
    let mut p = [0u8; POSITION_LEN];
    p[..STAMP_LEN].copy_from_slice(&stamp);
    p[STAMP_LEN..].copy_from_slice(&order.to_be_bytes());
    p
}

/// Checks an Ed25519 signature from the wire: `field` names it in the error, `signer` says
/// whose it should be, `failure` what a wrong signature means. Both failures are
/// `PERMISSION_DENIED`.
fn verify_signature(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &[u8],
    field: &str,
    signer: &str,
    failure: &str,
) -> Result<(), LedgerError> {
    let signature: [u8; 64] = signature.try_into().map_err(|_| {
        LedgerError::PermissionDenied(format!(
            "{field}: {} bytes, expected a 64-byte Ed25519 signature by {signer}",
            signature.len()
        ))
    })?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| LedgerError::PermissionDenied(format!("{field}: {failure}")))
}

/// One item's outcome inside a transaction shared by several: applied anew, it takes the next
/// order number within the commit; refused, the refusal is its own result; a store error ends
/// the whole transaction.
type Ordered = Result<(Applied, u16), LedgerError>;

fn in_order(
    order: &mut u16,
    r: Result<Applied, TxError<LedgerError>>,
) -> Result<Ordered, TxError<LedgerError>> {
    match r {
        Ok(applied) => {
            let used = *order;
            if matches!(applied, Applied::New(_)) {
                *order += 1;
            }
            Ok(Ok((applied, used)))
        }
        Err(TxError::Abort(e)) => Ok(Err(e)),
        Err(TxError::Store(e)) => Err(TxError::Store(e)),
    }
}

/// A number spread evenly by `request_id` and `attempt`, to pick among the vault's coins.
fn spread(request_id: &str, attempt: u32) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::new()
        .chain_update(request_id.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Why a ledger call failed; `service.rs` maps each to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Reject(#[from] Reject),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// A copy of a ledger error (results are shared by duplicate submissions).
fn clone_error(e: &LedgerError) -> LedgerError {
    match e {
        LedgerError::Reject(r) => LedgerError::Reject(r.clone()),
        LedgerError::InvalidArgument(m) => LedgerError::InvalidArgument(m.clone()),
        LedgerError::NotFound(m) => LedgerError::NotFound(m.clone()),
        LedgerError::FailedPrecondition(m) => LedgerError::FailedPrecondition(m.clone()),
        LedgerError::PermissionDenied(m) => LedgerError::PermissionDenied(m.clone()),
        LedgerError::Unavailable(m) => LedgerError::Unavailable(m.clone()),
        LedgerError::Internal(m) => LedgerError::Internal(m.clone()),
    }
}

impl From<Corrupt> for LedgerError {
    fn from(e: Corrupt) -> Self {
        LedgerError::Internal(e.to_string())
    }
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => LedgerError::Unavailable("the ledger is shutting down".into()),
            StoreError::RetryLimit { .. } => {
                LedgerError::Unavailable(format!("store busy, try again: {e}"))
            }
            other => LedgerError::Internal(format!("store: {other}")),
        }
    }
}

impl From<TxError<LedgerError>> for LedgerError {
    fn from(e: TxError<LedgerError>) -> Self {
        match e {
            TxError::Abort(e) => e,
            TxError::Store(e) => e.into(),
        }
    }
}

fn abort(e: impl Into<LedgerError>) -> TxError<LedgerError> {
    TxError::Abort(e.into())
}

fn corrupt(e: Corrupt) -> TxError<LedgerError> {
    TxError::Abort(e.into())
}

/// A wallet as the ledger reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletView {
    pub address: Address,
    pub tier: KycTier,
    pub status: WalletStatus,
    pub balance: Amount,
    pub spent_today: Amount,
    pub unspent_outputs: u64,
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

/// A committed transfer, as broadcast to watchers.
#[derive(Clone, Debug)]
pub struct CommitEvent {
    pub position: [u8; POSITION_LEN],
    pub lines: Vec<(PublicKey, HistoryRecord)>,
}

/// What `apply` did inside a transaction.
enum Applied {
    Already(TransferRecord),
    New(Vec<(PublicKey, HistoryRecord)>),
}

/// A transfer's status as `GetTransfer` reports it.
#[derive(Clone, Debug)]
pub struct TransferInfo {
    pub record: TransferRecord,
    /// Outputs for other ledgers not yet delivered.
    pub settling: bool,
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
}

/// An inbound delivery ready to apply: its slot in the request, the transfer, the outputs
/// this ledger credits, and the amount.
type InboundItem = (usize, Arc<Transfer>, Arc<Vec<(u16, Output)>>, Amount);

/// Figures for an audit of one ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub unspent: Amount,
    pub unspent_outputs: u64,
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
}

struct Inner {
    db: Database,
    layout: Layout,
    settings: Settings,
    operator: cbdc_core::Keypair,
    clock: Clock,
    verifier: Verifier,
    events: broadcast::Sender<Arc<CommitEvent>>,
    metrics: LedgerMetrics,
    /// The central bank's key, decompressed once.
    central_bank_key: Option<ed25519_dalek::VerifyingKey>,
}

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
    ) -> Result<Ledger, LedgerError> {
        let metrics = LedgerMetrics::new(settings.ledger.0);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let group_sizes = metrics.commit_group.clone();
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let committer = Batcher::start(
                "committer",
                COMMIT_GROUP_MAX,
                crate::verifier::QUEUE_DEPTH,
                COMMIT_GROUPS_IN_FLIGHT,
                move |n| group_sizes.observe(n as f64),
                move |transfers: Vec<Transfer>| {
                    let inner = weak.upgrade();
                    async move {
                        match inner {
                            Some(inner) => Ledger { inner }.commit_group(transfers).await,
                            None => transfers
                                .iter()
                                .map(|_| {
                                    Err(LedgerError::Unavailable("the ledger has stopped".into()))
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
                central_bank_key: settings.central_bank.and_then(|k| k.verifying_key().ok()),
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
                    Ok::<(), TxError<LedgerError>>(())
                })
            })
            .await?;
        Ok(ledger)
    }

    pub fn id(&self) -> LedgerId {
        self.inner.settings.ledger
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

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommitEvent>> {
        self.inner.events.subscribe()
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
    pub fn local_key(&self, field: &str, address: &Address) -> Result<PublicKey, LedgerError> {
        if address.ledger != self.id() {
            return Err(LedgerError::InvalidArgument(format!(
                "{field}: address is on ledger {}, this is ledger {}",
                address.ledger.0,
                self.id().0
            )));
        }
        Ok(address.key)
    }

    /// Checks an operator signature over `message`.
    pub fn check_operator(&self, message: &[u8], signature: &[u8]) -> Result<(), LedgerError> {
        verify_signature(
            self.inner.operator.verifying_key(),
            message,
            signature,
            "operator_signature",
            "the bank's operator key",
            "does not verify against the bank's operator key",
        )
    }

    // ----- wallets -----

    pub async fn open_wallet(
        &self,
        key: PublicKey,
        tier: KycTier,
        phone_hash: Option<[u8; 32]>,
        signature: &[u8],
    ) -> Result<WalletView, LedgerError> {
        if tier == KycTier::Operator {
            return Err(LedgerError::InvalidArgument(
                "tier: the operator tier belongs to the bank's vault and cannot be opened".into(),
            ));
        }
        if tier == KycTier::Class4Anonymous && phone_hash.is_none() {
            return Err(LedgerError::InvalidArgument(
                "phone_hash: the anonymous tier needs the SHA-256 of a phone number".into(),
            ));
        }
        let vk = key
            .verifying_key()
            .map_err(|e| LedgerError::InvalidArgument(format!("public_key: {e}")))?;
        verify_signature(
            &vk,
            &open_message(self.id(), &key),
            signature,
            "signature",
            "public_key (proof of key possession)",
            "does not prove possession of public_key (signs \"cbdc/v1/open\" ‖ ledger id ‖ key)",
        )?;
        let now = self.now_ms();
        let me = self.clone();
        self.inner
            .db
            .run(move |tx| {
                let me = me.clone();
                Box::pin(async move {
                    let wk = me.layout().wallet(&key);
                    match tx.get(&wk).await? {
                        Some(existing) => {
                            let existing = WalletRecord::decode(&existing).map_err(corrupt)?;
                            if existing.tier != tier {
                                return Err(abort(LedgerError::FailedPrecondition(format!(
                                    "public_key: a wallet with this key is already open at tier {:?}",
                                    existing.tier
                                ))));
                            }
                        }
                        None => {
                            let record = WalletRecord {
                                status: WalletStatus::Active,
                                tier,
                                opened_at_ms: now,
                                phone_hash,
                            };
                            tx.set(&wk, record.encode())?;
                        }
                    }
                    Ok(())
                })
            })
            .await?;
        self.wallet(&key).await
    }

    /// A wallet's state, read at one snapshot.
    pub async fn wallet(&self, key: &PublicKey) -> Result<WalletView, LedgerError> {
        let mut tx = self.inner.db.create_transaction()?;
        let l = self.layout();
        let record = tx.get_snapshot(&l.wallet(key)).await?.ok_or_else(|| {
            LedgerError::NotFound(format!(
                "address: no wallet {} on ledger {}",
                Address::new(self.id(), *key),
                self.id().0
            ))
        })?;
        let record = WalletRecord::decode(&record)?;
        let balance = counter_amount(tx.get_snapshot(&l.balance(key)).await?.as_deref())?;
        let spent_today = counter_amount(
            tx.get_snapshot(&l.daily(key, self.day(self.now_ms())))
                .await?
                .as_deref(),
        )?;
        let unspent = counter(tx.get_snapshot(&l.utxo_count(key)).await?.as_deref());
        Ok(WalletView {
            address: Address::new(self.id(), *key),
            tier: record.tier,
            status: record.status,
            balance,
            spent_today,
            unspent_outputs: unspent.max(0) as u64,
        })
    }

    /// Freeze, unfreeze or close, already authenticated by the caller.
    pub async fn set_status(
        &self,
        key: PublicKey,
        target: WalletStatus,
    ) -> Result<WalletView, LedgerError> {
        if key == self.operator_key() {
            return Err(LedgerError::FailedPrecondition(
                "address: the operator vault cannot be frozen or closed".into(),
            ));
        }
        let me = self.clone();
        self.inner
            .db
            .run(move |tx| {
                let me = me.clone();
                Box::pin(async move {
                    let l = me.layout();
                    let wk = l.wallet(&key);
                    let Some(bytes) = tx.get(&wk).await? else {
                        return Err(abort(LedgerError::NotFound(format!(
                            "address: no wallet {} on ledger {}",
                            Address::new(me.id(), key),
                            me.id().0
                        ))));
                    };
                    let mut record = WalletRecord::decode(&bytes).map_err(corrupt)?;
                    if record.status == target {
                        return Ok(());
                    }
                    if record.status == WalletStatus::Closed {
                        return Err(abort(LedgerError::FailedPrecondition(
                            "address: the wallet is closed".into(),
                        )));
                    }
                    if target == WalletStatus::Closed {
                        let balance = counter(tx.get(&l.balance(&key)).await?.as_deref());
                        let outputs = counter(tx.get(&l.utxo_count(&key)).await?.as_deref());
                        if balance != 0 || outputs != 0 {
                            return Err(abort(LedgerError::FailedPrecondition(format!(
                                "address: a wallet closes only at zero balance; it holds {} in {outputs} outputs",
                                Amount::from_fen(balance.max(0) as u64)
                            ))));
                        }
                    }
                    record.status = target;
                    tx.set(&wk, record.encode())?;
                    Ok(())
                })
            })
            .await?;
        self.wallet(&key).await
    }

    // ----- transfers -----

    /// Submits transfers (decoded at the boundary, or refused there). Each gets its own
    /// result, in order. Signatures are verified in batches shared with concurrent callers;
    /// the verifier hands each batch's valid transfers on to the committer stage together,
    /// which puts many transfers (also from concurrent callers) into one store transaction.
    pub async fn submit(
        &self,
        transfers: Vec<Result<Transfer, Reject>>,
    ) -> Vec<Result<Committed, LedgerError>> {
        let mut results: Vec<Option<Result<Committed, LedgerError>>> =
            Vec::with_capacity(transfers.len());
        let mut to_check = Vec::new();
        let mut slots = Vec::new();
        for (i, t) in transfers.into_iter().enumerate() {
            match t {
                Ok(t) => {
                    results.push(None);
                    slots.push(i);
                    to_check.push(t);
                }
                Err(r) => results.push(Some(Err(r.into()))),
            }
        }
        let unavailable = |e: &dyn std::fmt::Display| LedgerError::Unavailable(e.to_string());
        let verdicts = match self.inner.verifier.check_and_commit(to_check).await {
            Ok(v) => v,
            Err(stopped) => {
                return results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(unavailable(&stopped))))
                    .collect();
            }
        };
        let mut queued = Vec::new();
        let mut expired = Vec::new();
        for (slot, verdict) in slots.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Queued(ticket) => queued.push((slot, ticket)),
                // A committed transfer resubmitted after it expired gets the same answer.
                Verdict::Refused(t, r @ Reject::Expired { .. }) => {
                    expired.push((slot, t.txid(), r))
                }
                Verdict::Refused(_, r) => results[slot] = Some(Err(r.into())),
                Verdict::Valid(_) => {
                    results[slot] = Some(Err(LedgerError::Internal(
                        "the verifier did not queue a valid transfer".into(),
                    )))
                }
            }
        }
        for (slot, txid, reject) in expired {
            results[slot] = Some(match self.committed(&txid).await {
                Ok(Some(c)) => Ok(c),
                Ok(None) => Err(reject.into()),
                Err(e) => Err(e),
            });
        }
        for (slot, ticket) in queued {
            results[slot] = Some(match ticket.await.ok().and_then(|mut r| r.pop()) {
                Some(r) => r,
                None => Err(unavailable(&Stopped("committer"))),
            });
        }
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.expect("every slot filled"))
            .collect();
        for r in &results {
            match r {
                Ok(_) => {}
                Err(LedgerError::Reject(reject)) => self
                    .inner
                    .metrics
                    .rejected
                    .with_label_values(&[cbdc_proto::convert::reject_code(reject)])
                    .inc(),
                Err(_) => self
                    .inner
                    .metrics
                    .rejected
                    .with_label_values(&["OTHER"])
                    .inc(),
            }
        }
        results
    }

    /// The committed result of `txid`, if it was committed.
    pub async fn committed(&self, txid: &Txid) -> Result<Option<Committed>, LedgerError> {
        let mut tx = self.inner.db.create_transaction()?;
        Ok(
            match tx.get_snapshot(&self.layout().transfer(txid)).await? {
                None => None,
                Some(bytes) => {
                    let r = TransferRecord::decode(&bytes)?;
                    Some(Committed {
                        txid: *txid,
                        position: r.position,
                        committed_at_ms: r.committed_at_ms,
                        already: true,
                    })
                }
            },
        )
    }

    /// Commits one transfer that passed the stateless checks. `request` is an operator
    /// request's key: read (with a conflict) and written with the txid in the same
    /// transaction, so one request id commits at most one transfer even when two attempts
    /// race; a request already done answers with its transfer.
    async fn commit(
        &self,
        transfer: Transfer,
        request: Option<Vec<u8>>,
    ) -> Result<Committed, LedgerError> {
        let transfer = Arc::new(transfer);
        let now_ms = self.now_ms();
        let attempts = Arc::new(AtomicU64::new(0));
        let me = self.clone();
        let t = Arc::clone(&transfer);
        let counted = Arc::clone(&attempts);
        let outcome = self
            .inner
            .db
            .run_stamped(move |tx| {
                let me = me.clone();
                let t = Arc::clone(&t);
                let request = request.clone();
                counted.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move {
                    if let Some(k) = &request
                        && let Some(done) = tx.get(k).await?
                    {
                        let txid = Txid(
                            done.try_into()
                                .map_err(|_| corrupt(Corrupt { what: "request" }))?,
                        );
                        let record =
                            tx.get(&me.layout().transfer(&txid)).await?.ok_or_else(|| {
                                corrupt(Corrupt {
                                    what: "request's transfer",
                                })
                            })?;
                        let record = TransferRecord::decode(&record).map_err(corrupt)?;
                        return Ok((Applied::Already(record), txid));
                    }
                    let applied = me.apply(tx, &t, now_ms, TransferKind::Local, 0).await?;
                    if let Applied::New(_) = &applied {
                        me.write_log(tx, &[t.txid()])?;
                        if let Some(k) = &request {
                            tx.set(k, t.txid().0)?;
                        }
                    }
                    Ok((applied, t.txid()))
                })
            })
            .await;
        let retries = attempts.load(Ordering::Relaxed).saturating_sub(1);
        if retries > 0 {
            self.inner.metrics.store_retries.inc_by(retries);
        }
        let ((applied, txid), stamp) = outcome?;
        Ok(self.finish(txid, applied, stamp.0, 0, now_ms))
    }

    /// Commits transfers that passed the stateless checks in one store transaction, each
    /// validated against the state the earlier ones left (a double spend inside the group is
    /// refused like any other). If the group cannot commit (conflicts past the retry bound, or
    /// a limit), each transfer commits on its own instead.
    async fn commit_group(&self, transfers: Vec<Transfer>) -> Vec<Result<Committed, LedgerError>> {
        if transfers.len() == 1 {
            let t = transfers.into_iter().next().expect("one");
            return vec![self.commit(t, None).await];
        }
        // The same transfer twice in a group: commit it once, answer both.
        let mut index_of: std::collections::HashMap<Txid, usize> = Default::default();
        let mut unique: Vec<Transfer> = Vec::with_capacity(transfers.len());
        let mut slot_of = Vec::with_capacity(transfers.len());
        let mut repeat = Vec::with_capacity(transfers.len());
        for t in transfers {
            match index_of.get(&t.txid()) {
                Some(&i) => {
                    slot_of.push(i);
                    repeat.push(true);
                }
                None => {
                    index_of.insert(t.txid(), unique.len());
                    slot_of.push(unique.len());
                    repeat.push(false);
                    unique.push(t);
                }
            }
        }
        let group = Arc::new(unique);
        let now_ms = self.now_ms();
        let attempts = Arc::new(AtomicU64::new(0));
        let me = self.clone();
        let g = Arc::clone(&group);
        let counted = Arc::clone(&attempts);
        let outcome = self
            .inner
            .db
            .run_stamped(move |tx| {
                let me = me.clone();
                let g = Arc::clone(&g);
                counted.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move {
                    let mut results = Vec::with_capacity(g.len());
                    let mut order: u16 = 0;
                    let mut logged = Vec::with_capacity(g.len());
                    for t in g.iter() {
                        let r = me.apply(tx, t, now_ms, TransferKind::Local, order).await;
                        let r = in_order(&mut order, r)?;
                        if let Ok((Applied::New(_), _)) = &r {
                            logged.push(t.txid());
                        }
                        results.push(r);
                    }
                    me.write_log(tx, &logged)?;
                    Ok::<_, TxError<LedgerError>>(results)
                })
            })
            .await;
        let retries = attempts.load(Ordering::Relaxed).saturating_sub(1);
        if retries > 0 {
            self.inner.metrics.store_retries.inc_by(retries);
        }
        let unique_results: Vec<Result<Committed, LedgerError>> = match outcome {
            Ok((results, stamp)) => results
                .into_iter()
                .zip(group.iter())
                .map(|(r, t)| {
                    r.map(|(applied, order)| self.finish(t.txid(), applied, stamp.0, order, now_ms))
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %LedgerError::from(e), size = group.len(), "group commit failed; committing one by one");
                let group = Arc::try_unwrap(group).unwrap_or_else(|g| (*g).clone());
                let singles = group.into_iter().map(|t| {
                    let me = self.clone();
                    async move { me.commit(t, None).await }
                });
                futures::future::join_all(singles).await
            }
        };
        slot_of
            .into_iter()
            .zip(repeat)
            .map(|(i, again)| match &unique_results[i] {
                Ok(c) => Ok(Committed {
                    already: c.already || again,
                    ..*c
                }),
                Err(e) => Err(clone_error(e)),
            })
            .collect()
    }

    fn finish(
        &self,
        txid: Txid,
        applied: Applied,
        stamp: [u8; STAMP_LEN],
        order: u16,
        now_ms: u64,
    ) -> Committed {
        let position = position(stamp, order);
        match applied {
            Applied::Already(record) => Committed {
                txid,
                position: record.position,
                committed_at_ms: record.committed_at_ms,
                already: true,
            },
            Applied::New(lines) => {
                self.inner.metrics.committed.inc();
                let _ = self
                    .inner
                    .events
                    .send(Arc::new(CommitEvent { position, lines }));
                Committed {
                    txid,
                    position,
                    committed_at_ms: now_ms,
                    already: false,
                }
            }
        }
    }

    /// Validates `t` against the ledger's state and writes its effects, inside `tx`.
    async fn apply(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        now_ms: u64,
        kind: TransferKind,
        order: u16,
    ) -> Result<Applied, TxError<LedgerError>> {
        let l = self.layout();
        let txid = t.txid();
        let body = t.body();
        let mut states = Vec::with_capacity(body.inputs.len());
        for input in &body.inputs {
            states.push(match tx.get(&l.output(&input.outpoint)).await? {
                None => InputState::Missing,
                Some(v) => match OutputState::decode(&v).map_err(corrupt)? {
                    OutputState::Unspent(o) => InputState::Unspent(o),
                    OutputState::Spent { by } => InputState::Spent { by },
                },
            });
        }
        // A transfer committed here spent its inputs under its own txid, and one delivered
        // from another ledger has no inputs here: only then can its record exist. A fresh
        // transfer (every input unspent) skips the lookup, which would miss in every
        // segment of the store. Two racing copies of one transfer both write its first
        // input, so the loser retries and finds it spent by this txid.
        let maybe_done = body.inputs.is_empty()
            || states.iter().any(|s| match s {
                InputState::Missing => true,
                InputState::Spent { by } => *by == txid,
                InputState::Unspent(_) => false,
            });
        if maybe_done && let Some(bytes) = tx.get(&l.transfer(&txid)).await? {
            return Ok(Applied::Already(
                TransferRecord::decode(&bytes).map_err(corrupt)?,
            ));
        }
        // Refuse a missing or spent input before reading any wallet.
        for (input, state) in body.inputs.iter().zip(&states) {
            match state {
                InputState::Missing => {
                    return Err(abort(Reject::InputMissing {
                        outpoint: input.outpoint,
                    }));
                }
                InputState::Spent { by } => {
                    return Err(abort(Reject::InputSpent {
                        outpoint: input.outpoint,
                        spent_by: *by,
                    }));
                }
                InputState::Unspent(_) => {}
            }
        }
        let day = self.day(now_ms);
        let tiers = &self.inner.settings.tiers;
        let mut wallets = BTreeMap::new();
        for key in parties(t, self.id(), &states) {
            let Some(bytes) = tx.get(&l.wallet(&key)).await? else {
                continue; // check_stateful names it as unknown
            };
            let record = WalletRecord::decode(&bytes).map_err(corrupt)?;
            let limits = tiers.limits(record.tier);
            // Read (and so conflict on) balances and day totals only where a cap needs them:
            // uncapped wallets, like a busy merchant's, take payments without conflicts.
            let balance = if limits.balance_cap.is_some() {
                counter_amount(tx.get(&l.balance(&key)).await?.as_deref()).map_err(corrupt)?
            } else {
                Amount::ZERO
            };
            let spent_today = if limits.daily_outgoing_cap.is_some() {
                counter_amount(tx.get(&l.daily(&key, day)).await?.as_deref()).map_err(corrupt)?
            } else {
                Amount::ZERO
            };
            wallets.insert(
                key,
                WalletState {
                    status: record.status,
                    tier: record.tier,
                    balance,
                    spent_today,
                },
            );
        }
        let ctx = StatefulContext {
            ledger: self.id(),
            now: UnixSeconds(now_ms / 1000),
            inputs: &states,
            wallets: &wallets,
            tiers,
        };
        let effects = match kind {
            TransferKind::Local => check_stateful(t, &ctx).map_err(abort)?,
            TransferKind::Inbound => unreachable!("inbound deliveries use apply_inbound"),
        };
        // Spend.
        let mut utxo_delta: BTreeMap<PublicKey, i64> = BTreeMap::new();
        let spent_marker = OutputState::Spent { by: txid }.encode();
        for (outpoint, state) in effects.spent.iter().zip(&states) {
            let InputState::Unspent(output) = state else {
                unreachable!("checked above");
            };
            let owner = output.lock.owner();
            tx.set(l.output(outpoint), &spent_marker)?;
            tx.clear(l.owned(&owner, outpoint))?;
            *utxo_delta.entry(owner).or_default() -= 1;
        }
        // Create.
        for (outpoint, output) in &effects.created {
            let owner = output.lock.owner();
            tx.set(l.output(outpoint), OutputState::Unspent(*output).encode())?;
            tx.set(l.owned(&owner, outpoint), output.value.fen().to_be_bytes())?;
            *utxo_delta.entry(owner).or_default() += 1;
        }
        for (outpoint, output) in &effects.outbound {
            tx.set(l.outbox(outpoint), output.encode())?;
        }
        for (key, delta) in utxo_delta {
            if delta != 0 {
                tx.atomic_add(l.utxo_count(&key), delta)?;
            }
        }
        let memo = &body.memo;
        let mut lines = Vec::with_capacity(effects.wallet_changes.len());
        for change in &effects.wallet_changes {
            let net = change.incoming.fen() as i64 - change.outgoing.fen() as i64;
            if net != 0 {
                tx.atomic_add(l.balance(&change.key), net)?;
            }
            if !change.outgoing.is_zero() {
                let capped = wallets
                    .get(&change.key)
                    .is_some_and(|w| tiers.limits(w.tier).daily_outgoing_cap.is_some());
                if capped {
                    tx.atomic_add(l.daily(&change.key, day), change.outgoing.fen() as i64)?;
                }
            }
            let (amount, incoming) = if change.incoming.is_zero() {
                (change.outgoing, false)
            } else {
                (change.incoming, true)
            };
            let record = HistoryRecord {
                txid,
                amount,
                incoming,
                committed_at_ms: now_ms,
                memo: memo.clone(),
            };
            self.write_history(tx, &change.key, &record, order)?;
            lines.push((change.key, record));
        }
        self.write_transfer(tx, t, now_ms, TransferKind::Local, order)?;
        Ok(Applied::New(lines))
    }

    fn write_history(
        &self,
        tx: &mut Transaction,
        key: &PublicKey,
        record: &HistoryRecord,
        order: u16,
    ) -> Result<(), StoreError> {
        let mut hk = self.layout().history_prefix(key);
        let offset = hk.len() as u32;
        hk.extend_from_slice(&position([0; STAMP_LEN], order));
        tx.set_versionstamped_key(hk, offset, record.encode())
    }

    fn write_transfer(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        now_ms: u64,
        kind: TransferKind,
        order: u16,
    ) -> Result<(), StoreError> {
        let record = TransferRecord {
            position: position([0; STAMP_LEN], order),
            committed_at_ms: now_ms,
            kind,
            body: t.body_bytes().to_vec(),
            witnesses: TransferRecord::witnesses_of(t.witnesses()),
        };
        tx.set_versionstamped_value(self.layout().transfer(&t.txid()), record.encode(), 0)
    }

    /// Appends the transfers a store transaction commits (`txids`, in order) to the commit
    /// log: one entry per [`LOG_ENTRY_TXIDS_MAX`] of them, keyed by the position of its
    /// first, rather than one key per transfer.
    fn write_log(&self, tx: &mut Transaction, txids: &[Txid]) -> Result<(), StoreError> {
        for (i, chunk) in txids.chunks(LOG_ENTRY_TXIDS_MAX).enumerate() {
            // Orders are u16: one commit never holds more than 65,536 transfers.
            let first = (i * LOG_ENTRY_TXIDS_MAX) as u16;
            let mut lk = self.layout().log_prefix();
            let offset = lk.len() as u32;
            lk.extend_from_slice(&position([0; STAMP_LEN], first));
            let mut v = Vec::with_capacity(32 * chunk.len());
            for txid in chunk {
                v.extend_from_slice(&txid.0);
            }
            tx.set_versionstamped_key(lk, offset, v)?;
        }
        Ok(())
    }

    pub async fn transfer(&self, txid: &Txid) -> Result<Option<TransferInfo>, LedgerError> {
        let mut tx = self.inner.db.create_transaction()?;
        let Some(bytes) = tx.get_snapshot(&self.layout().transfer(txid)).await? else {
            return Ok(None);
        };
        let record = TransferRecord::decode(&bytes)?;
        let (b, e) = self.layout().outbox_of(txid);
        let pending = tx.get_range(&b, &e, RangeOptions::snapshot(1)).await?;
        Ok(Some(TransferInfo {
            record,
            settling: !pending.is_empty(),
        }))
    }

    /// Coin selection over `from`'s unspent outputs (largest first among the first
    /// [`COIN_SCAN_MAX`]), paying `payments` and returning the change to `from`.
    pub async fn build(
        &self,
        from: PublicKey,
        payments: &[(Address, Amount)],
        memo: Vec<u8>,
        valid_for_s: u64,
    ) -> Result<Built, LedgerError> {
        self.build_with(from, payments, memo, valid_for_s, CoinPolicy::Wallet)
            .await
    }

    async fn build_with(
        &self,
        from: PublicKey,
        payments: &[(Address, Amount)],
        memo: Vec<u8>,
        valid_for_s: u64,
        policy: CoinPolicy,
    ) -> Result<Built, LedgerError> {
        if payments.is_empty() {
            return Err(LedgerError::InvalidArgument(
                "payments: at least one payment is needed".into(),
            ));
        }
        if payments.len() + 1 > cbdc_core::transfer::MAX_OUTPUTS {
            return Err(LedgerError::InvalidArgument(format!(
                "payments: {} payments; at most {} fit one transfer with change",
                payments.len(),
                cbdc_core::transfer::MAX_OUTPUTS - 1
            )));
        }
        if memo.len() > cbdc_core::transfer::MAX_MEMO_BYTES {
            return Err(LedgerError::InvalidArgument(format!(
                "memo: {} bytes; at most {} are allowed",
                memo.len(),
                cbdc_core::transfer::MAX_MEMO_BYTES
            )));
        }
        let total = Amount::checked_sum(payments.iter().map(|(_, a)| *a)).ok_or_else(|| {
            LedgerError::InvalidArgument("payments: amounts overflow when summed".into())
        })?;
        let (coins, held) = self.coins(&from, total, policy).await?;
        let valid_for = if valid_for_s == 0 {
            self.inner.settings.default_valid_for_s
        } else {
            valid_for_s.min(86_400)
        };
        let mut body = TransferBody {
            inputs: coins
                .iter()
                .map(|(o, out)| Input {
                    outpoint: *o,
                    value: out.value,
                })
                .collect(),
            outputs: payments
                .iter()
                .map(|(to, amount)| Output {
                    ledger: to.ledger,
                    value: *amount,
                    lock: Lock::Key(to.key),
                })
                .collect(),
            memo,
            valid_until: UnixSeconds(self.now_ms() / 1000 + valid_for),
        };
        let gathered = Amount::checked_sum(coins.iter().map(|(_, o)| o.value))
            .ok_or_else(|| LedgerError::Internal("wallet outputs overflow".into()))?;
        let change = gathered.saturating_sub(total);
        // The vault splits its change while it holds few coins, so that concurrent exchanges
        // find different coins to spend instead of queueing on one.
        let pieces = match policy {
            CoinPolicy::Vault(_) if held < VAULT_MIN_COINS => VAULT_SPLIT
                .min(cbdc_core::transfer::MAX_OUTPUTS - body.outputs.len())
                .min(usize::try_from(change.fen()).unwrap_or(usize::MAX))
                .max(1),
            _ => 1,
        };
        if !change.is_zero() {
            let piece = change.fen() / pieces as u64;
            for i in 0..pieces {
                let value = if i + 1 == pieces {
                    change.fen() - piece * (pieces as u64 - 1)
                } else {
                    piece
                };
                body.outputs.push(Output {
                    ledger: self.id(),
                    value: Amount::from_fen(value),
                    lock: Lock::Key(from),
                });
            }
        }
        let bytes = body.encode();
        Ok(Built {
            txid: Txid::of_body(&bytes),
            body: bytes,
            inputs: coins,
        })
    }

    /// Unspent outputs of `owner` locked to its key alone, worth at least `total`, and how
    /// many such outputs the owner holds (among the first [`COIN_SCAN_MAX`]).
    async fn coins(
        &self,
        owner: &PublicKey,
        total: Amount,
        policy: CoinPolicy,
    ) -> Result<(Vec<(OutPoint, Output)>, usize), LedgerError> {
        let mut tx = self.inner.db.create_transaction()?;
        let (b, e) = self.layout().owned_range(owner);
        let rows = tx
            .get_range(&b, &e, RangeOptions::snapshot(COIN_SCAN_MAX))
            .await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for (k, _) in rows {
            let outpoint = self.layout().owned_outpoint(&k).ok_or(Corrupt {
                what: "owner index",
            })?;
            if let Some(v) = tx.get_snapshot(&self.layout().output(&outpoint)).await?
                && let OutputState::Unspent(o) = OutputState::decode(&v)?
                && o.lock == Lock::Key(*owner)
            {
                candidates.push((outpoint, o));
            }
        }
        let held = candidates.len();
        if let CoinPolicy::Vault(spread) = policy {
            // Any one coin that covers the payment, picked by the request's spread:
            // concurrent exchanges rarely pick the same one.
            let covering: Vec<_> = candidates.iter().filter(|c| c.1.value >= total).collect();
            if !covering.is_empty() {
                let pick = (spread % covering.len() as u64) as usize;
                return Ok((vec![*covering[pick]], held));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.1.value));
        let mut chosen = Vec::new();
        let mut sum = Amount::ZERO;
        for c in candidates {
            if sum >= total {
                break;
            }
            if chosen.len() == cbdc_core::transfer::MAX_INPUTS {
                return Err(LedgerError::FailedPrecondition(format!(
                    "from_address: paying {total} needs more than {} outputs; consolidate first",
                    cbdc_core::transfer::MAX_INPUTS
                )));
            }
            sum = sum.checked_add(c.1.value).unwrap_or(sum);
            chosen.push(c);
        }
        if sum < total {
            return Err(LedgerError::FailedPrecondition(format!(
                "from_address: insufficient funds: spendable {sum}, needed {total}"
            )));
        }
        Ok((chosen, held))
    }

    /// A page of `key`'s history after `after` (a log position), oldest first.
    pub async fn history(
        &self,
        key: &PublicKey,
        after: Option<[u8; POSITION_LEN]>,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, LedgerError> {
        let prefix = self.layout().history_prefix(key);
        let mut begin = prefix.clone();
        if let Some(after) = after {
            begin.extend_from_slice(&after);
            begin.push(0);
        }
        let end = cbdc_store::keys::strinc(&prefix).expect("prefix has a non-0xff byte");
        let mut tx = self.inner.db.create_transaction()?;
        let rows = tx
            .get_range(
                &begin,
                &end,
                RangeOptions {
                    limit,
                    snapshot: true,
                    ..RangeOptions::default()
                },
            )
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let position: [u8; POSITION_LEN] = k
                    .get(prefix.len()..)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(Corrupt {
                        what: "history key",
                    })?;
                Ok(HistoryItem {
                    position,
                    record: HistoryRecord::decode(&v)?,
                })
            })
            .collect()
    }

    // ----- the operator vault -----

    /// Pays `amount` from the vault to `to` (a customer exchanging deposits for digital
    /// currency). Done once per `request_id`.
    pub async fn pay_from_vault(
        &self,
        to: PublicKey,
        amount: Amount,
        request_id: &str,
    ) -> Result<Committed, LedgerError> {
        self.vault_pay(Address::new(self.id(), to), amount, request_id)
            .await
    }

    /// Returns `amount` from the vault to the central bank (redemption): a transfer to
    /// ledger 0, which waits in the outbox until the central bank acknowledges it. Done
    /// once per `request_id`.
    pub async fn redeem(&self, amount: Amount, request_id: &str) -> Result<Committed, LedgerError> {
        let Some(cb) = self.inner.settings.central_bank else {
            return Err(LedgerError::FailedPrecondition(
                "this ledger has no central bank key configured".into(),
            ));
        };
        self.vault_pay(
            Address::new(cbdc_core::messages::CENTRAL_BANK, cb),
            amount,
            request_id,
        )
        .await
    }

    async fn vault_pay(
        &self,
        to: Address,
        amount: Amount,
        request_id: &str,
    ) -> Result<Committed, LedgerError> {
        let rk = self.layout().request(request_id);
        if let Some(done) = self.request_done(&rk).await? {
            return Ok(done);
        }
        // Another exchange may spend the vault coins this one selected: select again, a
        // bounded number of times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let built = self
                .build_with(
                    self.operator_key(),
                    &[(to, amount)],
                    Vec::new(),
                    0,
                    CoinPolicy::Vault(spread(request_id, attempt)),
                )
                .await
                .map_err(|e| match e {
                    LedgerError::FailedPrecondition(m) => LedgerError::FailedPrecondition(
                        m.replace("from_address", "amount")
                            .replace("insufficient funds", "the vault has insufficient funds"),
                    ),
                    other => other,
                })?;
            let transfer = cbdc_core::transfer::sign_body(built.body, &[&self.inner.operator])?;
            match self.commit(transfer, Some(rk.clone())).await {
                Err(LedgerError::Reject(Reject::InputSpent { .. })) if attempt < VAULT_ATTEMPTS => {
                    continue;
                }
                Err(LedgerError::Reject(Reject::InputSpent { .. })) => {
                    return Err(LedgerError::Unavailable(format!(
                        "the vault's outputs kept changing while paying ({VAULT_ATTEMPTS} attempts); try again"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Takes a wallet's signed payment to the vault of exactly `amount` (a customer
    /// redeeming digital currency for deposits). Done once per `request_id`.
    pub async fn redeem_to_vault(
        &self,
        transfer: Transfer,
        amount: Amount,
        request_id: &str,
    ) -> Result<Committed, LedgerError> {
        let vault = Lock::Key(self.operator_key());
        let paid = Amount::checked_sum(
            transfer
                .body()
                .outputs
                .iter()
                .filter(|o| o.ledger == self.id() && o.lock == vault)
                .map(|o| o.value),
        )
        .ok_or(Reject::ValueOverflow)?;
        if paid != amount {
            return Err(LedgerError::InvalidArgument(format!(
                "wallet_transfer: pays the vault {paid}, but amount is {amount}"
            )));
        }
        let rk = self.layout().request(request_id);
        if let Some(done) = self.request_done(&rk).await? {
            return Ok(done);
        }
        let (t, verdict) = self
            .inner
            .verifier
            .check(vec![transfer])
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?
            .remove(0);
        verdict?;
        self.commit(t, Some(rk)).await
    }

    async fn request_done(&self, rk: &[u8]) -> Result<Option<Committed>, LedgerError> {
        let mut tx = self.inner.db.create_transaction()?;
        match tx.get_snapshot(rk).await? {
            None => Ok(None),
            Some(v) => {
                let txid = Txid(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| Corrupt { what: "request" })?,
                );
                self.committed(&txid).await
            }
        }
    }

    // ----- inbound from the central bank -----

    /// Credits the outputs of a transfer the central bank countersigned for this ledger
    /// (issuance to the vault, or a move from another ledger). Idempotent by txid.
    pub async fn deliver_inbound(
        &self,
        transfer: Transfer,
        from_ledger: LedgerId,
        amount: Amount,
        countersignature: &[u8],
    ) -> Result<Committed, LedgerError> {
        self.deliver_inbound_batch(vec![Inbound {
            transfer,
            from_ledger,
            amount,
            countersignature: countersignature.to_vec(),
        }])
        .await
        .remove(0)
    }

    /// [`Ledger::deliver_inbound`] for many deliveries: the countersignatures are checked
    /// with one Ed25519 batch verification and the deliveries applied in one store
    /// transaction (each on its own if that transaction cannot commit). One result per item.
    pub async fn deliver_inbound_batch(
        &self,
        items: Vec<Inbound>,
    ) -> Vec<Result<Committed, LedgerError>> {
        let mut results: Vec<Option<Result<Committed, LedgerError>>> =
            (0..items.len()).map(|_| None).collect();
        // Both signatures: the central bank's countersignature and the payers' own (without
        // expiry: a committed transfer may arrive after its `valid_until`), each kind in one
        // batch verification, off the async threads.
        let me = self.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let countersigned = me.check_countersignatures(&items);
            let witnessed =
                cbdc_core::validate::check_committed_batch(items.iter().map(|i| &i.transfer));
            let checked: Vec<Result<(), LedgerError>> = countersigned
                .into_iter()
                .zip(witnessed)
                .map(|(c, w)| c.and_then(|()| w.map_err(LedgerError::from)))
                .collect();
            (items, checked)
        })
        .await;
        let (items, checked) = match checked {
            Ok(done) => done,
            Err(e) => {
                let e = LedgerError::Unavailable(format!("signature check: {e}"));
                return results.iter().map(|_| Err(clone_error(&e))).collect();
            }
        };
        let mut good: Vec<InboundItem> = Vec::new();
        for (i, (item, ok)) in items.into_iter().zip(checked).enumerate() {
            match ok.and_then(|()| self.inbound_outputs(&item)) {
                Ok(ours) => good.push((i, Arc::new(item.transfer), Arc::new(ours), item.amount)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !good.is_empty() {
            let now_ms = self.now_ms();
            let me = self.clone();
            let batch = Arc::new(good);
            let b = Arc::clone(&batch);
            let outcome = self
                .inner
                .db
                .run_stamped(move |tx| {
                    let me = me.clone();
                    let b = Arc::clone(&b);
                    Box::pin(async move {
                        let mut out = Vec::with_capacity(b.len());
                        let mut order: u16 = 0;
                        let mut logged = Vec::with_capacity(b.len());
                        for (_, t, ours, amount) in b.iter() {
                            let r = me.apply_inbound(tx, t, ours, *amount, now_ms, order).await;
                            let r = in_order(&mut order, r)?;
                            if let Ok((Applied::New(_), _)) = &r {
                                logged.push(t.txid());
                            }
                            out.push(r);
                        }
                        me.write_log(tx, &logged)?;
                        Ok::<_, TxError<LedgerError>>(out)
                    })
                })
                .await;
            match outcome {
                Ok((applied, stamp)) => {
                    for ((i, t, _, _), r) in batch.iter().zip(applied) {
                        results[*i] = Some(r.map(|(applied, order)| {
                            self.finish(t.txid(), applied, stamp.0, order, now_ms)
                        }));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    results[batch[0].0] = Some(Err(e.into()));
                }
                Err(e) => {
                    tracing::debug!(error = %LedgerError::from(e), "inbound batch failed; applying one by one");
                    for (i, t, ours, amount) in batch.iter() {
                        let single = (0, Arc::clone(t), Arc::clone(ours), *amount);
                        results[*i] = Some(self.apply_inbound_alone(single).await);
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every item answered"))
            .collect()
    }

    async fn apply_inbound_alone(
        &self,
        (_, t, ours, amount): InboundItem,
    ) -> Result<Committed, LedgerError> {
        let now_ms = self.now_ms();
        let me = self.clone();
        let tt = Arc::clone(&t);
        let (applied, stamp) = self
            .inner
            .db
            .run_stamped(move |tx| {
                let me = me.clone();
                let t = Arc::clone(&tt);
                let ours = Arc::clone(&ours);
                Box::pin(async move {
                    let applied = me.apply_inbound(tx, &t, &ours, amount, now_ms, 0).await?;
                    if let Applied::New(_) = &applied {
                        me.write_log(tx, &[t.txid()])?;
                    }
                    Ok(applied)
                })
            })
            .await?;
        Ok(self.finish(t.txid(), applied, stamp.0, 0, now_ms))
    }

    /// Checks every item's countersignature with one batch verification (one by one only
    /// if the batch fails, to name the bad ones).
    fn check_countersignatures(&self, items: &[Inbound]) -> Vec<Result<(), LedgerError>> {
        let Some(vk) = self.inner.central_bank_key else {
            return items
                .iter()
                .map(|_| {
                    Err(LedgerError::FailedPrecondition(
                        "this ledger has no central bank key configured".into(),
                    ))
                })
                .collect();
        };
        let field = "settlement.central_bank_signature";
        let mut results: Vec<Result<(), LedgerError>> = items
            .iter()
            .map(|item| {
                if item.countersignature.len() == 64 {
                    Ok(())
                } else {
                    Err(LedgerError::PermissionDenied(format!(
                        "{field}: {} bytes, expected a 64-byte Ed25519 signature by the central bank's key",
                        item.countersignature.len()
                    )))
                }
            })
            .collect();
        let passing: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_ok()).collect();
        let messages: Vec<Vec<u8>> = passing
            .iter()
            .map(|&i| settle_message(&items[i].transfer.txid(), self.id()))
            .collect();
        let signatures: Vec<ed25519_dalek::Signature> = passing
            .iter()
            .map(|&i| {
                ed25519_dalek::Signature::from_slice(&items[i].countersignature).expect("64 bytes")
            })
            .collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let keys = vec![vk; passing.len()];
        if !passing.is_empty() && ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_err() {
            for (slot, &i) in passing.iter().enumerate() {
                results[i] = verify_signature(
                    &vk,
                    &messages[slot],
                    &items[i].countersignature,
                    field,
                    "the central bank's key",
                    "does not verify against the central bank's key",
                );
            }
        }
        results
    }

    /// The outputs of an inbound delivery that this ledger credits, after the checks that
    /// need no storage.
    fn inbound_outputs(&self, item: &Inbound) -> Result<Vec<(u16, Output)>, LedgerError> {
        if item.from_ledger == self.id() {
            return Err(LedgerError::InvalidArgument(
                "settlement.from_ledger_id: a delivery cannot come from this ledger itself".into(),
            ));
        }
        let ours: Vec<(u16, Output)> = item
            .transfer
            .body()
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.ledger == self.id())
            .map(|(i, o)| (i as u16, *o))
            .collect();
        if let Some((index, _)) = ours.iter().find(|(_, o)| o.value.is_zero()) {
            return Err(Reject::ZeroOutput {
                index: usize::from(*index),
            }
            .into());
        }
        let total =
            Amount::checked_sum(ours.iter().map(|(_, o)| o.value)).ok_or(Reject::ValueOverflow)?;
        if ours.is_empty() || total != item.amount {
            return Err(LedgerError::InvalidArgument(format!(
                "settlement.amount: {}, but the transfer's outputs for ledger {} total {total}",
                item.amount,
                self.id().0
            )));
        }
        Ok(ours)
    }

    /// Applies one inbound delivery inside `tx`: every payee wallet is checked before
    /// anything is written, so a refused delivery leaves nothing behind in a shared
    /// transaction.
    async fn apply_inbound(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        ours: &[(u16, Output)],
        amount: Amount,
        now_ms: u64,
        order: u16,
    ) -> Result<Applied, TxError<LedgerError>> {
        let l = self.layout();
        let txid = t.txid();
        if let Some(bytes) = tx.get(&l.transfer(&txid)).await? {
            return Ok(Applied::Already(
                TransferRecord::decode(&bytes).map_err(corrupt)?,
            ));
        }
        for (_, output) in ours {
            let owner = output.lock.owner();
            if tx.get(&l.wallet(&owner)).await?.is_none() {
                return Err(abort(Reject::UnknownWallet {
                    ledger: self.id(),
                    key: owner,
                }));
            }
        }
        let mut lines = Vec::new();
        for (index, output) in ours {
            let owner = output.lock.owner();
            let outpoint = t.outpoint(*index);
            tx.set(l.output(&outpoint), OutputState::Unspent(*output).encode())?;
            tx.set(l.owned(&owner, &outpoint), output.value.fen().to_be_bytes())?;
            tx.atomic_add(l.utxo_count(&owner), 1)?;
            tx.atomic_add(l.balance(&owner), output.value.fen() as i64)?;
            let record = HistoryRecord {
                txid,
                amount: output.value,
                incoming: true,
                committed_at_ms: now_ms,
                memo: t.body().memo.clone(),
            };
            self.write_history(tx, &owner, &record, order)?;
            lines.push((owner, record));
        }
        self.write_transfer(tx, t, now_ms, TransferKind::Inbound, order)?;
        tx.atomic_add(l.inbound_total(), amount.fen() as i64)?;
        Ok(Applied::New(lines))
    }

    /// The running totals: value delivered in, and value out the central bank acknowledged
    /// (two counter reads; `totals` scans everything).
    pub async fn running_totals(&self) -> Result<(Amount, Amount), LedgerError> {
        let l = self.layout();
        let mut tx = self.inner.db.create_transaction()?;
        Ok((
            counter_amount(tx.get_snapshot(&l.inbound_total()).await?.as_deref())?,
            counter_amount(tx.get_snapshot(&l.settled_out_total()).await?.as_deref())?,
        ))
    }

    /// Decodes a stored transfer record back into its wire parts.
    pub fn record_witnesses(record: &TransferRecord) -> Vec<Witness> {
        record
            .witnesses
            .iter()
            .enumerate()
            .filter_map(|(i, (k, s))| Witness::new(i, PublicKey::from_bytes(*k), *s).ok())
            .collect()
    }

    /// Audit figures, computed independently: the sum of unspent outputs, the sum of wallet
    /// balances, the number of transfers in the commit log, the outbox, and the running totals in
    /// and out (an honest ledger has unspent + outbox = inbound − settled out). Each range is scanned in pages
    /// of `limits::RANGE_ROWS_MAX` rows; on a busy ledger the pages see different moments.
    pub async fn totals(&self) -> Result<Totals, LedgerError> {
        let l = self.layout();
        let mut totals = Totals::default();
        let (b, e) = l.outputs();
        self.scan(&b, &e, |_, v| {
            if let OutputState::Unspent(o) = OutputState::decode(v)? {
                totals.unspent = totals.unspent.checked_add(o.value).ok_or(Corrupt {
                    what: "unspent total",
                })?;
                totals.unspent_outputs += 1;
            }
            Ok(())
        })
        .await?;
        let (b, e) = l.balances();
        self.scan(&b, &e, |_, v| {
            totals.balances = totals
                .balances
                .checked_add(counter_amount(Some(v))?)
                .ok_or(Corrupt {
                    what: "balance total",
                })?;
            Ok(())
        })
        .await?;
        let b = l.log_prefix();
        let e = cbdc_store::keys::strinc(&b).expect("prefix has a non-0xff byte");
        self.scan(&b, &e, |_, v| {
            if v.is_empty() || v.len() % 32 != 0 {
                return Err(Corrupt { what: "log entry" });
            }
            totals.log_entries += (v.len() / 32) as u64;
            Ok(())
        })
        .await?;
        let (b, e) = l.outbox_all();
        self.scan(&b, &e, |_, v| {
            let o = Output::decode(v).map_err(|_| Corrupt { what: "outbox" })?;
            totals.outbox = totals.outbox.checked_add(o.value).ok_or(Corrupt {
                what: "outbox total",
            })?;
            Ok(())
        })
        .await?;
        let mut tx = self.inner.db.create_transaction()?;
        totals.inbound = counter_amount(tx.get_snapshot(&l.inbound_total()).await?.as_deref())?;
        totals.settled_out =
            counter_amount(tx.get_snapshot(&l.settled_out_total()).await?.as_deref())?;
        Ok(totals)
    }

    async fn scan(
        &self,
        begin: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Corrupt>,
    ) -> Result<(), LedgerError> {
        let mut from = begin.to_vec();
        loop {
            let mut tx = self.inner.db.create_transaction()?;
            let limit = cbdc_store::limits::RANGE_ROWS_MAX;
            let rows = tx
                .get_range(
                    &from,
                    end,
                    RangeOptions {
                        limit,
                        snapshot: true,
                        ..RangeOptions::default()
                    },
                )
                .await?;
            for (k, v) in &rows {
                f(k, v)?;
            }
            match rows.last() {
                Some((k, _)) if rows.len() == limit => {
                    from = k.clone();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
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
