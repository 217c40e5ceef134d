//! The OpenAPI 3.1 document (`GET /api/v1/openapi.json`): the operations' own annotations,
//! then one pass that states what holds for every route — so a client generator gets the
//! whole truth without each annotation repeating it:
//!
//! - every `{name}` of a path is a declared, required path parameter;
//! - every error a route can answer is listed, as `application/problem+json` with the
//!   `Problem` schema: 400 (a malformed path, query or body), 401 (secured routes), 403
//!   (secured changes: a session without the CSRF token, an agent on an admin route), 404
//!   (a path naming something), 413 (bodies over 2 MiB), 422 (invalid values), 503 (the
//!   database refused, or the connection cap);
//! - tags name the capability (`calls`, `pbx`, `ivr`, `crm`, `panel`, `workflows`, `admin`),
//!   not Rust modules, and operation ids are unique.

use std::collections::BTreeSet;

use axum::Json;
use axum::response::{IntoResponse, Response};
use cxbridge_proto as proto;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "cxbridge", description = "Contact centre ↔ CRM hub. Every error is application/problem+json (RFC 9457)."),
    paths(
        super::routes::admin::healthz,
        super::routes::admin::outbox_list,
        super::routes::admin::outbox_replay,
        super::routes::events::events,
        super::routes::identify::identify,
        super::routes::conversations::find_conversations,
        super::routes::conversations::conversation,
        super::routes::conversations::wrapup,
        super::routes::calls::cti,
        super::routes::calls::sipgate,
        super::routes::calls::sipgate_with_direction,
        super::routes::crm::search,
        super::routes::crm::create,
        super::routes::crm::read,
        super::routes::crm::update,
        super::routes::crm::delete,
        super::routes::crm::activities,
        super::routes::crm::related,
        super::routes::crm::activity,
        super::routes::crm::create_activity,
        super::routes::stream::stream,
        super::routes::workflows::list,
        super::routes::workflows::run,
        super::routes::ivr::lookup,
        super::routes::ivr::lookup_with_token,
        super::routes::ivr::jambonz_get,
        super::routes::ivr::jambonz_post,
        super::routes::ivr::verify,
        super::routes::ivr::verify_with_token,
        super::routes::ivr::verifications,
        super::routes::ivr::event,
        super::routes::panel::sign_in,
        super::routes::panel::current_session,
        super::routes::panel::sign_out,
        super::routes::panel::bootstrap,
        super::routes::panel::links,
        super::routes::conversations::close,
        super::routes::panel::new_record,
        super::routes::panel::related,
    ),
    components(schemas(proto::AgentMessage, proto::AgentConversation, proto::Problem)),
    modifiers(&SecuritySchemes, &Conventions),
)]
pub struct ApiDoc;

pub async fn openapi() -> Response {
    Json(document()).into_response()
}

/// The document as served.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
            // jambonz webhooks: user name (optional) and the IVR token as the password.
            c.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
        }
    }
}

struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut Document) {
        let mut ids = BTreeSet::new();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let tag = tag_of(path);
            let names = path_parameters(path);
            let ops = [
                ("get", item.get.as_mut()),
                ("put", item.put.as_mut()),
                ("post", item.post.as_mut()),
                ("delete", item.delete.as_mut()),
                ("patch", item.patch.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                op.tags = Some(vec![tag.to_string()]);
                unique_operation_id(op, tag, method, &mut ids);
                declare_path_parameters(op, &names);
                add_problems(op, path, method, !names.is_empty());
            }
        }
    }
}

/// The capability a path belongs to.
fn tag_of(path: &str) -> &'static str {
    let rest = path.strip_prefix("/api/v1/").unwrap_or(path);
    match rest.split('/').next().unwrap_or("") {
        "cti" | "sipgate" => "pbx",
        "events" | "identify" | "conversations" => "calls",
        "ivr" => "ivr",
        "crm" | "activities" => "crm",
        "session" | "panel" | "agents" => "panel",
        "workflows" => "workflows",
        _ => "admin",
    }
}

fn path_parameters(path: &str) -> Vec<String> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).map(str::to_string).collect()
}

fn unique_operation_id(op: &mut Operation, tag: &str, method: &str, ids: &mut BTreeSet<String>) {
    let base = op.operation_id.clone().unwrap_or_else(|| method.to_string());
    let mut id = base.clone();
    if ids.contains(&id) {
        id = format!("{tag}_{base}");
    }
    let mut n = 2;
    while ids.contains(&id) {
        id = format!("{tag}_{base}_{n}");
        n += 1;
    }
    ids.insert(id.clone());
    op.operation_id = Some(id);
}

