//! `POST /api/v1/events`: an integration's own conversation events.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use cxbridge_proto as proto;
use cxbridge_store::Recorded;

use crate::app::{App, fnv1a};
use crate::http::caller::{Admin, Received};
use crate::http::error::{ApiError, ApiResult};

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
pub async fn events(Received(received): Received, State(app): State<Arc<App>>, _: Admin, body: Bytes) -> ApiResult<Json<proto::Accepted>> {
    let e: proto::NativeEvent =
        serde_json::from_slice(&body).map_err(|err| ApiError::unprocessable(format!("the event is not valid: {err}")))?;
    let recorded = app.record_native(&e, fnv1a(&body), received).await?;
    Ok(Json(accepted(&recorded)))
}
