//! A Salesforce org in memory behind the REST API, for contract tests and the benchmark.
//!
//! Two listeners, as in real life: the login server (`login_url`, the OAuth token endpoint
//! `/services/oauth2/token`, Salesforce flavour) and the org's own instance (`instance_url`,
//! `/services/data/vNN.N/…`), which the token answer names. The instance serves the subset of
//! the REST API the adapter uses and refuses what Salesforce refuses, with Salesforce's error
//! bodies (`[{"message":…,"errorCode":…,"fields":[…]}]`):
//!
//! - SOQL `query` (`SELECT … FROM … [WHERE …] [ORDER BY …] [LIMIT n] [OFFSET n]`, paging
//!   through `nextRecordsUrl`; a query locator expires after 15 minutes of inactivity and at
//!   most 10 are open, the oldest released first → 400 `INVALID_QUERY_LOCATOR`), unknown fields → 400 `INVALID_FIELD`, a quoted datetime or an
//!   unquoted string → 400 `INVALID_FIELD`, `AND` mixed with `OR` without parentheses → 400
//!   `MALFORMED_QUERY`, a field selected twice → 400 `MALFORMED_QUERY`;
//! - SOSL `search` (`FIND {…} IN PHONE FIELDS RETURNING Obj(fields [LIMIT n]), … [LIMIT n]`),
//!   unescaped reserved characters in the search term → 400 `MALFORMED_SEARCH`;
//! - sObject rows (`POST`, `GET`, `PATCH`, `DELETE`), upsert by external id on `Task` only
//!   for the configured external id field, `sobjects/{Object}/deleted/` (seconds ignored, a
//!   window of a minute or less, a start older than 15 days or than a purged Recycle Bin →
//!   400 `INVALID_REPLICATION_DATE`);
//! - Composite (≤ 25 subrequests, `allOrNone`), counted as one API call.
//!
//! Writes are checked like Salesforce checks them: unknown or read-only fields, required
//! fields, fields set on create only (`TaskSubtype` in an update → 400
//! `INVALID_FIELD_FOR_INSERT_UPDATE`, also when an upsert finds the record), text lengths
//! (`STRING_TOO_LONG`), restricted picklists (`CallType`, `TaskSubtype`), numbers and
//! dates, and references (`WhoId` must be a Contact or Lead, `WhatId` an Account, `OwnerId`
//! a User; a wrong kind of id → `FIELD_INTEGRITY_EXCEPTION`, a missing record →
//! `INVALID_CROSS_REFERENCE_KEY`; a Task whose `WhoId` is a Lead cannot have a `WhatId` →
//! `FIELD_INTEGRITY_EXCEPTION`, also when an update adds one of the two).
//!
//! **Phone search rule.** Salesforce indexes phone fields by their digits, so formatting
//! never matters. This server matches a search word against a stored phone value when, with
//! every non-digit removed from both, one digit string ends with the other and the shorter
//! one has at least 7 digits. That is looser than an exact digit match on purpose: a search
//! for the national digits `3012345678` also hits `+43 30 12345678`, the kind of false hit a
//! client must weed out.
//!
//! Every answer from the instance carries `Sforce-Limit-Info: api-usage=n/15000`, where `n`
//! counts API calls served (a Composite is one call). When the allocation is used up
//! ([`SalesforceServer::set_api_limit`]) the instance answers 403 `REQUEST_LIMIT_EXCEEDED`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// The connected app's consumer key the login server accepts.
pub const CLIENT_ID: &str = "3MVG9cxbridge.test.client";
/// The connected app's consumer secret the login server accepts.
pub const CLIENT_SECRET: &str = "cxbridge-test-secret";
/// The default 24-hour API allocation shown in `Sforce-Limit-Info`.
pub const DEFAULT_API_LIMIT: u64 = 15_000;
/// The external id field on Task the org has unless told otherwise.
pub const DEFAULT_EXTERNAL_ID_FIELD: &str = "CxbridgeKey__c";
/// Records per query page unless told otherwise (Salesforce's default batch size).
pub const DEFAULT_PAGE_SIZE: usize = 2000;
/// The id of the integration user every record is owned by unless told otherwise.
pub const INTEGRATION_USER: &str = "005xx0000000001AAA";

const MAX_COMPOSITE_SUBREQUESTS: usize = 25;
/// "Results are returned for no more than 15 days previous to the day the call is executed
/// (or earlier if an administrator has purged the Recycle Bin)." (REST API Developer Guide,
/// sObject Get Deleted.)
const DELETE_LOG_DAYS: jiff::SignedDuration = jiff::SignedDuration::from_hours(15 * 24);
/// "The specified startDate must chronologically precede the specified endDate value by
/// more than one minute" (SOAP API Developer Guide, getDeleted(), which the REST resource
/// refers to for its rules).
const MIN_REPLICATION_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);
/// "QueryLocator objects expire automatically after 15 minutes of inactivity. A user can
/// have up to 10 query cursors open at a time. If 10 QueryLocator cursors are open when a
/// client application, logged in as the same user, attempts to open a new one, then the
/// oldest of the 10 cursors is released." (SOAP API Developer Guide, QueryLocator; REST's
/// `nextRecordsUrl` is the same cursor.)
const LOCATOR_IDLE: jiff::SignedDuration = jiff::SignedDuration::from_secs(15 * 60);
const MAX_OPEN_LOCATORS: usize = 10;
const SOSL_DEFAULT_LIMIT: usize = 2000;
const MIN_PHONE_MATCH_DIGITS: usize = 7;

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

    fn org(&self) -> MutexGuard<'_, Org> {
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

// ---------------------------------------------------------------------------------------
// The schema: the objects and fields of the test org.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Id,
    Text(usize),
    Phone,
    Email,
    Int,
    Bool,
    Date,
    DateTime,
    /// A restricted picklist: other values are refused.
    Picklist(&'static [&'static str]),
    Reference(&'static [&'static str]),
}

impl Kind {
    fn is_textual(self) -> bool {
        matches!(self, Kind::Id | Kind::Text(_) | Kind::Phone | Kind::Email | Kind::Picklist(_) | Kind::Reference(_))
    }
    fn type_name(self) -> &'static str {
        match self {
            Kind::Int => "double",
            Kind::Bool => "boolean",
            Kind::Date => "date",
            Kind::DateTime => "dateTime",
            Kind::Id | Kind::Reference(_) => "id",
            _ => "string",
        }
    }
}

#[derive(Clone, Debug)]
struct FieldDef {
    name: String,
    label: &'static str,
    kind: Kind,
    writable: bool,
    /// Set on create only (Task `TaskSubtype`): an update that names it is refused.
    updateable: bool,
    required: bool,
    external_id: bool,
}

#[derive(Clone, Debug)]
struct ObjectDef {
    name: &'static str,
    prefix: &'static str,
    fields: Vec<FieldDef>,
    /// Computed `Name` from `FirstName` and `LastName` (Contact, Lead).
    person_name: bool,
}

impl ObjectDef {
    fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }
    fn phone_fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.iter().filter(|f| f.kind == Kind::Phone)
    }
}

