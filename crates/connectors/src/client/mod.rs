//! The HTTP client CRM adapters share (and later platform feeds and webhook deliveries):
//! the process's TLS and `reqwest::Client`, which URLs may carry credentials, and the words
//! errors are told in. Its parts: [`oauth`] tokens, [`limits`] per connection, one [`http`] call.

pub mod http;
pub mod limits;
pub mod oauth;

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

pub fn truncate(s: &str) -> String {
    const MAX: usize = 500;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A transport error in words an admin can act on.
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        // The innermost cause is the one that says what happened ("Connection refused").
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        format!("cannot connect ({cause})")
    } else {
        e.to_string()
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
