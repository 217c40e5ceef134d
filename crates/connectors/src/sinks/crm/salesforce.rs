//! Salesforce behind the CRM port, over the REST API.
//!
//! - Login: OAuth 2.0 client credentials against the org's My Domain
//!   (`{login_url}/services/oauth2/token`); the token answer's `instance_url` is where every
//!   API call goes. The answer has no lifetime, so the cache assumes `session_minutes`; a
//!   401 fetches a new token anyway.
//! - Identification: one SOSL search over the phone fields of every identifying entity, with
//!   the caller's number in the digit notations it is most likely stored in. SOSL matching is
//!   loose, so each hit is checked: it stays only if one of its phone fields normalizes to
//!   the caller's E.164 number.
//! - Memorialization: a Task upserted by an external id field holding the activity key
//!   (`PATCH /sobjects/Task/{field}/{key}`), so a retry never creates a second Task. Batches
//!   go as Composite requests of at most 25 upserts (one API call each).
//! - Change feed: SOQL by `LastModifiedDate` plus `sobjects/{Object}/deleted/`.
//! - Every answer's `Sforce-Limit-Info: api-usage=n/max` is kept for the status page.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, DisplayField, EntitySpec, RecordRef, Relation, SearchQuery, TimelineEntry};
use cxbridge_domain::mapping::FieldRule;
use cxbridge_domain::phone::PhoneNormalizer;
use jiff::Timestamp;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::client::http::{Answer, Call, CrmHttp, classify, vendor_message};
use crate::client::limits::{Limits, RateLimiter};
use crate::client::oauth::{ClientCredentials, Secret, TokenCache};
use super::string_fields;

/// Salesforce's Composite API takes at most this many subrequests.
pub const MAX_COMPOSITE: u32 = 25;

/// How the hub reaches a Salesforce org (`[crm.salesforce]` in the config).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// Where the hub logs in: your org's My Domain URL, e.g. `https://acme.my.salesforce.com`
    /// (the client credentials flow needs it; `https://login.salesforce.com` does not serve it).
    pub login_url: String,
    /// The token endpoint, when it is not `{login_url}/services/oauth2/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The connected app's consumer key.
    pub client_id: String,
    /// The connected app's consumer secret. Better left out: set the environment variable
    /// `CXBRIDGE_CRM_CLIENT_SECRET` instead.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// REST API version, e.g. `62.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The External ID field on Task that holds the hub's activity key (create it as a unique,
    /// case-sensitive External ID text field of 255 characters). Upserts by it make every
    /// retry land on the same Task.
    #[serde(default = "default_activity_key_field")]
    pub activity_key_field: String,
    /// How long a session lasts in the org (Setup → Session Settings). Salesforce does not
    /// say it in the token answer; the hub renews a little before, and at once on a 401.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// At most this many API calls per `window_secs`, so the hub stays inside the org's
    /// allocation instead of learning it from `REQUEST_LIMIT_EXCEEDED`.
    #[serde(default = "default_requests_per_window")]
    pub requests_per_window: u32,
    /// The window of `requests_per_window`, in seconds.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// At most this many requests in flight at once (Salesforce allows 25 long-running ones).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Activities per Composite request when several are due at once (1–25).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// How long one request may take before it counts as failed and is retried later, in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A field on every identifying object that holds the phone number in E.164
    /// (`+14155550100`), kept by a flow or a formula. Contact, Account and Lead have none
    /// built in. When set, direct lookups are one exact SOQL match on it per object instead
    /// of a SOSL phone search, whose matching Salesforce does not document. Default: not set.
    #[serde(default)]
    pub normalized_phone_field: Option<String>,
}

