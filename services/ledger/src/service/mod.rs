//! The gRPC face of the ledger: converts wire types (naming the field at fault), calls
//! [`Ledger`], and maps every outcome to a precise status.

use std::pin::Pin;
use std::time::Instant;

use cbdc_core::messages::{ExchangeDirection, OperatorAction, OperatorOrder, WalletAction};
use cbdc_core::{Amount, KycTier, Reject, Transfer, Txid, WalletStatus};
use cbdc_proto::convert::{self};
use cbdc_proto::v1;
use cbdc_runtime::shutdown::Shutdown;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::batcher::Lane;
use crate::ledger::Ledger;

/// Default entries per history page.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
/// Entries a watcher may have queued before the stream waits for the client.
pub const WATCH_QUEUE: usize = 256;
/// Open `WatchWallet` streams, at most; beyond this the call is `RESOURCE_EXHAUSTED`.
pub const WATCHERS_MAX: usize = 10_000;
/// Open `WatchWallet` streams of one wallet, at most.
pub const WATCHERS_PER_WALLET: usize = 8;
/// Open `WatchWallet` streams of one client connection, at most.
pub const WATCHERS_PER_CONNECTION: usize = 64;

/// The `cbdc.v1.LedgerService` implementation.
#[derive(Clone)]
pub struct LedgerGrpc {
    ledger: Ledger,
    /// Decompressed witness keys of recent signers.
    keys: std::sync::Arc<cbdc_proto::keycache::KeyCache>,
    /// One permit per open watch stream.
    watchers: std::sync::Arc<tokio::sync::Semaphore>,
    /// Open watch streams per wallet and per client connection.
    watching: std::sync::Arc<Tally>,
    /// Ends open watch streams, so a graceful shutdown does not wait for them.
    shutdown: Shutdown,
    /// Transport security, when on: deliveries must come from the central bank's certificate.
    tls: Option<cbdc_runtime::tls::Tls>,
    /// Bounds on the batches in flight, overall and per connection.
    admission: std::sync::Arc<admission::Admission>,
}

impl LedgerGrpc {
    pub fn new(ledger: Ledger, shutdown: Shutdown) -> LedgerGrpc {
        LedgerGrpc {
            keys: Default::default(),
            watchers: std::sync::Arc::new(tokio::sync::Semaphore::new(WATCHERS_MAX)),
            watching: Default::default(),
            admission: admission::Admission::new(ledger.settings().max_batch),
            ledger,
            shutdown,
            tls: None,
        }
    }

    /// The bounds on batches in flight (shared with the [`admission::Gate`] in front).
    pub fn admission(&self) -> std::sync::Arc<admission::Admission> {
        std::sync::Arc::clone(&self.admission)
    }

    /// Checks callers' certificates where only a service may call (see
    /// `cbdc_runtime::tls`).
    pub fn with_tls(mut self, tls: Option<cbdc_runtime::tls::Tls>) -> LedgerGrpc {
        self.tls = tls;
        self
    }

    fn caller_is_central_bank<T>(&self, request: &Request<T>) -> Result<(), Status> {
        cbdc_runtime::tls::require_peer(
            self.tls.as_ref(),
            request,
            cbdc_runtime::tls::CENTRAL_BANK_NAME,
        )
    }

    fn address(&self, field: &'static str, text: &str) -> Result<cbdc_core::PublicKey, Status> {
        let a = convert::address(field, text)?;
        Ok(self.ledger.local_key(field, &a)?)
    }

    fn amount(&self, field: &'static str, text: &str) -> Result<Amount, Status> {
        let a = convert::amount(field, text, self.ledger.settings().amount_max)?;
        if a.is_zero() {
            return Err(cbdc_runtime::error::invalid(format!(
                "{field}: must be more than zero"
            )));
        }
        Ok(a)
    }
}

mod access;
pub mod admission;
mod deliveries;
mod log;
mod reads;
mod watch;
mod wire;

