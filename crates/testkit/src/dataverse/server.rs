//! The server a test starts: its state (tables, recorded requests, `$batch` count) behind one
//! lock, what tests read and change directly, and the entry point every Web API request takes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::Seen;
use crate::faults::{Faults, Verdict};
use crate::oauth::{Flavor, TokenServer};

use super::query::LOOKUP_LOGICAL_NAME;
use super::tables::{Column, Db, Row, Table, Type};
use super::wire::{API_PATH, Req, Resp};

pub const TENANT_ID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
pub const CLIENT_ID: &str = "5b1c39a6-7c5e-4d8f-9a21-0c7e3d2f1a11";
pub const CLIENT_SECRET: &str = "dataverse-test-secret";

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

pub(super) struct Shared {
    pub(super) db: Db,
    seen: Vec<Seen>,
    pub(super) batches: u64,
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

    pub(super) fn shared(&self) -> MutexGuard<'_, Shared> {
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

pub(super) fn is_write(method: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "PUT" | "DELETE")
}
