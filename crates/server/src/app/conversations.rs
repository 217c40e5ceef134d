//! Conversations: recording any domain event (and telling whoever the transition concerns),
//! finding one, the wrap-up that completes it, and closing one whose end never came.

use std::time::Instant;

use cxbridge_domain::conversation::{Conversation, Details, Disposition, EndCause, Event, EventKind, WrapUp};
use cxbridge_domain::crm::RecordRef;
use cxbridge_proto as proto;
use cxbridge_store::Recorded;

use super::native::details;
use super::{App, Caller, Error, Result};

impl App {
    /// Records a domain event, counts it and notifies whoever the transition concerns.
    pub async fn record(&self, event: Event, source: &str, kind: &str, received: Instant) -> Result<Recorded> {
        // An answer may take the conversation away from the other agents it rang.
        let answer = matches!(event.kind, EventKind::Connected { .. });
        let recorded = self.store.record_event(event, self.policy).await?;
        let result = match &recorded {
            Recorded::Duplicate(_) => "duplicate",
            Recorded::Applied(t) if t.absorbed => "absorbed",
            Recorded::Applied(_) => "applied",
        };
        metrics::counter!("cxbridge_events_total", "source" => source.to_string(), "type" => kind.to_string(), "result" => result).increment(1);
        if let Recorded::Applied(t) = &recorded {
            self.notify_after(&t.conversation, &t.effects, Some(received), answer).await;
        }
        Ok(recorded)
    }

    /// The conversation, if the caller may act on it.
    pub async fn visible_conversation(&self, caller: &Caller, id: &str) -> Result<Conversation> {
        let c = self.store.conversation(id).await?.ok_or_else(|| Error::not_found(format!("no conversation `{id}`")))?;
        if !caller.may_see(&c) {
            return Err(Error::forbidden(format!("conversation `{id}` was not offered to you")));
        }
        Ok(c)
    }

    /// The conversation a source knows by `external_id`, as the API shows it.
    pub async fn find_conversations(&self, source: Option<&str>, external_id: &str) -> Result<Vec<proto::ConversationView>> {
        let mut conversations = vec![];
        if let Some(c) = self.store.conversation_by_external(source, external_id).await? {
            conversations.push(self.conversation_view(&c).await);
        }
        Ok(conversations)
    }

    /// Wrap-up: disposition, notes, the chosen record. Completes an ended voice conversation.
    /// `body_hash` keys a wrap-up sent without a `request_id`.
    pub async fn wrap_up(&self, caller: &Caller, id: &str, mut w: proto::WrapupRequest, body_hash: u64, received: Instant) -> Result<proto::ConversationView> {
        let c = self.visible_conversation(caller, id).await?;
        if let Some(agent) = caller.agent_id() {
            // An agent wraps up as themselves, whatever the body says.
            w.agent = Some(agent.to_string());
        }
        w.disposition = self.checked_disposition(w.disposition.take())?;
        let refs: Vec<&proto::RecordRefView> = w.selected.iter().chain(w.pinned.iter().flatten()).collect();
        self.check_agent_links(caller, &c, &refs, &[])?;
        self.check_linkable(&c, w.selected.as_ref(), w.pinned.as_ref()).await?;
        let wrap = WrapUp {
            agent: w.agent.clone(),
            disposition: w.disposition.as_ref().map(|d| Disposition { code: d.code.clone(), category: d.category.clone() }),
            notes: w.notes.clone(),
            selected: w.selected.as_ref().map(|r| RecordRef::new(&r.entity, &r.id)),
            pinned: w.pinned.as_ref().map(|p| p.iter().map(|r| RecordRef::new(&r.entity, &r.id)).collect()),
            details: details(&w.details),
        };
        let dedup_key = match &w.request_id {
            Some(r) if !r.is_empty() => format!("wrapup:{}:{r}", c.id),
            _ => format!("wrapup:{}:{:016x}", c.id, body_hash ^ c.revision),
        };
        let event = Event::about(&c, dedup_key, cxbridge_domain::Timestamp::now(), EventKind::WrappedUp(wrap));
        let recorded = self.record(event, "api", "wrapup", received).await?;
        let c = recorded.into_conversation().unwrap_or(c);
        Ok(self.conversation_view(&c).await)
    }

    /// The disposition as configured: a known code (when `[[wrapup_codes]]` are set) with its
    /// category filled in; required when `[panel] require_disposition` is set.
    fn checked_disposition(&self, d: Option<proto::DispositionInput>) -> Result<Option<proto::DispositionInput>> {
        let codes = self.directory.wrapup_codes();
        let Some(mut d) = d else {
            if self.config.panel.require_disposition {
                return Err(Error::invalid("a disposition is required: choose one of the wrap-up codes"));
            }
            return Ok(None);
        };
        if d.code.trim().is_empty() {
            return Err(Error::invalid("`disposition.code` must not be empty"));
        }
        if codes.is_empty() {
            return Ok(Some(d));
        }
        let Some(known) = codes.iter().find(|c| c.code == d.code) else {
            let list: Vec<&str> = codes.iter().map(|c| c.code.as_str()).collect();
            return Err(Error::invalid(format!("unknown disposition `{}`; the wrap-up codes are {}", d.code, list.join(", "))));
        };
        if d.category.is_none() {
            d.category = known.category.clone();
        }
        Ok(Some(d))
    }

    /// Closes a conversation whose end never came (still ringing or connected): it ends with
    /// the cause `closedByAgent` and the closer in the attribute `closed_by`, and goes on as
    /// any ended conversation (wrap-up, then one activity). The closing is logged.
    pub async fn close(&self, caller: &Caller, id: &str, received: Instant) -> Result<proto::ConversationView> {
        let c = self.visible_conversation(caller, id).await?;
        if !c.state.is_open() {
            return Err(Error::Conflict(format!("conversation `{id}` has already ended; there is nothing to close")));
        }
        let closer = match caller {
            Caller::Agent { id, .. } => id.clone(),
            Caller::Admin => "admin".to_string(),
        };
        tracing::info!(conversation = c.id, external_id = c.external_id, closed_by = closer, "conversation closed by hand");
        let mut details = Details::default();
        details.attributes.insert("closed_by".into(), closer);
        let event = |dedup_key: String, kind: EventKind| Event::about(&c, dedup_key, cxbridge_domain::Timestamp::now(), kind);
        self.record(event(format!("closed-by:{}", c.id), EventKind::Updated(details)), "panel", "close", received).await?;
        let ended = self.record(event(format!("close:{}", c.id), EventKind::Ended { cause: EndCause::Other("closedByAgent".into()) }), "panel", "close", received).await?;
        let c = match ended.into_conversation() {
            Some(c) => c,
            None => self.store.conversation(id).await?.ok_or_else(|| Error::not_found(format!("no conversation `{id}`")))?,
        };
        Ok(self.conversation_view(&c).await)
    }
}