fn schema(key_field: &str) -> Vec<ObjectDef> {
    fn f(name: &str, kind: Kind) -> FieldDef {
        FieldDef { name: name.into(), label: "", kind, writable: true, updateable: true, required: false, external_id: false }
    }
    fn ro(mut d: FieldDef) -> FieldDef {
        d.writable = false;
        d
    }
    fn req(mut d: FieldDef) -> FieldDef {
        d.required = true;
        d
    }
    fn create_only(mut d: FieldDef) -> FieldDef {
        d.updateable = false;
        d
    }
    fn labelled(mut d: FieldDef, label: &'static str) -> FieldDef {
        d.label = label;
        d
    }
    let system = || vec![ro(f("Id", Kind::Id)), ro(f("CreatedDate", Kind::DateTime)), ro(f("LastModifiedDate", Kind::DateTime)), ro(f("SystemModstamp", Kind::DateTime))];
    let owner = || labelled(f("OwnerId", Kind::Reference(&["User"])), "Owner ID");
    let with = |extra: Vec<FieldDef>| {
        let mut v = system();
        v.extend(extra);
        v
    };
    let mut key = f(key_field, Kind::Text(255));
    key.external_id = true;
    vec![
        ObjectDef {
            name: "Contact",
            prefix: "003",
            person_name: true,
            fields: with(vec![
                f("FirstName", Kind::Text(40)),
                req(f("LastName", Kind::Text(80))),
                ro(f("Name", Kind::Text(121))),
                f("Title", Kind::Text(128)),
                f("Phone", Kind::Phone),
                f("MobilePhone", Kind::Phone),
                f("HomePhone", Kind::Phone),
                f("OtherPhone", Kind::Phone),
                f("Email", Kind::Email),
                labelled(f("AccountId", Kind::Reference(&["Account"])), "Account ID"),
                owner(),
                f("Description", Kind::Text(32000)),
            ]),
        },
        ObjectDef {
            name: "Account",
            prefix: "001",
            person_name: false,
            fields: with(vec![
                req(f("Name", Kind::Text(255))),
                f("Phone", Kind::Phone),
                f("Fax", Kind::Phone),
                f("Website", Kind::Text(255)),
                f("Industry", Kind::Text(255)),
                owner(),
                f("Description", Kind::Text(32000)),
            ]),
        },
        ObjectDef {
            name: "Lead",
            prefix: "00Q",
            person_name: true,
            fields: with(vec![
                f("FirstName", Kind::Text(40)),
                req(f("LastName", Kind::Text(80))),
                ro(f("Name", Kind::Text(121))),
                req(f("Company", Kind::Text(255))),
                f("Phone", Kind::Phone),
                f("MobilePhone", Kind::Phone),
                f("Email", Kind::Email),
                f("Status", Kind::Text(255)),
                owner(),
            ]),
        },
        ObjectDef {
            name: "Task",
            prefix: "00T",
            person_name: false,
            fields: with(vec![
                f("Subject", Kind::Text(255)),
                f("Description", Kind::Text(32000)),
                labelled(f("CallType", Kind::Picklist(&["Inbound", "Outbound", "Internal"])), "Call Type"),
                f("CallDurationInSeconds", Kind::Int),
                f("CallDisposition", Kind::Text(255)),
                f("CallObject", Kind::Text(255)),
                f("Status", Kind::Text(255)),
                f("Priority", Kind::Text(255)),
                create_only(labelled(f("TaskSubtype", Kind::Picklist(&["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"])), "Task Subtype")),
                f("ActivityDate", Kind::Date),
                labelled(f("WhoId", Kind::Reference(&["Contact", "Lead"])), "Name ID"),
                labelled(f("WhatId", Kind::Reference(&["Account"])), "Related To ID"),
                labelled(f("OwnerId", Kind::Reference(&["User"])), "Assigned To ID"),
                key,
            ]),
        },
        ObjectDef {
            name: "User",
            prefix: "005",
            person_name: false,
            fields: with(vec![req(f("Name", Kind::Text(121))), f("Email", Kind::Email), f("IsActive", Kind::Bool)]),
        },
    ]
}

// ---------------------------------------------------------------------------------------
// The org's data.

struct Org {
    schema: Vec<ObjectDef>,
    key_field: String,
    data: HashMap<&'static str, BTreeMap<String, Map<String, Value>>>,
    deleted: Vec<(&'static str, String, Timestamp)>,
    counter: u64,
    seen: Vec<Seen>,
    api_calls: u64,
    api_max: u64,
    composites: u64,
    page_size: usize,
    /// Query locators: the rest of a query's result, for `nextRecordsUrl`.
    locators: HashMap<String, Locator>,
    /// Where the delete log begins (an org that has been in use for a while: 15 days ago;
    /// later once the Recycle Bin was purged).
    delete_log_from: Timestamp,
}

static EMPTY: BTreeMap<String, Map<String, Value>> = BTreeMap::new();

impl Org {
    fn new() -> Self {
        let mut org = Self {
            schema: schema(DEFAULT_EXTERNAL_ID_FIELD),
            key_field: DEFAULT_EXTERNAL_ID_FIELD.into(),
            data: HashMap::new(),
            deleted: vec![],
            counter: 0,
            seen: vec![],
            api_calls: 0,
            api_max: DEFAULT_API_LIMIT,
            composites: 0,
            page_size: DEFAULT_PAGE_SIZE,
            locators: HashMap::new(),
            delete_log_from: Timestamp::now().checked_sub(DELETE_LOG_DAYS).unwrap_or_else(|_| Timestamp::now()),
        };
        if let Some(user) = org.object("User") {
            let mut r = Map::new();
            r.insert("Name".into(), json!("Integration User"));
            r.insert("IsActive".into(), json!(true));
            org.store_with_id(&user, INTEGRATION_USER.into(), r);
        }
        org
    }

    fn object(&self, name: &str) -> Option<ObjectDef> {
        self.schema.iter().find(|o| o.name.eq_ignore_ascii_case(name)).cloned()
    }

    fn object_by_prefix(&self, id: &str) -> Option<ObjectDef> {
        self.schema.iter().find(|o| id.starts_with(o.prefix)).cloned()
    }

    fn table(&self, object: &str) -> &BTreeMap<String, Map<String, Value>> {
        self.data.get(object).unwrap_or(&EMPTY)
    }

    /// Finds a record by its 15- or 18-character id.
    fn find(&self, object: &str, id: &str) -> Option<(String, &Map<String, Value>)> {
        let table = self.table(object);
        if let Some(r) = table.get(id) {
            return Some((id.to_string(), r));
        }
        if id.len() == 15 {
            return table.iter().find(|(k, _)| k.starts_with(id)).map(|(k, r)| (k.clone(), r));
        }
        None
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let short = format!("{prefix}xx{:010}", self.counter + 100);
        format!("{short}{}", id_suffix(&short))
    }

    fn store_new(&mut self, obj: &ObjectDef, record: Map<String, Value>) -> String {
        let id = self.new_id(obj.prefix);
        self.store_with_id(obj, id.clone(), record);
        id
    }

    fn store_with_id(&mut self, obj: &ObjectDef, id: String, mut record: Map<String, Value>) {
        let now = json!(sf_time(Timestamp::now()));
        record.insert("Id".into(), json!(id));
        record.insert("CreatedDate".into(), now.clone());
        record.insert("LastModifiedDate".into(), now.clone());
        record.insert("SystemModstamp".into(), now);
        if obj.field("OwnerId").is_some() && !record.contains_key("OwnerId") {
            record.insert("OwnerId".into(), json!(INTEGRATION_USER));
        }
        if obj.name == "Lead" && !record.contains_key("Status") {
            record.insert("Status".into(), json!("Open - Not Contacted"));
        }
        if obj.name == "Task" {
            record.entry("Status").or_insert(json!("Not Started"));
            record.entry("Priority").or_insert(json!("Normal"));
            record.entry("TaskSubtype").or_insert(json!("Task"));
        }
        if obj.person_name {
            set_person_name(&mut record);
        }
        self.data.entry(obj.name).or_default().insert(id, record);
    }

    fn store_update(&mut self, obj: &ObjectDef, id: &str, changes: Map<String, Value>) -> bool {
        let Some((id, _)) = self.find(obj.name, id) else { return false };
        let Some(record) = self.data.get_mut(obj.name).and_then(|t| t.get_mut(&id)) else { return false };
        for (k, v) in changes {
            record.insert(k, v);
        }
        let now = json!(sf_time(Timestamp::now()));
        record.insert("LastModifiedDate".into(), now.clone());
        record.insert("SystemModstamp".into(), now);
        if obj.person_name {
            set_person_name(record);
        }
        true
    }

    fn store_delete(&mut self, obj: &ObjectDef, id: &str) -> bool {
        let Some((id, _)) = self.find(obj.name, id) else { return false };
        if let Some(t) = self.data.get_mut(obj.name) {
            t.remove(&id);
        }
        self.deleted.push((obj.name, id, Timestamp::now()));
        true
    }
}

/// `t` without its seconds.
fn whole_minute(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap_or(t)
}

/// Midnight UTC of `t`'s day.
fn start_of_day(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(86_400) * 86_400).unwrap_or(t)
}

