//! A bank ledger as a wallet uses it.

use std::time::{SystemTime, UNIX_EPOCH};

use cbdc_core::audit::{Checkpoint, Receipt};
use cbdc_core::transfer::sign_body;
use cbdc_core::{
    Address, Amount, Keypair, LedgerId, Lock, OutPoint, Output, PublicKey, Transfer,
    TransferBuilder, Txid, UnixSeconds,
};
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::transport::Channel;

use crate::{Dial, Error, RpcError};

/// Coins [`Ledger::coins`] reads at most (pages of [`COIN_PAGE`]).
pub const COINS_MAX: usize = 10_000;
/// Coins per `ListCoins` page.
pub const COIN_PAGE: u32 = 500;
/// How long a transfer built here is valid for.
pub const VALID_FOR_S: u64 = 600;

/// An unspent output and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coin {
    pub outpoint: OutPoint,
    pub output: Output,
}

/// A committed payment: its txid and where the ledger put it.
#[derive(Clone, Debug, PartialEq)]
pub struct Paid {
    pub txid: Txid,
    pub committed: v1::Committed,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn coin(c: &v1::Coin) -> Result<Coin, Error> {
    let bad = |e: convert::WireError| Error::Verify(format!("the ledger sent a bad coin: {e}"));
    Ok(Coin {
        outpoint: convert::outpoint("coin.outpoint", c.outpoint.as_ref()).map_err(bad)?,
        output: convert::output("coin.output", c.output.as_ref(), Amount::DEFAULT_MAX)
            .map_err(bad)?,
    })
}

/// Coin selection, largest first: coins locked to `owner`'s key covering `total`, at most
/// `cbdc_core::transfer::MAX_INPUTS` of them.
pub fn select_coins(coins: &[Coin], owner: &PublicKey, total: Amount) -> Result<Vec<Coin>, Error> {
    let mut mine: Vec<&Coin> = coins
        .iter()
        .filter(|c| c.output.lock == Lock::Key(*owner))
        .collect();
    mine.sort_by_key(|c| std::cmp::Reverse(c.output.value));
    let mut chosen = Vec::new();
    let mut sum = Amount::ZERO;
    for c in mine {
        if sum >= total {
            break;
        }
        if chosen.len() == cbdc_core::transfer::MAX_INPUTS {
            return Err(Error::Invalid(format!(
                "paying {total} needs more than {} coins; consolidate first",
                cbdc_core::transfer::MAX_INPUTS
            )));
        }
        sum = sum
            .checked_add(c.output.value)
            .ok_or_else(|| Error::Invalid("coin values overflow".into()))?;
        chosen.push(c.clone());
    }
    if sum < total {
        return Err(Error::Invalid(format!(
            "insufficient funds: spendable {sum}, needed {total}"
        )));
    }
    Ok(chosen)
}

/// A bank ledger: every wallet read is signed with the wallet's key (a read grant valid
/// for five minutes), every transfer signed here.
#[derive(Clone)]
pub struct Ledger {
    rpc: LedgerServiceClient<Channel>,
    ledger: LedgerId,
    network: String,
    coin_page: u32,
}

impl Ledger {
    /// Connects to ledger `ledger` of `network`.
    pub async fn connect(dial: &Dial, ledger: LedgerId, network: &str) -> Result<Ledger, Error> {
        Ok(Ledger::from_channel(
            crate::connect(dial, "bank ledger").await?,
            ledger,
            network,
        ))
    }

    /// Over a channel made elsewhere.
    pub fn from_channel(channel: Channel, ledger: LedgerId, network: &str) -> Ledger {
        Ledger {
            rpc: LedgerServiceClient::new(channel),
            ledger,
            network: network.to_string(),
            coin_page: COIN_PAGE,
        }
    }

    /// Coins per `ListCoins` page [`Ledger::coins`] asks for (default [`COIN_PAGE`]).
    pub fn with_coin_page(mut self, size: u32) -> Ledger {
        self.coin_page = size.max(1);
        self
    }

    /// The generated client, for calls this type does not wrap.
    pub fn rpc(&mut self) -> &mut LedgerServiceClient<Channel> {
        &mut self.rpc
    }

