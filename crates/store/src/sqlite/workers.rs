//! The threads that own the SQLite connections.
//!
//! A SQLite statement is synchronous: a driver that runs each one on a worker thread pays a
//! thread hand-off (a futex wake, an inter-processor interrupt when the threads sit on
//! different CPUs) per statement, and on a virtualised machine such a wake-up costs tens of
//! microseconds. Here a caller hands over a whole unit of work — a closure that runs every
//! statement of one read or one write — and gets one answer back: two hand-offs per call,
//! whatever the number of statements.
//!
//! * [`Readers`]: a few threads, each with its own read-only connection, taking jobs from one
//!   queue; in WAL mode they read the last committed state and never wait for the writer.
//! * [`Writer`]: one thread with the one read-write connection (SQLite allows one writer at a
//!   time; one connection means a transaction never has to upgrade from reader to writer,
//!   where SQLite returns BUSY errors that waiting cannot fix). It takes every write waiting
//!   at that moment into one transaction, commits once — one fsync for all of them — and
//!   answers each after the commit, so nothing is acknowledged before it is durable.
//! * [`Checkpointer`]: copies the WAL into the database file beside them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::health::{WriteHealth, is_storage_failure};
use crate::{Result, StoreError};

/// Most writes committed by one transaction (one fsync).
pub(crate) const GROUP_COMMIT_MAX: usize = 256;

/// Opens a connection of the kind a thread needs (called again to replace a broken one).
pub(crate) type Open = Arc<dyn Fn() -> Result<Connection> + Send + Sync>;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The reading threads.
#[derive(Clone)]
pub(crate) struct Readers {
    jobs: crossbeam_channel::Sender<ReadJob>,
}

impl Readers {
    /// Starts `threads` readers, each on a connection from `open` (opened before this returns,
    /// so a database that cannot be read fails here and not at the first request).
    pub(crate) fn start(threads: usize, open: Open) -> Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<ReadJob>();
        for n in 0..threads.max(1) {
            let conn = open()?;
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{n}"))
                .spawn(move || {
                    // Ends when the store (every sender) is gone.
                    while let Ok(job) = queue.recv() {
                        // A job that panics loses its answer (the caller sees "stopped"),
                        // not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn)));
                    }
                })
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `read` on a reader's connection.
    pub(crate) async fn run<T: Send + 'static>(&self, read: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(read(conn));
            }))
            .map_err(|_| stopped("reader"))?;
        answer.await.map_err(|_| stopped("reader"))?
    }
}

/// One write waiting for the group commit.
trait WriteJob: Send {
    /// Runs the write inside the current transaction; keeps its result for
    /// [`WriteJob::answer`]. A write may run again (after a rollback), so it is `FnMut`.
    fn run(&mut self, conn: &Connection) -> Ran;
    /// Sends the result: the write's own, or `failed` when its transaction did not commit.
    fn answer(self: Box<Self>, failed: Option<&StoreError>);
}

/// How one write of a batch went.
enum Ran {
    Done,
    /// Refused before it wrote anything (the domain's or the caller's refusal): the batch
    /// goes on.
    Refused,
    /// A statement failed: it may have written part, so the batch is rolled back and its
    /// writes run again one transaction each.
    Failed,
    /// The database refuses writes: the batch cannot go on.
    Fatal(StoreError),
}

/// Errors a write returns before its first statement that writes (the convention every unit
/// of work keeps: check, then write). Anything else may come after a write.
fn wrote_nothing(e: &StoreError) -> bool {
    matches!(e, StoreError::Transition(_) | StoreError::Invalid(_) | StoreError::UnknownEntity(_))
}

struct Job<T, F> {
    write: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> Ran {
        let r = (self.write)(conn);
        let ran = match &r {
            Ok(_) => Ran::Done,
            Err(e) if is_storage_failure(e) => Ran::Fatal(StoreError::Unavailable(e.to_string())),
            Err(e) if wrote_nothing(e) => Ran::Refused,
            Err(_) => Ran::Failed,
        };
        self.result = Some(r);
        ran
    }

