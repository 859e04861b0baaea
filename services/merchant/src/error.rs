//! An error as a merchant platform reads it: an HTTP status and a JSON body naming the field,
//!
//! ```json
//! {"error": {"code": "INVALID_ARGUMENT", "field": "amount", "message": "..."}}
//! ```

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable code (`INVALID_ARGUMENT`, `UNAUTHENTICATED`, `NOT_FOUND`, `ALREADY_EXISTS`, …).
    pub code: &'static str,
    /// The request field at fault (`body` for the body as a whole, `authorization` for the
    /// signature header).
    pub field: String,
    pub message: String,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        field: &str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", field, message)
    }

    pub fn unauthenticated(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", field, message)
    }

    pub fn denied(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", field, message)
    }

    pub fn not_found(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", field, message)
    }

    pub fn conflict(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "ALREADY_EXISTS", field, message)
    }

    pub fn precondition(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "FAILED_PRECONDITION", field, message)
    }

    /// The ledger refused a transfer for good (its reason leads the message).
    pub fn rejected(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "LEDGER_REJECTED",
            field,
            message,
        )
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method",
            "this endpoint does not take this method",
        )
    }

    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "content-type",
            message,
        )
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESOURCE_EXHAUSTED",
            "body",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "", message)
    }
}

impl From<cbdc_store::StoreError> for ApiError {
    fn from(e: cbdc_store::StoreError) -> ApiError {
        tracing::error!(error = %e, "store");
        ApiError::unavailable(format!("storage: {e}"))
    }
}

impl From<cbdc_store::TxError<ApiError>> for ApiError {
    fn from(e: cbdc_store::TxError<ApiError>) -> ApiError {
        match e {
            cbdc_store::TxError::Abort(e) => e,
            cbdc_store::TxError::Store(e) => e.into(),
        }
    }
}

/// Every error's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `INVALID_ARGUMENT`, `UNAUTHENTICATED`, `PERMISSION_DENIED`,
    /// `NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`, `LEDGER_REJECTED`,
    /// `RESOURCE_EXHAUSTED`, `UNSUPPORTED_MEDIA_TYPE`, `METHOD_NOT_ALLOWED`, `UNAVAILABLE`,
    /// `INTERNAL`.
    pub code: String,
    /// The request field at fault (`body`, `authorization`, `path`, …).
    pub field: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                field: self.field,
                message: self.message,
            },
        })
        .expect("serialisable");
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
