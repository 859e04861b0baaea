//! Wallets: opening with a proof of key possession, reading one, and the operator's
//! freeze, unfreeze and close.

use super::*;

impl Ledger {
    pub async fn open_wallet(
        &self,
        key: PublicKey,
        tier: KycTier,
        phone_hash: Option<[u8; 32]>,
        signature: &[u8],
    ) -> Result<WalletView, ServiceError> {
        if tier == KycTier::Operator {
            return Err(ServiceError::InvalidArgument(
                "tier: the operator tier belongs to the bank's vault and cannot be opened".into(),
            ));
        }
        if tier == KycTier::Class4Anonymous && phone_hash.is_none() {
            return Err(ServiceError::InvalidArgument(
                "phone_hash: the anonymous tier needs the SHA-256 of a phone number".into(),
            ));
        }
        let vk = key
            .verifying_key()
            .map_err(|e| ServiceError::InvalidArgument(format!("public_key: {e}")))?;
        let proof = OpenProof {
            ledger: self.id(),
            key,
        };
        cbdc_core::messages::verify(&vk, &proof, signature).map_err(|e| {
            signature_error(
                e,
                "signature",
                "public_key (proof of key possession)",
                "does not prove possession of public_key (signs \"cbdc/v1/open\" ‖ ledger id ‖ key)",
            )
        })?;
        let now = self.now_ms();
        self.transact(move |me, tx| {
            Box::pin(async move {
                let wk = me.layout().wallet(&key);
                match tx.get(&wk).await? {
                    Some(existing) => {
                        let existing = WalletRecord::decode(&existing).map_err(corrupt)?;
                        if existing.tier != tier {
                            return Err(abort(ServiceError::FailedPrecondition(format!(
                                "public_key: a wallet with this key is already open at tier {:?}",
                                existing.tier
                            ))));
                        }
                    }
                    None => {
                        let record = WalletRecord {
                            status: WalletStatus::Active,
                            tier,
                            opened_at_ms: now,
                            phone_hash,
                        };
                        tx.set(&wk, record.encode())?;
                    }
                }
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
        Ok(WalletView {
            address: Address::new(self.id(), *key),
            tier: record.tier,
            status: record.status,
            balance,
            spent_today,
            unspent_outputs: unspent.max(0) as u64,
        })
    }

    /// Freeze, unfreeze or close, already authenticated by the caller.
    pub async fn set_status(
        &self,
        key: PublicKey,
        target: WalletStatus,
    ) -> Result<WalletView, ServiceError> {
        if key == self.operator_key() {
            return Err(ServiceError::FailedPrecondition(
                "address: the operator vault cannot be frozen or closed".into(),
            ));
        }
        self.transact(move |me, tx| {
                Box::pin(async move {
                    let l = me.layout();
                    let wk = l.wallet(&key);
                    let Some(bytes) = tx.get(&wk).await? else {
                        return Err(abort(ServiceError::NotFound(format!(
                            "address: no wallet {} on ledger {}",
                            Address::new(me.id(), key),
                            me.id().0
                        ))));
                    };
                    let mut record = WalletRecord::decode(&bytes).map_err(corrupt)?;
                    if record.status == target {
                        return Ok(());
                    }
                    if record.status == WalletStatus::Closed {
                        return Err(abort(ServiceError::FailedPrecondition(
                            "address: the wallet is closed".into(),
                        )));
                    }
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
                    Ok(())
                })
            })
            .await?;
        self.wallet(&key).await
    }
}