    pub fn id(&self) -> LedgerId {
        self.ledger
    }

    /// The address of `key` on this ledger.
    pub fn address(&self, key: &PublicKey) -> Address {
        Address::new(self.ledger, *key)
    }

    /// A grant to read `wallet`'s own data, signed with its key, valid for five minutes.
    pub fn read_auth(&self, wallet: &Keypair) -> v1::ReadAuth {
        cbdc_proto::requests::read_auth(
            wallet,
            &self.network,
            self.ledger,
            &self.address(&wallet.public()).to_string(),
            now_ms() + cbdc_proto::requests::READ_VALID_FOR_MS,
            false,
        )
    }

    /// Opens an anonymous wallet for `wallet`'s key and phone number (E.164).
    pub async fn open_wallet(
        &mut self,
        wallet: &Keypair,
        phone: &str,
    ) -> Result<v1::Wallet, Error> {
        let request = cbdc_proto::requests::open_wallet(wallet, &self.network, self.ledger, phone);
        Ok(self.rpc.open_wallet(request).await?.into_inner())
    }

    /// The wallet: tier, status, balance, today's spending, tier changes.
    pub async fn wallet(&mut self, wallet: &Keypair) -> Result<v1::Wallet, Error> {
        let request = v1::GetWalletRequest {
            address: self.address(&wallet.public()).to_string(),
            auth: Some(self.read_auth(wallet)),
        };
        Ok(self.rpc.get_wallet(request).await?.into_inner())
    }

    pub async fn balance(&mut self, wallet: &Keypair) -> Result<v1::GetBalanceResponse, Error> {
        let request = v1::GetBalanceRequest {
            address: self.address(&wallet.public()).to_string(),
            auth: Some(self.read_auth(wallet)),
        };
        Ok(self.rpc.get_balance(request).await?.into_inner())
    }

    /// Every unspent output of the wallet (at most [`COINS_MAX`]).
    pub async fn coins(&mut self, wallet: &Keypair) -> Result<Vec<Coin>, Error> {
        let mut coins = Vec::new();
        let mut cursor = String::new();
        loop {
            let request = v1::ListCoinsRequest {
                address: self.address(&wallet.public()).to_string(),
                page: Some(v1::PageRequest {
                    page_size: self.coin_page,
                    cursor,
                }),
                auth: Some(self.read_auth(wallet)),
            };
            let page = self.rpc.list_coins(request).await?.into_inner();
            for c in &page.coins {
                coins.push(coin(c)?);
            }
            cursor = page.page.unwrap_or_default().next_cursor;
            if cursor.is_empty() || coins.len() >= COINS_MAX {
                return Ok(coins);
            }
        }
    }

    /// A page of the wallet's history after `cursor` ("" for the first).
    pub async fn history(
        &mut self,
        wallet: &Keypair,
        cursor: &str,
        page_size: u32,
    ) -> Result<v1::ListHistoryResponse, Error> {
        let request = v1::ListHistoryRequest {
            address: self.address(&wallet.public()).to_string(),
            page: Some(v1::PageRequest {
                page_size,
                cursor: cursor.to_string(),
            }),
            auth: Some(self.read_auth(wallet)),
        };
        Ok(self.rpc.list_history(request).await?.into_inner())
    }

    /// The wallet's history from `cursor` on, then every commit as it happens (the stream
    /// ends when the grant does, after five minutes).
    pub async fn watch(
        &mut self,
        wallet: &Keypair,
        cursor: &str,
    ) -> Result<tonic::Streaming<v1::HistoryEntry>, Error> {
        let request = v1::WatchWalletRequest {
            address: self.address(&wallet.public()).to_string(),
            cursor: cursor.to_string(),
            auth: Some(self.read_auth(wallet)),
        };
        Ok(self.rpc.watch_wallet(request).await?.into_inner())
    }

