//! A batch of events applied at once: one read, the domain in memory, one write per table.
//!
//! The result is what applying the events one after the other with [`super::apply_event`]
//! in the same transaction would leave, in seven statements whatever the batch's size
//! instead of four to six per event:
//!
//! 1. one `SELECT` over all events: whether each dedup key is known, and the conversation
//!    its key or leg maps to;
//! 2. in memory, in arrival order: what the earlier events of the batch wrote counts as
//!    written (their dedup keys, conversations and keys), so later events of the same
//!    conversation see their changes, as they would on the database;
//! 3. one `INSERT` each into `events`, `conversations` (each conversation once, as it stands
//!    after its last event), `conversation_keys`, `conversation_agents` and `outbox`.
//!
//! The reads are those of the one-by-one way: the transaction holds the advisory locks of
//! every event's keys, so no other node changes what was read until the commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Effect, Event, Policy};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::shared::{self, decode, ms};
use crate::{Recorded, Result, StoreError};

/// What the database knew before the batch, per event (statement 1).
struct Known {
    seen: bool,
    /// The conversation the event's key maps to (only if that conversation exists, as in
    /// the one-by-one lookup's join).
    by_key: Option<String>,
    /// The conversation the event's leg maps to.
    by_leg: Option<String>,
    /// The body of `by_key`, else of `by_leg`.
    body: Option<String>,
}

/// What the batch has written so far, in memory.
#[derive(Default)]
struct Written {
    /// Dedup keys inserted.
    dedup_keys: HashSet<String>,
    /// Each saved conversation as it stands after its last saved event, with its JSON.
    conversations: BTreeMap<String, (Conversation, String)>,
    /// Keys the batch indexed, (source, key) → conversation id. A key the database had
    /// already keeps its conversation (`ON CONFLICT DO NOTHING`), so these only count
    /// where the database had none.
    keys: HashMap<(String, String), String>,
    /// The rows to insert.
    events: Vec<(String, i64, String)>,
    key_rows: BTreeSet<(String, String, String)>,
    agent_rows: BTreeSet<(String, String)>,
    /// Conversation id → (activities enqueued, time of the last one).
    outbox: BTreeMap<String, (i64, Timestamp)>,
}

impl Written {
    /// The conversation id the one-by-one lookup would find: by key, else by leg, each in
    /// the database first (its rows win over the batch's), then among the batch's keys.
    fn conversation_id<'a>(&'a self, event: &Event, known: &'a Known) -> Option<&'a String> {
        let batch = |key: &str| self.keys.get(&(event.source.clone(), key.to_string()));
        known
            .by_key
            .as_ref()
            .or_else(|| batch(&event.conversation_key))
            .or(known.by_leg.as_ref())
            .or_else(|| event.leg.as_deref().and_then(batch))
    }

    /// The conversation the event belongs to, as the batch left it so far.
    fn current(&self, event: &Event, known: &Known) -> Result<Option<Conversation>> {
        let Some(id) = self.conversation_id(event, known) else { return Ok(None) };
        if let Some((c, _)) = self.conversations.get(id) {
            return Ok(Some(c.clone()));
        }
        // Not changed by the batch: the database's body, which is that of the same id (the
        // batch's keys always name a conversation the batch saved).
        match &known.body {
            Some(body) if Some(id) == known.by_key.as_ref().or(known.by_leg.as_ref()) => Ok(Some(decode(body)?)),
            _ => Err(StoreError::Corrupt(format!("conversation {id} was found by its key but could not be read"))),
        }
    }
}

