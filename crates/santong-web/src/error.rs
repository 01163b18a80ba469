//! The one error type of the web layer. It carries a status, a stable `code` for API clients and
//! an i18n message key; it never carries internals. [`crate::shell`] renders it in the caller's
//! language as an HTML page or `application/problem+json`.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use santong_domain::paging::FieldError;

#[derive(Debug, Clone)]
pub struct AppError {
    pub status: StatusCode,
    /// Stable, machine-readable (`region_not_found`).
    pub code: &'static str,
    /// Message key in the catalogues.
    pub key: &'static str,
    pub args: Vec<(&'static str, String)>,
    pub fields: Vec<FieldError>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, key: &'static str) -> Self {
        Self {
            status,
            code,
            key,
            args: vec![],
            fields: vec![],
        }
    }

    pub fn arg(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.args.push((name, value.into()));
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "error-not-found")
    }

    /// 400 listing every refused parameter.
    pub fn bad_params(fields: Vec<FieldError>) -> Self {
        Self {
            fields,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameters",
                "error-bad-request",
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "error-internal",
        )
    }

    /// The generic error for a status produced outside our handlers (layers, extractors).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found(),
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload_too_large", "error-payload-too-large")
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                Self::new(status, "method_not_allowed", "error-method-not-allowed")
            }
            StatusCode::REQUEST_TIMEOUT => Self::new(status, "timeout", "error-timeout"),
            StatusCode::SERVICE_UNAVAILABLE => {
                Self::new(status, "unavailable", "error-unavailable")
            }
            s if s.is_client_error() => Self::new(s, "bad_request", "error-bad-request"),
            _ => Self::internal(),
        }
    }
}

impl From<santong_storage::StorageError> for AppError {
    fn from(e: santong_storage::StorageError) -> Self {
        // Logged here with the details; the user sees only the translated message and request id.
        tracing::error!(error = %e, "storage error");
        Self::internal()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(Arc::new(self));
        res
    }
}
