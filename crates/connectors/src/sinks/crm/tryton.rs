//! Tryton (`trytond` with the `party` module) as the CRM, over its JSON-RPC API.
//!
//! Tryton has no OAuth: the adapter logs in with `common.db.login` and sends
//! `Authorization: Session base64(user:uid:session)`. A session Tryton no longer knows is
//! answered with 401; the adapter then logs in again once (one login for all callers) and
//! repeats the call.
//!
//! Callers are parties (`party.party`); their numbers live in contact mechanisms
//! (`party.contact_mechanism`), which Tryton stores formatted in `value` and, with the
//! `phonenumbers` library installed on the server, in E.164 in `value_compact`. Activities
//! become notes (`ir.note`) on the regarded parties. A note's message cannot be changed
//! once saved (Tryton enforces it), so an updated activity replaces its note: the new note
//! is written first, then the old one deleted. Notes have no external-id column; the
//! activity key is kept in the note's last line, `[cxbridge <kind> <key>]`.
//!
//! JSON-RPC errors arrive as HTTP 200 with an `error` member: Tryton's user and validation
//! errors are permanent (with Tryton's own message), concurrency errors, timeouts, 5xx
//! and connection failures transient.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, DisplayField, EntitySpec, RecordRef, SearchQuery, TimelineEntry};
use cxbridge_domain::mapping::FieldRule;
use cxbridge_domain::phone::PhoneNormalizer;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::http::{classify, retry_after};
use crate::client::{describe, truncate};
use crate::client::limits::{Limits, RateLimiter};
use crate::client::oauth::Secret;
use super::string_fields;

/// `[crm.tryton]`: where Tryton is and who the hub is there.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrytonConfig {
    /// Base URL of `trytond`, without the database: `http://127.0.0.1:8000`.
    pub url: String,
    /// The Tryton database; calls go to `{url}/{database}/rpc/`.
    pub database: String,
    /// The Tryton user the hub logs in as (default `admin`). It needs to read parties and
    /// contact mechanisms, create and write them (workflows), and create and delete notes.
    #[serde(default = "default_user")]
    pub user: String,
    /// The user's password. Better left out of the file: the server reads
    /// `CXBRIDGE_CRM_PASSWORD` instead.
    #[serde(default)]
    pub password: Option<String>,
    /// How long one call may take before it counts as a transient failure (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight at once on this connection (default 8).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_user() -> String {
    "admin".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight() -> u32 {
    8
}

impl std::fmt::Debug for TrytonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrytonConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout_ms", &self.timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// Why a [`TrytonConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrytonConfigError {
    #[error("[crm.tryton] url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("[crm.tryton] database `{0}` is not a database name (empty, or holds `/`, `?`, `#` or spaces)")]
    InvalidDatabase(String),
    #[error("[crm.tryton] user must not be empty")]
    EmptyUser,
    #[error("no Tryton password: set CXBRIDGE_CRM_PASSWORD (or [crm.tryton] password)")]
    MissingPassword,
    #[error("[crm.tryton] {0} must be greater than 0")]
    Zero(&'static str),
}

/// The Tryton model of parties, which identification and the change feed treat specially
/// (numbers in contact mechanisms rather than in fields).
const PARTY_MODEL: &str = "party.party";
/// Contact-mechanism types that hold phone numbers a caller can come from.
const PHONE_TYPES: [&str; 2] = ["phone", "mobile"];
/// Contact-mechanism types flattened into a party's fields.
const FLATTENED_TYPES: [&str; 3] = ["phone", "mobile", "email"];
/// A search without a limit returns at most this many records.
const DEFAULT_SEARCH_LIMIT: usize = 50;
/// Records per change-feed page.
const CHANGES_PAGE: usize = 200;
/// Subtracted from the server's clock when a sync pass starts: the `Date` header has whole
/// seconds, and a transaction may commit a moment after it stamped its rows.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);
/// Note lines `[cxbridge <kind> <key>]` carry the activity key.
const MARKER_PREFIX: &str = "[cxbridge ";

/// The entities of a Tryton CRM when the config declares none: parties, with the first
/// phone, mobile and e-mail contact mechanisms as `phone`, `mobile` and `email` (further
/// ones as `phone_2`, `mobile_2`, …).
pub fn default_entities() -> Vec<EntitySpec> {
    let df = |label: &str, field: &str| DisplayField { label: label.into(), field: field.into() };
    vec![EntitySpec {
        name: "party".into(),
        phone_fields: vec!["phone".into(), "mobile".into()],
        email_fields: vec!["email".into()],
        display_fields: vec![df("Name", "name"), df("Phone", "phone"), df("Mobile", "mobile"), df("E-mail", "email"), df("Code", "code")],
        title_field: "name".into(),
        relations: vec![],
        identify: true,
        collection: Some(PARTY_MODEL.into()),
        id_field: Some("id".into()),
        sensitive: vec![],
    }]
}

/// The mapping that builds a note: `subject` becomes its first line, `message` the rest.
pub fn default_mapping() -> Vec<FieldRule> {
    let template = |target: &str, template: &str| FieldRule {
        target: target.into(),
        source: None,
        template: Some(template.into()),
        transform: None,
        value: None,
    };
    vec![
        template("subject", "{{direction|capitalize}} {{channel}} {{customer.number}} ({{outcome}})"),
        template(
            "message",
            "Direction: {{direction}}\n\
             Number: {{customer.e164}}\n\
             Outcome: {{outcome}}\n\
             Duration: {{duration_seconds|hms}}\n\
             Agent: {{agent}}\n\
             Queue: {{queue}}\n\
             Disposition: {{disposition.code}}\n\
             Notes: {{notes}}\n\
             Summary: {{summary}}\n\
             Transcript: {{transcript}}\n\
             Recording: {{recording_url}}",
        ),
    ]
}

