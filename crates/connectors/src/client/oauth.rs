//! OAuth 2.0 client credentials (RFC 6749 §4.4) with a token cache: one token per CRM
//! connection, refreshed shortly before it expires, fetched by one caller at a time
//! (single flight) while the others wait for it, and dropped when the CRM says 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_domain::crm::CrmError;
use serde::Deserialize;
use tokio::sync::Mutex;

/// A secret that never shows up in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Entra ID needs `https://{org}.crm.dynamics.com/.default`; Salesforce takes none.
    pub scope: Option<String>,
    /// Lifetime assumed when the answer has no `expires_in` (Salesforce): the session
    /// timeout of the org. A 401 before then still refreshes.
    pub default_lifetime: Duration,
}

/// A token and what came with it.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: Arc<str>,
    /// Salesforce's `instance_url`: where the API lives for this org.
    pub instance_url: Option<String>,
    expires_at: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    instance_url: Option<String>,
}

pub struct TokenCache {
    http: reqwest::Client,
    credentials: ClientCredentials,
    current: Mutex<Option<AccessToken>>,
    fetched: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    pub fn new(http: reqwest::Client, credentials: ClientCredentials) -> Self {
        Self { http, credentials, current: Mutex::new(None), fetched: Default::default() }
    }

    /// How many tokens this cache fetched (for status pages and tests).
    pub fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A token valid for a while yet; fetches one if needed. Concurrent callers share one fetch.
    pub async fn token(&self) -> Result<AccessToken, CrmError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref()
            && Instant::now() < t.expires_at {
                return Ok(t.clone());
            }
        let fresh = self.fetch().await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// The CRM refused `stale` (401): forget it, unless another caller already replaced it.
    pub async fn reject(&self, stale: &AccessToken) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| t.value == stale.value) {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, CrmError> {
        let c = &self.credentials;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.expose()),
        ];
        if let Some(scope) = &c.scope {
            form.push(("scope", scope.as_str()));
        }
        let started = Instant::now();
        let response = self.http.post(&c.token_url).form(&form).send().await.map_err(|e| CrmError::Transient {
            message: format!("token endpoint {} unreachable: {}", c.token_url, super::describe(&e)),
            retry_after: None,
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            // RFC 6749 §5.2: `error` and `error_description`. Bad credentials will not fix themselves.
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .map(|v| {
                    let code = v["error"].as_str().unwrap_or_default().to_string();
                    let text = v["error_description"].as_str().unwrap_or_default().to_string();
                    format!("{code}: {text}")
                })
                .unwrap_or_else(|| super::truncate(&body));
            let message = format!("token endpoint answered {status}: {detail}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                CrmError::Transient { message, retry_after: None }
            } else {
                CrmError::Permanent { message }
            });
        }
        let answer: TokenAnswer = serde_json::from_str(&body)
            .map_err(|e| CrmError::Transient { message: format!("token endpoint sent an unreadable answer: {e}"), retry_after: None })?;
        let lifetime = answer
            .expires_in
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .map(Duration::from_secs)
            .unwrap_or(c.default_lifetime);
        self.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(token_url = %c.token_url, lifetime_secs = lifetime.as_secs(), "fetched an access token");
        Ok(AccessToken { value: answer.access_token.into(), instance_url: answer.instance_url, expires_at: started + refresh_point(lifetime) })
    }
}

/// When to stop using a token of `lifetime`: a tenth (at most five minutes) before it
/// expires, so a request never goes out with a token about to lapse.
fn refresh_point(lifetime: Duration) -> Duration {
    let margin = (lifetime / 10).min(Duration::from_secs(300));
    lifetime.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        let check = |lifetime: u64, used_for: u64| assert_eq!(refresh_point(Duration::from_secs(lifetime)), Duration::from_secs(used_for), "{lifetime}");
        check(3599, 3299);
        check(600, 540);
        check(60, 54);
        check(0, 0);
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
