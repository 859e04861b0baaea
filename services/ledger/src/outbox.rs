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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cbdc_core::{Amount, Output, Txid};
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_runtime::backoff::Backoffs;
use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::{RangeOptions, TxError};
use futures::future::BoxFuture;
use tonic::Status;

use crate::ledger::{Ledger, LedgerError};
use crate::records::{Corrupt, TransferRecord};

/// Retry schedules kept, at most, before those of transfers not in the current page are
/// dropped.
pub const BACKOFF_ENTRIES_MAX: usize = 65_536;
/// Outbox rows read per step, at most.
pub const OUTBOX_SCAN_MAX: usize = 4096;
/// Transfers per `SettleBatch` request, at most.
pub const SETTLE_BATCH: usize = 1024;
/// `SettleBatch` requests in flight at once, at most (by default).
pub const SETTLE_CONCURRENCY: usize = 4;

/// The central bank as the ledger sees it. The gRPC client implements it; a simulation
/// may put a faulty network in between.
pub trait CentralBankLink: Send + Sync + 'static {
    fn settle_batch(
        &self,
        request: v1::SettleBatchRequest,
    ) -> BoxFuture<'static, Result<v1::SettleBatchResponse, Status>>;
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
    fn settle_batch(
        &self,
        request: v1::SettleBatchRequest,
    ) -> BoxFuture<'static, Result<v1::SettleBatchResponse, Status>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            client
                .settle_batch(request)
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
    backoff: Backoffs<Txid>,
    /// The checkpoint size the central bank holds, once known.
    known_size: Option<u64>,
    concurrency: usize,
    /// Where the next outbox page starts, after a full page.
    resume: Option<Vec<u8>>,
}

impl OutboxWorker {
    pub fn new(ledger: Ledger, link: Arc<dyn CentralBankLink>) -> OutboxWorker {
        OutboxWorker {
            ledger,
            link,
            backoff: Backoffs::default(),
            known_size: None,
            concurrency: SETTLE_CONCURRENCY,
            resume: None,
        }
    }

    /// Settlements in flight at once (at least 1). A simulation uses 1, so that the order of
    /// messages follows from its seed alone.
    pub fn with_concurrency(mut self, n: usize) -> OutboxWorker {
        self.concurrency = n.max(1);
        self
    }

    /// The outbox's transfers (among the first [`OUTBOX_SCAN_MAX`] rows) and the value
    /// each sends away.
    ///
    /// Successive calls page through the whole outbox (a page starts after the last row of
    /// the previous full one), so transfers waiting for their backoff at the front never hide
    /// the ones behind them. Returns whether this page was the whole outbox.
    async fn pending(&mut self) -> Result<(BTreeMap<Txid, Amount>, bool), LedgerError> {
        let l = self.ledger.layout();
        let (b, e) = l.outbox_all();
        let from = self.resume.take();
        let whole = from.is_none();
        let mut tx = self.ledger.db().create_transaction()?;
        let rows = tx
            .get_range(
                from.as_deref().unwrap_or(&b),
                &e,
                RangeOptions::snapshot(OUTBOX_SCAN_MAX),
            )
            .await?;
        let full = rows.len() == OUTBOX_SCAN_MAX;
        if full && let Some((k, _)) = rows.last() {
            let mut next = k.clone();
            next.push(0);
            self.resume = Some(next);
        }
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
        Ok((out, whole && !full))
    }

    /// Hands every due outbox transfer to the central bank once, in `SettleBatch` requests
    /// of up to [`SETTLE_BATCH`] with `concurrency` requests in flight (see
    /// [`OutboxWorker::with_concurrency`]), then clears every acknowledged one in one store
    /// transaction. A transfer the central bank refused, or whose request failed, waits for
    /// its backoff.
    pub async fn step(&mut self) -> Result<OutboxStep, LedgerError> {
        use futures::StreamExt;
        let (pending, whole) = self.pending().await?;
        // Forget the schedules of transfers no longer in the outbox: known only when this
        // page was the whole outbox (or the map grew past its bound).
        if whole || self.backoff.len() > BACKOFF_ENTRIES_MAX {
            self.backoff.retain(|txid| pending.contains_key(txid));
        }
        let now = self.ledger.now_ms();
        let mut step = OutboxStep::default();
        let due: Vec<Txid> = pending
            .keys()
            .filter(|txid| {
                let wait = !self.backoff.due(txid, now);
                if wait {
                    step.waiting += 1;
                }
                !wait
            })
            .copied()
            .collect();
        let this = &*self;
        let outcomes: Vec<Vec<(Txid, Result<(), String>)>> =
            futures::stream::iter(due.chunks(SETTLE_BATCH).map(<[Txid]>::to_vec))
                .map(|chunk| async move { this.settle_chunk(chunk).await })
                .buffered(self.concurrency)
                .collect()
                .await;
        let mut acknowledged = Vec::new();
        for (txid, outcome) in outcomes.into_iter().flatten() {
            match outcome {
                Ok(()) => acknowledged.push(txid),
                Err(e) => {
                    step.failed += 1;
                    self.ledger.metrics().central_bank_errors.inc();
                    let (failures, wait) = self.backoff.failed(txid, now);
                    tracing::warn!(%txid, error = %e, failures, ?wait, "settlement failed; retrying later");
                }
            }
        }
        if !acknowledged.is_empty() {
            self.ledger.clear_outbox(&acknowledged).await?;
            for txid in &acknowledged {
                self.backoff.succeeded(txid);
            }
            step.settled = acknowledged.len();
            self.ledger
                .metrics()
                .outbox_settled
                .inc_by(acknowledged.len() as u64);
        }
        Ok(step)
    }

