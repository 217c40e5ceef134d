//! The built-in CRM on SQLite: records, their phone index, activities, the local index of an
//! external CRM.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cxbridge_domain::Timestamp;
use cxbridge_domain::crm::{Activity, RecordRef};
use rusqlite::params;
use rusqlite::types::Value;

use super::SqliteStore;
use super::units::{self, all, exec, first, value};
use crate::shared::{self, Columns, corrupt, new_id, ms};
use crate::{CrmStore, IndexChanges, Record, RecordQuery, Reindexed, Result, StoreError, StoredActivity, SyncState, phone_index_meta};

#[async_trait]
impl CrmStore for SqliteStore {
    async fn create_record(&self, entity: &str, mut fields: BTreeMap<String, String>) -> Result<Record> {
        let spec = self.schema.entity(entity)?.clone();
        shared::check_new_fields(&fields)?;
        let id = shared::take_id(&mut fields);
        let now = Timestamp::now();
        let schema = self.schema.clone();
        self.write(move |c| {
            if value::<i64>(c, "SELECT 1 FROM crm_records WHERE entity = ?1 AND id = ?2", params![spec.name, id])?.is_some() {
                return Err(StoreError::Invalid(format!("{} `{id}` exists already; update it with PATCH", spec.name)));
            }
            units::put_record(c, &schema, &spec, &id, &fields, now)?;
            Ok(Record { entity: spec.name.clone(), id: id.clone(), fields: fields.clone(), created_at: now, updated_at: now })
        })
        .await
    }

    async fn record(&self, entity: &str, id: &str) -> Result<Option<Record>> {
        self.schema.entity(entity)?;
        let (entity, id) = (entity.to_string(), id.to_string());
        self.read(move |c| first(c, "SELECT * FROM crm_records WHERE entity = ?1 AND id = ?2", params![entity, id], units::record)).await
    }

    async fn update_record(&self, entity: &str, id: &str, patch: BTreeMap<String, String>) -> Result<Option<Record>> {
        let spec = self.schema.entity(entity)?.clone();
        shared::check_patch(&patch)?;
        let (id, schema) = (id.to_string(), self.schema.clone());
        self.write(move |c| {
            let Some(mut record) = first(c, "SELECT * FROM crm_records WHERE entity = ?1 AND id = ?2", params![spec.name, id], units::record)? else {
                return Ok(None);
            };
            shared::apply_patch(&mut record, patch.clone());
            units::put_record(c, &schema, &spec, &id, &record.fields, record.updated_at)?;
            Ok(Some(record))
        })
        .await
    }

    async fn delete_record(&self, entity: &str, id: &str) -> Result<bool> {
        self.schema.entity(entity)?;
        let (entity, id) = (entity.to_string(), id.to_string());
        self.write(move |c| Ok(units::delete_record(c, &entity, &id)? > 0)).await
    }

    async fn search_records(&self, entity: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        let spec = self.schema.entity(entity)?;
        shared::check_not_sensitive(spec, &query.fields)?;
        if let Some(phone) = &query.phone {
            return shared::search_by_phone(self, &self.schema, entity, phone, query).await;
        }
        shared::check_query_fields(&query.fields)?;
        let mut sql = String::from("SELECT * FROM crm_records WHERE entity = ?");
        let mut binds: Vec<Value> = vec![Value::Text(entity.to_string())];
        for (k, v) in &query.fields {
            sql.push_str(" AND json_extract(fields, ?) = ?");
            binds.push(Value::Text(format!("$.\"{k}\"")));
            binds.push(Value::Text(v.clone()));
        }
        if let Some(text) = &query.text {
            // Field values only, never the JSON around them (`"pin":"98` must find no PIN),
            // and never a sensitive field.
            sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(crm_records.fields) AS f WHERE f.value LIKE ? ESCAPE '\\'");
            binds.push(Value::Text(shared::contains_pattern(text)));
            if !spec.sensitive.is_empty() {
                sql.push_str(&format!(" AND f.key NOT IN ({})", vec!["?"; spec.sensitive.len()].join(", ")));
                binds.extend(spec.sensitive.iter().cloned().map(Value::Text));
            }
            sql.push(')');
        }
        // Only placeholders are concatenated; every value is bound.
        sql.push_str(" ORDER BY updated_at DESC LIMIT ?");
        binds.push(Value::Integer(i64::from(shared::search_limit(query))));
        self.read(move |c| all(c, &sql, rusqlite::params_from_iter(binds), units::record)).await
    }

