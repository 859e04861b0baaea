//! The one error kind of every service, and its one mapping to a gRPC status.
//!
//! A business rejection of a transfer ([`Reject`]) keeps its own exhaustive enum and travels
//! inside [`ServiceError::Reject`]; everything else is one of a handful of kinds, each with a
//! message that names the field or the condition to fix. `From<ServiceError> for Status` is
//! the only place a service error becomes a gRPC status, and [`ServiceError::code`] the only
//! place a result row's code is chosen, so a batch result and a single call say the same.
//!
//! Every status carries the gRPC rich error model in its details ([`status`]): a
//! `google.rpc.ErrorInfo` with the stable reason (the same string as a batch row's code) in
//! the domain [`ERROR_DOMAIN`] and the rejection's facts as metadata, a `BadRequest` field
//! violation when one field is at fault, and a `RetryInfo` when waiting helps. A client
//! branches on the reason, never on the message text.

use cbdc_core::Reject;
use cbdc_store::{StoreError, TxError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error the network's services answer with.
pub const ERROR_DOMAIN: &str = "cbdc.v1";

/// How long a client should wait before sending again a call the service could not take now.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The details of a failed call beside its code and message: the stable reason a client
/// branches on, the facts as metadata, the field at fault, and whether waiting helps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    pub reason: &'static str,
    pub metadata: Vec<(&'static str, String)>,
    /// The request field at fault and what is wrong with it (a `BadRequest` violation).
    pub field: Option<(String, String)>,
    pub retry_after: Option<std::time::Duration>,
}

/// A status with the rich error model in its details (see the module documentation).
pub fn status(code: Code, message: impl Into<String>, detail: Detail) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        detail.reason,
        ERROR_DOMAIN,
        detail
            .metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<std::collections::HashMap<_, _>>(),
    );
    if let Some((field, description)) = detail.field {
        details.add_bad_request_violation(field, description);
    }
    if detail.retry_after.is_some() {
        details.set_retry_info(detail.retry_after);
    }
    Status::with_error_details(code, message, details)
}

