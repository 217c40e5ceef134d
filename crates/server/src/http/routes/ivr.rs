//! `/api/v1/ivr/*`: the IVR asks who is calling and where the call should go, in our JSON,
//! a flat string map, `key=value&…` text (Asterisk `CURL()` with `hashcompat`), or the PBX's
//! own reply format (Zammad CTI, sipgate.io XML, Jambonz verbs).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cxbridge_connectors::sources::ivr as formats;
use cxbridge_domain::ivr::Route;
use cxbridge_proto as proto;
use serde::Deserialize;

use crate::app::ivr::{Lookup, Verified};
use crate::app::{App, views};
use crate::http::Edge;
use crate::http::caller::{basic, bearer};
use crate::http::error::{ApiError, ApiPath, ApiResult, PendingQuery};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    /// The caller's number, any notation (`+` may arrive as a space: it is restored).
    #[param(max_length = 64)]
    pub ani: String,
    /// The dialed number, for rules on it.
    pub dnis: Option<String>,
    /// `json` (default), `flat`, `text`, `zammad`, `sipgate` or `jambonz`.
    #[param(schema_with = lookup_formats)]
    pub format: Option<String>,
}

fn lookup_formats() -> utoipa::openapi::Object {
    proto::string_enum(&["json", "flat", "text", "zammad", "sipgate", "jambonz"])
}

const FORMATS: &str = "json, flat, text, zammad, sipgate or jambonz";

fn authorize(edge: &Edge, headers: &HeaderMap, path_token: Option<&str>) -> ApiResult<()> {
    let ok = |t: &str| edge.tokens.is_ivr(t) || edge.tokens.is_admin(t);
    match (path_token, bearer(headers)) {
        (Some(t), _) if ok(t) => Ok(()),
        (None, Some(t)) if ok(t) => Ok(()),
        _ => Err(ApiError::unauthorized("send the IVR token ([ivr] token, CXBRIDGE_IVR_TOKEN or DATA_DIR/ivr-token) as `Authorization: Bearer …` or in the path /api/v1/ivr/{token}/lookup")),
    }
}

/// Who is calling and where the call should go.
#[utoipa::path(get, path = "/api/v1/ivr/lookup", params(LookupQuery),
    responses((status = 200, description = "Per `format`: json, flat, zammad, jambonz as JSON; text as text/plain; sipgate as XML",
        content((proto::IvrAnswer = "application/json"), (String = "text/plain"), (String = "application/xml"))),
        (status = 401, body = proto::Problem), (status = 422, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn lookup(State(edge): State<Arc<Edge>>, headers: HeaderMap, query: PendingQuery<LookupQuery>) -> ApiResult<Response> {
    authorize(&edge, &headers, None)?;
    let app = &edge.app;
    answer(app, query.parse()?).await
}

/// The same, with the token in the path for IVRs that cannot send headers.
#[utoipa::path(get, path = "/api/v1/ivr/{token}/lookup", params(LookupQuery),
    responses((status = 200, description = "Per `format`: json, flat, zammad, jambonz as JSON; text as text/plain; sipgate as XML",
        content((proto::IvrAnswer = "application/json"), (String = "text/plain"), (String = "application/xml")))))]
pub async fn lookup_with_token(State(edge): State<Arc<Edge>>, ApiPath(token): ApiPath<String>, headers: HeaderMap, query: PendingQuery<LookupQuery>) -> ApiResult<Response> {
    authorize(&edge, &headers, Some(&token))?;
    let app = &edge.app;
    answer(app, query.parse()?).await
}

