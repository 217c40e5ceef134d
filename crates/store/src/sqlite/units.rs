//! Units of work that run on a connection thread: plain synchronous functions over a
//! `rusqlite::Connection`, each statement prepared once per connection (`prepare_cached`).

use std::collections::BTreeMap;

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Effect, Event, Policy};
use cxbridge_domain::crm::{EntitySpec, RecordRef};
use rusqlite::{Connection, OptionalExtension, Params, Row, params};

use crate::shared::{self, Columns, corrupt, decode, ms};
use crate::{CrmSchema, Record, Recorded, Result, StoreError, Verification};

/// A row of a rusqlite query, read through the column mappings both backends share.
pub(crate) struct Lite<'a, 'b>(pub(crate) &'a Row<'b>);

impl Columns for Lite<'_, '_> {
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.0.get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.0.get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.0.get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.0.get(column)?)
    }
    fn int32(&self, column: &str) -> Result<i32> {
        Ok(self.0.get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.0.get(column)?)
    }
}

/// Every row of `sql`, mapped by `map`.
pub(crate) fn all<T>(conn: &Connection, sql: &str, params: impl Params, map: impl Fn(&Lite) -> Result<T>) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(&Lite(row))?);
    }
    Ok(out)
}

/// The first row of `sql`, if any, mapped by `map`.
pub(crate) fn first<T>(conn: &Connection, sql: &str, params: impl Params, map: impl Fn(&Lite) -> Result<T>) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(|row| map(&Lite(row))).transpose()
}

/// A single value of the first row of `sql`, if any.
pub(crate) fn value<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str, params: impl Params) -> Result<Option<T>> {
    Ok(conn.prepare_cached(sql)?.query_row(params, |r| r.get(0)).optional()?)
}

/// Runs a statement; how many rows it changed.
pub(crate) fn exec(conn: &Connection, sql: &str, params: impl Params) -> Result<u64> {
    Ok(conn.prepare_cached(sql)?.execute(params)? as u64)
}

pub(crate) fn record(row: &Lite) -> Result<Record> {
    let fields: String = row.text("fields")?;
    shared::record_from_row(row, serde_json::from_str(&fields).map_err(corrupt)?)
}

pub(crate) fn bodies(conn: &Connection, sql: &str, params: impl Params) -> Result<Vec<Conversation>> {
    all(conn, sql, params, |r| decode(&r.text("body")?))
}

// ---- events ----

// The statements every event, pop and identification runs. None of them is a JOIN with a
// bound parameter: SQLite re-prepares such a statement whenever a parameter is bound anew
// (its plan is marked as depending on the value), which cost a third of the writer's time.
// Subqueries on the same indexes plan the same and are prepared once (see the test
// `hot_statements_are_prepared_once`).

/// Is the event known, and the conversation its key (else its leg) belongs to.
pub(crate) const EVENT_LOOKUP: &str = "SELECT EXISTS (SELECT 1 FROM events WHERE dedup_key = ?1) AS seen,
   COALESCE(
     (SELECT body FROM conversations WHERE id = (SELECT conversation_id FROM conversation_keys WHERE source = ?2 AND key = ?3)),
     (SELECT body FROM conversations WHERE id = (SELECT conversation_id FROM conversation_keys WHERE source = ?2 AND key = ?4))
   ) AS body";
/// A conversation by a key its source knows it by.
pub(crate) const BY_SOURCE_KEY: &str =
    "SELECT body FROM conversations WHERE id = (SELECT conversation_id FROM conversation_keys WHERE source = ?1 AND key = ?2)";
/// A conversation by a key of any source.
pub(crate) const BY_ANY_KEY: &str = "SELECT body FROM conversations WHERE id = (SELECT conversation_id FROM conversation_keys WHERE key = ?1 LIMIT 1)";
/// The open conversations of an agent.
pub(crate) const OF_AGENT: &str = "SELECT body FROM conversations
   WHERE id IN (SELECT conversation_id FROM conversation_agents WHERE agent = ?1) AND state != 'completed' ORDER BY last_event_at";
