//! The storage port of cxbridge and its SQLite and PostgreSQL implementations.
//!
//! Callers only see the [`Store`] and [`CrmStore`] traits; the backend is chosen by the
//! database URL. Every state change that causes an external write enqueues that write in the
//! outbox *in the same transaction*, so nothing acknowledged can be lost between the two.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Conversation, Event, Policy, TransitionError};
use cxbridge_domain::crm::{Activity, EntitySpec, RecordRef};
use cxbridge_domain::phone::PhoneNormalizer;

pub mod builtin_crm;
pub mod postgres;
mod shared;
pub mod sqlite;

pub use builtin_crm::BuiltinCrm;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("unknown entity `{0}`")]
    UnknownEntity(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What the built-in CRM needs to know to index and show records (both backends).
#[derive(Debug, Clone)]
pub struct CrmSchema {
    pub entities: Vec<EntitySpec>,
    pub normalizer: PhoneNormalizer,
}

impl CrmSchema {
    pub fn entity(&self, name: &str) -> Result<&EntitySpec> {
        self.entities.iter().find(|e| e.name == name).ok_or_else(|| StoreError::UnknownEntity(name.to_string()))
    }
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The event was new and applied (possibly absorbed without change).
    Applied(cxbridge_domain::conversation::Transition),
    /// The event's dedup key was seen before: nothing changed. Carries the conversation.
    Duplicate(Option<Conversation>),
}

impl Recorded {
    /// The conversation as it stands after the event, if the store knows it.
    pub fn into_conversation(self) -> Option<Conversation> {
        match self {
            Recorded::Applied(t) => Some(t.conversation),
            Recorded::Duplicate(c) => c,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Delivered,
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OutboxState::Pending,
            "delivered" => OutboxState::Delivered,
            "dead" => OutboxState::Dead,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub conversation_id: String,
    pub state: OutboxState,
    pub generation: i64,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub crm_ref: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// Pending items whose next attempt is due now.
    pub due: u64,
    /// Age of the oldest pending item, in seconds.
    pub oldest_pending_secs: u64,
}

/// What the pruning job may delete: rows older than each cutoff; `None` keeps them forever.
/// Pending and dead outbox items, open conversations and their events are never pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delivered outbox items last updated before this.
    pub delivered_before: Option<Timestamp>,
    /// Dedup keys of events received before this, of completed (or unknown) conversations.
    pub events_before: Option<Timestamp>,
    /// IVR verification audit rows before this.
    pub verifications_before: Option<Timestamp>,
}

/// How many rows one [`Store::prune`] call deleted, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub events: u64,
    pub verifications: u64,
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, other: Pruned) {
        self.outbox += other.outbox;
        self.events += other.events;
        self.verifications += other.verifications;
    }
}

impl Pruned {
    /// Whether any kind deleted a full batch, so more may be waiting.
    pub fn more_waiting(&self, batch: u32) -> bool {
        let b = u64::from(batch);
        self.outbox >= b || self.events >= b || self.verifications >= b
    }
}

/// One caller verification attempt (the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub at: Timestamp,
    pub number: String,
    pub record: Option<RecordRef>,
    pub kind: String,
    /// `verified`, `refused` or `locked`; `pending` while the comparison runs.
    pub outcome: String,
}

/// The limits a verification attempt is reserved against. Failed (`refused`) and unfinished
/// (`pending`) attempts count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerificationLimits {
    /// Failed attempts from one number within `window`.
    pub per_number: u32,
    /// Failed attempts on one record within `window`, from any number.
    pub per_record: u32,
    pub window: std::time::Duration,
    /// Failed attempts over all numbers and records within the last minute.
    pub per_minute: u32,
}

/// What reserving a verification attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt is audited as `pending` under this id and counts as failed until
    /// [`Store::finish_verification`] says otherwise: compare, then finish it.
    Reserved(i64),
    /// A limit is reached; the attempt is audited as `locked`. Retry after this long.
    Locked { retry_after_secs: u64 },
}

