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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cbdc_core::messages::{BankRequest, Signed};
use cbdc_core::{Amount, Output, Txid};
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_runtime::error::rpc_failure;
use cbdc_runtime::retry::{Failure, Item, RetryMetrics, RetryOptions, RetryQueue, Verdict};
use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::{RangeOptions, TxError};
use futures::future::BoxFuture;
use prost::Message;
use tonic::Status;

use crate::ledger::{Ledger, ServiceError};
use crate::records::{Corrupt, TransferRecord};

/// Settled (`None`), refused for good (`Some(reason)`: reversed here), or failed.
type SettleOutcome = Result<Option<String>, Failure>;

/// Outbox rows read per step, at most.
pub const OUTBOX_SCAN_MAX: usize = 4096;
/// Transfers per `SettleBatch` request, at most.
pub const SETTLE_BATCH: usize = 1024;
/// Bytes of transfers per `SettleBatch` request, at most: under the 4 MiB a gRPC server
/// decodes by default, with room for the rest of the request.
pub const SETTLE_BYTES_MAX: usize = 3 << 20;
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
    /// The central bank's registry (a link that cannot say leaves the destination check
    /// to the central bank, and refused moves are reversed).
    fn list_operators(
        &self,
        _request: v1::ListOperatorsRequest,
    ) -> BoxFuture<'static, Result<v1::ListOperatorsResponse, Status>> {
        Box::pin(async { Err(Status::unimplemented("no registry through this link")) })
    }
    /// Where settled transfers are (a link that cannot say leaves them SETTLING).
    fn settlement_status(
        &self,
        _request: v1::GetSettlementStatusRequest,
    ) -> BoxFuture<'static, Result<v1::GetSettlementStatusResponse, Status>> {
        Box::pin(async {
            Err(Status::unimplemented(
                "no settlement status through this link",
            ))
        })
    }
}

/// [`CentralBankLink`] over gRPC.
#[derive(Clone)]
pub struct GrpcCentralBank {
    client: v1::issuance_service_client::IssuanceServiceClient<tonic::transport::Channel>,
}

impl GrpcCentralBank {
    /// Connects lazily (the first call connects; a down central bank is retried later).
    /// With `tls`, the central bank must present its certificate (`central-bank`) and this
    /// ledger presents its own.
    pub fn new(
        endpoint: &str,
        tls: Option<&cbdc_runtime::tls::Tls>,
    ) -> Result<GrpcCentralBank, tonic::transport::Error> {
        let mut e = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        if let Some(tls) = tls {
            e = e.tls_config(tls.client(cbdc_runtime::tls::CENTRAL_BANK_NAME))?;
        }
        let channel = e.connect_lazy();
        Ok(GrpcCentralBank {
            client: v1::issuance_service_client::IssuanceServiceClient::new(channel),
        })
    }
}