/// The records with a number in one of their phone fields (each once).
pub(crate) const BY_PHONE: &str = "SELECT * FROM crm_records WHERE (entity, id) IN (SELECT entity, record_id FROM crm_phone_index WHERE e164 = ?1)";

/// Dedup, transition, save and outbox for one event, inside the writer's transaction.
/// Everything that can refuse the event runs before the first write.
pub(crate) fn apply_event(conn: &Connection, event: &Event, policy: Policy) -> Result<Recorded> {
    let now = Timestamp::now();
    // One statement: is the event known, and the conversation its key or leg belongs to.
    let (seen, body): (bool, Option<String>) = conn
        .prepare_cached(EVENT_LOOKUP)?
        .query_row(params![event.dedup_key, event.source, event.conversation_key, event.leg], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let current = body.map(|b| decode(&b)).transpose()?;
    if seen {
        return Ok(Recorded::Duplicate(current));
    }
    let transition = shared::transition(current.as_ref(), event, policy)?;
    exec(
        conn,
        "INSERT INTO events (dedup_key, received_at, conversation_id) VALUES (?1, ?2, ?3)",
        params![event.dedup_key, ms(now), transition.conversation.id],
    )?;
    if !transition.absorbed {
        save(conn, &transition.conversation, current.as_ref())?;
    }
    if transition.effects.contains(&Effect::Memorialize) {
        enqueue_activity(conn, &transition.conversation.id, now)?;
    }
    Ok(Recorded::Applied(transition))
}

/// Upserts `c`, and indexes the source ids and agents that `previous` did not have yet
/// (an answer or hangup adds none, so it costs one statement).
fn save(conn: &Connection, c: &Conversation, previous: Option<&Conversation>) -> Result<()> {
    let body = shared::encode(c)?;
    exec(
        conn,
        "INSERT INTO conversations (id, source, external_id, state, last_event_at, ended_at, revision, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, last_event_at = excluded.last_event_at,
           ended_at = excluded.ended_at, revision = excluded.revision, body = excluded.body",
        params![c.id, c.source, c.external_id, c.state.as_str(), ms(c.last_event_at), c.ended_at.map(ms), c.revision as i64, body],
    )?;
    for key in shared::new_keys(c, previous) {
        exec(conn, "INSERT OR IGNORE INTO conversation_keys (source, key, conversation_id) VALUES (?1, ?2, ?3)", params![c.source, key, c.id])?;
    }
    for agent in shared::new_agents(c, previous) {
        exec(conn, "INSERT OR IGNORE INTO conversation_agents (agent, conversation_id) VALUES (?1, ?2)", params![agent, c.id])?;
    }
    Ok(())
}

fn enqueue_activity(conn: &Connection, conversation_id: &str, now: Timestamp) -> Result<()> {
    exec(
        conn,
        "INSERT INTO outbox (key, kind, conversation_id, state, generation, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, 'activity', ?2, 'pending', 1, 0, ?3, ?3, ?3)
         ON CONFLICT (key) DO UPDATE SET state = 'pending', generation = generation + 1, attempts = 0,
           next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, last_error = NULL",
        params![cxbridge_domain::mapping::activity_key(conversation_id), conversation_id, ms(now)],
    )?;
    Ok(())
}

// ---- built-in CRM ----

/// A record made ready for the writer off its thread: its JSON and its phone index keys.
pub(crate) struct PreparedRecord {
    pub(crate) id: String,
    pub(crate) json: String,
    /// (E.164, field) of every phone field that normalizes.
    pub(crate) phones: Vec<(String, String)>,
}

/// What writing the record needs beyond SQL — serialization and phone normalization — done
/// by the caller, so the one writer thread spends its time on the B-trees only.
pub(crate) fn prepare_record(schema: &CrmSchema, spec: &EntitySpec, id: String, fields: &BTreeMap<String, String>) -> Result<PreparedRecord> {
    let phones = spec
        .phone_fields
        .iter()
        .filter_map(|field| Some((schema.normalizer.index_key(fields.get(field)?)?, field.clone())))
        .collect();
    Ok(PreparedRecord { id, json: serde_json::to_string(fields).map_err(corrupt)?, phones })
}

/// Replaces the record's phone index rows by `phones`.
pub(crate) fn write_phone_index(conn: &Connection, entity: &str, id: &str, phones: &[(String, String)]) -> Result<()> {
    exec(conn, "DELETE FROM crm_phone_index WHERE entity = ?1 AND record_id = ?2", params![entity, id])?;
    for (e164, field) in phones {
        exec(conn, "INSERT OR IGNORE INTO crm_phone_index (e164, entity, record_id, field) VALUES (?1, ?2, ?3, ?4)", params![e164, entity, id, field])?;
    }
    Ok(())
}

/// Upserts a prepared record of `entity` and its phone index. A new record (the common case
/// of an import) has no index rows to replace: only an existing one pays for the delete.
pub(crate) fn put_prepared(conn: &Connection, entity: &str, record: &PreparedRecord, now: Timestamp) -> Result<()> {
    let inserted = exec(
        conn,
        "INSERT OR IGNORE INTO crm_records (entity, id, fields, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![entity, record.id, record.json, ms(now)],
    )?;
    if inserted == 0 {
        exec(conn, "UPDATE crm_records SET fields = ?3, updated_at = ?4 WHERE entity = ?1 AND id = ?2", params![entity, record.id, record.json, ms(now)])?;
        exec(conn, "DELETE FROM crm_phone_index WHERE entity = ?1 AND record_id = ?2", params![entity, record.id])?;
    }
    for (e164, field) in &record.phones {
        exec(conn, "INSERT OR IGNORE INTO crm_phone_index (e164, entity, record_id, field) VALUES (?1, ?2, ?3, ?4)", params![e164, entity, record.id, field])?;
    }
    Ok(())
}

pub(crate) fn put_record(conn: &Connection, schema: &CrmSchema, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>, now: Timestamp) -> Result<()> {
    put_prepared(conn, &spec.name, &prepare_record(schema, spec, id.to_string(), fields)?, now)
}

pub(crate) fn delete_record(conn: &Connection, entity: &str, id: &str) -> Result<u64> {
    exec(conn, "DELETE FROM crm_phone_index WHERE entity = ?1 AND record_id = ?2", params![entity, id])?;
    exec(conn, "DELETE FROM crm_records WHERE entity = ?1 AND id = ?2", params![entity, id])
}

pub(crate) fn activity(conn: &Connection, sql: &str, key: &str) -> Result<Option<crate::StoredActivity>> {
    let Some((id, row)) = first(conn, sql, [key], |r| Ok((r.text("id")?, shared::activity_from_row(r, vec![])?)))? else {
        return Ok(None);
    };
    Ok(Some(crate::StoredActivity { regarding: activity_links(conn, &id)?, ..row }))
}

pub(crate) fn activity_links(conn: &Connection, id: &str) -> Result<Vec<RecordRef>> {
    all(
        conn,
        "SELECT entity, record_id FROM crm_activity_links WHERE activity_id = ?1 ORDER BY is_primary DESC, entity, record_id",
        [id],
        |r| shared::link_from_row(r),
    )
}

// ---- verifications ----

pub(crate) fn insert_verification(conn: &Connection, v: &Verification) -> Result<i64> {
    exec(
        conn,
        "INSERT INTO ivr_verifications (at, number, entity, record_id, kind, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            ms(v.at),
            v.number,
            v.record.as_ref().map(|r| r.entity.as_str()),
            v.record.as_ref().map(|r| r.id.as_str()),
            v.kind,
            v.outcome
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn insert_verification_record(conn: &Connection, id: i64, r: &RecordRef, at: Timestamp) -> Result<()> {
    exec(
        conn,
        "INSERT OR IGNORE INTO ivr_verification_records (verification_id, entity, record_id, at) VALUES (?1, ?2, ?3, ?4)",
        params![id, r.entity, r.id, ms(at)],
    )?;
    Ok(())
}

/// The `COUNT(*)` of `sql`.
pub(crate) fn count(conn: &Connection, sql: &str, params: impl Params) -> Result<i64> {
    value(conn, sql, params)?.ok_or_else(|| StoreError::Corrupt("COUNT returned no row".into()))
}