use access::{Tally, View, concerns};

pub use deliveries::{DELIVER_BATCH_MAX, REVERSAL_REASON_MAX};
use watch::watch;
use wire::{
    coin_msg, committed_msg, cursor, decode, entry_msg, rejected_msg, transfer_view, wallet_msg,
};

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::HistoryEntry, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogItem, Status>> + Send>>;

#[tonic::async_trait]
impl v1::ledger_service_server::LedgerService for LedgerGrpc {
    async fn open_wallet(
        &self,
        request: Request<v1::OpenWalletRequest>,
    ) -> Result<Response<v1::Wallet>, Status> {
        let r = request.into_inner();
        let key = convert::public_key("public_key", &r.public_key)?;
        if r.tier != v1::KycTier::Unspecified as i32 {
            let tier = convert::kyc_tier("tier", r.tier)?;
            if tier != KycTier::Class4Anonymous {
                return Err(cbdc_runtime::error::denied(
                    "tier: a customer opens an anonymous wallet only; class 1, 2 and 3 are set by the bank (SetWalletTier) after its identity check",
                ));
            }
        }
        let w = self
            .ledger
            .open_wallet(key, &r.network, &r.phone_number, &r.signature)
            .await?;
        // The wallet's key, checked once now, so that its first transfer finds it checked
        // (with many wallets each signs rarely; a check costs about a verification).
        let _ = self.keys.checked_key(&key);
        Ok(Response::new(wallet_msg(&w)))
    }

    async fn get_wallet(
        &self,
        request: Request<v1::GetWalletRequest>,
    ) -> Result<Response<v1::Wallet>, Status> {
        let r = request.get_ref();
        let key = self.reader("address", &r.address, r.auth.as_ref())?.key;
        Ok(Response::new(wallet_msg(&self.ledger.wallet(&key).await?)))
    }

    async fn set_wallet_tier(
        &self,
        request: Request<v1::SetWalletTierRequest>,
    ) -> Result<Response<v1::Wallet>, Status> {
        let r = request.into_inner();
        let key = self.address("address", &r.address)?;
        let tier = convert::kyc_tier("tier", r.tier)?;
        let order = OperatorOrder {
            header: convert::header("header", r.header.as_ref())?,
            action: OperatorAction::SetTier {
                address: &r.address,
                tier,
                reason: &r.reason,
            },
        };
        self.ledger
            .check_authority(&order, &r.authority_signature)?;
        let w = self
            .ledger
            .set_tier(key, tier, &r.reason, self.ledger.seen(&order))
            .await?;
        tracing::info!(address = %r.address, tier = ?tier, reason = %r.reason, request_id = %order.header.request_id, "authority tier change");
        Ok(Response::new(wallet_msg(&w)))
    }

    async fn freeze_wallet(
        &self,
        request: Request<v1::WalletActionRequest>,
    ) -> Result<Response<v1::Wallet>, Status> {
        self.wallet_action(
            request.into_inner(),
            WalletAction::Freeze,
            WalletStatus::Frozen,
        )
        .await
    }

    async fn unfreeze_wallet(
        &self,
        request: Request<v1::WalletActionRequest>,
    ) -> Result<Response<v1::Wallet>, Status> {
        self.wallet_action(
            request.into_inner(),
            WalletAction::Unfreeze,
            WalletStatus::Active,
        )
        .await
    }

    async fn close_wallet(
        &self,
        request: Request<v1::WalletActionRequest>,
    ) -> Result<Response<v1::Wallet>, Status> {
        self.wallet_action(
            request.into_inner(),
            WalletAction::Close,
            WalletStatus::Closed,
        )
        .await
    }

