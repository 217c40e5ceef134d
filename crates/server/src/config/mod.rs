//! The configuration file (TOML). Every setting is optional; unknown keys are refused with
//! their name and line, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cxbridge_domain::crm::EntitySpec;
use cxbridge_domain::mapping::Mapping;
use cxbridge_domain::outbox::RetryPolicy;
use cxbridge_domain::pop::PopRule;
use cxbridge_domain::calls::CallerIdRule;
use cxbridge_connectors::sinks::crm::Provider;
use serde::Deserialize;

mod settings;

pub use settings::{CookieSecure, Durability, LogFormat, WorkflowAction};

/// The longest agent id a sign-in may name (and the configuration may declare). Longer
/// names are refused before anything is counted, hashed or logged.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// Checks that `hash` is a PHC string Argon2 can verify against.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::phc::PasswordHash::new(hash).map_err(|e| e.to_string())?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("algorithm `{}` is not argon2", parsed.algorithm));
    }
    Ok(())
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The URL PBXs reach this hub at (for sipgate's answer/hangup callbacks). When unset,
    /// it is taken from the request's Host header.
    pub public_url: Option<String>,
    /// `full` (fsync every commit; default) or `normal` (fsync at checkpoints).
    pub durability: Durability,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Where conversations, the outbox and the built-in CRM live (also `CXBRIDGE_DATABASE_URL`).
    /// Unset: the SQLite file `DATA_DIR/cxbridge.sqlite`. `postgres://…` selects PostgreSQL,
    /// which several nodes share.
    pub database_url: Option<String>,
    /// Connections each node keeps to PostgreSQL.
    pub database_pool: u32,
    /// This node's name among several (also `CXBRIDGE_NODE_ID`): letters, digits, `-`, `_`.
    /// Unset: the host name and the listening port.
    pub node_id: Option<String>,
    /// Connections served at once; one more is answered 503 and closed (also capped by the
    /// process's open-file limit, so accepting never fails with "Too many open files").
    pub max_connections: usize,
    /// A connection must send a request's complete headers within this long after it opened
    /// or after the previous response; a half-sent or idle kept-alive connection is closed.
    pub header_timeout_secs: u64,
    /// A request (its body included) must be answered within this long, else 408. Agent
    /// streams are not cut: the limit ends when the WebSocket upgrade is answered.
    pub request_timeout_secs: u64,
}

impl ServerConfig {
    /// The database backend the URL names.
    pub fn database_kind(&self) -> DatabaseKind {
        match self.database_url.as_deref() {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => DatabaseKind::Postgres,
            _ => DatabaseKind::Sqlite,
        }
    }

    /// This node's id: the configured one, else `{host}-{port}`.
    pub fn node_id(&self) -> String {
        if let Some(id) = self.node_id.as_ref().filter(|s| !s.is_empty()) {
            return id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "cxbridge".into());
        let clean: String = host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
        format!("{clean}-{}", self.listen.port())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Sqlite => "sqlite",
            DatabaseKind::Postgres => "postgres",
        }
    }
}