    async fn import_records(&self, entity: &str, rows: Vec<BTreeMap<String, String>>) -> Result<u64> {
        let spec = self.schema.entity(entity)?.clone();
        let schema = self.schema.clone();
        let now = Timestamp::now();
        let rows = rows
            .into_iter()
            .map(|mut fields| units::prepare_record(&schema, &spec, shared::take_id(&mut fields), &fields))
            .collect::<Result<Vec<_>>>()?;
        // One unit of work: every row in the writer's transaction, on prepared statements.
        self.write(move |c| {
            if rows.len() >= super::BULK_ROWS {
                c.execute_batch(&format!("PRAGMA cache_size = -{}", super::BULK_WRITER_CACHE_KIB))?;
            }
            for record in &rows {
                units::put_prepared(c, &spec.name, record, now)?;
            }
            Ok(rows.len() as u64)
        })
        .await
    }

    async fn count_records(&self, entity: &str) -> Result<u64> {
        let entity = entity.to_string();
        self.read(move |c| Ok(units::count(c, "SELECT COUNT(*) FROM crm_records WHERE entity = ?1", [entity])? as u64)).await
    }

    async fn apply_index_changes(&self, entity: &str, changes: IndexChanges, now: Timestamp) -> Result<()> {
        let spec = self.schema.entity(entity)?.clone();
        let schema = self.schema.clone();
        self.write(move |c| {
            if changes.reset {
                exec(c, "DELETE FROM crm_phone_index WHERE entity = ?1", [&spec.name])?;
                exec(c, "DELETE FROM crm_records WHERE entity = ?1", [&spec.name])?;
            }
            for (id, fields) in &changes.upserts {
                units::put_record(c, &schema, &spec, id, fields, now)?;
            }
            for id in &changes.deletes {
                units::delete_record(c, &spec.name, id)?;
            }
            exec(
                c,
                "INSERT INTO crm_sync_state (entity, cursor, complete, synced_at, last_error) VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT (entity) DO UPDATE SET cursor = excluded.cursor,
                   complete = CASE WHEN ?5 THEN excluded.complete ELSE MAX(crm_sync_state.complete, excluded.complete) END,
                   synced_at = excluded.synced_at, last_error = NULL",
                params![spec.name, changes.cursor, changes.pass_done, ms(now), changes.reset],
            )?;
            Ok(())
        })
        .await
    }