/// An open query cursor: the whole result, when it was last used, and its age rank.
#[derive(Clone)]
struct Locator {
    rows: Vec<Value>,
    used: Timestamp,
    opened: u64,
}

fn set_person_name(record: &mut Map<String, Value>) {
    let part = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or_default().trim().to_string();
    let name = [part("FirstName"), part("LastName")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    record.insert("Name".into(), json!(name));
}

/// The 3-character suffix that makes a 15-character id case-insensitively unique: one
/// character per 5-character chunk, whose bits say which characters are upper case.
fn id_suffix(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk.iter().enumerate().filter(|(_, c)| c.is_ascii_uppercase()).fold(0usize, |acc, (i, _)| acc | (1 << i));
            ALPHABET[bits % ALPHABET.len()] as char
        })
        .collect()
}

/// Salesforce's datetime format in answers: `2024-05-01T10:00:00.000+0000`.
fn sf_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn looks_like_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

// ---------------------------------------------------------------------------------------
// HTTP.

/// An answer before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self { status: StatusCode::OK, body: Some(body) }
    }
    fn with(status: StatusCode, body: Value) -> Self {
        Self { status, body: Some(body) }
    }
    fn no_content() -> Self {
        Self { status: StatusCode::NO_CONTENT, body: None }
    }
    fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// Salesforce's error body: an array of `{message, errorCode, fields}`.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    error_on(status, code, message, &[])
}

fn error_on(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Reply {
    Reply::with(status, json!([{ "message": message, "errorCode": code, "fields": fields }]))
}

fn not_found() -> Reply {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
}

fn bad(code: &str, message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, code, message)
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

impl Org {
    fn usage(&self) -> String {
        format!("api-usage={}/{}", self.api_calls, self.api_max)
    }

    /// Routes one request (top level, or a Composite subrequest when `in_composite`).
    fn serve(&mut self, method: &Method, path: &str, query: &str, body: &str) -> Reply {
        self.route(method, path, query, body, false)
    }

    fn route(&mut self, method: &Method, path: &str, query: &str, body: &str, in_composite: bool) -> Reply {
        let Some(rest) = path.strip_prefix("/services/data/") else { return not_found() };
        let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let Some((version, segments)) = segments.split_first() else { return not_found() };
        if !valid_version(version) {
            return not_found();
        }
        let params = parse_query(query);
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method.as_str(), seg.as_slice()) {
            ("GET", ["query"]) => match params.get("q") {
                Some(q) => self.soql(version, q),
                None => bad("MALFORMED_QUERY", "A query string has to be specified"),
            },
            ("GET", ["query", locator]) => self.next_page(version, locator),
            ("GET", ["search"]) => match params.get("q") {
                Some(q) => self.sosl(version, q),
                None => bad("MALFORMED_SEARCH", "No search term found. The search term must be enclosed in braces."),
            },
            ("POST", ["composite"]) if !in_composite => self.composite(body),
            ("POST", ["sobjects", object]) => self.create(object, body),
            ("GET", ["sobjects", object, "deleted"]) => self.deleted(object, &params),
            ("GET", ["sobjects", object, id]) => self.read(version, object, id, params.get("fields").map(String::as_str)),
            ("PATCH", ["sobjects", object, id]) => self.patch(object, id, body),
            ("DELETE", ["sobjects", object, id]) => self.remove(object, id),
            ("GET", ["sobjects", object, field, value]) => self.read_by_external_id(version, object, field, value, params.get("fields").map(String::as_str)),
            ("PATCH", ["sobjects", object, field, value]) => self.upsert(object, field, value, body),
            (_, ["sobjects", _, _, _]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                &format!("HTTP Method '{method}' not allowed. Allowed are GET,HEAD,PATCH,DELETE"),
            ),
            _ => not_found(),
        }
    }
}