fn declare_path_parameters(op: &mut Operation, names: &[String]) {
    let params = op.parameters.get_or_insert_with(Vec::new);
    for name in names {
        if params.iter().any(|p| p.name == *name && p.parameter_in == ParameterIn::Path) {
            continue;
        }
        let description = match name.as_str() {
            "token" => "The webhook token (the CTI token for PBX routes, the IVR token for IVR routes)",
            "entity" => "A CRM entity of [[crm.entities]] (`contact`, `account`, `lead`, …)",
            "id" => "The id of the record, conversation, activity or outbox item",
            "direction" => "`in` or `out`, as Zammad's sipgate integration names its URLs",
            "agent" => "The agent's id ([[agents]] id)",
            "relation" => "A relation declared on the entity",
            "name" => "The workflow's name ([[workflows]] name)",
            _ => "",
        };
        let schema = utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String);
        let schema = if name == "direction" { schema.enum_values(Some(["in", "out"])) } else { schema };
        let mut p = ParameterBuilder::new().name(name).parameter_in(ParameterIn::Path).required(Required::True).schema(Some(schema));
        if !description.is_empty() {
            p = p.description(Some(description));
        }
        params.push(p.build());
    }
    if params.is_empty() {
        op.parameters = None;
    }
}

fn add_problems(op: &mut Operation, path: &str, method: &str, names_something: bool) {
    let has_query = op.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = op.request_body.is_some() || matches!(method, "post" | "put" | "patch");
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty()) || (path.starts_with("/api/v1/") && !is_public(path, method));
    let changes = matches!(method, "post" | "put" | "patch" | "delete");
    let mut statuses: Vec<(u16, &str)> = vec![(503, "The database refused the request or the hub is at its connection limit; nothing changed, try again (see Retry-After)")];
    if has_query || has_body || names_something {
        statuses.push((400, "The path, query string or body is malformed"));
    }
    if secured {
        statuses.push((401, "No valid token or session"));
        if changes {
            statuses.push((403, "Not allowed for this caller (an agent on an admin route, a session change without the CSRF token)"));
        }
    }
    if names_something || (has_body && path.starts_with("/api/v1/")) {
        statuses.push((404, "Nothing of that name, or the body names a conversation or entity that is not known"));
    }
    if has_body {
        statuses.push((413, "The body is larger than 2 MiB"));
    }
    if has_body || has_query {
        statuses.push((422, "A value is not valid; the detail names it"));
    }
    for (status, description) in statuses {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    }
    // Every error's body is a problem, whatever the annotation said.
    for (status, response) in op.responses.responses.iter_mut() {
        let is_error = status.parse::<u16>().is_ok_and(|s| s >= 400);
        if let (true, RefOr::T(r)) = (is_error, response) {
            r.content.clear();
            r.content.insert("application/problem+json".to_string(), Content::new(Some(Ref::from_schema_name("Problem"))));
        }
    }
}

/// Routes anyone may call: the document itself, health, and signing in.
fn is_public(path: &str, method: &str) -> bool {
    path == "/api/v1/openapi.json" || (path == "/api/v1/session" && method == "post")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_capabilities() {
        let cases = [
            ("/api/v1/cti/{token}", "pbx"),
            ("/api/v1/sipgate/{token}/{direction}", "pbx"),
            ("/api/v1/conversations/{id}/wrapup", "calls"),
            ("/api/v1/ivr/jambonz", "ivr"),
            ("/api/v1/crm/{entity}", "crm"),
            ("/api/v1/activities/{id}", "crm"),
            ("/api/v1/session", "panel"),
            ("/api/v1/agents/{agent}/stream", "panel"),
            ("/api/v1/outbox", "admin"),
            ("/healthz", "admin"),
        ];
        for (path, tag) in cases {
            assert_eq!(tag_of(path), tag, "{path}");
        }
    }

    #[test]
    fn path_parameters_are_read_from_the_template() {
        assert_eq!(path_parameters("/api/v1/crm/{entity}/{id}/related/{relation}"), ["entity", "id", "relation"]);
        assert!(path_parameters("/api/v1/identify").is_empty());
    }
}
