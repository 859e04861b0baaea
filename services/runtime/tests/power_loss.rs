//! Key files and TLS material survive a power cut: they are written whole or not at all and
//! synced before anything uses them. Written without a sync, the same bytes are lost, which
//! shows the test can fail.

use cbdc_lossyfs::Mount;
use cbdc_runtime::secret;
use cbdc_runtime::tls::DevCa;

#[test]
fn keys_and_certificates_survive_a_power_cut_and_unsynced_bytes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(dir.path()).expect("mounts (needs root and /dev/fuse)");
    let root = mount.path();

    let seed = secret::create_seed(&root.join("authority.key"), None).unwrap();
    let sealed = secret::create_seed(&root.join("sealed.key"), Some("passphrase")).unwrap();
    let ca = DevCa::new("test CA").unwrap();
    std::fs::create_dir(root.join("tls")).unwrap();
    ca.write(&root.join("tls"), &["bank-1"]).unwrap();
    let tls_before: Vec<_> = files(&root.join("tls"));
    // The control: the same kind of bytes written the usual way, never synced.
    std::fs::write(root.join("unsynced.key"), hex::encode([7u8; 32])).unwrap();

    mount.power_cut();

    assert_eq!(
        secret::read_seed(&root.join("authority.key")).unwrap(),
        seed
    );
    // SAFETY: the only test in this binary touching the variable.
    unsafe { std::env::set_var(secret::PASSPHRASE_ENV, "passphrase") };
    assert_eq!(secret::read_seed(&root.join("sealed.key")).unwrap(), sealed);
    assert_eq!(files(&root.join("tls")), tls_before, "TLS files as written");
    assert!(tls_before.iter().all(|(_, bytes)| !bytes.is_empty()));
    assert_eq!(
        std::fs::read(root.join("unsynced.key")).unwrap(),
        b"",
        "an unsynced write is lost at a power cut"
    );
    // No temporary file is left behind under another name.
    let names: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}
