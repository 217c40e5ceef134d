//! Memorialization: the Task upserted by its external id, alone or in Composite requests of
//! at most 25, with its Who/What links and fields fitted to Salesforce's rules.

use std::collections::HashMap;

use cxbridge_domain::crm::{Activity, CrmError, RecordRef};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::client::http::{classify, vendor_message};

use super::connection::{Salesforce, has_code, reclassify};
use super::query::{encode_segment, object_name};

impl Salesforce {
    fn task_url(&self, key: &str) -> String {
        format!("{}/sobjects/Task/{}/{}", self.api, self.key_field, encode_segment(key))
    }

    fn is_who(&self, record: &RecordRef) -> bool {
        match self.spec_named(&record.entity) {
            Some(spec) => ["Contact", "Lead"].iter().any(|o| object_name(spec).eq_ignore_ascii_case(o)),
            // Salesforce id key prefixes: 003 Contact, 00Q Lead.
            None => record.id.starts_with("003") || record.id.starts_with("00Q"),
        }
    }

    fn is_lead(&self, record: &RecordRef) -> bool {
        match self.spec_named(&record.entity) {
            Some(spec) => object_name(spec).eq_ignore_ascii_case("Lead"),
            None => record.id.starts_with("00Q"),
        }
    }

    /// The Salesforce object a regarded record is of, for words shown to people.
    fn object_of(&self, record: &RecordRef) -> String {
        self.spec_named(&record.entity).map_or_else(|| record.entity.clone(), object_name)
    }

    /// The Task's fields: the mapped ones (fitted to Salesforce's text lengths), the first
    /// person regarded as `WhoId`, the first other record as `WhatId`, the agent as `OwnerId`.
    ///
    /// A Task about a Lead cannot name anything else: "if the WhoId field refers to a Lead,
    /// then the WhatId field must be empty" (Object Reference, Task; Salesforce answers
    /// `FIELD_INTEGRITY_EXCEPTION`). Such a Task gets the Lead alone, and the other record
    /// is named on the first line of its `Description` instead, so the link is not lost and
    /// the conversation is not refused for good.
    pub(super) fn task_body(&self, activity: &Activity) -> Map<String, Value> {
        let mut body = Map::new();
        for (field, value) in &activity.fields {
            body.insert(field.clone(), task_value(field, value));
        }
        let who = activity.regarding.iter().find(|r| self.is_who(r));
        if let Some(who) = who {
            body.insert("WhoId".into(), json!(who.id));
        }
        match activity.regarding.iter().find(|r| !self.is_who(r)) {
            Some(what) if who.is_some_and(|w| self.is_lead(w)) => {
                let note = format!("Related to: {} {} (Salesforce does not link a Task about a Lead to another record)", self.object_of(what), what.id);
                let key = body.keys().find(|k| k.eq_ignore_ascii_case("Description")).cloned().unwrap_or_else(|| "Description".into());
                let text = match body.get(&key).and_then(Value::as_str).filter(|d| !d.is_empty()) {
                    Some(d) => format!("{note}\n{d}"),
                    None => note,
                };
                body.insert(key.clone(), task_value(&key, &Value::String(text)));
            }
            Some(what) => {
                body.insert("WhatId".into(), json!(what.id));
            }
            None => {}
        }
        if let Some(owner) = activity.on_behalf_of.as_ref().filter(|o| !o.is_empty()) {
            body.insert("OwnerId".into(), json!(owner));
        }
        body.remove(&self.key_field);
        body
    }

    pub(super) async fn upsert_task(&self, key: &str, body: &Map<String, Value>) -> Result<String, CrmError> {
        let url = self.task_url(key);
        let answer = self.send(Method::PATCH, &url, &[], Some(&Value::Object(body.clone()))).await?;
        match answer.json()?.get("id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_string()),
            // API versions before 46.0 answer an update with 204 and no body.
            None => self.task_id(key).await,
        }
    }

    async fn task_id(&self, key: &str) -> Result<String, CrmError> {
        let v = self.get(&self.task_url(key), &[("fields", "Id".to_string())]).await?;
        v.get("Id").and_then(Value::as_str).map(str::to_string).ok_or_else(|| CrmError::Transient {
            message: format!("Salesforce did not say the id of the Task with {} = {key}", self.key_field),
            retry_after: None,
        })
    }

