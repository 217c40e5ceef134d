//! OData building blocks: entity sets and keys, the `$select` list and how a record is read,
//! names and GUIDs checked before they reach a URL, literals, `$filter` and query encoding.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cxbridge_domain::crm::{CrmError, EntitySpec};
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::super::string_fields;

/// The entity set (URL name) of a table whose entity set is not configured: the logical
/// name pluralized the way Dataverse does for its own tables (`phonecall` → `phonecalls`,
/// `opportunity` → `opportunities`, `fax` → `faxes`). Custom tables whose entity set differs
/// must be given as `collection`.
pub fn entity_set(logical_name: &str) -> String {
    let n = logical_name;
    let consonant_y = n.ends_with('y') && n.len() > 1 && !n[..n.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{}ies", &n[..n.len() - 1])
    } else if n.ends_with('s') || n.ends_with('x') || n.ends_with('z') || n.ends_with("ch") || n.ends_with("sh") {
        format!("{n}es")
    } else {
        format!("{n}s")
    }
}

/// The entity set of `spec`'s table.
pub fn collection_of(spec: &EntitySpec) -> String {
    spec.collection.clone().unwrap_or_else(|| entity_set(&spec.name))
}

/// The primary key column of `spec`'s table (`{name}id` unless configured).
pub fn id_field_of(spec: &EntitySpec) -> String {
    spec.id_field.clone().unwrap_or_else(|| format!("{}id", spec.name))
}

const FORMATTED_VALUE: &str = "@OData.Community.Display.V1.FormattedValue";
pub(super) const LOOKUP_LOGICAL_NAME: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";
/// Asks for the names of lookup records (shown as `{lookup}_name`) and the table a lookup points to.
pub(super) const PREFER_ANNOTATIONS: &str = "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname\"";

/// A record's fields as the hub shows them: [`string_fields`], plus `{lookup}_name` for each
/// lookup `_{lookup}_value` whose formatted value (the related record's name) came along.
pub fn record_fields(record: &Value) -> BTreeMap<String, String> {
    let mut fields = string_fields(record);
    if let Some(obj) = record.as_object() {
        for (k, v) in obj {
            let Some(base) = k.strip_suffix(FORMATTED_VALUE) else { continue };
            let Some(lookup) = base.strip_prefix('_').and_then(|b| b.strip_suffix("_value")) else { continue };
            if let Some(name) = v.as_str() {
                fields.insert(format!("{lookup}_name"), name.to_string());
            }
        }
    }
    fields
}

/// The columns to `$select` for `spec`: id, title, phones, e-mails, display fields and
/// relation lookups, in that order without repeats. A display field `{lookup}_name` is
/// read through the lookup `_{lookup}_value` of one of the entity's relations.
pub(super) fn select_list(spec: &EntitySpec) -> Result<String, CrmError> {
    let mut out: Vec<String> = vec![];
    let mut add = |f: String| {
        if !out.contains(&f) {
            out.push(f);
        }
    };
    add(id_field_of(spec));
    add(spec.title_field.clone());
    spec.phone_fields.iter().chain(&spec.email_fields).for_each(|f| add(f.clone()));
    for d in &spec.display_fields {
        let via_lookup = d.field.strip_suffix("_name").map(|l| format!("_{l}_value")).filter(|v| spec.relations.iter().any(|r| r.field == *v));
        add(via_lookup.unwrap_or_else(|| d.field.clone()));
    }
    spec.relations.iter().for_each(|r| add(r.field.clone()));
    for f in &out {
        column(f)?;
    }
    Ok(out.join(","))
}

pub(super) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

pub(super) fn checked_collection(spec: &EntitySpec) -> Result<String, CrmError> {
    let c = collection_of(spec);
    column(&c)?;
    Ok(c)
}

/// Standard OData headers of every request.
pub(super) fn odata(rb: RequestBuilder) -> RequestBuilder {
    rb.header("Accept", "application/json").header("OData-MaxVersion", "4.0").header("OData-Version", "4.0")
}

