//! HTTP routes. Only this module (and `main`) knows HTTP.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::service::App;

mod admin;
mod api;
mod crm;
mod ivr;
mod openapi;
mod panel;
mod pbx;
mod problems;
mod stream;
mod workflows;

pub use openapi::{ApiDoc, document as openapi_document};
pub use problems::{MAX_HEADER_BYTES, MAX_URI_BYTES, framework_problems};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/cti/{token}", post(pbx::cti))
        .route("/api/v1/sipgate/{token}", post(pbx::sipgate))
        .route("/api/v1/sipgate/{token}/{direction}", post(pbx::sipgate_with_direction))
        .route("/api/v1/events", post(api::events))
        .route("/api/v1/identify", get(api::identify))
        .route("/api/v1/conversations", get(api::find_conversations))
        .route("/api/v1/conversations/{id}", get(api::conversation))
        .route("/api/v1/conversations/{id}/wrapup", post(api::wrapup))
        .route("/api/v1/conversations/{id}/links", axum::routing::put(panel::links))
        .route("/api/v1/conversations/{id}/close", post(panel::close))
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
        .with_state(app)
}
