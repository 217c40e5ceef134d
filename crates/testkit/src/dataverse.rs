//! A Dataverse Web API (OData v4, `/api/data/v9.2/`) with its Entra ID token endpoint, in
//! memory. It does what the hub's Dataverse adapter relies on, the way Dataverse does it, and
//! refuses what Dataverse refuses with Dataverse's error bodies
//! (`{"error":{"code":"0x…","message":"…"}}`):
//!
//! - 401 without a bearer token the token endpoint issued (scope `{url}/.default`).
//! - Queries: `$select`, `$filter` (`eq`/`ne`/`gt`/`ge`/`lt`/`le`, `contains`,
//!   `startswith`, `endswith`, `and`, `or`, `not`, parentheses; strings compared without
//!   regard to case like Dataverse's collation; types checked), `$top`, `$orderby`. Unknown
//!   columns → 400 "Could not find a property named …". `+` in a query is a space.
//! - Lookups: `_x_value` properties, written only through `nav@odata.bind` to an existing
//!   record; formatted-value and `lookuplogicalname` annotations when `Prefer` asks.
//! - Writes: `POST`, `PATCH` by id (`If-Match: *` → update only, `If-None-Match: *` →
//!   create only), `PATCH` by the activity tables' alternate key (upsert), `DELETE`;
//!   `Prefer: return=representation`; unknown or mistyped columns, too long text, read-only
//!   lookups, bad binds and activity parties → 400.
//! - Impersonation: `MSCRMCallerID` (a systemuserid) or `CallerObjectId` (an Entra object
//!   id) must name a user; the write is then created by that user and on behalf of the
//!   application user, as Dataverse records it.
//! - `$batch` (multipart/mixed, change sets atomic, at most 1,000 requests,
//!   `odata.continue-on-error`).
//! - Change tracking (`Prefer: odata.track-changes`, `odata.maxpagesize`, next and delta
//!   links, `$deletedEntity`), only on tables where it is on. Delta tokens expire after
//!   `Organization.ExpireChangeTrackingInDays` (7 by default) with 400 `0x80044352`
//!   ExpiredVersionStamp; [`DataverseServer::pass_days`] moves the server's clock on.
//! - `activitypointers`: every activity, for timelines.
//!
//! Not modelled: `$expand`, `$count`, `$apply`, FetchXML, functions and actions, paging of
//! plain queries beyond `$top`, and paging of delta answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::Seen;
use crate::faults::{Faults, Verdict};
use crate::oauth::{Flavor, TokenServer};

pub const TENANT_ID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
pub const CLIENT_ID: &str = "5b1c39a6-7c5e-4d8f-9a21-0c7e3d2f1a11";
pub const CLIENT_SECRET: &str = "dataverse-test-secret";
/// The application user the client credentials act as.
pub const APP_USER_ID: &str = "a0000000-0000-4000-8000-000000000001";
/// An agent's systemuserid (Alice), for `MSCRMCallerID` and `partyid_systemuser`.
pub const AGENT_USER_ID: &str = "a0000000-0000-4000-8000-000000000002";
/// Alice's Microsoft Entra object id, for `CallerObjectId`.
pub const AGENT_OBJECT_ID: &str = "e0000000-0000-4000-8000-000000000002";
/// A second agent (Bob).
pub const OTHER_AGENT_USER_ID: &str = "a0000000-0000-4000-8000-000000000003";
/// The alternate key column of the activity tables.
pub const ACTIVITY_KEY: &str = "cxb_conversationkey";
pub const API_PATH: &str = "/api/data/v9.2";
/// Dataverse refuses larger `$batch` requests.
pub const MAX_BATCH: usize = 1000;
const MAX_PAGE: usize = 5000;

/// `Organization.ExpireChangeTrackingInDays` of a new environment: "Changes are returned if
/// the last token is within a default value of seven days. The value of the Organization
/// table ExpireChangeTrackingInDays column controls this duration and can be changed. If
/// unprocessed changes are older than the configured value, the system throws an
/// exception." (Use change tracking to synchronize data with external systems,
/// https://learn.microsoft.com/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems)
const DEFAULT_EXPIRE_CHANGE_TRACKING_IN_DAYS: i64 = 7;
/// The exception: `ExpiredVersionStamp` (0x80044352, -2147204270) in Dataverse's web service
/// error codes, "Version stamp associated with the client has expired. Please perform a
/// full sync." (https://learn.microsoft.com/power-apps/developer/data-platform/org-service/web-service-error-codes).
/// The Web API answers it as a 400 with the usual OData error body.
const EXPIRED_VERSION_STAMP: &str = "0x80044352";
/// The delta token's time part, as Dataverse writes it (`919042!08/22/2017 08:10:44`).
const DELTA_TOKEN_TIME: &str = "%m/%d/%Y %H:%M:%S";

const FORMATTED_VALUE: &str = "OData.Community.Display.V1.FormattedValue";
const LOOKUP_LOGICAL_NAME: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";
/// Tables that can be an activity party.
const PARTY_TABLES: &[&str] = &["contact", "account", "lead", "systemuser"];

#[derive(Clone)]
pub struct DataverseServer {
    /// The environment URL (`http://127.0.0.1:port`), as `[crm.dataverse] url`.
    pub url: String,
    /// `{url}/{TENANT_ID}/oauth2/v2.0/token`.
    pub token_url: String,
    /// `{url}/api/data/v9.2`.
    pub api_url: String,
    pub tokens: TokenServer,
    pub faults: Faults,
    inner: Arc<Mutex<Shared>>,
}

struct Shared {
    db: Db,
    seen: Vec<Seen>,
    batches: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Type {
    Text(usize),
    Bool,
    Int,
    DateTime,
    Guid,
}

impl Type {
    fn edm(self) -> &'static str {
        match self {
            Type::Text(_) => "Edm.String",
            Type::Bool => "Edm.Boolean",
            Type::Int => "Edm.Int32",
            Type::DateTime => "Edm.DateTimeOffset",
            Type::Guid => "Edm.Guid",
        }
    }
}

#[derive(Clone, Debug)]
struct Column {
    ty: Type,
    /// Read-only columns are left alone when a body sets them, as Dataverse does.
    writable: bool,
}

