//! The conformance suite: one body of tests run against every backend. The embedded backend
//! always runs; FoundationDB runs when built with `--features fdb` and `CBDC_FDB_CLUSTER_FILE`
//! names a cluster file, and the suite says so when it is skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cbdc_store::keys::{Subspace, strinc};
use cbdc_store::{
    Database, EmbeddedOptions, RangeOptions, RetryOptions, StoreError, TxError, Versionstamp,
    limits,
};
use tokio::sync::Barrier;

/// A backend under test, with a fresh key prefix so tests never see each other's data.
struct Fixture {
    db: Database,
    space: Subspace,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    fn key(&self, name: &str, n: i64) -> Vec<u8> {
        self.space.pack(&(name, n))
    }
    fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let b = self.space.bytes().to_vec();
        let e = strinc(&b).expect("prefix");
        (b, e)
    }
}

/// The embedded store three ways: every key in storage; every key in a memory family; and
/// mixed, some keys of each test in memory families and their neighbours in storage (half of
/// the range test's keys, the counters, `k` and `a`), so that scans merge the two.
fn embedded(test: &str) -> Vec<Fixture> {
    let space = Subspace::from(("conformance", test));
    let mixed: Vec<Vec<u8>> = [1, 3, 5, 7, 9]
        .into_iter()
        .map(|i| space.pack(&("r", i)))
        .chain(["counter", "k", "a", "balance", "n"].map(|name| space.pack(&(name,))))
        .collect();
    [Vec::new(), vec![space.bytes().to_vec()], mixed]
        .into_iter()
        .map(|families| {
            let dir = tempfile::tempdir().expect("tempdir");
            let options = EmbeddedOptions {
                memory_families: families,
                ..EmbeddedOptions::default()
            };
            Fixture {
                db: Database::open_embedded(dir.path(), options).expect("opens"),
                space: space.clone(),
                _dir: Some(dir),
            }
        })
        .collect()
}

fn backends(test: &str) -> Vec<Fixture> {
    #[allow(unused_mut)] // mutated only with the `fdb` feature
    let mut all = embedded(test);
    match std::env::var_os("CBDC_FDB_CLUSTER_FILE") {
        #[cfg(feature = "fdb")]
        Some(path) => {
            let db =
                Database::open_fdb(std::path::Path::new(&path)).expect("connects to FoundationDB");
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as i64;
            all.push(Fixture {
                db,
                space: Subspace::from(("conformance", test, nonce)),
                _dir: None,
            });
        }
        #[cfg(not(feature = "fdb"))]
        Some(_) => eprintln!("{test}: FoundationDB skipped: built without the `fdb` feature"),
        None => eprintln!("{test}: FoundationDB skipped: CBDC_FDB_CLUSTER_FILE is not set"),
    }
    all
}

async fn put(f: &Fixture, key: &[u8], value: &[u8]) {
    let mut tx = f.db.create_transaction().unwrap();
    tx.set(key, value).unwrap();
    tx.commit().await.unwrap();
}