/// The message bus that joins several nodes (`[bus]`). Without a URL the hub is one node and
/// agent messages stay in the process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// NATS server(s) with JetStream enabled (also `CXBRIDGE_NATS_URL`), e.g.
    /// `nats://10.0.0.5:4222`; several comma-separated.
    pub url: Option<String>,
    /// The JetStream stream agent messages travel on (one per hub cluster).
    pub stream: String,
    /// Prefix of the NATS subjects (one per hub cluster sharing a NATS server).
    pub subject_prefix: String,
    /// A node not heard from for this long is taken to have no agents online.
    pub presence_ttl_secs: u64,
    /// How long agent messages stay in the stream (a node cut off from NATS catches up
    /// within this).
    pub max_age_secs: u64,
    /// The secret every node shares (also `CXBRIDGE_BUS_SECRET`; required with `url`, at
    /// least 16 characters): messages on the bus are signed with it, unsigned ones dropped.
    pub secret: Option<String>,
    /// NATS user and password (the server's `authorization { user, password }`); the
    /// password also from `CXBRIDGE_NATS_PASSWORD`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// NATS token (`authorization { token }`; also `CXBRIDGE_NATS_TOKEN`), instead of a user.
    pub token: Option<String>,
    /// Refuse a NATS server without TLS (`tls://` URLs imply it).
    pub tls_required: bool,
    /// PEM file of the CA that signed the NATS server's certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) when the NATS server verifies clients.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl BusConfig {
    /// The NATS URL when this node is one of several (an empty setting counts as unset).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.is_empty())
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "CXBRIDGE_AGENTS".into(),
            subject_prefix: "cxbridge".into(),
            presence_ttl_secs: 15,
            max_age_secs: 300,
            secret: None,
            user: None,
            password: None,
            token: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./cxbridge-data"),
            public_url: None,
            durability: Durability::Full,
            log_format: LogFormat::Text,
            database_url: None,
            database_pool: 16,
            node_id: None,
            max_connections: 4096,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer tokens for the native and admin API. Also `CXBRIDGE_ADMIN_TOKEN`.
    pub admin_tokens: Vec<String>,
    /// The `{token}` of `/api/v1/cti/{token}` and `/api/v1/sipgate/{token}`. Also `CXBRIDGE_CTI_TOKEN`.
    pub cti_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhoneConfig {
    /// ISO 3166 region for numbers written without a country code.
    pub default_region: String,
    /// Our own and switchboard numbers: never identified as a customer.
    pub own_numbers: Vec<String>,
}

