//! The sections of the configuration file, each with its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use cxbridge_domain::crm::EntitySpec;
use cxbridge_domain::outbox::RetryPolicy;
use cxbridge_domain::calls::CallerIdRule;
use cxbridge_connectors::sinks::crm::Provider;
use serde::Deserialize;

use super::*;

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
