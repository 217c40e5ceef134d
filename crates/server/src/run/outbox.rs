//! The outbox worker: delivers the activities of completed conversations to the CRM, in
//! batches, with retries and dead letters; settles what the activity regards first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Event, EventKind};
use cxbridge_domain::crm::{Candidate, CrmError, RecordRef, SearchQuery};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::mapping::{Unmatched, Unregarded};
use cxbridge_domain::outbox::Next;
use cxbridge_store::{OutboxItem, Recorded};
use tokio::sync::watch;

use crate::app::App;
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
    // Checked when the config was loaded; unassigned only if that check was bypassed.
    let unmatched = app.config.crm.unmatched_policy(&app.entities).unwrap_or(Unmatched::Unassigned);
    let mut ready: Vec<(OutboxItem, Conversation, Vec<RecordRef>)> = Vec::with_capacity(items.len());
    for item in items {
        match app.store.conversation(&item.conversation_id).await {
            Ok(Some(c)) => match settle_regarding(app, c, &unmatched).await {
                Ok((c, extra)) => ready.push((item, c, extra)),
                Err(e) => fail(app, &item, e).await,
            },
            Ok(None) => {
                let _ = app.store.outbox_failed(item.id, "the conversation no longer exists", None, Timestamp::now()).await;
            }
            Err(e) => fail(app, &item, CrmError::Transient { message: format!("database: {e}"), retry_after: None }).await,
        }
    }
    let mut activities = Vec::with_capacity(ready.len());
    for (_, c, extra) in &ready {
        let regarding = match c.regarding() {
            Some(r) => app.record_candidate(c, r).await,
            None => None,
        };
        let mut activity = app.mapping.build(c, regarding.as_ref());
        if activity.regarding.is_empty() {
            activity.regarding = extra.clone();
        }
        activity.on_behalf_of = c.agent.as_deref().and_then(|a| app.directory.agent(a)).and_then(|a| a.crm_user_id.clone());
        activities.push(activity);
    }
    let results = app.crm.upsert_activities(&activities).await;
    let elapsed = started.elapsed().as_secs_f64();
    for ((item, conversation, _), result) in ready.into_iter().zip(results) {
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

/// Makes sure the activity of `c` will regard a record the CRM accepts. A caller the CRM
/// could not look up at the call (down, too slow) is looked up now — until the CRM answers,
/// the item is retried like any transient failure. A caller who matched no record goes
/// where `[crm] unmatched` says. Returns the conversation (with what was learned recorded)
/// and the records to regard when it names none itself.
async fn settle_regarding(app: &App, mut c: Conversation, unmatched: &Unmatched) -> Result<(Conversation, Vec<RecordRef>), CrmError> {
    if c.selected.is_none() && c.identification.crm_unavailable()
        && let Some(e164) = c.customer.e164.clone()
    {
        let found = app.crm.find_by_phone(&e164, &app.entities, app.config.crm.max_candidates).await.map_err(|e| match e {
            CrmError::Transient { message, retry_after } => CrmError::Transient { message: format!("the caller is not identified yet (the CRM failed during the call): {message}"), retry_after },
            permanent => permanent,
        })?;
        c = record_identified(app, c, Identification::from_candidates(found)).await?;
    }
    let names_a_record = c.regarding().is_some() || (app.mapping.link_pinned && !c.pinned.is_empty());
    if names_a_record {
        return Ok((c, vec![]));
    }
    match cxbridge_domain::mapping::unregarded(&c, unmatched) {
        Unregarded::Unassigned => Ok((c, vec![])),
        Unregarded::Regard(records) => Ok((c, records)),
        Unregarded::Caller { entity, number } => {
            let record = caller_record(app, &entity, number.as_deref()).await?;
            let extra = vec![record.record.clone()];
            let c = record_identified(app, c, Identification::Single(record)).await?;
            // An anonymous caller's identification is kept (skipped on purpose): regard the record anyway.
            let extra = if c.regarding().is_some() { vec![] } else { extra };
            Ok((c, extra))
        }
    }
}

/// The title of the one record that callers without a number share under `unmatched = "create"`.
const UNKNOWN_CALLER: &str = "Unknown caller";

/// The record of `entity` for the caller with `number` (E.164): the one with that number
/// (also the one an earlier attempt created), else a new one. Without a number: the shared
/// record titled [`UNKNOWN_CALLER`].
async fn caller_record(app: &App, entity: &str, number: Option<&str>) -> Result<Candidate, CrmError> {
    let Some(spec) = app.entities.iter().find(|e| e.name == entity) else {
        return Err(CrmError::Permanent { message: format!("[crm] unmatched_entity `{entity}` is not a CRM entity") });
    };
    let existing = match number {
        Some(n) => app.crm.find_by_phone(n, std::slice::from_ref(spec), 1).await?.into_iter().next(),
        None => {
            let query = SearchQuery { text: Some(UNKNOWN_CALLER.into()), filters: Default::default(), limit: 10 };
            app.crm.search(spec, &query).await?.into_iter().find(|x| x.title == UNKNOWN_CALLER)
        }
    };
    if let Some(found) = existing {
        return Ok(found);
    }
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(spec.title_field.clone(), number.map_or_else(|| UNKNOWN_CALLER.to_string(), |n| format!("Caller {n}")));
    if let (Some(n), Some(phone)) = (number, spec.phone_fields.first()) {
        fields.insert(phone.clone(), n.to_string());
    }
    let created = app.crm.create(spec, &fields).await?;
    tracing::info!(entity, id = created.record.id, "record created for an unknown caller's activity");
    Ok(created)
}

/// Records what was learned of the caller as an event of the conversation (agents see it,
/// later rewrites use it); returns the conversation as stored.
async fn record_identified(app: &App, c: Conversation, identification: Identification) -> Result<Conversation, CrmError> {
    let event = Event::about(&c, format!("identified:{}:{}", c.id, c.revision), Timestamp::now(), EventKind::Identified(identification));
    let database = |detail: String| CrmError::Transient { message: format!("database: {detail}"), retry_after: None };
    match app.record(event, "outbox", "identified", Instant::now()).await.map_err(|e| database(e.to_string()))? {
        Recorded::Applied(t) => Ok(t.conversation),
        Recorded::Duplicate(_) => app.store.conversation(&c.id).await.map_err(|e| database(e.to_string()))?.ok_or_else(|| database("the conversation no longer exists".into())),
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
