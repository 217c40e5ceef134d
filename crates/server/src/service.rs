//! The hub's use cases, between the HTTP routes and the store: turning source events into
//! domain events (agents resolved, caller identified), recording them, notifying agents.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_connectors::{CallEvent, CallEventKind, Reply};
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Address, Channel, Conversation, Details, Direction, Effect, Event, EventKind, Offer, Policy};
use cxbridge_domain::crm::{Crm, EntitySpec};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::mapping::Context;
use cxbridge_domain::phone::{DigitsWithoutPlus, Normalized, PhoneNormalizer};
use cxbridge_domain::pop::{self, PopAction, PopRule};
use cxbridge_domain::routing;
use cxbridge_proto as proto;
use cxbridge_store::{CrmStore, Recorded, Store};
use tokio::sync::Notify;

use crate::auth::Tokens;
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::{AgentHub, Frame};
use crate::views;

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub crm_store: Arc<dyn CrmStore>,
    pub crm: Arc<dyn Crm>,
    /// The local phone index of an external CRM, when there is one.
    pub indexed: Option<Arc<crate::crm_index::IndexedCrm>>,
    /// The memorialization mapping in effect (the provider's default fields unless configured).
    pub mapping: cxbridge_domain::mapping::Mapping,
    pub entities: Vec<EntitySpec>,
    pub normalizer: PhoneNormalizer,
    pub hub: AgentHub,
    /// The other nodes, when there are several (`[bus] url`).
    pub bus: Option<Arc<cxbridge_connectors::bus::NatsBus>>,
    /// Agent messages from the other nodes, until `run` takes them.
    pub bus_inbox: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<cxbridge_connectors::bus::Delivery>>>,
    /// This node's name among several.
    pub node_id: String,
    pub tokens: Tokens,
    pub sessions: crate::session::Sessions,
    pub policy: Policy,
    pub outbox_wake: Arc<Notify>,
    pub started: Instant,
    pub block_list: HashSet<String>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// What an ingest call did.
pub struct Ingested {
    pub recorded: Recorded,
    pub reply: Reply,
}

impl App {
    pub fn pop_rules(&self) -> &[PopRule] {
        &self.config.pop_rules
    }

    pub fn uses_builtin_crm(&self) -> bool {
        self.config.crm.provider == "builtin"
    }

    /// Whether `r` may be linked to an activity of `c`. The built-in CRM is asked; an
    /// external CRM's own records are checked when the activity is written (a missing one
    /// goes dead with the CRM's message), so only the entity must be known here.
    pub async fn linkable(&self, c: &Conversation, r: &cxbridge_domain::crm::RecordRef) -> Result<bool, ApiError> {
        if c.identification.candidates().iter().any(|x| &x.record == r) {
            return Ok(true);
        }
        if self.uses_builtin_crm() {
            return Ok(self.crm_store.record(&r.entity, &r.id).await?.is_some());
        }
        Ok(self.entities.iter().any(|e| e.name == r.entity))
    }

    /// Refuses (422) the first of the agent's chosen and pinned records that cannot be linked.
    pub async fn check_linkable(&self, c: &Conversation, selected: Option<&proto::RecordRefView>, pinned: Option<&Vec<proto::RecordRefView>>) -> Result<(), ApiError> {
        for r in selected.into_iter().chain(pinned.into_iter().flatten()) {
            if !self.linkable(c, &cxbridge_domain::crm::RecordRef::new(&r.entity, &r.id)).await? {
                return Err(ApiError::unprocessable(format!("record {}/{} does not exist in the CRM; create it first", r.entity, r.id)));
            }
        }
        Ok(())
    }

    /// `c` as agents may see it: its matches without their sensitive fields.
    pub fn redact(&self, c: &cxbridge_domain::crm::Candidate) -> cxbridge_domain::crm::Candidate {
        match self.entities.iter().find(|e| e.name == c.record.entity) {
            Some(spec) => spec.redact(c),
            // A record of an entity we do not know: show nothing but what names it.
            None => cxbridge_domain::crm::Candidate { fields: BTreeMap::new(), display: vec![], ..c.clone() },
        }
    }

