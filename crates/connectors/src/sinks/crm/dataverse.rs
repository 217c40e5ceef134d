//! Microsoft Dataverse (Dynamics 365 Sales / Customer Service) over its Web API (OData v4).
//!
//! - Identification: one `GET {collection}?$filter=…` per identifying entity, all entities at
//!   once (the pop waits for the slowest, not for the sum), every phone column against every
//!   notation the number is commonly typed in, or one `eq` on a column holding E.164.
//! - Memorialization: an **upsert by alternate key** (`PATCH phonecalls(cxb_conversationkey='…')`),
//!   so a retry after a lost answer lands on the same row; several at once go in `$batch`
//!   requests of independent parts (no change set: one bad activity fails alone).
//! - Change tracking (`Prefer: odata.track-changes`) feeds the hub's local phone index.
//!
//! Everything goes through [`CrmHttp`]: the Entra ID token cache, the service-protection
//! limits (6,000 requests / 5 min, 52 in flight), timeouts and the 401 retry.
//!
//! Names used here, as Dataverse has them: the *logical name* of a table (`contact`), its
//! *entity set* (`contacts`, used in URLs), its primary key (`contactid`), a lookup column's
//! value property (`_parentcustomerid_value`) and the navigation property a lookup is set
//! through (`parentcustomerid_account@odata.bind`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::conversation::Direction;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, DisplayField, EntitySpec, RecordRef, Relation, SearchQuery, TimelineEntry};
use cxbridge_domain::mapping::FieldRule;
use cxbridge_domain::phone::PhoneNormalizer;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::http::{Answer, Call, CrmHttp, classify, retry_after, vendor_message};
use crate::client::limits::{Limits, RateLimiter};
use crate::client::oauth::{ClientCredentials, Secret, TokenCache};
use super::string_fields;

/// The `[crm.dataverse]` section of the configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataverseConfig {
    /// The environment URL, as the Power Platform admin centre shows it
    /// (e.g. `https://contoso.crm4.dynamics.com`). Required.
    pub url: String,
    /// The Microsoft Entra ID tenant (directory) id the app registration lives in. Required.
    pub tenant_id: String,
    /// The application (client) id of the app registration. It must be added to the
    /// environment as an application user with a security role that reads the identified
    /// tables and writes the activity tables (and holds "Act on behalf of another user" when
    /// agents have a `crm_user_id`). Required.
    pub client_id: String,
    /// The app registration's client secret. Better left out here: the hub then reads it
    /// from the environment variable `CXBRIDGE_CRM_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The OAuth 2.0 token endpoint. Default:
    /// `https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The scope tokens are requested for. Default: `{url}/.default`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The Web API version in request URLs (`/api/data/v{api_version}/`). Default `9.2`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The column of an alternate key on the activity tables (`phonecall`, and any other
    /// activity table the mapping writes to) that holds the hub's idempotency key
    /// (`cxbridge:{conversation id}`). Activities are upserted by it, so a retry never writes
    /// a second row. Create it as a text column (100 characters) and define an alternate key
    /// on it. Default `cxb_conversationkey`.
    #[serde(default = "default_activity_key_field")]
    pub activity_key_field: String,
    /// A column present on every identifying table that holds the phone number in E.164
    /// (`+14155550100`), kept by a plug-in, a flow or a calculated column. When set, callers
    /// are looked up with one exact match on it; when not set, every phone column is searched
    /// in every notation the number is commonly typed in. Default: not set.
    #[serde(default)]
    pub normalized_phone_field: Option<String>,
    /// Requests allowed per window (Dataverse's service protection: 6,000 per 5 minutes per
    /// user). A `$batch` counts as the requests in it. Default 6000.
    #[serde(default = "default_requests_per_window")]
    pub requests_per_window: u32,
    /// Length of that window in seconds. Default 300.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Requests in flight at once (Dataverse allows 52 concurrent requests per user). Default 52.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Activities per `$batch` request when several are written at once (1 to 1,000;
    /// Dataverse refuses larger batches). Default 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Timeout of one request in milliseconds. A `$batch` gets 100 ms more per request in it,
    /// at most two minutes (Dataverse's own limit for a batch). Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Records per page of the change-tracking feed that fills the local phone index
    /// (1 to 5,000). Default 5000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_api_version() -> String {
    "9.2".into()
}
fn default_activity_key_field() -> String {
    "cxb_conversationkey".into()
}
fn default_requests_per_window() -> u32 {
    6000
}
fn default_window_secs() -> u64 {
    300
}
fn default_max_in_flight() -> u32 {
    52
}
fn default_batch_size() -> u32 {
    100
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_page_size() -> u32 {
    5000
}

impl std::fmt::Debug for DataverseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseConfig")
            .field("url", &self.url)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .field("api_version", &self.api_version)
            .field("activity_key_field", &self.activity_key_field)
            .field("normalized_phone_field", &self.normalized_phone_field)
            .field("requests_per_window", &self.requests_per_window)
            .field("window_secs", &self.window_secs)
            .field("max_in_flight", &self.max_in_flight)
            .field("batch_size", &self.batch_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl DataverseConfig {
    /// The environment URL without a trailing slash.
    pub fn environment_url(&self) -> &str {
        self.url.trim().trim_end_matches('/')
    }

    pub fn effective_token_url(&self) -> String {
        self.token_url.clone().unwrap_or_else(|| format!("https://login.microsoftonline.com/{}/oauth2/v2.0/token", self.tenant_id.trim()))
    }

    pub fn effective_scope(&self) -> String {
        self.scope.clone().unwrap_or_else(|| format!("{}/.default", self.environment_url()))
    }

    /// `{url}/api/data/v{api_version}`.
    pub fn api_url(&self) -> String {
        format!("{}/api/data/v{}", self.environment_url(), self.api_version.trim())
    }

    /// Checks what can be checked without asking Dataverse.
    pub fn validate(&self) -> Result<(), DataverseConfigError> {
        let url = self.environment_url();
        let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(DataverseConfigError::Url(self.url.clone()));
        }
        if url.contains(['?', '#']) {
            return Err(DataverseConfigError::Url(self.url.clone()));
        }
        for (key, value) in [("url", url.to_string()), ("token_url", self.effective_token_url())] {
            if let Some(reason) = crate::client::insecure_url(&value) {
                return Err(DataverseConfigError::Insecure { key, url: value, reason });
            }
        }
        for (field, value) in [("tenant_id", &self.tenant_id), ("client_id", &self.client_id)] {
            if value.trim().is_empty() {
                return Err(DataverseConfigError::Missing(field));
            }
        }
        let v = self.api_version.trim();
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(DataverseConfigError::ApiVersion(self.api_version.clone()));
        }
        if !is_column_name(&self.activity_key_field) {
            return Err(DataverseConfigError::Column { field: "activity_key_field", value: self.activity_key_field.clone() });
        }
        if let Some(f) = &self.normalized_phone_field
            && !is_column_name(f)
        {
            return Err(DataverseConfigError::Column { field: "normalized_phone_field", value: f.clone() });
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return Err(DataverseConfigError::BatchSize(self.batch_size));
        }
        if !(1..=MAX_PAGE).contains(&self.page_size) {
            return Err(DataverseConfigError::PageSize(self.page_size));
        }
        for (field, zero) in [
            ("requests_per_window", self.requests_per_window == 0),
            ("window_secs", self.window_secs == 0),
            ("max_in_flight", self.max_in_flight == 0),
            ("timeout_ms", self.timeout_ms == 0),
        ] {
            if zero {
                return Err(DataverseConfigError::Zero(field));
            }
        }
        Ok(())
    }
}

