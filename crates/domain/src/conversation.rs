//! The conversation state machine: a pure function from (conversation, event) to the next
//! conversation and the effects the hub must carry out.
//!
//! States only move forward: `offered → connected → ended → completed`. An event that
//! would move a conversation backwards is absorbed; whatever new data it carries (a late
//! `from`, a late answer time) still fills gaps. A late answer also corrects an outcome
//! recorded as missed/abandoned/not reached to answered (the state stays where it is) and
//! rewrites the activity if it was already written; see [`Event::source_time`] for when an
//! answer counts as late rather than as after the end.

use std::collections::{BTreeMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::crm::RecordRef;
use crate::identify::Identification;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    Offered,
    Connected,
    Ended,
    Completed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Offered => "offered",
            State::Connected => "connected",
            State::Ended => "ended",
            State::Completed => "completed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "offered" => State::Offered,
            "connected" => State::Connected,
            "ended" => State::Ended,
            "completed" => State::Completed,
            _ => return None,
        })
    }
    pub fn is_open(self) -> bool {
        matches!(self, State::Offered | State::Connected)
    }
}

/// How a conversation ended, from the customer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// An agent talked to the customer.
    Answered,
    /// Inbound, nobody answered (no answer, busy, rejected, congestion…).
    Missed,
    /// Inbound, the caller hung up before anyone answered.
    Abandoned,
    /// Outbound, the other side did not answer.
    NotReached,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Missed => "missed",
            Outcome::Abandoned => "abandoned",
            Outcome::NotReached => "not_reached",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "answered" => Outcome::Answered,
            "missed" => Outcome::Missed,
            "abandoned" => Outcome::Abandoned,
            "not_reached" => Outcome::NotReached,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" | "in" => Some(Direction::Inbound),
            "outbound" | "out" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// The medium of a conversation. Voice is completed after wrap-up; the others on close.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    Voice,
    Digital(String),
}

impl Channel {
    pub fn parse(s: &str) -> Self {
        match s {
            "" | "voice" | "phone" | "call" => Channel::Voice,
            other => Channel::Digital(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Channel::Voice => "voice",
            Channel::Digital(name) => name,
        }
    }
    pub fn is_voice(&self) -> bool {
        matches!(self, Channel::Voice)
    }
}

/// Why a call leg or a conversation ended (Zammad/sipgate hangup causes plus our own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndCause {
    NormalClearing,
    Busy,
    Cancel,
    NoAnswer,
    Congestion,
    NotFound,
    /// The leg was forwarded/transferred: the conversation goes on in another leg.
    Forwarded,
    /// A rejection the hub or the PBX decided.
    Rejected,
    /// The sweeper closed it because no end ever arrived.
    TimedOut,
    /// A digital conversation was closed.
    Closed,
    Other(String),
}

impl EndCause {
    pub fn parse(s: &str) -> Self {
        match s {
            "normalClearing" | "normal_clearing" => EndCause::NormalClearing,
            "busy" => EndCause::Busy,
            "cancel" => EndCause::Cancel,
            "noAnswer" | "no_answer" => EndCause::NoAnswer,
            "congestion" => EndCause::Congestion,
            "notFound" | "not_found" => EndCause::NotFound,
            "forwarded" => EndCause::Forwarded,
            "rejected" => EndCause::Rejected,
            "timedOut" | "timed_out" => EndCause::TimedOut,
            "closed" => EndCause::Closed,
            other => EndCause::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            EndCause::NormalClearing => "normalClearing",
            EndCause::Busy => "busy",
            EndCause::Cancel => "cancel",
            EndCause::NoAnswer => "noAnswer",
            EndCause::Congestion => "congestion",
            EndCause::NotFound => "notFound",
            EndCause::Forwarded => "forwarded",
            EndCause::Rejected => "rejected",
            EndCause::TimedOut => "timedOut",
            EndCause::Closed => "closed",
            EndCause::Other(s) => s,
        }
    }
}

/// A caller or dialed address: what the PBX sent, and its E.164 form when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    pub raw: String,
    pub e164: Option<String>,
}

