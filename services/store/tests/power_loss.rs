//! Power loss: the crash test's child commits on a filesystem that keeps only what was synced
//! ([`cbdc_lossyfs`]); after each SIGKILL the power is cut too, then the store is reopened
//! and every acknowledged commit must be there, none half-visible. The same rounds with the
//! child's fsync turned off must lose acknowledged commits: that is what shows the test can
//! fail. Rounds: `CBDC_POWER_ROUNDS` (default 5).

mod common;

use std::collections::BTreeSet;

use cbdc_lossyfs::Mount;
use common::{audit, kill_round};

fn rounds() -> u32 {
    std::env::var("CBDC_POWER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Runs the rounds with the child syncing or not; returns the acknowledged ids lost.
async fn power_cut_rounds(fsync: bool) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(dir.path()).expect("mounts (needs root and /dev/fuse)");
    let store = mount.path().join("store");
    let mut acked_total = BTreeSet::new();
    let mut lost = Vec::new();
    for round in 0..rounds() {
        acked_total.extend(kill_round(&store, round, fsync));
        mount.power_cut();
        let (present, count) = audit(&store).await;
        assert_eq!(
            count,
            present.len() as i64,
            "round {round}: counter disagrees with rows"
        );
        let gone: Vec<i64> = acked_total.difference(&present).copied().collect();
        eprintln!(
            "fsync {fsync}, round {round}: {} acknowledged, {} present, {} lost; {:?}",
            acked_total.len(),
            present.len(),
            gone.len(),
            mount.stats()
        );
        // What was lost is forgotten, so each round counts only its own losses.
        acked_total.retain(|id| present.contains(id));
        lost.extend(gone);
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_a_power_cut() {
    let lost = power_cut_rounds(true).await;
    assert!(
        lost.is_empty(),
        "acknowledged but lost at a power cut: {:?}",
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_skips_its_fsync_fails_the_power_cut_test() {
    let lost = power_cut_rounds(false).await;
    assert!(
        !lost.is_empty(),
        "a store acknowledging unsynced commits lost nothing: the power cut test cannot fail"
    );
}