fn valid_version(v: &str) -> bool {
    let Some(num) = v.strip_prefix('v') else { return false };
    let Some((major, minor)) = num.split_once('.') else { return false };
    major.parse::<u32>().is_ok_and(|m| (20..=70).contains(&m)) && minor == "0"
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// sObject rows.

impl Org {
    fn attributes(&self, version: &str, object: &str, id: &str) -> Value {
        json!({ "type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}") })
    }

    fn create(&mut self, object: &str, body: &str) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        let fields = match parse_body(body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let record = match self.check_write(&obj, &fields, true) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if let Err(r) = check_who_and_what(&obj, None, &record) {
            return r;
        }
        let id = self.store_new(&obj, record);
        Reply::with(StatusCode::CREATED, json!({ "id": id, "success": true, "errors": [] }))
    }

    fn read(&self, version: &str, object: &str, id: &str, fields: Option<&str>) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        let Some((id, record)) = self.find(obj.name, id) else { return not_found() };
        self.answer_row(version, &obj, &id, record, fields)
    }

    fn answer_row(&self, version: &str, obj: &ObjectDef, id: &str, record: &Map<String, Value>, fields: Option<&str>) -> Reply {
        let names: Vec<String> = match fields {
            Some(list) => {
                let mut out = vec![];
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(f) = obj.field(name) else {
                        return bad("INVALID_FIELD", &format!("No such column '{name}' on sobject of type {}", obj.name));
                    };
                    out.push(f.name.clone());
                }
                out
            }
            None => obj.fields.iter().map(|f| f.name.clone()).collect(),
        };
        let mut out = Map::new();
        out.insert("attributes".into(), self.attributes(version, obj.name, id));
        for n in names {
            out.insert(n.clone(), record.get(&n).cloned().unwrap_or(Value::Null));
        }
        Reply::ok(Value::Object(out))
    }

    fn patch(&mut self, object: &str, id: &str, body: &str) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        if self.find(obj.name, id).is_none() {
            return not_found();
        }
        let fields = match parse_body(body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let changes = match self.check_write(&obj, &fields, false) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if let Err(r) = check_who_and_what(&obj, self.find(obj.name, id).map(|(_, r)| r), &changes) {
            return r;
        }
        self.store_update(&obj, id, changes);
        Reply::no_content()
    }

    fn remove(&mut self, object: &str, id: &str) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        if self.store_delete(&obj, id) {
            Reply::no_content()
        } else {
            error(StatusCode::NOT_FOUND, "ENTITY_IS_DELETED", "entity is deleted")
        }
    }

    /// The record of `object` whose external id field `field` holds `value`.
    fn external_lookup(&self, object: &str, field: &str, value: &str) -> Result<(ObjectDef, Option<String>), Reply> {
        let Some(obj) = self.object(object) else { return Err(not_found()) };
        let key = match obj.field(field) {
            Some(f) if f.external_id => f.name.clone(),
            Some(f) if f.name == "Id" => "Id".to_string(),
            _ => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("Provided external ID field does not exist or is not accessible: {field}"),
                ));
            }
        };
        let id = self.table(obj.name).iter().find(|(_, r)| r.get(&key).and_then(Value::as_str) == Some(value)).map(|(id, _)| id.clone());
        Ok((obj, id))
    }

    fn read_by_external_id(&self, version: &str, object: &str, field: &str, value: &str, fields: Option<&str>) -> Reply {
        match self.external_lookup(object, field, value) {
            Err(r) => r,
            Ok((_, None)) => not_found(),
            Ok((obj, Some(id))) => match self.find(obj.name, &id) {
                Some((id, record)) => self.answer_row(version, &obj, &id, record, fields),
                None => not_found(),
            },
        }
    }

    fn upsert(&mut self, object: &str, field: &str, value: &str, body: &str) -> Reply {
        let (obj, existing) = match self.external_lookup(object, field, value) {
            Ok(found) => found,
            Err(r) => return r,
        };
        let mut fields = match parse_body(body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if fields.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
            return bad("INVALID_FIELD", "Id not specified in an update call");
        }
        let Some(key) = obj.field(field).map(|f| f.name.clone()) else { return not_found() };
        fields.retain(|k, _| !k.eq_ignore_ascii_case(&key));
        let record = match self.check_write(&obj, &fields, existing.is_none()) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let stored = existing.as_deref().and_then(|id| self.find(obj.name, id)).map(|(_, r)| r);
        if let Err(r) = check_who_and_what(&obj, stored, &record) {
            return r;
        }
        match existing {
            Some(id) => {
                self.store_update(&obj, &id, record);
                Reply::ok(json!({ "id": id, "success": true, "errors": [], "created": false }))
            }
            None => {
                let mut record = record;
                record.insert(key, json!(value));
                let id = self.store_new(&obj, record);
                Reply::with(StatusCode::CREATED, json!({ "id": id, "success": true, "errors": [], "created": true }))
            }
        }
    }

    /// Checks a write like Salesforce does and returns the fields to store.
    fn check_write(&self, obj: &ObjectDef, fields: &Map<String, Value>, creating: bool) -> Result<Map<String, Value>, Reply> {
        let mut out = Map::new();
        for (name, value) in fields {
            let Some(f) = obj.field(name) else {
                return Err(error_on(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{name}' on sobject of type {}", obj.name),
                    &[],
                ));
            };
            if !f.writable || (!creating && !f.updateable) {
                return Err(error_on(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.name),
                    &[&f.name],
                ));
            }
            let value = self.check_value(f, value)?;
            out.insert(f.name.clone(), value);
        }
        if creating {
            let missing: Vec<&str> = obj
                .fields
                .iter()
                .filter(|f| f.required && out.get(&f.name).is_none_or(|v| v.is_null() || v.as_str() == Some("")))
                .map(|f| f.name.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(error_on(
                    StatusCode::BAD_REQUEST,
                    "REQUIRED_FIELD_MISSING",
                    &format!("Required fields are missing: [{}]", missing.join(", ")),
                    &missing,
                ));
            }
        }
        Ok(out)
    }

    fn check_value(&self, f: &FieldDef, value: &Value) -> Result<Value, Reply> {
        let label = if f.label.is_empty() { f.name.as_str() } else { f.label };
        let parse_error = |v: &Value| {
            error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("Cannot deserialize instance of {} from {} value {v} or request may be missing a required field", f.kind.type_name(), json_type(v)),
            )
        };
        if value.is_null() || value.as_str() == Some("") {
            return Ok(Value::Null);
        }
        match f.kind {
            Kind::Int => match value {
                Value::Number(n) if n.is_i64() || n.is_f64() => Ok(value.clone()),
                Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| parse_error(value)),
                _ => Err(parse_error(value)),
            },
            Kind::Bool => match value {
                Value::Bool(_) => Ok(value.clone()),
                Value::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
                _ => Err(parse_error(value)),
            },
            Kind::Date => match value.as_str() {
                Some(s) if s.parse::<jiff::civil::Date>().is_ok() => Ok(value.clone()),
                _ => Err(parse_error(value)),
            },
            Kind::DateTime => match value.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
                Some(t) => Ok(json!(sf_time(t))),
                None => Err(parse_error(value)),
            },
            Kind::Id | Kind::Text(_) | Kind::Phone | Kind::Email | Kind::Picklist(_) | Kind::Reference(_) => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(parse_error(value)),
                };
                self.check_text(f, label, &s)?;
                Ok(Value::String(s))
            }
        }
    }

    fn check_text(&self, f: &FieldDef, label: &str, s: &str) -> Result<(), Reply> {
        let max = match f.kind {
            Kind::Text(n) => n,
            Kind::Phone => 40,
            Kind::Email => 80,
            _ => 255,
        };
        if s.chars().count() > max {
            return Err(error_on(
                StatusCode::BAD_REQUEST,
                "STRING_TOO_LONG",
                &format!("{label}: data value too large: {} (max length={max})", shorten(s)),
                &[&f.name],
            ));
        }
        match f.kind {
            Kind::Email if !s.contains('@') => Err(error_on(StatusCode::BAD_REQUEST, "INVALID_EMAIL_ADDRESS", &format!("Email: invalid email address: {s}"), &[&f.name])),
            Kind::Picklist(values) if !values.contains(&s) => Err(error_on(
                StatusCode::BAD_REQUEST,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                &format!("{label}: bad value for restricted picklist field: {s}"),
                &[&f.name],
            )),
            Kind::Reference(targets) => self.check_reference(f, label, targets, s),
            _ => Ok(()),
        }
    }

    fn check_reference(&self, f: &FieldDef, label: &str, targets: &[&str], id: &str) -> Result<(), Reply> {
        let kind = self.object_by_prefix(id).filter(|_| looks_like_id(id));
        match kind {
            Some(obj) if targets.contains(&obj.name) => {
                if self.find(obj.name, id).is_some() {
                    Ok(())
                } else {
                    Err(error_on(StatusCode::BAD_REQUEST, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[&f.name]))
                }
            }
            _ => Err(error_on(
                StatusCode::BAD_REQUEST,
                "FIELD_INTEGRITY_EXCEPTION",
                &format!("{label}: id value of incorrect type: {id}"),
                &[&f.name],
            )),
        }
    }

    fn deleted(&self, object: &str, params: &HashMap<String, String>) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        let (Some(start), Some(end)) = (params.get("start"), params.get("end")) else {
            return bad("MISSING_ARGUMENT", "start and end parameters are required");
        };
        let (Ok(start), Ok(end)) = (start.parse::<Timestamp>(), end.parse::<Timestamp>()) else {
            return bad("INVALID_REPLICATION_DATE", "start and end must be ISO 8601 dateTime values");
        };
        // "The API ignores the seconds portion of the specified dateTime value (for example,
        // 12:30:15 is interpreted as 12:30:00 UTC)." (sObject Get Deleted, parameters.)
        let (start, end) = (whole_minute(start), whole_minute(end));
        let now = Timestamp::now();
        let fifteen_days = now.checked_sub(DELETE_LOG_DAYS).unwrap_or(now);
        let earliest = whole_minute(self.delete_log_from.max(start_of_day(fifteen_days)));
        if start < earliest {
            return bad("INVALID_REPLICATION_DATE", &format!("startDate must be on or after {}", sf_time(earliest)));
        }
        if end.duration_since(start) <= MIN_REPLICATION_WINDOW {
            return bad("INVALID_REPLICATION_DATE", "EndDate must be more than one minute after StartDate");
        }
        let covered = end.min(whole_minute(now));
        let records: Vec<Value> = self
            .deleted
            .iter()
            .filter(|(o, _, at)| *o == obj.name && *at >= start && *at < covered)
            .map(|(_, id, at)| json!({ "id": id, "deletedDate": sf_time(*at) }))
            .collect();
        Reply::ok(json!({
            "deletedRecords": records,
            "earliestDateAvailable": sf_time(earliest),
            "latestDateCovered": sf_time(covered),
        }))
    }
}

/// A Task (or Event) about a Lead is about nobody else: "The WhoId field can point to a
/// Contact or Lead, and the WhatId field can point to an Account, Opportunity, Campaign, or
/// Case. In addition, if the WhoId field refers to a Lead, then the WhatId field must be
/// empty." (Object Reference for the Salesforce Platform, Task, and SOAP API Developer
/// Guide, Relationships among objects). Salesforce refuses such a write with
/// `FIELD_INTEGRITY_EXCEPTION`; the rule is checked on the record as it would be after the
/// write (an update may add either half). The message wording is ours.
fn check_who_and_what(obj: &ObjectDef, stored: Option<&Map<String, Value>>, changes: &Map<String, Value>) -> Result<(), Reply> {
    if obj.field("WhoId").is_none() || obj.field("WhatId").is_none() {
        return Ok(());
    }
    let after = |field: &str| -> Option<String> {
        let v = match changes.get(field) {
            Some(v) => v,
            None => stored?.get(field)?,
        };
        v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    };
    match (after("WhoId"), after("WhatId")) {
        (Some(who), Some(_)) if who.starts_with("00Q") => Err(error_on(
            StatusCode::BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
            "Related To ID: You can't associate a Related To record with a lead. Remove the lead from Name, or clear Related To.",
            &["WhatId"],
        )),
        _ => Ok(()),
    }
}

