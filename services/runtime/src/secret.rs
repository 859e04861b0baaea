//! Secret key files, read and written in one place: a 32-byte Ed25519 seed in hex, in a file
//! of mode 0600, optionally encrypted with a passphrase (age, scrypt). Services create theirs
//! on first start ([`load_or_create_seed`]); the CLI makes wallet keys ([`create_seed`]) and
//! reads any key ([`read_seed`]). Every error names the file and says what to do.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

/// The environment variable that unlocks encrypted key files.
pub const PASSPHRASE_ENV: &str = "CBDC_WALLET_PASSPHRASE";

/// The start of an age-encrypted file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// Reads the 32-byte seed (hex) in `path`, creating a fresh random one with mode 0600 if the
/// file does not exist. Errors say what is wrong with the file.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; 32], String> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        return parse_seed(&text)
            .ok_or_else(|| "expected 64 hex digits (a 32-byte Ed25519 seed)".to_string());
    }
    let seed = fresh_seed();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    write_private(path, format!("{}\n", hex::encode(seed)).as_bytes())?;
    Ok(seed)
}

/// Creates a new key file at `path` (never overwriting one) holding a fresh seed, encrypted
/// with `passphrase` if given. Returns the seed.
pub fn create_seed(path: &Path, passphrase: Option<&str>) -> Result<[u8; 32], String> {
    if path.exists() {
        return Err(format!(
            "key file {} already exists; not overwriting it",
            path.display()
        ));
    }
    let seed = fresh_seed();
    let text = format!("{}\n", hex::encode(seed));
    let bytes = match passphrase {
        None => text.into_bytes(),
        Some(pass) => {
            let recipient =
                age::scrypt::Recipient::new(age::secrecy::SecretString::from(pass.to_string()));
            age::encrypt(&recipient, text.as_bytes())
                .map_err(|e| format!("encrypting the key: {e}"))?
        }
    };
    write_private(path, &bytes).map_err(|e| format!("key file {}: {e}", path.display()))?;
    Ok(seed)
}

/// Reads the seed in `path`; an encrypted file is opened with the passphrase in
/// [`PASSPHRASE_ENV`].
pub fn read_seed(path: &Path) -> Result<[u8; 32], String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "key file {}: {e} (create one with `cbdc wallet new --key {}`)",
            path.display(),
            path.display()
        )
    })?;
    let plain = if bytes.starts_with(AGE_MAGIC) {
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
        bytes
    };
    let text =
        String::from_utf8(plain).map_err(|_| format!("key file {}: not a key", path.display()))?;
    parse_seed(&text).ok_or_else(|| format!("key file {}: expected 64 hex digits", path.display()))
}

fn parse_seed(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

fn fresh_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

/// Writes a new file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| e.to_string())?;
    file.write_all(bytes).map_err(|e| e.to_string())
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
        std::fs::write(&bad, "not hex").unwrap();
        assert!(read_seed(&bad).unwrap_err().contains("64 hex digits"));
    }
}
