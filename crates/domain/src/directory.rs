//! The directory port: who the agents are, the ids other systems know them by, their queues
//! and skills, and the wrap-up codes. The hub asks it whenever it maps a PBX's user to an
//! agent, rings a queue, finds a record's owner or checks a disposition, so a change to the
//! directory takes effect without a restart. [`StaticDirectory`] is the directory given as
//! data (today: the `[[agents]]` and `[[wrapup_codes]]` of the configuration file).

use std::collections::HashMap;
use std::sync::Arc;

/// Where an external id comes from. Kept as text: a new source (a platform feed, SCIM) adds
/// its own without a change here.
pub mod source {
    /// A PBX's user name for the agent: Zammad-style CTI `user`, sipgate.io `user[]`.
    pub const PBX_USER: &str = "pbx_user";
    /// A sipgate.io `userId` (e.g. `w0`).
    pub const SIPGATE_USER_ID: &str = "sipgate_user_id";
}

/// One id another system knows an agent by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalId {
    pub source: String,
    pub id: String,
}

impl ExternalId {
    pub fn new(source: &str, id: &str) -> Self {
        Self { source: source.to_string(), id: id.to_string() }
    }
}

/// A skill with a proficiency (1–100, as Genesys and CXone count); a language skill is a
/// language the agent speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    pub proficiency: u8,
    pub language: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    pub id: String,
    pub name: Option<String>,
    pub supervisor: bool,
    pub external_ids: Vec<ExternalId>,
    /// Extensions / numbers a PBX sends as the answering number.
    pub numbers: Vec<String>,
    /// Queues whose conversations are offered to this agent.
    pub queues: Vec<String>,
    pub skills: Vec<Skill>,
    /// The agent's user id in the CRM: activities are written on their behalf.
    pub crm_user_id: Option<String>,
}

impl Agent {
    pub fn has_external_id(&self, source: &str, id: &str) -> bool {
        self.external_ids.iter().any(|x| x.source == source && x.id == id)
    }
}

/// A disposition agents choose at wrap-up; `queues` empty means every queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WrapUpCode {
    pub code: String,
    pub label: Option<String>,
    pub category: Option<String>,
    pub queues: Vec<String>,
}

/// What the hub asks of the directory. Answers are shared (`Arc`): a directory may change
/// under a running hub, an answer already given stays whole.
pub trait Directory: Send + Sync {
    fn agent(&self, id: &str) -> Option<Arc<Agent>>;
    /// The agent another system knows by `(source, id)`.
    fn agent_by_external_id(&self, source: &str, id: &str) -> Option<Arc<Agent>>;
    /// The agent a PBX names by `user`: a configured PBX user name, the agent's name or id.
    fn agent_by_pbx_user(&self, user: &str) -> Option<Arc<Agent>>;
    /// The agent whose extension or number `number` is.
    fn agent_by_number(&self, number: &str) -> Option<Arc<Agent>>;
    /// The agent a CRM names as a record's owner: their CRM user id, id, or name (any case).
    fn agent_by_crm_user(&self, crm_user: &str) -> Option<Arc<Agent>>;
    /// The agents `queue`'s conversations are offered to, in directory order.
    fn queue_members(&self, queue: &str) -> Vec<Arc<Agent>>;
    fn wrapup_codes(&self) -> Vec<WrapUpCode>;
}

/// A directory given as data, indexed for the lookups the event path makes.
#[derive(Debug, Default)]
pub struct StaticDirectory {
    agents: Vec<Arc<Agent>>,
    by_id: HashMap<String, usize>,
    wrapup_codes: Vec<WrapUpCode>,
}

impl StaticDirectory {
    pub fn new(agents: Vec<Agent>, wrapup_codes: Vec<WrapUpCode>) -> Self {
        let agents: Vec<Arc<Agent>> = agents.into_iter().map(Arc::new).collect();
        let mut by_id = HashMap::new();
        for (i, a) in agents.iter().enumerate() {
            by_id.entry(a.id.clone()).or_insert(i);
        }
        Self { agents, by_id, wrapup_codes }
    }