/// A CRM connection to one Tryton database.
pub struct Tryton {
    rpc: Rpc,
    normalizer: PhoneNormalizer,
    entities: Vec<EntitySpec>,
}

impl Tryton {
    pub fn new(config: &TrytonConfig, password: Secret, normalizer: PhoneNormalizer, http: reqwest::Client) -> Result<Self, TrytonConfigError> {
        if let Some(reason) = crate::client::insecure_url(&config.url) {
            return Err(TrytonConfigError::InvalidUrl { url: config.url.clone(), reason });
        }
        let database = config.database.trim();
        if database.is_empty() || database.contains(['/', '?', '#', ' ']) {
            return Err(TrytonConfigError::InvalidDatabase(config.database.clone()));
        }
        if config.user.trim().is_empty() {
            return Err(TrytonConfigError::EmptyUser);
        }
        if password.is_empty() {
            return Err(TrytonConfigError::MissingPassword);
        }
        if config.timeout_ms == 0 {
            return Err(TrytonConfigError::Zero("timeout_ms"));
        }
        if config.max_in_flight == 0 {
            return Err(TrytonConfigError::Zero("max_in_flight"));
        }
        let base = config.url.trim_end_matches('/').to_string();
        let rpc = Rpc {
            client: http,
            endpoint: format!("{base}/{database}/rpc/"),
            base,
            database: database.to_string(),
            user: config.user.clone(),
            password,
            timeout: Duration::from_millis(config.timeout_ms),
            // Tryton publishes no request quota; only concurrency is bounded.
            limiter: RateLimiter::new(Limits { requests_per_window: 1_000_000, window: Duration::from_secs(1), max_in_flight: config.max_in_flight }),
            session: Mutex::new(None),
            logins: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        };
        Ok(Self { rpc, normalizer, entities: default_entities() })
    }

    /// The entities activities and timelines may regard (default: [`default_entities`]);
    /// a record's entity name is turned into its Tryton model through them.
    pub fn with_entities(mut self, entities: Vec<EntitySpec>) -> Self {
        self.entities = entities;
        self
    }

    /// How many times this connection logged in (for status pages and tests).
    pub fn logins(&self) -> u64 {
        self.rpc.logins.load(Ordering::Relaxed)
    }

    /// The Tryton model behind `entity`: its declared collection, or the name itself when it
    /// already is a model name (`party.address`).
    fn model_of(&self, entity: &str) -> Result<String, CrmError> {
        if let Some(spec) = self.entities.iter().find(|e| e.name == entity) {
            return Ok(collection(spec).to_string());
        }
        if entity.contains('.') {
            return Ok(entity.to_string());
        }
        Err(permanent(format!("unknown entity `{entity}`: no Tryton model is declared for it")))
    }

    async fn search_read(&self, model: &str, domain: Value, limit: Option<usize>, order: Value, fields: &[String]) -> Result<Vec<Value>, CrmError> {
        let result = self.rpc.model(model, "search_read", vec![domain, json!(0), json!(limit), order, json!(fields)]).await?;
        rows(result, model)
    }

    /// Reads records of `spec` and turns them into candidates, in Tryton's order.
    async fn candidates(&self, spec: &EntitySpec, domain: Value, limit: Option<usize>, order: Value) -> Result<Vec<Candidate>, CrmError> {
        let records = self.search_read(collection(spec), domain, limit, order, &read_fields(spec)).await?;
        Ok(records.iter().filter_map(|r| record_fields(spec, r)).map(|(id, fields)| Candidate::from_fields(spec, &id, fields)).collect())
    }

    async fn find_one(&self, spec: &EntitySpec, id: &str) -> Result<Option<Candidate>, CrmError> {
        let id = record_id(spec, id)?;
        Ok(self.candidates(spec, json!([["id", "=", id]]), Some(1), Value::Null).await?.into_iter().next())
    }

    async fn read_back(&self, spec: &EntitySpec, id: &str) -> Result<Candidate, CrmError> {
        self.find_one(spec, id).await?.ok_or_else(|| permanent(format!("{} `{id}` does not exist in Tryton", spec.name)))
    }

    /// The stored form of a number typed into a workflow: E.164 when it parses with the
    /// hub's region, so Tryton accepts national notations for parties without an address
    /// country; as typed otherwise, for Tryton to judge.
    fn phone_value(&self, raw: &str) -> String {
        self.normalizer.index_key(raw).unwrap_or_else(|| raw.to_string())
    }

    /// The search clause for one exact-match filter of a workflow search.
    fn filter_clause(&self, spec: &EntitySpec, field: &str, value: &str) -> Result<Value, CrmError> {
        let field = filter_field(field)?;
        if !is_party(spec) {
            return Ok(json!([field, "=", value]));
        }
        Ok(match field {
            "phone" | "mobile" => {
                let notations = match self.normalizer.index_key(value) {
                    Some(e164) => self.normalizer.notations(&e164),
                    None => vec![value.to_string()],
                };
                json!(["contact_mechanisms", "where", [["type", "=", field], ["value_compact", "in", notations]]])
            }
            "email" => json!(["contact_mechanisms", "where", [["type", "=", "email"], ["value", "ilike", escape_like(value)]]]),
            other => json!([other, "=", value]),
        })
    }

