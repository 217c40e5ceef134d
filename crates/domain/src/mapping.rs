//! The memorialization mapping: which activity fields are built from which conversation
//! fields, templates and transforms. Chosen in config, not in code.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::conversation::Conversation;
use crate::crm::{Activity, Candidate, RecordRef};
use crate::identify::Identification;

/// One target field of the activity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub target: String,
    /// A source field name (see [`SOURCE_FIELDS`]).
    #[serde(default)]
    pub source: Option<String>,
    /// A template: `{{source.field}}` or `{{source.field|transform}}` placeholders.
    #[serde(default)]
    pub template: Option<String>,
    /// Applied to the source value (see [`TRANSFORMS`]).
    #[serde(default)]
    pub transform: Option<String>,
    /// A constant value.
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Activity kind for voice conversations.
    #[serde(default = "default_voice_kind")]
    pub voice_activity: String,
    /// Activity kind for digital conversations (chat, sms, e-mail, BYOC…).
    #[serde(default = "default_digital_kind")]
    pub digital_activity: String,
    /// Also link the activity to the conversation's pinned records.
    #[serde(default = "yes")]
    pub link_pinned: bool,
    #[serde(default = "default_fields")]
    pub fields: Vec<FieldRule>,
}

fn default_voice_kind() -> String {
    "phonecall".into()
}
fn default_digital_kind() -> String {
    "chat".into()
}
fn yes() -> bool {
    true
}

impl Default for Mapping {
    fn default() -> Self {
        Self {
            voice_activity: default_voice_kind(),
            digital_activity: default_digital_kind(),
            link_pinned: true,
            fields: default_fields(),
        }
    }
}

/// Source fields a mapping can name; `attributes.NAME` names a custom attribute.
pub const SOURCE_FIELDS: &[&str] = &[
    "conversation.id",
    "conversation.external_id",
    "conversation.url",
    "source",
    "channel",
    "direction",
    "outcome",
    "end_cause",
    "customer.number",
    "customer.e164",
    "customer.name",
    "dialed.number",
    "dialed.e164",
    "agent",
    "agents",
    "queue",
    "campaign",
    "offered_at",
    "connected_at",
    "ended_at",
    "duration",
    "duration_seconds",
    "talk_time",
    "talk_seconds",
    "wait_seconds",
    "transfers",
    "transfer_count",
    "disposition.code",
    "disposition.category",
    "notes",
    "transcript",
    "summary",
    "recording_url",
    "email.subject",
    "email.body",
    "regarding.entity",
    "regarding.id",
    "regarding.title",
];

pub const TRANSFORMS: &[&str] =
    &["upper", "lower", "capitalize", "hms", "minutes", "integer", "is_outbound", "date", "time", "trim", "first_line"];

fn rule(target: &str, source: &str) -> FieldRule {
    FieldRule { target: target.into(), source: Some(source.into()), template: None, transform: None, value: None }
}

/// The default mapping: every field of DESIGN §1.2.
pub fn default_fields() -> Vec<FieldRule> {
    let mut fields = vec![FieldRule {
        target: "subject".into(),
        source: None,
        template: Some("{{direction}} {{channel}} {{customer.number}} ({{outcome}})".into()),
        transform: None,
        value: None,
    }];
    for (target, source) in [
        ("direction", "direction"),
        ("channel", "channel"),
        ("outcome", "outcome"),
        ("end_cause", "end_cause"),
        ("phone_number", "customer.e164"),
        ("caller_raw", "customer.number"),
        ("dialed_number", "dialed.number"),
        ("agent", "agent"),
        ("queue", "queue"),
        ("campaign", "campaign"),
        ("started_at", "offered_at"),
        ("connected_at", "connected_at"),
        ("ended_at", "ended_at"),
        ("duration", "duration"),
        ("duration_seconds", "duration_seconds"),
        ("talk_time", "talk_time"),
        ("transfers", "transfers"),
        ("disposition", "disposition.code"),
        ("disposition_category", "disposition.category"),
        ("conversation_id", "conversation.id"),
        ("external_id", "conversation.external_id"),
        ("conversation_url", "conversation.url"),
        ("recording_url", "recording_url"),
        ("notes", "notes"),
        ("transcript", "transcript"),
        ("summary", "summary"),
        ("email_subject", "email.subject"),
        ("email_body", "email.body"),
    ] {
        fields.push(rule(target, source));
    }
    fields.push(FieldRule { target: "attributes".into(), source: Some("attributes".into()), template: None, transform: None, value: None });
    fields
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("field `{target}`: unknown source `{name}`; known sources: {known}, attributes.NAME")]
    UnknownSource { target: String, name: String, known: String },
    #[error("field `{target}`: unknown transform `{transform}`; known transforms: {known}")]
    UnknownTransform { target: String, transform: String, known: String },
    #[error("field `{target}`: give exactly one of `source`, `template` or `value`")]
    Ambiguous { target: String },
}

