//! The API's error type: a status code that fits and `{"error":{"code","message","field"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft::{CatalogError, ProposeError};
use serde::Serialize;

/// An error answer. Build with the constructors; `field` names the offending JSON field.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ApiError)]
pub(crate) struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ApiErrorDetail)]
struct Detail<'a> {
    /// Machine-readable reason, e.g. `invalid_field`, `not_found`, `rate_limited`.
    code: &'a str,
    message: &'a str,
    /// The offending request field (`email`, `roles[0]`, ...), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after: None }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// A field failed validation (422), naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(1);
        e
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Detail { code: self.code, message: &self.message, field: self.field.as_deref() } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        let message = e.to_string();
        match e {
            CatalogError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            CatalogError::AlreadyExists { .. } => ApiError::conflict("already_exists", message),
            CatalogError::EmailTaken { .. } => ApiError::conflict("email_taken", message).with_field("email"),
            CatalogError::AlreadyLive { .. } => ApiError::conflict("already_live", message),
            CatalogError::NotLive { .. } => ApiError::conflict("not_live", message),
            CatalogError::ChatBanned { .. } => ApiError::forbidden(message).with_code("chat_banned"),
            CatalogError::SlowMode { retry_after_ms } => {
                let mut e = ApiError::too_many(message, retry_after_ms.div_ceil(1000));
                e.code = "slow_mode";
                e
            }
            CatalogError::Invalid { field, reason } => ApiError::invalid(&field, reason),
            _ => ApiError::bad_request("rejected", message),
        }
    }
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Rejected(e) => e.into(),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