fn parse_body(body: &str) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(bad("JSON_PARSER_ERROR", &format!("Cannot deserialize instance of sObject from {} value", json_type(&other)))),
        Err(e) => Err(bad("JSON_PARSER_ERROR", &format!("Unexpected character: {e}"))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(_) => "VALUE_TRUE",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

fn shorten(s: &str) -> String {
    let head: String = s.chars().take(40).collect();
    if head.len() < s.len() { format!("{head}(TRUNCATED)") } else { head }
}

// ---------------------------------------------------------------------------------------
// Composite.

impl Org {
    fn composite(&mut self, body: &str) -> Reply {
        let request = match serde_json::from_str::<Value>(body) {
            Ok(v) => v,
            Err(e) => return bad("JSON_PARSER_ERROR", &format!("Unexpected character: {e}")),
        };
        let all_or_none = request.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
        let Some(subs) = request.get("compositeRequest").and_then(Value::as_array) else {
            return bad("JSON_PARSER_ERROR", "compositeRequest is required");
        };
        if subs.is_empty() {
            return bad("INVALID_API_INPUT", "compositeRequest must contain at least one subrequest");
        }
        if subs.len() > MAX_COMPOSITE_SUBREQUESTS {
            return bad("LIMIT_EXCEEDED", &format!("Composite request can contain up to {MAX_COMPOSITE_SUBREQUESTS} subrequests, but {} were sent", subs.len()));
        }
        let mut refs = HashSet::new();
        for sub in subs {
            let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or_default();
            if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || !reference.as_bytes()[0].is_ascii_alphabetic() {
                return bad("INVALID_API_INPUT", &format!("Invalid reference id: {reference}. Reference IDs can only contain alphanumeric characters and underscores and must begin with a letter."));
            }
            if !refs.insert(reference) {
                return bad("INVALID_API_INPUT", &format!("Duplicate reference id: {reference}"));
            }
            let method = sub.get("method").and_then(Value::as_str).unwrap_or_default();
            if !["GET", "POST", "PATCH", "PUT", "DELETE"].contains(&method) {
                return bad("INVALID_API_INPUT", &format!("Invalid HTTP method: {method}"));
            }
            if !sub.get("url").and_then(Value::as_str).is_some_and(|u| u.starts_with("/services/data/")) {
                return bad("INVALID_API_INPUT", "The url of a subrequest must start with /services/data/");
            }
        }
        self.composites += 1;
        let snapshot = all_or_none.then(|| (self.data.clone(), self.deleted.clone(), self.counter));
        let mut answers: Vec<(String, Reply)> = vec![];
        let mut failed = false;
        for sub in subs {
            let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or_default().to_string();
            if failed && all_or_none {
                answers.push((reference, halted()));
                continue;
            }
            let method = sub.get("method").and_then(Value::as_str).and_then(|m| m.parse::<Method>().ok()).unwrap_or(Method::GET);
            let url = sub.get("url").and_then(Value::as_str).unwrap_or_default();
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            let body = sub.get("body").map(Value::to_string).unwrap_or_default();
            let reply = self.route(&method, path, query, &body, true);
            failed |= !reply.is_success();
            answers.push((reference, reply));
        }
        if failed && let Some((data, deleted, counter)) = snapshot {
            self.data = data;
            self.deleted = deleted;
            self.counter = counter;
            for (_, reply) in answers.iter_mut().filter(|(_, r)| r.is_success()) {
                *reply = halted();
            }
        }
        let results: Vec<Value> = answers
            .into_iter()
            .map(|(reference, reply)| {
                let mut headers = Map::new();
                if reply.status == StatusCode::CREATED
                    && let Some(id) = reply.body.as_ref().and_then(|b| b.get("id")).and_then(Value::as_str)
                    && let Some(obj) = self.object_by_prefix(id)
                {
                    headers.insert("Location".into(), json!(format!("/services/data/v62.0/sobjects/{}/{id}", obj.name)));
                }
                json!({
                    "body": reply.body.unwrap_or(Value::Null),
                    "httpHeaders": headers,
                    "httpStatusCode": reply.status.as_u16(),
                    "referenceId": reference,
                })
            })
            .collect();
        Reply::ok(json!({ "compositeResponse": results }))
    }
}

fn halted() -> Reply {
    bad("PROCESSING_HALTED", "The transaction was rolled back since another operation in the same transaction failed.")
}

// ---------------------------------------------------------------------------------------
// SOQL and SOSL.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Date(jiff::civil::Date),
    DateTime(Timestamp),
    Punct(&'static str),
}

fn malformed_query(msg: &str) -> Reply {
    bad("MALFORMED_QUERY", msg)
}

fn tokenize(s: &str) -> Result<Vec<Tok>, Reply> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                let Some(&c) = chars.get(i) else { return Err(malformed_query("unexpected end of query: unterminated string literal")) };
                match c {
                    '\'' => {
                        i += 1;
                        break;
                    }
                    '\\' => {
                        let Some(&e) = chars.get(i + 1) else { return Err(malformed_query("unterminated escape sequence")) };
                        match e {
                            '\'' | '"' | '\\' => text.push(e),
                            'n' => text.push('\n'),
                            'r' => text.push('\r'),
                            't' => text.push('\t'),
                            // Kept escaped: only LIKE patterns give them a meaning.
                            '%' | '_' => {
                                text.push('\\');
                                text.push(e);
                            }
                            other => return Err(malformed_query(&format!("Invalid string literal: Illegal character sequence '\\{other}' in string literal."))),
                        }
                        i += 2;
                    }
                    other => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(text));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], ':' | '.' | '+' | '-')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(literal(&word)?);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let punct = ["!=", "<>", "<=", ">="].into_iter().find(|p| *p == two).or_else(|| [",", "(", ")", "=", "<", ">"].into_iter().find(|p| p.starts_with(c)));
            let Some(p) = punct else { return Err(malformed_query(&format!("unexpected token: '{c}'"))) };
            i += p.len();
            out.push(Tok::Punct(p));
        }
    }
    Ok(out)
}

/// A literal starting with a digit: a number, a date or a datetime in one of SOQL's three
/// accepted forms (`YYYY-MM-DDThh:mm:ssZ`, `…+hh:mm`, `…-hh:mm`).
fn literal(word: &str) -> Result<Tok, Reply> {
    if let Ok(n) = word.parse::<f64>() {
        return Ok(Tok::Num(n));
    }
    if word.len() == 10
        && let Ok(d) = word.parse::<jiff::civil::Date>()
    {
        return Ok(Tok::Date(d));
    }
    let shape_ok = (word.len() == 20 && word.ends_with('Z')) || (word.len() == 25 && matches!(word.as_bytes()[19], b'+' | b'-'));
    match word.parse::<Timestamp>() {
        Ok(t) if shape_ok && word.as_bytes().get(10) == Some(&b'T') => Ok(Tok::DateTime(t)),
        _ => Err(malformed_query(&format!("line 1: value of filter criterion is invalid: {word}"))),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_keyword(&mut self, kw: &str) -> Result<(), Reply> {
        if self.keyword(kw) { Ok(()) } else { Err(malformed_query(&format!("expecting '{kw}', found '{}'", self.describe_next()))) }
    }
    fn punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> Result<String, Reply> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            other => Err(malformed_query(&format!("unexpected token: '{}'", describe(other.as_ref())))),
        }
    }
    fn number(&mut self) -> Result<usize, Reply> {
        match self.next() {
            Some(Tok::Num(n)) if n >= 0.0 && n.fract() == 0.0 => Ok(n as usize),
            other => Err(malformed_query(&format!("expecting a number, found '{}'", describe(other.as_ref())))),
        }
    }
    fn describe_next(&self) -> String {
        describe(self.peek())
    }
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "EOF".into(),
        Some(Tok::Word(w)) => w.clone(),
        Some(Tok::Str(s)) => format!("'{s}'"),
        Some(Tok::Num(n)) => n.to_string(),
        Some(Tok::Date(d)) => d.to_string(),
        Some(Tok::DateTime(t)) => t.to_string(),
        Some(Tok::Punct(p)) => (*p).to_string(),
    }
}

const RESERVED_WORDS: &[&str] = &["FROM", "WHERE", "ORDER", "LIMIT", "OFFSET", "AND", "OR", "NOT", "BY", "SELECT", "GROUP"];

