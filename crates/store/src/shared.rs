//! What the SQLite and PostgreSQL backends share: the checks that run before any SQL, and
//! the way rows become the types the traits promise.
//!
//! The SQL stays in each backend (placeholders, upserts and locking differ). Everything here
//! must mean the same on both: keeping it once means a fix cannot reach only one backend.

use std::collections::BTreeMap;

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{self, Conversation, Event, Policy, Transition};
use cxbridge_domain::crm::{EntitySpec, RecordRef};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{VerificationLimits, CrmSchema, CrmStore, OutboxItem, OutboxState, OutboxStats, Record, RecordQuery, Result, StoreError, StoredActivity, SyncState, Verification};

/// Most records one search returns, whatever the caller asks for.
const SEARCH_MAX: u32 = 500;

/// Timestamps are stored as unix milliseconds in both backends.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn ts(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

/// Ids we make up (conversations, records without one, activities): UUIDv7, so they sort by
/// creation time and index well.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A JSON column we wrote ourselves did not (de)serialize: the data is not what we stored.
pub(crate) fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The conversation body column.
pub(crate) fn encode(c: &Conversation) -> Result<String> {
    serde_json::to_string(c).map_err(corrupt)
}

pub(crate) fn decode(body: &str) -> Result<Conversation> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("conversation: {e}")))
}

pub(crate) fn decode_all(bodies: &[String]) -> Result<Vec<Conversation>> {
    bodies.iter().map(|b| decode(b)).collect()
}

/// The column types the mappings below read, for a row of either backend. Both drivers
/// decode these Rust types (sqlx still checks each column's SQL type when it is read).
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    /// An `integer` column of PostgreSQL (4 bytes); SQLite's INTEGER decodes into it too.
    fn int32(&self, column: &str) -> Result<i32>;
    /// A `boolean` column of PostgreSQL, 0 or 1 in SQLite.
    fn flag(&self, column: &str) -> Result<bool>;
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
    fn int32(&self, column: &str) -> Result<i32> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }
}

// ---- events ----

/// The row of an event's lookup (`seen`, `body`): whether its dedup key is known, and the
/// conversation its key or leg belongs to.
pub(crate) fn seen_and_current(row: &impl Columns) -> Result<(bool, Option<Conversation>)> {
    let current = row.opt_text("body")?.map(|b| decode(&b)).transpose()?;
    Ok((row.flag("seen")?, current))
}

/// The event applied to the conversation it belongs to; a new conversation gets a new id.
pub(crate) fn transition(current: Option<&Conversation>, event: &Event, policy: Policy) -> Result<Transition> {
    let id = current.map_or_else(new_id, |c| c.id.clone());
    Ok(conversation::apply(current.cloned(), event.clone(), &id, policy)?)
}

/// The ids a source knows the conversation by that `previous` did not have yet: only these
/// need indexing (an answer or hangup adds none).
pub(crate) fn new_keys(c: &Conversation, previous: Option<&Conversation>) -> Vec<String> {
    let keys_of = |c: &Conversation| -> Vec<String> { std::iter::once(c.external_id.clone()).chain(c.legs.iter().map(|l| l.id.clone())).collect() };
    let known: std::collections::HashSet<String> = previous.map(keys_of).unwrap_or_default().into_iter().collect();
    keys_of(c).into_iter().filter(|k| !known.contains(k)).collect()
}

/// The agents concerned with the conversation that `previous` did not have yet.
pub(crate) fn new_agents(c: &Conversation, previous: Option<&Conversation>) -> Vec<String> {
    let known: std::collections::HashSet<String> = previous.map(Conversation::audience).unwrap_or_default().into_iter().collect();
    c.audience().into_iter().filter(|a| !known.contains(a)).collect()
}

// ---- outbox ----

pub(crate) fn outbox_from_row(row: &impl Columns) -> Result<OutboxItem> {
    let state = row.text("state")?;
    Ok(OutboxItem {
        id: row.int("id")?,
        key: row.text("key")?,
        kind: row.text("kind")?,
        conversation_id: row.text("conversation_id")?,
        state: OutboxState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("outbox state {state}")))?,
        generation: row.int("generation")?,
        attempts: row.int32("attempts")?.max(0) as u32,
        next_attempt_at: ts(row.int("next_attempt_at")?)?,
        last_error: row.opt_text("last_error")?,
        crm_ref: row.opt_text("crm_ref")?,
        created_at: ts(row.int("created_at")?)?,
        updated_at: ts(row.int("updated_at")?)?,
        delivered_at: row.opt_int("delivered_at")?.map(ts).transpose()?,
    })
}

