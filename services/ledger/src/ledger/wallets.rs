//! Wallets: opening (anonymous, with a proof of key possession and a phone number), reading
//! one, and the bank authority's orders on them: freeze, unfreeze, close and tier changes,
//! each done once per request id.

use cbdc_core::messages::OperatorOrder;

use super::*;

/// Tier changes listed with a wallet, at most (they are rare: one per identity check).
pub const TIER_CHANGES_MAX: usize = 256;

/// A change of a wallet's tier by the bank's authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierChange {
    pub from: KycTier,
    pub to: KycTier,
    pub reason: String,
    pub request_id: String,
    pub at_ms: u64,
}

/// Checks `phone` is an E.164 number: `+`, then 8 to 15 digits, the first not 0.
fn e164(phone: &str) -> Result<(), ServiceError> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "phone_number: {:?} is not an E.164 number (+, then 8 to 15 digits)",
            phone.chars().take(32).collect::<String>()
        )))
    }
}

/// A closed wallet takes no more orders.
fn open_or_refuse(record: &WalletRecord) -> Result<(), TxError<ServiceError>> {
    if record.status == WalletStatus::Closed {
        return Err(abort(ServiceError::FailedPrecondition(
            "address: the wallet is closed".into(),
        )));
    }
    Ok(())
}

impl Ledger {
    /// `key`'s wallet record, read with a conflict inside `tx`; `NOT_FOUND` if none.
    async fn wallet_record(
        &self,
        tx: &mut Transaction,
        key: &PublicKey,
    ) -> Result<WalletRecord, TxError<ServiceError>> {
        let Some(bytes) = tx.get(&self.layout().wallet(key)).await? else {
            return Err(abort(ServiceError::NotFound(format!(
                "address: no wallet {} on ledger {}",
                Address::new(self.id(), *key),
                self.id().0
            ))));
        };
        WalletRecord::decode(&bytes).map_err(corrupt)
    }

