//! The ledger's Prometheus metrics, in their own registry (served at `/metrics`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

#[derive(Clone)]
pub struct LedgerMetrics {
    pub registry: Registry,
    /// Transfers committed (first time; replays are not counted).
    pub committed: IntCounter,
    /// Transfers refused, by `Rejected.code`.
    pub rejected: IntCounterVec,
    /// Submission latency, by RPC.
    pub latency: HistogramVec,
    /// Transfers per signature-verification batch.
    pub verify_batch: Histogram,
    /// Transfers per `SubmitTransfers` request.
    pub request_batch: Histogram,
    /// Transfers per store transaction of the committer stage.
    pub commit_group: Histogram,
    /// Store transactions run again after a conflict or other retryable error.
    pub store_retries: IntCounter,
    /// Outbound transfers the central bank acknowledged.
    pub outbox_settled: IntCounter,
    /// The outbox worker's retry queue.
    pub outbox: cbdc_runtime::retry::RetryMetrics,
    /// Failed attempts to hand outbound transfers or checkpoints to the central bank.
    pub central_bank_errors: IntCounter,
    /// Leaves in the audit log.
    pub audit_log_size: prometheus::IntGauge,
}

impl LedgerMetrics {
    pub fn new(ledger_id: u32) -> LedgerMetrics {
        let registry = Registry::new_custom(
            Some("cbdc_ledger".into()),
            Some([("ledger".to_string(), ledger_id.to_string())].into()),
        )
        .expect("valid registry");
        let committed =
            IntCounter::new("transfers_committed_total", "Transfers committed").expect("metric");
        let rejected = IntCounterVec::new(
            Opts::new("transfers_rejected_total", "Transfers refused, by reason"),
            &["reason"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("submit_latency_seconds", "Submission latency by RPC").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                ],
            ),
            &["rpc"],
        )
        .expect("metric");
        let sizes = vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ];
        let verify_batch = Histogram::with_opts(
            HistogramOpts::new("verify_batch_size", "Transfers per signature batch")
                .buckets(sizes.clone()),
        )
        .expect("metric");
        let request_batch = Histogram::with_opts(
            HistogramOpts::new(
                "request_batch_size",
                "Transfers per SubmitTransfers request",
            )
            .buckets(sizes),
        )
        .expect("metric");
        let commit_group = Histogram::with_opts(
            HistogramOpts::new(
                "commit_group_size",
                "Transfers per grouped store transaction",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("metric");
        let store_retries = IntCounter::new(
            "store_retries_total",
            "Store transactions retried after a conflict or retryable error",
        )
        .expect("metric");
        let outbox_settled = IntCounter::new(
            "outbox_settled_total",
            "Outbound transfers the central bank acknowledged",
        )
        .expect("metric");
        let central_bank_errors = IntCounter::new(
            "central_bank_errors_total",
            "Failed attempts to reach the central bank (settlements and checkpoints)",
        )
        .expect("metric");
        let audit_log_size =
            prometheus::IntGauge::new("audit_log_size", "Leaves in the audit log").expect("metric");
        for m in [
            Box::new(committed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejected.clone()),
            Box::new(latency.clone()),
            Box::new(verify_batch.clone()),
            Box::new(request_batch.clone()),
            Box::new(commit_group.clone()),
            Box::new(store_retries.clone()),
            Box::new(outbox_settled.clone()),
            Box::new(central_bank_errors.clone()),
            Box::new(audit_log_size.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        let outbox =
            cbdc_runtime::retry::RetryMetrics::register(&registry, "outbox", "outbox transfers");
        LedgerMetrics {
            registry,
            committed,
            rejected,
            latency,
            verify_batch,
            request_batch,
            commit_group,
            store_retries,
            outbox_settled,
            outbox,
            central_bank_errors,
            audit_log_size,
        }
    }
}