fn known_source(name: &str) -> bool {
    SOURCE_FIELDS.contains(&name) || name == "attributes" || name.strip_prefix("attributes.").is_some_and(|n| !n.is_empty())
}

impl Mapping {
    /// Checks every source, template placeholder and transform, so a typo fails at start-up
    /// rather than silently writing empty fields.
    pub fn validate(&self) -> Result<(), MappingError> {
        for f in &self.fields {
            let given = [f.source.is_some(), f.template.is_some(), f.value.is_some()].iter().filter(|b| **b).count();
            if given != 1 {
                return Err(MappingError::Ambiguous { target: f.target.clone() });
            }
            let mut names: Vec<(String, Option<String>)> = vec![];
            if let Some(s) = &f.source {
                names.push((s.clone(), f.transform.clone()));
            }
            if let Some(t) = &f.template {
                names.extend(placeholders(t).into_iter().map(|(n, t)| (n.to_string(), t.map(str::to_string))));
            }
            for (name, transform) in names {
                if !known_source(&name) {
                    return Err(MappingError::UnknownSource {
                        target: f.target.clone(),
                        name,
                        known: SOURCE_FIELDS.join(", "),
                    });
                }
                if let Some(t) = transform
                    && !TRANSFORMS.contains(&t.as_str()) {
                        return Err(MappingError::UnknownTransform {
                            target: f.target.clone(),
                            transform: t,
                            known: TRANSFORMS.join(", "),
                        });
                    }
            }
        }
        Ok(())
    }

    /// Builds the activity for `c`. `regarding` is the primary record (with its fields, for
    /// `customer.name`); the activity key is derived from the conversation id only, so every
    /// rebuild lands on the same CRM record.
    pub fn build(&self, c: &Conversation, regarding: Option<&Candidate>) -> Activity {
        let ctx = Context::new(c, regarding);
        let mut fields = BTreeMap::new();
        for f in &self.fields {
            let value = if let Some(v) = &f.value {
                Value::String(v.clone())
            } else if let Some(t) = &f.template {
                Value::String(ctx.render(t))
            } else if let Some(s) = &f.source {
                let v = ctx.get(s);
                match &f.transform {
                    Some(t) => transform(&v, t),
                    None => v,
                }
            } else {
                Value::Null
            };
            fields.insert(f.target.clone(), value);
        }
        let mut regarding_refs: Vec<_> = c.regarding().cloned().into_iter().collect();
        if self.link_pinned {
            for p in &c.pinned {
                if !regarding_refs.contains(p) {
                    regarding_refs.push(p.clone());
                }
            }
        }
        Activity {
            key: activity_key(&c.id),
            kind: if c.channel.is_voice() { self.voice_activity.clone() } else { self.digital_activity.clone() },
            regarding: regarding_refs,
            fields,
            direction: c.direction,
            on_behalf_of: None,
        }
    }
}

/// What an activity is about when its conversation names no record (the caller matched
/// nobody, or several and the agent chose none), from `[crm] unmatched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    /// About nothing: where the CRM allows it (the built-in CRM, a Dataverse phone call, a
    /// Salesforce task). Several matches also leave it so: the agent may still choose.
    Unassigned,
    /// About this record (a catch-all party or account).
    Record(RecordRef),
    /// About a record of `entity` for the caller, found by their number or created; a caller
    /// without a number goes to `fallback`, else to one shared "unknown caller" record.
    Create { entity: String, fallback: Option<RecordRef> },
}