/// A selected field: one of the object's own, or one through a lookup (`Account.Name`).
#[derive(Clone, Debug)]
enum Path {
    Own(FieldDef),
    Related { relationship: String, reference: String, target: FieldDef },
}

impl Path {
    fn display(&self) -> String {
        match self {
            Path::Own(f) => f.name.clone(),
            Path::Related { relationship, target, .. } => format!("{relationship}.{}", target.name),
        }
    }
}

fn no_such_column(name: &str, object: &str) -> Reply {
    bad(
        "INVALID_FIELD",
        &format!("No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."),
    )
}

impl Org {
    fn resolve(&self, obj: &ObjectDef, name: &str) -> Result<Path, Reply> {
        match name.split_once('.') {
            None => obj.field(name).cloned().map(Path::Own).ok_or_else(|| no_such_column(name, obj.name)),
            Some((rel, rest)) => {
                let reference = if let Some(base) = rel.strip_suffix("__r") { format!("{base}__c") } else { format!("{rel}Id") };
                let Some(ref_field) = obj.field(&reference).filter(|f| matches!(f.kind, Kind::Reference(_))) else {
                    return Err(bad(
                        "INVALID_FIELD",
                        &format!("Didn't understand relationship '{rel}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name."),
                    ));
                };
                let Kind::Reference(targets) = ref_field.kind else { return Err(no_such_column(name, obj.name)) };
                let target_obj = targets.first().and_then(|t| self.object(t)).ok_or_else(|| no_such_column(name, obj.name))?;
                let target = target_obj.field(rest).cloned().ok_or_else(|| no_such_column(rest, target_obj.name))?;
                let relationship = ref_field.name.strip_suffix("Id").map(str::to_string).unwrap_or_else(|| rel.to_string());
                Ok(Path::Related { relationship, reference: ref_field.name.clone(), target })
            }
        }
    }

    fn select_list(&self, p: &mut Parser, names: &mut Vec<String>) -> Result<(), Reply> {
        loop {
            let w = p.word()?;
            if RESERVED_WORDS.iter().any(|r| r.eq_ignore_ascii_case(&w)) {
                return Err(malformed_query(&format!("unexpected token: '{w}'")));
            }
            names.push(w);
            if !p.punct(",") {
                return Ok(());
            }
        }
    }

    fn resolve_all(&self, obj: &ObjectDef, names: &[String]) -> Result<Vec<Path>, Reply> {
        let mut seen = HashSet::new();
        let mut out = vec![];
        for n in names {
            let path = self.resolve(obj, n)?;
            if !seen.insert(path.display().to_ascii_lowercase()) {
                return Err(malformed_query(&format!("duplicate field selected: {}", path.display())));
            }
            out.push(path);
        }
        Ok(out)
    }

    /// The record as an answer shows it: `attributes`, then the selected fields.
    fn project(&self, version: &str, obj: &ObjectDef, record: &Map<String, Value>, paths: &[Path]) -> Value {
        let id = record.get("Id").and_then(Value::as_str).unwrap_or_default();
        let mut out = Map::new();
        out.insert("attributes".into(), self.attributes(version, obj.name, id));
        for path in paths {
            match path {
                Path::Own(f) => {
                    out.insert(f.name.clone(), record.get(&f.name).cloned().unwrap_or(Value::Null));
                }
                Path::Related { relationship, reference, target } => {
                    let related = record
                        .get(reference)
                        .and_then(Value::as_str)
                        .and_then(|rid| self.object_by_prefix(rid).and_then(|o| self.find(o.name, rid).map(|(rid, r)| (o, rid, r.clone()))));
                    let slot = out.entry(relationship.clone()).or_insert(Value::Null);
                    if let Some((o, rid, r)) = related {
                        if slot.is_null() {
                            *slot = json!({ "attributes": self.attributes(version, o.name, &rid) });
                        }
                        if let Some(m) = slot.as_object_mut() {
                            m.insert(target.name.clone(), r.get(&target.name).cloned().unwrap_or(Value::Null));
                        }
                    }
                }
            }
        }
        Value::Object(out)
    }

    fn soql(&mut self, version: &str, q: &str) -> Reply {
        match self.run_soql(version, q) {
            Ok(r) | Err(r) => r,
        }
    }

    fn run_soql(&mut self, version: &str, q: &str) -> Result<Reply, Reply> {
        let mut p = Parser { toks: tokenize(q)?, pos: 0 };
        p.expect_keyword("SELECT")?;
        let mut names = vec![];
        self.select_list(&mut p, &mut names)?;
        p.expect_keyword("FROM")?;
        let object = p.word()?;
        let obj = self.object(&object).ok_or_else(|| {
            bad("INVALID_TYPE", &format!("sObject type '{object}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name."))
        })?;
        let paths = self.resolve_all(&obj, &names)?;
        let filter = if p.keyword("WHERE") { Some(self.condition(&mut p, &obj)?) } else { None };
        let mut order = vec![];
        if p.keyword("ORDER") {
            p.expect_keyword("BY")?;
            loop {
                let name = p.word()?;
                let field = match self.resolve(&obj, &name)? {
                    Path::Own(f) => f,
                    Path::Related { .. } => return Err(malformed_query("ordering by related fields is not supported by this test server")),
                };
                let descending = if p.keyword("DESC") {
                    true
                } else {
                    p.keyword("ASC");
                    false
                };
                let nulls_last = if p.keyword("NULLS") {
                    if p.keyword("LAST") {
                        true
                    } else {
                        p.expect_keyword("FIRST")?;
                        false
                    }
                } else {
                    descending
                };
                order.push((field, descending, nulls_last));
                if !p.punct(",") {
                    break;
                }
            }
        }
        let limit = if p.keyword("LIMIT") { Some(p.number()?) } else { None };
        let offset = if p.keyword("OFFSET") { p.number()? } else { 0 };
        if !p.at_end() {
            return Err(malformed_query(&format!("unexpected token: '{}'", p.describe_next())));
        }
        let mut rows: Vec<&Map<String, Value>> = self.table(obj.name).values().filter(|r| filter.as_ref().is_none_or(|f| f.matches(r))).collect();
        rows.sort_by(|a, b| {
            for (f, desc, nulls_last) in &order {
                let ord = compare_stored(f.kind, a.get(&f.name), b.get(&f.name), *nulls_last != *desc);
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        let rows: Vec<Value> = rows.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).map(|r| self.project(version, &obj, r, &paths)).collect();
        Ok(Reply::ok(self.page(version, rows, None)))
    }

    /// The first page of `rows` (or the page starting at `offset` of a stored locator).
    fn page(&mut self, version: &str, rows: Vec<Value>, locator: Option<(String, usize)>) -> Value {
        let total = locator.as_ref().map_or(rows.len(), |(id, _)| self.locators.get(id).map_or(0, |l| l.rows.len()));
        let start = locator.as_ref().map_or(0, |(_, offset)| *offset);
        let all = match &locator {
            Some((id, _)) => self.locators.get_mut(id).map(|l| {
                l.used = Timestamp::now();
                l.rows.clone()
            }).unwrap_or_default(),
            None => rows,
        };
        let end = (start + self.page_size).min(all.len());
        let records: Vec<Value> = all.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
        let mut answer = json!({ "totalSize": total, "done": end >= all.len(), "records": records });
        if end < all.len() {
            let id = match locator {
                Some((id, _)) => id,
                None => {
                    self.counter += 1;
                    let id = format!("01gxx{:010}", self.counter + 100);
                    if self.locators.len() >= MAX_OPEN_LOCATORS
                        && let Some(oldest) = self.locators.iter().min_by_key(|(_, l)| l.opened).map(|(k, _)| k.clone())
                    {
                        self.locators.remove(&oldest);
                    }
                    self.locators.insert(id.clone(), Locator { rows: all, used: Timestamp::now(), opened: self.counter });
                    id
                }
            };
            answer["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{id}-{end}"));
        }
        answer
    }

    fn next_page(&mut self, version: &str, locator: &str) -> Reply {
        let Some((id, offset)) = locator.rsplit_once('-') else { return bad("INVALID_QUERY_LOCATOR", "invalid query locator") };
        let Ok(offset) = offset.parse::<usize>() else { return bad("INVALID_QUERY_LOCATOR", "invalid query locator") };
        let idle = self.locators.get(id).map(|l| Timestamp::now().duration_since(l.used) > LOCATOR_IDLE);
        match idle {
            None => return bad("INVALID_QUERY_LOCATOR", "invalid query locator"),
            Some(true) => {
                self.locators.remove(id);
                return bad("INVALID_QUERY_LOCATOR", "invalid query locator");
            }
            Some(false) => {}
        }
        Reply::ok(self.page(version, vec![], Some((id.to_string(), offset))))
    }

    fn condition(&self, p: &mut Parser, obj: &ObjectDef) -> Result<Cond, Reply> {
        let first = self.atom(p, obj)?;
        let mut parts = vec![first];
        let mut joiner: Option<&str> = None;
        loop {
            let this = if p.keyword("AND") {
                "AND"
            } else if p.keyword("OR") {
                "OR"
            } else {
                break;
            };
            if joiner.is_some_and(|j| j != this) {
                return Err(malformed_query(&format!("unexpected token: '{this}'; use parentheses when mixing AND and OR")));
            }
            joiner = Some(this);
            parts.push(self.atom(p, obj)?);
        }
        Ok(match (joiner, parts.len()) {
            (_, 1) => parts.remove(0),
            (Some("OR"), _) => Cond::Or(parts),
            _ => Cond::And(parts),
        })
    }

    fn atom(&self, p: &mut Parser, obj: &ObjectDef) -> Result<Cond, Reply> {
        if p.punct("(") {
            let c = self.condition(p, obj)?;
            if !p.punct(")") {
                return Err(malformed_query(&format!("expecting ')', found '{}'", p.describe_next())));
            }
            return Ok(c);
        }
        if p.keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.atom(p, obj)?)));
        }
        let name = p.word()?;
        let field = match self.resolve(obj, &name)? {
            Path::Own(f) => f,
            Path::Related { .. } => return Err(malformed_query("filters on related fields are not supported by this test server")),
        };
        let op = if p.keyword("LIKE") {
            Op::Like
        } else {
            match p.next() {
                Some(Tok::Punct("=")) => Op::Eq,
                Some(Tok::Punct("!=" | "<>")) => Op::Ne,
                Some(Tok::Punct("<")) => Op::Lt,
                Some(Tok::Punct("<=")) => Op::Le,
                Some(Tok::Punct(">")) => Op::Gt,
                Some(Tok::Punct(">=")) => Op::Ge,
                other => return Err(malformed_query(&format!("unexpected token: '{}'", describe(other.as_ref())))),
            }
        };
        let value = match p.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => Lit::Bool(w.eq_ignore_ascii_case("true")),
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Num(n)) => Lit::Num(n),
            Some(Tok::Date(d)) => Lit::Date(d),
            Some(Tok::DateTime(t)) => Lit::DateTime(t),
            other => return Err(malformed_query(&format!("unexpected token: '{}'", describe(other.as_ref())))),
        };
        check_literal(&field, op, &value)?;
        Ok(Cond::Cmp { field, op, value })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Clone, Debug)]