impl Default for PhoneConfig {
    fn default() -> Self {
        Self { default_region: "US".into(), own_numbers: vec![] }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrmConfig {
    /// Which CRM: `builtin` (default), `dataverse`, `salesforce` or `tryton`.
    pub provider: Provider,
    /// Entities searched and shown, in identification priority order. When empty: the
    /// provider's defaults (built-in: contact, account, lead).
    pub entities: Vec<EntitySpec>,
    /// At most this many matches are shown in a list.
    pub max_candidates: usize,
    /// Identification gives up after this long and pops "unidentified" rather than wait.
    pub identify_timeout_ms: u64,
    /// Keep a local phone index of an external CRM, fed by its change feed, and identify
    /// callers from it (default true). Without it every call queries the CRM.
    pub local_index: bool,
    /// How often the local index asks the CRM for changes.
    pub sync_interval_secs: u64,
    /// `[crm.dataverse]`: see docs/crm/dataverse.md.
    pub dataverse: Option<cxbridge_connectors::sinks::crm::dataverse::DataverseConfig>,
    /// `[crm.salesforce]`: see docs/crm/salesforce.md.
    pub salesforce: Option<cxbridge_connectors::sinks::crm::salesforce::SalesforceConfig>,
    /// `[crm.tryton]`: see docs/crm/tryton.md.
    pub tryton: Option<cxbridge_connectors::sinks::crm::tryton::TrytonConfig>,
    /// What an activity is about when the caller matched no record: `unassigned`, `record`
    /// (the `unmatched_record`) or `create` (a record for the caller in `unmatched_entity`).
    /// Unset: `unassigned`, but `create` on Tryton, where a note needs a party.
    pub unmatched: Option<String>,
    /// `entity/id` of the record for `unmatched = "record"`; with `create`, where callers
    /// without a number go.
    pub unmatched_record: Option<String>,
    /// The entity `unmatched = "create"` creates records in (default: the first entity).
    pub unmatched_entity: Option<String>,
}

/// The `[crm] unmatched` values.
pub const UNMATCHED: [&str; 3] = ["unassigned", "record", "create"];

impl CrmConfig {
    /// `[crm] unmatched` and its companions as the domain's policy, checked against `entities`.
    pub fn unmatched_policy(&self, entities: &[EntitySpec]) -> Result<cxbridge_domain::mapping::Unmatched, String> {
        use cxbridge_domain::mapping::Unmatched;
        let record = match &self.unmatched_record {
            None => None,
            Some(r) => {
                let Some((entity, id)) = r.split_once('/').filter(|(e, id)| !e.is_empty() && !id.is_empty()) else {
                    return Err(format!("[crm] unmatched_record must be `entity/id` (e.g. `party/12`), not `{r}`"));
                };
                if !entities.iter().any(|e| e.name == entity) {
                    return Err(format!("[crm] unmatched_record: `{entity}` is not a CRM entity"));
                }
                Some(cxbridge_domain::crm::RecordRef::new(entity, id))
            }
        };
        let default = if self.provider.activity_needs_a_record() { "create" } else { "unassigned" };
        match self.unmatched.as_deref().unwrap_or(default) {
            "unassigned" if self.provider.activity_needs_a_record() => Err(
                "[crm] unmatched = \"unassigned\" cannot work on Tryton (a note needs a party): use unmatched = \"record\" with unmatched_record = \"party/<id>\", or unmatched = \"create\"".into(),
            ),
            "unassigned" => Ok(Unmatched::Unassigned),
            "record" => record.map(Unmatched::Record).ok_or_else(|| "[crm] unmatched = \"record\" needs unmatched_record = \"entity/id\"".to_string()),
            "create" => {
                let entity = match &self.unmatched_entity {
                    Some(e) if entities.iter().any(|x| &x.name == e) => e.clone(),
                    Some(e) => return Err(format!("[crm] unmatched_entity: `{e}` is not a CRM entity")),
                    None => entities.first().map(|e| e.name.clone()).ok_or_else(|| "[crm] unmatched = \"create\" needs an entity to create in".to_string())?,
                };
                Ok(Unmatched::Create { entity, fallback: record })
            }
            other => Err(format!("[crm] unmatched must be one of {}, not `{other}`", UNMATCHED.join(", "))),
        }
    }
}

impl Default for CrmConfig {
    fn default() -> Self {
        Self {
            provider: Provider::Builtin,
            entities: vec![],
            max_candidates: 10,
            identify_timeout_ms: 800,
            local_index: true,
            sync_interval_secs: 60,
            dataverse: None,
            salesforce: None,
            tryton: None,
            unmatched: None,
            unmatched_record: None,
            unmatched_entity: None,
        }
    }
}

/// A named CRM operation the panel or an integration can call at
/// `POST /api/v1/workflows/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    pub name: String,
    /// `search`, `create`, `update` or `timeline`.
    pub action: WorkflowAction,
    /// The entity it works on (one of the CRM's entities).
    pub entity: String,
    /// Fields set on every create/update, under the caller's (e.g. a lead source).
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    /// Fields the caller must give (create).
    #[serde(default)]
    pub required: Vec<String>,
    /// Fields the caller may give; empty = any.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Most records a search or timeline returns.
    #[serde(default = "default_workflow_limit")]
    pub limit: usize,
    /// The button's text in the panel (default: the name).
    #[serde(default)]
    pub label: Option<String>,
}

/// `[ivr]`: what an IVR may ask while the caller waits (`/api/v1/ivr/*`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    /// The IVR's own token (Bearer, or in the path `/api/v1/ivr/{token}/…`); also
    /// `CXBRIDGE_IVR_TOKEN`; generated into DATA_DIR/ivr-token when unset. Admin tokens work too.
    pub token: Option<String>,
    /// The record field naming its owner (built-in `owner`, Dataverse `_ownerid_value`,
    /// Salesforce `OwnerId`). When the caller's record lacks it, its related records are asked.
    pub owner_field: Option<String>,
    /// Fields of the caller's record returned as flags (VIP, language, open cases…).
    pub flags: Vec<IvrFlagConfig>,
    /// Routing rules, first match wins. None: reject blocked callers, ring an available owner.
    pub rules: Vec<cxbridge_domain::ivr::IvrRule>,
    pub verify: VerifyConfig,
    /// When nobody matches an IVR event's caller, create a record in this entity (`lead`,
    /// `contact`) so the activity has someone to be about. Unset: the activity stands alone.
    pub create_unknown: Option<String>,
    /// How the jambonz call hook (`/api/v1/ivr/jambonz`) writes its verbs.
    pub jambonz: JambonzConfig,
}

