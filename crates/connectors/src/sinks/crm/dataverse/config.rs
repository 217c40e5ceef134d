//! The `[crm.dataverse]` settings, how they are checked, and the defaults a connection
//! starts from: the identified entities and the phone-call mapping.

use cxbridge_domain::crm::{DisplayField, EntitySpec, Relation};
use cxbridge_domain::mapping::FieldRule;
use serde::Deserialize;

use super::query::{entity_set, is_column_name};

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
pub(super) const MAX_BATCH: u32 = 1000;
/// Dataverse's largest page (`odata.maxpagesize`).
pub(super) const MAX_PAGE: u32 = 5000;

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

#[cfg(test)]
mod tests {
    use super::*;
    use cxbridge_domain::mapping::Mapping;
    use serde_json::Value;

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
    fn the_default_mapping_only_names_known_sources() {
        let m = Mapping { fields: default_mapping(), ..Mapping::default() };
        m.validate().expect("default mapping is valid");
    }
}