enum Lit {
    Null,
    Bool(bool),
    Str(String),
    Num(f64),
    Date(jiff::civil::Date),
    DateTime(Timestamp),
}

enum Cond {
    Cmp { field: FieldDef, op: Op, value: Lit },
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

/// SOQL is typed: a datetime field takes an unquoted datetime literal, a text field a
/// quoted string, and so on.
fn check_literal(field: &FieldDef, op: Op, value: &Lit) -> Result<(), Reply> {
    let wrong = |what: &str| {
        Err(bad("INVALID_FIELD", &format!("value of filter criterion for field '{}' must be of type {what}", field.name)))
    };
    if matches!(value, Lit::Null) {
        return if matches!(op, Op::Eq | Op::Ne) { Ok(()) } else { wrong("non-null") };
    }
    if op == Op::Like && !field.kind.is_textual() {
        return Err(bad("INVALID_FIELD", &format!("invalid operator on {} field: LIKE", field.kind.type_name())));
    }
    match (field.kind, value) {
        (k, Lit::Str(_)) if k.is_textual() => Ok(()),
        (k, _) if k.is_textual() => wrong("string and should be enclosed in quotes"),
        (Kind::DateTime, Lit::DateTime(_)) => Ok(()),
        (Kind::DateTime, _) => wrong("dateTime and should not be enclosed in quotes"),
        (Kind::Date, Lit::Date(_)) => Ok(()),
        (Kind::Date, _) => wrong("date and should not be enclosed in quotes"),
        (Kind::Int, Lit::Num(_)) => Ok(()),
        (Kind::Int, _) => wrong("double and should not be enclosed in quotes"),
        (Kind::Bool, Lit::Bool(_)) => Ok(()),
        (Kind::Bool, _) => wrong("boolean and should not be enclosed in quotes"),
        _ => wrong(field.kind.type_name()),
    }
}

impl Cond {
    fn matches(&self, record: &Map<String, Value>) -> bool {
        match self {
            Cond::And(parts) => parts.iter().all(|c| c.matches(record)),
            Cond::Or(parts) => parts.iter().any(|c| c.matches(record)),
            Cond::Not(c) => !c.matches(record),
            Cond::Cmp { field, op, value } => compare(field, *op, record.get(&field.name).filter(|v| !v.is_null()), value),
        }
    }
}

fn compare(field: &FieldDef, op: Op, stored: Option<&Value>, lit: &Lit) -> bool {
    if matches!(lit, Lit::Null) {
        return (op == Op::Eq) == stored.is_none();
    }
    let Some(stored) = stored else { return op == Op::Ne };
    if op == Op::Like {
        let (Some(text), Lit::Str(pattern)) = (stored.as_str(), lit) else { return false };
        return like(&text.to_lowercase(), &pattern.to_lowercase());
    }
    let ord = match (field.kind, lit) {
        (Kind::Id | Kind::Reference(_), Lit::Str(s)) => {
            let a = stored.as_str().unwrap_or_default();
            // 15- and 18-character forms of one id are equal.
            let n = a.len().min(s.len()).min(15);
            if a.len() != s.len() && n == 15 { Some(a[..15].cmp(&s[..15])) } else { Some(a.cmp(s.as_str())) }
        }
        (k, Lit::Str(s)) if k.is_textual() => Some(stored.as_str().unwrap_or_default().to_lowercase().cmp(&s.to_lowercase())),
        (Kind::DateTime, Lit::DateTime(t)) => stored.as_str().and_then(|s| s.parse::<Timestamp>().ok()).map(|v| v.cmp(t)),
        (Kind::Date, Lit::Date(d)) => stored.as_str().and_then(|s| s.parse::<jiff::civil::Date>().ok()).map(|v| v.cmp(d)),
        (Kind::Int, Lit::Num(n)) => stored.as_f64().and_then(|v| v.partial_cmp(n)),
        (Kind::Bool, Lit::Bool(b)) => stored.as_bool().map(|v| v.cmp(b)),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Like => false,
    }
}

/// SOQL `LIKE`: `%` any run, `_` one character, `\%` and `\_` literal.
fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Char(char),
    }
    let mut pat = vec![];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            '%' => P::Any,
            '_' => P::One,
            '\\' => P::Char(chars.next().unwrap_or('\\')),
            c => P::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // matches[i][j]: text[i..] matches pat[j..]
    let mut next = vec![false; pat.len() + 1];
    next[pat.len()] = true;
    for j in (0..pat.len()).rev() {
        next[j] = pat[j] == P::Any && next[j + 1];
    }
    for i in (0..text.len()).rev() {
        let mut cur = vec![false; pat.len() + 1];
        for j in (0..pat.len()).rev() {
            cur[j] = match pat[j] {
                P::Any => cur[j + 1] || next[j],
                P::One => next[j + 1],
                P::Char(c) => c == text[i] && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

fn compare_stored(kind: Kind, a: Option<&Value>, b: Option<&Value>, nulls_first: bool) -> Ordering {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(_), None) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(a), Some(b)) => match kind {
            Kind::DateTime => {
                let pa = a.as_str().and_then(|s| s.parse::<Timestamp>().ok());
                let pb = b.as_str().and_then(|s| s.parse::<Timestamp>().ok());
                pa.cmp(&pb)
            }
            Kind::Int => a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(Ordering::Equal),
            Kind::Id | Kind::Reference(_) => a.as_str().cmp(&b.as_str()),
            _ => a.as_str().map(str::to_lowercase).cmp(&b.as_str().map(str::to_lowercase)),
        },
    }
}

