//! CRM adapters behind the domain's [`cxbridge_domain::crm::Crm`] port, and what they share:
//! the OAuth token cache, per-connection limits, the HTTP call discipline, and the phone
//! notations a CRM that stores free text is searched with.

pub mod dataverse;
pub mod http;
pub mod limits;
pub mod oauth;
pub mod salesforce;
pub mod tryton;

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

/// Makes TLS available to every HTTP client of the process (rustls with the `ring`
/// provider, which builds with nothing but a C compiler). Call before building a
/// `reqwest::Client`; [`http_client`] does. Safe to call many times.
pub fn ensure_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only if another provider was installed first, which serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client CRM adapters share: TLS ready, connection pooling, a connect timeout.
pub fn http_client() -> reqwest::Client {
    ensure_tls();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .user_agent(concat!("cxbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