    fn first(&self, pick: impl Fn(&Agent) -> bool) -> Option<Arc<Agent>> {
        self.agents.iter().find(|a| pick(a)).cloned()
    }
}

impl Directory for StaticDirectory {
    fn agent(&self, id: &str) -> Option<Arc<Agent>> {
        self.by_id.get(id).map(|&i| self.agents[i].clone())
    }

    fn agent_by_external_id(&self, source: &str, id: &str) -> Option<Arc<Agent>> {
        self.first(|a| a.has_external_id(source, id))
    }

    fn agent_by_pbx_user(&self, user: &str) -> Option<Arc<Agent>> {
        self.first(|a| a.has_external_id(source::PBX_USER, user) || a.name.as_deref() == Some(user) || a.id == user)
    }

    fn agent_by_number(&self, number: &str) -> Option<Arc<Agent>> {
        self.first(|a| a.numbers.iter().any(|n| n == number))
    }

    fn agent_by_crm_user(&self, crm_user: &str) -> Option<Arc<Agent>> {
        self.first(|a| a.id == crm_user || a.crm_user_id.as_deref() == Some(crm_user) || a.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(crm_user)))
    }

    fn queue_members(&self, queue: &str) -> Vec<Arc<Agent>> {
        self.agents.iter().filter(|a| a.queues.iter().any(|q| q == queue)).cloned().collect()
    }

    fn wrapup_codes(&self) -> Vec<WrapUpCode> {
        self.wrapup_codes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, name: Option<&str>, ids: &[(&str, &str)], numbers: &[&str], queues: &[&str], crm: Option<&str>) -> Agent {
        Agent {
            id: id.into(),
            name: name.map(str::to_string),
            external_ids: ids.iter().map(|(s, i)| ExternalId::new(s, i)).collect(),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            crm_user_id: crm.map(str::to_string),
            ..Agent::default()
        }
    }

    fn directory() -> StaticDirectory {
        StaticDirectory::new(
            vec![
                agent("alice", Some("Alice"), &[(source::PBX_USER, "ext-10"), (source::SIPGATE_USER_ID, "w0")], &["10"], &["sales", "support"], Some("u-1")),
                agent("bob", None, &[(source::PBX_USER, "Bob")], &["11"], &["support"], None),
            ],
            vec![],
        )
    }

    #[test]
    fn lookups_find_the_agent_each_system_names() {
        let d = directory();
        let id = |a: Option<Arc<Agent>>| a.map(|a| a.id.clone());
        for (what, got, want) in [
            ("id", id(d.agent("bob")), Some("bob")),
            ("unknown id", id(d.agent("carol")), None),
            ("pbx user name", id(d.agent_by_pbx_user("ext-10")), Some("alice")),
            ("agent name as pbx user", id(d.agent_by_pbx_user("Alice")), Some("alice")),
            ("agent id as pbx user", id(d.agent_by_pbx_user("bob")), Some("bob")),
            ("pbx user of another source", id(d.agent_by_pbx_user("w0")), None),
            ("sipgate user id", id(d.agent_by_external_id(source::SIPGATE_USER_ID, "w0")), Some("alice")),
            ("sipgate id is not a pbx user", id(d.agent_by_external_id(source::PBX_USER, "w0")), None),
            ("number", id(d.agent_by_number("11")), Some("bob")),
            ("crm user id", id(d.agent_by_crm_user("u-1")), Some("alice")),
            ("crm user as name, any case", id(d.agent_by_crm_user("ALICE")), Some("alice")),
        ] {
            assert_eq!(got.as_deref(), want, "{what}");
        }
        let members: Vec<String> = d.queue_members("support").iter().map(|a| a.id.clone()).collect();
        assert_eq!(members, ["alice", "bob"]);
        assert!(d.queue_members("billing").is_empty());
    }
}
