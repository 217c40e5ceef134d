//! The agent panel: its assets at `/agent` (embedded in the binary), sign-in to a session
//! cookie, the bootstrap it loads after sign-in, and the conversation actions it offers —
//! choosing and pinning records, creating the caller's record, the customer card.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxbridge_domain::conversation::{Conversation, EndCause, Event, EventKind, Links};
use cxbridge_domain::crm::RecordRef;
use cxbridge_proto as proto;

use crate::auth::{Caller, ClientAddr, clip_for_log};
use crate::error::{ApiError, ApiPath, ApiResult, crm_problem};
use crate::service::{App, fnv1a};
use crate::session::{self, SignInError};
use crate::views;

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

fn session_view(app: &App, s: &session::Session) -> proto::SessionView {
    let agent = app.agent_config(&s.agent);
    proto::SessionView {
        agent: s.agent.clone(),
        name: agent.and_then(|a| a.name.clone()),
        supervisor: agent.is_some_and(|a| a.supervisor),
        csrf_token: app.sessions.csrf(s),
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
pub async fn sign_in(State(app): State<Arc<App>>, ClientAddr(client): ClientAddr, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
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
    let result = match app.sessions.begin(app.agent_config(&agent_id), &agent_id, client, Instant::now()) {
        Err(e) => Err(e),
        Ok(attempt) => match app.sessions.password_check_permit().await {
            Err(e) => Err(e),
            Ok(permit) => {
                let checker = app.clone();
                let id = agent_id.clone();
                // Argon2 takes tens of milliseconds on purpose: keep it off the async threads.
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    checker.sessions.check(attempt, checker.agent_config(&id), &req.password, now_ms)
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
    let Some(agent) = app.agent_config(&s.agent) else {
        return Err(ApiError::unauthorized("unknown agent or wrong password"));
    };
    let cookie = app.sessions.set_cookie(&app.sessions.encode(&s, agent), &s, now, &headers);
    tracing::info!(agent = s.agent, "agent signed in to the panel");
    let mut res = Json(session_view(&app, &s)).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

/// The signed-in agent.
#[utoipa::path(get, path = "/api/v1/session", responses((status = 200, body = proto::SessionView), (status = 401, body = proto::Problem)))]
pub async fn current_session(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<proto::SessionView>> {
    let s = app.session(&headers).await.ok_or_else(|| ApiError::unauthorized("not signed in, or the session expired: sign in again"))?;
    Ok(Json(session_view(&app, &s)))
}

/// Sign out: the cookie is cleared and every session of the agent issued until now is void
/// (a copied cookie included), on every node, and so are the streams opened with them (at
/// once on this node, within a ping interval on the others). Streams an integration opened
/// with a token stay open: the token is still valid.
#[utoipa::path(delete, path = "/api/v1/session", responses((status = 204)))]
pub async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    match app.caller(&headers, &Method::DELETE).await {
        Ok(Caller::Agent { id, .. }) => {
            let at = cxbridge_domain::Timestamp::now();
            app.store.record_sign_out(&id, at).await?;
            // This node's streams end now; other nodes' at their next check of the session.
            let ended = app.hub.end_sessions(&id, at.as_millisecond());
            tracing::info!(agent = id, streams_ended = ended, "agent signed out of the panel");
        }
        // Not signed in (or an admin token): there is only the cookie to clear.
        Ok(Caller::Admin) => {}
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {}
        Err(e) => return Err(e),
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, app.sessions.clear_cookie(&headers));
    Ok(res)
}

fn create_fields(spec: &cxbridge_domain::crm::EntitySpec) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let all = std::iter::once(&spec.title_field).chain(&spec.phone_fields).chain(&spec.email_fields).chain(spec.display_fields.iter().map(|d| &d.field));
    for f in all {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

/// Everything the panel needs after sign-in: wrap-up codes, workflows, entities, Dynamics.
#[utoipa::path(get, path = "/api/v1/panel", responses((status = 200, body = proto::PanelView), (status = 401, body = proto::Problem)))]
pub async fn bootstrap(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<proto::PanelView>> {
    let s = app.session(&headers).await.ok_or_else(|| ApiError::unauthorized("not signed in, or the session expired: sign in again"))?;
    let config = &app.config;
    Ok(Json(proto::PanelView {
        session: session_view(&app, &s),
        wrapup_codes: config
            .wrapup_codes
            .iter()
            .map(|c| proto::WrapupCodeView { code: c.code.clone(), label: c.label.clone().unwrap_or_else(|| c.code.clone()), category: c.category.clone() })
            .collect(),
        wrapup_required: config.panel.require_disposition,
        workflows: super::workflows::views(config),
        entities: app
            .entities
            .iter()
            .map(|e| proto::PanelEntityView { name: e.name.clone(), label: capitalize(&e.name), title_field: e.title_field.clone(), id_field: e.id_field.clone(), create_fields: create_fields(e) })
            .collect(),
        dynamics: config.panel.dynamics.as_ref().map(|d| proto::DynamicsView {
            cif_library_url: d.cif_library_url.clone(),
            crm_url: d.crm_url.clone(),
            cif_version: d.cif_version,
            entity_map: app.entities.iter().map(|e| (e.name.clone(), d.entity_map.get(&e.name).cloned().unwrap_or_else(|| e.name.clone()))).collect(),
            notification_template: d.notification_template.clone(),
            session_template: d.session_template.clone(),
        }),
        dial_url: config.panel.dial_url.clone(),
        recent_after_secs: config.panel.recent_after_secs,
    }))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The conversation, if the caller may act on it.
pub async fn visible_conversation(app: &App, caller: &Caller, id: &str) -> ApiResult<Conversation> {
    let c = app.store.conversation(id).await?.ok_or_else(|| ApiError::not_found(format!("no conversation `{id}`")))?;
    if !caller.may_see(&c) {
        return Err(ApiError::forbidden(format!("conversation `{id}` was not offered to you")));
    }
    Ok(c)
}

async fn record_links(app: &App, c: &Conversation, links: Links, body: &[u8], received: Instant) -> ApiResult<Conversation> {
    let dedup_key = format!("links:{}:{:016x}", c.id, fnv1a(body) ^ c.revision);
    let event = Event::about(c, dedup_key, cxbridge_domain::Timestamp::now(), EventKind::Linked(links));
    Ok(app.record(event, "panel", "links", received).await?.into_conversation().unwrap_or_else(|| c.clone()))
}

/// Close a conversation whose end never came (still ringing or connected): it ends with the
/// cause `closedByAgent` and the closer in the attribute `closed_by`, and goes on as any
/// ended conversation (wrap-up, then one activity). An agent closes only conversations
/// offered to them; the closing is logged.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/close",
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem), (status = 409, body = proto::Problem, description = "The conversation has already ended")))]
pub async fn close(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> ApiResult<Json<proto::ConversationView>> {
    let received = Instant::now();
    let caller = app.caller(&headers, &Method::POST).await?;
    let c = visible_conversation(&app, &caller, &id).await?;
    if !c.state.is_open() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("conversation `{id}` has already ended; there is nothing to close")));
    }
    let closer = match &caller {
        Caller::Agent { id, .. } => id.clone(),
        Caller::Admin => "admin".to_string(),
    };
    tracing::info!(conversation = c.id, external_id = c.external_id, closed_by = closer, "conversation closed by hand");
    let mut details = cxbridge_domain::conversation::Details::default();
    details.attributes.insert("closed_by".into(), closer);
    let event = |dedup_key: String, kind: EventKind| Event::about(&c, dedup_key, cxbridge_domain::Timestamp::now(), kind);
    app.record(event(format!("closed-by:{}", c.id), EventKind::Updated(details)), "panel", "close", received).await?;
    let ended = app.record(event(format!("close:{}", c.id), EventKind::Ended { cause: EndCause::Other("closedByAgent".into()) }), "panel", "close", received).await?;
    let c = match ended.into_conversation() {
        Some(c) => c,
        None => app.store.conversation(&id).await?.ok_or_else(|| ApiError::not_found(format!("no conversation `{id}`")))?,
    };
    Ok(Json(app.conversation_view(&c).await))
}

/// Choose the record the conversation is about, or set the pinned records.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/links", request_body = proto::LinksRequest,
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem), (status = 422, body = proto::Problem)))]
pub async fn links(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(id): ApiPath<String>, body: Bytes) -> ApiResult<Json<proto::ConversationView>> {
    let received = Instant::now();
    let caller = app.caller(&headers, &Method::PUT).await?;
    let req: proto::LinksRequest = serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the links are not valid: {e}")))?;
    let c = visible_conversation(&app, &caller, &id).await?;
    let refs: Vec<&proto::RecordRefView> = req.selected.iter().chain(req.pinned.iter().flatten()).collect();
    app.check_agent_links(&caller, &c, &refs, &req.grants)?;
    app.check_linkable(&c, req.selected.as_ref(), req.pinned.as_ref()).await?;
    let links = Links {
        selected: req.selected.as_ref().map(|r| RecordRef::new(&r.entity, &r.id)),
        pinned: req.pinned.as_ref().map(|p| {
            let mut seen = HashSet::new();
            p.iter().map(|r| RecordRef::new(&r.entity, &r.id)).filter(|r| seen.insert(r.clone())).collect()
        }),
    };
    let c = record_links(&app, &c, links, &body, received).await?;
    Ok(Json(app.conversation_view(&c).await))
}

