//! Health, metrics and the outbox admin endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxbridge_domain::Timestamp;
use cxbridge_proto as proto;
use cxbridge_store::OutboxState;
use serde::Deserialize;

use crate::app::{App, views};
use crate::http::Edge;
use crate::http::caller::{Admin, Caller};
use crate::http::error::{ApiError, ApiPath, ApiResult, PendingQuery, limit_param};

/// Health at a glance: database, CRM, outbox, connected agents, and with several nodes the
/// bus and the other nodes. `degraded` (still 200): dead outbox items, or the bus is down.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = proto::Health), (status = 503, body = proto::Health)))]
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    let health = app.health().await;
    let status = if health.status == "down" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(health)).into_response()
}

pub async fn metrics(State(edge): State<Arc<Edge>>) -> Response {
    let app = &edge.app;
    if let Ok(s) = app.store.outbox_stats(Timestamp::now()).await {
        metrics::gauge!("cxbridge_outbox_depth", "state" => "pending").set(s.pending as f64);
        metrics::gauge!("cxbridge_outbox_depth", "state" => "dead").set(s.dead as f64);
        metrics::gauge!("cxbridge_outbox_depth", "state" => "delivered").set(s.delivered as f64);
        metrics::gauge!("cxbridge_outbox_oldest_pending_seconds").set(s.oldest_pending_secs as f64);
    }
    metrics::gauge!("cxbridge_agents_connected").set(app.hub.connected_agents() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], edge.metrics.render()).into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    /// `pending`, `delivered` or `dead`.
    #[param(schema_with = outbox_states)]
    pub state: Option<String>,
    /// At most this many items (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

fn outbox_states() -> utoipa::openapi::Object {
    proto::string_enum(&["pending", "delivered", "dead"])
}

/// Outbox items, newest change first.
#[utoipa::path(get, path = "/api/v1/outbox", params(OutboxQuery), responses((status = 200, body = proto::OutboxList)), security(("bearer" = [])))]
pub async fn outbox_list(State(app): State<Arc<App>>, _: Admin, query: PendingQuery<OutboxQuery>) -> ApiResult<Json<proto::OutboxList>> {
    let q = query.parse()?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(OutboxState::parse(s).ok_or_else(|| ApiError::unprocessable(format!("`state` must be pending, delivered or dead, not `{s}`")))?),
    };
    let items = app.store.outbox_list(state, limit_param(q.limit, 100, 1000)?).await?;
    Ok(Json(proto::OutboxList { items: items.iter().map(views::outbox_item).collect() }))
}

/// Try a dead (or delivered) item again now.
#[utoipa::path(post, path = "/api/v1/outbox/{id}/replay", params(("id" = i64, Path, description = "The outbox item's id")), responses((status = 200, body = proto::OutboxItemView), (status = 404, body = proto::Problem)), security(("bearer" = [])))]
pub async fn outbox_replay(State(app): State<Arc<App>>, ApiPath(id): ApiPath<i64>, caller: Caller) -> ApiResult<Json<proto::OutboxItemView>> {
    let item = app.replay_outbox(&caller, id).await?;
    Ok(Json(views::outbox_item(&item)))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}
