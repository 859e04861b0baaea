//! The gRPC face of the central bank: converts wire types (naming the field at fault) into
//! the domain types [`CentralBank`] works on, and its answers back. Errors become statuses in
//! `cbdc_runtime::error`, the one place that mapping lives.

use cbdc_core::LedgerId;
use cbdc_core::messages::OperatorStatus;
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_runtime::ServiceError;
use tonic::{Request, Response, Status};

use crate::bank::CentralBank;
use crate::bank::issue::MintOrder;
use crate::bank::registry::Registration;
use crate::bank::{AuditReport, SettleOutcome};
use crate::records::{Operator, Settlement, SignedParts};

/// Operators listed per page, by default and at most.
pub const PAGE_DEFAULT: u32 = 100;
pub const PAGE_MAX: u32 = 1000;

#[derive(Clone)]
pub struct IssuanceGrpc {
    bank: CentralBank,
    /// Decompressed witness keys of recent payers.
    keys: std::sync::Arc<cbdc_proto::keycache::KeyCache>,
    /// Transport security, when on: a bank's calls must come with that bank's certificate,
    /// the administrator's with the administrator's.
    tls: Option<cbdc_runtime::tls::Tls>,
    /// How long settling took, by RPC (`settle`, `settle_batch`), when registered.
    settle_latency: Option<prometheus::HistogramVec>,
}

/// Txids per `GetSettlementStatus` request, at most.
pub const SETTLEMENT_STATUS_MAX: usize = 1024;

impl IssuanceGrpc {
    pub fn new(bank: CentralBank) -> IssuanceGrpc {
        IssuanceGrpc {
            bank,
            keys: Default::default(),
            tls: None,
            settle_latency: None,
        }
    }

    /// Registers `settle_duration_seconds{rpc}` in `registry`: how long a bank waits for
    /// its settlements to be recorded and countersigned.
    pub fn with_metrics(
        mut self,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<IssuanceGrpc> {
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "settle_duration_seconds",
                "Time to record and countersign a bank's settlements, by RPC",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            &["rpc"],
        )?;
        registry.register(Box::new(h.clone()))?;
        self.settle_latency = Some(h);
        Ok(self)
    }

    fn settle_timer(&self, rpc: &str) -> Option<prometheus::HistogramTimer> {
        self.settle_latency
            .as_ref()
            .map(|h| h.with_label_values(&[rpc]).start_timer())
    }

    /// Checks callers' certificates where only a service may call (see
    /// `cbdc_runtime::tls`).
    pub fn with_tls(mut self, tls: Option<cbdc_runtime::tls::Tls>) -> IssuanceGrpc {
        self.tls = tls;
        self
    }

    fn caller_is<T>(&self, request: &Request<T>, name: &str) -> Result<(), Status> {
        cbdc_runtime::tls::require_peer(self.tls.as_ref(), request, name)
    }

    fn caller_is_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.caller_is(request, cbdc_runtime::tls::ADMIN_NAME)
    }

    fn transfer(
        &self,
        field: &'static str,
        t: Option<&v1::SignedTransfer>,
    ) -> Result<cbdc_core::Transfer, convert::WireError> {
        self.keys.signed_transfer(field, t)
    }
}

#[tonic::async_trait]
impl v1::issuance_service_server::IssuanceService for IssuanceGrpc {
    async fn register_operator(
        &self,
        request: Request<v1::RegisterOperatorRequest>,
    ) -> Result<Response<v1::Operator>, Status> {
        self.caller_is_admin(&request)?;
        let r = request.into_inner();
        if self.tls.is_some()
            && let Some(op) = &r.operator
            && !op.endpoint.starts_with("https://")
        {
            return Err(cbdc_runtime::error::invalid(format!(
                "operator.endpoint: {:?}; this network uses TLS: expected an https:// URL",
                op.endpoint
            )));
        }
        let op = r
            .operator
            .ok_or_else(|| cbdc_runtime::error::invalid("operator: required field is missing"))?;
        let registration = Registration {
            ledger: LedgerId(op.ledger_id),
            name: &op.name,
            operator_key: &op.operator_public_key,
            endpoint: &op.endpoint,
        };
        let header = convert::header("header", r.header.as_ref())?;
        let registered = self
            .bank
            .register(header, registration, &r.admin_signature)
            .await?;
        Ok(Response::new(operator_msg(&registered)))
    }