    pub fn redact_identification(&self, i: &Identification) -> Identification {
        match i {
            Identification::Single(c) => Identification::Single(self.redact(c)),
            Identification::Multiple(cs) => Identification::Multiple(cs.iter().map(|c| self.redact(c)).collect()),
            other => other.clone(),
        }
    }

    fn for_agents(&self, c: &Conversation) -> Conversation {
        Conversation { identification: self.redact_identification(&c.identification), ..c.clone() }
    }

    /// The records an agent may act on in `c`: its matches, the chosen and the pinned ones.
    pub fn conversation_records(c: &Conversation) -> Vec<cxbridge_domain::crm::RecordRef> {
        let mut refs: Vec<cxbridge_domain::crm::RecordRef> = c.identification.candidates().iter().map(|x| x.record.clone()).collect();
        refs.extend(c.selected.iter().cloned());
        refs.extend(c.pinned.iter().cloned());
        refs
    }

    /// An agent links to `c` only its own records and those it found or created for it
    /// (their `grants`); admins link any record. 403 for the first that is neither.
    pub fn check_agent_links(&self, caller: &crate::auth::Caller, c: &Conversation, refs: &[&proto::RecordRefView], grants: &[String]) -> Result<(), ApiError> {
        if caller.agent_id().is_none() {
            return Ok(());
        }
        let own = Self::conversation_records(c);
        for r in refs {
            let known = own.iter().any(|o| o.entity == r.entity && o.id == r.id);
            if !known && !grants.iter().any(|g| self.sessions.grant_ok(g, &c.id, &r.entity, &r.id)) {
                return Err(ApiError::forbidden(format!(
                    "record {}/{} is not one of this conversation's records: search for it or create it from the conversation first",
                    r.entity, r.id
                )));
            }
        }
        Ok(())
    }

    /// Whether the agent (as configured: supervisor or not) may see `c`.
    pub fn agent_may_see(&self, agent: &str, c: &Conversation) -> bool {
        let supervisor = self.agent_config(agent).is_some_and(|a| a.supervisor);
        crate::auth::Caller::Agent { id: agent.to_string(), supervisor }.may_see(c)
    }

    /// What the hub knows of one of `c`'s records: the match it came from, else the built-in
    /// CRM's record. An external CRM's record the caller did not match is known by reference only.
    pub async fn record_candidate(&self, c: &Conversation, r: &cxbridge_domain::crm::RecordRef) -> Option<cxbridge_domain::crm::Candidate> {
        if let Some(found) = c.identification.candidates().iter().find(|x| &x.record == r) {
            return Some(found.clone());
        }
        if !self.uses_builtin_crm() {
            return None;
        }
        let spec = self.entities.iter().find(|e| e.name == r.entity)?;
        let rec = self.crm_store.record(&r.entity, &r.id).await.ok()??;
        Some(cxbridge_domain::crm::Candidate::from_fields(spec, &rec.id, rec.fields))
    }

    /// Maps the PBX's user names / ids / answering number to agent ids.
    fn resolve_agents(&self, users: &[String], user_ids: &[String], queue: Option<&str>) -> Vec<String> {
        // Deduplicated with a set: the lists come from the PBX (capped per event, but a
        // `Vec::contains` per name would still be quadratic).
        let mut out: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut push = |a: String| {
            if seen.insert(a.clone()) {
                out.push(a);
            }
        };
        // sipgate sends `user[]` and `userId[]` side by side; a configured id wins over a name.
        for i in 0..users.len().max(user_ids.len()) {
            let by_id = user_ids.get(i).and_then(|id| self.config.agents.iter().find(|a| a.sipgate_user_ids.iter().any(|x| x == id)));
            let by_name = users
                .get(i)
                .map(|u| self.config.agents.iter().find(|a| a.cti_users.iter().any(|n| n == u) || a.name.as_deref() == Some(u) || a.id == *u).map_or_else(|| u.clone(), |a| a.id.clone()));
            match (by_id, by_name) {
                (Some(a), _) => push(a.id.clone()),
                (None, Some(name)) => push(name),
                (None, None) => {}
            }
        }
        if let Some(q) = queue {
            for a in self.config.agents.iter().filter(|a| a.queues.iter().any(|x| x == q)) {
                push(a.id.clone());
            }
        }
        out
    }

