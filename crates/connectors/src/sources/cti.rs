//! Zammad's generic CTI push format (`POST /api/v1/cti/{token}`), JSON or form-encoded.

use serde::Deserialize;
use serde_json::{Value, json};

use super::call_event::{CallEvent, MAX_ID_LEN, Reply, WireError, check_agents, check_len, direction, kind, parse_form_body, voicemail_or};

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
    /// Zammad reads `callId || call_id`, and its own specs post `call_id`.
    #[serde(rename = "call_id")]
    call_id_snake: Option<String>,
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
    #[serde(rename = "call_id")]
    call_id_snake: Option<String>,
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
        call_id: b.call_id.filter(|s| !s.is_empty()).or(b.call_id_snake),
        users,
        queue: b.queue,
        answering_number: b.answering_number,
        cause: b.cause,
    })
}

/// Parses an `application/x-www-form-urlencoded` body (`user[]` repeated for lists).
pub fn parse_form(body: &[u8]) -> Result<CallEvent, WireError> {
    let b: FormBody = parse_form_body(body)?;
    let mut users = b.user;
    users.extend(b.user_list);
    build(Fields {
        event: b.event,
        from: b.from,
        to: b.to,
        direction: b.direction,
        call_id: b.call_id.filter(|s| !s.is_empty()).or(b.call_id_snake),
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
    let users: Vec<String> = f.users.into_iter().filter(|u| !u.trim().is_empty()).collect();
    check_agents("user", &users)?;
    let kind = voicemail_or(kind(&event, f.cause.as_deref())?, &users, f.answering_number.as_deref());
    Ok(CallEvent {
        source: "cti",
        kind,
        conversation_key: call_id.clone(),
        leg: None,
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
    use crate::sources::call_event::CallEventKind;

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
    fn call_id_is_read_as_zammad_reads_it() {
        // Zammad: `params['callId'] || params['call_id']`; its own specs post `call_id`.
        let cases: &[(&[u8], bool, &str)] = &[
            (br#"{"event":"newCall","direction":"in","call_id":"snake"}"#, false, "snake"),
            (br#"{"event":"newCall","direction":"in","callId":"camel","call_id":"snake"}"#, false, "camel"),
            (br#"{"event":"newCall","direction":"in","callId":"","call_id":"snake"}"#, false, "snake"),
            (b"event=newCall&direction=in&call_id=form-snake", true, "form-snake"),
            (b"event=newCall&direction=in&callId=form-camel&call_id=x", true, "form-camel"),
        ];
        for (body, form, want) in cases {
            let e = if *form { parse_form(body) } else { parse_json(body) }.expect("valid");
            assert_eq!(e.call_id, *want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn an_answer_by_the_voicemail_is_not_an_agents_answer() {
        let cases: &[(&[u8], CallEventKind)] = &[
            (br#"{"event":"answer","direction":"in","callId":"c","user":"voicemail"}"#, CallEventKind::Voicemail),
            (br#"{"event":"answer","direction":"in","callId":"c","user":["Voicemail"]}"#, CallEventKind::Voicemail),
            (br#"{"event":"answer","direction":"in","callId":"c","user":"Alice"}"#, CallEventKind::Answer),
            (br#"{"event":"answer","direction":"in","callId":"c","user":["voicemail","Alice"]}"#, CallEventKind::Answer),
            // The number that answered names a phone: that is a person.
            (br#"{"event":"answer","direction":"in","callId":"c","user":"voicemail","answeringNumber":"201"}"#, CallEventKind::Answer),
        ];
        for (body, want) in cases {
            assert_eq!(parse_json(body).expect("valid").kind, *want, "{}", String::from_utf8_lossy(body));
        }
        let e = parse_form(b"event=answer&direction=in&callId=c&user%5B%5D=voicemail").expect("valid");
        assert_eq!(e.kind, CallEventKind::Voicemail);
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
    fn form_text_that_is_not_utf8_is_refused_as_malformed() {
        for body in [&b"event=newCall&from=%FF%FE&to=1&direction=in&callId=c1"[..], b"event=newCall&from=1&to=1&direction=in&callId=c%E9", b"event=newCall&direction=in&callId=c1&user=\xff"] {
            let err = parse_form(body).expect_err("not UTF-8");
            assert!(matches!(err, WireError::Malformed { .. }), "{err:?}");
            assert!(err.to_string().contains("not UTF-8"), "{err}");
        }
        // Percent-encoded UTF-8 and a non-breaking space are text like any other.
        let e = parse_form(b"event=newCall&from=%2B49%C2%A030%C2%A0123456&to=1&direction=in&callId=c1&user=Ren%C3%A9").expect("UTF-8");
        assert_eq!(e.from, "+49\u{a0}30\u{a0}123456");
        assert_eq!(e.users, ["René"]);
    }

    #[test]
    fn more_users_than_the_limit_are_refused_naming_it() {
        let max = cxbridge_domain::conversation::MAX_AGENTS_PER_EVENT;
        let users = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
        let body = |n: usize| serde_json::to_vec(&json!({"event": "newCall", "direction": "in", "callId": "c1", "user": users(n)})).expect("json");
        assert_eq!(parse_json(&body(max)).expect("at the limit").users.len(), max);
        let err = parse_json(&body(100_000)).expect_err("over the limit");
        assert_eq!(err, WireError::TooManyAgents { field: "user", count: 100_000, max });
        assert!(err.to_string().contains("at most 100"), "{err}");
        let form: String = format!("event=answer&direction=in&callId=c1{}", "&user%5B%5D=a".repeat(max + 1));
        assert!(matches!(parse_form(form.as_bytes()), Err(WireError::TooManyAgents { count: 101, .. })));
        // Empty names are not agents and do not count.
        let form: String = format!("event=answer&direction=in&callId=c1&user=a{}", "&user=".repeat(max + 1));
        assert_eq!(parse_form(form.as_bytes()).expect("empties dropped").users, ["a"]);
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
