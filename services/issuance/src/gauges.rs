//! The central bank's figures as Prometheus metrics: the audit ([`CentralBank::audit`]) runs
//! every `audit_interval_ms`, and its last result is what a scrape sees — supply, each
//! ledger's outstanding value and checkpoint freshness, the value settled in and out of each
//! ledger, and whether everything balanced. Amounts are in yuan (fen / 100).
//!
//! Nothing derived from an audit is exposed before the first audit has run, so a scrape
//! right after a restart never sees the cumulative totals drop to zero (which Prometheus
//! would read as a counter reset and then a burst).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cbdc_core::Amount;
use cbdc_runtime::shutdown::Shutdown;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, CounterVec, Gauge, GaugeVec, IntCounter, Opts};

use crate::bank::{AuditReport, CentralBank};

/// The audit-derived metrics.
#[derive(Clone)]
pub struct AuditMetrics {
    inner: Arc<Inner>,
    /// Audits that could not run (store errors): always exposed.
    pub errors: IntCounter,
}

struct Inner {
    ready: AtomicBool,
    issued: Counter,
    redeemed: Counter,
    outstanding: Gauge,
    balanced: Gauge,
    ran_at: Gauge,
    ledger_outstanding: GaugeVec,
    ledger_reported: GaugeVec,
    ledger_in_flight: GaugeVec,
    ledger_balanced: GaugeVec,
    received: CounterVec,
    sent: CounterVec,
    checkpoint_at: GaugeVec,
    checkpoint_size: GaugeVec,
}

fn yuan(a: Amount) -> f64 {
    a.fen() as f64 / 100.0
}

/// Raises a counter that mirrors a total which only grows to `to`.
fn raise(c: &prometheus::Counter, to: f64) {
    let delta = to - c.get();
    if delta > 0.0 {
        c.inc_by(delta);
    }
}

