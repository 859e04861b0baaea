//! What a call can fail with. A service's refusal keeps what the gRPC rich error model
//! carries: the stable reason a client branches on, the facts, the field at fault, and how
//! long to wait when waiting helps.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic_types::StatusExt;

/// A refusal by a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: tonic::Code,
    /// The stable reason (`INPUT_SPENT`, `LIMIT_EXCEEDED`, `INVALID_FIELD`, …; see
    /// `docs/errors.md`).
    pub reason: String,
    pub message: String,
    /// The facts: `input`, `spent_by`, `limit`, `cap`, `amount`, `field`, …
    pub metadata: BTreeMap<String, String>,
    /// The request field at fault and what is wrong with it.
    pub field: Option<(String, String)>,
    /// Sending the same call again after this long may succeed.
    pub retry_after: Option<Duration>,
}

impl From<tonic::Status> for RpcError {
    fn from(s: tonic::Status) -> RpcError {
        let details = s.get_error_details();
        let (reason, metadata) = match details.error_info() {
            Some(info) => (
                info.reason.clone(),
                info.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            None => (format!("{:?}", s.code()).to_uppercase(), BTreeMap::new()),
        };
        RpcError {
            code: s.code(),
            reason,
            message: s.message().to_string(),
            metadata,
            field: details
                .bad_request()
                .and_then(|b| b.field_violations.first())
                .map(|v| (v.field.clone(), v.description.clone())),
            retry_after: details.retry_info().and_then(|r| r.retry_delay),
        }
    }
}

impl RpcError {
    /// A batch row's rejection, as the same error its transfer gets when sent alone.
    pub fn from_rejected(r: &crate::v1::Rejected, code: tonic::Code) -> RpcError {
        RpcError {
            code,
            reason: r.code.clone(),
            message: r.message.clone(),
            metadata: r
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            field: (!r.field.is_empty()).then(|| (r.field.clone(), r.message.clone())),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)
    }
}

/// Why a client call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The service could not be reached (or the dial was wrong).
    #[error("{0}")]
    Connect(String),
    /// The service refused the call.
    #[error("{0}")]
    Rpc(Box<RpcError>),
    /// What the client was asked to do cannot be done (an amount the coins do not cover).
    #[error("{0}")]
    Invalid(String),
    /// An answer did not verify: a receipt, a checkpoint's signature, a consistency proof.
    /// The service is not to be trusted on it.
    #[error("does not verify: {0}")]
    Verify(String),
}

/// Whether a call that failed with `code` may succeed sent again unchanged: the service was
/// busy, unreachable, restarting or cut off mid-call (a write's outcome may then be unknown,
/// which is why a transfer is sent again as the same transfer: a ledger answers a committed
/// one with its commit).
pub fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}

impl Error {
    /// [`transient`] for a refusal; a connection that failed is transient too.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Rpc(e) => transient(e.code),
            Error::Connect(_) => true,
            Error::Invalid(_) | Error::Verify(_) => false,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::Rpc(Box::new(s.into()))
    }
}

impl Error {
    /// The refusal's stable reason, if the service refused.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Rpc(e) => Some(&e.reason),
            _ => None,
        }
    }
}