/// Applies `events` in order inside the caller's transaction, which holds all their
/// advisory locks. Returns each event's result and whether anything was written, or `None`
/// when a dedup key turned out to be committed meanwhile under other locks (the same key
/// under another conversation's ids): the caller rolls back and goes one by one, which
/// answers that event as a duplicate.
///
/// An event the domain refuses (or whose stored conversation cannot be read) gets its error
/// in its slot and writes nothing. A statement error is returned: it is not clear which
/// event caused it, and the transaction is aborted.
pub(super) async fn apply(tx: &mut PgConnection, events: &[(Event, Policy)]) -> Result<Option<(Vec<Result<Recorded>>, bool)>, sqlx::Error> {
    let known = read(tx, events).await?;
    let mut written = Written::default();
    let results: Vec<Result<Recorded>> = events.iter().zip(&known).map(|((event, policy), known)| step(&mut written, event, *policy, known)).collect();
    if written.events.is_empty() {
        return Ok(Some((results, false)));
    }
    if !write(tx, &written).await? {
        return Ok(None);
    }
    Ok(Some((results, true)))
}

/// Statement 1: per event, in order, what the database knows.
async fn read(tx: &mut PgConnection, events: &[(Event, Policy)]) -> Result<Vec<Known>, sqlx::Error> {
    let dedup_keys: Vec<&str> = events.iter().map(|(e, _)| e.dedup_key.as_str()).collect();
    let sources: Vec<&str> = events.iter().map(|(e, _)| e.source.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|(e, _)| e.conversation_key.as_str()).collect();
    let legs: Vec<Option<&str>> = events.iter().map(|(e, _)| e.leg.as_deref()).collect();
    let rows = sqlx::query(
        "SELECT x.seen, x.by_key, x.by_leg, c.body
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(dedup_key, source, key, leg, n)
         CROSS JOIN LATERAL (SELECT
           EXISTS (SELECT 1 FROM events e WHERE e.dedup_key = t.dedup_key) AS seen,
           (SELECT k.conversation_id FROM conversation_keys k JOIN conversations c ON c.id = k.conversation_id
             WHERE k.source = t.source AND k.key = t.key) AS by_key,
           (SELECT k.conversation_id FROM conversation_keys k JOIN conversations c ON c.id = k.conversation_id
             WHERE k.source = t.source AND k.key = t.leg) AS by_leg) AS x
         LEFT JOIN conversations c ON c.id = COALESCE(x.by_key, x.by_leg)
         ORDER BY t.n",
    )
    .bind(&dedup_keys)
    .bind(&sources)
    .bind(&keys)
    .bind(&legs)
    .fetch_all(&mut *tx)
    .await?;
    if rows.len() != events.len() {
        return Err(sqlx::Error::Protocol(format!("{} rows for {} events", rows.len(), events.len())));
    }
    rows.iter()
        .map(|row| Ok(Known { seen: row.try_get("seen")?, by_key: row.try_get("by_key")?, by_leg: row.try_get("by_leg")?, body: row.try_get("body")? }))
        .collect()
}

/// Step 2 for one event: what `apply_event` does, against the batch so far.
fn step(written: &mut Written, event: &Event, policy: Policy, known: &Known) -> Result<Recorded> {
    let current = written.current(event, known)?;
    if known.seen || written.dedup_keys.contains(&event.dedup_key) {
        return Ok(Recorded::Duplicate(current));
    }
    let transition = shared::transition(current.as_ref(), event, policy)?;
    let now = Timestamp::now();
    let c = &transition.conversation;
    if !transition.absorbed {
        // Encoded now, so an event that cannot be stored is refused before it counts.
        let body = shared::encode(c)?;
        for key in shared::new_keys(c, current.as_ref()) {
            written.keys.entry((c.source.clone(), key.clone())).or_insert_with(|| c.id.clone());
            written.key_rows.insert((c.source.clone(), key, c.id.clone()));
        }
        for agent in shared::new_agents(c, current.as_ref()) {
            written.agent_rows.insert((agent, c.id.clone()));
        }
        written.conversations.insert(c.id.clone(), (c.clone(), body));
    }
    if transition.effects.contains(&Effect::Memorialize) {
        let queued = written.outbox.entry(c.id.clone()).or_insert((0, now));
        *queued = (queued.0 + 1, now);
    }
    written.dedup_keys.insert(event.dedup_key.clone());
    written.events.push((event.dedup_key.clone(), ms(now), c.id.clone()));
    Ok(Recorded::Applied(transition))
}

