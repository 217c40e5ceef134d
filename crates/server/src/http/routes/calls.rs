//! Calls from a PBX: Zammad generic CTI and sipgate.io push webhooks (the use case is
//! `app::calls`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxbridge_connectors::sources::call_event::WireError;
use cxbridge_connectors::sources::{cti, sipgate};
use cxbridge_domain::conversation::Direction;

use crate::app::App;
use crate::http::Edge;
use crate::http::error::{ApiError, ApiPath};

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/form-data"))
}

fn wire_error(e: WireError) -> ApiError {
    match e {
        WireError::Malformed { .. } => ApiError::bad_request(e.to_string()),
        _ => ApiError::unprocessable(e.to_string()),
    }
}

fn reject_token(edge: &Edge, token: &str) -> Result<(), ApiError> {
    if edge.tokens.is_cti(token) {
        Ok(())
    } else {
        metrics::counter!("cxbridge_events_total", "source" => "pbx", "type" => "unknown", "result" => "unauthorized").increment(1);
        Err(ApiError::unauthorized("Invalid token, please contact your admin! The URL must carry the CTI token ([auth] cti_token or CXBRIDGE_CTI_TOKEN)."))
    }
}

/// `POST /api/v1/cti/{token}`: Zammad-compatible generic CTI, JSON or form.
/// Replies `{}`, `{"action":"reject",…}` or `{"action":"dial",…}` (docs/pbx/zammad-cti.md).
#[utoipa::path(post, path = "/api/v1/cti/{token}",
    request_body(content = cxbridge_proto::CtiEvent, content_type = "application/json", description = "also application/x-www-form-urlencoded, `user[]` repeated"),
    responses((status = 200, description = "Zammad's reply", body = Object)))]
pub async fn cti(State(edge): State<Arc<Edge>>, ApiPath(token): ApiPath<String>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    cti_event(&edge, &token, &headers, &body).await.map_err(ApiError::zammad_compatible)
}

async fn cti_event(edge: &Edge, token: &str, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let received = Instant::now();
    reject_token(edge, token)?;
    let ev = if is_form(headers) { cti::parse_form(body) } else { cti::parse_json(body) }.map_err(wire_error)?;
    let done = edge.app.record_call(ev, received).await?;
    Ok(axum::Json(cti::reply(&done.reply)).into_response())
}

/// `POST /api/v1/sipgate/{token}`: sipgate.io push, form in, XML out (docs/pbx/sipgate.md).
#[utoipa::path(post, path = "/api/v1/sipgate/{token}",
    request_body(content = cxbridge_proto::SipgatePush, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "sipgate.io XML `<Response …/>`", content_type = "application/xml", body = String)))]
pub async fn sipgate(State(edge): State<Arc<Edge>>, ApiPath(token): ApiPath<String>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    sipgate_event(&edge, &token, None, &headers, &body).await
}

/// `POST /api/v1/sipgate/{token}/in` and `…/out`: the URLs Zammad's sipgate integration
/// gives sipgate (`/api/v1/sipgate/in`, `/out`), with our token, so an account moved from
/// Zammad keeps its shape. The direction in the URL stands in for one the body leaves out.
#[utoipa::path(post, path = "/api/v1/sipgate/{token}/{direction}",
    request_body(content = cxbridge_proto::SipgatePush, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "sipgate.io XML `<Response …/>`", content_type = "application/xml", body = String)))]
pub async fn sipgate_with_direction(State(edge): State<Arc<Edge>>, ApiPath((token, direction)): ApiPath<(String, String)>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let dir = match direction.as_str() {
        "in" => Direction::Inbound,
        "out" => Direction::Outbound,
        other => return Err(ApiError::not_found(format!("no sipgate URL ends in `/{other}`: use /api/v1/sipgate/{{token}}, …/in or …/out"))),
    };
    sipgate_event(&edge, &token, Some(dir), &headers, &body).await
}

async fn sipgate_event(edge: &Edge, token: &str, path_direction: Option<Direction>, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let received = Instant::now();
    reject_token(edge, token)?;
    let ev = sipgate::parse_form_at(body, path_direction).map_err(wire_error)?;
    let is_new_call = ev.kind == cxbridge_connectors::sources::call_event::CallEventKind::NewCall;
    let direction = ev.direction;
    let done = edge.app.record_call(ev, received).await?;
    // Ask for answer and hangup callbacks on every new call (they are opt-in per call), at
    // the same kind of URL the call came in on.
    let callback = is_new_call.then(|| {
        let base = callback_url(&edge.app, headers, token);
        match path_direction {
            Some(_) => format!("{base}/{}", if direction == Direction::Inbound { "in" } else { "out" }),
            None => base,
        }
    });
    let xml = sipgate::reply(&done.reply, callback.as_deref());
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

fn callback_url(app: &App, headers: &HeaderMap, token: &str) -> String {
    let base = match &app.config.server.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
            format!("{scheme}://{host}")
        }
    };
    format!("{base}/api/v1/sipgate/{token}")
}
