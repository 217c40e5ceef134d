//! The local phone index's sync driver: follows an external CRM's change feed into the
//! index (`crm::IndexedCrm`), each page and its cursor in one commit.

use std::sync::Arc;
use std::time::Duration;

use cxbridge_domain::Timestamp;
use cxbridge_domain::crm::{CrmError, EntitySpec};
use cxbridge_store::{IndexChanges, SyncState};
use tokio::sync::watch;

use crate::crm::IndexedCrm;

/// How one entity's sync went, for logs and tests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncReport {
    pub pages: u64,
    pub upserts: u64,
    pub deletes: u64,
}

/// Follows `spec`'s change feed from where the index stands until no page is left.
pub async fn sync_entity(indexed: &IndexedCrm, spec: &EntitySpec) -> Result<SyncReport, CrmError> {
    let index_error = |e: cxbridge_store::StoreError| CrmError::Transient { message: format!("local index: {e}"), retry_after: None };
    let state: SyncState =
        indexed.index().index_sync_states().await.map_err(index_error)?.into_iter().find(|s| s.entity == spec.name).unwrap_or_default();
    let mut cursor = state.cursor;
    let mut first_pass = !state.complete;
    let mut report = SyncReport::default();
    loop {
        // A first pass starts with an empty index for the entity: no stale leftovers.
        let mut reset = first_pass && cursor.is_none();
        let page = indexed.crm().changes(spec, cursor.as_deref()).await?;
        if let Some(reason) = &page.restarted {
            // The CRM cannot say what changed since the cursor (an expired token): start
            // over like a first sync. Records deleted meanwhile would otherwise stay in the
            // index for good, so it is emptied, and callers are looked up in the CRM
            // directly until the pass ends.
            tracing::warn!(entity = spec.name, reason = reason.as_str(), "the CRM cannot continue the local phone index's change feed; a full sync starts over");
            indexed.set_ready(&spec.name, false);
            indexed.note_resync(&spec.name, reason);
            first_pass = true;
            reset = true;
        }
        report.pages += 1;
        report.upserts += page.upserts.len() as u64;
        report.deletes += page.deletes.len() as u64;
        let pass_done = !page.more;
        let changes = IndexChanges { reset, upserts: page.upserts, deletes: page.deletes, cursor: page.cursor.clone(), pass_done };
        indexed.index().apply_index_changes(&spec.name, changes, Timestamp::now()).await.map_err(index_error)?;
        if first_pass && report.pages % 10 == 0 {
            tracing::info!(entity = spec.name, records = report.upserts, "first sync of the local phone index in progress");
        }
        cursor = Some(page.cursor);
        if pass_done {
            if first_pass {
                tracing::info!(entity = spec.name, records = report.upserts, "local phone index ready");
            }
            indexed.set_ready(&spec.name, true);
            return Ok(report);
        }
    }
}

/// The sync worker: every `every`, brings each identifying entity's index up to date.
/// A CRM without a change feed is left to direct queries.
pub async fn sync(indexed: Arc<IndexedCrm>, every: Duration, mut stop: watch::Receiver<bool>) {
    if !indexed.crm().has_change_feed() {
        tracing::info!("the CRM has no change feed: callers are looked up in the CRM directly");
        return;
    }
    loop {
        for spec in indexed.entities().iter().filter(|e| e.identify) {
            match sync_entity(&indexed, spec).await {
                Ok(r) if r.upserts + r.deletes > 0 => tracing::debug!(entity = spec.name, upserts = r.upserts, deletes = r.deletes, "local phone index synced"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(entity = spec.name, error = %e, "local phone index sync failed; the index answers with what it has");
                    let _ = indexed.index().index_sync_failed(&spec.name, &e.to_string()).await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
