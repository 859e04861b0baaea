//! Secret key files, read and written in one place: a 32-byte Ed25519 seed in hex, in a file
//! of mode 0600, optionally encrypted with a passphrase (age, scrypt). Services create theirs
//! on first start ([`load_or_create_seed`]); the CLI makes wallet keys ([`create_seed`]) and
//! reads any key ([`read_seed`]). Every error names the file and says what to do.
//!
//! A key file is created whole or not at all: written to a temporary file, synced, linked
//! under its name (never over an existing file), and its directory synced, so a power loss
//! leaves either no key or the whole key. A key file that group or others may read is
//! refused. Seeds and the text that held them are wiped from memory once used
//! ([`Seed`] zeroizes on drop).

use std::io::Write;
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

/// A 32-byte seed, wiped from memory when dropped.
pub type Seed = Zeroizing<[u8; 32]>;

/// The environment variable that unlocks encrypted key files.
pub const PASSPHRASE_ENV: &str = "CBDC_WALLET_PASSPHRASE";

/// The start of an age-encrypted file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// Reads the 32-byte seed (hex) in `path`, creating a fresh random one with mode 0600 if the
/// file does not exist. Errors say what is wrong with the file.
pub fn load_or_create_seed(path: &Path) -> Result<Seed, String> {
    if path.exists() {
        check_private(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| e.to_string())?);
        return parse_seed(&text)
            .ok_or_else(|| "expected 64 hex digits (a 32-byte Ed25519 seed)".to_string());
    }
    let seed = fresh_seed();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let text = Zeroizing::new(format!("{}\n", hex::encode(*seed)));
    write_private(path, text.as_bytes())?;
    Ok(seed)
}

/// Refuses a key file that group or others may read (or write).
pub fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "key file {} is open to group or others (mode {:o}); make it private with `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    Ok(())
}

/// Creates a new key file at `path` (never overwriting one) holding a fresh seed, encrypted
/// with `passphrase` if given. Returns the seed.
pub fn create_seed(path: &Path, passphrase: Option<&str>) -> Result<Seed, String> {
    if path.exists() {
        return Err(format!(
            "key file {} already exists; not overwriting it",
            path.display()
        ));
    }
    let seed = fresh_seed();
    let text = Zeroizing::new(format!("{}\n", hex::encode(*seed)));
    let bytes = Zeroizing::new(match passphrase {
        None => text.as_bytes().to_vec(),
        Some(pass) => {
            let recipient =
                age::scrypt::Recipient::new(age::secrecy::SecretString::from(pass.to_string()));
            age::encrypt(&recipient, text.as_bytes())
                .map_err(|e| format!("encrypting the key: {e}"))?
        }
    });
    write_private(path, &bytes).map_err(|e| format!("key file {}: {e}", path.display()))?;
    Ok(seed)
}

/// Reads the seed in `path`; an encrypted file is opened with the passphrase in
/// [`PASSPHRASE_ENV`].
pub fn read_seed(path: &Path) -> Result<Seed, String> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        format!(
            "key file {}: {e} (create one with `cbdc wallet new --key {}`)",
            path.display(),
            path.display()
        )
    })?);
    check_private(path)?;
    let plain = Zeroizing::new(if bytes.starts_with(AGE_MAGIC) {
        let pass = std::env::var(PASSPHRASE_ENV).map_err(|_| {
            format!(
                "key file {} is encrypted; put its passphrase in {PASSPHRASE_ENV}",
                path.display()
            )
        })?;
        let identity = age::scrypt::Identity::new(age::secrecy::SecretString::from(pass));
        age::decrypt(&identity, &bytes).map_err(|e| {
            format!(
                "key file {}: cannot decrypt it ({e}); is {PASSPHRASE_ENV} right?",
                path.display()
            )
        })?
    } else {
        bytes.to_vec()
    });
    let text = std::str::from_utf8(&plain)
        .map_err(|_| format!("key file {}: not a key", path.display()))?;
    parse_seed(text).ok_or_else(|| format!("key file {}: expected 64 hex digits", path.display()))
}

fn parse_seed(text: &str) -> Option<Seed> {
    let bytes = Zeroizing::new(hex::decode(text.trim()).ok()?);
    let mut seed = Seed::default();
    if bytes.len() != seed.len() {
        return None;
    }
    seed.copy_from_slice(&bytes);
    Some(seed)
}

fn fresh_seed() -> Seed {
    let mut seed = Seed::default();
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    seed
}

/// Writes a new file readable by its owner only, whole or not at all: a temporary file in
/// the same directory, written and synced, then linked under `path` (which fails if `path`
/// exists: nothing is overwritten), the temporary name removed and the directory synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_whole(path, bytes, 0o600, false)
}

/// Writes a file anyone may read (a certificate), whole or not at all and durably, like
/// [`write_private`], replacing what `path` held.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_whole(path, bytes, 0o644, true)
}

fn write_whole(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?
        .to_string_lossy();
    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(nonce)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path)
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(|e| e.to_string())?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_plain_and_encrypted_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.key");
        let seed = create_seed(&plain, None).unwrap();
        assert_eq!(read_seed(&plain).unwrap(), seed);
        assert_eq!(load_or_create_seed(&plain).unwrap(), seed);
        assert!(
            create_seed(&plain, None)
                .unwrap_err()
                .contains("already exists")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&plain).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = dir.path().join("sealed.key");
        let seed = create_seed(&sealed, Some("correct horse")).unwrap();
        assert!(std::fs::read(&sealed).unwrap().starts_with(AGE_MAGIC));
        // The passphrase comes from the environment; without it the error says so.
        // SAFETY: this test is the only one in the crate touching the variable.
        unsafe { std::env::remove_var(PASSPHRASE_ENV) };
        assert!(read_seed(&sealed).unwrap_err().contains(PASSPHRASE_ENV));
        unsafe { std::env::set_var(PASSPHRASE_ENV, "wrong") };
        assert!(read_seed(&sealed).unwrap_err().contains("cannot decrypt"));
        unsafe { std::env::set_var(PASSPHRASE_ENV, "correct horse") };
        assert_eq!(read_seed(&sealed).unwrap(), seed);
        unsafe { std::env::remove_var(PASSPHRASE_ENV) };
        let bad = dir.path().join("bad.key");
        write_private(&bad, b"not hex").unwrap();
        assert!(read_seed(&bad).unwrap_err().contains("64 hex digits"));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        load_or_create_seed(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        for e in [
            load_or_create_seed(&path).unwrap_err(),
            read_seed(&path).unwrap_err(),
        ] {
            assert!(e.contains("open to group or others (mode 644)"), "{e}");
            assert!(e.contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_seed(&path).is_ok());
    }

    #[test]
    fn a_key_file_is_written_whole_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_private(&path, b"first").unwrap();
        let e = write_private(&path, b"second").unwrap_err();
        assert!(e.to_lowercase().contains("exists"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // Nothing is left behind under a temporary name.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.key")]);
    }
}
