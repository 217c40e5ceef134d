//! The framework's own refusals as `application/problem+json`, like every other error: axum
//! answers a wrong method with an empty 405 and a too-large body with a `text/plain` 413, and
//! hyper answers an over-long URI (414) or header block (431) with an empty body. The first
//! two are rewritten here; the last two are checked here first, at limits well below
//! hyper's (hyper still refuses, bodiless, what is beyond its own: URIs over 64 KiB, header
//! blocks over ~400 KiB).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Longer URIs (path and query) are refused with 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Larger header blocks (names, values and separators) are refused with 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// A framework message longer than this is not repeated in the problem's detail.
const MAX_DETAIL_BYTES: usize = 1024;

pub async fn framework_problems(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::new(StatusCode::URI_TOO_LONG, format!("the URI is {uri_len} bytes; at most {MAX_URI_BYTES} are accepted (send long values in a body)")).into_response();
    }
    let header_len: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if header_len > MAX_HEADER_BYTES {
        return ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, format!("the request's headers are {header_len} bytes; at most {MAX_HEADER_BYTES} are accepted")).into_response();
    }
    let res = next.run(req).await;
    if res.status().is_client_error() || res.status().is_server_error() {
        let is_problem = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/problem+json"));
        if !is_problem {
            return as_problem(res).await;
        }
    }
    res
}

/// A refusal the framework wrote, as a problem saying what to do.
async fn as_problem(res: Response) -> Response {
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL_BYTES).await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok()).unwrap_or_default();
    let status = parts.status;
    let detail = match status {
        // The router adds the `Allow` header after this layer has run.
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method; the Allow header lists the ones it takes (see /api/v1/openapi.json)".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than the 2 MiB the hub accepts; nothing was stored".to_string(),
        _ if !text.trim().is_empty() => text.trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut problem = ApiError::new(status, detail).into_response();
    // Keep what the client needs from the original (when to retry).
    for name in [header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            problem.headers_mut().insert(name, v.clone());
        }
    }
    problem.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    problem
}
