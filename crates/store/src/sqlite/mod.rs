//! The SQLite backend: one file in the data directory, WAL mode, migrations on open.
//!
//! All writes go through a pool of exactly one connection. SQLite allows one writer at a
//! time anyway; funnelling writes through one connection means a transaction never has to
//! upgrade from reader to writer, which is where SQLite returns BUSY errors that waiting
//! cannot fix. Reads use a separate pool and see the last committed state (WAL).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Effect, Event, Policy};
use cxbridge_domain::crm::{Activity, EntitySpec, RecordRef};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

mod writer;

use writer::{WriteHealth, WriteTx, is_storage_failure};

use crate::shared::{self, corrupt, decode, decode_all, ms, new_id, outbox_from_row};
use crate::{CrmStore, IndexChanges, Reindexed, phone_index_meta, OutboxItem, OutboxState, OutboxStats, Pruned, Record, RecordQuery, Recorded, Reservation, Result, Retention, Store, StoreError, StoredActivity, SyncState, Verification, VerificationLimits};

/// Both backends use it, so it lives beside the traits; re-exported here because the server
/// and the tests name it by this path.
pub use crate::CrmSchema;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: an acknowledged event survives a power cut.
    #[default]
    Full,
    /// fsync at checkpoints: survives a crash of cxbridge, not of the machine.
    Normal,
}

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    schema: Arc<CrmSchema>,
    events: tokio::sync::mpsc::Sender<EventJob>,
    health: Arc<WriteHealth>,
    probe: Arc<shared::WriteProbe>,
}

/// An event waiting for the group commit.
struct EventJob {
    event: Event,
    policy: Policy,
    reply: tokio::sync::oneshot::Sender<Result<Recorded>>,
}

/// The health check's outbox counts: over the (state, …) indexes of pending and dead items
/// only, never the delivered rows that grow with every conversation.
const OUTBOX_OPEN_COUNTS: &str = "SELECT state, COUNT(*) AS n FROM outbox WHERE state IN ('pending', 'dead') GROUP BY state";
const OUTBOX_PENDING_AGE: &str =
    "SELECT COALESCE(SUM(next_attempt_at <= ?1), 0) AS due, MIN(updated_at) AS oldest FROM outbox WHERE state = 'pending'";

