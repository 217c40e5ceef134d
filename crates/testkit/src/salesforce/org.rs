//! The org's data: records by object, ids with their case suffix, the delete log, open query
//! cursors, API usage and the settings a test can change.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::Seen;

use super::schema::{ObjectDef, schema};

/// The default 24-hour API allocation shown in `Sforce-Limit-Info`.
pub const DEFAULT_API_LIMIT: u64 = 15_000;
/// The external id field on Task the org has unless told otherwise.
pub const DEFAULT_EXTERNAL_ID_FIELD: &str = "CxbridgeKey__c";
/// Records per query page unless told otherwise (Salesforce's default batch size).
pub const DEFAULT_PAGE_SIZE: usize = 2000;
/// The id of the integration user every record is owned by unless told otherwise.
pub const INTEGRATION_USER: &str = "005xx0000000001AAA";
/// "Results are returned for no more than 15 days previous to the day the call is executed
/// (or earlier if an administrator has purged the Recycle Bin)." (REST API Developer Guide,
/// sObject Get Deleted.)
pub(super) const DELETE_LOG_DAYS: jiff::SignedDuration = jiff::SignedDuration::from_hours(15 * 24);

pub(super) struct Org {
    pub(super) schema: Vec<ObjectDef>,
    pub(super) key_field: String,
    pub(super) data: HashMap<&'static str, BTreeMap<String, Map<String, Value>>>,
    pub(super) deleted: Vec<(&'static str, String, Timestamp)>,
    pub(super) counter: u64,
    pub(super) seen: Vec<Seen>,
    pub(super) api_calls: u64,
    pub(super) api_max: u64,
    pub(super) composites: u64,
    pub(super) page_size: usize,
    /// Query locators: the rest of a query's result, for `nextRecordsUrl`.
    pub(super) locators: HashMap<String, Locator>,
    /// Where the delete log begins (an org that has been in use for a while: 15 days ago;
    /// later once the Recycle Bin was purged).
    pub(super) delete_log_from: Timestamp,
}

static EMPTY: BTreeMap<String, Map<String, Value>> = BTreeMap::new();

impl Org {
    pub(super) fn new() -> Self {
        let mut org = Self {
            schema: schema(DEFAULT_EXTERNAL_ID_FIELD),
            key_field: DEFAULT_EXTERNAL_ID_FIELD.into(),
            data: HashMap::new(),
            deleted: vec![],
            counter: 0,
            seen: vec![],
            api_calls: 0,
            api_max: DEFAULT_API_LIMIT,
            composites: 0,
            page_size: DEFAULT_PAGE_SIZE,
            locators: HashMap::new(),
            delete_log_from: Timestamp::now().checked_sub(DELETE_LOG_DAYS).unwrap_or_else(|_| Timestamp::now()),
        };
        if let Some(user) = org.object("User") {
            let mut r = Map::new();
            r.insert("Name".into(), json!("Integration User"));
            r.insert("IsActive".into(), json!(true));
            org.store_with_id(&user, INTEGRATION_USER.into(), r);
        }
        org
    }

    pub(super) fn object(&self, name: &str) -> Option<ObjectDef> {
        self.schema.iter().find(|o| o.name.eq_ignore_ascii_case(name)).cloned()
    }

    pub(super) fn object_by_prefix(&self, id: &str) -> Option<ObjectDef> {
        self.schema.iter().find(|o| id.starts_with(o.prefix)).cloned()
    }

    pub(super) fn table(&self, object: &str) -> &BTreeMap<String, Map<String, Value>> {
        self.data.get(object).unwrap_or(&EMPTY)
    }

    /// Finds a record by its 15- or 18-character id.
    pub(super) fn find(&self, object: &str, id: &str) -> Option<(String, &Map<String, Value>)> {
        let table = self.table(object);
        if let Some(r) = table.get(id) {
            return Some((id.to_string(), r));
        }
        if id.len() == 15 {
            return table.iter().find(|(k, _)| k.starts_with(id)).map(|(k, r)| (k.clone(), r));
        }
        None
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let short = format!("{prefix}xx{:010}", self.counter + 100);
        format!("{short}{}", id_suffix(&short))
    }

    pub(super) fn store_new(&mut self, obj: &ObjectDef, record: Map<String, Value>) -> String {
        let id = self.new_id(obj.prefix);
        self.store_with_id(obj, id.clone(), record);
        id
    }

    fn store_with_id(&mut self, obj: &ObjectDef, id: String, mut record: Map<String, Value>) {
        let now = json!(sf_time(Timestamp::now()));
        record.insert("Id".into(), json!(id));
        record.insert("CreatedDate".into(), now.clone());
        record.insert("LastModifiedDate".into(), now.clone());
        record.insert("SystemModstamp".into(), now);
        if obj.field("OwnerId").is_some() && !record.contains_key("OwnerId") {
            record.insert("OwnerId".into(), json!(INTEGRATION_USER));
        }
        if obj.name == "Lead" && !record.contains_key("Status") {
            record.insert("Status".into(), json!("Open - Not Contacted"));
        }
        if obj.name == "Task" {
            record.entry("Status").or_insert(json!("Not Started"));
            record.entry("Priority").or_insert(json!("Normal"));
            record.entry("TaskSubtype").or_insert(json!("Task"));
        }
        if obj.person_name {
            set_person_name(&mut record);
        }
        self.data.entry(obj.name).or_default().insert(id, record);
    }

    pub(super) fn store_update(&mut self, obj: &ObjectDef, id: &str, changes: Map<String, Value>) -> bool {
        let Some((id, _)) = self.find(obj.name, id) else { return false };
        let Some(record) = self.data.get_mut(obj.name).and_then(|t| t.get_mut(&id)) else { return false };
        for (k, v) in changes {
            record.insert(k, v);
        }
        let now = json!(sf_time(Timestamp::now()));
        record.insert("LastModifiedDate".into(), now.clone());
        record.insert("SystemModstamp".into(), now);
        if obj.person_name {
            set_person_name(record);
        }
        true
    }

    pub(super) fn store_delete(&mut self, obj: &ObjectDef, id: &str) -> bool {
        let Some((id, _)) = self.find(obj.name, id) else { return false };
        if let Some(t) = self.data.get_mut(obj.name) {
            t.remove(&id);
        }
        self.deleted.push((obj.name, id, Timestamp::now()));
        true
    }
}

/// An open query cursor: the whole result, when it was last used, and its age rank.
#[derive(Clone)]
pub(super) struct Locator {
    pub(super) rows: Vec<Value>,
    pub(super) used: Timestamp,
    pub(super) opened: u64,
}

fn set_person_name(record: &mut Map<String, Value>) {
    let part = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or_default().trim().to_string();
    let name = [part("FirstName"), part("LastName")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    record.insert("Name".into(), json!(name));
}

/// The 3-character suffix that makes a 15-character id case-insensitively unique: one
/// character per 5-character chunk, whose bits say which characters are upper case.
fn id_suffix(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk.iter().enumerate().filter(|(_, c)| c.is_ascii_uppercase()).fold(0usize, |acc, (i, _)| acc | (1 << i));
            ALPHABET[bits % ALPHABET.len()] as char
        })
        .collect()
}

/// Salesforce's datetime format in answers: `2024-05-01T10:00:00.000+0000`.
pub(super) fn sf_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

pub(super) fn looks_like_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_case_suffix() {
        assert_eq!(id_suffix("003xx0000000101"), "AAA");
        assert_eq!(id_suffix("00Qxx0000000101"), "EAA");
        assert_eq!(id_suffix("001D000000IRFma"), "IAH");
    }

}
