//! The one error kind of every service, and its one mapping to a gRPC status.
//!
//! A business rejection of a transfer ([`Reject`]) keeps its own exhaustive enum and travels
//! inside [`ServiceError::Reject`]; everything else is one of a handful of kinds, each with a
//! message that names the field or the condition to fix. `From<ServiceError> for Status` is
//! the only place a service error becomes a gRPC status, and [`ServiceError::code`] the only
//! place a result row's code is chosen, so a batch result and a single call say the same.

use cbdc_core::Reject;
use cbdc_store::{StoreError, TxError};
use tonic::{Code, Status};

/// Why a service call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A transfer broke a rule of the money model.
    #[error(transparent)]
    Reject(#[from] Reject),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// A committed transfer's move refused for good (a destination that does not exist or
    /// does not take it, a payee closed or at its cap): its value goes back to the payer.
    #[error("{0}")]
    Refused(String),
}

impl ServiceError {
    /// Whether the same request may succeed later unchanged (the service was busy, stopping
    /// or unreachable). Everything else is permanent: sending it again gets the same answer.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ServiceError::Unavailable(_) | ServiceError::ResourceExhausted(_)
        )
    }

    /// The gRPC code this error is answered with.
    pub fn grpc_code(&self) -> Code {
        match self {
            ServiceError::Reject(r) => reject_grpc_code(r),
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
            ServiceError::Refused(_) => Code::FailedPrecondition,
        }
    }

    /// The stable code of a result row: a rejection's own code, else the kind's name.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Reject(r) => r.code(),
            ServiceError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ServiceError::NotFound(_) => "NOT_FOUND",
            ServiceError::AlreadyExists(_) => "ALREADY_EXISTS",
            ServiceError::FailedPrecondition(_) => "FAILED_PRECONDITION",
            ServiceError::PermissionDenied(_) => "PERMISSION_DENIED",
            ServiceError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            ServiceError::Unavailable(_) => "UNAVAILABLE",
            ServiceError::Internal(_) => "INTERNAL",
            ServiceError::Refused(_) => "REFUSED",
        }
    }

    /// The error of a store failure, in a service called `service` ("the ledger").
    pub fn store(service: &str, e: StoreError) -> ServiceError {
        match e {
            StoreError::Closed => ServiceError::Unavailable(format!("{service} is shutting down")),
            StoreError::Failed(_) => ServiceError::Unavailable(format!(
                "{service} stopped taking commits after a storage failure; it needs a restart: {e}"
            )),
            StoreError::RetryLimit { .. } => {
                ServiceError::Unavailable(format!("store busy, try again: {e}"))
            }
            other => ServiceError::Internal(format!("store: {other}")),
        }
    }

    /// A corrupt stored record: an internal error naming what could not be read.
    pub fn corrupt(what: &str) -> ServiceError {
        ServiceError::Internal(format!("corrupt {what} record"))
    }
}

/// The gRPC code of a business rejection.
pub fn reject_grpc_code(r: &Reject) -> Code {
    use Reject::*;
    match r {
        InputSpent { .. }
        | WalletFrozen { .. }
        | WalletClosed { .. }
        | LimitExceeded { .. }
        | Expired { .. }
        | HoldExpired { .. }
        | HoldActive { .. }
        | MandateExpired { .. }
        | DestinationUnavailable { .. } => Code::FailedPrecondition,
        InputMissing { .. } | UnknownWallet { .. } => Code::NotFound,
        BadSignature { .. }
        | NotAuthorised { .. }
        | UnusedWitness { .. }
        | MandateExceeded { .. } => Code::PermissionDenied,
        _ => Code::InvalidArgument,
    }
}

/// The gRPC status of a business rejection: its code, then what was wrong.
pub fn reject_status(r: &Reject) -> Status {
    Status::new(reject_grpc_code(r), format!("{}: {r}", r.code()))
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Reject(r) => reject_status(&r),
            other => Status::new(other.grpc_code(), other.to_string()),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::store("the service", e)
    }
}

impl From<TxError<ServiceError>> for ServiceError {
    fn from(e: TxError<ServiceError>) -> Self {
        match e {
            TxError::Abort(e) => e,
            TxError::Store(e) => e.into(),
        }
    }
}

/// How a retrying worker treats a failed call to `peer`: an invalid request is refused the
/// same way every time it is sent, so it is permanent (a dead letter); everything else —
/// unavailable, busy, not yet registered, suspended, a failed precondition that another
/// party may lift — is tried again later.
pub fn rpc_failure(peer: &str, status: &Status) -> crate::retry::Failure {
    let message = format!("{peer}: {}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument => crate::retry::Failure::Permanent(message),
        _ => crate::retry::Failure::Retryable(message),
    }
}

/// A business error that ends a store transaction without writing anything.
pub fn abort(e: impl Into<ServiceError>) -> TxError<ServiceError> {
    TxError::Abort(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_only_busy_kinds_are_retried() {
        let m = || "m".to_string();
        let cases = [
            (
                ServiceError::InvalidArgument(m()),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                false,
            ),
            (
                ServiceError::NotFound(m()),
                Code::NotFound,
                "NOT_FOUND",
                false,
            ),
            (
                ServiceError::AlreadyExists(m()),
                Code::AlreadyExists,
                "ALREADY_EXISTS",
                false,
            ),
            (
                ServiceError::FailedPrecondition(m()),
                Code::FailedPrecondition,
                "FAILED_PRECONDITION",
                false,
            ),
            (
                ServiceError::PermissionDenied(m()),
                Code::PermissionDenied,
                "PERMISSION_DENIED",
                false,
            ),
            (
                ServiceError::ResourceExhausted(m()),
                Code::ResourceExhausted,
                "RESOURCE_EXHAUSTED",
                true,
            ),
            (
                ServiceError::Unavailable(m()),
                Code::Unavailable,
                "UNAVAILABLE",
                true,
            ),
            (
                ServiceError::Internal(m()),
                Code::Internal,
                "INTERNAL",
                false,
            ),
            (
                ServiceError::Reject(Reject::NoInputs),
                Code::InvalidArgument,
                "MALFORMED",
                false,
            ),
            (
                ServiceError::Reject(Reject::InputSpent {
                    outpoint: cbdc_core::OutPoint {
                        txid: cbdc_core::Txid([1; 32]),
                        index: 0,
                    },
                    spent_by: cbdc_core::Txid([2; 32]),
                }),
                Code::FailedPrecondition,
                "INPUT_SPENT",
                false,
            ),
        ];
        for (e, code, row_code, retryable) in cases {
            assert_eq!(e.code(), row_code, "{e:?}");
            assert_eq!(e.grpc_code(), code, "{e:?}");
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
            let status = Status::from(e.clone());
            assert_eq!(status.code(), code);
            assert!(status.message().ends_with(&e.to_string()), "{e:?}");
        }
    }

    #[test]
    fn store_failures_become_unavailable_or_internal() {
        let closed = ServiceError::store("the ledger", StoreError::Closed);
        assert_eq!(
            closed,
            ServiceError::Unavailable("the ledger is shutting down".into())
        );
        let busy = ServiceError::from(StoreError::RetryLimit {
            attempts: 3,
            last: Box::new(StoreError::NotCommitted),
        });
        assert!(busy.is_retryable());
        assert!(!ServiceError::from(StoreError::Io("disk".into())).is_retryable());
        let aborted: ServiceError =
            TxError::Abort(ServiceError::NotFound(String::from("x"))).into();
        assert_eq!(aborted, ServiceError::NotFound("x".into()));
    }
}