    /// One Composite request of at most 25 upserts; one result per activity, in order.
    pub(super) async fn composite(&self, batch: &[(&Activity, Map<String, Value>)]) -> Vec<Result<String, CrmError>> {
        let requests: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(i, (a, body))| json!({ "method": "PATCH", "url": self.task_url(&a.key), "referenceId": format!("a{i}"), "body": body }))
            .collect();
        let request = json!({ "allOrNone": false, "compositeRequest": requests });
        let answer = match self.send(Method::POST, &format!("{}/composite", self.api), &[], Some(&request)).await.and_then(|a| a.json()) {
            Ok(v) => v,
            Err(e) => return vec![Err(e); batch.len()],
        };
        let by_reference: HashMap<&str, &Value> = answer
            .get("compositeResponse")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|r| Some((r.get("referenceId")?.as_str()?, r))).collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(batch.len());
        for (i, (activity, _)) in batch.iter().enumerate() {
            let result = match by_reference.get(format!("a{i}").as_str()) {
                None => Err(CrmError::Transient {
                    message: format!("Salesforce's Composite answer has no result for activity {}", activity.key),
                    retry_after: None,
                }),
                Some(sub) => self.subresult(&activity.key, sub).await,
            };
            out.push(result);
        }
        out
    }

    async fn subresult(&self, key: &str, sub: &Value) -> Result<String, CrmError> {
        let status = sub.get("httpStatusCode").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).and_then(|s| StatusCode::from_u16(s).ok());
        let body = sub.get("body").cloned().unwrap_or(Value::Null);
        match status {
            Some(s) if s.is_success() => match body.get("id").and_then(Value::as_str) {
                Some(id) => Ok(id.to_string()),
                None => self.task_id(key).await,
            },
            Some(s) => {
                let url = self.task_url(key);
                let message = format!("Salesforce answered {} to PATCH {}: {}", s.as_u16(), url, vendor_message(&body.to_string()));
                Err(reclassify(classify(s, message, None)))
            }
            None => Err(CrmError::Transient { message: format!("Salesforce's Composite answer for activity {key} has no status"), retry_after: None }),
        }
    }
}

pub(super) fn check_key(key: &str) -> Result<(), CrmError> {
    if key.is_empty() || key.chars().count() > 255 {
        return Err(CrmError::Permanent { message: format!("activity key `{}` must be 1 to 255 characters for a Salesforce External ID", crate::client::truncate(key)) });
    }
    Ok(())
}

/// Task text fields and their lengths: a long transcript is cut rather than refused.
const TASK_TEXT_LIMITS: &[(&str, usize)] = &[("Subject", 255), ("Description", 32_000), ("CallDisposition", 255), ("CallObject", 255)];

/// Fields Salesforce sets on create only: an update (an upsert that finds its Task) that
/// names them is refused.
const CREATE_ONLY_TASK_FIELDS: &[&str] = &["TaskSubtype"];

fn task_value(field: &str, value: &Value) -> Value {
    let value = match value {
        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()),
        other => other.clone(),
    };
    let limit = TASK_TEXT_LIMITS.iter().find(|(f, _)| f.eq_ignore_ascii_case(field)).map(|(_, n)| *n);
    match (value, limit) {
        (Value::String(s), Some(max)) if s.chars().count() > max => Value::String(s.chars().take(max - 1).chain(std::iter::once('…')).collect()),
        (v, _) => v,
    }
}

pub(super) fn has_create_only(body: &Map<String, Value>) -> bool {
    body.keys().any(|k| CREATE_ONLY_TASK_FIELDS.iter().any(|c| c.eq_ignore_ascii_case(k)))
}

pub(super) fn without_create_only(body: &Map<String, Value>) -> Map<String, Value> {
    body.iter().filter(|(k, _)| !CREATE_ONLY_TASK_FIELDS.iter().any(|c| c.eq_ignore_ascii_case(k))).map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn refuses_create_only(e: &CrmError) -> bool {
    has_code(e, "INVALID_FIELD_FOR_INSERT_UPDATE")
        && matches!(e, CrmError::Permanent { message } if CREATE_ONLY_TASK_FIELDS.iter().any(|f| message.contains(f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_text_is_cut_to_fit() {
        let long = "x".repeat(40_000);
        let v = task_value("Description", &json!(long));
        assert_eq!(v.as_str().map(|s| s.chars().count()), Some(32_000));
        assert_eq!(task_value("CallDurationInSeconds", &json!(5)), json!(5));
        assert_eq!(task_value("Custom__c", &json!(["a"])), json!("[\"a\"]"));
    }
}
