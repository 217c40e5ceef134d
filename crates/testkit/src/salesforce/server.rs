//! The org a test starts: its two listeners (login server and instance), what tests read and
//! change directly, and the entry point every instance request takes (faults, API usage).

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::faults::Verdict;
use crate::oauth::Flavor;
use crate::{Faults, Seen, TokenServer};

use super::org::Org;
use super::reply::{Reply, error};
use super::schema::{FieldDef, Kind, schema};

/// The connected app's consumer key the login server accepts.
pub const CLIENT_ID: &str = "3MVG9cxbridge.test.client";
/// The connected app's consumer secret the login server accepts.
pub const CLIENT_SECRET: &str = "cxbridge-test-secret";

/// A Salesforce org for tests. Cloneable; every clone is the same org.
#[derive(Clone)]
pub struct SalesforceServer {
    /// Where the OAuth token endpoint lives (`{login_url}/services/oauth2/token`).
    pub login_url: String,
    /// Where the REST API lives; the token answer's `instance_url`.
    pub instance_url: String,
    pub tokens: TokenServer,
    pub faults: Faults,
    org: Arc<Mutex<Org>>,
}

impl SalesforceServer {
    /// Starts the login server and the instance on free loopback ports.
    pub async fn start() -> std::io::Result<Self> {
        let tokens = TokenServer::new(Flavor::Salesforce, CLIENT_ID, CLIENT_SECRET, None);
        let login_url = crate::serve(tokens.router("/services/oauth2/token")).await?;
        let org = Arc::new(Mutex::new(Org::new()));
        let faults = Faults::default();
        let placeholder = Self { login_url, instance_url: String::new(), tokens, faults, org };
        let instance_url = crate::serve(Router::new().fallback(handle).with_state(placeholder.clone())).await?;
        placeholder.tokens.set_instance_url(&instance_url);
        Ok(Self { instance_url, ..placeholder })
    }