/// Folds the item count per state, the pending items due at `now` and the oldest pending
/// item's `updated_at` into the stats.
pub(crate) fn outbox_stats(counts: Vec<(String, i64)>, due: i64, oldest: Option<i64>, now: Timestamp) -> OutboxStats {
    let mut stats = OutboxStats::default();
    for (state, n) in counts {
        let n = n as u64;
        match OutboxState::parse(&state) {
            Some(OutboxState::Pending) => stats.pending = n,
            Some(OutboxState::Delivered) => stats.delivered = n,
            Some(OutboxState::Dead) => stats.dead = n,
            None => {}
        }
    }
    stats.due = due as u64;
    stats.oldest_pending_secs = oldest.map_or(0, |o| ((ms(now) - o).max(0) / 1000) as u64);
    stats
}

// ---- verifications ----

/// `at, number, entity, record_id, kind, outcome` of `ivr_verifications`.
pub(crate) type VerificationRow = (i64, String, Option<String>, Option<String>, String, String);

pub(crate) fn verification_from_row((at, number, entity, id, kind, outcome): VerificationRow) -> Result<Verification> {
    let record = entity.zip(id).map(|(e, i)| RecordRef::new(e, i));
    Ok(Verification { at: ts(at)?, number, record, kind, outcome })
}

/// The outcomes a verification limit counts: failures, and attempts still being compared
/// (so that concurrent attempts count against each other before any of them finished).
pub(crate) const COUNTED_OUTCOMES: &str = "('pending', 'refused')";

/// The wait (seconds) a new verification attempt must be refused for, if any limit is reached:
/// `by_number` and `by_record` (the most of any of its records) within the window,
/// `last_minute` over everyone.
pub(crate) fn verification_lock(by_number: i64, by_record: i64, last_minute: i64, limits: &VerificationLimits) -> Option<u64> {
    if by_number >= i64::from(limits.per_number) || by_record >= i64::from(limits.per_record) {
        return Some(limits.window.as_secs().max(1));
    }
    (last_minute >= i64::from(limits.per_minute)).then_some(60)
}

// ---- built-in CRM ----

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The fields of a new record: every name must be one we can store and search.
pub(crate) fn check_new_fields(fields: &BTreeMap<String, String>) -> Result<()> {
    match fields.keys().find(|k| !is_field_name(k)) {
        Some(bad) => Err(StoreError::Invalid(format!("field name `{bad}`: use letters, digits, `_` or `-` (at most 64)"))),
        None => Ok(()),
    }
}

/// The fields of a patch: as for a new record, and the id cannot change.
pub(crate) fn check_patch(patch: &BTreeMap<String, String>) -> Result<()> {
    match patch.keys().find(|k| !is_field_name(k) || *k == "id") {
        Some(bad) => Err(StoreError::Invalid(format!("field `{bad}` cannot be set"))),
        None => Ok(()),
    }
}

/// The exact-match fields of a search: names only we can match (they end up in the SQL as a
/// bound JSON path or key, never as SQL).
pub(crate) fn check_query_fields(fields: &BTreeMap<String, String>) -> Result<()> {
    match fields.keys().find(|k| !is_field_name(k)) {
        Some(bad) => Err(StoreError::Invalid(format!("field name `{bad}`"))),
        None => Ok(()),
    }
}

