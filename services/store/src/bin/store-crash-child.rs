//! Crash-test child: commits transactions as fast as it can from many tasks and prints
//! `ack N` for each acknowledged commit, until the parent kills it with SIGKILL.
//!
//! Usage: `store-crash-child DIR FIRST_ID [no-fsync]` — ids are FIRST_ID, FIRST_ID+1, ...
//! `no-fsync` acknowledges commits without syncing them: the faulty store the power-loss
//! test must catch.
//! Transaction N writes `("a", N)` and `("b", N)` with the same value and adds 1 to
//! `("count",)`, so a half-applied transaction is visible as an `a` without its `b`. The `b`
//! keys and the counter are memory families ([`options`]), the `a` keys are in storage, and
//! the families are snapshotted every 64 KiB of their log: each transaction spans both
//! halves of the store, and crashes land before, during and after snapshots.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cbdc_store::keys::pack;
use cbdc_store::{Database, EmbeddedOptions};

const TASKS: usize = 32;

/// How the child and the tests that read its store back open it.
fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        memory_families: vec![pack(&("b",)), pack(&("count",))],
        memory_snapshot_bytes: 64 << 10,
        ..EmbeddedOptions::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: store-crash-child DIR FIRST_ID"));
    let first: i64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("FIRST_ID must be an integer");
    let fsync = match args.next().as_deref() {
        None => true,
        Some("no-fsync") => false,
        Some(other) => panic!("unknown option {other:?}"),
    };
    let options = EmbeddedOptions { fsync, ..options() };
    let db = Database::open_embedded(&dir, options).expect("store opens");
    let next = Arc::new(AtomicI64::new(first));
    let (acks, mut acked) = tokio::sync::mpsc::channel::<i64>(4096);
    for _ in 0..TASKS {
        let (db, next, acks) = (db.clone(), Arc::clone(&next), acks.clone());
        tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::SeqCst);
                let mut tx = db.create_transaction().expect("begin");
                let value = format!("value-{id}");
                tx.set(pack(&("a", id)), value.as_bytes()).expect("set");
                tx.set(pack(&("b", id)), value.as_bytes()).expect("set");
                tx.atomic_add(pack(&("count",)), 1).expect("add");
                tx.commit().await.expect("commit");
                if acks.send(id).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(acks);
    let mut out = std::io::stdout().lock();
    while let Some(id) = acked.recv().await {
        // Printed only after the commit was acknowledged (durable).
        writeln!(out, "ack {id}").expect("stdout");
        out.flush().expect("stdout");
    }
}
