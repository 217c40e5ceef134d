//! Group commit: the events waiting at one moment go into one transaction.
//!
//! One writer task per store receives the events over a bounded channel, takes every one
//! waiting (at most [`GROUP_COMMIT_MAX`]), opens one transaction that first takes the union of
//! their advisory locks, deduplicated and in ascending order, applies them in arrival order,
//! commits once, and only then answers each. Nothing is acknowledged before it is durable.
//!
//! Why one transaction and not one per event: each event's transaction cost PostgreSQL a
//! `BEGIN`, its lock statements, a commit record and a WAL flush, and the node a round trip
//! per statement; that held a node at about 2,700 events/s with PostgreSQL at one core.
//!
//! Why the locks in ascending order over the whole batch: every node takes them the same
//! way, so two batches sharing conversations wait for each other but never each hold a lock
//! the other waits for.
//!
//! A batch is applied in one of two ways:
//!
//! - **At once** ([`super::batch`]): one statement reads every event's conversation, the
//!   domain applies the events in order in memory (events of one conversation see each
//!   other's changes), and one statement per table writes the result. No savepoints: an
//!   event the domain refuses has written nothing.
//! - **One by one**, each event under a `SAVEPOINT`, when the first way hit a statement error
//!   (one event's data the database refuses) or a dedup key another node committed under
//!   other locks: the refused event is rolled back alone and answered with its error, the
//!   others are stored.
//!
//! A lost connection or a database that takes no writes fails the whole batch: every event
//! is answered `StoreError::Unavailable` (503, the sender retries), none was stored.

use std::collections::BTreeSet;

use cxbridge_domain::conversation::{Event, Policy};
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{apply_event, batch, lock_keys};
use crate::{Recorded, Result, StoreError};

/// Most events in one transaction. Large enough that a burst costs few commits, small
/// enough that one batch's arrays and locks stay small and its first event waits little.
pub(super) const GROUP_COMMIT_MAX: usize = 256;

/// One event on its way to the writer, with where its answer goes.
struct EventJob {
    event: Event,
    policy: Policy,
    reply: oneshot::Sender<Result<Recorded>>,
}

/// The sending side of a store's writer task; the task ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct GroupCommit {
    jobs: mpsc::Sender<EventJob>,
}

impl GroupCommit {
    /// Starts the writer task on `pool`.
    pub(super) fn start(pool: PgPool) -> Self {
        // Room for a few batches: beyond that, senders wait, which is the back-pressure the
        // HTTP edge turns into slower answers rather than memory.
        let (jobs, queue) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        tokio::spawn(writer(pool, queue));
        Self { jobs }
    }

