//! Microsoft Dataverse (Dynamics 365 Sales / Customer Service) over its Web API (OData v4).
//!
//! - Identification: one `GET {collection}?$filter=…` per identifying entity, all entities at
//!   once (the pop waits for the slowest, not for the sum), every phone column against every
//!   notation the number is commonly typed in, or one `eq` on a column holding E.164.
//! - Memorialization: an **upsert by alternate key** (`PATCH phonecalls(cxb_conversationkey='…')`),
//!   so a retry after a lost answer lands on the same row; several at once go in `$batch`
//!   requests of independent parts (no change set: one bad activity fails alone).
//! - Change tracking (`Prefer: odata.track-changes`) feeds the hub's local phone index.
//!
//! Everything goes through [`CrmHttp`]: the Entra ID token cache, the service-protection
//! limits (6,000 requests / 5 min, 52 in flight), timeouts and the 401 retry.
//!
//! Names used here, as Dataverse has them: the *logical name* of a table (`contact`), its
//! *entity set* (`contacts`, used in URLs), its primary key (`contactid`), a lookup column's
//! value property (`_parentcustomerid_value`) and the navigation property a lookup is set
//! through (`parentcustomerid_account@odata.bind`).

mod activity;
mod batch;
mod changes;
mod config;
mod connection;
mod query;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, EntitySpec, RecordRef, SearchQuery, TimelineEntry};
use cxbridge_domain::phone::PhoneNormalizer;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Map, Value};

use crate::client::http::{Answer, CrmHttp};
use crate::client::limits::{Limits, RateLimiter};
use crate::client::oauth::{ClientCredentials, Secret, TokenCache};

use super::string_fields;
use activity::Upsert;
use config::MAX_PAGE;
use connection::Inner;
use query::{LOOKUP_LOGICAL_NAME, PREFER_ANNOTATIONS, checked_collection, column, entity_id, guid, is_column_name, odata, path_of, query_string, select_list};

/// The lookup field naming a record's owner (a `systemuser` or `team`).
pub const OWNER_FIELD: &str = "_ownerid_value";

pub use config::{DataverseConfig, DataverseConfigError, default_entities, default_mapping};
pub use query::{collection_of, entity_set, id_field_of, is_guid, key_value, like_literal, literal, record_fields};

/// Lookups that can point to several tables and are set through `{lookup}_{entity}`.
const CUSTOMER_LOOKUPS: &[&str] = &["parentcustomerid", "customerid"];

pub struct Dataverse {
    inner: Arc<Inner>,
}

impl Dataverse {
    /// `secret` is the resolved client secret (config or `CXBRIDGE_CRM_CLIENT_SECRET`).
    pub fn new(config: &DataverseConfig, secret: Secret, normalizer: PhoneNormalizer, http: reqwest::Client) -> Result<Self, DataverseConfigError> {
        config.validate()?;
        if secret.is_empty() {
            return Err(DataverseConfigError::NoSecret);
        }
        let credentials = ClientCredentials {
            token_url: config.effective_token_url(),
            client_id: config.client_id.trim().to_string(),
            client_secret: secret,
            scope: Some(config.effective_scope()),
            default_lifetime: Duration::from_secs(3599),
        };
        let tokens = Arc::new(TokenCache::new(http.clone(), credentials));
        let limiter = Arc::new(RateLimiter::new(Limits {
            requests_per_window: config.requests_per_window,
            window: Duration::from_secs(config.window_secs),
            max_in_flight: config.max_in_flight,
        }));
        let api = config.api_url();
        let api_path = path_of(&api).to_string();
        Ok(Self {
            inner: Arc::new(Inner {
                http: CrmHttp::new(http, tokens, limiter, "Dataverse"),
                api,
                api_path,
                key_field: config.activity_key_field.clone(),
                normalized_phone_field: config.normalized_phone_field.clone(),
                batch_size: config.batch_size as usize,
                page_size: config.page_size,
                timeout: Duration::from_millis(config.timeout_ms),
                normalizer,
                entities: default_entities(),
                batches_sent: AtomicU64::new(0),
            }),
        })
    }

