//! The PostgreSQL backend: one database shared by several hub processes ("nodes").
//!
//! Same tables, same semantics as `sqlite.rs` (the functions keep their names so the two can
//! be read side by side; what both do without SQL is in `shared.rs`). What differs is that
//! other processes write at the same time:
//!
//! - Events of one conversation are serialized across nodes with transaction-scoped advisory
//!   locks on its keys, taken before the conversation is read (see [`apply_event`]).
//! - Every "insert unless it exists" is one `INSERT … ON CONFLICT`, never check-then-insert,
//!   so two nodes racing for the same key get the answer SQLite's single writer would give.
//! - Outbox claims skip rows another node has locked (`FOR UPDATE SKIP LOCKED`), and enqueueing
//!   work notifies every node (`pg_notify`, delivered at commit) so idle workers need not poll.
//!
//! - Events go through a group commit ([`group_commit`]): the events waiting at one moment
//!   share one transaction, which takes all their locks first, in ascending order.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Effect, Event, Policy};
use cxbridge_domain::crm::{Activity, EntitySpec, RecordRef};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::Notify;

mod batch;
mod group_commit;

use crate::shared::{self, corrupt, decode, decode_all, ms, new_id, outbox_from_row};
use crate::{CrmSchema, CrmStore, IndexChanges, Reindexed, phone_index_meta, OutboxItem, OutboxState, OutboxStats, Pruned, Record, RecordQuery, Recorded, Reservation, Result, Retention, Store, StoreError, StoredActivity, SyncState, Verification, VerificationLimits};

/// The channel `pg_notify` wakes outbox workers on.
const OUTBOX_CHANNEL: &str = "cxbridge_outbox";

/// Rows per statement of a bulk import: large enough that round trips stop mattering, small
/// enough that one statement's arrays stay a few hundred kilobytes.
const IMPORT_CHUNK: usize = 1_000;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// For connections outside the pool (the LISTEN connection of `wake_on_outbox`).
    options: PgConnectOptions,
    schema: Arc<CrmSchema>,
    /// Dropped with the last clone of the store; background listeners stop then.
    alive: Arc<tokio::sync::watch::Sender<()>>,
    probe: Arc<shared::WriteProbe>,
    /// The writer task every event goes through.
    events: group_commit::GroupCommit,
}

