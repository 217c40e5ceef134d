//! SOSL and SOQL building blocks: objects and fields of an entity, the phone search, names
//! and keys checked before they reach a query or URL, escaping, and how a record is read.

use std::collections::BTreeMap;

use cxbridge_domain::crm::{Candidate, CrmError, EntitySpec};
use jiff::Timestamp;
use serde_json::Value;

use super::super::string_fields;

/// The Salesforce object of `spec`: its `collection`, else its name with a capital letter.
pub(super) fn object_name(spec: &EntitySpec) -> String {
    if let Some(c) = spec.collection.as_ref().filter(|c| !c.is_empty()) {
        return c.clone();
    }
    let mut chars = spec.name.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

pub(super) fn id_field(spec: &EntitySpec) -> &str {
    spec.id_field.as_deref().filter(|f| !f.is_empty()).unwrap_or("Id")
}

/// Every field `spec` needs, each once (SOQL refuses a field selected twice).
pub(super) fn select_fields(spec: &EntitySpec) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let all = std::iter::once(id_field(spec))
        .chain(std::iter::once(spec.title_field.as_str()))
        .chain(spec.phone_fields.iter().map(String::as_str))
        .chain(spec.email_fields.iter().map(String::as_str))
        .chain(spec.display_fields.iter().map(|d| d.field.as_str()))
        .chain(spec.relations.iter().map(|r| r.field.as_str()));
    for f in all {
        if !f.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
            out.push(f.to_string());
        }
    }
    out
}

pub(super) fn select_list(spec: &EntitySpec) -> Result<String, CrmError> {
    let fields = select_fields(spec);
    for f in &fields {
        check_field_name(f)?;
    }
    Ok(fields.join(", "))
}

/// `FIND {…} IN PHONE FIELDS RETURNING Contact(…), … LIMIT n`.
pub(super) fn sosl_phone_search(terms: &[String], specs: &[&EntitySpec], limit: usize) -> Result<String, CrmError> {
    let term = terms.iter().map(|t| sosl_escape(t)).collect::<Vec<_>>().join(" OR ");
    let mut returning = vec![];
    for spec in specs {
        returning.push(format!("{}({})", object_name(spec), select_list(spec)?));
    }
    Ok(format!("FIND {{{term}}} IN PHONE FIELDS RETURNING {} LIMIT {limit}", returning.join(", ")))
}

/// Loose hits are dropped after the search, so ask for more than will be shown.
pub(super) fn sosl_limit(limit: usize) -> usize {
    limit.saturating_mul(2).clamp(1, 2000)
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A field name or relationship path (`Account.Name`), so nothing else reaches a query.
pub(super) fn check_field_name(name: &str) -> Result<(), CrmError> {
    if name.split('.').all(is_identifier) {
        Ok(())
    } else {
        Err(CrmError::Permanent { message: format!("`{name}` is not a Salesforce field name") })
    }
}

/// A string literal's content in SOQL: `\` and `'` escaped.
pub(super) fn soql_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// LIKE wildcards taken literally (`\%`, `\_`); apply after [`soql_escape`], which would
/// double the backslash.
pub(super) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '_' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// SOSL's reserved characters escaped with a backslash.
fn sosl_escape(s: &str) -> String {
    const RESERVED: &[char] = &['?', '&', '|', '!', '{', '}', '[', ']', '(', ')', '^', '~', '*', ':', '\\', '"', '\'', '+', '-'];
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A URL path segment with everything but unreserved characters percent-encoded (`.` too:
/// Salesforce would read `key.json` as a format suffix).
pub(super) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2024-05-01T10:00:00Z`: SOQL's datetime literal (no quotes, whole seconds).
pub(super) fn soql_datetime(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn iso_millis(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub(super) fn records(answer: &Value) -> &[Value] {
    answer.get("records").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A record's fields as strings; a lookup's fields (`"Account":{"Name":"Acme"}`) both as
/// `Account.Name` (the path a config names) and `AccountName` (for templates and prefill).
pub(super) fn record_fields(v: &Value) -> BTreeMap<String, String> {
    let mut fields = string_fields(v);
    if let Some(obj) = v.as_object() {
        for (rel, inner) in obj.iter().filter(|(k, inner)| *k != "attributes" && inner.is_object()) {
            for (k, value) in string_fields(inner) {
                fields.insert(format!("{rel}.{k}"), value.clone());
                fields.entry(format!("{rel}{k}")).or_insert(value);
            }
        }
    }
    fields
}

/// A field's value, looked up as Salesforce does: case-insensitively.
pub(super) fn field_value<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)).map(String::as_str)
}

pub(super) fn candidate(spec: &EntitySpec, record: &Value) -> Option<Candidate> {
    candidate_of(spec, record_fields(record))
}

/// The candidate, with the spec's field names matched to Salesforce's spelling (`name`
/// in a config finds `Name`).
pub(super) fn candidate_of(spec: &EntitySpec, fields: BTreeMap<String, String>) -> Option<Candidate> {
    let id = field_value(&fields, id_field(spec))?.to_string();
    let canonical = |name: &str| -> String {
        if fields.contains_key(name) {
            return name.to_string();
        }
        fields.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.to_string())
    };
    let mut shown = spec.clone();
    shown.title_field = canonical(&spec.title_field);
    for d in &mut shown.display_fields {
        d.field = canonical(&d.field);
    }
    Some(Candidate::from_fields(&shown, &id, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        let check = |f: fn(&str) -> String, input: &str, want: &str| assert_eq!(f(input), want, "{input}");
        check(sosl_escape, "+49 (30) 123-4", "\\+49 \\(30\\) 123\\-4");
        check(sosl_escape, "a?b*c:d\"e'f\\g", "a\\?b\\*c\\:d\\\"e\\'f\\\\g");
        check(sosl_escape, "{x}[y]^~!&|", "\\{x\\}\\[y\\]\\^\\~\\!\\&\\|");
        check(soql_escape, "O'Brien \\ co", "O\\'Brien \\\\ co");
        check(like_escape, "100%_", "100\\%\\_");
        check(encode_segment, "cxbridge:conv-1.a/b c", "cxbridge%3Aconv-1%2Ea%2Fb%20c");
    }
}
