//! Fail-stop: after the first failed fsync the embedded store commits nothing more — not
//! the failed batch made visible by a later one, not new transactions — and says so in its
//! stats; reopened, it recovers from its journal and commits again.

use cbdc_store::{Database, EmbeddedOptions, StoreError, TxError};

async fn put(db: &Database, key: &'static [u8]) -> Result<(), TxError<StoreError>> {
    db.run(move |tx| {
        Box::pin(async move {
            tx.set(key, b"v")?;
            Ok::<_, TxError<StoreError>>(())
        })
    })
    .await
}

async fn get(db: &Database, key: &[u8]) -> Option<Vec<u8>> {
    let mut tx = db.create_transaction().unwrap();
    tx.get_snapshot(key).await.unwrap()
}

#[tokio::test]
async fn after_a_failed_fsync_nothing_more_is_committed_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = EmbeddedOptions {
        fail_fsync_at_batch: Some(2),
        ..EmbeddedOptions::default()
    };
    let db = Database::open_embedded(dir.path(), faulty).unwrap();
    put(&db, b"a").await.expect("batch 0");
    put(&db, b"b").await.expect("batch 1");
    assert!(!db.stats().unwrap().failed);
    // Batch 2's fsync fails: its outcome is unknown, and the store stops.
    let e = put(&db, b"c").await.expect_err("the fsync failed");
    assert!(
        matches!(e, TxError::Store(StoreError::Failed(_))),
        "the retry meets the stopped store: {e:?}"
    );
    assert!(db.stats().unwrap().failed, "reported in the stats");
    // Nothing after it commits, and the failed batch never becomes visible.
    let e = put(&db, b"d").await.expect_err("stopped");
    assert!(
        e.to_string()
            .contains("nothing more is committed until the service restarts"),
        "{e}"
    );
    assert_eq!(get(&db, b"c").await, None);
    assert_eq!(get(&db, b"d").await, None);
    assert_eq!(get(&db, b"b").await.as_deref(), Some(&b"v"[..]));
    drop(db);

    // Reopened: what was acknowledged is there, and it commits again.
    let db = Database::open_embedded(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(get(&db, b"a").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(get(&db, b"b").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(
        get(&db, b"d").await,
        None,
        "a refused commit was not applied"
    );
    put(&db, b"e").await.expect("commits after recovery");
    assert!(!db.stats().unwrap().failed);
}
