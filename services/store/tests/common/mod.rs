//! What the crash and power-loss tests share: reading back what a `store-crash-child` wrote.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cbdc_store::keys::{pack, unpack};
use cbdc_store::{Database, EmbeddedOptions, RangeOptions};
use rand::Rng;

/// The options `store-crash-child` opens its store with (its `options`).
fn child_options() -> EmbeddedOptions {
    EmbeddedOptions {
        memory_families: vec![pack(&("b",)), pack(&("count",))],
        memory_snapshot_bytes: 64 << 10,
        ..EmbeddedOptions::default()
    }
}

/// One round: a `store-crash-child` commits into `dir` (syncing each batch, or not) until
/// it is killed with SIGKILL at a random moment after its first acknowledgement. Returns
/// the ids it acknowledged.
pub fn kill_round(dir: &Path, round: u32, fsync: bool) -> BTreeSet<i64> {
    let first_id = i64::from(round) * 10_000_000;
    let mut command = Command::new(env!("CARGO_BIN_EXE_store-crash-child"));
    command.arg(dir).arg(first_id.to_string());
    if !fsync {
        command.arg("no-fsync");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ack ") {
                let _ = tx.send(id.parse::<i64>().unwrap());
            }
        }
    });
    let mut acked = BTreeSet::new();
    acked.insert(
        rx.recv_timeout(Duration::from_secs(30))
            .expect("child acknowledges a commit"),
    );
    std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(5..150)));
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    acked
}

/// Reopens the store in `dir` and returns the ids of the transactions present (checking
/// that none is half-visible) and the counter they all added to.
pub async fn audit(dir: &Path) -> (BTreeSet<i64>, i64) {
    let db = Database::open_embedded(dir, child_options()).expect("reopens");
    let mut present = BTreeSet::new();
    for (name, other) in [("a", "b"), ("b", "a")] {
        let mut cursor = pack(&(name,));
        let end = cbdc_store::keys::strinc(&cursor).unwrap();
        loop {
            let mut tx = db.create_transaction().unwrap();
            let rows = tx
                .get_range(
                    &cursor,
                    &end,
                    RangeOptions {
                        limit: 5000,
                        snapshot: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            if rows.is_empty() {
                break;
            }
            for (key, value) in &rows {
                let (_, id): (String, i64) = unpack(key).unwrap();
                let twin = tx.get_snapshot(&pack(&(other, id))).await.unwrap();
                assert_eq!(
                    twin.as_ref(),
                    Some(value),
                    "transaction {id} is half-visible"
                );
                present.insert(id);
            }
            cursor = rows.last().unwrap().0.clone();
            cursor.push(0);
        }
    }
    let mut tx = db.create_transaction().unwrap();
    let count = tx
        .get(&pack(&("count",)))
        .await
        .unwrap()
        .map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap()));
    (present, count)
}
