//! The central bank's logic over the store: the operator registry, issuance, settlement of
//! cross-ledger moves and redemptions, checkpoints and the audit. The gRPC layer
//! (`service.rs`) only converts and calls in here.
//!
//! Keys, as tuples under `("issuance",)`:
//!
//! | key | value |
//! |---|---|
//! | `("op", ledger)` | the registered operator (`cbdc.v1.Operator`) |
//! | `("mint", request_id)` | the issue made for that request (`cbdc.v1.SignedTransfer`) |
//! | `("st", txid)` | the settlement of a bank's outbound transfer (`cbdc.v1.SettleResponse`) |
//! | `("bk", ledger, "in" \| "out")` | value sent to / settled out of a ledger, i64 LE, atomic add |
//! | `("tot", "issued" \| "redeemed")` | running totals, i64 LE, atomic add |
//! | `("dq", ledger, txid)` | a countersigned settlement waiting for delivery (`cbdc.v1.Settlement`) |
//! | `("cp", ledger)` | the ledger's latest accepted checkpoint (`cbdc.v1.Checkpoint`) |
//!
//! The books: for every ledger `L`, `in(L) − out(L)` is what the central bank says `L`
//! answers for, and `issued − redeemed = Σ (in(L) − out(L))` holds by construction (each
//! issue, settlement and redemption changes both sides in one transaction).

use std::collections::BTreeMap;
use std::sync::Arc;

use cbdc_core::audit::Checkpoint;
use cbdc_core::messages::{
    CENTRAL_BANK, admin_message, bank_settle_batch_message, bank_settle_message, reserve_txid,
    settle_message,
};
use cbdc_core::{
    Amount, Keypair, LedgerId, Lock, OutPoint, PublicKey, Transfer, TransferBuilder, Txid,
    UnixSeconds,
};
use cbdc_proto::convert::{self, WireError};
use cbdc_proto::v1;
use cbdc_runtime::clock::Clock;
use cbdc_store::keys::{Subspace, strinc};
use cbdc_store::{Database, RangeOptions, StoreError, Transaction, TxError};
use prost::Message;

/// Registered operators listed, at most (the registry is small: one row per bank).
pub const OPERATORS_MAX: usize = 10_000;
/// Transfers per `SettleBatch` request, at most.
pub const SETTLE_BATCH_MAX: usize = 1024;
/// Queued deliveries read per step, at most.
pub const QUEUE_SCAN_MAX: usize = 4096;
/// An issue's transfer is valid for this long (it is delivered as a countersigned
/// settlement, which ledgers accept after expiry, so this only bounds the body).
pub const MINT_VALID_FOR_S: u64 = 86_400;

/// Why a central-bank call failed; `service.rs` maps each to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for IssuanceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => {
                IssuanceError::Unavailable("the central bank is shutting down".into())
            }
            StoreError::RetryLimit { .. } => {
                IssuanceError::Unavailable(format!("store busy, try again: {e}"))
            }
            other => IssuanceError::Internal(format!("store: {other}")),
        }
    }
}

impl From<TxError<IssuanceError>> for IssuanceError {
    fn from(e: TxError<IssuanceError>) -> Self {
        match e {
            TxError::Abort(e) => e,
            TxError::Store(e) => e.into(),
        }
    }
}

impl From<WireError> for IssuanceError {
    fn from(e: WireError) -> Self {
        IssuanceError::InvalidArgument(e.to_string())
    }
}

/// What settling one transfer writes: the response (countersigned settlements), the value
/// redeemed, and the value per destination ledger.
type Plan = (v1::SettleResponse, Amount, BTreeMap<LedgerId, Amount>);

/// A copy of an error, for every item of a batch it fails.
fn clone_error(e: &IssuanceError) -> IssuanceError {
    match e {
        IssuanceError::InvalidArgument(m) => IssuanceError::InvalidArgument(m.clone()),
        IssuanceError::NotFound(m) => IssuanceError::NotFound(m.clone()),
        IssuanceError::FailedPrecondition(m) => IssuanceError::FailedPrecondition(m.clone()),
        IssuanceError::PermissionDenied(m) => IssuanceError::PermissionDenied(m.clone()),
        IssuanceError::Unavailable(m) => IssuanceError::Unavailable(m.clone()),
        IssuanceError::Internal(m) => IssuanceError::Internal(m.clone()),
    }
}

fn fail_all<T>(n: usize, e: &IssuanceError) -> Vec<Result<T, IssuanceError>> {
    (0..n).map(|_| Err(clone_error(e))).collect()
}

/// A registered operator's key (checked when registered).
fn operator_key(op: &v1::Operator) -> Result<PublicKey, IssuanceError> {
    Ok(PublicKey::from_bytes(
        op.operator_public_key
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("operator"))?,
    ))
}

fn corrupt(what: &str) -> IssuanceError {
    IssuanceError::Internal(format!("corrupt {what} record"))
}

