//! Property tests of every wire parser: any bytes, and bodies of the right shape with any
//! text in every field, are parsed or refused with a `WireError`, never a panic; what is
//! accepted respects the limits.

use cxbridge_domain::conversation::MAX_AGENTS_PER_EVENT;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::call_event::{CallEvent, MAX_ID_LEN, WireError, check_form_utf8};
use super::{cti, sipgate};

const EVENTS: &[&str] = &["newCall", "answer", "hangup", "ring", ""];
const DIRECTIONS: &[&str] = &["in", "out", "sideways", ""];

/// Text as PBXs and attackers send it: phone-ish characters, Unicode spaces, letters
/// outside ASCII, and anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[+0-9 ()#;@:.a-z\u{a0}\u{202f}é€\u{fffd}-]{0,30}"]
}

/// Bytes of a form value: text, percent escapes (valid or not) and raw bytes.
fn form_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        text().prop_map(|t| serde_html_form::to_string([("v", t)]).unwrap_or_default().trim_start_matches("v=").as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
        "(%[0-9A-Fa-f]{2}|%|[a-z+&=])*".prop_map(String::into_bytes),
    ]
}

fn accepted_within_limits(e: &CallEvent) -> Result<(), TestCaseError> {
    prop_assert!(e.call_id.chars().count() <= MAX_ID_LEN);
    prop_assert!(e.users.len() <= MAX_AGENTS_PER_EVENT && e.user_ids.len() <= MAX_AGENTS_PER_EVENT);
    prop_assert!(e.users.iter().chain(&e.user_ids).all(|u| !u.trim().is_empty()));
    Ok(())
}

fn check(result: Result<CallEvent, WireError>) -> Result<(), TestCaseError> {
    match result {
        Ok(e) => accepted_within_limits(&e),
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            Ok(())
        }
    }
}

fn form(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![];
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend(k.as_bytes());
        out.push(b'=');
        out.extend(v);
    }
    out
}

proptest! {
    #[test]
    fn any_bytes_are_parsed_or_refused(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        check(cti::parse_json(&body))?;
        check(cti::parse_form(&body))?;
        check(sipgate::parse_form(&body))?;
        let _ = check_form_utf8(&body);
    }

    #[test]
    fn cti_json_with_any_text_in_every_field(
        event in proptest::sample::select(EVENTS), direction in proptest::sample::select(DIRECTIONS),
        from in text(), to in text(), call_id in text(), queue in text(), answering in text(), cause in text(),
        users in proptest::collection::vec(text(), 0..4), one_user in any::<bool>(),
    ) {
        let user: Value = if one_user { json!(users.first().cloned().unwrap_or_default()) } else { json!(users) };
        let body = json!({"event": event, "from": from, "to": to, "direction": direction, "callId": call_id, "user": user, "queue": queue, "answeringNumber": answering, "cause": cause});
        check(cti::parse_json(&serde_json::to_vec(&body).unwrap_or_default()))?;
    }

    #[test]
    fn forms_with_any_value_in_every_field(
        event in proptest::sample::select(EVENTS), direction in proptest::sample::select(DIRECTIONS),
        values in proptest::collection::vec(form_value(), 10),
    ) {
        let names = ["from", "to", "callId", "origCallId", "user", "user%5B%5D", "userId%5B%5D", "answeringNumber", "diversion", "cause"];
        let mut fields: Vec<(&str, Vec<u8>)> = vec![("event", event.as_bytes().to_vec()), ("direction", direction.as_bytes().to_vec())];
        fields.extend(names.iter().copied().zip(values));
        let body = form(&fields);
        let utf8 = check_form_utf8(&body).is_ok();
        for parsed in [cti::parse_form(&body), sipgate::parse_form(&body)] {
            if !utf8 {
                prop_assert!(matches!(parsed, Err(WireError::Malformed { .. })), "text that is not UTF-8 is refused: {:?}", parsed);
            }
            check(parsed)?;
        }
    }

    #[test]
    fn any_number_of_users_is_taken_up_to_the_limit_and_refused_beyond(count in 0usize..300) {
        let body = json!({"event": "newCall", "direction": "in", "callId": "c", "user": (0..count).map(|i| format!("u{i}")).collect::<Vec<_>>()});
        let parsed = cti::parse_json(&serde_json::to_vec(&body).unwrap_or_default());
        if count <= MAX_AGENTS_PER_EVENT {
            prop_assert_eq!(parsed.map(|e| e.users.len()), Ok(count));
        } else {
            prop_assert_eq!(parsed, Err(WireError::TooManyAgents { field: "user", count, max: MAX_AGENTS_PER_EVENT }));
        }
    }
}
