//! `$batch`: several activity upserts in one `multipart/mixed` request of independent parts
//! (`continue-on-error`), and its answer split back into one result per activity.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cxbridge_domain::crm::CrmError;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};

use crate::client::http::{classify, retry_after, vendor_message};

use super::activity::{CALLER_HEADER, Upsert, activity_id};
use super::connection::Inner;
use super::query::{odata, path_of};

impl Inner {
    /// Sends `items` (same caller) as one `$batch` of independent parts; one result each.
    pub(super) async fn upsert_batch(&self, items: &[Upsert]) -> Vec<Result<String, CrmError>> {
        if items.len() == 1 {
            return vec![self.upsert_one(&items[0]).await];
        }
        let boundary = boundary();
        let mut body = String::with_capacity(items.iter().map(|u| u.body.len() + 300).sum());
        for (i, u) in items.iter().enumerate() {
            let _ = write!(
                body,
                "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {}\r\n\r\n\
                 PATCH {}/{} HTTP/1.1\r\nContent-Type: application/json\r\nPrefer: return=representation\r\n",
                i + 1,
                self.api_path,
                u.target
            );
            if let Some(c) = &u.caller {
                let _ = write!(body, "{CALLER_HEADER}: {c}\r\n");
            }
            let _ = write!(body, "\r\n{}\r\n", u.body);
        }
        let _ = write!(body, "--{boundary}--\r\n");
        let caller = items[0].caller.clone();
        let build = |rb: RequestBuilder| {
            let rb = odata(rb)
                .header(CONTENT_TYPE, format!("multipart/mixed;boundary={boundary}"))
                .header("Prefer", "odata.continue-on-error")
                .body(body.clone());
            match &caller {
                Some(c) => rb.header(CALLER_HEADER, c),
                None => rb,
            }
        };
        let n = items.len() as u32;
        let timeout = (self.timeout + Duration::from_millis(100) * n).min(Duration::from_secs(120));
        self.batches_sent.fetch_add(1, Ordering::Relaxed);
        let answer = match self.send(Method::POST, format!("{}/$batch", self.api), &build, n, timeout).await {
            Ok(a) => a,
            Err(e) => return vec![Err(e); items.len()],
        };
        let content_type = answer.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let parts = match parse_batch_response(content_type, &answer.body) {
            Ok(p) => p,
            Err(why) => {
                let e = CrmError::Transient { message: format!("Dataverse sent an unreadable $batch answer ({why})"), retry_after: None };
                return vec![Err(e); items.len()];
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, u) in items.iter().enumerate() {
            let Some(part) = parts.get(i) else {
                out.push(Err(CrmError::Transient {
                    message: format!("Dataverse did not answer request {} of the $batch (PATCH {})", i + 1, path_of(&u.target)),
                    retry_after: None,
                }));
                continue;
            };
            if (200..300).contains(&part.status) {
                out.push(activity_id(&part.headers, &part.body));
                continue;
            }
            let status = StatusCode::from_u16(part.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let after = retry_after(&part.headers);
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.http.limiter.pause(after.unwrap_or(Duration::from_secs(5))).await;
            }
            let message = format!("Dataverse answered {} to PATCH {} in a $batch: {}", part.status, path_of(&u.target), vendor_message(&part.body));
            out.push(Err(classify(status, message, after)));
        }
        out
    }
}

fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("batch_{:x}{:06x}", nanos, COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
}

/// One HTTP response inside a `$batch` answer.
#[derive(Debug)]
struct PartResponse {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// Splits a `multipart/mixed` `$batch` answer into its responses, in order (change-set
/// parts are flattened into theirs).
fn parse_batch_response(content_type: &str, body: &str) -> Result<Vec<PartResponse>, String> {
    let boundary = boundary_of(content_type).ok_or_else(|| format!("no multipart boundary in Content-Type `{content_type}`"))?;
    let mut out = vec![];
    for part in multipart_parts(body, &boundary) {
        let (headers, content) = split_head(part);
        let part_type = header_value(headers, "content-type").unwrap_or_default();
        if part_type.to_ascii_lowercase().starts_with("multipart/mixed") {
            out.extend(parse_batch_response(&part_type, content)?);
            continue;
        }
        out.push(parse_http_response(content)?);
    }
    Ok(out)
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The parts between `--boundary` delimiters, up to the closing `--boundary--`.
fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut parts = vec![];
    let mut rest = match body.find(&delimiter) {
        Some(i) => &body[i + delimiter.len()..],
        None => return parts,
    };
    loop {
        if rest.starts_with("--") {
            break;
        }
        let Some(end) = rest.find(&delimiter) else { break };
        let part = rest[..end].trim_start_matches([' ', '\t']);
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n')).unwrap_or(part);
        let part = part.strip_suffix("\r\n").or_else(|| part.strip_suffix('\n')).unwrap_or(part);
        parts.push(part);
        rest = &rest[end + delimiter.len()..];
    }
    parts
}

/// Headers and content of a MIME part or HTTP message, split at the first empty line.
fn split_head(s: &str) -> (&str, &str) {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => {
            let (i, n) = if a.0 <= b.0 { a } else { b };
            (&s[..i], &s[i + n..])
        }
        (Some((i, n)), None) | (None, Some((i, n))) => (&s[..i], &s[i + n..]),
        (None, None) => (s, ""),
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn parse_http_response(s: &str) -> Result<PartResponse, String> {
    let (head, body) = split_head(s);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().trim();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| format!("a part is no HTTP response: `{}`", crate::client::truncate(status_line)))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim()))
        {
            headers.append(k, v);
        }
    }
    Ok(PartResponse { status, headers, body: body.trim_end_matches(['\r', '\n']).to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_are_split_into_their_responses() {
        let body = "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                    HTTP/1.1 201 Created\r\nContent-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n\
                    {\"activityid\":\"00000000-0000-0000-0000-000000000001\"}\r\n\
                    --batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                    HTTP/1.1 204 No Content\r\nOData-EntityId: https://x/api/data/v9.2/phonecalls(00000000-0000-0000-0000-000000000002)\r\n\r\n\r\n\
                    --batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
                    --changesetresponse_2\r\nContent-Type: application/http\r\n\r\n\
                    HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n\r\n{\"error\":{\"code\":\"0x80072322\",\"message\":\"slow down\"}}\r\n\
                    --changesetresponse_2--\r\n\
                    --batchresponse_1--\r\n";
        let parts = parse_batch_response("multipart/mixed; boundary=batchresponse_1", body).expect("parts");
        assert_eq!(parts.iter().map(|p| p.status).collect::<Vec<_>>(), vec![201, 204, 429]);
        assert_eq!(activity_id(&parts[0].headers, &parts[0].body).expect("id"), "00000000-0000-0000-0000-000000000001");
        assert_eq!(activity_id(&parts[1].headers, &parts[1].body).expect("id"), "00000000-0000-0000-0000-000000000002");
        assert_eq!(retry_after(&parts[2].headers), Some(Duration::from_secs(3)));
        assert_eq!(vendor_message(&parts[2].body), "slow down (0x80072322)");
        assert!(parse_batch_response("application/json", "{}").is_err());
        // LF-only line ends are read too.
        let lf = "--b\nContent-Type: application/http\n\nHTTP/1.1 200 OK\n\n{}\n--b--\n";
        assert_eq!(parse_batch_response("multipart/mixed;boundary=\"b\"", lf).expect("lf").len(), 1);
    }
}
