//! Delivery of countersigned settlements to the destination ledgers.
//!
//! `Settle` and `Mint` queue one row per destination in the same store transaction that
//! records the move. The [`DeliveryWorker`] calls each destination's `DeliverInbound`, and
//! clears the row once the ledger answered; failures are retried with exponential backoff.
//! `DeliverInbound` is idempotent by txid, so a delivery repeated after a lost answer or a
//! crash applies nothing twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cbdc_core::{LedgerId, Txid};
use cbdc_proto::v1;
use cbdc_runtime::error::rpc_failure;
use cbdc_runtime::retry::{Failure, Item, RetryMetrics, RetryOptions, RetryQueue, Verdict};
use cbdc_runtime::shutdown::Shutdown;
use futures::future::BoxFuture;
use tonic::Status;

use crate::bank::CentralBank;
use crate::service::{settlement_msg, signed_msg};
use cbdc_runtime::ServiceError;

/// Settlements per `DeliverInboundBatch` request, at most.
pub const DELIVER_BATCH: usize = 1024;
/// Bytes of settlements per `DeliverInboundBatch` request, at most: under the 4 MiB a gRPC
/// server decodes by default, with room for the rest of the request.
pub const DELIVER_BYTES_MAX: usize = 3 << 20;
/// `DeliverInboundBatch` requests in flight at once, at most (by default).
pub const DELIVERY_CONCURRENCY: usize = 4;

/// The bank ledgers as the central bank sees them. The gRPC client implements it; a
/// simulation may put a faulty network in between.
pub trait LedgerLink: Send + Sync + 'static {
    fn deliver_batch(
        &self,
        ledger: LedgerId,
        endpoint: &str,
        request: v1::DeliverInboundBatchRequest,
    ) -> BoxFuture<'static, Result<v1::DeliverInboundBatchResponse, Status>>;
}

/// [`LedgerLink`] over gRPC: one lazily connected channel per endpoint. With TLS, ledger
/// `N` must present its certificate (`bank-N`) and the central bank presents its own.
#[derive(Default)]
pub struct GrpcLedgers {
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    tls: Option<cbdc_runtime::tls::Tls>,
}

impl GrpcLedgers {
    pub fn new(tls: Option<cbdc_runtime::tls::Tls>) -> GrpcLedgers {
        GrpcLedgers {
            channels: Mutex::default(),
            tls,
        }
    }
}

/// Endpoints the gRPC link keeps channels to, at most (one per registered bank).
pub const CHANNELS_MAX: usize = 10_000;

impl LedgerLink for GrpcLedgers {
    fn deliver_batch(
        &self,
        ledger: LedgerId,
        endpoint: &str,
        request: v1::DeliverInboundBatchRequest,
    ) -> BoxFuture<'static, Result<v1::DeliverInboundBatchResponse, Status>> {
        let channel = {
            let mut channels = self.channels.lock().expect("channel map");
            match channels.get(endpoint) {
                Some(c) => Ok(c.clone()),
                None => tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .and_then(|e| {
                        let e = e
                            .connect_timeout(Duration::from_secs(5))
                            .timeout(Duration::from_secs(10));
                        match &self.tls {
                            Some(tls) => {
                                e.tls_config(tls.client(&cbdc_runtime::tls::bank_name(ledger.0)))
                            }
                            None => Ok(e),
                        }
                    })
                    .map(|e| e.connect_lazy())
                    .inspect(|c| {
                        if channels.len() >= CHANNELS_MAX {
                            channels.clear();
                        }
                        channels.insert(endpoint.to_string(), c.clone());
                    })
                    .map_err(|e| cbdc_runtime::error::invalid(format!("endpoint {endpoint}: {e}"))),
            }
        };
        Box::pin(async move {
            let mut client = v1::ledger_service_client::LedgerServiceClient::new(channel?)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            client
                .deliver_inbound_batch(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }
}

/// One queued settlement's delivery outcome.
/// Delivered (`None`), refused for good (`Some(reason)`: reversed), or failed.
type Outcome = ((LedgerId, Txid), Result<Option<String>, Failure>);

/// What one delivery step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStep {
    pub delivered: usize,
    pub failed: usize,
    pub waiting: usize,
    /// Settlements a ledger refused for good, not retried.
    pub dead: usize,
    /// Settlements a payee's ledger refused for good, sent back to the payer's as reversals.
    pub reversed: usize,
}

/// Delivers the central bank's queued settlements.
pub struct DeliveryWorker {
    bank: CentralBank,
    link: Arc<dyn LedgerLink>,
    queue: RetryQueue<(LedgerId, Txid)>,
    metrics: Option<DeliveryMetrics>,
    concurrency: usize,
}

#[derive(Clone)]
struct DeliveryMetrics {
    delivered: prometheus::IntCounter,
    failures: prometheus::IntCounter,
    queue: RetryMetrics,
}

impl DeliveryWorker {
    pub fn new(bank: CentralBank, link: Arc<dyn LedgerLink>) -> DeliveryWorker {
        DeliveryWorker {
            bank,
            link,
            queue: RetryQueue::new(RetryOptions {
                chunk_items_max: DELIVER_BATCH,
                chunk_bytes_max: DELIVER_BYTES_MAX,
                ..RetryOptions::default()
            }),
            metrics: None,
            concurrency: DELIVERY_CONCURRENCY,
        }
    }

