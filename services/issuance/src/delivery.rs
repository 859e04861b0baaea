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
use cbdc_runtime::shutdown::Shutdown;
use futures::future::BoxFuture;
use tonic::Status;

use crate::bank::{CentralBank, IssuanceError};

/// The first retry waits this long; each failure doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts for one delivery.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The bank ledgers as the central bank sees them. The gRPC client implements it; a
/// simulation may put a faulty network in between.
pub trait LedgerLink: Send + Sync + 'static {
    fn deliver(
        &self,
        ledger: LedgerId,
        endpoint: &str,
        request: v1::DeliverInboundRequest,
    ) -> BoxFuture<'static, Result<v1::DeliverInboundResponse, Status>>;
}

/// [`LedgerLink`] over gRPC: one lazily connected channel per endpoint.
#[derive(Default)]
pub struct GrpcLedgers {
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

/// Endpoints the gRPC link keeps channels to, at most (one per registered bank).
pub const CHANNELS_MAX: usize = 10_000;

impl LedgerLink for GrpcLedgers {
    fn deliver(
        &self,
        _ledger: LedgerId,
        endpoint: &str,
        request: v1::DeliverInboundRequest,
    ) -> BoxFuture<'static, Result<v1::DeliverInboundResponse, Status>> {
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
            let mut client = v1::ledger_service_client::LedgerServiceClient::new(channel?);
            client
                .deliver_inbound(request)
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
    backoff: HashMap<(LedgerId, Txid), Backoff>,
    metrics: Option<DeliveryMetrics>,
}

#[derive(Clone)]
struct DeliveryMetrics {
    delivered: prometheus::IntCounter,
    failures: prometheus::IntCounter,
    queued: prometheus::IntGauge,
}

impl DeliveryWorker {
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
            backoff: HashMap::new(),
            metrics: None,
        }
    }

    /// Tries every due queued settlement once.
    pub async fn step(&mut self) -> Result<DeliveryStep, IssuanceError> {
        let queued = self.bank.queued().await?;
        self.backoff
            .retain(|k, _| queued.iter().any(|q| (q.ledger, q.txid) == *k));
        if let Some(m) = &self.metrics {
            m.queued.set(queued.len() as i64);
        }
        let now = self.bank.now_ms();
        let mut step = DeliveryStep::default();
        for q in queued {
            let key = (q.ledger, q.txid);
            if self.backoff.get(&key).is_some_and(|b| b.next_ms > now) {
                step.waiting += 1;
                continue;
            }
            let outcome = match self.bank.operator(q.ledger).await? {
                None => Err(format!("ledger {} is not registered", q.ledger.0)),
                Some(op) => self
                    .link
                    .deliver(
                        q.ledger,
                        &op.endpoint,
                        v1::DeliverInboundRequest {
                            settlement: Some(q.settlement),
                        },
                    )
                    .await
                    .map_err(|s| format!("{}: {}", s.code(), s.message())),
            };
            match outcome {
                Ok(_) => {
                    self.bank.delivered(q.ledger, &q.txid).await?;
                    self.backoff.remove(&key);
                    step.delivered += 1;
                    if let Some(m) = &self.metrics {
                        m.delivered.inc();
                    }
                }
                Err(e) => {
                    step.failed += 1;
                    if let Some(m) = &self.metrics {
                        m.failures.inc();
                    }
                    let b = self.backoff.entry(key).or_insert(Backoff {
                        failures: 0,
                        next_ms: now,
                    });
                    b.failures = b.failures.saturating_add(1);
                    let wait = BACKOFF_BASE
                        .saturating_mul(1u32 << b.failures.min(16).saturating_sub(1))
                        .min(BACKOFF_MAX);
                    b.next_ms = now + wait.as_millis() as u64;
                    tracing::warn!(ledger = q.ledger.0, txid = %q.txid, error = %e, failures = b.failures, "delivery failed; retrying later");
                }
            }
        }
        Ok(step)
    }

    /// Runs steps every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: Shutdown) {
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "delivery step failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}