    fn answering_agent(&self, number: Option<&str>, users: &[String], user_ids: &[String]) -> Option<String> {
        if let Some(n) = number
            && let Some(a) = self.config.agents.iter().find(|a| a.numbers.iter().any(|x| x == n)) {
                return Some(a.id.clone());
            }
        self.resolve_agents(users, user_ids, None).into_iter().next()
    }

    pub fn address(&self, raw: &str) -> (Address, Normalized) {
        self.address_from(raw, DigitsWithoutPlus::National)
    }

    /// `raw` as a source that means `convention` by digits without `+` sends it.
    pub fn address_from(&self, raw: &str, convention: DigitsWithoutPlus) -> (Address, Normalized) {
        let n = self.normalizer.normalize_from(raw, convention);
        (Address { raw: raw.to_string(), e164: n.e164().map(str::to_string) }, n)
    }

    /// Looks the caller up in the CRM within the configured time budget.
    pub async fn identify(&self, normalized: &Normalized) -> Identification {
        let Some(e164) = normalized.e164() else {
            let reason = normalized.skip_reason().unwrap_or("invalid").to_string();
            metrics::counter!("cxbridge_identifications_total", "outcome" => "skipped").increment(1);
            return Identification::Skipped { reason };
        };
        let started = Instant::now();
        let budget = Duration::from_millis(self.config.crm.identify_timeout_ms);
        let found = tokio::time::timeout(budget, self.crm.find_by_phone(e164, &self.entities, self.config.crm.max_candidates)).await;
        metrics::histogram!("cxbridge_identify_duration_seconds").record(started.elapsed().as_secs_f64());
        let id = match found {
            Ok(Ok(candidates)) => Identification::from_candidates(candidates),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "identification failed");
                Identification::Skipped { reason: "crm_error".into() }
            }
            Err(_) => {
                tracing::warn!(budget_ms = budget.as_millis() as u64, "identification ran out of time");
                Identification::Skipped { reason: "crm_timeout".into() }
            }
        };
        metrics::counter!("cxbridge_identifications_total", "outcome" => id.outcome()).increment(1);
        id
    }

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
                match routing::outbound_caller_id(&r.outbound_caller_ids, r.default_caller_id.as_deref(), &ev.to, customer.e164()) {
                    Some(caller_id) => Reply::Dial { caller_id: caller_id.to_string(), number: ev.to.clone() },
                    None => Reply::Accept,
                }
            }
        }
    }

    /// Records a PBX call event (CTI or sipgate) and notifies agents.
    pub async fn ingest_call(&self, ev: CallEvent, received: Instant) -> Result<Ingested, ApiError> {
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
            leg: (ev.source == "sipgate").then(|| ev.call_id.clone()),
            at,
            source_time: false,
            kind,
        };
        let recorded = self.record(event, ev.source, ev.kind.name(), received).await?;
        Ok(Ingested { recorded, reply })
    }

    /// Records a domain event, counts it and notifies whoever the transition concerns.
    pub async fn record(&self, event: Event, source: &str, kind: &str, received: Instant) -> Result<Recorded, ApiError> {
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

    /// The pop for `c`, with an `open_related` target resolved.
    pub async fn pop_view(&self, c: &Conversation) -> proto::PopView {
        let c = &self.for_agents(c);
        let ctx = Context::new(c, None);
        let action = pop::decide(self.pop_rules(), c, |t| ctx.render(t));
        let related = match &action {
            PopAction::OpenRelated { from, relation } => match self.entities.iter().find(|e| e.name == from.record.entity) {
                Some(spec) => self.crm.related(&from.record, spec, relation).await.ok().flatten(),
                None => None,
            },
            _ => None,
        };
        let related_opened = related.is_some();
        let mut view = views::pop(&action, related.map(|r| self.redact(&r)).as_ref());
        // The record a pop opens instead of the match (its account) may be linked too.
        if related_opened
            && let Some(r) = view.record.as_mut()
        {
            r.grant = Some(self.sessions.grant(&c.id, &r.entity, &r.id));
        }
        view
    }

    pub async fn conversation_view(&self, c: &Conversation) -> proto::ConversationView {
        // Only a completed conversation has an activity in the outbox; skip the lookup before.
        let item = if c.state == cxbridge_domain::conversation::State::Completed {
            self.store.outbox_for_conversation(&c.id).await.ok().flatten()
        } else {
            None
        };
        views::conversation(&self.for_agents(c), item.as_ref())
    }

    pub async fn agent_conversation(&self, c: &Conversation) -> proto::AgentConversation {
        proto::AgentConversation { conversation: self.conversation_view(c).await, pop: self.pop_view(c).await }
    }

    /// Sends `frame` to `agent`'s streams on this node and hands it to the other nodes.
    /// Returns how many streams of this node got it.
    pub async fn send_to_agent(&self, agent: &str, frame: &Frame) -> usize {
        let here = self.hub.publish(agent, frame);
        if let Some(bus) = &self.bus
            && let Err(e) = bus.publish(agent, frame).await
        {
            tracing::warn!(agent, error = %e, "could not hand the agent message to the other nodes");
        }
        here
    }

    /// Whether `agent` has the panel open on any node.
    pub fn agent_online(&self, agent: &str) -> bool {
        self.hub.is_connected(agent) || self.bus.as_ref().is_some_and(|b| b.present_elsewhere(agent))
    }

    /// Tells the other nodes which agents are online here (after a stream opened or closed).
    pub fn announce_presence(&self) {
        if let Some(bus) = &self.bus {
            bus.announce(self.hub.agents());
        }
    }

    /// An agent's stream closed: this node and the others forget it.
    pub fn stream_closed(&self, stream: crate::hub::Subscription) {
        drop(stream);
        self.announce_presence();
    }

    /// Pushes the transition's effects to the agents' streams and wakes the outbox.
    pub async fn notify(&self, c: &Conversation, effects: &[Effect], received: Option<Instant>) {
        self.notify_after(c, effects, received, false).await;
    }

    /// [`App::notify`]; after an `answer`, the agents it rang who may no longer see the
    /// conversation hear once who took it (their panel drops it), and nothing after that.
    async fn notify_after(&self, c: &Conversation, effects: &[Effect], received: Option<Instant>, answer: bool) {
        if effects.contains(&Effect::Memorialize) {
            self.outbox_wake.notify_one();
        }
        let wants_message = effects.iter().any(|e| !matches!(e, Effect::Memorialize));
        // With other nodes, the agent may be connected to one of them.
        if !wants_message || (self.bus.is_none() && self.hub.connected_agents() == 0) {
            return;
        }
        let body = self.agent_conversation(c).await;
        let mut popped: HashSet<&str> = HashSet::new();
        for e in effects {
            if let Effect::Pop(agents) = e {
                let frame = frame(&proto::AgentMessage::Pop(body.clone()));
                for a in agents.iter().filter(|a| self.agent_may_see(a, c)) {
                    if self.send_to_agent(a, &frame).await > 0
                        && let Some(r) = received {
                            metrics::histogram!("cxbridge_pop_latency_seconds").record(r.elapsed().as_secs_f64());
                        }
                    popped.insert(a);
                }
            }
        }
        let message = if effects.contains(&Effect::End) {
            Some(proto::AgentMessage::End(body))
        } else if effects.iter().any(|e| matches!(e, Effect::Update | Effect::Memorialize)) {
            Some(proto::AgentMessage::Update(body))
        } else {
            None
        };
        if let Some(m) = message {
            let frame = frame(&m);
            let mut handed_over = None;
            for a in c.audience() {
                if popped.contains(a.as_str()) {
                    continue;
                }
                if self.agent_may_see(&a, c) {
                    self.send_to_agent(&a, &frame).await;
                } else if answer {
                    let bare = handed_over.get_or_insert_with(|| self::frame(&proto::AgentMessage::Update(views::handed_over(c))));
                    self.send_to_agent(&a, bare).await;
                }
            }
        }
    }

    /// Conversations an agent should see on (re)connect: still open, and not taken by another agent.
    pub async fn snapshot(&self, agent: &str) -> Result<Vec<proto::AgentConversation>, ApiError> {
        let mut out = vec![];
        for c in self.store.conversations_for_agent(agent).await? {
            if c.agent.as_deref().is_none_or(|a| a == agent) && self.agent_may_see(agent, &c) {
                out.push(self.agent_conversation(&c).await);
            }
        }
        Ok(out)
    }

    /// Converts a native API event.
    pub async fn native_event(&self, e: &proto::NativeEvent, body_hash: u64) -> Result<Event, ApiError> {
        if e.conversation_id.trim().is_empty() || e.conversation_id.chars().count() > 250 {
            return Err(ApiError::unprocessable("`conversation_id` must be 1 to 250 characters"));
        }
        let at = match &e.occurred_at {
            Some(t) => t.parse::<Timestamp>().map_err(|err| ApiError::unprocessable(format!("`occurred_at` is not an RFC 3339 time: {err}")))?,
            None => Timestamp::now(),
        };
        let max_agents = cxbridge_domain::conversation::MAX_AGENTS_PER_EVENT;
        if e.agents.len() > max_agents {
            return Err(ApiError::unprocessable(format!(
                "`agents` names {} agents; at most {max_agents} are accepted per event (send a larger ring group as a `queue` and list its agents under [[agents]] queues)",
                e.agents.len()
            )));
        }
        let details = details(&e.details);
        let direction = match e.direction.as_deref() {
            None => Direction::Inbound,
            Some(d) => Direction::parse(d).ok_or_else(|| ApiError::unprocessable(format!("`direction` must be `inbound` or `outbound`, not `{d}`")))?,
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
            "ended" => EventKind::Ended { cause: cxbridge_domain::conversation::EndCause::parse(e.cause.as_deref().unwrap_or("normalClearing")) },
            "closed" => EventKind::Ended { cause: cxbridge_domain::conversation::EndCause::Closed },
            "updated" => EventKind::Updated(details),
            other => {
                return Err(ApiError::unprocessable(format!(
                    "unknown event type `{other}`: use offered, connected, ended, closed or updated"
                )));
            }
        };
        let dedup_key = match &e.event_id {
            Some(id) if !id.is_empty() => format!("native:{id}"),
            _ => format!("native:{}:{}:{:016x}", e.conversation_id, e.kind, body_hash),
        };
        let source = match e.source.as_deref() {
            None | Some("") | Some("native") => "native",
            Some(s @ ("cti" | "sipgate")) => s,
            Some(other) => return Err(ApiError::unprocessable(format!("`source` must be native, cti or sipgate, not `{other}`"))),
        };
        Ok(Event { dedup_key, source: source.into(), conversation_key: e.conversation_id.clone(), leg: e.leg_id.clone(), at, source_time: e.occurred_at.is_some(), kind })
    }
}

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

pub fn frame(m: &proto::AgentMessage) -> Frame {
    Arc::from(serde_json::to_string(m).unwrap_or_else(|_| "{}".into()))
}

/// FNV-1a: a stable hash of a request body, for dedup keys of events sent without an id.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn string_fields(v: serde_json::Map<String, serde_json::Value>) -> Result<BTreeMap<String, String>, ApiError> {
    v.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                _ => return Err(ApiError::unprocessable(format!("field `{k}` must be a string, number or boolean"))),
            };
            Ok((k, s))
        })
        .collect()
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