    /// A transfer paying `payments` from the wallet, its coins chosen by the ledger, signed
    /// here.
    pub async fn build(
        &mut self,
        wallet: &Keypair,
        payments: &[(Address, Amount)],
        memo: &[u8],
    ) -> Result<Transfer, Error> {
        let request = v1::BuildTransferRequest {
            from_address: self.address(&wallet.public()).to_string(),
            payments: payments
                .iter()
                .map(|(to, amount)| v1::Payment {
                    to_address: to.to_string(),
                    amount: amount.to_string(),
                })
                .collect(),
            memo: memo.to_vec(),
            valid_for_s: 0,
            auth: Some(self.read_auth(wallet)),
        };
        let built = self.rpc.build_transfer(request).await?.into_inner();
        // Sign only what was asked for: every payment present, the rest back to the wallet.
        let body = cbdc_core::TransferBody::decode(&built.body)
            .map_err(|e| Error::Verify(format!("the built transfer: {e}")))?;
        check_built(&body, self.ledger, wallet, payments)?;
        sign_body(built.body, &[wallet])
            .map_err(|e| Error::Verify(format!("the built transfer: {e}")))
    }

    /// A transfer paying `payments` from the wallet, built and signed here from its listed
    /// coins (largest first), the change back to the wallet.
    pub async fn build_locally(
        &mut self,
        wallet: &Keypair,
        payments: &[(Address, Amount)],
        memo: &[u8],
    ) -> Result<Transfer, Error> {
        let total = Amount::checked_sum(payments.iter().map(|(_, a)| *a))
            .ok_or_else(|| Error::Invalid("payments overflow when summed".into()))?;
        let coins = self.coins(wallet).await?;
        let chosen = select_coins(&coins, &wallet.public(), total)?;
        let mut b = TransferBuilder::new(UnixSeconds(now_ms() / 1000 + VALID_FOR_S)).memo(memo);
        let mut sum = Amount::ZERO;
        for c in &chosen {
            b = b.input(c.outpoint, c.output.value);
            sum = sum.checked_add(c.output.value).unwrap_or(sum);
        }
        for (to, amount) in payments {
            b = b.output(to.ledger, *amount, Lock::Key(to.key));
        }
        let change = sum.checked_sub(total).unwrap_or(Amount::ZERO);
        if !change.is_zero() {
            b = b.output(self.ledger, change, Lock::Key(wallet.public()));
        }
        b.sign(&[wallet])
            .map_err(|e| Error::Invalid(format!("the transfer: {e}")))
    }

    /// Builds (on the ledger), signs and submits a payment.
    pub async fn pay(
        &mut self,
        wallet: &Keypair,
        payments: &[(Address, Amount)],
        memo: &[u8],
    ) -> Result<Paid, Error> {
        let t = self.build(wallet, payments, memo).await?;
        let committed = self.submit(&t).await?;
        Ok(Paid {
            txid: t.txid(),
            committed,
        })
    }

    /// Submits a signed transfer; sending it again answers the first commit.
    pub async fn submit(&mut self, t: &Transfer) -> Result<v1::Committed, Error> {
        let request = v1::SubmitTransferRequest {
            transfer: Some(convert::to_signed_transfer(t)),
        };
        let r = self.rpc.submit_transfer(request).await?.into_inner();
        outcome(r).map_err(|e| Error::Rpc(Box::new(e)))
    }

    /// Submits many signed transfers in one call; each gets its own outcome, in order.
    pub async fn submit_many(
        &mut self,
        transfers: &[Transfer],
    ) -> Result<Vec<Result<v1::Committed, RpcError>>, Error> {
        self.submit_many_with(transfers, true).await
    }

    /// [`Ledger::submit_many`], saying whether each commit's outputs come back (a sender
    /// that only needs txids and positions saves the server their encoding).
    pub async fn submit_many_with(
        &mut self,
        transfers: &[Transfer],
        return_outputs: bool,
    ) -> Result<Vec<Result<v1::Committed, RpcError>>, Error> {
        let request = v1::SubmitTransfersRequest {
            transfers: transfers.iter().map(convert::to_signed_transfer).collect(),
            return_outputs,
        };
        let r = self.rpc.submit_transfers(request).await?.into_inner();
        Ok(r.results.into_iter().map(outcome).collect())
    }

