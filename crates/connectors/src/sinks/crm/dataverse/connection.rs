//! One Dataverse connection: the shared HTTP discipline with this environment's settings, and
//! the reads the adapter builds on (a collection `GET`, a record as a candidate, the phone lookup).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cxbridge_domain::crm::{Candidate, CrmError, EntitySpec};
use cxbridge_domain::phone::PhoneNormalizer;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::client::http::{Answer, Call, CrmHttp};

use super::query::{PREFER_ANNOTATIONS, checked_collection, column, id_field_of, literal, odata, query_string, record_fields, select_list};

pub(super) struct Inner {
    pub(super) http: CrmHttp,
    /// `{url}/api/data/v{version}`.
    pub(super) api: String,
    /// The path part of `api` (`/api/data/v9.2`), for the request lines inside a `$batch`.
    pub(super) api_path: String,
    pub(super) key_field: String,
    pub(super) normalized_phone_field: Option<String>,
    pub(super) batch_size: usize,
    pub(super) page_size: u32,
    pub(super) timeout: Duration,
    pub(super) normalizer: PhoneNormalizer,
    pub(super) entities: Vec<EntitySpec>,
    pub(super) batches_sent: AtomicU64,
}

impl Inner {
    pub(super) fn entity(&self, name: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.name == name)
    }

    pub(super) async fn send(&self, method: Method, url: String, build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync), cost: u32, timeout: Duration) -> Result<Answer, CrmError> {
        self.http.send(Call { method, url, build, cost, timeout }).await
    }

    pub(super) async fn get(&self, url: String, prefer: &str) -> Result<Value, CrmError> {
        let build = |rb: RequestBuilder| odata(rb).header("Prefer", prefer);
        self.send(Method::GET, url, &build, 1, self.timeout).await?.json()
    }

    /// `GET {collection}?{query}`: the records of the answer's `value`.
    pub(super) async fn query(&self, collection: &str, query: &[(&str, String)]) -> Result<Vec<Value>, CrmError> {
        let url = format!("{}/{collection}?{}", self.api, query_string(query));
        let v = self.get(url, PREFER_ANNOTATIONS).await?;
        match v.get("value") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(CrmError::Transient { message: format!("Dataverse answered GET {collection} without a `value` list"), retry_after: None }),
        }
    }

    pub(super) fn candidate(&self, spec: &EntitySpec, record: &Value) -> Option<Candidate> {
        let id_field = id_field_of(spec);
        let fields = record_fields(record);
        let id = fields.get(&id_field)?.clone();
        Some(Candidate::from_fields(spec, &id, fields))
    }

    pub(super) async fn find_in(&self, spec: &EntitySpec, e164: &str, limit: usize) -> Result<Vec<Candidate>, CrmError> {
        let Some(filter) = self.phone_filter(spec, e164)? else { return Ok(vec![]) };
        let collection = checked_collection(spec)?;
        let records = self.query(&collection, &[("$select", select_list(spec)?), ("$filter", filter), ("$top", limit.to_string())]).await?;
        Ok(records.iter().filter_map(|r| self.candidate(spec, r)).take(limit).collect())
    }

    /// The `$filter` finding `e164` in `spec`'s phone columns; `None` when it has none.
    fn phone_filter(&self, spec: &EntitySpec, e164: &str) -> Result<Option<String>, CrmError> {
        if let Some(f) = &self.normalized_phone_field {
            return Ok(Some(format!("{f} eq {}", literal(e164))));
        }
        if spec.phone_fields.is_empty() {
            return Ok(None);
        }
        let notations = self.normalizer.notations(e164);
        let mut terms = Vec::with_capacity(spec.phone_fields.len() * notations.len());
        for field in &spec.phone_fields {
            let field = column(field)?;
            for n in &notations {
                terms.push(format!("{field} eq {}", literal(n)));
            }
        }
        Ok(Some(format!("({})", terms.join(" or "))))
    }
}
