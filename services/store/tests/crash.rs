//! Crash test: a child process commits transactions and reports each acknowledgement; the
//! parent kills it with SIGKILL at a random moment, reopens the store, and checks that every
//! acknowledged commit is there and that no transaction is half-visible. Rounds:
//! `CBDC_CRASH_ROUNDS` (default 25). A SIGKILL leaves the page cache alone, so this test
//! alone cannot tell a synced commit from a written one: `power_loss.rs` can.

mod common;

use std::collections::BTreeSet;

use common::{audit, kill_round};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_sigkill() {
    let rounds: u32 = std::env::var("CBDC_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let mut acked_total = BTreeSet::new();
    for round in 0..rounds {
        acked_total.extend(kill_round(dir.path(), round, true));
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
