//! Memory families across restarts: the log replayed, snapshots taken and loaded, and keys
//! moved between memory and storage when the families change.

use cbdc_store::keys::{pack, strinc};
use cbdc_store::{Database, EmbeddedOptions, RangeOptions};

fn options(families: &[&str], snapshot_bytes: u64) -> EmbeddedOptions {
    EmbeddedOptions {
        memory_families: families.iter().map(|f| pack(&(*f,))).collect(),
        memory_snapshot_bytes: snapshot_bytes,
        ..EmbeddedOptions::default()
    }
}

/// Commits `n` transactions, each setting `("m", i)` and `("s", i)` and adding to
/// `("m", "count")` and `("s", "count")`.
async fn commit_many(db: &Database, from: i64, n: i64) {
    for i in from..from + n {
        let mut tx = db.create_transaction().unwrap();
        tx.set(pack(&("m", i)), i.to_le_bytes()).unwrap();
        tx.set(pack(&("s", i)), i.to_le_bytes()).unwrap();
        tx.atomic_add(pack(&("m", "count")), 1).unwrap();
        tx.atomic_add(pack(&("s", "count")), 1).unwrap();
        tx.commit().await.unwrap();
    }
}

/// Every `(name, i)` row's id, and the counter under `name`.
async fn read_back(db: &Database, name: &str) -> (Vec<i64>, i64) {
    let begin = pack(&(name,));
    let end = strinc(&begin).unwrap();
    let mut tx = db.create_transaction().unwrap();
    let rows = tx
        .get_range(&begin, &end, RangeOptions::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (key, value) in rows {
        if key == pack(&(name, "count")) {
            continue;
        }
        ids.push(i64::from_le_bytes(value.try_into().unwrap()));
    }
    let count = tx
        .get(&pack(&(name, "count")))
        .await
        .unwrap()
        .map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap()));
    (ids, count)
}

#[tokio::test]
async fn the_log_alone_restores_the_families() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open_embedded(dir.path(), options(&["m"], u64::MAX)).unwrap();
        commit_many(&db, 0, 50).await;
        // Clears are logged too: one key, then a range.
        let mut tx = db.create_transaction().unwrap();
        for name in ["m", "s"] {
            tx.clear(pack(&(name, 0))).unwrap();
            tx.clear_range(&pack(&(name, 5)), &pack(&(name, 10)))
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(db.stats().unwrap().memory_snapshots, 0);
    }
    let db = Database::open_embedded(dir.path(), options(&["m"], u64::MAX)).unwrap();
    let left: Vec<i64> = (1..5).chain(10..50).collect();
    assert_eq!(read_back(&db, "m").await, (left.clone(), 50));
    assert_eq!(read_back(&db, "s").await, (left, 50));
}

#[tokio::test]
async fn snapshots_bound_the_log_and_restore_with_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A snapshot after every few hundred bytes of log.
        let db = Database::open_embedded(dir.path(), options(&["m"], 512)).unwrap();
        commit_many(&db, 0, 300).await;
        // The snapshot thread answers the writer's requests in the background.
        for _ in 0..200 {
            if db.stats().unwrap().memory_snapshots >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(db.stats().unwrap().memory_snapshots >= 2);
        commit_many(&db, 300, 20).await;
    }
    assert!(dir.path().join("memory.snapshot").exists());
    let db = Database::open_embedded(dir.path(), options(&["m"], 512)).unwrap();
    assert_eq!(read_back(&db, "m").await, ((0..320).collect(), 320));
    assert_eq!(read_back(&db, "s").await, ((0..320).collect(), 320));
}

#[tokio::test]
async fn changing_the_families_moves_keys_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open_embedded(dir.path(), options(&[], u64::MAX)).unwrap();
        commit_many(&db, 0, 40).await;
    }
    // Both families come into memory, then one goes back to storage, then none is left.
    for families in [&["m", "s"][..], &["s"], &[]] {
        // Opened twice the same way: the move happens once and stays.
        for _ in 0..2 {
            let db = Database::open_embedded(dir.path(), options(families, u64::MAX)).unwrap();
            for name in ["m", "s"] {
                let back = read_back(&db, name).await;
                assert_eq!(back, ((0..40).collect(), 40), "{families:?} {name}");
            }
        }
    }
}
