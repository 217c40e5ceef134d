//! An answer before it becomes an HTTP response, and Salesforce's error bodies.

use axum::http::StatusCode;
use serde_json::{Value, json};

/// An answer before it becomes an HTTP response.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Option<Value>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Self {
        Self { status: StatusCode::OK, body: Some(body) }
    }
    pub(super) fn with(status: StatusCode, body: Value) -> Self {
        Self { status, body: Some(body) }
    }
    pub(super) fn no_content() -> Self {
        Self { status: StatusCode::NO_CONTENT, body: None }
    }
    pub(super) fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// Salesforce's error body: an array of `{message, errorCode, fields}`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    error_on(status, code, message, &[])
}

pub(super) fn error_on(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Reply {
    Reply::with(status, json!([{ "message": message, "errorCode": code, "fields": fields }]))
}

pub(super) fn not_found() -> Reply {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
}

pub(super) fn bad(code: &str, message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, code, message)
}
