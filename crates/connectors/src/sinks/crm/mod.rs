//! CRM adapters behind the domain's [`cxbridge_domain::crm::Crm`] port, and what they share
//! beyond the HTTP client (`crate::client`): a record's JSON read as string fields.

pub mod dataverse;
mod provider;
pub mod salesforce;
pub mod tryton;

pub use provider::Provider;

use std::collections::BTreeMap;

/// A CRM record's JSON object flattened to the string fields the hub shows and maps:
/// strings as they are, numbers and booleans printed, nulls, objects and arrays left out
/// (OData annotations too, except lookup values like `_parentcustomerid_value`).
pub fn string_fields(v: &serde_json::Value) -> BTreeMap<String, String> {
    let Some(obj) = v.as_object() else { return BTreeMap::new() };
    obj.iter()
        .filter(|(k, _)| !k.contains('@'))
        .filter_map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect()
}
