//! One CRM connection over HTTP: a token from the cache, the connection's limits, a
//! timeout per request, one retry with a fresh token after a 401, and the CRM's answer
//! sorted into what the outbox must do with it (retry later, or give up with the CRM's
//! own words).

use std::sync::Arc;
use std::time::Duration;

use cxbridge_domain::crm::CrmError;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::limits::RateLimiter;
use super::oauth::{AccessToken, TokenCache};
use super::{describe, truncate};

pub struct CrmHttp {
    pub client: reqwest::Client,
    pub tokens: Arc<TokenCache>,
    pub limiter: Arc<RateLimiter>,
    /// The CRM's name in messages (`Dataverse`, `Salesforce`).
    pub vendor: &'static str,
}

/// A successful answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value, CrmError> {
        if self.body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.body)
            .map_err(|e| CrmError::Transient { message: format!("unreadable answer ({e}): {}", truncate(&self.body)), retry_after: None })
    }
}

/// A request to make: built afresh for each attempt (a 401 retry sends it again).
pub struct Call<'a> {
    pub method: Method,
    /// Absolute URL, or a path appended to the token's `instance_url` / the base URL.
    pub url: String,
    pub build: &'a (dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync),
    /// What the call counts against the connection's window (a `$batch` of n: n).
    pub cost: u32,
    pub timeout: Duration,
}

impl CrmHttp {
    pub fn new(client: reqwest::Client, tokens: Arc<TokenCache>, limiter: Arc<RateLimiter>, vendor: &'static str) -> Self {
        Self { client, tokens, limiter, vendor }
    }

    /// The current token (fetching one if needed); for adapters that need `instance_url`.
    pub async fn token(&self) -> Result<AccessToken, CrmError> {
        self.tokens.token().await
    }

    /// Sends `call`; a non-2xx answer becomes the matching [`CrmError`].
    pub async fn send(&self, call: Call<'_>) -> Result<Answer, CrmError> {
        let mut retried_auth = false;
        loop {
            let token = self.tokens.token().await?;
            let url = if call.url.starts_with("http://") || call.url.starts_with("https://") {
                call.url.clone()
            } else {
                format!("{}{}", token.instance_url.as_deref().unwrap_or_default().trim_end_matches('/'), call.url)
            };
            let permit = self.limiter.acquire(call.cost).await;
            let request = (call.build)(self.client.request(call.method.clone(), &url).bearer_auth(&*token.value)).timeout(call.timeout);
            let result = request.send().await;
            drop(permit);
            let response = result.map_err(|e| CrmError::Transient { message: format!("{} {}: {}", call.method, path_of(&url), describe(&e)), retry_after: None })?;
            if response.status() == StatusCode::UNAUTHORIZED && !retried_auth {
                // Expired or revoked: fetch a fresh token once; a second 401 is real.
                self.tokens.reject(&token).await;
                retried_auth = true;
                continue;
            }
            return self.read(&call.method, &url, response).await;
        }
    }

    async fn read(&self, method: &Method, url: &str, response: Response) -> Result<Answer, CrmError> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(|e| CrmError::Transient { message: format!("{method} {}: reading the answer: {}", path_of(url), describe(&e)), retry_after: None })?;
        if status.is_success() {
            return Ok(Answer { status, headers, body });
        }
        let detail = vendor_message(&body);
        let message = format!("{} answered {} to {method} {}: {detail}", self.vendor, status.as_u16(), path_of(url));
        let retry_after = retry_after(&headers);
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let pause = retry_after.unwrap_or(Duration::from_secs(if status == StatusCode::TOO_MANY_REQUESTS { 5 } else { 1 }));
            self.limiter.pause(pause).await;
        }
        Err(classify(status, message, retry_after))
    }
}

/// What the outbox does with a failed answer: retry (throttling, outages, timeouts, 409
/// races) or go dead at once (the CRM refuses the request itself).
pub fn classify(status: StatusCode, message: String, retry_after: Option<Duration>) -> CrmError {
    match status.as_u16() {
        408 | 409 | 412 | 423 | 425 | 429 | 500..=599 => CrmError::Transient { message, retry_after },
        _ => CrmError::Permanent { message },
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// The CRM's own error text: Dataverse/OData `{"error":{"code","message"}}`, Salesforce
/// `[{"errorCode","message"}]`, OAuth `error_description`, or the body itself.
pub fn vendor_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return truncate(body);
    };
    let pick = |v: &serde_json::Value| -> Option<String> {
        let msg = v.get("message").and_then(|m| m.as_str())?;
        let code = v.get("code").or_else(|| v.get("errorCode")).and_then(|c| c.as_str());
        Some(match code {
            Some(c) if !c.is_empty() => format!("{msg} ({c})"),
            _ => msg.to_string(),
        })
    };
    v.get("error")
        .and_then(pick)
        .or_else(|| v.as_array().and_then(|a| a.first()).and_then(pick))
        .or_else(|| pick(&v))
        .or_else(|| v.get("error_description").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| truncate(body))
}

/// The path of a URL without query (queries may carry phone numbers; keep logs lean).
fn path_of(url: &str) -> &str {
    let no_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = no_scheme.find('/').map_or("/", |i| &no_scheme[i..]);
    path.split('?').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_messages_are_found_in_each_shape() {
        let check = |body: &str, want: &str| assert_eq!(vendor_message(body), want, "{body}");
        check(r#"{"error":{"code":"0x80040217","message":"contact With Id = 1 Does Not Exist"}}"#, "contact With Id = 1 Does Not Exist (0x80040217)");
        check(r#"[{"message":"No such column 'Foo' on sobject of type Task","errorCode":"INVALID_FIELD"}]"#, "No such column 'Foo' on sobject of type Task (INVALID_FIELD)");
        check(r#"{"error":"invalid_client","error_description":"bad secret"}"#, "bad secret");
        check("plain text", "plain text");
    }

    #[test]
    fn statuses_are_sorted_into_retry_or_dead() {
        let check = |status: u16, transient: bool| {
            let e = classify(StatusCode::from_u16(status).expect("status"), "m".into(), None);
            assert_eq!(matches!(e, CrmError::Transient { .. }), transient, "{status}");
        };
        for s in [408, 409, 412, 429, 500, 502, 503, 504] {
            check(s, true);
        }
        for s in [400, 401, 403, 404, 405, 422] {
            check(s, false);
        }
    }

    #[test]
    fn paths_leave_out_hosts_and_queries() {
        assert_eq!(path_of("https://org.crm.dynamics.com/api/data/v9.2/contacts?$filter=x"), "/api/data/v9.2/contacts");
        assert_eq!(path_of("http://h"), "/");
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("17"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(17)));
    }
}