    /// One note per regarded record, replacing any earlier note of the same activity.
    async fn put_note(&self, resource: &str, text: &str, key: &str) -> Result<i64, CrmError> {
        let existing = self.notes_of(resource, key).await?;
        if let Some(same) = existing.iter().rev().find(|(_, message)| message == text).map(|(id, _)| *id) {
            let stale: Vec<i64> = existing.iter().map(|(id, _)| *id).filter(|id| *id != same).collect();
            self.delete_notes(&stale).await?;
            return Ok(same);
        }
        let created = self.rpc.model("ir.note", "create", vec![json!([{ "resource": resource, "message": text }])]).await.map_err(|e| match e {
            // Tryton words a reference to a missing record as a missing value.
            CrmError::Permanent { message } => permanent(format!("{message} (the note was for `{resource}`: does that record exist?)")),
            other => other,
        })?;
        let id = created
            .as_array()
            .and_then(|ids| ids.first())
            .and_then(Value::as_i64)
            .ok_or_else(|| unreadable("ir.note.create", &created))?;
        // Written first, deleted second: an interruption leaves two notes, which the next
        // upsert cleans up, rather than none.
        let stale: Vec<i64> = existing.iter().map(|(id, _)| *id).collect();
        self.delete_notes(&stale).await?;
        Ok(id)
    }

    /// Notes on `resource` carrying the marker of `key`, oldest first, with their messages.
    async fn notes_of(&self, resource: &str, key: &str) -> Result<Vec<(i64, String)>, CrmError> {
        let pattern = format!("%{}% {}]%", escape_like(MARKER_PREFIX), escape_like(&marker_key(key)));
        let domain = json!([["resource", "=", resource], ["message", "ilike", pattern]]);
        let notes = self.search_read("ir.note", domain, None, json!([["id", "ASC"]]), &["message".to_string()]).await?;
        Ok(notes
            .iter()
            .filter_map(|n| {
                let id = n.get("id")?.as_i64()?;
                let message = n.get("message")?.as_str()?.to_string();
                let (_, found) = marker_of(&message)?;
                (found == marker_key(key)).then_some((id, message))
            })
            .collect())
    }

    async fn delete_notes(&self, ids: &[i64]) -> Result<(), CrmError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.rpc.model("ir.note", "delete", vec![json!(ids)]).await.map(drop)
    }

    /// The first contact mechanism of each flattened type a party has: type → id.
    async fn first_mechanisms(&self, party: i64) -> Result<BTreeMap<String, (i64, String)>, CrmError> {
        let fields = ["contact_mechanisms.type", "contact_mechanisms.value"].map(String::from);
        let rows = self.search_read(PARTY_MODEL, json!([["id", "=", party]]), Some(1), Value::Null, &fields).await?;
        let mut first = BTreeMap::new();
        for m in rows.first().and_then(|r| r.get("contact_mechanisms.")).and_then(Value::as_array).into_iter().flatten() {
            let (Some(id), Some(kind)) = (m.get("id").and_then(Value::as_i64), m.get("type").and_then(Value::as_str)) else { continue };
            let value = m.get("value").and_then(Value::as_str).unwrap_or_default().to_string();
            first.entry(kind.to_string()).or_insert((id, value));
        }
        Ok(first)
    }
}

