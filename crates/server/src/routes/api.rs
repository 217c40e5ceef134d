//! The native API: events, identification, conversations, wrap-up.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use cxbridge_domain::conversation::{Channel, Conversation, Direction, Disposition, Event, EventKind, WrapUp};
use cxbridge_domain::crm::RecordRef;
use cxbridge_proto as proto;
use cxbridge_store::Recorded;
use serde::Deserialize;

use crate::error::{ApiError, ApiPath, ApiResult, PendingQuery};
use crate::service::{App, details, fnv1a};
use crate::views;

fn accepted(r: &Recorded) -> proto::Accepted {
    match r {
        Recorded::Duplicate(c) => proto::Accepted {
            result: "duplicate".into(),
            conversation_id: c.as_ref().map(|c| c.id.clone()),
            state: c.as_ref().map(|c| c.state.as_str().into()),
        },
        Recorded::Applied(t) => proto::Accepted {
            result: if t.absorbed { "absorbed" } else { "applied" }.into(),
            conversation_id: Some(t.conversation.id.clone()),
            state: Some(t.conversation.state.as_str().into()),
        },
    }
}

/// Native conversation event.
#[utoipa::path(post, path = "/api/v1/events", request_body = proto::NativeEvent,
    responses((status = 200, body = proto::Accepted), (status = 422, body = proto::Problem)), security(("bearer" = [])))]
pub async fn events(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<proto::Accepted>> {
    let received = Instant::now();
    app.require_admin(&headers).await?;
    let e: proto::NativeEvent =
        serde_json::from_slice(&body).map_err(|err| ApiError::unprocessable(format!("the event is not valid: {err}")))?;
    let event = app.native_event(&e, fnv1a(&body)).await?;
    let recorded = app.record(event, "native", &e.kind, received).await?;
    Ok(Json(accepted(&recorded)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IdentifyQuery {
    /// Phone number (any notation) or channel address.
    pub address: String,
    pub channel: Option<String>,
    pub queue: Option<String>,
    #[param(schema_with = proto::directions)]
    pub direction: Option<String>,
    pub campaign: Option<String>,
}

/// Identify a caller and show the pop the rules choose.
#[utoipa::path(get, path = "/api/v1/identify", params(IdentifyQuery),
    responses((status = 200, body = proto::IdentifyResponse)), security(("bearer" = [])))]
pub async fn identify(State(app): State<Arc<App>>, headers: HeaderMap, query: PendingQuery<IdentifyQuery>) -> ApiResult<Json<proto::IdentifyResponse>> {
    app.require_admin(&headers).await?;
    let q = query.parse()?;
    let normalized = app.normalizer.normalize(&q.address);
    let identification = app.identify(&normalized).await;
    // Evaluate the pop rules on a conversation that looks like the one asked about.
    let direction = match q.direction.as_deref() {
        None => Direction::Inbound,
        Some(d) => Direction::parse(d).ok_or_else(|| ApiError::unprocessable("`direction` must be `inbound` or `outbound`"))?,
    };
    let probe = probe_conversation(&q, direction, normalized.e164().map(str::to_string), identification.clone())?;
    let pop = app.pop_view(&probe).await;
    Ok(Json(proto::IdentifyResponse {
        address: q.address.clone(),
        e164: normalized.e164().map(str::to_string),
        identification: views::identification(&app.redact_identification(&identification)),
        pop,
    }))
}

fn probe_conversation(
    q: &IdentifyQuery,
    direction: Direction,
    e164: Option<String>,
    identification: cxbridge_domain::identify::Identification,
) -> ApiResult<Conversation> {
    let start = Event {
        dedup_key: String::new(),
        source: "identify".into(),
        conversation_key: String::new(),
        leg: None,
        at: cxbridge_domain::Timestamp::now(),
        source_time: false,
        kind: EventKind::Offered(cxbridge_domain::conversation::Offer {
            channel: Channel::parse(q.channel.as_deref().unwrap_or("voice")),
            direction,
            customer: cxbridge_domain::conversation::Address { raw: q.address.clone(), e164 },
            dialed: Default::default(),
            agents: vec![],
            queue: q.queue.clone(),
            diversion: None,
            details: cxbridge_domain::conversation::Details { campaign: q.campaign.clone(), ..Default::default() },
            identification,
        }),
    };
    cxbridge_domain::conversation::apply(None, start, "probe", Default::default())
        .map(|t| t.conversation)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    pub external_id: String,
    pub source: Option<String>,
}

/// Find a conversation by an id its source knows it by.
#[utoipa::path(get, path = "/api/v1/conversations", params(FindQuery),
    responses((status = 200, body = proto::ConversationList)), security(("bearer" = [])))]
