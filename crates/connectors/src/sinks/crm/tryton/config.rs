//! The `[crm.tryton]` settings and why they may be refused, and the defaults a connection
//! starts from: parties as the entity, the note mapping.

use cxbridge_domain::crm::{DisplayField, EntitySpec};
use cxbridge_domain::mapping::FieldRule;
use serde::Deserialize;

use super::parties::PARTY_MODEL;

/// `[crm.tryton]`: where Tryton is and who the hub is there.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrytonConfig {
    /// Base URL of `trytond`, without the database: `http://127.0.0.1:8000`.
    pub url: String,
    /// The Tryton database; calls go to `{url}/{database}/rpc/`.
    pub database: String,
    /// The Tryton user the hub logs in as (default `admin`). It needs to read parties and
    /// contact mechanisms, create and write them (workflows), and create and delete notes.
    #[serde(default = "default_user")]
    pub user: String,
    /// The user's password. Better left out of the file: the server reads
    /// `CXBRIDGE_CRM_PASSWORD` instead.
    #[serde(default)]
    pub password: Option<String>,
    /// How long one call may take before it counts as a transient failure (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight at once on this connection (default 8).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_user() -> String {
    "admin".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight() -> u32 {
    8
}

impl std::fmt::Debug for TrytonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrytonConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout_ms", &self.timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// Why a [`TrytonConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrytonConfigError {
    #[error("[crm.tryton] url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("[crm.tryton] database `{0}` is not a database name (empty, or holds `/`, `?`, `#` or spaces)")]
    InvalidDatabase(String),
    #[error("[crm.tryton] user must not be empty")]
    EmptyUser,
    #[error("no Tryton password: set CXBRIDGE_CRM_PASSWORD (or [crm.tryton] password)")]
    MissingPassword,
    #[error("[crm.tryton] {0} must be greater than 0")]
    Zero(&'static str),
}

/// The entities of a Tryton CRM when the config declares none: parties, with the first
/// phone, mobile and e-mail contact mechanisms as `phone`, `mobile` and `email` (further
/// ones as `phone_2`, `mobile_2`, …).
pub fn default_entities() -> Vec<EntitySpec> {
    let df = |label: &str, field: &str| DisplayField { label: label.into(), field: field.into() };
    vec![EntitySpec {
        name: "party".into(),
        phone_fields: vec!["phone".into(), "mobile".into()],
        email_fields: vec!["email".into()],
        display_fields: vec![df("Name", "name"), df("Phone", "phone"), df("Mobile", "mobile"), df("E-mail", "email"), df("Code", "code")],
        title_field: "name".into(),
        relations: vec![],
        identify: true,
        collection: Some(PARTY_MODEL.into()),
        id_field: Some("id".into()),
        sensitive: vec![],
    }]
}

/// The mapping that builds a note: `subject` becomes its first line, `message` the rest.
pub fn default_mapping() -> Vec<FieldRule> {
    let template = |target: &str, template: &str| FieldRule {
        target: target.into(),
        source: None,
        template: Some(template.into()),
        transform: None,
        value: None,
    };
    vec![
        template("subject", "{{direction|capitalize}} {{channel}} {{customer.number}} ({{outcome}})"),
        template(
            "message",
            "Direction: {{direction}}\n\
             Number: {{customer.e164}}\n\
             Outcome: {{outcome}}\n\
             Duration: {{duration_seconds|hms}}\n\
             Agent: {{agent}}\n\
             Queue: {{queue}}\n\
             Disposition: {{disposition.code}}\n\
             Notes: {{notes}}\n\
             Summary: {{summary}}\n\
             Transcript: {{transcript}}\n\
             Recording: {{recording_url}}",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxbridge_domain::mapping::Mapping;

    #[test]
    fn the_default_mapping_is_valid() {
        let mapping = Mapping { fields: default_mapping(), ..Mapping::default() };
        assert_eq!(mapping.validate(), Ok(()));
    }
}
