//! The agent panel: its assets at `/agent` (embedded in the binary), sign-in to a session
//! cookie, the bootstrap it loads after sign-in, and the conversation actions it offers —
//! choosing and pinning records, creating the caller's record, the customer card.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxbridge_proto as proto;

use crate::app::{App, fnv1a};
use crate::http::Edge;
use crate::http::caller::{Caller, ClientAddr, Received};
use crate::http::error::{ApiError, ApiPath, ApiResult};
use crate::http::session::{self, SignInError};
use crate::text::clip_for_log;

include!(concat!(env!("OUT_DIR"), "/panel_assets.rs"));

/// The agent panel.
pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    serve_asset(&app, "index.html", &headers)
}

/// A file of the agent panel.
pub async fn asset(State(app): State<Arc<App>>, ApiPath(file): ApiPath<String>, headers: HeaderMap) -> Response {
    serve_asset(&app, &file, &headers)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Scripts only from us (and the Dynamics CIF library file when configured — that one URL,
/// not its whole origin, where any web resource of the org could be loaded); framed only by
/// us and the configured embedding origins (Dynamics 365).
fn content_security_policy(app: &App) -> String {
    let panel = &app.config.panel;
    let cif = panel.dynamics.as_ref().and_then(|d| crate::config::csp_source(&d.cif_library_url));
    let scripts = cif.map_or("'self'".to_string(), |source| format!("'self' {source}"));
    let ancestors = std::iter::once("'self'".to_string()).chain(panel.embed_origins.iter().cloned()).collect::<Vec<_>>().join(" ");
    format!(
        "default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors {ancestors}; base-uri 'none'; form-action 'self'; object-src 'none'"
    )
}

fn serve_asset(app: &App, name: &str, headers: &HeaderMap) -> Response {
    let Some((_, body)) = PANEL_ASSETS.iter().find(|(n, _)| *n == name) else {
        return ApiError::not_found(format!("the panel has no file `{name}`; open /agent")).into_response();
    };
    let etag = format!("\"{:016x}\"", fnv1a(body));
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let mut res = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (StatusCode::OK, *body).into_response() };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    // Always revalidate: after an upgrade the panel must not mix old and new files.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(app)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

fn session_view(edge: &Edge, s: &session::Session) -> proto::SessionView {
    let agent = edge.app.directory.agent(&s.agent);
    proto::SessionView {
        agent: s.agent.clone(),
        name: agent.as_ref().and_then(|a| a.name.clone()),
        supervisor: agent.is_some_and(|a| a.supervisor),
        csrf_token: edge.sessions.csrf(s),
        expires_at: jiff::Timestamp::from_second(s.expires).map(|t| t.to_string()).unwrap_or_default(),
    }
}

/// Sign in with the agent's password or token; the session is an HTTP-only cookie.
///
/// Each attempt is counted against the agent (an unknown name against a bucket of unknown
/// names) and the client address before its password is checked, so a parallel burst checks
/// no more guesses than the limit; password checks run a few at a time, and every one costs
/// one Argon2 verification, whether the agent exists or not.
#[utoipa::path(post, path = "/api/v1/session", request_body = proto::SignInRequest,
    responses((status = 200, body = proto::SessionView), (status = 401, body = proto::Problem), (status = 422, body = proto::Problem),
        (status = 429, body = proto::Problem), (status = 503, body = proto::Problem)))]
pub async fn sign_in(State(edge): State<Arc<Edge>>, ClientAddr(client): ClientAddr, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    if !session::same_origin(&headers) {
        return Err(ApiError::forbidden("sign in from the panel's own page (/agent)"));
    }
    let req: proto::SignInRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("send {{\"agent\": \"…\", \"password\": \"…\"}}: {e}")))?;
    let agent_id = req.agent.trim().to_string();
    // Refused before anything is counted, hashed or logged: no configured agent has such a name.
    if agent_id.len() > session::MAX_AGENT_ID_BYTES || agent_id.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!("`agent` must be at most {} bytes, without control characters", session::MAX_AGENT_ID_BYTES)));
    }
    if req.password.len() > session::MAX_PASSWORD_BYTES {
        return Err(ApiError::unprocessable(format!("`password` must be at most {} bytes", session::MAX_PASSWORD_BYTES)));
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let now = now_ms / 1000;
    let result = match edge.sessions.begin(edge.credentials(&agent_id), &agent_id, client, Instant::now()) {
        Err(e) => Err(e),
        Ok(attempt) => match edge.sessions.password_check_permit().await {
            Err(e) => Err(e),
            Ok(permit) => {
                let checker = edge.clone();
                let id = agent_id.clone();
                // Argon2 takes tens of milliseconds on purpose: keep it off the async threads.
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    checker.sessions.check(attempt, checker.credentials(&id), &req.password, now_ms)
                })
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("sign-in failed: {e}")))?
            }
        },
    };
    let s = match result {
        Ok(s) => s,
        Err(e @ SignInError::BadCredentials) => {
            tracing::info!(agent = %clip_for_log(&agent_id, 64), client = ?client, "failed panel sign-in");
            return Err(ApiError::unauthorized(format!("{e}; ask your administrator for your password or token")));
        }
        Err(e @ (SignInError::TooManyAttempts(secs) | SignInError::TooManyFromClient(secs) | SignInError::Busy(secs))) => {
            let status = if matches!(e, SignInError::Busy(_)) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::TOO_MANY_REQUESTS };
            let mut res = ApiError::new(status, e.to_string()).into_response();
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return Ok(res);
        }
    };
    let Some(agent) = edge.credentials(&s.agent) else {
        return Err(ApiError::unauthorized("unknown agent or wrong password"));
    };
    let cookie = edge.sessions.set_cookie(&edge.sessions.encode(&s, agent), &s, now, &headers);
    tracing::info!(agent = s.agent, "agent signed in to the panel");
    let mut res = Json(session_view(&edge, &s)).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

