//! Input the outside audit sent (issue #12, items 6 and 7): numbers with non-ASCII
//! characters, text that is not UTF-8, and agent lists of 100,000 names. Every route answers
//! with a well-formed response and keeps answering; nothing crashes a request.

use serde_json::{Value, json};

use crate::helpers::*;

const NBSP_NUMBER: &str = "+49\u{a0}30\u{a0}123456";

/// One request as the audit sent it: a route, a content type and a body (or a query).
struct Probe {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn probe(what: &'static str, path: &str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Probe {
    Probe { what, method: reqwest::Method::POST, path: path.to_string(), content_type, body: body.into() }
}

fn json_body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

/// Sends `p`; the answer must be 2xx, or a 4xx with a problem+json body, and the hub must
/// still answer `/healthz` afterwards. Returns the status and the body.
async fn well_formed(t: &TestApp, p: &Probe) -> (u16, Value) {
    let r = t
        .http
        .request(p.method.clone(), t.url(&p.path))
        .bearer_auth(ADMIN)
        .header("content-type", p.content_type)
        .body(p.body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: the connection was dropped: {e}", p.what));
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = r.text().await.unwrap_or_else(|e| panic!("{}: the body was cut off: {e}", p.what));
    assert!((200..300).contains(&status) || (400..500).contains(&status), "{}: status {status}: {text}", p.what);
    if status >= 400 {
        assert_eq!(content_type, "application/problem+json", "{}: {status} {text}", p.what);
        let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: problem is not JSON ({e}): {text}", p.what));
        assert_eq!(problem["status"], status, "{}: {problem}", p.what);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}: {problem}", p.what);
    }
    let health = t.http.get(t.url("/healthz")).send().await.unwrap_or_else(|e| panic!("after {}: /healthz did not answer: {e}", p.what));
    assert_eq!(health.status().as_u16(), 200, "after {}", p.what);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

#[tokio::test]
async fn the_audit_inputs_get_a_well_formed_answer_on_every_route() {
    let t = spawn().await;
    let cti = format!("/api/v1/cti/{CTI}");
    let sipgate = format!("/api/v1/sipgate/{CTI}");
    let form = "application/x-www-form-urlencoded";
    let cti_json = |call: &str, from: &str| json_body(json!({"event": "newCall", "from": from, "to": "+49 30 9999000", "direction": "in", "callId": call, "user": "alice"}));
    let native = |id: &str, from: &str| json_body(json!({"type": "offered", "conversation_id": id, "from": from, "to": "+49 30 9999000", "agents": ["alice"]}));
    let mut invalid_utf8_form = b"event=newCall&from=".to_vec();
    invalid_utf8_form.extend([0xff, 0xfe]);
    invalid_utf8_form.extend(b"&to=1&direction=in&callId=raw-bytes");
    // (probe, the status it must get)
    let probes = [
        (probe("CTI JSON, non-breaking spaces", &cti, "application/json", cti_json("nbsp-json", NBSP_NUMBER)), 200),
        (probe("CTI JSON, é", &cti, "application/json", cti_json("e-json", "é")), 200),
        (probe("CTI JSON, é first", &cti, "application/json", cti_json("e-first", "é+4930123456")), 200),
        (probe("CTI form, non-breaking spaces", &cti, form, "event=newCall&from=%2B49%C2%A030%C2%A0123456&to=1&direction=in&callId=nbsp-form"), 200),
        (probe("CTI form, %FF%FE", &cti, form, "event=newCall&from=%FF%FE&to=1&direction=in&callId=ff-form"), 400),
        (probe("CTI form, raw bytes", &cti, form, invalid_utf8_form.clone()), 400),
        (probe("sipgate, non-breaking spaces", &sipgate, form, "event=newCall&from=%2B49%C2%A030%C2%A0123456&to=1&direction=in&callId=nbsp-sip"), 200),
        (probe("sipgate, é", &sipgate, form, "event=newCall&from=%C3%A9&to=1&direction=in&callId=e-sip"), 200),
        (probe("sipgate, %FF%FE", &sipgate, form, "event=newCall&from=%FF%FE&to=1&direction=in&callId=ff-sip"), 400),
        (probe("sipgate, raw bytes", &sipgate, form, invalid_utf8_form), 400),
        (probe("native event, non-breaking spaces", "/api/v1/events", "application/json", native("nbsp-native", NBSP_NUMBER)), 200),
        (probe("native event, é", "/api/v1/events", "application/json", native("e-native", "é")), 200),
        (probe("native event, not UTF-8", "/api/v1/events", "application/json", b"{\"type\":\"offered\",\"conversation_id\":\"x\",\"from\":\"\xff\xfe\"}".to_vec()), 422),
        (probe("CRM contact, non-breaking spaces", "/api/v1/crm/contact", "application/json", json_body(json!({"name": "Nbsp", "phone": NBSP_NUMBER}))), 201),
        (probe("CRM contact, é", "/api/v1/crm/contact", "application/json", json_body(json!({"name": "E", "phone": "é"}))), 201),
        (probe("CRM contact, not UTF-8", "/api/v1/crm/contact", "application/json", b"{\"name\":\"x\",\"phone\":\"\xff\"}".to_vec()), 422),
    ];
    for (p, want) in &probes {
        let (status, body) = well_formed(&t, p).await;
        assert_eq!(status, *want, "{}: {body}", p.what);
    }
    let lookups = [("ani=%FF%FE", 400), ("ani=%2B49%C2%A030%C2%A0123456", 200), ("ani=%C3%A9", 200), ("ani=%C3%A9%2B4930", 200), ("ani=1&dnis=%E9", 400)];
    for (query, want) in lookups {
        let p = Probe { what: "IVR lookup", method: reqwest::Method::GET, path: format!("/api/v1/ivr/lookup?{query}"), content_type: "text/plain", body: vec![] };
        let (status, body) = well_formed(&t, &p).await;
        assert_eq!(status, want, "{query}: {body}");
    }

    // A non-breaking space is a space: the number meets its plain notation everywhere.
    let (_, lookup) = t.get("/api/v1/ivr/lookup?ani=%2B49%C2%A030%C2%A0123456").await;
    assert_eq!(lookup["e164"], "+4930123456", "{lookup}");
    assert_eq!(lookup["identification"]["outcome"], "single", "the contact stored with non-breaking spaces is found: {lookup}");
    for call in ["nbsp-json", "nbsp-form", "nbsp-sip", "nbsp-native"] {
        let c = t.conversation_by_call(call).await;
        assert_eq!(c["customer_e164"], "+4930123456", "{call}: {c}");
    }
    // A refused form changed nothing.
    assert_eq!(t.conversation_by_call("ff-form").await, Value::Null);
    assert_eq!(t.conversation_by_call("ff-sip").await, Value::Null);
}

#[tokio::test]
async fn a_hundred_thousand_users_are_refused_naming_the_limit_and_nothing_is_stored() {
    let t = spawn().await;
    let many: Vec<String> = (0..100_000).map(|i| format!("agent-{i}")).collect();
    let refusals = [
        (format!("/api/v1/cti/{CTI}"), json!({"event": "newCall", "from": "+49 30 1234567", "to": "+49 30 9999000", "direction": "in", "callId": "huge-cti", "user": many})),
        ("/api/v1/events".to_string(), json!({"type": "offered", "conversation_id": "huge-native", "from": "+49 30 1234567", "agents": many})),
    ];
    for (path, body) in &refusals {
        let p = probe("100,000 agents", path, "application/json", json_body(body.clone()));
        let (status, problem) = well_formed(&t, &p).await;
        assert_eq!(status, 422, "{path}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("100000") && detail.contains("at most 100"), "{path}: {detail}");
    }
    let form: String = format!("event=newCall&from=1&to=2&direction=in&callId=huge-sip{}", "&user%5B%5D=a".repeat(100_000));
    let (status, problem) = well_formed(&t, &probe("sipgate 100,000 users", &format!("/api/v1/sipgate/{CTI}"), "application/x-www-form-urlencoded", form)).await;
    assert_eq!(status, 422, "{problem}");
    for call in ["huge-cti", "huge-native", "huge-sip"] {
        assert_eq!(t.conversation_by_call(call).await, Value::Null, "{call} was refused, so nothing is stored");
    }

    // At the limit the event is taken, and each agent is stored once, in the order sent.
    let mut hundred: Vec<String> = (0..99).map(|i| format!("agent-{i}")).collect();
    hundred.push("agent-0".into());
    let (status, reply) = t.cti(json!({"event": "newCall", "from": "+49 30 1234567", "to": "+49 30 9999000", "direction": "in", "callId": "full", "user": hundred})).await;
    assert_eq!(status, 200, "{reply}");
    let c = t.conversation_by_call("full").await;
    let offered: Vec<&str> = c["offered_to"].as_array().expect("offered_to").iter().filter_map(Value::as_str).collect();
    assert_eq!(offered.len(), 99, "agent-0 twice is one agent");
    assert_eq!(offered.first(), Some(&"agent-0"));
    assert_eq!(offered.last(), Some(&"agent-98"));
}