/// Conversations, events and the outbox.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Deduplicates, applies and saves `event`, and enqueues the conversation's activity in the
    /// outbox when the transition asks for it: one transaction.
    async fn record_event(&self, event: Event, policy: Policy) -> Result<Recorded>;
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>>;
    /// Finds a conversation by any id its source knows it by (stable id or leg id).
    async fn conversation_by_external(&self, source: Option<&str>, external_id: &str) -> Result<Option<Conversation>>;
    /// Conversations of `agent` that are not completed: what a reconnecting panel needs.
    async fn conversations_for_agent(&self, agent: &str) -> Result<Vec<Conversation>>;
    /// Open (offered/connected) conversations with no event since `before`.
    async fn stale_conversations(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>>;
    /// Conversations still ringing (offered) with no event since `before`, oldest first.
    /// Apart from [`Store::stale_conversations`] so that long, quiet connected calls never
    /// fill the page a ring timeout reads.
    async fn rung_out(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>>;
    /// Ended conversations still waiting for wrap-up, ended before `before`.
    async fn wrapup_overdue(&self, before: Timestamp, limit: u32) -> Result<Vec<Conversation>>;

    /// Claims up to `limit` due items for `lease`; a crashed worker's claims expire.
    async fn outbox_claim(&self, now: Timestamp, limit: u32, lease: std::time::Duration) -> Result<Vec<OutboxItem>>;
    /// Marks a delivery done, unless newer data arrived meanwhile (then it stays pending).
    async fn outbox_delivered(&self, id: i64, generation: i64, crm_ref: &str, now: Timestamp) -> Result<()>;
    /// Records a failed attempt; `retry_at` None = dead.
    async fn outbox_failed(&self, id: i64, error: &str, retry_at: Option<Timestamp>, now: Timestamp) -> Result<()>;
    async fn outbox_list(&self, state: Option<OutboxState>, limit: u32) -> Result<Vec<OutboxItem>>;
    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>>;
    async fn outbox_for_conversation(&self, conversation_id: &str) -> Result<Option<OutboxItem>>;
    /// Puts a dead (or delivered) item back to pending, attempts reset. False if unknown.
    async fn outbox_replay(&self, id: i64, now: Timestamp) -> Result<bool>;
    /// Counts that do not scan the outbox: pending and dead items through the index (both
    /// small while deliveries work), deliveries from a running total.
    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats>;
    /// Deletes what `retention` allows, at most `batch` rows of each kind, so a call never
    /// holds the writer long; call again while [`Pruned::more_waiting`].
    async fn prune(&self, retention: &Retention, batch: u32) -> Result<Pruned>;
    /// Whether the database answers and takes writes (a full disk, a read-only file and a
    /// recent failed commit are errors). Cheap: at most one probe write a second.
    async fn ping(&self) -> Result<()>;
    /// Calls `wake.notify_one()` whenever any process sharing the database enqueues outbox
    /// work, so an idle outbox worker starts at once instead of at its next poll. The default
    /// does nothing: SQLite has one process, and its worker polls.
    fn wake_on_outbox(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let _ = wake;
    }

    /// The agent signed out: panel sessions issued before `at` are void.
    async fn record_sign_out(&self, agent: &str, at: Timestamp) -> Result<()>;
    /// When the agent last signed out, if ever.
    async fn signed_out_at(&self, agent: &str) -> Result<Option<Timestamp>>;

    /// Audits a finished verification attempt (its record, if any, counts as checked).
    async fn record_verification(&self, v: &Verification) -> Result<()>;
    /// Counts the failed attempts of `v.number`, of every one of `records` and of the last
    /// minute against `limits` and, when all are below, audits `v` as `pending` — one atomic
    /// step on every node sharing the database, so concurrent attempts cannot all pass the
    /// check before any of them failed. Otherwise audits `v` as `locked`.
    async fn reserve_verification(&self, v: &Verification, records: &[RecordRef], limits: &VerificationLimits) -> Result<Reservation>;
    /// Sets the outcome (and the audited record) of a reserved attempt.
    async fn finish_verification(&self, id: i64, outcome: &str, record: Option<&RecordRef>) -> Result<()>;
    /// The audit trail, newest first.
    async fn verifications(&self, limit: u32) -> Result<Vec<Verification>>;
}

/// A record of the built-in CRM.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub entity: String,
    pub id: String,
    pub fields: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Record {
    pub fn reference(&self) -> RecordRef {
        RecordRef::new(&self.entity, &self.id)
    }
}

/// An activity stored in the built-in CRM.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredActivity {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub regarding: Vec<RecordRef>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How to search records of an entity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordQuery {
    /// A phone number in any notation: matched through the phone index.
    pub phone: Option<String>,
    /// Exact field matches.
    pub fields: BTreeMap<String, String>,
    /// Case-insensitive substring over the whole record.
    pub text: Option<String>,
    pub limit: u32,
}

