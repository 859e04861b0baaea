//! Talking to the central bank: the outbox delivery and checkpoint submission.
//!
//! A transfer whose outputs leave this ledger (for another ledger, or redeemed to the central
//! bank) commits together with one outbox row per leaving output. The [`OutboxWorker`] hands
//! each such transfer to the central bank's `Settle`, signed by the operator, and retries
//! with exponential backoff until the central bank acknowledges it; then, in one store
//! transaction, it clears the rows and adds their value to the settled-out total. `Settle` is
//! idempotent by txid and clearing reads the rows it clears, so a lost, repeated or late
//! acknowledgement changes nothing twice.
//!
//! The worker also submits the latest signed checkpoint with a consistency proof from the
//! size the central bank last accepted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cbdc_core::{Amount, Output, Txid};
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::{RangeOptions, TxError};
use futures::future::BoxFuture;
use tonic::Status;

use crate::ledger::{Ledger, LedgerError};
use crate::records::{Corrupt, TransferRecord};

/// Outbox rows read per step, at most.
pub const OUTBOX_SCAN_MAX: usize = 512;
/// The first retry waits this long; each failure doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts for one transfer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The central bank as the ledger sees it. The gRPC client implements it; a simulation
/// may put a faulty network in between.
pub trait CentralBankLink: Send + Sync + 'static {
    fn settle(
        &self,
        request: v1::SettleRequest,
    ) -> BoxFuture<'static, Result<v1::SettleResponse, Status>>;
    fn submit_checkpoint(
        &self,
        request: v1::SubmitCheckpointRequest,
    ) -> BoxFuture<'static, Result<v1::SubmitCheckpointResponse, Status>>;
}

/// [`CentralBankLink`] over gRPC.
#[derive(Clone)]
pub struct GrpcCentralBank {
    client: v1::issuance_service_client::IssuanceServiceClient<tonic::transport::Channel>,
}

impl GrpcCentralBank {
    /// Connects lazily (the first call connects; a down central bank is retried later).
    pub fn new(endpoint: &str) -> Result<GrpcCentralBank, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(GrpcCentralBank {
            client: v1::issuance_service_client::IssuanceServiceClient::new(channel),
        })
    }
}

impl CentralBankLink for GrpcCentralBank {
    fn settle(
        &self,
        request: v1::SettleRequest,
    ) -> BoxFuture<'static, Result<v1::SettleResponse, Status>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            client
                .settle(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    fn submit_checkpoint(
        &self,
        request: v1::SubmitCheckpointRequest,
    ) -> BoxFuture<'static, Result<v1::SubmitCheckpointResponse, Status>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            client
                .submit_checkpoint(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    failures: u32,
    next_ms: u64,
}

/// What one outbox step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStep {
    /// Transfers acknowledged and cleared.
    pub settled: usize,
    /// Attempts that failed (retried later).
    pub failed: usize,
    /// Transfers waiting for their backoff to pass.
    pub waiting: usize,
}

/// Delivers a ledger's outbox and checkpoints to the central bank.
pub struct OutboxWorker {
    ledger: Ledger,
    link: Arc<dyn CentralBankLink>,
    backoff: HashMap<Txid, Backoff>,
    /// The checkpoint size the central bank holds, once known.
    known_size: Option<u64>,
}

impl OutboxWorker {
    pub fn new(ledger: Ledger, link: Arc<dyn CentralBankLink>) -> OutboxWorker {
        OutboxWorker {
            ledger,
            link,
            backoff: HashMap::new(),
            known_size: None,
        }
    }

    /// The outbox's transfers (among the first [`OUTBOX_SCAN_MAX`] rows) and the value
    /// each sends away.
    async fn pending(&self) -> Result<BTreeMap<Txid, Amount>, LedgerError> {
        let l = self.ledger.layout();
        let (b, e) = l.outbox_all();
        let mut tx = self.ledger.db().create_transaction()?;
        let rows = tx
            .get_range(
                &b,
                &e,
                RangeOptions {
                    limit: OUTBOX_SCAN_MAX,
                    snapshot: true,
                    ..RangeOptions::default()
                },
            )
            .await?;
        let mut out: BTreeMap<Txid, Amount> = BTreeMap::new();
        for (k, v) in rows {
            let o = l
                .outbox_outpoint(&k)
                .ok_or(Corrupt { what: "outbox key" })?;
            let output = Output::decode(&v).map_err(|_| Corrupt { what: "outbox" })?;
            let sum = out.entry(o.txid).or_default();
            *sum = sum.checked_add(output.value).ok_or(Corrupt {
                what: "outbox total",
            })?;
        }
        Ok(out)
    }