pub async fn find_conversations(State(app): State<Arc<App>>, headers: HeaderMap, query: PendingQuery<FindQuery>) -> ApiResult<Json<proto::ConversationList>> {
    app.require_admin(&headers).await?;
    let q = query.parse()?;
    let found = app.store.conversation_by_external(q.source.as_deref(), &q.external_id).await?;
    let mut conversations = vec![];
    if let Some(c) = found {
        conversations.push(app.conversation_view(&c).await);
    }
    Ok(Json(proto::ConversationList { conversations }))
}

/// A conversation by its hub id.
#[utoipa::path(get, path = "/api/v1/conversations/{id}",
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn conversation(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> ApiResult<Json<proto::ConversationView>> {
    let caller = app.caller(&headers, &axum::http::Method::GET).await?;
    let c = super::panel::visible_conversation(&app, &caller, &id).await?;
    Ok(Json(app.conversation_view(&c).await))
}

/// Wrap-up: disposition, notes, the chosen record. Completes an ended voice conversation.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/wrapup", request_body = proto::WrapupRequest,
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem), (status = 422, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn wrapup(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(id): ApiPath<String>, body: Bytes) -> ApiResult<Json<proto::ConversationView>> {
    let received = Instant::now();
    let caller = app.caller(&headers, &axum::http::Method::POST).await?;
    let mut w: proto::WrapupRequest =
        serde_json::from_slice(&body).map_err(|err| ApiError::unprocessable(format!("the wrap-up is not valid: {err}")))?;
    let c = super::panel::visible_conversation(&app, &caller, &id).await?;
    if let Some(agent) = caller.agent_id() {
        // An agent wraps up as themselves, whatever the body says.
        w.agent = Some(agent.to_string());
    }
    w.disposition = checked_disposition(&app, w.disposition.take())?;
    let refs: Vec<&proto::RecordRefView> = w.selected.iter().chain(w.pinned.iter().flatten()).collect();
    app.check_agent_links(&caller, &c, &refs, &[])?;
    app.check_linkable(&c, w.selected.as_ref(), w.pinned.as_ref()).await?;
    let wrap = WrapUp {
        agent: w.agent.clone(),
        disposition: w.disposition.as_ref().map(|d| Disposition { code: d.code.clone(), category: d.category.clone() }),
        notes: w.notes.clone(),
        selected: w.selected.as_ref().map(|r| RecordRef::new(&r.entity, &r.id)),
        pinned: w.pinned.as_ref().map(|p| p.iter().map(|r| RecordRef::new(&r.entity, &r.id)).collect()),
        details: details(&w.details),
    };
    let dedup_key = match &w.request_id {
        Some(r) if !r.is_empty() => format!("wrapup:{}:{r}", c.id),
        _ => format!("wrapup:{}:{:016x}", c.id, fnv1a(&body) ^ c.revision),
    };
    let event = Event::about(&c, dedup_key, cxbridge_domain::Timestamp::now(), EventKind::WrappedUp(wrap));
    let recorded = app.record(event, "api", "wrapup", received).await?;
    let c = recorded.into_conversation().unwrap_or(c);
    Ok(Json(app.conversation_view(&c).await))
}

/// The disposition as configured: a known code (when `[[wrapup_codes]]` are set) with its
/// category filled in; required when `[panel] require_disposition` is set.
fn checked_disposition(app: &App, d: Option<proto::DispositionInput>) -> ApiResult<Option<proto::DispositionInput>> {
    let codes = &app.config.wrapup_codes;
    let Some(mut d) = d else {
        if app.config.panel.require_disposition {
            return Err(ApiError::unprocessable("a disposition is required: choose one of the wrap-up codes"));
        }
        return Ok(None);
    };
    if d.code.trim().is_empty() {
        return Err(ApiError::unprocessable("`disposition.code` must not be empty"));
    }
    if codes.is_empty() {
        return Ok(Some(d));
    }
    let Some(known) = codes.iter().find(|c| c.code == d.code) else {
        let list: Vec<&str> = codes.iter().map(|c| c.code.as_str()).collect();
        return Err(ApiError::unprocessable(format!("unknown disposition `{}`; the wrap-up codes are {}", d.code, list.join(", "))));
    };
    if d.category.is_none() {
        d.category = known.category.clone();
    }
    Ok(Some(d))
}
