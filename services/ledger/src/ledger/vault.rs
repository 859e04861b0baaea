//! The operator vault: exchanges of deposits for digital currency and back, and
//! redemption to the central bank, each once per request id.

use super::*;

/// Coin selections the vault tries when other payments take its coins first, at most.
pub const VAULT_ATTEMPTS: u32 = 5;
/// While the vault holds fewer coins than this, it splits its change.
pub const VAULT_MIN_COINS: usize = 64;
/// Pieces the vault splits its change into, at most.
pub const VAULT_SPLIT: usize = 8;

/// A number spread evenly by `request_id` and `attempt`, to pick among the vault's coins.
fn spread(request_id: &str, attempt: u32) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::new()
        .chain_update(request_id.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

impl Ledger {
    // ----- the operator vault -----

    /// Pays `amount` from the vault to `to` (a customer exchanging deposits for digital
    /// currency). Done once per request id (`seen`).
    pub async fn pay_from_vault(
        &self,
        to: PublicKey,
        amount: Amount,
        seen: Seen,
    ) -> Result<Committed, ServiceError> {
        self.vault_pay(Address::new(self.id(), to), amount, seen)
            .await
    }

    /// Returns `amount` from the vault to the central bank (redemption): a transfer to
    /// ledger 0, which waits in the outbox until the central bank acknowledges it. Done
    /// once per request id (`seen`).
    pub async fn redeem(&self, amount: Amount, seen: Seen) -> Result<Committed, ServiceError> {
        let Some(cb) = self.inner.settings.central_bank else {
            return Err(ServiceError::FailedPrecondition(
                "this ledger has no central bank key configured".into(),
            ));
        };
        self.vault_pay(
            Address::new(cbdc_core::messages::CENTRAL_BANK, cb),
            amount,
            seen,
        )
        .await
    }

    async fn vault_pay(
        &self,
        to: Address,
        amount: Amount,
        seen: Seen,
    ) -> Result<Committed, ServiceError> {
        if let Some(done) = self.request_done(&seen).await? {
            return Ok(done);
        }
        let request_id = seen.request_id.clone();
        let request_id = request_id.as_str();
        // Another exchange may spend the vault coins this one selected: select again, a
        // bounded number of times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let built = self
                .build_with(
                    self.operator_key(),
                    &[(to, amount)],
                    Vec::new(),
                    0,
                    CoinPolicy::Vault(spread(request_id, attempt)),
                )
                .await
                .map_err(|e| match e {
                    ServiceError::FailedPrecondition(m) => ServiceError::FailedPrecondition(
                        m.replace("from_address", "amount")
                            .replace("insufficient funds", "the vault has insufficient funds"),
                    ),
                    other => other,
                })?;
            let transfer = cbdc_core::transfer::sign_body(built.body, &[&self.inner.operator])?;
            match self.commit(transfer, Some(seen.clone())).await {
                Err(ServiceError::Reject(Reject::InputSpent { .. }))
                    if attempt < VAULT_ATTEMPTS =>
                {
                    continue;
                }
                Err(ServiceError::Reject(Reject::InputSpent { .. })) => {
                    return Err(ServiceError::Unavailable(format!(
                        "the vault's outputs kept changing while paying ({VAULT_ATTEMPTS} attempts); try again"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Takes a wallet's signed payment to the vault of exactly `amount` (a customer
    /// redeeming digital currency for deposits). Done once per request id (`seen`).
    pub async fn redeem_to_vault(
        &self,
        transfer: Transfer,
        amount: Amount,
        seen: Seen,
    ) -> Result<Committed, ServiceError> {
        let vault = Lock::Key(self.operator_key());
        let paid = Amount::checked_sum(
            transfer
                .body()
                .outputs
                .iter()
                .filter(|o| o.ledger == self.id() && o.lock == vault)
                .map(|o| o.value),
        )
        .ok_or(Reject::ValueOverflow)?;
        if paid != amount {
            return Err(ServiceError::InvalidArgument(format!(
                "wallet_transfer: pays the vault {paid}, but amount is {amount}"
            )));
        }
        if let Some(done) = self.request_done(&seen).await? {
            return Ok(done);
        }
        let (t, verdict) = self
            .inner
            .verifier
            .check(vec![transfer])
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
            .remove(0);
        verdict?;
        self.commit(t, Some(seen)).await
    }

    /// The transfer an order already committed: `None` if its id is new, `ALREADY_EXISTS`
    /// if the id was used for other content.
    async fn request_done(&self, seen: &Seen) -> Result<Option<Committed>, ServiceError> {
        let seen = seen.clone();
        let done = self
            .transact(move |_, tx| {
                let seen = seen.clone();
                Box::pin(async move { seen.first_result(tx).await })
            })
            .await?;
        match done {
            None => Ok(None),
            Some(v) => {
                let txid = Txid(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| Corrupt { what: "request" })?,
                );
                self.committed(&txid).await
            }
        }
    }
}
