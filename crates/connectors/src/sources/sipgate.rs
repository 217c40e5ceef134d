//! sipgate.io push API: form-encoded events in, `application/xml` responses out.
//! Follow-up events (answer, hangup) are only sent when the response asks for them, and a
//! transfer arrives as a new `newCall` with a new `callId` but the same `origCallId`.

use quick_xml::escape::escape;
use serde::Deserialize;

use cxbridge_domain::conversation::Direction;

use super::call_event::{CallEvent, CallEventKind, MAX_ID_LEN, Reply, WireError, check_agents, check_len, direction, kind, parse_form_body, voicemail_or};

/// Fields we use; the others (`fullUserId[]`, `xcid`, …) are ignored.
#[derive(Debug, Deserialize)]
struct FormBody {
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    #[serde(rename = "callId")]
    call_id: Option<String>,
    #[serde(rename = "origCallId")]
    orig_call_id: Option<String>,
    #[serde(default)]
    user: Vec<String>,
    #[serde(default, rename = "user[]")]
    user_list: Vec<String>,
    #[serde(default, rename = "userId")]
    user_id: Vec<String>,
    #[serde(default, rename = "userId[]")]
    user_id_list: Vec<String>,
    #[serde(rename = "answeringNumber")]
    answering_number: Option<String>,
    diversion: Option<String>,
    cause: Option<String>,
    /// The digits of a `dtmf` push (sent after a `<Gather onData>`).
    dtmf: Option<String>,
}

/// The most digits a `dtmf` push is accepted with (sipgate's `<Gather maxDigits>` is small).
const MAX_DTMF_LEN: usize = 64;

/// Parses a sipgate.io push request body.
pub fn parse_form(body: &[u8]) -> Result<CallEvent, WireError> {
    parse_form_at(body, None)
}

/// Parses a push sent to a URL that names the direction (`…/in`, `…/out`, as Zammad's
/// sipgate integration sets them): it stands in for a `direction` the body leaves out.
pub fn parse_form_at(body: &[u8], path_direction: Option<Direction>) -> Result<CallEvent, WireError> {
    let b: FormBody = parse_form_body(body)?;
    let event = b.event.filter(|s| !s.is_empty()).ok_or(WireError::Missing("event"))?;
    let call_id = b.call_id.filter(|s| !s.is_empty()).ok_or(WireError::Missing("callId"))?;
    check_len("callId", &call_id, MAX_ID_LEN)?;
    let conversation_key = b.orig_call_id.filter(|s| !s.is_empty()).unwrap_or_else(|| call_id.clone());
    check_len("origCallId", &conversation_key, MAX_ID_LEN)?;
    // answer and hangup callbacks may leave out the direction; the conversation knows it.
    let dir = match (b.direction.as_deref(), path_direction) {
        (Some(d), _) => direction(d)?,
        (None, Some(d)) => d,
        (None, None) if event == "newCall" => return Err(WireError::Missing("direction")),
        (None, None) => Direction::Inbound,
    };
    let users: Vec<String> = b.user.into_iter().chain(b.user_list).filter(|u| !u.trim().is_empty()).collect();
    check_agents("user", &users)?;
    let user_ids: Vec<String> = b.user_id.into_iter().chain(b.user_id_list).filter(|u| !u.trim().is_empty()).collect();
    check_agents("userId", &user_ids)?;
    let kind = if event == "dtmf" {
        let digits = b.dtmf.unwrap_or_default();
        check_len("dtmf", &digits, MAX_DTMF_LEN)?;
        CallEventKind::Dtmf { digits }
    } else {
        voicemail_or(kind(&event, b.cause.as_deref())?, &users, b.answering_number.as_deref())
    };
    Ok(CallEvent {
        source: "sipgate",
        kind,
        leg: Some(call_id.clone()),
        call_id,
        conversation_key,
        from: b.from.unwrap_or_default(),
        to: b.to.unwrap_or_default(),
        direction: dir,
        users,
        user_ids,
        queue: None,
        answering_number: b.answering_number.filter(|s| !s.is_empty()),
        diversion: b.diversion.filter(|s| !s.is_empty()),
    })
}