/// One leg of a conversation as the source knows it (a sipgate `callId` under an `origCallId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub id: String,
    pub ended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub at: Timestamp,
    pub from_agent: Option<String>,
    /// Agents, queue or number the conversation moved to.
    pub to: String,
    /// The agents the new leg was offered to (they may take the conversation over).
    #[serde(default)]
    pub agents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Disposition {
    pub code: String,
    pub category: Option<String>,
}

/// Data that may arrive at any time, also after the activity was written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Details {
    pub notes: Option<String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    pub conversation_url: Option<String>,
    pub email_subject: Option<String>,
    pub email_body: Option<String>,
    pub campaign: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

impl Details {
    /// Copies every value `other` sets over ours. Returns whether anything changed.
    fn merge(&mut self, other: Details) -> bool {
        let mut changed = false;
        let mut set = |slot: &mut Option<String>, v: Option<String>| {
            if let Some(v) = v
                && slot.as_ref() != Some(&v) {
                    *slot = Some(v);
                    changed = true;
                }
        };
        set(&mut self.notes, other.notes);
        set(&mut self.transcript, other.transcript);
        set(&mut self.summary, other.summary);
        set(&mut self.recording_url, other.recording_url);
        set(&mut self.conversation_url, other.conversation_url);
        set(&mut self.email_subject, other.email_subject);
        set(&mut self.email_body, other.email_body);
        set(&mut self.campaign, other.campaign);
        for (k, v) in other.attributes {
            if self.attributes.get(&k) != Some(&v) {
                self.attributes.insert(k, v);
                changed = true;
            }
        }
        changed
    }
}

/// One customer interaction across all its legs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    /// `cti`, `sipgate`, `native`, …
    pub source: String,
    /// The id the source knows the whole conversation by (e.g. sipgate's `origCallId`).
    pub external_id: String,
    pub legs: Vec<Leg>,
    pub channel: Channel,
    pub direction: Direction,
    pub customer: Address,
    pub dialed: Address,
    pub queue: Option<String>,
    /// Agents the conversation is (or was) offered to.
    pub offered_to: Vec<String>,
    /// The agent handling it (who answered, or the transfer target who took it).
    pub agent: Option<String>,
    pub state: State,
    pub outcome: Option<Outcome>,
    pub end_cause: Option<EndCause>,
    pub offered_at: Timestamp,
    pub connected_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub last_event_at: Timestamp,
    pub transfers: Vec<Transfer>,
    pub disposition: Option<Disposition>,
    pub details: Details,
    pub identification: Identification,
    /// The record the agent chose (or created) for this conversation.
    pub selected: Option<RecordRef>,
    pub pinned: Vec<RecordRef>,
    pub wrapped_up: bool,
    /// Increases with every stored change; the agent panel uses it to drop stale updates.
    pub revision: u64,
}

impl Conversation {
    /// Talk time (connect → end), or zero for unanswered conversations.
    pub fn talk_time(&self) -> SignedDuration {
        match (self.connected_at, self.ended_at) {
            (Some(c), Some(e)) if e > c => e.duration_since(c),
            _ => SignedDuration::ZERO,
        }
    }

    /// Total time (offer → end).
    pub fn total_time(&self) -> SignedDuration {
        match self.ended_at {
            Some(e) if e > self.offered_at => e.duration_since(self.offered_at),
            _ => SignedDuration::ZERO,
        }
    }

    /// The record the activity is about: the agent's choice, else the only match.
    pub fn regarding(&self) -> Option<&RecordRef> {
        self.selected.as_ref().or_else(|| self.identification.sole_record())
    }

    /// Whether `agent` may still work on the conversation: before anyone answered, every
    /// agent it was offered to; once someone answered, only who answered and the agents it
    /// was transferred to since (who answered before a transfer keeps it, for the wrap-up).
    pub fn may_act(&self, agent: &str) -> bool {
        match &self.agent {
            None => self.offered_to.iter().any(|a| a == agent),
            Some(a) => {
                a == agent
                    || self
                        .transfers
                        .iter()
                        .filter(|t| t.from_agent.is_some())
                        .any(|t| t.from_agent.as_deref() == Some(agent) || t.agents.iter().any(|x| x == agent))
            }
        }
    }

