//! Wire types of the cxbridge HTTP API and agent stream. This crate is the only one whose
//! types are serialized for the outside world; changing a field here changes the public
//! contract (DESIGN.md §5), so add fields freely and remove none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// RFC 9457 problem details: every error the API returns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The detail again, on the PBX webhooks only: Zammad answers `{"error": "…"}` and the
    /// bridges written for it log that member (an RFC 9457 extension member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A string schema limited to `values` (for fields that stay `String` in Rust so that a
/// wrong value gets the hub's own message, but whose values a client must know).
pub fn string_enum(values: &[&str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).enum_values(Some(values.iter().copied())).build()
}

/// Like [`string_enum`], for an optional JSON field: `null` is accepted too.
pub fn nullable_enum(values: &[&str]) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut all: Vec<Value> = values.iter().map(|v| Value::String((*v).to_string())).collect();
    all.push(Value::Null);
    utoipa::openapi::ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])).enum_values(Some(all)).build()
}

pub fn event_sources() -> utoipa::openapi::Object {
    nullable_enum(&["native", "cti", "sipgate"])
}

pub fn native_event_types() -> utoipa::openapi::Object {
    string_enum(&["offered", "connected", "ended", "updated", "closed"])
}
pub fn directions() -> utoipa::openapi::Object {
    string_enum(&["inbound", "outbound"])
}
pub fn optional_directions() -> utoipa::openapi::Object {
    nullable_enum(&["inbound", "outbound"])
}
pub fn pbx_directions() -> utoipa::openapi::Object {
    string_enum(&["in", "out"])
}
pub fn pbx_events() -> utoipa::openapi::Object {
    string_enum(&["newCall", "answer", "hangup"])
}
pub fn sipgate_events() -> utoipa::openapi::Object {
    string_enum(&["newCall", "answer", "hangup", "dtmf"])
}
pub fn ivr_event_kinds() -> utoipa::openapi::Object {
    string_enum(&["missed_call", "callback_request", "voicebot"])
}

/// Fields of a CRM record: names of letters, digits, `_` or `-` (at most 64), values that are
/// text, numbers, booleans or `null` (clears the field).
pub fn record_fields() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let scalar = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::OneOf(scalar)))))
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[A-Za-z0-9_-]{1,64}$")).build()))
        .build()
}

/// A form field given once or repeated (`user[]=a&user[]=b`).
pub fn form_list() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)).max_items(Some(100)))
        .build();
    utoipa::openapi::RefOr::T(Schema::OneOf(one_of))
}

/// One agent name or a list of them.
pub fn one_or_more_names() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)).max_items(Some(100)))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build();
    utoipa::openapi::RefOr::T(Schema::OneOf(one_of))
}

/// What `GET /api/v1/ivr/lookup` answers as JSON, per `format`: the full view (`json`), a
/// flat object of strings (`flat`), a Zammad reply (`zammad`) or jambonz verbs (`jambonz`).
pub struct IvrAnswer;

impl utoipa::PartialSchema for IvrAnswer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        let strings = ObjectBuilder::new().schema_type(Type::Object).additional_properties(Some(AdditionalProperties::RefOr(ObjectBuilder::new().schema_type(Type::String).build().into())));
        let any = AnyOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("IvrLookupView"))
            .item(strings)
            .item(ObjectBuilder::new().schema_type(Type::Object))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Object)))
            .build();
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::AnyOf(any))
    }
}

impl ToSchema for IvrAnswer {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push(("IvrLookupView".to_string(), <IvrLookupView as utoipa::PartialSchema>::schema()));
        <IvrLookupView as ToSchema>::schemas(schemas);
    }
}

/// The fields of a record, as `POST`/`PATCH /api/v1/crm/{entity}` take them.
pub struct RecordFields;

impl utoipa::PartialSchema for RecordFields {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        record_fields().into()
    }
}

impl ToSchema for RecordFields {}

/// A Zammad generic CTI event (`POST /api/v1/cti/{token}`, docs/pbx/zammad-cti.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CtiEvent {
    #[schema(schema_with = pbx_events)]
    pub event: String,
    #[schema(schema_with = pbx_directions)]
    pub direction: String,
    /// The call's id (≤ 250 characters); `call_id` is read too.
    #[serde(rename = "callId")]
    #[schema(min_length = 1, max_length = 250)]
    pub call_id: String,
    /// The caller (in) or the caller's extension (out), any notation.
    pub from: Option<String>,
    /// The dialled number.
    pub to: Option<String>,
    /// Agent names: a string or a list of at most 100.
    #[schema(schema_with = one_or_more_names)]
    pub user: Option<Value>,
    pub queue: Option<String>,
    #[serde(rename = "answeringNumber")]
    pub answering_number: Option<String>,
    /// `normalClearing`, `busy`, `cancel`, `noAnswer`, `congestion`, `notFound`, `forwarded`;
    /// other causes are kept as they are.
    pub cause: Option<String>,
}