impl CentralBankLink for GrpcCentralBank {
    fn settlement_status(
        &self,
        request: v1::GetSettlementStatusRequest,
    ) -> BoxFuture<'static, Result<v1::GetSettlementStatusResponse, Status>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            client
                .get_settlement_status(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    fn list_operators(
        &self,
        request: v1::ListOperatorsRequest,
    ) -> BoxFuture<'static, Result<v1::ListOperatorsResponse, Status>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            client
                .list_operators(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

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
    /// Transfers the central bank refused for good, credited back to their payers.
    pub reversed: usize,
    /// Attempts that failed (retried later, or dead letters).
    pub failed: usize,
    /// Transfers waiting for their backoff to pass.
    pub waiting: usize,
    /// Transfers the central bank refused for good, not retried.
    pub dead: usize,
}

/// Delivers a ledger's outbox and checkpoints to the central bank.
pub struct OutboxWorker {
    ledger: Ledger,
    link: Arc<dyn CentralBankLink>,
    queue: RetryQueue<Txid>,
    metrics: RetryMetrics,
    /// The checkpoint size the central bank holds, once known.
    known_size: Option<u64>,
    concurrency: usize,
    /// When the registry was last read from the central bank (ledger clock, ms).
    registry_read_ms: Option<u64>,
}

/// How often the outbox worker reads the central bank's registry for the destination check.
pub const REGISTRY_REFRESH_MS: u64 = 10_000;

impl OutboxWorker {
    pub fn new(ledger: Ledger, link: Arc<dyn CentralBankLink>) -> OutboxWorker {
        let metrics = ledger.metrics().outbox.clone();
        ledger.set_registry_source(Arc::clone(&link));
        OutboxWorker {
            ledger,
            link,
            queue: RetryQueue::new(RetryOptions {
                chunk_items_max: SETTLE_BATCH,
                chunk_bytes_max: SETTLE_BYTES_MAX,
                ..RetryOptions::default()
            }),
            metrics,
            known_size: None,
            concurrency: SETTLE_CONCURRENCY,
            registry_read_ms: None,
        }
    }

    /// Settlements in flight at once (at least 1). A simulation uses 1, so that the order of
    /// messages follows from its seed alone.
    pub fn with_concurrency(mut self, n: usize) -> OutboxWorker {
        self.concurrency = n.max(1);
        self
    }

    /// The next page of the outbox (at most [`OUTBOX_SCAN_MAX`] rows, in rotation), one
    /// item per transfer, read in one snapshot. Transfers due now carry their signed
    /// transfer (read from its record), the others nothing: the queue holds them back.
    async fn page(
        &mut self,
        now_ms: u64,
    ) -> Result<(Vec<Item<Txid, Option<v1::SignedTransfer>>>, Option<Vec<u8>>), ServiceError> {
        let l = self.ledger.layout();
        let (b, e) = l.outbox_all();
        let from = self.queue.next_page();
        let mut tx = self.ledger.db().create_transaction()?;
        let rows = tx
            .get_range(
                from.as_deref().unwrap_or(&b),
                &e,
                RangeOptions::snapshot(OUTBOX_SCAN_MAX),
            )
            .await?;
        let next = match rows.last() {
            Some((k, _)) if rows.len() == OUTBOX_SCAN_MAX => {
                let mut next = k.clone();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        let mut txids: BTreeSet<Txid> = BTreeSet::new();
        for (k, _) in &rows {
            let o = l.outbox_outpoint(k).ok_or(Corrupt { what: "outbox key" })?;
            txids.insert(o.txid);
        }
        let mut items = Vec::with_capacity(txids.len());
        for txid in txids {
            if !self.queue.due(&txid, now_ms) {
                items.push(Item {
                    key: txid,
                    group: 0,
                    bytes: 0,
                    value: None,
                });
                continue;
            }
            let record = tx.get_snapshot(&l.transfer(&txid)).await?.ok_or(Corrupt {
                what: "outbox transfer",
            })?;
            let record = TransferRecord::decode(&record)?;
            let signed = convert::to_signed_parts(record.body, &record.witnesses);
            items.push(Item {
                key: txid,
                group: 0,
                bytes: signed.encoded_len(),
                value: Some(signed),
            });
        }
        Ok((items, next))
    }

    /// Hands every due outbox transfer of the next page to the central bank once, in
    /// `SettleBatch` requests bounded by [`SETTLE_BATCH`] transfers and
    /// [`SETTLE_BYTES_MAX`] bytes, `concurrency` in flight (see
    /// [`OutboxWorker::with_concurrency`]), then clears every acknowledged one in one store
    /// transaction. A transfer whose request failed waits for its backoff; one the central
    /// bank refused as invalid is a dead letter.
    pub async fn step(&mut self) -> Result<OutboxStep, ServiceError> {
        use futures::StreamExt;
        let now = self.ledger.now_ms();
        if self
            .registry_read_ms
            .is_none_or(|t| now.saturating_sub(t) >= REGISTRY_REFRESH_MS)
        {
            self.registry_read_ms = Some(now);
            self.ledger.refresh_registry().await;
        }
        let (page, next) = self.page(now).await?;
        let plan = self.queue.plan(page, next, now);
        let mut step = OutboxStep {
            waiting: plan.waiting,
            dead: plan.dead,
            ..OutboxStep::default()
        };
        let this = &*self;
        let outcomes: Vec<Vec<(Txid, SettleOutcome)>> = futures::stream::iter(plan.chunks)
            .map(|chunk| async move { this.settle_chunk(chunk).await })
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut acknowledged = Vec::new();
        for (txid, outcome) in outcomes.into_iter().flatten() {
            match outcome {
                Ok(None) => acknowledged.push(txid),
                Ok(Some(reason)) => {
                    // Refused for good: the value goes back to the payer, here and now.
                    tracing::warn!(%txid, %reason, "settlement refused for good; reversing");
                    self.ledger.reverse_outbox(txid, &reason).await?;
                    self.queue.succeeded(&txid);
                    step.reversed += 1;
                }
                Err(failure) => {
                    step.failed += 1;
                    self.ledger.metrics().central_bank_errors.inc();
                    match self.queue.failed(txid, failure.clone(), now) {
                        Verdict::Retry { failures, wait } => {
                            tracing::warn!(%txid, ?failure, failures, ?wait, "settlement failed; retrying later")
                        }
                        Verdict::Dead => {
                            tracing::error!(%txid, ?failure, "settlement refused for good; not retried")
                        }
                    }
                }
            }
        }
        if !acknowledged.is_empty() {
            self.ledger.clear_outbox(&acknowledged).await?;
            for txid in &acknowledged {
                self.queue.succeeded(txid);
            }
            step.settled = acknowledged.len();
            self.ledger
                .metrics()
                .outbox_settled
                .inc_by(acknowledged.len() as u64);
        }
        self.metrics.set(self.queue.stats(now));
        Ok(step)
    }

    /// Hands one chunk to the central bank in one request, signed once by the operator;
    /// each transfer's outcome.
    async fn settle_chunk(
        &self,
        chunk: Vec<Item<Txid, Option<v1::SignedTransfer>>>,
    ) -> Vec<(Txid, SettleOutcome)> {
        let txids: Vec<Txid> = chunk.iter().map(|i| i.key).collect();
        let ledger = &self.ledger;
        let request = v1::SettleBatchRequest {
            from_ledger_id: ledger.id().0,
            operator_signature: BankRequest::SettleBatch {
                network: &ledger.settings().network,
                from: ledger.id(),
                txids: &txids,
            }
            .sign(ledger.operator())
            .to_vec(),
            transfers: chunk.into_iter().filter_map(|i| i.value).collect(),
        };
        let all = |f: Failure| txids.iter().map(|t| (*t, Err(f.clone()))).collect();
        if request.transfers.len() != txids.len() {
            return all(Failure::Retryable("a planned transfer was not read".into()));
        }
        match self.link.settle_batch(request).await {
            // A refused request cannot be pinned on one transfer: all wait and try again.
            Err(s) => all(Failure::Retryable(format!(
                "central bank: {}: {}",
                s.code(),
                s.message()
            ))),
            Ok(r) if r.results.len() != txids.len() => all(Failure::Retryable(format!(
                "central bank: {} results for {} transfers",
                r.results.len(),
                txids.len()
            ))),
            Ok(r) => txids
                .iter()
                .zip(r.results)
                .map(|(t, r)| {
                    let outcome = match r.outcome {
                        Some(v1::settle_result::Outcome::Settled(_)) => Ok(None),
                        Some(v1::settle_result::Outcome::Refused(f)) => Ok(Some(f.message)),
                        Some(v1::settle_result::Outcome::Failed(f)) => {
                            Err(rpc_failure("central bank", &convert::failure(f)))
                        }
                        None => Err(Failure::Retryable("central bank: empty result".into())),
                    };
                    (*t, outcome)
                })
                .collect(),
        }
    }

    /// Submits the latest checkpoint, with a consistency proof from the size the central
    /// bank holds. Returns whether the central bank accepted it (false: nothing to send).
    pub async fn push_checkpoint(&mut self) -> Result<bool, ServiceError> {
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
                    return Err(ServiceError::Unavailable(format!(
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
        Err(ServiceError::Unavailable(
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
    pub async fn clear_outbox(&self, txids: &[Txid]) -> Result<Amount, ServiceError> {
        let txids: Arc<Vec<Txid>> = Arc::new(txids.to_vec());
        let cleared = self
            .transact(move |me, tx| {
                let txids = Arc::clone(&txids);
                Box::pin(async move {
                    let l = me.layout();
                    let mut sum = Amount::ZERO;
                    for txid in txids.iter() {
                        let (b, e) = l.outbox_of(txid);
                        let rows = tx.get_range(&b, &e, RangeOptions::default()).await?;
                        for (k, v) in &rows {
                            let o = Output::decode(v).map_err(|_| {
                                TxError::Abort(ServiceError::from(Corrupt { what: "outbox" }))
                            })?;
                            sum = sum.checked_add(o.value).ok_or_else(|| {
                                TxError::Abort(ServiceError::from(Corrupt {
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
                        tx.atomic_add(l.outbox_total(), -(sum.fen() as i64))?;
                    }
                    Ok::<_, TxError<ServiceError>>(sum)
                })
            })
            .await?;
        Ok(cleared)
    }
}
