//! The routes of the instance: which REST resource a request names (versioned paths, query
//! strings decoded), and the API usage every answer reports.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};

use super::org::Org;
use super::reply::{Reply, bad, error, not_found};

impl Org {
    pub(super) fn usage(&self) -> String {
        format!("api-usage={}/{}", self.api_calls, self.api_max)
    }

    /// Routes one request (top level, or a Composite subrequest when `in_composite`).
    pub(super) fn serve(&mut self, method: &Method, path: &str, query: &str, body: &str) -> Reply {
        self.route(method, path, query, body, false)
    }

    pub(super) fn route(&mut self, method: &Method, path: &str, query: &str, body: &str, in_composite: bool) -> Reply {
        let Some(rest) = path.strip_prefix("/services/data/") else { return not_found() };
        let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let Some((version, segments)) = segments.split_first() else { return not_found() };
        if !valid_version(version) {
            return not_found();
        }
        let params = parse_query(query);
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method.as_str(), seg.as_slice()) {
            ("GET", ["query"]) => match params.get("q") {
                Some(q) => self.soql(version, q),
                None => bad("MALFORMED_QUERY", "A query string has to be specified"),
            },
            ("GET", ["query", locator]) => self.next_page(version, locator),
            ("GET", ["search"]) => match params.get("q") {
                Some(q) => self.sosl(version, q),
                None => bad("MALFORMED_SEARCH", "No search term found. The search term must be enclosed in braces."),
            },
            ("POST", ["composite"]) if !in_composite => self.composite(body),
            ("POST", ["sobjects", object]) => self.create(object, body),
            ("GET", ["sobjects", object, "deleted"]) => self.deleted(object, &params),
            ("GET", ["sobjects", object, id]) => self.read(version, object, id, params.get("fields").map(String::as_str)),
            ("PATCH", ["sobjects", object, id]) => self.patch(object, id, body),
            ("DELETE", ["sobjects", object, id]) => self.remove(object, id),
            ("GET", ["sobjects", object, field, value]) => self.read_by_external_id(version, object, field, value, params.get("fields").map(String::as_str)),
            ("PATCH", ["sobjects", object, field, value]) => self.upsert(object, field, value, body),
            (_, ["sobjects", _, _, _]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                &format!("HTTP Method '{method}' not allowed. Allowed are GET,HEAD,PATCH,DELETE"),
            ),
            _ => not_found(),
        }
    }
}

fn valid_version(v: &str) -> bool {
    let Some(num) = v.strip_prefix('v') else { return false };
    let Some((major, minor)) = num.split_once('.') else { return false };
    major.parse::<u32>().is_ok_and(|m| (20..=70).contains(&m)) && minor == "0"
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
