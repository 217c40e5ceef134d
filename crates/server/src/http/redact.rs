//! What of a request may reach the logs: its URI without the tokens some clients must put in
//! it (`/api/v1/cti/{token}`, `/api/v1/sipgate/{token}`, `/api/v1/ivr/{token}/…`,
//! `?access_token=…` on agent streams). The trace layer logs every request's URI at debug.

use axum::http::Uri;

/// Path segments after which the next segment is a token.
const TOKEN_AFTER: &[&str] = &["/api/v1/cti/", "/api/v1/sipgate/"];
/// `/api/v1/ivr/{x}`: `x` is a route of its own unless it is one of these; else a token.
const IVR: &str = "/api/v1/ivr/";
const IVR_ROUTES: &[&str] = &["lookup", "verify", "verifications", "events"];

/// `uri` as it may be logged: token path segments and token-like query values replaced by `***`.
pub fn redact_uri(uri: &Uri) -> String {
    let path = redact_path(uri.path());
    match uri.query() {
        Some(q) => format!("{path}?{}", redact_query(q)),
        None => path,
    }
}

fn redact_path(path: &str) -> String {
    for prefix in TOKEN_AFTER {
        if let Some(rest) = path.strip_prefix(prefix) {
            return format!("{prefix}***{}", after_segment(rest));
        }
    }
    if let Some(rest) = path.strip_prefix(IVR) {
        let segment = rest.split('/').next().unwrap_or_default();
        if !segment.is_empty() && !IVR_ROUTES.contains(&segment) {
            return format!("{IVR}***{}", after_segment(rest));
        }
    }
    path.to_string()
}

/// What follows the first segment of `rest` (from its `/` on), or nothing.
fn after_segment(rest: &str) -> &str {
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or_default()
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password", "key", "pin", "code"].iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_the_logged_uri() {
        for (uri, logged) in [
            ("/api/v1/cti/s3cr3t-token-0123", "/api/v1/cti/***"),
            ("/api/v1/cti/s3cr3t?x=1", "/api/v1/cti/***?x=1"),
            ("/api/v1/sipgate/s3cr3t/answer", "/api/v1/sipgate/***/answer"),
            ("/api/v1/ivr/s3cr3t/lookup?ani=%2B4930", "/api/v1/ivr/***/lookup?ani=%2B4930"),
            ("/api/v1/ivr/s3cr3t/verify", "/api/v1/ivr/***/verify"),
            ("/api/v1/ivr/lookup?ani=1", "/api/v1/ivr/lookup?ani=1"),
            ("/api/v1/ivr/verifications", "/api/v1/ivr/verifications"),
            ("/api/v1/agents/alice/stream?access_token=s3cr3t", "/api/v1/agents/alice/stream?access_token=***"),
            ("/api/v1/agents/alice/stream?a=1&ACCESS_TOKEN=s3cr3t&b=2", "/api/v1/agents/alice/stream?a=1&ACCESS_TOKEN=***&b=2"),
            ("/x?client_secret=s&password=p&api_key=k&pin=1234", "/x?client_secret=***&password=***&api_key=***&pin=***"),
            ("/api/v1/conversations?external_id=call-1", "/api/v1/conversations?external_id=call-1"),
            ("/healthz", "/healthz"),
            ("/api/v1/cti/", "/api/v1/cti/***"),
        ] {
            let parsed: Uri = uri.parse().expect("uri");
            assert_eq!(redact_uri(&parsed), logged, "{uri}");
        }
    }
}