    /// Hands every due outbox transfer to the central bank once.
    pub async fn step(&mut self) -> Result<OutboxStep, LedgerError> {
        let pending = self.pending().await?;
        self.backoff.retain(|txid, _| pending.contains_key(txid));
        let now = self.ledger.now_ms();
        let mut step = OutboxStep::default();
        for txid in pending.keys() {
            if self.backoff.get(txid).is_some_and(|b| b.next_ms > now) {
                step.waiting += 1;
                continue;
            }
            match self.settle_one(txid).await {
                Ok(()) => {
                    self.backoff.remove(txid);
                    step.settled += 1;
                }
                Err(e) => {
                    step.failed += 1;
                    self.ledger.metrics().central_bank_errors.inc();
                    let b = self.backoff.entry(*txid).or_insert(Backoff {
                        failures: 0,
                        next_ms: now,
                    });
                    b.failures = b.failures.saturating_add(1);
                    let wait = BACKOFF_BASE
                        .saturating_mul(1u32 << b.failures.min(16).saturating_sub(1))
                        .min(BACKOFF_MAX);
                    b.next_ms = now + wait.as_millis() as u64;
                    tracing::warn!(%txid, error = %e, failures = b.failures, "settlement failed; retrying later");
                }
            }
        }
        Ok(step)
    }

    async fn settle_one(&self, txid: &Txid) -> Result<(), LedgerError> {
        let ledger = &self.ledger;
        let mut tx = ledger.db().create_transaction()?;
        let record = tx
            .get_snapshot(&ledger.layout().transfer(txid))
            .await?
            .ok_or(Corrupt {
                what: "outbox transfer",
            })?;
        drop(tx);
        let record = TransferRecord::decode(&record)?;
        let transfer =
            cbdc_core::Transfer::decode(record.body.clone(), Ledger::record_witnesses(&record))?;
        let request = v1::SettleRequest {
            transfer: Some(convert::to_signed_transfer(&transfer)),
            from_ledger_id: ledger.id().0,
            operator_signature: ledger
                .operator()
                .sign(&cbdc_core::messages::bank_settle_message(ledger.id(), txid))
                .to_vec(),
        };
        self.link.settle(request).await.map_err(|s| {
            LedgerError::Unavailable(format!("central bank: {}: {}", s.code(), s.message()))
        })?;
        ledger.clear_outbox(txid).await?;
        ledger.metrics().outbox_settled.inc();
        Ok(())
    }

    /// Submits the latest checkpoint, with a consistency proof from the size the central
    /// bank holds. Returns whether the central bank accepted it (false: nothing to send).
    pub async fn push_checkpoint(&mut self) -> Result<bool, LedgerError> {
        let Some(signed) = self.ledger.checkpoint().await? else {
            return Ok(false);
        };
        let size = signed.checkpoint.size;
        // At most two rounds: the second after learning the size the central bank holds.
        for _ in 0..2 {
            let old = self.known_size.unwrap_or(0).min(size);
            let proof = self.ledger.consistency(old, size).await?;
            let request = v1::SubmitCheckpointRequest {
                checkpoint: Some(convert::to_checkpoint(
                    &signed.checkpoint,
                    &signed.signature,
                )),
                old_size: old,
                consistency_proof: proof.iter().map(|h| h.to_vec()).collect(),
            };
            let response = match self.link.submit_checkpoint(request).await {
                Ok(r) => r,
                Err(s) => {
                    self.ledger.metrics().central_bank_errors.inc();
                    return Err(LedgerError::Unavailable(format!(
                        "central bank: {}: {}",
                        s.code(),
                        s.message()
                    )));
                }
            };
            self.known_size = Some(response.known_size);
            if response.accepted {
                return Ok(true);
            }
        }
        Err(LedgerError::Unavailable(
            "central bank: checkpoint not accepted after learning its size".into(),
        ))
    }

    /// Runs steps every `interval` until `shutdown`, submitting a checkpoint every
    /// `checkpoint_every`.
    pub async fn run(mut self, interval: Duration, checkpoint_every: Duration, shutdown: Shutdown) {
        let mut last_checkpoint = tokio::time::Instant::now() - checkpoint_every;
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "outbox step failed");
            }
            if last_checkpoint.elapsed() >= checkpoint_every {
                last_checkpoint = tokio::time::Instant::now();
                if let Err(e) = self.push_checkpoint().await {
                    tracing::warn!(error = %e, "checkpoint submission failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}

impl Ledger {
    /// Clears `txid`'s outbox rows after the central bank acknowledged it and adds their
    /// value to the settled-out total, in one transaction; rows already cleared are not
    /// counted again. Returns the value cleared now.
    pub async fn clear_outbox(&self, txid: &Txid) -> Result<Amount, LedgerError> {
        let me = self.clone();
        let txid = *txid;
        let cleared = self
            .db()
            .run(move |tx| {
                let me = me.clone();
                Box::pin(async move {
                    let l = me.layout();
                    let (b, e) = l.outbox_of(&txid);
                    let rows = tx.get_range(&b, &e, RangeOptions::default()).await?;
                    let mut sum = Amount::ZERO;
                    for (_, v) in &rows {
                        let o = Output::decode(v).map_err(|_| {
                            TxError::Abort(LedgerError::from(Corrupt { what: "outbox" }))
                        })?;
                        sum = sum.checked_add(o.value).ok_or_else(|| {
                            TxError::Abort(LedgerError::from(Corrupt {
                                what: "outbox total",
                            }))
                        })?;
                    }
                    if !rows.is_empty() {
                        tx.clear_range(&b, &e)?;
                        tx.atomic_add(&l.settled_out_total(), sum.fen() as i64)?;
                    }
                    Ok::<_, TxError<LedgerError>>(sum)
                })
            })
            .await?;
        Ok(cleared)
    }
}
