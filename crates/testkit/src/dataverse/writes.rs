//! Writes: a body checked against the table (types, lengths, read-only columns, binds to
//! existing records, activity parties), impersonation, and the write applied with its history.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::tables::{APP_USER_ID, Db, Party, Row, Table, Type};
use super::wire::{API_PATH, Req, Resp, does_not_exist, entity_set, error, is_guid, now, payload_error, syntax};

/// Tables that can be an activity party.
const PARTY_TABLES: &[&str] = &["contact", "account", "lead", "systemuser"];

/// Writes of one request, checked, not yet applied.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) fields: Map<String, Value>,
    pub(super) lookup_targets: BTreeMap<String, String>,
    pub(super) parties: Option<Vec<Party>>,
}

impl Db {
    /// `_x_value` for records inserted directly: finds which table the id belongs to.
    pub(super) fn direct(&self, set: &str, obj: &Map<String, Value>, creating: bool) -> Result<Pending, Resp> {
        let t = self.table(set);
        let mut p = Pending::default();
        for (k, v) in obj {
            if let Some(l) = t.lookups.iter().find(|l| format!("_{}_value", l.name) == *k) {
                let id = v.as_str().map(str::to_ascii_lowercase).ok_or_else(|| syntax(format!("{k} must be a GUID string")))?;
                // System lookups (createdby, …) have no navigation property and point to users.
                let targets: Vec<String> = if l.navs.is_empty() { vec!["systemuser".into()] } else { l.navs.iter().map(|(_, e)| e.clone()).collect() };
                let target = targets.into_iter().find(|e| self.exists(e, &id)).ok_or_else(|| syntax(format!("{k}: no record {id} among {:?}", l.navs)))?;
                p.fields.insert(k.clone(), Value::String(id));
                p.lookup_targets.insert(k.clone(), target);
                continue;
            }
            let col = t.columns.get(k).ok_or_else(|| syntax(format!("no column `{k}` on {}; add it with add_column", t.logical)))?;
            if *k == t.id_field && !creating {
                continue;
            }
            check_value(t, k, col.ty, v)?;
            p.fields.insert(k.clone(), v.clone());
        }
        Ok(p)
    }

    /// Checks a request body against the table: the writes it asks for, or Dataverse's refusal.
    pub(super) fn prepare(&self, api_url: &str, set: &str, body: &Map<String, Value>, creating: bool) -> Result<Pending, Resp> {
        let t = self.table(set);
        let mut p = Pending::default();
        let parties_property = format!("{}_activity_parties", t.logical);
        for (k, v) in body {
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let Some((lookup, target)) = t.lookups.iter().find_map(|l| l.navs.iter().find(|(n, _)| n == nav).map(|(_, e)| (l, e))) else {
                    return Err(error(
                        400,
                        "0x80060888",
                        format!(
                            "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                        ),
                    ));
                };
                let value_property = format!("_{}_value", lookup.name);
                if v.is_null() {
                    p.fields.insert(value_property, Value::Null);
                    continue;
                }
                let id = self.bind_target(api_url, set, nav, v, target)?;
                p.fields.insert(value_property.clone(), Value::String(id));
                p.lookup_targets.insert(value_property, target.clone());
                continue;
            }
            if t.activity && *k == parties_property {
                p.parties = Some(self.parties(api_url, set, v)?);
                continue;
            }
            if k.contains('@') {
                return Err(payload_error(set, format!("The annotation '{k}' is not supported here.")));
            }
            let Some(col) = t.columns.get(k) else {
                return Err(payload_error(
                    set,
                    format!("The property '{k}' does not exist on type 'Microsoft.Dynamics.CRM.{}'. Make sure to only use property names that are defined by the type or mark the type as open type.", t.logical),
                ));
            };
            if k.starts_with('_') && k.ends_with("_value") {
                return Err(error(400, "0x80048d19", "CRM do not support direct update of Entity Reference properties, Use Navigation properties instead."));
            }
            if *k == t.id_field {
                if creating && v.as_str().is_some_and(is_guid) {
                    continue; // The id of a record created with a chosen id; the caller handles it.
                }
                return Err(payload_error(set, format!("The key property '{k}' cannot be changed.")));
            }
            if !col.writable {
                continue; // Read-only columns in a body are ignored.
            }
            check_value(t, k, col.ty, v)?;
            p.fields.insert(k.clone(), v.clone());
        }
        Ok(p)
    }

