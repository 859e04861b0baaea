//! Secret key files: a 32-byte seed in hex, created with mode 0600 on first start.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

/// Reads the 32-byte seed (hex) in `path`, creating a fresh random one with mode 0600 if the
/// file does not exist. Errors say what is wrong with the file.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; 32], String> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        return hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "expected 64 hex digits (a 32-byte Ed25519 seed)".to_string());
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| e.to_string())?;
    writeln!(file, "{}", hex::encode(seed)).map_err(|e| e.to_string())?;
    Ok(seed)
}
