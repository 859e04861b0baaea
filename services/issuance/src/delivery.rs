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
use cbdc_runtime::backoff::Backoffs;
use cbdc_runtime::shutdown::Shutdown;
use futures::future::BoxFuture;
use tonic::Status;

use crate::bank::{CentralBank, IssuanceError, Queued};

/// Retry schedules kept, at most, before those of deliveries not in the current page are
/// dropped.
pub const BACKOFF_ENTRIES_MAX: usize = 65_536;
/// Settlements per `DeliverInboundBatch` request, at most.
pub const DELIVER_BATCH: usize = 1024;
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

/// [`LedgerLink`] over gRPC: one lazily connected channel per endpoint.
#[derive(Default)]
pub struct GrpcLedgers {
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

/// Endpoints the gRPC link keeps channels to, at most (one per registered bank).
pub const CHANNELS_MAX: usize = 10_000;

impl LedgerLink for GrpcLedgers {
    fn deliver_batch(
        &self,
        _ledger: LedgerId,
        endpoint: &str,
        request: v1::DeliverInboundBatchRequest,
    ) -> BoxFuture<'static, Result<v1::DeliverInboundBatchResponse, Status>> {
        let channel = {
            let mut channels = self.channels.lock().expect("channel map");
            match channels.get(endpoint) {
                Some(c) => Ok(c.clone()),
                None => tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .map(|e| {
                        e.connect_timeout(Duration::from_secs(5))
                            .timeout(Duration::from_secs(10))
                            .connect_lazy()
                    })
                    .inspect(|c| {
                        if channels.len() >= CHANNELS_MAX {
                            channels.clear();
                        }
                        channels.insert(endpoint.to_string(), c.clone());
                    })
                    .map_err(|e| Status::invalid_argument(format!("endpoint {endpoint}: {e}"))),
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
type Outcome = ((LedgerId, Txid), Result<(), String>);

/// What one delivery step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStep {
    pub delivered: usize,
    pub failed: usize,
    pub waiting: usize,
}

/// Delivers the central bank's queued settlements.
pub struct DeliveryWorker {
    bank: CentralBank,
    link: Arc<dyn LedgerLink>,
    backoff: Backoffs<(LedgerId, Txid)>,
    metrics: Option<DeliveryMetrics>,
    concurrency: usize,
    /// Where the next queue page starts, after a full page.
    resume: Option<Vec<u8>>,
}

#[derive(Clone)]
struct DeliveryMetrics {
    delivered: prometheus::IntCounter,
    failures: prometheus::IntCounter,
    queued: prometheus::IntGauge,
}

impl DeliveryWorker {
    /// Deliveries in flight at once (at least 1). A simulation uses 1, so that the order of
    /// messages follows from its seed alone.
    pub fn with_concurrency(mut self, n: usize) -> DeliveryWorker {
        self.concurrency = n.max(1);
        self
    }

    /// Registers the worker's metrics (deliveries, failures, queue length) in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> DeliveryWorker {
        let m = DeliveryMetrics {
            delivered: prometheus::IntCounter::new(
                "deliveries_total",
                "Settlements delivered to destination ledgers",
            )
            .expect("metric"),
            failures: prometheus::IntCounter::new(
                "delivery_failures_total",
                "Failed delivery attempts (retried)",
            )
            .expect("metric"),
            queued: prometheus::IntGauge::new(
                "delivery_queue",
                "Settlements waiting for delivery (first page)",
            )
            .expect("metric"),
        };
        for c in [
            Box::new(m.delivered.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.failures.clone()),
            Box::new(m.queued.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        self.metrics = Some(m);
        self
    }

    pub fn new(bank: CentralBank, link: Arc<dyn LedgerLink>) -> DeliveryWorker {
        DeliveryWorker {
            bank,
            link,
            backoff: Backoffs::default(),
            metrics: None,
            concurrency: DELIVERY_CONCURRENCY,
            resume: None,
        }
    }

    /// Tries every due queued settlement once, up to `concurrency` at a time (see
    /// [`DeliveryWorker::with_concurrency`]), then removes every delivered one from the queue
    /// in one store transaction.
    pub async fn step(&mut self) -> Result<DeliveryStep, IssuanceError> {
        use futures::StreamExt;
        // Page through the whole queue, so deliveries waiting for their backoff at the front
        // never hide the ones behind them.
        let from = self.resume.take();
        let whole = from.is_none();
        let (queued, next) = self.bank.queued(from.as_deref()).await?;
        let whole = whole && next.is_none();
        self.resume = next;
        if whole || self.backoff.len() > BACKOFF_ENTRIES_MAX {
            let keys: std::collections::HashSet<(LedgerId, Txid)> =
                queued.iter().map(|q| (q.ledger, q.txid)).collect();
            self.backoff.retain(|k| keys.contains(k));
        }
        if let Some(m) = &self.metrics {
            m.queued.set(queued.len() as i64);
        }
        let now = self.bank.now_ms();
        let mut step = DeliveryStep::default();
        let mut endpoints: HashMap<LedgerId, Option<String>> = HashMap::new();
        let mut due = Vec::new();
        for q in queued {
            if !self.backoff.due(&(q.ledger, q.txid), now) {
                step.waiting += 1;
                continue;
            }
            let endpoint = match endpoints.get(&q.ledger) {
                Some(e) => e.clone(),
                None => {
                    let e = self.bank.operator(q.ledger).await?.map(|o| o.endpoint);
                    endpoints.insert(q.ledger, e.clone());
                    e
                }
            };
            due.push((q, endpoint));
        }
        // Batches per destination ledger, in queue order.
        let mut batches: Vec<(LedgerId, Option<String>, Vec<Queued>)> = Vec::new();
        for (q, endpoint) in due {
            match batches.last_mut() {
                Some((l, _, items)) if *l == q.ledger && items.len() < DELIVER_BATCH => {
                    items.push(q)
                }
                _ => batches.push((q.ledger, endpoint, vec![q])),
            }
        }
        let link = &self.link;
        let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(batches)
            .map(|(ledger, endpoint, items)| async move {
                let keys: Vec<(LedgerId, Txid)> =
                    items.iter().map(|q| (q.ledger, q.txid)).collect();
                let all = |e: String| keys.iter().map(|k| (*k, Err(e.clone()))).collect();
                let Some(endpoint) = endpoint else {
                    return all(format!("ledger {} is not registered", ledger.0));
                };
                let request = v1::DeliverInboundBatchRequest {
                    settlements: items.into_iter().map(|q| q.settlement).collect(),
                };
                match link.deliver_batch(ledger, &endpoint, request).await {
                    Err(s) => all(format!("{}: {}", s.code(), s.message())),
                    Ok(r) if r.results.len() != keys.len() => all(format!(
                        "{} results for {} settlements",
                        r.results.len(),
                        keys.len()
                    )),
                    Ok(r) => keys
                        .iter()
                        .zip(r.results)
                        .map(|(k, r)| {
                            let outcome = match r.outcome {
                                Some(v1::deliver_inbound_result::Outcome::Delivered(_)) => Ok(()),
                                Some(v1::deliver_inbound_result::Outcome::Failed(f)) => {
                                    Err(format!("{:?}: {}", tonic::Code::from(f.code), f.message))
                                }
                                None => Err("empty result".into()),
                            };
                            (*k, outcome)
                        })
                        .collect(),
                }
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        let mut delivered = Vec::new();
        for (key, outcome) in outcomes {
            match outcome {
                Ok(()) => delivered.push(key),
                Err(e) => {
                    step.failed += 1;
                    if let Some(m) = &self.metrics {
                        m.failures.inc();
                    }
                    let (failures, wait) = self.backoff.failed(key, now);
                    tracing::warn!(ledger = key.0.0, txid = %key.1, error = %e, failures, ?wait, "delivery failed; retrying later");
                }
            }
        }
        if !delivered.is_empty() {
            self.bank.delivered(&delivered).await?;
            for key in &delivered {
                self.backoff.succeeded(key);
            }
            step.delivered = delivered.len();
            if let Some(m) = &self.metrics {
                m.delivered.inc_by(delivered.len() as u64);
            }
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
