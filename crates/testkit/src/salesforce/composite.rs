//! Composite: up to 25 subrequests in one call, `allOrNone` honoured, references between
//! subrequests resolved, counted as one API call.

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::org::Org;
use super::reply::{Reply, bad};

const MAX_COMPOSITE_SUBREQUESTS: usize = 25;

impl Org {
    pub(super) fn composite(&mut self, body: &str) -> Reply {
        let request = match serde_json::from_str::<Value>(body) {
            Ok(v) => v,
            Err(e) => return bad("JSON_PARSER_ERROR", &format!("Unexpected character: {e}")),
        };
        let all_or_none = request.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
        let Some(subs) = request.get("compositeRequest").and_then(Value::as_array) else {
            return bad("JSON_PARSER_ERROR", "compositeRequest is required");
        };
        if subs.is_empty() {
            return bad("INVALID_API_INPUT", "compositeRequest must contain at least one subrequest");
        }
        if subs.len() > MAX_COMPOSITE_SUBREQUESTS {
            return bad("LIMIT_EXCEEDED", &format!("Composite request can contain up to {MAX_COMPOSITE_SUBREQUESTS} subrequests, but {} were sent", subs.len()));
        }
        let mut refs = HashSet::new();
        for sub in subs {
            let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or_default();
            if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || !reference.as_bytes()[0].is_ascii_alphabetic() {
                return bad("INVALID_API_INPUT", &format!("Invalid reference id: {reference}. Reference IDs can only contain alphanumeric characters and underscores and must begin with a letter."));
            }
            if !refs.insert(reference) {
                return bad("INVALID_API_INPUT", &format!("Duplicate reference id: {reference}"));
            }
            let method = sub.get("method").and_then(Value::as_str).unwrap_or_default();
            if !["GET", "POST", "PATCH", "PUT", "DELETE"].contains(&method) {
                return bad("INVALID_API_INPUT", &format!("Invalid HTTP method: {method}"));
            }
            if !sub.get("url").and_then(Value::as_str).is_some_and(|u| u.starts_with("/services/data/")) {
                return bad("INVALID_API_INPUT", "The url of a subrequest must start with /services/data/");
            }
        }
        self.composites += 1;
        let snapshot = all_or_none.then(|| (self.data.clone(), self.deleted.clone(), self.counter));
        let mut answers: Vec<(String, Reply)> = vec![];
        let mut failed = false;
        for sub in subs {
            let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or_default().to_string();
            if failed && all_or_none {
                answers.push((reference, halted()));
                continue;
            }
            let method = sub.get("method").and_then(Value::as_str).and_then(|m| m.parse::<Method>().ok()).unwrap_or(Method::GET);
            let url = sub.get("url").and_then(Value::as_str).unwrap_or_default();
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            let body = sub.get("body").map(Value::to_string).unwrap_or_default();
            let reply = self.route(&method, path, query, &body, true);
            failed |= !reply.is_success();
            answers.push((reference, reply));
        }
        if failed && let Some((data, deleted, counter)) = snapshot {
            self.data = data;
            self.deleted = deleted;
            self.counter = counter;
            for (_, reply) in answers.iter_mut().filter(|(_, r)| r.is_success()) {
                *reply = halted();
            }
        }
        let results: Vec<Value> = answers
            .into_iter()
            .map(|(reference, reply)| {
                let mut headers = Map::new();
                if reply.status == StatusCode::CREATED
                    && let Some(id) = reply.body.as_ref().and_then(|b| b.get("id")).and_then(Value::as_str)
                    && let Some(obj) = self.object_by_prefix(id)
                {
                    headers.insert("Location".into(), json!(format!("/services/data/v62.0/sobjects/{}/{id}", obj.name)));
                }
                json!({
                    "body": reply.body.unwrap_or(Value::Null),
                    "httpHeaders": headers,
                    "httpStatusCode": reply.status.as_u16(),
                    "referenceId": reference,
                })
            })
            .collect();
        Reply::ok(json!({ "compositeResponse": results }))
    }
}

fn halted() -> Reply {
    bad("PROCESSING_HALTED", "The transaction was rolled back since another operation in the same transaction failed.")
}
