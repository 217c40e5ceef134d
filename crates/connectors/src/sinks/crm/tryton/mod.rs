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

mod config;
mod notes;
mod parties;
mod rpc;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, EntitySpec, RecordRef, SearchQuery, TimelineEntry};
use cxbridge_domain::phone::PhoneNormalizer;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::limits::{Limits, RateLimiter};
use crate::client::oauth::Secret;

use notes::{MARKER_PREFIX, marker_key, marker_of, note_text, timeline_entry};
use parties::{FLATTENED_TYPES, PARTY_MODEL, PHONE_TYPES, collection, escape_like, filter_field, is_party, read_fields, record_fields, record_id, record_number};
use rpc::{Rpc, is_code_race, permanent, rows, tryton_datetime, unreadable};

pub use config::{TrytonConfig, TrytonConfigError, default_entities, default_mapping};

/// A search without a limit returns at most this many records.
const DEFAULT_SEARCH_LIMIT: usize = 50;
/// Records per change-feed page.
const CHANGES_PAGE: usize = 200;
/// Subtracted from the server's clock when a sync pass starts: the `Date` header has whole
/// seconds, and a transaction may commit a moment after it stamped its rows.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t: Timestamp = "2026-11-22T05:07:57Z".parse().expect("time");
        let mid = Position { since: None, after_id: 200, next: Some(t) };
        assert_eq!(Position::parse(Some(&mid.to_string())).expect("parses"), mid);
        assert_eq!(Position::parse(Some("2026-11-22T05:07:57Z")).expect("parses").since, Some(t));
        assert!(matches!(Position::parse(Some("yesterday")), Err(CrmError::Permanent { .. })));
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