    /// The entities this connection knows (activities may regard them, relations may point
    /// to them): the configured ones, plus the defaults of [`default_entities`] for names
    /// the configuration does not declare.
    pub fn with_entities(mut self, entities: Vec<EntitySpec>) -> Self {
        let mut all = entities;
        for d in default_entities() {
            if !all.iter().any(|e| e.name == d.name) {
                all.push(d);
            }
        }
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.entities = all;
        }
        self
    }

    pub fn entities(&self) -> &[EntitySpec] {
        &self.inner.entities
    }

    /// `{url}/api/data/v{version}`.
    pub fn api_url(&self) -> &str {
        &self.inner.api
    }

    /// Access tokens fetched so far (status page).
    pub fn tokens_fetched(&self) -> u64 {
        self.inner.http.tokens.fetched()
    }

    /// Requests counted in the current service-protection window (status page).
    pub async fn requests_in_window(&self) -> usize {
        self.inner.http.limiter.used().await
    }

    pub fn limits(&self) -> Limits {
        self.inner.http.limiter.limits()
    }

    /// `$batch` requests sent so far.
    pub fn batches_sent(&self) -> u64 {
        self.inner.batches_sent.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Crm for Dataverse {
    async fn find_by_phone(&self, e164: &str, entities: &[EntitySpec], limit: usize) -> Result<Vec<Candidate>, CrmError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        // All entities at once: the pop waits for the slowest query, not for their sum.
        // Dropping the JoinSet (the caller gave up) aborts the queries still running.
        let mut set = tokio::task::JoinSet::new();
        let identifying: Vec<EntitySpec> = entities.iter().filter(|e| e.identify).cloned().collect();
        for (i, spec) in identifying.into_iter().enumerate() {
            let inner = self.inner.clone();
            let e164 = e164.to_string();
            set.spawn(async move { (i, inner.find_in(&spec, &e164, limit).await) });
        }
        let mut results: BTreeMap<usize, Result<Vec<Candidate>, CrmError>> = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => {
                    results.insert(i, r);
                }
                Err(e) => return Err(CrmError::Transient { message: format!("a Dataverse query failed: {e}"), retry_after: None }),
            }
        }
        let mut out = vec![];
        for (_, r) in results {
            out.extend(r?);
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn related(&self, record: &RecordRef, spec: &EntitySpec, relation: &str) -> Result<Option<Candidate>, CrmError> {
        let inner = &self.inner;
        let rel = spec.relation(relation).ok_or_else(|| CrmError::Permanent { message: format!("entity `{}` has no relation `{relation}`", spec.name) })?;
        let target = inner
            .entity(&rel.entity)
            .ok_or_else(|| CrmError::Permanent { message: format!("relation `{relation}` names entity `{}`, which this Dataverse connection does not know", rel.entity) })?
            .clone();
        let id = guid(&record.id)?;
        let lookup = column(&rel.field)?;
        // By filter rather than by key: a missing record is an empty list, not a 404.
        let rows = inner
            .query(&checked_collection(spec)?, &[("$select", lookup.to_string()), ("$filter", format!("{} eq {id}", column(&id_field_of(spec))?))])
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let Some(target_id) = row.get(lookup).and_then(Value::as_str).filter(|s| !s.is_empty()) else { return Ok(None) };
        // A customer lookup may point to an account or a contact: only the asked-for kind counts.
        if let Some(points_to) = row.get(format!("{lookup}{LOOKUP_LOGICAL_NAME}")).and_then(Value::as_str)
            && points_to != target.name
        {
            return Ok(None);
        }
        let target_id = guid(target_id)?;
        let rows = inner
            .query(&checked_collection(&target)?, &[("$select", select_list(&target)?), ("$filter", format!("{} eq {target_id}", column(&id_field_of(&target))?))])
            .await?;
        Ok(rows.first().and_then(|r| inner.candidate(&target, r)))
    }

    async fn upsert_activity(&self, activity: &Activity) -> Result<String, CrmError> {
        let u = self.inner.upsert_request(activity)?;
        self.inner.upsert_one(&u).await
    }

    /// Activities with the same agent go into `$batch` requests of `batch_size` (the
    /// impersonation header is on the batch and on each part); the batches run concurrently
    /// within the connection's limits.
    async fn upsert_activities(&self, activities: &[Activity]) -> Vec<Result<String, CrmError>> {
        let mut results: Vec<Option<Result<String, CrmError>>> = vec![None; activities.len()];
        let mut groups: BTreeMap<Option<String>, Vec<(usize, Upsert)>> = BTreeMap::new();
        for (i, a) in activities.iter().enumerate() {
            match self.inner.upsert_request(a) {
                Ok(u) => groups.entry(u.caller.clone()).or_default().push((i, u)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (_, items) in groups {
            for chunk in items.chunks(self.inner.batch_size) {
                let (indexes, upserts): (Vec<usize>, Vec<Upsert>) = chunk.iter().cloned().unzip();
                let inner = self.inner.clone();
                set.spawn(async move {
                    let r = inner.upsert_batch(&upserts).await;
                    indexes.into_iter().zip(r).collect::<Vec<_>>()
                });
            }
        }
        while let Some(joined) = set.join_next().await {
            if let Ok(pairs) = joined {
                for (i, r) in pairs {
                    results[i] = Some(r);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CrmError::Transient { message: "the Dataverse $batch task failed".into(), retry_after: None })))
            .collect()
    }

    async fn search(&self, spec: &EntitySpec, query: &SearchQuery) -> Result<Vec<Candidate>, CrmError> {
        let mut terms = vec![];
        if let Some(text) = query.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            terms.push(format!("contains({},{})", column(&spec.title_field)?, literal(&like_literal(text))));
        }
        for (field, value) in &query.filters {
            let field = column(field)?;
            let is_lookup = field.starts_with('_') && field.ends_with("_value");
            terms.push(if is_lookup && is_guid(value) { format!("{field} eq {value}") } else { format!("{field} eq {}", literal(value)) });
        }
        let top = if query.limit == 0 { 50 } else { query.limit.min(MAX_PAGE as usize) };
        let mut q = vec![("$select", select_list(spec)?)];
        if !terms.is_empty() {
            q.push(("$filter", terms.join(" and ")));
        }
        q.push(("$top", top.to_string()));
        let rows = self.inner.query(&checked_collection(spec)?, &q).await?;
        Ok(rows.iter().filter_map(|r| self.inner.candidate(spec, r)).collect())
    }

    async fn create(&self, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let inner = &self.inner;
        let body = record_body(spec, &inner.entities, fields)?;
        let url = format!("{}/{}?{}", inner.api, checked_collection(spec)?, query_string(&[("$select", select_list(spec)?)]));
        let build = |rb: RequestBuilder| {
            odata(rb).header(CONTENT_TYPE, "application/json").header("Prefer", format!("return=representation,{PREFER_ANNOTATIONS}")).body(body.clone())
        };
        let answer = inner.send(Method::POST, url, &build, 1, inner.timeout).await?;
        self.stored(spec, &answer).await
    }

    async fn update(&self, spec: &EntitySpec, id: &str, fields: &BTreeMap<String, String>) -> Result<Candidate, CrmError> {
        let inner = &self.inner;
        let id = guid(id)?;
        let body = record_body(spec, &inner.entities, fields)?;
        let url = format!("{}/{}({id})?{}", inner.api, checked_collection(spec)?, query_string(&[("$select", select_list(spec)?)]));
        // `If-Match: *`: update only, never create a record under a mistyped id.
        let build = |rb: RequestBuilder| {
            odata(rb)
                .header(CONTENT_TYPE, "application/json")
                .header("If-Match", "*")
                .header("Prefer", format!("return=representation,{PREFER_ANNOTATIONS}"))
                .body(body.clone())
        };
        let answer = inner.send(Method::PATCH, url, &build, 1, inner.timeout).await?;
        self.stored(spec, &answer).await
    }

    async fn timeline(&self, record: &RecordRef, limit: usize) -> Result<Vec<TimelineEntry>, CrmError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let id = guid(&record.id)?;
        let rows = self
            .inner
            .query(
                "activitypointers",
                &[
                    ("$select", "activityid,activitytypecode,subject,createdon,description".into()),
                    ("$filter", format!("_regardingobjectid_value eq {id}")),
                    ("$orderby", "createdon desc".into()),
                    ("$top", limit.min(MAX_PAGE as usize).to_string()),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let fields = string_fields(r);
                Some(TimelineEntry {
                    id: fields.get("activityid")?.clone(),
                    kind: fields.get("activitytypecode").cloned().unwrap_or_default(),
                    subject: fields.get("subject").cloned().unwrap_or_default(),
                    at: fields.get("createdon").cloned().unwrap_or_default(),
                    fields,
                })
            })
            .collect())
    }

    fn has_change_feed(&self) -> bool {
        true
    }

    /// Dataverse change tracking: the first sync pages through the table
    /// (`@odata.nextLink`), its last page carries the `@odata.deltaLink` that is the cursor
    /// of the next sync. The cursor is that link, so it only works with this environment.
    async fn changes(&self, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
        changes::page(&self.inner, spec, cursor).await
    }
}

