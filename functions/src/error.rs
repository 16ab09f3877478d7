//! The one place where failures become HTTP statuses.
//!
//! Handlers return [`ApiError`]; its variants say what the caller can do about the failure
//! (fix the request, sign again, pay, retry later). [`ApiError::status`] and the JSON body
//! are produced here and nowhere else, so the embedded server and the Lambda adapters
//! answer identically.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A failure a handler reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, missing part, bad field): fix and resend.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A field is well-formed but out of bounds (hyperparameters, scheme, config).
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The signature is missing, malformed, expired or made by someone else.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated, but this caller may not see or do this (not the buyer of the job).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The order does not pay for this job; the reason names the failed check.
    #[error("payment invalid: {reason}")]
    PaymentInvalid { reason: String },
    /// The order is valid so far but not final yet (not mined, or fewer confirmations than
    /// the deployment requires): wait and resend. Nothing was claimed, so the same order
    /// still pays once it is deep enough.
    #[error("payment not final yet: {reason}; wait and resend")]
    TooEarly { reason: String },
    /// No such model or job.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request conflicts with what already happened (nonce replayed, order used).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller has as much work in flight as it may (publishes per owner): wait for one
    /// to finish, then resend.
    #[error("too many requests: {0}")]
    TooMany(String),
    /// A body or part exceeds its size cap.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// The result is not ready yet (job still running).
    #[error("not ready: {0}")]
    NotReady(String),
    /// A backend is temporarily unavailable: retry later. The caller is told which backend;
    /// the detail (RPC text, which may name a provider URL with its key, endpoints, paths) is
    /// logged, never returned.
    #[error("unavailable: {backend}: {detail}")]
    Unavailable { backend: &'static str, detail: String },
    /// A direct upload cannot be used (unknown, expired, another account's, used, a file
    /// missing or not as declared): each its own status and code ([`crate::uploads`]).
    #[error(transparent)]
    Upload(#[from] crate::uploads::UploadError),
    /// A bug or an unexpected backend failure; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error response (`posthuman_types::views`, which clients read).
pub use posthuman_types::views::ErrorBody;

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    pub fn unavailable(backend: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Unavailable { backend, detail: detail.into() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound { what: what.into() }
    }

    /// The HTTP status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PaymentInvalid { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::TooEarly { .. } => StatusCode::TOO_EARLY,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotReady(_) => StatusCode::ACCEPTED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upload(u) => {
                use crate::uploads::UploadError as U;
                match u {
                    U::Unknown(_) => StatusCode::NOT_FOUND,
                    U::Expired { .. } => StatusCode::GONE,
                    U::Foreign(_) | U::BadToken(_) => StatusCode::FORBIDDEN,
                    U::Used(_) | U::Missing { .. } => StatusCode::CONFLICT,
                    U::Purpose { .. } | U::Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                }
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid { .. } => "invalid",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PaymentInvalid { .. } => "payment_invalid",
            ApiError::TooEarly { .. } => "too_early",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooMany(_) => "too_many_requests",
            ApiError::TooLarge { .. } => posthuman_types::uploads::code::TOO_LARGE,
            ApiError::NotReady(_) => "not_ready",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Upload(u) => {
                use crate::uploads::UploadError as U;
                use posthuman_types::uploads::code;
                match u {
                    U::Unknown(_) => code::UNKNOWN,
                    U::Expired { .. } => code::EXPIRED,
                    U::Foreign(_) => code::FOREIGN,
                    U::Used(_) => code::USED,
                    U::Purpose { .. } => code::PURPOSE,
                    U::Missing { .. } => code::MISSING,
                    U::Mismatch { .. } => code::MISMATCH,
                    U::BadToken(_) => code::URL_REFUSED,
                }
            }
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let message = match self {
            // Internal details may name private keys or paths: log them, answer generically.
            ApiError::Internal(_) => "internal error".to_string(),
            ApiError::Unavailable { backend, .. } => {
                format!("the {backend} is temporarily unavailable; retry later")
            }
            other => other.to_string(),
        };
        ErrorBody { error: self.code().to_string(), message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => tracing::error!(%detail, "internal error"),
            ApiError::Unavailable { backend, detail } => {
                tracing::warn!(backend, %detail, "backend unavailable")
            }
            _ => {}
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<posthuman_types::SpecError> for ApiError {
    fn from(e: posthuman_types::SpecError) -> Self {
        ApiError::Invalid { field: e.field.to_string(), reason: e.reason }
    }
}

impl From<crate::catalogue::CatalogueError> for ApiError {
    fn from(e: crate::catalogue::CatalogueError) -> Self {
        use crate::catalogue::CatalogueError as C;
        match e {
            C::Unavailable(m) => ApiError::unavailable("catalogue", m),
            C::Corrupt(m) | C::Backend(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        use crate::queue::QueueError as Q;
        match e {
            Q::InvalidSpec(s) => s.into(),
            Q::Unavailable(m) => ApiError::unavailable("job queue", m),
            Q::NotFound(id) => ApiError::not_found(format!("queued job {id}")),
            Q::Backend(m) => ApiError::Internal(m),
        }
    }
}

impl From<posthuman_store::StoreError> for ApiError {
    fn from(e: posthuman_store::StoreError) -> Self {
        use posthuman_store::StoreError as S;
        match e {
            S::NotFound { .. } => ApiError::not_found("object"),
            S::TooLarge { limit, .. } => ApiError::TooLarge { what: "object".into(), limit },
            S::Unavailable(m) => ApiError::unavailable("object store", m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
