//! `GET /api/v1/identify`: who a number or address is, and what the pop rules would open.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use cxbridge_proto as proto;
use serde::Deserialize;

use crate::app::App;
use crate::app::identify::IdentifyQuestion;
use crate::http::caller::Admin;
use crate::http::error::{ApiResult, PendingQuery};

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
pub async fn identify(State(app): State<Arc<App>>, _: Admin, query: PendingQuery<IdentifyQuery>) -> ApiResult<Json<proto::IdentifyResponse>> {
    let q = query.parse()?;
    let question = IdentifyQuestion { address: q.address, channel: q.channel, queue: q.queue, direction: q.direction, campaign: q.campaign };
    Ok(Json(app.identify_address(&question).await?))
}
