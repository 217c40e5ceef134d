//! The built-in CRM behind the domain's [`Crm`] port.

use std::sync::Arc;

use async_trait::async_trait;
use std::collections::BTreeMap;

use cxbridge_domain::crm::{Activity, Candidate, Crm, CrmError, EntitySpec, RecordRef, SearchQuery, TimelineEntry};

use crate::{CrmStore, RecordQuery, StoreError};

pub struct BuiltinCrm {
    store: Arc<dyn CrmStore>,
    entities: Vec<EntitySpec>,
}

impl BuiltinCrm {
    pub fn new(store: Arc<dyn CrmStore>, entities: Vec<EntitySpec>) -> Self {
        Self { store, entities }
    }

    fn spec(&self, entity: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.name == entity)
    }
}

fn crm_error(e: StoreError) -> CrmError {
    match e {
        StoreError::UnknownEntity(_) | StoreError::Invalid(_) => CrmError::Permanent { message: e.to_string() },
        other => CrmError::Transient { message: other.to_string(), retry_after: None },
    }
}

fn not_found(spec: &EntitySpec, id: &str) -> CrmError {
    CrmError::Permanent { message: format!("{} `{id}` does not exist", spec.name) }
}

#[async_trait]
impl Crm for BuiltinCrm {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        let names: Vec<String> = entities.iter().filter(|e| e.identify).map(|e| e.name.clone()).collect();
        let records = self.store.records_by_phone(e164, &names, limit as u32).await.map_err(crm_error)?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let spec = entities.iter().find(|e| e.name == r.entity)?;
                Some(Candidate::from_fields(spec, &r.id, r.fields))
            })
            .collect())
    }

    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        let Some(rel) = spec.relation(relation) else {
            return Err(CrmError::Permanent { message: format!("entity `{}` has no relation `{relation}`", spec.name) });
        };
        let Some(source) = self.store.record(&record.entity, &record.id).await.map_err(crm_error)? else { return Ok(None) };
        let Some(target_id) = source.fields.get(&rel.field).filter(|v| !v.is_empty()) else { return Ok(None) };
        let Some(target_spec) = self.spec(&rel.entity) else {
            return Err(CrmError::Permanent { message: format!("relation `{relation}` names unknown entity `{}`", rel.entity) });
        };
        let target = self.store.record(&rel.entity, target_id).await.map_err(crm_error)?;
        Ok(target.map(|t| Candidate::from_fields(target_spec, &t.id, t.fields)))
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        for r in &activity.regarding {
            let Some(spec) = self.spec(&r.entity) else {
                return Err(CrmError::Permanent { message: format!("activity regards unknown entity `{}`", r.entity) });
            };
            // As a real CRM does: an activity cannot regard a record that was deleted.
            if self.store.record(&r.entity, &r.id).await.map_err(crm_error)?.is_none() {
                return Err(not_found(spec, &r.id));
            }
        }
        self.store.upsert_activity(activity).await.map(|a| a.id).map_err(crm_error)
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        let q = RecordQuery { phone: None, fields: query.filters.clone(), text: query.text.clone(), limit: query.limit as u32 };
        let records = self.store.search_records(&spec.name, &q).await.map_err(crm_error)?;
        Ok(records.into_iter().map(|r| Candidate::from_fields(spec, &r.id, r.fields)).collect())
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let r = self.store.create_record(&spec.name, fields.clone()).await.map_err(crm_error)?;
        Ok(Candidate::from_fields(spec, &r.id, r.fields))
    }

    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let r = self.store.update_record(&spec.name, id, fields.clone()).await.map_err(crm_error)?.ok_or_else(|| not_found(spec, id))?;
        Ok(Candidate::from_fields(spec, &r.id, r.fields))
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        let activities = self.store.activities_for(record, limit as u32).await.map_err(crm_error)?;
        Ok(activities
            .into_iter()
            .map(|a| {
                let fields: BTreeMap<String, String> = a
                    .fields
                    .iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                        other => Some((k.clone(), other.to_string())),
                    })
                    .collect();
                TimelineEntry {
                    subject: fields.get("subject").cloned().unwrap_or_default(),
                    id: a.id,
                    kind: a.kind,
                    at: a.created_at.to_string(),
                    fields,
                }
            })
            .collect())
    }
}