impl AuditMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<AuditMetrics> {
        let ledger = &["ledger"];
        let inner = Inner {
            ready: AtomicBool::new(false),
            issued: Counter::new(
                "issued_yuan_total",
                "Value issued by the central bank (yuan)",
            )?,
            redeemed: Counter::new(
                "redeemed_yuan_total",
                "Value redeemed back to the central bank (yuan)",
            )?,
            outstanding: Gauge::new(
                "outstanding_yuan",
                "Money in circulation: issued − redeemed (yuan)",
            )?,
            balanced: Gauge::new(
                "audit_balanced",
                "1 when the last audit balanced every ledger's checkpoint with the books, else 0",
            )?,
            ran_at: Gauge::new(
                "audit_last_run_timestamp_seconds",
                "When the last audit ran (Unix seconds)",
            )?,
            ledger_outstanding: GaugeVec::new(
                Opts::new(
                    "ledger_outstanding_yuan",
                    "Value the central bank's books hold at a ledger: settled in − settled out (yuan)",
                ),
                ledger,
            )?,
            ledger_reported: GaugeVec::new(
                Opts::new(
                    "ledger_reported_yuan",
                    "Value a ledger's latest accepted checkpoint holds: its unspent outputs and outbox (yuan)",
                ),
                ledger,
            )?,
            ledger_in_flight: GaugeVec::new(
                Opts::new(
                    "ledger_in_flight_yuan",
                    "Value settled toward a ledger that its latest checkpoint does not count yet (yuan)",
                ),
                ledger,
            )?,
            ledger_balanced: GaugeVec::new(
                Opts::new(
                    "ledger_balanced",
                    "1 when the ledger's checkpoint balanced with the books at the last audit",
                ),
                ledger,
            )?,
            received: CounterVec::new(
                Opts::new(
                    "ledger_received_yuan_total",
                    "Value settled or issued toward a ledger, less what it refused (yuan)",
                ),
                ledger,
            )?,
            sent: CounterVec::new(
                Opts::new(
                    "ledger_sent_yuan_total",
                    "Value settled out of a ledger: to other ledgers or redeemed (yuan)",
                ),
                ledger,
            )?,
            checkpoint_at: GaugeVec::new(
                Opts::new(
                    "checkpoint_timestamp_seconds",
                    "When the ledger signed its latest accepted checkpoint (Unix seconds)",
                ),
                ledger,
            )?,
            checkpoint_size: GaugeVec::new(
                Opts::new(
                    "checkpoint_log_entries",
                    "Entries in the ledger's audit log at its latest accepted checkpoint",
                ),
                ledger,
            )?,
        };
        let errors = IntCounter::new("audit_errors_total", "Audits that could not run")?;
        registry.register(Box::new(errors.clone()))?;
        let metrics = AuditMetrics {
            inner: Arc::new(inner),
            errors,
        };
        registry.register(Box::new(metrics.clone()))?;
        Ok(metrics)
    }

    /// Shows `report`, audited at `now_ms`.
    pub fn show(&self, report: &AuditReport, now_ms: u64) {
        let m = &self.inner;
        raise(&m.issued, yuan(report.issued));
        raise(&m.redeemed, yuan(report.redeemed));
        m.outstanding.set(yuan(report.outstanding));
        m.balanced.set(f64::from(u8::from(report.balanced)));
        m.ran_at.set(now_ms as f64 / 1000.0);
        for l in &report.ledgers {
            let id = l.ledger.0.to_string();
            let id = &[id.as_str()];
            m.ledger_outstanding
                .with_label_values(id)
                .set(yuan(l.books));
            m.ledger_reported
                .with_label_values(id)
                .set(yuan(l.reported));
            m.ledger_in_flight
                .with_label_values(id)
                .set(yuan(l.in_flight_in));
            m.ledger_balanced
                .with_label_values(id)
                .set(f64::from(u8::from(l.balanced)));
            raise(&m.received.with_label_values(id), yuan(l.received));
            raise(&m.sent.with_label_values(id), yuan(l.sent));
            if l.checkpoint_timestamp_ms > 0 {
                m.checkpoint_at
                    .with_label_values(id)
                    .set(l.checkpoint_timestamp_ms as f64 / 1000.0);
            }
            m.checkpoint_size
                .with_label_values(id)
                .set(l.checkpoint_size as f64);
        }
        m.ready.store(true, Ordering::Release);
    }

    /// Audits every `interval` until `shutdown`, showing each result.
    pub async fn run(self, bank: CentralBank, interval: Duration, shutdown: Shutdown) {
        loop {
            match bank.audit().await {
                Ok(report) => self.show(&report, bank.now_ms()),
                Err(e) => {
                    self.errors.inc();
                    tracing::warn!(%e, "the periodic audit could not run");
                }
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    fn collectors(&self) -> [&dyn Collector; 13] {
        let m = &self.inner;
        [
            &m.issued,
            &m.redeemed,
            &m.outstanding,
            &m.balanced,
            &m.ran_at,
            &m.ledger_outstanding,
            &m.ledger_reported,
            &m.ledger_in_flight,
            &m.ledger_balanced,
            &m.received,
            &m.sent,
            &m.checkpoint_at,
            &m.checkpoint_size,
        ]
    }
}

impl Collector for AuditMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.collectors()
            .into_iter()
            .flat_map(|c| c.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if !self.inner.ready.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.collectors()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::LedgerAudit;
    use cbdc_core::LedgerId;

    /// The value of `name` (with `ledger="…"` if given) as a scrape would read it.
    fn value(registry: &prometheus::Registry, name: &str, ledger: Option<&str>) -> Option<f64> {
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let series = match ledger {
            Some(l) => format!("{name}{{ledger=\"{l}\"}} "),
            None => format!("{name} "),
        };
        String::from_utf8(text)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
    }

    fn amount(s: &str) -> Amount {
        Amount::parse(s).unwrap()
    }

    fn report(issued: &str, received: &str, balanced: bool) -> AuditReport {
        AuditReport {
            issued: amount(issued),
            redeemed: amount("2.50"),
            outstanding: amount(issued).checked_sub(amount("2.50")).unwrap(),
            ledgers: vec![LedgerAudit {
                ledger: LedgerId(7),
                books: amount("90.00"),
                reported: amount("89.00"),
                in_flight_in: amount("1.00"),
                unacknowledged_out: Amount::ZERO,
                balanced,
                received: amount(received),
                sent: amount("10.00"),
                checkpoint_size: 42,
                checkpoint_timestamp_ms: 1_700_000_000_500,
                fault: None,
            }],
            balanced,
        }
    }

    #[test]
    fn nothing_before_the_first_audit_then_its_figures() {
        let registry = prometheus::Registry::new();
        let m = AuditMetrics::register(&registry).unwrap();
        assert_eq!(value(&registry, "outstanding_yuan", None), None);
        assert_eq!(
            value(&registry, "ledger_received_yuan_total", Some("7")),
            None
        );
        assert_eq!(value(&registry, "audit_errors_total", None), Some(0.0));

        m.show(&report("100.00", "100.00", true), 1_700_000_001_000);
        let v = |n, l| value(&registry, n, l).unwrap();
        assert_eq!(v("issued_yuan_total", None), 100.0);
        assert_eq!(v("redeemed_yuan_total", None), 2.5);
        assert_eq!(v("outstanding_yuan", None), 97.5);
        assert_eq!(v("audit_balanced", None), 1.0);
        assert_eq!(v("audit_last_run_timestamp_seconds", None), 1_700_000_001.0);
        assert_eq!(v("ledger_outstanding_yuan", Some("7")), 90.0);
        assert_eq!(v("ledger_reported_yuan", Some("7")), 89.0);
        assert_eq!(v("ledger_in_flight_yuan", Some("7")), 1.0);
        assert_eq!(v("ledger_balanced", Some("7")), 1.0);
        assert_eq!(v("ledger_received_yuan_total", Some("7")), 100.0);
        assert_eq!(v("ledger_sent_yuan_total", Some("7")), 10.0);
        assert_eq!(
            v("checkpoint_timestamp_seconds", Some("7")),
            1_700_000_000.5
        );
        assert_eq!(v("checkpoint_log_entries", Some("7")), 42.0);

        // Totals follow the books; an unbalanced audit shows as 0.
        m.show(&report("130.25", "130.25", false), 1_700_000_002_000);
        assert_eq!(v("issued_yuan_total", None), 130.25);
        assert_eq!(v("ledger_received_yuan_total", Some("7")), 130.25);
        assert_eq!(v("audit_balanced", None), 0.0);
        assert_eq!(v("ledger_balanced", Some("7")), 0.0);
    }
}