/// How far the local index of an external CRM has synced one entity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncState {
    pub entity: String,
    /// The change feed's cursor to continue from; `None` before the first page.
    pub cursor: Option<String>,
    /// The first full sync has finished: the index can answer for this entity.
    pub complete: bool,
    pub synced_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// One page of changes to apply to the local index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexChanges {
    /// Drop every record of the entity first (a full sync starting over).
    pub reset: bool,
    pub upserts: Vec<(String, BTreeMap<String, String>)>,
    pub deletes: Vec<String>,
    pub cursor: String,
    /// This page ends a pass (no more pages now); a first pass makes the entity complete.
    pub pass_done: bool,
}

/// A bad row of an import.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// Line in the source file (1 = header).
    pub line: u64,
    pub message: String,
}

/// The built-in CRM: records of configured entities, their phone index, activities.
#[async_trait]
pub trait CrmStore: Send + Sync + 'static {
    /// Creates a record; `fields["id"]`, when given, becomes its id.
    async fn create_record(&self, entity: &str, fields: BTreeMap<String, String>) -> Result<Record>;
    async fn record(&self, entity: &str, id: &str) -> Result<Option<Record>>;
    /// Merges `fields` into the record (an empty value removes the field).
    async fn update_record(&self, entity: &str, id: &str, fields: BTreeMap<String, String>) -> Result<Option<Record>>;
    async fn delete_record(&self, entity: &str, id: &str) -> Result<bool>;
    async fn search_records(&self, entity: &str, query: &RecordQuery) -> Result<Vec<Record>>;
    /// Inserts many records in one transaction (rows with an existing id are updated).
    /// Returns how many were written.
    async fn import_records(&self, entity: &str, rows: Vec<BTreeMap<String, String>>) -> Result<u64>;
    async fn count_records(&self, entity: &str) -> Result<u64>;
    /// Records of `entities` (in that priority order) with `e164` in a phone field.
    async fn records_by_phone(&self, e164: &str, entities: &[String], limit: u32) -> Result<Vec<Record>>;
    async fn upsert_activity(&self, activity: &Activity) -> Result<StoredActivity>;
    async fn activity(&self, id: &str) -> Result<Option<StoredActivity>>;
    async fn activity_by_key(&self, key: &str) -> Result<Option<StoredActivity>>;
    /// Activities linked to `record`, newest first.
    async fn activities_for(&self, record: &RecordRef, limit: u32) -> Result<Vec<StoredActivity>>;
    async fn count_activities(&self) -> Result<u64>;

    /// Applies a page of an external CRM's change feed and its cursor in one transaction.
    async fn apply_index_changes(&self, entity: &str, changes: IndexChanges, now: Timestamp) -> Result<()>;
    /// Notes a failed sync of `entity` (the cursor stays where it was).
    async fn index_sync_failed(&self, entity: &str, error: &str) -> Result<()>;
    async fn index_sync_states(&self) -> Result<Vec<SyncState>>;
    /// Rebuilds the phone index of every entity whose keys were computed with other phone
    /// rules or other phone fields than the running ones (an upgrade of the parser, a new
    /// `default_region`, a changed `phone_fields`), `batch` records per transaction, and
    /// reports each batch to `progress`. Entities already current are skipped.
    async fn reindex_phones(&self, batch: u32, progress: &(dyn for<'r> Fn(&'r Reindexed) + Send + Sync)) -> Result<Vec<Reindexed>>;
}

/// How far the rebuild of one entity's phone index has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reindexed {
    pub entity: String,
    /// Records whose keys were recomputed so far.
    pub records: u64,
    /// The rules the index was built with before (`None`: before rules were recorded).
    pub previous: Option<String>,
    pub done: bool,
}

/// The `store_meta` key and value that say how an entity's phone index was built.
pub(crate) fn phone_index_meta(schema: &CrmSchema, spec: &EntitySpec) -> (String, String) {
    (format!("phone_index:{}", spec.name), format!("{};fields={}", schema.normalizer.index_rules(), spec.phone_fields.join(",")))
}
