//! Transactions on the one writer connection that never outlive a failed commit.
//!
//! sqlx's SQLite driver counts its own transaction depth and lowers it only when `COMMIT` or
//! `ROLLBACK` succeeds. On a full disk `COMMIT` fails, SQLite has already rolled back, the
//! driver's `ROLLBACK` fails too, and the depth stays at 1: the next `begin()` becomes a
//! `SAVEPOINT` inside a transaction that never ends, and every later "commit" is a `RELEASE`
//! that reaches the file only at exit — acknowledged events lost. So the writer does not use
//! sqlx's transactions: [`WriteTx`] sends `BEGIN IMMEDIATE` / `COMMIT` itself, and whenever a
//! transaction does not end in a successful `COMMIT`, the connection is closed instead of
//! going back to the pool (closing rolls back whatever SQLite still holds). The pool opens a
//! fresh one for the next write, so the hub recovers by itself once the disk has room again.
//!
//! [`WriteHealth`] remembers how the last write ended, for `/healthz`.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

/// An open transaction on the writer. Dropped without a successful [`WriteTx::commit`], it
/// closes its connection (rolling back) rather than returning it to the pool in a state
/// nobody knows.
pub(crate) struct WriteTx<'h> {
    conn: PoolConnection<Sqlite>,
    committed: bool,
    health: &'h WriteHealth,
}

impl<'h> WriteTx<'h> {
    pub(crate) async fn begin(pool: &SqlitePool, health: &'h WriteHealth) -> Result<Self, sqlx::Error> {
        let mut conn = pool.acquire().await.inspect_err(|e| health.failed(e))?;
        if let Err(e) = sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await {
            conn.close_on_drop();
            health.failed(&e);
            return Err(e);
        }
        Ok(Self { conn, committed: false, health })
    }

    /// Commits. On failure the connection is discarded (see [`Drop`]) and the error
    /// returned, so nothing is reported as stored that is not on disk.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let r = sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await;
        self.health.observe(&r);
        self.committed = r.is_ok();
        r.map(|_| ())
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// Failed writes, for the health check. A disk that is nearly full lets a small write through
/// now and then between refusals, so a success does not clear a failure: it is reported for
/// [`FAILURE_HOLD`] after it happened — long enough that a load balancer polling every few
/// seconds sees a node that is refusing events, short enough that it comes back by itself.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// How long a failed write keeps `/healthz` down.
pub(crate) const FAILURE_HOLD: Duration = Duration::from_secs(5);

impl WriteHealth {
    pub(crate) fn failed(&self, e: &sqlx::Error) {
        if is_storage_failure(e)
            && let Ok(mut f) = self.last_failure.lock()
        {
            *f = Some((Instant::now(), e.to_string()));
        }
    }

    /// Notes the outcome of a statement or commit on the writer.
    pub(crate) fn observe<T>(&self, r: &Result<T, sqlx::Error>) {
        if let Err(e) = r {
            self.failed(e);
        }
    }

    /// The last storage failure, if it happened within [`FAILURE_HOLD`].
    pub(crate) fn recent_failure(&self) -> Option<String> {
        let f = self.last_failure.lock().ok()?;
        f.as_ref().filter(|(at, _)| at.elapsed() < FAILURE_HOLD).map(|(_, e)| e.clone())
    }
}

/// Whether `e` says the database cannot take writes now (disk full, I/O error, read-only
/// file, a lost connection) rather than that one statement was wrong. Such a failure fails
/// every event of a batch alike, so retrying them one by one would only repeat it.
pub(crate) fn is_storage_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            // SQLite's primary result code is the low byte of the extended one.
            let primary = db.code().and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
            matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED | SQLITE_READONLY | SQLITE_IOERR | SQLITE_CORRUPT | SQLITE_FULL | SQLITE_CANTOPEN | SQLITE_NOTADB))
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_NOTADB: i64 = 26;
