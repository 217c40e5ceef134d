//! The local phone index of an external CRM: a copy of each identifying entity's phone
//! and display fields, kept fresh from the CRM's change feed (Dataverse change tracking,
//! Salesforce `LastModifiedDate` polling), so that identifying a caller does not wait for
//! the CRM and still works while it is slow or down.
//!
//! [`IndexedCrm`] answers `find_by_phone` from the index once an entity's first full sync
//! has finished, and asks the CRM directly before that (or for entities whose CRM has no
//! feed). Everything else goes to the CRM. `run::crm_index` is the driver that keeps it fresh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cxbridge_domain::Timestamp;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, EntitySpec, RecordRef, SearchQuery, TimelineEntry};
use cxbridge_store::CrmStore;

pub struct IndexedCrm {
    crm: Arc<dyn Crm>,
    index: Arc<dyn CrmStore>,
    entities: Vec<EntitySpec>,
    /// Per entity (same order as `entities`): the index can answer for it.
    ready: Vec<AtomicBool>,
    /// Per entity: the last time its sync started over from scratch, and why (shown on
    /// `/healthz`). Kept in memory: after a restart the sync state itself says `syncing`.
    resyncs: Mutex<BTreeMap<String, Resync>>,
}

/// A sync that started over: the CRM could no longer follow the stored cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Resync {
    pub at: Timestamp,
    pub reason: String,
}

impl IndexedCrm {
    pub async fn new(crm: Arc<dyn Crm>, index: Arc<dyn CrmStore>, entities: Vec<EntitySpec>) -> Result<Self, cxbridge_store::StoreError> {
        let states = index.index_sync_states().await?;
        let ready = entities.iter().map(|e| AtomicBool::new(states.iter().any(|s| s.entity == e.name && s.complete))).collect();
        Ok(Self { crm, index, entities, ready, resyncs: Mutex::new(BTreeMap::new()) })
    }

    fn is_ready(&self, entity: &str) -> bool {
        self.entities.iter().position(|e| e.name == entity).is_some_and(|i| self.ready[i].load(Ordering::Relaxed))
    }

    pub(crate) fn set_ready(&self, entity: &str, ready: bool) {
        if let Some(i) = self.entities.iter().position(|e| e.name == entity) {
            self.ready[i].store(ready, Ordering::Relaxed);
        }
    }

    /// When and why `entity`'s sync last started over from scratch on this node.
    pub fn last_resync(&self, entity: &str) -> Option<Resync> {
        self.resyncs.lock().unwrap_or_else(|p| p.into_inner()).get(entity).cloned()
    }

    pub(crate) fn note_resync(&self, entity: &str, reason: &str) {
        let r = Resync { at: Timestamp::now(), reason: reason.to_string() };
        self.resyncs.lock().unwrap_or_else(|p| p.into_inner()).insert(entity.to_string(), r);
    }

    pub fn crm(&self) -> &Arc<dyn Crm> {
        &self.crm
    }

    pub fn index(&self) -> &Arc<dyn CrmStore> {
        &self.index
    }

    /// The entities the index keeps.
    pub fn entities(&self) -> &[EntitySpec] {
        &self.entities
    }

    /// Puts a record the hub itself just created or changed into the index at once, so the
    /// next call from its number pops it without waiting for the feed. The sync state is
    /// left alone: the index's age still tells when the feed last answered.
    async fn remember(&self, spec: &EntitySpec, c: &Candidate) {
        let mut fields = c.fields.clone();
        fields.insert("id".into(), c.record.id.clone());
        if let Err(e) = self.index.import_records(&spec.name, vec![fields]).await {
            tracing::warn!(entity = spec.name, error = %e, "could not put a new record into the local phone index; the next sync brings it");
        }
    }
}

#[async_trait]
impl Crm for IndexedCrm {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        let identifying: Vec<&EntitySpec> = entities.iter().filter(|e| e.identify).collect();
        if !identifying.iter().all(|e| self.is_ready(&e.name)) {
            metrics::counter!("cxbridge_identify_source_total", "source" => "crm").increment(1);
            return self.crm.find_by_phone(e164, entities, limit).await;
        }
        metrics::counter!("cxbridge_identify_source_total", "source" => "index").increment(1);
        let names: Vec<String> = identifying.iter().map(|e| e.name.clone()).collect();
        let records = self
            .index
            .records_by_phone(e164, &names, limit as u32)
            .await
            .map_err(|e| CrmError::Transient { message: format!("local index: {e}"), retry_after: None })?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let spec = entities.iter().find(|e| e.name == r.entity)?;
                Some(Candidate::from_fields(spec, &r.id, r.fields))
            })
            .collect())
    }

    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        self.crm.related(record, spec, relation).await
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        self.crm.upsert_activity(activity).await
    }

    async fn upsert_activities(&self, activities: &[Activity]) -> Vec<Result<String, CrmError>> {
        self.crm.upsert_activities(activities).await
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        self.crm.search(spec, query).await
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let c = self.crm.create(spec, fields).await?;
        self.remember(spec, &c).await;
        Ok(c)
    }

    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let c = self.crm.update(spec, id, fields).await?;
        self.remember(spec, &c).await;
        Ok(c)
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        self.crm.timeline(record, limit).await
    }

    fn has_change_feed(&self) -> bool {
        self.crm.has_change_feed()
    }

    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        self.crm.changes(spec, cursor).await
    }
}
