//! API errors as RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxbridge_proto::Problem;
use cxbridge_store::StoreError;

use crate::app;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds for a `Retry-After` header: when trying again later will help.
    pub retry_after: Option<u32>,
    /// Repeat the detail as Zammad's `error` member (the PBX webhooks).
    pub zammad_error: bool,
}

/// How long a sender should wait before resending after the database refused a write (disk
/// full, read-only, failing): long enough not to hammer it, short enough for a PBX's retry.
const STORE_RETRY_AFTER_SECS: u32 = 5;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into(), retry_after: None, zammad_error: false }
    }
    /// Adds Zammad's `{"error": "…"}` member, for PBX bridges written against Zammad.
    pub fn zammad_compatible(mut self) -> Self {
        self.zammad_error = true;
        self
    }
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Transition(t) => ApiError::not_found(format!("{t}; send the conversation's offer first")),
            StoreError::UnknownEntity(name) => ApiError::not_found(format!("unknown CRM entity `{name}`; declare it under [[crm.entities]]")),
            StoreError::Invalid(msg) => ApiError::unprocessable(msg.clone()),
            _ => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the database failed ({e}); nothing was stored, send it again later"))
                    .with_retry_after(STORE_RETRY_AFTER_SECS)
            }
        }
    }
}

/// The one place a use case's refusal becomes an HTTP status.
impl From<app::Error> for ApiError {
    fn from(e: app::Error) -> Self {
        match e {
            app::Error::Invalid(detail) => ApiError::unprocessable(detail),
            app::Error::NotFound(detail) => ApiError::not_found(detail),
            app::Error::Forbidden(detail) => ApiError::forbidden(detail),
            app::Error::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, detail),
            app::Error::Store(e) => e.into(),
            app::Error::Crm(e) => crm_problem(e),
            app::Error::Internal(detail) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").into(),
            status: self.status.as_u16(),
            error: self.zammad_error.then(|| self.detail.clone()),
            detail: self.detail,
        };
        let mut res = (self.status, axum::Json(problem)).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A `limit` query parameter: `default` when absent, refused outside 1..=`max`.
pub fn limit_param(limit: Option<u32>, default: u32, max: u32) -> ApiResult<u32> {
    match limit {
        None => Ok(default),
        Some(l) if (1..=max).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::unprocessable(format!("`limit` must be 1 to {max}, not {l}"))),
    }
}

/// A CRM refusal is the caller's to fix (422, with the CRM's words); a CRM that did not
/// answer is a bad gateway (502), nothing was changed.
pub fn crm_problem(e: cxbridge_domain::crm::CrmError) -> ApiError {
    use cxbridge_domain::crm::CrmError;
    match e {
        CrmError::Permanent { message } => ApiError::unprocessable(message),
        CrmError::Transient { message, .. } => ApiError::new(StatusCode::BAD_GATEWAY, format!("the CRM did not answer: {message}; try again")),
    }
}

/// `Query<T>` whose refusals are problem+json that name the bad parameter.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        // The query parser would turn bytes that are not UTF-8 (`ani=%FF`) into U+FFFD.
        cxbridge_connectors::sources::call_event::check_form_utf8(parts.uri.query().unwrap_or("").as_bytes()).map_err(|detail| ApiError::bad_request(format!("the query string is not valid: {detail}")))?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request(format!("{}; see /api/v1/openapi.json for the parameters", e.body_text())))
    }
}

/// A query string parsed like [`ApiQuery`], whose refusal the handler raises only after it has
/// checked who is asking (`query.parse()?` after the authentication): a caller without a
/// valid token learns that first, not which parameters the route takes.
pub struct PendingQuery<T>(Result<T, ApiError>);

impl<T> PendingQuery<T> {
    pub fn parse(self) -> ApiResult<T> {
        self.0
    }
}

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for PendingQuery<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(PendingQuery(ApiQuery::<T>::from_request_parts(parts, state).await.map(|ApiQuery(v)| v)))
    }
}

/// `Path<T>` whose refusals are problem+json.
pub struct ApiPath<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