    async fn list_operators(
        &self,
        request: Request<v1::ListOperatorsRequest>,
    ) -> Result<Response<v1::ListOperatorsResponse>, Status> {
        let page = request.into_inner().page.unwrap_or_default();
        let size = convert::page_size(&page, PAGE_DEFAULT, PAGE_MAX)?;
        let after: Option<u32> = if page.cursor.is_empty() {
            None
        } else {
            Some(page.cursor.parse().map_err(|_| {
                cbdc_runtime::error::invalid(format!(
                    "page.cursor: {:?} is not a cursor",
                    page.cursor
                ))
            })?)
        };
        let all = self.bank.operators().await?;
        let operators: Vec<v1::Operator> = all
            .iter()
            .map(operator_msg)
            .filter(|o| after.is_none_or(|a| o.ledger_id > a))
            .take(size + 1)
            .collect();
        let (operators, page) = convert::paginate(operators, size, |o| o.ledger_id.to_string());
        Ok(Response::new(v1::ListOperatorsResponse {
            operators,
            page: Some(page),
        }))
    }

    async fn set_operator_status(
        &self,
        request: Request<v1::SetOperatorStatusRequest>,
    ) -> Result<Response<v1::Operator>, Status> {
        self.caller_is_admin(&request)?;
        let r = request.into_inner();
        let status = match v1::OperatorStatus::try_from(r.status) {
            Ok(v1::OperatorStatus::Active) => OperatorStatus::Active,
            Ok(v1::OperatorStatus::Suspended) => OperatorStatus::Suspended,
            Ok(v1::OperatorStatus::Unspecified) => {
                return Err(cbdc_runtime::error::invalid("status: unspecified"));
            }
            Err(_) => {
                return Err(cbdc_runtime::error::invalid(format!(
                    "status: unknown value {}",
                    r.status
                )));
            }
        };
        let op = self
            .bank
            .set_status(
                convert::header("header", r.header.as_ref())?,
                LedgerId(r.ledger_id),
                status,
                &r.admin_signature,
            )
            .await?;
        Ok(Response::new(operator_msg(&op)))
    }

    async fn mint(
        &self,
        request: Request<v1::MintRequest>,
    ) -> Result<Response<v1::MintResponse>, Status> {
        self.caller_is_admin(&request)?;
        let r = request.into_inner();
        let order = MintOrder {
            ledger: LedgerId(r.ledger_id),
            amount: &r.amount,
            reserve_reference: &r.reserve_reference,
        };
        let header = convert::header("header", r.header.as_ref())?;
        let minted = self.bank.mint(header, order, &r.admin_signature).await?;
        Ok(Response::new(v1::MintResponse {
            transfer: Some(signed_msg(minted.transfer)),
            outstanding: minted.outstanding.to_string(),
            already_minted: minted.already,
        }))
    }

    async fn settle(
        &self,
        request: Request<v1::SettleRequest>,
    ) -> Result<Response<v1::SettleResponse>, Status> {
        self.caller_is(
            &request,
            &cbdc_runtime::tls::bank_name(request.get_ref().from_ledger_id),
        )?;
        let _timer = self.settle_timer("settle");
        let r = request.into_inner();
        let t = self.transfer("transfer", r.transfer.as_ref())?;
        let wire = convert::to_signed_transfer(&t);
        let outcome = self
            .bank
            .settle(t, LedgerId(r.from_ledger_id), &r.operator_signature)
            .await?;
        Ok(Response::new(settle_msg(&outcome, &wire)))
    }

