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
    /// The default prefill names the built-in CRM's `phone`; another CRM's entity calls its
    /// phone column differently (Dataverse `telephone1`, Salesforce `Phone`).
    pub fn adapt_default_prefill(&mut self, phone_field: &str) {
        if self.prefill == default_prefill() && phone_field != "phone" {
            self.prefill = BTreeMap::from([(phone_field.to_string(), "{{customer.e164}}".to_string())]);
        }
    }

    pub fn matches(&self, c: &Conversation) -> bool {
        let m = &self.matches;
        let eq = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have || w == "*");
        eq(&m.channel, Some(c.channel.as_str()))
            && eq(&m.queue, c.queue.as_deref())
            && eq(&m.campaign, c.details.campaign.as_deref())
            && m.direction.as_deref().is_none_or(|d| d == "*" || crate::conversation::Direction::parse(d) == Some(c.direction))
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
    /// A search page in `entity` for `query` (the caller's number).
    Search { entity: String, query: String },
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
            OnMultiple::Search => PopAction::Search {
                entity: candidates.first().map_or_else(|| rule.create_entity.clone(), |c| c.record.entity.clone()),
                query: search_query(),
            },
        },
        Identification::None => match rule.none {
            OnNone::Create => PopAction::Create {
                entity: rule.create_entity.clone(),
                prefill: rule.prefill.iter().map(|(k, t)| (k.clone(), render(t))).filter(|(_, v)| !v.is_empty()).collect(),
            },
            OnNone::Search => PopAction::Search { entity: rule.create_entity.clone(), query: search_query() },
            OnNone::Nothing => PopAction::Nothing,
        },
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Address, Channel, Details, Direction, State};
    use crate::crm::RecordRef;
    use crate::mapping::Context;

    fn candidate(id: &str, title: &str) -> Candidate {
        Candidate { record: RecordRef::new("contact", id), title: title.into(), display: vec![], fields: BTreeMap::new() }
    }

    /// An inbound voice call in queue `sales`, campaign `spring`, from +49 30 1234567.
    fn call(identification: Identification) -> Conversation {
        let at = jiff::Timestamp::from_second(1_709_287_200).expect("valid timestamp");
        Conversation {
            id: "conv-1".into(),
            source: "cti".into(),
            external_id: "call-1".into(),
            legs: vec![],
            channel: Channel::Voice,
            direction: Direction::Inbound,
            customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
            dialed: Address { raw: "+49 30 9999000".into(), e164: Some("+49309999000".into()) },
            queue: Some("sales".into()),
            offered_to: vec!["alice".into()],
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
            details: Details { campaign: Some("spring".into()), ..Details::default() },
            identification,
            selected: None,
            pinned: vec![],
            wrapped_up: false,
            revision: 1,
        }
    }

    fn when(channel: Option<&str>, queue: Option<&str>, campaign: Option<&str>, direction: Option<&str>) -> RuleMatch {
        let s = |v: Option<&str>| v.map(str::to_string);
        RuleMatch { channel: s(channel), queue: s(queue), campaign: s(campaign), direction: s(direction) }
    }

    /// A rule recognisable by its `create_entity`.
    fn named(name: &str, matches: RuleMatch) -> PopRule {
        PopRule { matches, create_entity: name.into(), ..PopRule::default() }
    }

    fn decide_for(rules: &[PopRule], c: &Conversation) -> PopAction {
        decide(rules, c, |t| Context::new(c, None).render(t))
    }

    // -----------------------------------------------------------------------------------
    // Which rule applies.

    #[test]
    fn first_matching_rule_wins_and_the_default_catches_the_rest() {
        let rules = [
            named("chat-rule", when(Some("webchat"), None, None, None)),
            named("support-rule", when(None, Some("support"), None, None)),
            named("outbound-spring", when(None, None, Some("spring"), Some("outbound"))),
            named("sales-voice", when(Some("voice"), Some("sales"), None, Some("inbound"))),
            named("any-queue", when(None, Some("*"), None, None)),
        ];
        let check = |tweak: &dyn Fn(&mut Conversation), expected: &str| {
            let mut c = call(Identification::None);
            tweak(&mut c);
            assert_eq!(rule_for(&rules, &c).create_entity, expected, "{:?} {:?} {:?} {:?}", c.channel, c.queue, c.details.campaign, c.direction);
        };
        check(&|_| {}, "sales-voice");
        check(&|c| c.channel = Channel::Digital("webchat".into()), "chat-rule");
        check(&|c| c.queue = Some("support".into()), "support-rule");
        check(&|c| c.direction = Direction::Outbound, "outbound-spring");
        check(
            &|c| {
                c.direction = Direction::Outbound;
                c.details.campaign = Some("autumn".into());
            },
            "any-queue",
        );
        check(&|c| c.queue = Some("billing".into()), "any-queue");
        // Earlier rules win even when a later one matches too.
        check(
            &|c| {
                c.channel = Channel::Digital("webchat".into());
                c.queue = Some("support".into());
            },
            "chat-rule",
        );
        // Nothing matches: the default rule (create a contact).
        let narrow = [named("never", when(Some("sms"), None, None, None))];
        assert_eq!(rule_for(&narrow, &call(Identification::None)).into_owned(), PopRule::default());
        assert_eq!(rule_for(&[], &call(Identification::None)).into_owned(), PopRule::default());
    }

    #[test]
    fn a_rule_on_a_queue_does_not_match_a_conversation_without_one() {
        let rules = [named("sales", when(None, Some("sales"), None, None)), named("rest", RuleMatch::default())];
        let mut c = call(Identification::None);
        c.queue = None;
        assert_eq!(rule_for(&rules, &c).create_entity, "rest");
        c.details.campaign = None;
        let by_campaign = [named("spring", when(None, None, Some("spring"), None)), named("rest", RuleMatch::default())];
        assert_eq!(rule_for(&by_campaign, &c).create_entity, "rest");
    }

    #[test]
    fn pop_rules_read_from_config() {
        let rule: PopRule = serde_json::from_value(serde_json::json!({
            "match": {"queue": "vip", "direction": "inbound"},
            "single": "open_related",
            "related": "account",
            "multiple": "open_first",
            "none": "search",
        }))
        .expect("valid rule");
        assert_eq!(rule.matches, when(None, Some("vip"), None, Some("inbound")));
        assert_eq!((rule.single, rule.multiple, rule.none), (OnSingle::OpenRelated, OnMultiple::OpenFirst, OnNone::Search));
        assert_eq!((rule.create_entity.as_str(), rule.prefill.clone()), ("contact", default_prefill()));
        assert!(!rule.disabled);
        assert!(serde_json::from_value::<PopRule>(serde_json::json!({"single": "open_releated"})).is_err());
        assert!(serde_json::from_value::<PopRule>(serde_json::json!({"match": {"queu": "vip"}})).is_err());
    }

    // -----------------------------------------------------------------------------------
    // What the panel does.

    #[test]
    fn actions_per_identification_outcome() {
        let jana = candidate("c1", "Jana");
        let petr = candidate("c2", "Petr");
        let single = Identification::Single(jana.clone());
        let multiple = Identification::Multiple(vec![petr.clone(), jana.clone()]);
        let check = |rule: PopRule, identification: &Identification, expected: PopAction| {
            let c = call(identification.clone());
            assert_eq!(decide_for(std::slice::from_ref(&rule), &c), expected, "{rule:?} for {}", identification.outcome());
        };
        let with = |f: &dyn Fn(&mut PopRule)| {
            let mut r = PopRule::default();
            f(&mut r);
            r
        };
        let search_in = |entity: &str| PopAction::Search { entity: entity.into(), query: "+49301234567".into() };

        // single
        check(PopRule::default(), &single, PopAction::Open(jana.clone()));
        check(with(&|r| r.single = OnSingle::Nothing), &single, PopAction::Nothing);
        check(
            with(&|r| {
                r.single = OnSingle::OpenRelated;
                r.related = Some("account".into());
            }),
            &single,
            PopAction::OpenRelated { from: jana.clone(), relation: "account".into() },
        );
        // Without a relation named there is nothing to follow: open the match itself.
        check(with(&|r| r.single = OnSingle::OpenRelated), &single, PopAction::Open(jana.clone()));

        // multiple
        check(PopRule::default(), &multiple, PopAction::List(vec![petr.clone(), jana.clone()]));
        check(with(&|r| r.multiple = OnMultiple::OpenFirst), &multiple, PopAction::Open(petr.clone()));
        check(with(&|r| r.multiple = OnMultiple::Search), &multiple, search_in(&petr.record.entity));

        // none
        check(
            PopRule::default(),
            &Identification::None,
            PopAction::Create { entity: "contact".into(), prefill: BTreeMap::from([("phone".into(), "+49301234567".into())]) },
        );
        check(with(&|r| r.none = OnNone::Search), &Identification::None, search_in("contact"));
        check(with(&|r| { r.none = OnNone::Search; r.create_entity = "lead".into() }), &Identification::None, search_in("lead"));
        check(with(&|r| r.none = OnNone::Nothing), &Identification::None, PopAction::Nothing);

        // not identified (yet)
        check(PopRule::default(), &Identification::Pending, PopAction::Unidentified { reason: "pending".into() });
        check(PopRule::default(), &Identification::Skipped { reason: "anonymous".into() }, PopAction::Unidentified { reason: "anonymous".into() });

        // disabled wins over everything
        for identification in [single.clone(), multiple.clone(), Identification::None, Identification::Pending] {
            check(with(&|r| r.disabled = true), &identification, PopAction::Disabled);
        }
    }

    #[test]
    fn create_form_is_prefilled_from_templates_and_leaves_out_empty_values() {
        let rule = PopRule {
            create_entity: "lead".into(),
            prefill: BTreeMap::from([
                ("phone".to_string(), "{{customer.e164}}".to_string()),
                ("description".to_string(), "{{direction}} call to {{dialed.number}} ({{queue|upper}})".to_string()),
                ("source_campaign".to_string(), "{{campaign}}".to_string()),
            ]),
            ..PopRule::default()
        };
        let c = call(Identification::None);
        let expected = BTreeMap::from([
            ("phone".to_string(), "+49301234567".to_string()),
            ("description".to_string(), "inbound call to +49 30 9999000 (SALES)".to_string()),
            ("source_campaign".to_string(), "spring".to_string()),
        ]);
        assert_eq!(decide_for(std::slice::from_ref(&rule), &c), PopAction::Create { entity: "lead".into(), prefill: expected });

        let mut unknown_number = call(Identification::None);
        unknown_number.customer = Address { raw: "0800 SHOP".into(), e164: None };
        unknown_number.details.campaign = None;
        let PopAction::Create { prefill, .. } = decide_for(&[rule], &unknown_number) else {
            panic!("expected a create form");
        };
        assert_eq!(prefill.keys().collect::<Vec<_>>(), ["description"], "empty values are not prefilled");
    }

    #[test]
    fn search_uses_the_raw_number_when_it_has_no_e164_form() {
        let mut c = call(Identification::None);
        c.customer = Address { raw: "0800 SHOP".into(), e164: None };
        let rule = PopRule { none: OnNone::Search, ..PopRule::default() };
        assert_eq!(decide_for(&[rule], &c), PopAction::Search { entity: "contact".into(), query: "0800 SHOP".into() });
    }

    #[test]
    fn actions_come_from_the_matching_rule() {
        let rules = [
            PopRule { matches: when(None, Some("vip"), None, None), disabled: true, ..PopRule::default() },
            PopRule { matches: when(Some("webchat"), None, None, None), none: OnNone::Nothing, ..PopRule::default() },
        ];
        let mut vip = call(Identification::None);
        vip.queue = Some("vip".into());
        assert_eq!(decide_for(&rules, &vip), PopAction::Disabled);
        let mut chat = call(Identification::None);
        chat.channel = Channel::Digital("webchat".into());
        assert_eq!(decide_for(&rules, &chat), PopAction::Nothing);
        assert_eq!(decide_for(&rules, &call(Identification::None)).name(), "create", "the default rule");
    }
}