    /// Records one event through the writer: answered after its batch committed.
    pub(super) async fn record(&self, event: Event, policy: Policy) -> Result<Recorded> {
        let stopped = || StoreError::Unavailable("the event writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs.send(EventJob { event, policy, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer task: one batch at a time, so each batch sees everything the ones before it
/// committed.
async fn writer(pool: PgPool, mut queue: mpsc::Receiver<EventJob>) {
    let mut waiting = Vec::with_capacity(GROUP_COMMIT_MAX);
    while queue.recv_many(&mut waiting, GROUP_COMMIT_MAX).await > 0 {
        let (events, replies): (Vec<(Event, Policy)>, Vec<_>) = waiting.drain(..).map(|j| ((j.event, j.policy), j.reply)).unzip();
        let n = events.len();
        // The batch runs as a task of its own so that a panic in it fails these events
        // (answered below) instead of killing the writer and every later event with it.
        let results = match tokio::spawn(commit(pool.clone(), events)).await {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, events = n, "the group commit task failed; its events were not stored");
                (0..n).map(|_| Err(StoreError::Unavailable(format!("the event writer failed: {e}")))).collect()
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A sender that stopped waiting (its request was cancelled) needs no answer.
            let _ = reply.send(result);
        }
    }
}

/// The events' results, in order: committed, refused one by one, or all unavailable.
async fn commit(pool: PgPool, events: Vec<(Event, Policy)>) -> Vec<Result<Recorded>> {
    let failed = |e: &sqlx::Error| -> Vec<Result<Recorded>> {
        tracing::error!(error = %e, events = events.len(), "commit failed; the events were not stored and are answered 503");
        events.iter().map(|_| Err(StoreError::Unavailable(format!("commit failed: {e}")))).collect()
    };
    match at_once(&pool, &events).await {
        Ok(Some(results)) => return results,
        Ok(None) => tracing::debug!(events = events.len(), "a dedup key was committed meanwhile by another node; applying the batch one by one"),
        Err(e) if is_storage_failure(&e) => return failed(&e),
        Err(e) => tracing::warn!(error = %e, events = events.len(), "the batch failed at once; applying its events one by one"),
    }
    match one_by_one(&pool, &events).await {
        Ok(results) => results,
        Err(e) => failed(&e),
    }
}

/// The batch's transaction, with the union of its events' advisory locks taken.
///
/// The locks travel with `BEGIN` as one statement each, in ascending order (a `BTreeSet`),
/// in one round trip; only integers are formatted into the SQL.
async fn begin(pool: &PgPool, events: &[(Event, Policy)]) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let keys: BTreeSet<i64> = events.iter().flat_map(|(e, _)| lock_keys(e)).collect();
    let locks: String = keys.iter().map(|k| format!(" SELECT pg_advisory_xact_lock({k});")).collect();
    pool.begin_with(sqlx::AssertSqlSafe(format!("BEGIN;{locks}"))).await
}

/// Commits if anything was written; a batch of duplicates and refusals rolls back (the same
/// one round trip, and nothing for PostgreSQL to flush).
async fn finish(tx: Transaction<'static, Postgres>, wrote: bool) -> Result<(), sqlx::Error> {
    if wrote { tx.commit().await } else { tx.rollback().await }
}

/// The first way: the whole batch in a handful of statements ([`batch::apply`]). `None`:
/// the batch must go one by one (it was rolled back).
async fn at_once(pool: &PgPool, events: &[(Event, Policy)]) -> Result<Option<Vec<Result<Recorded>>>, sqlx::Error> {
    let mut tx = begin(pool, events).await?;
    match batch::apply(&mut tx, events).await {
        Ok(Some((results, wrote))) => {
            finish(tx, wrote).await?;
            Ok(Some(results))
        }
        Ok(None) => {
            tx.rollback().await?;
            Ok(None)
        }
        Err(e) => {
            // Rolled back here rather than on drop, which only queues the rollback: the
            // one-by-one transaction takes the same advisory locks next, and this aborted
            // transaction holds them until its rollback reaches the server. A failed rollback
            // means a broken connection, which the pool discards (and its locks with it).
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The second way: each event under a savepoint of the one transaction, so an event whose
/// statement fails is rolled back alone and answered with its error.
async fn one_by_one(pool: &PgPool, events: &[(Event, Policy)]) -> Result<Vec<Result<Recorded>>, sqlx::Error> {
    let mut tx = begin(pool, events).await?;
    let mut results = Vec::with_capacity(events.len());
    let mut wrote = false;
    for (event, policy) in events {
        let mut savepoint = Connection::begin(&mut *tx).await?;
        match apply_event(&mut savepoint, event.clone(), *policy).await {
            Ok((recorded, written)) => {
                savepoint.commit().await?;
                wrote |= written;
                results.push(Ok(recorded));
            }
            // The connection or the disk, not this event: the batch fails as a whole.
            Err(StoreError::Database(e)) if is_storage_failure(&e) => return Err(e),
            Err(e) => {
                savepoint.rollback().await?;
                if let StoreError::Database(e) = &e {
                    tracing::warn!(error = %e, dedup_key = %event.dedup_key, "the database refused one event of a batch; the others are stored");
                }
                results.push(Err(e));
            }
        }
    }
    finish(tx, wrote).await?;
    Ok(results)
}

/// Whether the error is the connection's or the database's as a whole (every event would
/// fail alike) rather than one statement's. SQLSTATE classes: 08 connection exception,
/// 53 insufficient resources (disk full, out of memory), 57 operator intervention (shutdown,
/// cancelled statement), 58 system error (I/O), XX internal error; 25006 a read-only
/// transaction (a replica, `default_transaction_read_only`).
pub(super) fn is_storage_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            matches!(code.get(..2), Some("08" | "53" | "57" | "58" | "XX")) || code == "25006"
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        _ => false,
    }
}