async fn read(f: &Fixture, key: &[u8]) -> Option<Vec<u8>> {
    let mut tx = f.db.create_transaction().unwrap();
    tx.get(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spends_of_one_key_exactly_one_commits() {
    for f in backends("spend") {
        let f = Arc::new(f);
        let coin = f.key("coin", 1);
        put(&f, &coin, b"unspent").await;
        const N: usize = 32;
        let barrier = Arc::new(Barrier::new(N));
        let mut tasks = Vec::new();
        for i in 0..N {
            let (f, coin, barrier) = (Arc::clone(&f), coin.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                let mut tx = f.db.create_transaction().unwrap();
                let seen = tx.get(&coin).await.unwrap();
                barrier.wait().await; // everyone has read before anyone commits
                assert_eq!(seen.as_deref(), Some(&b"unspent"[..]));
                tx.set(&coin, format!("spent by {i}").as_bytes()).unwrap();
                tx.commit().await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => assert_eq!(e, StoreError::NotCommitted),
            }
        }
        assert_eq!(won, 1, "{}", f.db.backend_name());
    }
}

#[tokio::test]
async fn a_long_open_reader_still_sees_its_conflict_after_many_commits() {
    for f in backends("long-reader") {
        let k = f.key("k", 0);
        put(&f, &k, b"old").await;
        let mut reader = f.db.create_transaction().unwrap();
        assert_eq!(reader.get(&k).await.unwrap().as_deref(), Some(&b"old"[..]));
        put(&f, &k, b"new").await;
        // Many later commits, each its own batch: the conflict must not be forgotten while
        // the reader is still open.
        for i in 0..200 {
            put(&f, &f.key("other", i), b"x").await;
        }
        reader.set(f.key("derived", 0), b"from old").unwrap();
        assert_eq!(reader.commit().await, Err(StoreError::NotCommitted));
        assert_eq!(read(&f, &f.key("derived", 0)).await, None);
    }
}

#[tokio::test]
async fn a_reader_sees_its_snapshot_not_later_commits() {
    for f in backends("snapshot") {
        let (a, b, c) = (f.key("a", 0), f.key("b", 0), f.key("c", 0));
        put(&f, &a, b"a1").await;
        put(&f, &b, b"b1").await;
        put(&f, &c, b"c1").await;
        let mut reader = f.db.create_transaction().unwrap();
        // The first read fixes the read version.
        assert_eq!(reader.get(&f.key("none", 0)).await.unwrap(), None);
        put(&f, &a, b"a2").await;
        let mut tx = f.db.create_transaction().unwrap();
        tx.clear(&b).unwrap();
        tx.set(f.key("fresh", 0), b"new").unwrap();
        tx.commit().await.unwrap();
        let mut tx = f.db.create_transaction().unwrap();
        tx.clear_range(&c, &strinc(&c).unwrap()).unwrap();
        tx.commit().await.unwrap();
        let name = f.db.backend_name();
        assert_eq!(
            reader.get(&a).await.unwrap().as_deref(),
            Some(&b"a1"[..]),
            "{name}"
        );
        assert_eq!(
            reader.get(&b).await.unwrap().as_deref(),
            Some(&b"b1"[..]),
            "{name}"
        );
        assert_eq!(
            reader.get(&c).await.unwrap().as_deref(),
            Some(&b"c1"[..]),
            "{name}"
        );
        assert_eq!(
            reader.get(&f.key("fresh", 0)).await.unwrap(),
            None,
            "{name}"
        );
        // A transaction begun now sees every commit.
        assert_eq!(read(&f, &a).await.as_deref(), Some(&b"a2"[..]), "{name}");
        assert_eq!(read(&f, &b).await, None, "{name}");
        assert_eq!(read(&f, &c).await, None, "{name}");
        assert_eq!(
            read(&f, &f.key("fresh", 0)).await.as_deref(),
            Some(&b"new"[..])
        );
    }
}

#[tokio::test]
async fn atomic_adds_build_on_sets_clears_and_range_clears_of_earlier_commits() {
    for f in backends("add-after-writes") {
        let k = f.key("counter", 0);
        let add = |delta: i64| {
            let (db, k) = (f.db.clone(), k.clone());
            async move {
                let mut tx = db.create_transaction().unwrap();
                tx.atomic_add(&k, delta).unwrap();
                tx.commit().await.unwrap();
            }
        };
        let value = || async {
            read(&f, &k)
                .await
                .map(|v| i64::from_le_bytes(v.try_into().unwrap()))
        };
        add(5).await;
        add(2).await;
        assert_eq!(value().await, Some(7));
        put(&f, &k, &100i64.to_le_bytes()).await;
        add(1).await;
        assert_eq!(value().await, Some(101));
        let mut tx = f.db.create_transaction().unwrap();
        tx.clear(&k).unwrap();
        tx.commit().await.unwrap();
        add(3).await;
        assert_eq!(value().await, Some(3));
        let (b, e) = f.range();
        let mut tx = f.db.create_transaction().unwrap();
        tx.clear_range(&b, &e).unwrap();
        tx.commit().await.unwrap();
        add(4).await;
        assert_eq!(value().await, Some(4));
        // Many adds from concurrent tasks after all that: the exact sum.
        let tasks: Vec<_> = (0..32).map(|_| tokio::spawn(add(1))).collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(value().await, Some(36));
    }
}

#[tokio::test]
async fn write_skew_is_prevented() {
    for f in backends("skew") {
        // Invariant: x + y >= 1. Each transaction checks it and zeroes one of them.
        let (x, y) = (f.key("x", 0), f.key("y", 0));
        put(&f, &x, b"1").await;
        put(&f, &y, b"1").await;
        let mut t1 = f.db.create_transaction().unwrap();
        let mut t2 = f.db.create_transaction().unwrap();
        for t in [&mut t1, &mut t2] {
            assert_eq!(t.get(&x).await.unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(t.get(&y).await.unwrap().as_deref(), Some(&b"1"[..]));
        }
        t1.set(&x, b"0").unwrap();
        t2.set(&y, b"0").unwrap();
        assert!(t1.commit().await.is_ok());
        assert_eq!(t2.commit().await, Err(StoreError::NotCommitted));
        assert_eq!(read(&f, &y).await.as_deref(), Some(&b"1"[..]));
    }
}

#[tokio::test]
async fn snapshot_reads_do_not_conflict_and_blind_writes_do_not_conflict() {
    for f in backends("snapshot") {
        let k = f.key("k", 0);
        put(&f, &k, b"a").await;
        let mut reader = f.db.create_transaction().unwrap();
        let mut blind = f.db.create_transaction().unwrap();
        assert!(reader.get_snapshot(&k).await.unwrap().is_some());
        reader.set(f.key("other", 0), b"x").unwrap();
        blind.set(&k, b"b").unwrap();
        blind.commit().await.unwrap();
        reader.commit().await.unwrap();
    }
}

#[tokio::test]
async fn reads_see_own_writes() {
    for f in backends("ryw") {
        let (a, b, c) = (f.key("k", 1), f.key("k", 2), f.key("k", 3));
        put(&f, &a, b"old").await;
        put(&f, &c, b"kept").await;
        let mut tx = f.db.create_transaction().unwrap();
        tx.set(&a, b"new").unwrap();
        assert_eq!(tx.get(&a).await.unwrap().as_deref(), Some(&b"new"[..]));
        tx.clear(&a).unwrap();
        assert_eq!(tx.get(&a).await.unwrap(), None);
        tx.atomic_add(&b, 5).unwrap();
        tx.atomic_add(&b, -2).unwrap();
        assert_eq!(tx.get(&b).await.unwrap(), Some(3i64.to_le_bytes().to_vec()));
        tx.clear_range(&a, &c).unwrap();
        assert_eq!(tx.get(&b).await.unwrap(), None);
        tx.set(&b, b"again").unwrap();
        let (begin, end) = f.range();
        let rows = tx
            .get_range(&begin, &end, RangeOptions::default())
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (b.clone(), b"again".to_vec()),
                (c.clone(), b"kept".to_vec())
            ]
        );
        tx.commit().await.unwrap();
        assert_eq!(read(&f, &a).await, None);
        assert_eq!(read(&f, &b).await.as_deref(), Some(&b"again"[..]));
    }
}

#[tokio::test]
async fn range_reads_have_foundationdb_semantics() {
    for f in backends("range") {
        let mut tx = f.db.create_transaction().unwrap();
        for i in 0..10 {
            tx.set(f.key("r", i), [i as u8]).unwrap();
        }
        tx.commit().await.unwrap();
        let mut tx = f.db.create_transaction().unwrap();
        // (begin, end, limit, reverse, the values read); writes below change the store
        // between the two halves of the table.
        type Case = (i64, i64, usize, bool, Vec<u8>);
        let stored: [Case; 3] = [
            // begin inclusive, end exclusive
            (2, 5, usize::MAX, false, vec![2, 3, 4]),
            (0, 10, 3, false, vec![0, 1, 2]),
            (0, 10, 3, true, vec![9, 8, 7]),
        ];
        // Local writes merge into the scan in order, both directions.
        let merged: [Case; 2] = [
            (3, 7, usize::MAX, false, vec![3, 40, 6]),
            (3, 7, usize::MAX, true, vec![6, 40, 3]),
        ];
        for (i, cases) in [&stored[..], &merged[..]].into_iter().enumerate() {
            if i == 1 {
                tx.set(f.key("r", 4), [40]).unwrap();
                tx.clear(f.key("r", 5)).unwrap();
            }
            for (begin, end, limit, reverse, expected) in cases {
                let options = RangeOptions {
                    limit: *limit,
                    reverse: *reverse,
                    ..Default::default()
                };
                let rows = tx
                    .get_range(&f.key("r", *begin), &f.key("r", *end), options)
                    .await
                    .unwrap();
                let values: Vec<u8> = rows.into_iter().map(|(_, v)| v[0]).collect();
                assert_eq!(
                    &values, expected,
                    "[{begin}, {end}) limit {limit} reverse {reverse}"
                );
            }
        }
        assert_eq!(
            tx.get_range(&f.key("r", 7), &f.key("r", 3), RangeOptions::default())
                .await,
            Err(StoreError::InvertedRange)
        );
        // A range read conflicts with a later write inside the range, not outside it.
        let mut reader = f.db.create_transaction().unwrap();
        reader
            .get_range(&f.key("r", 0), &f.key("r", 3), RangeOptions::default())
            .await
            .unwrap();
        reader.set(f.key("out", 0), b"x").unwrap();
        let mut outside = f.db.create_transaction().unwrap();
        outside.set(f.key("r", 3), b"y").unwrap();
        outside.commit().await.unwrap();
        let mut inside = f.db.create_transaction().unwrap();
        inside.set(f.key("r", 1), b"y").unwrap();
        inside.commit().await.unwrap();
        assert_eq!(reader.commit().await, Err(StoreError::NotCommitted));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_adds_from_many_tasks_never_conflict_and_sum_exactly() {
    for f in backends("add") {
        let f = Arc::new(f);
        let counter = f.key("counter", 0);
        const TASKS: i64 = 64;
        const ADDS: i64 = 20;
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (f, counter) = (Arc::clone(&f), counter.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..ADDS {
                    let mut tx = f.db.create_transaction().unwrap();
                    tx.atomic_add(&counter, t + 1).unwrap();
                    // Any failure here (a conflict) fails the test: adds must not conflict.
                    tx.commit().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let expected: i64 = ADDS * (1..=TASKS).sum::<i64>();
        assert_eq!(
            read(&f, &counter).await,
            Some(expected.to_le_bytes().to_vec())
        );
    }
}

/// Read-modify-write increments from many tasks on a few hot keys, with conflicts retried:
/// no update is lost, so every key ends at the number of increments made to it. A read that
/// returned a value older than its read version (a stale cached value) would not conflict
/// with the write it missed, and an increment would be lost. Keys read but never written
/// in between, and range clears, are mixed in, as are reads at once after each commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_modify_write_increments_lose_no_update() {
    for f in backends("rmw") {
        let f = Arc::new(f);
        const TASKS: u64 = 8;
        const EACH: u64 = 40;
        const KEYS: u64 = 3;
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let f = Arc::clone(&f);
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    let key = f.key("n", ((t + i) % KEYS) as i64);
                    let cold = f.key("cold", (i % 5) as i64);
                    let r: Result<(), TxError<()>> =
                        f.db.run(|tx| {
                            let (key, cold) = (key.clone(), cold.clone());
                            Box::pin(async move {
                                let _ = tx.get(&cold).await?;
                                let n = tx.get(&key).await?.map_or(0, |v| {
                                    u64::from_be_bytes(v.try_into().expect("8 bytes"))
                                });
                                tx.set(&key, (n + 1).to_be_bytes())?;
                                Ok(())
                            })
                        })
                        .await;
                    r.expect("commits within the retry bound");
                    // Read it back at once: the value just committed, or a later one.
                    let n = read(&f, &key)
                        .await
                        .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                    assert!(n >= 1, "a committed increment is not visible");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut total = 0;
        for k in 0..KEYS {
            let n = read(&f, &f.key("n", k as i64))
                .await
                .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
            total += n;
        }
        assert_eq!(total, TASKS * EACH, "increments lost");
        // A range clear, then the same keys read again: gone, and increments start over.
        let (b, e) = f.range();
        let mut tx = f.db.create_transaction().unwrap();
        tx.clear_range(&b, &e).unwrap();
        tx.commit().await.unwrap();
        assert_eq!(read(&f, &f.key("n", 0)).await, None);
        put(&f, &f.key("n", 0), &7u64.to_be_bytes()).await;
        assert_eq!(
            read(&f, &f.key("n", 0)).await,
            Some(7u64.to_be_bytes().to_vec())
        );
    }
}

/// Many concurrent blind transactions on a few keys (sets, clears, atomic adds and, in a
/// second round, range clears over them) commit together in shared batches; the stored
/// values are those of applying each transaction in versionstamp order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blind_writes_land_as_if_applied_in_commit_order() {
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Set(i64),
        Clear,
        Add(i64),
        ClearAll,
    }
    for with_range_clears in [false, true] {
        for f in backends("mixed") {
            let f = Arc::new(f);
            let keys: Vec<Vec<u8>> = (0..3).map(|i| f.key("m", i)).collect();
            let (all_b, all_e) = (f.key("m", 0), f.key("m", 3));
            let mut tasks = Vec::new();
            for t in 0..200i64 {
                let (f, keys) = (Arc::clone(&f), keys.clone());
                let (all_b, all_e) = (all_b.clone(), all_e.clone());
                tasks.push(tokio::spawn(async move {
                    let key = (t % 3) as usize;
                    let op = match t % 7 {
                        0 => Op::Set(t * 1000),
                        1 => Op::Clear,
                        5 if with_range_clears => Op::ClearAll,
                        _ => Op::Add(t + 1),
                    };
                    let mut tx = f.db.create_transaction().unwrap();
                    match op {
                        Op::Set(v) => tx.set(&keys[key], v.to_le_bytes()).unwrap(),
                        Op::Clear => tx.clear(&keys[key]).unwrap(),
                        Op::Add(d) => tx.atomic_add(&keys[key], d).unwrap(),
                        Op::ClearAll => tx.clear_range(&all_b, &all_e).unwrap(),
                    }
                    (tx.commit().await.unwrap(), key, op)
                }));
            }
            let mut done = Vec::new();
            for t in tasks {
                done.push(t.await.unwrap());
            }
            done.sort_by_key(|(stamp, _, _)| *stamp);
            let mut want: [Option<i64>; 3] = [None; 3];
            for (_, key, op) in done {
                match op {
                    Op::Set(v) => want[key] = Some(v),
                    Op::Clear => want[key] = None,
                    Op::Add(d) => want[key] = Some(want[key].unwrap_or(0) + d),
                    Op::ClearAll => want = [None; 3],
                }
            }
            for (key, want) in keys.iter().zip(want) {
                assert_eq!(
                    read(&f, key).await,
                    want.map(|v| v.to_le_bytes().to_vec()),
                    "range clears: {with_range_clears}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versionstamps_increase_strictly_in_commit_order() {
    for f in backends("versionstamp") {
        let f = Arc::new(f);
        let mut last = None;
        for i in 0..20 {
            let mut tx = f.db.create_transaction().unwrap();
            tx.set(f.key("seq", i), b"x").unwrap();
            let stamp = tx.commit().await.unwrap();
            assert!(last < Some(stamp), "{last:?} then {stamp:?}");
            last = Some(stamp);
        }
        // Concurrent commits, each writing a versionstamped key: distinct stamps, and the keys
        // sort in commit order.
        let log = f.space.subspace(&("log",));
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let (f, log) = (Arc::clone(&f), log.clone());
            tasks.push(tokio::spawn(async move {
                let mut tx = f.db.create_transaction().unwrap();
                let mut key = log.bytes().to_vec();
                let offset = key.len() as u32;
                key.extend_from_slice(&Versionstamp::PLACEHOLDER);
                tx.set_versionstamped_key(&key, offset, i.to_be_bytes())
                    .unwrap();
                tx.commit().await.unwrap()
            }));
        }
        let mut stamps = Vec::new();
        for t in tasks {
            stamps.push(t.await.unwrap());
        }
        stamps.sort();
        stamps.dedup();
        assert_eq!(stamps.len(), 64);
        let (b, e) = (log.bytes().to_vec(), strinc(log.bytes()).unwrap());
        let mut tx = f.db.create_transaction().unwrap();
        let rows = tx.get_range(&b, &e, RangeOptions::default()).await.unwrap();
        let from_keys: Vec<Versionstamp> = rows
            .iter()
            .map(|(k, _)| Versionstamp(k[b.len()..b.len() + 10].try_into().unwrap()))
            .collect();
        assert_eq!(from_keys, stamps);
        assert!(stamps[0] > last.unwrap());
        // A versionstamped value carries the same stamp the commit returned.
        let mut tx = f.db.create_transaction().unwrap();
        let mut value = b"at:".to_vec();
        value.extend_from_slice(&Versionstamp::PLACEHOLDER);
        let vk = f.key("vs-value", 0);
        tx.set_versionstamped_value(&vk, &value, 3).unwrap();
        let stamp = tx.commit().await.unwrap();
        assert_eq!(read(&f, &vk).await.unwrap()[3..], stamp.0);
    }
}

#[tokio::test]
async fn every_limit_has_its_error() {
    for f in backends("limits") {
        let mut tx = f.db.create_transaction().unwrap();
        let long_key = vec![1u8; limits::KEY_BYTES_MAX + 1];
        assert_eq!(
            tx.set(&long_key, b"v"),
            Err(StoreError::KeyTooLarge { len: 10_001 })
        );
        assert_eq!(
            tx.get(&long_key).await,
            Err(StoreError::KeyTooLarge { len: 10_001 })
        );
        let big_value = vec![0u8; limits::VALUE_BYTES_MAX + 1];
        assert_eq!(
            tx.set(f.key("v", 0), &big_value),
            Err(StoreError::ValueTooLarge { len: 100_001 })
        );
        assert_eq!(
            tx.set_versionstamped_key(b"short", 0, b"v"),
            Err(StoreError::VersionstampOffset { offset: 0, len: 5 })
        );
        let value = vec![0u8; limits::VALUE_BYTES_MAX];
        let mut result = Ok(());
        for i in 0..101 {
            result = tx.set(f.key("big", i), &value);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(StoreError::TransactionTooLarge { .. })),
            "{result:?}"
        );
        drop(tx);
        let mut old = f.db.create_transaction().unwrap();
        tokio::time::sleep(limits::TRANSACTION_DURATION_MAX + Duration::from_millis(100)).await;
        assert_eq!(
            old.get(&f.key("v", 0)).await,
            Err(StoreError::TransactionTooOld)
        );
        assert!(StoreError::TransactionTooOld.is_retryable());
    }
}

#[tokio::test]
async fn a_failing_closure_writes_nothing() {
    for f in backends("abort") {
        let k = f.key("k", 0);
        let result: Result<(), TxError<&str>> =
            f.db.run(|tx| {
                let k = k.clone();
                Box::pin(async move {
                    tx.set(&k, b"should not land")?;
                    tx.atomic_add(&k, 1)?;
                    Err(TxError::Abort("business rule says no"))
                })
            })
            .await;
        assert!(matches!(
            result,
            Err(TxError::Abort("business rule says no"))
        ));
        assert_eq!(read(&f, &k).await, None);
    }
}

#[tokio::test]
async fn retries_stop_at_their_bound() {
    for f in backends("retries") {
        let calls = Arc::new(AtomicU32::new(0));
        let db = f.db.clone().with_retry(RetryOptions {
            max_retries: 3,
            timeout: Duration::from_secs(10),
        });
        let counted = Arc::clone(&calls);
        let result: Result<(), TxError<()>> = db
            .run(move |_tx| {
                counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Err(TxError::Store(StoreError::NotCommitted)) })
            })
            .await;
        match result {
            Err(TxError::Store(StoreError::RetryLimit { attempts, last })) => {
                assert_eq!(attempts, 4);
                assert_eq!(*last, StoreError::NotCommitted);
            }
            other => panic!("expected RetryLimit, got {other:?}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A non-retryable error is returned at once.
        let result: Result<(), TxError<()>> = db
            .run(|tx| Box::pin(async move { tx.set([0u8; 10_001], b"x").map_err(TxError::from) }))
            .await;
        assert!(matches!(
            result,
            Err(TxError::Store(StoreError::KeyTooLarge { .. }))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_retries_conflicts_until_it_commits() {
    for f in backends("run") {
        let f = Arc::new(f);
        let k = f.key("n", 0);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (f, k) = (Arc::clone(&f), k.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let k = k.clone();
                    f.db.run(move |tx| {
                        let k = k.clone();
                        Box::pin(async move {
                            let n = tx
                                .get(&k)
                                .await?
                                .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                            tx.set(&k, (n + 1).to_be_bytes())?;
                            Ok::<(), TxError<()>>(())
                        })
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Read-modify-write under contention loses no increment.
        assert_eq!(read(&f, &k).await, Some(80u64.to_be_bytes().to_vec()));
    }
}

#[tokio::test]
async fn run_idempotent_applies_once() {
    for f in backends("idempotent") {
        let id = f.key("request", 42);
        let balance = f.key("balance", 0);
        let calls = Arc::new(AtomicU32::new(0));
        for round in 0..3 {
            let (balance, calls) = (balance.clone(), Arc::clone(&calls));
            let (result, first) =
                f.db.run_idempotent(&id, move |tx| {
                    let (balance, calls) = (balance.clone(), Arc::clone(&calls));
                    Box::pin(async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tx.atomic_add(&balance, 100)?;
                        Ok::<_, TxError<()>>(b"credited 100".to_vec())
                    })
                })
                .await
                .unwrap();
            assert_eq!(result, b"credited 100");
            assert_eq!(first, round == 0);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            read(&f, &balance).await,
            Some(100i64.to_le_bytes().to_vec())
        );
    }
}

#[tokio::test]
async fn embedded_commits_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = {
        let db = Database::open_embedded(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut tx = db.create_transaction().unwrap();
        tx.set(b"durable", b"yes").unwrap();
        tx.commit().await.unwrap()
    };
    let db = Database::open_embedded(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut tx = db.create_transaction().unwrap();
    assert_eq!(
        tx.get(b"durable").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    tx.set(b"later", b"x").unwrap();
    assert!(
        tx.commit().await.unwrap() > stamp,
        "versions keep increasing across restarts"
    );
}