#[async_trait]
impl Crm for Tryton {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        // Tryton holds E.164 in `value_compact`; the other notations find numbers stored
        // by a server without `phonenumbers` (value_compact then is the value as typed).
        let notations = self.normalizer.notations(e164);
        let mut found = Vec::new();
        for spec in entities.iter().filter(|e| e.identify) {
            let remaining = limit.saturating_sub(found.len());
            if remaining == 0 {
                break;
            }
            let domain = if is_party(spec) {
                json!([["contact_mechanisms", "where", [["value_compact", "in", notations], ["type", "in", PHONE_TYPES]]]])
            } else if spec.phone_fields.is_empty() {
                continue;
            } else {
                let mut any = vec![json!("OR")];
                any.extend(spec.phone_fields.iter().map(|f| json!([f, "in", notations])));
                json!([any])
            };
            found.extend(self.candidates(spec, domain, Some(remaining), json!([["id", "ASC"]])).await?);
        }
        Ok(found)
    }

    /// Follows a declared relation whose field is a Many2One or Reference. The default
    /// party entity declares none: the `party` module has no parent/company link (that
    /// needs `party_relationship`), so unknown relations are refused like the built-in CRM
    /// does, and an unset one is `None`.
    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        let Some(rel) = spec.relation(relation) else {
            return Err(permanent(format!("entity `{}` has no relation `{relation}`", spec.name)));
        };
        let Some(target_spec) = self.entities.iter().find(|e| e.name == rel.entity) else {
            return Err(permanent(format!("relation `{relation}` names unknown entity `{}`", rel.entity)));
        };
        let id = record_id(spec, &record.id)?;
        let rows = self.search_read(collection(spec), json!([["id", "=", id]]), Some(1), Value::Null, std::slice::from_ref(&rel.field)).await?;
        let target = match rows.first().and_then(|r| r.get(&rel.field)) {
            Some(Value::Number(n)) => n.to_string(),
            // A Reference field: `model,id`.
            Some(Value::String(s)) => match s.rsplit_once(',') {
                Some((_, id)) if !id.is_empty() => id.to_string(),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        self.find_one(target_spec, &target).await
    }

    /// Writes one note per regarded record (Tryton notes hang on a single record, and each
    /// party's notes tab should show the conversation); returns the note on the first.
    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        if activity.regarding.is_empty() {
            return Err(permanent(format!("activity `{}` regards no record; a Tryton note needs one (see [crm] unmatched)", activity.key)));
        }
        let text = note_text(activity);
        let mut resources: Vec<String> = Vec::new();
        for r in &activity.regarding {
            let resource = format!("{},{}", self.model_of(&r.entity)?, record_number(&r.id)?);
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        let mut first = None;
        for resource in &resources {
            let id = self.put_note(resource, &text, &activity.key).await?;
            first.get_or_insert(id);
        }
        Ok(first.map(|id| id.to_string()).unwrap_or_default())
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        let mut domain = Vec::new();
        if let Some(text) = query.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            domain.push(json!([spec.title_field, "ilike", format!("%{}%", escape_like(text))]));
        }
        for (field, value) in &query.filters {
            domain.push(self.filter_clause(spec, field, value)?);
        }
        let limit = if query.limit == 0 { DEFAULT_SEARCH_LIMIT } else { query.limit };
        self.candidates(spec, Value::Array(domain), Some(limit), json!([[spec.title_field, "ASC"], ["id", "ASC"]])).await
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let mut values = serde_json::Map::new();
        let mut mechanisms = Vec::new();
        for (field, value) in fields.iter().filter(|(_, v)| !v.trim().is_empty()) {
            if is_party(spec) && FLATTENED_TYPES.contains(&field.as_str()) {
                let value = if PHONE_TYPES.contains(&field.as_str()) { self.phone_value(value) } else { value.clone() };
                mechanisms.push(json!({ "type": field, "value": value }));
            } else {
                values.insert(field.clone(), json!(value));
            }
        }
        if !mechanisms.is_empty() {
            values.insert("contact_mechanisms".into(), json!([["create", mechanisms]]));
        }
        let method = format!("{}.create", collection(spec));
        let mut attempt = 0;
        let created = loop {
            attempt += 1;
            match self.rpc.model(collection(spec), "create", vec![json!([values.clone()])]).await {
                Err(e) if attempt < 4 && is_code_race(&e) => tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await,
                other => break other?,
            }
        };
        let id = created.as_array().and_then(|ids| ids.first()).and_then(Value::as_i64).ok_or_else(|| unreadable(&method, &created))?;
        self.read_back(spec, &id.to_string()).await
    }

    /// Changes the given fields; for a party, `phone`/`mobile`/`email` change its first
    /// contact mechanism of that type (added when missing, removed when set empty).
    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let number = record_id(spec, id)?;
        let mut values = serde_json::Map::new();
        let mut actions = Vec::new();
        let mechanisms = if is_party(spec) && fields.keys().any(|f| FLATTENED_TYPES.contains(&f.as_str())) {
            if self.find_one(spec, id).await?.is_none() {
                return Err(permanent(format!("{} `{id}` does not exist in Tryton", spec.name)));
            }
            self.first_mechanisms(number).await?
        } else {
            BTreeMap::new()
        };
        for (field, value) in fields {
            if !(is_party(spec) && FLATTENED_TYPES.contains(&field.as_str())) {
                values.insert(field.clone(), json!(value));
                continue;
            }
            let value = if PHONE_TYPES.contains(&field.as_str()) && !value.trim().is_empty() { self.phone_value(value) } else { value.trim().to_string() };
            match mechanisms.get(field) {
                Some((mid, _)) if value.is_empty() => actions.push(json!(["delete", [mid]])),
                Some((mid, current)) if *current != value => actions.push(json!(["write", [mid], { "value": value }])),
                Some(_) => {}
                None if value.is_empty() => {}
                None => actions.push(json!(["create", [{ "type": field, "value": value }]])),
            }
        }
        if !actions.is_empty() {
            values.insert("contact_mechanisms".into(), Value::Array(actions));
        }
        if !values.is_empty() {
            self.rpc.model(collection(spec), "write", vec![json!([number]), Value::Object(values)]).await?;
        }
        self.read_back(spec, id).await
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        let resource = format!("{},{}", self.model_of(&record.entity)?, record_number(&record.id)?);
        let fields = ["message", "create_date", "create_uid.rec_name"].map(String::from);
        let notes = self
            .search_read("ir.note", json!([["resource", "=", resource]]), Some(limit), json!([["create_date", "DESC"], ["id", "DESC"]]), &fields)
            .await?;
        Ok(notes.iter().filter_map(timeline_entry).collect())
    }

    /// Polls records whose `last_modified_at` (or, for parties, a contact mechanism's) is
    /// at or after the cursor, a page at a time by id. The cursor of the next pass is the
    /// server's clock when this pass began (its `Date` header), less a margin: records
    /// changed during a long pass come again rather than never. Deletions cannot be seen
    /// by polling; a full sync (`None`) rebuilds.
    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        let position = Position::parse(cursor)?;
        let mut domain = Vec::new();
        if let Some(since) = position.since {
            let at = tryton_datetime(since);
            domain.push(if is_party(spec) {
                json!(["OR", ["last_modified_at", ">=", at], ["contact_mechanisms.last_modified_at", ">=", at]])
            } else {
                json!(["last_modified_at", ">=", at])
            });
        }
        if position.after_id > 0 {
            domain.push(json!(["id", ">", position.after_id]));
        }
        let params = vec![Value::Array(domain), json!(0), json!(CHANGES_PAGE + 1), json!([["id", "ASC"]]), json!(read_fields(spec))];
        let reply = self.rpc.exchange_model(collection(spec), "search_read", params).await?;
        let mut records = rows(reply.result, collection(spec))?;
        let more = records.len() > CHANGES_PAGE;
        records.truncate(CHANGES_PAGE);
        let next = position.next.unwrap_or_else(|| {
            let now = reply.date.unwrap_or_else(Timestamp::now);
            now.checked_sub(CLOCK_MARGIN).unwrap_or(now)
        });
        let upserts: Vec<(String, BTreeMap<String, String>)> = records.iter().filter_map(|r| record_fields(spec, r)).collect();
        let cursor = match (more, records.last().and_then(|r| r.get("id")).and_then(Value::as_i64)) {
            (true, Some(last)) => Position { since: position.since, after_id: last, next: Some(next) }.to_string(),
            _ => position.since.map_or(next, |since| since.max(next)).to_string(),
        };
        Ok(ChangePage { upserts, deletes: vec![], cursor, more, restarted: None })
    }
}

