//! The use cases, one module per capability, between the HTTP edge (`http`) and the drivers
//! (`run`) on one side and the store, the CRM port and the agent hub on the other. Nothing
//! here knows HTTP: a use case returns its own [`Error`], the edge maps it to problem+json.
//!
//! [`App`] is what a use case may touch: the store, the CRM, the directory of agents, the
//! agents' streams (this node's hub and the bus to the others) and the settings it reads.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use cxbridge_domain::conversation::{Conversation, Policy};
use cxbridge_domain::crm::{Candidate, Crm, EntitySpec, RecordRef};
use cxbridge_domain::directory::{Directory, source};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_domain::pop::PopRule;
use cxbridge_proto as proto;
use cxbridge_store::{CrmStore, Store};
use tokio::sync::Notify;

use crate::config::Config;

pub mod calls;
pub mod conversations;
mod error;
pub mod grants;
pub mod health;
pub mod hub;
pub mod identify;
pub mod ivr;
pub mod native;
pub mod notify;
pub mod outbox;
pub mod panel;
pub mod records;
pub mod views;
pub mod workflows;

pub use error::{Error, Result};
pub use grants::Grants;
pub use hub::{AgentHub, Frame};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub crm_store: Arc<dyn CrmStore>,
    pub crm: Arc<dyn Crm>,
    /// Agents, their ids elsewhere, queues and wrap-up codes.
    pub directory: Arc<dyn Directory>,
    /// The local phone index of an external CRM, when there is one.
    pub indexed: Option<Arc<crate::crm::IndexedCrm>>,
    /// The memorialization mapping in effect (the provider's default fields unless configured).
    pub mapping: cxbridge_domain::mapping::Mapping,
    pub entities: Vec<EntitySpec>,
    pub normalizer: PhoneNormalizer,
    /// This node's agent streams.
    pub hub: AgentHub,
    /// The other nodes, when there are several (`[bus] url`).
    pub bus: Option<Arc<cxbridge_connectors::bus::NatsBus>>,
    /// This node's name among several.
    pub node_id: String,
    /// Which records an agent may link to a conversation beyond its own matches.
    pub grants: Grants,
    pub policy: Policy,
    /// Wakes the outbox worker when an activity is enqueued.
    pub outbox_wake: Arc<Notify>,
    pub started: Instant,
    pub block_list: HashSet<String>,
}

/// Who asks a use case to act: an integration or operator with an admin token, or an agent
/// signed in to the panel. The HTTP edge decides which (`http::caller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer admin token: integrations and operators.
    Admin,
    /// An agent signed in to the panel.
    Agent { id: String, supervisor: bool },
}

impl Caller {
    /// Whether the caller may see and act on `c`: admins always; supervisors when it was
    /// offered to them or they took it; other agents while it rings for them, and once
    /// answered only who answered and the agents it was transferred to since.
    pub fn may_see(&self, c: &Conversation) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Agent { id, supervisor: true } => c.agent.as_deref() == Some(id) || c.offered_to.iter().any(|a| a == id),
            Caller::Agent { id, supervisor: false } => c.may_act(id),
        }
    }

    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Agent { id, .. } => Some(id),
        }
    }
}

impl App {
    pub fn pop_rules(&self) -> &[PopRule] {
        &self.config.pop_rules
    }

    pub fn uses_builtin_crm(&self) -> bool {
        self.config.crm.provider == cxbridge_connectors::sinks::crm::Provider::Builtin
    }