/// Exact matches on a sensitive field would be an oracle for it: refused.
pub(crate) fn check_not_sensitive(spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<()> {
    match fields.keys().find(|k| spec.is_sensitive(k)) {
        Some(k) => Err(StoreError::Invalid(format!("field `{k}` of {} is sensitive: it cannot be searched", spec.name))),
        None => Ok(()),
    }
}

/// The record's id, taken out of its fields (`fields["id"]`), or a new one.
pub(crate) fn take_id(fields: &mut BTreeMap<String, String>) -> String {
    fields.remove("id").filter(|s| !s.is_empty()).unwrap_or_else(new_id)
}

/// Merges a checked patch into the record: an empty value removes the field.
pub(crate) fn apply_patch(record: &mut Record, patch: BTreeMap<String, String>) {
    for (k, v) in patch {
        if v.is_empty() {
            record.fields.remove(&k);
        } else {
            record.fields.insert(k, v);
        }
    }
    record.updated_at = Timestamp::now();
}

/// How many records a search returns: at least one, at most [`SEARCH_MAX`].
pub(crate) fn search_limit(query: &RecordQuery) -> u32 {
    query.limit.clamp(1, SEARCH_MAX)
}

/// A LIKE pattern (with `ESCAPE '\'`) that finds `text` anywhere, its wildcards taken literally.
pub(crate) fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// `search_records` by phone: the identification lookup of the phone index, narrowed to the
/// exact field matches. A number that does not normalize matches nothing.
pub(crate) async fn search_by_phone(store: &impl CrmStore, schema: &CrmSchema, entity: &str, phone: &str, query: &RecordQuery) -> Result<Vec<Record>> {
    let Some(e164) = schema.normalizer.index_key(phone) else { return Ok(vec![]) };
    let mut found = store.records_by_phone(&e164, &[entity.to_string()], search_limit(query)).await?;
    found.retain(|r| query.fields.iter().all(|(k, v)| r.fields.get(k) == Some(v)));
    Ok(found)
}

/// A record from its row; `fields` is read by the backend (TEXT in SQLite, JSONB in PostgreSQL).
pub(crate) fn record_from_row(row: &impl Columns, fields: BTreeMap<String, String>) -> Result<Record> {
    Ok(Record {
        entity: row.text("entity")?,
        id: row.text("id")?,
        fields,
        created_at: ts(row.int("created_at")?)?,
        updated_at: ts(row.int("updated_at")?)?,
    })
}

/// A row of `crm_activity_links` (`entity`, `record_id`).
pub(crate) fn link_from_row(row: &impl Columns) -> Result<RecordRef> {
    Ok(RecordRef::new(row.text("entity")?, row.text("record_id")?))
}

/// An activity from its row and its links (read by the backend, with the activity's id).
pub(crate) fn activity_from_row(row: &impl Columns, regarding: Vec<RecordRef>) -> Result<StoredActivity> {
    Ok(StoredActivity {
        regarding,
        id: row.text("id")?,
        key: row.text("key")?,
        kind: row.text("kind")?,
        fields: serde_json::from_str(&row.text("fields")?).map_err(corrupt)?,
        created_at: ts(row.int("created_at")?)?,
        updated_at: ts(row.int("updated_at")?)?,
    })
}

pub(crate) fn sync_state_from_row(row: &impl Columns) -> Result<SyncState> {
    Ok(SyncState {
        entity: row.text("entity")?,
        cursor: row.opt_text("cursor")?,
        complete: row.flag("complete")?,
        synced_at: row.opt_int("synced_at")?.map(ts).transpose()?,
        last_error: row.opt_text("last_error")?,
    })
}

// ---- health ----

/// How often `ping` may write its probe row; callers within that time share the answer.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The outcome of the last probe write (`ping`): an unauthenticated health check polled by
/// every load balancer must not cost a commit per request.
#[derive(Debug, Default)]
pub(crate) struct WriteProbe(tokio::sync::Mutex<Option<(std::time::Instant, std::result::Result<(), String>)>>);

impl WriteProbe {
    pub(crate) async fn check<F, E>(&self, probe: impl FnOnce() -> F) -> Result<()>
    where
        F: std::future::Future<Output = std::result::Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut last = self.0.lock().await;
        let outcome = match last.as_ref() {
            Some((at, outcome)) if at.elapsed() < PROBE_EVERY => outcome.clone(),
            _ => {
                let outcome = probe().await.map_err(|e| e.to_string());
                *last = Some((std::time::Instant::now(), outcome.clone()));
                outcome
            }
        };
        outcome.map_err(|e| StoreError::Unavailable(format!("the database does not take writes: {e}")))
    }
}

