//! Native events: an integration posts its own conversation events (any channel) in our JSON.

use std::time::Instant;

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Channel, Details, Direction, EndCause, Event, EventKind, Offer};
use cxbridge_proto as proto;
use cxbridge_store::Recorded;

use super::{App, Error, Result};

impl App {
    /// Checks and records a native event; `body_hash` keys an event sent without an id.
    pub async fn record_native(&self, e: &proto::NativeEvent, body_hash: u64, received: Instant) -> Result<Recorded> {
        let event = self.native_event(e, body_hash).await?;
        self.record(event, "native", &e.kind, received).await
    }

    /// Converts a native API event.
    pub async fn native_event(&self, e: &proto::NativeEvent, body_hash: u64) -> Result<Event> {
        if e.conversation_id.trim().is_empty() || e.conversation_id.chars().count() > 250 {
            return Err(Error::invalid("`conversation_id` must be 1 to 250 characters"));
        }
        let at = match &e.occurred_at {
            Some(t) => t.parse::<Timestamp>().map_err(|err| Error::invalid(format!("`occurred_at` is not an RFC 3339 time: {err}")))?,
            None => Timestamp::now(),
        };
        let max_agents = cxbridge_domain::conversation::MAX_AGENTS_PER_EVENT;
        if e.agents.len() > max_agents {
            return Err(Error::invalid(format!(
                "`agents` names {} agents; at most {max_agents} are accepted per event (send a larger ring group as a `queue` and list its agents under [[agents]] queues)",
                e.agents.len()
            )));
        }
        let details = details(&e.details);
        let direction = match e.direction.as_deref() {
            None => Direction::Inbound,
            Some(d) => Direction::parse(d).ok_or_else(|| Error::invalid(format!("`direction` must be `inbound` or `outbound`, not `{d}`")))?,
        };
        let kind = match e.kind.as_str() {
            "offered" => {
                let from = e.from.clone().unwrap_or_default();
                let to = e.to.clone().unwrap_or_default();
                let (customer_raw, dialed_raw) = if direction == Direction::Inbound { (from, to) } else { (to, from) };
                let (customer, normalized) = self.address(&customer_raw);
                let (dialed, _) = self.address(&dialed_raw);
                let agents = self.resolve_agents(&e.agents, &[], e.queue.as_deref());
                let channel = Channel::parse(e.channel.as_deref().unwrap_or("voice"));
                let identification = self.identify(&normalized).await;
                EventKind::Offered(Offer { channel, direction, customer, dialed, agents, queue: e.queue.clone(), diversion: None, details, identification })
            }
            "connected" => EventKind::Connected { agent: e.agent.clone().map(|a| self.resolve_agents(&[a], &[], None).remove(0)) },
            "ended" => EventKind::Ended { cause: EndCause::parse(e.cause.as_deref().unwrap_or("normalClearing")) },
            "closed" => EventKind::Ended { cause: EndCause::Closed },
            "updated" => EventKind::Updated(details),
            other => {
                return Err(Error::invalid(format!("unknown event type `{other}`: use offered, connected, ended, closed or updated")));
            }
        };
        let dedup_key = match &e.event_id {
            Some(id) if !id.is_empty() => format!("native:{id}"),
            _ => format!("native:{}:{}:{:016x}", e.conversation_id, e.kind, body_hash),
        };
        let source = match e.source.as_deref() {
            None | Some("") | Some("native") => "native",
            Some(s @ ("cti" | "sipgate")) => s,
            Some(other) => return Err(Error::invalid(format!("`source` must be native, cti or sipgate, not `{other}`"))),
        };
        Ok(Event { dedup_key, source: source.into(), conversation_key: e.conversation_id.clone(), leg: e.leg_id.clone(), at, source_time: e.occurred_at.is_some(), kind })
    }
}

/// The details an integration or the panel sends, as the domain keeps them.
pub fn details(d: &proto::DetailsInput) -> Details {
    Details {
        notes: d.notes.clone(),
        transcript: d.transcript.clone(),
        summary: d.summary.clone(),
        recording_url: d.recording_url.clone(),
        conversation_url: d.conversation_url.clone(),
        email_subject: d.email_subject.clone(),
        email_body: d.email_body.clone(),
        campaign: d.campaign.clone(),
        attributes: d.attributes.clone(),
    }
}