pub(super) fn is_column_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` if it can go into a URL or a `$filter` as a column, table or property name.
pub(super) fn column(name: &str) -> Result<&str, CrmError> {
    if is_column_name(name) { Ok(name) } else { Err(CrmError::Permanent { message: format!("`{name}` is not a Dataverse column or table name") }) }
}

/// The alternate-key value stored for our activity key. Dataverse cannot address a record
/// by an alternate key whose value holds `/ < > * % & : \ ? +` (GET and PATCH by key fail),
/// so those become `-`: `cxbridge:0190…` is stored as `cxbridge-0190…`. The mapping is
/// fixed, so a retry still lands on the same record.
pub fn key_value(key: &str) -> String {
    key.chars().map(|c| if "/<>*%&:\\?+".contains(c) { '-' } else { c }).collect()
}

pub fn is_guid(s: &str) -> bool {
    s.len() == 36 && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

pub(super) fn guid(s: &str) -> Result<&str, CrmError> {
    if is_guid(s) { Ok(s) } else { Err(CrmError::Permanent { message: format!("`{s}` is not a Dataverse record id (a GUID)") }) }
}

/// An OData string literal: single quotes, a quote inside doubled.
/// Dataverse runs `contains`, `startswith` and `endswith` as SQL `LIKE`, where `%`, `_` and
/// `[` are wildcards; a wildcard in brackets stands for itself. Without this a search for
/// `50%` or `a_b` matched other records. (`]` outside a bracket set is already literal.)
pub fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '_' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes a query value, keeping what OData queries conventionally show bare
/// (`$`, `,`, `(`, `)`, `:`, `@`, `/`, `*`). Space, `+`, `'`, `&`, `=`, `#` and `%` are
/// always encoded: a bare `+` would reach Dataverse as a space.
fn encode_query(s: &str) -> String {
    encode(s, b"-._~$,():@/*")
}

/// Percent-encodes everything but unreserved characters (a key value inside a path).
pub(super) fn encode_strict(s: &str) -> String {
    encode(s, b"-._~")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) fn query_string(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", encode_query(v))).collect::<Vec<_>>().join("&")
}

/// The path of a URL without scheme, host or query.
pub(super) fn path_of(url: &str) -> &str {
    let no_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = if url.contains("://") { no_scheme.find('/').map_or("", |i| &no_scheme[i..]) } else { no_scheme };
    path.split('?').next().unwrap_or(path)
}

/// The GUID at the end of an `OData-EntityId` (`…/phonecalls(0000…)`).
pub(super) fn entity_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("OData-EntityId")?.to_str().ok()?;
    let inner = v.trim_end().strip_suffix(')')?;
    let id = &inner[inner.rfind('(')? + 1..];
    is_guid(id).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_sets_are_pluralized_like_dataverse_does() {
        for (logical, set) in [("phonecall", "phonecalls"), ("task", "tasks"), ("opportunity", "opportunities"), ("activityparty", "activityparties"), ("fax", "faxes"), ("cxb_chat", "cxb_chats"), ("survey", "surveys"), ("address", "addresses")] {
            assert_eq!(entity_set(logical), set);
        }
    }

    #[test]
    fn query_values_are_encoded_so_plus_and_quotes_survive() {
        assert_eq!(encode_query("telephone1 eq '+1 415'"), "telephone1%20eq%20%27%2B1%20415%27");
        assert_eq!(encode_query("contains(fullname,'a&b=c')"), "contains(fullname,%27a%26b%3Dc%27)");
        assert_eq!(encode_strict("cxbridge:c-1'x"), "cxbridge%3Ac-1%27x");
        assert_eq!(literal("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn like_wildcards_in_searched_text_stand_for_themselves() {
        for (text, want) in [
            ("Ada", "Ada"),
            ("50%", "50[%]"),
            ("a_b", "a[_]b"),
            ("[x]", "[[]x]"),
            ("%_[]", "[%][_][[]]"),
            ("O'Brien", "O'Brien"),
            ("Müller_ä", "Müller[_]ä"),
            ("", ""),
        ] {
            assert_eq!(like_literal(text), want, "{text:?}");
        }
        // Brackets are added before quoting, so a quote still cannot end the literal.
        assert_eq!(literal(&like_literal("'%")), "'''[%]'");
    }

    #[test]
    fn guids_and_names_are_checked_before_they_reach_a_url() {
        assert!(is_guid("6f9619ff-8b86-d011-b42d-00c04fc964ff"));
        assert!(!is_guid("6f9619ff-8b86-d011-b42d-00c04fc964f)"));
        assert!(!is_guid("1"));
        assert!(column("telephone1").is_ok());
        assert!(column("telephone1 eq 'x') or (1").is_err());
        assert_eq!(path_of("https://x.crm.dynamics.com/api/data/v9.2"), "/api/data/v9.2");
        assert_eq!(path_of("phonecalls(k='v')?$select=activityid"), "phonecalls(k='v')");
    }
}
