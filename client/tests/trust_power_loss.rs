//! The checkpoint a wallet keeps survives a power cut: after it, the file holds the kept
//! checkpoint, never an empty or partial one. The unsynced rename the file was once written
//! with leaves it empty here, which shows the test can fail.

use cbdc_client::trust;
use cbdc_core::audit::Checkpoint;
use cbdc_core::{Amount, LedgerId};
use cbdc_lossyfs::Mount;

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        ledger: LedgerId(1),
        size,
        root: [size as u8; 32],
        outstanding: Amount::from_fen(1_000),
        inbound: Amount::ZERO,
        settled_out: Amount::ZERO,
        timestamp_ms: 1_700_000_000_000 + size,
        unspent: Amount::from_fen(1_000),
        outbox: Amount::ZERO,
        unspent_set: [9; 32],
    }
}

#[test]
fn the_kept_checkpoint_survives_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(dir.path()).expect("mounts (needs root and /dev/fuse)");
    let kept = mount.path().join("bank-1.checkpoint.json");
    trust::save(&kept, &checkpoint(5)).unwrap();
    trust::save(&kept, &checkpoint(7)).unwrap();
    mount.power_cut();
    let back = trust::load(&kept).unwrap().expect("still kept");
    assert_eq!(back.message(), checkpoint(7).message());

    // The old way: written, renamed over, never synced.
    let text = std::fs::read(&kept).unwrap();
    let tmp = kept.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &kept).unwrap();
    mount.power_cut();
    assert!(
        trust::load(&kept).is_err(),
        "an unsynced rename leaves an empty file"
    );
}