    async fn settle_batch(
        &self,
        request: Request<v1::SettleBatchRequest>,
    ) -> Result<Response<v1::SettleBatchResponse>, Status> {
        self.caller_is(
            &request,
            &cbdc_runtime::tls::bank_name(request.get_ref().from_ledger_id),
        )?;
        let _timer = self.settle_timer("settle_batch");
        let r = request.into_inner();
        let transfers = r
            .transfers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.transfer("transfers", Some(t))
                    .map_err(|e| cbdc_runtime::error::invalid(format!("transfers[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let results = self
            .bank
            .settle_batch(
                LedgerId(r.from_ledger_id),
                &transfers,
                &r.operator_signature,
            )
            .await?
            .into_iter()
            .zip(&r.transfers)
            .map(|(outcome, wire)| v1::SettleResult {
                outcome: Some(match outcome {
                    Ok(s) => v1::settle_result::Outcome::Settled(settle_msg(&s, wire)),
                    Err(e @ ServiceError::Refused(_)) => {
                        v1::settle_result::Outcome::Refused(convert::to_failure(&Status::from(e)))
                    }
                    Err(e) => {
                        v1::settle_result::Outcome::Failed(convert::to_failure(&Status::from(e)))
                    }
                }),
            })
            .collect();
        Ok(Response::new(v1::SettleBatchResponse { results }))
    }

    async fn get_settlement_status(
        &self,
        request: Request<v1::GetSettlementStatusRequest>,
    ) -> Result<Response<v1::GetSettlementStatusResponse>, Status> {
        let ledger = request.get_ref().ledger_id;
        self.caller_is(&request, &cbdc_runtime::tls::bank_name(ledger))?;
        let r = request.into_inner();
        if r.txids.len() > SETTLEMENT_STATUS_MAX {
            return Err(cbdc_runtime::error::invalid(format!(
                "txids: {} txids; at most {SETTLEMENT_STATUS_MAX} per request",
                r.txids.len()
            )));
        }
        let txids = r
            .txids
            .iter()
            .map(|t| convert::txid("txids", t))
            .collect::<Result<Vec<_>, _>>()?;
        let states = self
            .bank
            .settlement_states(cbdc_core::LedgerId(ledger), &txids)
            .await?;
        use crate::bank::SettlementState as S;
        Ok(Response::new(v1::GetSettlementStatusResponse {
            states: states
                .into_iter()
                .map(|s| {
                    (match s {
                        S::Unknown => v1::SettlementState::Unknown,
                        S::InFlight => v1::SettlementState::InFlight,
                        S::Delivered => v1::SettlementState::Delivered,
                        S::Reversed => v1::SettlementState::Reversed,
                    }) as i32
                })
                .collect(),
        }))
    }

    async fn submit_checkpoint(
        &self,
        request: Request<v1::SubmitCheckpointRequest>,
    ) -> Result<Response<v1::SubmitCheckpointResponse>, Status> {
        let ledger = request
            .get_ref()
            .checkpoint
            .as_ref()
            .map_or(0, |c| c.ledger_id);
        self.caller_is(&request, &cbdc_runtime::tls::bank_name(ledger))?;
        let r = request.into_inner();
        let wire = r
            .checkpoint
            .ok_or_else(|| cbdc_runtime::error::invalid("checkpoint: required field is missing"))?;
        let (cp, signature) = convert::checkpoint(&wire)?;
        let proof = r
            .consistency_proof
            .iter()
            .map(|h| convert::bytes32("consistency_proof", h))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = self
            .bank
            .submit_checkpoint(cp, &signature, r.old_size, proof)
            .await?;
        Ok(Response::new(v1::SubmitCheckpointResponse {
            accepted: answer.accepted,
            known_size: answer.known_size,
        }))
    }

    async fn audit(
        &self,
        _request: Request<v1::AuditRequest>,
    ) -> Result<Response<v1::AuditResponse>, Status> {
        Ok(Response::new(audit_msg(&self.bank.audit().await?)))
    }
}

fn operator_msg(op: &Operator) -> v1::Operator {
    v1::Operator {
        ledger_id: op.ledger.0,
        name: op.name.clone(),
        operator_public_key: op.key.as_bytes().to_vec(),
        endpoint: op.endpoint.clone(),
        status: match op.status {
            OperatorStatus::Active => v1::OperatorStatus::Active,
            OperatorStatus::Suspended => v1::OperatorStatus::Suspended,
        } as i32,
    }
}

/// A transfer exactly as signed, on the wire.
pub fn signed_msg(t: SignedParts) -> v1::SignedTransfer {
    convert::to_signed_parts(t.body, &t.witnesses)
}

/// A countersigned settlement on the wire, carrying `transfer`.
pub fn settlement_msg(s: &Settlement, transfer: v1::SignedTransfer) -> v1::Settlement {
    v1::Settlement {
        transfer: Some(transfer),
        from_ledger_id: s.from.0,
        to_ledger_id: s.to.0,
        amount: s.amount.to_string(),
        central_bank_signature: s.countersignature.to_vec(),
        reversal_reason: String::new(),
    }
}

fn settle_msg(outcome: &SettleOutcome, transfer: &v1::SignedTransfer) -> v1::SettleResponse {
    v1::SettleResponse {
        settlements: outcome
            .settled
            .settlements
            .iter()
            .map(|s| settlement_msg(s, transfer.clone()))
            .collect(),
        already_settled: outcome.already,
        redeemed: outcome.settled.redeemed.to_string(),
    }
}

fn audit_msg(a: &AuditReport) -> v1::AuditResponse {
    v1::AuditResponse {
        issued: a.issued.to_string(),
        redeemed: a.redeemed.to_string(),
        outstanding: a.outstanding.to_string(),
        ledgers: a
            .ledgers
            .iter()
            .map(|l| v1::LedgerAudit {
                ledger_id: l.ledger.0,
                outstanding_books: l.books.to_string(),
                outstanding_reported: l.reported.to_string(),
                in_flight_in: l.in_flight_in.to_string(),
                unacknowledged_out: l.unacknowledged_out.to_string(),
                balanced: l.balanced,
                checkpoint_size: l.checkpoint_size,
                fault: l.fault.clone().unwrap_or_default(),
                checkpoint_timestamp_ms: l.checkpoint_timestamp_ms,
                received: l.received.to_string(),
                sent: l.sent.to_string(),
            })
            .collect(),
        balanced: a.balanced,
    }
}
