//! The SQLite backend: one file in the data directory, WAL mode, migrations on open.
//!
//! The connections belong to threads of their own ([`workers`]): one writer that group-commits
//! every write waiting at that moment, and a few readers that see the last committed state.
//! Each call of the traits is one unit of work handed to one of them — never one hand-off per
//! statement — so the cost of the store does not grow with how expensive a thread wake-up is
//! on the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Event, Policy};
use cxbridge_domain::crm::RecordRef;
use rusqlite::{Connection, OpenFlags, params};

mod crm;
mod health;
mod migrate;
mod units;
mod workers;

use health::WriteHealth;
use units::{bodies, exec, first, value};
use workers::{Checkpointer, Readers, Writer};

use crate::shared::{self, Columns, decode, ms, outbox_from_row};
use crate::{OutboxItem, OutboxState, OutboxStats, Pruned, Recorded, Reservation, Result, Retention, Store, StoreError, Verification, VerificationLimits};

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
    writer: Writer,
    readers: Readers,
    schema: Arc<CrmSchema>,
    health: Arc<WriteHealth>,
    probe: Arc<shared::WriteProbe>,
    _checkpointer: Arc<Checkpointer>,
}

/// The health check's outbox counts: over the (state, …) indexes of pending and dead items
/// only, never the delivered rows that grow with every conversation.
const OUTBOX_OPEN_COUNTS: &str = "SELECT state, COUNT(*) AS n FROM outbox WHERE state IN ('pending', 'dead') GROUP BY state";
const OUTBOX_PENDING_AGE: &str =
    "SELECT COALESCE(SUM(next_attempt_at <= ?1), 0) AS due, MIN(updated_at) AS oldest FROM outbox WHERE state = 'pending'";

/// Reading threads. Reads are short index lookups; more threads than cores only add wake-ups.
const READERS: usize = 3;

/// Page cache of each connection, in KiB. The writer's holds the B-tree pages an import or a
/// busy hour touches; a reader's the hot part of the phone index and open conversations.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// The writer's page cache once a bulk import runs (`cxbridge import`, its own process): a
/// million records with random ids touch pages all over three B-trees, and every page the
/// cache holds is one read and one rewrite less per batch.
pub(crate) const BULK_WRITER_CACHE_KIB: i64 = 256 * 1024;
/// Rows from which an import counts as bulk.
pub(crate) const BULK_ROWS: usize = 1_000;
const READER_CACHE_KIB: i64 = 8 * 1024;

/// WAL pages (4 KiB) after which the writer checkpoints by itself, should the checkpoint
/// thread fall behind (SQLite's default is 1,000).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    /// Runs checkpoints only (needs write access to the file, takes no write transactions).
    Checkpointer,
}

