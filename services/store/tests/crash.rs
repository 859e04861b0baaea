//! Crash test: a child process commits transactions and reports each acknowledgement; the
//! parent kills it with SIGKILL at a random moment, reopens the store, and checks that every
//! acknowledged commit is there and that no transaction is half-visible. Rounds:
//! `CBDC_CRASH_ROUNDS` (default 25).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cbdc_store::keys::{pack, unpack};
use cbdc_store::{Database, EmbeddedOptions, RangeOptions};
use rand::Rng;

async fn audit(dir: &std::path::Path) -> (BTreeSet<i64>, i64) {
    let db = Database::open_embedded(dir, EmbeddedOptions::default()).expect("reopens");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_sigkill() {
    let rounds: u32 = std::env::var("CBDC_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let mut acked_total = BTreeSet::new();
    let mut rng = rand::thread_rng();
    for round in 0..rounds {
        let first_id = i64::from(round) * 10_000_000;
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-child"))
            .arg(dir.path())
            .arg(first_id.to_string())
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
        // Wait for the first acknowledgement, then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledges a commit");
        acked_total.insert(first);
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..150)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        acked_total.extend(rx.try_iter());
        let (present, count) = audit(dir.path()).await;
        let lost: Vec<_> = acked_total.difference(&present).take(5).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
        assert_eq!(
            count,
            present.len() as i64,
            "round {round}: counter disagrees with rows"
        );
        eprintln!(
            "round {round}: {} acknowledged, {} present",
            acked_total.len(),
            present.len()
        );
    }
}
