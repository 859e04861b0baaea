//! The `cbdc.v1.IssuanceService` gRPC face: conversion, and every outcome's status in one
//! place.

use cbdc_core::LedgerId;
use cbdc_proto::convert;
use cbdc_proto::v1;
use tonic::{Request, Response, Status};

use crate::bank::{CentralBank, IssuanceError};

impl From<IssuanceError> for Status {
    fn from(e: IssuanceError) -> Status {
        match e {
            IssuanceError::InvalidArgument(m) => Status::invalid_argument(m),
            IssuanceError::NotFound(m) => Status::not_found(m),
            IssuanceError::FailedPrecondition(m) => Status::failed_precondition(m),
            IssuanceError::PermissionDenied(m) => Status::permission_denied(m),
            IssuanceError::Unavailable(m) => Status::unavailable(m),
            IssuanceError::Internal(m) => Status::internal(m),
        }
    }
}

/// Operators listed per page, by default and at most.
pub const PAGE_DEFAULT: u32 = 100;
pub const PAGE_MAX: u32 = 1000;

#[derive(Clone)]
pub struct IssuanceGrpc {
    bank: CentralBank,
    /// Decompressed witness keys of recent payers.
    keys: std::sync::Arc<cbdc_proto::keycache::KeyCache>,
}

impl IssuanceGrpc {
    pub fn new(bank: CentralBank) -> IssuanceGrpc {
        IssuanceGrpc {
            bank,
            keys: Default::default(),
        }
    }

    fn transfer(
        &self,
        field: &'static str,
        t: Option<&v1::SignedTransfer>,
    ) -> Result<cbdc_core::Transfer, convert::WireError> {
        convert::signed_transfer_with(field, t, &|k| self.keys.checked_key(k))
    }
}

#[tonic::async_trait]
impl v1::issuance_service_server::IssuanceService for IssuanceGrpc {
    async fn register_operator(
        &self,
        request: Request<v1::RegisterOperatorRequest>,
    ) -> Result<Response<v1::Operator>, Status> {
        let r = request.into_inner();
        let op = r
            .operator
            .ok_or_else(|| Status::invalid_argument("operator: required field is missing"))?;
        Ok(Response::new(
            self.bank.register(op, &r.admin_signature).await?,
        ))
    }

    async fn list_operators(
        &self,
        request: Request<v1::ListOperatorsRequest>,
    ) -> Result<Response<v1::ListOperatorsResponse>, Status> {
        let page = request.into_inner().page.unwrap_or_default();
        let size = match page.page_size {
            0 => PAGE_DEFAULT,
            n if n > PAGE_MAX => {
                return Err(Status::invalid_argument(format!(
                    "page.page_size: {n}; at most {PAGE_MAX}"
                )));
            }
            n => n,
        };
        let after: Option<u32> = if page.cursor.is_empty() {
            None
        } else {
            Some(page.cursor.parse().map_err(|_| {
                Status::invalid_argument(format!("page.cursor: {:?} is not a cursor", page.cursor))
            })?)
        };
        let all = self.bank.operators().await?;
        let operators: Vec<v1::Operator> = all
            .into_iter()
            .filter(|o| after.is_none_or(|a| o.ledger_id > a))
            .take(size as usize + 1)
            .collect();
        let more = operators.len() > size as usize;
        let operators: Vec<v1::Operator> = operators.into_iter().take(size as usize).collect();
        let next_cursor = match (more, operators.last()) {
            (true, Some(o)) => o.ledger_id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListOperatorsResponse {
            operators,
            page: Some(v1::PageResponse { next_cursor }),
        }))
    }

    async fn set_operator_status(
        &self,
        request: Request<v1::SetOperatorStatusRequest>,
    ) -> Result<Response<v1::Operator>, Status> {
        let r = request.into_inner();
        let status = v1::OperatorStatus::try_from(r.status)
            .map_err(|_| Status::invalid_argument(format!("status: unknown value {}", r.status)))?;
        Ok(Response::new(
            self.bank
                .set_status(
                    LedgerId(r.ledger_id),
                    status,
                    &r.request_id,
                    &r.admin_signature,
                )
                .await?,
        ))
    }

    async fn mint(
        &self,
        request: Request<v1::MintRequest>,
    ) -> Result<Response<v1::MintResponse>, Status> {
        let r = request.into_inner();
        let (t, outstanding, already) = self
            .bank
            .mint(
                &r.request_id,
                LedgerId(r.ledger_id),
                &r.amount,
                &r.reserve_reference,
                &r.admin_signature,
            )
            .await?;
        Ok(Response::new(v1::MintResponse {
            transfer: Some(convert::to_signed_transfer(&t)),
            outstanding: outstanding.to_string(),
            already_minted: already,
        }))
    }

    async fn settle(
        &self,
        request: Request<v1::SettleRequest>,
    ) -> Result<Response<v1::SettleResponse>, Status> {
        let r = request.into_inner();
        let t = self.transfer("transfer", r.transfer.as_ref())?;
        Ok(Response::new(
            self.bank
                .settle(t, LedgerId(r.from_ledger_id), &r.operator_signature)
                .await?,
        ))
    }

    async fn settle_batch(
        &self,
        request: Request<v1::SettleBatchRequest>,
    ) -> Result<Response<v1::SettleBatchResponse>, Status> {
        let r = request.into_inner();
        let transfers = r
            .transfers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.transfer("transfers", Some(t))
                    .map_err(|e| Status::invalid_argument(format!("transfers[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let results = self
            .bank
            .settle_batch(LedgerId(r.from_ledger_id), transfers, &r.operator_signature)
            .await?
            .into_iter()
            .map(|r| v1::SettleResult {
                outcome: Some(match r {
                    Ok(s) => v1::settle_result::Outcome::Settled(s),
                    Err(e) => {
                        let s = Status::from(e);
                        v1::settle_result::Outcome::Failed(v1::Failure {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                        })
                    }
                }),
            })
            .collect();
        Ok(Response::new(v1::SettleBatchResponse { results }))
    }

    async fn submit_checkpoint(
        &self,
        request: Request<v1::SubmitCheckpointRequest>,
    ) -> Result<Response<v1::SubmitCheckpointResponse>, Status> {
        Ok(Response::new(
            self.bank.submit_checkpoint(request.into_inner()).await?,
        ))
    }

    async fn audit(
        &self,
        _request: Request<v1::AuditRequest>,
    ) -> Result<Response<v1::AuditResponse>, Status> {
        Ok(Response::new(self.bank.audit().await?))
    }
}