    fn answer(self: Box<Self>, failed: Option<&StoreError>) {
        let result = match (self.result, failed) {
            // A write refused on its own merits wrote nothing either way: its reason stands.
            (Some(Err(e)), _) if !is_storage_failure(&e) => Err(e),
            (_, Some(f)) => Err(StoreError::Unavailable(format!("the write was not stored: {f}"))),
            (Some(r), None) => r,
            (None, None) => Err(StoreError::Unavailable("the write did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

enum Work {
    Write(Box<dyn WriteJob>),
    /// Runs on the writer's connection outside any transaction (tests only: a connection
    /// setting such as `PRAGMA query_only`).
    #[cfg(test)]
    Raw(Box<dyn FnOnce(&Connection) + Send>),
}

/// The writing thread.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Work>,
}

impl Writer {
    /// Starts the writer on `conn`; `open` replaces the connection after a storage failure.
    pub(crate) fn start(conn: Connection, open: Open, health: Arc<WriteHealth>) -> Result<Self> {
        let (jobs, queue) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(conn, open, &health, queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `write` in the next group commit and answers once it is durable.
    ///
    /// `write` must refuse (`Transition`, `Invalid`, `UnknownEntity`) before its first
    /// statement that writes. Any other error rolls back what it did: the batch is rolled
    /// back and its writes run again, one transaction each — so `write` may run twice.
    pub(crate) async fn run<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job { write, result: None, reply };
        self.jobs.send(Work::Write(Box::new(job))).await.map_err(|_| stopped("writer"))?;
        answer.await.map_err(|_| stopped("writer"))?
    }

    #[cfg(test)]
    pub(crate) async fn raw(&self, f: impl FnOnce(&Connection) + Send + 'static) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let job = move |conn: &Connection| {
            f(conn);
            let _ = reply.send(());
        };
        self.jobs.send(Work::Raw(Box::new(job))).await.map_err(|_| stopped("writer"))?;
        answer.await.map_err(|_| stopped("writer"))
    }
}

fn stopped(thread: &str) -> StoreError {
    StoreError::Unavailable(format!("the database {thread} thread stopped"))
}

fn write_loop(mut conn: Connection, open: Open, health: &WriteHealth, mut queue: mpsc::Receiver<Work>) {
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = Vec::with_capacity(16);
        let mut next = Some(first);
        while let Some(work) = next.take() {
            match work {
                Work::Write(job) => jobs.push(job),
                #[cfg(test)]
                Work::Raw(f) => f(&conn),
            }
            if jobs.len() < GROUP_COMMIT_MAX {
                next = queue.try_recv().ok();
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let n = jobs.len();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| commit_batch(&conn, &mut jobs)))
            .unwrap_or_else(|_| Outcome::all_failed(n, &StoreError::Unavailable("a write panicked; the batch was rolled back".into())));
        if let Some(e) = &outcome.broken {
            health.observe(e);
            tracing::error!(error = %e, writes = n, "commit failed; the writes were not stored and are answered 503");
            // Whatever SQLite still holds of the failed transaction goes with the old
            // connection; the next batch starts on a fresh one (so the hub recovers by
            // itself once the disk has room again).
            match open() {
                Ok(fresh) => conn = fresh,
                Err(reopen) => {
                    tracing::error!(error = %reopen, "cannot reopen the database; keeping the old connection");
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
        for (job, failed) in jobs.into_iter().zip(outcome.failed) {
            job.answer(failed.as_ref());
        }
    }
}

/// How the writes of a batch ended: per write, why its transaction did not commit (`None`:
/// committed, or refused without writing); and the storage failure, if one broke the
/// connection's transaction.
struct Outcome {
    failed: Vec<Option<StoreError>>,
    broken: Option<StoreError>,
}

impl Outcome {
    fn all_failed(n: usize, e: &StoreError) -> Self {
        Outcome { failed: (0..n).map(|_| Some(StoreError::Unavailable(e.to_string()))).collect(), broken: Some(StoreError::Unavailable(e.to_string())) }
    }
}

/// One transaction over all `jobs`, committed once. No savepoints: a savepoint makes SQLite
/// copy every page a write touches that the batch had already changed (the hot tails of the
/// indexes, in every event), which cost a fifth of the writer's time. Refusals write
/// nothing; a write whose statement failed (and may have written part) sends the batch back:
/// rolled back, then each write in a transaction of its own.
fn commit_batch(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Outcome {
    let n = jobs.len();
    match together(conn, jobs) {
        Ok(true) => Outcome { failed: (0..n).map(|_| None).collect(), broken: None },
        Ok(false) if n > 1 => {
            tracing::warn!(writes = n, "a write of the batch failed; running them one by one");
            rollback(conn);
            one_by_one(conn, jobs)
        }
        // A lone write that failed: its own error is its answer.
        Ok(false) => {
            rollback(conn);
            Outcome { failed: vec![None], broken: None }
        }
        Err(e) => {
            rollback(conn);
            Outcome::all_failed(n, &e)
        }
    }
}

/// `Ok(false)`: a write failed and the transaction must be rolled back.
fn together(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<bool> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    for job in jobs.iter_mut() {
        match job.run(conn) {
            Ran::Done | Ran::Refused => {}
            Ran::Failed => return Ok(false),
            Ran::Fatal(e) => return Err(e),
        }
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(true)
}

fn one_by_one(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Outcome {
    let mut failed = Vec::with_capacity(jobs.len());
    let mut broken: Option<StoreError> = None;
    for job in jobs.iter_mut() {
        if let Some(e) = &broken {
            failed.push(Some(StoreError::Unavailable(e.to_string())));
            continue;
        }
        let ran = conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map_err(StoreError::from).map(|_| job.run(conn));
        let end = match ran {
            Ok(Ran::Done | Ran::Refused) => conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(|_| ()).map_err(StoreError::from),
            Ok(Ran::Failed) => {
                rollback(conn);
                Ok(())
            }
            Ok(Ran::Fatal(e)) | Err(e) => Err(e),
        };
        match end {
            Ok(()) => failed.push(None),
            Err(e) => {
                rollback(conn);
                failed.push(Some(StoreError::Unavailable(e.to_string())));
                if is_storage_failure(&e) {
                    broken = Some(e);
                }
            }
        }
    }
    Outcome { failed, broken }
}

/// Ends whatever transaction is open (SQLite may have rolled it back already).
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Copies the WAL back into the database file from a connection of its own, so that a commit
/// never pays for a checkpoint (SQLite's automatic checkpoint runs inside the commit that
/// crosses the threshold, and with `synchronous = FULL` it fsyncs the whole file: the slowest
/// event of a busy minute). A passive checkpoint runs beside the writer and the readers; the
/// writer keeps a far higher automatic threshold only as a backstop.
pub(crate) struct Checkpointer {
    /// Dropped with the store: the thread sees the disconnect and ends.
    _stop: crossbeam_channel::Sender<()>,
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Checkpointer {
    pub(crate) fn start(conn: Connection) -> Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    // Busy or failing now: the next round (or the writer's backstop) catches up.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { _stop: stop })
    }
}