/// Step 3: the batch's rows, one statement per table. False: a dedup key was taken
/// meanwhile (see [`apply`]); the transaction must be rolled back.
async fn write(tx: &mut PgConnection, w: &Written) -> Result<bool, sqlx::Error> {
    let (dedup_keys, (received, ids)): (Vec<&str>, (Vec<i64>, Vec<&str>)) = w.events.iter().map(|(k, at, id)| (k.as_str(), (*at, id.as_str()))).unzip();
    let inserted = sqlx::query(
        "INSERT INTO events (dedup_key, received_at, conversation_id)
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(&dedup_keys)
    .bind(&received)
    .bind(&ids)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted != dedup_keys.len() as u64 {
        return Ok(false);
    }

    if !w.conversations.is_empty() {
        let n = w.conversations.len();
        let (mut ids, mut sources, mut external, mut states) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut last, mut ended, mut revisions, mut bodies) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        // In id order (a BTreeMap), so two batches that ever touched the same rows would
        // lock them in the same order too.
        for (c, body) in w.conversations.values() {
            ids.push(c.id.as_str());
            sources.push(c.source.as_str());
            external.push(c.external_id.as_str());
            states.push(c.state.as_str());
            last.push(ms(c.last_event_at));
            ended.push(c.ended_at.map(ms));
            revisions.push(c.revision as i64);
            bodies.push(body.as_str());
        }
        sqlx::query(
            "INSERT INTO conversations (id, source, external_id, state, last_event_at, ended_at, revision, body)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::text[])
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, last_event_at = excluded.last_event_at,
               ended_at = excluded.ended_at, revision = excluded.revision, body = excluded.body",
        )
        .bind(&ids)
        .bind(&sources)
        .bind(&external)
        .bind(&states)
        .bind(&last)
        .bind(&ended)
        .bind(&revisions)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
    }

    if !w.key_rows.is_empty() {
        let (sources, (keys, ids)): (Vec<&str>, (Vec<&str>, Vec<&str>)) = w.key_rows.iter().map(|(s, k, id)| (s.as_str(), (k.as_str(), id.as_str()))).unzip();
        sqlx::query(
            "INSERT INTO conversation_keys (source, key, conversation_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&sources)
        .bind(&keys)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }

    if !w.agent_rows.is_empty() {
        let (agents, ids): (Vec<&str>, Vec<&str>) = w.agent_rows.iter().map(|(a, id)| (a.as_str(), id.as_str())).unzip();
        sqlx::query(
            "INSERT INTO conversation_agents (agent, conversation_id) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&agents)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }

    if !w.outbox.is_empty() {
        let n = w.outbox.len();
        let (mut keys, mut ids, mut counts, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for (id, (count, at)) in &w.outbox {
            keys.push(cxbridge_domain::mapping::activity_key(id));
            ids.push(id.as_str());
            counts.push(*count);
            times.push(ms(*at));
        }
        // An activity enqueued k times by the batch bumps its generation by k, as k
        // enqueues one after the other would (a new row starts at k, not 1 + …). The
        // notification goes out at commit, once per transaction.
        sqlx::query(
            "WITH queued AS (
               INSERT INTO outbox (key, kind, conversation_id, state, generation, attempts, next_attempt_at, created_at, updated_at)
               SELECT k, 'activity', c, 'pending', g, 0, t, t, t FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(k, c, g, t)
               ON CONFLICT (key) DO UPDATE SET state = 'pending', generation = outbox.generation + excluded.generation, attempts = 0,
                 next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, last_error = NULL
               RETURNING id)
             SELECT pg_notify('cxbridge_outbox', '') FROM queued",
        )
        .bind(&keys)
        .bind(&ids)
        .bind(&counts)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
    }
    Ok(true)
}