/// Dataverse refuses `$batch` requests of more than 1,000 requests.
const MAX_BATCH: u32 = 1000;
/// Dataverse's largest page (`odata.maxpagesize`).
const MAX_PAGE: u32 = 5000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataverseConfigError {
    #[error("[crm.dataverse] url `{0}` is not an environment URL such as https://contoso.crm4.dynamics.com")]
    Url(String),
    #[error("[crm.dataverse] {key} `{url}`: {reason}")]
    Insecure { key: &'static str, url: String, reason: String },
    #[error("[crm.dataverse] `{0}` is required")]
    Missing(&'static str),
    #[error("[crm.dataverse] api_version `{0}` is not a Web API version such as 9.2")]
    ApiVersion(String),
    #[error("[crm.dataverse] {field} `{value}` is not a Dataverse column name (letters, digits and `_`)")]
    Column { field: &'static str, value: String },
    #[error("[crm.dataverse] batch_size {0} is out of range: Dataverse takes 1 to 1000 requests per $batch")]
    BatchSize(u32),
    #[error("[crm.dataverse] page_size {0} is out of range: Dataverse pages hold 1 to 5000 records")]
    PageSize(u32),
    #[error("[crm.dataverse] `{0}` must be greater than 0")]
    Zero(&'static str),
    #[error("[crm.dataverse] no client secret: set `client_secret` or the environment variable CXBRIDGE_CRM_CLIENT_SECRET")]
    NoSecret,
}

/// The entities identification searches in Dataverse when the config declares none:
/// contacts, accounts and leads with their standard columns.
pub fn default_entities() -> Vec<EntitySpec> {
    let df = |label: &str, field: &str| DisplayField { label: label.into(), field: field.into() };
    let spec = |name: &str, id: &str, phones: &[&str], title: &str| EntitySpec {
        name: name.into(),
        phone_fields: phones.iter().map(|s| s.to_string()).collect(),
        email_fields: vec!["emailaddress1".into()],
        display_fields: vec![],
        title_field: title.into(),
        relations: vec![],
        identify: true,
        collection: Some(entity_set(name)),
        id_field: Some(id.into()),
        sensitive: vec![],
    };
    let mut contact = spec("contact", "contactid", &["telephone1", "mobilephone", "telephone2"], "fullname");
    contact.display_fields = vec![
        df("Name", "fullname"),
        df("Phone", "telephone1"),
        df("Mobile", "mobilephone"),
        df("E-mail", "emailaddress1"),
        // The name of the lookup's record, from its formatted-value annotation (see `record_fields`).
        df("Company", "parentcustomerid_name"),
    ];
    contact.relations = vec![Relation { name: "account".into(), field: "_parentcustomerid_value".into(), entity: "account".into() }];
    let mut account = spec("account", "accountid", &["telephone1", "telephone2"], "name");
    account.display_fields = vec![df("Account", "name"), df("Phone", "telephone1"), df("E-mail", "emailaddress1")];
    let mut lead = spec("lead", "leadid", &["telephone1", "mobilephone"], "fullname");
    lead.display_fields = vec![df("Lead", "fullname"), df("Phone", "telephone1"), df("Mobile", "mobilephone"), df("Company", "companyname")];
    vec![contact, account, lead]
}

/// The phone-call columns the memorialization mapping fills when the config sets none.
pub fn default_mapping() -> Vec<FieldRule> {
    let template = |target: &str, t: &str| FieldRule { target: target.into(), source: None, template: Some(t.into()), transform: None, value: None };
    let source = |target: &str, s: &str, transform: Option<&str>| FieldRule {
        target: target.into(),
        source: Some(s.into()),
        template: None,
        transform: transform.map(str::to_string),
        value: None,
    };
    vec![
        template("subject", "{{direction|capitalize}} call {{customer.number}} ({{outcome}})"),
        template(
            "description",
            "Agent: {{agent}}\nQueue: {{queue}}\nDuration: {{duration}}\nDisposition: {{disposition.code}} {{disposition.category}}\n\
             Notes: {{notes}}\nSummary: {{summary}}\nTranscript: {{transcript}}\nRecording: {{recording_url}}\nConversation: {{conversation.url}}",
        ),
        source("phonenumber", "customer.e164", None),
        source("directioncode", "direction", Some("is_outbound")),
        source("actualdurationminutes", "duration_seconds", Some("minutes")),
        source("actualstart", "offered_at", None),
        source("actualend", "ended_at", None),
    ]
}

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
const LOOKUP_LOGICAL_NAME: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";
/// Asks for the names of lookup records (shown as `{lookup}_name`) and the table a lookup points to.
const PREFER_ANNOTATIONS: &str = "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname\"";
/// Impersonation by `systemuserid` (agents' `crm_user_id`). `CallerObjectId` would take the
/// user's Entra ID object id instead, which the hub does not know.
const CALLER_HEADER: &str = "MSCRMCallerID";
/// Dataverse's `ChangeTrackingNotEnabledForEntity`.
const CHANGE_TRACKING_OFF: &str = "0x80072491";
/// Dataverse's `ExpiredVersionStamp`: "Version stamp associated with the client has expired.
/// Please perform a full sync." A delta token is good for `Organization.ExpireChangeTrackingInDays`
/// (7 days by default; "If unprocessed changes are older than the configured value, the
/// system throws an exception": Use change tracking to synchronize data with external
/// systems, learn.microsoft.com/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems).
/// The only way on is what the message says: a full sync.
const EXPIRED_VERSION_STAMP: &str = "0x80044352";
/// Lookups that can point to several tables and are set through `{lookup}_{entity}`.
const CUSTOMER_LOOKUPS: &[&str] = &["parentcustomerid", "customerid"];
/// Entities an activity party can name besides users (the customer side of a call).
const PARTY_ENTITIES: &[&str] = &["contact", "account", "lead"];

pub struct Dataverse {
    inner: Arc<Inner>,
}

struct Inner {
    http: CrmHttp,
    /// `{url}/api/data/v{version}`.
    api: String,
    /// The path part of `api` (`/api/data/v9.2`), for the request lines inside a `$batch`.
    api_path: String,
    key_field: String,
    normalized_phone_field: Option<String>,
    batch_size: usize,
    page_size: u32,
    timeout: Duration,
    normalizer: PhoneNormalizer,
    entities: Vec<EntitySpec>,
    batches_sent: AtomicU64,
}

impl Dataverse {
    /// `secret` is the resolved client secret (config or `CXBRIDGE_CRM_CLIENT_SECRET`).
    pub fn new(config: &DataverseConfig, secret: Secret, normalizer: PhoneNormalizer, http: reqwest::Client) -> Result<Self, DataverseConfigError> {
        config.validate()?;
        if secret.is_empty() {
            return Err(DataverseConfigError::NoSecret);
        }
        let credentials = ClientCredentials {
            token_url: config.effective_token_url(),
            client_id: config.client_id.trim().to_string(),
            client_secret: secret,
            scope: Some(config.effective_scope()),
            default_lifetime: Duration::from_secs(3599),
        };
        let tokens = Arc::new(TokenCache::new(http.clone(), credentials));
        let limiter = Arc::new(RateLimiter::new(Limits {
            requests_per_window: config.requests_per_window,
            window: Duration::from_secs(config.window_secs),
            max_in_flight: config.max_in_flight,
        }));
        let api = config.api_url();
        let api_path = path_of(&api).to_string();
        Ok(Self {
            inner: Arc::new(Inner {
                http: CrmHttp::new(http, tokens, limiter, "Dataverse"),
                api,
                api_path,
                key_field: config.activity_key_field.clone(),
                normalized_phone_field: config.normalized_phone_field.clone(),
                batch_size: config.batch_size as usize,
                page_size: config.page_size,
                timeout: Duration::from_millis(config.timeout_ms),
                normalizer,
                entities: default_entities(),
                batches_sent: AtomicU64::new(0),
            }),
        })
    }

    /// The entities this connection knows (activities may regard them, relations may point
    /// to them): the configured ones, plus the defaults of [`default_entities`] for names
    /// the configuration does not declare.
    pub fn with_entities(mut self, entities: Vec<EntitySpec>) -> Self {
        let mut all = entities;
        for d in default_entities() {
            if !all.iter().any(|e| e.name == d.name) {
                all.push(d);
            }
        }
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.entities = all;
        }
        self
    }

    pub fn entities(&self) -> &[EntitySpec] {
        &self.inner.entities
    }

    /// `{url}/api/data/v{version}`.
    pub fn api_url(&self) -> &str {
        &self.inner.api
    }

    /// Access tokens fetched so far (status page).
    pub fn tokens_fetched(&self) -> u64 {
        self.inner.http.tokens.fetched()
    }

    /// Requests counted in the current service-protection window (status page).
    pub async fn requests_in_window(&self) -> usize {
        self.inner.http.limiter.used().await
    }

    pub fn limits(&self) -> Limits {
        self.inner.http.limiter.limits()
    }

    /// `$batch` requests sent so far.
    pub fn batches_sent(&self) -> u64 {
        self.inner.batches_sent.load(Ordering::Relaxed)
    }
}

/// One activity upsert, ready to send alone or as a part of a `$batch`.
#[derive(Debug, Clone)]
struct Upsert {
    /// Relative to the API root: `phonecalls(cxb_conversationkey='…')?$select=activityid`.
    target: String,
    body: String,
    caller: Option<String>,
}

impl Inner {
    fn entity(&self, name: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.name == name)
    }

    async fn send(&self, method: Method, url: String, build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync), cost: u32, timeout: Duration) -> Result<Answer, CrmError> {
        self.http.send(Call { method, url, build, cost, timeout }).await
    }

    async fn get(&self, url: String, prefer: &str) -> Result<Value, CrmError> {
        let build = |rb: RequestBuilder| odata(rb).header("Prefer", prefer);
        self.send(Method::GET, url, &build, 1, self.timeout).await?.json()
    }

    /// `GET {collection}?{query}`: the records of the answer's `value`.
    async fn query(&self, collection: &str, query: &[(&str, String)]) -> Result<Vec<Value>, CrmError> {
        let url = format!("{}/{collection}?{}", self.api, query_string(query));
        let v = self.get(url, PREFER_ANNOTATIONS).await?;
        match v.get("value") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(CrmError::Transient { message: format!("Dataverse answered GET {collection} without a `value` list"), retry_after: None }),
        }
    }

    fn candidate(&self, spec: &EntitySpec, record: &Value) -> Option<Candidate> {
        let id_field = id_field_of(spec);
        let fields = record_fields(record);
        let id = fields.get(&id_field)?.clone();
        Some(Candidate::from_fields(spec, &id, fields))
    }

    async fn find_in(&self, spec: &EntitySpec, e164: &str, limit: usize) -> Result<Vec<Candidate>, CrmError> {
        let Some(filter) = self.phone_filter(spec, e164)? else { return Ok(vec![]) };
        let collection = checked_collection(spec)?;
        let records = self.query(&collection, &[("$select", select_list(spec)?), ("$filter", filter), ("$top", limit.to_string())]).await?;
        Ok(records.iter().filter_map(|r| self.candidate(spec, r)).take(limit).collect())
    }

    /// The `$filter` finding `e164` in `spec`'s phone columns; `None` when it has none.
    fn phone_filter(&self, spec: &EntitySpec, e164: &str) -> Result<Option<String>, CrmError> {
        if let Some(f) = &self.normalized_phone_field {
            return Ok(Some(format!("{f} eq {}", literal(e164))));
        }
        if spec.phone_fields.is_empty() {
            return Ok(None);
        }
        let notations = self.normalizer.notations(e164);
        let mut terms = Vec::with_capacity(spec.phone_fields.len() * notations.len());
        for field in &spec.phone_fields {
            let field = column(field)?;
            for n in &notations {
                terms.push(format!("{field} eq {}", literal(n)));
            }
        }
        Ok(Some(format!("({})", terms.join(" or "))))
    }

    /// The request that upserts `a` by its key.
    fn upsert_request(&self, a: &Activity) -> Result<Upsert, CrmError> {
        let kind = column(&a.kind).map_err(|_| CrmError::Permanent { message: format!("activity kind `{}` is not a Dataverse table name", a.kind) })?;
        let collection = entity_set(kind);
        let mut body = Map::new();
        for (k, v) in &a.fields {
            if *k == self.key_field {
                continue; // The key is in the URL; Dataverse fills the column from it.
            }
            let name = k.strip_suffix("@odata.bind").unwrap_or(k);
            if !is_column_name(name) {
                return Err(CrmError::Permanent { message: format!("mapped field `{k}` is not a Dataverse column name") });
            }
            body.insert(k.clone(), fit(kind, k, v));
        }
        let caller = match a.on_behalf_of.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) if is_guid(id) => Some(id.to_ascii_lowercase()),
            Some(id) => {
                tracing::warn!(crm_user_id = id, "the agent's crm_user_id is not a Dataverse systemuserid (a GUID); the activity is written as the application user");
                None
            }
            None => None,
        };
        let mut parties = vec![];
        if let Some(r) = a.regarding.first() {
            let spec = self.entity(&r.entity).ok_or_else(|| CrmError::Permanent {
                message: format!(
                    "the activity regards a `{}` record, but this Dataverse connection knows no such entity (known: {}); declare it under [[crm.entities]]",
                    r.entity,
                    self.entities.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            let entity = column(&spec.name)?;
            let target = format!("/{}({})", checked_collection(spec)?, guid(&r.id)?);
            body.insert(format!("regardingobjectid_{entity}_{kind}@odata.bind"), Value::String(target.clone()));
            if PARTY_ENTITIES.contains(&entity) {
                parties.push((format!("partyid_{entity}@odata.bind"), target, Party::Customer));
            }
        }
        if let Some(user) = &caller {
            parties.push(("partyid_systemuser@odata.bind".into(), format!("/systemusers({user})"), Party::Agent));
        }
        if let Some(masks) = party_masks(kind, a.direction) {
            let list: Vec<Value> = parties
                .into_iter()
                .map(|(bind, target, party)| {
                    let mask = match party {
                        Party::Customer => masks.0,
                        Party::Agent => masks.1,
                    };
                    let mut party = Map::new();
                    party.insert(bind, Value::String(target));
                    party.insert("participationtypemask".into(), Value::from(mask));
                    Value::Object(party)
                })
                .collect();
            if !list.is_empty() {
                body.insert(format!("{kind}_activity_parties"), Value::Array(list));
            }
        }
        let key = encode_strict(&key_value(&a.key).replace('\'', "''"));
        let target = format!("{collection}({}='{key}')?$select=activityid", self.key_field);
        let body = serde_json::to_string(&Value::Object(body)).map_err(|e| CrmError::Permanent { message: format!("activity `{}`: {e}", a.key) })?;
        Ok(Upsert { target, body, caller })
    }

    async fn upsert_one(&self, u: &Upsert) -> Result<String, CrmError> {
        let build = |rb: RequestBuilder| {
            let rb = odata(rb).header(CONTENT_TYPE, "application/json").header("Prefer", "return=representation").body(u.body.clone());
            match &u.caller {
                Some(c) => rb.header(CALLER_HEADER, c),
                None => rb,
            }
        };
        let answer = self.send(Method::PATCH, format!("{}/{}", self.api, u.target), &build, 1, self.timeout).await?;
        activity_id(&answer.headers, &answer.body)
    }

    /// Sends `items` (same caller) as one `$batch` of independent parts; one result each.
    async fn upsert_batch(&self, items: &[Upsert]) -> Vec<Result<String, CrmError>> {
        if items.len() == 1 {
            return vec![self.upsert_one(&items[0]).await];
        }
        let boundary = boundary();
        let mut body = String::with_capacity(items.iter().map(|u| u.body.len() + 300).sum());
        for (i, u) in items.iter().enumerate() {
            let _ = write!(
                body,
                "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {}\r\n\r\n\
                 PATCH {}/{} HTTP/1.1\r\nContent-Type: application/json\r\nPrefer: return=representation\r\n",
                i + 1,
                self.api_path,
                u.target
            );
            if let Some(c) = &u.caller {
                let _ = write!(body, "{CALLER_HEADER}: {c}\r\n");
            }
            let _ = write!(body, "\r\n{}\r\n", u.body);
        }
        let _ = write!(body, "--{boundary}--\r\n");
        let caller = items[0].caller.clone();
        let build = |rb: RequestBuilder| {
            let rb = odata(rb)
                .header(CONTENT_TYPE, format!("multipart/mixed;boundary={boundary}"))
                .header("Prefer", "odata.continue-on-error")
                .body(body.clone());
            match &caller {
                Some(c) => rb.header(CALLER_HEADER, c),
                None => rb,
            }
        };
        let n = items.len() as u32;
        let timeout = (self.timeout + Duration::from_millis(100) * n).min(Duration::from_secs(120));
        self.batches_sent.fetch_add(1, Ordering::Relaxed);
        let answer = match self.send(Method::POST, format!("{}/$batch", self.api), &build, n, timeout).await {
            Ok(a) => a,
            Err(e) => return vec![Err(e); items.len()],
        };
        let content_type = answer.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let parts = match parse_batch_response(content_type, &answer.body) {
            Ok(p) => p,
            Err(why) => {
                let e = CrmError::Transient { message: format!("Dataverse sent an unreadable $batch answer ({why})"), retry_after: None };
                return vec![Err(e); items.len()];
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, u) in items.iter().enumerate() {
            let Some(part) = parts.get(i) else {
                out.push(Err(CrmError::Transient {
                    message: format!("Dataverse did not answer request {} of the $batch (PATCH {})", i + 1, path_of(&u.target)),
                    retry_after: None,
                }));
                continue;
            };
            if (200..300).contains(&part.status) {
                out.push(activity_id(&part.headers, &part.body));
                continue;
            }
            let status = StatusCode::from_u16(part.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let after = retry_after(&part.headers);
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.http.limiter.pause(after.unwrap_or(Duration::from_secs(5))).await;
            }
            let message = format!("Dataverse answered {} to PATCH {} in a $batch: {}", part.status, path_of(&u.target), vendor_message(&part.body));
            out.push(Err(classify(status, message, after)));
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Party {
    Customer,
    Agent,
}

/// `participationtypemask` of (customer, agent) on an activity of `kind`, or `None` for
/// kinds without sender/recipient parties (tasks). From = 1, to = 2: the caller is the
/// sender of an inbound call and the recipient of an outbound one. Appointments have a
/// required attendee (5) and an organizer (7) instead.
fn party_masks(kind: &str, direction: Direction) -> Option<(u8, u8)> {
    match kind {
        "task" => None,
        "appointment" => Some((5, 7)),
        _ => Some(match direction {
            Direction::Inbound => (1, 2),
            Direction::Outbound => (2, 1),
        }),
    }
}

/// Standard activity columns and their maximum lengths: longer text is cut (with `…`)
/// rather than having Dataverse refuse the whole activity.
fn max_len(kind: &str, column: &str) -> Option<usize> {
    if !["phonecall", "task", "appointment", "letter", "fax"].contains(&kind) {
        return None;
    }
    match column {
        "subject" => Some(200),
        "description" => Some(2000),
        "phonenumber" if kind == "phonecall" => Some(200),
        _ => None,
    }
}

/// A mapped value as Dataverse takes it: text within the column's length, timestamps to
/// the second (Dataverse stores seconds and refuses more than 7 fractional digits).
fn fit(kind: &str, column: &str, v: &Value) -> Value {
    let Value::String(s) = v else { return v.clone() };
    if s.len() >= 20
        && s.as_bytes().get(4) == Some(&b'-')
        && let Ok(t) = s.parse::<jiff::Timestamp>()
    {
        return Value::String(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    match max_len(kind, column) {
        Some(max) if s.chars().count() > max => Value::String(s.chars().take(max - 1).chain(std::iter::once('…')).collect()),
        _ => v.clone(),
    }
}

#[async_trait]
impl Crm for Dataverse {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        // All entities at once: the pop waits for the slowest query, not for their sum.
        // Dropping the JoinSet (the caller gave up) aborts the queries still running.
        let mut set = tokio::task::JoinSet::new();
        let identifying: Vec<EntitySpec> = entities.iter().filter(|e| e.identify).cloned().collect();
        for (i, spec) in identifying.into_iter().enumerate() {
            let inner = self.inner.clone();
            let e164 = e164.to_string();
            set.spawn(async move { (i, inner.find_in(&spec, &e164, limit).await) });
        }
        let mut results: BTreeMap<usize, Result<Vec<Candidate>, CrmError>> = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => {
                    results.insert(i, r);
                }
                Err(e) => return Err(CrmError::Transient { message: format!("a Dataverse query failed: {e}"), retry_after: None }),
            }
        }
        let mut out = vec![];
        for (_, r) in results {
            out.extend(r?);
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        let inner = &self.inner;
        let rel = spec.relation(relation).ok_or_else(|| CrmError::Permanent { message: format!("entity `{}` has no relation `{relation}`", spec.name) })?;
        let target = inner
            .entity(&rel.entity)
            .ok_or_else(|| CrmError::Permanent { message: format!("relation `{relation}` names entity `{}`, which this Dataverse connection does not know", rel.entity) })?
            .clone();
        let id = guid(&record.id)?;
        let lookup = column(&rel.field)?;
        // By filter rather than by key: a missing record is an empty list, not a 404.
        let rows = inner
            .query(&checked_collection(spec)?, &[("$select", lookup.to_string()), ("$filter", format!("{} eq {id}", column(&id_field_of(spec))?))])
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let Some(target_id) = row.get(lookup).and_then(Value::as_str).filter(|s| !s.is_empty()) else { return Ok(None) };
        // A customer lookup may point to an account or a contact: only the asked-for kind counts.
        if let Some(points_to) = row.get(format!("{lookup}{LOOKUP_LOGICAL_NAME}")).and_then(Value::as_str)
            && points_to != target.name
        {
            return Ok(None);
        }
        let target_id = guid(target_id)?;
        let rows = inner
            .query(&checked_collection(&target)?, &[("$select", select_list(&target)?), ("$filter", format!("{} eq {target_id}", column(&id_field_of(&target))?))])
            .await?;
        Ok(rows.first().and_then(|r| inner.candidate(&target, r)))
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        let u = self.inner.upsert_request(activity)?;
        self.inner.upsert_one(&u).await
    }

    /// Activities with the same agent go into `$batch` requests of `batch_size` (the
    /// impersonation header is on the batch and on each part); the batches run concurrently
    /// within the connection's limits.
    async fn upsert_activities(&self, activities: &[Activity]) -> Vec<Result<String, CrmError>> {
        let mut results: Vec<Option<Result<String, CrmError>>> = vec![None; activities.len()];
        let mut groups: BTreeMap<Option<String>, Vec<(usize, Upsert)>> = BTreeMap::new();
        for (i, a) in activities.iter().enumerate() {
            match self.inner.upsert_request(a) {
                Ok(u) => groups.entry(u.caller.clone()).or_default().push((i, u)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (_, items) in groups {
            for chunk in items.chunks(self.inner.batch_size) {
                let (indexes, upserts): (Vec<usize>, Vec<Upsert>) = chunk.iter().cloned().unzip();
                let inner = self.inner.clone();
                set.spawn(async move {
                    let r = inner.upsert_batch(&upserts).await;
                    indexes.into_iter().zip(r).collect::<Vec<_>>()
                });
            }
        }
        while let Some(joined) = set.join_next().await {
            if let Ok(pairs) = joined {
                for (i, r) in pairs {
                    results[i] = Some(r);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CrmError::Transient { message: "the Dataverse $batch task failed".into(), retry_after: None })))
            .collect()
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        let mut terms = vec![];
        if let Some(text) = query.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            terms.push(format!("contains({},{})", column(&spec.title_field)?, literal(&like_literal(text))));
        }
        for (field, value) in &query.filters {
            let field = column(field)?;
            let is_lookup = field.starts_with('_') && field.ends_with("_value");
            terms.push(if is_lookup && is_guid(value) { format!("{field} eq {value}") } else { format!("{field} eq {}", literal(value)) });
        }
        let top = if query.limit == 0 { 50 } else { query.limit.min(MAX_PAGE as usize) };
        let mut q = vec![("$select", select_list(spec)?)];
        if !terms.is_empty() {
            q.push(("$filter", terms.join(" and ")));
        }
        q.push(("$top", top.to_string()));
        let rows = self.inner.query(&checked_collection(spec)?, &q).await?;
        Ok(rows.iter().filter_map(|r| self.inner.candidate(spec, r)).collect())
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let inner = &self.inner;
        let body = record_body(spec, &inner.entities, fields)?;
        let url = format!("{}/{}?{}", inner.api, checked_collection(spec)?, query_string(&[("$select", select_list(spec)?)]));
        let build = |rb: RequestBuilder| {
            odata(rb).header(CONTENT_TYPE, "application/json").header("Prefer", format!("return=representation,{PREFER_ANNOTATIONS}")).body(body.clone())
        };
        let answer = inner.send(Method::POST, url, &build, 1, inner.timeout).await?;
        self.stored(spec, &answer).await
    }

    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let inner = &self.inner;
        let id = guid(id)?;
        let body = record_body(spec, &inner.entities, fields)?;
        let url = format!("{}/{}({id})?{}", inner.api, checked_collection(spec)?, query_string(&[("$select", select_list(spec)?)]));
        // `If-Match: *`: update only, never create a record under a mistyped id.
        let build = |rb: RequestBuilder| {
            odata(rb)
                .header(CONTENT_TYPE, "application/json")
                .header("If-Match", "*")
                .header("Prefer", format!("return=representation,{PREFER_ANNOTATIONS}"))
                .body(body.clone())
        };
        let answer = inner.send(Method::PATCH, url, &build, 1, inner.timeout).await?;
        self.stored(spec, &answer).await
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let id = guid(&record.id)?;
        let rows = self
            .inner
            .query(
                "activitypointers",
                &[
                    ("$select", "activityid,activitytypecode,subject,createdon,description".into()),
                    ("$filter", format!("_regardingobjectid_value eq {id}")),
                    ("$orderby", "createdon desc".into()),
                    ("$top", limit.min(MAX_PAGE as usize).to_string()),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let fields = string_fields(r);
                Some(TimelineEntry {
                    id: fields.get("activityid")?.clone(),
                    kind: fields.get("activitytypecode").cloned().unwrap_or_default(),
                    subject: fields.get("subject").cloned().unwrap_or_default(),
                    at: fields.get("createdon").cloned().unwrap_or_default(),
                    fields,
                })
            })
            .collect())
    }

    fn has_change_feed(&self) -> bool {
        true
    }

    /// Dataverse change tracking: the first sync pages through the table
    /// (`@odata.nextLink`), its last page carries the `@odata.deltaLink` that is the cursor
    /// of the next sync. The cursor is that link, so it only works with this environment.
    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        let inner = &self.inner;
        let collection = checked_collection(spec)?;
        let url = match cursor {
            None => format!("{}/{collection}?{}", inner.api, query_string(&[("$select", select_list(spec)?)])),
            Some(link) if starts_with_ignore_case(link, &format!("{}/{collection}?", inner.api)) => link.to_string(),
            Some(link) => {
                return Err(CrmError::Permanent {
                    message: format!(
                        "the change-tracking cursor of `{}` ({}) is not a link of {}: the environment changed; delete the local phone index to sync afresh",
                        spec.name,
                        path_of(link),
                        inner.api
                    ),
                });
            }
        };
        let prefer = format!("odata.track-changes,odata.maxpagesize={},{PREFER_ANNOTATIONS}", inner.page_size);
        let mut restarted = None;
        let answer = match inner.get(url, &prefer).await {
            // An expired token (the hub was off longer than the environment keeps changes)
            // is followed by a full sync at once: retrying the same link could never succeed.
            Err(CrmError::Permanent { message } | CrmError::Transient { message, .. }) if cursor.is_some() && message.contains(EXPIRED_VERSION_STAMP) => {
                let full = format!("{}/{collection}?{}", inner.api, query_string(&[("$select", select_list(spec)?)]));
                restarted = Some(format!("Dataverse's change-tracking token had expired (older than the environment's ExpireChangeTrackingInDays): {message}"));
                inner.get(full, &prefer).await
            }
            other => other,
        };
        let page = match answer {
            Ok(v) => v,
            Err(CrmError::Permanent { message }) if message.contains(CHANGE_TRACKING_OFF) || message.contains("enabled for change tracking") => {
                return Err(CrmError::Permanent {
                    message: format!(
                        "change tracking is off for the Dataverse table `{}`: turn on \"Track changes\" in the table's properties \
                         (Power Apps → Tables → {} → Properties → Advanced options), or set local_index = false. {message}",
                        spec.name, spec.name
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let id_field = id_field_of(spec);
        let mut out = ChangePage { restarted, ..ChangePage::default() };
        for item in page.get("value").and_then(Value::as_array).into_iter().flatten() {
            let deleted = item.get("@odata.context").and_then(Value::as_str).is_some_and(|c| c.ends_with("$deletedEntity"))
                || item.get("reason").and_then(Value::as_str) == Some("deleted");
            if deleted {
                if let Some(id) = item.get("id").and_then(Value::as_str) {
                    out.deletes.push(id.to_string());
                }
                continue;
            }
            let fields = record_fields(item);
            if let Some(id) = fields.get(&id_field).cloned() {
                out.upserts.push((id, fields));
            }
        }
        if let Some(next) = page.get("@odata.nextLink").and_then(Value::as_str) {
            out.cursor = next.to_string();
            out.more = true;
        } else if let Some(delta) = page.get("@odata.deltaLink").and_then(Value::as_str) {
            out.cursor = delta.to_string();
            out.more = false;
        } else {
            return Err(CrmError::Transient {
                message: format!("Dataverse answered the change-tracking query of `{}` without a next or delta link", spec.name),
                retry_after: None,
            });
        }
        Ok(out)
    }
}

impl Dataverse {
    /// The record a create/update answered with (`return=representation`), or read back
    /// when Dataverse answered 204 with only its `OData-EntityId`.
    async fn stored(&self, spec: &EntitySpec, answer: &Answer) -> Result<Candidate, CrmError> {
        let inner = &self.inner;
        if answer.status != StatusCode::NO_CONTENT {
            let v = answer.json()?;
            return inner
                .candidate(spec, &v)
                .ok_or_else(|| CrmError::Transient { message: format!("Dataverse answered without the record's `{}`", id_field_of(spec)), retry_after: None });
        }
        let id = entity_id(&answer.headers).ok_or_else(|| CrmError::Transient { message: "Dataverse answered 204 without OData-EntityId".into(), retry_after: None })?;
        let rows = inner.query(&checked_collection(spec)?, &[("$select", select_list(spec)?), ("$filter", format!("{} eq {id}", column(&id_field_of(spec))?))]).await?;
        rows.first()
            .and_then(|r| inner.candidate(spec, r))
            .ok_or_else(|| CrmError::Transient { message: format!("Dataverse does not return the record {id} it just wrote"), retry_after: None })
    }
}

/// The JSON body of a create/update from workflow fields. Values go as JSON strings, which
/// text columns take; number, yes/no and choice columns refuse them. A relation's lookup column
/// (`_parentcustomerid_value`) cannot be written as such: it becomes the navigation
/// property bind (`parentcustomerid_account@odata.bind: "/accounts(…)"`).
fn record_body(spec: &EntitySpec, entities: &[EntitySpec], fields: &BTreeMap<String, String>) -> Result<String, CrmError> {
    let mut body = Map::new();
    for (k, v) in fields {
        if let Some(rel) = spec.relations.iter().find(|r| r.field == *k) {
            let lookup = k.strip_prefix('_').and_then(|l| l.strip_suffix("_value")).unwrap_or(k);
            if v.trim().is_empty() {
                return Err(CrmError::Permanent { message: format!("clearing the lookup `{k}` is not supported; set it to another record") });
            }
            let target = entities.iter().find(|e| e.name == rel.entity);
            let collection = target.map(collection_of).unwrap_or_else(|| entity_set(&rel.entity));
            let nav = if CUSTOMER_LOOKUPS.contains(&lookup) { format!("{lookup}_{}", rel.entity) } else { lookup.to_string() };
            body.insert(format!("{}@odata.bind", column(&nav)?), Value::String(format!("/{}({})", column(&collection)?, guid(v)?)));
            continue;
        }
        let name = k.strip_suffix("@odata.bind").unwrap_or(k);
        if !is_column_name(name) {
            return Err(CrmError::Permanent { message: format!("`{k}` is not a Dataverse column name") });
        }
        body.insert(k.clone(), Value::String(v.clone()));
    }
    serde_json::to_string(&Value::Object(body)).map_err(|e| CrmError::Permanent { message: e.to_string() })
}

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
fn select_list(spec: &EntitySpec) -> Result<String, CrmError> {
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

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn checked_collection(spec: &EntitySpec) -> Result<String, CrmError> {
    let c = collection_of(spec);
    column(&c)?;
    Ok(c)
}

/// Standard OData headers of every request.
fn odata(rb: RequestBuilder) -> RequestBuilder {
    rb.header("Accept", "application/json").header("OData-MaxVersion", "4.0").header("OData-Version", "4.0")
}

fn is_column_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` if it can go into a URL or a `$filter` as a column, table or property name.
fn column(name: &str) -> Result<&str, CrmError> {
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

fn guid(s: &str) -> Result<&str, CrmError> {
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
fn encode_strict(s: &str) -> String {
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

fn query_string(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", encode_query(v))).collect::<Vec<_>>().join("&")
}

/// The path of a URL without scheme, host or query.
fn path_of(url: &str) -> &str {
    let no_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = if url.contains("://") { no_scheme.find('/').map_or("", |i| &no_scheme[i..]) } else { no_scheme };
    path.split('?').next().unwrap_or(path)
}

/// The GUID at the end of an `OData-EntityId` (`…/phonecalls(0000…)`).
fn entity_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("OData-EntityId")?.to_str().ok()?;
    let inner = v.trim_end().strip_suffix(')')?;
    let id = &inner[inner.rfind('(')? + 1..];
    is_guid(id).then(|| id.to_string())
}

fn activity_id(headers: &HeaderMap, body: &str) -> Result<String, CrmError> {
    if let Ok(v) = serde_json::from_str::<Value>(body)
        && let Some(id) = v.get("activityid").and_then(Value::as_str)
    {
        return Ok(id.to_string());
    }
    entity_id(headers).ok_or_else(|| CrmError::Transient { message: "Dataverse accepted the activity but its answer names no activityid".into(), retry_after: None })
}

fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("batch_{:x}{:06x}", nanos, COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
}

/// One HTTP response inside a `$batch` answer.
#[derive(Debug)]
struct PartResponse {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// Splits a `multipart/mixed` `$batch` answer into its responses, in order (change-set
/// parts are flattened into theirs).
fn parse_batch_response(content_type: &str, body: &str) -> Result<Vec<PartResponse>, String> {
    let boundary = boundary_of(content_type).ok_or_else(|| format!("no multipart boundary in Content-Type `{content_type}`"))?;
    let mut out = vec![];
    for part in multipart_parts(body, &boundary) {
        let (headers, content) = split_head(part);
        let part_type = header_value(headers, "content-type").unwrap_or_default();
        if part_type.to_ascii_lowercase().starts_with("multipart/mixed") {
            out.extend(parse_batch_response(&part_type, content)?);
            continue;
        }
        out.push(parse_http_response(content)?);
    }
    Ok(out)
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The parts between `--boundary` delimiters, up to the closing `--boundary--`.
fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut parts = vec![];
    let mut rest = match body.find(&delimiter) {
        Some(i) => &body[i + delimiter.len()..],
        None => return parts,
    };
    loop {
        if rest.starts_with("--") {
            break;
        }
        let Some(end) = rest.find(&delimiter) else { break };
        let part = rest[..end].trim_start_matches([' ', '\t']);
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n')).unwrap_or(part);
        let part = part.strip_suffix("\r\n").or_else(|| part.strip_suffix('\n')).unwrap_or(part);
        parts.push(part);
        rest = &rest[end + delimiter.len()..];
    }
    parts
}

/// Headers and content of a MIME part or HTTP message, split at the first empty line.
fn split_head(s: &str) -> (&str, &str) {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => {
            let (i, n) = if a.0 <= b.0 { a } else { b };
            (&s[..i], &s[i + n..])
        }
        (Some((i, n)), None) | (None, Some((i, n))) => (&s[..i], &s[i + n..]),
        (None, None) => (s, ""),
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn parse_http_response(s: &str) -> Result<PartResponse, String> {
    let (head, body) = split_head(s);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().trim();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| format!("a part is no HTTP response: `{}`", crate::client::truncate(status_line)))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim()))
        {
            headers.append(k, v);
        }
    }
    Ok(PartResponse { status, headers, body: body.trim_end_matches(['\r', '\n']).to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxbridge_domain::mapping::Mapping;
    use serde_json::json;

    fn config() -> DataverseConfig {
        toml_like(r#"{"url":"https://contoso.crm4.dynamics.com/","tenant_id":"t-1","client_id":"c-1"}"#)
    }

    fn toml_like(json: &str) -> DataverseConfig {
        serde_json::from_str(json).expect("config")
    }

    #[test]
    fn defaults_fill_everything_but_the_required_fields() {
        let c = config();
        assert_eq!(c.api_version, "9.2");
        assert_eq!(c.activity_key_field, "cxb_conversationkey");
        assert_eq!((c.requests_per_window, c.window_secs, c.max_in_flight, c.batch_size, c.timeout_ms, c.page_size), (6000, 300, 52, 100, 10_000, 5000));
        assert_eq!(c.effective_token_url(), "https://login.microsoftonline.com/t-1/oauth2/v2.0/token");
        assert_eq!(c.effective_scope(), "https://contoso.crm4.dynamics.com/.default");
        assert_eq!(c.api_url(), "https://contoso.crm4.dynamics.com/api/data/v9.2");
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<DataverseConfig>(r#"{"url":"https://x","tenant_id":"t","client_id":"c","bogus":1}"#).is_err());
        assert!(serde_json::from_str::<DataverseConfig>(r#"{"url":"https://x","tenant_id":"t"}"#).is_err());
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_setting() {
        let check = |patch: &str, want: &str| {
            let mut v: Value = serde_json::from_str(r#"{"url":"https://contoso.crm4.dynamics.com","tenant_id":"t","client_id":"c"}"#).expect("json");
            let p: Value = serde_json::from_str(patch).expect("patch");
            for (k, x) in p.as_object().expect("object") {
                v[k] = x.clone();
            }
            let c: DataverseConfig = serde_json::from_value(v).expect("config");
            let err = c.validate().expect_err(patch).to_string();
            assert!(err.contains(want), "{patch}: {err}");
        };
        check(r#"{"url":"contoso.crm.dynamics.com"}"#, "url");
        check(r#"{"url":"ftp://x"}"#, "url");
        check(r#"{"batch_size":0}"#, "batch_size 0");
        check(r#"{"batch_size":1001}"#, "batch_size 1001");
        check(r#"{"page_size":5001}"#, "page_size");
        check(r#"{"activity_key_field":"cxb key"}"#, "activity_key_field");
        check(r#"{"normalized_phone_field":"a'b"}"#, "normalized_phone_field");
        check(r#"{"api_version":"v9"}"#, "api_version");
        check(r#"{"timeout_ms":0}"#, "timeout_ms");
        check(r#"{"tenant_id":" "}"#, "tenant_id");
        check(r#"{"url":"http://contoso.crm4.dynamics.com"}"#, "url `http://contoso.crm4.dynamics.com`: plain http");
        check(r#"{"token_url":"http://login.example.com/t/token"}"#, "token_url");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let mut c = config();
        c.client_secret = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn entity_sets_are_pluralized_like_dataverse_does() {
        for (logical, set) in [("phonecall", "phonecalls"), ("task", "tasks"), ("opportunity", "opportunities"), ("activityparty", "activityparties"), ("fax", "faxes"), ("cxb_chat", "cxb_chats"), ("survey", "surveys"), ("address", "addresses")] {
            assert_eq!(entity_set(logical), set);
        }
    }

    #[test]
    fn the_default_mapping_only_names_known_sources() {
        let m = Mapping { fields: default_mapping(), ..Mapping::default() };
        m.validate().expect("default mapping is valid");
    }

    #[test]
    fn select_reads_lookup_names_through_the_lookup() {
        let contact = &default_entities()[0];
        assert_eq!(
            select_list(contact).expect("select"),
            "contactid,fullname,telephone1,mobilephone,telephone2,emailaddress1,_parentcustomerid_value"
        );
        let fields = record_fields(&json!({
            "contactid": "c", "_parentcustomerid_value": "a",
            "_parentcustomerid_value@OData.Community.Display.V1.FormattedValue": "Contoso",
            "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
        }));
        assert_eq!(fields.get("parentcustomerid_name").map(String::as_str), Some("Contoso"));
        assert_eq!(fields.get("_parentcustomerid_value").map(String::as_str), Some("a"));
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
    fn timestamps_are_sent_to_the_second_and_long_text_is_cut() {
        assert_eq!(fit("phonecall", "actualstart", &json!("2024-03-01T10:00:00.123456789Z")), json!("2024-03-01T10:00:00Z"));
        assert_eq!(fit("phonecall", "phonenumber", &json!("+14155550100")), json!("+14155550100"));
        let long = "x".repeat(2500);
        let cut = fit("phonecall", "description", &json!(long));
        assert_eq!(cut.as_str().map(|s| s.chars().count()), Some(2000));
        assert!(cut.as_str().is_some_and(|s| s.ends_with('…')));
        assert_eq!(fit("cxb_chat", "description", &json!(long)), json!(long), "custom tables keep their own limits");
        assert_eq!(fit("phonecall", "actualdurationminutes", &json!(3)), json!(3));
    }

    #[test]
    fn parties_swap_with_the_direction() {
        assert_eq!(party_masks("phonecall", Direction::Inbound), Some((1, 2)));
        assert_eq!(party_masks("phonecall", Direction::Outbound), Some((2, 1)));
        assert_eq!(party_masks("task", Direction::Inbound), None);
        assert_eq!(party_masks("appointment", Direction::Outbound), Some((5, 7)));
    }

    #[test]
    fn batch_answers_are_split_into_their_responses() {
        let body = "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                    HTTP/1.1 201 Created\r\nContent-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n\
                    {\"activityid\":\"00000000-0000-0000-0000-000000000001\"}\r\n\
                    --batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                    HTTP/1.1 204 No Content\r\nOData-EntityId: https://x/api/data/v9.2/phonecalls(00000000-0000-0000-0000-000000000002)\r\n\r\n\r\n\
                    --batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
                    --changesetresponse_2\r\nContent-Type: application/http\r\n\r\n\
                    HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n\r\n{\"error\":{\"code\":\"0x80072322\",\"message\":\"slow down\"}}\r\n\
                    --changesetresponse_2--\r\n\
                    --batchresponse_1--\r\n";
        let parts = parse_batch_response("multipart/mixed; boundary=batchresponse_1", body).expect("parts");
        assert_eq!(parts.iter().map(|p| p.status).collect::<Vec<_>>(), vec![201, 204, 429]);
        assert_eq!(activity_id(&parts[0].headers, &parts[0].body).expect("id"), "00000000-0000-0000-0000-000000000001");
        assert_eq!(activity_id(&parts[1].headers, &parts[1].body).expect("id"), "00000000-0000-0000-0000-000000000002");
        assert_eq!(retry_after(&parts[2].headers), Some(Duration::from_secs(3)));
        assert_eq!(vendor_message(&parts[2].body), "slow down (0x80072322)");
        assert!(parse_batch_response("application/json", "{}").is_err());
        // LF-only line ends are read too.
        let lf = "--b\nContent-Type: application/http\n\nHTTP/1.1 200 OK\n\n{}\n--b--\n";
        assert_eq!(parse_batch_response("multipart/mixed;boundary=\"b\"", lf).expect("lf").len(), 1);
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
