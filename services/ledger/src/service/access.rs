//! Who may read: read grants checked against the wallet's key or the bank's authority, what
//! a payer, a payee and anyone else see of a transfer, and the per-wallet and per-connection
//! bounds on watch streams.

use cbdc_core::messages::ReadGrant;
use cbdc_core::{Lock, PublicKey};
use cbdc_proto::v1;
use tonic::Status;

use super::LedgerGrpc;

/// Counts held per key, each below a limit; a slot is released when its guard drops.
#[derive(Default)]
pub(super) struct Tally {
    counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

pub(super) struct TallySlot {
    tally: std::sync::Arc<Tally>,
    key: String,
}

impl Tally {
    pub(super) fn take(
        self: &std::sync::Arc<Self>,
        key: String,
        limit: usize,
    ) -> Option<TallySlot> {
        let mut counts = self.counts.lock().expect("tally");
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(TallySlot {
            tally: std::sync::Arc::clone(self),
            key,
        })
    }
}

impl Drop for TallySlot {
    fn drop(&mut self) {
        let mut counts = self.tally.counts.lock().expect("tally");
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl LedgerGrpc {
    /// Who is reading the wallet at `text`: its grant (`auth`) must be signed by the
    /// wallet's key or the bank's authority key, for this network and ledger, and unexpired.
    pub(super) fn reader(
        &self,
        field: &'static str,
        text: &str,
        auth: Option<&v1::ReadAuth>,
    ) -> Result<Reader, Status> {
        let key = self.address(field, text)?;
        let auth = auth.ok_or_else(|| {
            cbdc_runtime::error::unauthenticated(format!(
                "auth: required: a read grant for {field} signed by the wallet's key (or the bank's authority key)"
            ))
        })?;
        let settings = self.ledger.settings();
        let grant = ReadGrant {
            network: &auth.network,
            ledger: self.ledger.id(),
            address: text,
            expires_unix_ms: auth.expires_at_unix_ms,
        };
        let signer = if auth.by_authority {
            settings.authority
        } else {
            key
        };
        let vk = self
            .keys
            .checked_key(&signer)
            .map_err(|e| cbdc_runtime::error::invalid(format!("{field}: {e}")))?;
        cbdc_core::messages::verify(&vk, &grant, &auth.signature).map_err(|e| {
            cbdc_runtime::error::denied(format!(
                "auth.signature: {e}: a read grant for {text} must be signed by {}",
                if auth.by_authority {
                    "the bank's authority key"
                } else {
                    "that wallet's own key"
                }
            ))
        })?;
        grant
            .check(&settings.network, self.ledger.id(), self.ledger.now_ms())
            .map_err(|e| {
                cbdc_runtime::error::unauthenticated(
                    e.to_string()
                        .replacen("header.", "auth.", 1)
                        .replace("the order is", "the grant is")
                        .replace("the order expired", "the grant expired")
                        .replace("orders are", "grants are"),
                )
            })?;
        Ok(Reader {
            key,
            authority: auth.by_authority,
            expires_unix_ms: auth.expires_at_unix_ms,
        })
    }
}

/// A reader whose grant was checked: the wallet `key`, or the bank's authority reading it.
pub(super) struct Reader {
    pub(super) key: PublicKey,
    authority: bool,
    pub(super) expires_unix_ms: u64,
}

/// What a reader may see of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// Body and witnesses: the payer, or the bank's authority.
    Whole,
    /// The outputs paying the reader, and the memo: a payee.
    Outputs,
}

impl Reader {
    /// What this reader sees of a transfer; `None` if it does not concern them.
    pub(super) fn view(
        &self,
        body: &cbdc_core::TransferBody,
        witnesses: &[([u8; 32], [u8; 64])],
    ) -> Option<View> {
        if self.authority || witnesses.iter().any(|(k, _)| k == self.key.as_bytes()) {
            Some(View::Whole)
        } else if body.outputs.iter().any(|o| concerns(&o.lock, &self.key)) {
            Some(View::Outputs)
        } else {
            None
        }
    }
}

/// Whether `key` may spend or is named by `lock`.
pub(super) fn concerns(lock: &Lock, key: &PublicKey) -> bool {
    match lock {
        Lock::Key(k) => k == key,
        Lock::Hold { payer, payee, .. } => payer == key || payee == key,
        Lock::Mandate {
            owner, merchant, ..
        } => owner == key || merchant == key,
    }
}