    /// The keyed hash of a phone number under this bank's secret.
    pub fn phone_hash(&self, phone: &str) -> [u8; 32] {
        use hmac::{KeyInit, Mac};
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(self.inner.settings.phone_key.as_slice())
                .expect("HMAC takes any key length");
        mac.update(phone.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Opens an anonymous wallet for `key` with `phone`, once per phone number on this
    /// bank. Opening again with the same key and number answers with the wallet.
    pub async fn open_wallet(
        &self,
        key: PublicKey,
        network: &str,
        phone: &str,
        signature: &[u8],
    ) -> Result<WalletView, ServiceError> {
        if network != self.inner.settings.network {
            return Err(ServiceError::InvalidArgument(format!(
                "network: {:?}, this is network {:?}",
                network.chars().take(64).collect::<String>(),
                self.inner.settings.network
            )));
        }
        e164(phone)?;
        let vk = key
            .checked_key()
            .map_err(|e| ServiceError::InvalidArgument(format!("public_key: {e}")))?;
        let proof = OpenProof {
            network,
            ledger: self.id(),
            key,
            phone,
        };
        cbdc_core::messages::verify(&vk, &proof, signature).map_err(|e| {
            signature_error(
                e,
                "signature",
                "public_key (proof of key possession)",
                "does not prove possession of public_key (signs the network, ledger id, key and phone number)",
            )
        })?;
        if key == self.operator_key() {
            return Err(ServiceError::InvalidArgument(
                "public_key: the operator vault's key cannot open a wallet".into(),
            ));
        }
        let phone_hash = self.phone_hash(phone);
        let now = self.now_ms();
        self.transact(move |me, tx| {
            Box::pin(async move {
                let l = me.layout();
                let wk = l.wallet(&key);
                if let Some(existing) = tx.get(&wk).await? {
                    let existing = WalletRecord::decode(&existing).map_err(corrupt)?;
                    if existing.phone_hash != Some(phone_hash) {
                        return Err(abort(ServiceError::AlreadyExists(
                            "public_key: a wallet with this key is already open with another phone number"
                                .into(),
                        )));
                    }
                    return Ok(());
                }
                let pk = l.phone(&phone_hash);
                if tx.get(&pk).await?.is_some() {
                    return Err(abort(ServiceError::AlreadyExists(
                        "phone_number: this number has already opened an anonymous wallet at this bank"
                            .into(),
                    )));
                }
                let record = WalletRecord {
                    status: WalletStatus::Active,
                    tier: KycTier::Class4Anonymous,
                    opened_at_ms: now,
                    phone_hash: Some(phone_hash),
                };
                tx.set(&wk, record.encode())?;
                tx.set(&pk, key.as_bytes())?;
                Ok(())
            })
        })
        .await?;
        self.wallet(&key).await
    }

    /// A wallet's state, read at one snapshot.
    pub async fn wallet(&self, key: &PublicKey) -> Result<WalletView, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let l = self.layout();
        let record = tx.get_snapshot(&l.wallet(key)).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "address: no wallet {} on ledger {}",
                Address::new(self.id(), *key),
                self.id().0
            ))
        })?;
        let record = WalletRecord::decode(&record)?;
        let balance = counter_amount(tx.get_snapshot(&l.balance(key)).await?.as_deref())?;
        let spent_today = counter_amount(
            tx.get_snapshot(&l.daily(key, self.day(self.now_ms())))
                .await?
                .as_deref(),
        )?;
        let unspent = counter(tx.get_snapshot(&l.utxo_count(key)).await?.as_deref());
        let (b, e) = l.tier_changes(key);
        let tier_changes = tx
            .get_range(&b, &e, RangeOptions::snapshot(TIER_CHANGES_MAX))
            .await?
            .iter()
            .map(|(k, v)| {
                let (at_ms, request_id) = l.tier_change_parts(k).ok_or(Corrupt {
                    what: "tier change key",
                })?;
                let (from, to, reason) = crate::records::decode_tier_change(v)?;
                Ok(TierChange {
                    from,
                    to,
                    reason,
                    request_id,
                    at_ms,
                })
            })
            .collect::<Result<Vec<_>, Corrupt>>()?;
        Ok(WalletView {
            address: Address::new(self.id(), *key),
            tier: record.tier,
            status: record.status,
            balance,
            spent_today,
            unspent_outputs: unspent.max(0) as u64,
            tier_changes,
        })
    }

    /// Freeze, unfreeze or close, by an order already authenticated by the caller; done
    /// once per request id (`seen`): sent again, it changes nothing and answers with the
    /// wallet as it is.
    pub async fn set_status(
        &self,
        key: PublicKey,
        target: WalletStatus,
        seen: Seen,
    ) -> Result<WalletView, ServiceError> {
        if key == self.operator_key() {
            return Err(ServiceError::FailedPrecondition(
                "address: the operator vault cannot be frozen or closed".into(),
            ));
        }
        self.transact(move |me, tx| {
                let seen = seen.clone();
                Box::pin(async move {
                    if seen.first_result(tx).await?.is_some() {
                        return Ok(());
                    }
                    let l = me.layout();
                    let wk = l.wallet(&key);
                    let mut record = me.wallet_record(tx, &key).await?;
                    if record.status != target {
                        open_or_refuse(&record)?;
                        if target == WalletStatus::Closed {
                            let balance = counter(tx.get(&l.balance(&key)).await?.as_deref());
                            let outputs = counter(tx.get(&l.utxo_count(&key)).await?.as_deref());
                            if balance != 0 || outputs != 0 {
                                return Err(abort(ServiceError::FailedPrecondition(format!(
                                    "address: a wallet closes only at zero balance; it holds {} in {outputs} outputs",
                                    Amount::from_fen(balance.max(0) as u64)
                                ))));
                            }
                        }
                        record.status = target;
                        tx.set(&wk, record.encode())?;
                    }
                    seen.record(tx, &[])?;
                    Ok(())
                })
            })
            .await?;
        self.wallet(&key).await
    }

    /// Moves a wallet to `tier` by an order of the bank's authority (already checked by
    /// the caller), after the identity check `reason` names; recorded with the wallet and
    /// done once per request id.
    pub async fn set_tier(
        &self,
        key: PublicKey,
        tier: KycTier,
        reason: &str,
        seen: Seen,
    ) -> Result<WalletView, ServiceError> {
        if tier == KycTier::Operator {
            return Err(ServiceError::InvalidArgument(
                "tier: the operator tier belongs to the bank's vault".into(),
            ));
        }
        if key == self.operator_key() {
            return Err(ServiceError::FailedPrecondition(
                "address: the operator vault has no KYC tier to change".into(),
            ));
        }
        if reason.is_empty() || reason.len() > 256 {
            return Err(ServiceError::InvalidArgument(
                "reason: the identity check's reference is required, at most 256 bytes".into(),
            ));
        }
        let now = self.now_ms();
        let reason = reason.to_string();
        let (line, stamp) = self
            .transact_stamped(move |me, tx| {
                let seen = seen.clone();
                let reason = reason.clone();
                Box::pin(async move {
                    if seen.first_result(tx).await?.is_some() {
                        return Ok(None);
                    }
                    let l = me.layout();
                    let wk = l.wallet(&key);
                    let mut record = me.wallet_record(tx, &key).await?;
                    open_or_refuse(&record)?;
                    let mut line = None;
                    if record.tier != tier {
                        tx.set(
                            l.tier_change(&key, now, &seen.request_id),
                            crate::records::encode_tier_change(record.tier, tier, &reason),
                        )?;
                        // The wallet's history shows the change, in order with its payments.
                        let history = HistoryRecord::tier_change(
                            crate::records::TierNote {
                                from: record.tier,
                                to: tier,
                                request_id: seen.request_id.clone(),
                                reason: reason.clone(),
                            },
                            now,
                        );
                        plan::write(tx, vec![plan::history_write(l, &key, &history, 0)])?;
                        line = Some(history);
                        record.tier = tier;
                        tx.set(&wk, record.encode())?;
                    }
                    seen.record(tx, &[])?;
                    Ok(line)
                })
            })
            .await
            .map_err(|e| match e {
                TxError::Abort(e) => e,
                TxError::Store(e) => e.into(),
            })?;
        if let Some(line) = line {
            self.inner.events.publish(Arc::new(CommitEvent {
                position: position(stamp.0, 0),
                lines: vec![(key, line)],
            }));
        }
        self.wallet(&key).await
    }

    /// Checks and applies an order to freeze, unfreeze or close.
    pub async fn wallet_order(
        &self,
        order: &OperatorOrder<'_>,
        signature: &[u8],
        key: PublicKey,
        target: WalletStatus,
    ) -> Result<WalletView, ServiceError> {
        self.check_authority(order, signature)?;
        self.set_status(key, target, self.seen(order)).await
    }
}

#[cfg(test)]
mod tests {
    use super::e164;

    #[test]
    fn phone_numbers_are_e164() {
        for ok in ["+8613800000000", "+12025550123", "+44207946095"] {
            assert!(e164(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "8613800000000",
            "+",
            "+0613800000000",
            "+86 138 0000 0000",
            "+861380000000000000",
            "+1234567",
            "+86138000000a0",
        ] {
            assert!(e164(bad).is_err(), "{bad:?}");
        }
    }
}