    /// Agents that should hear about this conversation now.
    pub fn audience(&self) -> Vec<String> {
        let mut agents = self.offered_to.clone();
        if let Some(a) = &self.agent
            && !agents.contains(a) {
                agents.push(a.clone());
            }
        agents
    }
}

/// The most agents one event may name (a PBX's `user` list, a native event's `agents`).
/// Each named agent gets a pop and is stored with the conversation; a ring group larger
/// than this is a queue (`queue` with `[[agents]] queues`), which the hub expands itself.
pub const MAX_AGENTS_PER_EVENT: usize = 100;

/// `items` without repeats, in the order first seen, in linear time.
pub fn first_seen_unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// The agents of `offered` that `known` does not hold yet, once each, in order.
fn agents_not_in(known: &[String], offered: &[String]) -> Vec<String> {
    let known: HashSet<&str> = known.iter().map(String::as_str).collect();
    first_seen_unique(offered.iter().filter(|a| !known.contains(a.as_str())).cloned())
}

/// A normalized event, whatever wire format it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Key the event is deduplicated by, derived from the source's own ids.
    pub dedup_key: String,
    pub source: String,
    /// The conversation's stable external id (sipgate `origCallId`, CTI `callId`, …).
    pub conversation_key: String,
    /// The leg this event is about, when the source has legs.
    pub leg: Option<String>,
    pub at: Timestamp,
    /// `at` is the source's own time of the event (a native event's `occurred_at`), so it
    /// can be compared with the conversation's other times. False when `at` is only when the
    /// hub received the event (Zammad CTI and sipgate send no times): then the order of
    /// arrival says nothing about the order of what happened.
    pub source_time: bool,
    pub kind: EventKind,
}

impl Event {
    /// An event the hub raises itself about a conversation it has stored (the sweeper, the
    /// outbox worker, the panel): the conversation's own source and key, no leg, the hub's time.
    pub fn about(c: &Conversation, dedup_key: String, at: Timestamp, kind: EventKind) -> Self {
        Self { dedup_key, source: c.source.clone(), conversation_key: c.external_id.clone(), leg: None, at, source_time: false, kind }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A new conversation, or a new leg of one (transfer): offer it to `agents`.
    Offered(Offer),
    /// Someone answered / the agent accepted.
    Connected { agent: Option<String> },
    /// A leg (or the whole conversation, if it has no more legs) ended.
    Ended { cause: EndCause },
    /// Data arriving at any time (transcript, summary, recording, attributes…).
    Updated(Details),
    /// The agent's wrap-up: disposition, notes, chosen record.
    WrappedUp(WrapUp),
    /// The agent chose the record the conversation is about, or (un)pinned records,
    /// before wrap-up.
    Linked(Links),
    /// After-call work ran out without a wrap-up (sent by the sweeper).
    AcwExpired,
    /// Who called, learned after the offer: the CRM answered a lookup it had failed at the
    /// offer, or a record was created for an unknown caller (sent by the outbox worker while
    /// it writes the activity, so this never asks to memorialize). Replaces only an
    /// identification that found nobody ([`Identification::replaceable`]).
    Identified(Identification),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub channel: Channel,
    pub direction: Direction,
    pub customer: Address,
    pub dialed: Address,
    pub agents: Vec<String>,
    pub queue: Option<String>,
    /// The originally dialed number when the call was diverted (a transfer leg).
    pub diversion: Option<String>,
    pub details: Details,
    pub identification: Identification,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WrapUp {
    pub agent: Option<String>,
    pub disposition: Option<Disposition>,
    pub notes: Option<String>,
    pub selected: Option<RecordRef>,
    pub pinned: Option<Vec<RecordRef>>,
    pub details: Details,
}

/// The records a conversation is about; `None` leaves that part as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Links {
    pub selected: Option<RecordRef>,
    pub pinned: Option<Vec<RecordRef>>,
}

/// What the hub must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Show the conversation to these agents (first offer, or a transfer leg).
    Pop(Vec<String>),
    /// Tell the audience the conversation changed.
    Update,
    /// Tell the audience the conversation is over (ended/completed).
    End,
    /// Write (or rewrite) the conversation's activity to the CRM through the outbox.
    Memorialize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub conversation: Conversation,
    pub effects: Vec<Effect>,
    /// Nothing changed: the event was a late or repeated one.
    pub absorbed: bool,
}

