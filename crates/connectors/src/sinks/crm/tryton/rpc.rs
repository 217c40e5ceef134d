//! One JSON-RPC session with a Tryton database: login (single flight), calls with a 401
//! retry, errors sorted into transient and permanent, and Tryton's JSON datetimes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use cxbridge_domain::crm::CrmError;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::http::{classify, retry_after};
use crate::client::limits::RateLimiter;
use crate::client::oauth::Secret;
use crate::client::{describe, truncate};

/// Tryton's JSON form of a (UTC, naive) datetime.
pub(super) fn tryton_datetime(at: Timestamp) -> Value {
    let dt = at.to_zoned(TimeZone::UTC).datetime();
    json!({
        "__class__": "datetime",
        "year": dt.year(), "month": dt.month(), "day": dt.day(),
        "hour": dt.hour(), "minute": dt.minute(), "second": dt.second(),
        "microsecond": dt.subsec_nanosecond() / 1000,
    })
}

pub(super) fn from_tryton_datetime(v: &Value) -> Option<Timestamp> {
    if v.get("__class__")?.as_str()? != "datetime" {
        return None;
    }
    let part = |k: &str| v.get(k).and_then(Value::as_i64);
    let small = |k: &str| part(k).and_then(|n| i8::try_from(n).ok());
    let dt = jiff::civil::DateTime::new(
        i16::try_from(part("year")?).ok()?,
        small("month")?,
        small("day")?,
        small("hour")?,
        small("minute")?,
        small("second")?,
        i32::try_from(part("microsecond").unwrap_or(0) * 1000).ok()?,
    )
    .ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

pub(super) fn rows(result: Value, model: &str) -> Result<Vec<Value>, CrmError> {
    match result {
        Value::Array(rows) => Ok(rows),
        other => Err(unreadable(&format!("{model}.search_read"), &other)),
    }
}

pub(super) fn permanent(message: String) -> CrmError {
    CrmError::Permanent { message }
}

pub(super) fn transient(message: String) -> CrmError {
    CrmError::Transient { message, retry_after: None }
}

/// Two parties created at the same moment can draw the same code from Tryton's sequence
/// (its SQLite backend has no real sequences); Tryton then refuses the second one and
/// nothing was created, so the create is safe to send again.
pub(super) fn is_code_race(e: &CrmError) -> bool {
    matches!(e, CrmError::Permanent { message } if message.contains("code") && message.contains("must be unique"))
}

pub(super) fn unreadable(method: &str, got: &Value) -> CrmError {
    transient(format!("Tryton answered {method} with something unexpected: {}", truncate(&got.to_string())))
}

/// One JSON-RPC session with a Tryton database.
pub(super) struct Rpc {
    pub(super) client: reqwest::Client,
    /// `{url}/{database}/rpc/`.
    pub(super) endpoint: String,
    pub(super) base: String,
    pub(super) database: String,
    pub(super) user: String,
    pub(super) password: Secret,
    pub(super) timeout: Duration,
    pub(super) limiter: RateLimiter,
    pub(super) session: Mutex<Option<Session>>,
    pub(super) logins: AtomicU64,
    pub(super) next_id: AtomicU64,
}

#[derive(Clone)]
pub(super) struct Session {
    /// `Session base64(user:uid:key)`.
    header: Arc<str>,
}

/// A JSON-RPC result and the server's clock when it answered.
pub(super) struct Reply {
    pub(super) result: Value,
    pub(super) date: Option<Timestamp>,
}

enum Posted {
    Answer(Reply),
    /// 401: unknown or expired session, or (on login) a wrong password.
    Unauthorized,
}

impl Rpc {
    pub(super) async fn model(&self, model: &str, method: &str, args: Vec<Value>) -> Result<Value, CrmError> {
        Ok(self.exchange_model(model, method, args).await?.result)
    }

    /// Calls `model.<model>.<method>` with `args` and an empty context.
    pub(super) async fn exchange_model(&self, model: &str, method: &str, mut args: Vec<Value>) -> Result<Reply, CrmError> {
        args.push(json!({}));
        self.exchange(&format!("model.{model}.{method}"), Value::Array(args)).await
    }

    async fn exchange(&self, method: &str, params: Value) -> Result<Reply, CrmError> {
        let mut logged_in_again = false;
        loop {
            let session = self.session().await?;
            match self.post(method, &params, Some(&session.header)).await? {
                Posted::Answer(reply) => return Ok(reply),
                Posted::Unauthorized if !logged_in_again => {
                    // Expired (`[session] max_age`) or logged out: log in once more.
                    self.forget(&session).await;
                    logged_in_again = true;
                }
                Posted::Unauthorized => {
                    return Err(permanent(format!("Tryton refused a fresh session of user `{}` for {method}", self.user)));
                }
            }
        }
    }

    /// The current session; logs in if there is none. Concurrent callers share one login.
    async fn session(&self) -> Result<Session, CrmError> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref() {
            return Ok(s.clone());
        }
        let fresh = self.login().await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// Tryton refused `stale`: drop it, unless another caller already replaced it.
    async fn forget(&self, stale: &Session) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| s.header == stale.header) {
            *current = None;
        }
    }

    async fn login(&self) -> Result<Session, CrmError> {
        let params = json!([self.user, { "password": self.password.expose() }, "en"]);
        let reply = match self.post("common.db.login", &params, None).await? {
            Posted::Answer(reply) => reply,
            Posted::Unauthorized => {
                return Err(permanent(format!(
                    "Tryton login failed: user `{}` or its password is wrong for database `{}` at {}",
                    self.user, self.database, self.base
                )));
            }
        };
        let (uid, key) = match reply.result.as_array().map(Vec::as_slice) {
            Some([uid, key, ..]) => match (uid.as_i64(), key.as_str()) {
                (Some(uid), Some(key)) => (uid, key.to_string()),
                _ => return Err(unreadable("common.db.login", &reply.result)),
            },
            _ => return Err(unreadable("common.db.login", &reply.result)),
        };
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(user = %self.user, database = %self.database, "logged in to Tryton");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{uid}:{key}", self.user));
        Ok(Session { header: format!("Session {token}").into() })
    }

    async fn post(&self, method: &str, params: &Value, auth: Option<&str>) -> Result<Posted, CrmError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "id": id, "method": method, "params": params });
        let mut request = self.client.post(&self.endpoint).json(&body).timeout(self.timeout);
        if let Some(auth) = auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let permit = self.limiter.acquire(1).await;
        let result = request.send().await;
        drop(permit);
        let response = result.map_err(|e| transient(format!("Tryton at {} ({method}): {}", self.base, describe(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| transient(format!("Tryton at {} ({method}): reading the answer: {}", self.base, describe(&e))))?;
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Posted::Unauthorized);
        }
        if !status.is_success() {
            return Err(self.http_error(method, status, &headers, &text).await);
        }
        let answer: Value = serde_json::from_str(&text)
            .map_err(|e| transient(format!("Tryton sent an unreadable answer to {method} ({e}): {}", truncate(&text))))?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            return Err(rpc_error(method, error));
        }
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| Timestamp::try_from(t).ok());
        Ok(Posted::Answer(Reply { result: answer.get("result").cloned().unwrap_or(Value::Null), date }))
    }

    async fn http_error(&self, method: &str, status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str) -> CrmError {
        let wait = retry_after(headers);
        let detail = match status.as_u16() {
            404 => format!("no database `{}` there (check `url` and `database`)", self.database),
            // Tryton's login throttle after repeated failures (`[session] max_attempt`).
            429 => "too many requests or failed logins; Tryton asks to wait".to_string(),
            _ => plain_text(body),
        };
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            self.limiter.pause(wait.unwrap_or(Duration::from_secs(1))).await;
        }
        classify(status, format!("Tryton at {} answered {} to {method}: {detail}", self.base, status.as_u16()), wait)
    }
}

