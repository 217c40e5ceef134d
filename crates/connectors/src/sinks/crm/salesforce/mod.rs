//! Salesforce behind the CRM port, over the REST API.
//!
//! - Login: OAuth 2.0 client credentials against the org's My Domain
//!   (`{login_url}/services/oauth2/token`); the token answer's `instance_url` is where every
//!   API call goes. The answer has no lifetime, so the cache assumes `session_minutes`; a
//!   401 fetches a new token anyway.
//! - Identification: one SOSL search over the phone fields of every identifying entity, with
//!   the caller's number in the digit notations it is most likely stored in. SOSL matching is
//!   loose, so each hit is checked: it stays only if one of its phone fields normalizes to
//!   the caller's E.164 number.
//! - Memorialization: a Task upserted by an external id field holding the activity key
//!   (`PATCH /sobjects/Task/{field}/{key}`), so a retry never creates a second Task. Batches
//!   go as Composite requests of at most 25 upserts (one API call each).
//! - Change feed: SOQL by `LastModifiedDate` plus `sobjects/{Object}/deleted/`.
//! - Every answer's `Sforce-Limit-Info: api-usage=n/max` is kept for the status page.

mod changes;
mod config;
mod connection;
mod query;
mod tasks;

use std::collections::BTreeMap;

use async_trait::async_trait;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, EntitySpec, RecordRef, SearchQuery, TimelineEntry};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::string_fields;

use changes::{Deletions, SyncCursor, bad_cursor};
use connection::has_code;
use query::{candidate, candidate_of, check_field_name, encode_segment, field_value, id_field, like_escape, object_name, record_fields, records, select_fields, select_list, soql_datetime, soql_escape, sosl_limit, sosl_phone_search};
use tasks::{check_key, has_create_only, refuses_create_only, without_create_only};

/// The field naming a record's owner (a User or Queue id).
pub const OWNER_FIELD: &str = "OwnerId";

pub use config::{MAX_COMPOSITE, SalesforceConfig, SalesforceConfigError, default_entities, default_mapping};
pub use connection::{ApiUsage, Salesforce};

