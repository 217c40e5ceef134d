//! The built-in CRM's REST API: records, related records, activities.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cxbridge_domain::crm::RecordRef;
use cxbridge_proto as proto;
use cxbridge_store::RecordQuery;

use crate::app::{App, views};
use crate::http::caller::Admin;
use crate::http::error::{ApiError, ApiPath, ApiQuery, ApiResult};

/// A JSON object's values as the built-in CRM keeps them (text).
fn string_fields(v: serde_json::Map<String, serde_json::Value>) -> ApiResult<BTreeMap<String, String>> {
    v.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                _ => return Err(ApiError::unprocessable(format!("field `{k}` must be a string, number or boolean"))),
            };
            Ok((k, s))
        })
        .collect()
}

fn parse_fields(body: &[u8]) -> ApiResult<BTreeMap<String, String>> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| ApiError::unprocessable(format!("the body is not valid JSON: {e}")))?;
    match v {
        serde_json::Value::Object(map) => string_fields(map),
        _ => Err(ApiError::unprocessable("the body must be a JSON object of field names to values")),
    }
}

/// Search: `?phone=…` (any notation), `?q=…` (text), `?limit=…`, any other `?field=value` exact.
/// Records of the built-in CRM matching every given field (`?city=Berlin`), a phone number
/// in any notation (`phone`) and a text (`q`), at most `limit` (default 50).
#[utoipa::path(get, path = "/api/v1/crm/{entity}",
    params(("phone" = Option<String>, Query, description = "A phone number, any notation"), ("q" = Option<String>, Query, description = "Text in the record's title"),
        ("limit" = Option<u32>, Query, description = "At most this many records (default 50)")),
    responses((status = 200, body = proto::RecordList)), security(("bearer" = [])))]
pub async fn search(State(app): State<Arc<App>>, ApiPath(entity): ApiPath<String>, ApiQuery(mut params): ApiQuery<BTreeMap<String, String>>, _: Admin) -> ApiResult<Json<proto::RecordList>> {
    let limit = match params.remove("limit") {
        Some(l) => l.parse::<u32>().map_err(|_| ApiError::unprocessable("`limit` must be a whole number"))?,
        None => 50,
    };
    let query = RecordQuery { phone: params.remove("phone"), text: params.remove("q"), fields: params, limit };
    let records = app.crm_store.search_records(&entity, &query).await?;
    Ok(Json(proto::RecordList { records: records.iter().map(views::record).collect() }))
}

#[utoipa::path(post, path = "/api/v1/crm/{entity}", request_body = proto::RecordFields,
    responses((status = 201, body = proto::RecordView), (status = 422, body = proto::Problem)), security(("bearer" = [])))]
pub async fn create(State(app): State<Arc<App>>, ApiPath(entity): ApiPath<String>, _: Admin, body: Bytes) -> ApiResult<Response> {
    let fields = parse_fields(&body)?;
    let record = app.crm_store.create_record(&entity, fields).await?;
    Ok((StatusCode::CREATED, Json(views::record(&record))).into_response())
}

#[utoipa::path(get, path = "/api/v1/crm/{entity}/{id}", responses((status = 200, body = proto::RecordView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn read(State(app): State<Arc<App>>, ApiPath((entity, id)): ApiPath<(String, String)>, _: Admin) -> ApiResult<Json<proto::RecordView>> {
    let r = app.crm_store.record(&entity, &id).await?.ok_or_else(|| ApiError::not_found(format!("no {entity} `{id}`")))?;
    Ok(Json(views::record(&r)))
}

#[utoipa::path(patch, path = "/api/v1/crm/{entity}/{id}", request_body = proto::RecordFields,
    responses((status = 200, body = proto::RecordView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn update(State(app): State<Arc<App>>, ApiPath((entity, id)): ApiPath<(String, String)>, _: Admin, body: Bytes) -> ApiResult<Json<proto::RecordView>> {
    let fields = parse_fields(&body)?;
    let r = app.crm_store.update_record(&entity, &id, fields).await?.ok_or_else(|| ApiError::not_found(format!("no {entity} `{id}`")))?;
    Ok(Json(views::record(&r)))
}

#[utoipa::path(delete, path = "/api/v1/crm/{entity}/{id}", responses((status = 204), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn delete(State(app): State<Arc<App>>, ApiPath((entity, id)): ApiPath<(String, String)>, _: Admin) -> ApiResult<StatusCode> {
    if app.crm_store.delete_record(&entity, &id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found(format!("no {entity} `{id}`"))) }
}

/// Activities of a record, newest first.
#[utoipa::path(get, path = "/api/v1/crm/{entity}/{id}/activities", responses((status = 200, body = proto::ActivityList)), security(("bearer" = [])))]
pub async fn activities(State(app): State<Arc<App>>, ApiPath((entity, id)): ApiPath<(String, String)>, _: Admin) -> ApiResult<Json<proto::ActivityList>> {
    let list = app.crm_store.activities_for(&RecordRef::new(&entity, &id), 100).await?;
    Ok(Json(proto::ActivityList { activities: list.iter().map(views::activity).collect() }))
}

/// The record a relation of this record points to (e.g. a contact's account).
#[utoipa::path(get, path = "/api/v1/crm/{entity}/{id}/related/{relation}", responses((status = 200, body = proto::RecordView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn related(State(app): State<Arc<App>>, ApiPath((entity, id, relation)): ApiPath<(String, String, String)>, _: Admin) -> ApiResult<Json<proto::RecordView>> {
    let spec = app.entities.iter().find(|e| e.name == entity).ok_or_else(|| ApiError::not_found(format!("unknown CRM entity `{entity}`")))?;
    let rel = spec.relation(&relation).ok_or_else(|| ApiError::not_found(format!("entity `{entity}` has no relation `{relation}`")))?;
    let source = app.crm_store.record(&entity, &id).await?.ok_or_else(|| ApiError::not_found(format!("no {entity} `{id}`")))?;
    let target_id = source.fields.get(&rel.field).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::not_found(format!("{entity} `{id}` has no {relation}")))?;
    let target = app.crm_store.record(&rel.entity, target_id).await?.ok_or_else(|| ApiError::not_found(format!("{} `{target_id}` does not exist", rel.entity)))?;
    Ok(Json(views::record(&target)))
}

#[utoipa::path(get, path = "/api/v1/activities/{id}", responses((status = 200, body = proto::ActivityView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn activity(State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, _: Admin) -> ApiResult<Json<proto::ActivityView>> {
    let a = app.crm_store.activity(&id).await?.ok_or_else(|| ApiError::not_found(format!("no activity `{id}`")))?;
    Ok(Json(views::activity(&a)))
}

/// Creates (or, with the same `key`, updates) an activity: a task, note, message or call
/// logged by hand or by another system.
#[utoipa::path(post, path = "/api/v1/activities", request_body = proto::ActivityInput,
    responses((status = 201, body = proto::ActivityView), (status = 422, body = proto::Problem)), security(("bearer" = [])))]
pub async fn create_activity(State(app): State<Arc<App>>, _: Admin, body: Bytes) -> ApiResult<Response> {
    let input: proto::ActivityInput =
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the activity is not valid: {e}")))?;
    let stored = app.log_activity(input).await?;
    Ok((StatusCode::CREATED, Json(views::activity(&stored))).into_response())
}
