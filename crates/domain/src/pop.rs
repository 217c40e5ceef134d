//! Pop rules: what the agent's panel does when a conversation is offered, chosen per
//! channel, queue, campaign and direction. First matching rule wins.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::conversation::Conversation;
use crate::crm::Candidate;
use crate::identify::Identification;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    pub channel: Option<String>,
    pub queue: Option<String>,
    pub campaign: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnSingle {
    #[default]
    Open,
    /// Open the record a relation of the match points to (see `related`).
    OpenRelated,
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnMultiple {
    #[default]
    List,
    OpenFirst,
    Search,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnNone {
    #[default]
    Create,
    Search,
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopRule {
    #[serde(default, rename = "match")]
    pub matches: RuleMatch,
    /// No pop at all for conversations this rule matches.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub single: OnSingle,
    /// Relation name for `single = "open_related"` (e.g. `account`).
    #[serde(default)]
    pub related: Option<String>,
    #[serde(default)]
    pub multiple: OnMultiple,
    #[serde(default)]
    pub none: OnNone,
    /// Entity a new record is created in when nobody matched.
    #[serde(default = "default_create_entity")]
    pub create_entity: String,
    /// Prefill of the new-record form: field → template (`{{customer.e164}}`).
    #[serde(default = "default_prefill")]
    pub prefill: BTreeMap<String, String>,
}

fn default_create_entity() -> String {
    "contact".into()
}

fn default_prefill() -> BTreeMap<String, String> {
    BTreeMap::from([("phone".to_string(), "{{customer.e164}}".to_string())])
}

impl Default for PopRule {
    /// The rule with no config: open a single match, list several, create a contact.
    fn default() -> Self {
        Self {
            matches: RuleMatch::default(),
            disabled: false,
            single: OnSingle::Open,
            related: None,
            multiple: OnMultiple::List,
            none: OnNone::Create,
            create_entity: default_create_entity(),
            prefill: default_prefill(),
        }
    }
}

impl PopRule {
    pub fn matches(&self, c: &Conversation) -> bool {
        let m = &self.matches;
        let eq = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have || w == "*");
        eq(&m.channel, Some(c.channel.as_str()))
            && eq(&m.queue, c.queue.as_deref())
            && eq(&m.campaign, c.details.campaign.as_deref())
            && eq(&m.direction, Some(c.direction.as_str()))
    }
}

/// What the panel should do.
#[derive(Debug, Clone, PartialEq)]
pub enum PopAction {
    /// Popping is disabled for this conversation.
    Disabled,
    /// Show nothing (but the conversation still appears in the agent's list).
    Nothing,
    Open(Candidate),
    /// Open the record related to `from` through `relation`; the service resolves it.
    OpenRelated { from: Candidate, relation: String },
    List(Vec<Candidate>),
    /// Open the CRM's search page for `query`.
    Search { query: String },
    /// A new-record form for `entity`, prefilled.
    Create { entity: String, prefill: BTreeMap<String, String> },
    /// Identification has not finished or was skipped (anonymous caller, own number…).
    Unidentified { reason: String },
}

impl PopAction {
    pub fn name(&self) -> &'static str {
        match self {
            PopAction::Disabled => "disabled",
            PopAction::Nothing => "nothing",
            PopAction::Open(_) => "open",
            PopAction::OpenRelated { .. } => "open_related",
            PopAction::List(_) => "list",
            PopAction::Search { .. } => "search",
            PopAction::Create { .. } => "create",
            PopAction::Unidentified { .. } => "unidentified",
        }
    }
}

/// The rule that applies to `c`: the first that matches, else the default rule.
pub fn rule_for<'a>(rules: &'a [PopRule], c: &Conversation) -> std::borrow::Cow<'a, PopRule> {
    match rules.iter().find(|r| r.matches(c)) {
        Some(r) => std::borrow::Cow::Borrowed(r),
        None => std::borrow::Cow::Owned(PopRule::default()),
    }
}

/// Decides the pop for `c` under `rules`. `render` fills prefill templates.
pub fn decide(rules: &[PopRule], c: &Conversation, render: impl Fn(&str) -> String) -> PopAction {
    let rule = rule_for(rules, c);
    if rule.disabled {
        return PopAction::Disabled;
    }
    let search_query = || c.customer.e164.clone().unwrap_or_else(|| c.customer.raw.clone());
    match &c.identification {
        Identification::Pending => PopAction::Unidentified { reason: "pending".into() },
        Identification::Skipped { reason } => PopAction::Unidentified { reason: reason.clone() },
        Identification::Single(candidate) => match (rule.single, &rule.related) {
            (OnSingle::Open, _) | (OnSingle::OpenRelated, None) => PopAction::Open(candidate.clone()),
            (OnSingle::OpenRelated, Some(rel)) => PopAction::OpenRelated { from: candidate.clone(), relation: rel.clone() },
            (OnSingle::Nothing, _) => PopAction::Nothing,
        },
        Identification::Multiple(candidates) => match rule.multiple {
            OnMultiple::List => PopAction::List(candidates.clone()),
            OnMultiple::OpenFirst => candidates.first().cloned().map_or(PopAction::Nothing, PopAction::Open),
            OnMultiple::Search => PopAction::Search { query: search_query() },
        },
        Identification::None => match rule.none {
            OnNone::Create => PopAction::Create {
                entity: rule.create_entity.clone(),
                prefill: rule.prefill.iter().map(|(k, t)| (k.clone(), render(t))).filter(|(_, v)| !v.is_empty()).collect(),
            },
            OnNone::Search => PopAction::Search { query: search_query() },
            OnNone::Nothing => PopAction::Nothing,
        },
    }
}