/// Create the caller's record in the CRM (nobody matched) and make it the conversation's.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/records", request_body = proto::NewRecordRequest,
    responses((status = 200, body = proto::NewRecordResult), (status = 422, body = proto::Problem), (status = 502, body = proto::Problem)))]
pub async fn new_record(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(id): ApiPath<String>, body: Bytes) -> ApiResult<Json<proto::NewRecordResult>> {
    let received = Instant::now();
    let caller = app.caller(&headers, &Method::POST).await?;
    let req: proto::NewRecordRequest = serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the new record is not valid: {e}")))?;
    let c = visible_conversation(&app, &caller, &id).await?;
    let spec = app.entities.iter().find(|e| e.name == req.entity).ok_or_else(|| {
        let known: Vec<&str> = app.entities.iter().map(|e| e.name.as_str()).collect();
        ApiError::unprocessable(format!("unknown entity `{}`; the CRM has {}", req.entity, known.join(", ")))
    })?;
    let fields: BTreeMap<String, String> = req.fields.into_iter().map(|(k, v)| (k, v.trim().to_string())).filter(|(_, v)| !v.is_empty()).collect();
    if !fields.contains_key(&spec.title_field) {
        return Err(ApiError::unprocessable(format!("`{}` is required for a new {}", spec.title_field, spec.name)));
    }
    let created = app.crm.create(spec, &fields).await.map_err(crm_problem)?;
    let links = Links { selected: Some(created.record.clone()), pinned: None };
    let c = record_links(&app, &c, links, &body, received).await?;
    tracing::info!(conversation = c.id, entity = spec.name, id = created.record.id, agent = caller.agent_id(), "record created from the panel");
    Ok(Json(proto::NewRecordResult { record: views::candidate_with_fields(&app.redact(&created)), conversation: app.conversation_view(&c).await }))
}


