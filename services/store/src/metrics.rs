//! The embedded store's counters as Prometheus metrics, read when scraped: commits,
//! conflicts, durable batches, journal fsyncs, keys written, the read cache's hits and
//! misses and the memory families' snapshots (the FoundationDB backend
//! exports none: its own status reports them). Whether the store stopped after a failed
//! write is `store_failed`, set by the service's health watch.

use prometheus::IntCounter;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use crate::Database;

/// Collects `store_*` metrics from a database at every scrape.
pub struct StoreCollector {
    db: Database,
    commits: IntCounter,
    conflicts: IntCounter,
    batches: IntCounter,
    fsyncs: IntCounter,
    rows: IntCounter,
    bytes: IntCounter,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    memory_snapshots: IntCounter,
    lock: std::sync::Mutex<()>,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a valid metric")
}

impl StoreCollector {
    pub fn new(db: Database) -> StoreCollector {
        StoreCollector {
            db,
            commits: counter("store_commits_total", "Store transactions committed"),
            conflicts: counter(
                "store_conflicts_total",
                "Store transactions refused for a conflict",
            ),
            batches: counter(
                "store_batches_total",
                "Durable batches written (group commits)",
            ),
            fsyncs: counter("store_fsyncs_total", "Journal fsyncs"),
            rows: counter("store_rows_written_total", "Keys written to storage"),
            bytes: counter(
                "store_written_bytes_total",
                "Bytes of the keys and values written to storage",
            ),
            cache_hits: counter(
                "store_cache_hits_total",
                "Point reads answered by the read cache",
            ),
            cache_misses: counter("store_cache_misses_total", "Point reads that read storage"),
            memory_snapshots: counter(
                "store_memory_snapshots_total",
                "Snapshots of the memory-resident key families written",
            ),
            lock: std::sync::Mutex::new(()),
        }
    }

    fn counters(&self) -> [&IntCounter; 9] {
        [
            &self.commits,
            &self.conflicts,
            &self.batches,
            &self.fsyncs,
            &self.rows,
            &self.bytes,
            &self.cache_hits,
            &self.cache_misses,
            &self.memory_snapshots,
        ]
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.counters().iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(s) = self.db.stats() else {
            return Vec::new();
        };
        let _one_scrape_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let values = [
            s.commits,
            s.conflicts,
            s.batches,
            s.fsyncs,
            s.rows,
            s.bytes,
            s.cache_hits,
            s.cache_misses,
            s.memory_snapshots,
        ];
        let mut families = Vec::new();
        for (c, v) in self.counters().into_iter().zip(values) {
            c.reset();
            c.inc_by(v);
            families.extend(c.collect());
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_reports_the_commits_and_fsyncs_made() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_embedded(dir.path(), crate::EmbeddedOptions::default()).unwrap();
        let registry = prometheus::Registry::new_custom(Some("t".into()), None).unwrap();
        let collector = StoreCollector::new(db.clone());
        // The descriptions name every metric, so a registry refuses another collector of
        // the same names (as it would a service registering `store_*` twice).
        let names: Vec<String> = collector.desc().iter().map(|d| d.fq_name.clone()).collect();
        assert_eq!(
            names,
            [
                "store_commits_total",
                "store_conflicts_total",
                "store_batches_total",
                "store_fsyncs_total",
                "store_rows_written_total",
                "store_written_bytes_total",
                "store_cache_hits_total",
                "store_cache_misses_total",
                "store_memory_snapshots_total"
            ]
        );
        registry.register(Box::new(collector)).unwrap();
        assert!(
            registry
                .register(Box::new(StoreCollector::new(db.clone())))
                .is_err()
        );
        for i in 0..3u8 {
            let written: Result<(), crate::TxError<()>> = db
                .run(|tx| {
                    Box::pin(async move {
                        tx.set([i], b"v")?;
                        Ok(())
                    })
                })
                .await;
            written.unwrap();
        }
        let value = |name: &str| {
            registry
                .gather()
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.get_metric()[0].get_counter().get_value())
        };
        assert_eq!(value("t_store_commits_total"), Some(3.0));
        assert_eq!(value("t_store_fsyncs_total"), Some(3.0));
        assert_eq!(value("t_store_rows_written_total"), Some(3.0));
        // Three one-byte keys, each with a one-byte value.
        assert_eq!(value("t_store_written_bytes_total"), Some(6.0));
        // Read again, not added again.
        assert_eq!(value("t_store_commits_total"), Some(3.0));
    }
}
