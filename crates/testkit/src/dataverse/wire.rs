//! Requests and answers as the Web API reads and writes them: Dataverse's error bodies,
//! `Prefer`, the system query options, the resource a path names, and percent-encoding.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const API_PATH: &str = "/api/data/v9.2";

/// One request, from the wire or from a `$batch` part.
pub(super) struct Req {
    pub(super) method: String,
    /// Path and query, percent-encoded.
    pub(super) target: String,
    /// Names in lower case.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Req {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer, before it becomes an HTTP response or a `$batch` part.
#[derive(Debug)]
pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

pub(super) type Answer = Result<Resp, Resp>;

impl Resp {
    pub(super) fn json(status: u16, v: Value) -> Self {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json; odata.metadata=minimal".into()), ("OData-Version".into(), "4.0".into())],
            body: v.to_string(),
        }
    }
    pub(super) fn empty(status: u16) -> Self {
        Resp { status, headers: vec![("OData-Version".into(), "4.0".into())], body: String::new() }
    }
    pub(super) fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub(super) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub(super) fn into_response(self) -> Response {
        let mut r = (StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), self.body).into_response();
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// Dataverse's error body.
pub(super) fn error(status: u16, code: &str, message: impl Into<String>) -> Resp {
    Resp::json(status, json!({"error": {"code": code, "message": message.into()}}))
}

pub(super) fn syntax(message: impl Into<String>) -> Resp {
    error(400, "0x80060888", message)
}

pub(super) fn payload_error(set: &str, inner: impl std::fmt::Display) -> Resp {
    error(
        400,
        "0x80048d19",
        format!(
            "Error identified in Payload provided by the user for Entity :'{set}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: {inner}"
        ),
    )
}

pub(super) fn does_not_exist(logical: &str, id: &str) -> Resp {
    error(404, "0x80040217", format!("Entity '{logical}' With Id = {id} Does Not Exist"))
}

pub(super) fn not_found_segment(segment: &str) -> Resp {
    error(404, "0x80060888", format!("Resource not found for the segment '{segment}'."))
}

/// What a `Prefer` header asks for.
#[derive(Default)]
pub(super) struct Prefer {
    pub(super) track_changes: bool,
    pub(super) maxpagesize: Option<usize>,
    pub(super) representation: bool,
    pub(super) continue_on_error: bool,
    pub(super) annotations: Vec<String>,
}

impl Prefer {
    pub(super) fn wants(&self, annotation: &str) -> bool {
        self.annotations.iter().any(|p| p == "*" || p == annotation || p.strip_suffix('*').is_some_and(|prefix| annotation.starts_with(prefix)))
    }
}

pub(super) fn prefer(headers: &[(String, String)]) -> Prefer {
    let mut p = Prefer::default();
    for (_, value) in headers.iter().filter(|(k, _)| k == "prefer") {
        // Split at commas outside quotes.
        let mut items = vec![];
        let (mut cur, mut quoted) = (String::new(), false);
        for c in value.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ',' if !quoted => items.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        items.push(cur);
        for item in items {
            let item = item.trim();
            let (k, v) = item.split_once('=').map_or((item, ""), |(k, v)| (k.trim(), v.trim().trim_matches('"')));
            match k.to_ascii_lowercase().as_str() {
                "odata.track-changes" => p.track_changes = true,
                "odata.maxpagesize" => p.maxpagesize = v.parse().ok(),
                "return" => p.representation = v == "representation",
                "odata.continue-on-error" => p.continue_on_error = true,
                "odata.include-annotations" => p.annotations.extend(v.split(',').map(|s| s.trim().to_string())),
                _ => {}
            }
        }
    }
    p
}

pub(super) fn pct_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~$,():@/*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

pub(super) fn is_guid(s: &str) -> bool {
    s.len() == 36 && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn entity_set(logical: &str) -> String {
    if logical.ends_with('y') && !logical.ends_with("ay") && !logical.ends_with("ey") {
        format!("{}ies", &logical[..logical.len() - 1])
    } else if logical.ends_with('s') || logical.ends_with('x') {
        format!("{logical}es")
    } else {
        format!("{logical}s")
    }
}

/// The system query options of a request.
#[derive(Default)]
pub(super) struct Query {
    pub(super) select: Option<Vec<String>>,
    pub(super) filter: Option<String>,
    pub(super) top: Option<usize>,
    pub(super) orderby: Option<String>,
    pub(super) skiptoken: Option<String>,
    pub(super) deltatoken: Option<String>,
}

pub(super) fn parse_query(raw: &str) -> Result<Query, Resp> {
    let mut q = Query::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (pct_decode(k, true), pct_decode(v, true));
        match k.as_str() {
            "$select" => q.select = Some(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
            "$filter" => q.filter = Some(v),
            "$top" => q.top = Some(v.trim().parse().map_err(|_| syntax(format!("Invalid value '{v}' for $top query option found. The $top query option requires a non-negative integer value.")))?),
            "$orderby" => q.orderby = Some(v),
            "$skiptoken" => q.skiptoken = Some(v),
            "$deltatoken" => q.deltatoken = Some(v),
            other if other.starts_with('$') => {
                return Err(syntax(format!("The query parameter {other} is not supported by this test server (or not by Dataverse).")));
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The resource a path names: an entity set, optionally with a key.
pub(super) enum Key {
    Id(String),
    Alternate(Vec<(String, String)>),
}

pub(super) fn parse_segment(resource: &str) -> Result<(String, Option<Key>), Resp> {
    let Some(open) = resource.find('(') else { return Ok((resource.to_string(), None)) };
    let set = resource[..open].to_string();
    let inner = resource[open + 1..].strip_suffix(')').ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
    if is_guid(inner) {
        return Ok((set, Some(Key::Id(inner.to_ascii_lowercase()))));
    }
    let mut pairs = vec![];
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|(_, c)| *c) == Some('\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        pairs.push((name.trim().to_string(), value));
        rest = tail.trim_start().strip_prefix(',').unwrap_or(tail.trim_start());
    }
    Ok((set, Some(Key::Alternate(pairs))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_plus_as_space() {
        let q = parse_query("$filter=telephone1%20eq%20'+1'&$top=3").expect("query");
        assert_eq!(q.filter.as_deref(), Some("telephone1 eq ' 1'"));
        assert_eq!(q.top, Some(3));
        assert!(parse_query("$expand=x").is_err());
        assert_eq!(pct_decode("a%2Bb%27%", false), "a+b'%");
    }

    #[test]
    fn keys_parse_with_doubled_quotes() {
        let (set, key) = parse_segment("phonecalls(cxb_conversationkey='a''b:c')").expect("segment");
        assert_eq!(set, "phonecalls");
        assert!(matches!(key, Some(Key::Alternate(p)) if p == vec![("cxb_conversationkey".to_string(), "a'b:c".to_string())]));
        assert!(matches!(parse_segment("contacts(6F9619FF-8B86-D011-B42D-00C04FC964FF)"), Ok((_, Some(Key::Id(id)))) if id == "6f9619ff-8b86-d011-b42d-00c04fc964ff"));
    }

    #[test]
    fn prefer_values_split_outside_quotes() {
        let p = prefer(&[("prefer".into(), "odata.track-changes, odata.maxpagesize=3,odata.include-annotations=\"A.B,C.*\"".into())]);
        assert!(p.track_changes);
        assert_eq!(p.maxpagesize, Some(3));
        assert!(p.wants("A.B") && p.wants("C.D") && !p.wants("E"));
    }
}
