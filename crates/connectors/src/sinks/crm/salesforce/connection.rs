//! One Salesforce org: the adapter's state, its HTTP calls (API usage kept, Salesforce's
//! passing error codes made transient), and the record reads the port's methods build on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cxbridge_domain::crm::{Candidate, CrmError, EntitySpec};
use cxbridge_domain::phone::PhoneNormalizer;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::client::http::{Answer, Call, CrmHttp};
use crate::client::limits::{Limits, RateLimiter};
use crate::client::oauth::{ClientCredentials, Secret, TokenCache};

use super::config::{SalesforceConfig, SalesforceConfigError, default_entities};
use super::query::{candidate, check_field_name, field_value, id_field, object_name, records, select_list, soql_escape};

/// The org's API usage as Salesforce last reported it (`Sforce-Limit-Info: api-usage=used/max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

/// A Salesforce org behind the CRM port.
pub struct Salesforce {
    pub(super) http: CrmHttp,
    pub(super) normalizer: PhoneNormalizer,
    /// `/services/data/v62.0`
    pub(super) api: String,
    pub(super) key_field: String,
    pub(super) batch_size: usize,
    pub(super) timeout: Duration,
    pub(super) entities: Vec<EntitySpec>,
    pub(super) usage: Mutex<Option<ApiUsage>>,
    pub(super) normalized_phone_field: Option<String>,
}

impl Salesforce {
    /// `secret` is the consumer secret, already resolved from the config or the environment.
    pub fn new(config: &SalesforceConfig, secret: Secret, normalizer: PhoneNormalizer, http: reqwest::Client) -> Result<Self, SalesforceConfigError> {
        config.validate()?;
        if secret.is_empty() {
            return Err(SalesforceConfigError::MissingSecret);
        }
        let credentials = ClientCredentials {
            token_url: config.token_endpoint(),
            client_id: config.client_id.clone(),
            client_secret: secret,
            scope: None,
            default_lifetime: Duration::from_secs(config.session_minutes.saturating_mul(60)),
        };
        let tokens = Arc::new(TokenCache::new(http.clone(), credentials));
        let limiter = Arc::new(RateLimiter::new(Limits {
            requests_per_window: config.requests_per_window,
            window: Duration::from_secs(config.window_secs),
            max_in_flight: config.max_in_flight,
        }));
        Ok(Self {
            http: CrmHttp::new(http, tokens, limiter, "Salesforce"),
            normalizer,
            api: format!("/services/data/v{}", config.api_version),
            key_field: config.activity_key_field.clone(),
            batch_size: config.batch_size as usize,
            timeout: Duration::from_millis(config.timeout_ms),
            entities: default_entities(),
            usage: Mutex::new(None),
            normalized_phone_field: config.normalized_phone_field.clone(),
        })
    }

    /// The entities the config declares (by default [`default_entities`]); `related` and the
    /// Task's `WhoId`/`WhatId` look entities up here by name.
    pub fn with_entities(mut self, entities: Vec<EntitySpec>) -> Self {
        self.entities = entities;
        self
    }

    /// Access tokens fetched so far.
    pub fn tokens_fetched(&self) -> u64 {
        self.http.tokens.fetched()
    }

    /// The org's API usage from the latest answer that reported it.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests sent within the client-side window.
    pub async fn requests_in_window(&self) -> usize {
        self.http.limiter.used().await
    }

    // --- HTTP ---------------------------------------------------------------------------