/// The signed-in agent.
#[utoipa::path(get, path = "/api/v1/session", responses((status = 200, body = proto::SessionView), (status = 401, body = proto::Problem)))]
pub async fn current_session(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult<Json<proto::SessionView>> {
    let s = edge.session(&headers).await.ok_or_else(|| ApiError::unauthorized("not signed in, or the session expired: sign in again"))?;
    Ok(Json(session_view(&edge, &s)))
}

/// Sign out: the cookie is cleared and every session of the agent issued until now is void
/// (a copied cookie included), on every node, and so are the streams opened with them (at
/// once on this node, within a ping interval on the others). Streams an integration opened
/// with a token stay open: the token is still valid.
#[utoipa::path(delete, path = "/api/v1/session", responses((status = 204)))]
pub async fn sign_out(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult<Response> {
    match edge.caller(&headers, &Method::DELETE).await {
        Ok(Caller::Agent { id, .. }) => {
            let at = cxbridge_domain::Timestamp::now();
            edge.app.store.record_sign_out(&id, at).await?;
            // This node's streams end now; other nodes' at their next check of the session.
            let ended = edge.app.hub.end_sessions(&id, at.as_millisecond());
            tracing::info!(agent = id, streams_ended = ended, "agent signed out of the panel");
        }
        // Not signed in (or an admin token): there is only the cookie to clear.
        Ok(Caller::Admin) => {}
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {}
        Err(e) => return Err(e),
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, edge.sessions.clear_cookie(&headers));
    Ok(res)
}

/// Everything the panel needs after sign-in: wrap-up codes, workflows, entities, Dynamics.
#[utoipa::path(get, path = "/api/v1/panel", responses((status = 200, body = proto::PanelView), (status = 401, body = proto::Problem)))]
pub async fn bootstrap(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult<Json<proto::PanelView>> {
    let s = edge.session(&headers).await.ok_or_else(|| ApiError::unauthorized("not signed in, or the session expired: sign in again"))?;
    Ok(Json(edge.app.panel_view(session_view(&edge, &s))))
}

/// Choose the record the conversation is about, or set the pinned records.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/links", request_body = proto::LinksRequest,
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem), (status = 422, body = proto::Problem)))]
pub async fn links(Received(received): Received, State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, caller: Caller, body: Bytes) -> ApiResult<Json<proto::ConversationView>> {
    let req: proto::LinksRequest = serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the links are not valid: {e}")))?;
    Ok(Json(app.set_links(&caller, &id, req, &body, received).await?))
}

/// Create the caller's record in the CRM (nobody matched) and make it the conversation's.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/records", request_body = proto::NewRecordRequest,
    responses((status = 200, body = proto::NewRecordResult), (status = 422, body = proto::Problem), (status = 502, body = proto::Problem)))]
pub async fn new_record(Received(received): Received, State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, caller: Caller, body: Bytes) -> ApiResult<Json<proto::NewRecordResult>> {
    let req: proto::NewRecordRequest = serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the new record is not valid: {e}")))?;
    Ok(Json(app.create_record(&caller, &id, req, &body, received).await?))
}

/// The customer card: the conversation's records and earlier interactions, newest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/related", responses((status = 200, body = proto::RelatedView), (status = 404, body = proto::Problem)))]
pub async fn related(State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, caller: Caller) -> ApiResult<Json<proto::RelatedView>> {
    Ok(Json(app.customer_card(&caller, &id).await?))
}