/// Most events committed by one transaction (one fsync).
const GROUP_COMMIT_MAX: usize = 256;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and runs migrations.
    pub async fn open(path: &Path, schema: CrmSchema, durability: Durability) -> Result<Self> {
        let sync = match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let writer = SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(base.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(base.read_only(true)).await?;
        let (events, queue) = tokio::sync::mpsc::channel(4 * GROUP_COMMIT_MAX);
        let health = Arc::new(WriteHealth::default());
        tokio::spawn(group_commit(writer.clone(), health.clone(), queue));
        Ok(Self { writer, reader, schema: Arc::new(schema), events, health, probe: Default::default() })
    }

    /// Opens a database named by a `sqlite://path` URL (or a plain path).
    pub async fn open_url(url: &str, schema: CrmSchema, durability: Durability) -> Result<Self> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?;
        Self::open(opts.get_filename(), schema, durability).await
    }

    pub fn schema(&self) -> &CrmSchema {
        &self.schema
    }

    /// One committed write to the probe row, through the same path as every other write.
    async fn probe_write(&self) -> std::result::Result<(), sqlx::Error> {
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        sqlx::query("INSERT INTO health_probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
            .bind(ms(Timestamp::now()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn load(conn: &mut SqliteConnection, id: &str) -> Result<Option<Conversation>> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM conversations WHERE id = ?1").bind(id).fetch_optional(conn).await?;
        body.map(|b| decode(&b)).transpose()
    }

    /// Upserts `c`, and indexes the source ids and agents that `previous` did not have yet
    /// (an answer or hangup adds none, so it costs one statement).
    async fn save(conn: &mut SqliteConnection, c: &Conversation, previous: Option<&Conversation>) -> Result<()> {
        let body = shared::encode(c)?;
        sqlx::query(
            "INSERT INTO conversations (id, source, external_id, state, last_event_at, ended_at, revision, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, last_event_at = excluded.last_event_at,
               ended_at = excluded.ended_at, revision = excluded.revision, body = excluded.body",
        )
        .bind(&c.id)
        .bind(&c.source)
        .bind(&c.external_id)
        .bind(c.state.as_str())
        .bind(ms(c.last_event_at))
        .bind(c.ended_at.map(ms))
        .bind(c.revision as i64)
        .bind(body)
        .execute(&mut *conn)
        .await?;
        for key in shared::new_keys(c, previous) {
            sqlx::query("INSERT OR IGNORE INTO conversation_keys (source, key, conversation_id) VALUES (?1, ?2, ?3)")
                .bind(&c.source)
                .bind(key)
                .bind(&c.id)
                .execute(&mut *conn)
                .await?;
        }
        for agent in shared::new_agents(c, previous) {
            sqlx::query("INSERT OR IGNORE INTO conversation_agents (agent, conversation_id) VALUES (?1, ?2)")
                .bind(agent)
                .bind(&c.id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn enqueue_activity(conn: &mut SqliteConnection, conversation_id: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (key, kind, conversation_id, state, generation, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, 'activity', ?2, 'pending', 1, 0, ?3, ?3, ?3)
             ON CONFLICT (key) DO UPDATE SET state = 'pending', generation = generation + 1, attempts = 0,
               next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, last_error = NULL",
        )
        .bind(cxbridge_domain::mapping::activity_key(conversation_id))
        .bind(conversation_id)
        .bind(ms(now))
        .execute(conn)
        .await?;
        Ok(())
    }

    fn record_from_row(row: &SqliteRow) -> Result<Record> {
        let fields: String = row.try_get("fields")?;
        shared::record_from_row(row, serde_json::from_str(&fields).map_err(corrupt)?)
    }

    async fn write_phone_index(&self, conn: &mut SqliteConnection, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<()> {
        sqlx::query("DELETE FROM crm_phone_index WHERE entity = ?1 AND record_id = ?2")
            .bind(&spec.name)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        for field in &spec.phone_fields {
            let Some(raw) = fields.get(field) else { continue };
            let Some(e164) = self.schema.normalizer.index_key(raw) else { continue };
            sqlx::query("INSERT OR IGNORE INTO crm_phone_index (e164, entity, record_id, field) VALUES (?1, ?2, ?3, ?4)")
                .bind(e164)
                .bind(&spec.name)
                .bind(id)
                .bind(field)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn put_record(&self, conn: &mut SqliteConnection, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>, now: Timestamp) -> Result<()> {
        let json = serde_json::to_string(fields).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO crm_records (entity, id, fields, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (entity, id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at",
        )
        .bind(&spec.name)
        .bind(id)
        .bind(json)
        .bind(ms(now))
        .execute(&mut *conn)
        .await?;
        self.write_phone_index(conn, spec, id, fields).await
    }

    async fn activity_links(&self, id: &str) -> Result<Vec<RecordRef>> {
        let rows = sqlx::query("SELECT entity, record_id FROM crm_activity_links WHERE activity_id = ?1 ORDER BY is_primary DESC, entity, record_id")
            .bind(id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(shared::link_from_row).collect()
    }

    async fn activity_from_row(&self, row: &SqliteRow) -> Result<StoredActivity> {
        let id: String = row.try_get("id")?;
        shared::activity_from_row(row, self.activity_links(&id).await?)
    }
}

/// The writer task: applies every event waiting at that moment in one transaction, commits
/// once (one fsync for all of them), then answers. An answer is only sent after the commit,
/// so nothing is acknowledged before it is durable.
///
/// An event the domain refuses writes nothing, so it needs no savepoint. Should a statement
/// fail mid-batch, the batch is rolled back and each event retried in a transaction of its
/// own, so one bad event cannot fail the others.
async fn group_commit(writer: SqlitePool, health: Arc<WriteHealth>, mut queue: tokio::sync::mpsc::Receiver<EventJob>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_COMMIT_MAX {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match commit_batch(&writer, &health, &jobs).await {
            Ok(results) => {
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            // One statement was wrong: retry each event alone so it cannot fail the others.
            // A full, read-only or failing disk fails them all alike: answer at once.
            Err(e) if jobs.len() > 1 && !is_storage_failure(&e) => {
                tracing::warn!(error = %e, events = jobs.len(), "group commit failed; retrying its events one by one");
                for job in jobs {
                    let r = match commit_batch(&writer, &health, std::slice::from_ref(&job)).await {
                        Ok(mut results) => results.pop().unwrap_or_else(|| Err(StoreError::Unavailable("no result".into()))),
                        Err(e) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                    };
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = jobs.len(), "commit failed; the events were not stored and are answered 503");
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

/// One transaction over `jobs`: the per-event results (a refused event is an `Err` in its
/// slot), or the database error that aborted the whole transaction. Nothing in the results
/// counts until the commit has succeeded.
async fn commit_batch(writer: &SqlitePool, health: &WriteHealth, jobs: &[EventJob]) -> std::result::Result<Vec<Result<Recorded>>, sqlx::Error> {
    let mut tx = WriteTx::begin(writer, health).await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        match apply_event(&mut tx, job.event.clone(), job.policy).await {
            Err(StoreError::Database(e)) => return Err(e),
            r => results.push(r),
        }
    }
    tx.commit().await?;
    Ok(results)
}

/// Dedup, transition, save and outbox for one event, inside the caller's transaction.
/// Everything that can refuse the event runs before the first write.
async fn apply_event(tx: &mut SqliteConnection, event: Event, policy: Policy) -> Result<Recorded> {
    let now = Timestamp::now();
    // One round trip: is the event known, and the conversation its key or leg belongs to.
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM events WHERE dedup_key = ?1) AS seen,
           COALESCE(
             (SELECT c.body FROM conversation_keys k JOIN conversations c ON c.id = k.conversation_id WHERE k.source = ?2 AND k.key = ?3),
             (SELECT c.body FROM conversation_keys k JOIN conversations c ON c.id = k.conversation_id WHERE k.source = ?2 AND k.key = ?4)
           ) AS body",
    )
    .bind(&event.dedup_key)
    .bind(&event.source)
    .bind(&event.conversation_key)
    .bind(event.leg.as_deref())
    .fetch_one(&mut *tx)
    .await?;
    let (seen, current) = shared::seen_and_current(&row)?;
    if seen {
        return Ok(Recorded::Duplicate(current));
    }
    let transition = shared::transition(current.as_ref(), &event, policy)?;
    sqlx::query("INSERT INTO events (dedup_key, received_at, conversation_id) VALUES (?1, ?2, ?3)")
        .bind(&event.dedup_key)
        .bind(ms(now))
        .bind(&transition.conversation.id)
        .execute(&mut *tx)
        .await?;
    if !transition.absorbed {
        SqliteStore::save(tx, &transition.conversation, current.as_ref()).await?;
    }
    if transition.effects.contains(&Effect::Memorialize) {
        SqliteStore::enqueue_activity(tx, &transition.conversation.id, now).await?;
    }
    Ok(Recorded::Applied(transition))
}

#[async_trait]
impl Store for SqliteStore {
    async fn record_event(&self, event: Event, policy: Policy) -> Result<Recorded> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.events.send(EventJob { event, policy, reply }).await.map_err(|_| StoreError::Unavailable("the writer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let mut conn = self.reader.acquire().await?;
        Self::load(&mut conn, id).await
    }

    async fn conversation_by_external(&self, source: Option<&str>, external_id: &str) -> Result<Option<Conversation>> {
        let id: Option<String> = match source {
            Some(s) => {
                sqlx::query_scalar("SELECT conversation_id FROM conversation_keys WHERE source = ?1 AND key = ?2")
                    .bind(s)
                    .bind(external_id)
                    .fetch_optional(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT conversation_id FROM conversation_keys WHERE key = ?1 LIMIT 1")
                    .bind(external_id)
                    .fetch_optional(&self.reader)
                    .await?
            }
        };
        match id {
            Some(id) => self.conversation(&id).await,
            None => Ok(None),
        }
    }

    async fn conversations_for_agent(&self, agent: &str) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT c.body FROM conversation_agents a JOIN conversations c ON c.id = a.conversation_id
             WHERE a.agent = ?1 AND c.state != 'completed' ORDER BY c.last_event_at",
        )
        .bind(agent)
        .fetch_all(&self.reader)
        .await?;
        decode_all(&bodies)
    }

    async fn stale_conversations(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM conversations WHERE state IN ('offered', 'connected') AND last_event_at < ?1 ORDER BY last_event_at LIMIT ?2",
        )
        .bind(ms(before))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        decode_all(&bodies)
    }

    async fn rung_out(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM conversations WHERE state = 'offered' AND last_event_at < ?1 ORDER BY last_event_at LIMIT ?2")
            .bind(ms(before))
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        decode_all(&bodies)
    }

    async fn wrapup_overdue(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM conversations WHERE state = 'ended' AND ended_at < ?1 ORDER BY ended_at LIMIT ?2")
                .bind(ms(before))
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
        decode_all(&bodies)
    }

    async fn outbox_claim(&self, now: Timestamp, limit: u32, lease: Duration) -> Result<Vec<OutboxItem>> {
        let until = ms(now) + lease.as_millis() as i64;
        let rows = sqlx::query(
            "UPDATE outbox SET claimed_until = ?1 WHERE id IN (
               SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?2
                 AND (claimed_until IS NULL OR claimed_until < ?2)
               ORDER BY next_attempt_at LIMIT ?3)
             RETURNING *",
        )
        .bind(until)
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_delivered(&self, id: i64, generation: i64, crm_ref: &str, now: Timestamp) -> Result<()> {
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'delivered', crm_ref = ?1, delivered_at = ?2, updated_at = ?2, claimed_until = NULL,
               last_error = NULL, attempts = attempts + 1
             WHERE id = ?3 AND generation = ?4",
        )
        .bind(crm_ref)
        .bind(ms(now))
        .bind(id)
        .bind(generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done > 0 {
            sqlx::query("UPDATE outbox_totals SET delivered = delivered + 1 WHERE id = 1").execute(&mut *tx).await?;
        } else {
            // Newer data arrived while we delivered: deliver again, at once.
            sqlx::query("UPDATE outbox SET crm_ref = ?1, claimed_until = NULL, updated_at = ?2 WHERE id = ?3")
                .bind(crm_ref)
                .bind(ms(now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_failed(&self, id: i64, error: &str, retry_at: Option<Timestamp>, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, claimed_until = NULL, updated_at = ?2,
               state = CASE WHEN ?3 IS NULL THEN 'dead' ELSE 'pending' END,
               next_attempt_at = COALESCE(?3, next_attempt_at)
             WHERE id = ?4",
        )
        .bind(error)
        .bind(ms(now))
        .bind(retry_at.map(ms))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn outbox_list(&self, state: Option<OutboxState>, limit: u32) -> Result<Vec<OutboxItem>> {
        let rows = match state {
            Some(s) => {
                sqlx::query("SELECT * FROM outbox WHERE state = ?1 ORDER BY updated_at DESC LIMIT ?2")
                    .bind(s.as_str())
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => sqlx::query("SELECT * FROM outbox ORDER BY updated_at DESC LIMIT ?1").bind(limit).fetch_all(&self.reader).await?,
        };
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        let row = sqlx::query("SELECT * FROM outbox WHERE id = ?1").bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_for_conversation(&self, conversation_id: &str) -> Result<Option<OutboxItem>> {
        let row = sqlx::query("SELECT * FROM outbox WHERE conversation_id = ?1 ORDER BY id DESC LIMIT 1")
            .bind(conversation_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_replay(&self, id: i64, now: Timestamp) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?1, updated_at = ?1, claimed_until = NULL,
               generation = generation + 1
             WHERE id = ?2",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats> {
        // Both counts walk the (state, …) index over pending and dead items only.
        let mut counts: Vec<(String, i64)> = sqlx::query_as(OUTBOX_OPEN_COUNTS).fetch_all(&self.reader).await?;
        let delivered: i64 = sqlx::query_scalar("SELECT delivered FROM outbox_totals WHERE id = 1").fetch_optional(&self.reader).await?.unwrap_or(0);
        counts.push(("delivered".into(), delivered));
        let (due, oldest) = sqlx::query_as(OUTBOX_PENDING_AGE)
        .bind(ms(now))
        .fetch_one(&self.reader)
        .await?;
        Ok(shared::outbox_stats(counts, due, oldest, now))
    }

    async fn prune(&self, retention: &Retention, batch: u32) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(before) = retention.delivered_before {
            pruned.outbox = sqlx::query(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = 'delivered' AND updated_at < ?1 LIMIT ?2)",
            )
            .bind(ms(before))
            .bind(batch)
            .execute(&self.writer)
            .await?
            .rows_affected();
        }
        if let Some(before) = retention.events_before {
            pruned.events = sqlx::query(
                "DELETE FROM events WHERE dedup_key IN (
                   SELECT e.dedup_key FROM events e LEFT JOIN conversations c ON c.id = e.conversation_id
                   WHERE e.received_at < ?1 AND (c.id IS NULL OR c.state = 'completed') LIMIT ?2)",
            )
            .bind(ms(before))
            .bind(batch)
            .execute(&self.writer)
            .await?
            .rows_affected();
        }
        if let Some(before) = retention.verifications_before {
            pruned.verifications =
                sqlx::query("DELETE FROM ivr_verifications WHERE id IN (SELECT id FROM ivr_verifications WHERE at < ?1 LIMIT ?2)")
                    .bind(ms(before))
                    .bind(batch)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
        }
        Ok(pruned)
    }

    /// Reads, and proves the database takes writes: a one-row write, committed, at most once a
    /// second (a full disk or a read-only file fail it; callers in between share the answer).
    /// A failed commit anywhere since then is reported at once, until a write succeeds again.
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        let probed = self.probe.check(|| self.probe_write()).await;
        match self.health.recent_failure() {
            Some(failure) => Err(StoreError::Unavailable(format!("a write failed in the last {} s: {failure}", writer::FAILURE_HOLD.as_secs()))),
            None => probed,
        }
    }

    async fn record_sign_out(&self, agent: &str, at: Timestamp) -> Result<()> {
        sqlx::query("INSERT INTO agent_sign_outs (agent, at) VALUES (?1, ?2) ON CONFLICT (agent) DO UPDATE SET at = max(at, excluded.at)")
            .bind(agent)
            .bind(ms(at))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn record_verification(&self, v: &Verification) -> Result<()> {
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let id = insert_verification(&mut tx, v).await?;
        if let Some(r) = &v.record {
            insert_verification_record(&mut tx, id, r, v.at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reserve_verification(&self, v: &Verification, records: &[RecordRef], limits: &VerificationLimits) -> Result<Reservation> {
        // One writer connection: the counts and the insert run in one transaction that no
        // other attempt can interleave with.
        let since = ms(v.at) - i64::try_from(limits.window.as_millis()).unwrap_or(i64::MAX);
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let by_number: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM ivr_verifications WHERE number = ?1 AND at >= ?2 AND outcome IN {}",
            shared::COUNTED_OUTCOMES
        )))
        .bind(&v.number)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        let mut by_record = 0;
        for r in records {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM ivr_verification_records r JOIN ivr_verifications v ON v.id = r.verification_id
                 WHERE r.entity = ?1 AND r.record_id = ?2 AND r.at >= ?3 AND v.outcome IN {}",
                shared::COUNTED_OUTCOMES
            )))
            .bind(&r.entity)
            .bind(&r.id)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            by_record = by_record.max(n);
        }
        let last_minute: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM ivr_verifications WHERE at >= ?1 AND outcome IN {}", shared::COUNTED_OUTCOMES)))
                .bind(ms(v.at) - 60_000)
                .fetch_one(&mut *tx)
                .await?;
        let locked = shared::verification_lock(by_number, by_record, last_minute, limits);
        let outcome = if locked.is_some() { "locked" } else { "pending" };
        let id = insert_verification(&mut tx, &Verification { outcome: outcome.into(), ..v.clone() }).await?;
        if locked.is_none() {
            for r in records {
                insert_verification_record(&mut tx, id, r, v.at).await?;
            }
        }
        tx.commit().await?;
        Ok(match locked {
            Some(retry_after_secs) => Reservation::Locked { retry_after_secs },
            None => Reservation::Reserved(id),
        })
    }

    async fn finish_verification(&self, id: i64, outcome: &str, record: Option<&RecordRef>) -> Result<()> {
        sqlx::query("UPDATE ivr_verifications SET outcome = ?1, entity = ?2, record_id = ?3 WHERE id = ?4")
            .bind(outcome)
            .bind(record.map(|r| r.entity.as_str()))
            .bind(record.map(|r| r.id.as_str()))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn verifications(&self, limit: u32) -> Result<Vec<Verification>> {
        let rows: Vec<shared::VerificationRow> =
            sqlx::query_as("SELECT at, number, entity, record_id, kind, outcome FROM ivr_verifications ORDER BY id DESC LIMIT ?1")
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
        rows.into_iter().map(shared::verification_from_row).collect()
    }

    async fn signed_out_at(&self, agent: &str) -> Result<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT at FROM agent_sign_outs WHERE agent = ?1").bind(agent).fetch_optional(&self.reader).await?;
        at.map(shared::ts).transpose()
    }
}

async fn insert_verification(tx: &mut SqliteConnection, v: &Verification) -> Result<i64> {
    let done = sqlx::query("INSERT INTO ivr_verifications (at, number, entity, record_id, kind, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .bind(ms(v.at))
        .bind(&v.number)
        .bind(v.record.as_ref().map(|r| r.entity.as_str()))
        .bind(v.record.as_ref().map(|r| r.id.as_str()))
        .bind(&v.kind)
        .bind(&v.outcome)
        .execute(&mut *tx)
        .await?;
    Ok(done.last_insert_rowid())
}

async fn insert_verification_record(tx: &mut SqliteConnection, id: i64, r: &RecordRef, at: Timestamp) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO ivr_verification_records (verification_id, entity, record_id, at) VALUES (?1, ?2, ?3, ?4)")
        .bind(id)
        .bind(&r.entity)
        .bind(&r.id)
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl CrmStore for SqliteStore {
    async fn create_record(&self, entity: &str, mut fields: BTreeMap<String, String>) -> Result<Record> {
        let spec = self.schema.entity(entity)?.clone();
        shared::check_new_fields(&fields)?;
        let id = shared::take_id(&mut fields);
        let now = Timestamp::now();
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM crm_records WHERE entity = ?1 AND id = ?2")
            .bind(entity)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Invalid(format!("{entity} `{id}` exists already; update it with PATCH")));
        }
        self.put_record(&mut tx, &spec, &id, &fields, now).await?;
        tx.commit().await?;
        Ok(Record { entity: entity.into(), id, fields, created_at: now, updated_at: now })
    }

    async fn record(&self, entity: &str, id: &str) -> Result<Option<Record>> {
        self.schema.entity(entity)?;
        let row = sqlx::query("SELECT * FROM crm_records WHERE entity = ?1 AND id = ?2")
            .bind(entity)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(Self::record_from_row).transpose()
    }

    async fn update_record(&self, entity: &str, id: &str, patch: BTreeMap<String, String>) -> Result<Option<Record>> {
        let spec = self.schema.entity(entity)?.clone();
        shared::check_patch(&patch)?;
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let row = sqlx::query("SELECT * FROM crm_records WHERE entity = ?1 AND id = ?2")
            .bind(entity)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut record = Self::record_from_row(&row)?;
        shared::apply_patch(&mut record, patch);
        self.put_record(&mut tx, &spec, id, &record.fields, record.updated_at).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn delete_record(&self, entity: &str, id: &str) -> Result<bool> {
        self.schema.entity(entity)?;
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        sqlx::query("DELETE FROM crm_phone_index WHERE entity = ?1 AND record_id = ?2").bind(entity).bind(id).execute(&mut *tx).await?;
        let n = sqlx::query("DELETE FROM crm_records WHERE entity = ?1 AND id = ?2")
            .bind(entity)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn search_records(&self, entity: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        let spec = self.schema.entity(entity)?;
        shared::check_not_sensitive(spec, &query.fields)?;
        if let Some(phone) = &query.phone {
            return shared::search_by_phone(self, &self.schema, entity, phone, query).await;
        }
        shared::check_query_fields(&query.fields)?;
        let mut sql = String::from("SELECT * FROM crm_records WHERE entity = ?");
        let mut binds: Vec<String> = vec![entity.to_string()];
        for (k, v) in &query.fields {
            sql.push_str(" AND json_extract(fields, ?) = ?");
            binds.push(format!("$.\"{k}\""));
            binds.push(v.clone());
        }
        if let Some(text) = &query.text {
            // Field values only, never the JSON around them (`"pin":"98` must find no PIN),
            // and never a sensitive field.
            sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(crm_records.fields) AS f WHERE f.value LIKE ? ESCAPE '\\'");
            binds.push(shared::contains_pattern(text));
            if !spec.sensitive.is_empty() {
                sql.push_str(&format!(" AND f.key NOT IN ({})", vec!["?"; spec.sensitive.len()].join(", ")));
                binds.extend(spec.sensitive.iter().cloned());
            }
            sql.push(')');
        }
        sql.push_str(" ORDER BY updated_at DESC LIMIT ?");
        // Only placeholders are concatenated; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(shared::search_limit(query)).fetch_all(&self.reader).await?;
        rows.iter().map(Self::record_from_row).collect()
    }

    async fn import_records(&self, entity: &str, rows: Vec<BTreeMap<String, String>>) -> Result<u64> {
        let spec = self.schema.entity(entity)?.clone();
        let now = Timestamp::now();
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let mut n = 0;
        for mut fields in rows {
            let id = shared::take_id(&mut fields);
            self.put_record(&mut tx, &spec, &id, &fields, now).await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn count_records(&self, entity: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crm_records WHERE entity = ?1").bind(entity).fetch_one(&self.reader).await?;
        Ok(n as u64)
    }

    async fn apply_index_changes(&self, entity: &str, changes: IndexChanges, now: Timestamp) -> Result<()> {
        let spec = self.schema.entity(entity)?.clone();
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        if changes.reset {
            sqlx::query("DELETE FROM crm_phone_index WHERE entity = ?1").bind(entity).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM crm_records WHERE entity = ?1").bind(entity).execute(&mut *tx).await?;
        }
        for (id, fields) in &changes.upserts {
            self.put_record(&mut tx, &spec, id, fields, now).await?;
        }
        for id in &changes.deletes {
            sqlx::query("DELETE FROM crm_phone_index WHERE entity = ?1 AND record_id = ?2").bind(entity).bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM crm_records WHERE entity = ?1 AND id = ?2").bind(entity).bind(id).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO crm_sync_state (entity, cursor, complete, synced_at, last_error) VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (entity) DO UPDATE SET cursor = excluded.cursor,
               complete = CASE WHEN ?5 THEN excluded.complete ELSE MAX(crm_sync_state.complete, excluded.complete) END,
               synced_at = excluded.synced_at, last_error = NULL",
        )
        .bind(entity)
        .bind(&changes.cursor)
        .bind(changes.pass_done)
        .bind(ms(now))
        .bind(changes.reset)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn index_sync_failed(&self, entity: &str, error: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO crm_sync_state (entity, last_error) VALUES (?1, ?2)
             ON CONFLICT (entity) DO UPDATE SET last_error = excluded.last_error",
        )
        .bind(entity)
        .bind(error)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn index_sync_states(&self) -> Result<Vec<SyncState>> {
        let rows = sqlx::query("SELECT entity, cursor, complete, synced_at, last_error FROM crm_sync_state ORDER BY entity").fetch_all(&self.reader).await?;
        rows.iter().map(shared::sync_state_from_row).collect()
    }

    async fn reindex_phones(&self, batch: u32, progress: &(dyn for<'r> Fn(&'r Reindexed) + Send + Sync)) -> Result<Vec<Reindexed>> {
        let mut done = vec![];
        for spec in &self.schema.entities {
            let (key, rules) = phone_index_meta(&self.schema, spec);
            let previous: Option<String> = sqlx::query_scalar("SELECT value FROM store_meta WHERE key = ?1").bind(&key).fetch_optional(&self.reader).await?;
            if previous.as_deref() == Some(rules.as_str()) {
                continue;
            }
            let mut state = Reindexed { entity: spec.name.clone(), records: 0, previous, done: false };
            let mut after = String::new();
            loop {
                // Keyset pages by id: each page is one short write transaction, so events and
                // pops keep flowing while a large index is rebuilt.
                let rows = sqlx::query("SELECT * FROM crm_records WHERE entity = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
                    .bind(&spec.name)
                    .bind(&after)
                    .bind(i64::from(batch.max(1)))
                    .fetch_all(&self.reader)
                    .await?;
                let records: Vec<Record> = rows.iter().map(Self::record_from_row).collect::<Result<_>>()?;
                let Some(last) = records.last() else { break };
                after = last.id.clone();
                let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
                for r in &records {
                    self.write_phone_index(&mut tx, spec, &r.id, &r.fields).await?;
                }
                tx.commit().await?;
                state.records += records.len() as u64;
                progress(&state);
            }
            let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
            sqlx::query("INSERT INTO store_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(&key)
                .bind(&rules)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            state.done = true;
            progress(&state);
            done.push(state);
        }
        Ok(done)
    }

    async fn records_by_phone(&self, e164: &str, entities: &[String], limit: u32) -> Result<Vec<Record>> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.* FROM crm_phone_index i JOIN crm_records r ON r.entity = i.entity AND r.id = i.record_id
             WHERE i.e164 = ?1",
        )
        .bind(e164)
        .fetch_all(&self.reader)
        .await?;
        let mut records: Vec<Record> = rows.iter().map(Self::record_from_row).collect::<Result<_>>()?;
        records.retain(|r| entities.contains(&r.entity));
        // Entity priority first, then the most recently updated record.
        records.sort_by(|a, b| {
            let pa = entities.iter().position(|e| *e == a.entity);
            let pb = entities.iter().position(|e| *e == b.entity);
            pa.cmp(&pb).then(b.updated_at.cmp(&a.updated_at)).then(a.id.cmp(&b.id))
        });
        records.truncate(limit as usize);
        Ok(records)
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<StoredActivity> {
        let now = Timestamp::now();
        let fields = serde_json::to_string(&activity.fields).map_err(corrupt)?;
        let mut tx = WriteTx::begin(&self.writer, &self.health).await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM crm_activities WHERE key = ?1").bind(&activity.key).fetch_optional(&mut *tx).await?;
        let id = match existing {
            Some(id) => {
                sqlx::query("UPDATE crm_activities SET kind = ?1, fields = ?2, updated_at = ?3 WHERE id = ?4")
                    .bind(&activity.kind)
                    .bind(&fields)
                    .bind(ms(now))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                id
            }
            None => {
                let id = new_id();
                sqlx::query("INSERT INTO crm_activities (id, key, kind, fields, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)")
                    .bind(&id)
                    .bind(&activity.key)
                    .bind(&activity.kind)
                    .bind(&fields)
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
                id
            }
        };
        sqlx::query("DELETE FROM crm_activity_links WHERE activity_id = ?1").bind(&id).execute(&mut *tx).await?;
        for (i, r) in activity.regarding.iter().enumerate() {
            sqlx::query("INSERT OR IGNORE INTO crm_activity_links (activity_id, entity, record_id, is_primary) VALUES (?1, ?2, ?3, ?4)")
                .bind(&id)
                .bind(&r.entity)
                .bind(&r.id)
                .bind(i == 0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.activity(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("activity {id} vanished")))
    }

    async fn activity(&self, id: &str) -> Result<Option<StoredActivity>> {
        let row = sqlx::query("SELECT * FROM crm_activities WHERE id = ?1").bind(id).fetch_optional(&self.writer).await?;
        match row {
            Some(r) => Ok(Some(self.activity_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn activity_by_key(&self, key: &str) -> Result<Option<StoredActivity>> {
        let row = sqlx::query("SELECT * FROM crm_activities WHERE key = ?1").bind(key).fetch_optional(&self.reader).await?;
        match row {
            Some(r) => Ok(Some(self.activity_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn activities_for(&self, record: &RecordRef, limit: u32) -> Result<Vec<StoredActivity>> {
        let rows = sqlx::query(
            "SELECT a.* FROM crm_activity_links l JOIN crm_activities a ON a.id = l.activity_id
             WHERE l.entity = ?1 AND l.record_id = ?2 ORDER BY a.created_at DESC, a.id DESC LIMIT ?3",
        )
        .bind(&record.entity)
        .bind(&record.id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.activity_from_row(r).await?);
        }
        Ok(out)
    }

    async fn count_activities(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crm_activities").fetch_one(&self.reader).await?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that refuses writes (here the writer connection made read-only, as a
    /// read-only file does) fails the event with `Unavailable` — the server's 503 — and
    /// `ping`; the connection is replaced, so the next event is stored without a restart.
    #[tokio::test]
    async fn a_refused_write_fails_the_event_and_the_next_connection_recovers() {
        use cxbridge_domain::conversation::{Address, Channel, Details, Direction, EventKind, Offer};
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = CrmSchema { entities: cxbridge_domain::crm::EntitySpec::builtin_defaults(), normalizer: cxbridge_domain::phone::PhoneNormalizer::new(Some("DE"), &[]).expect("region") };
        let store = SqliteStore::open(&dir.path().join("s.sqlite"), schema, Durability::Full).await.expect("open");
        let offer = |call: &str| Event {
            dedup_key: format!("{call}:new"),
            source: "test".into(),
            conversation_key: call.into(),
            leg: None,
            at: Timestamp::now(),
            source_time: false,
            kind: EventKind::Offered(Offer {
                channel: Channel::Voice,
                direction: Direction::Inbound,
                customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
                dialed: Address { raw: "+49309999000".into(), e164: Some("+49309999000".into()) },
                agents: vec!["alice".into()],
                queue: None,
                diversion: None,
                details: Details::default(),
                identification: cxbridge_domain::identify::Identification::None,
            }),
        };
        store.ping().await.expect("a fresh database takes writes");
        sqlx::query("PRAGMA query_only = ON").execute(&store.writer).await.expect("read-only writer");
        let refused = store.record_event(offer("ro-1"), Policy::default()).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
        assert!(store.health.recent_failure().is_some_and(|f| f.contains("readonly")), "{:?}", store.health.recent_failure());
        assert!(store.ping().await.is_err(), "ping reports the refused write");
        assert!(store.conversation_by_external(Some("test"), "ro-1").await.expect("read").is_none(), "nothing of a refused event is stored");
        // The failed transaction took its connection with it: a fresh one takes writes.
        let stored = store.record_event(offer("ro-2"), Policy::default()).await;
        assert!(matches!(stored, Ok(Recorded::Applied(_))), "{stored:?}");
    }

    /// The health check is unauthenticated and polled: its queries must walk an index over
    /// the few pending and dead items, never the whole outbox (3,000,000 delivered rows made
    /// each call take 0.3 s).
    #[tokio::test]
    async fn outbox_stats_never_scan_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = CrmSchema { entities: cxbridge_domain::crm::EntitySpec::builtin_defaults(), normalizer: cxbridge_domain::phone::PhoneNormalizer::new(Some("DE"), &[]).expect("region") };
        let store = SqliteStore::open(&dir.path().join("s.sqlite"), schema, Durability::Normal).await.expect("open");
        for sql in [OUTBOX_OPEN_COUNTS, OUTBOX_PENDING_AGE] {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            if sql.contains("?1") {
                query = query.bind(0i64);
            }
            let plan: Vec<(i64, i64, i64, String)> = query.fetch_all(&store.reader).await.expect("plan");
            let steps: Vec<&str> = plan.iter().map(|(_, _, _, detail)| detail.as_str()).collect();
            // `SEARCH` walks a range of an index; any `SCAN` (even `USING COVERING INDEX`)
            // reads every row.
            assert!(steps.iter().any(|d| d.starts_with("SEARCH outbox USING")), "{sql}: {steps:?}");
            assert!(!steps.iter().any(|d| d.starts_with("SCAN")), "{sql} scans the outbox: {steps:?}");
        }
    }
}