fn abort(e: IssuanceError) -> TxError<IssuanceError> {
    TxError::Abort(e)
}

fn counter(v: Option<&[u8]>) -> i64 {
    let mut le = [0u8; 8];
    if let Some(v) = v {
        let n = v.len().min(8);
        le[..n].copy_from_slice(&v[..n]);
    }
    i64::from_le_bytes(le)
}

fn counter_amount(v: Option<&[u8]>, what: &str) -> Result<Amount, IssuanceError> {
    u64::try_from(counter(v))
        .map(Amount::from_fen)
        .map_err(|_| corrupt(what))
}

fn verify(
    key: &PublicKey,
    message: &[u8],
    signature: &[u8],
    field: &str,
    whose: &str,
) -> Result<(), IssuanceError> {
    let vk = key
        .verifying_key()
        .map_err(|e| IssuanceError::Internal(format!("{whose}: {e}")))?;
    let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| {
        IssuanceError::PermissionDenied(format!(
            "{field}: {} bytes, expected a 64-byte Ed25519 signature by {whose}",
            signature.len()
        ))
    })?;
    vk.verify_strict(message, &sig).map_err(|_| {
        IssuanceError::PermissionDenied(format!("{field}: does not verify against {whose}"))
    })
}

#[derive(Clone)]
struct Keys {
    sub: Subspace,
}

impl Keys {
    fn op(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("op", i64::from(l.0)))
    }
    fn ops(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("op",));
        let e = strinc(&p).expect("prefix");
        (p, e)
    }
    fn mint(&self, request_id: &str) -> Vec<u8> {
        self.sub.pack(&("mint", request_id))
    }
    fn settled(&self, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("st", txid.0.as_slice()))
    }
    fn book_in(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("bk", i64::from(l.0), "in"))
    }
    fn book_out(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("bk", i64::from(l.0), "out"))
    }
    fn issued(&self) -> Vec<u8> {
        self.sub.pack(&("tot", "issued"))
    }
    fn redeemed(&self) -> Vec<u8> {
        self.sub.pack(&("tot", "redeemed"))
    }
    fn queued(&self, l: LedgerId, txid: &Txid) -> Vec<u8> {
        self.sub.pack(&("dq", i64::from(l.0), txid.0.as_slice()))
    }
    fn queue(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.sub.pack(&("dq",));
        let e = strinc(&p).expect("prefix");
        (p, e)
    }
    fn queued_key(&self, k: &[u8]) -> Option<(LedgerId, Txid)> {
        let (_, l, txid): (String, i64, Vec<u8>) = self.sub.unpack(k).ok()?;
        Some((
            LedgerId(u32::try_from(l).ok()?),
            Txid(txid.try_into().ok()?),
        ))
    }
    fn checkpoint(&self, l: LedgerId) -> Vec<u8> {
        self.sub.pack(&("cp", i64::from(l.0)))
    }
}

struct Inner {
    db: Database,
    keys: Keys,
    signing: Keypair,
    admin: PublicKey,
    clock: Clock,
}

/// The central bank. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct CentralBank {
    inner: Arc<Inner>,
}

/// A countersigned settlement waiting for delivery to `ledger`.
#[derive(Clone, Debug)]
pub struct Queued {
    pub ledger: LedgerId,
    pub txid: Txid,
    pub settlement: v1::Settlement,
}

async fn get_proto<M: Message + Default>(
    tx: &mut Transaction,
    key: &[u8],
    what: &str,
) -> Result<Option<M>, TxError<IssuanceError>> {
    match tx.get(key).await? {
        None => Ok(None),
        Some(v) => M::decode(v.as_slice())
            .map(Some)
            .map_err(|_| abort(corrupt(what))),
    }
}

impl CentralBank {
    pub fn new(db: Database, signing: Keypair, admin: PublicKey, clock: Clock) -> CentralBank {
        CentralBank {
            inner: Arc::new(Inner {
                db,
                keys: Keys {
                    sub: Subspace::from(("issuance",)),
                },
                signing,
                admin,
                clock,
            }),
        }
    }