/// Where a change-feed pass stands: `since` (none on a full sync), the last id delivered,
/// and the cursor the pass ends with. Between passes only `next` remains, as an RFC 3339
/// timestamp; within one it reads `since|after_id|next`.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    since: Option<Timestamp>,
    after_id: i64,
    next: Option<Timestamp>,
}

impl Position {
    fn parse(cursor: Option<&str>) -> Result<Self, CrmError> {
        let bad = |c: &str| permanent(format!("`{c}` is not a Tryton change cursor (an RFC 3339 time, or `since|id|next` within a pass)"));
        let Some(c) = cursor.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(Self { since: None, after_id: 0, next: None });
        };
        let time = |s: &str| s.parse::<Timestamp>().map_err(|_| bad(c));
        match c.split('|').collect::<Vec<_>>().as_slice() {
            [since] => Ok(Self { since: Some(time(since)?), after_id: 0, next: None }),
            [since, after, next] => Ok(Self {
                since: if since.is_empty() { None } else { Some(time(since)?) },
                after_id: after.parse().map_err(|_| bad(c))?,
                next: Some(time(next)?),
            }),
            _ => Err(bad(c)),
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self.since.map(|t| t.to_string()).unwrap_or_default();
        let next = self.next.map(|t| t.to_string()).unwrap_or_default();
        write!(f, "{since}|{}|{next}", self.after_id)
    }
}

fn collection(spec: &EntitySpec) -> &str {
    spec.collection.as_deref().unwrap_or(&spec.name)
}

fn is_party(spec: &EntitySpec) -> bool {
    collection(spec) == PARTY_MODEL
}

/// What to read of a record of `spec`: what its candidate shows and its numbers.
fn read_fields(spec: &EntitySpec) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut add = |f: &str| {
        if !fields.iter().any(|x| x == f) {
            fields.push(f.to_string());
        }
    };
    add(&spec.title_field);
    if is_party(spec) {
        add("code");
        add("contact_mechanisms.type");
        add("contact_mechanisms.value");
    }
    for f in spec.phone_fields.iter().chain(&spec.email_fields).chain(spec.display_fields.iter().map(|d| &d.field)) {
        if !(is_party(spec) && is_flattened(f)) {
            add(f);
        }
    }
    fields
}

/// `phone`, `mobile_2`, … : fields the adapter makes from contact mechanisms.
fn is_flattened(field: &str) -> bool {
    let base = field.split_once('_').filter(|(_, n)| n.parse::<u32>().is_ok()).map_or(field, |(b, _)| b);
    FLATTENED_TYPES.contains(&base)
}

/// A record as the hub sees it: its id and string fields, with a party's contact
/// mechanisms flattened (`phone`, `mobile`, `email`, then `phone_2`, …).
fn record_fields(spec: &EntitySpec, record: &Value) -> Option<(String, BTreeMap<String, String>)> {
    let id = record.get("id")?.as_i64()?.to_string();
    let mut fields = string_fields(record);
    fields.remove("id");
    if is_party(spec) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for m in record.get("contact_mechanisms.").and_then(Value::as_array).into_iter().flatten() {
            let (Some(kind), Some(value)) = (m.get("type").and_then(Value::as_str), m.get("value").and_then(Value::as_str)) else { continue };
            let Some(kind) = FLATTENED_TYPES.iter().find(|t| **t == kind) else { continue };
            let n = seen.entry(kind).or_insert(0);
            *n += 1;
            let name = if *n == 1 { kind.to_string() } else { format!("{kind}_{n}") };
            fields.insert(name, value.to_string());
        }
    }
    Some((id, fields))
}

/// The numeric id of a record of `spec`.
fn record_id(spec: &EntitySpec, id: &str) -> Result<i64, CrmError> {
    id.trim().parse().map_err(|_| permanent(format!("{} `{id}` is not a Tryton id (a number)", spec.name)))
}

fn record_number(id: &str) -> Result<i64, CrmError> {
    id.trim().parse().map_err(|_| permanent(format!("`{id}` is not a Tryton record id (a number)")))
}

/// The note of an activity: the subject, the message (lines of an empty `Label:` left
/// out), or every other field as `name: value` when the mapping has no `message`; then the
/// key's marker line.
fn note_text(activity: &Activity) -> String {
    let mut lines: Vec<String> = Vec::new();
    let subject = activity.fields.get("subject").map(display).unwrap_or_default();
    if !subject.trim().is_empty() {
        lines.push(subject.trim().to_string());
    }
    match activity.fields.get("message") {
        Some(message) => lines.extend(display(message).lines().filter(|l| !is_empty_label(l)).map(str::to_string)),
        None => lines.extend(
            activity
                .fields
                .iter()
                .filter(|(k, v)| k.as_str() != "subject" && !v.is_null())
                .map(|(k, v)| format!("{k}: {}", display(v)))
                .filter(|l| !is_empty_label(l)),
        ),
    }
    lines.push(format!("{MARKER_PREFIX}{} {}]", marker_kind(&activity.kind), marker_key(&activity.key)));
    lines.join("\n")
}

fn is_empty_label(line: &str) -> bool {
    let t = line.trim();
    t.ends_with(':') && t.matches(':').count() == 1
}