/// The current records of a conversation, as candidates where we can describe them.
async fn current_records(app: &App, c: &Conversation) -> Vec<proto::CandidateView> {
    let mut refs: Vec<RecordRef> = c.regarding().into_iter().cloned().collect();
    for p in &c.pinned {
        if !refs.contains(p) {
            refs.push(p.clone());
        }
    }
    let mut out = vec![];
    for r in refs {
        out.push(match app.record_candidate(c, &r).await {
            Some(k) => views::candidate_with_fields(&app.redact(&k)),
            // An external CRM's record we only know by reference (created or searched in the panel).
            None => proto::CandidateView { entity: r.entity.clone(), id: r.id.clone(), title: r.id.clone(), display: vec![], fields: None, grant: None },
        });
    }
    out
}

/// The customer card: the conversation's records and earlier interactions, newest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/related", responses((status = 200, body = proto::RelatedView), (status = 404, body = proto::Problem)))]
pub async fn related(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> ApiResult<Json<proto::RelatedView>> {
    let caller = app.caller(&headers, &Method::GET).await?;
    let c = visible_conversation(&app, &caller, &id).await?;
    let records = current_records(&app, &c).await;
    let own_key = cxbridge_domain::mapping::activity_key(&c.id);
    let lookups = records.iter().map(|r| {
        let record = RecordRef::new(&r.entity, &r.id);
        let crm = app.crm.clone();
        async move { (crm.timeline(&record, 20).await, record) }
    });
    let mut interactions: Vec<proto::InteractionView> = vec![];
    let mut seen = HashSet::new();
    let mut warning = None;
    for (result, record) in futures::future::join_all(lookups).await {
        match result {
            Ok(entries) => {
                for e in entries {
                    let conversation_id = e.fields.get("conversation_id").cloned().filter(|v| !v.is_empty());
                    let key = e.fields.get("key").cloned().unwrap_or_default();
                    if conversation_id.as_deref() == Some(c.id.as_str()) || key == own_key || !seen.insert(e.id.clone()) {
                        continue;
                    }
                    let field = |k: &str| e.fields.get(k).cloned().filter(|v| !v.is_empty());
                    interactions.push(proto::InteractionView {
                        kind: if conversation_id.is_some() { "conversation" } else { "activity" }.into(),
                        id: e.id.clone(),
                        at: e.at.clone(),
                        subject: if e.subject.is_empty() { e.kind.clone() } else { e.subject.clone() },
                        channel: field("channel"),
                        direction: field("direction"),
                        outcome: field("outcome"),
                        disposition: field("disposition"),
                        conversation_id,
                        record: views::record_ref(&record),
                    });
                }
            }
            Err(e) => warning = Some(format!("the CRM did not give the history of {record}: {e}")),
        }
    }
    // RFC 3339 times in UTC sort as text; fall back to text order for other formats.
    interactions.sort_by(|a, b| {
        let parse = |s: &str| s.parse::<jiff::Timestamp>().ok();
        match (parse(&a.at), parse(&b.at)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => b.at.cmp(&a.at),
        }
    });
    Ok(Json(proto::RelatedView { records, interactions, warning }))
}
