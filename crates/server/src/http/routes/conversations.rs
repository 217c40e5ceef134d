//! Conversations: find one, read one, wrap it up, close it by hand.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use cxbridge_proto as proto;
use serde::Deserialize;

use crate::app::{App, fnv1a};
use crate::http::caller::{Admin, Caller, Received};
use crate::http::error::{ApiError, ApiPath, ApiResult, PendingQuery};

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
pub async fn find_conversations(State(app): State<Arc<App>>, _: Admin, query: PendingQuery<FindQuery>) -> ApiResult<Json<proto::ConversationList>> {
    let q = query.parse()?;
    Ok(Json(proto::ConversationList { conversations: app.find_conversations(q.source.as_deref(), &q.external_id).await? }))
}

/// A conversation by its hub id.
#[utoipa::path(get, path = "/api/v1/conversations/{id}",
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn conversation(State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, caller: Caller) -> ApiResult<Json<proto::ConversationView>> {
    let c = app.visible_conversation(&caller, &id).await?;
    Ok(Json(app.conversation_view(&c).await))
}

/// Wrap-up: disposition, notes, the chosen record. Completes an ended voice conversation.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/wrapup", request_body = proto::WrapupRequest,
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem), (status = 422, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn wrapup(Received(received): Received, State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, caller: Caller, body: Bytes) -> ApiResult<Json<proto::ConversationView>> {
    let w: proto::WrapupRequest =
        serde_json::from_slice(&body).map_err(|err| ApiError::unprocessable(format!("the wrap-up is not valid: {err}")))?;
    Ok(Json(app.wrap_up(&caller, &id, w, fnv1a(&body), received).await?))
}

/// Close a conversation whose end never came (still ringing or connected): it ends with the
/// cause `closedByAgent` and the closer in the attribute `closed_by`, and goes on as any
/// ended conversation (wrap-up, then one activity). An agent closes only conversations
/// offered to them; the closing is logged.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/close",
    responses((status = 200, body = proto::ConversationView), (status = 404, body = proto::Problem), (status = 409, body = proto::Problem, description = "The conversation has already ended")))]
pub async fn close(Received(received): Received, State(app): State<Arc<App>>, ApiPath(id): ApiPath<String>, caller: Caller) -> ApiResult<Json<proto::ConversationView>> {
    Ok(Json(app.close(&caller, &id, received).await?))
}