fn connect(path: &Path, role: Role, durability: Durability) -> Result<Connection> {
    let flags = match role {
        Role::Writer => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        Role::Reader => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        Role::Checkpointer => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    if role == Role::Writer {
        // Returns the mode it set: a row, so not `execute`.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!("the database cannot use WAL mode (got `{mode}`); put it on a local file system")));
        }
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    let cache = match role {
        Role::Writer => WRITER_CACHE_KIB,
        Role::Reader => READER_CACHE_KIB,
        Role::Checkpointer => 256,
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{cache};"))?;
    if role == Role::Writer {
        // Checkpoints are the checkpoint thread's job; this is the backstop. The WAL file is
        // cut back to 64 MiB after a checkpoint that emptied it.
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}; PRAGMA journal_size_limit = 67108864;"))?;
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and runs migrations.
    pub async fn open(path: &Path, schema: CrmSchema, durability: Durability) -> Result<Self> {
        let path = path.to_path_buf();
        // Opening and migrating block: off the runtime's threads.
        tokio::task::spawn_blocking(move || Self::open_blocking(path, schema, durability))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database stopped: {e}")))?
    }

    fn open_blocking(path: PathBuf, schema: CrmSchema, durability: Durability) -> Result<Self> {
        let conn = connect(&path, Role::Writer, durability)?;
        migrate::run(&conn)?;
        let health = Arc::new(WriteHealth::default());
        let writer_path = path.clone();
        let writer = Writer::start(conn, Arc::new(move || connect(&writer_path, Role::Writer, durability)), health.clone())?;
        let checkpointer = Arc::new(Checkpointer::start(connect(&path, Role::Checkpointer, durability)?)?);
        let readers = Readers::start(READERS, Arc::new(move || connect(&path, Role::Reader, durability)))?;
        Ok(Self { writer, readers, schema: Arc::new(schema), health, probe: Default::default(), _checkpointer: checkpointer })
    }

    /// Opens a database named by a `sqlite://path` URL (or a plain path); URL options after
    /// `?` are ignored (the store sets its own).
    pub async fn open_url(url: &str, schema: CrmSchema, durability: Durability) -> Result<Self> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::Invalid(format!("`{url}` names no file: the SQLite store needs a file path")));
        }
        Self::open(Path::new(path), schema, durability).await
    }

    pub fn schema(&self) -> &CrmSchema {
        &self.schema
    }

    async fn read<T: Send + 'static>(&self, read: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        self.readers.run(read).await
    }

    async fn write<T: Send + 'static>(&self, write: impl FnMut(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        self.writer.run(write).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn record_event(&self, event: Event, policy: Policy) -> Result<Recorded> {
        self.write(move |c| units::apply_event(c, &event, policy)).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let id = id.to_string();
        self.read(move |c| value::<String>(c, "SELECT body FROM conversations WHERE id = ?1", [id])?.map(|b| decode(&b)).transpose())
            .await
    }

    async fn conversation_by_external(&self, source: Option<&str>, external_id: &str) -> Result<Option<Conversation>> {
        let (source, external_id) = (source.map(str::to_string), external_id.to_string());
        self.read(move |c| {
            let body: Option<String> = match source {
                Some(s) => value(c, units::BY_SOURCE_KEY, params![s, external_id])?,
                None => value(c, units::BY_ANY_KEY, [external_id])?,
            };
            body.map(|b| decode(&b)).transpose()
        })
        .await
    }

    async fn conversations_for_agent(&self, agent: &str) -> Result<Vec<Conversation>> {
        let agent = agent.to_string();
        self.read(move |c| {
bodies(c, units::OF_AGENT, [agent])
        })
        .await
    }

    async fn stale_conversations(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        self.read(move |c| {
            bodies(
                c,
                "SELECT body FROM conversations WHERE state IN ('offered', 'connected') AND last_event_at < ?1 ORDER BY last_event_at LIMIT ?2",
                params![ms(before), limit],
            )
        })
        .await
    }

    async fn rung_out(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        self.read(move |c| {
            bodies(c, "SELECT body FROM conversations WHERE state = 'offered' AND last_event_at < ?1 ORDER BY last_event_at LIMIT ?2", params![ms(before), limit])
        })
        .await
    }

    async fn wrapup_overdue(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>> {
        self.read(move |c| bodies(c, "SELECT body FROM conversations WHERE state = 'ended' AND ended_at < ?1 ORDER BY ended_at LIMIT ?2", params![ms(before), limit]))
            .await
    }

    async fn outbox_claim(&self, now: Timestamp, limit: u32, lease: Duration) -> Result<Vec<OutboxItem>> {
        let until = ms(now).saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        self.write(move |c| {
            // The limit is part of the SQL, not a parameter: SQLite re-prepares a statement
            // whose LIMIT is bound anew, and the worker claims with the same limit every time.
            units::all(
                c,
                &format!(
                    "UPDATE outbox SET claimed_until = ?1 WHERE id IN (
                       SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?2
                         AND (claimed_until IS NULL OR claimed_until < ?2)
                       ORDER BY next_attempt_at LIMIT {limit})
                     RETURNING *"
                ),
                params![until, ms(now)],
                |r| outbox_from_row(r),
            )
        })
        .await
    }

    async fn outbox_delivered(&self, id: i64, generation: i64, crm_ref: &str, now: Timestamp) -> Result<()> {
        let crm_ref = crm_ref.to_string();
        self.write(move |c| {
            let done = exec(
                c,
                "UPDATE outbox SET state = 'delivered', crm_ref = ?1, delivered_at = ?2, updated_at = ?2, claimed_until = NULL,
                   last_error = NULL, attempts = attempts + 1
                 WHERE id = ?3 AND generation = ?4",
                params![crm_ref, ms(now), id, generation],
            )?;
            if done > 0 {
                exec(c, "UPDATE outbox_totals SET delivered = delivered + 1 WHERE id = 1", [])?;
            } else {
                // Newer data arrived while we delivered: deliver again, at once.
                exec(c, "UPDATE outbox SET crm_ref = ?1, claimed_until = NULL, updated_at = ?2 WHERE id = ?3", params![crm_ref, ms(now), id])?;
            }
            Ok(())
        })
        .await
    }

    async fn outbox_failed(&self, id: i64, error: &str, retry_at: Option<Timestamp>, now: Timestamp) -> Result<()> {
        let error = error.to_string();
        self.write(move |c| {
            exec(
                c,
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, claimed_until = NULL, updated_at = ?2,
                   state = CASE WHEN ?3 IS NULL THEN 'dead' ELSE 'pending' END,
                   next_attempt_at = COALESCE(?3, next_attempt_at)
                 WHERE id = ?4",
                params![error, ms(now), retry_at.map(ms), id],
            )?;
            Ok(())
        })
        .await
    }

    async fn outbox_list(&self, state: Option<OutboxState>, limit: u32) -> Result<Vec<OutboxItem>> {
        self.read(move |c| match state {
            Some(s) => units::all(c, "SELECT * FROM outbox WHERE state = ?1 ORDER BY updated_at DESC LIMIT ?2", params![s.as_str(), limit], |r| outbox_from_row(r)),
            None => units::all(c, "SELECT * FROM outbox ORDER BY updated_at DESC LIMIT ?1", [limit], |r| outbox_from_row(r)),
        })
        .await
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        self.read(move |c| first(c, "SELECT * FROM outbox WHERE id = ?1", [id], |r| outbox_from_row(r))).await
    }

    async fn outbox_for_conversation(&self, conversation_id: &str) -> Result<Option<OutboxItem>> {
        let conversation_id = conversation_id.to_string();
        self.read(move |c| first(c, "SELECT * FROM outbox WHERE conversation_id = ?1 ORDER BY id DESC LIMIT 1", [conversation_id], |r| outbox_from_row(r)))
            .await
    }

    async fn outbox_replay(&self, id: i64, now: Timestamp) -> Result<bool> {
        self.write(move |c| {
            let n = exec(
                c,
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?1, updated_at = ?1, claimed_until = NULL,
                   generation = generation + 1
                 WHERE id = ?2",
                params![ms(now), id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats> {
        self.read(move |c| {
            // Both counts walk the (state, …) index over pending and dead items only.
            let mut counts = units::all(c, OUTBOX_OPEN_COUNTS, [], |r| Ok((r.text("state")?, r.int("n")?)))?;
            let delivered: i64 = value(c, "SELECT delivered FROM outbox_totals WHERE id = 1", [])?.unwrap_or(0);
            counts.push(("delivered".into(), delivered));
            let (due, oldest): (i64, Option<i64>) = c.prepare_cached(OUTBOX_PENDING_AGE)?.query_row([ms(now)], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(shared::outbox_stats(counts, due, oldest, now))
        })
        .await
    }

    async fn prune(&self, retention: &Retention, batch: u32) -> Result<Pruned> {
        let retention = *retention;
        self.write(move |c| {
            let mut pruned = Pruned::default();
            if let Some(before) = retention.delivered_before {
                pruned.outbox = exec(
                    c,
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = 'delivered' AND updated_at < ?1 LIMIT ?2)",
                    params![ms(before), batch],
                )?;
            }
            if let Some(before) = retention.events_before {
                pruned.events = exec(
                    c,
                    "DELETE FROM events WHERE dedup_key IN (
                       SELECT e.dedup_key FROM events e LEFT JOIN conversations c ON c.id = e.conversation_id
                       WHERE e.received_at < ?1 AND (c.id IS NULL OR c.state = 'completed') LIMIT ?2)",
                    params![ms(before), batch],
                )?;
            }
            if let Some(before) = retention.verifications_before {
                pruned.verifications = exec(
                    c,
                    "DELETE FROM ivr_verifications WHERE id IN (SELECT id FROM ivr_verifications WHERE at < ?1 LIMIT ?2)",
                    params![ms(before), batch],
                )?;
            }
            Ok(pruned)
        })
        .await
    }

    /// Reads, and proves the database takes writes: a one-row write, committed, at most once a
    /// second (a full disk or a read-only file fail it; callers in between share the answer).
    /// A failed commit anywhere since then is reported at once, until a write succeeds again.
    async fn ping(&self) -> Result<()> {
        self.read(|c| value::<i64>(c, "SELECT 1", [])).await?;
        let probed = self
            .probe
            .check(|| {
                self.write(|c| {
                    exec(c, "INSERT INTO health_probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at", [ms(Timestamp::now())])?;
                    Ok(())
                })
            })
            .await;
        match self.health.recent_failure() {
            Some(failure) => Err(StoreError::Unavailable(format!("a write failed in the last {} s: {failure}", health::FAILURE_HOLD.as_secs()))),
            None => probed,
        }
    }

    async fn record_sign_out(&self, agent: &str, at: Timestamp) -> Result<()> {
        let agent = agent.to_string();
        self.write(move |c| {
            exec(c, "INSERT INTO agent_sign_outs (agent, at) VALUES (?1, ?2) ON CONFLICT (agent) DO UPDATE SET at = max(at, excluded.at)", params![agent, ms(at)])?;
            Ok(())
        })
        .await
    }

    async fn signed_out_at(&self, agent: &str) -> Result<Option<Timestamp>> {
        let agent = agent.to_string();
        self.read(move |c| value::<i64>(c, "SELECT at FROM agent_sign_outs WHERE agent = ?1", [agent])?.map(shared::ts).transpose()).await
    }

    async fn record_verification(&self, v: &Verification) -> Result<()> {
        let v = v.clone();
        self.write(move |c| {
            let id = units::insert_verification(c, &v)?;
            if let Some(r) = &v.record {
                units::insert_verification_record(c, id, r, v.at)?;
            }
            Ok(())
        })
        .await
    }

    async fn reserve_verification(&self, v: &Verification, records: &[RecordRef], limits: &VerificationLimits) -> Result<Reservation> {
        // One writer: the counts and the insert run in one transaction that no other attempt
        // can interleave with.
        let (v, records, limits) = (v.clone(), records.to_vec(), *limits);
        self.write(move |c| {
            let since = ms(v.at) - i64::try_from(limits.window.as_millis()).unwrap_or(i64::MAX);
            let counted = shared::COUNTED_OUTCOMES;
            let by_number =
                units::count(c, &format!("SELECT COUNT(*) FROM ivr_verifications WHERE number = ?1 AND at >= ?2 AND outcome IN {counted}"), params![v.number, since])?;
            let mut by_record = 0;
            for r in &records {
                let n = units::count(
                    c,
                    &format!(
                        "SELECT COUNT(*) FROM ivr_verifications WHERE outcome IN {counted}
                         AND id IN (SELECT verification_id FROM ivr_verification_records WHERE entity = ?1 AND record_id = ?2 AND at >= ?3)"
                    ),
                    params![r.entity, r.id, since],
                )?;
                by_record = by_record.max(n);
            }
            let last_minute = units::count(c, &format!("SELECT COUNT(*) FROM ivr_verifications WHERE at >= ?1 AND outcome IN {counted}"), [ms(v.at) - 60_000])?;
            let locked = shared::verification_lock(by_number, by_record, last_minute, &limits);
            let outcome = if locked.is_some() { "locked" } else { "pending" };
            let id = units::insert_verification(c, &Verification { outcome: outcome.into(), ..v.clone() })?;
            if locked.is_none() {
                for r in &records {
                    units::insert_verification_record(c, id, r, v.at)?;
                }
            }
            Ok(match locked {
                Some(retry_after_secs) => Reservation::Locked { retry_after_secs },
                None => Reservation::Reserved(id),
            })
        })
        .await
    }

    async fn finish_verification(&self, id: i64, outcome: &str, record: Option<&RecordRef>) -> Result<()> {
        let (outcome, record) = (outcome.to_string(), record.cloned());
        self.write(move |c| {
            exec(
                c,
                "UPDATE ivr_verifications SET outcome = ?1, entity = ?2, record_id = ?3 WHERE id = ?4",
                params![outcome, record.as_ref().map(|r| r.entity.as_str()), record.as_ref().map(|r| r.id.as_str()), id],
            )?;
            Ok(())
        })
        .await
    }

    async fn verifications(&self, limit: u32) -> Result<Vec<Verification>> {
        self.read(move |c| {
            let rows = units::all(c, "SELECT at, number, entity, record_id, kind, outcome FROM ivr_verifications ORDER BY id DESC LIMIT ?1", [limit], |r| {
                Ok((r.int("at")?, r.text("number")?, r.opt_text("entity")?, r.opt_text("record_id")?, r.text("kind")?, r.text("outcome")?))
            })?;
            rows.into_iter().map(shared::verification_from_row).collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests;