    async fn index_sync_failed(&self, entity: &str, error: &str) -> Result<()> {
        let (entity, error) = (entity.to_string(), error.to_string());
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO crm_sync_state (entity, last_error) VALUES (?1, ?2)
                 ON CONFLICT (entity) DO UPDATE SET last_error = excluded.last_error",
                params![entity, error],
            )?;
            Ok(())
        })
        .await
    }

    async fn index_sync_states(&self) -> Result<Vec<SyncState>> {
        self.read(|c| all(c, "SELECT entity, cursor, complete, synced_at, last_error FROM crm_sync_state ORDER BY entity", [], |r| shared::sync_state_from_row(r))).await
    }

    async fn reindex_phones(&self, batch: u32, progress: &(dyn for<'r> Fn(&'r Reindexed) + Send + Sync)) -> Result<Vec<Reindexed>> {
        let mut done = vec![];
        for spec in &self.schema.entities {
            let (key, rules) = phone_index_meta(&self.schema, spec);
            let meta_key = key.clone();
            let previous: Option<String> = self.read(move |c| value(c, "SELECT value FROM store_meta WHERE key = ?1", [meta_key])).await?;
            if previous.as_deref() == Some(rules.as_str()) {
                continue;
            }
            let mut state = Reindexed { entity: spec.name.clone(), records: 0, previous, done: false };
            let mut after = String::new();
            loop {
                // Keyset pages by id: each page is one short unit of work on the writer (read
                // and rewrite), so events and pops keep flowing while a large index is rebuilt.
                let (spec, schema, from) = (spec.clone(), self.schema.clone(), after.clone());
                let page = self
                    .write(move |c| {
                        let records = all(
                            c,
                            "SELECT * FROM crm_records WHERE entity = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                            params![spec.name, from, i64::from(batch.max(1))],
                            units::record,
                        )?;
                        for r in &records {
                            let prepared = units::prepare_record(&schema, &spec, r.id.clone(), &r.fields)?;
                            units::write_phone_index(c, &spec.name, &r.id, &prepared.phones)?;
                        }
                        Ok(records.last().map(|r| (r.id.clone(), records.len() as u64)))
                    })
                    .await?;
                let Some((last, n)) = page else { break };
                after = last;
                state.records += n;
                progress(&state);
            }
            let (key, value) = (key.clone(), rules.clone());
            self.write(move |c| {
                exec(c, "INSERT INTO store_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", params![key, value])?;
                Ok(())
            })
            .await?;
            state.done = true;
            progress(&state);
            done.push(state);
        }
        Ok(done)
    }

    async fn records_by_phone(&self, e164: &str, entities: &[String], limit: u32) -> Result<Vec<Record>> {
        let e164 = e164.to_string();
        let mut records = self.read(move |c| all(c, units::BY_PHONE, [e164], units::record)).await?;
        records.retain(|r| entities.contains(&r.entity));
        // Entity priority first, then the most recently updated record.
        records.sort_by(|a, b| {
            let pa = entities.iter().position(|e| *e == a.entity);
            let pb = entities.iter().position(|e| *e == b.entity);
            pa.cmp(&pb).then(b.updated_at.cmp(&a.updated_at)).then(a.id.cmp(&b.id))
        });
        records.truncate(limit as usize);
        Ok(records)
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<StoredActivity> {
        let now = Timestamp::now();
        let fields = serde_json::to_string(&activity.fields).map_err(corrupt)?;
        let activity = activity.clone();
        self.write(move |c| {
            let id = match value::<String>(c, "SELECT id FROM crm_activities WHERE key = ?1", [&activity.key])? {
                Some(id) => {
                    exec(c, "UPDATE crm_activities SET kind = ?1, fields = ?2, updated_at = ?3 WHERE id = ?4", params![activity.kind, fields, ms(now), id])?;
                    id
                }
                None => {
                    let id = new_id();
                    exec(
                        c,
                        "INSERT INTO crm_activities (id, key, kind, fields, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![id, activity.key, activity.kind, fields, ms(now)],
                    )?;
                    id
                }
            };
            exec(c, "DELETE FROM crm_activity_links WHERE activity_id = ?1", [&id])?;
            for (i, r) in activity.regarding.iter().enumerate() {
                exec(
                    c,
                    "INSERT OR IGNORE INTO crm_activity_links (activity_id, entity, record_id, is_primary) VALUES (?1, ?2, ?3, ?4)",
                    params![id, r.entity, r.id, i == 0],
                )?;
            }
            // Read back in the same unit of work: what the caller gets is what was stored.
            units::activity(c, "SELECT * FROM crm_activities WHERE id = ?1", &id)?.ok_or_else(|| StoreError::Corrupt(format!("activity {id} vanished")))
        })
        .await
    }

    async fn activity(&self, id: &str) -> Result<Option<StoredActivity>> {
        let id = id.to_string();
        self.read(move |c| units::activity(c, "SELECT * FROM crm_activities WHERE id = ?1", &id)).await
    }

    async fn activity_by_key(&self, key: &str) -> Result<Option<StoredActivity>> {
        let key = key.to_string();
        self.read(move |c| units::activity(c, "SELECT * FROM crm_activities WHERE key = ?1", &key)).await
    }

    async fn activities_for(&self, record: &RecordRef, limit: u32) -> Result<Vec<StoredActivity>> {
        let record = record.clone();
        self.read(move |c| {
            let ids = all(
                c,
"SELECT id FROM crm_activities WHERE id IN (SELECT activity_id FROM crm_activity_links WHERE entity = ?1 AND record_id = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
                params![record.entity, record.id, limit],
                |r| r.text("id"),
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(units::activity(c, "SELECT * FROM crm_activities WHERE id = ?1", &id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn count_activities(&self) -> Result<u64> {
        self.read(|c| Ok(units::count(c, "SELECT COUNT(*) FROM crm_activities", [])? as u64)).await
    }
}
