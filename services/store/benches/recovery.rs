//! How long the embedded store takes to open when its memory families hold many keys: once
//! replaying the log alone, once from a snapshot. A ledger keeps three keys per wallet in
//! memory families, so 3,000,000 keys is a ledger of a million wallets.
//!
//! Run: `cargo bench -p cbdc-store --bench recovery` (`CBDC_BENCH_KEYS`, default 3,000,000;
//! values of 48 bytes, about a wallet record's size).

use std::time::{Duration, Instant};

use cbdc_store::keys::pack;
use cbdc_store::{Database, EmbeddedOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keys set per transaction while filling.
const PER_TX: i64 = 1_000;

fn options(snapshot_bytes: u64) -> EmbeddedOptions {
    EmbeddedOptions {
        memory_families: vec![pack(&("w",))],
        memory_snapshot_bytes: snapshot_bytes,
        ..EmbeddedOptions::default()
    }
}

fn open_timed(dir: &std::path::Path, snapshot_bytes: u64) -> (Database, Duration) {
    let started = Instant::now();
    let db = Database::open_embedded(dir, options(snapshot_bytes)).expect("opens");
    (db, started.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keys: i64 = std::env::var("CBDC_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // No snapshot while filling: the first reopen replays the whole log.
        let db = Database::open_embedded(dir.path(), options(u64::MAX)).expect("opens");
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut first = worker * PER_TX;
                while first < keys {
                    let mut tx = db.create_transaction().expect("begin");
                    for k in first..(first + PER_TX).min(keys) {
                        tx.set(pack(&("w", k)), [k as u8; 48]).expect("set");
                    }
                    tx.commit().await.expect("commit");
                    first += 8 * PER_TX;
                }
            }));
        }
        for t in tasks {
            t.await.expect("filler");
        }
        println!(
            "filled {keys} memory-family keys in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let (db, from_log) = open_timed(dir.path(), u64::MAX);
    println!(
        "open, replaying the log alone: {:.2} s ({:.0} keys/s)",
        from_log.as_secs_f64(),
        keys as f64 / from_log.as_secs_f64()
    );
    drop(db);
    // A tiny snapshot bound: the next commit asks for a snapshot.
    let (db, _) = open_timed(dir.path(), 1);
    let mut tx = db.create_transaction().expect("begin");
    tx.set(pack(&("w", -1)), b"x").expect("set");
    tx.commit().await.expect("commit");
    let started = Instant::now();
    while db.stats().expect("embedded").memory_snapshots == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let size = std::fs::metadata(dir.path().join("memory.snapshot")).map_or(0, |m| m.len());
    println!(
        "snapshot of {} keys: {:.2} s, {:.0} MiB",
        keys + 1,
        started.elapsed().as_secs_f64(),
        size as f64 / 1048576.0
    );
    drop(db);
    let (db, from_snapshot) = open_timed(dir.path(), u64::MAX);
    println!(
        "open from the snapshot: {:.2} s ({:.0} keys/s)",
        from_snapshot.as_secs_f64(),
        keys as f64 / from_snapshot.as_secs_f64()
    );
    let mut tx = db.create_transaction().expect("begin");
    let last = tx.get(&pack(&("w", keys - 1))).await.expect("read");
    assert_eq!(
        last,
        Some(vec![(keys - 1) as u8; 48]),
        "the last key came back"
    );
}
