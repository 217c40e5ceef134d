//! The `[crm.salesforce]` settings and how they are checked, and the defaults a connection
//! starts from: the identified entities and the Task mapping.

use cxbridge_domain::crm::{DisplayField, EntitySpec, Relation};
use cxbridge_domain::mapping::FieldRule;
use serde::Deserialize;

use super::query::is_identifier;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn the_default_mapping_is_valid() {
        let mapping = cxbridge_domain::mapping::Mapping { fields: default_mapping(), ..Default::default() };
        assert_eq!(mapping.validate(), Ok(()));
    }
}