    /// A transfer as the wallet may see it: status, decoded view, the exact signed bytes
    /// for its payer.
    pub async fn transfer(
        &mut self,
        wallet: &Keypair,
        txid: &Txid,
    ) -> Result<v1::GetTransferResponse, Error> {
        let request = v1::GetTransferRequest {
            txid: txid.0.to_vec(),
            address: self.address(&wallet.public()).to_string(),
            auth: Some(self.read_auth(wallet)),
        };
        Ok(self.rpc.get_transfer(request).await?.into_inner())
    }

    /// A receipt of `txid` for the wallet (its payer or a payee), checked offline against
    /// the ledger operator's key: the inclusion proof, the checkpoint's signature and
    /// figures.
    pub async fn receipt(
        &mut self,
        wallet: &Keypair,
        txid: &Txid,
        operator: &PublicKey,
    ) -> Result<Receipt, Error> {
        let request = v1::GetReceiptRequest {
            txid: txid.0.to_vec(),
            address: self.address(&wallet.public()).to_string(),
            auth: Some(self.read_auth(wallet)),
        };
        let r = self.rpc.get_receipt(request).await?.into_inner();
        let receipt = convert::receipt(&r).map_err(|e| Error::Verify(e.to_string()))?;
        if receipt.txid != *txid {
            return Err(Error::Verify(format!(
                "a receipt for {} when {txid} was asked for",
                receipt.txid
            )));
        }
        cbdc_core::audit::verify_receipt(&receipt, self.ledger, operator)
            .map_err(|e| Error::Verify(e.to_string()))?;
        Ok(receipt)
    }

    /// The latest signed checkpoint, its signature checked against `operator`.
    pub async fn checkpoint(&mut self, operator: &PublicKey) -> Result<Checkpoint, Error> {
        let c = self
            .rpc
            .get_checkpoint(v1::GetCheckpointRequest {})
            .await?
            .into_inner();
        signed_checkpoint(&c, self.ledger, operator)
    }