fn default_api_version() -> String {
    "62.0".into()
}
fn default_activity_key_field() -> String {
    "CxbridgeKey__c".into()
}
fn default_session_minutes() -> u64 {
    120
}
fn default_requests_per_window() -> u32 {
    1000
}
fn default_window_secs() -> u64 {
    60
}
fn default_max_in_flight() -> u32 {
    25
}
fn default_batch_size() -> u32 {
    MAX_COMPOSITE
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl SalesforceConfig {
    /// A config with every default, for `login_url` and the connected app `client_id`.
    pub fn new(login_url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            login_url: login_url.into(),
            token_url: None,
            client_id: client_id.into(),
            client_secret: None,
            api_version: default_api_version(),
            activity_key_field: default_activity_key_field(),
            session_minutes: default_session_minutes(),
            requests_per_window: default_requests_per_window(),
            window_secs: default_window_secs(),
            max_in_flight: default_max_in_flight(),
            batch_size: default_batch_size(),
            timeout_ms: default_timeout_ms(),
            normalized_phone_field: None,
        }
    }

    /// Where tokens are fetched.
    pub fn token_endpoint(&self) -> String {
        self.token_url.clone().unwrap_or_else(|| format!("{}/services/oauth2/token", self.login_url.trim_end_matches('/')))
    }

    /// Checks what would otherwise fail on the first request.
    pub fn validate(&self) -> Result<(), SalesforceConfigError> {
        let url_ok = |u: &str| crate::client::insecure_url(u).is_none();
        if !url_ok(&self.login_url) {
            return Err(SalesforceConfigError::Url { key: "login_url", value: self.login_url.clone() });
        }
        if let Some(t) = &self.token_url
            && !url_ok(t)
        {
            return Err(SalesforceConfigError::Url { key: "token_url", value: t.clone() });
        }
        if self.client_id.trim().is_empty() {
            return Err(SalesforceConfigError::MissingClientId);
        }
        let version_ok = self.api_version.split_once('.').is_some_and(|(major, minor)| {
            !major.is_empty() && !minor.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) && minor.bytes().all(|b| b.is_ascii_digit())
        });
        if !version_ok {
            return Err(SalesforceConfigError::ApiVersion(self.api_version.clone()));
        }
        if !is_identifier(&self.activity_key_field) {
            return Err(SalesforceConfigError::KeyField(self.activity_key_field.clone()));
        }
        if let Some(f) = &self.normalized_phone_field
            && !is_identifier(f)
        {
            return Err(SalesforceConfigError::PhoneField(f.clone()));
        }
        if !(1..=MAX_COMPOSITE).contains(&self.batch_size) {
            return Err(SalesforceConfigError::BatchSize(self.batch_size));
        }
        for (key, value) in [
            ("session_minutes", self.session_minutes),
            ("requests_per_window", u64::from(self.requests_per_window)),
            ("window_secs", self.window_secs),
            ("max_in_flight", u64::from(self.max_in_flight)),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value == 0 {
                return Err(SalesforceConfigError::Zero(key));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for SalesforceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceConfig")
            .field("login_url", &self.login_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("api_version", &self.api_version)
            .field("activity_key_field", &self.activity_key_field)
            .field("session_minutes", &self.session_minutes)
            .field("requests_per_window", &self.requests_per_window)
            .field("window_secs", &self.window_secs)
            .field("max_in_flight", &self.max_in_flight)
            .field("batch_size", &self.batch_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("normalized_phone_field", &self.normalized_phone_field)
            .finish()
    }
}

/// A Salesforce config the adapter cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SalesforceConfigError {
    #[error("salesforce `{key}` must be an https:// URL (http only to 127.0.0.1, ::1 or localhost), not `{value}`")]
    Url { key: &'static str, value: String },
    #[error("salesforce `client_id` is empty: set the connected app's consumer key")]
    MissingClientId,
    #[error("no Salesforce client secret: set `client_secret` or the environment variable CXBRIDGE_CRM_CLIENT_SECRET")]
    MissingSecret,
    #[error("salesforce `api_version` must look like `62.0`, not `{0}`")]
    ApiVersion(String),
    #[error("salesforce `activity_key_field` must be a field API name such as `CxbridgeKey__c`, not `{0}`")]
    KeyField(String),
    #[error("salesforce `normalized_phone_field` must be a field API name such as `Phone_E164__c`, not `{0}`")]
    PhoneField(String),
    #[error("salesforce `batch_size` must be between 1 and 25 (the Composite API's limit), not {0}")]
    BatchSize(u32),
    #[error("salesforce `{0}` must be greater than 0")]
    Zero(&'static str),
}

/// The org's API usage as Salesforce last reported it (`Sforce-Limit-Info: api-usage=used/max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

/// A Salesforce org behind the CRM port.
pub struct Salesforce {
    http: CrmHttp,
    normalizer: PhoneNormalizer,
    /// `/services/data/v62.0`
    api: String,
    key_field: String,
    batch_size: usize,
    timeout: Duration,
    entities: Vec<EntitySpec>,
    usage: Mutex<Option<ApiUsage>>,
    normalized_phone_field: Option<String>,
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

    async fn send(&self, method: Method, url: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<Answer, CrmError> {
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

    async fn get(&self, url: &str, query: &[(&str, String)]) -> Result<Value, CrmError> {
        self.send(Method::GET, url, query, None).await?.json()
    }

    async fn soql(&self, soql: String) -> Result<Value, CrmError> {
        self.get(&format!("{}/query/", self.api), &[("q", soql)]).await
    }

    // --- Records ------------------------------------------------------------------------

    fn spec_named(&self, name: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// One record by id, with the fields `spec` shows (relationship paths included, which is
    /// why this is a SOQL query rather than an sObject GET).
    async fn read(&self, spec: &EntitySpec, id: &str) -> Result<Option<Candidate>, CrmError> {
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
    fn has_number(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>, e164: &str) -> bool {
        spec.phone_fields
            .iter()
            .filter_map(|f| field_value(fields, f))
            .any(|raw| self.normalizer.index_key(raw).as_deref() == Some(e164))
    }

    /// The digit strings a stored number most likely holds (Salesforce's phone search ignores
    /// formatting): with country code, with `00`, national with and without trunk prefix.
    fn phone_terms(&self, e164: &str) -> Vec<String> {
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
    async fn find_by_normalized(&self, field: &str, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
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

    // --- Tasks --------------------------------------------------------------------------

    fn task_url(&self, key: &str) -> String {
        format!("{}/sobjects/Task/{}/{}", self.api, self.key_field, encode_segment(key))
    }

    fn is_who(&self, record: &RecordRef) -> bool {
        match self.spec_named(&record.entity) {
            Some(spec) => ["Contact", "Lead"].iter().any(|o| object_name(spec).eq_ignore_ascii_case(o)),
            // Salesforce id key prefixes: 003 Contact, 00Q Lead.
            None => record.id.starts_with("003") || record.id.starts_with("00Q"),
        }
    }

    fn is_lead(&self, record: &RecordRef) -> bool {
        match self.spec_named(&record.entity) {
            Some(spec) => object_name(spec).eq_ignore_ascii_case("Lead"),
            None => record.id.starts_with("00Q"),
        }
    }

    /// The Salesforce object a regarded record is of, for words shown to people.
    fn object_of(&self, record: &RecordRef) -> String {
        self.spec_named(&record.entity).map_or_else(|| record.entity.clone(), object_name)
    }

    /// The Task's fields: the mapped ones (fitted to Salesforce's text lengths), the first
    /// person regarded as `WhoId`, the first other record as `WhatId`, the agent as `OwnerId`.
    ///
    /// A Task about a Lead cannot name anything else: "if the WhoId field refers to a Lead,
    /// then the WhatId field must be empty" (Object Reference, Task; Salesforce answers
    /// `FIELD_INTEGRITY_EXCEPTION`). Such a Task gets the Lead alone, and the other record
    /// is named on the first line of its `Description` instead, so the link is not lost and
    /// the conversation is not refused for good.
    fn task_body(&self, activity: &Activity) -> Map<String, Value> {
        let mut body = Map::new();
        for (field, value) in &activity.fields {
            body.insert(field.clone(), task_value(field, value));
        }
        let who = activity.regarding.iter().find(|r| self.is_who(r));
        if let Some(who) = who {
            body.insert("WhoId".into(), json!(who.id));
        }
        match activity.regarding.iter().find(|r| !self.is_who(r)) {
            Some(what) if who.is_some_and(|w| self.is_lead(w)) => {
                let note = format!("Related to: {} {} (Salesforce does not link a Task about a Lead to another record)", self.object_of(what), what.id);
                let key = body.keys().find(|k| k.eq_ignore_ascii_case("Description")).cloned().unwrap_or_else(|| "Description".into());
                let text = match body.get(&key).and_then(Value::as_str).filter(|d| !d.is_empty()) {
                    Some(d) => format!("{note}\n{d}"),
                    None => note,
                };
                body.insert(key.clone(), task_value(&key, &Value::String(text)));
            }
            Some(what) => {
                body.insert("WhatId".into(), json!(what.id));
            }
            None => {}
        }
        if let Some(owner) = activity.on_behalf_of.as_ref().filter(|o| !o.is_empty()) {
            body.insert("OwnerId".into(), json!(owner));
        }
        body.remove(&self.key_field);
        body
    }

    async fn upsert_task(&self, key: &str, body: &Map<String, Value>) -> Result<String, CrmError> {
        let url = self.task_url(key);
        let answer = self.send(Method::PATCH, &url, &[], Some(&Value::Object(body.clone()))).await?;
        match answer.json()?.get("id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_string()),
            // API versions before 46.0 answer an update with 204 and no body.
            None => self.task_id(key).await,
        }
    }

    async fn task_id(&self, key: &str) -> Result<String, CrmError> {
        let v = self.get(&self.task_url(key), &[("fields", "Id".to_string())]).await?;
        v.get("Id").and_then(Value::as_str).map(str::to_string).ok_or_else(|| CrmError::Transient {
            message: format!("Salesforce did not say the id of the Task with {} = {key}", self.key_field),
            retry_after: None,
        })
    }

    /// One Composite request of at most 25 upserts; one result per activity, in order.
    async fn composite(&self, batch: &[(&Activity, Map<String, Value>)]) -> Vec<Result<String, CrmError>> {
        let requests: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(i, (a, body))| json!({ "method": "PATCH", "url": self.task_url(&a.key), "referenceId": format!("a{i}"), "body": body }))
            .collect();
        let request = json!({ "allOrNone": false, "compositeRequest": requests });
        let answer = match self.send(Method::POST, &format!("{}/composite", self.api), &[], Some(&request)).await.and_then(|a| a.json()) {
            Ok(v) => v,
            Err(e) => return vec![Err(e); batch.len()],
        };
        let by_reference: HashMap<&str, &Value> = answer
            .get("compositeResponse")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|r| Some((r.get("referenceId")?.as_str()?, r))).collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(batch.len());
        for (i, (activity, _)) in batch.iter().enumerate() {
            let result = match by_reference.get(format!("a{i}").as_str()) {
                None => Err(CrmError::Transient {
                    message: format!("Salesforce's Composite answer has no result for activity {}", activity.key),
                    retry_after: None,
                }),
                Some(sub) => self.subresult(&activity.key, sub).await,
            };
            out.push(result);
        }
        out
    }

    async fn subresult(&self, key: &str, sub: &Value) -> Result<String, CrmError> {
        let status = sub.get("httpStatusCode").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).and_then(|s| StatusCode::from_u16(s).ok());
        let body = sub.get("body").cloned().unwrap_or(Value::Null);
        match status {
            Some(s) if s.is_success() => match body.get("id").and_then(Value::as_str) {
                Some(id) => Ok(id.to_string()),
                None => self.task_id(key).await,
            },
            Some(s) => {
                let url = self.task_url(key);
                let message = format!("Salesforce answered {} to PATCH {}: {}", s.as_u16(), url, vendor_message(&body.to_string()));
                Err(reclassify(classify(s, message, None)))
            }
            None => Err(CrmError::Transient { message: format!("Salesforce's Composite answer for activity {key} has no status"), retry_after: None }),
        }
    }

    // --- Change feed --------------------------------------------------------------------

    /// The records of `object` deleted since `since` (the cursor's `deleted_since`), as the
    /// deletion feed allows asking for them (sObject Get Deleted, REST API Developer Guide,
    /// and getDeleted() in the SOAP API Developer Guide for its rules):
    ///
    /// - "The API ignores the seconds portion of the specified dateTime value": the window is
    ///   sent in whole minutes. Its start is rounded down (a deletion may come twice, which
    ///   costs nothing), its end is the current minute's start, which the next call starts
    ///   from, so nothing falls between two calls.
    /// - "startDate must chronologically precede the specified endDate value by more than one
    ///   minute": a shorter window is not asked for; the next round asks for a longer one.
    /// - "Results are returned for no more than 15 days previous to the day the call is
    ///   executed (or earlier if an administrator has purged the Recycle Bin)", and a purged
    ///   log answers `INVALID_REPLICATION_DATE` ("If you get this exception, you should do a
    ///   full pull of the table"): deletions beyond the log cannot be known, so the sync
    ///   starts over.
    async fn deletions(&self, object: &str, since: &str, now: Timestamp) -> Result<Deletions, CrmError> {
        let since_t = since.parse::<Timestamp>().map_err(|_| bad_cursor(since))?;
        let start = whole_minute(since_t);
        let end = whole_minute(now);
        let oldest = start_of_day(now.checked_sub(DELETE_LOG_KEPT).unwrap_or(now));
        if start < oldest {
            return Ok(Deletions::Gone(format!(
                "the last sync saw deletions up to {since}, and Salesforce reports deletions of the last 15 days only: records deleted in between cannot be known"
            )));
        }
        if end.duration_since(start) < MIN_DELETION_WINDOW {
            return Ok(Deletions::NotYet);
        }
        let url = format!("{}/sobjects/{object}/deleted/", self.api);
        let answer = match self.get(&url, &[("start", soql_datetime(start)), ("end", soql_datetime(end))]).await {
            Ok(a) => a,
            // A start the log no longer reaches (purged, or Salesforce counts the 15 days
            // otherwise than we do) means a full pull. A young start refused is more likely
            // our window and Salesforce's rules disagreeing: try a longer window next round
            // rather than pay a full sync. Salesforce's purge job only removes entries older
            // than two hours, so a start younger than that cannot have been purged.
            Err(e) if has_code(&e, "INVALID_REPLICATION_DATE") => {
                if now.duration_since(since_t) > PURGE_MIN_AGE {
                    return Ok(Deletions::Gone(format!("Salesforce no longer has the deletions since {since}: {e}")));
                }
                tracing::warn!(object, error = %e, "Salesforce refused the deletion window; it is asked for again, longer, next round");
                return Ok(Deletions::NotYet);
            }
            Err(e) => return Err(e),
        };
        let deletes = answer
            .get("deletedRecords")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|d| d.get("id").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        // "Use this value for the startDate of your next call": never later than asked.
        let covered = answer.get("latestDateCovered").and_then(Value::as_str).and_then(|s| s.parse::<Timestamp>().ok()).map_or(end, |c| c.min(end).max(start));
        Ok(Deletions::Got(deletes, iso_millis(covered)))
    }

    /// The first page of a full sync: every record, oldest change first; deletions are
    /// followed from now on.
    async fn full_sync(&self, spec: &EntitySpec, select: &str, order: &str, restarted: Option<String>) -> Result<ChangePage, CrmError> {
        let started = iso_millis(Timestamp::now());
        let answer = self.soql(format!("{select} {order}")).await?;
        let mut page = self.change_page(spec, &answer, None, started, vec![])?;
        page.restarted = restarted;
        Ok(page)
    }

    fn change_page(&self, spec: &EntitySpec, answer: &Value, modified_since: Option<String>, deleted_since: String, deletes: Vec<String>) -> Result<ChangePage, CrmError> {
        let mut high = modified_since.as_deref().and_then(|s| s.parse::<Timestamp>().ok());
        let mut upserts = vec![];
        for r in records(answer) {
            let fields = record_fields(r);
            let Some(id) = field_value(&fields, id_field(spec)).map(str::to_string) else { continue };
            if let Some(t) = fields.get("LastModifiedDate").and_then(|s| s.parse::<Timestamp>().ok()) {
                high = Some(high.map_or(t, |h| h.max(t)));
            }
            upserts.push((id, fields));
        }
        let next = answer.get("nextRecordsUrl").and_then(Value::as_str).map(str::to_string);
        let cursor = SyncCursor { next: next.clone(), modified_since: high.map(iso_millis), deleted_since };
        let cursor = serde_json::to_string(&cursor).map_err(|e| CrmError::Permanent { message: format!("cannot write the change cursor: {e}") })?;
        Ok(ChangePage { upserts, deletes, cursor, more: next.is_some(), restarted: None })
    }
}

/// What the deletion feed had to say for one round.
enum Deletions {
    /// These ids, and where the next window starts.
    Got(Vec<String>, String),
    /// The window is too short to ask for yet; it starts where it did.
    NotYet,
    /// The feed cannot cover the window any more: a full sync must start over, for this reason.
    Gone(String),
}

/// How far back Salesforce reports deletions.
const DELETE_LOG_KEPT: jiff::SignedDuration = jiff::SignedDuration::from_hours(15 * 24);
/// A deletion window must be longer than a minute; in whole minutes, that is two.
const MIN_DELETION_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);
/// "A background process that runs every two hours purges records that have been in an
/// organization's delete log for more than two hours if the number of records is above a
/// certain limit" (sObject Get Deleted).
const PURGE_MIN_AGE: jiff::SignedDuration = jiff::SignedDuration::from_secs(2 * 3600);

/// `t` without its seconds (the deletion feed ignores them).
fn whole_minute(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap_or(t)
}

/// Midnight UTC of `t`'s day ("15 days previous to the day the call is executed").
fn start_of_day(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(86_400) * 86_400).unwrap_or(t)
}

/// Where a change feed continues, as the JSON string the hub stores:
/// `{"next":"/services/data/v62.0/query/01g…-2000","modified_since":"2024-05-01T10:00:00.123Z","deleted_since":"2024-05-01T09:00:00.000Z"}`.
/// `next` is set while a sync pages through a query result; `modified_since` is the newest
/// `LastModifiedDate` seen (absent until a record was seen); `deleted_since` is where the
/// deletion feed continues (the start of the first full sync, then Salesforce's
/// `latestDateCovered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SyncCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified_since: Option<String>,
    deleted_since: String,
}

fn bad_cursor(cursor: &str) -> CrmError {
    CrmError::Permanent { message: format!("unreadable Salesforce change cursor `{}`: start over with a full sync (no cursor)", crate::client::truncate(cursor)) }
}

#[async_trait]
impl Crm for Salesforce {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        // An entity without phone fields cannot be checked, so it is not searched.
        if let Some(field) = &self.normalized_phone_field {
            return self.find_by_normalized(field, e164, entities, limit).await;
        }
        let specs: Vec<&EntitySpec> = entities.iter().filter(|e| e.identify && !e.phone_fields.is_empty()).collect();
        let terms = self.phone_terms(e164);
        if specs.is_empty() || terms.is_empty() || limit == 0 {
            return Ok(vec![]);
        }
        let sosl = sosl_phone_search(&terms, &specs, sosl_limit(limit))?;
        let answer = self.get(&format!("{}/search/", self.api), &[("q", sosl)]).await?;
        let mut hits: Vec<(usize, Candidate)> = vec![];
        for r in answer.get("searchRecords").and_then(Value::as_array).into_iter().flatten() {
            let kind = r.get("attributes").and_then(|a| a.get("type")).and_then(Value::as_str).unwrap_or_default();
            let Some(rank) = specs.iter().position(|s| object_name(s).eq_ignore_ascii_case(kind)) else { continue };
            let spec = specs[rank];
            let fields = record_fields(r);
            if !self.has_number(spec, &fields, e164) {
                continue;
            }
            if let Some(c) = candidate_of(spec, fields) {
                hits.push((rank, c));
            }
        }
        // Stable: within an entity, Salesforce's order stays.
        hits.sort_by_key(|(rank, _)| *rank);
        Ok(hits.into_iter().take(limit).map(|(_, c)| c).collect())
    }

    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        let Some(rel) = spec.relation(relation) else {
            return Err(CrmError::Permanent { message: format!("entity `{}` has no relation `{relation}`", spec.name) });
        };
        check_field_name(&rel.field)?;
        let url = format!("{}/sobjects/{}/{}", self.api, object_name(spec), encode_segment(&record.id));
        let source = match self.get(&url, &[("fields", rel.field.clone())]).await {
            Ok(v) => v,
            Err(e) if has_code(&e, "NOT_FOUND") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(target_id) = field_value(&record_fields(&source), &rel.field).filter(|v| !v.is_empty()).map(str::to_string) else {
            return Ok(None);
        };
        let fallback;
        let target_spec = match self.spec_named(&rel.entity) {
            Some(s) => s,
            None => {
                fallback = EntitySpec::simple(&rel.entity, &[], "Name");
                &fallback
            }
        };
        self.read(target_spec, &target_id).await
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        check_key(&activity.key)?;
        let body = self.task_body(activity);
        match self.upsert_task(&activity.key, &body).await {
            Err(e) if refuses_create_only(&e) && has_create_only(&body) => self.upsert_task(&activity.key, &without_create_only(&body)).await,
            other => other,
        }
    }

    async fn upsert_activities(&self, activities: &[Activity]) -> Vec<Result<String, CrmError>> {
        let mut out: Vec<Option<Result<String, CrmError>>> = vec![None; activities.len()];
        let mut pending: Vec<(usize, &Activity, Map<String, Value>)> = vec![];
        for (i, a) in activities.iter().enumerate() {
            match check_key(&a.key) {
                Ok(()) => pending.push((i, a, self.task_body(a))),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for chunk in pending.chunks(self.batch_size.max(1)) {
            let batch: Vec<(&Activity, Map<String, Value>)> = chunk.iter().map(|(_, a, b)| (*a, b.clone())).collect();
            let mut results = self.composite(&batch).await;
            // Tasks that exist already refuse create-only fields: send those again without.
            let again: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(j, r)| matches!(r, Err(e) if refuses_create_only(e)) && has_create_only(&batch[*j].1))
                .map(|(j, _)| j)
                .collect();
            if !again.is_empty() {
                let retry: Vec<(&Activity, Map<String, Value>)> = again.iter().map(|j| (batch[*j].0, without_create_only(&batch[*j].1))).collect();
                for (j, r) in again.into_iter().zip(self.composite(&retry).await) {
                    results[j] = r;
                }
            }
            for ((i, _, _), r) in chunk.iter().zip(results) {
                out[*i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CrmError::Transient { message: "activity was not sent".into(), retry_after: None })))
            .collect()
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        let mut conditions = vec![];
        if let Some(text) = query.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            conditions.push(format!("{} LIKE '%{}%'", spec.title_field, like_escape(&soql_escape(text))));
        }
        for (field, value) in &query.filters {
            check_field_name(field)?;
            conditions.push(format!("{field} = '{}'", soql_escape(value)));
        }
        let mut soql = format!("SELECT {} FROM {}", select_list(spec)?, object_name(spec));
        if !conditions.is_empty() {
            soql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if !spec.title_field.contains('.') {
            soql.push_str(&format!(" ORDER BY {}", spec.title_field));
        }
        let limit = if query.limit == 0 { 50 } else { query.limit.min(2000) };
        soql.push_str(&format!(" LIMIT {limit}"));
        let answer = self.soql(soql).await?;
        Ok(records(&answer).iter().filter_map(|r| candidate(spec, r)).collect())
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let body: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let url = format!("{}/sobjects/{}/", self.api, object_name(spec));
        let answer = self.send(Method::POST, &url, &[], Some(&Value::Object(body))).await?.json()?;
        let Some(id) = answer.get("id").and_then(Value::as_str) else {
            return Err(CrmError::Permanent { message: format!("Salesforce created a {} but did not say its id: {}", spec.name, crate::client::truncate(&answer.to_string())) });
        };
        self.read(spec, id).await?.ok_or_else(|| CrmError::Transient { message: format!("{} `{id}` was created but cannot be read back yet", spec.name), retry_after: None })
    }

    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let body: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let url = format!("{}/sobjects/{}/{}", self.api, object_name(spec), encode_segment(id));
        let does_not_exist = || CrmError::Permanent { message: format!("{} `{id}` does not exist", spec.name) };
        match self.send(Method::PATCH, &url, &[], Some(&Value::Object(body))).await {
            Err(e) if has_code(&e, "NOT_FOUND") || has_code(&e, "ENTITY_IS_DELETED") => return Err(does_not_exist()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        self.read(spec, id).await?.ok_or_else(does_not_exist)
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        let id = soql_escape(&record.id);
        let limit = limit.clamp(1, 2000);
        let soql = format!(
            "SELECT Id, Subject, CreatedDate, Description, TaskSubtype FROM Task WHERE WhoId = '{id}' OR WhatId = '{id}' ORDER BY CreatedDate DESC, Id DESC LIMIT {limit}"
        );
        let answer = self.soql(soql).await?;
        Ok(records(&answer)
            .iter()
            .map(|r| {
                let fields = string_fields(r);
                let at = fields.get("CreatedDate").map(|s| s.parse::<Timestamp>().map_or_else(|_| s.clone(), |t| t.to_string())).unwrap_or_default();
                TimelineEntry {
                    id: fields.get("Id").cloned().unwrap_or_default(),
                    kind: fields.get("TaskSubtype").map_or_else(|| "task".to_string(), |s| s.to_lowercase()),
                    subject: fields.get("Subject").cloned().unwrap_or_default(),
                    at,
                    fields,
                }
            })
            .collect())
    }

    fn has_change_feed(&self) -> bool {
        true
    }

    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        let object = object_name(spec);
        let mut fields = select_fields(spec);
        if !fields.iter().any(|f| f.eq_ignore_ascii_case("LastModifiedDate")) {
            fields.push("LastModifiedDate".into());
        }
        for f in &fields {
            check_field_name(f)?;
        }
        let select = format!("SELECT {} FROM {object}", fields.join(", "));
        let order = format!("ORDER BY LastModifiedDate, {}", id_field(spec));
        let Some(cursor) = cursor else {
            return self.full_sync(spec, &select, &order, None).await;
        };
        let state: SyncCursor = serde_json::from_str(cursor).map_err(|_| bad_cursor(cursor))?;
        if let Some(next) = &state.next {
            if !next.starts_with("/services/data/") {
                return Err(bad_cursor(cursor));
            }
            match self.get(next, &[]).await {
                Ok(answer) => return self.change_page(spec, &answer, state.modified_since, state.deleted_since, vec![]),
                // Query locators expire after 15 minutes without use, and opening an 11th
                // releases the oldest (SOAP API Developer Guide, QueryLocator): a sync
                // interrupted between two pages (a restart, an outage) must not stall on
                // it. The records come ordered by LastModifiedDate, so the query is run
                // again from the newest one seen, as a next sync would.
                Err(e) if has_code(&e, "INVALID_QUERY_LOCATOR") => {
                    tracing::info!(object, "Salesforce's query locator expired; the query runs again from the newest change seen");
                }
                Err(e) => return Err(e),
            }
        }
        let (deletes, deleted_since) = match self.deletions(&object, &state.deleted_since, Timestamp::now()).await? {
            Deletions::Got(ids, next) => (ids, next),
            Deletions::NotYet => (vec![], state.deleted_since.clone()),
            Deletions::Gone(reason) => return self.full_sync(spec, &select, &order, Some(reason)).await,
        };
        let soql = match state.modified_since.as_deref() {
            // Seconds only in SOQL literals: records of that very second come again, which
            // costs nothing (upserts) and never skips one.
            Some(since) => {
                let t = since.parse::<Timestamp>().map_err(|_| bad_cursor(cursor))?;
                format!("{select} WHERE LastModifiedDate > {} {order}", soql_datetime(t))
            }
            None => format!("{select} {order}"),
        };
        let answer = self.soql(soql).await?;
        self.change_page(spec, &answer, state.modified_since, deleted_since, deletes)
    }
}

// --- Entities and mapping ---------------------------------------------------------------

/// Contacts, accounts and leads as a Salesforce org has them.
pub fn default_entities() -> Vec<EntitySpec> {
    let df = |label: &str, field: &str| DisplayField { label: label.into(), field: field.into() };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        EntitySpec {
            name: "contact".into(),
            phone_fields: strings(&["Phone", "MobilePhone", "HomePhone", "OtherPhone"]),
            email_fields: strings(&["Email"]),
            display_fields: vec![
                df("Name", "Name"),
                df("Phone", "Phone"),
                df("Mobile", "MobilePhone"),
                df("E-mail", "Email"),
                df("Account name", "Account.Name"),
            ],
            title_field: "Name".into(),
            relations: vec![Relation { name: "account".into(), field: "AccountId".into(), entity: "account".into() }],
            identify: true,
            collection: Some("Contact".into()),
            id_field: Some("Id".into()),
            sensitive: vec![],
        },
        EntitySpec {
            name: "account".into(),
            phone_fields: strings(&["Phone"]),
            email_fields: vec![],
            display_fields: vec![df("Account", "Name"), df("Phone", "Phone")],
            title_field: "Name".into(),
            relations: vec![],
            identify: true,
            collection: Some("Account".into()),
            id_field: Some("Id".into()),
            sensitive: vec![],
        },
        EntitySpec {
            name: "lead".into(),
            phone_fields: strings(&["Phone", "MobilePhone"]),
            email_fields: strings(&["Email"]),
            display_fields: vec![df("Lead", "Name"), df("Company", "Company"), df("Phone", "Phone"), df("Mobile", "MobilePhone")],
            title_field: "Name".into(),
            relations: vec![],
            identify: true,
            collection: Some("Lead".into()),
            id_field: Some("Id".into()),
            sensitive: vec![],
        },
    ]
}

/// The Task fields a call lands in.
pub fn default_mapping() -> Vec<FieldRule> {
    let template = |target: &str, t: &str| FieldRule { target: target.into(), source: None, template: Some(t.into()), transform: None, value: None };
    let source = |target: &str, s: &str, transform: Option<&str>| FieldRule {
        target: target.into(),
        source: Some(s.into()),
        template: None,
        transform: transform.map(str::to_string),
        value: None,
    };
    let value = |target: &str, v: &str| FieldRule { target: target.into(), source: None, template: None, transform: None, value: Some(v.into()) };
    vec![
        template("Subject", "{{direction|capitalize}} {{channel}} {{customer.number}} ({{outcome}})"),
        template(
            "Description",
            "Disposition: {{disposition.code}} {{disposition.category}}\nNotes: {{notes}}\nSummary: {{summary}}\nTranscript:\n{{transcript}}\nRecording: {{recording_url}}\nConversation: {{conversation.url}}",
        ),
        source("CallType", "direction", Some("capitalize")),
        source("CallDurationInSeconds", "duration_seconds", Some("integer")),
        source("CallDisposition", "disposition.code", None),
        source("CallObject", "conversation.external_id", None),
        value("Status", "Completed"),
        value("TaskSubtype", "Call"),
        source("ActivityDate", "offered_at", Some("date")),
    ]
}

// --- Helpers ----------------------------------------------------------------------------

/// The Salesforce object of `spec`: its `collection`, else its name with a capital letter.
fn object_name(spec: &EntitySpec) -> String {
    if let Some(c) = spec.collection.as_ref().filter(|c| !c.is_empty()) {
        return c.clone();
    }
    let mut chars = spec.name.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn id_field(spec: &EntitySpec) -> &str {
    spec.id_field.as_deref().filter(|f| !f.is_empty()).unwrap_or("Id")
}

/// Every field `spec` needs, each once (SOQL refuses a field selected twice).
fn select_fields(spec: &EntitySpec) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let all = std::iter::once(id_field(spec))
        .chain(std::iter::once(spec.title_field.as_str()))
        .chain(spec.phone_fields.iter().map(String::as_str))
        .chain(spec.email_fields.iter().map(String::as_str))
        .chain(spec.display_fields.iter().map(|d| d.field.as_str()))
        .chain(spec.relations.iter().map(|r| r.field.as_str()));
    for f in all {
        if !f.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
            out.push(f.to_string());
        }
    }
    out
}

fn select_list(spec: &EntitySpec) -> Result<String, CrmError> {
    let fields = select_fields(spec);
    for f in &fields {
        check_field_name(f)?;
    }
    Ok(fields.join(", "))
}

/// `FIND {…} IN PHONE FIELDS RETURNING Contact(…), … LIMIT n`.
fn sosl_phone_search(terms: &[String], specs: &[&EntitySpec], limit: usize) -> Result<String, CrmError> {
    let term = terms.iter().map(|t| sosl_escape(t)).collect::<Vec<_>>().join(" OR ");
    let mut returning = vec![];
    for spec in specs {
        returning.push(format!("{}({})", object_name(spec), select_list(spec)?));
    }
    Ok(format!("FIND {{{term}}} IN PHONE FIELDS RETURNING {} LIMIT {limit}", returning.join(", ")))
}

/// Loose hits are dropped after the search, so ask for more than will be shown.
fn sosl_limit(limit: usize) -> usize {
    limit.saturating_mul(2).clamp(1, 2000)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A field name or relationship path (`Account.Name`), so nothing else reaches a query.
fn check_field_name(name: &str) -> Result<(), CrmError> {
    if name.split('.').all(is_identifier) {
        Ok(())
    } else {
        Err(CrmError::Permanent { message: format!("`{name}` is not a Salesforce field name") })
    }
}

fn check_key(key: &str) -> Result<(), CrmError> {
    if key.is_empty() || key.chars().count() > 255 {
        return Err(CrmError::Permanent { message: format!("activity key `{}` must be 1 to 255 characters for a Salesforce External ID", crate::client::truncate(key)) });
    }
    Ok(())
}

/// A string literal's content in SOQL: `\` and `'` escaped.
fn soql_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// LIKE wildcards taken literally (`\%`, `\_`); apply after [`soql_escape`], which would
/// double the backslash.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '_' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// SOSL's reserved characters escaped with a backslash.
fn sosl_escape(s: &str) -> String {
    const RESERVED: &[char] = &['?', '&', '|', '!', '{', '}', '[', ']', '(', ')', '^', '~', '*', ':', '\\', '"', '\'', '+', '-'];
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A URL path segment with everything but unreserved characters percent-encoded (`.` too:
/// Salesforce would read `key.json` as a format suffix).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2024-05-01T10:00:00Z`: SOQL's datetime literal (no quotes, whole seconds).
fn soql_datetime(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn iso_millis(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn records(answer: &Value) -> &[Value] {
    answer.get("records").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A record's fields as strings; a lookup's fields (`"Account":{"Name":"Acme"}`) both as
/// `Account.Name` (the path a config names) and `AccountName` (for templates and prefill).
fn record_fields(v: &Value) -> BTreeMap<String, String> {
    let mut fields = string_fields(v);
    if let Some(obj) = v.as_object() {
        for (rel, inner) in obj.iter().filter(|(k, inner)| *k != "attributes" && inner.is_object()) {
            for (k, value) in string_fields(inner) {
                fields.insert(format!("{rel}.{k}"), value.clone());
                fields.entry(format!("{rel}{k}")).or_insert(value);
            }
        }
    }
    fields
}

/// A field's value, looked up as Salesforce does: case-insensitively.
fn field_value<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)).map(String::as_str)
}

fn candidate(spec: &EntitySpec, record: &Value) -> Option<Candidate> {
    candidate_of(spec, record_fields(record))
}

/// The candidate, with the spec's field names matched to Salesforce's spelling (`name`
/// in a config finds `Name`).
fn candidate_of(spec: &EntitySpec, fields: BTreeMap<String, String>) -> Option<Candidate> {
    let id = field_value(&fields, id_field(spec))?.to_string();
    let canonical = |name: &str| -> String {
        if fields.contains_key(name) {
            return name.to_string();
        }
        fields.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.to_string())
    };
    let mut shown = spec.clone();
    shown.title_field = canonical(&spec.title_field);
    for d in &mut shown.display_fields {
        d.field = canonical(&d.field);
    }
    Some(Candidate::from_fields(&shown, &id, fields))
}

/// Task text fields and their lengths: a long transcript is cut rather than refused.
const TASK_TEXT_LIMITS: &[(&str, usize)] = &[("Subject", 255), ("Description", 32_000), ("CallDisposition", 255), ("CallObject", 255)];

/// Fields Salesforce sets on create only: an update (an upsert that finds its Task) that
/// names them is refused.
const CREATE_ONLY_TASK_FIELDS: &[&str] = &["TaskSubtype"];

fn task_value(field: &str, value: &Value) -> Value {
    let value = match value {
        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()),
        other => other.clone(),
    };
    let limit = TASK_TEXT_LIMITS.iter().find(|(f, _)| f.eq_ignore_ascii_case(field)).map(|(_, n)| *n);
    match (value, limit) {
        (Value::String(s), Some(max)) if s.chars().count() > max => Value::String(s.chars().take(max - 1).chain(std::iter::once('…')).collect()),
        (v, _) => v,
    }
}

fn has_create_only(body: &Map<String, Value>) -> bool {
    body.keys().any(|k| CREATE_ONLY_TASK_FIELDS.iter().any(|c| c.eq_ignore_ascii_case(k)))
}

fn without_create_only(body: &Map<String, Value>) -> Map<String, Value> {
    body.iter().filter(|(k, _)| !CREATE_ONLY_TASK_FIELDS.iter().any(|c| c.eq_ignore_ascii_case(k))).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn refuses_create_only(e: &CrmError) -> bool {
    has_code(e, "INVALID_FIELD_FOR_INSERT_UPDATE")
        && matches!(e, CrmError::Permanent { message } if CREATE_ONLY_TASK_FIELDS.iter().any(|f| message.contains(f)))
}

/// Whether the error carries Salesforce's `errorCode` (the shared HTTP layer writes it as
/// `message (CODE)`).
fn has_code(e: &CrmError, code: &str) -> bool {
    let message = match e {
        CrmError::Transient { message, .. } | CrmError::Permanent { message } => message,
    };
    message.contains(&format!("({code})"))
}

/// Salesforce error codes that go away by themselves, whatever the HTTP status: the org's
/// API allocation (403) and record locks held by someone else (400).
const TRANSIENT_CODES: &[&str] = &["REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"];

fn reclassify(e: CrmError) -> CrmError {
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
    fn config_defaults_fill_everything_but_the_client() {
        // No default login URL: the generic login.salesforce.com does not serve the client credentials flow.
        assert!(serde_json::from_value::<SalesforceConfig>(json!({ "client_id": "abc" })).is_err(), "login_url is required");
        let c: SalesforceConfig = serde_json::from_value(json!({ "login_url": "https://acme.my.salesforce.com", "client_id": "abc" })).expect("minimal config");
        assert_eq!(c, SalesforceConfig::new("https://acme.my.salesforce.com", "abc"));
        assert_eq!(c.token_endpoint(), "https://acme.my.salesforce.com/services/oauth2/token");
        assert_eq!((c.api_version.as_str(), c.activity_key_field.as_str(), c.batch_size, c.timeout_ms), ("62.0", "CxbridgeKey__c", 25, 10_000));
        assert!(c.validate().is_ok());
        let unknown = serde_json::from_value::<SalesforceConfig>(json!({ "login_url": "https://acme.my.salesforce.com", "client_id": "abc", "batchsize": 3 }));
        assert!(unknown.is_err());
    }

    #[test]
    fn config_mistakes_are_named() {
        let check = |change: &dyn Fn(&mut SalesforceConfig), want: SalesforceConfigError| {
            let mut c = SalesforceConfig::new("https://acme.my.salesforce.com", "abc");
            change(&mut c);
            assert_eq!(c.validate(), Err(want));
        };
        check(&|c| c.batch_size = 26, SalesforceConfigError::BatchSize(26));
        check(&|c| c.batch_size = 0, SalesforceConfigError::BatchSize(0));
        check(&|c| c.api_version = "v62".into(), SalesforceConfigError::ApiVersion("v62".into()));
        check(&|c| c.activity_key_field = "Key c".into(), SalesforceConfigError::KeyField("Key c".into()));
        check(&|c| c.client_id = " ".into(), SalesforceConfigError::MissingClientId);
        check(&|c| c.normalized_phone_field = Some("Phone E164".into()), SalesforceConfigError::PhoneField("Phone E164".into()));
        check(&|c| c.timeout_ms = 0, SalesforceConfigError::Zero("timeout_ms"));
        check(&|c| c.login_url = "acme.my.salesforce.com".into(), SalesforceConfigError::Url { key: "login_url", value: "acme.my.salesforce.com".into() });
        check(&|c| c.login_url = "http://acme.my.salesforce.com".into(), SalesforceConfigError::Url { key: "login_url", value: "http://acme.my.salesforce.com".into() });
        check(&|c| c.token_url = Some("http://10.0.0.5/token".into()), SalesforceConfigError::Url { key: "token_url", value: "http://10.0.0.5/token".into() });
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut c = SalesforceConfig::new("https://acme.my.salesforce.com", "abc");
        c.client_secret = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn escaping() {
        let check = |f: fn(&str) -> String, input: &str, want: &str| assert_eq!(f(input), want, "{input}");
        check(sosl_escape, "+49 (30) 123-4", "\\+49 \\(30\\) 123\\-4");
        check(sosl_escape, "a?b*c:d\"e'f\\g", "a\\?b\\*c\\:d\\\"e\\'f\\\\g");
        check(sosl_escape, "{x}[y]^~!&|", "\\{x\\}\\[y\\]\\^\\~\\!\\&\\|");
        check(soql_escape, "O'Brien \\ co", "O\\'Brien \\\\ co");
        check(like_escape, "100%_", "100\\%\\_");
        check(encode_segment, "cxbridge:conv-1.a/b c", "cxbridge%3Aconv-1%2Ea%2Fb%20c");
    }

    #[test]
    fn objects_and_fields_of_entities() {
        let plain = EntitySpec::simple("opportunity", &["Phone"], "Name");
        assert_eq!(object_name(&plain), "Opportunity");
        assert_eq!(id_field(&plain), "Id");
        let contact = &default_entities()[0];
        assert_eq!(
            select_fields(contact),
            ["Id", "Name", "Phone", "MobilePhone", "HomePhone", "OtherPhone", "Email", "Account.Name", "AccountId"]
        );
        assert!(check_field_name("Account.Name").is_ok());
        assert!(check_field_name("Name) FROM User --").is_err());
    }

    #[test]
    fn lookups_are_flattened() {
        let r = json!({ "attributes": { "type": "Contact" }, "Id": "003", "Name": "Ada", "Account": { "attributes": { "type": "Account" }, "Name": "Acme" } });
        let f = record_fields(&r);
        assert_eq!(f.get("Account.Name").map(String::as_str), Some("Acme"));
        assert_eq!(f.get("AccountName").map(String::as_str), Some("Acme"));
        assert!(!f.contains_key("attributes"));
        let c = candidate(&default_entities()[0], &r).expect("candidate");
        assert_eq!(c.display, vec![("Name".to_string(), "Ada".to_string()), ("Account name".to_string(), "Acme".to_string())]);
    }

    #[test]
    fn api_usage_header() {
        assert_eq!(parse_api_usage("api-usage=18/15000"), Some(ApiUsage { used: 18, max: 15000 }));
        assert_eq!(parse_api_usage("per-app-api-usage=2/250(appName=x), api-usage=25/5000"), Some(ApiUsage { used: 25, max: 5000 }));
        assert_eq!(parse_api_usage("nonsense"), None);
    }

    #[test]
    fn long_text_is_cut_to_fit() {
        let long = "x".repeat(40_000);
        let v = task_value("Description", &json!(long));
        assert_eq!(v.as_str().map(|s| s.chars().count()), Some(32_000));
        assert_eq!(task_value("CallDurationInSeconds", &json!(5)), json!(5));
        assert_eq!(task_value("Custom__c", &json!(["a"])), json!("[\"a\"]"));
    }

    #[test]
    fn salesforce_codes_that_pass_are_transient() {
        let permanent = |code: &str| CrmError::Permanent { message: format!("Salesforce answered 403 to GET /x: TotalRequests Limit exceeded. ({code})") };
        assert!(matches!(reclassify(permanent("REQUEST_LIMIT_EXCEEDED")), CrmError::Transient { .. }));
        assert!(matches!(reclassify(permanent("UNABLE_TO_LOCK_ROW")), CrmError::Transient { .. }));
        assert!(matches!(reclassify(permanent("INVALID_FIELD")), CrmError::Permanent { .. }));
    }

    #[test]
    fn the_default_mapping_is_valid() {
        let mapping = cxbridge_domain::mapping::Mapping { fields: default_mapping(), ..Default::default() };
        assert_eq!(mapping.validate(), Ok(()));
    }
}
