//! Background work: the outbox worker (delivers activities to the CRM) and the sweeper
//! (closes conversations whose end never came, completes those whose wrap-up never came).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, EndCause, Event, EventKind};
use cxbridge_domain::crm::CrmError;
use cxbridge_domain::outbox::Next;
use cxbridge_store::OutboxItem;
use tokio::sync::watch;

use crate::service::App;

/// Delivers due outbox items until `stop` flips. Each round's items go to the CRM together,
/// so a CRM with a batch API (Dataverse `$batch`, Salesforce Composite) gets few requests.
pub async fn outbox(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let lease = Duration::from_secs(app.config.outbox.lease_secs);
    loop {
        let claimed = match app.store.outbox_claim(Timestamp::now(), app.config.outbox.batch, lease).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "outbox claim failed");
                vec![]
            }
        };
        let idle = claimed.is_empty();
        if !idle {
            deliver(&app, claimed).await;
        }
        if idle {
            tokio::select! {
                _ = app.outbox_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        } else if *stop.borrow() {
            return;
        }
    }
}

/// Builds the activities of `items` and hands them to the CRM in one call.
async fn deliver(app: &App, items: Vec<OutboxItem>) {
    let started = Instant::now();
    let mut ready: Vec<(OutboxItem, Conversation)> = Vec::with_capacity(items.len());
    for item in items {
        match app.store.conversation(&item.conversation_id).await {
            Ok(Some(c)) => ready.push((item, c)),
            Ok(None) => {
                let _ = app.store.outbox_failed(item.id, "the conversation no longer exists", None, Timestamp::now()).await;
            }
            Err(e) => fail(app, &item, CrmError::Transient { message: format!("database: {e}"), retry_after: None }).await,
        }
    }
    let mut activities = Vec::with_capacity(ready.len());
    for (_, c) in &ready {
        let regarding = match c.regarding() {
            Some(r) => app.record_candidate(c, r).await,
            None => None,
        };
        let mut activity = app.mapping.build(c, regarding.as_ref());
        activity.on_behalf_of = c.agent.as_deref().and_then(|a| app.config.agents.iter().find(|x| x.id == a)).and_then(|a| a.crm_user_id.clone());
        activities.push(activity);
    }
    let results = app.crm.upsert_activities(&activities).await;
    let elapsed = started.elapsed().as_secs_f64();
    for ((item, conversation), result) in ready.into_iter().zip(results) {
        match result {
            Ok(crm_ref) => {
                metrics::counter!("cxbridge_outbox_attempts_total", "result" => "delivered").increment(1);
                metrics::histogram!("cxbridge_outbox_delivery_seconds").record(elapsed);
                if let Err(e) = app.store.outbox_delivered(item.id, item.generation, &crm_ref, Timestamp::now()).await {
                    tracing::error!(error = %e, item = item.id, "could not mark delivered; it will be delivered again (idempotent)");
                }
                // Let the agent's panel show "written".
                app.notify(&conversation, &[cxbridge_domain::conversation::Effect::Update], None).await;
            }
            Err(e) => fail(app, &item, e).await,
        }
    }
}

async fn fail(app: &App, item: &OutboxItem, e: CrmError) {
    let attempts = item.attempts + 1;
    let next = match &e {
        CrmError::Permanent { .. } => Next::Dead,
        CrmError::Transient { retry_after, .. } => app.config.outbox.retry.after_failure(attempts, *retry_after, rand::random::<f64>()),
    };
    let retry_at = match next {
        Next::RetryIn(d) => Some(Timestamp::now() + d),
        Next::Dead => None,
    };
    let result = if retry_at.is_some() { "retry" } else { "dead" };
    metrics::counter!("cxbridge_outbox_attempts_total", "result" => result).increment(1);
    tracing::warn!(item = item.id, attempts, error = %e, result, "outbox delivery failed");
    if let Err(err) = app.store.outbox_failed(item.id, &e.to_string(), retry_at, Timestamp::now()).await {
        tracing::error!(error = %err, "could not record the failed attempt");
    }
    if retry_at.is_none()
        && let Ok(Some(c)) = app.store.conversation(&item.conversation_id).await {
            app.notify(&c, &[cxbridge_domain::conversation::Effect::Update], None).await;
        }
}

/// Every `sweep_interval_secs`: end stale conversations, complete overdue wrap-ups.
pub async fn sweeper(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(app.config.conversations.sweep_interval_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        sweep_once(&app).await;
    }
}

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
                total.outbox += p.outbox;
                total.events += p.events;
                total.verifications += p.verifications;
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

pub async fn sweep_once(app: &App) {
    let cfg = &app.config.conversations;
    let now = Timestamp::now();
    let stale_before = now - Duration::from_secs(cfg.sweep_after_secs);
    if let Ok(stale) = app.store.stale_conversations(stale_before, 500).await {
        for c in stale {
            tracing::info!(conversation = c.id, external_id = c.external_id, "no end arrived; closing it as timed out");
            let event = Event {
                dedup_key: format!("sweep:{}:{}", c.id, c.revision),
                source: c.source.clone(),
                conversation_key: c.external_id.clone(),
                leg: None,
                at: now,
                kind: EventKind::Ended { cause: EndCause::TimedOut },
            };
            if let Err(e) = app.record(event, "sweeper", "timeout", Instant::now()).await {
                tracing::warn!(error = e.detail, "sweep failed");
            }
        }
    }
    let acw_before = now - Duration::from_secs(cfg.acw_timeout_secs);
    if let Ok(overdue) = app.store.wrapup_overdue(acw_before, 500).await {
        for c in overdue {
            let event = Event {
                dedup_key: format!("acw:{}", c.id),
                source: c.source.clone(),
                conversation_key: c.external_id.clone(),
                leg: None,
                at: now,
                kind: EventKind::AcwExpired,
            };
            if let Err(e) = app.record(event, "sweeper", "acw_expired", Instant::now()).await {
                tracing::warn!(error = e.detail, "ACW completion failed");
            }
        }
    }
}