async fn answer(app: &App, q: LookupQuery) -> ApiResult<Response> {
    let format = q.format.as_deref().unwrap_or("json");
    if !["json", "flat", "text", "zammad", "sipgate", "jambonz"].contains(&format) {
        return Err(ApiError::unprocessable(format!("`format` must be {FORMATS}, not `{format}`")));
    }
    if q.ani.chars().count() > 64 {
        return Err(ApiError::unprocessable("`ani` is longer than any phone number"));
    }
    let found = app.ivr_lookup(&q.ani, q.dnis.as_deref()).await;
    Ok(match format {
        "flat" => Json(flat(&found)).into_response(),
        "text" => text(&flat(&found)),
        "zammad" => Json(formats::zammad(&found.route)).into_response(),
        "jambonz" => jambonz_verbs(app, &found),
        "sipgate" => {
            let mut r = formats::sipgate(&found.route, external_number(app, &found.route).as_deref()).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            r
        }
        _ => Json(view(app, &found)).into_response(),
    })
}

fn jambonz_verbs(app: &App, found: &Lookup) -> Response {
    let caller = found.normalized.e164().map_or_else(|| found.ani.clone(), str::to_string);
    let j = &app.config.ivr.jambonz;
    let options = formats::JambonzOptions { sip_realm: j.sip_realm.clone(), continue_hook: j.continue_hook.clone() };
    Json(formats::jambonz(&found.route, &caller, &options)).into_response()
}

/// The external number (E.164) a route dials, for PBXs that can dial nothing else
/// (sipgate): the target itself when it is a phone number, else the routed agent's own
/// external number from `[[agents]] numbers`.
fn external_number(app: &App, route: &Route) -> Option<String> {
    let Route::Dial { target, agent, .. } = route else { return None };
    let e164 = |raw: &str| app.normalizer.normalize(raw).e164().map(str::to_string);
    e164(target).or_else(|| {
        let agent = app.directory.agent(agent.as_deref()?)?;
        agent.numbers.iter().find_map(|n| e164(n))
    })
}

/// What the jambonz call hook sends (docs.jambonz.org/reference/webhooks/call-hook-post):
/// many more fields than these, all ignored.
#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
pub struct JambonzCallHook {
    /// The calling party.
    #[param(max_length = 256)]
    #[schema(max_length = 256)]
    pub from: Option<String>,
    /// The called party.
    pub to: Option<String>,
    pub call_sid: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
}

/// jambonz's webhooks authenticate with HTTP Basic only: the password is the IVR token
/// (the user name is checked when `[ivr.jambonz] username` is set). A Bearer token or the
/// token in the path work too.
fn authorize_jambonz(edge: &Edge, headers: &HeaderMap, path_token: Option<&str>) -> ApiResult<()> {
    if let Some((user, password)) = basic(headers) {
        let user_ok = edge.app.config.ivr.jambonz.username.as_ref().is_none_or(|u| *u == user);
        if user_ok && (edge.tokens.is_ivr(&password) || edge.tokens.is_admin(&password)) {
            return Ok(());
        }
        return Err(ApiError::unauthorized("the jambonz webhook's user name or password is wrong: the password is the IVR token ([ivr] token, CXBRIDGE_IVR_TOKEN or DATA_DIR/ivr-token)"));
    }
    authorize(edge, headers, path_token)
}

async fn jambonz_answer(app: &App, hook: JambonzCallHook) -> ApiResult<Response> {
    tracing::debug!(call_sid = hook.call_sid.as_deref(), direction = hook.direction.as_deref(), "jambonz call hook");
    let ani = hook.from.unwrap_or_default();
    if ani.chars().count() > 256 {
        return Err(ApiError::unprocessable("`from` is longer than any caller address"));
    }
    // jambonz may send a SIP URI (`sip:+4930…@host`); the phone normalizer reads those.
    let found = app.ivr_lookup(&ani, hook.to.as_deref()).await;
    Ok(jambonz_verbs(app, &found))
}

