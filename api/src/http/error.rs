//! The one error type of the HTTP layer. Every failure leaves as the error envelope
//! `{"success":false,"error":{"code","message","details?"}}`; 5xx details go to the log only.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use tenant_domain::Error as DomainError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub details: Option<Value>,
    /// Logged for 5xx, never sent.
    source: Option<anyhow::Error>,
}

/// Put on every error response so the metrics layer can count errors by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `UPPER_SNAKE` code, stable for clients to match on.
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, message: message.into(), details: None, source: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn validation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", message)
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::validation(format!("{field}: {message}")).with_details(serde_json::json!({ "field": field }))
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error");
        err.source = Some(source.into());
        err
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>, source: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "DEPENDENCY_UNAVAILABLE", message);
        err.source = Some(source.into());
        err
    }

    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method not allowed on this route")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.source {
                Some(source) => tracing::error!(code = self.code, error = ?source, "request failed"),
                None => tracing::error!(code = self.code, message = %self.message, "request failed"),
            }
        }
        let body = ErrorBody {
            success: false,
            error: ErrorDetail { code: self.code, message: self.message.into_owned(), details: self.details },
        };
        let mut response = super::response::json(self.status, &body);
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::NotFound { code, what } => Self::new(StatusCode::NOT_FOUND, code, format!("{what} not found")),
            DomainError::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            DomainError::Forbidden { code, message } => Self::new(StatusCode::FORBIDDEN, code, message),
            DomainError::InvalidState { message } => Self::new(StatusCode::CONFLICT, "INVALID_STATE", message),
            DomainError::Validation { field: Some(field), message } => Self::field(&field, message),
            DomainError::Validation { field: None, message } => Self::validation(message),
            // The same classification as the jobs' retries (`tenant_domain::error::db_is_transient`).
            err @ (DomainError::Database(_) | DomainError::Redis(_)) if err.is_transient() => {
                Self::unavailable("a dependency is unavailable", err)
            }
            err => Self::internal(err),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::validation("expected a JSON body with `Content-Type: application/json`")
            }
            _ => match json_error_path(&rejection) {
                // A well-formed document of the wrong shape: name the field, without serde's preamble.
                Some((path, err)) if path != "." => Self::field(&path, err.to_string()),
                Some((_, err)) => Self::validation(format!("invalid JSON body: {err}")),
                None => Self::validation(format!("invalid JSON body: {}", rejection.body_text())),
            },
        }
    }
}

/// The JSON path (`settings.theme`, `items[2]`) and the bare serde error behind a JSON rejection.
fn json_error_path(rejection: &JsonRejection) -> Option<(String, &serde_json::Error)> {
    let mut source = std::error::Error::source(rejection);
    while let Some(err) = source {
        if let Some(err) = err.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            return Some((err.path().to_string(), err.inner()));
        }
        source = err.source();
    }
    None
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::validation(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::validation(format!("invalid query string: {}", rejection.body_text()))
    }
}
