//! Ride holds: the estimated fare locked for the merchant's collection key, captured with
//! splits or released.

use cbdc_core::{Address, Amount, Lock, TransferBuilder, UnixSeconds};
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use super::{SPLITS_MAX, VALID_FOR_S, outpoint_text, parse_outpoint, stored_amount, the_output};
use crate::auth::Credentials;
use crate::error::ApiError;
use crate::events;
use crate::gateway::{Gateway, decode, get_json, identifier, key, put_json};
use crate::payments::{
    Expected, ExpectedKind, SignedTransferJson, expect, parse_address, parse_amount,
};

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

fn hold_key(m: &str, id: &str) -> Vec<u8> {
    key(&[b"h", m.as_bytes(), id.as_bytes()])
}

impl Gateway {
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
}
