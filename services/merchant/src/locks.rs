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

use cbdc_core::{
    Address, Amount, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, Txid, UnixSeconds,
};
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{
    Gateway, Order, OrderStatus, decode, get_json, identifier, key, order_key, put_json,
};
use crate::payments::{
    Expected, ExpectedKind, SignedTransferJson, expect, ledger_error, parse_address, parse_amount,
};
use crate::{events, qr};

/// Splits of one capture, at most.
pub const SPLITS_MAX: usize = 8;
/// A hold or mandate lasts at least this long from its authorisation, and at most
/// [`LOCK_MAX_S`].
pub const LOCK_MIN_S: u64 = 60;
pub const LOCK_MAX_S: u64 = 366 * 24 * 3600;
/// How long the gateway's own transfers stay valid for the ledger.
const VALID_FOR_S: u64 = 300;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldStatus {
    /// Registered, its transfer not yet committed.
    Authorizing,
    Authorized,
    Captured,
    Released,
    /// Its transfer was refused by the ledger.
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Split {
    pub to_address: String,
    pub amount: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Hold {
    pub merchant_id: String,
    pub hold_id: String,
    pub payer_address: String,
    pub amount: String,
    pub captured: String,
    pub status: HoldStatus,
    pub expires_at_unix_s: u64,
    /// The held output, `txid:index`.
    pub outpoint: String,
    pub txid: String,
    #[serde(default)]
    pub splits: Vec<Split>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_txid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_transfer: Option<SignedTransferJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeHold {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub hold_id: String,
    pub payer_address: String,
    pub transfer: SignedTransferJson,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureHold {
    pub splits: Vec<Split>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MandateStatus {
    Creating,
    Active,
    Revoked,
    /// Charged down to nothing.
    Exhausted,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Mandate {
    pub merchant_id: String,
    pub mandate_id: String,
    pub owner_address: String,
    pub per_payment_max: String,
    pub expires_at_unix_s: u64,
    /// What is left under the lock.
    pub remaining: String,
    /// The output holding it, `txid:index` (none once revoked or exhausted).
    pub outpoint: Option<String>,
    pub status: MandateStatus,
    pub charges: u32,
    pub txid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMandate {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub mandate_id: String,
    pub owner_address: String,
    pub transfer: SignedTransferJson,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeMandate {
    #[schema(pattern = "^[A-Za-z0-9_-]{6,32}$", min_length = 6, max_length = 32)]
    pub out_trade_no: String,
    #[schema(pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub amount: String,
    #[serde(default)]
    #[schema(max_length = 127)]
    pub description: String,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeMandate {
    /// The owner's transfer spending the mandate's output back to itself.
    pub transfer: SignedTransferJson,
}

fn hold_key(m: &str, id: &str) -> Vec<u8> {
    key(&[b"h", m.as_bytes(), id.as_bytes()])
}

fn mandate_key(m: &str, id: &str) -> Vec<u8> {
    key(&[b"md", m.as_bytes(), id.as_bytes()])
}

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
        let mut l = self.ledgers.get("payer_address", ledger).await?;
        l.submit(t).await.map_err(|e| ledger_error("transfer", e))
    }

    /// A merchant authorises a hold: the rider's signed transfer locking the estimated fare
    /// for the merchant's collection key. `hold_id` is the idempotency key.
    pub async fn authorize_hold(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<Hold, ApiError> {
        let m = self.merchant_signer(credentials)?;
        let r: AuthorizeHold = decode(body)?;
        identifier("hold_id", &r.hold_id, 6, 32)?;
        let payer = parse_address("payer_address", &r.payer_address)?;
        let t = r.transfer.decode("transfer", &self.keys)?;
        let collection = self.custody.collection(&m).public();
        let (index, out) = the_output(
            &t,
            "transfer",
            "hold for this merchant",
            |l| matches!(l, Lock::Hold { payee, .. } if *payee == collection),
        )?;
        let Lock::Hold {
            payer: holder,
            expires_at,
            ..
        } = out.lock
        else {
            unreachable!("a hold was asked for");
        };
        if holder != payer.key || out.ledger != payer.ledger {
            return Err(ApiError::invalid(
                "payer_address",
                "the hold must be the payer's, on the payer's ledger",
            ));
        }
        if !t.witnesses().iter().any(|w| w.key == payer.key) {
            return Err(ApiError::invalid(
                "payer_address",
                "its key did not sign the transfer",
            ));
        }
        self.lock_expiry("transfer", expires_at)?;
        if !self.ledgers.knows(payer.ledger.0) {
            return Err(ApiError::invalid(
                "payer_address",
                format!("ledger {}: not served here", payer.ledger.0),
            ));
        }
        let hold = Hold {
            merchant_id: m.clone(),
            hold_id: r.hold_id.clone(),
            payer_address: payer.to_string(),
            amount: out.value.to_string(),
            captured: "0.00".into(),
            status: HoldStatus::Authorizing,
            expires_at_unix_s: expires_at.0,
            outpoint: outpoint_text(&t.outpoint(index)),
            txid: t.txid().to_string(),
            splits: Vec::new(),
            settle_txid: None,
            settle_transfer: None,
            failure: None,
        };
        let k = hold_key(&m, &r.hold_id);
        let stored = self
            .once(credentials, {
                let (k, hold) = (k.clone(), hold.clone());
                move |tx| {
                    let (k, hold) = (k.clone(), hold.clone());
                    Box::pin(async move {
                        if let Some(old) = get_json::<Hold>(tx, &k).await? {
                            return if old.txid == hold.txid {
                                Ok(old)
                            } else {
                                Err(TxError::Abort(ApiError::conflict(
                                    "hold_id",
                                    format!("{} was used with another transfer", hold.hold_id),
                                )))
                            };
                        }
                        put_json(tx, k, &hold)?;
                        Ok(hold)
                    })
                }
            })
            .await?;
        if stored.status != HoldStatus::Authorizing {
            return Ok(stored);
        }
        let outcome = self.submit_to(payer.ledger.0, &t).await;
        let now_ms = self.now_ms();
        self.tx(move |tx| {
            let (k, outcome) = (k.clone(), outcome.clone());
            Box::pin(async move {
                let mut h: Hold = get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::internal("the hold vanished")))?;
                if h.status != HoldStatus::Authorizing {
                    return Ok(h);
                }
                match outcome {
                    Ok(_) => {
                        h.status = HoldStatus::Authorized;
                        events::emit(
                            tx,
                            &h.merchant_id,
                            "hold.authorized",
                            &h.hold_id,
                            now_ms,
                            &h,
                        )?;
                    }
                    Err(e) if e.code == "LEDGER_REJECTED" => {
                        h.status = HoldStatus::Failed;
                        h.failure = Some(e.message);
                    }
                    Err(e) => return Err(TxError::Abort(e)),
                }
                put_json(tx, k, &h)?;
                Ok(h)
            })
        })
        .await
    }

    /// Captures a hold: the splits are paid, the rest goes back to the rider (`release`:
    /// no splits, everything back). Capturing again with the same splits answers the same.
    pub async fn settle_hold(
        &self,
        credentials: &Credentials,
        hold_id: &str,
        body: &[u8],
        release: bool,
    ) -> Result<Hold, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("hold_id", hold_id, 6, 32)?;
        let splits = if release {
            Vec::new()
        } else {
            let r: CaptureHold = decode(body)?;
            if r.splits.is_empty() || r.splits.len() > SPLITS_MAX {
                return Err(ApiError::invalid(
                    "splits",
                    format!("1 to {SPLITS_MAX} splits"),
                ));
            }
            r.splits
        };
        let mut paid: Vec<(Address, Amount)> = Vec::new();
        for s in &splits {
            let to = parse_address("splits.to_address", &s.to_address)?;
            let a = parse_amount("splits.amount", &s.amount)?;
            paid.push((to, a));
        }
        let total = Amount::checked_sum(paid.iter().map(|(_, a)| *a))
            .ok_or_else(|| ApiError::invalid("splits", "the amounts overflow"))?;
        let sender = self.sender(&m);
        let _one_at_a_time = sender.lock().await;
        let k = hold_key(&m, hold_id);
        let now = self.now();
        let collection = std::sync::Arc::new(self.custody.collection(&m));
        // Check, build and register the settling transfer in one transaction.
        let (hold, transfer) = self
            .once(credentials, {
                let (k, splits, paid) = (k.clone(), splits.clone(), paid.clone());
                let (collection, keys) = (collection.clone(), self.keys.clone());
                move |tx| {
                    let (k, splits, paid, collection, keys) = (
                        k.clone(),
                        splits.clone(),
                        paid.clone(),
                        collection.clone(),
                        keys.clone(),
                    );
                    Box::pin(async move {
                        let abort = |e| Err(TxError::Abort(e));
                        let mut h: Hold = get_json(tx, &k).await?.ok_or_else(|| {
                            TxError::Abort(ApiError::not_found("hold_id", "no such hold"))
                        })?;
                        let wanted = if release {
                            HoldStatus::Released
                        } else {
                            HoldStatus::Captured
                        };
                        if let Some(t) = &h.settle_transfer {
                            return if h.splits == splits
                                && (h.status == wanted || h.status == HoldStatus::Authorized)
                            {
                                let t = t.decode("transfer", &keys).map_err(TxError::Abort)?;
                                Ok((h, Some(t)))
                            } else {
                                abort(ApiError::precondition(
                                    "hold_id",
                                    format!("the hold is {:?} already", h.status),
                                ))
                            };
                        }
                        if h.status != HoldStatus::Authorized {
                            return abort(ApiError::precondition(
                                "hold_id",
                                format!("the hold is {:?}", h.status),
                            ));
                        }
                        if now >= h.expires_at_unix_s {
                            return abort(ApiError::precondition(
                                "hold_id",
                                "the hold has expired: only the rider may take it back now",
                            ));
                        }
                        let amount = stored_amount(&h.amount)?;
                        if total > amount {
                            return abort(ApiError::precondition(
                                "splits",
                                format!("capture {total} is above the hold's {amount}"),
                            ));
                        }
                        let payer: Address = h
                            .payer_address
                            .parse()
                            .map_err(|_| TxError::Abort(ApiError::internal("a stored address")))?;
                        let outpoint = parse_outpoint(&h.outpoint).map_err(TxError::Abort)?;
                        let memo = format!(
                            "{}:{}:{}",
                            if release { "release" } else { "capture" },
                            h.merchant_id,
                            h.hold_id
                        );
                        let mut b = TransferBuilder::new(UnixSeconds(now + VALID_FOR_S))
                            .memo(memo.into_bytes())
                            .input(outpoint, amount);
                        for (to, a) in &paid {
                            b = b.output(to.ledger, *a, Lock::Key(to.key));
                        }
                        let rest = amount.saturating_sub(total);
                        if !rest.is_zero() {
                            b = b.output(payer.ledger, rest, Lock::Key(payer.key));
                        }
                        let t = b.sign(&[&*collection]).map_err(|e| {
                            TxError::Abort(ApiError::invalid("splits", e.to_string()))
                        })?;
                        expect(
                            tx,
                            &t.txid().to_string(),
                            &Expected {
                                merchant_id: h.merchant_id.clone(),
                                kind: ExpectedKind::Capture,
                                reference: h.hold_id.clone(),
                                payer_address: Some(h.payer_address.clone()),
                            },
                        )
                        .await?;
                        h.splits = splits;
                        h.settle_txid = Some(t.txid().to_string());
                        h.settle_transfer = Some(SignedTransferJson::of(&t));
                        put_json(tx, k.clone(), &h)?;
                        Ok((h, Some(t)))
                    })
                }
            })
            .await?;
        let Some(transfer) = transfer else {
            return Ok(hold);
        };
        if hold.status != HoldStatus::Authorized {
            return Ok(hold);
        }
        let payer: Address = parse_address("payer_address", &hold.payer_address)?;
        let outcome = self.submit_to(payer.ledger.0, &transfer).await;
        let now_ms = self.now_ms();
        let credited_here = paid
            .iter()
            .filter(|(to, _)| {
                *to == Address::new(to.ledger, collection.public()) && to.ledger == payer.ledger
            })
            .map(|(_, a)| *a);
        let own_share = Amount::checked_sum(credited_here).unwrap_or(Amount::ZERO);
        let h = self
            .tx(move |tx| {
                let (k, outcome) = (k.clone(), outcome.clone());
                Box::pin(async move {
                    let mut h: Hold = get_json(tx, &k)
                        .await?
                        .ok_or_else(|| TxError::Abort(ApiError::internal("the hold vanished")))?;
                    if h.status != HoldStatus::Authorized {
                        return Ok(h);
                    }
                    match outcome {
                        Ok(_) => {
                            h.status = if release {
                                HoldStatus::Released
                            } else {
                                HoldStatus::Captured
                            };
                            h.captured = total.to_string();
                            let kind = if release {
                                "hold.released"
                            } else {
                                "hold.captured"
                            };
                            events::emit(tx, &h.merchant_id, kind, &h.hold_id, now_ms, &h)?;
                        }
                        Err(e) if e.code == "LEDGER_REJECTED" => {
                            // Not settled (spent by the rider after expiry, say): free the
                            // registration so the merchant sees why.
                            h.settle_txid = None;
                            h.settle_transfer = None;
                            h.splits.clear();
                            h.failure = Some(e.message.clone());
                            put_json(tx, k.clone(), &h)?;
                            return Err(TxError::Abort(e));
                        }
                        Err(e) => return Err(TxError::Abort(e)),
                    }
                    put_json(tx, k, &h)?;
                    Ok(h)
                })
            })
            .await?;
        // The merchant's own share paid on the same ledger is credited by this commit; one
        // paid across ledgers is counted when it arrives.
        if !own_share.is_zero()
            && let Some(txid) = &h.settle_txid
        {
            let memo = format!("capture:{}:{}", h.merchant_id, h.hold_id);
            self.credit(&m, txid, own_share, memo.as_bytes(), now_ms)
                .await?;
        }
        Ok(h)
    }

    pub async fn get_hold(
        &self,
        credentials: &Credentials,
        hold_id: &str,
    ) -> Result<Hold, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("hold_id", hold_id, 6, 32)?;
        let k = hold_key(&m, hold_id);
        self.once(credentials, move |tx| {
            let k = k.clone();
            Box::pin(async move {
                get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::not_found("hold_id", "no such hold")))
            })
        })
        .await
    }

    /// A merchant registers a mandate: the owner's signed transfer funding a mandate output
    /// for the merchant's collection key. `mandate_id` is the idempotency key.
    pub async fn create_mandate(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<Mandate, ApiError> {
        let m = self.merchant_signer(credentials)?;
        let r: CreateMandate = decode(body)?;
        identifier("mandate_id", &r.mandate_id, 6, 32)?;
        let owner = parse_address("owner_address", &r.owner_address)?;
        let t = r.transfer.decode("transfer", &self.keys)?;
        let collection = self.custody.collection(&m).public();
        let (index, out) = the_output(
            &t,
            "transfer",
            "mandate for this merchant",
            |l| matches!(l, Lock::Mandate { merchant, .. } if *merchant == collection),
        )?;
        let Lock::Mandate {
            owner: holder,
            per_payment_max,
            expires_at,
            ..
        } = out.lock
        else {
            unreachable!("a mandate was asked for");
        };
        if holder != owner.key || out.ledger != owner.ledger {
            return Err(ApiError::invalid(
                "owner_address",
                "the mandate must be the owner's, on the owner's ledger",
            ));
        }
        if !t.witnesses().iter().any(|w| w.key == owner.key) {
            return Err(ApiError::invalid(
                "owner_address",
                "its key did not sign the transfer",
            ));
        }
        if per_payment_max.is_zero() {
            return Err(ApiError::invalid(
                "transfer",
                "the mandate's per-payment maximum is 0.00",
            ));
        }
        self.lock_expiry("transfer", expires_at)?;
        if !self.ledgers.knows(owner.ledger.0) {
            return Err(ApiError::invalid(
                "owner_address",
                format!("ledger {}: not served here", owner.ledger.0),
            ));
        }
        let mandate = Mandate {
            merchant_id: m.clone(),
            mandate_id: r.mandate_id.clone(),
            owner_address: owner.to_string(),
            per_payment_max: per_payment_max.to_string(),
            expires_at_unix_s: expires_at.0,
            remaining: out.value.to_string(),
            outpoint: Some(outpoint_text(&t.outpoint(index))),
            status: MandateStatus::Creating,
            charges: 0,
            txid: t.txid().to_string(),
            failure: None,
        };
        let k = mandate_key(&m, &r.mandate_id);
        let stored = self
            .once(credentials, {
                let (k, mandate) = (k.clone(), mandate.clone());
                move |tx| {
                    let (k, mandate) = (k.clone(), mandate.clone());
                    Box::pin(async move {
                        if let Some(old) = get_json::<Mandate>(tx, &k).await? {
                            return if old.txid == mandate.txid {
                                Ok(old)
                            } else {
                                Err(TxError::Abort(ApiError::conflict(
                                    "mandate_id",
                                    format!(
                                        "{} was used with another transfer",
                                        mandate.mandate_id
                                    ),
                                )))
                            };
                        }
                        put_json(tx, k, &mandate)?;
                        Ok(mandate)
                    })
                }
            })
            .await?;
        if stored.status != MandateStatus::Creating {
            return Ok(stored);
        }
        let outcome = self.submit_to(owner.ledger.0, &t).await;
        let now_ms = self.now_ms();
        self.tx(move |tx| {
            let (k, outcome) = (k.clone(), outcome.clone());
            Box::pin(async move {
                let mut md: Mandate = get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::internal("the mandate vanished")))?;
                if md.status != MandateStatus::Creating {
                    return Ok(md);
                }
                match outcome {
                    Ok(_) => {
                        md.status = MandateStatus::Active;
                        events::emit(
                            tx,
                            &md.merchant_id,
                            "mandate.created",
                            &md.mandate_id,
                            now_ms,
                            &md,
                        )?;
                    }
                    Err(e) if e.code == "LEDGER_REJECTED" => {
                        md.status = MandateStatus::Failed;
                        md.failure = Some(e.message);
                    }
                    Err(e) => return Err(TxError::Abort(e)),
                }
                put_json(tx, k, &md)?;
                Ok(md)
            })
        })
        .await
    }

    /// A merchant charges a mandate: an order `out_trade_no`, paid from the mandate at once.
    pub async fn charge_mandate(
        &self,
        credentials: &Credentials,
        mandate_id: &str,
        body: &[u8],
    ) -> Result<Order, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("mandate_id", mandate_id, 6, 32)?;
        let r: ChargeMandate = decode(body)?;
        identifier("out_trade_no", &r.out_trade_no, 6, 32)?;
        let amount = parse_amount("amount", &r.amount)?;
        if r.description.len() > crate::gateway::DESCRIPTION_MAX
            || r.description.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "description",
                "at most 127 bytes, no control characters",
            ));
        }
        let merchant = self
            .merchant(&m)
            .await?
            .ok_or_else(|| ApiError::not_found("merchant_id", "not onboarded"))?;
        let collection = std::sync::Arc::new(self.custody.collection(&m));
        let sender = self.sender(&m);
        let _one_at_a_time = sender.lock().await;
        let (mk, ok) = (mandate_key(&m, mandate_id), order_key(&m, &r.out_trade_no));
        let now = self.now();
        let now_ms = self.now_ms();
        let network = self.network.clone();
        let (order, transfer, owner_ledger) = self
            .once(credentials, {
                let (mk, ok, r, merchant, collection) = (
                    mk.clone(),
                    ok.clone(),
                    r.clone(),
                    merchant.clone(),
                    collection.clone(),
                );
                move |tx| {
                    let (mk, ok, r, merchant, collection, network) = (
                        mk.clone(),
                        ok.clone(),
                        r.clone(),
                        merchant.clone(),
                        collection.clone(),
                        network.clone(),
                    );
                    Box::pin(async move {
                        let abort = |e| Err(TxError::Abort(e));
                        let md: Mandate = get_json(tx, &mk).await?.ok_or_else(|| {
                            TxError::Abort(ApiError::not_found("mandate_id", "no such mandate"))
                        })?;
                        let owner: Address = md
                            .owner_address
                            .parse()
                            .map_err(|_| TxError::Abort(ApiError::internal("a stored address")))?;
                        if let Some(old) = get_json::<Order>(tx, &ok).await? {
                            let same = old.amount == amount.to_string()
                                && old.memo
                                    == format!("charge:{}:{}", md.merchant_id, md.mandate_id);
                            return if same {
                                Ok((old, None, owner.ledger))
                            } else {
                                abort(ApiError::conflict(
                                    "out_trade_no",
                                    format!("{} was used with other content", r.out_trade_no),
                                ))
                            };
                        }
                        if md.status != MandateStatus::Active {
                            return abort(ApiError::precondition(
                                "mandate_id",
                                format!("the mandate is {:?}", md.status),
                            ));
                        }
                        if now >= md.expires_at_unix_s {
                            return abort(ApiError::precondition(
                                "mandate_id",
                                "the mandate has expired",
                            ));
                        }
                        let max = stored_amount(&md.per_payment_max)?;
                        if amount > max {
                            return abort(ApiError::precondition(
                                "amount",
                                format!(
                                    "{amount} is above the mandate's per-payment maximum {max}"
                                ),
                            ));
                        }
                        let remaining = stored_amount(&md.remaining)?;
                        if amount > remaining {
                            return abort(ApiError::precondition(
                                "amount",
                                format!("{amount} is above what the mandate holds, {remaining}"),
                            ));
                        }
                        let Some(outpoint) = &md.outpoint else {
                            return abort(ApiError::precondition(
                                "mandate_id",
                                "the mandate holds nothing",
                            ));
                        };
                        let outpoint = parse_outpoint(outpoint).map_err(TxError::Abort)?;
                        let memo = format!("charge:{}:{}", md.merchant_id, md.mandate_id);
                        let lock = Lock::Mandate {
                            owner: owner.key,
                            merchant: collection.public(),
                            per_payment_max: max,
                            expires_at: UnixSeconds(md.expires_at_unix_s),
                        };
                        let mut b = TransferBuilder::new(UnixSeconds(now + VALID_FOR_S))
                            .memo(memo.clone().into_bytes())
                            .input(outpoint, remaining)
                            .output(
                                LedgerId(merchant.bank),
                                amount,
                                Lock::Key(collection.public()),
                            );
                        let rest = remaining.saturating_sub(amount);
                        if !rest.is_zero() {
                            b = b.output(owner.ledger, rest, lock);
                        }
                        let t = b.sign(&[&*collection]).map_err(|e| {
                            TxError::Abort(ApiError::invalid("amount", e.to_string()))
                        })?;
                        let txid = t.txid().to_string();
                        expect(
                            tx,
                            &txid,
                            &Expected {
                                merchant_id: md.merchant_id.clone(),
                                kind: ExpectedKind::Charge,
                                reference: r.out_trade_no.clone(),
                                payer_address: Some(md.owner_address.clone()),
                            },
                        )
                        .await?;
                        let order = Order {
                            merchant_id: md.merchant_id.clone(),
                            out_trade_no: r.out_trade_no.clone(),
                            amount: amount.to_string(),
                            description: r.description.clone(),
                            status: OrderStatus::Created,
                            created_at_unix_s: now,
                            expires_at_unix_s: now + VALID_FOR_S,
                            payment_uri: qr::payment_uri(
                                &merchant.collection_address,
                                &amount.to_string(),
                                &memo,
                                &network,
                            ),
                            memo,
                            txid: None,
                            paid_at_unix_ms: None,
                            payer_address: Some(md.owner_address.clone()),
                            pending_txid: Some(txid),
                            refunded: "0.00".into(),
                        };
                        put_json(tx, ok.to_vec(), &order)?;
                        Ok((order, Some(t), owner.ledger))
                    })
                }
            })
            .await?;
        let Some(transfer) = transfer else {
            return Ok(order);
        };
        let outcome = self.submit_to(owner_ledger.0, &transfer).await;
        let order = self
            .tx(move |tx| {
                let (mk, ok, outcome, transfer_txid) =
                    (mk.clone(), ok.clone(), outcome.clone(), transfer.txid());
                Box::pin(async move {
                    let mut md: Mandate = get_json(tx, &mk).await?.ok_or_else(|| {
                        TxError::Abort(ApiError::internal("the mandate vanished"))
                    })?;
                    let mut order: Order = get_json(tx, &ok)
                        .await?
                        .ok_or_else(|| TxError::Abort(ApiError::internal("the order vanished")))?;
                    if order.status != OrderStatus::Created {
                        return Ok(order);
                    }
                    match outcome {
                        Ok(c) => {
                            let remaining = stored_amount(&md.remaining)?.saturating_sub(amount);
                            md.remaining = remaining.to_string();
                            md.charges += 1;
                            md.outpoint = (!remaining.is_zero()).then(|| {
                                outpoint_text(&OutPoint {
                                    txid: transfer_txid,
                                    index: 1,
                                })
                            });
                            if remaining.is_zero() {
                                md.status = MandateStatus::Exhausted;
                            }
                            order.status = OrderStatus::Paid;
                            order.txid = order.pending_txid.take();
                            order.paid_at_unix_ms = Some(c.committed_at_unix_ms);
                            events::emit(
                                tx,
                                &md.merchant_id,
                                "mandate.charged",
                                &order.out_trade_no,
                                now_ms,
                                &order,
                            )?;
                            put_json(tx, mk, &md)?;
                            put_json(tx, ok, &order)?;
                            Ok(order)
                        }
                        Err(e) if e.code == "LEDGER_REJECTED" => {
                            // The owner spent it (revoked at the ledger), or it expired.
                            md.status = MandateStatus::Revoked;
                            md.outpoint = None;
                            md.failure = Some(e.message.clone());
                            order.status = OrderStatus::Closed;
                            put_json(tx, mk, &md)?;
                            put_json(tx, ok, &order)?;
                            events::emit(
                                tx,
                                &md.merchant_id,
                                "mandate.revoked",
                                &md.mandate_id,
                                now_ms,
                                &md,
                            )?;
                            Err(TxError::Abort(ApiError::precondition(
                                "mandate_id",
                                format!("the ledger refused the charge: {}", e.message),
                            )))
                        }
                        Err(e) => Err(TxError::Abort(e)),
                    }
                })
            })
            .await?;
        if owner_ledger.0 == merchant.bank
            && order.status == OrderStatus::Paid
            && let Some(txid) = &order.txid
        {
            self.credit(
                &m,
                txid,
                amount,
                order.memo.as_bytes(),
                order.paid_at_unix_ms.unwrap_or(now_ms),
            )
            .await?;
        }
        Ok(order)
    }

    pub async fn get_mandate(
        &self,
        credentials: &Credentials,
        mandate_id: &str,
    ) -> Result<Mandate, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("mandate_id", mandate_id, 6, 32)?;
        let k = mandate_key(&m, mandate_id);
        self.once(credentials, move |tx| {
            let k = k.clone();
            Box::pin(async move {
                get_json(tx, &k).await?.ok_or_else(|| {
                    TxError::Abort(ApiError::not_found("mandate_id", "no such mandate"))
                })
            })
        })
        .await
    }

    /// The owner revokes a mandate by spending its output back (the transfer is the owner's
    /// signature: no merchant credentials are needed, and none can stop it).
    pub async fn revoke_mandate(
        &self,
        merchant_id: &str,
        mandate_id: &str,
        body: &[u8],
    ) -> Result<Mandate, ApiError> {
        identifier("merchant_id", merchant_id, 1, 32)?;
        identifier("mandate_id", mandate_id, 6, 32)?;
        let r: RevokeMandate = decode(body)?;
        let t = r.transfer.decode("transfer", &self.keys)?;
        let sender = self.sender(merchant_id);
        let _one_at_a_time = sender.lock().await;
        let k = mandate_key(merchant_id, mandate_id);
        let md: Mandate = {
            let k = k.clone();
            self.tx(move |tx| {
                let k = k.clone();
                Box::pin(async move {
                    get_json(tx, &k).await?.ok_or_else(|| {
                        TxError::Abort(ApiError::not_found("mandate_id", "no such mandate"))
                    })
                })
            })
            .await?
        };
        let owner = parse_address("owner_address", &md.owner_address)?;
        if md.status == MandateStatus::Revoked {
            return Ok(md);
        }
        let Some(outpoint) = md.outpoint.as_deref().map(parse_outpoint).transpose()? else {
            return Err(ApiError::precondition(
                "mandate_id",
                format!("the mandate is {:?}", md.status),
            ));
        };
        if !t.body().inputs.iter().any(|i| i.outpoint == outpoint) {
            return Err(ApiError::invalid(
                "transfer",
                "does not spend the mandate's output",
            ));
        }
        if !t.witnesses().iter().any(|w| w.key == owner.key) {
            return Err(ApiError::invalid(
                "transfer",
                "the mandate's owner did not sign it",
            ));
        }
        self.submit_to(owner.ledger.0, &t).await?;
        let now_ms = self.now_ms();
        self.tx(move |tx| {
            let k = k.clone();
            Box::pin(async move {
                let mut md: Mandate = get_json(tx, &k)
                    .await?
                    .ok_or_else(|| TxError::Abort(ApiError::internal("the mandate vanished")))?;
                if md.status == MandateStatus::Revoked {
                    return Ok(md);
                }
                md.status = MandateStatus::Revoked;
                md.outpoint = None;
                md.remaining = "0.00".into();
                events::emit(
                    tx,
                    &md.merchant_id,
                    "mandate.revoked",
                    &md.mandate_id,
                    now_ms,
                    &md,
                )?;
                put_json(tx, k, &md)?;
                Ok(md)
            })
        })
        .await
    }
}