/// A sipgate.io push (`POST /api/v1/sipgate/{token}`, form-encoded, docs/pbx/sipgate.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SipgatePush {
    #[schema(schema_with = sipgate_events)]
    pub event: String,
    #[serde(rename = "callId")]
    #[schema(min_length = 1, max_length = 250)]
    pub call_id: String,
    /// The id of the whole call across transfers.
    #[serde(rename = "origCallId")]
    pub orig_call_id: Option<String>,
    /// Required for `newCall` unless the URL ends in `/in` or `/out`.
    #[schema(schema_with = pbx_directions)]
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// One value, or repeated for several.
    #[serde(rename = "user[]")]
    #[schema(schema_with = form_list)]
    pub user: Option<Vec<String>>,
    #[serde(rename = "userId[]")]
    #[schema(schema_with = form_list)]
    pub user_id: Option<Vec<String>>,
    #[serde(rename = "answeringNumber")]
    pub answering_number: Option<String>,
    pub diversion: Option<String>,
    /// `normalClearing`, `busy`, `cancel`, `noAnswer`, `congestion`, `notFound`, `forwarded`;
    /// other causes are kept as they are.
    pub cause: Option<String>,
    /// The digits of a `dtmf` push.
    pub dtmf: Option<String>,
}

/// Free-form data of a conversation that may arrive at any time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetailsInput {
    pub notes: Option<String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    pub conversation_url: Option<String>,
    pub email_subject: Option<String>,
    pub email_body: Option<String>,
    pub campaign: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A native conversation event (`POST /api/v1/events`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NativeEvent {
    /// Your id of this event; replays with the same id are ignored. Strongly recommended.
    pub event_id: Option<String>,
    /// `offered`, `connected`, `ended`, `updated`, `closed`.
    #[serde(rename = "type")]
    #[schema(schema_with = native_event_types)]
    pub kind: String,
    /// Your stable id of the conversation (all legs).
    #[schema(max_length = 250, pattern = "\\S")]
    pub conversation_id: String,
    /// Whose id `conversation_id` is: `native` (default), or `cti` / `sipgate` to add details
    /// (a transcript, a summary, a recording) to a call a PBX reported, by its call id.
    #[serde(default)]
    #[schema(schema_with = event_sources)]
    pub source: Option<String>,
    /// Your id of this leg, when conversations have legs (transfers).
    pub leg_id: Option<String>,
    /// RFC 3339; defaults to the time of receipt.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// `voice` (default), `sms`, `webchat`, `email`, `whatsapp`, … or a BYOC channel name.
    pub channel: Option<String>,
    /// `inbound` (default) or `outbound`.
    #[schema(schema_with = optional_directions)]
    pub direction: Option<String>,
    /// The customer's address (phone number or channel handle).
    pub from: Option<String>,
    /// The dialed address.
    pub to: Option<String>,
    /// Agents to offer the conversation to.
    #[serde(default)]
    pub agents: Vec<String>,
    pub queue: Option<String>,
    /// The agent who connected (for `connected`).
    pub agent: Option<String>,
    /// Why it ended (for `ended`): normalClearing, busy, cancel, noAnswer, …
    pub cause: Option<String>,
    #[serde(default)]
    pub details: DetailsInput,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RecordRefView {
    pub entity: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DisplayFieldView {
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CandidateView {
    pub entity: String,
    pub id: String,
    pub title: String,
    pub display: Vec<DisplayFieldView>,
    /// Every field of the record (workflow results; pops show `display` only), its
    /// sensitive fields left out.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fields: Option<BTreeMap<String, String>>,
    /// Lets the agent who searched or created this record for a conversation link it to that
    /// conversation (send it in the links' `grants`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentificationView {
    /// `none`, `single`, `multiple`, `skipped` or `pending`.
    pub outcome: String,
    /// Why identification was skipped (`anonymous`, `own_number`, `internal`, `invalid`, `crm_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub candidates: Vec<CandidateView>,
}

/// What the panel should do for a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PopView {
    /// `open`, `list`, `create`, `search`, `nothing`, `disabled` or `unidentified`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<CandidateView>,
    /// For `open_related`: the record the caller matched, whose relation was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<CandidateView>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub records: Vec<CandidateView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransferView {
    pub at: String,
    pub from_agent: Option<String>,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DispositionView {
    pub code: String,
    pub category: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemorializationView {
    /// `waiting` (not completed yet), `pending`, `written` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub activity_id: Option<String>,
    pub outbox_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    pub id: String,
    pub source: String,
    pub external_id: String,
    pub legs: Vec<String>,
    pub channel: String,
    pub direction: String,
    pub customer_number: String,
    pub customer_e164: Option<String>,
    pub dialed_number: String,
    pub queue: Option<String>,
    pub campaign: Option<String>,
    pub offered_to: Vec<String>,
    pub agent: Option<String>,
    /// `offered`, `connected`, `ended`, `completed`.
    pub state: String,
    /// `answered`, `missed`, `abandoned`, `not_reached` once ended.
    pub outcome: Option<String>,
    pub end_cause: Option<String>,
    /// True when the sweeper closed it because no end arrived.
    pub timed_out: bool,
    pub offered_at: String,
    pub connected_at: Option<String>,
    pub ended_at: Option<String>,
    pub completed_at: Option<String>,
    /// h:mm:ss from offer to end.
    pub duration: String,
    pub transfers: Vec<TransferView>,
    pub disposition: Option<DispositionView>,
    pub notes: Option<String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    pub conversation_url: Option<String>,
    pub email_subject: Option<String>,
    pub email_body: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub identification: IdentificationView,
    pub selected: Option<RecordRefView>,
    pub pinned: Vec<RecordRefView>,
    pub wrapped_up: bool,
    pub revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memorialization: Option<MemorializationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DispositionInput {
    #[schema(pattern = "\\S")]
    pub code: String,
    pub category: Option<String>,
}

/// `POST /api/v1/conversations/{id}/wrapup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrapupRequest {
    /// Your id of this wrap-up; a repeated submit with the same id is ignored.
    pub request_id: Option<String>,
    pub agent: Option<String>,
    pub disposition: Option<DispositionInput>,
    pub notes: Option<String>,
    /// The record the activity is about (the agent's choice among the matches, or a new one).
    pub selected: Option<RecordRefView>,
    pub pinned: Option<Vec<RecordRefView>>,
    #[serde(default)]
    pub details: DetailsInput,
}

/// A message on the agent stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Sent once on connect: every conversation still open for the agent.
    Snapshot { agent: String, conversations: Vec<AgentConversation> },
    /// A conversation offered to the agent: pop it.
    Pop(AgentConversation),
    /// A conversation of the agent changed.
    Update(AgentConversation),
    /// A conversation of the agent ended or was completed.
    End(AgentConversation),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentConversation {
    pub conversation: ConversationView,
    pub pop: PopView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifyResponse {
    pub address: String,
    pub e164: Option<String>,
    pub identification: IdentificationView,
    pub pop: PopView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    pub entity: String,
    pub id: String,
    pub fields: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordList {
    pub records: Vec<RecordView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivityView {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub regarding: Vec<RecordRefView>,
    pub fields: serde_json::Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/v1/activities`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityInput {
    /// Idempotency key: posting the same key again updates that activity.
    pub key: Option<String>,
    /// `task`, `phonecall`, `chat`, `message`, or your own kind.
    #[schema(pattern = "\\S")]
    pub kind: String,
    /// The records it is about; the first is the primary one.
    #[schema(min_items = 1)]
    pub regarding: Vec<RecordRefView>,
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivityList {
    pub activities: Vec<ActivityView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxItemView {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub conversation_id: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub crm_ref: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxList {
    pub items: Vec<OutboxItemView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxStatsView {
    pub pending: u64,
    pub due: u64,
    pub delivered: u64,
    pub dead: u64,
    pub oldest_pending_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    pub version: String,
    pub database: String,
    pub crm: CrmHealth,
    pub outbox: OutboxStatsView,
    pub agents_connected: u64,
    pub uptime_secs: u64,
    /// This node's name among several.
    pub node: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// The NATS bus joining the nodes; absent for a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<BusHealth>,
}

/// The NATS bus as `/healthz` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BusHealth {
    /// Whether this node is connected to NATS now.
    pub connected: bool,
    pub stream: String,
    /// The other nodes heard from, with the agents online there.
    pub nodes: Vec<BusNodeView>,
    /// Agent messages handed to the other nodes / received from them since start.
    pub published: u64,
    pub received: u64,
    pub publish_errors: u64,
    /// Messages dropped for a missing or wrong MAC (someone without `[bus] secret` publishes).
    #[serde(default)]
    pub rejected: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BusNodeView {
    pub node: String,
    pub agents: u64,
    pub last_heard_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// `applied`, `duplicate` or `absorbed`.
    pub result: String,
    pub conversation_id: Option<String>,
    pub state: Option<String>,
}

/// The CRM connection as `/healthz` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CrmHealth {
    /// `builtin`, `dataverse`, `salesforce` or `tryton`.
    pub provider: String,
    /// The local phone index of an external CRM, per entity; absent for the built-in CRM
    /// and for CRMs without a change feed (callers are then looked up in the CRM directly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<IndexHealth>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IndexHealth {
    pub entity: String,
    /// `ready` (answers identification), `syncing` (first sync running; the CRM is asked
    /// meanwhile) or `failing` (the last sync failed; the index answers with what it has).
    pub state: String,
    pub records: u64,
    /// When the last page of changes arrived (RFC 3339).
    pub synced_at: Option<String>,
    /// Seconds since then: how stale a pop from the index can be.
    pub age_secs: Option<u64>,
    pub last_error: Option<String>,
    /// When this node last started the entity's sync over from scratch because the CRM
    /// could no longer follow the stored cursor (RFC 3339; since the hub started).
    #[serde(default)]
    pub resynced_at: Option<String>,
    /// Why, in the CRM's words (e.g. Dataverse's change-tracking token had expired).
    #[serde(default)]
    pub resync_reason: Option<String>,
}

/// What a workflow is called with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowInput {
    /// Free text (search).
    #[serde(default)]
    pub text: Option<String>,
    /// Field values (create, update) or exact filters (search).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The record's id (update, timeline).
    #[serde(default)]
    pub id: Option<String>,
    /// The conversation the agent runs it for: agents must name it for an update or a
    /// timeline (of one of its records), and get `grant`s for what a search or create returns.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// At most this many results (search, timeline), up to the workflow's limit.
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntryView {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub at: String,
    pub fields: BTreeMap<String, String>,
}

/// What a workflow returns: records the panel can show, or a timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowResult {
    pub workflow: String,
    pub action: String,
    pub records: Vec<CandidateView>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub timeline: Vec<TimelineEntryView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    pub name: String,
    /// The panel's button text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
    pub action: String,
    pub entity: String,
    pub required: Vec<String>,
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowView>,
}

/// `POST /api/v1/session`: an agent signs in to the panel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f]+$")]
    pub agent: String,
    /// The agent's password, or its access token.
    pub password: String,
}

/// The signed-in agent. The session itself is an HTTP-only cookie.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub agent: String,
    pub name: Option<String>,
    pub supervisor: bool,
    /// Send it as `X-CSRF-Token` with every request that is not a GET.
    pub csrf_token: String,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WrapupCodeView {
    pub code: String,
    pub label: String,
    pub category: Option<String>,
}

/// An entity as the panel needs it: what to show and which fields a new record form has.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PanelEntityView {
    pub name: String,
    pub label: String,
    pub title_field: String,
    /// The CRM's primary key column, when it is not `{entity}id` (Dataverse).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id_field: Option<String>,
    pub create_fields: Vec<String>,
}

/// Running inside Dynamics 365 (Channel Integration Framework).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DynamicsView {
    pub cif_library_url: String,
    pub crm_url: String,
    pub cif_version: Option<u8>,
    /// Our entity names → Dynamics logical names.
    pub entity_map: BTreeMap<String, String>,
    /// CIF v2 templates (the panel's defaults when absent).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notification_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_template: Option<String>,
}

/// `GET /api/v1/panel`: everything the panel needs after sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PanelView {
    pub session: SessionView,
    pub wrapup_codes: Vec<WrapupCodeView>,
    pub wrapup_required: bool,
    pub workflows: Vec<WorkflowView>,
    pub entities: Vec<PanelEntityView>,
    pub dynamics: Option<DynamicsView>,
    /// Click-to-dial link template (`{number}`), outside Dynamics.
    pub dial_url: Option<String>,
    /// Seconds after which a completed conversation moves to the panel's "Recent" list
    /// (0: only when the agent clears completed ones).
    pub recent_after_secs: u64,
}

/// `PUT /api/v1/conversations/{id}/links`: the record the conversation is about and the
/// pinned ones. A missing part stays as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinksRequest {
    pub selected: Option<RecordRefView>,
    pub pinned: Option<Vec<RecordRefView>>,
    /// The `grant`s of records found or created for this conversation (an agent links only
    /// the conversation's own records and those).
    #[serde(default)]
    pub grants: Vec<String>,
}

/// `POST /api/v1/conversations/{id}/records`: create the caller's record and select it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecordRequest {
    pub entity: String,
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewRecordResult {
    pub record: CandidateView,
    pub conversation: ConversationView,
}

/// An earlier interaction with the customer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InteractionView {
    /// `conversation` (an earlier conversation's activity) or `activity`.
    pub kind: String,
    pub id: String,
    /// RFC 3339.
    pub at: String,
    pub subject: String,
    pub channel: Option<String>,
    pub direction: Option<String>,
    pub outcome: Option<String>,
    pub disposition: Option<String>,
    pub conversation_id: Option<String>,
    /// The record it was found on.
    pub record: RecordRefView,
}

/// `GET /api/v1/conversations/{id}/related`: the customer card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RelatedView {
    /// The selected record (or the sole match) first, then the pinned ones.
    pub records: Vec<CandidateView>,
    /// Newest first; this conversation's own activity left out.
    pub interactions: Vec<InteractionView>,
    /// Set when the CRM could not be asked (the rest is still shown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warning: Option<String>,
}

/// The record's owner as the IVR sees them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IvrOwnerView {
    /// The owner as the CRM names them.
    pub crm_user: String,
    /// The agent it maps to (`[[agents]]` id, `crm_user_id` or name).
    pub agent: Option<String>,
    pub extension: Option<String>,
    /// Signed in to the panel and not in a call.
    pub available: bool,
}

/// Where the caller should go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IvrRouteView {
    /// `dial`, `queue`, `reject` or `continue` (no rule matched: the IVR's own default).
    pub action: String,
    /// What to dial: an extension, number or SIP URI (`dial`), or the queue (`queue`).
    pub target: Option<String>,
    /// The agent being dialed, when it is one.
    pub agent: Option<String>,
    /// Why (`reject`): `busy`, `rejected`, …
    pub reason: Option<String>,
    /// The rule that decided.
    pub rule: Option<String>,
}

/// `GET /api/v1/ivr/lookup`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IvrLookupView {
    /// The caller's number as asked.
    pub ani: String,
    pub e164: Option<String>,
    pub blocked: bool,
    pub identification: IdentificationView,
    /// The caller's record, when exactly one matched.
    pub record: Option<CandidateView>,
    pub owner: Option<IvrOwnerView>,
    /// The configured flag fields of the record (`[[ivr.flags]]`), empty ones left out.
    pub flags: BTreeMap<String, String>,
    pub route: IvrRouteView,
}

/// `POST /api/v1/ivr/verify`: the caller proves who they are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The caller's number.
    pub ani: String,
    /// What they give: a key of `[ivr.verify] fields` (`pin`, `order`, …).
    #[schema(min_length = 1)]
    pub kind: String,
    #[schema(min_length = 1)]
    pub value: String,
}

/// The answer says only yes or no: never which part was wrong, nor whether a record exists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    pub verified: bool,
    /// The verified caller's record.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub record: Option<CandidateView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerificationView {
    pub at: String,
    pub number: String,
    pub record: Option<RecordRefView>,
    pub kind: String,
    /// `verified`, `refused` or `locked`.
    pub outcome: String,
}

/// `GET /api/v1/ivr/verifications`: the audit trail, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerificationList {
    pub verifications: Vec<VerificationView>,
}

/// `POST /api/v1/ivr/events`: what happened in the IVR before (or instead of) an agent,
/// written to the CRM as an activity, exactly once per `event_id`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IvrEventInput {
    /// Your id of this IVR call; a repeat with the same id changes nothing.
    #[schema(max_length = 200, pattern = "\\S")]
    pub event_id: String,
    /// `missed_call`, `callback_request` or `voicebot`.
    #[schema(schema_with = ivr_event_kinds)]
    pub kind: String,
    /// The caller's number.
    pub ani: String,
    /// The dialed number.
    pub dnis: Option<String>,
    pub queue: Option<String>,
    /// RFC 3339; defaults to the time of receipt.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// Where to call back (`callback_request`; default: the caller's number).
    pub callback_number: Option<String>,
    /// When the caller wants the call back (free text or RFC 3339).
    pub callback_at: Option<String>,
    /// The voicebot's questions and the caller's answers.
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
    pub summary: Option<String>,
    pub transcript: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IvrEventResult {
    pub conversation_id: String,
    /// `completed`: the activity is in the outbox.
    pub state: String,
    /// The record the activity regards, when there is one.
    pub record: Option<RecordRefView>,
    /// Whether the record was created for this caller (`[ivr] create_unknown`).
    pub created: bool,
}
