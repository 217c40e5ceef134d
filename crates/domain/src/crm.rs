//! The CRM port: what the hub needs from any CRM (built-in, Dataverse, Salesforce, …).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;

use crate::conversation::Direction;

/// A record in a CRM: its entity (table/object) and its id there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, Deserialize)]
pub struct RecordRef {
    pub entity: String,
    pub id: String,
}

impl RecordRef {
    pub fn new(entity: impl Into<String>, id: impl Into<String>) -> Self {
        Self { entity: entity.into(), id: id.into() }
    }
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.entity, self.id)
    }
}

/// How an entity of the CRM is searched and shown. Declared in config; the built-in CRM
/// ships `contact`, `account` and `lead`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    pub name: String,
    /// Fields holding phone numbers, in any notation; they are normalized into the index.
    #[serde(default)]
    pub phone_fields: Vec<String>,
    #[serde(default)]
    pub email_fields: Vec<String>,
    /// Fields shown on the pop and the customer card, in order.
    #[serde(default)]
    pub display_fields: Vec<DisplayField>,
    /// The field whose value names the record (e.g. `name`, `full_name`).
    #[serde(default = "default_title_field")]
    pub title_field: String,
    /// Relations to other records: name → (field holding the other record's id, entity).
    #[serde(default)]
    pub relations: Vec<Relation>,
    /// Whether identification searches this entity at all.
    #[serde(default = "yes")]
    pub identify: bool,
    /// The CRM's name for the collection when it differs from `name`: the Dataverse entity
    /// set (`contacts`), the Salesforce object (`Contact`), the Tryton model.
    #[serde(default)]
    pub collection: Option<String>,
    /// The CRM's primary-key field (Dataverse `contactid`, Salesforce `Id`).
    #[serde(default)]
    pub id_field: Option<String>,
    /// Fields never shown to agents nor searched (PINs, dates of birth…). The server adds
    /// every field `[ivr.verify]` checks callers against.
    #[serde(default)]
    pub sensitive: Vec<String>,
}

