//! Embedded-store commit throughput with durability on: small transactions (read 1 key,
//! write 2 keys) at concurrency 1, 64 and 1024. Prints commits/s and fsyncs/s (one per
//! durable batch), medians over runs, and the group-commit gain over concurrency 1.
//!
//! Run: `cargo bench -p cbdc-store --bench commit` (`CBDC_BENCH_SECONDS`, default 3 per run;
//! `CBDC_BENCH_CONCURRENCY`, default `1,64,1024`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbdc_store::keys::pack;
use cbdc_store::{Database, EmbeddedOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: i64 = 100_000;
const RUNS: usize = 3;

struct Sample {
    commits_per_s: f64,
    fsyncs_per_s: f64,
    latency_us_p50: f64,
    latency_us_p99: f64,
}

async fn run_once(
    db: &Database,
    concurrency: usize,
    seconds: f64,
    id_base: u64,
    shape: (usize, usize),
) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(id_base));
    let before = db.stats().expect("embedded");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (db, stop, next_id) = (db.clone(), Arc::clone(&stop), Arc::clone(&next_id));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut x = worker as u64 * 2_654_435_761 + 1;
            while !stop.load(Ordering::Relaxed) {
                let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let account = (x % ACCOUNTS as u64) as i64;
                let t0 = Instant::now();
                let mut tx = db.create_transaction().expect("begin");
                for r in 0..shape.0 {
                    let a = (account + r as i64 * 7919) % ACCOUNTS;
                    let balance = tx.get(&pack(&("acct", a))).await.expect("read");
                    assert!(balance.is_some());
                }
                tx.set(pack(&("transfer", id)), [7u8; 100]).expect("write");
                for w in 1..shape.1 {
                    tx.set(pack(&("by-account", account, id, w as i64)), b"")
                        .expect("write");
                }
                tx.commit().await.expect("commit");
                latencies.push(t0.elapsed().as_micros() as u32);
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = db.stats().expect("embedded");
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64;
    Sample {
        commits_per_s: (after.commits - before.commits) as f64 / elapsed,
        fsyncs_per_s: (after.batches - before.batches) as f64 / elapsed,
        latency_us_p50: pct(0.50),
        latency_us_p99: pct(0.99),
    }
}

/// A fresh store in `dir` holding `ACCOUNTS` accounts.
async fn seeded(dir: &std::path::Path, fsync: bool) -> Database {
    let options = EmbeddedOptions {
        fsync,
        ..EmbeddedOptions::default()
    };
    let db = Database::open_embedded(dir, options).expect("opens");
    for chunk in 0..(ACCOUNTS / 10_000) {
        let mut tx = db.create_transaction().expect("begin");
        for a in chunk * 10_000..(chunk + 1) * 10_000 {
            tx.set(pack(&("acct", a)), 1_000i64.to_le_bytes())
                .expect("seed");
        }
        tx.commit().await.expect("seed commit");
    }
    db
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: f64 = std::env::var("CBDC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // CBDC_BENCH_FSYNC=0 measures the CPU ceiling without fsync, for comparison only.
    let fsync = std::env::var("CBDC_BENCH_FSYNC").map_or(true, |v| v != "0");
    // CBDC_BENCH_READS / CBDC_BENCH_WRITES change the transaction's shape (default 1 / 2).
    let count = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let shape = (count("CBDC_BENCH_READS", 1), count("CBDC_BENCH_WRITES", 2));
    println!(
        "embedded store, fsync {}, read {} key(s) + write {} keys per transaction, {seconds} s per run, median of {RUNS} runs",
        if fsync { "on" } else { "OFF" },
        shape.0,
        shape.1
    );
    println!(
        "{:>11} {:>12} {:>10} {:>14} {:>10} {:>10}",
        "concurrency", "commits/s", "fsyncs/s", "commits/fsync", "p50 µs", "p99 µs"
    );
    let mut baseline = None;
    let mut id_base = 0u64;
    // CBDC_BENCH_CONCURRENCY=1024 (comma-separated) runs only the levels named.
    let levels: Vec<usize> = std::env::var("CBDC_BENCH_CONCURRENCY")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64, 1024]);
    for concurrency in levels {
        // Each level starts from the same freshly seeded store, so levels do not inherit each
        // other's data (and compaction debt) and the order of levels does not matter.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = seeded(dir.path(), fsync).await;
        let mut samples = Vec::new();
        for _ in 0..RUNS {
            samples.push(run_once(&db, concurrency, seconds, id_base, shape).await);
            id_base += 100_000_000;
        }
        let commits = median(samples.iter().map(|s| s.commits_per_s).collect());
        let fsyncs = median(samples.iter().map(|s| s.fsyncs_per_s).collect());
        let p50 = median(samples.iter().map(|s| s.latency_us_p50).collect());
        let p99 = median(samples.iter().map(|s| s.latency_us_p99).collect());
        println!(
            "{concurrency:>11} {commits:>12.0} {fsyncs:>10.0} {:>14.1} {p50:>10.0} {p99:>10.0}",
            commits / fsyncs.max(1.0)
        );
        let base = *baseline.get_or_insert(commits);
        if concurrency > 1 {
            println!(
                "{:>11} group-commit gain over concurrency 1: {:.1}x",
                "",
                commits / base
            );
        }
    }
}
