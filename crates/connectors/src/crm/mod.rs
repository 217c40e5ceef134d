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

/// The HTTP client CRM adapters share: TLS ready, connection pooling, a connect timeout,
/// and no redirects: a 307 from a token endpoint would re-send the client secret (and a CRM
/// call its bearer token) to wherever it points.
pub fn http_client() -> reqwest::Client {
    ensure_tls();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .user_agent(concat!("cxbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Why `url` may not carry CRM credentials, if it may not: it must be `https://`, or plain
/// `http://` to this machine (127.0.0.0/8, `::1`, `localhost`) for tests and local proxies.
pub fn insecure_url(url: &str) -> Option<String> {
    let parsed = match reqwest::Url::parse(url.trim()) {
        Ok(u) => u,
        Err(e) => return Some(format!("not a URL ({e})")),
    };
    match parsed.scheme() {
        "https" => None,
        "http" if is_loopback(&parsed) => None,
        "http" => Some("plain http sends the credentials unencrypted: use https:// (http is allowed only to 127.0.0.1, ::1 or localhost)".into()),
        other => Some(format!("scheme `{other}`: use https://")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_travel_over_https_or_stay_on_this_machine() {
        for (url, ok) in [
            ("https://contoso.crm4.dynamics.com", true),
            ("https://login.microsoftonline.com/t/oauth2/v2.0/token", true),
            ("http://127.0.0.1:8000/token", true),
            ("http://127.9.9.9/x", true),
            ("http://[::1]:8000/", true),
            ("http://localhost:8000", true),
            ("http://LOCALHOST/", true),
            ("http://contoso.crm4.dynamics.com", false),
            ("http://10.0.0.5:8000", false),
            ("http://localhost.evil.example", false),
            ("http://128.0.0.1/", false),
            ("ftp://127.0.0.1/", false),
            ("contoso.crm.dynamics.com", false),
            ("", false),
        ] {
            assert_eq!(insecure_url(url).is_none(), ok, "{url:?}: {:?}", insecure_url(url));
        }
    }
}