/// The advisory lock key of one of a conversation's ids. FNV-1a (64 bits) because every node
/// must compute the same key for the same id, whatever build it runs: std's hasher makes no
/// such promise. A collision only makes two unrelated conversations wait for each other.
/// Public so that an operator's script or a test can hold (or look for) a conversation's lock.
pub fn lock_key(source: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash differently.
    for b in source.bytes().chain([0xff]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The locks an event needs, in ascending order: every node takes them in the same order, so
/// two events sharing both keys can never each hold the lock the other waits for.
fn lock_keys(event: &Event) -> Vec<i64> {
    let mut keys: Vec<i64> = std::iter::once(&event.conversation_key).chain(event.leg.as_ref()).map(|k| lock_key(&event.source, k)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) and
    /// runs migrations. sqlx holds an advisory lock while migrating, so nodes starting together
    /// apply each migration once.
    pub async fn open(url: &str, schema: CrmSchema, max_connections: u32) -> Result<Self> {
        // Neither message may contain the URL: it carries the password.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("the PostgreSQL URL is not valid: {e}")))?
            .application_name("cxbridge");
        let target = format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or(options.get_username()));
        let unavailable = |e: sqlx::Error| StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"));
        // One plain connection first: a wrong host, password or database fails at once with
        // that message (a pool would retry until its timeout). It also runs the migrations.
        let mut first = PgConnection::connect_with(&options).await.map_err(unavailable)?;
        sqlx::migrate!("./migrations/postgres").run(&mut first).await?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        let (alive, _) = tokio::sync::watch::channel(());
        let events = group_commit::GroupCommit::start(pool.clone());
        Ok(Self { pool, options, schema: Arc::new(schema), alive: Arc::new(alive), probe: Default::default(), events })
    }

    pub fn schema(&self) -> &CrmSchema {
        &self.schema
    }

    async fn load(conn: &mut PgConnection, id: &str) -> Result<Option<Conversation>> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM conversations WHERE id = $1").bind(id).fetch_optional(conn).await?;
        body.map(|b| decode(&b)).transpose()
    }

    /// Upserts `c`, and indexes the source ids and agents that `previous` did not have yet
    /// (an answer or hangup adds none, so it costs one statement).
    async fn save(conn: &mut PgConnection, c: &Conversation, previous: Option<&Conversation>) -> Result<()> {
        let body = shared::encode(c)?;
        sqlx::query(
            "INSERT INTO conversations (id, source, external_id, state, last_event_at, ended_at, revision, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
        let new_keys = shared::new_keys(c, previous);
        if !new_keys.is_empty() {
            sqlx::query(
                "INSERT INTO conversation_keys (source, key, conversation_id) SELECT $1, k, $2 FROM unnest($3::text[]) AS k
                 ON CONFLICT DO NOTHING",
            )
            .bind(&c.source)
            .bind(&c.id)
            .bind(&new_keys)
            .execute(&mut *conn)
            .await?;
        }
        let new_agents = shared::new_agents(c, previous);
        if !new_agents.is_empty() {
            sqlx::query(
                "INSERT INTO conversation_agents (agent, conversation_id) SELECT a, $1 FROM unnest($2::text[]) AS a
                 ON CONFLICT DO NOTHING",
            )
            .bind(&c.id)
            .bind(&new_agents)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Enqueues (or re-arms) the conversation's activity and wakes every node's outbox worker;
    /// the notification is delivered at commit, so nobody looks before the row is visible.
    async fn enqueue_activity(conn: &mut PgConnection, conversation_id: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "WITH queued AS (
               INSERT INTO outbox (key, kind, conversation_id, state, generation, attempts, next_attempt_at, created_at, updated_at)
               VALUES ($1, 'activity', $2, 'pending', 1, 0, $3, $3, $3)
               ON CONFLICT (key) DO UPDATE SET state = 'pending', generation = outbox.generation + 1, attempts = 0,
                 next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, last_error = NULL
               RETURNING id)
             SELECT pg_notify('cxbridge_outbox', '') FROM queued",
        )
        .bind(cxbridge_domain::mapping::activity_key(conversation_id))
        .bind(conversation_id)
        .bind(ms(now))
        .execute(conn)
        .await?;
        Ok(())
    }

    fn record_from_row(row: &PgRow) -> Result<Record> {
        let fields: sqlx::types::Json<BTreeMap<String, String>> =
            row.try_get("fields").map_err(|e| StoreError::Corrupt(format!("record fields: {e}")))?;
        shared::record_from_row(row, fields.0)
    }

    /// The phone index rows of one record: (e164, field) per phone field that normalizes.
    fn phone_keys(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Vec<(String, String)> {
        spec.phone_fields
            .iter()
            .filter_map(|field| {
                let raw = fields.get(field)?;
                Some((self.schema.normalizer.index_key(raw)?, field.clone()))
            })
            .collect()
    }

    async fn write_phone_index(&self, conn: &mut PgConnection, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<()> {
        sqlx::query("DELETE FROM crm_phone_index WHERE entity = $1 AND record_id = $2")
            .bind(&spec.name)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        let (e164s, names): (Vec<String>, Vec<String>) = self.phone_keys(spec, fields).into_iter().unzip();
        if !e164s.is_empty() {
            sqlx::query(
                "INSERT INTO crm_phone_index (e164, entity, record_id, field) SELECT e, $1, $2, f FROM unnest($3::text[], $4::text[]) AS t(e, f)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&spec.name)
            .bind(id)
            .bind(&e164s)
            .bind(&names)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn put_record(&self, conn: &mut PgConnection, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO crm_records (entity, id, fields, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (entity, id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at",
        )
        .bind(&spec.name)
        .bind(id)
        .bind(sqlx::types::Json(fields))
        .bind(ms(now))
        .execute(&mut *conn)
        .await?;
        self.write_phone_index(conn, spec, id, fields).await
    }

    /// `put_record` for many records at once: three statements per chunk of rows, whatever its
    /// size. `rows` is keyed by id, so a chunk never names a record twice (an upsert may not
    /// touch one row twice) and its rows are locked in id order, as every other import's are.
    async fn put_records(&self, conn: &mut PgConnection, spec: &EntitySpec, rows: BTreeMap<String, BTreeMap<String, String>>, now: Timestamp) -> Result<()> {
        let mut ids = Vec::with_capacity(rows.len());
        let mut jsons = Vec::with_capacity(rows.len());
        let (mut e164s, mut index_ids, mut index_fields) = (vec![], vec![], vec![]);
        for (id, fields) in &rows {
            for (e164, field) in self.phone_keys(spec, fields) {
                e164s.push(e164);
                index_ids.push(id.clone());
                index_fields.push(field);
            }
            jsons.push(serde_json::to_string(fields).map_err(corrupt)?);
            ids.push(id.clone());
        }
        // Which rows existed before: only their old phone numbers need removing, so a first
        // import does not pay for a delete per row.
        let updated: Vec<Option<String>> = sqlx::query_scalar(
            "INSERT INTO crm_records (entity, id, fields, created_at, updated_at)
             SELECT $1, id, f::jsonb, $4, $4 FROM unnest($2::text[], $3::text[]) AS t(id, f)
             ON CONFLICT (entity, id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at
             RETURNING CASE WHEN xmax = 0 THEN NULL ELSE id END",
        )
        .bind(&spec.name)
        .bind(&ids)
        .bind(&jsons)
        .bind(ms(now))
        .fetch_all(&mut *conn)
        .await?;
        let updated: Vec<String> = updated.into_iter().flatten().collect();
        if !updated.is_empty() {
            sqlx::query("DELETE FROM crm_phone_index WHERE entity = $1 AND record_id = ANY($2)")
                .bind(&spec.name)
                .bind(&updated)
                .execute(&mut *conn)
                .await?;
        }
        if !e164s.is_empty() {
            sqlx::query(
                "INSERT INTO crm_phone_index (e164, entity, record_id, field)
                 SELECT e, $1, r, f FROM unnest($2::text[], $3::text[], $4::text[]) AS t(e, r, f)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&spec.name)
            .bind(&e164s)
            .bind(&index_ids)
            .bind(&index_fields)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn activity_links(&self, id: &str) -> Result<Vec<RecordRef>> {
        let rows = sqlx::query(
            r#"SELECT entity, record_id FROM crm_activity_links WHERE activity_id = $1 ORDER BY is_primary DESC, entity COLLATE "C", record_id COLLATE "C""#,
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(shared::link_from_row).collect()
    }

    async fn activity_from_row(&self, row: &PgRow) -> Result<StoredActivity> {
        let id: String = row.try_get("id")?;
        shared::activity_from_row(row, self.activity_links(&id).await?)
    }
}

/// Whether the event was seen, and the conversation its key or leg belongs to.
async fn lookup(tx: &mut PgConnection, event: &Event) -> Result<(bool, Option<Conversation>)> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM events WHERE dedup_key = $1) AS seen,
           COALESCE(
             (SELECT c.body FROM conversation_keys k JOIN conversations c ON c.id = k.conversation_id WHERE k.source = $2 AND k.key = $3),
             (SELECT c.body FROM conversation_keys k JOIN conversations c ON c.id = k.conversation_id WHERE k.source = $2 AND k.key = $4)
           ) AS body",
    )
    .bind(&event.dedup_key)
    .bind(&event.source)
    .bind(&event.conversation_key)
    .bind(event.leg.as_deref())
    .fetch_one(&mut *tx)
    .await?;
    shared::seen_and_current(&row)
}

/// Dedup, transition, save and outbox for one event, inside the caller's transaction, which
/// already holds the event's advisory locks ([`lock_keys`]). Returns whether anything was
/// written. The group commit's one-by-one way, each event under a savepoint; the batch's
/// other way ([`batch`]) must leave what this would.
///
/// The locks were taken by earlier statements: under READ COMMITTED each statement reads the
/// data committed when it starts, so the read below sees the last event any node committed
/// for this conversation, and nobody else can write it until we commit.
async fn apply_event(tx: &mut PgConnection, event: Event, policy: Policy) -> Result<(Recorded, bool)> {
    let now = Timestamp::now();
    let (seen, current) = lookup(tx, &event).await?;
    if seen {
        return Ok((Recorded::Duplicate(current), false));
    }
    let transition = shared::transition(current.as_ref(), &event, policy)?;
    let inserted = sqlx::query("INSERT INTO events (dedup_key, received_at, conversation_id) VALUES ($1, $2, $3) ON CONFLICT (dedup_key) DO NOTHING")
        .bind(&event.dedup_key)
        .bind(ms(now))
        .bind(&transition.conversation.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if inserted == 0 {
        // The same dedup key under other conversation ids (so other locks) committed first.
        let (_, current) = lookup(tx, &event).await?;
        return Ok((Recorded::Duplicate(current), false));
    }
    if !transition.absorbed {
        PgStore::save(tx, &transition.conversation, current.as_ref()).await?;
    }
    if transition.effects.contains(&Effect::Memorialize) {
        PgStore::enqueue_activity(tx, &transition.conversation.id, now).await?;
    }
    Ok((Recorded::Applied(transition), true))
}

/// Keeps one LISTEN connection open and turns each notification into `wake.notify_one()`.
/// After a lost connection it wakes once too: notifications sent meanwhile are gone.
async fn listen_for_outbox(options: PgConnectOptions, wake: Arc<Notify>) {
    const FIRST_RETRY: Duration = Duration::from_millis(250);
    let mut retry = FIRST_RETRY;
    let mut connected_before = false;
    loop {
        match connect_listener(&options).await {
            Ok(mut listener) => {
                tracing::debug!(channel = OUTBOX_CHANNEL, "listening for outbox notifications");
                retry = FIRST_RETRY;
                if connected_before {
                    wake.notify_one();
                }
                connected_before = true;
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        Ok(None) => {
                            // PgListener has reconnected and listens again.
                            tracing::warn!(channel = OUTBOX_CHANNEL, "lost the connection for outbox notifications; reconnected");
                            wake.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(channel = OUTBOX_CHANNEL, error = %e, "outbox notifications failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(channel = OUTBOX_CHANNEL, error = %e, retry_ms = retry.as_millis() as u64, "cannot listen for outbox notifications"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

/// A listener on a connection of its own (a pool of one, which PgListener reconnects through),
/// so it never takes a connection away from the store's pool.
async fn connect_listener(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    Ok(listener)
}

#[async_trait]
impl Store for PgStore {
    /// Answered once the event's batch has committed ([`group_commit`]).
    async fn record_event(&self, event: Event, policy: Policy) -> Result<Recorded> {
        self.events.record(event, policy).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let mut conn = self.pool.acquire().await?;
        Self::load(&mut conn, id).await
    }

    async fn conversation_by_external(&self, source: Option<&str>, external_id: &str) -> Result<Option<Conversation>> {
        let id: Option<String> = match source {
            Some(s) => {
                sqlx::query_scalar("SELECT conversation_id FROM conversation_keys WHERE source = $1 AND key = $2")
                    .bind(s)
                    .bind(external_id)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT conversation_id FROM conversation_keys WHERE key = $1 LIMIT 1")
                    .bind(external_id)
                    .fetch_optional(&self.pool)
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
             WHERE a.agent = $1 AND c.state != 'completed' ORDER BY c.last_event_at",
        )
        .bind(agent)
        .fetch_all(&self.pool)
        .await?;
        decode_all(&bodies)
    }

    async fn stale_conversations(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM conversations WHERE state IN ('offered', 'connected') AND last_event_at < $1 ORDER BY last_event_at LIMIT $2",
        )
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        decode_all(&bodies)
    }

    async fn rung_out(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM conversations WHERE state = 'offered' AND last_event_at < $1 ORDER BY last_event_at LIMIT $2")
            .bind(ms(before))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        decode_all(&bodies)
    }

    async fn wrapup_overdue(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM conversations WHERE state = 'ended' AND ended_at < $1 ORDER BY ended_at LIMIT $2")
                .bind(ms(before))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        decode_all(&bodies)
    }

    /// Rows another node is claiming right now are skipped rather than waited for; a row it
    /// claimed and committed meanwhile is re-checked against the lease by PostgreSQL before
    /// it is locked, so no item is ever claimed by two nodes.
    async fn outbox_claim(&self, now: Timestamp, limit: u32, lease: Duration) -> Result<Vec<OutboxItem>> {
        let until = ms(now) + lease.as_millis() as i64;
        let rows = sqlx::query(
            "WITH claimed AS (
               UPDATE outbox SET claimed_until = $1 WHERE id IN (
                 SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2
                   AND (claimed_until IS NULL OR claimed_until < $2)
                 ORDER BY next_attempt_at LIMIT $3
                 FOR UPDATE SKIP LOCKED)
               RETURNING *)
             SELECT * FROM claimed ORDER BY next_attempt_at, id",
        )
        .bind(until)
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_delivered(&self, id: i64, generation: i64, crm_ref: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'delivered', crm_ref = $1, delivered_at = $2, updated_at = $2, claimed_until = NULL,
               last_error = NULL, attempts = attempts + 1
             WHERE id = $3 AND generation = $4",
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
            sqlx::query("UPDATE outbox SET crm_ref = $1, claimed_until = NULL, updated_at = $2 WHERE id = $3")
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
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, claimed_until = NULL, updated_at = $2,
               state = CASE WHEN $3::int8 IS NULL THEN 'dead' ELSE 'pending' END,
               next_attempt_at = COALESCE($3::int8, next_attempt_at)
             WHERE id = $4",
        )
        .bind(error)
        .bind(ms(now))
        .bind(retry_at.map(ms))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_list(&self, state: Option<OutboxState>, limit: u32) -> Result<Vec<OutboxItem>> {
        let rows = match state {
            Some(s) => {
                sqlx::query("SELECT * FROM outbox WHERE state = $1 ORDER BY updated_at DESC LIMIT $2")
                    .bind(s.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query("SELECT * FROM outbox ORDER BY updated_at DESC LIMIT $1").bind(i64::from(limit)).fetch_all(&self.pool).await?,
        };
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        let row = sqlx::query("SELECT * FROM outbox WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_for_conversation(&self, conversation_id: &str) -> Result<Option<OutboxItem>> {
        let row = sqlx::query("SELECT * FROM outbox WHERE conversation_id = $1 ORDER BY id DESC LIMIT 1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_replay(&self, id: i64, now: Timestamp) -> Result<bool> {
        // One statement, so the notification goes out with the commit of the replay itself.
        let replayed = sqlx::query(
            "WITH replayed AS (
               UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1, claimed_until = NULL,
                 generation = generation + 1
               WHERE id = $2
               RETURNING id)
             SELECT pg_notify('cxbridge_outbox', '') FROM replayed",
        )
        .bind(ms(now))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .len();
        Ok(replayed > 0)
    }

    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats> {
        // Both counts walk the (state, …) index over pending and dead items only.
        let mut counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) AS n FROM outbox WHERE state IN ('pending', 'dead') GROUP BY state").fetch_all(&self.pool).await?;
        let delivered: i64 = sqlx::query_scalar("SELECT delivered FROM outbox_totals WHERE id = 1").fetch_optional(&self.pool).await?.unwrap_or(0);
        counts.push(("delivered".into(), delivered));
        let (due, oldest) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE next_attempt_at <= $1) AS due, MIN(updated_at) AS oldest FROM outbox WHERE state = 'pending'",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(shared::outbox_stats(counts, due, oldest, now))
    }

    async fn prune(&self, retention: &Retention, batch: u32) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        let batch = i64::from(batch);
        if let Some(before) = retention.delivered_before {
            pruned.outbox = sqlx::query(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = 'delivered' AND updated_at < $1 LIMIT $2)",
            )
            .bind(ms(before))
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if let Some(before) = retention.events_before {
            pruned.events = sqlx::query(
                "DELETE FROM events WHERE dedup_key IN (
                   SELECT e.dedup_key FROM events e LEFT JOIN conversations c ON c.id = e.conversation_id
                   WHERE e.received_at < $1 AND (c.id IS NULL OR c.state = 'completed') LIMIT $2)",
            )
            .bind(ms(before))
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if let Some(before) = retention.verifications_before {
            pruned.verifications =
                sqlx::query("DELETE FROM ivr_verifications WHERE id IN (SELECT id FROM ivr_verifications WHERE at < $1 LIMIT $2)")
                    .bind(ms(before))
                    .bind(batch)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
        }
        Ok(pruned)
    }

    /// Reads, and proves the database takes writes (a full disk, a read-only replica or
    /// `default_transaction_read_only` refuse the probe), at most once a second per node.
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        self.probe
            .check(|| async {
                sqlx::query("INSERT INTO health_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
                    .bind(ms(Timestamp::now()))
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
            })
            .await
    }

    fn wake_on_outbox(&self, wake: Arc<Notify>) {
        let options = self.options.clone();
        let mut alive = self.alive.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                // Never changes; ends when the last clone of the store is dropped.
                _ = async { while alive.changed().await.is_ok() {} } => {}
                () = listen_for_outbox(options, wake) => {}
            }
        });
    }

    async fn record_sign_out(&self, agent: &str, at: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_sign_outs (agent, at) VALUES ($1, $2)
             ON CONFLICT (agent) DO UPDATE SET at = GREATEST(agent_sign_outs.at, excluded.at)",
        )
        .bind(agent)
        .bind(ms(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_verification(&self, v: &Verification) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let id = insert_verification(&mut tx, v).await?;
        if let Some(r) = &v.record {
            insert_verification_record(&mut tx, id, r, v.at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reserve_verification(&self, v: &Verification, records: &[RecordRef], limits: &VerificationLimits) -> Result<Reservation> {
        let since = ms(v.at) - i64::try_from(limits.window.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        // Every attempt on every node takes this one lock until its transaction ends: the counts
        // below and the insert are one step. Attempts are few (callers typing PINs), so one lock
        // for all of them costs nothing and is what the limit over all numbers needs anyway.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key("cxbridge", "ivr_verifications")).execute(&mut *tx).await?;
        let by_number: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM ivr_verifications WHERE number = $1 AND at >= $2 AND outcome IN {}",
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
                 WHERE r.entity = $1 AND r.record_id = $2 AND r.at >= $3 AND v.outcome IN {}",
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
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM ivr_verifications WHERE at >= $1 AND outcome IN {}", shared::COUNTED_OUTCOMES)))
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
        sqlx::query("UPDATE ivr_verifications SET outcome = $1, entity = $2, record_id = $3 WHERE id = $4")
            .bind(outcome)
            .bind(record.map(|r| r.entity.as_str()))
            .bind(record.map(|r| r.id.as_str()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn verifications(&self, limit: u32) -> Result<Vec<Verification>> {
        let rows: Vec<shared::VerificationRow> =
            sqlx::query_as("SELECT at, number, entity, record_id, kind, outcome FROM ivr_verifications ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(shared::verification_from_row).collect()
    }

    async fn signed_out_at(&self, agent: &str) -> Result<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT at FROM agent_sign_outs WHERE agent = $1").bind(agent).fetch_optional(&self.pool).await?;
        at.map(shared::ts).transpose()
    }
}

async fn insert_verification(tx: &mut PgConnection, v: &Verification) -> Result<i64> {
    let id: i64 = sqlx::query_scalar("INSERT INTO ivr_verifications (at, number, entity, record_id, kind, outcome) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id")
        .bind(ms(v.at))
        .bind(&v.number)
        .bind(v.record.as_ref().map(|r| r.entity.as_str()))
        .bind(v.record.as_ref().map(|r| r.id.as_str()))
        .bind(&v.kind)
        .bind(&v.outcome)
        .fetch_one(&mut *tx)
        .await?;
    Ok(id)
}

async fn insert_verification_record(tx: &mut PgConnection, id: i64, r: &RecordRef, at: Timestamp) -> Result<()> {
    sqlx::query("INSERT INTO ivr_verification_records (verification_id, entity, record_id, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(&r.entity)
        .bind(&r.id)
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl CrmStore for PgStore {
    async fn create_record(&self, entity: &str, mut fields: BTreeMap<String, String>) -> Result<Record> {
        let spec = self.schema.entity(entity)?.clone();
        shared::check_new_fields(&fields)?;
        let id = shared::take_id(&mut fields);
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        // Not check-then-insert: of two nodes creating the same id, exactly one inserts.
        let inserted = sqlx::query(
            "INSERT INTO crm_records (entity, id, fields, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (entity, id) DO NOTHING",
        )
        .bind(entity)
        .bind(&id)
        .bind(sqlx::types::Json(&fields))
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Invalid(format!("{entity} `{id}` exists already; update it with PATCH")));
        }
        self.write_phone_index(&mut tx, &spec, &id, &fields).await?;
        tx.commit().await?;
        Ok(Record { entity: entity.into(), id, fields, created_at: now, updated_at: now })
    }

    async fn record(&self, entity: &str, id: &str) -> Result<Option<Record>> {
        self.schema.entity(entity)?;
        let row = sqlx::query("SELECT * FROM crm_records WHERE entity = $1 AND id = $2").bind(entity).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::record_from_row).transpose()
    }

    async fn update_record(&self, entity: &str, id: &str, patch: BTreeMap<String, String>) -> Result<Option<Record>> {
        let spec = self.schema.entity(entity)?.clone();
        shared::check_patch(&patch)?;
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: two nodes patching the same record merge one after the other.
        let row = sqlx::query("SELECT * FROM crm_records WHERE entity = $1 AND id = $2 FOR UPDATE")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM crm_phone_index WHERE entity = $1 AND record_id = $2").bind(entity).bind(id).execute(&mut *tx).await?;
        let n = sqlx::query("DELETE FROM crm_records WHERE entity = $1 AND id = $2").bind(entity).bind(id).execute(&mut *tx).await?.rows_affected();
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
        let mut sql = String::from("SELECT * FROM crm_records WHERE entity = $1");
        let mut binds: Vec<String> = vec![entity.to_string()];
        for (k, v) in &query.fields {
            sql.push_str(&format!(" AND fields ->> ${} = ${}", binds.len() + 1, binds.len() + 2));
            binds.push(k.clone());
            binds.push(v.clone());
        }
        if let Some(text) = &query.text {
            // Field values only, never the JSON around them (`"pin":"98` must find no PIN),
            // and never a sensitive field. ILIKE: case-insensitive like SQLite's LIKE (which
            // folds ASCII only).
            sql.push_str(&format!(" AND EXISTS (SELECT 1 FROM jsonb_each_text(fields) AS f(key, value) WHERE f.value ILIKE ${} ESCAPE '\\'", binds.len() + 1));
            binds.push(shared::contains_pattern(text));
            if !spec.sensitive.is_empty() {
                let placeholders: Vec<String> = (0..spec.sensitive.len()).map(|i| format!("${}", binds.len() + 1 + i)).collect();
                sql.push_str(&format!(" AND f.key NOT IN ({})", placeholders.join(", ")));
                binds.extend(spec.sensitive.iter().cloned());
            }
            sql.push(')');
        }
        sql.push_str(&format!(" ORDER BY updated_at DESC LIMIT ${}", binds.len() + 1));
        // Only placeholders are concatenated; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(i64::from(shared::search_limit(query))).fetch_all(&self.pool).await?;
        rows.iter().map(Self::record_from_row).collect()
    }

    async fn import_records(&self, entity: &str, rows: Vec<BTreeMap<String, String>>) -> Result<u64> {
        let spec = self.schema.entity(entity)?.clone();
        let now = Timestamp::now();
        let n = rows.len() as u64;
        let mut tx = self.pool.begin().await?;
        let mut chunk = BTreeMap::new();
        for mut fields in rows {
            let id = shared::take_id(&mut fields);
            // A later row with the same id wins, as it would row by row.
            chunk.insert(id, fields);
            if chunk.len() >= IMPORT_CHUNK {
                self.put_records(&mut tx, &spec, std::mem::take(&mut chunk), now).await?;
            }
        }
        if !chunk.is_empty() {
            self.put_records(&mut tx, &spec, chunk, now).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn count_records(&self, entity: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crm_records WHERE entity = $1").bind(entity).fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn apply_index_changes(&self, entity: &str, changes: IndexChanges, now: Timestamp) -> Result<()> {
        let spec = self.schema.entity(entity)?.clone();
        let mut tx = self.pool.begin().await?;
        if changes.reset {
            sqlx::query("DELETE FROM crm_phone_index WHERE entity = $1").bind(entity).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM crm_records WHERE entity = $1").bind(entity).execute(&mut *tx).await?;
        }
        let mut chunk = BTreeMap::new();
        for (id, fields) in changes.upserts {
            chunk.insert(id, fields);
            if chunk.len() >= IMPORT_CHUNK {
                self.put_records(&mut tx, &spec, std::mem::take(&mut chunk), now).await?;
            }
        }
        if !chunk.is_empty() {
            self.put_records(&mut tx, &spec, chunk, now).await?;
        }
        if !changes.deletes.is_empty() {
            sqlx::query("DELETE FROM crm_phone_index WHERE entity = $1 AND record_id = ANY($2)").bind(entity).bind(&changes.deletes).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM crm_records WHERE entity = $1 AND id = ANY($2)").bind(entity).bind(&changes.deletes).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO crm_sync_state (entity, cursor, complete, synced_at, last_error) VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (entity) DO UPDATE SET cursor = excluded.cursor,
               complete = CASE WHEN $5 THEN excluded.complete ELSE crm_sync_state.complete OR excluded.complete END,
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
            "INSERT INTO crm_sync_state (entity, last_error) VALUES ($1, $2)
             ON CONFLICT (entity) DO UPDATE SET last_error = excluded.last_error",
        )
        .bind(entity)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn index_sync_states(&self) -> Result<Vec<SyncState>> {
        let rows = sqlx::query(r#"SELECT entity, cursor, complete, synced_at, last_error FROM crm_sync_state ORDER BY entity COLLATE "C""#)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(shared::sync_state_from_row).collect()
    }

    async fn reindex_phones(&self, batch: u32, progress: &(dyn for<'r> Fn(&'r Reindexed) + Send + Sync)) -> Result<Vec<Reindexed>> {
        let mut done = vec![];
        for spec in &self.schema.entities {
            let (key, rules) = phone_index_meta(&self.schema, spec);
            let previous: Option<String> = sqlx::query_scalar("SELECT value FROM store_meta WHERE key = $1").bind(&key).fetch_optional(&self.pool).await?;
            if previous.as_deref() == Some(rules.as_str()) {
                continue;
            }
            let mut state = Reindexed { entity: spec.name.clone(), records: 0, previous, done: false };
            let mut after = String::new();
            loop {
                // Keyset pages by id, one short transaction each; nodes starting together
                // rebuild the same keys (delete + insert per record), which is harmless.
                let mut tx = self.pool.begin().await?;
                let rows = sqlx::query("SELECT * FROM crm_records WHERE entity = $1 AND id > $2 ORDER BY id LIMIT $3")
                    .bind(&spec.name)
                    .bind(&after)
                    .bind(i64::from(batch.max(1)))
                    .fetch_all(&mut *tx)
                    .await?;
                let records: Vec<Record> = rows.iter().map(Self::record_from_row).collect::<Result<_>>()?;
                let Some(last) = records.last() else { break };
                after = last.id.clone();
                for r in &records {
                    self.write_phone_index(&mut tx, spec, &r.id, &r.fields).await?;
                }
                tx.commit().await?;
                state.records += records.len() as u64;
                progress(&state);
            }
            sqlx::query("INSERT INTO store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(&key)
                .bind(&rules)
                .execute(&self.pool)
                .await?;
            state.done = true;
            progress(&state);
            done.push(state);
        }
        Ok(done)
    }

    /// The identification path: one statement on the phone index's primary key, already in
    /// SQLite's order (entity priority, then the most recently updated; `COLLATE "C"` orders
    /// ids by bytes, as Rust and SQLite do).
    async fn records_by_phone(&self, e164: &str, entities: &[String], limit: u32) -> Result<Vec<Record>> {
        let rows = sqlx::query(
            r#"SELECT r.* FROM crm_records r
               WHERE (r.entity, r.id) IN (SELECT entity, record_id FROM crm_phone_index WHERE e164 = $1 AND entity = ANY($2))
               ORDER BY array_position($2, r.entity), r.updated_at DESC, r.id COLLATE "C"
               LIMIT $3"#,
        )
        .bind(e164)
        .bind(entities)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::record_from_row).collect()
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<StoredActivity> {
        let now = Timestamp::now();
        let fields = serde_json::to_string(&activity.fields).map_err(corrupt)?;
        let mut tx = self.pool.begin().await?;
        // Two nodes upserting one key: the second waits for the first's row and updates it.
        let id: String = sqlx::query_scalar(
            "INSERT INTO crm_activities (id, key, kind, fields, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, fields = excluded.fields, updated_at = excluded.updated_at
             RETURNING id",
        )
        .bind(new_id())
        .bind(&activity.key)
        .bind(&activity.kind)
        .bind(&fields)
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM crm_activity_links WHERE activity_id = $1").bind(&id).execute(&mut *tx).await?;
        if !activity.regarding.is_empty() {
            let entities: Vec<&str> = activity.regarding.iter().map(|r| r.entity.as_str()).collect();
            let ids: Vec<&str> = activity.regarding.iter().map(|r| r.id.as_str()).collect();
            // The first link is the primary one; a repeated link keeps its first place.
            sqlx::query(
                "INSERT INTO crm_activity_links (activity_id, entity, record_id, is_primary)
                 SELECT $1, e, r, n = 1 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(e, r, n)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(&entities)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.activity(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("activity {id} vanished")))
    }

    async fn activity(&self, id: &str) -> Result<Option<StoredActivity>> {
        let row = sqlx::query("SELECT * FROM crm_activities WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(self.activity_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn activity_by_key(&self, key: &str) -> Result<Option<StoredActivity>> {
        let row = sqlx::query("SELECT * FROM crm_activities WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(self.activity_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn activities_for(&self, record: &RecordRef, limit: u32) -> Result<Vec<StoredActivity>> {
        let rows = sqlx::query(
            r#"SELECT a.* FROM crm_activity_links l JOIN crm_activities a ON a.id = l.activity_id
               WHERE l.entity = $1 AND l.record_id = $2 ORDER BY a.created_at DESC, a.id COLLATE "C" DESC LIMIT $3"#,
        )
        .bind(&record.entity)
        .bind(&record.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.activity_from_row(r).await?);
        }
        Ok(out)
    }

    async fn count_activities(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crm_activities").fetch_one(&self.pool).await?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn lock_keys_are_stable_and_separate_source_from_key() {
        // Fixed values: every node, whatever its build, must lock the same key.
        assert_eq!(lock_key("", ""), 0xaf64_724c_8602_eb6e_u64 as i64);
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
        assert_eq!(lock_key("cti", "call-1"), lock_key("cti", "call-1"));
    }
}
