//! An IVR routing decision in the words of the PBX that asked: a Zammad generic CTI reply,
//! sipgate.io push XML, or Jambonz verbs. (Our own JSON lives in `proto`.)

use cxbridge_domain::ivr::Route;
use quick_xml::escape::escape;
use serde_json::{Value, json};

/// Zammad generic CTI. In Zammad's protocol an inbound call can only be let through (`{}`)
/// or rejected (`{"action":"reject","reason":…}`): `dial` is the outbound caller-id rewrite
/// and means nothing to a PBX for an inbound call. A route to an agent or a queue is
/// therefore answered `{}` (the PBX's own routing goes on); ask for `format=json`, `flat` or
/// `text` to route on it.
pub fn zammad(route: &Route) -> Value {
    match route {
        Route::Reject { reason, .. } => json!({"action": "reject", "reason": reason}),
        Route::Dial { .. } | Route::Queue { .. } | Route::Continue => json!({}),
    }
}

/// sipgate.io push XML. sipgate's `<Dial><Number>` takes an external number in E.164 digits
/// (`4930…`), never an internal extension, and sipgate has no queues. So a route is dialled
/// only when `external_number` (the target, or the owner's own external number, resolved by
/// the caller of this function) is known; otherwise the answer is an empty `<Response/>` and
/// sipgate's own routing goes on. A rejection is `<Reject reason="busy|rejected"/>`.
pub fn sipgate(route: &Route, external_number: Option<&str>) -> String {
    let head = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    match (route, external_number) {
        // sipgate knows two reasons; anything but busy is a plain rejection.
        (Route::Reject { reason, .. }, _) => {
            let reason = if reason == "busy" { "busy" } else { "rejected" };
            format!("{head}\n<Response>\n  <Reject reason=\"{reason}\"/>\n</Response>\n")
        }
        (Route::Dial { .. }, Some(number)) => {
            let digits = number.trim_start_matches('+');
            format!("{head}\n<Response>\n  <Dial>\n    <Number>{}</Number>\n  </Dial>\n</Response>\n", escape(digits))
        }
        (Route::Dial { .. } | Route::Queue { .. } | Route::Continue, _) => format!("{head}\n<Response/>\n"),
    }
}

/// How jambonz verbs are written for this hub's jambonz account (`[ivr.jambonz]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JambonzOptions {
    /// The account's SIP realm: an agent's extension `201` is dialled as the registered
    /// user `201@realm`.
    pub sip_realm: Option<String>,
    /// Where a call no rule routes goes on: the integrator's own jambonz application.
    pub continue_hook: Option<String>,
}

/// Jambonz: an array of verbs (docs.jambonz.org/verbs). `dial` with a `phone` (E.164), `sip`
/// (URI) or `user` (a registered device, `name@realm`) target, `enqueue` for a queue,
/// `sip:decline` (486 busy, 603 otherwise) to reject. jambonz hangs up once the verbs run
/// out, so "no rule matched" is a `redirect` to `continue_hook`; without one it is declined
/// with 480 (Temporarily Unavailable) rather than hung up in silence.
pub fn jambonz(route: &Route, caller: &str, options: &JambonzOptions) -> Value {
    match route {
        Route::Reject { reason, .. } => {
            let (status, text) = if reason == "busy" { (486, "Busy Here") } else { (603, "Decline") };
            json!([{"verb": "sip:decline", "status": status, "reason": text}])
        }
        Route::Dial { target, agent, .. } => {
            json!([{"verb": "dial", "callerId": caller, "answerOnBridge": true, "target": [jambonz_target(target, agent.is_some(), options)]}])
        }
        Route::Queue { queue, .. } => json!([{"verb": "enqueue", "name": queue}]),
        Route::Continue => match &options.continue_hook {
            Some(hook) => json!([{"verb": "redirect", "actionHook": hook}]),
            None => json!([{"verb": "sip:decline", "status": 480, "reason": "Temporarily Unavailable"}]),
        },
    }
}

/// The longest number treated as an extension rather than a phone number.
const MAX_EXTENSION_DIGITS: usize = 6;

