//! Activities as Tryton notes (`ir.note`): the note's text with the marker line that carries
//! the activity key, and a note read back as a timeline entry.

use std::collections::BTreeMap;

use cxbridge_domain::crm::{Activity, TimelineEntry};
use serde_json::Value;

use super::rpc::from_tryton_datetime;

/// Note lines `[cxbridge <kind> <key>]` carry the activity key.
pub(super) const MARKER_PREFIX: &str = "[cxbridge ";

/// The note of an activity: the subject, the message (lines of an empty `Label:` left
/// out), or every other field as `name: value` when the mapping has no `message`; then the
/// key's marker line.
pub(super) fn note_text(activity: &Activity) -> String {
    let mut lines: Vec<String> = Vec::new();
    let subject = activity.fields.get("subject").map(display).unwrap_or_default();
    if !subject.trim().is_empty() {
        lines.push(subject.trim().to_string());
    }
    match activity.fields.get("message") {
        Some(message) => lines.extend(display(message).lines().filter(|l| !is_empty_label(l)).map(str::to_string)),
        None => lines.extend(
            activity
                .fields
                .iter()
                .filter(|(k, v)| k.as_str() != "subject" && !v.is_null())
                .map(|(k, v)| format!("{k}: {}", display(v)))
                .filter(|l| !is_empty_label(l)),
        ),
    }
    lines.push(format!("{MARKER_PREFIX}{} {}]", marker_kind(&activity.kind), marker_key(&activity.key)));
    lines.join("\n")
}

fn is_empty_label(line: &str) -> bool {
    let t = line.trim();
    t.ends_with(':') && t.matches(':').count() == 1
}

fn display(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The kind as the marker line holds it: one word, since the key follows the first space.
fn marker_kind(kind: &str) -> String {
    let word = kind.split_whitespace().collect::<Vec<_>>().join("_");
    if word.is_empty() { "activity".into() } else { word }
}

/// The key as the marker line holds it (one line).
pub(super) fn marker_key(key: &str) -> String {
    one_line(key)
}

/// The (kind, key) of a note's marker line, if it has one.
pub(super) fn marker_of(message: &str) -> Option<(String, String)> {
    message.lines().rev().find_map(|line| {
        let inner = line.trim_end().strip_prefix(MARKER_PREFIX)?.strip_suffix(']')?;
        let (kind, key) = inner.split_once(' ')?;
        Some((kind.to_string(), key.to_string()))
    })
}

pub(super) fn timeline_entry(note: &Value) -> Option<TimelineEntry> {
    let id = note.get("id")?.as_i64()?.to_string();
    let message = note.get("message").and_then(Value::as_str).unwrap_or_default();
    let marker = marker_of(message);
    let body: Vec<&str> = message.lines().filter(|l| !(marker.is_some() && l.starts_with(MARKER_PREFIX))).collect();
    let mut fields = BTreeMap::new();
    fields.insert("message".to_string(), body.join("\n"));
    if let Some(author) = note.get("create_uid.").and_then(|u| u.get("rec_name")).and_then(Value::as_str) {
        fields.insert("author".to_string(), author.to_string());
    }
    if let Some((_, key)) = &marker {
        fields.insert("key".to_string(), key.clone());
    }
    Some(TimelineEntry {
        id,
        kind: marker.map_or_else(|| "note".to_string(), |(kind, _)| kind),
        subject: body.first().map(|s| s.to_string()).unwrap_or_default(),
        at: note.get("create_date").and_then(from_tryton_datetime).map(|t| t.to_string()).unwrap_or_default(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxbridge_domain::conversation::Direction;
    use cxbridge_domain::crm::RecordRef;
    use serde_json::json;

    fn activity(fields: &[(&str, Value)]) -> Activity {
        Activity {
            key: "cxbridge:c-1".into(),
            kind: "phonecall".into(),
            regarding: vec![RecordRef::new("party", "1")],
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            direction: Direction::Inbound,
            on_behalf_of: None,
        }
    }


    #[test]
    fn a_note_is_subject_message_and_marker_without_empty_labels() {
        let a = activity(&[
            ("subject", json!("Inbound voice +14155550100 (answered)")),
            ("message", json!("Direction: inbound\nQueue: \nAgent: alice\nNotes: call back: tomorrow")),
        ]);
        assert_eq!(
            note_text(&a),
            "Inbound voice +14155550100 (answered)\nDirection: inbound\nAgent: alice\nNotes: call back: tomorrow\n[cxbridge phonecall cxbridge:c-1]"
        );
        assert_eq!(marker_of(&note_text(&a)), Some(("phonecall".into(), "cxbridge:c-1".into())));
    }

    #[test]
    fn odd_kinds_and_keys_still_make_a_marker_that_reads_back() {
        let a = Activity { kind: "call log".into(), key: "api:x y\nz".into(), ..activity(&[("subject", json!("S"))]) };
        assert_eq!(marker_of(&note_text(&a)), Some(("call_log".into(), "api:x y z".into())));
        assert_eq!(marker_key(&a.key), "api:x y z");
    }

    #[test]
    fn without_a_message_every_field_is_listed() {
        let a = activity(&[("subject", json!("Call")), ("duration_seconds", json!(42)), ("queue", Value::Null), ("agent", json!("bob"))]);
        assert_eq!(note_text(&a), "Call\nagent: bob\nduration_seconds: 42\n[cxbridge phonecall cxbridge:c-1]");
    }
}