impl Dataverse {
    /// The record a create/update answered with (`return=representation`), or read back
    /// when Dataverse answered 204 with only its `OData-EntityId`.
    async fn stored(&self, spec: &EntitySpec, answer: &Answer) -> Result<Candidate, CrmError> {
        let inner = &self.inner;
        if answer.status != StatusCode::NO_CONTENT {
            let v = answer.json()?;
            return inner
                .candidate(spec, &v)
                .ok_or_else(|| CrmError::Transient { message: format!("Dataverse answered without the record's `{}`", id_field_of(spec)), retry_after: None });
        }
        let id = entity_id(&answer.headers).ok_or_else(|| CrmError::Transient { message: "Dataverse answered 204 without OData-EntityId".into(), retry_after: None })?;
        let rows = inner.query(&checked_collection(spec)?, &[("$select", select_list(spec)?), ("$filter", format!("{} eq {id}", column(&id_field_of(spec))?))]).await?;
        rows.first()
            .and_then(|r| inner.candidate(spec, r))
            .ok_or_else(|| CrmError::Transient { message: format!("Dataverse does not return the record {id} it just wrote"), retry_after: None })
    }
}

/// The JSON body of a create/update from workflow fields. Values go as JSON strings, which
/// text columns take; number, yes/no and choice columns refuse them. A relation's lookup column
/// (`_parentcustomerid_value`) cannot be written as such: it becomes the navigation
/// property bind (`parentcustomerid_account@odata.bind: "/accounts(…)"`).
fn record_body(spec: &EntitySpec, entities: &[EntitySpec], fields: &BTreeMap<String, String>) -> Result<String, CrmError> {
    let mut body = Map::new();
    for (k, v) in fields {
        if let Some(rel) = spec.relations.iter().find(|r| r.field == *k) {
            let lookup = k.strip_prefix('_').and_then(|l| l.strip_suffix("_value")).unwrap_or(k);
            if v.trim().is_empty() {
                return Err(CrmError::Permanent { message: format!("clearing the lookup `{k}` is not supported; set it to another record") });
            }
            let target = entities.iter().find(|e| e.name == rel.entity);
            let collection = target.map(collection_of).unwrap_or_else(|| entity_set(&rel.entity));
            let nav = if CUSTOMER_LOOKUPS.contains(&lookup) { format!("{lookup}_{}", rel.entity) } else { lookup.to_string() };
            body.insert(format!("{}@odata.bind", column(&nav)?), Value::String(format!("/{}({})", column(&collection)?, guid(v)?)));
            continue;
        }
        let name = k.strip_suffix("@odata.bind").unwrap_or(k);
        if !is_column_name(name) {
            return Err(CrmError::Permanent { message: format!("`{k}` is not a Dataverse column name") });
        }
        body.insert(k.clone(), Value::String(v.clone()));
    }
    serde_json::to_string(&Value::Object(body)).map_err(|e| CrmError::Permanent { message: e.to_string() })
}

/// Tests of the query building on the default entities (here, where both are known).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn select_reads_lookup_names_through_the_lookup() {
        let contact = &default_entities()[0];
        assert_eq!(
            select_list(contact).expect("select"),
            "contactid,fullname,telephone1,mobilephone,telephone2,emailaddress1,_parentcustomerid_value"
        );
        let fields = record_fields(&json!({
            "contactid": "c", "_parentcustomerid_value": "a",
            "_parentcustomerid_value@OData.Community.Display.V1.FormattedValue": "Contoso",
            "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
        }));
        assert_eq!(fields.get("parentcustomerid_name").map(String::as_str), Some("Contoso"));
        assert_eq!(fields.get("_parentcustomerid_value").map(String::as_str), Some("a"));
    }
}