/// The stable reason of a status that carries none of ours (one made by the gRPC library
/// itself: a timeout, an unknown method, a message too large): its code's name.
pub fn code_reason(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Why a service call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A transfer broke a rule of the money model.
    #[error(transparent)]
    Reject(#[from] Reject),
    #[error("{0}")]
    InvalidArgument(String),
    /// One request field is wrong: `{field}: {problem}`, with the field named in the
    /// status's `BadRequest` details.
    #[error("{field}: {problem}")]
    InvalidField { field: String, problem: String },
    /// The caller did not say who it is (no client certificate, no or a bad read grant).
    #[error("{0}")]
    Unauthenticated(String),
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
            ServiceError::InvalidArgument(_) | ServiceError::InvalidField { .. } => {
                Code::InvalidArgument
            }
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
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
            ServiceError::InvalidField { .. } => "INVALID_FIELD",
            ServiceError::Unauthenticated(_) => "UNAUTHENTICATED",
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

    /// A wrong request field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> ServiceError {
        ServiceError::InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The details the status of this error carries (see [`status`]).
    pub fn detail(&self) -> Detail {
        let mut detail = Detail {
            reason: self.code(),
            ..Detail::default()
        };
        match self {
            ServiceError::Reject(r) => detail.metadata = r.metadata(),
            ServiceError::InvalidField { field, problem } => {
                detail.metadata = vec![("field", field.clone())];
                detail.field = Some((field.clone(), problem.clone()));
            }
            _ => {}
        }
        if self.is_retryable() {
            detail.retry_after = Some(RETRY_AFTER);
        }
        detail
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

/// An invalid request: `"field: problem"` names the field at fault (an `InvalidField`, with
/// its `BadRequest` violation); any other text is a plain invalid argument.
pub fn invalid(message: impl Into<String>) -> Status {
    let message = message.into();
    let field = message.split_once(": ").filter(|(field, _)| {
        !field.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    });
    Status::from(match field {
        Some((field, problem)) => ServiceError::field(field, problem),
        None => ServiceError::InvalidArgument(message),
    })
}

/// The caller may not make this call.
pub fn denied(message: impl Into<String>) -> Status {
    ServiceError::PermissionDenied(message.into()).into()
}

/// The caller did not say who it is.
pub fn unauthenticated(message: impl Into<String>) -> Status {
    ServiceError::Unauthenticated(message.into()).into()
}

/// What the call names does not exist (for this caller).
pub fn not_found(message: impl Into<String>) -> Status {
    ServiceError::NotFound(message.into()).into()
}

/// The state does not allow the call now.
pub fn precondition(message: impl Into<String>) -> Status {
    ServiceError::FailedPrecondition(message.into()).into()
}

/// A bound was reached; waiting may help.
pub fn exhausted(message: impl Into<String>) -> Status {
    ServiceError::ResourceExhausted(message.into()).into()
}

/// The service cannot take the call now; waiting helps.
pub fn unavailable(message: impl Into<String>) -> Status {
    ServiceError::Unavailable(message.into()).into()
}

/// A fault of the service itself.
pub fn internal(message: impl Into<String>) -> Status {
    ServiceError::Internal(message.into()).into()
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

/// The gRPC status of a business rejection: its code, then what was wrong, with its reason
/// and facts in the details.
pub fn reject_status(r: &Reject) -> Status {
    Status::from(ServiceError::Reject(r.clone()))
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let message = match &e {
            ServiceError::Reject(r) => format!("{}: {r}", r.code()),
            other => other.to_string(),
        };
        status(e.grpc_code(), message, e.detail())
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
    fn statuses_carry_the_reason_the_facts_the_field_and_when_to_retry() {
        use tonic_types::StatusExt;
        let spent = Reject::InputSpent {
            outpoint: cbdc_core::OutPoint {
                txid: cbdc_core::Txid([1; 32]),
                index: 3,
            },
            spent_by: cbdc_core::Txid([2; 32]),
        };
        let status = Status::from(ServiceError::Reject(spent));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INPUT_SPENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata["input"],
            format!("{}:3", cbdc_core::Txid([1; 32]))
        );
        assert_eq!(
            info.metadata["spent_by"],
            cbdc_core::Txid([2; 32]).to_string()
        );
        assert!(status.get_details_retry_info().is_none());
        assert!(status.get_details_bad_request().is_none());

        let status = invalid("payments[1].amount: 3 decimal places");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "payments[1].amount: 3 decimal places");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_FIELD"
        );
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "payments[1].amount");
        assert_eq!(bad.field_violations[0].description, "3 decimal places");
        // Text that does not start with a field path is a plain invalid argument.
        let status = invalid("the batch is empty: send at least one");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_ARGUMENT"
        );
        assert!(status.get_details_bad_request().is_none());

        let status = unavailable("store busy");
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(RETRY_AFTER)
        );
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "UNAVAILABLE"
        );
        let status = denied("no");
        assert!(status.get_details_retry_info().is_none());
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "PERMISSION_DENIED"
        );
    }

    #[test]
    fn rejections_keep_their_codes_and_workers_give_up_only_on_invalid_requests() {
        let missing = Reject::InputMissing {
            outpoint: cbdc_core::OutPoint {
                txid: cbdc_core::Txid([1; 32]),
                index: 0,
            },
        };
        assert_eq!(reject_grpc_code(&missing), Code::NotFound);
        assert_eq!(
            reject_grpc_code(&Reject::BadSignature { index: 0 }),
            Code::PermissionDenied
        );
        assert_eq!(reject_grpc_code(&Reject::NoInputs), Code::InvalidArgument);
        assert_eq!(code_reason(Code::Unimplemented), "UNIMPLEMENTED");
        assert_eq!(code_reason(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        let permanent = rpc_failure("peer", &Status::invalid_argument("bad"));
        assert!(matches!(permanent, crate::retry::Failure::Permanent(m) if m.contains("peer")));
        for retried in [
            Status::unavailable("down"),
            Status::failed_precondition("suspended"),
            Status::not_found("not yet registered"),
        ] {
            assert!(matches!(
                rpc_failure("peer", &retried),
                crate::retry::Failure::Retryable(_)
            ));
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
