//! The HTTP edge: routes, extractors (who is calling, query and path parameters),
//! problem+json, panel sessions and sign-in limits, the accept loop, the panel's assets.
//! Only this room knows HTTP; it holds no use-case logic (that is `app`).

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::app::App;

pub mod caller;
pub mod error;
pub mod listen;
mod openapi;
mod problems;
pub mod redact;
mod routes;
pub mod session;
pub mod throttle;

pub use openapi::{ApiDoc, document as openapi_document};
pub use problems::{MAX_HEADER_BYTES, MAX_URI_BYTES, framework_problems};

/// What the routes hold: the use cases, and what only the edge needs — who may call
/// (tokens, panel sessions) and the metrics it renders.
pub struct Edge {
    pub app: Arc<App>,
    pub tokens: caller::Tokens,
    pub sessions: session::Sessions,
    pub metrics: PrometheusHandle,
}

/// The router's state: handlers take `State<Arc<Edge>>` when they need the edge's own parts,
/// `State<Arc<App>>` when the use cases are all they call.
#[derive(Clone)]
pub struct Shared(Arc<Edge>);

impl FromRef<Shared> for Arc<Edge> {
    fn from_ref(shared: &Shared) -> Self {
        shared.0.clone()
    }
}

impl FromRef<Shared> for Arc<App> {
    fn from_ref(shared: &Shared) -> Self {
        shared.0.app.clone()
    }
}

pub fn router(edge: Arc<Edge>) -> Router {
    use routes::{admin, calls, conversations, crm, events, identify, ivr, panel, stream, workflows};
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/cti/{token}", post(calls::cti))
        .route("/api/v1/sipgate/{token}", post(calls::sipgate))
        .route("/api/v1/sipgate/{token}/{direction}", post(calls::sipgate_with_direction))
        .route("/api/v1/events", post(events::events))
        .route("/api/v1/identify", get(identify::identify))
        .route("/api/v1/conversations", get(conversations::find_conversations))
        .route("/api/v1/conversations/{id}", get(conversations::conversation))
        .route("/api/v1/conversations/{id}/wrapup", post(conversations::wrapup))
        .route("/api/v1/conversations/{id}/links", put(panel::links))
        .route("/api/v1/conversations/{id}/close", post(conversations::close))
        .route("/api/v1/conversations/{id}/records", post(panel::new_record))
        .route("/api/v1/conversations/{id}/related", get(panel::related))
        .route("/api/v1/agents/{agent}/stream", get(stream::stream))
        .route("/api/v1/ivr/lookup", get(ivr::lookup))
        .route("/api/v1/ivr/{token}/lookup", get(ivr::lookup_with_token))
        .route("/api/v1/ivr/jambonz", get(ivr::jambonz_get).post(ivr::jambonz_post))
        .route("/api/v1/ivr/{token}/jambonz", get(ivr::jambonz_get_with_token).post(ivr::jambonz_post_with_token))
        .route("/api/v1/ivr/verify", post(ivr::verify))
        .route("/api/v1/ivr/{token}/verify", post(ivr::verify_with_token))
        .route("/api/v1/ivr/verifications", get(ivr::verifications))
        .route("/api/v1/ivr/events", post(ivr::event))
        .route("/api/v1/session", get(panel::current_session).post(panel::sign_in).delete(panel::sign_out))
        .route("/api/v1/panel", get(panel::bootstrap))
        .route("/agent", get(panel::index))
        .route("/agent/", get(panel::index))
        .route("/agent/{file}", get(panel::asset))
        .route("/api/v1/crm/{entity}", get(crm::search).post(crm::create))
        .route("/api/v1/crm/{entity}/{id}", get(crm::read).patch(crm::update).delete(crm::delete))
        .route("/api/v1/crm/{entity}/{id}/activities", get(crm::activities))
        .route("/api/v1/crm/{entity}/{id}/related/{relation}", get(crm::related))
        .route("/api/v1/activities", post(crm::create_activity))
        .route("/api/v1/activities/{id}", get(crm::activity))
        .route("/api/v1/workflows", get(workflows::list))
        .route("/api/v1/workflows/{name}", post(workflows::run))
        .route("/api/v1/outbox", get(admin::outbox_list))
        .route("/api/v1/outbox/{id}/replay", post(admin::outbox_replay))
        .fallback(admin::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(2 * 1024 * 1024))
        .with_state(Shared(edge))
}
