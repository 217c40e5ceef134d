//! Telling agents: the pop, update and end frames a transition's effects call for, to this
//! node's streams and over the bus to the other nodes', and what an agent sees on connect.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use cxbridge_domain::conversation::{Conversation, Effect};
use cxbridge_domain::mapping::Context;
use cxbridge_domain::pop::{self, PopAction};
use cxbridge_proto as proto;

use super::hub::{Frame, Subscription};
use super::{App, Result, views};

impl App {
    /// The pop for `c`, with an `open_related` target resolved.
    pub async fn pop_view(&self, c: &Conversation) -> proto::PopView {
        let c = &self.for_agents(c);
        let ctx = Context::new(c, None);
        let action = pop::decide(self.pop_rules(), c, |t| ctx.render(t));
        let related = match &action {
            PopAction::OpenRelated { from, relation } => match self.entity(&from.record.entity) {
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
            r.grant = Some(self.grants.grant(&c.id, &r.entity, &r.id));
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
    pub fn stream_closed(&self, stream: Subscription) {
        drop(stream);
        self.announce_presence();
    }

    /// Pushes the transition's effects to the agents' streams and wakes the outbox.
    pub async fn notify(&self, c: &Conversation, effects: &[Effect], received: Option<Instant>) {
        self.notify_after(c, effects, received, false).await;
    }

    /// [`App::notify`]; after an `answer`, the agents it rang who may no longer see the
    /// conversation hear once who took it (their panel drops it), and nothing after that.
    pub(super) async fn notify_after(&self, c: &Conversation, effects: &[Effect], received: Option<Instant>, answer: bool) {
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
                        && let Some(r) = received
                    {
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
    pub async fn snapshot(&self, agent: &str) -> Result<Vec<proto::AgentConversation>> {
        let mut out = vec![];
        for c in self.store.conversations_for_agent(agent).await? {
            if c.agent.as_deref().is_none_or(|a| a == agent) && self.agent_may_see(agent, &c) {
                out.push(self.agent_conversation(&c).await);
            }
        }
        Ok(out)
    }
}

/// One agent message serialized once, shared by every stream it goes to.
pub fn frame(m: &proto::AgentMessage) -> Frame {
    Arc::from(serde_json::to_string(m).unwrap_or_else(|_| "{}".into()))
}