fn display(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The kind as the marker line holds it: one word, since the key follows the first space.
fn marker_kind(kind: &str) -> String {
    let word = kind.split_whitespace().collect::<Vec<_>>().join("_");
    if word.is_empty() { "activity".into() } else { word }
}

/// The key as the marker line holds it (one line).
fn marker_key(key: &str) -> String {
    one_line(key)
}

/// The (kind, key) of a note's marker line, if it has one.
fn marker_of(message: &str) -> Option<(String, String)> {
    message.lines().rev().find_map(|line| {
        let inner = line.trim_end().strip_prefix(MARKER_PREFIX)?.strip_suffix(']')?;
        let (kind, key) = inner.split_once(' ')?;
        Some((kind.to_string(), key.to_string()))
    })
}

fn timeline_entry(note: &Value) -> Option<TimelineEntry> {
    let id = note.get("id")?.as_i64()?.to_string();
    let message = note.get("message").and_then(Value::as_str).unwrap_or_default();
    let marker = marker_of(message);
    let body: Vec<&str> = message.lines().filter(|l| !(marker.is_some() && l.starts_with(MARKER_PREFIX))).collect();
    let mut fields = BTreeMap::new();
    fields.insert("message".to_string(), body.join("\n"));
    if let Some(author) = note.get("create_uid.").and_then(|u| u.get("rec_name")).and_then(Value::as_str) {
        fields.insert("author".to_string(), author.to_string());
    }
    if let Some((_, key)) = &marker {
        fields.insert("key".to_string(), key.clone());
    }
    Some(TimelineEntry {
        id,
        kind: marker.map_or_else(|| "note".to_string(), |(kind, _)| kind),
        subject: body.first().map(|s| s.to_string()).unwrap_or_default(),
        at: note.get("create_date").and_then(from_tryton_datetime).map(|t| t.to_string()).unwrap_or_default(),
        fields,
    })
}

/// A field a search may filter on: one plain field name of the model. Tryton reads a dotted
/// name (`party.pin`, `create_uid.password_hash`) as a path through relations, so a caller
/// could test values of records it was never shown; such names are refused.
fn filter_field(field: &str) -> Result<&str, CrmError> {
    let mut chars = field.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_well && field.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(field)
    } else {
        Err(CrmError::Permanent { message: format!("`{field}` is not a field a search may filter on: use a field name of the model (letters, digits, `_`, no dots)") })
    }
}

/// `value` matched literally by Tryton's `like`/`ilike` (escape character `\`).
fn escape_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Tryton's JSON form of a (UTC, naive) datetime.
fn tryton_datetime(at: Timestamp) -> Value {
    let dt = at.to_zoned(TimeZone::UTC).datetime();
    json!({
        "__class__": "datetime",
        "year": dt.year(), "month": dt.month(), "day": dt.day(),
        "hour": dt.hour(), "minute": dt.minute(), "second": dt.second(),
        "microsecond": dt.subsec_nanosecond() / 1000,
    })
}

fn from_tryton_datetime(v: &Value) -> Option<Timestamp> {
    if v.get("__class__")?.as_str()? != "datetime" {
        return None;
    }
    let part = |k: &str| v.get(k).and_then(Value::as_i64);
    let small = |k: &str| part(k).and_then(|n| i8::try_from(n).ok());
    let dt = jiff::civil::DateTime::new(
        i16::try_from(part("year")?).ok()?,
        small("month")?,
        small("day")?,
        small("hour")?,
        small("minute")?,
        small("second")?,
        i32::try_from(part("microsecond").unwrap_or(0) * 1000).ok()?,
    )
    .ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

fn rows(result: Value, model: &str) -> Result<Vec<Value>, CrmError> {
    match result {
        Value::Array(rows) => Ok(rows),
        other => Err(unreadable(&format!("{model}.search_read"), &other)),
    }
}

fn permanent(message: String) -> CrmError {
    CrmError::Permanent { message }
}

fn transient(message: String) -> CrmError {
    CrmError::Transient { message, retry_after: None }
}

/// Two parties created at the same moment can draw the same code from Tryton's sequence
/// (its SQLite backend has no real sequences); Tryton then refuses the second one and
/// nothing was created, so the create is safe to send again.
fn is_code_race(e: &CrmError) -> bool {
    matches!(e, CrmError::Permanent { message } if message.contains("code") && message.contains("must be unique"))
}

fn unreadable(method: &str, got: &Value) -> CrmError {
    transient(format!("Tryton answered {method} with something unexpected: {}", truncate(&got.to_string())))
}

/// One JSON-RPC session with a Tryton database.
struct Rpc {
    client: reqwest::Client,
    /// `{url}/{database}/rpc/`.
    endpoint: String,
    base: String,
    database: String,
    user: String,
    password: Secret,
    timeout: Duration,
    limiter: RateLimiter,
    session: Mutex<Option<Session>>,
    logins: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Clone)]
struct Session {
    /// `Session base64(user:uid:key)`.
    header: Arc<str>,
}

/// A JSON-RPC result and the server's clock when it answered.
struct Reply {
    result: Value,
    date: Option<Timestamp>,
}

enum Posted {
    Answer(Reply),
    /// 401: unknown or expired session, or (on login) a wrong password.
    Unauthorized,
}

impl Rpc {
    async fn model(&self, model: &str, method: &str, args: Vec<Value>) -> Result<Value, CrmError> {
        Ok(self.exchange_model(model, method, args).await?.result)
    }

    /// Calls `model.<model>.<method>` with `args` and an empty context.
    async fn exchange_model(&self, model: &str, method: &str, mut args: Vec<Value>) -> Result<Reply, CrmError> {
        args.push(json!({}));
        self.exchange(&format!("model.{model}.{method}"), Value::Array(args)).await
    }