#[derive(Clone, Debug)]
struct Lookup {
    /// `parentcustomerid`: the value property is `_parentcustomerid_value`.
    name: String,
    /// Navigation properties that set it, and the table each points to.
    navs: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct Table {
    logical: String,
    set: String,
    id_field: String,
    primary_name: String,
    columns: BTreeMap<String, Column>,
    lookups: Vec<Lookup>,
    activity: bool,
    alternate_key: Option<String>,
    change_tracking: bool,
    rows: BTreeMap<String, Row>,
}

#[derive(Clone, Debug)]
struct Row {
    fields: Map<String, Value>,
    /// `_x_value` → logical name of the table it points to.
    lookup_targets: BTreeMap<String, String>,
    parties: Vec<Party>,
    version: u64,
    seq: u64,
}

#[derive(Clone, Debug)]
struct Party {
    mask: i64,
    entity: String,
    id: String,
}

#[derive(Clone)]
struct Db {
    tables: BTreeMap<String, Table>,
    version: u64,
    seq: u64,
    /// (entity set, id, version) of deleted records, for delta links.
    tombstones: Vec<(String, String, u64)>,
    /// `Organization.ExpireChangeTrackingInDays`.
    expire_change_tracking_in_days: i64,
    /// How far the server's clock is ahead of the real one (tests pass days in a moment).
    clock_ahead: jiff::SignedDuration,
}

/// One request, from the wire or from a `$batch` part.
struct Req {
    method: String,
    /// Path and query, percent-encoded.
    target: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer, before it becomes an HTTP response or a `$batch` part.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

type Answer = Result<Resp, Resp>;

impl Resp {
    fn json(status: u16, v: Value) -> Self {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json; odata.metadata=minimal".into()), ("OData-Version".into(), "4.0".into())],
            body: v.to_string(),
        }
    }
    fn empty(status: u16) -> Self {
        Resp { status, headers: vec![("OData-Version".into(), "4.0".into())], body: String::new() }
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn into_response(self) -> Response {
        let mut r = (StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), self.body).into_response();
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// Dataverse's error body.
fn error(status: u16, code: &str, message: impl Into<String>) -> Resp {
    Resp::json(status, json!({"error": {"code": code, "message": message.into()}}))
}

fn syntax(message: impl Into<String>) -> Resp {
    error(400, "0x80060888", message)
}

fn payload_error(set: &str, inner: impl std::fmt::Display) -> Resp {
    error(
        400,
        "0x80048d19",
        format!(
            "Error identified in Payload provided by the user for Entity :'{set}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: {inner}"
        ),
    )
}

fn does_not_exist(logical: &str, id: &str) -> Resp {
    error(404, "0x80040217", format!("Entity '{logical}' With Id = {id} Does Not Exist"))
}

fn not_found_segment(segment: &str) -> Resp {
    error(404, "0x80060888", format!("Resource not found for the segment '{segment}'."))
}

impl DataverseServer {
    /// The connection settings of a hub's `[crm.dataverse]` section pointing at this server
    /// (URL, tenant, client, secret, token URL), one `key = "value"` per line.
    pub fn connection_toml(&self) -> String {
        format!(
            "url = \"{}\"\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\ntoken_url = \"{}\"\n",
            self.url, self.token_url
        )
    }

    /// Starts a server on a free loopback port with the standard tables, two agents and the
    /// application user.
    pub async fn start() -> std::io::Result<DataverseServer> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let tokens = TokenServer::new(Flavor::Entra, CLIENT_ID, CLIENT_SECRET, Some(&format!("{url}/.default")));
        let token_path = format!("/{TENANT_ID}/oauth2/v2.0/token");
        let server = DataverseServer {
            token_url: format!("{url}{token_path}"),
            api_url: format!("{url}{API_PATH}"),
            url,
            tokens: tokens.clone(),
            faults: Faults::default(),
            inner: Arc::new(Mutex::new(Shared { db: Db::standard(), seen: vec![], batches: 0 })),
        };
        let router = tokens
            .router(&token_path)
            .merge(Router::new().fallback(serve_api).with_state(server.clone()))
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(server)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests to the Web API so far (token requests not included), in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.shared().seen.clear();
    }

    /// `$batch` requests served.
    pub fn batches(&self) -> u64 {
        self.shared().batches
    }

    /// Adds a record as an admin or an import would (no impersonation, no bind syntax):
    /// columns by name, lookups as `_x_value` with the id of an existing record. Returns
    /// its id. Panics on what Dataverse would refuse: this is test setup.
    pub fn insert(&self, collection: &str, record: Value) -> String {
        let mut sh = self.shared();
        let db = &mut sh.db;
        let obj = record.as_object().cloned().unwrap_or_else(|| panic!("insert into {collection}: not a JSON object"));
        let id_field = db.table(collection).id_field.clone();
        let id = match obj.get(&id_field).and_then(Value::as_str) {
            Some(id) => id.to_ascii_lowercase(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let pending = db.direct(collection, &obj, true).unwrap_or_else(|e| panic!("insert into {collection}: {}", e.body));
        db.commit(collection, &id, pending, true, None);
        id
    }

    /// Changes columns of a record as an admin would (see [`DataverseServer::insert`]).
    pub fn update(&self, collection: &str, id: &str, changes: Value) {
        let mut sh = self.shared();
        let db = &mut sh.db;
        let obj = changes.as_object().cloned().unwrap_or_else(|| panic!("update of {collection}: not a JSON object"));
        assert!(db.table(collection).rows.contains_key(&id.to_ascii_lowercase()), "update of {collection}: no record {id}");
        let pending = db.direct(collection, &obj, false).unwrap_or_else(|e| panic!("update of {collection}: {}", e.body));
        db.commit(collection, &id.to_ascii_lowercase(), pending, false, None);
    }

    /// Deletes a record; delta links report it as a `$deletedEntity`.
    pub fn delete(&self, collection: &str, id: &str) -> bool {
        self.shared().db.delete(collection, &id.to_ascii_lowercase())
    }

    /// Records of a table as stored (columns and `_x_value` lookups), oldest first.
    pub fn records(&self, collection: &str) -> Vec<Value> {
        let sh = self.shared();
        let mut rows: Vec<&Row> = sh.db.table(collection).rows.values().collect();
        rows.sort_by_key(|r| r.seq);
        rows.into_iter().map(|r| Value::Object(r.fields.clone())).collect()
    }

    /// One record as stored.
    pub fn record(&self, collection: &str, id: &str) -> Option<Value> {
        self.shared().db.table(collection).rows.get(&id.to_ascii_lowercase()).map(|r| Value::Object(r.fields.clone()))
    }

    /// Every activity (phone calls, tasks, appointments, e-mails), oldest first, as stored:
    /// columns, `_regardingobjectid_value` with its `lookuplogicalname`, who created it and
    /// on whose behalf, and its parties as `{kind}_activity_parties`
    /// (`participationtypemask`, `_partyid_value`, `_partyid_value@…lookuplogicalname`).
    pub fn activities(&self) -> Vec<Value> {
        let sh = self.shared();
        let mut all: Vec<(&Table, &Row)> = sh.db.tables.values().filter(|t| t.activity).flat_map(|t| t.rows.values().map(move |r| (t, r))).collect();
        all.sort_by_key(|(_, r)| r.seq);
        all.into_iter()
            .map(|(t, r)| {
                let mut v = r.fields.clone();
                for (lookup, target) in &r.lookup_targets {
                    v.insert(format!("{lookup}@{LOOKUP_LOGICAL_NAME}"), Value::String(target.clone()));
                }
                let parties: Vec<Value> = r
                    .parties
                    .iter()
                    .map(|p| {
                        json!({
                            "participationtypemask": p.mask,
                            "_partyid_value": p.id,
                            format!("_partyid_value@{LOOKUP_LOGICAL_NAME}"): p.entity,
                        })
                    })
                    .collect();
                v.insert(format!("{}_activity_parties", t.logical), Value::Array(parties));
                Value::Object(v)
            })
            .collect()
    }

    /// Adds a text column (4,000 characters) to a table, as an admin adding a custom column.
    pub fn add_column(&self, collection: &str, name: &str) {
        self.shared().db.table_mut(collection).columns.insert(name.into(), Column { ty: Type::Text(4000), writable: true });
    }

    /// Turns "Track changes" on or off for a table (on for contacts, accounts and leads).
    pub fn set_change_tracking(&self, collection: &str, on: bool) {
        self.shared().db.table_mut(collection).change_tracking = on;
    }

    /// Sets `Organization.ExpireChangeTrackingInDays`: how old a delta token may be.
    pub fn set_expire_change_tracking_in_days(&self, days: u32) {
        self.shared().db.expire_change_tracking_in_days = i64::from(days);
    }

    /// Moves the server's clock `days` ahead, as if the hub had been offline that long:
    /// delta tokens issued before then grow old (and expire past
    /// `ExpireChangeTrackingInDays`).
    pub fn pass_days(&self, days: u32) {
        let mut sh = self.shared();
        sh.db.clock_ahead = sh.db.clock_ahead.saturating_add(jiff::SignedDuration::from_hours(24 * i64::from(days)));
    }
}

async fn serve_api(State(s): State<DataverseServer>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let target = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| uri.path().to_string());
    let req = Req {
        method: method.as_str().to_string(),
        target,
        headers: headers.iter().map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    s.shared().seen.push(Seen { method: req.method.clone(), target: req.target.clone(), headers: req.headers.clone(), body: req.body.clone() });
    if !s.tokens.authorized(&headers) {
        let challenge = format!("Bearer authorization_uri=https://login.microsoftonline.com/{TENANT_ID}/oauth2/authorize, resource_id={}/", s.url);
        return Resp { status: 401, headers: vec![("WWW-Authenticate".into(), challenge)], body: String::new() }.into_response();
    }
    if let Verdict::Fail(r) = s.faults.check().await {
        return r;
    }
    let path = req.target.split('?').next().unwrap_or_default();
    if req.method == "POST" && path == format!("{API_PATH}/$batch") {
        return s.batch(&req).into_response();
    }
    let resp = {
        let mut sh = s.shared();
        sh.db.handle(&s.api_url, &req)
    };
    if resp.ok() && is_write(&req.method)
        && let Some(lost) = s.faults.answer_lost()
    {
        return lost;
    }
    resp.into_response()
}

fn is_write(method: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "PUT" | "DELETE")
}

/// A `$batch` entry: one request, or a change set (all or nothing).
enum BatchItem {
    One(Req),
    ChangeSet(Vec<Req>),
}

impl DataverseServer {
    fn batch(&self, req: &Req) -> Resp {
        let content_type = req.header("content-type").unwrap_or_default().to_string();
        let Some(boundary) = boundary_of(&content_type).filter(|_| content_type.to_ascii_lowercase().starts_with("multipart/mixed")) else {
            return syntax("The batch request must have a Content-Type of multipart/mixed with a boundary.");
        };
        let items = match parse_batch(&req.body, &boundary, req) {
            Ok(items) => items,
            Err(e) => return e,
        };
        let count: usize = items.iter().map(|i| if let BatchItem::ChangeSet(rs) = i { rs.len() } else { 1 }).sum();
        if count > MAX_BATCH {
            return error(400, "0x8006088b", format!("The number of requests in the batch, {count}, exceeds the maximum of {MAX_BATCH}."));
        }
        let continue_on_error = prefer(&req.headers).continue_on_error;
        let out_boundary = format!("batchresponse_{}", uuid::Uuid::new_v4());
        let mut out = String::new();
        {
            let mut sh = self.shared();
            sh.batches += 1;
            for item in items {
                let failed = match item {
                    BatchItem::One(r) => {
                        let mut resp = sh.db.handle(&self.api_url, &r);
                        if resp.ok() && is_write(&r.method) && self.faults.answer_lost().is_some() {
                            resp = error(503, "0x80040216", "The service is temporarily unavailable.");
                        }
                        let failed = !resp.ok();
                        out.push_str(&http_part(&out_boundary, &resp));
                        failed
                    }
                    BatchItem::ChangeSet(rs) => {
                        let before = sh.db.clone();
                        let mut answers = vec![];
                        let mut failure = None;
                        for r in &rs {
                            let resp = sh.db.handle(&self.api_url, r);
                            if !resp.ok() {
                                failure = Some(resp);
                                break;
                            }
                            answers.push(resp);
                        }
                        match failure {
                            Some(resp) => {
                                sh.db = before;
                                out.push_str(&http_part(&out_boundary, &resp));
                                true
                            }
                            None => {
                                let cs = format!("changesetresponse_{}", uuid::Uuid::new_v4());
                                out.push_str(&format!("--{out_boundary}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n"));
                                for a in &answers {
                                    out.push_str(&http_part(&cs, a));
                                }
                                out.push_str(&format!("--{cs}--\r\n"));
                                false
                            }
                        }
                    }
                };
                if failed && !continue_on_error {
                    break;
                }
            }
        }
        out.push_str(&format!("--{out_boundary}--\r\n"));
        Resp { status: 200, headers: vec![("Content-Type".into(), format!("multipart/mixed; boundary={out_boundary}")), ("OData-Version".into(), "4.0".into())], body: out }
    }
}

fn http_part(boundary: &str, r: &Resp) -> String {
    let reason = StatusCode::from_u16(r.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut s = format!("--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {} {reason}\r\n", r.status);
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("\r\n{}\r\n", r.body));
    s
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, Resp> {
    let delimiter = format!("--{boundary}");
    let Some(start) = body.find(&delimiter) else { return Err(syntax(format!("The batch body holds no part delimited by '{delimiter}'."))) };
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = vec![];
    loop {
        if rest.starts_with("--") {
            return Ok(parts);
        }
        let Some(end) = rest.find(&delimiter) else { return Err(syntax(format!("The batch body is not closed by '{delimiter}--'."))) };
        let part = &rest[..end];
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n')).unwrap_or(part);
        let part = part.strip_suffix("\r\n").or_else(|| part.strip_suffix('\n')).unwrap_or(part);
        parts.push(part);
        rest = &rest[end + delimiter.len()..];
    }
}

fn split_head(s: &str) -> (&str, &str) {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    let at = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match at {
        Some((i, n)) => (&s[..i], &s[i + n..]),
        None => (s, ""),
    }
}

fn head_headers(head: &str) -> Vec<(String, String)> {
    head.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect()
}

fn parse_batch(body: &str, boundary: &str, outer: &Req) -> Result<Vec<BatchItem>, Resp> {
    let mut items = vec![];
    for part in multipart_parts(body, boundary)? {
        let (head, content) = split_head(part);
        let headers = head_headers(head);
        let ct = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
        if ct.to_ascii_lowercase().starts_with("multipart/mixed") {
            let cs = boundary_of(&ct).ok_or_else(|| syntax("A change set has no boundary."))?;
            let mut reqs = vec![];
            for p in multipart_parts(content, &cs)? {
                let (h, c) = split_head(p);
                let hs = head_headers(h);
                if !hs.iter().any(|(k, v)| k == "content-type" && v.to_ascii_lowercase().starts_with("application/http")) {
                    return Err(syntax("Each change set part must have Content-Type: application/http."));
                }
                let r = parse_part_request(c, outer)?;
                if r.method == "GET" {
                    return Err(syntax("GET requests are not allowed in a change set."));
                }
                reqs.push(r);
            }
            items.push(BatchItem::ChangeSet(reqs));
        } else if ct.to_ascii_lowercase().starts_with("application/http") {
            items.push(BatchItem::One(parse_part_request(content, outer)?));
        } else {
            return Err(syntax(format!("A batch part has Content-Type '{ct}'; expected application/http or multipart/mixed.")));
        }
    }
    Ok(items)
}

/// A request inside a part. Its URL may be absolute, an absolute path or relative to the
/// service root; impersonation headers of the `$batch` apply unless the part has its own.
fn parse_part_request(content: &str, outer: &Req) -> Result<Req, Resp> {
    let (head, body) = split_head(content);
    let mut lines = head.lines();
    let line = lines.next().unwrap_or_default().trim();
    let mut words = line.split_whitespace();
    let (Some(method), Some(url), Some(version)) = (words.next(), words.next(), words.next()) else {
        return Err(syntax(format!("Invalid request line in a batch part: '{line}'.")));
    };
    if !version.starts_with("HTTP/") {
        return Err(syntax(format!("Invalid request line in a batch part: '{line}'.")));
    }
    let target = if let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
        rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string())
    } else if url.starts_with('/') {
        url.to_string()
    } else {
        format!("{API_PATH}/{url}")
    };
    let mut headers = head_headers(&lines.collect::<Vec<_>>().join("\n"));
    for name in ["mscrmcallerid", "callerobjectid"] {
        if !headers.iter().any(|(k, _)| k == name)
            && let Some(v) = outer.header(name)
        {
            headers.push((name.into(), v.to_string()));
        }
    }
    Ok(Req { method: method.to_ascii_uppercase(), target, headers, body: body.trim_end_matches(['\r', '\n']).to_string() })
}

/// What a `Prefer` header asks for.
#[derive(Default)]
struct Prefer {
    track_changes: bool,
    maxpagesize: Option<usize>,
    representation: bool,
    continue_on_error: bool,
    annotations: Vec<String>,
}

impl Prefer {
    fn wants(&self, annotation: &str) -> bool {
        self.annotations.iter().any(|p| p == "*" || p == annotation || p.strip_suffix('*').is_some_and(|prefix| annotation.starts_with(prefix)))
    }
}

fn prefer(headers: &[(String, String)]) -> Prefer {
    let mut p = Prefer::default();
    for (_, value) in headers.iter().filter(|(k, _)| k == "prefer") {
        // Split at commas outside quotes.
        let mut items = vec![];
        let (mut cur, mut quoted) = (String::new(), false);
        for c in value.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ',' if !quoted => items.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        items.push(cur);
        for item in items {
            let item = item.trim();
            let (k, v) = item.split_once('=').map_or((item, ""), |(k, v)| (k.trim(), v.trim().trim_matches('"')));
            match k.to_ascii_lowercase().as_str() {
                "odata.track-changes" => p.track_changes = true,
                "odata.maxpagesize" => p.maxpagesize = v.parse().ok(),
                "return" => p.representation = v == "representation",
                "odata.continue-on-error" => p.continue_on_error = true,
                "odata.include-annotations" => p.annotations.extend(v.split(',').map(|s| s.trim().to_string())),
                _ => {}
            }
        }
    }
    p
}

fn pct_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~$,():@/*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn is_guid(s: &str) -> bool {
    s.len() == 36 && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn entity_set(logical: &str) -> String {
    if logical.ends_with('y') && !logical.ends_with("ay") && !logical.ends_with("ey") {
        format!("{}ies", &logical[..logical.len() - 1])
    } else if logical.ends_with('s') || logical.ends_with('x') {
        format!("{logical}es")
    } else {
        format!("{logical}s")
    }
}

/// The system query options of a request.
#[derive(Default)]
struct Query {
    select: Option<Vec<String>>,
    filter: Option<String>,
    top: Option<usize>,
    orderby: Option<String>,
    skiptoken: Option<String>,
    deltatoken: Option<String>,
}

fn parse_query(raw: &str) -> Result<Query, Resp> {
    let mut q = Query::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (pct_decode(k, true), pct_decode(v, true));
        match k.as_str() {
            "$select" => q.select = Some(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
            "$filter" => q.filter = Some(v),
            "$top" => q.top = Some(v.trim().parse().map_err(|_| syntax(format!("Invalid value '{v}' for $top query option found. The $top query option requires a non-negative integer value.")))?),
            "$orderby" => q.orderby = Some(v),
            "$skiptoken" => q.skiptoken = Some(v),
            "$deltatoken" => q.deltatoken = Some(v),
            other if other.starts_with('$') => {
                return Err(syntax(format!("The query parameter {other} is not supported by this test server (or not by Dataverse).")));
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The resource a path names: an entity set, optionally with a key.
enum Key {
    Id(String),
    Alternate(Vec<(String, String)>),
}

fn parse_segment(resource: &str) -> Result<(String, Option<Key>), Resp> {
    let Some(open) = resource.find('(') else { return Ok((resource.to_string(), None)) };
    let set = resource[..open].to_string();
    let inner = resource[open + 1..].strip_suffix(')').ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
    if is_guid(inner) {
        return Ok((set, Some(Key::Id(inner.to_ascii_lowercase()))));
    }
    let mut pairs = vec![];
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|(_, c)| *c) == Some('\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        pairs.push((name.trim().to_string(), value));
        rest = tail.trim_start().strip_prefix(',').unwrap_or(tail.trim_start());
    }
    Ok((set, Some(Key::Alternate(pairs))))
}

/// Writes of one request, checked, not yet applied.
#[derive(Default)]
struct Pending {
    fields: Map<String, Value>,
    lookup_targets: BTreeMap<String, String>,
    parties: Option<Vec<Party>>,
}

impl Db {
    fn standard() -> Db {
        let mut db = Db {
            tables: BTreeMap::new(),
            version: 0,
            seq: 0,
            tombstones: vec![],
            expire_change_tracking_in_days: DEFAULT_EXPIRE_CHANGE_TRACKING_IN_DAYS,
            clock_ahead: jiff::SignedDuration::ZERO,
        };
        let text = |n: usize| Column { ty: Type::Text(n), writable: true };
        let ro = |ty: Type| Column { ty, writable: false };
        let lookup = |name: &str, navs: &[(&str, &str)]| Lookup { name: name.into(), navs: navs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect() };
        let table = |logical: &str, id: &str, primary: &str, cols: Vec<(&str, Column)>, mut lookups: Vec<Lookup>| {
            let mut columns: BTreeMap<String, Column> = cols.into_iter().map(|(k, c)| (k.to_string(), c)).collect();
            columns.insert(id.into(), Column { ty: Type::Guid, writable: true });
            columns.insert("createdon".into(), ro(Type::DateTime));
            columns.insert("modifiedon".into(), ro(Type::DateTime));
            columns.insert("versionnumber".into(), ro(Type::Int));
            columns.insert("statecode".into(), Column { ty: Type::Int, writable: true });
            lookups.push(lookup("ownerid", &[("ownerid", "systemuser")]));
            for system in ["createdby", "modifiedby", "createdonbehalfby", "modifiedonbehalfby"] {
                lookups.push(lookup(system, &[]));
            }
            for l in &lookups {
                columns.insert(format!("_{}_value", l.name), ro(Type::Guid));
            }
            Table {
                logical: logical.into(),
                set: entity_set(logical),
                id_field: id.into(),
                primary_name: primary.into(),
                columns,
                lookups,
                activity: false,
                alternate_key: None,
                change_tracking: true,
                rows: BTreeMap::new(),
            }
        };
        let person = |extra: Vec<(&'static str, Column)>| {
            let mut cols = vec![
                ("fullname", ro(Type::Text(160))),
                ("firstname", text(50)),
                ("lastname", text(50)),
                ("telephone1", text(50)),
                ("telephone2", text(50)),
                ("telephone3", text(50)),
                ("mobilephone", text(50)),
                ("emailaddress1", text(100)),
                ("emailaddress2", text(100)),
                ("jobtitle", text(100)),
                ("description", text(2000)),
            ];
            cols.extend(extra);
            cols
        };
        db.add(table("contact", "contactid", "fullname", person(vec![]), vec![lookup("parentcustomerid", &[("parentcustomerid_account", "account"), ("parentcustomerid_contact", "contact")])]));
        db.add(table(
            "account",
            "accountid",
            "name",
            vec![
                ("name", text(160)),
                ("accountnumber", text(20)),
                ("telephone1", text(50)),
                ("telephone2", text(50)),
                ("telephone3", text(50)),
                ("emailaddress1", text(100)),
                ("websiteurl", text(200)),
                ("description", text(2000)),
            ],
            vec![lookup("primarycontactid", &[("primarycontactid", "contact")]), lookup("parentaccountid", &[("parentaccountid", "account")])],
        ));
        db.add(table("lead", "leadid", "fullname", person(vec![("companyname", text(100)), ("subject", text(300))]), vec![]));
        let mut users = table(
            "systemuser",
            "systemuserid",
            "fullname",
            vec![("fullname", text(200)), ("internalemailaddress", text(100)), ("azureactivedirectoryobjectid", Column { ty: Type::Guid, writable: true })],
            vec![],
        );
        users.change_tracking = false;
        db.add(users);
        for (logical, extra) in [
            ("phonecall", vec![("phonenumber", text(200)), ("directioncode", Column { ty: Type::Bool, writable: true }), ("leftvoicemail", Column { ty: Type::Bool, writable: true })]),
            ("task", vec![("percentcomplete", Column { ty: Type::Int, writable: true })]),
            ("appointment", vec![("location", text(200))]),
            ("email", vec![("directioncode", Column { ty: Type::Bool, writable: true })]),
        ] {
            let mut cols = vec![
                ("subject", text(if logical == "email" { 800 } else { 200 })),
                ("description", text(if logical == "email" { 1_048_576 } else { 2000 })),
                ("scheduledstart", Column { ty: Type::DateTime, writable: true }),
                ("scheduledend", Column { ty: Type::DateTime, writable: true }),
                ("actualstart", Column { ty: Type::DateTime, writable: true }),
                ("actualend", Column { ty: Type::DateTime, writable: true }),
                ("actualdurationminutes", Column { ty: Type::Int, writable: true }),
                ("activitytypecode", ro(Type::Text(64))),
                (ACTIVITY_KEY, text(100)),
            ];
            cols.extend(extra);
            let navs: Vec<(String, String)> = ["contact", "account", "lead"].iter().map(|e| (format!("regardingobjectid_{e}_{logical}"), e.to_string())).collect();
            let regarding = Lookup { name: "regardingobjectid".into(), navs };
            let mut t = table(logical, "activityid", "subject", cols, vec![regarding]);
            t.activity = true;
            t.alternate_key = Some(ACTIVITY_KEY.into());
            t.change_tracking = false;
            db.add(t);
        }
        for (id, name, object_id) in [
            (APP_USER_ID, "# cxbridge", "e0000000-0000-4000-8000-000000000001"),
            (AGENT_USER_ID, "Alice Agent", AGENT_OBJECT_ID),
            (OTHER_AGENT_USER_ID, "Bob Agent", "e0000000-0000-4000-8000-000000000003"),
        ] {
            let mut p = Pending::default();
            p.fields.insert("fullname".into(), json!(name));
            p.fields.insert("azureactivedirectoryobjectid".into(), json!(object_id));
            db.commit("systemusers", id, p, true, None);
        }
        db
    }

    fn add(&mut self, t: Table) {
        self.tables.insert(t.set.clone(), t);
    }

    /// The server's time: the real one, moved on by [`DataverseServer::pass_days`].
    fn clock(&self) -> jiff::Timestamp {
        jiff::Timestamp::now().checked_add(self.clock_ahead).unwrap_or_else(|_| jiff::Timestamp::now())
    }

    fn table(&self, set: &str) -> &Table {
        self.tables.get(set).unwrap_or_else(|| panic!("the Dataverse test server has no entity set `{set}`"))
    }

    fn table_mut(&mut self, set: &str) -> &mut Table {
        self.tables.get_mut(set).unwrap_or_else(|| panic!("the Dataverse test server has no entity set `{set}`"))
    }

    fn by_logical(&self, logical: &str) -> Option<&Table> {
        self.tables.values().find(|t| t.logical == logical)
    }

    fn exists(&self, logical: &str, id: &str) -> bool {
        self.by_logical(logical).is_some_and(|t| t.rows.contains_key(&id.to_ascii_lowercase()))
    }

    /// `_x_value` for records inserted directly: finds which table the id belongs to.
    fn direct(&self, set: &str, obj: &Map<String, Value>, creating: bool) -> Result<Pending, Resp> {
        let t = self.table(set);
        let mut p = Pending::default();
        for (k, v) in obj {
            if let Some(l) = t.lookups.iter().find(|l| format!("_{}_value", l.name) == *k) {
                let id = v.as_str().map(str::to_ascii_lowercase).ok_or_else(|| syntax(format!("{k} must be a GUID string")))?;
                // System lookups (createdby, …) have no navigation property and point to users.
                let targets: Vec<String> = if l.navs.is_empty() { vec!["systemuser".into()] } else { l.navs.iter().map(|(_, e)| e.clone()).collect() };
                let target = targets.into_iter().find(|e| self.exists(e, &id)).ok_or_else(|| syntax(format!("{k}: no record {id} among {:?}", l.navs)))?;
                p.fields.insert(k.clone(), Value::String(id));
                p.lookup_targets.insert(k.clone(), target);
                continue;
            }
            let col = t.columns.get(k).ok_or_else(|| syntax(format!("no column `{k}` on {}; add it with add_column", t.logical)))?;
            if *k == t.id_field && !creating {
                continue;
            }
            check_value(t, k, col.ty, v)?;
            p.fields.insert(k.clone(), v.clone());
        }
        Ok(p)
    }

    /// Checks a request body against the table: the writes it asks for, or Dataverse's refusal.
    fn prepare(&self, api_url: &str, set: &str, body: &Map<String, Value>, creating: bool) -> Result<Pending, Resp> {
        let t = self.table(set);
        let mut p = Pending::default();
        let parties_property = format!("{}_activity_parties", t.logical);
        for (k, v) in body {
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let Some((lookup, target)) = t.lookups.iter().find_map(|l| l.navs.iter().find(|(n, _)| n == nav).map(|(_, e)| (l, e))) else {
                    return Err(error(
                        400,
                        "0x80060888",
                        format!(
                            "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                        ),
                    ));
                };
                let value_property = format!("_{}_value", lookup.name);
                if v.is_null() {
                    p.fields.insert(value_property, Value::Null);
                    continue;
                }
                let id = self.bind_target(api_url, set, nav, v, target)?;
                p.fields.insert(value_property.clone(), Value::String(id));
                p.lookup_targets.insert(value_property, target.clone());
                continue;
            }
            if t.activity && *k == parties_property {
                p.parties = Some(self.parties(api_url, set, v)?);
                continue;
            }
            if k.contains('@') {
                return Err(payload_error(set, format!("The annotation '{k}' is not supported here.")));
            }
            let Some(col) = t.columns.get(k) else {
                return Err(payload_error(
                    set,
                    format!("The property '{k}' does not exist on type 'Microsoft.Dynamics.CRM.{}'. Make sure to only use property names that are defined by the type or mark the type as open type.", t.logical),
                ));
            };
            if k.starts_with('_') && k.ends_with("_value") {
                return Err(error(400, "0x80048d19", "CRM do not support direct update of Entity Reference properties, Use Navigation properties instead."));
            }
            if *k == t.id_field {
                if creating && v.as_str().is_some_and(is_guid) {
                    continue; // The id of a record created with a chosen id; the caller handles it.
                }
                return Err(payload_error(set, format!("The key property '{k}' cannot be changed.")));
            }
            if !col.writable {
                continue; // Read-only columns in a body are ignored.
            }
            check_value(t, k, col.ty, v)?;
            p.fields.insert(k.clone(), v.clone());
        }
        Ok(p)
    }

    /// The id an `@odata.bind` value points to, if well-formed, of the right table and existing.
    fn bind_target(&self, api_url: &str, set: &str, nav: &str, v: &Value, target_logical: &str) -> Result<String, Resp> {
        let bad = || payload_error(set, format!("The value '{v}' of the 'odata.bind' annotation of '{nav}' is not a valid entity reference; expected '/{}(<guid>)'.", entity_set(target_logical)));
        let s = v.as_str().ok_or_else(bad)?;
        let rel = s.strip_prefix(api_url).or_else(|| s.strip_prefix(API_PATH)).unwrap_or(s);
        let rel = rel.strip_prefix('/').unwrap_or(rel);
        let open = rel.find('(').ok_or_else(bad)?;
        let (bind_set, id) = (&rel[..open], rel[open + 1..].strip_suffix(')').ok_or_else(bad)?);
        if !is_guid(id) {
            return Err(bad());
        }
        let Some(target) = self.by_logical(target_logical) else { return Err(bad()) };
        if bind_set != target.set {
            return Err(bad());
        }
        let id = id.to_ascii_lowercase();
        if !target.rows.contains_key(&id) {
            return Err(error(400, "0x80040217", format!("Entity '{target_logical}' With Id = {id} Does Not Exist")));
        }
        Ok(id)
    }

    fn parties(&self, api_url: &str, set: &str, v: &Value) -> Result<Vec<Party>, Resp> {
        let items = v.as_array().ok_or_else(|| payload_error(set, "An activity party list must be a JSON array."))?;
        let mut out = vec![];
        for item in items {
            let obj = item.as_object().ok_or_else(|| payload_error(set, "An activity party must be a JSON object."))?;
            let mut mask = None;
            let mut party = None;
            for (k, v) in obj {
                if k == "participationtypemask" {
                    mask = Some(v.as_i64().filter(|m| (1..=11).contains(m)).ok_or_else(|| payload_error(set, format!("participationtypemask {v} is not a valid participation type (1 to 11).")))?);
                } else if k == "addressused" {
                    if !v.is_string() {
                        return Err(payload_error(set, "addressused must be a string."));
                    }
                } else if let Some(entity) = k.strip_prefix("partyid_").and_then(|e| e.strip_suffix("@odata.bind")) {
                    if !PARTY_TABLES.contains(&entity) {
                        return Err(payload_error(set, format!("'partyid_{entity}' is not a navigation property of 'Microsoft.Dynamics.CRM.activityparty'.")));
                    }
                    if party.is_some() {
                        return Err(payload_error(set, "An activity party can name only one party."));
                    }
                    let id = self.bind_target(api_url, set, &format!("partyid_{entity}"), v, entity)?;
                    party = Some((entity.to_string(), id));
                } else {
                    return Err(payload_error(set, format!("The property '{k}' does not exist on type 'Microsoft.Dynamics.CRM.activityparty'.")));
                }
            }
            let mask = mask.ok_or_else(|| payload_error(set, "An activity party needs a participationtypemask."))?;
            let (entity, id) = party.ok_or_else(|| payload_error(set, "An activity party needs a partyid_<table>@odata.bind."))?;
            out.push(Party { mask, entity, id });
        }
        Ok(out)
    }

    /// Applies checked writes. `acting` is the impersonated user, if any.
    fn commit(&mut self, set: &str, id: &str, p: Pending, creating: bool, acting: Option<&str>) {
        self.version += 1;
        self.seq += 1;
        let (version, seq, stamp) = (self.version, self.seq, now());
        let t = self.table_mut(set);
        let (logical, id_field, activity) = (t.logical.clone(), t.id_field.clone(), t.activity);
        let row = t.rows.entry(id.to_string()).or_insert_with(|| Row { fields: Map::new(), lookup_targets: BTreeMap::new(), parties: vec![], version, seq });
        let user = acting.unwrap_or(APP_USER_ID).to_string();
        let set_lookup = |row: &mut Row, name: &str, id: &str, target: &str| {
            row.fields.insert(format!("_{name}_value"), Value::String(id.into()));
            row.lookup_targets.insert(format!("_{name}_value"), target.into());
        };
        if creating {
            row.fields.insert(id_field, Value::String(id.into()));
            row.fields.insert("createdon".into(), Value::String(stamp.clone()));
            set_lookup(row, "createdby", &user, "systemuser");
            if !row.fields.contains_key("_ownerid_value") {
                set_lookup(row, "ownerid", &user, "systemuser");
            }
            if acting.is_some() {
                set_lookup(row, "createdonbehalfby", APP_USER_ID, "systemuser");
            }
            if activity {
                row.fields.insert("activitytypecode".into(), Value::String(logical.clone()));
            }
        }
        set_lookup(row, "modifiedby", &user, "systemuser");
        if acting.is_some() {
            set_lookup(row, "modifiedonbehalfby", APP_USER_ID, "systemuser");
        }
        for (k, v) in p.fields {
            if v.is_null() {
                row.lookup_targets.remove(&k);
            }
            row.fields.insert(k, v);
        }
        row.lookup_targets.extend(p.lookup_targets);
        if let Some(parties) = p.parties {
            row.parties = parties;
        }
        // Dataverse composes a person's full name from its parts.
        if logical == "contact" || logical == "lead" {
            let part = |k: &str| row.fields.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
            let name: Vec<String> = [part("firstname"), part("lastname")].into_iter().flatten().collect();
            if !name.is_empty() {
                row.fields.insert("fullname".into(), Value::String(name.join(" ")));
            }
        }
        row.fields.insert("modifiedon".into(), Value::String(stamp));
        row.fields.insert("versionnumber".into(), Value::from(version));
        row.version = version;
    }

    fn delete(&mut self, set: &str, id: &str) -> bool {
        self.version += 1;
        let version = self.version;
        let removed = self.table_mut(set).rows.remove(id).is_some();
        if removed {
            self.tombstones.push((set.to_string(), id.to_string(), version));
        }
        removed
    }

    /// The user a request acts as when it impersonates one.
    fn acting_user(&self, req: &Req) -> Result<Option<String>, Resp> {
        let users = self.table("systemusers");
        if let Some(id) = req.header("mscrmcallerid") {
            let id = id.trim().to_ascii_lowercase();
            return if users.rows.contains_key(&id) { Ok(Some(id)) } else { Err(does_not_exist("systemuser", &id)) };
        }
        if let Some(object_id) = req.header("callerobjectid") {
            let object_id = object_id.trim().to_ascii_lowercase();
            return users
                .rows
                .iter()
                .find(|(_, r)| r.fields.get("azureactivedirectoryobjectid").and_then(Value::as_str) == Some(object_id.as_str()))
                .map(|(id, _)| Some(id.clone()))
                .ok_or_else(|| error(403, "0x80072560", format!("The user with Microsoft Entra object id {object_id} is not a member of the organization.")));
        }
        Ok(None)
    }

    fn handle(&mut self, api_url: &str, req: &Req) -> Resp {
        self.route(api_url, req).unwrap_or_else(|e| e)
    }

    fn route(&mut self, api_url: &str, req: &Req) -> Answer {
        let (raw_path, raw_query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let path = pct_decode(raw_path, false);
        let Some(rest) = path.strip_prefix("/api/data/") else { return Err(error(404, "0x80060888", format!("No resource at '{path}'."))) };
        let (version, resource) = rest.split_once('/').unwrap_or((rest, ""));
        if version != "v9.2" {
            return Err(not_found_segment(version));
        }
        let q = parse_query(raw_query)?;
        let pref = prefer(&req.headers);
        let (set, key) = parse_segment(resource)?;
        if set == "activitypointers" {
            if req.method != "GET" || key.is_some() {
                return Err(error(405, "0x80060888", "activitypointers is read-only here."));
            }
            let pointers = self.pointers();
            return query_table(self, api_url, &pointers, &q, &pref);
        }
        if !self.tables.contains_key(&set) {
            return Err(not_found_segment(&set));
        }
        let id = match &key {
            None => None,
            Some(Key::Id(id)) => Some(id.clone()),
            Some(Key::Alternate(pairs)) => {
                let t = self.table(&set);
                let key_ok = pairs.len() == 1 && t.alternate_key.as_deref() == Some(pairs[0].0.as_str());
                if !key_ok {
                    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                    return Err(error(400, "0x80060888", format!("The key '{}' is not a key of the entity '{}'; its alternate keys are: {}.", names.join(","), t.logical, t.alternate_key.as_deref().unwrap_or("none"))));
                }
                let value = &pairs[0].1;
                // Dataverse cannot address a record by a key value holding these characters.
                if value.chars().any(|c| "/<>*%&:\\?+".contains(c)) {
                    return Err(error(400, "0x80060891", format!("A record with the specified key values does not exist in {} entity: key values containing / < > * % & : \\ ? + are not supported in the URL.", t.logical)));
                }
                let found = t.rows.iter().find(|(_, r)| r.fields.get(&pairs[0].0).and_then(Value::as_str) == Some(value.as_str())).map(|(id, _)| id.clone());
                match (found, req.method.as_str()) {
                    (Some(id), _) => Some(id),
                    (None, "PATCH") => None,
                    (None, _) => return Err(error(404, "0x80060891", format!("A record with the specified key values does not exist in {} entity", t.logical))),
                }
            }
        };
        match (req.method.as_str(), &key) {
            ("GET", None) => {
                let t = self.table(&set);
                if q.deltatoken.is_some() || q.skiptoken.is_some() || pref.track_changes {
                    return self.tracked(api_url, &set, &q, &pref);
                }
                query_table(self, api_url, t, &q, &pref)
            }
            ("GET", Some(_)) => {
                let t = self.table(&set);
                let id = id.unwrap_or_default();
                let row = t.rows.get(&id).ok_or_else(|| does_not_exist(&t.logical, &id))?;
                let select = checked_select(t, q.select.as_deref())?;
                let mut v = project(self, t, row, select.as_deref(), &pref);
                if let Value::Object(o) = &mut v {
                    o.insert("@odata.context".into(), Value::String(format!("{api_url}/$metadata#{set}/$entity")));
                }
                Ok(Resp::json(200, v))
            }
            ("POST", None) => {
                let body = json_body(&set, &req.body)?;
                let acting = self.acting_user(req)?;
                let p = self.prepare(api_url, &set, &body, true)?;
                let t = self.table(&set);
                let id = match body.get(&t.id_field).and_then(Value::as_str) {
                    Some(id) => id.to_ascii_lowercase(),
                    None => uuid::Uuid::new_v4().to_string(),
                };
                if t.rows.contains_key(&id) {
                    return Err(error(412, "0x80040237", "A record with matching key values already exists."));
                }
                self.commit(&set, &id, p, true, acting.as_deref());
                self.written(api_url, &set, &id, true, &q, &pref)
            }
            ("PATCH", Some(k)) => {
                let body = json_body(&set, &req.body)?;
                let acting = self.acting_user(req)?;
                let exists = id.as_ref().is_some_and(|id| self.table(&set).rows.contains_key(id));
                if req.header("if-match").is_some_and(|v| v.trim() == "*") && !exists {
                    let shown = match k {
                        Key::Id(id) => id.clone(),
                        Key::Alternate(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    };
                    return Err(does_not_exist(&self.table(&set).logical, &shown));
                }
                if req.header("if-none-match").is_some_and(|v| v.trim() == "*") && exists {
                    return Err(error(412, "0x80040237", "A record with matching key values already exists."));
                }
                let mut p = self.prepare(api_url, &set, &body, !exists)?;
                let id = match (id, k) {
                    (Some(id), _) => id,
                    (None, Key::Alternate(pairs)) => {
                        // An upsert that creates: the key column takes the URL's value.
                        p.fields.insert(pairs[0].0.clone(), Value::String(pairs[0].1.clone()));
                        uuid::Uuid::new_v4().to_string()
                    }
                    (None, Key::Id(id)) => id.clone(),
                };
                self.commit(&set, &id, p, !exists, acting.as_deref());
                self.written(api_url, &set, &id, !exists, &q, &pref)
            }
            ("DELETE", Some(_)) => {
                let id = id.unwrap_or_default();
                if !self.delete(&set, &id) {
                    return Err(does_not_exist(&self.table(&set).logical, &id));
                }
                Ok(Resp::empty(204))
            }
            (m, _) => Err(error(405, "0x80060888", format!("The HTTP method '{m}' is not allowed on '{resource}'."))),
        }
    }

    /// The answer to a write: the record (`return=representation`) or its URL.
    fn written(&self, api_url: &str, set: &str, id: &str, created: bool, q: &Query, pref: &Prefer) -> Answer {
        let entity_id = format!("{api_url}/{set}({id})");
        if !pref.representation {
            return Ok(Resp::empty(204).header("OData-EntityId", &entity_id));
        }
        let t = self.table(set);
        let select = checked_select(t, q.select.as_deref())?;
        let row = t.rows.get(id).ok_or_else(|| does_not_exist(&t.logical, id))?;
        let mut v = project(self, t, row, select.as_deref(), pref);
        if let Value::Object(o) = &mut v {
            o.insert("@odata.context".into(), Value::String(format!("{api_url}/$metadata#{set}/$entity")));
        }
        Ok(Resp::json(if created { 201 } else { 200 }, v).header("OData-EntityId", &entity_id))
    }

    /// The `activitypointer` view of every activity table.
    fn pointers(&self) -> Table {
        let keep = ["activityid", "activitytypecode", "subject", "description", "createdon", "modifiedon", "actualstart", "actualend", "actualdurationminutes", "scheduledstart", "scheduledend", "statecode", "versionnumber"];
        let lookups = ["regardingobjectid", "ownerid", "createdby", "modifiedby"];
        let mut t = Table {
            logical: "activitypointer".into(),
            set: "activitypointers".into(),
            id_field: "activityid".into(),
            primary_name: "subject".into(),
            columns: BTreeMap::new(),
            lookups: lookups.iter().map(|l| Lookup { name: l.to_string(), navs: vec![] }).collect(),
            activity: false,
            alternate_key: None,
            change_tracking: false,
            rows: BTreeMap::new(),
        };
        for source in self.tables.values().filter(|t| t.activity) {
            for (k, c) in &source.columns {
                if keep.contains(&k.as_str()) || lookups.iter().any(|l| *k == format!("_{l}_value")) {
                    t.columns.insert(k.clone(), c.clone());
                }
            }
            for (id, r) in &source.rows {
                let mut row = r.clone();
                row.fields.retain(|k, _| t.columns.contains_key(k) || keep.contains(&k.as_str()) || lookups.iter().any(|l| *k == format!("_{l}_value")));
                row.lookup_targets.retain(|k, _| row.fields.contains_key(k));
                t.rows.insert(id.clone(), row);
            }
        }
        t
    }

    /// Change tracking: a first sync paged by `odata.maxpagesize`, then deltas.
    fn tracked(&self, api_url: &str, set: &str, q: &Query, pref: &Prefer) -> Answer {
        let t = self.table(set);
        if !t.change_tracking {
            return Err(error(400, "0x80072491", format!("Entity {} isn't enabled for change tracking.", t.logical)));
        }
        if q.filter.is_some() || q.orderby.is_some() || q.top.is_some() {
            return Err(syntax("Change tracking supports $select only: $filter, $orderby and $top cannot be combined with odata.track-changes."));
        }
        let select = checked_select(t, q.select.as_deref())?;
        let select_param = q.select.as_ref().map(|s| format!("$select={}&", encode(&s.join(",")))).unwrap_or_default();
        let context = format!("{api_url}/$metadata#{set}({})/$delta", q.select.as_ref().map(|s| s.join(",")).unwrap_or_else(|| "*".into()));
        let now = self.clock();
        let delta_link = |version: u64| {
            let token = format!("{version}!{}", now.strftime(DELTA_TOKEN_TIME));
            format!("{api_url}/{set}?{select_param}$deltatoken={}", encode(&token))
        };
        if let Some(token) = &q.deltatoken {
            let invalid = || syntax(format!("The delta token '{token}' is not valid."));
            let (version, issued) = token.split_once('!').ok_or_else(invalid)?;
            let since: u64 = version.parse().map_err(|_| invalid())?;
            let issued = jiff::civil::DateTime::strptime(DELTA_TOKEN_TIME, issued)
                .ok()
                .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp())
                .ok_or_else(invalid)?;
            let max_age = jiff::SignedDuration::from_hours(24 * self.expire_change_tracking_in_days);
            if now.duration_since(issued) > max_age {
                return Err(error(400, EXPIRED_VERSION_STAMP, "Version stamp associated with the client has expired. Please perform a full sync."));
            }
            let mut changed: Vec<&Row> = t.rows.values().filter(|r| r.version > since).collect();
            changed.sort_by_key(|r| r.version);
            let mut value: Vec<Value> = changed.into_iter().map(|r| project(self, t, r, select.as_deref(), pref)).collect();
            for (s, id, v) in &self.tombstones {
                if s == set && *v > since && !t.rows.contains_key(id) {
                    value.push(json!({"@odata.context": format!("{api_url}/$metadata#{set}/$deletedEntity"), "id": id, "reason": "deleted"}));
                }
            }
            return Ok(Resp::json(200, json!({"@odata.context": context, "value": value, "@odata.deltaLink": delta_link(self.version)})));
        }
        // First sync: `$skiptoken` is "{snapshot version}.{last seq served}".
        let (snapshot, after) = match &q.skiptoken {
            Some(tok) => {
                let (v, s) = tok.split_once('.').ok_or_else(|| syntax(format!("The skip token '{tok}' is not valid.")))?;
                (v.parse::<u64>().map_err(|_| syntax("The skip token is not valid."))?, s.parse::<u64>().map_err(|_| syntax("The skip token is not valid."))?)
            }
            None => (self.version, 0),
        };
        let page = pref.maxpagesize.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let mut rows: Vec<&Row> = t.rows.values().filter(|r| r.seq > after).collect();
        rows.sort_by_key(|r| r.seq);
        let more = rows.len() > page;
        rows.truncate(page);
        let value: Vec<Value> = rows.iter().map(|r| project(self, t, r, select.as_deref(), pref)).collect();
        let mut answer = json!({"@odata.context": context, "value": value});
        if more {
            let last = rows.last().map_or(after, |r| r.seq);
            answer["@odata.nextLink"] = Value::String(format!("{api_url}/{set}?{select_param}$skiptoken={}", encode(&format!("{snapshot}.{last}"))));
        } else {
            answer["@odata.deltaLink"] = Value::String(delta_link(snapshot));
        }
        Ok(Resp::json(200, answer))
    }
}

fn json_body(set: &str, body: &str) -> Result<Map<String, Value>, Resp> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(payload_error(set, "The request body must be a JSON object.")),
        Err(e) => Err(payload_error(set, format!("The request body is not valid JSON: {e}"))),
    }
}

fn check_value(t: &Table, column: &str, ty: Type, v: &Value) -> Result<(), Resp> {
    if v.is_null() {
        return Ok(());
    }
    let convert = || payload_error(&t.set, format!("Cannot convert the literal '{}' to the expected type '{}'.", v.as_str().map_or_else(|| v.to_string(), str::to_string), ty.edm()));
    match ty {
        Type::Text(max) => {
            let s = v.as_str().ok_or_else(convert)?;
            if s.chars().count() > max {
                return Err(error(
                    400,
                    "0x80044331",
                    format!("A validation error occurred. The length of the '{column}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.", t.logical),
                ));
            }
        }
        Type::Bool => {
            v.as_bool().ok_or_else(convert)?;
        }
        Type::Int => {
            v.as_i64().filter(|n| i32::try_from(*n).is_ok()).ok_or_else(convert)?;
        }
        Type::Guid => {
            v.as_str().filter(|s| is_guid(s)).ok_or_else(convert)?;
        }
        Type::DateTime => {
            let s = v.as_str().ok_or_else(convert)?;
            // .NET reads at most 7 fractional digits.
            let fraction = s.split_once('.').map_or(0, |(_, f)| f.chars().take_while(char::is_ascii_digit).count());
            let is_date = s.len() == 10 && jiff::civil::Date::strptime("%Y-%m-%d", s).is_ok();
            if !(is_date || (s.parse::<jiff::Timestamp>().is_ok() && fraction <= 7)) {
                return Err(convert());
            }
        }
    }
    Ok(())
}

fn checked_select(t: &Table, select: Option<&[String]>) -> Result<Option<Vec<String>>, Resp> {
    let Some(cols) = select else { return Ok(None) };
    for c in cols {
        if !t.columns.contains_key(c) {
            return Err(unknown_property(t, c));
        }
    }
    Ok(Some(cols.to_vec()))
}

fn unknown_property(t: &Table, name: &str) -> Resp {
    syntax(format!("Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.", t.logical))
}

/// A row as the Web API shows it: the selected columns (all when no `$select`) plus the
/// primary key, an etag, and the annotations `Prefer` asked for.
fn project(db: &Db, t: &Table, row: &Row, select: Option<&[String]>, pref: &Prefer) -> Value {
    let mut out = Map::new();
    out.insert("@odata.etag".into(), Value::String(format!("W/\"{}\"", row.version)));
    let all: Vec<String>;
    let cols: &[String] = match select {
        Some(s) => s,
        None => {
            all = t.columns.keys().cloned().collect();
            &all
        }
    };
    let mut names: Vec<&String> = cols.iter().collect();
    if !names.contains(&&t.id_field) {
        names.push(&t.id_field);
    }
    for c in names {
        let v = row.fields.get(c).cloned().unwrap_or(Value::Null);
        if let (Some(id), Some(target)) = (v.as_str(), row.lookup_targets.get(c)) {
            if pref.wants(FORMATTED_VALUE)
                && let Some(tt) = db.by_logical(target)
                && let Some(name) = tt.rows.get(id).and_then(|r| r.fields.get(&tt.primary_name)).and_then(Value::as_str)
            {
                out.insert(format!("{c}@{FORMATTED_VALUE}"), Value::String(name.to_string()));
            }
            if pref.wants(LOOKUP_LOGICAL_NAME) {
                out.insert(format!("{c}@{LOOKUP_LOGICAL_NAME}"), Value::String(target.clone()));
            }
        }
        out.insert(c.clone(), v);
    }
    Value::Object(out)
}

fn query_table(db: &Db, api_url: &str, t: &Table, q: &Query, pref: &Prefer) -> Answer {
    let select = checked_select(t, q.select.as_deref())?;
    let filter = q.filter.as_deref().map(|f| Filter::parse(f, t)).transpose()?;
    let order = q.orderby.as_deref().map(|o| parse_orderby(o, t)).transpose()?;
    let mut rows: Vec<&Row> = t.rows.values().filter(|r| filter.as_ref().is_none_or(|f| f.matches(r))).collect();
    rows.sort_by_key(|r| r.seq);
    if let Some(order) = &order {
        rows.sort_by(|a, b| {
            for (field, desc) in order {
                let o = compare(a.fields.get(field), b.fields.get(field));
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            let o = a.seq.cmp(&b.seq);
            if order.first().is_some_and(|(_, desc)| *desc) { o.reverse() } else { o }
        });
    }
    let top = q.top.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let value: Vec<Value> = rows.into_iter().take(top).map(|r| project(db, t, r, select.as_deref(), pref)).collect();
    let shown = q.select.as_ref().map(|s| s.join(",")).unwrap_or_else(|| "*".into());
    Ok(Resp::json(200, json!({"@odata.context": format!("{api_url}/$metadata#{}({shown})", t.set), "value": value})))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.filter(|v| !v.is_null()), b.filter(|v| !v.is_null())) {
        (None, None) => Equal,
        (None, Some(_)) => Less,
        (Some(_), None) => Greater,
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Equal),
            _ => a.as_str().unwrap_or_default().to_lowercase().cmp(&b.as_str().unwrap_or_default().to_lowercase()),
        },
    }
}

fn parse_orderby(raw: &str, t: &Table) -> Result<Vec<(String, bool)>, Resp> {
    raw.split(',')
        .map(|item| {
            let mut words = item.split_whitespace();
            let field = words.next().ok_or_else(|| syntax(format!("Syntax error in $orderby '{raw}'.")))?;
            if !t.columns.contains_key(field) {
                return Err(unknown_property(t, field));
            }
            let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => return Err(syntax(format!("Syntax error in $orderby: '{other}'."))),
            };
            Ok((field.to_string(), desc))
        })
        .collect()
}

/// A parsed `$filter`.
#[derive(Debug)]
enum Filter {
    Or(Vec<Filter>),
    And(Vec<Filter>),
    Not(Box<Filter>),
    Compare { field: String, op: Op, value: Lit },
    Text { func: TextFn, field: String, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy)]
enum TextFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
enum Lit {
    Str(String),
    Guid(String),
    Num(f64),
    Bool(bool),
    DateTime(String),
    Null,
}

impl Lit {
    fn edm(&self) -> &'static str {
        match self {
            Lit::Str(_) => "Edm.String",
            Lit::Guid(_) => "Edm.Guid",
            Lit::Num(_) => "Edm.Int32",
            Lit::Bool(_) => "Edm.Boolean",
            Lit::DateTime(_) => "Edm.DateTimeOffset",
            Lit::Null => "null",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Comma,
    Str(String),
    Word(String),
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    source: &'a str,
    table: &'a Table,
}

impl Filter {
    fn parse(source: &str, table: &Table) -> Result<Filter, Resp> {
        let toks = tokenize(source)?;
        let mut p = Parser { toks, pos: 0, source, table };
        let f = p.or()?;
        if p.pos < p.toks.len() {
            return Err(p.error());
        }
        Ok(f)
    }

    fn matches(&self, row: &Row) -> bool {
        match self {
            Filter::Or(fs) => fs.iter().any(|f| f.matches(row)),
            Filter::And(fs) => fs.iter().all(|f| f.matches(row)),
            Filter::Not(f) => !f.matches(row),
            Filter::Text { func, field, value } => {
                let Some(s) = row.fields.get(field).and_then(Value::as_str) else { return false };
                let (s, v) = (s.to_lowercase(), value.to_lowercase());
                match func {
                    TextFn::Contains => s.contains(&v),
                    TextFn::StartsWith => s.starts_with(&v),
                    TextFn::EndsWith => s.ends_with(&v),
                }
            }
            Filter::Compare { field, op, value } => {
                let v = row.fields.get(field).filter(|v| !v.is_null());
                let ord = match (value, v) {
                    (Lit::Null, None) => Some(std::cmp::Ordering::Equal),
                    (Lit::Null, Some(_)) | (_, None) => None,
                    (Lit::Str(s) | Lit::Guid(s) | Lit::DateTime(s), Some(v)) => v.as_str().map(|x| x.to_lowercase().cmp(&s.to_lowercase())),
                    (Lit::Num(n), Some(v)) => v.as_f64().and_then(|x| x.partial_cmp(n)),
                    (Lit::Bool(b), Some(v)) => v.as_bool().map(|x| x.cmp(b)),
                };
                match (op, ord) {
                    (Op::Ne, None) => true,
                    (_, None) => false,
                    (Op::Eq, Some(o)) => o.is_eq(),
                    (Op::Ne, Some(o)) => o.is_ne(),
                    (Op::Gt, Some(o)) => o.is_gt(),
                    (Op::Ge, Some(o)) => o.is_ge(),
                    (Op::Lt, Some(o)) => o.is_lt(),
                    (Op::Le, Some(o)) => o.is_le(),
                }
            }
        }
    }
}

fn tokenize(source: &str) -> Result<Vec<(usize, Tok)>, Resp> {
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((at, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((at, Tok::Close));
                i += 1;
            }
            ',' => {
                out.push((at, Tok::Comma));
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(syntax(format!("Syntax error: unterminated string literal at position {at} in '{source}'.")));
                    };
                    if c == '\'' {
                        if chars.get(i + 1).map(|(_, c)| *c) == Some('\'') {
                            s.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    s.push(c);
                    i += 1;
                }
                out.push((at, Tok::Str(s)));
            }
            _ => {
                let mut s = String::new();
                while let Some(&(_, c)) = chars.get(i) {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ',' | '\'') {
                        break;
                    }
                    s.push(c);
                    i += 1;
                }
                out.push((at, Tok::Word(s)));
            }
        }
    }
    Ok(out)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn error(&self) -> Resp {
        let at = self.toks.get(self.pos).map_or(self.source.len(), |(at, _)| *at);
        syntax(format!("Syntax error at position {at} in '{}'.", self.source))
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == word)
    }

    fn or(&mut self) -> Result<Filter, Resp> {
        let mut items = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Filter::Or(items) })
    }

    fn and(&mut self) -> Result<Filter, Resp> {
        let mut items = vec![self.unary()?];
        while self.keyword("and") {
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Filter::And(items) })
    }

    fn unary(&mut self) -> Result<Filter, Resp> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.or()?;
            if self.next() != Some(Tok::Close) {
                self.pos -= 1;
                return Err(self.error());
            }
            return Ok(inner);
        }
        let Some(Tok::Word(word)) = self.next() else {
            self.pos -= 1;
            return Err(self.error());
        };
        let func = match word.as_str() {
            "contains" => Some(TextFn::Contains),
            "startswith" => Some(TextFn::StartsWith),
            "endswith" => Some(TextFn::EndsWith),
            _ => None,
        };
        if let Some(func) = func
            && self.peek() == Some(&Tok::Open)
        {
            self.pos += 1;
            let field = self.field()?;
            if self.next() != Some(Tok::Comma) {
                self.pos -= 1;
                return Err(self.error());
            }
            let Some(Tok::Str(value)) = self.next() else {
                self.pos -= 1;
                return Err(self.error());
            };
            if self.next() != Some(Tok::Close) {
                self.pos -= 1;
                return Err(self.error());
            }
            let ty = self.table.columns.get(&field).map(|c| c.ty);
            if !matches!(ty, Some(Type::Text(_))) {
                return Err(syntax(format!("The function '{word}' needs a string property; '{field}' is {}.", ty.map_or("unknown", Type::edm))));
            }
            return Ok(Filter::Text { func, field, value });
        }
        self.pos -= 1;
        let field = self.field()?;
        let op = match self.next() {
            Some(Tok::Word(w)) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                _ => {
                    self.pos -= 1;
                    return Err(self.error());
                }
            },
            _ => {
                self.pos -= 1;
                return Err(self.error());
            }
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Word(w)) => match w.as_str() {
                "null" => Lit::Null,
                "true" => Lit::Bool(true),
                "false" => Lit::Bool(false),
                w if is_guid(w) => Lit::Guid(w.to_string()),
                w if w.parse::<f64>().is_ok() => Lit::Num(w.parse().unwrap_or_default()),
                w if w.parse::<jiff::Timestamp>().is_ok() || jiff::civil::Date::strptime("%Y-%m-%d", w).is_ok() => Lit::DateTime(w.to_string()),
                _ => {
                    self.pos -= 1;
                    return Err(self.error());
                }
            },
            _ => {
                self.pos -= 1;
                return Err(self.error());
            }
        };
        let ty = self.table.columns.get(&field).map(|c| c.ty).unwrap_or(Type::Text(0));
        let fits = matches!(
            (ty, &value),
            (_, Lit::Null) | (Type::Text(_), Lit::Str(_)) | (Type::Guid, Lit::Guid(_)) | (Type::Int, Lit::Num(_)) | (Type::Bool, Lit::Bool(_)) | (Type::DateTime, Lit::DateTime(_))
        );
        if !fits {
            let kind = match op {
                Op::Eq => "Equal",
                Op::Ne => "NotEqual",
                Op::Gt => "GreaterThan",
                Op::Ge => "GreaterThanOrEqual",
                Op::Lt => "LessThan",
                Op::Le => "LessThanOrEqual",
            };
            return Err(syntax(format!("A binary operator with incompatible types was detected. Found operand types '{}' and '{}' for operator kind '{kind}'.", ty.edm(), value.edm())));
        }
        Ok(Filter::Compare { field, op, value })
    }

    fn field(&mut self) -> Result<String, Resp> {
        match self.next() {
            Some(Tok::Word(w)) if is_name(&w) => {
                if !self.table.columns.contains_key(&w) {
                    return Err(unknown_property(self.table, &w));
                }
                Ok(w)
            }
            _ => {
                self.pos -= 1;
                Err(self.error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contacts() -> Table {
        Db::standard().table("contacts").clone()
    }

    #[test]
    fn filters_parse_like_dataverse_reads_them() {
        let t = contacts();
        assert!(Filter::parse("(telephone1 eq '+1 415' or mobilephone eq 'O''Brien') and contains(fullname,'x')", &t).is_ok());
        assert!(Filter::parse("_parentcustomerid_value eq 6f9619ff-8b86-d011-b42d-00c04fc964ff", &t).is_ok());
        assert!(Filter::parse("not (statecode eq 1)", &t).is_ok());
        let err = |f: &str| Filter::parse(f, &t).expect_err(f).body;
        assert!(err("nosuch eq 'x'").contains("Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.contact'"));
        assert!(err("_parentcustomerid_value eq 'abc'").contains("incompatible types"));
        assert!(err("telephone1 eq").contains("Syntax error"));
        assert!(err("(telephone1 eq 'x'").contains("Syntax error"));
        assert!(err("telephone1 eq 'x").contains("unterminated"));
    }

    #[test]
    fn query_strings_decode_plus_as_space() {
        let q = parse_query("$filter=telephone1%20eq%20'+1'&$top=3").expect("query");
        assert_eq!(q.filter.as_deref(), Some("telephone1 eq ' 1'"));
        assert_eq!(q.top, Some(3));
        assert!(parse_query("$expand=x").is_err());
        assert_eq!(pct_decode("a%2Bb%27%", false), "a+b'%");
    }

    #[test]
    fn keys_parse_with_doubled_quotes() {
        let (set, key) = parse_segment("phonecalls(cxb_conversationkey='a''b:c')").expect("segment");
        assert_eq!(set, "phonecalls");
        assert!(matches!(key, Some(Key::Alternate(p)) if p == vec![("cxb_conversationkey".to_string(), "a'b:c".to_string())]));
        assert!(matches!(parse_segment("contacts(6F9619FF-8B86-D011-B42D-00C04FC964FF)"), Ok((_, Some(Key::Id(id)))) if id == "6f9619ff-8b86-d011-b42d-00c04fc964ff"));
    }

    #[test]
    fn delta_tokens_expire_after_expire_change_tracking_in_days() {
        let mut db = Db::standard();
        let track = Prefer { track_changes: true, ..Prefer::default() };
        let ask = |db: &Db, token: &str| db.tracked("http://x/api/data/v9.2", "contacts", &Query { deltatoken: Some(token.into()), ..Query::default() }, &track);
        let first = db.tracked("http://x/api/data/v9.2", "contacts", &Query::default(), &track).expect("first sync");
        let link: Value = serde_json::from_str(&first.body).expect("json");
        let link = link["@odata.deltaLink"].as_str().expect("delta link").to_string();
        let token = pct_decode(link.split("$deltatoken=").nth(1).expect("token"), false);
        assert!(token.contains('!'), "{token}");
        db.clock_ahead = jiff::SignedDuration::from_hours(24 * 7 - 1);
        assert!(ask(&db, &token).is_ok(), "not quite seven days old is still within the default");
        db.clock_ahead = jiff::SignedDuration::from_hours(24 * 7 + 1);
        let refused = ask(&db, &token).expect_err("expired");
        assert_eq!(refused.status, 400);
        assert!(refused.body.contains("0x80044352") && refused.body.contains("Please perform a full sync"), "{}", refused.body);
        db.expire_change_tracking_in_days = 30;
        assert!(ask(&db, &token).is_ok(), "the organization keeps changes longer");
        assert!(ask(&db, "12").is_err(), "a token without its time is not one Dataverse issued");
    }

    #[test]
    fn prefer_values_split_outside_quotes() {
        let p = prefer(&[("prefer".into(), "odata.track-changes, odata.maxpagesize=3,odata.include-annotations=\"A.B,C.*\"".into())]);
        assert!(p.track_changes);
        assert_eq!(p.maxpagesize, Some(3));
        assert!(p.wants("A.B") && p.wants("C.D") && !p.wants("E"));
    }
}