    /// Deliveries in flight at once (at least 1). A simulation uses 1, so that the order of
    /// messages follows from its seed alone.
    pub fn with_concurrency(mut self, n: usize) -> DeliveryWorker {
        self.concurrency = n.max(1);
        self
    }

    /// Registers the worker's metrics (deliveries, failures, and the retry queue's depth,
    /// schedules, dead letters and oldest failure) in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> DeliveryWorker {
        let delivered = prometheus::IntCounter::new(
            "deliveries_total",
            "Settlements delivered to destination ledgers",
        )
        .expect("metric");
        let failures = prometheus::IntCounter::new(
            "delivery_failures_total",
            "Failed delivery attempts (retried, or dead letters)",
        )
        .expect("metric");
        registry
            .register(Box::new(delivered.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(failures.clone()))
            .expect("unique metric");
        self.metrics = Some(DeliveryMetrics {
            delivered,
            failures,
            queue: RetryMetrics::register(registry, "delivery", "settlements"),
        });
        self
    }

    /// Tries every due queued settlement of the next page once, in requests per destination
    /// bounded by [`DELIVER_BATCH`] settlements and [`DELIVER_BYTES_MAX`] bytes, up to
    /// `concurrency` at a time (see [`DeliveryWorker::with_concurrency`]), then removes every
    /// delivered one from the queue in one store transaction.
    pub async fn step(&mut self) -> Result<DeliveryStep, ServiceError> {
        use futures::StreamExt;
        let from = self.queue.next_page();
        let (queued, next) = self.bank.queued(from.as_deref()).await?;
        let now = self.bank.now_ms();
        let page = queued
            .into_iter()
            .map(|q| Item {
                key: (q.ledger, q.txid),
                group: u64::from(q.ledger.0),
                bytes: q.bytes,
                value: q,
            })
            .collect();
        let plan = self.queue.plan(page, next, now);
        let mut step = DeliveryStep {
            waiting: plan.waiting,
            dead: plan.dead,
            ..DeliveryStep::default()
        };
        let mut endpoints: HashMap<LedgerId, Option<String>> = HashMap::new();
        let mut batches = Vec::with_capacity(plan.chunks.len());
        for chunk in plan.chunks {
            let ledger = chunk[0].value.ledger;
            let endpoint = match endpoints.get(&ledger) {
                Some(e) => e.clone(),
                None => {
                    let e = self.bank.operator(ledger).await?.map(|o| o.endpoint);
                    endpoints.insert(ledger, e.clone());
                    e
                }
            };
            batches.push((ledger, endpoint, chunk));
        }
        let link = &self.link;
        let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(batches)
            .map(|(ledger, endpoint, items)| async move {
                let keys: Vec<(LedgerId, Txid)> = items.iter().map(|i| i.key).collect();
                let all = |f: Failure| keys.iter().map(|k| (*k, Err(f.clone()))).collect();
                let Some(endpoint) = endpoint else {
                    return all(Failure::Retryable(format!(
                        "ledger {} is not registered",
                        ledger.0
                    )));
                };
                let request = v1::DeliverInboundBatchRequest {
                    settlements: items
                        .into_iter()
                        .map(|i| v1::Settlement {
                            reversal_reason: i.value.reversal.clone().unwrap_or_default(),
                            ..settlement_msg(&i.value.settlement, signed_msg(i.value.transfer))
                        })
                        .collect(),
                };
                let peer = format!("ledger {}", ledger.0);
                match link.deliver_batch(ledger, &endpoint, request).await {
                    // A refused request cannot be pinned on one settlement: all retry.
                    Err(s) => all(Failure::Retryable(format!(
                        "{peer}: {}: {}",
                        s.code(),
                        s.message()
                    ))),
                    Ok(r) if r.results.len() != keys.len() => all(Failure::Retryable(format!(
                        "{peer}: {} results for {} settlements",
                        r.results.len(),
                        keys.len()
                    ))),
                    Ok(r) => keys
                        .iter()
                        .zip(r.results)
                        .map(|(k, r)| {
                            let outcome = match r.outcome {
                                Some(v1::deliver_inbound_result::Outcome::Delivered(_)) => Ok(None),
                                Some(v1::deliver_inbound_result::Outcome::Refused(f)) => {
                                    Ok(Some(f.message))
                                }
                                Some(v1::deliver_inbound_result::Outcome::Failed(f)) => {
                                    Err(rpc_failure(&peer, &cbdc_proto::convert::failure(f)))
                                }
                                None => Err(Failure::Retryable(format!("{peer}: empty result"))),
                            };
                            (*k, outcome)
                        })
                        .collect(),
                }
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut delivered = Vec::new();
        for (key, outcome) in outcomes.into_iter().flatten() {
            match outcome {
                Ok(None) => delivered.push(key),
                Ok(Some(reason)) => {
                    // Refused for good by the payee's ledger: back to the payer's.
                    tracing::warn!(ledger = key.0.0, txid = %key.1, %reason, "delivery refused for good; reversing");
                    match self.bank.reverse(key.0, key.1, &reason).await {
                        Ok(_) => {
                            self.queue.succeeded(&key);
                            step.reversed += 1;
                        }
                        Err(e) => {
                            let failure = Failure::Permanent(e.to_string());
                            tracing::error!(ledger = key.0.0, txid = %key.1, %e, "cannot reverse; not retried");
                            let _ = self.queue.failed(key, failure, now);
                        }
                    }
                }
                Err(failure) => {
                    step.failed += 1;
                    if let Some(m) = &self.metrics {
                        m.failures.inc();
                    }
                    match self.queue.failed(key, failure.clone(), now) {
                        Verdict::Retry { failures, wait } => {
                            tracing::warn!(ledger = key.0.0, txid = %key.1, ?failure, failures, ?wait, "delivery failed; retrying later")
                        }
                        Verdict::Dead => {
                            tracing::error!(ledger = key.0.0, txid = %key.1, ?failure, "delivery refused for good; not retried")
                        }
                    }
                }
            }
        }
        if !delivered.is_empty() {
            self.bank.delivered(&delivered).await?;
            for key in &delivered {
                self.queue.succeeded(key);
            }
            step.delivered = delivered.len();
            if let Some(m) = &self.metrics {
                m.delivered.inc_by(delivered.len() as u64);
            }
        }
        if let Some(m) = &self.metrics {
            m.queue.set(self.queue.stats(now));
        }
        Ok(step)
    }

    /// Runs steps until `shutdown`: straight on while there is work, else every `interval`.
    pub async fn run(mut self, interval: Duration, shutdown: Shutdown) {
        loop {
            // Straight on after a step that delivered something: there may be more.
            match self.step().await {
                Ok(s) if s.delivered > 0 && !shutdown.is_triggered() => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "delivery step failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}