/// `[ivr.jambonz]`: the jambonz account the call hook answers.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JambonzConfig {
    /// The account's SIP realm (`acme.sip.jambonz.cloud`): an agent's extension `201` is
    /// dialled as the registered device `201@acme.sip.jambonz.cloud`.
    pub sip_realm: Option<String>,
    /// The URL a call no rule routes is redirected to (your own jambonz application). Unset:
    /// such a call is declined with 480, since jambonz hangs up once the verbs run out.
    pub continue_hook: Option<String>,
    /// The user name of the webhook's HTTP Basic auth (its password is the IVR token).
    /// Unset: any user name.
    pub username: Option<String>,
}

/// `[ivr.verify]`: what a caller may prove and how often they may try.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// What the caller can give → the CRM field it is checked against (`pin = "pin"`).
    pub fields: std::collections::BTreeMap<String, String>,
    /// Failed attempts allowed from one number within `window_secs`...
    pub max_attempts_per_number: u32,
    /// ...and on one record, from any number (every record a number matches counts).
    pub max_attempts_per_record: u32,
    pub window_secs: u64,
    /// Failed attempts over all numbers and records per minute: callers can spoof their
    /// number, so the limits per number and record alone do not bound the guessing.
    pub max_attempts_per_minute: u32,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self { fields: Default::default(), max_attempts_per_number: 3, max_attempts_per_record: 5, window_secs: 900, max_attempts_per_minute: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrFlagConfig {
    pub name: String,
    pub field: String,
}

/// `[panel]`: the agent panel at `/agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PanelConfig {
    /// How long a sign-in lasts.
    pub session_hours: u64,
    /// `auto` (Secure unless the request came over plain http to a loopback address),
    /// `always`, or `never` (plain http on a trusted network only).
    pub cookie_secure: CookieSecure,
    /// Origins allowed to frame the panel, e.g. `https://contoso.crm4.dynamics.com`. When
    /// set, the cookie becomes `SameSite=None; Secure; Partitioned` so it works in their iframe.
    pub embed_origins: Vec<String>,
    /// Click-to-dial link outside Dynamics; `{number}` is the E.164 number.
    pub dial_url: Option<String>,
    /// A completed conversation leaves the panel's tabs for its "Recent" list this long
    /// after it completed (0: only when the agent clears completed ones).
    pub recent_after_secs: u64,
    /// Key that signs session cookies (also `CXBRIDGE_SESSION_SECRET`). Several nodes must
    /// share it; when unset one is generated into DATA_DIR/session-secret.
    pub session_secret: Option<String>,
    /// A wrap-up needs a disposition code.
    pub require_disposition: bool,
    /// Running inside Dynamics 365 (Channel Integration Framework).
    pub dynamics: Option<DynamicsPanelConfig>,
    /// Failed sign-ins of one agent within `sign_in_window_secs` before it must wait.
    pub sign_in_failures_per_agent: usize,
    /// Failed sign-ins from one client address (an IPv6 /64) within the window, whatever
    /// the agent. Behind a reverse proxy every client has the proxy's address.
    pub sign_in_failures_per_client: usize,
    pub sign_in_window_secs: u64,
    /// Password checks (Argon2, ~19 MiB each) running at once; more wait.
    pub password_checks: usize,
    /// How long a sign-in waits for a password check before 503.
    pub password_check_wait_ms: u64,
    /// Agent streams (WebSockets) open at once per agent on a node; more are refused (429).
    pub streams_per_agent: usize,
    /// Messages waiting for one stream; a client that falls this far behind is disconnected.
    pub stream_queue_frames: usize,
}