fn jambonz_target(target: &str, is_agent: bool, options: &JambonzOptions) -> Value {
    let digits_only = !target.is_empty() && target.chars().all(|c| c.is_ascii_digit());
    if target.starts_with("sip:") || target.starts_with("sips:") {
        json!({"type": "sip", "sipUri": target})
    } else if let Some(rest) = target.strip_prefix('+')
        && !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_digit())
    {
        json!({"type": "phone", "number": target})
    } else if digits_only && !is_agent && target.len() > MAX_EXTENSION_DIGITS {
        // A rule's target of many digits is a carrier number.
        json!({"type": "phone", "number": target})
    } else {
        // An extension or a user name: the registered device, named with its realm.
        let name = match (&options.sip_realm, target.contains('@')) {
            (Some(realm), false) => format!("{target}@{realm}"),
            _ => target.to_string(),
        };
        json!({"type": "user", "name": name})
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
    fn zammad_answers_an_inbound_call_only_with_reject_or_nothing() {
        let want = [json!({"action": "reject", "reason": "busy"}), json!({"action": "reject", "reason": "rejected"}), json!({}), json!({}), json!({})];
        for ((route, name), want) in routes().iter().zip(want) {
            assert_eq!(zammad(route), want, "{name}");
        }
    }

    #[test]
    fn sipgate_dials_only_external_numbers() {
        let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        let dial = format!("{head}<Response>\n  <Dial>\n    <Number>4930123201</Number>\n  </Dial>\n</Response>\n");
        let cases = [
            (0, None, format!("{head}<Response>\n  <Reject reason=\"busy\"/>\n</Response>\n")),
            (1, None, format!("{head}<Response>\n  <Reject reason=\"rejected\"/>\n</Response>\n")),
            // The owner's extension 201 without an external number: sipgate routes on.
            (2, None, format!("{head}<Response/>\n")),
            (2, Some("+4930123201"), dial.clone()),
            (3, None, format!("{head}<Response/>\n")),
            (3, Some("+4930123201"), format!("{head}<Response/>\n")),
            (4, None, format!("{head}<Response/>\n")),
        ];
        let routes = routes();
        for (i, number, want) in cases {
            assert_eq!(sipgate(&routes[i].0, number), want, "{} with {number:?}", routes[i].1);
        }
        assert!(sipgate(&routes[2].0, Some("49&1")).contains("<Number>49&amp;1</Number>"), "escaped");
    }

    #[test]
    fn jambonz_verbs_are_the_documented_shapes() {
        let realm = JambonzOptions { sip_realm: Some("acme.sip.jambonz.cloud".into()), continue_hook: Some("https://ivr.example/next".into()) };
        let want = [
            json!([{"verb": "sip:decline", "status": 486, "reason": "Busy Here"}]),
            json!([{"verb": "sip:decline", "status": 603, "reason": "Decline"}]),
            json!([{"verb": "dial", "callerId": "+4930123", "answerOnBridge": true, "target": [{"type": "user", "name": "201@acme.sip.jambonz.cloud"}]}]),
            json!([{"verb": "enqueue", "name": "vip"}]),
            json!([{"verb": "redirect", "actionHook": "https://ivr.example/next"}]),
        ];
        for ((route, name), want) in routes().iter().zip(want) {
            assert_eq!(jambonz(route, "+4930123", &realm), want, "{name}");
        }
        let none = JambonzOptions::default();
        assert_eq!(jambonz(&Route::Continue, "c", &none), json!([{"verb": "sip:decline", "status": 480, "reason": "Temporarily Unavailable"}]));
        let target = |t: &str, agent: bool, o: &JambonzOptions| jambonz(&Route::Dial { target: t.into(), agent: agent.then(|| "alice".into()), rule: "x".into() }, "c", o)[0]["target"][0].clone();
        let cases = [
            ("sip:alice@pbx.example.com", false, &none, json!({"type": "sip", "sipUri": "sip:alice@pbx.example.com"})),
            ("+4930123456", false, &none, json!({"type": "phone", "number": "+4930123456"})),
            ("4930123456", false, &none, json!({"type": "phone", "number": "4930123456"})),
            ("201", true, &none, json!({"type": "user", "name": "201"})),
            ("201", false, &realm, json!({"type": "user", "name": "201@acme.sip.jambonz.cloud"})),
            ("4930123456", true, &realm, json!({"type": "user", "name": "4930123456@acme.sip.jambonz.cloud"})),
            ("alice@example.com", false, &realm, json!({"type": "user", "name": "alice@example.com"})),
        ];
        for (t, agent, o, want) in cases {
            assert_eq!(target(t, agent, o), want, "{t} (agent: {agent})");
        }
    }
}
