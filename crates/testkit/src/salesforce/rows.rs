//! sObject rows: create, read, update, delete and upsert by external id, with writes checked
//! the way Salesforce checks them (fields, lengths, picklists, references, Who and What).

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::org::{Org, looks_like_id, sf_time};
use super::reply::{Reply, bad, error, error_on, not_found};
use super::schema::{FieldDef, Kind, ObjectDef};

impl Org {
    pub(super) fn attributes(&self, version: &str, object: &str, id: &str) -> Value {
        json!({ "type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}") })
    }

    pub(super) fn create(&mut self, object: &str, body: &str) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        let fields = match parse_body(body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let record = match self.check_write(&obj, &fields, true) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if let Err(r) = check_who_and_what(&obj, None, &record) {
            return r;
        }
        let id = self.store_new(&obj, record);
        Reply::with(StatusCode::CREATED, json!({ "id": id, "success": true, "errors": [] }))
    }

    pub(super) fn read(&self, version: &str, object: &str, id: &str, fields: Option<&str>) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        let Some((id, record)) = self.find(obj.name, id) else { return not_found() };
        self.answer_row(version, &obj, &id, record, fields)
    }

    fn answer_row(&self, version: &str, obj: &ObjectDef, id: &str, record: &Map<String, Value>, fields: Option<&str>) -> Reply {
        let names: Vec<String> = match fields {
            Some(list) => {
                let mut out = vec![];
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(f) = obj.field(name) else {
                        return bad("INVALID_FIELD", &format!("No such column '{name}' on sobject of type {}", obj.name));
                    };
                    out.push(f.name.clone());
                }
                out
            }
            None => obj.fields.iter().map(|f| f.name.clone()).collect(),
        };
        let mut out = Map::new();
        out.insert("attributes".into(), self.attributes(version, obj.name, id));
        for n in names {
            out.insert(n.clone(), record.get(&n).cloned().unwrap_or(Value::Null));
        }
        Reply::ok(Value::Object(out))
    }

    pub(super) fn patch(&mut self, object: &str, id: &str, body: &str) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        if self.find(obj.name, id).is_none() {
            return not_found();
        }
        let fields = match parse_body(body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let changes = match self.check_write(&obj, &fields, false) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if let Err(r) = check_who_and_what(&obj, self.find(obj.name, id).map(|(_, r)| r), &changes) {
            return r;
        }
        self.store_update(&obj, id, changes);
        Reply::no_content()
    }

    pub(super) fn remove(&mut self, object: &str, id: &str) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        if self.store_delete(&obj, id) {
            Reply::no_content()
        } else {
            error(StatusCode::NOT_FOUND, "ENTITY_IS_DELETED", "entity is deleted")
        }
    }

    /// The record of `object` whose external id field `field` holds `value`.
    fn external_lookup(&self, object: &str, field: &str, value: &str) -> Result<(ObjectDef, Option<String>), Reply> {
        let Some(obj) = self.object(object) else { return Err(not_found()) };
        let key = match obj.field(field) {
            Some(f) if f.external_id => f.name.clone(),
            Some(f) if f.name == "Id" => "Id".to_string(),
            _ => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("Provided external ID field does not exist or is not accessible: {field}"),
                ));
            }
        };
        let id = self.table(obj.name).iter().find(|(_, r)| r.get(&key).and_then(Value::as_str) == Some(value)).map(|(id, _)| id.clone());
        Ok((obj, id))
    }

    pub(super) fn read_by_external_id(&self, version: &str, object: &str, field: &str, value: &str, fields: Option<&str>) -> Reply {
        match self.external_lookup(object, field, value) {
            Err(r) => r,
            Ok((_, None)) => not_found(),
            Ok((obj, Some(id))) => match self.find(obj.name, &id) {
                Some((id, record)) => self.answer_row(version, &obj, &id, record, fields),
                None => not_found(),
            },
        }
    }

    pub(super) fn upsert(&mut self, object: &str, field: &str, value: &str, body: &str) -> Reply {
        let (obj, existing) = match self.external_lookup(object, field, value) {
            Ok(found) => found,
            Err(r) => return r,
        };
        let mut fields = match parse_body(body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if fields.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
            return bad("INVALID_FIELD", "Id not specified in an update call");
        }
        let Some(key) = obj.field(field).map(|f| f.name.clone()) else { return not_found() };
        fields.retain(|k, _| !k.eq_ignore_ascii_case(&key));
        let record = match self.check_write(&obj, &fields, existing.is_none()) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let stored = existing.as_deref().and_then(|id| self.find(obj.name, id)).map(|(_, r)| r);
        if let Err(r) = check_who_and_what(&obj, stored, &record) {
            return r;
        }
        match existing {
            Some(id) => {
                self.store_update(&obj, &id, record);
                Reply::ok(json!({ "id": id, "success": true, "errors": [], "created": false }))
            }
            None => {
                let mut record = record;
                record.insert(key, json!(value));
                let id = self.store_new(&obj, record);
                Reply::with(StatusCode::CREATED, json!({ "id": id, "success": true, "errors": [], "created": true }))
            }
        }
    }

    /// Checks a write like Salesforce does and returns the fields to store.
    fn check_write(&self, obj: &ObjectDef, fields: &Map<String, Value>, creating: bool) -> Result<Map<String, Value>, Reply> {
        let mut out = Map::new();
        for (name, value) in fields {
            let Some(f) = obj.field(name) else {
                return Err(error_on(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{name}' on sobject of type {}", obj.name),
                    &[],
                ));
            };
            if !f.writable || (!creating && !f.updateable) {
                return Err(error_on(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.name),
                    &[&f.name],
                ));
            }
            let value = self.check_value(f, value)?;
            out.insert(f.name.clone(), value);
        }
        if creating {
            let missing: Vec<&str> = obj
                .fields
                .iter()
                .filter(|f| f.required && out.get(&f.name).is_none_or(|v| v.is_null() || v.as_str() == Some("")))
                .map(|f| f.name.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(error_on(
                    StatusCode::BAD_REQUEST,
                    "REQUIRED_FIELD_MISSING",
                    &format!("Required fields are missing: [{}]", missing.join(", ")),
                    &missing,
                ));
            }
        }
        Ok(out)
    }

    fn check_value(&self, f: &FieldDef, value: &Value) -> Result<Value, Reply> {
        let label = if f.label.is_empty() { f.name.as_str() } else { f.label };
        let parse_error = |v: &Value| {
            error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("Cannot deserialize instance of {} from {} value {v} or request may be missing a required field", f.kind.type_name(), json_type(v)),
            )
        };
        if value.is_null() || value.as_str() == Some("") {
            return Ok(Value::Null);
        }
        match f.kind {
            Kind::Int => match value {
                Value::Number(n) if n.is_i64() || n.is_f64() => Ok(value.clone()),
                Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| parse_error(value)),
                _ => Err(parse_error(value)),
            },
            Kind::Bool => match value {
                Value::Bool(_) => Ok(value.clone()),
                Value::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
                _ => Err(parse_error(value)),
            },
            Kind::Date => match value.as_str() {
                Some(s) if s.parse::<jiff::civil::Date>().is_ok() => Ok(value.clone()),
                _ => Err(parse_error(value)),
            },
            Kind::DateTime => match value.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
                Some(t) => Ok(json!(sf_time(t))),
                None => Err(parse_error(value)),
            },
            Kind::Id | Kind::Text(_) | Kind::Phone | Kind::Email | Kind::Picklist(_) | Kind::Reference(_) => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(parse_error(value)),
                };
                self.check_text(f, label, &s)?;
                Ok(Value::String(s))
            }
        }
    }

    fn check_text(&self, f: &FieldDef, label: &str, s: &str) -> Result<(), Reply> {
        let max = match f.kind {
            Kind::Text(n) => n,
            Kind::Phone => 40,
            Kind::Email => 80,
            _ => 255,
        };
        if s.chars().count() > max {
            return Err(error_on(
                StatusCode::BAD_REQUEST,
                "STRING_TOO_LONG",
                &format!("{label}: data value too large: {} (max length={max})", shorten(s)),
                &[&f.name],
            ));
        }
        match f.kind {
            Kind::Email if !s.contains('@') => Err(error_on(StatusCode::BAD_REQUEST, "INVALID_EMAIL_ADDRESS", &format!("Email: invalid email address: {s}"), &[&f.name])),
            Kind::Picklist(values) if !values.contains(&s) => Err(error_on(
                StatusCode::BAD_REQUEST,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                &format!("{label}: bad value for restricted picklist field: {s}"),
                &[&f.name],
            )),
            Kind::Reference(targets) => self.check_reference(f, label, targets, s),
            _ => Ok(()),
        }
    }

    fn check_reference(&self, f: &FieldDef, label: &str, targets: &[&str], id: &str) -> Result<(), Reply> {
        let kind = self.object_by_prefix(id).filter(|_| looks_like_id(id));
        match kind {
            Some(obj) if targets.contains(&obj.name) => {
                if self.find(obj.name, id).is_some() {
                    Ok(())
                } else {
                    Err(error_on(StatusCode::BAD_REQUEST, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[&f.name]))
                }
            }
            _ => Err(error_on(
                StatusCode::BAD_REQUEST,
                "FIELD_INTEGRITY_EXCEPTION",
                &format!("{label}: id value of incorrect type: {id}"),
                &[&f.name],
            )),
        }
    }
}