impl Default for PanelConfig {
    fn default() -> Self {
        Self {
            session_hours: 12,
            cookie_secure: CookieSecure::Auto,
            embed_origins: vec![],
            dial_url: Some("tel:{number}".into()),
            recent_after_secs: 120,
            session_secret: None,
            require_disposition: false,
            dynamics: None,
            sign_in_failures_per_agent: 5,
            sign_in_failures_per_client: 30,
            sign_in_window_secs: 300,
            password_checks: 2,
            password_check_wait_ms: 2000,
            streams_per_agent: 8,
            stream_queue_frames: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicsPanelConfig {
    /// `https://ORG.crm.dynamics.com/webresources/Widget/msdyn_ciLibrary.js`
    pub cif_library_url: String,
    /// `https://ORG.crm.dynamics.com`
    pub crm_url: String,
    /// 1 or 2; detected from the library when unset.
    #[serde(default)]
    pub cif_version: Option<u8>,
    /// Our entity names → Dynamics logical names, where they differ.
    #[serde(default)]
    pub entity_map: std::collections::BTreeMap<String, String>,
    /// CIF v2: the notification template of the incoming-call toast.
    #[serde(default)]
    pub notification_template: Option<String>,
    /// CIF v2: the session template opened per conversation.
    #[serde(default)]
    pub session_template: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapupCodeConfig {
    pub code: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
}

fn default_workflow_limit() -> usize {
    20
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Names the PBX sends in `user` / `user[]` for this agent.
    #[serde(default)]
    pub cti_users: Vec<String>,
    /// Extensions / numbers the PBX sends as `answeringNumber`.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// sipgate `userId` values (e.g. `w0`).
    #[serde(default)]
    pub sipgate_user_ids: Vec<String>,
    /// Queues whose calls are offered to this agent.
    #[serde(default)]
    pub queues: Vec<String>,
    /// A token only this agent's stream accepts.
    #[serde(default)]
    pub token: Option<String>,
    /// Argon2 hash (PHC string) of the agent's panel password, from `cxbridge hash-password`.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Supervisors may retry a failed memorialization from the panel.
    #[serde(default)]
    pub supervisor: bool,
    /// The agent's user id in the CRM (Dataverse `systemuserid`, Salesforce user `Id`):
    /// activities are written on the agent's behalf and owned by them.
    #[serde(default)]
    pub crm_user_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationConfig {
    /// Close offered/connected conversations with no event for this long (PBXs drop hangups).
    pub sweep_after_secs: u64,
    /// End a conversation still ringing (offered, no event) after this long as missed and
    /// timed out; 0 never does. Set it above the longest a call waits offered in a queue: a
    /// late answer still corrects the outcome.
    pub ring_timeout_secs: u64,
    /// Complete ended voice conversations with no wrap-up after this long.
    pub acw_timeout_secs: u64,
    /// How often the sweeper looks.
    pub sweep_interval_secs: u64,
    /// Write missed and abandoned calls to the CRM too.
    pub memorialize_missed: bool,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self { sweep_after_secs: 4 * 3600, ring_timeout_secs: 600, acw_timeout_secs: 120, sweep_interval_secs: 15, memorialize_missed: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Inbound callers that are rejected (any notation).
    pub block_list: Vec<String>,
    pub reject_reason: String,
    /// Outbound calls present this caller id unless a row of the table matches.
    pub default_caller_id: Option<String>,
    pub outbound_caller_ids: Vec<CallerIdRule>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self { block_list: vec![], reject_reason: "busy".into(), default_caller_id: None, outbound_caller_ids: vec![] }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    #[serde(flatten)]
    pub retry: RetryPolicy,
    /// Items claimed per round.
    pub batch: u32,
    /// How long a claimed item is leased before another worker may take it.
    pub lease_secs: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { retry: RetryPolicy::default(), batch: 64, lease_secs: 60 }
    }
}

/// How long finished work is kept (`[retention]`); 0 keeps it forever. Pending and dead
/// outbox items, open conversations and their events are never pruned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delivered outbox items (the CRM has the activity; replay needs the item).
    pub delivered_outbox_days: u64,
    /// Dedup keys of the events of completed conversations: a resend older than this would
    /// be applied again (and absorbed by the completed conversation).
    pub events_days: u64,
    /// The IVR's verification audit trail.
    pub ivr_verifications_days: u64,
    /// How often the pruning job runs.
    pub prune_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { delivered_outbox_days: 30, events_days: 30, ivr_verifications_days: 90, prune_interval_secs: 3600 }
    }
}

impl RetentionConfig {
    /// The cutoffs in force at `now`.
    pub fn at(&self, now: cxbridge_domain::Timestamp) -> cxbridge_store::Retention {
        // A cutoff before the start of time (absurdly many days) keeps everything.
        let before = |days: u64| (days > 0).then(|| now.checked_sub(std::time::Duration::from_secs(days.saturating_mul(86_400))).ok()).flatten();
        cxbridge_store::Retention {
            delivered_before: before(self.delivered_outbox_days),
            events_before: before(self.events_days),
            verifications_before: before(self.ivr_verifications_days),
        }
    }
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

    fn validate(&self) -> Result<(), String> {
        self.memorialization.validate().map_err(|e| format!("[memorialization] {e}"))?;
        for t in &self.auth.admin_tokens {
            check_secret("[auth] admin_tokens: a token", t)?;
        }
        for (setting, value) in [("[auth] cti_token", &self.auth.cti_token), ("[ivr] token", &self.ivr.token), ("[panel] session_secret", &self.panel.session_secret)] {
            if let Some(v) = value {
                check_secret(setting, v)?;
            }
        }
        let sv = &self.server;
        if sv.max_connections == 0 || sv.header_timeout_secs == 0 || sv.request_timeout_secs == 0 {
            return Err("[server] max_connections, header_timeout_secs and request_timeout_secs must be at least 1".into());
        }
        let section = match self.crm.provider {
            Provider::Dataverse => Some(self.crm.dataverse.is_some()),
            Provider::Salesforce => Some(self.crm.salesforce.is_some()),
            Provider::Tryton => Some(self.crm.tryton.is_some()),
            Provider::Builtin => None,
        };
        if section == Some(false) {
            let p = &self.crm.provider;
            return Err(format!("[crm] provider = \"{p}\" needs a [crm.{p}] section; see docs/crm/{p}.md"));
        }
        let entities = self.entities();
        self.crm.unmatched_policy(&entities)?;
        let mut names = std::collections::HashSet::new();
        for w in &self.workflows {
            if !names.insert(&w.name) {
                return Err(format!("[[workflows]]: workflow `{}` is declared twice", w.name));
            }
            if !entities.iter().any(|e| e.name == w.entity) {
                return Err(format!("[[workflows]] `{}`: entity `{}` is not a CRM entity", w.name, w.entity));
            }
        }
        for (i, rule) in self.pop_rules.iter().enumerate() {
            if let Some(rel) = &rule.related
                && !entities.iter().any(|e| e.relation(rel).is_some()) {
                    return Err(format!("[[pop_rules]] #{}: no entity has a relation named `{rel}`", i + 1));
                }
            if !entities.iter().any(|e| e.name == rule.create_entity) {
                return Err(format!("[[pop_rules]] #{}: create_entity `{}` is not a CRM entity", i + 1, rule.create_entity));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for a in &self.agents {
            if a.id.trim().is_empty() {
                return Err("[[agents]]: every agent needs an `id`".into());
            }
            if a.id.len() > MAX_AGENT_ID_BYTES || a.id.chars().any(char::is_control) || a.id.trim() != a.id {
                return Err(format!(
                    "[[agents]]: agent id `{}` must be at most {} bytes, without control characters or surrounding spaces",
                    crate::text::clip_for_log(&a.id, 64),
                    MAX_AGENT_ID_BYTES
                ));
            }
            if !seen.insert(&a.id) {
                return Err(format!("[[agents]]: agent `{}` is declared twice", a.id));
            }
            if let Some(h) = &a.password_hash {
                check_password_hash(h)
                    .map_err(|e| format!("[[agents]] `{}`: password_hash is not an Argon2 PHC string ({e}); make one with `cxbridge hash-password`", a.id))?;
            }
        }
        self.validate_panel()?;
        self.validate_scale_out()?;
        let v = &self.ivr.verify;
        if v.max_attempts_per_number == 0 || v.max_attempts_per_record == 0 || v.max_attempts_per_minute == 0 || v.window_secs == 0 {
            return Err("[ivr.verify] max_attempts_per_number, max_attempts_per_record, max_attempts_per_minute and window_secs must be at least 1".into());
        }
        if let Some(e) = &self.ivr.create_unknown
            && !entities.iter().any(|x| &x.name == e)
        {
            return Err(format!("[ivr] create_unknown: `{e}` is not a CRM entity"));
        }
        let mut rule_names = std::collections::HashSet::new();
        for r in &self.ivr.rules {
            r.validate().map_err(|e| format!("[[ivr.rules]] {e}"))?;
            if !rule_names.insert(&r.name) {
                return Err(format!("[[ivr.rules]]: rule `{}` is declared twice", r.name));
            }
        }
        let mut codes = std::collections::HashSet::new();
        for c in &self.wrapup_codes {
            if c.code.trim().is_empty() {
                return Err("[[wrapup_codes]]: every code needs a non-empty `code`".into());
            }
            if !codes.insert(&c.code) {
                return Err(format!("[[wrapup_codes]]: code `{}` is declared twice", c.code));
            }
        }
        for e in &entities {
            for r in &e.relations {
                if !entities.iter().any(|x| x.name == r.entity) {
                    return Err(format!("[[crm.entities]] `{}`: relation `{}` names unknown entity `{}`", e.name, r.name, r.entity));
                }
            }
        }
        Ok(())
    }

    /// The database URL, node id and bus settings; `build` runs it again after the command
    /// line and environment have overridden the file.
    pub fn validate_scale_out(&self) -> Result<(), String> {
        if let Some(url) = &self.server.database_url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("[server] database_url must start with postgres://, postgresql:// or sqlite: (leave it unset for DATA_DIR/cxbridge.sqlite)".into());
        }
        if self.server.database_pool == 0 {
            return Err("[server] database_pool must be at least 1".into());
        }
        if let Some(id) = &self.server.node_id
            && (id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!("[server] node_id `{id}`: use 1 to 64 letters, digits, `-` or `_`"));
        }
        let b = &self.bus;
        if b.url().is_some() {
            if self.server.database_kind() != DatabaseKind::Postgres {
                return Err("[bus] joins nodes that share one PostgreSQL database: set [server] database_url = \"postgres://…\" (or CXBRIDGE_DATABASE_URL) on every node".into());
            }
            let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok(&b.stream) {
                return Err(format!("[bus] stream `{}`: use letters, digits, `-` or `_`", b.stream));
            }
            if !name_ok(&b.subject_prefix) {
                return Err(format!("[bus] subject_prefix `{}`: use letters, digits, `-` or `_`", b.subject_prefix));
            }
            if b.presence_ttl_secs == 0 || b.max_age_secs == 0 {
                return Err("[bus] presence_ttl_secs and max_age_secs must be at least 1".into());
            }
            if let Some(secret) = &b.secret {
                check_secret("[bus] secret", secret)?;
            }
            if b.user.is_some() && b.token.is_some() {
                return Err("[bus] user and token: give one way to sign in to NATS, not both".into());
            }
            if b.password.is_some() && b.user.is_none() {
                return Err("[bus] password needs a user".into());
            }
            if b.tls_cert_file.is_some() != b.tls_key_file.is_some() {
                return Err("[bus] tls_cert_file and tls_key_file go together".into());
            }
        }
        Ok(())
    }

    fn validate_panel(&self) -> Result<(), String> {
        let p = &self.panel;
        if !(1..=168).contains(&p.session_hours) {
            return Err(format!("[panel] session_hours must be 1 to 168, not {}", p.session_hours));
        }
        if p.recent_after_secs > 86_400 {
            return Err(format!("[panel] recent_after_secs must be 0 (never by itself) to 86400 (a day), not {}", p.recent_after_secs));
        }
        for (key, value) in [
            ("sign_in_failures_per_agent", p.sign_in_failures_per_agent),
            ("sign_in_failures_per_client", p.sign_in_failures_per_client),
            ("sign_in_window_secs", usize::try_from(p.sign_in_window_secs).unwrap_or(usize::MAX)),
            ("password_checks", p.password_checks),
            ("streams_per_agent", p.streams_per_agent),
            ("stream_queue_frames", p.stream_queue_frames),
        ] {
            if value == 0 {
                return Err(format!("[panel] {key} must be at least 1"));
            }
        }
        for o in &p.embed_origins {
            if !is_origin(o) {
                return Err(format!("[panel] embed_origins: `{o}` is not an origin like `https://contoso.crm4.dynamics.com` (scheme and host, no path)"));
            }
        }
        if let Some(d) = &p.dynamics {
            for (key, url) in [("cif_library_url", &d.cif_library_url), ("crm_url", &d.crm_url)] {
                if origin_of(url).is_none() {
                    return Err(format!("[panel.dynamics] {key} must be an http(s) URL, not `{url}`"));
                }
            }
            if csp_source(&d.cif_library_url).is_none() {
                return Err(format!("[panel.dynamics] cif_library_url `{}` holds a space, `;`, `,` or `'`: give the library's plain URL", d.cif_library_url));
            }
            if d.cif_version.is_some_and(|v| !(1..=2).contains(&v)) {
                return Err("[panel.dynamics] cif_version must be 1 or 2".into());
            }
        }
        Ok(())
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

/// The shortest token or secret accepted. The CTI and IVR tokens travel in URLs and the
/// admin tokens are bearer tokens: none of them has a lockout, so they must not be guessable.
pub const MIN_SECRET_CHARS: usize = 16;

/// Refuses an empty or short token/secret, naming the setting.
pub fn check_secret(setting: &str, value: &str) -> Result<(), String> {
    let chars = value.trim().chars().count();
    if chars < MIN_SECRET_CHARS {
        return Err(format!(
            "{setting} is {chars} characters long; use at least {MIN_SECRET_CHARS} (e.g. the output of `openssl rand -hex 24`), or leave it unset to have one generated"
        ));
    }
    Ok(())
}

/// `scheme://host[:port]` of an http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains(['@', ' '])).then(|| format!("{scheme}://{host}"))
}

/// A CSP source expression for exactly the file at `url` (scheme, host and path; a query or
/// fragment is not part of a source expression). `None` when the URL holds characters that
/// would end the expression or the directive.
pub fn csp_source(url: &str) -> Option<String> {
    origin_of(url)?;
    let file = url.split(['?', '#']).next()?;
    (!file.contains(|c: char| c.is_whitespace() || c == ';' || c == ',' || c == '\'' || c.is_control())).then(|| file.to_string())
}

fn is_origin(s: &str) -> bool {
    origin_of(s).is_some_and(|o| o == s.trim_end_matches('/'))
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
