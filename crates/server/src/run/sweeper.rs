//! The sweeper: ends conversations whose end never came (quiet too long, or still ringing
//! after the ring timeout) and completes those whose wrap-up never came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, EndCause, Event, EventKind};
use tokio::sync::watch;

use crate::app::App;
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

/// Conversations one sweep pass ends at most per kind; the next pass takes the rest.
const SWEEP_PAGE: u32 = 500;

/// Ends a conversation whose end never came (the same event id for the same revision, so
/// two nodes sweeping at once end it once).
async fn end_timed_out(app: &App, c: &Conversation, now: Timestamp) {
    let event = Event::about(c, format!("sweep:{}:{}", c.id, c.revision), now, EventKind::Ended { cause: EndCause::TimedOut });
    if let Err(e) = app.record(event, "sweeper", "timeout", Instant::now()).await {
        tracing::warn!(error = %e, "sweep failed");
    }
}

pub async fn sweep_once(app: &App) {
    let cfg = &app.config.conversations;
    let now = Timestamp::now();
    // Open conversations whose end never came: quiet for `sweep_after_secs`, or still ringing
    // after `ring_timeout_secs` (the agents' panels would ring forever). Both end timed out.
    let stale_before = now - Duration::from_secs(cfg.sweep_after_secs);
    if let Ok(stale) = app.store.stale_conversations(stale_before, SWEEP_PAGE).await {
        for c in stale {
            tracing::info!(conversation = c.id, external_id = c.external_id, "no end arrived; closing it as timed out");
            end_timed_out(app, &c, now).await;
        }
    }
    if cfg.ring_timeout_secs > 0 {
        let ringing_before = now - Duration::from_secs(cfg.ring_timeout_secs);
        if let Ok(rung_out) = app.store.rung_out(ringing_before, SWEEP_PAGE).await {
            for c in rung_out {
                tracing::info!(conversation = c.id, external_id = c.external_id, ring_timeout_secs = cfg.ring_timeout_secs, "still ringing with no event; ending it as missed");
                end_timed_out(app, &c, now).await;
            }
        }
    }
    let acw_before = now - Duration::from_secs(cfg.acw_timeout_secs);
    if let Ok(overdue) = app.store.wrapup_overdue(acw_before, SWEEP_PAGE).await {
        for c in overdue {
            let event = Event::about(&c, format!("acw:{}", c.id), now, EventKind::AcwExpired);
            if let Err(e) = app.record(event, "sweeper", "acw_expired", Instant::now()).await {
                tracing::warn!(error = %e, "ACW completion failed");
            }
        }
    }
}