    pub(super) fn org(&self) -> MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request the instance received, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.org().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.org().seen.clear();
    }

    /// Stores a record directly (test setup: no API call counted, no validation beyond the
    /// object and field names). Returns its 18-character id. Panics on an unknown object or
    /// field, which is a mistake in the test.
    pub fn insert(&self, object: &str, fields: Value) -> String {
        let mut org = self.org();
        let Some(obj) = org.object(object) else { panic!("the test org has no sObject `{object}`") };
        let mut record = Map::new();
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            let Some(f) = obj.field(&k) else { panic!("sObject `{}` has no field `{k}`", obj.name) };
            record.insert(f.name.clone(), v);
        }
        org.store_new(&obj, record)
    }

    /// Changes fields of a stored record directly (test setup). Returns whether it exists.
    pub fn update(&self, object: &str, id: &str, fields: Value) -> bool {
        let mut org = self.org();
        let Some(obj) = org.object(object) else { return false };
        let mut changes = Map::new();
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            if let Some(f) = obj.field(&k) {
                changes.insert(f.name.clone(), v);
            }
        }
        org.store_update(&obj, id, changes)
    }

    /// Deletes a record (it shows up in `sobjects/{Object}/deleted/`). Returns whether it existed.
    pub fn delete(&self, object: &str, id: &str) -> bool {
        let mut org = self.org();
        let Some(obj) = org.object(object) else { return false };
        org.store_delete(&obj, id)
    }

    /// The stored records of `object`, oldest first, with every field set (no `attributes`).
    pub fn records(&self, object: &str) -> Vec<Value> {
        let org = self.org();
        let Some(obj) = org.object(object) else { return vec![] };
        org.table(obj.name).values().map(|r| Value::Object(r.clone())).collect()
    }

    /// One stored record.
    pub fn record(&self, object: &str, id: &str) -> Option<Value> {
        let org = self.org();
        let obj = org.object(object)?;
        org.find(obj.name, id).map(|(_, r)| Value::Object(r.clone()))
    }

    /// The stored Tasks, oldest first.
    pub fn tasks(&self) -> Vec<Value> {
        self.records("Task")
    }

    /// Composite requests served.
    pub fn composites(&self) -> u64 {
        self.org().composites
    }

    /// API calls served so far (what `Sforce-Limit-Info` reports).
    pub fn api_usage(&self) -> u64 {
        self.org().api_calls
    }

    /// The org's API allocation: once `api_usage()` reaches it, requests get 403
    /// `REQUEST_LIMIT_EXCEEDED`.
    pub fn set_api_limit(&self, max: u64) {
        self.org().api_max = max;
    }

    /// Records per query page (`nextRecordsUrl` beyond that).
    pub fn set_page_size(&self, n: usize) {
        self.org().page_size = n.max(1);
    }

    /// Which Task field is the external id field (upserts by any other field are refused).
    pub fn set_external_id_field(&self, name: &str) {
        let mut org = self.org();
        org.key_field = name.to_string();
        org.schema = schema(name);
    }

    /// Deletes a record as if that happened at `at` (test setup: a deletion some minutes
    /// ago, which the deletion feed reports once its minute is over).
    pub fn delete_at(&self, object: &str, id: &str, at: Timestamp) -> bool {
        let mut org = self.org();
        let Some(obj) = org.object(object) else { return false };
        let deleted = org.store_delete(&obj, id);
        if deleted && let Some(last) = org.deleted.last_mut() {
            last.2 = at;
        }
        deleted
    }

    /// An administrator empties the Recycle Bin: the delete log begins now, and the
    /// deletion feed refuses windows that start before.
    pub fn purge_recycle_bin(&self) {
        let mut org = self.org();
        org.deleted.clear();
        org.delete_log_from = Timestamp::now();
    }

    /// Every open query locator expires (as after 15 minutes without use).
    pub fn expire_query_locators(&self) {
        self.org().locators.clear();
    }

    /// Adds a custom text field (255 characters) to an object, as an admin would (e.g. a
    /// number kept in E.164 by a flow). Panics on an unknown object: test setup.
    pub fn add_text_field(&self, object: &str, name: &str) {
        let mut org = self.org();
        let Some(obj) = org.schema.iter_mut().find(|o| o.name.eq_ignore_ascii_case(object)) else { panic!("the test org has no sObject `{object}`") };
        obj.fields.push(FieldDef { name: name.into(), label: "", kind: Kind::Text(255), writable: true, updateable: true, required: false, external_id: false });
    }

    /// Adds an active user (a valid `OwnerId`); returns its id.
    pub fn add_user(&self, name: &str) -> String {
        self.insert("User", json!({ "Name": name, "IsActive": true }))
    }
}

async fn handle(State(server): State<SalesforceServer>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).to_string();
    server.org().seen.push(Seen {
        method: method.to_string(),
        target: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| uri.path().to_string()),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect(),
        body: text.clone(),
    });
    if let Verdict::Fail(r) = server.faults.check().await {
        return r;
    }
    if !server.tokens.authorized(&headers) {
        let usage = server.org().usage();
        return respond(error(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid"), &usage);
    }
    let (reply, usage, wrote) = {
        let mut org = server.org();
        if org.api_calls >= org.api_max {
            let usage = org.usage();
            return respond(error(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), &usage);
        }
        org.api_calls += 1;
        let query = uri.query().unwrap_or_default().to_string();
        let reply = org.serve(&method, uri.path(), &query, &text);
        let wrote = method != Method::GET && method != Method::HEAD;
        (reply, org.usage(), wrote)
    };
    if wrote
        && reply.is_success()
        && let Some(lost) = server.faults.answer_lost()
    {
        return lost;
    }
    respond(reply, &usage)
}

fn respond(reply: Reply, usage: &str) -> Response {
    let mut response = match reply.body {
        Some(body) => (reply.status, axum::Json(body)).into_response(),
        None => reply.status.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(usage) {
        response.headers_mut().insert("sforce-limit-info", v);
    }
    response
}
