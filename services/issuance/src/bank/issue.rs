//! Issuance: a mint spends a reserve entry into the bank's vault, once per request id, and
//! the books that record what each ledger answers for.

use cbdc_core::messages::{
    AdminAction, AdminOrder, CENTRAL_BANK, Countersignature, Header, Signed, reserve_txid,
};
use cbdc_core::{Amount, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, UnixSeconds};
use cbdc_runtime::ServiceError;
use cbdc_store::TxError;

use super::{CentralBank, MINT_VALID_FOR_S};
use crate::records::{Settlement, SignedParts, counter_amount, encode_queued};

/// What a mint did.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The issue: a transfer from the reserve to the bank's vault, signed by the central
    /// bank.
    pub transfer: SignedParts,
    /// What the books say the ledger answers for now.
    pub outstanding: Amount,
    /// The request was done before; nothing was issued now.
    pub already: bool,
}

/// What a mint asks for, as the administrator signed it (the amount as sent).
#[derive(Clone, Copy, Debug)]
pub struct MintOrder<'a> {
    pub ledger: LedgerId,
    pub amount: &'a str,
    pub reserve_reference: &'a str,
}

impl CentralBank {
    /// Issues `amount` to the operator vault of `ledger`, once per `request_id`: a transfer
    /// from the reserve, signed by the central bank, queued for delivery as a countersigned
    /// settlement.
    pub async fn mint(
        &self,
        header: Header<'_>,
        m: MintOrder<'_>,
        signature: &[u8],
    ) -> Result<Minted, ServiceError> {
        let MintOrder {
            ledger,
            amount: amount_text,
            reserve_reference,
        } = m;
        let request_id = header.request_id;
        let seen = self.check_admin(
            &AdminOrder {
                header,
                action: AdminAction::Mint {
                    ledger,
                    amount: amount_text,
                    reserve_reference,
                },
            },
            signature,
        )?;
        if reserve_reference.is_empty()
            || reserve_reference.len() > cbdc_core::transfer::MAX_MEMO_BYTES
        {
            return Err(ServiceError::InvalidArgument(format!(
                "reserve_reference: required, at most {} bytes",
                cbdc_core::transfer::MAX_MEMO_BYTES
            )));
        }
        let amount = Amount::parse_with_max(amount_text, Amount::DEFAULT_MAX)
            .map_err(|e| ServiceError::InvalidArgument(format!("amount: {e}")))?;
        if amount.is_zero() {
            return Err(ServiceError::InvalidArgument(
                "amount: must be more than zero".into(),
            ));
        }
        let vault = self.active_operator(ledger, "ledger_id").await?.key;
        let transfer = TransferBuilder::new(UnixSeconds(self.now_ms() / 1000 + MINT_VALID_FOR_S))
            .input(
                OutPoint {
                    txid: reserve_txid(request_id),
                    index: 0,
                },
                amount,
            )
            .output(ledger, amount, Lock::Key(vault))
            .memo(reserve_reference.as_bytes().to_vec())
            .sign(&[&self.inner.signing])
            .map_err(|e| ServiceError::Internal(format!("signing the issue: {e}")))?;
        let settlement = self.countersign(&transfer, CENTRAL_BANK, ledger, amount);
        let signed = SignedParts::of(&transfer);
        let queued = encode_queued(&settlement, &signed);
        let (transfer, already) = self
            .transact(move |me, tx| {
                let signed = signed.clone();
                let queued = queued.clone();
                let seen = seen.clone();
                Box::pin(async move {
                    let k = me.keys();
                    if let Some(done) = seen.first_result(tx).await? {
                        let done = SignedParts::decode(&done).map_err(TxError::Abort)?;
                        return Ok((done, true));
                    }
                    let txid = signed.txid();
                    seen.record(tx, &signed.encode())?;
                    tx.set(k.queued(ledger, &txid), queued)?;
                    tx.atomic_add(k.book_in(ledger), amount.fen() as i64)?;
                    tx.atomic_add(k.issued(), amount.fen() as i64)?;
                    Ok::<_, TxError<ServiceError>>((signed, false))
                })
            })
            .await?;
        let outstanding = self.books(ledger).await?;
        Ok(Minted {
            transfer,
            outstanding,
            already,
        })
    }

    /// The central bank's countersigned move of `amount` of `t` from `from` to `to`.
    pub(super) fn countersign(
        &self,
        t: &Transfer,
        from: LedgerId,
        to: LedgerId,
        amount: Amount,
    ) -> Settlement {
        Settlement {
            from,
            to,
            amount,
            countersignature: Countersignature {
                network: &self.inner.network,
                txid: t.txid(),
                to_ledger: to,
            }
            .sign(&self.inner.signing),
        }
    }

    /// `in(L) − out(L) − reversed(L)`: what the central bank's books say `ledger` answers for.
    pub async fn books(&self, ledger: LedgerId) -> Result<Amount, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let i = counter_amount(
            tx.get_snapshot(&self.keys().book_in(ledger))
                .await?
                .as_deref(),
            "books",
        )?;
        let o = counter_amount(
            tx.get_snapshot(&self.keys().book_out(ledger))
                .await?
                .as_deref(),
            "books",
        )?;
        let r = counter_amount(
            tx.get_snapshot(&self.keys().book_reversed(ledger))
                .await?
                .as_deref(),
            "books",
        )?;
        i.checked_sub(o)
            .and_then(|b| b.checked_sub(r))
            .ok_or_else(|| ServiceError::corrupt("books"))
    }
}