    async fn exchange(&self, method: &str, params: Value) -> Result<Reply, CrmError> {
        let mut logged_in_again = false;
        loop {
            let session = self.session().await?;
            match self.post(method, &params, Some(&session.header)).await? {
                Posted::Answer(reply) => return Ok(reply),
                Posted::Unauthorized if !logged_in_again => {
                    // Expired (`[session] max_age`) or logged out: log in once more.
                    self.forget(&session).await;
                    logged_in_again = true;
                }
                Posted::Unauthorized => {
                    return Err(permanent(format!("Tryton refused a fresh session of user `{}` for {method}", self.user)));
                }
            }
        }
    }

    /// The current session; logs in if there is none. Concurrent callers share one login.
    async fn session(&self) -> Result<Session, CrmError> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref() {
            return Ok(s.clone());
        }
        let fresh = self.login().await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// Tryton refused `stale`: drop it, unless another caller already replaced it.
    async fn forget(&self, stale: &Session) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| s.header == stale.header) {
            *current = None;
        }
    }

    async fn login(&self) -> Result<Session, CrmError> {
        let params = json!([self.user, { "password": self.password.expose() }, "en"]);
        let reply = match self.post("common.db.login", &params, None).await? {
            Posted::Answer(reply) => reply,
            Posted::Unauthorized => {
                return Err(permanent(format!(
                    "Tryton login failed: user `{}` or its password is wrong for database `{}` at {}",
                    self.user, self.database, self.base
                )));
            }
        };
        let (uid, key) = match reply.result.as_array().map(Vec::as_slice) {
            Some([uid, key, ..]) => match (uid.as_i64(), key.as_str()) {
                (Some(uid), Some(key)) => (uid, key.to_string()),
                _ => return Err(unreadable("common.db.login", &reply.result)),
            },
            _ => return Err(unreadable("common.db.login", &reply.result)),
        };
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(user = %self.user, database = %self.database, "logged in to Tryton");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{uid}:{key}", self.user));
        Ok(Session { header: format!("Session {token}").into() })
    }

    async fn post(&self, method: &str, params: &Value, auth: Option<&str>) -> Result<Posted, CrmError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "id": id, "method": method, "params": params });
        let mut request = self.client.post(&self.endpoint).json(&body).timeout(self.timeout);
        if let Some(auth) = auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let permit = self.limiter.acquire(1).await;
        let result = request.send().await;
        drop(permit);
        let response = result.map_err(|e| transient(format!("Tryton at {} ({method}): {}", self.base, describe(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| transient(format!("Tryton at {} ({method}): reading the answer: {}", self.base, describe(&e))))?;
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Posted::Unauthorized);
        }
        if !status.is_success() {
            return Err(self.http_error(method, status, &headers, &text).await);
        }
        let answer: Value = serde_json::from_str(&text)
            .map_err(|e| transient(format!("Tryton sent an unreadable answer to {method} ({e}): {}", truncate(&text))))?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            return Err(rpc_error(method, error));
        }
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| Timestamp::try_from(t).ok());
        Ok(Posted::Answer(Reply { result: answer.get("result").cloned().unwrap_or(Value::Null), date }))
    }

    async fn http_error(&self, method: &str, status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str) -> CrmError {
        let wait = retry_after(headers);
        let detail = match status.as_u16() {
            404 => format!("no database `{}` there (check `url` and `database`)", self.database),
            // Tryton's login throttle after repeated failures (`[session] max_attempt`).
            429 => "too many requests or failed logins; Tryton asks to wait".to_string(),
            _ => plain_text(body),
        };
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            self.limiter.pause(wait.unwrap_or(Duration::from_secs(1))).await;
        }
        classify(status, format!("Tryton at {} answered {} to {method}: {detail}", self.base, status.as_u16()), wait)
    }
}

/// A JSON-RPC `error` as a [`CrmError`]. Tryton sends `[name, args]` for its own
/// exceptions and `[text, traceback]` for anything else.
fn rpc_error(method: &str, error: &Value) -> CrmError {
    let kind = error.get(0).and_then(Value::as_str).unwrap_or_default();
    let args = error.get(1).cloned().unwrap_or(Value::Null);
    let text = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or_default().trim().to_string();
    match kind {
        "UserError" => {
            let (message, description) = (text(0), text(1));
            let full = if description.is_empty() { message } else { format!("{message} ({description})") };
            permanent(format!("Tryton refused {method}: {full}"))
        }
        "UserWarning" => permanent(format!("Tryton asks for a confirmation the hub cannot give on {method}: {}", text(1))),
        "LoginException" => permanent(format!("Tryton wants `{}` to log in ({method}): {}", text(0), text(1))),
        "ConcurrencyException" => transient(format!("Tryton on {method}: {}", args.as_str().unwrap_or("records were modified in the meanwhile"))),
        // Unknown model or field (a KeyError) and other server faults: the same request
        // fails the same way again.
        other => permanent(format!("Tryton failed on {method}: {}", truncate(if other.is_empty() { "unknown error" } else { other }))),
    }
}