    async fn submit_transfer(
        &self,
        request: Request<v1::SubmitTransferRequest>,
    ) -> Result<Response<v1::TransferResult>, Status> {
        let started = Instant::now();
        let t = self
            .keys
            .signed_transfer("transfer", request.get_ref().transfer.as_ref())?;
        let outputs = t.body().outputs.clone();
        let result = self
            .ledger
            .submit_in(Lane::Priority, vec![Ok(t)])
            .await
            .remove(0);
        self.ledger.observe("SubmitTransfer", started);
        Ok(Response::new(committed_msg(&result?, &outputs)))
    }

    async fn submit_transfers(
        &self,
        request: Request<v1::SubmitTransfersRequest>,
    ) -> Result<Response<v1::SubmitTransfersResponse>, Status> {
        let started = Instant::now();
        let connection = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let r = request.into_inner();
        let max = self.ledger.settings().max_batch;
        if r.transfers.is_empty() {
            return Err(cbdc_runtime::error::invalid(
                "transfers: the batch is empty",
            ));
        }
        if r.transfers.len() > max {
            return Err(cbdc_runtime::error::invalid(format!(
                "transfers: {} transfers; at most {max} per request",
                r.transfers.len()
            )));
        }
        // Held until the batch is answered (or the call is abandoned).
        let _admitted = self.admission.admit(&connection, r.transfers.len())?;
        self.ledger
            .metrics()
            .request_batch
            .observe(r.transfers.len() as f64);
        let decoded: Vec<Result<Transfer, Reject>> =
            r.transfers.iter().map(|t| decode(&self.keys, t)).collect();
        let txids: Vec<Option<Txid>> = r
            .transfers
            .iter()
            .zip(&decoded)
            .map(|(w, d)| match d {
                Ok(t) => Some(t.txid()),
                Err(_) if w.body.len() <= cbdc_core::transfer::MAX_BODY_BYTES => {
                    Some(Txid::of_body(&w.body))
                }
                Err(_) => None,
            })
            .collect();
        let outputs: Vec<Vec<cbdc_core::Output>> = if r.return_outputs {
            decoded
                .iter()
                .map(|d| {
                    d.as_ref()
                        .map(|t| t.body().outputs.clone())
                        .unwrap_or_default()
                })
                .collect()
        } else {
            vec![Vec::new(); decoded.len()]
        };
        let results = self.ledger.submit(decoded).await;
        let results = results
            .iter()
            .zip(txids)
            .zip(&outputs)
            .map(|((r, txid), outputs)| match r {
                Ok(c) => committed_msg(c, outputs),
                Err(e) => rejected_msg(txid, e),
            })
            .collect();
        self.ledger.observe("SubmitTransfers", started);
        Ok(Response::new(v1::SubmitTransfersResponse { results }))
    }