    pub(super) async fn send(&self, method: Method, url: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<Answer, CrmError> {
        let build = |rb: RequestBuilder| {
            let rb = if query.is_empty() { rb } else { rb.query(query) };
            match body {
                Some(b) => rb.json(b),
                None => rb,
            }
        };
        let answer = self.http.send(Call { method, url: url.to_string(), build: &build, cost: 1, timeout: self.timeout }).await.map_err(reclassify)?;
        if let Some(usage) = answer.headers.get("sforce-limit-info").and_then(|v| v.to_str().ok()).and_then(parse_api_usage) {
            *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
        }
        Ok(answer)
    }

    pub(super) async fn get(&self, url: &str, query: &[(&str, String)]) -> Result<Value, CrmError> {
        self.send(Method::GET, url, query, None).await?.json()
    }

    pub(super) async fn soql(&self, soql: String) -> Result<Value, CrmError> {
        self.get(&format!("{}/query/", self.api), &[("q", soql)]).await
    }

    // --- Records ------------------------------------------------------------------------

    pub(super) fn spec_named(&self, name: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// One record by id, with the fields `spec` shows (relationship paths included, which is
    /// why this is a SOQL query rather than an sObject GET).
    pub(super) async fn read(&self, spec: &EntitySpec, id: &str) -> Result<Option<Candidate>, CrmError> {
        let soql = format!(
            "SELECT {} FROM {} WHERE {} = '{}' LIMIT 1",
            select_list(spec)?,
            object_name(spec),
            id_field(spec),
            soql_escape(id)
        );
        let answer = self.soql(soql).await?;
        Ok(records(&answer).first().and_then(|r| candidate(spec, r)))
    }

    /// Whether one of `record`'s phone fields holds `e164` in any notation.
    pub(super) fn has_number(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>, e164: &str) -> bool {
        spec.phone_fields
            .iter()
            .filter_map(|f| field_value(fields, f))
            .any(|raw| self.normalizer.index_key(raw).as_deref() == Some(e164))
    }

    /// The digit strings a stored number most likely holds (Salesforce's phone search ignores
    /// formatting): with country code, with `00`, national with and without trunk prefix.
    pub(super) fn phone_terms(&self, e164: &str) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for n in self.normalizer.notations(e164) {
            let d: String = n.chars().filter(char::is_ascii_digit).collect();
            if d.len() >= 4 && !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// One exact SOQL match on the normalized field per identifying object, in the
    /// entities' order: every record whose field is filled is found, whatever notation its
    /// phone fields are typed in.
    pub(super) async fn find_by_normalized(&self, field: &str, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        check_field_name(field)?;
        let mut out = vec![];
        for spec in entities.iter().filter(|e| e.identify) {
            if out.len() >= limit {
                break;
            }
            let soql = format!(
                "SELECT {} FROM {} WHERE {field} = '{}' LIMIT {}",
                select_list(spec)?,
                object_name(spec),
                soql_escape(e164),
                limit - out.len()
            );
            let answer = self.soql(soql).await?;
            out.extend(records(&answer).iter().filter_map(|r| candidate(spec, r)));
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Whether the error carries Salesforce's `errorCode` (the shared HTTP layer writes it as
/// `message (CODE)`).
pub(super) fn has_code(e: &CrmError, code: &str) -> bool {
    let message = match e {
        CrmError::Transient { message, .. } | CrmError::Permanent { message } => message,
    };
    message.contains(&format!("({code})"))
}

/// Salesforce error codes that go away by themselves, whatever the HTTP status: the org's
/// API allocation (403) and record locks held by someone else (400).
const TRANSIENT_CODES: &[&str] = &["REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"];

pub(super) fn reclassify(e: CrmError) -> CrmError {
    match e {
        CrmError::Permanent { message } if TRANSIENT_CODES.iter().any(|c| message.contains(&format!("({c})"))) => CrmError::Transient { message, retry_after: None },
        other => other,
    }
}

/// `api-usage=18/15000` out of `Sforce-Limit-Info` (which may list more, comma-separated).
fn parse_api_usage(header: &str) -> Option<ApiUsage> {
    let part = header.split(',').map(str::trim).find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, max) = part.split_once('/')?;
    Some(ApiUsage { used: used.trim().parse().ok()?, max: max.trim().parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_usage_header() {
        assert_eq!(parse_api_usage("api-usage=18/15000"), Some(ApiUsage { used: 18, max: 15000 }));
        assert_eq!(parse_api_usage("per-app-api-usage=2/250(appName=x), api-usage=25/5000"), Some(ApiUsage { used: 25, max: 5000 }));
        assert_eq!(parse_api_usage("nonsense"), None);
    }

    #[test]
    fn salesforce_codes_that_pass_are_transient() {
        let permanent = |code: &str| CrmError::Permanent { message: format!("Salesforce answered 403 to GET /x: TotalRequests Limit exceeded. ({code})") };
        assert!(matches!(reclassify(permanent("REQUEST_LIMIT_EXCEEDED")), CrmError::Transient { .. }));
        assert!(matches!(reclassify(permanent("UNABLE_TO_LOCK_ROW")), CrmError::Transient { .. }));
        assert!(matches!(reclassify(permanent("INVALID_FIELD")), CrmError::Permanent { .. }));
    }
}
