//! Calls from a PBX (Zammad-style CTI, sipgate.io): the call event the source's adapter
//! parsed becomes a domain event — agents resolved, the caller identified, the PBX's answer
//! decided (block list, outbound caller id) — and is recorded.

use std::time::Instant;

use cxbridge_connectors::sources::call_event::{CallEvent, CallEventKind, Reply};
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Channel, Details, Direction, Event, EventKind, Offer};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::phone::{DigitsWithoutPlus, Normalized};
use cxbridge_domain::calls as call_rules;
use cxbridge_store::Recorded;

use super::{App, Result};

/// What a call event did: what was recorded, and the answer the PBX gets.
pub struct CallRecorded {
    pub recorded: Recorded,
    pub reply: Reply,
}

impl App {
    /// The decision the PBX gets for a new call.
    fn decide_call(&self, ev: &CallEvent, customer: &Normalized) -> Reply {
        match ev.direction {
            Direction::Inbound => match customer.e164() {
                Some(e) if self.block_list.contains(e) => Reply::Reject { reason: self.config.routing.reject_reason.clone() },
                _ => Reply::Accept,
            },
            Direction::Outbound => {
                // Outbound, the customer is the destination.
                let r = &self.config.routing;
                match call_rules::outbound_caller_id(&r.outbound_caller_ids, r.default_caller_id.as_deref(), &ev.to, customer.e164()) {
                    Some(caller_id) => Reply::Dial { caller_id: caller_id.to_string(), number: ev.to.clone() },
                    None => Reply::Accept,
                }
            }
        }
    }

    /// Records a PBX call event (CTI or sipgate) and notifies agents.
    pub async fn record_call(&self, ev: CallEvent, received: Instant) -> Result<CallRecorded> {
        let at = Timestamp::now();
        let (kind, reply) = match &ev.kind {
            CallEventKind::NewCall => {
                let (customer_raw, dialed_raw) = match ev.direction {
                    Direction::Inbound => (&ev.from, &ev.to),
                    Direction::Outbound => (&ev.to, &ev.from),
                };
                let convention = digits_convention(ev.source);
                let (customer, normalized) = self.address_from(customer_raw, convention);
                let (dialed, _) = self.address_from(dialed_raw, convention);
                let reply = self.decide_call(&ev, &normalized);
                let rejected = matches!(reply, Reply::Reject { .. });
                let agents = if rejected { vec![] } else { self.resolve_agents(&ev.users, &ev.user_ids, ev.queue.as_deref()) };
                let identification = if rejected {
                    Identification::Skipped { reason: "blocked".into() }
                } else {
                    self.identify(&normalized).await
                };
                let mut details = Details::default();
                if let Some(d) = &ev.diversion {
                    details.attributes.insert("diversion".into(), d.clone());
                }
                let offer = Offer {
                    channel: Channel::Voice,
                    direction: ev.direction,
                    customer,
                    dialed,
                    agents,
                    queue: ev.queue.clone(),
                    diversion: ev.diversion.clone(),
                    details,
                    identification,
                };
                (EventKind::Offered(offer), reply)
            }
            CallEventKind::Answer => {
                let agent = self.answering_agent(ev.answering_number.as_deref(), &ev.users, &ev.user_ids);
                (EventKind::Connected { agent }, Reply::Accept)
            }
            CallEventKind::Voicemail => {
                // Not an answer: the conversation stays unanswered and ends as missed.
                let mut details = Details::default();
                details.attributes.insert("answered_by".into(), "voicemail".into());
                (EventKind::Updated(details), Reply::Accept)
            }
            CallEventKind::Dtmf { digits } => {
                let mut details = Details::default();
                details.attributes.insert("dtmf".into(), digits.clone());
                (EventKind::Updated(details), Reply::Accept)
            }
            CallEventKind::Hangup { cause } => (EventKind::Ended { cause: cause.clone() }, Reply::Accept),
        };
        let event = Event {
            dedup_key: ev.dedup_key(),
            source: ev.source.to_string(),
            conversation_key: ev.conversation_key.clone(),
            leg: ev.leg.clone(),
            at,
            source_time: false,
            kind,
        };
        let recorded = self.record(event, ev.source, ev.kind.name(), received).await?;
        Ok(CallRecorded { recorded, reply })
    }
}

/// What a PBX source means by digits without `+` (docs/pbx/*.md): sipgate.io sends every
/// number international without `+` (`492111234567`); Zammad-style CTI follows Zammad's
/// rule (leading `00` international, leading `0` national, else international).
pub fn digits_convention(source: &str) -> DigitsWithoutPlus {
    match source {
        "sipgate" => DigitsWithoutPlus::International,
        "cti" => DigitsWithoutPlus::ZammadStyle,
        _ => DigitsWithoutPlus::National,
    }
}
