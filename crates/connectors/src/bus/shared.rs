//! The state the bus's background tasks and its handle share: the peers heard, the counters
//! shown in the status, the latest error, and the signer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::signing::{MessageKind, Rejected, Signer};

pub(super) struct Peer {
    pub(super) agents: HashSet<String>,
    pub(super) heard: Instant,
    pub(super) ttl: Duration,
}

impl Peer {
    pub(super) fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.heard) < self.ttl
    }
}

/// State the background tasks and the handle share.
pub(super) struct Shared {
    pub(super) node_id: String,
    pub(super) instance: String,
    pub(super) stream: String,
    pub(super) peers: Mutex<HashMap<String, Peer>>,
    pub(super) published: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) publish_errors: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) signer: Signer,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these maps leaves consistent data (single
    // inserts/removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn fail(&self, message: String) {
        tracing::warn!(node = %self.node_id, "bus: {message}");
        *lock(&self.last_error) = Some(message);
    }

    pub(super) fn publish_failed(&self, message: String) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
        self.fail(message);
    }

    /// Counts and reports a message that failed [`Signer::verify`].
    pub(super) fn reject(&self, kind: MessageKind, why: Rejected) {
        let count = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let message = format!("dropped a {} message: {why}", kind.as_str());
        // Whoever floods the bus with forgeries must not flood the log too: the 1st, 2nd,
        // 4th, 8th… are logged; the status always shows the latest and the count.
        if count.is_power_of_two() {
            tracing::warn!(node = %self.node_id, rejected = count, "bus: {message}");
        }
        *lock(&self.last_error) = Some(message);
    }
}