/// A JSON-RPC `error` as a [`CrmError`]. Tryton sends `[name, args]` for its own
/// exceptions and `[text, traceback]` for anything else.
fn rpc_error(method: &str, error: &Value) -> CrmError {
    let kind = error.get(0).and_then(Value::as_str).unwrap_or_default();
    let args = error.get(1).cloned().unwrap_or(Value::Null);
    let text = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or_default().trim().to_string();
    match kind {
        "UserError" => {
            let (message, description) = (text(0), text(1));
            let full = if description.is_empty() { message } else { format!("{message} ({description})") };
            permanent(format!("Tryton refused {method}: {full}"))
        }
        "UserWarning" => permanent(format!("Tryton asks for a confirmation the hub cannot give on {method}: {}", text(1))),
        "LoginException" => permanent(format!("Tryton wants `{}` to log in ({method}): {}", text(0), text(1))),
        "ConcurrencyException" => transient(format!("Tryton on {method}: {}", args.as_str().unwrap_or("records were modified in the meanwhile"))),
        // Unknown model or field (a KeyError) and other server faults: the same request
        // fails the same way again.
        other => permanent(format!("Tryton failed on {method}: {}", truncate(if other.is_empty() { "unknown error" } else { other }))),
    }
}

/// An HTML error page reduced to its words.
fn plain_text(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    truncate(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip_through_tryton_json() {
        let t: Timestamp = "2026-11-22T05:07:57.965262Z".parse().expect("time");
        let v = tryton_datetime(t);
        assert_eq!(v["microsecond"], json!(965262));
        assert_eq!(from_tryton_datetime(&v), Some(t));
    }

    #[test]
    fn rpc_errors_are_sorted() {
        let race = rpc_error("model.party.party.create", &json!(["UserError", ["The code on party must be unique.", "", null]]));
        assert!(is_code_race(&race), "a party code drawn twice is retried");
        assert!(!is_code_race(&rpc_error("model.party.party.create", &json!(["UserError", ["The name must be unique.", "", null]]))));
        let user = rpc_error("model.party.party.create", &json!(["UserError", ["The phone number \"x\" is not valid.", "", null]]));
        assert_eq!(user, CrmError::Permanent { message: "Tryton refused model.party.party.create: The phone number \"x\" is not valid.".into() });
        assert!(matches!(rpc_error("m", &json!(["ConcurrencyException", "Records were modified"])), CrmError::Transient { .. }));
        assert!(matches!(rpc_error("m", &json!(["'bogus'", ""])), CrmError::Permanent { message } if message.contains("'bogus'")));
    }
}