/// An HTML error page reduced to its words.
fn plain_text(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    truncate(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxbridge_domain::conversation::Direction;
    use cxbridge_domain::mapping::Mapping;

    fn activity(fields: &[(&str, Value)]) -> Activity {
        Activity {
            key: "cxbridge:c-1".into(),
            kind: "phonecall".into(),
            regarding: vec![RecordRef::new("party", "1")],
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            direction: Direction::Inbound,
            on_behalf_of: None,
        }
    }

    #[test]
    fn the_default_mapping_is_valid() {
        let mapping = Mapping { fields: default_mapping(), ..Mapping::default() };
        assert_eq!(mapping.validate(), Ok(()));
    }

    #[test]
    fn a_note_is_subject_message_and_marker_without_empty_labels() {
        let a = activity(&[
            ("subject", json!("Inbound voice +14155550100 (answered)")),
            ("message", json!("Direction: inbound\nQueue: \nAgent: alice\nNotes: call back: tomorrow")),
        ]);
        assert_eq!(
            note_text(&a),
            "Inbound voice +14155550100 (answered)\nDirection: inbound\nAgent: alice\nNotes: call back: tomorrow\n[cxbridge phonecall cxbridge:c-1]"
        );
        assert_eq!(marker_of(&note_text(&a)), Some(("phonecall".into(), "cxbridge:c-1".into())));
    }

    #[test]
    fn odd_kinds_and_keys_still_make_a_marker_that_reads_back() {
        let a = Activity { kind: "call log".into(), key: "api:x y\nz".into(), ..activity(&[("subject", json!("S"))]) };
        assert_eq!(marker_of(&note_text(&a)), Some(("call_log".into(), "api:x y z".into())));
        assert_eq!(marker_key(&a.key), "api:x y z");
    }

    #[test]
    fn without_a_message_every_field_is_listed() {
        let a = activity(&[("subject", json!("Call")), ("duration_seconds", json!(42)), ("queue", Value::Null), ("agent", json!("bob"))]);
        assert_eq!(note_text(&a), "Call\nagent: bob\nduration_seconds: 42\n[cxbridge phonecall cxbridge:c-1]");
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn filters_name_one_plain_field_never_a_path() {
        for (field, ok) in [
            ("name", true),
            ("code", true),
            ("_parent", true),
            ("vat_code2", true),
            ("party.pin", false),
            ("create_uid.password_hash", false),
            ("contact_mechanisms.value", false),
            ("Name", true),
            ("", false),
            ("1st", false),
            ("a b", false),
            ("name'", false),
            ("näme", false),
        ] {
            assert_eq!(filter_field(field).is_ok(), ok, "{field:?}");
        }
    }

    #[test]
    fn datetimes_round_trip_through_tryton_json() {
        let t: Timestamp = "2026-11-22T05:07:57.965262Z".parse().expect("time");
        let v = tryton_datetime(t);
        assert_eq!(v["microsecond"], json!(965262));
        assert_eq!(from_tryton_datetime(&v), Some(t));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t: Timestamp = "2026-11-22T05:07:57Z".parse().expect("time");
        let mid = Position { since: None, after_id: 200, next: Some(t) };
        assert_eq!(Position::parse(Some(&mid.to_string())).expect("parses"), mid);
        assert_eq!(Position::parse(Some("2026-11-22T05:07:57Z")).expect("parses").since, Some(t));
        assert!(matches!(Position::parse(Some("yesterday")), Err(CrmError::Permanent { .. })));
    }

    #[test]
    fn rpc_errors_are_sorted() {
        let race = rpc_error("model.party.party.create", &json!(["UserError", ["The code on party must be unique.", "", null]]));
        assert!(is_code_race(&race), "a party code drawn twice is retried");
        assert!(!is_code_race(&rpc_error("model.party.party.create", &json!(["UserError", ["The name must be unique.", "", null]]))));
        let user = rpc_error("model.party.party.create", &json!(["UserError", ["The phone number \"x\" is not valid.", "", null]]));
        assert_eq!(user, CrmError::Permanent { message: "Tryton refused model.party.party.create: The phone number \"x\" is not valid.".into() });
        assert!(matches!(rpc_error("m", &json!(["ConcurrencyException", "Records were modified"])), CrmError::Transient { .. }));
        assert!(matches!(rpc_error("m", &json!(["'bogus'", ""])), CrmError::Permanent { message } if message.contains("'bogus'")));
    }

    #[test]
    fn flattened_field_names_are_recognized() {
        assert!(is_flattened("phone") && is_flattened("mobile_2") && is_flattened("email"));
        assert!(!is_flattened("name") && !is_flattened("phone_x"));
    }

    #[test]
    fn config_needs_a_password_and_a_database() {
        let config: TrytonConfig = serde_json::from_value(json!({ "url": "http://127.0.0.1:8000", "database": "crm" })).expect("config");
        assert_eq!((config.user.as_str(), config.timeout_ms, config.max_in_flight), ("admin", 10_000, 8));
        let normalizer = PhoneNormalizer::new(Some("US"), &[]).expect("region");
        let new = |c: &TrytonConfig, p: &str| Tryton::new(c, Secret::new(p), normalizer.clone(), crate::client::http_client()).err();
        assert_eq!(new(&config, ""), Some(TrytonConfigError::MissingPassword));
        assert_eq!(new(&TrytonConfig { database: "a/b".into(), ..config.clone() }, "pw"), Some(TrytonConfigError::InvalidDatabase("a/b".into())));
        assert!(matches!(new(&TrytonConfig { url: "ftp://x".into(), ..config.clone() }, "pw"), Some(TrytonConfigError::InvalidUrl { .. })));
        assert!(matches!(new(&TrytonConfig { url: "http://crm.example.com:8000".into(), ..config.clone() }, "pw"), Some(TrytonConfigError::InvalidUrl { reason, .. }) if reason.contains("use https://")));
        assert_eq!(new(&config, "pw"), None);
        assert!(!format!("{:?}", TrytonConfig { password: Some("hunter2".into()), ..config }).contains("hunter2"));
    }
}
