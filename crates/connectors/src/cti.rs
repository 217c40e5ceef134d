//! Zammad's generic CTI push format (`POST /api/v1/cti/{token}`), JSON or form-encoded.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{CallEvent, MAX_ID_LEN, Reply, WireError, check_len, direction, kind};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct JsonBody {
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    #[serde(rename = "callId")]
    call_id: Option<String>,
    user: Option<OneOrMany>,
    queue: Option<String>,
    #[serde(rename = "answeringNumber")]
    answering_number: Option<String>,
    cause: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FormBody {
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    #[serde(rename = "callId")]
    call_id: Option<String>,
    #[serde(default)]
    user: Vec<String>,
    #[serde(default, rename = "user[]")]
    user_list: Vec<String>,
    queue: Option<String>,
    #[serde(rename = "answeringNumber")]
    answering_number: Option<String>,
    cause: Option<String>,
}

struct Fields {
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    call_id: Option<String>,
    users: Vec<String>,
    queue: Option<String>,
    answering_number: Option<String>,
    cause: Option<String>,
}

/// Parses a JSON body.
pub fn parse_json(body: &[u8]) -> Result<CallEvent, WireError> {
    let b: JsonBody = serde_json::from_slice(body).map_err(|e| WireError::Malformed { format: "JSON", detail: e.to_string() })?;
    let users = match b.user {
        None => vec![],
        Some(OneOrMany::One(u)) => vec![u],
        Some(OneOrMany::Many(us)) => us,
    };
    build(Fields {
        event: b.event,
        from: b.from,
        to: b.to,
        direction: b.direction,
        call_id: b.call_id,
        users,
        queue: b.queue,
        answering_number: b.answering_number,
        cause: b.cause,
    })
}

/// Parses an `application/x-www-form-urlencoded` body (`user[]` repeated for lists).
pub fn parse_form(body: &[u8]) -> Result<CallEvent, WireError> {
    let b: FormBody = serde_html_form::from_bytes(body).map_err(|e| WireError::Malformed { format: "form data", detail: e.to_string() })?;
    let mut users = b.user;
    users.extend(b.user_list);
    build(Fields {
        event: b.event,
        from: b.from,
        to: b.to,
        direction: b.direction,
        call_id: b.call_id,
        users,
        queue: b.queue,
        answering_number: b.answering_number,
        cause: b.cause,
    })
}

fn build(f: Fields) -> Result<CallEvent, WireError> {
    let event = f.event.filter(|s| !s.is_empty()).ok_or(WireError::Missing("event"))?;
    let call_id = f.call_id.filter(|s| !s.is_empty()).ok_or(WireError::Missing("callId"))?;
    check_len("callId", &call_id, MAX_ID_LEN)?;
    let dir = direction(f.direction.as_deref().ok_or(WireError::Missing("direction"))?)?;
    let kind = kind(&event, f.cause.as_deref())?;
    let users = f.users.into_iter().filter(|u| !u.trim().is_empty()).collect();
    Ok(CallEvent {
        source: "cti",
        kind,
        conversation_key: call_id.clone(),
        call_id,
        from: f.from.unwrap_or_default(),
        to: f.to.unwrap_or_default(),
        direction: dir,
        users,
        user_ids: vec![],
        queue: f.queue.filter(|q| !q.is_empty()),
        answering_number: f.answering_number.filter(|a| !a.is_empty()),
        diversion: None,
    })
}

/// The JSON reply Zammad's PBX bridges understand.
pub fn reply(r: &Reply) -> Value {
    match r {
        Reply::Accept => json!({}),
        Reply::Reject { reason } => json!({"action": "reject", "reason": reason}),
        Reply::Dial { caller_id, number } => json!({"action": "dial", "caller_id": caller_id, "number": number}),
    }
}

#[cfg(test)]
mod tests {
    use cxbridge_domain::conversation::{Direction, EndCause};

    use super::*;
    use crate::CallEventKind;

    #[test]
    fn json_with_user_string_or_list() {
        let e = parse_json(br#"{"event":"newCall","from":"+49301234567","to":"4930999","direction":"in","callId":"c1","user":"Alice","queue":"sales"}"#)
            .expect("valid");
        assert_eq!(e.kind, CallEventKind::NewCall);
        assert_eq!(e.users, ["Alice"]);
        assert_eq!(e.queue.as_deref(), Some("sales"));
        assert_eq!(e.direction, Direction::Inbound);
        let e = parse_json(br#"{"event":"hangup","direction":"out","callId":"c1","user":["A","B"],"cause":"busy"}"#).expect("valid");
        assert_eq!(e.users, ["A", "B"]);
        assert_eq!(e.kind, CallEventKind::Hangup { cause: EndCause::Busy });
    }

    #[test]
    fn form_with_repeated_user_brackets() {
        let e = parse_form(b"event=answer&from=%2B49301234567&to=4930999&direction=in&callId=c9&user%5B%5D=Alice&user%5B%5D=Bob&answeringNumber=201")
            .expect("valid");
        assert_eq!(e.kind, CallEventKind::Answer);
        assert_eq!(e.users, ["Alice", "Bob"]);
        assert_eq!(e.from, "+49301234567");
        assert_eq!(e.answering_number.as_deref(), Some("201"));
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"event":"newCall","direction":"sideways","callId":"c"}"#, "Invalid direction"),
            (br#"{"event":"newCall","direction":"in"}"#, "`callId`"),
            (br#"{"event":"ring","direction":"in","callId":"c"}"#, "unknown event `ring`"),
            (br#"{"direction":"in","callId":"c"}"#, "`event`"),
            (b"{not json", "not valid JSON"),
        ];
        for (body, want) in cases {
            let err = parse_json(body).expect_err("must fail").to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let long = format!(r#"{{"event":"newCall","direction":"in","callId":"{}"}}"#, "x".repeat(251));
        assert!(parse_json(long.as_bytes()).expect_err("too long").to_string().contains("at most 250"));
    }

    #[test]
    fn replies_match_zammad() {
        assert_eq!(reply(&Reply::Accept).to_string(), "{}");
        assert_eq!(reply(&Reply::Reject { reason: "busy".into() }).to_string(), r#"{"action":"reject","reason":"busy"}"#);
        assert_eq!(
            reply(&Reply::Dial { caller_id: "4930609854180".into(), number: "4930123".into() }).to_string(),
            r#"{"action":"dial","caller_id":"4930609854180","number":"4930123"}"#
        );
    }
}
