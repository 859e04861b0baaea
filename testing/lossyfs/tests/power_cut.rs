//! The filesystem's own model: synced bytes survive a power cut, unsynced bytes do not.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use cbdc_lossyfs::Mount;

fn read(path: &std::path::Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn a_power_cut_keeps_what_was_synced_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(dir.path()).expect("mounts (needs root and /dev/fuse)");
    let root = mount.path();
    fs::create_dir(root.join("d")).unwrap();
    let (a, b, c) = (root.join("d/a"), root.join("d/b"), root.join("d/c"));

    // a: synced, then appended to and overwritten in place without a sync.
    let mut f = File::create(&a).unwrap();
    f.write_all(b"hello, ").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"world").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"J").unwrap();
    drop(f);
    assert_eq!(read(&a), b"Jello, world");

    // b: written and synced in full, then renamed; c: never synced.
    let mut f = File::create(&b).unwrap();
    f.write_all(&[7; 100_000]).unwrap();
    f.sync_all().unwrap();
    fs::rename(&b, root.join("d/b2")).unwrap();
    fs::write(&c, b"lost").unwrap();
    // A synced file later truncated without a sync.
    let f = OpenOptions::new()
        .write(true)
        .open(root.join("d/b2"))
        .unwrap();
    f.set_len(10).unwrap();
    drop(f);

    mount.power_cut();
    assert_eq!(read(&a), b"hello, ", "synced prefix only");
    assert_eq!(
        read(&root.join("d/b2")),
        vec![7; 100_000],
        "the truncation was not synced"
    );
    assert_eq!(read(&c), b"", "a name survives, its unsynced bytes do not");
    let s = mount.stats();
    assert_eq!(s.power_cuts, 1);
    assert_eq!(s.files_cut, 3);
    assert!(s.file_syncs >= 2);
}

#[test]
fn hard_links_share_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(dir.path()).expect("mounts (needs root and /dev/fuse)");
    let (a, b) = (mount.path().join("a"), mount.path().join("b"));
    let mut f = File::create(&a).unwrap();
    f.write_all(b"key").unwrap();
    f.sync_all().unwrap();
    fs::hard_link(&a, &b).unwrap();
    fs::remove_file(&a).unwrap();
    assert!(fs::hard_link(&b, &b).is_err(), "a name is not made twice");
    mount.power_cut();
    assert_eq!(read(&b), b"key");
    assert!(!a.exists());
}