#[async_trait]
impl Crm for Salesforce {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        // An entity without phone fields cannot be checked, so it is not searched.
        if let Some(field) = &self.normalized_phone_field {
            return self.find_by_normalized(field, e164, entities, limit).await;
        }
        let specs: Vec<&EntitySpec> = entities.iter().filter(|e| e.identify && !e.phone_fields.is_empty()).collect();
        let terms = self.phone_terms(e164);
        if specs.is_empty() || terms.is_empty() || limit == 0 {
            return Ok(vec![]);
        }
        let sosl = sosl_phone_search(&terms, &specs, sosl_limit(limit))?;
        let answer = self.get(&format!("{}/search/", self.api), &[("q", sosl)]).await?;
        let mut hits: Vec<(usize, Candidate)> = vec![];
        for r in answer.get("searchRecords").and_then(Value::as_array).into_iter().flatten() {
            let kind = r.get("attributes").and_then(|a| a.get("type")).and_then(Value::as_str).unwrap_or_default();
            let Some(rank) = specs.iter().position(|s| object_name(s).eq_ignore_ascii_case(kind)) else { continue };
            let spec = specs[rank];
            let fields = record_fields(r);
            if !self.has_number(spec, &fields, e164) {
                continue;
            }
            if let Some(c) = candidate_of(spec, fields) {
                hits.push((rank, c));
            }
        }
        // Stable: within an entity, Salesforce's order stays.
        hits.sort_by_key(|(rank, _)| *rank);
        Ok(hits.into_iter().take(limit).map(|(_, c)| c).collect())
    }

    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        let Some(rel) = spec.relation(relation) else {
            return Err(CrmError::Permanent { message: format!("entity `{}` has no relation `{relation}`", spec.name) });
        };
        check_field_name(&rel.field)?;
        let url = format!("{}/sobjects/{}/{}", self.api, object_name(spec), encode_segment(&record.id));
        let source = match self.get(&url, &[("fields", rel.field.clone())]).await {
            Ok(v) => v,
            Err(e) if has_code(&e, "NOT_FOUND") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(target_id) = field_value(&record_fields(&source), &rel.field).filter(|v| !v.is_empty()).map(str::to_string) else {
            return Ok(None);
        };
        let fallback;
        let target_spec = match self.spec_named(&rel.entity) {
            Some(s) => s,
            None => {
                fallback = EntitySpec::simple(&rel.entity, &[], "Name");
                &fallback
            }
        };
        self.read(target_spec, &target_id).await
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        check_key(&activity.key)?;
        let body = self.task_body(activity);
        match self.upsert_task(&activity.key, &body).await {
            Err(e) if refuses_create_only(&e) && has_create_only(&body) => self.upsert_task(&activity.key, &without_create_only(&body)).await,
            other => other,
        }
    }

    async fn upsert_activities(&self, activities: &[Activity]) -> Vec<Result<String, CrmError>> {
        let mut out: Vec<Option<Result<String, CrmError>>> = vec![None; activities.len()];
        let mut pending: Vec<(usize, &Activity, Map<String, Value>)> = vec![];
        for (i, a) in activities.iter().enumerate() {
            match check_key(&a.key) {
                Ok(()) => pending.push((i, a, self.task_body(a))),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for chunk in pending.chunks(self.batch_size.max(1)) {
            let batch: Vec<(&Activity, Map<String, Value>)> = chunk.iter().map(|(_, a, b)| (*a, b.clone())).collect();
            let mut results = self.composite(&batch).await;
            // Tasks that exist already refuse create-only fields: send those again without.
            let again: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(j, r)| matches!(r, Err(e) if refuses_create_only(e)) && has_create_only(&batch[*j].1))
                .map(|(j, _)| j)
                .collect();
            if !again.is_empty() {
                let retry: Vec<(&Activity, Map<String, Value>)> = again.iter().map(|j| (batch[*j].0, without_create_only(&batch[*j].1))).collect();
                for (j, r) in again.into_iter().zip(self.composite(&retry).await) {
                    results[j] = r;
                }
            }
            for ((i, _, _), r) in chunk.iter().zip(results) {
                out[*i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CrmError::Transient { message: "activity was not sent".into(), retry_after: None })))
            .collect()
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        let mut conditions = vec![];
        if let Some(text) = query.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            conditions.push(format!("{} LIKE '%{}%'", spec.title_field, like_escape(&soql_escape(text))));
        }
        for (field, value) in &query.filters {
            check_field_name(field)?;
            conditions.push(format!("{field} = '{}'", soql_escape(value)));
        }
        let mut soql = format!("SELECT {} FROM {}", select_list(spec)?, object_name(spec));
        if !conditions.is_empty() {
            soql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if !spec.title_field.contains('.') {
            soql.push_str(&format!(" ORDER BY {}", spec.title_field));
        }
        let limit = if query.limit == 0 { 50 } else { query.limit.min(2000) };
        soql.push_str(&format!(" LIMIT {limit}"));
        let answer = self.soql(soql).await?;
        Ok(records(&answer).iter().filter_map(|r| candidate(spec, r)).collect())
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let body: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let url = format!("{}/sobjects/{}/", self.api, object_name(spec));
        let answer = self.send(Method::POST, &url, &[], Some(&Value::Object(body))).await?.json()?;
        let Some(id) = answer.get("id").and_then(Value::as_str) else {
            return Err(CrmError::Permanent { message: format!("Salesforce created a {} but did not say its id: {}", spec.name, crate::client::truncate(&answer.to_string())) });
        };
        self.read(spec, id).await?.ok_or_else(|| CrmError::Transient { message: format!("{} `{id}` was created but cannot be read back yet", spec.name), retry_after: None })
    }

    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let body: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let url = format!("{}/sobjects/{}/{}", self.api, object_name(spec), encode_segment(id));
        let does_not_exist = || CrmError::Permanent { message: format!("{} `{id}` does not exist", spec.name) };
        match self.send(Method::PATCH, &url, &[], Some(&Value::Object(body))).await {
            Err(e) if has_code(&e, "NOT_FOUND") || has_code(&e, "ENTITY_IS_DELETED") => return Err(does_not_exist()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        self.read(spec, id).await?.ok_or_else(does_not_exist)
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        let id = soql_escape(&record.id);
        let limit = limit.clamp(1, 2000);
        let soql = format!(
            "SELECT Id, Subject, CreatedDate, Description, TaskSubtype FROM Task WHERE WhoId = '{id}' OR WhatId = '{id}' ORDER BY CreatedDate DESC, Id DESC LIMIT {limit}"
        );
        let answer = self.soql(soql).await?;
        Ok(records(&answer)
            .iter()
            .map(|r| {
                let fields = string_fields(r);
                let at = fields.get("CreatedDate").map(|s| s.parse::<Timestamp>().map_or_else(|_| s.clone(), |t| t.to_string())).unwrap_or_default();
                TimelineEntry {
                    id: fields.get("Id").cloned().unwrap_or_default(),
                    kind: fields.get("TaskSubtype").map_or_else(|| "task".to_string(), |s| s.to_lowercase()),
                    subject: fields.get("Subject").cloned().unwrap_or_default(),
                    at,
                    fields,
                }
            })
            .collect())
    }

    fn has_change_feed(&self) -> bool {
        true
    }

    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        let object = object_name(spec);
        let mut fields = select_fields(spec);
        if !fields.iter().any(|f| f.eq_ignore_ascii_case("LastModifiedDate")) {
            fields.push("LastModifiedDate".into());
        }
        for f in &fields {
            check_field_name(f)?;
        }
        let select = format!("SELECT {} FROM {object}", fields.join(", "));
        let order = format!("ORDER BY LastModifiedDate, {}", id_field(spec));
        let Some(cursor) = cursor else {
            return self.full_sync(spec, &select, &order, None).await;
        };
        let state: SyncCursor = serde_json::from_str(cursor).map_err(|_| bad_cursor(cursor))?;
        if let Some(next) = &state.next {
            if !next.starts_with("/services/data/") {
                return Err(bad_cursor(cursor));
            }
            match self.get(next, &[]).await {
                Ok(answer) => return self.change_page(spec, &answer, state.modified_since, state.deleted_since, vec![]),
                // Query locators expire after 15 minutes without use, and opening an 11th
                // releases the oldest (SOAP API Developer Guide, QueryLocator): a sync
                // interrupted between two pages (a restart, an outage) must not stall on
                // it. The records come ordered by LastModifiedDate, so the query is run
                // again from the newest one seen, as a next sync would.
                Err(e) if has_code(&e, "INVALID_QUERY_LOCATOR") => {
                    tracing::info!(object, "Salesforce's query locator expired; the query runs again from the newest change seen");
                }
                Err(e) => return Err(e),
            }
        }
        let (deletes, deleted_since) = match self.deletions(&object, &state.deleted_since, Timestamp::now()).await? {
            Deletions::Got(ids, next) => (ids, next),
            Deletions::NotYet => (vec![], state.deleted_since.clone()),
            Deletions::Gone(reason) => return self.full_sync(spec, &select, &order, Some(reason)).await,
        };
        let soql = match state.modified_since.as_deref() {
            // Seconds only in SOQL literals: records of that very second come again, which
            // costs nothing (upserts) and never skips one.
            Some(since) => {
                let t = since.parse::<Timestamp>().map_err(|_| bad_cursor(cursor))?;
                format!("{select} WHERE LastModifiedDate > {} {order}", soql_datetime(t))
            }
            None => format!("{select} {order}"),
        };
        let answer = self.soql(soql).await?;
        self.change_page(spec, &answer, state.modified_since, deleted_since, deletes)
    }
}