fn default_title_field() -> String {
    "name".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayField {
    pub label: String,
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relation {
    /// Name used by pop rules (`open_related = "account"`).
    pub name: String,
    /// Field of this record holding the id of the related record.
    pub field: String,
    /// Entity of the related record.
    pub entity: String,
}

impl EntitySpec {
    pub fn simple(name: &str, phone_fields: &[&str], title_field: &str) -> Self {
        Self {
            name: name.into(),
            phone_fields: phone_fields.iter().map(|s| s.to_string()).collect(),
            email_fields: vec![],
            display_fields: vec![],
            title_field: title_field.into(),
            relations: vec![],
            identify: true,
            collection: None,
            id_field: None,
            sensitive: vec![],
        }
    }

    /// The entities of the built-in CRM when the config declares none.
    pub fn builtin_defaults() -> Vec<EntitySpec> {
        let df = |label: &str, field: &str| DisplayField { label: label.into(), field: field.into() };
        vec![
            EntitySpec {
                name: "contact".into(),
                phone_fields: vec!["phone".into(), "mobile".into()],
                email_fields: vec!["email".into()],
                display_fields: vec![
                    df("Name", "name"),
                    df("Phone", "phone"),
                    df("Mobile", "mobile"),
                    df("E-mail", "email"),
                    df("Company", "company"),
                ],
                title_field: "name".into(),
                relations: vec![Relation {
                    name: "account".into(),
                    field: "account_id".into(),
                    entity: "account".into(),
                }],
                identify: true,
                collection: None,
                id_field: None,
                sensitive: vec![],
            },
            EntitySpec {
                name: "account".into(),
                phone_fields: vec!["phone".into()],
                email_fields: vec!["email".into()],
                display_fields: vec![df("Account", "name"), df("Phone", "phone"), df("Owner", "owner")],
                title_field: "name".into(),
                relations: vec![],
                identify: true,
                collection: None,
                id_field: None,
                sensitive: vec![],
            },
            EntitySpec {
                name: "lead".into(),
                phone_fields: vec!["phone".into(), "mobile".into()],
                email_fields: vec!["email".into()],
                display_fields: vec![df("Lead", "name"), df("Phone", "phone"), df("Company", "company")],
                title_field: "name".into(),
                relations: vec![],
                identify: true,
                collection: None,
                id_field: None,
                sensitive: vec![],
            },
        ]
    }

    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.iter().find(|r| r.name == name)
    }

    pub fn is_sensitive(&self, field: &str) -> bool {
        self.sensitive.iter().any(|f| f == field)
    }

    /// `candidate` without its sensitive fields, in its fields and in its display.
    pub fn redact(&self, candidate: &Candidate) -> Candidate {
        let hidden: Vec<&str> = self.display_fields.iter().filter(|d| self.is_sensitive(&d.field)).map(|d| d.label.as_str()).collect();
        Candidate {
            record: candidate.record.clone(),
            title: candidate.title.clone(),
            display: candidate.display.iter().filter(|(label, _)| !hidden.contains(&label.as_str())).cloned().collect(),
            fields: candidate.fields.iter().filter(|(k, _)| !self.is_sensitive(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// A record found for a caller, with the fields the agent sees.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Candidate {
    pub record: RecordRef,
    pub title: String,
    /// Display fields (label, value) in configured order; empty values are left out.
    pub display: Vec<(String, String)>,
    /// Every field of the record, for templates and prefill.
    pub fields: BTreeMap<String, String>,
}

impl Candidate {
    /// Builds the candidate of `fields` as `spec` shows it.
    pub fn from_fields(spec: &EntitySpec, id: &str, fields: BTreeMap<String, String>) -> Self {
        let title = fields.get(&spec.title_field).cloned().unwrap_or_else(|| id.to_string());
        let display = spec
            .display_fields
            .iter()
            .filter_map(|d| {
                let v = fields.get(&d.field)?;
                (!v.is_empty()).then(|| (d.label.clone(), v.clone()))
            })
            .collect();
        Self { record: RecordRef::new(&spec.name, id), title, display, fields }
    }
}

/// An activity to write into a CRM: one per conversation, upserted by `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// Idempotency key (derived from the conversation id): the same key always lands on the
    /// same CRM record, so a retry or a late update never creates a second one.
    pub key: String,
    /// Activity kind/table (`phonecall`, `chat`, `message`, `task`, or a custom one).
    pub kind: String,
    /// The records the activity is about; the first is the primary "regarding" record.
    pub regarding: Vec<RecordRef>,
    /// Mapped fields, named as the CRM names them.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Who called whom: CRMs that model parties (Dataverse `from`/`to`) swap them by it.
    pub direction: Direction,
    /// The CRM user the agent is (from the agent's `crm_user_id`): the activity's owner
    /// party, and the user it is written on behalf of where the CRM supports that.
    pub on_behalf_of: Option<String>,
}

/// A page of a CRM's change feed for one entity, for the local phone index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangePage {
    /// Records created or changed since the cursor (all records on a first sync).
    pub upserts: Vec<(String, BTreeMap<String, String>)>,
    /// Ids of records deleted since the cursor.
    pub deletes: Vec<String>,
    /// Where to continue: more pages now (`more = true`), or the cursor of the next sync.
    pub cursor: String,
    pub more: bool,
    /// Set when the CRM could no longer follow the cursor it was given (an expired
    /// Dataverse change-tracking token, a Salesforce delete log that no longer reaches
    /// back far enough): this page is then the first of a full sync started over, and
    /// says why. The index drops what it had for the entity, since deletions in the gap
    /// cannot be known.
    pub restarted: Option<String>,
}

/// A workflow search: free text over the title field and/or exact field filters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    pub text: Option<String>,
    pub filters: BTreeMap<String, String>,
    pub limit: usize,
}

/// One entry of a record's timeline: an activity regarding it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimelineEntry {
    pub id: String,
    pub kind: String,
    pub subject: String,
    /// RFC 3339, as the CRM reports it.
    pub at: String,
    pub fields: BTreeMap<String, String>,
}

/// Errors a CRM adapter reports. The split decides what the outbox does next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrmError {
    /// Worth retrying: timeouts, 5xx, 429. `retry_after` honours the CRM's own hint.
    #[error("temporary CRM failure: {message}")]
    Transient { message: String, retry_after: Option<std::time::Duration> },
    /// Retrying cannot fix it (4xx validation, missing entity): the item goes dead at once.
    #[error("CRM rejected the request: {message}")]
    Permanent { message: String },
}

/// What the hub asks of a CRM. Implemented by the built-in CRM (store crate) and by the
/// vendor adapters (connectors crate).
#[async_trait]
pub trait Crm: Send + Sync {
    /// Records whose phone fields hold `e164`, searched over `entities` in the given order.
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError>;
    /// The record `relation` of `record` points to (e.g. a contact's account).
    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError>;
    /// Creates or updates the activity keyed by `activity.key`; returns the CRM's id of it.
    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError>;
    /// Several activities at once, one result each in order. CRMs with a batch API
    /// (Dataverse `$batch`, Salesforce Composite) send them in as few requests as they allow.
    async fn upsert_activities(&self, activities: &[Activity]) -> Vec<Result<String, CrmError>> {
        let mut out = Vec::with_capacity(activities.len());
        for a in activities {
            out.push(self.upsert_activity(a).await);
        }
        out
    }
    /// Records of `spec` matching `query` (workflows, the panel's search).
    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError>;
    /// Creates a record; returns it as the CRM stored it.
    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError>;
    /// Changes fields of a record; returns it as the CRM stored it.
    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError>;
    /// Activities regarding `record`, newest first.
    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError>;
    /// Whether [`Crm::changes`] works: the hub then keeps a local phone index of the CRM.
    fn has_change_feed(&self) -> bool {
        false
    }
    /// The next page of `spec`'s change feed after `cursor` (`None`: a full first sync).
    /// CRMs without a feed say so; the hub then queries them directly on every call.
    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        let _ = cursor;
        Err(CrmError::Permanent { message: format!("this CRM has no change feed for `{}`", spec.name) })
    }
}