    /// The key that countersigns settlements and signs issues.
    pub fn public_key(&self) -> PublicKey {
        self.inner.signing.public()
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn check_admin(&self, message: &[u8], signature: &[u8]) -> Result<(), IssuanceError> {
        verify(
            &self.inner.admin,
            message,
            signature,
            "admin_signature",
            "the central bank administrator's key",
        )
    }

    // ----- the registry -----

    /// Registers a bank operator (ACTIVE). Registering the same ledger with the same key
    /// again updates its name and endpoint; another key for a registered ledger is refused.
    pub async fn register(
        &self,
        op: v1::Operator,
        signature: &[u8],
    ) -> Result<v1::Operator, IssuanceError> {
        let ledger_text = op.ledger_id.to_string();
        self.check_admin(
            &admin_message(
                "register",
                &[
                    ledger_text.as_bytes(),
                    op.name.as_bytes(),
                    &op.operator_public_key,
                    op.endpoint.as_bytes(),
                ],
            ),
            signature,
        )?;
        if op.ledger_id == CENTRAL_BANK.0 {
            return Err(IssuanceError::InvalidArgument(
                "operator.ledger_id: 0 is the central bank's own id".into(),
            ));
        }
        if op.name.is_empty() || op.name.len() > 128 {
            return Err(IssuanceError::InvalidArgument(
                "operator.name: required, at most 128 bytes".into(),
            ));
        }
        let key = convert::bytes32("operator.operator_public_key", &op.operator_public_key)?;
        PublicKey::checked(&key).map_err(|e| {
            IssuanceError::InvalidArgument(format!("operator.operator_public_key: {e}"))
        })?;
        if !(op.endpoint.starts_with("http://") || op.endpoint.starts_with("https://"))
            || op.endpoint.len() > 256
        {
            return Err(IssuanceError::InvalidArgument(format!(
                "operator.endpoint: {:?}; expected an http:// or https:// URL of at most 256 bytes",
                op.endpoint
            )));
        }
        let record = v1::Operator {
            status: v1::OperatorStatus::Active as i32,
            ..op
        };
        let me = self.clone();
        let out = self
            .inner
            .db
            .run(move |tx| {
                let me = me.clone();
                let record = record.clone();
                Box::pin(async move {
                    let k = me.keys().op(LedgerId(record.ledger_id));
                    if let Some(existing) = get_proto::<v1::Operator>(tx, &k, "operator").await?
                        && existing.operator_public_key != record.operator_public_key
                    {
                        return Err(abort(IssuanceError::FailedPrecondition(format!(
                            "operator.ledger_id: ledger {} is already registered with another operator key",
                            record.ledger_id
                        ))));
                    }
                    tx.set(&k, record.encode_to_vec())?;
                    Ok(record)
                })
            })
            .await?;
        Ok(out)
    }

    pub async fn set_status(
        &self,
        ledger: LedgerId,
        status: v1::OperatorStatus,
        request_id: &str,
        signature: &[u8],
    ) -> Result<v1::Operator, IssuanceError> {
        let word = match status {
            v1::OperatorStatus::Active => "active",
            v1::OperatorStatus::Suspended => "suspended",
            v1::OperatorStatus::Unspecified => {
                return Err(IssuanceError::InvalidArgument("status: unspecified".into()));
            }
        };
        let ledger_text = ledger.0.to_string();
        self.check_admin(
            &admin_message(
                "status",
                &[
                    ledger_text.as_bytes(),
                    word.as_bytes(),
                    request_id.as_bytes(),
                ],
            ),
            signature,
        )?;
        let me = self.clone();
        let out = self
            .inner
            .db
            .run(move |tx| {
                let me = me.clone();
                Box::pin(async move {
                    let k = me.keys().op(ledger);
                    let Some(mut op) = get_proto::<v1::Operator>(tx, &k, "operator").await? else {
                        return Err(abort(IssuanceError::NotFound(format!(
                            "ledger_id: ledger {} is not registered",
                            ledger.0
                        ))));
                    };
                    op.status = status as i32;
                    tx.set(&k, op.encode_to_vec())?;
                    Ok(op)
                })
            })
            .await?;
        Ok(out)
    }

    pub async fn operator(&self, ledger: LedgerId) -> Result<Option<v1::Operator>, IssuanceError> {
        let mut tx = self.inner.db.create_transaction()?;
        match tx.get_snapshot(&self.keys().op(ledger)).await? {
            None => Ok(None),
            Some(v) => v1::Operator::decode(v.as_slice())
                .map(Some)
                .map_err(|_| corrupt("operator")),
        }
    }

    /// Every registered operator, by ledger id.
    pub async fn operators(&self) -> Result<Vec<v1::Operator>, IssuanceError> {
        let (b, e) = self.keys().ops();
        let mut tx = self.inner.db.create_transaction()?;
        let rows = tx
            .get_range(&b, &e, RangeOptions::snapshot(OPERATORS_MAX))
            .await?;
        rows.iter()
            .map(|(_, v)| v1::Operator::decode(v.as_slice()).map_err(|_| corrupt("operator")))
            .collect()
    }

    /// The registered operator of `ledger`, which must be active; `field` names the id in
    /// errors.
    async fn active_operator(
        &self,
        ledger: LedgerId,
        field: &str,
    ) -> Result<(v1::Operator, PublicKey), IssuanceError> {
        let op = self.operator(ledger).await?.ok_or_else(|| {
            IssuanceError::PermissionDenied(format!(
                "{field}: ledger {} is not a registered bank",
                ledger.0
            ))
        })?;
        if op.status != v1::OperatorStatus::Active as i32 {
            return Err(IssuanceError::PermissionDenied(format!(
                "{field}: bank ledger {} is suspended",
                ledger.0
            )));
        }
        let key = operator_key(&op)?;
        Ok((op, key))
    }

    // ----- issuance -----

    /// Issues `amount` to the operator vault of `ledger`, once per `request_id`: a transfer
    /// from the reserve, signed by the central bank, queued for delivery as a countersigned
    /// settlement. Returns the issue, the ledger's outstanding figure, and whether the request
    /// was already done.
    pub async fn mint(
        &self,
        request_id: &str,
        ledger: LedgerId,
        amount_text: &str,
        reserve_reference: &str,
        signature: &[u8],
    ) -> Result<(Transfer, Amount, bool), IssuanceError> {
        let ledger_text = ledger.0.to_string();
        self.check_admin(
            &admin_message(
                "mint",
                &[
                    request_id.as_bytes(),
                    ledger_text.as_bytes(),
                    amount_text.as_bytes(),
                    reserve_reference.as_bytes(),
                ],
            ),
            signature,
        )?;
        if request_id.is_empty() || request_id.len() > 128 {
            return Err(IssuanceError::InvalidArgument(
                "request_id: required, at most 128 bytes".into(),
            ));
        }
        if reserve_reference.is_empty()
            || reserve_reference.len() > cbdc_core::transfer::MAX_MEMO_BYTES
        {
            return Err(IssuanceError::InvalidArgument(format!(
                "reserve_reference: required, at most {} bytes",
                cbdc_core::transfer::MAX_MEMO_BYTES
            )));
        }
        let amount = convert::amount("amount", amount_text, Amount::DEFAULT_MAX)?;
        if amount.is_zero() {
            return Err(IssuanceError::InvalidArgument(
                "amount: must be more than zero".into(),
            ));
        }
        let (_, vault) = self.active_operator(ledger, "ledger_id").await?;
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
            .map_err(|e| IssuanceError::Internal(format!("signing the issue: {e}")))?;
        let settlement = self.settlement(&transfer, CENTRAL_BANK, ledger, amount);
        let me = self.clone();
        let request_id = request_id.to_string();
        let signed = convert::to_signed_transfer(&transfer);
        let (stored, already) = self
            .inner
            .db
            .run(move |tx| {
                let me = me.clone();
                let signed = signed.clone();
                let settlement = settlement.clone();
                let request_id = request_id.clone();
                Box::pin(async move {
                    let k = me.keys();
                    if let Some(done) =
                        get_proto::<v1::SignedTransfer>(tx, &k.mint(&request_id), "mint").await?
                    {
                        return Ok((done, true));
                    }
                    let txid = transfer_txid(&signed)?;
                    tx.set(k.mint(&request_id), signed.encode_to_vec())?;
                    tx.set(k.queued(ledger, &txid), settlement.encode_to_vec())?;
                    tx.atomic_add(k.book_in(ledger), amount.fen() as i64)?;
                    tx.atomic_add(k.issued(), amount.fen() as i64)?;
                    Ok::<_, TxError<IssuanceError>>((signed, false))
                })
            })
            .await?;
        let transfer = convert::signed_transfer("transfer", Some(&stored))?;
        let outstanding = self.books(ledger).await?;
        Ok((transfer, outstanding, already))
    }

    fn settlement(
        &self,
        t: &Transfer,
        from: LedgerId,
        to: LedgerId,
        amount: Amount,
    ) -> v1::Settlement {
        v1::Settlement {
            transfer: Some(convert::to_signed_transfer(t)),
            from_ledger_id: from.0,
            to_ledger_id: to.0,
            amount: amount.to_string(),
            central_bank_signature: self
                .inner
                .signing
                .sign(&settle_message(&t.txid(), to))
                .to_vec(),
        }
    }

    /// `in(L) − out(L)`: what the central bank's books say `ledger` answers for.
    pub async fn books(&self, ledger: LedgerId) -> Result<Amount, IssuanceError> {
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
        i.checked_sub(o).ok_or_else(|| corrupt("books"))
    }

    // ----- settlement -----

    /// Settles a transfer bank `from` committed whose outputs leave its ledger: records the
    /// move in the books, countersigns one settlement per destination ledger and queues it
    /// for delivery; outputs to ledger 0 (locked to the central bank's key) are redeemed.
    /// Once per txid: a repeat answers the first result.
    pub async fn settle(
        &self,
        transfer: Transfer,
        from: LedgerId,
        signature: &[u8],
    ) -> Result<v1::SettleResponse, IssuanceError> {
        let message = bank_settle_message(from, &transfer.txid());
        self.authenticate_bank(from, &message, signature).await?;
        self.settle_verified(from, vec![transfer]).await.remove(0)
    }

    /// [`CentralBank::settle`] for many transfers under one operator signature: the payers'
    /// signatures are checked in one Ed25519 batch and the moves recorded in one store
    /// transaction. One result per transfer.
    pub async fn settle_batch(
        &self,
        from: LedgerId,
        transfers: Vec<Transfer>,
        signature: &[u8],
    ) -> Result<Vec<Result<v1::SettleResponse, IssuanceError>>, IssuanceError> {
        if transfers.is_empty() || transfers.len() > SETTLE_BATCH_MAX {
            return Err(IssuanceError::InvalidArgument(format!(
                "transfers: {} transfers; between 1 and {SETTLE_BATCH_MAX} are accepted",
                transfers.len()
            )));
        }
        let txids: Vec<Txid> = transfers.iter().map(Transfer::txid).collect();
        self.authenticate_bank(from, &bank_settle_batch_message(from, &txids), signature)
            .await?;
        Ok(self.settle_verified(from, transfers).await)
    }

    /// `from` is a registered bank and `signature` its operator's over `message`.
    async fn authenticate_bank(
        &self,
        from: LedgerId,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), IssuanceError> {
        let op = self.operator(from).await?.ok_or_else(|| {
            IssuanceError::PermissionDenied(format!(
                "from_ledger_id: ledger {} is not a registered bank",
                from.0
            ))
        })?;
        let key = operator_key(&op)?;
        verify(
            &key,
            message,
            signature,
            "operator_signature",
            &format!("the operator key of ledger {}", from.0),
        )
    }

    /// Settles transfers whose sender is authenticated.
    async fn settle_verified(
        &self,
        from: LedgerId,
        transfers: Vec<Transfer>,
    ) -> Vec<Result<v1::SettleResponse, IssuanceError>> {
        let n = transfers.len();
        let mut results: Vec<Option<Result<v1::SettleResponse, IssuanceError>>> =
            (0..n).map(|_| None).collect();
        // Repeats answer the first result, even from a bank suspended since.
        match self.settled_many(&transfers).await {
            Ok(done) => {
                for (i, d) in done.into_iter().enumerate() {
                    if let Some(d) = d {
                        let t = convert::to_signed_transfer(&transfers[i]);
                        results[i] = Some(Ok(replayed(d, &t)));
                    }
                }
            }
            Err(e) => return fail_all(n, &e),
        }
        if let Err(e) = self.active_operator(from, "from_ledger_id").await {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some(Err(clone_error(&e)));
            }
            return results.into_iter().map(Option::unwrap).collect();
        }
        let open: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
        let verdicts =
            cbdc_core::validate::check_committed_batch(open.iter().map(|&i| &transfers[i]));
        let mut registered: BTreeMap<LedgerId, bool> = BTreeMap::new();
        let mut plans: Vec<(usize, Txid, Plan)> = Vec::new();
        for (&i, verdict) in open.iter().zip(verdicts) {
            let t = &transfers[i];
            let plan = match verdict {
                Err(r) => Err(IssuanceError::InvalidArgument(format!("transfer: {r}"))),
                Ok(()) => self.plan(t, from, &mut registered).await,
            };
            match plan {
                Ok(plan) => plans.push((i, t.txid(), plan)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !plans.is_empty() {
            let me = self.clone();
            let plans = Arc::new(plans);
            let p = Arc::clone(&plans);
            let outcome = self
                .inner
                .db
                .run(move |tx| {
                    let me = me.clone();
                    let p = Arc::clone(&p);
                    Box::pin(async move {
                        let k = me.keys();
                        let mut out = Vec::with_capacity(p.len());
                        for (_, txid, (response, redeemed, to)) in p.iter() {
                            if let Some(done) =
                                get_proto::<v1::SettleResponse>(tx, &k.settled(txid), "settlement")
                                    .await?
                            {
                                let t = response
                                    .settlements
                                    .first()
                                    .and_then(|s| s.transfer.clone())
                                    .unwrap_or_default();
                                out.push(replayed(done, &t));
                                continue;
                            }
                            let leaving = to
                                .values()
                                .try_fold(*redeemed, |a, b| a.checked_add(*b))
                                .ok_or_else(|| {
                                    abort(IssuanceError::InvalidArgument(
                                        "transfer: values overflow".into(),
                                    ))
                                })?;
                            tx.set(k.settled(txid), compact(response).encode_to_vec())?;
                            tx.atomic_add(k.book_out(from), leaving.fen() as i64)?;
                            for ((l, a), s) in to.iter().zip(&response.settlements) {
                                tx.atomic_add(k.book_in(*l), a.fen() as i64)?;
                                tx.set(k.queued(*l, txid), s.encode_to_vec())?;
                            }
                            if !redeemed.is_zero() {
                                tx.atomic_add(k.redeemed(), redeemed.fen() as i64)?;
                            }
                            out.push(response.clone());
                        }
                        Ok::<_, TxError<IssuanceError>>(out)
                    })
                })
                .await;
            match outcome {
                Ok(responses) => {
                    for ((i, ..), r) in plans.iter().zip(responses) {
                        results[*i] = Some(Ok(r));
                    }
                }
                Err(e) => {
                    let e = IssuanceError::from(e);
                    for (i, ..) in plans.iter() {
                        results[*i] = Some(Err(clone_error(&e)));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every transfer answered"))
            .collect()
    }

    /// What settling `t` does: the response (countersigned settlements), the value redeemed,
    /// and the value per destination ledger.
    async fn plan(
        &self,
        t: &Transfer,
        from: LedgerId,
        registered: &mut BTreeMap<LedgerId, bool>,
    ) -> Result<Plan, IssuanceError> {
        let overflow = || IssuanceError::InvalidArgument("transfer: values overflow".into());
        let mut to: BTreeMap<LedgerId, Amount> = BTreeMap::new();
        let mut redeemed = Amount::ZERO;
        let cb_lock = Lock::Key(self.public_key());
        for (i, o) in t.body().outputs.iter().enumerate() {
            if o.ledger == from {
                continue;
            }
            if o.ledger == CENTRAL_BANK {
                if o.lock != cb_lock {
                    return Err(IssuanceError::InvalidArgument(format!(
                        "transfer.outputs[{i}]: an output to ledger 0 is a redemption and must be locked to the central bank's key"
                    )));
                }
                redeemed = redeemed.checked_add(o.value).ok_or_else(overflow)?;
                continue;
            }
            let known = match registered.get(&o.ledger) {
                Some(k) => *k,
                None => {
                    let k = self.operator(o.ledger).await?.is_some();
                    registered.insert(o.ledger, k);
                    k
                }
            };
            if !known {
                return Err(IssuanceError::FailedPrecondition(format!(
                    "transfer.outputs[{i}]: ledger {} is not a registered bank",
                    o.ledger.0
                )));
            }
            let sum = to.entry(o.ledger).or_default();
            *sum = sum.checked_add(o.value).ok_or_else(overflow)?;
        }
        if to.is_empty() && redeemed.is_zero() {
            return Err(IssuanceError::InvalidArgument(format!(
                "transfer: no output leaves ledger {}; nothing to settle",
                from.0
            )));
        }
        let response = v1::SettleResponse {
            settlements: to
                .iter()
                .map(|(l, a)| self.settlement(t, from, *l, *a))
                .collect(),
            already_settled: false,
            redeemed: redeemed.to_string(),
        };
        Ok((response, redeemed, to))
    }

    /// The recorded settlement of each transfer, if any, in one snapshot.
    async fn settled_many(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<Option<v1::SettleResponse>>, IssuanceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let mut out = Vec::with_capacity(transfers.len());
        for t in transfers {
            out.push(
                match tx.get_snapshot(&self.keys().settled(&t.txid())).await? {
                    None => None,
                    Some(v) => Some(
                        v1::SettleResponse::decode(v.as_slice())
                            .map_err(|_| corrupt("settlement"))?,
                    ),
                },
            );
        }
        Ok(out)
    }

    // ----- delivery queue -----

    /// Settlements waiting for delivery: a page of at most [`QUEUE_SCAN_MAX`] from `from`
    /// (the start when `None`), and where the next page starts if this one was full.
    pub async fn queued(
        &self,
        from: Option<&[u8]>,
    ) -> Result<(Vec<Queued>, Option<Vec<u8>>), IssuanceError> {
        let (b, e) = self.keys().queue();
        let mut tx = self.inner.db.create_transaction()?;
        let rows = tx
            .get_range(
                from.unwrap_or(&b),
                &e,
                RangeOptions::snapshot(QUEUE_SCAN_MAX),
            )
            .await?;
        let next = match rows.last() {
            Some((k, _)) if rows.len() == QUEUE_SCAN_MAX => {
                let mut n = k.clone();
                n.push(0);
                Some(n)
            }
            _ => None,
        };
        let page = rows
            .iter()
            .map(|(k, v)| {
                let (ledger, txid) = self
                    .keys()
                    .queued_key(k)
                    .ok_or_else(|| corrupt("queue key"))?;
                let settlement = v1::Settlement::decode(v.as_slice())
                    .map_err(|_| corrupt("queued settlement"))?;
                Ok(Queued {
                    ledger,
                    txid,
                    settlement,
                })
            })
            .collect::<Result<Vec<_>, IssuanceError>>()?;
        Ok((page, next))
    }

    /// Removes delivered settlements from the queue, in one transaction.
    pub async fn delivered(&self, done: &[(LedgerId, Txid)]) -> Result<(), IssuanceError> {
        let keys: Arc<Vec<Vec<u8>>> = Arc::new(
            done.iter()
                .map(|(l, txid)| self.keys().queued(*l, txid))
                .collect(),
        );
        self.inner
            .db
            .run(move |tx| {
                let keys = Arc::clone(&keys);
                Box::pin(async move {
                    for k in keys.iter() {
                        tx.clear(k)?;
                    }
                    Ok::<_, TxError<IssuanceError>>(())
                })
            })
            .await?;
        Ok(())
    }

    // ----- checkpoints and audit -----

    /// Accepts a ledger's signed checkpoint if it extends the last accepted one (checked with
    /// the consistency proof) and its totals are within the books. `old_size` other than the
    /// accepted size answers `accepted: false` with the size held.
    pub async fn submit_checkpoint(
        &self,
        request: v1::SubmitCheckpointRequest,
    ) -> Result<v1::SubmitCheckpointResponse, IssuanceError> {
        let wire = request.checkpoint.ok_or_else(|| {
            IssuanceError::InvalidArgument("checkpoint: required field is missing".into())
        })?;
        let (cp, signature) = convert::checkpoint(&wire)?;
        let op = self.operator(cp.ledger).await?.ok_or_else(|| {
            IssuanceError::PermissionDenied(format!(
                "checkpoint.ledger_id: ledger {} is not a registered bank",
                cp.ledger.0
            ))
        })?;
        let key = operator_key(&op)?;
        cp.verify(&key, &signature).map_err(|e| match e {
            cbdc_core::audit::AuditError::Unbalanced { .. } => {
                IssuanceError::InvalidArgument(format!("checkpoint: {e}"))
            }
            other => IssuanceError::PermissionDenied(format!("checkpoint.signature: {other}")),
        })?;
        let proof: Vec<[u8; 32]> = request
            .consistency_proof
            .iter()
            .map(|h| convert::bytes32("consistency_proof", h))
            .collect::<Result<_, _>>()?;
        let me = self.clone();
        let old_size = request.old_size;
        let out = self
            .inner
            .db
            .run(move |tx| {
                let me = me.clone();
                let proof = proof.clone();
                let wire = wire.clone();
                Box::pin(async move {
                    let k = me.keys();
                    let previous = match get_proto::<v1::Checkpoint>(tx, &k.checkpoint(cp.ledger), "checkpoint").await? {
                        None => None,
                        Some(p) => Some(convert::checkpoint(&p).map_err(|_| abort(corrupt("checkpoint")))?.0),
                    };
                    let held = previous.map_or(0, |p| p.size);
                    if old_size != held {
                        return Ok(v1::SubmitCheckpointResponse { accepted: false, known_size: held });
                    }
                    if let Some(p) = previous {
                        check_extends(&p, &cp, &proof).map_err(abort)?;
                    } else if !proof.is_empty() {
                        return Err(abort(IssuanceError::InvalidArgument(
                            "consistency_proof: must be empty for a ledger's first checkpoint".into(),
                        )));
                    }
                    let sent_in = counter_amount(tx.get(&k.book_in(cp.ledger)).await?.as_deref(), "books").map_err(abort)?;
                    let out = counter_amount(tx.get(&k.book_out(cp.ledger)).await?.as_deref(), "books").map_err(abort)?;
                    if cp.inbound > sent_in {
                        return Err(abort(IssuanceError::FailedPrecondition(format!(
                            "checkpoint.inbound: {} exceeds the {} the central bank ever sent ledger {}",
                            cp.inbound, sent_in, cp.ledger.0
                        ))));
                    }
                    if cp.settled_out > out {
                        return Err(abort(IssuanceError::FailedPrecondition(format!(
                            "checkpoint.settled_out: {} exceeds the {} the central bank settled out of ledger {}",
                            cp.settled_out, out, cp.ledger.0
                        ))));
                    }
                    tx.set(k.checkpoint(cp.ledger), wire.encode_to_vec())?;
                    Ok::<_, TxError<IssuanceError>>(v1::SubmitCheckpointResponse { accepted: true, known_size: cp.size })
                })
            })
            .await?;
        Ok(out)
    }

    /// The latest accepted checkpoint of `ledger`.
    pub async fn accepted_checkpoint(
        &self,
        ledger: LedgerId,
    ) -> Result<Option<Checkpoint>, IssuanceError> {
        let mut tx = self.inner.db.create_transaction()?;
        match tx.get_snapshot(&self.keys().checkpoint(ledger)).await? {
            None => Ok(None),
            Some(v) => {
                let w = v1::Checkpoint::decode(v.as_slice()).map_err(|_| corrupt("checkpoint"))?;
                Ok(Some(
                    convert::checkpoint(&w)
                        .map_err(|_| corrupt("checkpoint"))?
                        .0,
                ))
            }
        }
    }

    /// Reconciles the books with every ledger's latest accepted checkpoint, in one snapshot
    /// of the central bank's store.
    pub async fn audit(&self) -> Result<v1::AuditResponse, IssuanceError> {
        let operators = self.operators().await?;
        let mut tx = self.inner.db.create_transaction()?;
        let k = self.keys();
        let issued = counter_amount(tx.get_snapshot(&k.issued()).await?.as_deref(), "totals")?;
        let redeemed = counter_amount(tx.get_snapshot(&k.redeemed()).await?.as_deref(), "totals")?;
        let outstanding = issued
            .checked_sub(redeemed)
            .ok_or_else(|| corrupt("totals"))?;
        let mut ledgers = Vec::with_capacity(operators.len());
        let mut books_sum = Amount::ZERO;
        let mut explained_sum: i128 = 0;
        let mut balanced = true;
        for op in &operators {
            let l = LedgerId(op.ledger_id);
            let sent_in =
                counter_amount(tx.get_snapshot(&k.book_in(l)).await?.as_deref(), "books")?;
            let out = counter_amount(tx.get_snapshot(&k.book_out(l)).await?.as_deref(), "books")?;
            let books = sent_in.checked_sub(out).ok_or_else(|| corrupt("books"))?;
            let cp = match tx.get_snapshot(&k.checkpoint(l)).await? {
                None => None,
                Some(v) => {
                    let w =
                        v1::Checkpoint::decode(v.as_slice()).map_err(|_| corrupt("checkpoint"))?;
                    Some(
                        convert::checkpoint(&w)
                            .map_err(|_| corrupt("checkpoint"))?
                            .0,
                    )
                }
            };
            let (reported, inbound, settled_out, size) = cp
                .map_or((Amount::ZERO, Amount::ZERO, Amount::ZERO, 0), |c| {
                    (c.outstanding, c.inbound, c.settled_out, c.size)
                });
            let in_flight_in = sent_in.checked_sub(inbound);
            let unacknowledged_out = out.checked_sub(settled_out);
            let ok = match (in_flight_in, unacknowledged_out) {
                (Some(i), Some(u)) => {
                    i128::from(reported.fen()) + i128::from(i.fen()) - i128::from(u.fen())
                        == i128::from(books.fen())
                }
                _ => false,
            };
            balanced &= ok;
            books_sum = books_sum
                .checked_add(books)
                .ok_or_else(|| corrupt("books"))?;
            explained_sum += i128::from(reported.fen())
                + in_flight_in.map_or(0, |a| i128::from(a.fen()))
                - unacknowledged_out.map_or(0, |a| i128::from(a.fen()));
            ledgers.push(v1::LedgerAudit {
                ledger_id: l.0,
                outstanding_books: books.to_string(),
                outstanding_reported: reported.to_string(),
                in_flight_in: in_flight_in.unwrap_or(Amount::ZERO).to_string(),
                unacknowledged_out: unacknowledged_out.unwrap_or(Amount::ZERO).to_string(),
                balanced: ok,
                checkpoint_size: size,
            });
        }
        balanced &= books_sum == outstanding && explained_sum == i128::from(outstanding.fen());
        Ok(v1::AuditResponse {
            issued: issued.to_string(),
            redeemed: redeemed.to_string(),
            outstanding: outstanding.to_string(),
            ledgers,
            balanced,
        })
    }
}

/// A settlement record as stored: without the transfer, which the request carries again on
/// a replay (its txid is the key).
fn compact(response: &v1::SettleResponse) -> v1::SettleResponse {
    v1::SettleResponse {
        settlements: response
            .settlements
            .iter()
            .map(|s| v1::Settlement {
                transfer: None,
                ..s.clone()
            })
            .collect(),
        ..response.clone()
    }
}

/// The first answer to a settlement, for a replay of it with transfer `t`.
fn replayed(mut done: v1::SettleResponse, t: &v1::SignedTransfer) -> v1::SettleResponse {
    done.already_settled = true;
    for s in &mut done.settlements {
        s.transfer = Some(t.clone());
    }
    done
}

fn transfer_txid(t: &v1::SignedTransfer) -> Result<Txid, TxError<IssuanceError>> {
    Ok(Txid::of_body(&t.body))
}

/// Checks that `new` extends `old`: the log did not shrink, its history did not change (the
/// consistency proof), and its running totals did not go back.
fn check_extends(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[[u8; 32]],
) -> Result<(), IssuanceError> {
    if new.size < old.size {
        return Err(IssuanceError::FailedPrecondition(format!(
            "checkpoint.size: {} would shrink the log from the accepted {}",
            new.size, old.size
        )));
    }
    cbdc_core::merkle::verify_consistency(old.size, new.size, proof, &old.root, &new.root).map_err(|e| {
        IssuanceError::FailedPrecondition(format!(
            "checkpoint.root: does not extend the accepted log of {} leaves (history changed?): {e}",
            old.size
        ))
    })?;
    if new.inbound < old.inbound || new.settled_out < old.settled_out {
        return Err(IssuanceError::FailedPrecondition(format!(
            "checkpoint: running totals went back (inbound {} → {}, settled out {} → {})",
            old.inbound, new.inbound, old.settled_out, new.settled_out
        )));
    }
    Ok(())
}