/// Tests of the query building on the default entities (here, where both are known).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_fields_of_entities() {
        let plain = EntitySpec::simple("opportunity", &["Phone"], "Name");
        assert_eq!(object_name(&plain), "Opportunity");
        assert_eq!(id_field(&plain), "Id");
        let contact = &default_entities()[0];
        assert_eq!(
            select_fields(contact),
            ["Id", "Name", "Phone", "MobilePhone", "HomePhone", "OtherPhone", "Email", "Account.Name", "AccountId"]
        );
        assert!(check_field_name("Account.Name").is_ok());
        assert!(check_field_name("Name) FROM User --").is_err());
    }

    #[test]
    fn lookups_are_flattened() {
        let r = json!({ "attributes": { "type": "Contact" }, "Id": "003", "Name": "Ada", "Account": { "attributes": { "type": "Account" }, "Name": "Acme" } });
        let f = record_fields(&r);
        assert_eq!(f.get("Account.Name").map(String::as_str), Some("Acme"));
        assert_eq!(f.get("AccountName").map(String::as_str), Some("Acme"));
        assert!(!f.contains_key("attributes"));
        let c = candidate(&default_entities()[0], &r).expect("candidate");
        assert_eq!(c.display, vec![("Name".to_string(), "Ada".to_string()), ("Account name".to_string(), "Acme".to_string())]);
    }
}
