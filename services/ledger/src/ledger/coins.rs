//! Coin selection: building an unsigned transfer from a wallet's unspent outputs.

use super::*;

/// Owner-index rows examined by coin selection, at most.
pub const COIN_SCAN_MAX: usize = 1000;

/// How coins are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CoinPolicy {
    /// Largest first, one change output: few inputs, few outputs.
    Wallet,
    /// One covering coin picked by the given spread (a hash of the request), change split
    /// while coins are few: many concurrent payments from one vault rarely pick the same
    /// coin, and a replayed request picks the same way.
    Vault(u64),
}

impl Ledger {
    /// A page of `owner`'s unspent outputs in outpoint order, after `after`: at most
    /// `limit` owner-index rows are read, and an output no longer unspent is skipped.
    pub async fn list_coins(
        &self,
        owner: &PublicKey,
        after: Option<OutPoint>,
        limit: usize,
    ) -> Result<Vec<(OutPoint, Output)>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let (mut b, e) = self.layout().owned_range(owner);
        if let Some(after) = after {
            // The first key after `after`'s.
            b = self.layout().owned(owner, &after);
            b.push(0);
        }
        let rows = tx.get_range(&b, &e, RangeOptions::snapshot(limit)).await?;
        let mut coins = Vec::with_capacity(rows.len());
        for (k, _) in rows {
            let outpoint = self.layout().owned_outpoint(&k).ok_or(Corrupt {
                what: "owner index",
            })?;
            if let Some(v) = tx.get_snapshot(&self.layout().output(&outpoint)).await?
                && let OutputState::Unspent(o) = OutputState::decode(&v)?
            {
                coins.push((outpoint, o));
            }
        }
        Ok(coins)
    }

    /// Coin selection over `from`'s unspent outputs (largest first among the first
    /// [`COIN_SCAN_MAX`]), paying `payments` and returning the change to `from`.
    pub async fn build(
        &self,
        from: PublicKey,
        payments: &[(Address, Amount)],
        memo: Vec<u8>,
        valid_for_s: u64,
    ) -> Result<Built, ServiceError> {
        self.build_with(from, payments, memo, valid_for_s, CoinPolicy::Wallet)
            .await
    }

    pub(super) async fn build_with(
        &self,
        from: PublicKey,
        payments: &[(Address, Amount)],
        memo: Vec<u8>,
        valid_for_s: u64,
        policy: CoinPolicy,
    ) -> Result<Built, ServiceError> {
        if payments.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "payments: at least one payment is needed".into(),
            ));
        }
        if payments.len() + 1 > cbdc_core::transfer::MAX_OUTPUTS {
            return Err(ServiceError::InvalidArgument(format!(
                "payments: {} payments; at most {} fit one transfer with change",
                payments.len(),
                cbdc_core::transfer::MAX_OUTPUTS - 1
            )));
        }
        if memo.len() > cbdc_core::transfer::MAX_MEMO_BYTES {
            return Err(ServiceError::InvalidArgument(format!(
                "memo: {} bytes; at most {} are allowed",
                memo.len(),
                cbdc_core::transfer::MAX_MEMO_BYTES
            )));
        }
        let total = Amount::checked_sum(payments.iter().map(|(_, a)| *a)).ok_or_else(|| {
            ServiceError::InvalidArgument("payments: amounts overflow when summed".into())
        })?;
        let (coins, held) = self.coins(&from, total, policy).await?;
        let valid_for = if valid_for_s == 0 {
            self.inner.settings.default_valid_for_s
        } else {
            valid_for_s.min(86_400)
        };
        let mut body = TransferBody {
            inputs: coins
                .iter()
                .map(|(o, out)| Input {
                    outpoint: *o,
                    value: out.value,
                })
                .collect(),
            outputs: payments
                .iter()
                .map(|(to, amount)| Output {
                    ledger: to.ledger,
                    value: *amount,
                    lock: Lock::Key(to.key),
                })
                .collect(),
            memo,
            valid_until: UnixSeconds(self.now_ms() / 1000 + valid_for),
        };
        let gathered = Amount::checked_sum(coins.iter().map(|(_, o)| o.value))
            .ok_or_else(|| ServiceError::Internal("wallet outputs overflow".into()))?;
        let change = gathered.saturating_sub(total);
        // The vault splits its change while it holds few coins, so that concurrent exchanges
        // find different coins to spend instead of queueing on one.
        let pieces = match policy {
            CoinPolicy::Vault(_) if held < VAULT_MIN_COINS => VAULT_SPLIT
                .min(cbdc_core::transfer::MAX_OUTPUTS - body.outputs.len())
                .min(usize::try_from(change.fen()).unwrap_or(usize::MAX))
                .max(1),
            _ => 1,
        };
        if !change.is_zero() {
            let piece = change.fen() / pieces as u64;
            for i in 0..pieces {
                let value = if i + 1 == pieces {
                    change.fen() - piece * (pieces as u64 - 1)
                } else {
                    piece
                };
                body.outputs.push(Output {
                    ledger: self.id(),
                    value: Amount::from_fen(value),
                    lock: Lock::Key(from),
                });
            }
        }
        let bytes = body.encode();
        Ok(Built {
            txid: Txid::of_body(&bytes),
            body: bytes,
            inputs: coins,
        })
    }

    /// Unspent outputs of `owner` locked to its key alone, worth at least `total`, and how
    /// many such outputs the owner holds (among the first [`COIN_SCAN_MAX`]).
    async fn coins(
        &self,
        owner: &PublicKey,
        total: Amount,
        policy: CoinPolicy,
    ) -> Result<(Vec<(OutPoint, Output)>, usize), ServiceError> {
        let mut candidates = self.list_coins(owner, None, COIN_SCAN_MAX).await?;
        candidates.retain(|(_, o)| o.lock == Lock::Key(*owner));
        let held = candidates.len();
        if let CoinPolicy::Vault(spread) = policy {
            // Any one coin that covers the payment, picked by the request's spread:
            // concurrent exchanges rarely pick the same one.
            let covering: Vec<_> = candidates.iter().filter(|c| c.1.value >= total).collect();
            if !covering.is_empty() {
                let pick = (spread % covering.len() as u64) as usize;
                return Ok((vec![*covering[pick]], held));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.1.value));
        let mut chosen = Vec::new();
        let mut sum = Amount::ZERO;
        for c in candidates {
            if sum >= total {
                break;
            }
            if chosen.len() == cbdc_core::transfer::MAX_INPUTS {
                return Err(ServiceError::FailedPrecondition(format!(
                    "from_address: paying {total} needs more than {} outputs; consolidate first",
                    cbdc_core::transfer::MAX_INPUTS
                )));
            }
            sum = sum.checked_add(c.1.value).unwrap_or(sum);
            chosen.push(c);
        }
        if sum < total {
            return Err(ServiceError::FailedPrecondition(format!(
                "from_address: insufficient funds: spendable {sum}, needed {total}"
            )));
        }
        Ok((chosen, held))
    }
}
