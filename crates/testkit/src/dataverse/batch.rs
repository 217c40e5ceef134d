//! `$batch`: a multipart/mixed body split into requests and change sets (all or nothing),
//! each answered as a part, `odata.continue-on-error` honoured, at most 1,000 requests.

use axum::http::StatusCode;

use super::server::{DataverseServer, is_write};
use super::wire::{API_PATH, Req, Resp, error, prefer, syntax};

/// Dataverse refuses larger `$batch` requests.
pub const MAX_BATCH: usize = 1000;

/// A `$batch` entry: one request, or a change set (all or nothing).
enum BatchItem {
    One(Req),
    ChangeSet(Vec<Req>),
}

impl DataverseServer {
    pub(super) fn batch(&self, req: &Req) -> Resp {
        let content_type = req.header("content-type").unwrap_or_default().to_string();
        let Some(boundary) = boundary_of(&content_type).filter(|_| content_type.to_ascii_lowercase().starts_with("multipart/mixed")) else {
            return syntax("The batch request must have a Content-Type of multipart/mixed with a boundary.");
        };
        let items = match parse_batch(&req.body, &boundary, req) {
            Ok(items) => items,
            Err(e) => return e,
        };
        let count: usize = items.iter().map(|i| if let BatchItem::ChangeSet(rs) = i { rs.len() } else { 1 }).sum();
        if count > MAX_BATCH {
            return error(400, "0x8006088b", format!("The number of requests in the batch, {count}, exceeds the maximum of {MAX_BATCH}."));
        }
        let continue_on_error = prefer(&req.headers).continue_on_error;
        let out_boundary = format!("batchresponse_{}", uuid::Uuid::new_v4());
        let mut out = String::new();
        {
            let mut sh = self.shared();
            sh.batches += 1;
            for item in items {
                let failed = match item {
                    BatchItem::One(r) => {
                        let mut resp = sh.db.handle(&self.api_url, &r);
                        if resp.ok() && is_write(&r.method) && self.faults.answer_lost().is_some() {
                            resp = error(503, "0x80040216", "The service is temporarily unavailable.");
                        }
                        let failed = !resp.ok();
                        out.push_str(&http_part(&out_boundary, &resp));
                        failed
                    }
                    BatchItem::ChangeSet(rs) => {
                        let before = sh.db.clone();
                        let mut answers = vec![];
                        let mut failure = None;
                        for r in &rs {
                            let resp = sh.db.handle(&self.api_url, r);
                            if !resp.ok() {
                                failure = Some(resp);
                                break;
                            }
                            answers.push(resp);
                        }
                        match failure {
                            Some(resp) => {
                                sh.db = before;
                                out.push_str(&http_part(&out_boundary, &resp));
                                true
                            }
                            None => {
                                let cs = format!("changesetresponse_{}", uuid::Uuid::new_v4());
                                out.push_str(&format!("--{out_boundary}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n"));
                                for a in &answers {
                                    out.push_str(&http_part(&cs, a));
                                }
                                out.push_str(&format!("--{cs}--\r\n"));
                                false
                            }
                        }
                    }
                };
                if failed && !continue_on_error {
                    break;
                }
            }
        }
        out.push_str(&format!("--{out_boundary}--\r\n"));
        Resp { status: 200, headers: vec![("Content-Type".into(), format!("multipart/mixed; boundary={out_boundary}")), ("OData-Version".into(), "4.0".into())], body: out }
    }
}

fn http_part(boundary: &str, r: &Resp) -> String {
    let reason = StatusCode::from_u16(r.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut s = format!("--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {} {reason}\r\n", r.status);
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("\r\n{}\r\n", r.body));
    s
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, Resp> {
    let delimiter = format!("--{boundary}");
    let Some(start) = body.find(&delimiter) else { return Err(syntax(format!("The batch body holds no part delimited by '{delimiter}'."))) };
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = vec![];
    loop {
        if rest.starts_with("--") {
            return Ok(parts);
        }
        let Some(end) = rest.find(&delimiter) else { return Err(syntax(format!("The batch body is not closed by '{delimiter}--'."))) };
        let part = &rest[..end];
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n')).unwrap_or(part);
        let part = part.strip_suffix("\r\n").or_else(|| part.strip_suffix('\n')).unwrap_or(part);
        parts.push(part);
        rest = &rest[end + delimiter.len()..];
    }
}

fn split_head(s: &str) -> (&str, &str) {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    let at = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match at {
        Some((i, n)) => (&s[..i], &s[i + n..]),
        None => (s, ""),
    }
}

fn head_headers(head: &str) -> Vec<(String, String)> {
    head.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect()
}

fn parse_batch(body: &str, boundary: &str, outer: &Req) -> Result<Vec<BatchItem>, Resp> {
    let mut items = vec![];
    for part in multipart_parts(body, boundary)? {
        let (head, content) = split_head(part);
        let headers = head_headers(head);
        let ct = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
        if ct.to_ascii_lowercase().starts_with("multipart/mixed") {
            let cs = boundary_of(&ct).ok_or_else(|| syntax("A change set has no boundary."))?;
            let mut reqs = vec![];
            for p in multipart_parts(content, &cs)? {
                let (h, c) = split_head(p);
                let hs = head_headers(h);
                if !hs.iter().any(|(k, v)| k == "content-type" && v.to_ascii_lowercase().starts_with("application/http")) {
                    return Err(syntax("Each change set part must have Content-Type: application/http."));
                }
                let r = parse_part_request(c, outer)?;
                if r.method == "GET" {
                    return Err(syntax("GET requests are not allowed in a change set."));
                }
                reqs.push(r);
            }
            items.push(BatchItem::ChangeSet(reqs));
        } else if ct.to_ascii_lowercase().starts_with("application/http") {
            items.push(BatchItem::One(parse_part_request(content, outer)?));
        } else {
            return Err(syntax(format!("A batch part has Content-Type '{ct}'; expected application/http or multipart/mixed.")));
        }
    }
    Ok(items)
}

/// A request inside a part. Its URL may be absolute, an absolute path or relative to the
/// service root; impersonation headers of the `$batch` apply unless the part has its own.
fn parse_part_request(content: &str, outer: &Req) -> Result<Req, Resp> {
    let (head, body) = split_head(content);
    let mut lines = head.lines();
    let line = lines.next().unwrap_or_default().trim();
    let mut words = line.split_whitespace();
    let (Some(method), Some(url), Some(version)) = (words.next(), words.next(), words.next()) else {
        return Err(syntax(format!("Invalid request line in a batch part: '{line}'.")));
    };
    if !version.starts_with("HTTP/") {
        return Err(syntax(format!("Invalid request line in a batch part: '{line}'.")));
    }
    let target = if let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
        rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string())
    } else if url.starts_with('/') {
        url.to_string()
    } else {
        format!("{API_PATH}/{url}")
    };
    let mut headers = head_headers(&lines.collect::<Vec<_>>().join("\n"));
    for name in ["mscrmcallerid", "callerobjectid"] {
        if !headers.iter().any(|(k, _)| k == name)
            && let Some(v) = outer.header(name)
        {
            headers.push((name.into(), v.to_string()));
        }
    }
    Ok(Req { method: method.to_ascii_uppercase(), target, headers, body: body.trim_end_matches(['\r', '\n']).to_string() })
}
