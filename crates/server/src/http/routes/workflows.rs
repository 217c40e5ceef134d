//! `[[workflows]]` over HTTP: list them, run one (the use case is `app::workflows`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use cxbridge_proto as proto;

use crate::app::App;
use crate::http::caller::Caller;
use crate::http::error::{ApiError, ApiPath, ApiResult};

/// The configured workflows.
#[utoipa::path(get, path = "/api/v1/workflows", responses((status = 200, body = proto::WorkflowList)), security(("bearer" = [])))]
pub async fn list(State(app): State<Arc<App>>, _: Caller) -> ApiResult<Json<proto::WorkflowList>> {
    Ok(Json(proto::WorkflowList { workflows: app.workflow_views() }))
}

/// Runs a workflow against the configured CRM.
#[utoipa::path(post, path = "/api/v1/workflows/{name}", request_body = proto::WorkflowInput,
    responses((status = 200, body = proto::WorkflowResult), (status = 403, body = proto::Problem), (status = 404, body = proto::Problem), (status = 422, body = proto::Problem), (status = 502, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn run(State(app): State<Arc<App>>, ApiPath(name): ApiPath<String>, caller: Caller, body: Bytes) -> ApiResult<Json<proto::WorkflowResult>> {
    let w = app.workflow(&name)?;
    let input: proto::WorkflowInput = if body.is_empty() {
        proto::WorkflowInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(format!("the workflow input is not valid: {e}")))?
    };
    Ok(Json(app.run_workflow(&caller, w, input).await?))
}
