//! An IVR routing decision in the words of the PBX that asked: a Zammad generic CTI reply,
//! sipgate.io push XML, or Jambonz verbs. (Our own JSON lives in `proto`.)

use cxbridge_domain::ivr::Route;
use quick_xml::escape::escape;
use serde_json::{Value, json};

/// Zammad generic CTI: `{}` (go on), `{"action":"reject","reason":…}`, or
/// `{"action":"dial","caller_id":…,"number":…}`. A queue is dialed like a number (a hunt
/// group); the caller's own number is presented.
pub fn zammad(route: &Route, caller: &str) -> Value {
    match route {
        Route::Reject { reason, .. } => json!({"action": "reject", "reason": reason}),
        Route::Dial { target, .. } => json!({"action": "dial", "caller_id": caller, "number": target}),
        Route::Queue { queue, .. } => json!({"action": "dial", "caller_id": caller, "number": queue}),
        Route::Continue => json!({}),
    }
}

/// sipgate.io: `<Reject reason="busy|rejected"/>` or `<Dial><Number>…</Number></Dial>`;
/// an empty `<Response/>` lets the call go on.
pub fn sipgate(route: &Route) -> String {
    let head = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    let dial = |n: &str| format!("{head}\n<Response>\n  <Dial>\n    <Number>{}</Number>\n  </Dial>\n</Response>\n", escape(n));
    match route {
        // sipgate knows two reasons; anything but busy is a plain rejection.
        Route::Reject { reason, .. } => {
            let reason = if reason == "busy" { "busy" } else { "rejected" };
            format!("{head}\n<Response>\n  <Reject reason=\"{reason}\"/>\n</Response>\n")
        }
        Route::Dial { target, .. } => dial(target),
        Route::Queue { queue, .. } => dial(queue),
        Route::Continue => format!("{head}\n<Response/>\n"),
    }
}

/// Jambonz: an array of verbs. `dial` with a phone, SIP or user target, `enqueue` for a
/// queue, `sip:decline` (486 busy, 603 otherwise) to reject, `[]` to leave it to the app.
pub fn jambonz(route: &Route, caller: &str) -> Value {
    match route {
        Route::Reject { reason, .. } => {
            let (status, text) = if reason == "busy" { (486, "Busy Here") } else { (603, "Decline") };
            json!([{"verb": "sip:decline", "status": status, "reason": text}])
        }
        Route::Dial { target, .. } => {
            let target = if target.starts_with("sip:") || target.starts_with("sips:") {
                json!({"type": "sip", "sipUri": target})
            } else if !target.is_empty() && target.chars().all(|c| c.is_ascii_digit() || c == '+') {
                json!({"type": "phone", "number": target})
            } else {
                json!({"type": "user", "name": target})
            };
            json!([{"verb": "dial", "callerId": caller, "answerOnBridge": true, "target": [target]}])
        }
        Route::Queue { queue, .. } => json!([{"verb": "enqueue", "name": queue}]),
        Route::Continue => json!([]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> [(Route, &'static str); 5] {
        [
            (Route::Reject { reason: "busy".into(), rule: "blocked".into() }, "reject busy"),
            (Route::Reject { reason: "rejected".into(), rule: "anon".into() }, "reject other"),
            (Route::Dial { target: "201".into(), agent: Some("alice".into()), rule: "owner".into() }, "dial extension"),
            (Route::Queue { queue: "vip".into(), rule: "vip".into() }, "queue"),
            (Route::Continue, "continue"),
        ]
    }

    #[test]
    fn zammad_replies_are_the_documented_shapes() {
        let want = [
            json!({"action": "reject", "reason": "busy"}),
            json!({"action": "reject", "reason": "rejected"}),
            json!({"action": "dial", "caller_id": "+4930123", "number": "201"}),
            json!({"action": "dial", "caller_id": "+4930123", "number": "vip"}),
            json!({}),
        ];
        for ((route, name), want) in routes().iter().zip(want) {
            assert_eq!(zammad(route, "+4930123"), want, "{name}");
        }
    }

    #[test]
    fn sipgate_replies_are_the_documented_xml() {
        let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        let want = [
            format!("{head}<Response>\n  <Reject reason=\"busy\"/>\n</Response>\n"),
            format!("{head}<Response>\n  <Reject reason=\"rejected\"/>\n</Response>\n"),
            format!("{head}<Response>\n  <Dial>\n    <Number>201</Number>\n  </Dial>\n</Response>\n"),
            format!("{head}<Response>\n  <Dial>\n    <Number>vip</Number>\n  </Dial>\n</Response>\n"),
            format!("{head}<Response/>\n"),
        ];
        for ((route, name), want) in routes().iter().zip(want) {
            assert_eq!(sipgate(route), want, "{name}");
        }
        let odd = Route::Dial { target: "a&b<c>".into(), agent: None, rule: "x".into() };
        assert!(sipgate(&odd).contains("<Number>a&amp;b&lt;c&gt;</Number>"), "escaped");
    }

    #[test]
    fn jambonz_verbs_are_the_documented_shapes() {
        let want = [
            json!([{"verb": "sip:decline", "status": 486, "reason": "Busy Here"}]),
            json!([{"verb": "sip:decline", "status": 603, "reason": "Decline"}]),
            json!([{"verb": "dial", "callerId": "+4930123", "answerOnBridge": true, "target": [{"type": "phone", "number": "201"}]}]),
            json!([{"verb": "enqueue", "name": "vip"}]),
            json!([]),
        ];
        for ((route, name), want) in routes().iter().zip(want) {
            assert_eq!(jambonz(route, "+4930123"), want, "{name}");
        }
        let sip = Route::Dial { target: "sip:alice@pbx.example.com".into(), agent: None, rule: "x".into() };
        assert_eq!(jambonz(&sip, "c")[0]["target"][0], json!({"type": "sip", "sipUri": "sip:alice@pbx.example.com"}));
        let user = Route::Dial { target: "alice@example.com".into(), agent: None, rule: "x".into() };
        assert_eq!(jambonz(&user, "c")[0]["target"][0], json!({"type": "user", "name": "alice@example.com"}));
    }
}
