//! How the last writes ended, for `/healthz`, and which errors mean "the disk refuses".

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;

use crate::StoreError;

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
    /// Notes `e` if it says the database cannot take writes.
    pub(crate) fn observe(&self, e: &StoreError) {
        if is_storage_failure(e)
            && let Ok(mut f) = self.last_failure.lock()
        {
            *f = Some((Instant::now(), e.to_string()));
        }
    }

    /// The last storage failure, if it happened within [`FAILURE_HOLD`].
    pub(crate) fn recent_failure(&self) -> Option<String> {
        let f = self.last_failure.lock().ok()?;
        f.as_ref().filter(|(at, _)| at.elapsed() < FAILURE_HOLD).map(|(_, e)| e.clone())
    }
}

/// Whether `e` says the database cannot take writes now (disk full, I/O error, read-only
/// file, a lock it could not get) rather than that one statement was wrong. Such a failure
/// fails every write of a batch alike, and may have rolled the transaction back already.
pub(crate) fn is_storage_failure(e: &StoreError) -> bool {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::OutOfMemory
        ),
        StoreError::Unavailable(_) => true,
        _ => false,
    }
}