/// Where an activity that regards no record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unregarded {
    /// It stays about nothing.
    Unassigned,
    /// It regards these records.
    Regard(Vec<RecordRef>),
    /// It regards the caller's record in `entity`, found by `number` (E.164) or created;
    /// `None`: the shared record for callers without a number.
    Caller { entity: String, number: Option<String> },
}

/// Decides where the activity of `c`, which regards no record, goes under `unmatched`.
/// Several matches are all regarded (the number is theirs; nobody chose one of them).
pub fn unregarded(c: &Conversation, unmatched: &Unmatched) -> Unregarded {
    if matches!(unmatched, Unmatched::Unassigned) {
        return Unregarded::Unassigned;
    }
    if let Identification::Multiple(candidates) = &c.identification {
        return Unregarded::Regard(candidates.iter().map(|x| x.record.clone()).collect());
    }
    match unmatched {
        Unmatched::Unassigned => Unregarded::Unassigned,
        Unmatched::Record(r) => Unregarded::Regard(vec![r.clone()]),
        Unmatched::Create { entity, fallback } => match (&c.customer.e164, fallback) {
            (Some(number), _) => Unregarded::Caller { entity: entity.clone(), number: Some(number.clone()) },
            (None, Some(r)) => Unregarded::Regard(vec![r.clone()]),
            (None, None) => Unregarded::Caller { entity: entity.clone(), number: None },
        },
    }
}

/// The idempotency key of a conversation's activity.
pub fn activity_key(conversation_id: &str) -> String {
    format!("cxbridge:{conversation_id}")
}

/// Formats a duration as `h:mm:ss`.
pub fn hms(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    format!("{}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// Field values of one conversation, by source name.
pub struct Context<'a> {
    c: &'a Conversation,
    regarding: Option<&'a Candidate>,
}

fn ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}
fn opt(s: Option<&String>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.clone()))
}

impl<'a> Context<'a> {
    pub fn new(c: &'a Conversation, regarding: Option<&'a Candidate>) -> Self {
        Self { c, regarding }
    }

