//! Ride holds and subscription mandates: money locked in the payer's own wallet at the
//! payer's bank, which the gateway (holding the merchant's collection key) may move only as
//! the lock allows, checked by the ledger itself.
//!
//! - **Holds** (ride-hailing): the rider signs a transfer creating a `Hold {payer: rider,
//!   payee: the merchant's collection key, expires_at}` output for the estimated fare; the
//!   merchant captures the final fare split between wallets it names (the driver's, its own
//!   fee), the rest back to the rider; or releases it all. From `expires_at` on only the
//!   rider may spend it (the ledger refuses the gateway), so a forgotten hold comes back.
//! - **Mandates** (subscriptions, password-free payments): the owner signs a transfer
//!   creating a `Mandate {owner, merchant: the collection key, per_payment_max, expires_at}`
//!   output; the merchant charges it, at most `per_payment_max` per charge until
//!   `expires_at` (the rest stays under the identical lock: the ledger enforces both); the
//!   owner revokes it at any time by spending it back.
//!
//! Keys: `h\0<merchant>\0<hold_id>` a hold; `md\0<merchant>\0<mandate_id>` a mandate.

mod holds;
mod mandates;

pub use holds::*;
pub use mandates::*;

use cbdc_core::{Amount, Lock, OutPoint, Transfer, Txid, UnixSeconds};
use cbdc_store::TxError;

use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::payments::ledger_error;

/// Splits of one capture, at most.
pub const SPLITS_MAX: usize = 8;
/// A hold or mandate lasts at least this long from its authorisation, and at most
/// [`LOCK_MAX_S`].
pub const LOCK_MIN_S: u64 = 60;
pub const LOCK_MAX_S: u64 = 366 * 24 * 3600;
/// How long the gateway's own transfers stay valid for the ledger.
const VALID_FOR_S: u64 = 300;

fn outpoint_text(o: &OutPoint) -> String {
    format!("{}:{}", o.txid, o.index)
}

fn parse_outpoint(text: &str) -> Result<OutPoint, ApiError> {
    let bad = || ApiError::internal(format!("a stored outpoint {text:?}"));
    let (t, i) = text.split_once(':').ok_or_else(bad)?;
    let txid: [u8; 32] = hex::decode(t)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    Ok(OutPoint {
        txid: Txid(txid),
        index: i.parse().map_err(|_| bad())?,
    })
}

fn stored_amount(text: &str) -> Result<Amount, TxError<ApiError>> {
    Amount::parse(text)
        .map_err(|e| TxError::Abort(ApiError::internal(format!("a stored amount: {e}"))))
}

/// The one output of `t` locked as `wanted` says (naming `field` when there is not exactly
/// one).
fn the_output(
    t: &Transfer,
    field: &str,
    what: &str,
    wanted: impl Fn(&Lock) -> bool,
) -> Result<(u16, cbdc_core::Output), ApiError> {
    let found: Vec<_> = t
        .body()
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| wanted(&o.lock))
        .collect();
    match found.as_slice() {
        [(i, o)] => Ok((*i as u16, **o)),
        [] => Err(ApiError::invalid(field, format!("creates no {what}"))),
        _ => Err(ApiError::invalid(
            field,
            format!("creates more than one {what}"),
        )),
    }
}

impl Gateway {
    fn lock_expiry(&self, field: &str, expires_at: UnixSeconds) -> Result<(), ApiError> {
        let now = self.now();
        if expires_at.0 < now + LOCK_MIN_S || expires_at.0 > now + LOCK_MAX_S {
            return Err(ApiError::invalid(
                field,
                format!("the lock must expire between {LOCK_MIN_S} s and {LOCK_MAX_S} s from now"),
            ));
        }
        Ok(())
    }

    async fn submit_to(
        &self,
        ledger: u32,
        t: &Transfer,
    ) -> Result<cbdc_proto::v1::Committed, ApiError> {
        if !self.ledgers.knows(ledger) {
            return Err(ApiError::invalid(
                "payer_address",
                format!("ledger {ledger}: this gateway does not serve it"),
            ));
        }
        self.ledgers
            .submit(ledger, t)
            .await
            .map_err(|e| ledger_error("transfer", e))
    }
}
