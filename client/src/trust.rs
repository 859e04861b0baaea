//! Trust on first use for a ledger's log: the last checkpoint a wallet accepted is kept,
//! and a later checkpoint is accepted only with a consistency proof (RFC 9162) that it
//! extends the kept one — so a ledger cannot show a wallet one log today and a rewritten
//! one tomorrow without the wallet noticing.

use std::path::Path;

use cbdc_core::PublicKey;
use cbdc_core::audit::Checkpoint;
use cbdc_core::merkle::verify_consistency;
use serde::{Deserialize, Serialize};

use crate::{Error, Ledger};

#[derive(Serialize, Deserialize)]
struct Stored {
    ledger: u32,
    /// `Checkpoint::message`, hex.
    checkpoint: String,
}

/// The checkpoint kept in `path`, if there is one.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Invalid(format!("{}: {e}", path.display()))),
    };
    let bad = |why: String| Error::Invalid(format!("{}: {why}", path.display()));
    let stored: Stored = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let bytes = hex::decode(&stored.checkpoint).map_err(|e| bad(e.to_string()))?;
    let cp = Checkpoint::from_message(&bytes).ok_or_else(|| bad("not a checkpoint".into()))?;
    if cp.ledger.0 != stored.ledger {
        return Err(bad("the checkpoint is of another ledger".into()));
    }
    Ok(Some(cp))
}

/// Keeps `cp` in `path`: written whole and synced, then renamed over the old one and the
/// directory synced, so a power cut leaves the old checkpoint or the new one, never an
/// empty file.
pub fn save(path: &Path, cp: &Checkpoint) -> Result<(), Error> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(&Stored {
        ledger: cp.ledger.0,
        checkpoint: hex::encode(cp.message()),
    })
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })()
    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Checks that two signed checkpoints of one ledger are of one log — the smaller a prefix
/// of the larger, by a consistency proof the ledger serves — and returns the larger.
pub async fn advance(
    ledger: &mut Ledger,
    operator: &PublicKey,
    kept: &Checkpoint,
    seen: &Checkpoint,
) -> Result<Checkpoint, Error> {
    if kept.ledger != seen.ledger {
        return Err(Error::Invalid("checkpoints of two ledgers".into()));
    }
    let (old, new) = if kept.size <= seen.size {
        (kept, seen)
    } else {
        (seen, kept)
    };
    if old.size == new.size {
        return if old.root == new.root {
            Ok(*new)
        } else {
            Err(Error::Verify(format!(
                "two signed checkpoints of size {} with different roots: the ledger forked its log",
                old.size
            )))
        };
    }
    let (proof, served) = ledger.consistency(old.size, new.size, operator).await?;
    if served.root != new.root {
        return Err(Error::Verify(format!(
            "the ledger's checkpoint of size {} has another root than the one shown before",
            new.size
        )));
    }
    verify_consistency(old.size, new.size, &proof, &old.root, &new.root).map_err(|e| {
        Error::Verify(format!(
            "the log of {} leaves does not extend the one of {}: {e}",
            new.size, old.size
        ))
    })?;
    Ok(*new)
}