    pub fn get(&self, name: &str) -> Value {
        let c = self.c;
        let s = |v: &str| Value::String(v.to_string());
        match name {
            "conversation.id" => s(&c.id),
            "conversation.external_id" => s(&c.external_id),
            "conversation.url" => opt(c.details.conversation_url.as_ref()),
            "source" => s(&c.source),
            "channel" => s(c.channel.as_str()),
            "direction" => s(c.direction.as_str()),
            "outcome" => c.outcome.map_or(Value::Null, |o| s(o.as_str())),
            "end_cause" => c.end_cause.as_ref().map_or(Value::Null, |e| s(e.as_str())),
            "customer.number" => s(&c.customer.raw),
            "customer.e164" => opt(c.customer.e164.as_ref()),
            "customer.name" | "regarding.title" => self.regarding.map_or(Value::Null, |r| s(&r.title)),
            "regarding.entity" => self.regarding.map_or(Value::Null, |r| s(&r.record.entity)),
            "regarding.id" => self.regarding.map_or(Value::Null, |r| s(&r.record.id)),
            "dialed.number" => s(&c.dialed.raw),
            "dialed.e164" => opt(c.dialed.e164.as_ref()),
            "agent" => opt(c.agent.as_ref()),
            "agents" => Value::Array(c.offered_to.iter().map(|a| s(a)).collect()),
            "queue" => opt(c.queue.as_ref()),
            "campaign" => opt(c.details.campaign.as_ref()),
            "offered_at" => ts(Some(c.offered_at)),
            "connected_at" => ts(c.connected_at),
            "ended_at" => ts(c.ended_at),
            "duration" => s(&hms(c.total_time())),
            "duration_seconds" => Value::from(c.total_time().as_secs()),
            "talk_time" => s(&hms(c.talk_time())),
            "talk_seconds" => Value::from(c.talk_time().as_secs()),
            "wait_seconds" => {
                let until = c.connected_at.or(c.ended_at).unwrap_or(c.offered_at);
                Value::from(if until > c.offered_at { until.duration_since(c.offered_at).as_secs() } else { 0 })
            }
            "transfers" => Value::Array(
                c.transfers
                    .iter()
                    .map(|t| {
                        serde_json::json!({"at": t.at.to_string(), "from_agent": t.from_agent, "to": t.to})
                    })
                    .collect(),
            ),
            "transfer_count" => Value::from(c.transfers.len()),
            "disposition.code" => c.disposition.as_ref().map_or(Value::Null, |d| s(&d.code)),
            "disposition.category" => opt(c.disposition.as_ref().and_then(|d| d.category.as_ref())),
            "notes" => opt(c.details.notes.as_ref()),
            "transcript" => opt(c.details.transcript.as_ref()),
            "summary" => opt(c.details.summary.as_ref()),
            "recording_url" => opt(c.details.recording_url.as_ref()),
            "email.subject" => opt(c.details.email_subject.as_ref()),
            "email.body" => opt(c.details.email_body.as_ref()),
            "attributes" => Value::Object(c.details.attributes.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
            other => match other.strip_prefix("attributes.") {
                Some(key) => opt(c.details.attributes.get(key)),
                None => Value::Null,
            },
        }
    }

    /// Replaces `{{name}}` and `{{name|transform}}`; missing values render empty.
    /// Fills the `{{placeholders}}` of `template`. In a template of several lines, a line
    /// whose placeholders are all empty is left out, so `Notes: {{notes}}` disappears from
    /// an activity without notes instead of standing there bare.
    pub fn render(&self, template: &str) -> String {
        if !template.contains('\n') {
            return self.render_line(template).0;
        }
        let mut kept: Vec<String> = vec![];
        for line in template.split('\n') {
            let (text, any_placeholder, any_value) = self.render_line(line);
            if !any_placeholder || any_value {
                kept.push(text);
            }
        }
        kept.join("\n")
    }

    /// One line rendered, whether it had placeholders, and whether any of them had a value.
    fn render_line(&self, template: &str) -> (String, bool, bool) {
        let (mut any_placeholder, mut any_value) = (false, false);
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some((before, after)) = rest.split_once("{{") {
            out.push_str(before);
            let Some((inner, after_close)) = after.split_once("}}") else {
                out.push_str("{{");
                out.push_str(after);
                return (out, any_placeholder, any_value);
            };
            let (name, transform_name) = split_placeholder(inner);
            let mut v = self.get(name);
            if let Some(t) = transform_name {
                v = transform(&v, t);
            }
            let shown = display(&v);
            any_placeholder = true;
            any_value |= !shown.trim().is_empty();
            out.push_str(&shown);
            rest = after_close;
        }
        out.push_str(rest);
        (out, any_placeholder, any_value)
    }
}

fn split_placeholder(inner: &str) -> (&str, Option<&str>) {
    match inner.split_once('|') {
        Some((n, t)) => (n.trim(), Some(t.trim())),
        None => (inner.trim(), None),
    }
}

fn placeholders(template: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = vec![];
    let mut rest = template;
    while let Some((_, after)) = rest.split_once("{{") {
        let Some((inner, after_close)) = after.split_once("}}") else { break };
        out.push(split_placeholder(inner));
        rest = after_close;
    }
    out
}

fn display(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn transform(v: &Value, name: &str) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    let text = display(v);
    let out = match name {
        "upper" => text.to_uppercase(),
        "lower" => text.to_lowercase(),
        // Salesforce's CallType picklist: `Inbound` / `Outbound`.
        "capitalize" => {
            let mut chars = text.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
        "integer" => match v.as_i64().or_else(|| text.trim().parse().ok()) {
            Some(n) => return Value::from(n),
            None => return Value::Null,
        },
        // Dataverse's `directioncode`: true for outgoing.
        "is_outbound" => return Value::Bool(text == "outbound"),
        "trim" => text.trim().to_string(),
        "first_line" => text.lines().next().unwrap_or_default().to_string(),
        "hms" => match v.as_i64().or_else(|| text.parse().ok()) {
            Some(secs) => hms(SignedDuration::from_secs(secs)),
            None => text,
        },
        "minutes" => match v.as_i64().or_else(|| text.parse().ok()) {
            // Dataverse's actualdurationminutes: a started minute counts.
            Some(secs) => return Value::from((secs + 59) / 60),
            None => text,
        },
        "date" => text.parse::<Timestamp>().map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or(text),
        "time" => text.parse::<Timestamp>().map(|t| t.strftime("%H:%M:%S").to_string()).unwrap_or(text),
        _ => text,
    };
    Value::String(out)
}

#[cfg(test)]
mod tests;
