//! IVR routing: where a waiting caller should go, decided from what the CRM knows about
//! them. Rules from the config, first match wins.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::calls::wildcard_match;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Refuse the call (`reason`, default `busy`).
    Reject,
    /// Ring the CRM record's owner; the rule only matches when the owner is an agent who is
    /// available.
    Owner,
    /// Ring `target` (an extension, number or SIP URI).
    Dial,
    /// Send the caller to queue `target`.
    Queue,
}

/// When a rule matches. Every condition given must hold; none given matches every call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleWhen {
    /// The caller is on the block list.
    pub blocked: Option<bool>,
    /// The caller withheld the number.
    pub anonymous: Option<bool>,
    /// Exactly one CRM record matched.
    pub identified: Option<bool>,
    /// A flag (see `[[ivr.flags]]`) has this value (case-insensitive); `"*"`: any non-empty value.
    pub flag: Option<String>,
    pub equals: Option<String>,
    /// The dialed number (E.164 digits, `*` wildcards).
    pub dialed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrRule {
    pub name: String,
    #[serde(default)]
    pub when: RuleWhen,
    pub action: RuleAction,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl IvrRule {
    /// Problems a config check reports.
    pub fn validate(&self) -> Result<(), String> {
        let needs_target = matches!(self.action, RuleAction::Dial | RuleAction::Queue);
        if needs_target && self.target.as_deref().is_none_or(|t| t.trim().is_empty()) {
            return Err(format!("rule `{}`: action {:?} needs a `target`", self.name, self.action).to_lowercase());
        }
        if self.when.flag.is_some() != self.when.equals.is_some() {
            return Err(format!("rule `{}`: `flag` and `equals` go together", self.name));
        }
        Ok(())
    }
}

/// The CRM record's owner, as far as the hub knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner as the CRM names them (user id or name).
    pub crm_user: String,
    /// The agent it maps to, if any.
    pub agent: Option<String>,
    pub extension: Option<String>,
    /// Signed in to the panel and not in a call.
    pub available: bool,
}

/// What is known about the caller when the IVR asks.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub blocked: bool,
    pub anonymous: bool,
    pub identified: bool,
    pub flags: BTreeMap<String, String>,
    pub owner: Option<Owner>,
    /// E.164 of the dialed number, if known.
    pub dialed: Option<String>,
}

/// The decision, before it is put in a PBX's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Reject { reason: String, rule: String },
    /// Ring an agent (the owner) at their extension, or a number/URI.
    Dial { target: String, agent: Option<String>, rule: String },
    Queue { queue: String, rule: String },
    /// No rule matched: the IVR goes on with its own default.
    Continue,
}

impl Route {
    pub fn action(&self) -> &'static str {
        match self {
            Route::Reject { .. } => "reject",
            Route::Dial { .. } => "dial",
            Route::Queue { .. } => "queue",
            Route::Continue => "continue",
        }
    }

    pub fn rule(&self) -> Option<&str> {
        match self {
            Route::Reject { rule, .. } | Route::Dial { rule, .. } | Route::Queue { rule, .. } => Some(rule),
            Route::Continue => None,
        }
    }
}

/// The rules used when none are configured: reject blocked callers, ring an available owner.
pub fn default_rules() -> Vec<IvrRule> {
    vec![
        IvrRule { name: "blocked".into(), when: RuleWhen { blocked: Some(true), ..RuleWhen::default() }, action: RuleAction::Reject, target: None, reason: None },
        IvrRule { name: "owner".into(), when: RuleWhen::default(), action: RuleAction::Owner, target: None, reason: None },
    ]
}

fn holds(when: &RuleWhen, f: &Facts) -> bool {
    let flag_ok = match (&when.flag, &when.equals) {
        (Some(name), Some(want)) => {
            let have = f.flags.get(name).map(|v| v.trim()).unwrap_or("");
            if want == "*" { !have.is_empty() } else { have.eq_ignore_ascii_case(want.trim()) }
        }
        _ => true,
    };
    let dialed_ok = when.dialed.as_deref().is_none_or(|p| f.dialed.as_deref().is_some_and(|d| wildcard_match(p.trim_start_matches('+'), d.trim_start_matches('+'))));
    when.blocked.is_none_or(|b| b == f.blocked)
        && when.anonymous.is_none_or(|a| a == f.anonymous)
        && when.identified.is_none_or(|i| i == f.identified)
        && flag_ok
        && dialed_ok
}