    /// Hands `txids` to the central bank in one request; each one's outcome.
    async fn settle_chunk(&self, txids: Vec<Txid>) -> Vec<(Txid, Result<(), String>)> {
        let request = match self.settle_request(&txids).await {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_string();
                return txids.into_iter().map(|t| (t, Err(e.clone()))).collect();
            }
        };
        match self.link.settle_batch(request).await {
            Err(s) => {
                let e = format!("central bank: {}: {}", s.code(), s.message());
                txids.into_iter().map(|t| (t, Err(e.clone()))).collect()
            }
            Ok(r) if r.results.len() != txids.len() => {
                let e = format!(
                    "central bank: {} results for {} transfers",
                    r.results.len(),
                    txids.len()
                );
                txids.into_iter().map(|t| (t, Err(e.clone()))).collect()
            }
            Ok(r) => txids
                .into_iter()
                .zip(r.results)
                .map(|(t, r)| {
                    let outcome = match r.outcome {
                        Some(v1::settle_result::Outcome::Settled(_)) => Ok(()),
                        Some(v1::settle_result::Outcome::Failed(f)) => Err(format!(
                            "central bank: {:?}: {}",
                            tonic::Code::from(f.code),
                            f.message
                        )),
                        None => Err("central bank: empty result".into()),
                    };
                    (t, outcome)
                })
                .collect(),
        }
    }

    /// The signed `SettleBatch` request for `txids`, read in one snapshot.
    async fn settle_request(&self, txids: &[Txid]) -> Result<v1::SettleBatchRequest, LedgerError> {
        let ledger = &self.ledger;
        let mut tx = ledger.db().create_transaction()?;
        let mut transfers = Vec::with_capacity(txids.len());
        for txid in txids {
            let record = tx
                .get_snapshot(&ledger.layout().transfer(txid))
                .await?
                .ok_or(Corrupt {
                    what: "outbox transfer",
                })?;
            let record = TransferRecord::decode(&record)?;
            transfers.push(v1::SignedTransfer {
                witnesses: record
                    .witnesses
                    .iter()
                    .map(|(k, sig)| v1::Witness {
                        public_key: k.to_vec(),
                        signature: sig.to_vec(),
                    })
                    .collect(),
                body: record.body,
            });
        }
        Ok(v1::SettleBatchRequest {
            from_ledger_id: ledger.id().0,
            transfers,
            operator_signature: ledger
                .operator()
                .sign(&cbdc_core::messages::bank_settle_batch_message(
                    ledger.id(),
                    txids,
                ))
                .to_vec(),
        })
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

    /// Runs steps until `shutdown`: straight on while there is work, else every
    /// `interval`; submits a checkpoint every `checkpoint_every`.
    pub async fn run(mut self, interval: Duration, checkpoint_every: Duration, shutdown: Shutdown) {
        let mut last_checkpoint = tokio::time::Instant::now() - checkpoint_every;
        loop {
            // Straight on after a step that settled something: there may be more.
            let busy = match self.step().await {
                Ok(s) => s.settled > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox step failed");
                    false
                }
            };
            if last_checkpoint.elapsed() >= checkpoint_every {
                last_checkpoint = tokio::time::Instant::now();
                if let Err(e) = self.push_checkpoint().await {
                    tracing::warn!(error = %e, "checkpoint submission failed");
                }
            }
            if busy && !shutdown.is_triggered() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}

impl Ledger {
    /// Clears the outbox rows of `txids` after the central bank acknowledged them and adds
    /// their value to the settled-out total, in one transaction; rows already cleared are not
    /// counted again. Returns the value cleared now.
    pub async fn clear_outbox(&self, txids: &[Txid]) -> Result<Amount, LedgerError> {
        let me = self.clone();
        let txids: Arc<Vec<Txid>> = Arc::new(txids.to_vec());
        let cleared = self
            .db()
            .run(move |tx| {
                let me = me.clone();
                let txids = Arc::clone(&txids);
                Box::pin(async move {
                    let l = me.layout();
                    let mut sum = Amount::ZERO;
                    for txid in txids.iter() {
                        let (b, e) = l.outbox_of(txid);
                        let rows = tx.get_range(&b, &e, RangeOptions::default()).await?;
                        for (k, v) in &rows {
                            let o = Output::decode(v).map_err(|_| {
                                TxError::Abort(LedgerError::from(Corrupt { what: "outbox" }))
                            })?;
                            sum = sum.checked_add(o.value).ok_or_else(|| {
                                TxError::Abort(LedgerError::from(Corrupt {
                                    what: "outbox total",
                                }))
                            })?;
                            // Row by row: many range clears in one transaction make
                            // every later read check each of them.
                            tx.clear(k)?;
                        }
                    }
                    if !sum.is_zero() {
                        tx.atomic_add(l.settled_out_total(), sum.fen() as i64)?;
                    }
                    Ok::<_, TxError<LedgerError>>(sum)
                })
            })
            .await?;
        Ok(cleared)
    }
}