    /// The id an `@odata.bind` value points to, if well-formed, of the right table and existing.
    fn bind_target(&self, api_url: &str, set: &str, nav: &str, v: &Value, target_logical: &str) -> Result<String, Resp> {
        let bad = || payload_error(set, format!("The value '{v}' of the 'odata.bind' annotation of '{nav}' is not a valid entity reference; expected '/{}(<guid>)'.", entity_set(target_logical)));
        let s = v.as_str().ok_or_else(bad)?;
        let rel = s.strip_prefix(api_url).or_else(|| s.strip_prefix(API_PATH)).unwrap_or(s);
        let rel = rel.strip_prefix('/').unwrap_or(rel);
        let open = rel.find('(').ok_or_else(bad)?;
        let (bind_set, id) = (&rel[..open], rel[open + 1..].strip_suffix(')').ok_or_else(bad)?);
        if !is_guid(id) {
            return Err(bad());
        }
        let Some(target) = self.by_logical(target_logical) else { return Err(bad()) };
        if bind_set != target.set {
            return Err(bad());
        }
        let id = id.to_ascii_lowercase();
        if !target.rows.contains_key(&id) {
            return Err(error(400, "0x80040217", format!("Entity '{target_logical}' With Id = {id} Does Not Exist")));
        }
        Ok(id)
    }

    pub(super) fn parties(&self, api_url: &str, set: &str, v: &Value) -> Result<Vec<Party>, Resp> {
        let items = v.as_array().ok_or_else(|| payload_error(set, "An activity party list must be a JSON array."))?;
        let mut out = vec![];
        for item in items {
            let obj = item.as_object().ok_or_else(|| payload_error(set, "An activity party must be a JSON object."))?;
            let mut mask = None;
            let mut party = None;
            for (k, v) in obj {
                if k == "participationtypemask" {
                    mask = Some(v.as_i64().filter(|m| (1..=11).contains(m)).ok_or_else(|| payload_error(set, format!("participationtypemask {v} is not a valid participation type (1 to 11).")))?);
                } else if k == "addressused" {
                    if !v.is_string() {
                        return Err(payload_error(set, "addressused must be a string."));
                    }
                } else if let Some(entity) = k.strip_prefix("partyid_").and_then(|e| e.strip_suffix("@odata.bind")) {
                    if !PARTY_TABLES.contains(&entity) {
                        return Err(payload_error(set, format!("'partyid_{entity}' is not a navigation property of 'Microsoft.Dynamics.CRM.activityparty'.")));
                    }
                    if party.is_some() {
                        return Err(payload_error(set, "An activity party can name only one party."));
                    }
                    let id = self.bind_target(api_url, set, &format!("partyid_{entity}"), v, entity)?;
                    party = Some((entity.to_string(), id));
                } else {
                    return Err(payload_error(set, format!("The property '{k}' does not exist on type 'Microsoft.Dynamics.CRM.activityparty'.")));
                }
            }
            let mask = mask.ok_or_else(|| payload_error(set, "An activity party needs a participationtypemask."))?;
            let (entity, id) = party.ok_or_else(|| payload_error(set, "An activity party needs a partyid_<table>@odata.bind."))?;
            out.push(Party { mask, entity, id });
        }
        Ok(out)
    }

