//! The routes of the Web API: which request reads, writes, deletes, tracks or lists, and what
//! each answers (the record, its URL, `activitypointers`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::query::{checked_select, project, query_table};
use super::tables::{Db, Lookup, Table};
use super::wire::{Answer, Key, Prefer, Query, Req, Resp, does_not_exist, error, not_found_segment, parse_query, parse_segment, pct_decode, prefer};
use super::writes::json_body;

impl Db {
    pub(super) fn handle(&mut self, api_url: &str, req: &Req) -> Resp {
        self.route(api_url, req).unwrap_or_else(|e| e)
    }

    fn route(&mut self, api_url: &str, req: &Req) -> Answer {
        let (raw_path, raw_query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let path = pct_decode(raw_path, false);
        let Some(rest) = path.strip_prefix("/api/data/") else { return Err(error(404, "0x80060888", format!("No resource at '{path}'."))) };
        let (version, resource) = rest.split_once('/').unwrap_or((rest, ""));
        if version != "v9.2" {
            return Err(not_found_segment(version));
        }
        let q = parse_query(raw_query)?;
        let pref = prefer(&req.headers);
        let (set, key) = parse_segment(resource)?;
        if set == "activitypointers" {
            if req.method != "GET" || key.is_some() {
                return Err(error(405, "0x80060888", "activitypointers is read-only here."));
            }
            let pointers = self.pointers();
            return query_table(self, api_url, &pointers, &q, &pref);
        }
        if !self.tables.contains_key(&set) {
            return Err(not_found_segment(&set));
        }
        let id = match &key {
            None => None,
            Some(Key::Id(id)) => Some(id.clone()),
            Some(Key::Alternate(pairs)) => {
                let t = self.table(&set);
                let key_ok = pairs.len() == 1 && t.alternate_key.as_deref() == Some(pairs[0].0.as_str());
                if !key_ok {
                    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                    return Err(error(400, "0x80060888", format!("The key '{}' is not a key of the entity '{}'; its alternate keys are: {}.", names.join(","), t.logical, t.alternate_key.as_deref().unwrap_or("none"))));
                }
                let value = &pairs[0].1;
                // Dataverse cannot address a record by a key value holding these characters.
                if value.chars().any(|c| "/<>*%&:\\?+".contains(c)) {
                    return Err(error(400, "0x80060891", format!("A record with the specified key values does not exist in {} entity: key values containing / < > * % & : \\ ? + are not supported in the URL.", t.logical)));
                }
                let found = t.rows.iter().find(|(_, r)| r.fields.get(&pairs[0].0).and_then(Value::as_str) == Some(value.as_str())).map(|(id, _)| id.clone());
                match (found, req.method.as_str()) {
                    (Some(id), _) => Some(id),
                    (None, "PATCH") => None,
                    (None, _) => return Err(error(404, "0x80060891", format!("A record with the specified key values does not exist in {} entity", t.logical))),
                }
            }
        };
        match (req.method.as_str(), &key) {
            ("GET", None) => {
                let t = self.table(&set);
                if q.deltatoken.is_some() || q.skiptoken.is_some() || pref.track_changes {
                    return self.tracked(api_url, &set, &q, &pref);
                }
                query_table(self, api_url, t, &q, &pref)
            }
            ("GET", Some(_)) => {
                let t = self.table(&set);
                let id = id.unwrap_or_default();
                let row = t.rows.get(&id).ok_or_else(|| does_not_exist(&t.logical, &id))?;
                let select = checked_select(t, q.select.as_deref())?;
                let mut v = project(self, t, row, select.as_deref(), &pref);
                if let Value::Object(o) = &mut v {
                    o.insert("@odata.context".into(), Value::String(format!("{api_url}/$metadata#{set}/$entity")));
                }
                Ok(Resp::json(200, v))
            }
            ("POST", None) => {
                let body = json_body(&set, &req.body)?;
                let acting = self.acting_user(req)?;
                let p = self.prepare(api_url, &set, &body, true)?;
                let t = self.table(&set);
                let id = match body.get(&t.id_field).and_then(Value::as_str) {
                    Some(id) => id.to_ascii_lowercase(),
                    None => uuid::Uuid::new_v4().to_string(),
                };
                if t.rows.contains_key(&id) {
                    return Err(error(412, "0x80040237", "A record with matching key values already exists."));
                }
                self.commit(&set, &id, p, true, acting.as_deref());
                self.written(api_url, &set, &id, true, &q, &pref)
            }
            ("PATCH", Some(k)) => {
                let body = json_body(&set, &req.body)?;
                let acting = self.acting_user(req)?;
                let exists = id.as_ref().is_some_and(|id| self.table(&set).rows.contains_key(id));
                if req.header("if-match").is_some_and(|v| v.trim() == "*") && !exists {
                    let shown = match k {
                        Key::Id(id) => id.clone(),
                        Key::Alternate(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    };
                    return Err(does_not_exist(&self.table(&set).logical, &shown));
                }
                if req.header("if-none-match").is_some_and(|v| v.trim() == "*") && exists {
                    return Err(error(412, "0x80040237", "A record with matching key values already exists."));
                }
                let mut p = self.prepare(api_url, &set, &body, !exists)?;
                let id = match (id, k) {
                    (Some(id), _) => id,
                    (None, Key::Alternate(pairs)) => {
                        // An upsert that creates: the key column takes the URL's value.
                        p.fields.insert(pairs[0].0.clone(), Value::String(pairs[0].1.clone()));
                        uuid::Uuid::new_v4().to_string()
                    }
                    (None, Key::Id(id)) => id.clone(),
                };
                self.commit(&set, &id, p, !exists, acting.as_deref());
                self.written(api_url, &set, &id, !exists, &q, &pref)
            }
            ("DELETE", Some(_)) => {
                let id = id.unwrap_or_default();
                if !self.delete(&set, &id) {
                    return Err(does_not_exist(&self.table(&set).logical, &id));
                }
                Ok(Resp::empty(204))
            }
            (m, _) => Err(error(405, "0x80060888", format!("The HTTP method '{m}' is not allowed on '{resource}'."))),
        }
    }

    /// The answer to a write: the record (`return=representation`) or its URL.
    pub(super) fn written(&self, api_url: &str, set: &str, id: &str, created: bool, q: &Query, pref: &Prefer) -> Answer {
        let entity_id = format!("{api_url}/{set}({id})");
        if !pref.representation {
            return Ok(Resp::empty(204).header("OData-EntityId", &entity_id));
        }
        let t = self.table(set);
        let select = checked_select(t, q.select.as_deref())?;
        let row = t.rows.get(id).ok_or_else(|| does_not_exist(&t.logical, id))?;
        let mut v = project(self, t, row, select.as_deref(), pref);
        if let Value::Object(o) = &mut v {
            o.insert("@odata.context".into(), Value::String(format!("{api_url}/$metadata#{set}/$entity")));
        }
        Ok(Resp::json(if created { 201 } else { 200 }, v).header("OData-EntityId", &entity_id))
    }

    /// The `activitypointer` view of every activity table.
    fn pointers(&self) -> Table {
        let keep = ["activityid", "activitytypecode", "subject", "description", "createdon", "modifiedon", "actualstart", "actualend", "actualdurationminutes", "scheduledstart", "scheduledend", "statecode", "versionnumber"];
        let lookups = ["regardingobjectid", "ownerid", "createdby", "modifiedby"];
        let mut t = Table {
            logical: "activitypointer".into(),
            set: "activitypointers".into(),
            id_field: "activityid".into(),
            primary_name: "subject".into(),
            columns: BTreeMap::new(),
            lookups: lookups.iter().map(|l| Lookup { name: l.to_string(), navs: vec![] }).collect(),
            activity: false,
            alternate_key: None,
            change_tracking: false,
            rows: BTreeMap::new(),
        };
        for source in self.tables.values().filter(|t| t.activity) {
            for (k, c) in &source.columns {
                if keep.contains(&k.as_str()) || lookups.iter().any(|l| *k == format!("_{l}_value")) {
                    t.columns.insert(k.clone(), c.clone());
                }
            }
            for (id, r) in &source.rows {
                let mut row = r.clone();
                row.fields.retain(|k, _| t.columns.contains_key(k) || keep.contains(&k.as_str()) || lookups.iter().any(|l| *k == format!("_{l}_value")));
                row.lookup_targets.retain(|k, _| row.fields.contains_key(k));
                t.rows.insert(id.clone(), row);
            }
        }
        t
    }
}