/// Rules the state machine needs from configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Complete a voice conversation at its end when nobody is expected to wrap it up
    /// (missed/abandoned). Answered voice calls wait for wrap-up or the ACW timeout.
    pub memorialize_missed: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self { memorialize_missed: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("no conversation is known for `{0}` and this event cannot start one")]
    UnknownConversation(String),
}

/// Applies `event` to `current` (None when the conversation is not known yet).
/// `new_id` names the conversation if this event creates it.
pub fn apply(current: Option<Conversation>, event: Event, new_id: &str, policy: Policy) -> Result<Transition, TransitionError> {
    let Some(mut c) = current else {
        return start(event, new_id, policy);
    };
    let before = c.clone();
    let mut effects = Vec::new();
    let at = event.at;
    if let Some(leg) = &event.leg
        && !c.legs.iter().any(|l| &l.id == leg) {
            c.legs.push(Leg { id: leg.clone(), ended: false });
        }
    match event.kind {
        EventKind::Offered(offer) => {
            let leg_is_new = event.leg.as_ref().is_some_and(|l| !before.legs.iter().any(|b| &b.id == l));
            let gaps_before = c.clone();
            fill_offer_gaps(&mut c, &offer);
            if at < c.offered_at {
                // The offer came late (after the answer or the hangup): the call began then.
                c.offered_at = at;
            }
            if c.state == State::Completed && c != gaps_before {
                // The activity was written without what only the offer knows: rewrite it.
                effects.push(Effect::Memorialize);
            }
            if leg_is_new && c.state.is_open() && !before.legs.is_empty() {
                // A new leg of a live conversation: a transfer. Offer it to the new agents.
                let from_agent = c.agent.clone();
                let to = if offer.agents.is_empty() { offer.queue.clone().unwrap_or_else(|| offer.dialed.raw.clone()) } else { offer.agents.join(", ") };
                c.transfers.push(Transfer { at, from_agent, to, agents: offer.agents.clone() });
                let new_agents = agents_not_in(&c.offered_to, &offer.agents);
                c.offered_to.extend(new_agents.iter().cloned());
                if offer.queue.is_some() {
                    c.queue = offer.queue.clone();
                }
                // The state stays (a transfer never moves a conversation back to `offered`);
                // `agent` stays who talked to the customer until the new agent answers.
                if !new_agents.is_empty() {
                    effects.push(Effect::Pop(new_agents));
                }
                effects.push(Effect::Update);
            } else if c.state.is_open() {
                let new_agents = agents_not_in(&c.offered_to, &offer.agents);
                if !new_agents.is_empty() {
                    c.offered_to.extend(new_agents.iter().cloned());
                    effects.push(Effect::Pop(new_agents));
                }
            }
        }
        EventKind::Connected { agent } => {
            // An answer processed after the hangup (events reordered or retried) is a real
            // answer unless the source's own clock puts it after the end: then the caller had
            // already gone and the recorded outcome stands.
            let ended_unanswered = c.state >= State::Ended && c.outcome != Some(Outcome::Answered);
            let answered_after_the_end = event.source_time && c.ended_at.is_some_and(|end| at > end);
            if !(ended_unanswered && answered_after_the_end) {
                if c.connected_at.is_none() {
                    // Without source times a late answer only arrived late: it happened before the end.
                    c.connected_at = Some(match c.ended_at {
                        Some(end) if at > end => end,
                        _ => at,
                    });
                }
                // On the newest leg of a transferred conversation, the answering agent takes over.
                let takes_over = !c.transfers.is_empty() && event.leg.is_some() && event.leg.as_deref() == c.legs.last().map(|l| l.id.as_str());
                if agent.is_some() && (c.agent.is_none() || c.state == State::Offered || takes_over) {
                    c.agent = agent.clone();
                    if let Some(a) = &agent
                        && !c.offered_to.contains(a) {
                            c.offered_to.push(a.clone());
                        }
                }
                if c.state == State::Offered {
                    c.state = State::Connected;
                    effects.push(Effect::Update);
                } else if ended_unanswered {
                    // The call was answered after all: the outcome is corrected (the state stays),
                    // and an activity already written as missed/abandoned is rewritten.
                    c.outcome = Some(Outcome::Answered);
                    if c.state == State::Completed {
                        effects.push(Effect::Memorialize);
                    }
                }
            }
        }
        EventKind::Ended { cause } => {
            match &event.leg {
                Some(leg) => {
                    if let Some(l) = c.legs.iter_mut().find(|l| &l.id == leg) {
                        l.ended = true;
                    }
                }
                // No leg named (the sweeper, a source without legs): the whole conversation ended.
                None => c.legs.iter_mut().for_each(|l| l.ended = true),
            }
            let legs_open = c.legs.iter().any(|l| !l.ended);
            let leg_forwarded = cause == EndCause::Forwarded;
            if c.state.is_open() && !legs_open && !leg_forwarded {
                end(&mut c, at, cause, policy, &mut effects);
            } else if c.state.is_open() && legs_open && event.leg.is_some() {
                // One leg of a transfer ended; the conversation lives on in another.
                effects.push(Effect::Update);
            }
        }
        EventKind::Updated(details) => {
            if c.details.merge(details) {
                effects.push(if c.state == State::Completed { Effect::Memorialize } else { Effect::Update });
            }
        }
        EventKind::WrappedUp(w) => {
            apply_wrapup(&mut c, w);
            if c.state == State::Ended {
                complete(&mut c, at, &mut effects);
            } else if c.state == State::Completed {
                effects.push(Effect::Memorialize);
            } else {
                effects.push(Effect::Update);
            }
        }
        EventKind::Linked(links) => {
            if let Some(r) = links.selected {
                c.selected = Some(r);
            }
            if let Some(p) = links.pinned {
                c.pinned = p;
            }
            // After completion the activity is rewritten with the new links.
            effects.push(if c.state == State::Completed { Effect::Memorialize } else { Effect::Update });
        }
        EventKind::AcwExpired => {
            if c.state == State::Ended {
                complete(&mut c, at, &mut effects);
            }
        }
        EventKind::Identified(identification) => {
            if c.identification.replaceable() && c.identification != identification {
                c.identification = identification;
                effects.push(Effect::Update);
            }
        }
    }
    // Compared before `last_event_at` moves: a repeat reported later is still no change.
    let absorbed = c == before;
    if !absorbed {
        c.revision += 1;
        if at > c.last_event_at {
            c.last_event_at = at;
        }
    }
    // An absorbed update still leaves effects empty; make that explicit.
    if absorbed {
        effects.clear();
    } else if effects.is_empty() && c.state != State::Completed {
        effects.push(Effect::Update);
    }
    Ok(Transition { conversation: c, effects, absorbed })
}

