//! The configuration file (TOML). Every setting is optional; unknown keys are refused with
//! their name and line, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use cxbridge_domain::crm::EntitySpec;
use cxbridge_domain::mapping::Mapping;
use cxbridge_domain::pop::PopRule;
use serde::Deserialize;

mod sections;
mod settings;
mod validate;

pub use sections::*;
pub use settings::{CookieSecure, Durability, LogFormat, WorkflowAction};
pub use validate::{MAX_AGENT_ID_BYTES, MIN_SECRET_CHARS, check_password_hash, check_secret, csp_source, origin_of};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub phone: PhoneConfig,
    pub crm: CrmConfig,
    pub agents: Vec<AgentConfig>,
    pub pop_rules: Vec<PopRule>,
    pub memorialization: Mapping,
    pub conversations: ConversationConfig,
    pub routing: RoutingConfig,
    pub outbox: OutboxConfig,
    pub retention: RetentionConfig,
    pub workflows: Vec<WorkflowConfig>,
    pub panel: PanelConfig,
    pub ivr: IvrConfig,
    pub bus: BusConfig,
    /// Dispositions the agent chooses from at wrap-up (`[[wrapup_codes]]`).
    pub wrapup_codes: Vec<WrapupCodeConfig>,
    /// Whether the file set `[[memorialization.fields]]` itself (else the CRM's defaults apply).
    #[serde(skip)]
    pub mapping_fields_given: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError::Parse { path: path.to_path_buf(), line, column, message: e.message().to_string() }
        })?;
        let mut config = config;
        config.mapping_fields_given = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("memorialization").and_then(|m| m.get("fields")).map(|_| ()))
            .is_some();
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        if config.pop_rules.is_empty() {
            config.pop_rules.push(PopRule::default());
        }
        if config.ivr.rules.is_empty() {
            config.ivr.rules = cxbridge_domain::ivr::default_rules();
        }
        let entities = config.entities();
        for rule in &mut config.pop_rules {
            if let Some(phone) = entities.iter().find(|e| e.name == rule.create_entity).and_then(|e| e.phone_fields.first()) {
                rule.adapt_default_prefill(phone);
            }
        }
        Ok(config)
    }

    /// The directory the file describes: its `[[agents]]` (PBX user names and sipgate user
    /// ids as external ids) and `[[wrapup_codes]]`.
    pub fn directory(&self) -> cxbridge_domain::directory::StaticDirectory {
        use cxbridge_domain::directory::{Agent, ExternalId, StaticDirectory, WrapUpCode, source};
        let agents = self
            .agents
            .iter()
            .map(|a| Agent {
                id: a.id.clone(),
                name: a.name.clone(),
                supervisor: a.supervisor,
                external_ids: a
                    .cti_users
                    .iter()
                    .map(|u| ExternalId::new(source::PBX_USER, u))
                    .chain(a.sipgate_user_ids.iter().map(|u| ExternalId::new(source::SIPGATE_USER_ID, u)))
                    .collect(),
                numbers: a.numbers.clone(),
                queues: a.queues.clone(),
                skills: vec![],
                crm_user_id: a.crm_user_id.clone(),
            })
            .collect();
        let codes = self.wrapup_codes.iter().map(|c| WrapUpCode { code: c.code.clone(), label: c.label.clone(), category: c.category.clone(), queues: vec![] }).collect();
        StaticDirectory::new(agents, codes)
    }

    /// The CRM's entities: configured ones, or the provider's defaults.
    pub fn entities(&self) -> Vec<EntitySpec> {
        let mut entities = if self.crm.entities.is_empty() { self.crm.provider.default_entities() } else { self.crm.entities.clone() };
        // What callers prove who they are with is never shown to agents nor searched.
        for e in &mut entities {
            for f in self.ivr.verify.fields.values() {
                if !e.sensitive.contains(f) {
                    e.sensitive.push(f.clone());
                }
            }
        }
        entities
    }

    /// The memorialization mapping with the provider's default fields unless the file set its own.
    pub fn mapping(&self) -> Mapping {
        let mut m = self.memorialization.clone();
        if !self.mapping_fields_given {
            m.fields = self.crm.provider.default_mapping();
        }
        m
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Printed by `cxbridge config default`. Parsed by a test, so it always stays valid.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_config_is_valid() {
        let c = Config::parse(DEFAULT_CONFIG, Path::new("default.toml")).expect("default config parses");
        assert_eq!(c.server.listen.port(), 8080);
        assert!(!c.pop_rules.is_empty());
    }

    #[test]
    fn the_default_prefill_uses_the_crms_phone_column() {
        let prefill = |text: &str| Config::parse(text, Path::new("c.toml")).expect("valid").pop_rules[0].prefill.keys().cloned().collect::<Vec<_>>();
        assert_eq!(prefill(""), ["phone"]);
        let dataverse = "[crm]\nprovider = \"dataverse\"\n[crm.dataverse]\nurl = \"https://x.crm.dynamics.com\"\ntenant_id = \"t\"\nclient_id = \"c\"\n";
        assert_eq!(prefill(dataverse), ["telephone1"]);
        let own = format!("{dataverse}[[pop_rules]]\nprefill = {{ mobilephone = \"{{{{customer.e164}}}}\" }}\n");
        assert_eq!(prefill(&own), ["mobilephone"], "a configured prefill is kept");
    }

    #[test]
    fn retention_days_become_cutoffs_and_zero_keeps_forever() {
        let now = cxbridge_domain::Timestamp::from_second(1_800_000_000).expect("a time");
        let day = 86_400;
        let cases: [(&str, [Option<i64>; 3]); 4] = [
            ("", [Some(30 * day), Some(30 * day), Some(90 * day)]),
            ("[retention]\ndelivered_outbox_days = 0\n", [None, Some(30 * day), Some(90 * day)]),
            ("[retention]\nevents_days = 1\nivr_verifications_days = 0\n", [Some(30 * day), Some(day), None]),
            ("[retention]\nevents_days = 18446744073709551615\n", [Some(30 * day), None, Some(90 * day)]),
        ];
        for (text, want) in cases {
            let r = Config::parse(text, Path::new("c.toml")).expect("valid").retention.at(now);
            let ago = |t: Option<cxbridge_domain::Timestamp>| t.map(|t| now.as_second() - t.as_second());
            assert_eq!([ago(r.delivered_before), ago(r.events_before), ago(r.verifications_before)], want, "{text}");
        }
    }

    #[test]
    fn the_cif_library_is_allowed_as_one_file() {
        for (url, want) in [
            ("https://contoso.crm4.dynamics.com/webresources/Widget/msdyn_ciLibrary.js", Some("https://contoso.crm4.dynamics.com/webresources/Widget/msdyn_ciLibrary.js")),
            ("https://contoso.crm4.dynamics.com/webresources/Widget/msdyn_ciLibrary.js?v=2#x", Some("https://contoso.crm4.dynamics.com/webresources/Widget/msdyn_ciLibrary.js")),
            ("https://contoso.crm4.dynamics.com/a.js; script-src *", None),
            ("https://contoso.crm4.dynamics.com/a.js,https://evil.example", None),
            ("https://contoso.crm4.dynamics.com/a'.js", None),
            ("/webresources/lib.js", None),
        ] {
            assert_eq!(csp_source(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:9000\"\nlisten_port = 1\n", Path::new("c.toml")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:3:"), "{msg}");
        assert!(msg.contains("listen_port"), "{msg}");
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = Config::parse("", Path::new("c.toml")).expect("empty is fine");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.entities().len(), 3);
    }

    #[test]
    fn semantic_errors_say_what_to_fix() {
        let cases = [
            ("[[memorialization.fields]]\ntarget = \"x\"\nsource = \"nope\"\n", "unknown source `nope`"),
            ("[[pop_rules]]\nsingle = \"open_related\"\nrelated = \"boss\"\n", "relation named `boss`"),
            ("[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"\n", "declared twice"),
            ("[[agents]]\nid = \"a \"\n", "surrounding spaces"),
            ("[panel]\nstreams_per_agent = 0\n", "streams_per_agent must be at least 1"),
            ("[server]\ndurability = \"maybe\"\n", "durability"),
            ("[[agents]]\nid = \"a\"\npassword_hash = \"secret\"\n", "cxbridge hash-password"),
            ("[panel]\nembed_origins = [\"https://x.crm.dynamics.com/main.aspx\"]\n", "not an origin"),
            ("[panel]\ncookie_secure = \"sometimes\"\n", "cookie_secure"),
            ("[panel.dynamics]\ncif_library_url = \"/lib.js\"\ncrm_url = \"https://x.crm.dynamics.com\"\n", "cif_library_url"),
            ("[[wrapup_codes]]\ncode = \"sale\"\n[[wrapup_codes]]\ncode = \"sale\"\n", "declared twice"),
            ("[panel.dynamics]\ncif_library_url = \"https://x.crm.dynamics.com/a.js; script-src *\"\ncrm_url = \"https://x.crm.dynamics.com\"\n", "cif_library_url"),
            ("[server]\ndatabase_url = \"postgres://x/y\"\n[bus]\nurl = \"nats://127.0.0.1:4222\"\nsecret = \"short\"\n", "[bus] secret is 5 characters"),
            ("[server]\ndatabase_url = \"postgres://x/y\"\n[bus]\nurl = \"nats://127.0.0.1:4222\"\nuser = \"a\"\ntoken = \"b\"\n", "not both"),
            ("[server]\ndatabase_url = \"postgres://x/y\"\n[bus]\nurl = \"nats://127.0.0.1:4222\"\ntls_cert_file = \"c.pem\"\n", "tls_key_file"),
            ("[auth]\ncti_token = \"\"\n", "[auth] cti_token is 0 characters"),
            ("[auth]\ncti_token = \"short\"\n", "[auth] cti_token is 5 characters long; use at least 16"),
            ("[auth]\nadmin_tokens = [\"0123456789abcdef\", \"change-me\"]\n", "[auth] admin_tokens"),
            ("[ivr]\ntoken = \"ivr\"\n", "[ivr] token"),
            ("[panel]\nsession_secret = \"secret\"\n", "[panel] session_secret"),
            ("[server]\nmax_connections = 0\n", "max_connections"),
            ("[server]\nheader_timeout_secs = 0\n", "header_timeout_secs"),
        ];
        for (text, want) in cases {
            let msg = Config::parse(text, Path::new("c.toml")).expect_err(want).to_string();
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        }
    }
}