    /// Applies checked writes. `acting` is the impersonated user, if any.
    pub(super) fn commit(&mut self, set: &str, id: &str, p: Pending, creating: bool, acting: Option<&str>) {
        self.version += 1;
        self.seq += 1;
        let (version, seq, stamp) = (self.version, self.seq, now());
        let t = self.table_mut(set);
        let (logical, id_field, activity) = (t.logical.clone(), t.id_field.clone(), t.activity);
        let row = t.rows.entry(id.to_string()).or_insert_with(|| Row { fields: Map::new(), lookup_targets: BTreeMap::new(), parties: vec![], version, seq });
        let user = acting.unwrap_or(APP_USER_ID).to_string();
        let set_lookup = |row: &mut Row, name: &str, id: &str, target: &str| {
            row.fields.insert(format!("_{name}_value"), Value::String(id.into()));
            row.lookup_targets.insert(format!("_{name}_value"), target.into());
        };
        if creating {
            row.fields.insert(id_field, Value::String(id.into()));
            row.fields.insert("createdon".into(), Value::String(stamp.clone()));
            set_lookup(row, "createdby", &user, "systemuser");
            if !row.fields.contains_key("_ownerid_value") {
                set_lookup(row, "ownerid", &user, "systemuser");
            }
            if acting.is_some() {
                set_lookup(row, "createdonbehalfby", APP_USER_ID, "systemuser");
            }
            if activity {
                row.fields.insert("activitytypecode".into(), Value::String(logical.clone()));
            }
        }
        set_lookup(row, "modifiedby", &user, "systemuser");
        if acting.is_some() {
            set_lookup(row, "modifiedonbehalfby", APP_USER_ID, "systemuser");
        }
        for (k, v) in p.fields {
            if v.is_null() {
                row.lookup_targets.remove(&k);
            }
            row.fields.insert(k, v);
        }
        row.lookup_targets.extend(p.lookup_targets);
        if let Some(parties) = p.parties {
            row.parties = parties;
        }
        // Dataverse composes a person's full name from its parts.
        if logical == "contact" || logical == "lead" {
            let part = |k: &str| row.fields.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
            let name: Vec<String> = [part("firstname"), part("lastname")].into_iter().flatten().collect();
            if !name.is_empty() {
                row.fields.insert("fullname".into(), Value::String(name.join(" ")));
            }
        }
        row.fields.insert("modifiedon".into(), Value::String(stamp));
        row.fields.insert("versionnumber".into(), Value::from(version));
        row.version = version;
    }

    pub(super) fn delete(&mut self, set: &str, id: &str) -> bool {
        self.version += 1;
        let version = self.version;
        let removed = self.table_mut(set).rows.remove(id).is_some();
        if removed {
            self.tombstones.push((set.to_string(), id.to_string(), version));
        }
        removed
    }

    /// The user a request acts as when it impersonates one.
    pub(super) fn acting_user(&self, req: &Req) -> Result<Option<String>, Resp> {
        let users = self.table("systemusers");
        if let Some(id) = req.header("mscrmcallerid") {
            let id = id.trim().to_ascii_lowercase();
            return if users.rows.contains_key(&id) { Ok(Some(id)) } else { Err(does_not_exist("systemuser", &id)) };
        }
        if let Some(object_id) = req.header("callerobjectid") {
            let object_id = object_id.trim().to_ascii_lowercase();
            return users
                .rows
                .iter()
                .find(|(_, r)| r.fields.get("azureactivedirectoryobjectid").and_then(Value::as_str) == Some(object_id.as_str()))
                .map(|(id, _)| Some(id.clone()))
                .ok_or_else(|| error(403, "0x80072560", format!("The user with Microsoft Entra object id {object_id} is not a member of the organization.")));
        }
        Ok(None)
    }
}

pub(super) fn json_body(set: &str, body: &str) -> Result<Map<String, Value>, Resp> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(payload_error(set, "The request body must be a JSON object.")),
        Err(e) => Err(payload_error(set, format!("The request body is not valid JSON: {e}"))),
    }
}

fn check_value(t: &Table, column: &str, ty: Type, v: &Value) -> Result<(), Resp> {
    if v.is_null() {
        return Ok(());
    }
    let convert = || payload_error(&t.set, format!("Cannot convert the literal '{}' to the expected type '{}'.", v.as_str().map_or_else(|| v.to_string(), str::to_string), ty.edm()));
    match ty {
        Type::Text(max) => {
            let s = v.as_str().ok_or_else(convert)?;
            if s.chars().count() > max {
                return Err(error(
                    400,
                    "0x80044331",
                    format!("A validation error occurred. The length of the '{column}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.", t.logical),
                ));
            }
        }
        Type::Bool => {
            v.as_bool().ok_or_else(convert)?;
        }
        Type::Int => {
            v.as_i64().filter(|n| i32::try_from(*n).is_ok()).ok_or_else(convert)?;
        }
        Type::Guid => {
            v.as_str().filter(|s| is_guid(s)).ok_or_else(convert)?;
        }
        Type::DateTime => {
            let s = v.as_str().ok_or_else(convert)?;
            // .NET reads at most 7 fractional digits.
            let fraction = s.split_once('.').map_or(0, |(_, f)| f.chars().take_while(char::is_ascii_digit).count());
            let is_date = s.len() == 10 && jiff::civil::Date::strptime("%Y-%m-%d", s).is_ok();
            if !(is_date || (s.parse::<jiff::Timestamp>().is_ok() && fraction <= 7)) {
                return Err(convert());
            }
        }
    }
    Ok(())
}
