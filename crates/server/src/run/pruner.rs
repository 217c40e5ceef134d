//! The pruner: deletes what `[retention]` allows, in small batches.

use std::sync::Arc;
use std::time::Duration;

use cxbridge_domain::Timestamp;
use tokio::sync::watch;

use crate::app::App;
/// Rows one prune statement deletes at most: the writer is never held for long.
const PRUNE_BATCH: u32 = 1_000;

/// Every `prune_interval_secs` (and once at start): delete what `[retention]` allows.
pub async fn pruner(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(app.config.retention.prune_interval_secs.max(1));
    loop {
        prune_once(&app, &mut stop).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Prunes in batches until nothing old is left (or `stop` flips); returns the totals.
pub async fn prune_once(app: &App, stop: &mut watch::Receiver<bool>) -> cxbridge_store::Pruned {
    let retention = app.config.retention.at(Timestamp::now());
    let mut total = cxbridge_store::Pruned::default();
    loop {
        match app.store.prune(&retention, PRUNE_BATCH).await {
            Ok(p) => {
                total += p;
                if !p.more_waiting(PRUNE_BATCH) || *stop.borrow() {
                    break;
                }
                // Let waiting events have the writer between batches.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning failed; it runs again at the next interval");
                break;
            }
        }
    }
    if total != cxbridge_store::Pruned::default() {
        tracing::info!(outbox = total.outbox, events = total.events, ivr_verifications = total.verifications, "pruned old rows");
    }
    total
}
