//! Named CRM workflows from config (`[[workflows]]`): search, create, update, timeline,
//! on whichever CRM is configured, returning records the panel can show.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use cxbridge_domain::crm::{EntitySpec, RecordRef, SearchQuery};
use cxbridge_proto as proto;

use crate::config::WorkflowConfig;
use crate::error::{ApiError, ApiPath, ApiResult, crm_problem};
use crate::service::App;
use crate::views;

/// The configured workflows.
#[utoipa::path(get, path = "/api/v1/workflows", responses((status = 200, body = proto::WorkflowList)), security(("bearer" = [])))]
pub async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<proto::WorkflowList>> {
    app.caller(&headers, &Method::GET).await?;
    Ok(Json(proto::WorkflowList { workflows: views(&app.config) }))
}

pub fn views(config: &crate::config::Config) -> Vec<proto::WorkflowView> {
    config
        .workflows
        .iter()
        .map(|w| proto::WorkflowView { name: w.name.clone(), label: w.label.clone(), action: w.action.clone(), entity: w.entity.clone(), required: w.required.clone(), allowed: w.allowed.clone() })
        .collect()
}

/// Runs a workflow against the configured CRM.
#[utoipa::path(post, path = "/api/v1/workflows/{name}", request_body = proto::WorkflowInput,
    responses((status = 200, body = proto::WorkflowResult), (status = 403, body = proto::Problem), (status = 404, body = proto::Problem), (status = 422, body = proto::Problem), (status = 502, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn run(State(app): State<Arc<App>>, headers: HeaderMap, ApiPath(name): ApiPath<String>, body: Bytes) -> ApiResult<Json<proto::WorkflowResult>> {
    let caller = app.caller(&headers, &Method::POST).await?;
    let w = app.config.workflows.iter().find(|w| w.name == name).ok_or_else(|| {
        let known: Vec<&str> = app.config.workflows.iter().map(|w| w.name.as_str()).collect();
        ApiError::not_found(format!("no workflow `{name}`; configured: {}", if known.is_empty() { "none".into() } else { known.join(", ") }))
    })?;
    let input: proto::WorkflowInput = if body.is_empty() {
        proto::WorkflowInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the workflow input is not valid: {e}")))?
    };
    let spec = app
        .entities
        .iter()
        .find(|e| e.name == w.entity)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("workflow `{}` names unknown entity `{}`", w.name, w.entity)))?;
    check_fields(w, spec, &input.fields)?;
    // An agent runs a workflow for one of their conversations, on that conversation's records.
    let conversation = match input.conversation_id.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(id) => Some(super::panel::visible_conversation(&app, &caller, id).await?),
        None if caller.agent_id().is_some() && matches!(w.action.as_str(), "update" | "timeline") => {
            return Err(ApiError::unprocessable("`conversation_id` is required: an agent works on the records of one of their conversations"));
        }
        None => None,
    };
    let check_record = |id: &str| -> ApiResult<()> {
        match (caller.agent_id(), &conversation) {
            (Some(_), Some(c)) if !App::conversation_records(c).iter().any(|r| r.entity == spec.name && r.id == id) => {
                Err(ApiError::forbidden(format!("{} `{id}` is not one of this conversation's records", spec.name)))
            }
            _ => Ok(()),
        }
    };
    // What the agent gets back: no sensitive field, and a grant to link it to the conversation.
    let shown = |c: &cxbridge_domain::crm::Candidate| {
        let mut v = views::candidate_with_fields(&app.redact(c));
        if let (Some(_), Some(conv)) = (caller.agent_id(), &conversation) {
            v.grant = Some(app.sessions.grant(&conv.id, &c.record.entity, &c.record.id));
        }
        v
    };
    let limit = input.limit.unwrap_or(w.limit).clamp(1, w.limit.max(1));
    let mut result = proto::WorkflowResult { workflow: w.name.clone(), action: w.action.clone(), records: vec![], timeline: vec![] };
    match w.action.as_str() {
        "search" => {
            let mut filters = w.fields.clone();
            filters.extend(input.fields.clone());
            let text = input.text.clone().filter(|t| !t.trim().is_empty());
            if text.is_none() && filters.is_empty() {
                return Err(ApiError::unprocessable("a search needs `text` or at least one of `fields`"));
            }
            let found = app.crm.search(spec, &SearchQuery { text, filters, limit }).await.map_err(crm_problem)?;
            result.records = found.iter().map(shown).collect();
        }
        "create" => {
            let mut fields = w.fields.clone();
            fields.extend(input.fields.clone());
            let missing: Vec<&str> = w.required.iter().filter(|f| fields.get(*f).is_none_or(|v| v.trim().is_empty())).map(String::as_str).collect();
            if !missing.is_empty() {
                return Err(ApiError::unprocessable(format!("missing required field(s): {}", missing.join(", "))));
            }
            let created = app.crm.create(spec, &fields).await.map_err(crm_problem)?;
            result.records = vec![shown(&created)];
        }
        "update" => {
            let id = required_id(&input)?;
            check_record(id)?;
            if input.fields.is_empty() {
                return Err(ApiError::unprocessable("an update needs at least one of `fields`"));
            }
            let mut fields = w.fields.clone();
            fields.extend(input.fields.clone());
            let updated = app.crm.update(spec, id, &fields).await.map_err(crm_problem)?;
            result.records = vec![shown(&updated)];
        }
        _ => {
            let id = required_id(&input)?;
            check_record(id)?;
            let entries = app.crm.timeline(&RecordRef::new(&spec.name, id), limit).await.map_err(crm_problem)?;
            result.timeline = entries
                .into_iter()
                .map(|e| proto::TimelineEntryView { id: e.id, kind: e.kind, subject: e.subject, at: e.at, fields: e.fields })
                .collect();
        }
    }
    tracing::info!(workflow = w.name, agent = caller.agent_id(), "workflow run");
    Ok(Json(result))
}

fn required_id(input: &proto::WorkflowInput) -> ApiResult<&str> {
    input.id.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| ApiError::unprocessable("`id` of the record is required"))
}

/// The fields a caller gives (values to write, or search filters): only those the workflow
/// names in `allowed` or `required` — none when it names none — and never a sensitive one.
fn check_fields(w: &WorkflowConfig, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> ApiResult<()> {
    let sensitive: Vec<&str> = fields.keys().filter(|k| spec.is_sensitive(k)).map(String::as_str).collect();
    if !sensitive.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "field(s) {} of {} are sensitive ([ivr.verify] checks callers against them, or the entity lists them): no workflow sets or searches them",
            sensitive.join(", "),
            spec.name
        )));
    }
    let refused: Vec<&str> = fields.keys().filter(|k| !w.allowed.contains(k) && !w.required.contains(k)).map(String::as_str).collect();
    if refused.is_empty() {
        return Ok(());
    }
    let allowed: Vec<&str> = w.allowed.iter().chain(&w.required).map(String::as_str).collect();
    let allowed = if allowed.is_empty() { "none (list them in the workflow's `allowed`)".to_string() } else { allowed.join(", ") };
    Err(ApiError::unprocessable(format!("field(s) not allowed in workflow `{}`: {}; allowed: {allowed}", w.name, refused.join(", "))))
}
