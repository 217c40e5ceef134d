//! Parties and records as the hub sees them: the model of an entity, what is read of a
//! record, a party's contact mechanisms flattened into fields, and what a search may filter on.

use std::collections::BTreeMap;

use cxbridge_domain::crm::{CrmError, EntitySpec};
use serde_json::Value;

use super::super::string_fields;
use super::rpc::permanent;

/// The Tryton model of parties, which identification and the change feed treat specially
/// (numbers in contact mechanisms rather than in fields).
pub(super) const PARTY_MODEL: &str = "party.party";
/// Contact-mechanism types that hold phone numbers a caller can come from.
pub(super) const PHONE_TYPES: [&str; 2] = ["phone", "mobile"];
/// Contact-mechanism types flattened into a party's fields.
pub(super) const FLATTENED_TYPES: [&str; 3] = ["phone", "mobile", "email"];

pub(super) fn collection(spec: &EntitySpec) -> &str {
    spec.collection.as_deref().unwrap_or(&spec.name)
}

pub(super) fn is_party(spec: &EntitySpec) -> bool {
    collection(spec) == PARTY_MODEL
}

/// What to read of a record of `spec`: what its candidate shows and its numbers.
pub(super) fn read_fields(spec: &EntitySpec) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut add = |f: &str| {
        if !fields.iter().any(|x| x == f) {
            fields.push(f.to_string());
        }
    };
    add(&spec.title_field);
    if is_party(spec) {
        add("code");
        add("contact_mechanisms.type");
        add("contact_mechanisms.value");
    }
    for f in spec.phone_fields.iter().chain(&spec.email_fields).chain(spec.display_fields.iter().map(|d| &d.field)) {
        if !(is_party(spec) && is_flattened(f)) {
            add(f);
        }
    }
    fields
}

/// `phone`, `mobile_2`, … : fields the adapter makes from contact mechanisms.
fn is_flattened(field: &str) -> bool {
    let base = field.split_once('_').filter(|(_, n)| n.parse::<u32>().is_ok()).map_or(field, |(b, _)| b);
    FLATTENED_TYPES.contains(&base)
}

/// A record as the hub sees it: its id and string fields, with a party's contact
/// mechanisms flattened (`phone`, `mobile`, `email`, then `phone_2`, …).
pub(super) fn record_fields(spec: &EntitySpec, record: &Value) -> Option<(String, BTreeMap<String, String>)> {
    let id = record.get("id")?.as_i64()?.to_string();
    let mut fields = string_fields(record);
    fields.remove("id");
    if is_party(spec) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for m in record.get("contact_mechanisms.").and_then(Value::as_array).into_iter().flatten() {
            let (Some(kind), Some(value)) = (m.get("type").and_then(Value::as_str), m.get("value").and_then(Value::as_str)) else { continue };
            let Some(kind) = FLATTENED_TYPES.iter().find(|t| **t == kind) else { continue };
            let n = seen.entry(kind).or_insert(0);
            *n += 1;
            let name = if *n == 1 { kind.to_string() } else { format!("{kind}_{n}") };
            fields.insert(name, value.to_string());
        }
    }
    Some((id, fields))
}

/// The numeric id of a record of `spec`.
pub(super) fn record_id(spec: &EntitySpec, id: &str) -> Result<i64, CrmError> {
    id.trim().parse().map_err(|_| permanent(format!("{} `{id}` is not a Tryton id (a number)", spec.name)))
}

pub(super) fn record_number(id: &str) -> Result<i64, CrmError> {
    id.trim().parse().map_err(|_| permanent(format!("`{id}` is not a Tryton record id (a number)")))
}

/// A field a search may filter on: one plain field name of the model. Tryton reads a dotted
/// name (`party.pin`, `create_uid.password_hash`) as a path through relations, so a caller
/// could test values of records it was never shown; such names are refused.
pub(super) fn filter_field(field: &str) -> Result<&str, CrmError> {
    let mut chars = field.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_well && field.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(field)
    } else {
        Err(CrmError::Permanent { message: format!("`{field}` is not a field a search may filter on: use a field name of the model (letters, digits, `_`, no dots)") })
    }
}

/// `value` matched literally by Tryton's `like`/`ilike` (escape character `\`).
pub(super) fn escape_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn filters_name_one_plain_field_never_a_path() {
        for (field, ok) in [
            ("name", true),
            ("code", true),
            ("_parent", true),
            ("vat_code2", true),
            ("party.pin", false),
            ("create_uid.password_hash", false),
            ("contact_mechanisms.value", false),
            ("Name", true),
            ("", false),
            ("1st", false),
            ("a b", false),
            ("name'", false),
            ("näme", false),
        ] {
            assert_eq!(filter_field(field).is_ok(), ok, "{field:?}");
        }
    }

    #[test]
    fn flattened_field_names_are_recognized() {
        assert!(is_flattened("phone") && is_flattened("mobile_2") && is_flattened("email"));
        assert!(!is_flattened("name") && !is_flattened("phone_x"));
    }
}