    async fn get_transfer(
        &self,
        request: Request<v1::GetTransferRequest>,
    ) -> Result<Response<v1::GetTransferResponse>, Status> {
        let r = request.get_ref();
        let txid = convert::txid("txid", &r.txid)?;
        let reader = self.reader("address", &r.address, r.auth.as_ref())?;
        let unknown = || {
            Response::new(v1::GetTransferResponse {
                status: v1::TransferStatus::Unknown as i32,
                ..Default::default()
            })
        };
        let Some(info) = self.ledger.transfer(&txid).await? else {
            return Ok(unknown());
        };
        let body = cbdc_core::TransferBody::decode(&info.record.body)
            .map_err(|_| cbdc_runtime::error::internal("corrupt transfer record"))?;
        let Some(view) = reader.view(&body, &info.record.witnesses) else {
            // Not the reader's: answered as if unknown, so txids reveal nothing.
            return Ok(unknown());
        };
        let leaves = info.record.kind == crate::records::TransferKind::Local
            && body.outputs.iter().any(|o| o.ledger != self.ledger.id());
        // SETTLED only once every payee's ledger credited the move: the central bank says so
        // (asked once the transfer left the outbox; the answer kept once it is yes).
        let status = if info.reversal.is_some() {
            v1::TransferStatus::Reversed
        } else if info.settling {
            v1::TransferStatus::Settling
        } else if leaves {
            if info.delivered || self.ledger.confirm_delivery(&txid).await? {
                v1::TransferStatus::Settled
            } else {
                v1::TransferStatus::Settling
            }
        } else {
            v1::TransferStatus::Committed
        };
        let mine: Vec<usize> = body
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.ledger == self.ledger.id() && concerns(&o.lock, &reader.key))
            .map(|(i, _)| i)
            .collect();
        let decoded = transfer_view(txid, &body, view == View::Whole, &mine);
        let received = mine
            .iter()
            .map(|&i| {
                coin_msg(
                    cbdc_core::OutPoint {
                        txid,
                        index: i as u16,
                    },
                    &body.outputs[i],
                )
            })
            .collect();
        Ok(Response::new(v1::GetTransferResponse {
            reversal_reason: info.reversal.clone().unwrap_or_default(),
            status: status as i32,
            decoded: Some(decoded),
            transfer: (view == View::Whole).then(|| {
                convert::to_signed_parts(info.record.body.clone(), &info.record.witnesses)
            }),
            log_position: info.record.position.to_vec(),
            committed_at_unix_ms: info.record.committed_at_ms,
            received,
            memo: body.memo.clone(),
        }))
    }

    async fn build_transfer(
        &self,
        request: Request<v1::BuildTransferRequest>,
    ) -> Result<Response<v1::BuildTransferResponse>, Status> {
        let r = request.into_inner();
        let from = self
            .reader("from_address", &r.from_address, r.auth.as_ref())?
            .key;
        let mut payments = Vec::with_capacity(r.payments.len());
        for p in &r.payments {
            let to = convert::address("payments.to_address", &p.to_address)?;
            payments.push((to, self.amount("payments.amount", &p.amount)?));
        }
        let built = self
            .ledger
            .build(from, &payments, r.memo, r.valid_for_s)
            .await?;
        Ok(Response::new(v1::BuildTransferResponse {
            body: built.body,
            txid: built.txid.0.to_vec(),
            inputs: built
                .inputs
                .iter()
                .map(|(o, out)| v1::Coin {
                    outpoint: Some(convert::to_outpoint(o)),
                    output: Some(convert::to_output(out)),
                })
                .collect(),
        }))
    }

    async fn get_balance(
        &self,
        request: Request<v1::GetBalanceRequest>,
    ) -> Result<Response<v1::GetBalanceResponse>, Status> {
        let r = request.get_ref();
        let key = self.reader("address", &r.address, r.auth.as_ref())?.key;
        let w = self.ledger.wallet(&key).await?;
        Ok(Response::new(v1::GetBalanceResponse {
            balance: w.balance.to_string(),
            unspent_outputs: u32::try_from(w.unspent_outputs).unwrap_or(u32::MAX),
            spent_today: w.spent_today.to_string(),
        }))
    }

    async fn list_history(
        &self,
        request: Request<v1::ListHistoryRequest>,
    ) -> Result<Response<v1::ListHistoryResponse>, Status> {
        let r = request.into_inner();
        let key = self.reader("address", &r.address, r.auth.as_ref())?.key;
        let (size, page) = self.page(r.page)?;
        let after = cursor("page.cursor", &page.cursor)?;
        // Make sure the wallet exists, so a typo is not an empty history.
        self.ledger.wallet(&key).await?;
        let items = self.ledger.history(&key, after, size + 1).await?;
        let (items, page) = convert::paginate(items, size, |last| hex::encode(last.position));
        Ok(Response::new(v1::ListHistoryResponse {
            entries: items.iter().map(entry_msg).collect(),
            page: Some(page),
        }))
    }

    async fn list_coins(
        &self,
        request: Request<v1::ListCoinsRequest>,
    ) -> Result<Response<v1::ListCoinsResponse>, Status> {
        self.coins(request).await
    }

    type WatchWalletStream = WatchStream;

    async fn watch_wallet(
        &self,
        request: Request<v1::WatchWalletRequest>,
    ) -> Result<Response<Self::WatchWalletStream>, Status> {
        let connection = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let r = request.into_inner();
        let reader = self.reader("address", &r.address, r.auth.as_ref())?;
        let key = reader.key;
        let after = cursor("cursor", &r.cursor)?;
        self.ledger.wallet(&key).await?;
        let per_wallet = self
            .watching
            .take(format!("w:{}", r.address), WATCHERS_PER_WALLET)
            .ok_or_else(|| {
                cbdc_runtime::error::exhausted(format!(
                    "address: {WATCHERS_PER_WALLET} watch streams of this wallet are open; close one first"
                ))
            })?;
        let per_connection = self
            .watching
            .take(format!("c:{connection}"), WATCHERS_PER_CONNECTION)
            .ok_or_else(|| {
                cbdc_runtime::error::exhausted(format!(
                    "{WATCHERS_PER_CONNECTION} watch streams are open on this connection; close one first"
                ))
            })?;
        let permit = std::sync::Arc::clone(&self.watchers)
            .try_acquire_owned()
            .map_err(|_| {
                cbdc_runtime::error::exhausted(format!(
                    "{WATCHERS_MAX} watch streams are open on this ledger; try again later"
                ))
            })?;
        // Subscribe before reading the store, so nothing committed in between is missed.
        let live = self.ledger.subscribe(key);
        let (sender, receiver) = mpsc::channel(WATCH_QUEUE);
        let (ledger, shutdown) = (self.ledger.clone(), self.shutdown.clone());
        // The stream lasts as long as the grant that opened it.
        let lasts = std::time::Duration::from_millis(
            reader.expires_unix_ms.saturating_sub(self.ledger.now_ms()),
        );
        tokio::spawn(async move {
            let _ = tokio::time::timeout(lasts, watch(ledger, key, after, live, sender, shutdown))
                .await;
            drop((permit, per_wallet, per_connection));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn exchange(
        &self,
        request: Request<v1::ExchangeRequest>,
    ) -> Result<Response<v1::TransferResult>, Status> {
        let r = request.into_inner();
        let key = self.address("address", &r.address)?;
        let amount = self.amount("amount", &r.amount)?;
        let direction = convert::direction("direction", r.direction)?;
        let wallet_transfer = match direction {
            ExchangeDirection::WalletToDeposit => Some(convert::signed_transfer(
                "wallet_transfer",
                r.wallet_transfer.as_ref(),
            )?),
            ExchangeDirection::DepositToWallet => None,
        };
        let order = OperatorOrder {
            header: convert::header("header", r.header.as_ref())?,
            action: OperatorAction::Exchange {
                address: &r.address,
                amount: &r.amount,
                direction,
                wallet_transfer: wallet_transfer.as_ref().map(Transfer::txid),
            },
        };
        self.ledger
            .check_authority(&order, &r.authority_signature)?;
        let seen = self.ledger.seen(&order);
        let committed = match wallet_transfer {
            None => self.ledger.pay_from_vault(key, amount, seen).await?,
            Some(t) => {
                let payer_ok = t.witnesses().iter().any(|w| w.key == key);
                if !payer_ok {
                    return Err(cbdc_runtime::error::invalid(
                        "wallet_transfer: not signed by the wallet named in address",
                    ));
                }
                self.ledger.redeem_to_vault(t, amount, seen).await?
            }
        };
        Ok(Response::new(
            self.committed_with_outputs(&committed).await?,
        ))
    }

    async fn redeem(
        &self,
        request: Request<v1::RedeemRequest>,
    ) -> Result<Response<v1::TransferResult>, Status> {
        let r = request.into_inner();
        let amount = self.amount("amount", &r.amount)?;
        let order = OperatorOrder {
            header: convert::header("header", r.header.as_ref())?,
            action: OperatorAction::Redeem { amount: &r.amount },
        };
        self.ledger
            .check_authority(&order, &r.authority_signature)?;
        let committed = self.ledger.redeem(amount, self.ledger.seen(&order)).await?;
        Ok(Response::new(
            self.committed_with_outputs(&committed).await?,
        ))
    }

    async fn get_receipt(
        &self,
        request: Request<v1::GetReceiptRequest>,
    ) -> Result<Response<v1::Receipt>, Status> {
        let r = request.get_ref();
        let txid = convert::txid("txid", &r.txid)?;
        let reader = self.reader("address", &r.address, r.auth.as_ref())?;
        let not_found = || {
            cbdc_runtime::error::not_found(format!(
                "txid: no transfer {} concerning {} on this ledger",
                hex::encode(txid.0),
                r.address
            ))
        };
        let info = self.ledger.transfer(&txid).await?.ok_or_else(not_found)?;
        let body = cbdc_core::TransferBody::decode(&info.record.body)
            .map_err(|_| cbdc_runtime::error::internal("corrupt transfer record"))?;
        let view = reader
            .view(&body, &info.record.witnesses)
            .ok_or_else(not_found)?;
        let mut receipt = self.ledger.receipt(&txid).await?;
        if view == View::Outputs {
            receipt.transfer = None;
        }
        Ok(Response::new(convert::to_receipt(&receipt)))
    }

    type StreamLogStream = LogStream;

    async fn stream_log(
        &self,
        request: Request<v1::StreamLogRequest>,
    ) -> Result<Response<Self::StreamLogStream>, Status> {
        self.log_stream(request).await
    }

    async fn get_checkpoint(
        &self,
        _request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::Checkpoint>, Status> {
        let signed = self.ledger.checkpoint().await?.ok_or_else(|| {
            cbdc_runtime::error::precondition(
                "the audit log has not signed a checkpoint yet; try again shortly",
            )
        })?;
        Ok(Response::new(convert::to_checkpoint(
            &signed.checkpoint,
            &signed.signature,
        )))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<v1::GetConsistencyProofRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        self.consistency_proof(request).await
    }

    async fn deliver_inbound(
        &self,
        request: Request<v1::DeliverInboundRequest>,
    ) -> Result<Response<v1::DeliverInboundResponse>, Status> {
        self.caller_is_central_bank(&request)?;
        let r = request.into_inner();
        let s = r
            .settlement
            .ok_or_else(|| cbdc_runtime::error::invalid("settlement: required field is missing"))?;
        let item = self.inbound(s)?;
        let c = self
            .ledger
            .deliver_inbound_batch(vec![item])
            .await
            .remove(0)?;
        Ok(Response::new(v1::DeliverInboundResponse {
            already_delivered: c.already,
        }))
    }

    async fn deliver_inbound_batch(
        &self,
        request: Request<v1::DeliverInboundBatchRequest>,
    ) -> Result<Response<v1::DeliverInboundBatchResponse>, Status> {
        self.deliver_many(request).await
    }
}

impl LedgerGrpc {
    async fn wallet_action(
        &self,
        r: v1::WalletActionRequest,
        action: WalletAction,
        target: WalletStatus,
    ) -> Result<Response<v1::Wallet>, Status> {
        let key = self.address("address", &r.address)?;
        let order = OperatorOrder {
            header: convert::header("header", r.header.as_ref())?,
            action: OperatorAction::Wallet {
                action,
                address: &r.address,
                reason: &r.reason,
            },
        };
        let w = self
            .ledger
            .wallet_order(&order, &r.authority_signature, key, target)
            .await?;
        tracing::info!(action = action.name(), address = %r.address, reason = %r.reason, request_id = %order.header.request_id, "authority wallet action");
        Ok(Response::new(wallet_msg(&w)))
    }
}
