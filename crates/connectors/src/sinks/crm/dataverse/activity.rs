//! Memorialization: one activity as an upsert by its alternate key, with its parties swapped
//! by direction, its values fitted to the columns, and impersonation of the agent.

use cxbridge_domain::conversation::Direction;
use cxbridge_domain::crm::{Activity, CrmError};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder};
use serde_json::{Map, Value};

use super::connection::Inner;
use super::query::{checked_collection, column, encode_strict, entity_id, entity_set, guid, is_column_name, is_guid, key_value, odata};

/// Impersonation by `systemuserid` (agents' `crm_user_id`). `CallerObjectId` would take the
/// user's Entra ID object id instead, which the hub does not know.
pub(super) const CALLER_HEADER: &str = "MSCRMCallerID";
/// Entities an activity party can name besides users (the customer side of a call).
const PARTY_ENTITIES: &[&str] = &["contact", "account", "lead"];

/// One activity upsert, ready to send alone or as a part of a `$batch`.
#[derive(Debug, Clone)]
pub(super) struct Upsert {
    /// Relative to the API root: `phonecalls(cxb_conversationkey='…')?$select=activityid`.
    pub(super) target: String,
    pub(super) body: String,
    pub(super) caller: Option<String>,
}

impl Inner {
    /// The request that upserts `a` by its key.
    pub(super) fn upsert_request(&self, a: &Activity) -> Result<Upsert, CrmError> {
        let kind = column(&a.kind).map_err(|_| CrmError::Permanent { message: format!("activity kind `{}` is not a Dataverse table name", a.kind) })?;
        let collection = entity_set(kind);
        let mut body = Map::new();
        for (k, v) in &a.fields {
            if *k == self.key_field {
                continue; // The key is in the URL; Dataverse fills the column from it.
            }
            let name = k.strip_suffix("@odata.bind").unwrap_or(k);
            if !is_column_name(name) {
                return Err(CrmError::Permanent { message: format!("mapped field `{k}` is not a Dataverse column name") });
            }
            body.insert(k.clone(), fit(kind, k, v));
        }
        let caller = match a.on_behalf_of.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) if is_guid(id) => Some(id.to_ascii_lowercase()),
            Some(id) => {
                tracing::warn!(crm_user_id = id, "the agent's crm_user_id is not a Dataverse systemuserid (a GUID); the activity is written as the application user");
                None
            }
            None => None,
        };
        let mut parties = vec![];
        if let Some(r) = a.regarding.first() {
            let spec = self.entity(&r.entity).ok_or_else(|| CrmError::Permanent {
                message: format!(
                    "the activity regards a `{}` record, but this Dataverse connection knows no such entity (known: {}); declare it under [[crm.entities]]",
                    r.entity,
                    self.entities.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            let entity = column(&spec.name)?;
            let target = format!("/{}({})", checked_collection(spec)?, guid(&r.id)?);
            body.insert(format!("regardingobjectid_{entity}_{kind}@odata.bind"), Value::String(target.clone()));
            if PARTY_ENTITIES.contains(&entity) {
                parties.push((format!("partyid_{entity}@odata.bind"), target, Party::Customer));
            }
        }
        if let Some(user) = &caller {
            parties.push(("partyid_systemuser@odata.bind".into(), format!("/systemusers({user})"), Party::Agent));
        }
        if let Some(masks) = party_masks(kind, a.direction) {
            let list: Vec<Value> = parties
                .into_iter()
                .map(|(bind, target, party)| {
                    let mask = match party {
                        Party::Customer => masks.0,
                        Party::Agent => masks.1,
                    };
                    let mut party = Map::new();
                    party.insert(bind, Value::String(target));
                    party.insert("participationtypemask".into(), Value::from(mask));
                    Value::Object(party)
                })
                .collect();
            if !list.is_empty() {
                body.insert(format!("{kind}_activity_parties"), Value::Array(list));
            }
        }
        let key = encode_strict(&key_value(&a.key).replace('\'', "''"));
        let target = format!("{collection}({}='{key}')?$select=activityid", self.key_field);
        let body = serde_json::to_string(&Value::Object(body)).map_err(|e| CrmError::Permanent { message: format!("activity `{}`: {e}", a.key) })?;
        Ok(Upsert { target, body, caller })
    }

    pub(super) async fn upsert_one(&self, u: &Upsert) -> Result<String, CrmError> {
        let build = |rb: RequestBuilder| {
            let rb = odata(rb).header(CONTENT_TYPE, "application/json").header("Prefer", "return=representation").body(u.body.clone());
            match &u.caller {
                Some(c) => rb.header(CALLER_HEADER, c),
                None => rb,
            }
        };
        let answer = self.send(Method::PATCH, format!("{}/{}", self.api, u.target), &build, 1, self.timeout).await?;
        activity_id(&answer.headers, &answer.body)
    }
}

#[derive(Clone, Copy)]
enum Party {
    Customer,
    Agent,
}

/// `participationtypemask` of (customer, agent) on an activity of `kind`, or `None` for
/// kinds without sender/recipient parties (tasks). From = 1, to = 2: the caller is the
/// sender of an inbound call and the recipient of an outbound one. Appointments have a
/// required attendee (5) and an organizer (7) instead.
fn party_masks(kind: &str, direction: Direction) -> Option<(u8, u8)> {
    match kind {
        "task" => None,
        "appointment" => Some((5, 7)),
        _ => Some(match direction {
            Direction::Inbound => (1, 2),
            Direction::Outbound => (2, 1),
        }),
    }
}

/// Standard activity columns and their maximum lengths: longer text is cut (with `…`)
/// rather than having Dataverse refuse the whole activity.
fn max_len(kind: &str, column: &str) -> Option<usize> {
    if !["phonecall", "task", "appointment", "letter", "fax"].contains(&kind) {
        return None;
    }
    match column {
        "subject" => Some(200),
        "description" => Some(2000),
        "phonenumber" if kind == "phonecall" => Some(200),
        _ => None,
    }
}

/// A mapped value as Dataverse takes it: text within the column's length, timestamps to
/// the second (Dataverse stores seconds and refuses more than 7 fractional digits).
fn fit(kind: &str, column: &str, v: &Value) -> Value {
    let Value::String(s) = v else { return v.clone() };
    if s.len() >= 20
        && s.as_bytes().get(4) == Some(&b'-')
        && let Ok(t) = s.parse::<jiff::Timestamp>()
    {
        return Value::String(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    match max_len(kind, column) {
        Some(max) if s.chars().count() > max => Value::String(s.chars().take(max - 1).chain(std::iter::once('…')).collect()),
        _ => v.clone(),
    }
}

pub(super) fn activity_id(headers: &HeaderMap, body: &str) -> Result<String, CrmError> {
    if let Ok(v) = serde_json::from_str::<Value>(body)
        && let Some(id) = v.get("activityid").and_then(Value::as_str)
    {
        return Ok(id.to_string());
    }
    entity_id(headers).ok_or_else(|| CrmError::Transient { message: "Dataverse accepted the activity but its answer names no activityid".into(), retry_after: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_sent_to_the_second_and_long_text_is_cut() {
        assert_eq!(fit("phonecall", "actualstart", &json!("2024-03-01T10:00:00.123456789Z")), json!("2024-03-01T10:00:00Z"));
        assert_eq!(fit("phonecall", "phonenumber", &json!("+14155550100")), json!("+14155550100"));
        let long = "x".repeat(2500);
        let cut = fit("phonecall", "description", &json!(long));
        assert_eq!(cut.as_str().map(|s| s.chars().count()), Some(2000));
        assert!(cut.as_str().is_some_and(|s| s.ends_with('…')));
        assert_eq!(fit("cxb_chat", "description", &json!(long)), json!(long), "custom tables keep their own limits");
        assert_eq!(fit("phonecall", "actualdurationminutes", &json!(3)), json!(3));
    }

    #[test]
    fn parties_swap_with_the_direction() {
        assert_eq!(party_masks("phonecall", Direction::Inbound), Some((1, 2)));
        assert_eq!(party_masks("phonecall", Direction::Outbound), Some((2, 1)));
        assert_eq!(party_masks("task", Direction::Inbound), None);
        assert_eq!(party_masks("appointment", Direction::Outbound), Some((5, 7)));
    }
}