    /// A checkpoint (`new_size`, or the latest for 0) and a consistency proof from the log
    /// of `old_size` leaves to it, the checkpoint's signature checked against `operator`
    /// (the proof is checked by [`crate::trust::Trusted::advance`]).
    pub async fn consistency(
        &mut self,
        old_size: u64,
        new_size: u64,
        operator: &PublicKey,
    ) -> Result<(Vec<[u8; 32]>, Checkpoint), Error> {
        let r = self
            .rpc
            .get_consistency_proof(v1::GetConsistencyProofRequest { old_size, new_size })
            .await?
            .into_inner();
        let cp = signed_checkpoint(
            r.checkpoint
                .as_ref()
                .ok_or_else(|| Error::Verify("no checkpoint with the proof".into()))?,
            self.ledger,
            operator,
        )?;
        let proof = r
            .proof
            .iter()
            .map(|h| {
                <[u8; 32]>::try_from(h.as_slice())
                    .map_err(|_| Error::Verify("a proof hash is not 32 bytes".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok((proof, cp))
    }
}

/// A checkpoint from the wire, for `ledger`, signed by `operator`, its figures adding up.
fn signed_checkpoint(
    c: &v1::Checkpoint,
    ledger: LedgerId,
    operator: &PublicKey,
) -> Result<Checkpoint, Error> {
    let (cp, signature) = convert::checkpoint(c).map_err(|e| Error::Verify(e.to_string()))?;
    if cp.ledger != ledger {
        return Err(Error::Verify(format!(
            "a checkpoint of ledger {} from ledger {}",
            cp.ledger.0, ledger.0
        )));
    }
    cp.verify(operator, &signature)
        .map_err(|e| Error::Verify(format!("checkpoint: {e}")))?;
    Ok(cp)
}

/// A built transfer pays exactly `payments` (in order) and returns the rest to `wallet` on
/// its own ledger `home`.
fn check_built(
    body: &cbdc_core::TransferBody,
    home: LedgerId,
    wallet: &Keypair,
    payments: &[(Address, Amount)],
) -> Result<(), Error> {
    let outputs = &body.outputs;
    let paid = outputs.len() >= payments.len()
        && payments.iter().zip(outputs).all(|((to, amount), o)| {
            o.ledger == to.ledger && o.value == *amount && o.lock == Lock::Key(to.key)
        });
    let rest_is_change = outputs[payments.len().min(outputs.len())..]
        .iter()
        .all(|o| o.ledger == home && o.lock == Lock::Key(wallet.public()));
    if paid && rest_is_change {
        Ok(())
    } else {
        Err(Error::Verify(
            "the ledger built a transfer that does not pay what was asked; not signed".into(),
        ))
    }
}

// A batch row's outcome stays a plain `RpcError`, as `submit_many` hands it out.
#[allow(clippy::result_large_err)]
fn outcome(r: v1::TransferResult) -> Result<v1::Committed, RpcError> {
    match r.outcome {
        Some(v1::transfer_result::Outcome::Committed(c)) => Ok(c),
        Some(v1::transfer_result::Outcome::Rejected(r)) => {
            Err(RpcError::from_rejected(&r, tonic::Code::FailedPrecondition))
        }
        None => Err(RpcError {
            code: tonic::Code::Internal,
            reason: "INTERNAL".into(),
            message: "a result with no outcome".into(),
            metadata: Default::default(),
            field: None,
            retry_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yuan(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    #[test]
    fn a_built_transfer_is_signed_only_if_it_pays_what_was_asked() {
        let wallet = Keypair::from_seed(&[1; 32]);
        let bob = Address::new(LedgerId(2), Keypair::from_seed(&[2; 32]).public());
        let mallory = Keypair::from_seed(&[3; 32]).public();
        let body = |outputs: Vec<Output>| cbdc_core::TransferBody {
            inputs: vec![],
            outputs,
            memo: vec![],
            valid_until: UnixSeconds(0),
        };
        let out = |ledger: u32, value: &str, key: PublicKey| Output {
            ledger: LedgerId(ledger),
            value: yuan(value),
            lock: Lock::Key(key),
        };
        let asked = [(bob, yuan("5.00"))];
        let honest = body(vec![
            out(2, "5.00", bob.key),
            out(1, "3.00", wallet.public()),
        ]);
        assert!(check_built(&honest, LedgerId(1), &wallet, &asked).is_ok());
        for (why, outputs) in [
            (
                "change to another key",
                vec![out(2, "5.00", bob.key), out(1, "3.00", mallory)],
            ),
            (
                "change to another ledger",
                vec![out(2, "5.00", bob.key), out(2, "3.00", wallet.public())],
            ),
            ("another payee", vec![out(2, "5.00", mallory)]),
            ("another amount", vec![out(2, "5.01", bob.key)]),
            ("another ledger", vec![out(1, "5.00", bob.key)]),
            ("the payment missing", vec![out(1, "8.00", wallet.public())]),
        ] {
            assert!(
                matches!(
                    check_built(&body(outputs), LedgerId(1), &wallet, &asked),
                    Err(Error::Verify(_))
                ),
                "{why}"
            );
        }
    }

    #[test]
    fn coins_are_chosen_largest_first_among_the_wallets_own() {
        let owner = Keypair::from_seed(&[1; 32]).public();
        let other = Keypair::from_seed(&[2; 32]).public();
        let coin = |i: u8, value: &str, key: PublicKey| Coin {
            outpoint: OutPoint {
                txid: Txid([i; 32]),
                index: 0,
            },
            output: Output {
                ledger: LedgerId(1),
                value: yuan(value),
                lock: Lock::Key(key),
            },
        };
        let coins = [
            coin(1, "1.00", owner),
            coin(2, "50.00", other),
            coin(3, "7.00", owner),
            coin(4, "3.00", owner),
        ];
        let chosen = select_coins(&coins, &owner, yuan("9.00")).unwrap();
        assert_eq!(
            chosen
                .iter()
                .map(|c| c.outpoint.txid.0[0])
                .collect::<Vec<_>>(),
            [3, 4]
        );
        // Exactly what it holds is enough; a fen more is not.
        assert_eq!(
            select_coins(&coins, &owner, yuan("11.00")).unwrap().len(),
            3
        );
        assert!(matches!(
            select_coins(&coins, &owner, yuan("11.01")),
            Err(Error::Invalid(_))
        ));
    }
}
