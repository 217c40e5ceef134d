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
    let db = app.store.ping().await;
    let stats = app.store.outbox_stats(Timestamp::now()).await.unwrap_or_default();
    let ok = db.is_ok();
    let bus = app.bus.as_ref().map(|b| views::bus_health(&b.status()));
    let bus_ok = bus.as_ref().is_none_or(|b| b.connected);
    let health = proto::Health {
        status: if ok && stats.dead == 0 && bus_ok { "ok" } else if ok { "degraded" } else { "down" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        database: match db {
            Ok(()) => "ok".into(),
            Err(e) => format!("error: {e}"),
        },
        crm: crm_health(&app).await,
        outbox: views::outbox_stats(&stats),
        agents_connected: app.hub.connected_agents() as u64,
        uptime_secs: app.started.elapsed().as_secs(),
        node: app.node_id.clone(),
        store: app.config.server.database_kind().as_str().into(),
        bus,
    };
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health)).into_response()
}

async fn crm_health(app: &App) -> proto::CrmHealth {
    let index = match &app.indexed {
        None => None,
        Some(indexed) => {
            let states = indexed.index().index_sync_states().await.unwrap_or_default();
            let now = Timestamp::now();
            let mut out = vec![];
            for spec in app.entities.iter().filter(|e| e.identify) {
                let state = states.iter().find(|s| s.entity == spec.name);
                let records = indexed.index().count_records(&spec.name).await.unwrap_or(0);
                let synced_at = state.and_then(|s| s.synced_at);
                let resync = indexed.last_resync(&spec.name);
                out.push(proto::IndexHealth {
                    entity: spec.name.clone(),
                    state: match state {
                        Some(s) if s.last_error.is_some() => "failing",
                        Some(s) if s.complete => "ready",
                        _ => "syncing",
                    }
                    .into(),
                    records,
                    synced_at: synced_at.map(|t| t.to_string()),
                    age_secs: synced_at.map(|t| now.duration_since(t).as_secs().max(0) as u64),
                    last_error: state.and_then(|s| s.last_error.clone()),
                    resynced_at: resync.as_ref().map(|r| r.at.to_string()),
                    resync_reason: resync.map(|r| r.reason),
                });
            }
            Some(out)
        }
    };
    proto::CrmHealth { provider: app.config.crm.provider.to_string(), index }
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