/// A Task (or Event) about a Lead is about nobody else: "The WhoId field can point to a
/// Contact or Lead, and the WhatId field can point to an Account, Opportunity, Campaign, or
/// Case. In addition, if the WhoId field refers to a Lead, then the WhatId field must be
/// empty." (Object Reference for the Salesforce Platform, Task, and SOAP API Developer
/// Guide, Relationships among objects). Salesforce refuses such a write with
/// `FIELD_INTEGRITY_EXCEPTION`; the rule is checked on the record as it would be after the
/// write (an update may add either half). The message wording is ours.
fn check_who_and_what(obj: &ObjectDef, stored: Option<&Map<String, Value>>, changes: &Map<String, Value>) -> Result<(), Reply> {
    if obj.field("WhoId").is_none() || obj.field("WhatId").is_none() {
        return Ok(());
    }
    let after = |field: &str| -> Option<String> {
        let v = match changes.get(field) {
            Some(v) => v,
            None => stored?.get(field)?,
        };
        v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    };
    match (after("WhoId"), after("WhatId")) {
        (Some(who), Some(_)) if who.starts_with("00Q") => Err(error_on(
            StatusCode::BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
            "Related To ID: You can't associate a Related To record with a lead. Remove the lead from Name, or clear Related To.",
            &["WhatId"],
        )),
        _ => Ok(()),
    }
}

fn parse_body(body: &str) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(bad("JSON_PARSER_ERROR", &format!("Cannot deserialize instance of sObject from {} value", json_type(&other)))),
        Err(e) => Err(bad("JSON_PARSER_ERROR", &format!("Unexpected character: {e}"))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(_) => "VALUE_TRUE",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

fn shorten(s: &str) -> String {
    let head: String = s.chars().take(40).collect();
    if head.len() < s.len() { format!("{head}(TRUNCATED)") } else { head }
}