fn start(event: Event, id: &str, policy: Policy) -> Result<Transition, TransitionError> {
    let at = event.at;
    let legs = event.leg.iter().map(|l| Leg { id: l.clone(), ended: false }).collect();
    let mut c = Conversation {
        id: id.to_string(),
        source: event.source.clone(),
        external_id: event.conversation_key.clone(),
        legs,
        channel: Channel::Voice,
        direction: Direction::Inbound,
        customer: Address::default(),
        dialed: Address::default(),
        queue: None,
        offered_to: vec![],
        agent: None,
        state: State::Offered,
        outcome: None,
        end_cause: None,
        offered_at: at,
        connected_at: None,
        ended_at: None,
        completed_at: None,
        last_event_at: at,
        transfers: vec![],
        disposition: None,
        details: Details::default(),
        identification: Identification::Pending,
        selected: None,
        pinned: vec![],
        wrapped_up: false,
        revision: 1,
    };
    let mut effects = Vec::new();
    match event.kind {
        EventKind::Offered(offer) => {
            c.channel = offer.channel;
            c.direction = offer.direction;
            c.customer = offer.customer;
            c.dialed = offer.dialed;
            c.queue = offer.queue;
            c.offered_to = first_seen_unique(offer.agents);
            c.details = offer.details;
            c.identification = offer.identification;
            effects.push(Effect::Pop(c.offered_to.clone()));
        }
        EventKind::Connected { agent } => {
            // The offer was lost or is late: start connected, the offer fills the gaps.
            c.state = State::Connected;
            c.connected_at = Some(at);
            c.agent = agent.clone();
            c.offered_to = agent.into_iter().collect();
            effects.push(Effect::Pop(c.offered_to.clone()));
        }
        EventKind::Ended { cause } => {
            if let Some(l) = c.legs.first_mut() {
                l.ended = true;
            }
            end(&mut c, at, cause, policy, &mut effects);
        }
        EventKind::Updated(_) | EventKind::WrappedUp(_) | EventKind::Linked(_) | EventKind::AcwExpired | EventKind::Identified(_) => {
            return Err(TransitionError::UnknownConversation(event.conversation_key));
        }
    }
    Ok(Transition { conversation: c, effects, absorbed: false })
}