// SOSL.

/// Characters SOSL gives a meaning to; a search term must escape them with `\`.
const SOSL_RESERVED: &[char] = &['?', '&', '|', '!', '{', '}', '[', ']', '(', ')', '^', '~', '*', ':', '\\', '"', '\'', '+', '-'];

fn malformed_search(msg: &str) -> Reply {
    bad("MALFORMED_SEARCH", msg)
}

/// The search words of `FIND {…}` (operators `OR`/`AND` kept as words) and what follows.
fn search_term(q: &str) -> Result<(Vec<String>, &str), Reply> {
    let rest = q.trim_start();
    let Some(after_find) = rest.get(..4).filter(|f| f.eq_ignore_ascii_case("FIND")).map(|_| &rest[4..]) else {
        return Err(malformed_search("line 1:0 no viable alternative at character ' '; a search must start with FIND"));
    };
    let after_find = after_find.trim_start();
    let Some(body) = after_find.strip_prefix('{') else {
        return Err(malformed_search("No search term found. The search term must be enclosed in braces."));
    };
    let mut words = vec![];
    let mut word = String::new();
    let mut chars = body.char_indices();
    let offset = q.len() - body.len();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => word.push(e),
                None => return Err(malformed_search("unterminated escape sequence in the search term")),
            },
            '}' => {
                if !word.is_empty() {
                    words.push(word);
                }
                if words.iter().map(|w| w.chars().count()).sum::<usize>() < 2 {
                    return Err(malformed_search("search term must be longer than one character"));
                }
                return Ok((words, &body[i + 1..]));
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c if SOSL_RESERVED.contains(&c) => {
                return Err(malformed_search(&format!("line 1:{} no viable alternative at character '{c}'", offset + i)));
            }
            c => word.push(c),
        }
    }
    Err(malformed_search("No search term found. The search term must be enclosed in braces."))
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The phone matching rule documented at the top of this file.
fn phone_matches(stored: &str, word: &str) -> bool {
    let (s, w) = (digits(stored), digits(word));
    let shorter = s.len().min(w.len());
    shorter >= MIN_PHONE_MATCH_DIGITS && (s.ends_with(&w) || w.ends_with(&s))
}

impl Org {
    fn sosl(&mut self, version: &str, q: &str) -> Reply {
        match self.run_sosl(version, q) {
            Ok(r) | Err(r) => r,
        }
    }

    fn run_sosl(&mut self, version: &str, q: &str) -> Result<Reply, Reply> {
        let (words, rest) = search_term(q)?;
        let mut p = Parser { toks: tokenize(rest).map_err(|r| retag(r, "MALFORMED_SEARCH"))?, pos: 0 };
        let search = |p: &mut Parser, kw: &str| p.expect_keyword(kw).map_err(|r| retag(r, "MALFORMED_SEARCH"));
        if p.keyword("IN") {
            search(&mut p, "PHONE")?;
            search(&mut p, "FIELDS")?;
        } else {
            return Err(malformed_search("this test server only answers FIND {…} IN PHONE FIELDS"));
        }
        search(&mut p, "RETURNING")?;
        let mut wanted: Vec<(ObjectDef, Vec<Path>, Option<usize>)> = vec![];
        loop {
            let object = p.word()?;
            let obj = self.object(&object).ok_or_else(|| bad("INVALID_TYPE", &format!("sObject type '{object}' is not supported.")))?;
            let mut names = vec![];
            let mut limit = None;
            if p.punct("(") {
                self.select_list(&mut p, &mut names)?;
                if p.keyword("LIMIT") {
                    limit = Some(p.number()?);
                }
                if !p.punct(")") {
                    return Err(malformed_search(&format!("expecting ')', found '{}'", p.describe_next())));
                }
            } else {
                names.push("Id".into());
            }
            let paths = self.resolve_all(&obj, &names)?;
            wanted.push((obj, paths, limit));
            if !p.punct(",") {
                break;
            }
        }
        let limit = if p.keyword("LIMIT") { p.number()? } else { SOSL_DEFAULT_LIMIT };
        if !p.at_end() {
            return Err(malformed_search(&format!("unexpected token: '{}'", p.describe_next())));
        }
        let mut found = vec![];
        for (obj, paths, per_object) in &wanted {
            let hits = self
                .table(obj.name)
                .values()
                .filter(|r| {
                    let phones: Vec<&str> = obj.phone_fields().filter_map(|f| r.get(&f.name).and_then(Value::as_str)).collect();
                    term_matches(&words, &phones)
                })
                .take(per_object.unwrap_or(usize::MAX))
                .map(|r| self.project(version, obj, r, paths))
                .collect::<Vec<_>>();
            found.extend(hits);
        }
        found.truncate(limit);
        Ok(Reply::ok(json!({ "searchRecords": found })))
    }
}

/// Words joined by `OR` / `AND` (the default), evaluated left to right.
fn term_matches(words: &[String], phones: &[&str]) -> bool {
    let hit = |w: &str| phones.iter().any(|p| phone_matches(p, w));
    let mut result: Option<bool> = None;
    let mut op_or = false;
    for w in words {
        if w.eq_ignore_ascii_case("OR") {
            op_or = true;
            continue;
        }
        if w.eq_ignore_ascii_case("AND") {
            op_or = false;
            continue;
        }
        let h = hit(w);
        result = Some(match result {
            None => h,
            Some(r) if op_or => r || h,
            Some(r) => r && h,
        });
        op_or = false;
    }
    result.unwrap_or(false)
}

fn retag(reply: Reply, code: &str) -> Reply {
    let message = reply.body.as_ref().and_then(|b| b.get(0)).and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default().to_string();
    bad(code, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_case_suffix() {
        assert_eq!(id_suffix("003xx0000000101"), "AAA");
        assert_eq!(id_suffix("00Qxx0000000101"), "EAA");
        assert_eq!(id_suffix("001D000000IRFma"), "IAH");
    }

    #[test]
    fn phone_search_compares_digits() {
        let check = |stored: &str, word: &str, want: bool| assert_eq!(phone_matches(stored, word), want, "{stored} vs {word}");
        check("+49 30 12345678", "493012345678", true);
        check("(030) 1234-5678", "3012345678", true);
        check("+43 30 12345678", "3012345678", true);
        check("+49 30 12345678", "03012345678", false);
        check("123", "123", false);
    }

    #[test]
    fn like_patterns() {
        assert!(like("ada lovelace", "%love%"));
        assert!(like("ada", "a_a"));
        assert!(!like("ada", "a\\_a"));
        assert!(like("50%", "50\\%"));
        assert!(!like("abc", "%x%"));
    }

    #[test]
    fn search_terms_must_escape_reserved_characters() {
        assert!(search_term("FIND {+4930} IN PHONE FIELDS").is_err());
        let (words, rest) = search_term("FIND {\\+4930 OR 030} IN PHONE FIELDS").map_err(|_| ()).expect("valid");
        assert_eq!(words, vec!["+4930", "OR", "030"]);
        assert_eq!(rest, " IN PHONE FIELDS");
    }

    #[test]
    fn soql_datetime_literals_take_the_three_documented_forms() {
        assert!(matches!(literal("2024-05-01T10:00:00Z"), Ok(Tok::DateTime(_))));
        assert!(matches!(literal("2024-05-01T10:00:00+02:00"), Ok(Tok::DateTime(_))));
        assert!(matches!(literal("2024-05-01"), Ok(Tok::Date(_))));
        assert!(literal("2024-05-01T10:00:00.000+0000").is_err());
    }
}