/// The jambonz call hook, `GET` (its query parameters): who is calling, answered with verbs.
#[utoipa::path(get, path = "/api/v1/ivr/jambonz", params(JambonzCallHook),
    responses((status = 200, description = "jambonz verbs", body = Vec<serde_json::Value>), (status = 400, body = proto::Problem), (status = 401, body = proto::Problem)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn jambonz_get(State(edge): State<Arc<Edge>>, headers: HeaderMap, query: PendingQuery<JambonzCallHook>) -> ApiResult<Response> {
    authorize_jambonz(&edge, &headers, None)?;
    let app = &edge.app;
    jambonz_answer(app, query.parse()?).await
}

/// The jambonz call hook, `POST` (jambonz's default: a JSON body).
#[utoipa::path(post, path = "/api/v1/ivr/jambonz", request_body = JambonzCallHook,
    responses((status = 200, description = "jambonz verbs", body = Vec<serde_json::Value>), (status = 401, body = proto::Problem), (status = 422, body = proto::Problem)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn jambonz_post(State(edge): State<Arc<Edge>>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    authorize_jambonz(&edge, &headers, None)?;
    let app = &edge.app;
    jambonz_answer(app, parse_hook(&body)?).await
}

pub async fn jambonz_get_with_token(State(edge): State<Arc<Edge>>, ApiPath(token): ApiPath<String>, headers: HeaderMap, query: PendingQuery<JambonzCallHook>) -> ApiResult<Response> {
    authorize_jambonz(&edge, &headers, Some(&token))?;
    let app = &edge.app;
    jambonz_answer(app, query.parse()?).await
}

pub async fn jambonz_post_with_token(State(edge): State<Arc<Edge>>, ApiPath(token): ApiPath<String>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    authorize_jambonz(&edge, &headers, Some(&token))?;
    let app = &edge.app;
    jambonz_answer(app, parse_hook(&body)?).await
}

fn parse_hook(body: &[u8]) -> ApiResult<JambonzCallHook> {
    serde_json::from_slice(body).map_err(|e| ApiError::unprocessable(format!("the jambonz call hook is not valid JSON with string `from` and `to`: {e}")))
}

fn route_view(r: &Route) -> proto::IvrRouteView {
    let (target, agent, reason) = match r {
        Route::Reject { reason, .. } => (None, None, Some(reason.clone())),
        Route::Dial { target, agent, .. } => (Some(target.clone()), agent.clone(), None),
        Route::Queue { queue, .. } => (Some(queue.clone()), None, None),
        Route::Continue => (None, None, None),
    };
    proto::IvrRouteView { action: r.action().into(), target, agent, reason, rule: r.rule().map(str::to_string) }
}

fn view(app: &App, l: &Lookup) -> proto::IvrLookupView {
    proto::IvrLookupView {
        ani: l.ani.clone(),
        e164: l.normalized.e164().map(str::to_string),
        blocked: l.blocked,
        identification: views::identification(&app.redact_identification(&l.identification)),
        record: l.record.as_ref().map(|r| views::candidate(&app.redact(r))),
        owner: l.owner.as_ref().map(|o| proto::IvrOwnerView { crm_user: o.crm_user.clone(), agent: o.agent.clone(), extension: o.extension.clone(), available: o.available }),
        flags: l.flags.clone(),
        route: route_view(&l.route),
    }
}

/// One level of string keys and values, for IVRs that take nothing else. Absent values are
/// empty strings, so every key is always there.
fn flat(l: &Lookup) -> BTreeMap<String, String> {
    let route = route_view(&l.route);
    let o = l.owner.as_ref();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        m.insert(k.to_string(), v.unwrap_or_default());
    };
    put("ani", Some(l.ani.clone()));
    put("e164", l.normalized.e164().map(str::to_string));
    put("blocked", Some(l.blocked.to_string()));
    put("identified", Some(l.record.is_some().to_string()));
    put("matches", Some(l.identification.candidates().len().to_string()));
    put("name", l.record.as_ref().map(|r| r.title.clone()));
    put("entity", l.record.as_ref().map(|r| r.record.entity.clone()));
    put("record_id", l.record.as_ref().map(|r| r.record.id.clone()));
    put("owner", o.map(|o| o.crm_user.clone()));
    put("owner_agent", o.and_then(|o| o.agent.clone()));
    put("owner_extension", o.and_then(|o| o.extension.clone()));
    put("owner_available", Some(o.is_some_and(|o| o.available).to_string()));
    put("route_action", Some(route.action));
    put("route_target", route.target);
    put("route_reason", route.reason);
    put("route_rule", route.rule);
    for (k, v) in &l.flags {
        m.insert(format!("flag_{k}"), v.clone());
    }
    m
}

/// `key=value&…`, URL-encoded: Asterisk reads it with `CURLOPT(hashcompat)=yes` into `HASH()`.
fn text(map: &BTreeMap<String, String>) -> Response {
    let body = serde_html_form::to_string(map).unwrap_or_default();
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Check a PIN, order number or serial number the caller gives against their CRM record.
#[utoipa::path(post, path = "/api/v1/ivr/verify", request_body = proto::VerifyRequest,
    responses((status = 200, body = proto::VerifyResult), (status = 422, body = proto::Problem), (status = 429, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn verify(State(edge): State<Arc<Edge>>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    authorize(&edge, &headers, None)?;
    let app = &edge.app;
    verify_body(app, &body).await
}

/// The same, with the token in the path.
#[utoipa::path(post, path = "/api/v1/ivr/{token}/verify", request_body = proto::VerifyRequest,
    responses((status = 200, body = proto::VerifyResult), (status = 429, body = proto::Problem)))]
pub async fn verify_with_token(State(edge): State<Arc<Edge>>, ApiPath(token): ApiPath<String>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    authorize(&edge, &headers, Some(&token))?;
    let app = &edge.app;
    verify_body(app, &body).await
}

async fn verify_body(app: &App, body: &[u8]) -> ApiResult<Response> {
    let req: proto::VerifyRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable(format!("send {{\"ani\": \"…\", \"kind\": \"pin\", \"value\": \"…\"}}: {e}")))?;
    match app.ivr_verify(&req.ani, &req.kind, &req.value).await? {
        Verified::Yes(c) => Ok(Json(proto::VerifyResult { verified: true, record: Some(views::candidate(&app.redact(&c))) }).into_response()),
        Verified::No => Ok(Json(proto::VerifyResult { verified: false, record: None }).into_response()),
        Verified::Locked { retry_after_secs } => {
            let mut r = ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "too many failed attempts for this caller; transfer the call to an agent").into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            Ok(r)
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many entries (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The verification audit trail (admins).
#[utoipa::path(get, path = "/api/v1/ivr/verifications", params(AuditQuery), responses((status = 200, body = proto::VerificationList)), security(("bearer" = [])))]
pub async fn verifications(State(edge): State<Arc<Edge>>, headers: HeaderMap, query: PendingQuery<AuditQuery>) -> ApiResult<Json<proto::VerificationList>> {
    edge.require_admin(&headers).await?;
    let app = &edge.app;
    let q = query.parse()?;
    let list = app.store.verifications(crate::http::error::limit_param(q.limit, 100, 1000)?).await?;
    Ok(Json(proto::VerificationList {
        verifications: list
            .iter()
            .map(|v| proto::VerificationView { at: v.at.to_string(), number: v.number.clone(), record: v.record.as_ref().map(views::record_ref), kind: v.kind.clone(), outcome: v.outcome.clone() })
            .collect(),
    }))
}

/// Record what happened in the IVR (a missed call, a callback request, voicebot answers) as a
/// CRM activity, exactly once per `event_id`.
#[utoipa::path(post, path = "/api/v1/ivr/events", request_body = proto::IvrEventInput,
    responses((status = 202, body = proto::IvrEventResult), (status = 422, body = proto::Problem), (status = 502, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn event(State(edge): State<Arc<Edge>>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    let received = std::time::Instant::now();
    authorize(&edge, &headers, None)?;
    let app = &edge.app;
    let e: proto::IvrEventInput = serde_json::from_slice(&body).map_err(|err| ApiError::unprocessable(format!("the IVR event is not valid: {err}")))?;
    let result = app.ivr_event(&e, received).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(result)).into_response())
}