/// A late offer (after answer or hangup) still tells us who called whom.
fn fill_offer_gaps(c: &mut Conversation, offer: &Offer) {
    if c.customer.raw.is_empty() {
        c.customer = offer.customer.clone();
        c.direction = offer.direction;
        c.channel = offer.channel.clone();
        // The conversation began with its hangup, when the direction was only a guess.
        if let (Some(cause), Some(outcome)) = (&c.end_cause, c.outcome)
            && outcome != Outcome::Answered
        {
            c.outcome = Some(outcome_of(c.connected_at.is_some(), c.direction, cause));
        }
    }
    if c.dialed.raw.is_empty() {
        c.dialed = offer.dialed.clone();
    }
    if c.queue.is_none() {
        c.queue = offer.queue.clone();
    }
    if matches!(c.identification, Identification::Pending) {
        c.identification = offer.identification.clone();
    }
    c.details.merge(offer.details.clone());
}

fn end(c: &mut Conversation, at: jiff::Timestamp, cause: EndCause, policy: Policy, effects: &mut Vec<Effect>) {
    c.state = State::Ended;
    c.ended_at = Some(at);
    c.outcome = Some(outcome_of(c.connected_at.is_some(), c.direction, &cause));
    c.end_cause = Some(cause);
    effects.push(Effect::End);
    let nobody_wraps_up = c.connected_at.is_none() && policy.memorialize_missed;
    if !c.channel.is_voice() || c.wrapped_up || nobody_wraps_up {
        complete(c, at, effects);
    }
}

fn outcome_of(connected: bool, direction: Direction, cause: &EndCause) -> Outcome {
    match (connected, direction, cause) {
        (true, _, _) => Outcome::Answered,
        (false, Direction::Outbound, _) => Outcome::NotReached,
        (false, Direction::Inbound, EndCause::Cancel | EndCause::NormalClearing) => Outcome::Abandoned,
        (false, Direction::Inbound, _) => Outcome::Missed,
    }
}

fn complete(c: &mut Conversation, at: jiff::Timestamp, effects: &mut Vec<Effect>) {
    c.state = State::Completed;
    c.completed_at = Some(at);
    effects.push(Effect::Memorialize);
    if !effects.contains(&Effect::End) {
        effects.push(Effect::End);
    }
}

fn apply_wrapup(c: &mut Conversation, w: WrapUp) {
    c.wrapped_up = true;
    if w.disposition.is_some() {
        c.disposition = w.disposition;
    }
    if w.notes.is_some() {
        c.details.notes = w.notes;
    }
    if w.selected.is_some() {
        c.selected = w.selected;
    }
    if let Some(p) = w.pinned {
        c.pinned = p;
    }
    if c.agent.is_none() {
        c.agent = w.agent;
    }
    c.details.merge(w.details);
}

#[cfg(test)]
mod tests;