    /// The entity `name` of the CRM, if it is one we know.
    pub fn entity(&self, name: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// Whether `r` may be linked to an activity of `c`. The built-in CRM is asked; an
    /// external CRM's own records are checked when the activity is written (a missing one
    /// goes dead with the CRM's message), so only the entity must be known here.
    pub async fn linkable(&self, c: &Conversation, r: &RecordRef) -> Result<bool> {
        if c.identification.candidates().iter().any(|x| &x.record == r) {
            return Ok(true);
        }
        if self.uses_builtin_crm() {
            return Ok(self.crm_store.record(&r.entity, &r.id).await?.is_some());
        }
        Ok(self.entities.iter().any(|e| e.name == r.entity))
    }

    /// Refuses the first of the agent's chosen and pinned records that cannot be linked.
    pub async fn check_linkable(&self, c: &Conversation, selected: Option<&proto::RecordRefView>, pinned: Option<&Vec<proto::RecordRefView>>) -> Result<()> {
        for r in selected.into_iter().chain(pinned.into_iter().flatten()) {
            if !self.linkable(c, &RecordRef::new(&r.entity, &r.id)).await? {
                return Err(Error::invalid(format!("record {}/{} does not exist in the CRM; create it first", r.entity, r.id)));
            }
        }
        Ok(())
    }

    /// `c` as agents may see it: its matches without their sensitive fields.
    pub fn redact(&self, c: &Candidate) -> Candidate {
        match self.entity(&c.record.entity) {
            Some(spec) => spec.redact(c),
            // A record of an entity we do not know: show nothing but what names it.
            None => Candidate { fields: BTreeMap::new(), display: vec![], ..c.clone() },
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
    pub fn conversation_records(c: &Conversation) -> Vec<RecordRef> {
        let mut refs: Vec<RecordRef> = c.identification.candidates().iter().map(|x| x.record.clone()).collect();
        refs.extend(c.selected.iter().cloned());
        refs.extend(c.pinned.iter().cloned());
        refs
    }

    /// An agent links to `c` only its own records and those it found or created for it
    /// (their `grants`); admins link any record. Forbidden for the first that is neither.
    pub fn check_agent_links(&self, caller: &Caller, c: &Conversation, refs: &[&proto::RecordRefView], grants: &[String]) -> Result<()> {
        if caller.agent_id().is_none() {
            return Ok(());
        }
        let own = Self::conversation_records(c);
        for r in refs {
            let known = own.iter().any(|o| o.entity == r.entity && o.id == r.id);
            if !known && !grants.iter().any(|g| self.grants.ok(g, &c.id, &r.entity, &r.id)) {
                return Err(Error::forbidden(format!(
                    "record {}/{} is not one of this conversation's records: search for it or create it from the conversation first",
                    r.entity, r.id
                )));
            }
        }
        Ok(())
    }

    /// Whether the agent (as configured: supervisor or not) may see `c`.
    pub fn agent_may_see(&self, agent: &str, c: &Conversation) -> bool {
        let supervisor = self.directory.agent(agent).is_some_and(|a| a.supervisor);
        Caller::Agent { id: agent.to_string(), supervisor }.may_see(c)
    }

    /// What the hub knows of one of `c`'s records: the match it came from, else the built-in
    /// CRM's record. An external CRM's record the caller did not match is known by reference only.
    pub async fn record_candidate(&self, c: &Conversation, r: &RecordRef) -> Option<Candidate> {
        if let Some(found) = c.identification.candidates().iter().find(|x| &x.record == r) {
            return Some(found.clone());
        }
        if !self.uses_builtin_crm() {
            return None;
        }
        let spec = self.entity(&r.entity)?;
        let rec = self.crm_store.record(&r.entity, &r.id).await.ok()??;
        Some(Candidate::from_fields(spec, &rec.id, rec.fields))
    }

    /// Maps the PBX's user names / ids / answering number to agent ids.
    pub(crate) fn resolve_agents(&self, users: &[String], user_ids: &[String], queue: Option<&str>) -> Vec<String> {
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
            let by_id = user_ids.get(i).and_then(|id| self.directory.agent_by_external_id(source::SIPGATE_USER_ID, id));
            let by_name = users.get(i).map(|u| self.directory.agent_by_pbx_user(u).map_or_else(|| u.clone(), |a| a.id.clone()));
            match (by_id, by_name) {
                (Some(a), _) => push(a.id.clone()),
                (None, Some(name)) => push(name),
                (None, None) => {}
            }
        }
        if let Some(q) = queue {
            for a in self.directory.queue_members(q) {
                push(a.id.clone());
            }
        }
        out
    }

    pub(crate) fn answering_agent(&self, number: Option<&str>, users: &[String], user_ids: &[String]) -> Option<String> {
        if let Some(n) = number
            && let Some(a) = self.directory.agent_by_number(n)
        {
            return Some(a.id.clone());
        }
        self.resolve_agents(users, user_ids, None).into_iter().next()
    }
}

/// FNV-1a: a stable hash of a request body, for dedup keys of events sent without an id.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