/// The XML response. `callback_url` is where sipgate should send answer and hangup events
/// (they are only sent when asked for); `None` asks for nothing.
pub fn reply(r: &Reply, callback_url: Option<&str>) -> String {
    let callbacks = match callback_url {
        Some(url) => {
            let url = escape(url);
            format!(r#" onAnswer="{url}" onHangup="{url}""#)
        }
        None => String::new(),
    };
    let head = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    match r {
        Reply::Accept => format!("{head}\n<Response{callbacks}/>\n"),
        // A rejected call never rings, but the hangup still tells us it is over.
        Reply::Reject { reason } => {
            format!("{head}\n<Response{callbacks}>\n  <Reject reason=\"{}\"/>\n</Response>\n", escape(reason.as_str()))
        }
        Reply::Dial { caller_id, number } => format!(
            "{head}\n<Response{callbacks}>\n  <Dial callerId=\"{}\">\n    <Number>{}</Number>\n  </Dial>\n</Response>\n",
            escape(caller_id.as_str()),
            escape(number.as_str())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_call_with_orig_call_id_and_lists() {
        let e = parse_form(
            b"event=newCall&from=492111234567&to=4915791234567&direction=in&callId=leg2&origCallId=orig1&user%5B%5D=Alice&userId%5B%5D=w0&fullUserId%5B%5D=1234567w0&xcid=x&diversion=4930999",
        )
        .expect("valid");
        assert_eq!(e.kind, CallEventKind::NewCall);
        assert_eq!(e.call_id, "leg2");
        assert_eq!(e.conversation_key, "orig1");
        assert_eq!(e.users, ["Alice"]);
        assert_eq!(e.user_ids, ["w0"]);
        assert_eq!(e.diversion.as_deref(), Some("4930999"));
    }

    #[test]
    fn anonymous_caller_and_missing_orig_call_id() {
        let e = parse_form(b"event=newCall&from=anonymous&to=4930999&direction=in&callId=c1").expect("valid");
        assert_eq!(e.from, "anonymous");
        assert_eq!(e.conversation_key, "c1");
    }

    #[test]
    fn dtmf_pushes_carry_their_digits_and_each_press_is_its_own_event() {
        let a = parse_form(b"event=dtmf&callId=c1&origCallId=o1&dtmf=12").expect("dtmf");
        assert_eq!(a.kind, CallEventKind::Dtmf { digits: "12".into() });
        assert_eq!(a.conversation_key, "o1");
        let b = parse_form(b"event=dtmf&callId=c1&dtmf=3").expect("dtmf");
        assert_ne!(a.dedup_key(), b.dedup_key(), "two presses are two events");
        let long = format!("event=dtmf&callId=c1&dtmf={}", "1".repeat(65));
        assert!(matches!(parse_form(long.as_bytes()), Err(WireError::TooLong { field: "dtmf", .. })));
    }

    #[test]
    fn the_direction_in_the_url_stands_in_for_a_missing_one() {
        let e = parse_form_at(b"event=newCall&from=4930&to=4989&callId=c1", Some(Direction::Outbound)).expect("path direction");
        assert_eq!(e.direction, Direction::Outbound);
        let e = parse_form_at(b"event=newCall&from=4930&to=4989&callId=c1&direction=in", Some(Direction::Outbound)).expect("body wins");
        assert_eq!(e.direction, Direction::Inbound);
        let e = parse_form_at(b"event=answer&callId=c1&user%5B%5D=voicemail", None).expect("voicemail");
        assert_eq!(e.kind, CallEventKind::Voicemail);
    }

    #[test]
    fn bad_requests() {
        assert!(parse_form(b"event=newCall&direction=up&callId=c").expect_err("dir").to_string().contains("Invalid direction"));
        assert!(parse_form(b"event=newCall&direction=in").expect_err("id").to_string().contains("callId"));
        assert!(parse_form(b"event=newCall&callId=c").expect_err("dir").to_string().contains("direction"));
    }

    #[test]
    fn form_text_that_is_not_utf8_is_refused_and_user_lists_are_capped() {
        let err = parse_form(b"event=newCall&from=%FF%FE&to=1&direction=in&callId=c1").expect_err("not UTF-8");
        assert!(matches!(err, WireError::Malformed { .. }) && err.to_string().contains("the value of `from` is not UTF-8"), "{err}");
        let max = cxbridge_domain::conversation::MAX_AGENTS_PER_EVENT;
        let names = format!("event=newCall&direction=in&callId=c1{}", "&user%5B%5D=Alice".repeat(max + 1));
        assert_eq!(parse_form(names.as_bytes()), Err(WireError::TooManyAgents { field: "user", count: max + 1, max }));
        let ids = format!("event=newCall&direction=in&callId=c1{}", "&userId%5B%5D=w0".repeat(100_000));
        assert_eq!(parse_form(ids.as_bytes()), Err(WireError::TooManyAgents { field: "userId", count: 100_000, max }));
        let at_limit = format!("event=newCall&direction=in&callId=c1{}", "&user%5B%5D=Alice&userId%5B%5D=w0".repeat(max));
        let e = parse_form(at_limit.as_bytes()).expect("at the limit");
        assert_eq!((e.users.len(), e.user_ids.len()), (max, max));
    }

    #[test]
    fn xml_replies() {
        assert_eq!(
            reply(&Reply::Accept, Some("https://hub.example/api/v1/sipgate/t?a=1&b=2")),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onAnswer=\"https://hub.example/api/v1/sipgate/t?a=1&amp;b=2\" onHangup=\"https://hub.example/api/v1/sipgate/t?a=1&amp;b=2\"/>\n"
        );
        assert_eq!(
            reply(&Reply::Reject { reason: "busy".into() }, None),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Reject reason=\"busy\"/>\n</Response>\n"
        );
        assert!(reply(&Reply::Dial { caller_id: "4930".into(), number: "4989".into() }, None).contains("<Dial callerId=\"4930\">\n    <Number>4989</Number>"));
    }
}