/// The first rule that matches `facts`.
pub fn decide(rules: &[IvrRule], facts: &Facts) -> Route {
    for r in rules {
        if !holds(&r.when, facts) {
            continue;
        }
        let rule = r.name.clone();
        match r.action {
            RuleAction::Reject => return Route::Reject { reason: r.reason.clone().unwrap_or_else(|| "busy".into()), rule },
            RuleAction::Dial => return Route::Dial { target: r.target.clone().unwrap_or_default(), agent: None, rule },
            RuleAction::Queue => return Route::Queue { queue: r.target.clone().unwrap_or_default(), rule },
            RuleAction::Owner => {
                if let Some(o) = &facts.owner
                    && o.available
                    && let Some(ext) = &o.extension
                {
                    return Route::Dial { target: ext.clone(), agent: o.agent.clone(), rule };
                }
            }
        }
    }
    Route::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<IvrRule> {
        let text = r#"
            [[r]]
            name = "blocked"
            when = { blocked = true }
            action = "reject"
            [[r]]
            name = "vip"
            when = { flag = "vip", equals = "true" }
            action = "queue"
            target = "vip"
            [[r]]
            name = "owner"
            action = "owner"
            [[r]]
            name = "hotline-de"
            when = { dialed = "4930*" }
            action = "dial"
            target = "sip:support-de@pbx"
            [[r]]
            name = "anonymous"
            when = { anonymous = true }
            action = "reject"
            reason = "rejected"
        "#;
        #[derive(Deserialize)]
        struct File {
            r: Vec<IvrRule>,
        }
        toml::from_str::<File>(text).expect("rules parse").r
    }

    fn facts(spec: &str) -> Facts {
        let mut f = Facts::default();
        for word in spec.split_whitespace() {
            match word {
                "blocked" => f.blocked = true,
                "anonymous" => f.anonymous = true,
                "known" => f.identified = true,
                "vip" => {
                    f.flags.insert("vip".into(), "TRUE".into());
                }
                "owner-free" | "owner-busy" | "owner-noext" => {
                    f.owner = Some(Owner {
                        crm_user: "u1".into(),
                        agent: Some("alice".into()),
                        extension: (word != "owner-noext").then(|| "201".into()),
                        available: word != "owner-busy",
                    })
                }
                d if d.starts_with('+') => f.dialed = Some(d.into()),
                other => panic!("unknown fact {other}"),
            }
        }
        f
    }

    fn describe(r: &Route) -> String {
        match r {
            Route::Reject { reason, rule } => format!("{rule}: reject {reason}"),
            Route::Dial { target, agent, rule } => format!("{rule}: dial {target}{}", agent.as_ref().map(|a| format!(" ({a})")).unwrap_or_default()),
            Route::Queue { queue, rule } => format!("{rule}: queue {queue}"),
            Route::Continue => "continue".into(),
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = rules();
        let cases = [
            ("blocked vip owner-free", "blocked: reject busy"),
            ("known vip owner-free", "vip: queue vip"),
            ("known owner-free", "owner: dial 201 (alice)"),
            ("known owner-busy +49301234", "hotline-de: dial sip:support-de@pbx"),
            ("known owner-noext", "continue"),
            ("+4940123", "continue"),
            ("anonymous", "anonymous: reject rejected"),
        ];
        for (spec, want) in cases {
            assert_eq!(describe(&decide(&rules, &facts(spec))), want, "{spec}");
        }
    }

    #[test]
    fn default_rules_reject_blocked_and_ring_the_available_owner() {
        let d = default_rules();
        assert_eq!(describe(&decide(&d, &facts("blocked owner-free"))), "blocked: reject busy");
        assert_eq!(describe(&decide(&d, &facts("known owner-free"))), "owner: dial 201 (alice)");
        assert_eq!(describe(&decide(&d, &facts("known owner-busy"))), "continue");
    }

    #[test]
    fn flags_match_any_value_with_a_star_and_rules_are_validated() {
        let any = IvrRule {
            name: "lang".into(),
            when: RuleWhen { flag: Some("vip".into()), equals: Some("*".into()), ..RuleWhen::default() },
            action: RuleAction::Queue,
            target: Some("q".into()),
            reason: None,
        };
        assert_eq!(describe(&decide(std::slice::from_ref(&any), &facts("vip"))), "lang: queue q");
        assert_eq!(describe(&decide(std::slice::from_ref(&any), &facts("known"))), "continue");
        let no_target = IvrRule { target: None, ..any.clone() };
        assert!(no_target.validate().is_err_and(|e| e.contains("needs a `target`")));
        let half = IvrRule { when: RuleWhen { flag: Some("vip".into()), ..RuleWhen::default() }, ..any };
        assert!(half.validate().is_err_and(|e| e.contains("go together")));
    }
}
