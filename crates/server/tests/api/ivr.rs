//! The IVR lookup: identity, owner, flags and the routing decision, in every format an IVR
//! or PBX takes.

use serde_json::{Value, json};

use crate::helpers::*;

const IVR: &str = "test-ivr-token-0123456789";

const CONFIG: &str = r#"
[phone]
default_region = "DE"
[routing]
block_list = ["+49 30 6660000"]
[[agents]]
id = "alice"
name = "Alice Example"
cti_users = ["alice"]
numbers = ["201"]
token = "alice-token"
[ivr]
token = "test-ivr-token-0123456789"
flags = [{ name = "vip", field = "vip" }, { name = "language", field = "language" }]
[[ivr.rules]]
name = "blocked"
when = { blocked = true }
action = "reject"
[[ivr.rules]]
name = "vip"
when = { flag = "vip", equals = "yes" }
action = "queue"
target = "vip"
[[ivr.rules]]
name = "owner"
action = "owner"
[[ivr.rules]]
name = "fallback"
action = "dial"
target = "sip:support@pbx.example.com"
"#;

async fn lookup(t: &TestApp, query: &str) -> (u16, String, String) {
    let r = t.http.get(t.url(&format!("/api/v1/ivr/lookup?{query}"))).bearer_auth(IVR).send().await.expect("lookup");
    let status = r.status().as_u16();
    let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, ctype, r.text().await.unwrap_or_default())
}

async fn json_of(t: &TestApp, query: &str) -> Value {
    let (s, _, body) = lookup(t, query).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

async fn seeded() -> TestApp {
    let t = spawn_with(CONFIG).await;
    let acme = t.create("account", json!({"name": "Acme", "phone": "+49 30 1110000", "owner": "alice"})).await;
    t.create("contact", json!({"name": "Ada Lovelace", "phone": "030 1234567", "account_id": acme, "language": "en"})).await;
    t.create("contact", json!({"name": "Vera VIP", "phone": "+49 30 5550000", "vip": "yes"})).await;
    t
}

#[tokio::test]
async fn a_known_caller_goes_to_the_available_owner_of_their_account() {
    let t = seeded().await;
    let mut alice = t.agent("alice").await;
    next_of(&mut alice, "snapshot").await;
    let v = json_of(&t, "ani=%2B49301234567&dnis=%2B4930999").await;
    assert_eq!(v["identification"]["outcome"], "single");
    assert_eq!(v["record"]["title"], "Ada Lovelace");
    assert_eq!(v["owner"], json!({"crm_user": "alice", "agent": "alice", "extension": "201", "available": true}), "the account's owner");
    assert_eq!(v["flags"], json!({"language": "en"}), "empty flags are left out");
    assert_eq!(v["route"], json!({"action": "dial", "target": "201", "agent": "alice", "reason": null, "rule": "owner"}));

    // Alice takes a call: she is busy, so the next caller goes to the fallback.
    t.cti(new_call("busy-1", "+49 40 9999999", "alice")).await;
    t.cti(answer("busy-1", "alice")).await;
    let v = json_of(&t, "ani=%2B49301234567").await;
    assert_eq!((v["owner"]["available"].as_bool(), v["route"]["rule"].as_str()), (Some(false), Some("fallback")));
    assert_eq!(v["route"]["target"], "sip:support@pbx.example.com");
    close(alice).await;
}

#[tokio::test]
async fn an_owner_without_the_panel_open_is_not_available() {
    let t = seeded().await;
    let v = json_of(&t, "ani=030%201234567").await;
    assert_eq!((v["owner"]["agent"].as_str(), v["owner"]["available"].as_bool()), (Some("alice"), Some(false)));
    assert_eq!(v["route"]["rule"], "fallback");
}

#[tokio::test]
async fn a_plus_that_arrived_as_a_space_is_restored() {
    let t = seeded().await;
    // Kamailio's `$fU` in a URL without encoding: `ani=+4930…` reaches us as ` 4930…`.
    let v = json_of(&t, "ani=+49301234567").await;
    assert_eq!((v["ani"].as_str(), v["e164"].as_str(), v["record"]["title"].as_str()), (Some("+49301234567"), Some("+49301234567"), Some("Ada Lovelace")));
}

#[tokio::test]
async fn rules_decide_first_match_wins_in_every_pbx_format() {
    let t = seeded().await;
    let cases = [
        // (caller, zammad, sipgate, jambonz)
        (
            "%2B49306660000",
            json!({"action": "reject", "reason": "busy"}),
            "<Response>\n  <Reject reason=\"busy\"/>\n</Response>\n",
            json!([{"verb": "sip:decline", "status": 486, "reason": "Busy Here"}]),
        ),
        // Zammad's protocol cannot route an inbound call, and sipgate has no queues and dials
        // only external numbers: both let their own routing go on.
        (
            "%2B49305550000",
            json!({}),
            "<Response/>\n",
            json!([{"verb": "enqueue", "name": "vip"}]),
        ),
        (
            "%2B49307770000",
            json!({}),
            "<Response/>\n",
            json!([{"verb": "dial", "callerId": "+49307770000", "answerOnBridge": true, "target": [{"type": "sip", "sipUri": "sip:support@pbx.example.com"}]}]),
        ),
    ];
    for (ani, zammad, sipgate, jambonz) in cases {
        assert_eq!(json_of(&t, &format!("ani={ani}&format=zammad")).await, zammad, "{ani}");
        let (s, ctype, xml) = lookup(&t, &format!("ani={ani}&format=sipgate")).await;
        assert_eq!((s, ctype.as_str()), (200, "application/xml"));
        assert_eq!(xml, format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{sipgate}"), "{ani}");
        assert_eq!(json_of(&t, &format!("ani={ani}&format=jambonz")).await, jambonz, "{ani}");
    }
}

#[tokio::test]
async fn flat_and_text_answers_for_simple_ivrs() {
    let t = seeded().await;
    let flat = json_of(&t, "ani=%2B49305550000&format=flat").await;
    let obj = flat.as_object().expect("object");
    assert!(obj.values().all(Value::is_string), "only strings: {flat}");
    assert_eq!(flat["name"], "Vera VIP");
    assert_eq!(flat["flag_vip"], "yes");
    assert_eq!((flat["route_action"].as_str(), flat["route_target"].as_str(), flat["route_rule"].as_str()), (Some("queue"), Some("vip"), Some("vip")));
    assert_eq!(flat["owner"], "", "absent values are empty strings");

    let (s, ctype, text) = lookup(&t, "ani=%2B49305550000&format=text").await;
    assert_eq!((s, ctype.as_str()), (200, "text/plain; charset=utf-8"));
    assert!(text.contains("name=Vera+VIP") || text.contains("name=Vera%20VIP"), "{text}");
    assert!(text.contains("route_action=queue&"), "{text}");
    assert!(text.contains("ani=%2B49305550000"), "URL-encoded: {text}");
}

#[tokio::test]
async fn the_ivr_needs_its_token_and_says_what_is_wrong() {
    let t = seeded().await;
    let none = t.http.get(t.url("/api/v1/ivr/lookup?ani=1")).send().await.expect("no token");
    assert_eq!(none.status(), 401);
    let wrong = t.http.get(t.url("/api/v1/ivr/lookup?ani=1")).bearer_auth("nope").send().await.expect("wrong token");
    assert_eq!(wrong.status(), 401);
    let in_path = t.http.get(t.url(&format!("/api/v1/ivr/{IVR}/lookup?ani=%2B49301234567&format=flat"))).send().await.expect("path token");
    assert_eq!(in_path.status(), 200);
    let admin = t.http.get(t.url("/api/v1/ivr/lookup?ani=1")).bearer_auth(ADMIN).send().await.expect("admin");
    assert_eq!(admin.status(), 200, "admin tokens work too");
    let (s, ctype, body) = lookup(&t, "ani=1&format=xml").await;
    assert_eq!((s, ctype.as_str()), (422, "application/problem+json"));
    assert!(body.contains("json, flat, text, zammad, sipgate or jambonz"), "{body}");
    let (s, ctype, body) = lookup(&t, "dnis=1").await;
    assert_eq!((s, ctype.as_str()), (400, "application/problem+json"));
    assert!(body.contains("missing field `ani`"), "names what is missing: {body}");
}

#[tokio::test]
async fn with_no_rules_blocked_callers_are_rejected_and_the_rest_continue() {
    let t = spawn_with("[phone]\ndefault_region = \"DE\"\n[routing]\nblock_list = [\"+49 30 6660000\"]\n[ivr]\ntoken = \"test-ivr-token-0123456789\"\n").await;
    assert_eq!(json_of(&t, "ani=%2B49306660000").await["route"]["action"], "reject");
    let v = json_of(&t, "ani=anonymous").await;
    assert_eq!((v["route"]["action"].as_str(), v["identification"]["outcome"].as_str()), (Some("continue"), Some("skipped")));
}

const VERIFY: &str = r#"
[phone]
default_region = "DE"
[ivr]
token = "test-ivr-token-0123456789"
[ivr.verify]
fields = { pin = "pin", order = "last_order" }
max_attempts_per_number = 3
max_attempts_per_record = 4
window_secs = 600
"#;

async fn verify(t: &TestApp, ani: &str, kind: &str, value: &str) -> (u16, Value, Option<String>) {
    let r = t.http.post(t.url("/api/v1/ivr/verify")).bearer_auth(IVR).json(&json!({"ani": ani, "kind": kind, "value": value})).send().await.expect("verify");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

#[tokio::test]
async fn a_caller_proves_who_they_are_and_the_answer_tells_nothing_more() {
    let t = spawn_with(VERIFY).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "pin": "4711", "last_order": "AB-1002-X"})).await;
    let (s, v, _) = verify(&t, "+49 30 1234567", "pin", "4711").await;
    assert_eq!((s, v["verified"].as_bool(), v["record"]["title"].as_str()), (200, Some(true), Some("Ada")));
    let (_, v, _) = verify(&t, "030 1234567", "order", "ab 1002 x").await;
    assert_eq!(v["verified"], true, "order numbers as a caller says them");

    let (s, wrong_pin, _) = verify(&t, "+49 30 1234567", "pin", "0000").await;
    let (_, unknown_caller, _) = verify(&t, "+49 30 7654321", "pin", "4711").await;
    assert_eq!(s, 200);
    assert_eq!(wrong_pin, json!({"verified": false}));
    assert_eq!(unknown_caller, wrong_pin, "a wrong PIN and an unknown caller look the same");

    let (s, v, _) = verify(&t, "+49 30 1234567", "birthday", "1815").await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap_or("").contains("order, pin"), "names the configured kinds: {v}");
}

#[tokio::test]
async fn failed_attempts_are_limited_per_number_and_per_record_and_audited() {
    let t = spawn_with(VERIFY).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "pin": "4711"})).await;
    for _ in 0..3 {
        assert_eq!(verify(&t, "+49 30 1234567", "pin", "1111").await.1["verified"], false);
    }
    let (s, v, retry) = verify(&t, "+49 30 1234567", "pin", "4711").await;
    assert_eq!((s, retry.as_deref()), (429, Some("600")), "locked, even with the right PIN: {v}");
    assert_eq!(v["detail"], "too many failed attempts for this caller; transfer the call to an agent");

    t.create("contact", json!({"name": "Ada (mobile)", "mobile": "+49 171 5550000", "pin": "4711"})).await;
    let (s, _, _) = verify(&t, "+49 171 5550000", "pin", "9999").await;
    assert_eq!(s, 200, "a different record and number are not locked");

    let (s, audit) = t.get("/api/v1/ivr/verifications?limit=10").await;
    assert_eq!(s, 200);
    let outcomes: Vec<&str> = audit["verifications"].as_array().expect("list").iter().filter_map(|v| v["outcome"].as_str()).collect();
    assert_eq!(outcomes, vec!["refused", "locked", "refused", "refused", "refused"], "every attempt, newest first");
    assert_eq!(audit["verifications"][1]["record"]["entity"], "contact");
}

#[tokio::test]
async fn one_record_guessed_from_many_numbers_locks_the_record() {
    let t = spawn_with(VERIFY).await;
    // One record reachable from two numbers: the shared limit is per record.
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "mobile": "+49 171 1234567", "pin": "4711"})).await;
    for n in ["+49 30 1234567", "+49 30 1234567", "+49 171 1234567", "+49 171 1234567"] {
        assert_eq!(verify(&t, n, "pin", "0000").await.0, 200);
    }
    let (s, _, _) = verify(&t, "+49 171 1234567", "pin", "4711").await;
    assert_eq!(s, 429, "four failures on the record from two numbers lock it");
}

async fn ivr_event(t: &TestApp, body: Value) -> (u16, Value) {
    let r = t.http.post(t.url("/api/v1/ivr/events")).bearer_auth(IVR).json(&body).send().await.expect("event");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_missed_call_from_a_known_caller_is_written_once_however_often_it_is_sent() {
    let t = spawn_with(VERIFY).await;
    let ada = t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567"})).await;
    let missed = json!({"event_id": "ivr-1", "kind": "missed_call", "ani": "+49 30 1234567", "dnis": "+49 30 9999000", "queue": "support"});
    let (s, first) = ivr_event(&t, missed.clone()).await;
    assert_eq!(s, 202, "{first}");
    assert_eq!((first["state"].as_str(), first["record"]["id"].as_str(), first["created"].as_bool()), (Some("completed"), Some(ada.as_str()), Some(false)));
    let (s, again) = ivr_event(&t, missed).await;
    assert_eq!((s, again["conversation_id"].clone()), (202, first["conversation_id"].clone()), "a retry is the same call");
    t.written("ivr-1").await;
    let activities = t.activities_of("contact", &ada).await;
    assert_eq!(activities.len(), 1, "exactly one activity");
    let a = &activities[0]["fields"];
    assert_eq!((a["outcome"].as_str(), a["queue"].as_str(), a["attributes"]["ivr_event"].as_str()), (Some("missed"), Some("support"), Some("missed_call")));
}

#[tokio::test]
async fn an_unknown_callers_callback_request_creates_one_lead_when_configured() {
    let t = spawn_with(&VERIFY.replace("[ivr.verify]", "create_unknown = \"lead\"\n[ivr.verify]")).await;
    let body = json!({
        "event_id": "ivr-2", "kind": "callback_request", "ani": "+49 30 5551234",
        "callback_at": "after 17:00", "answers": {"name": "Max Mustermann", "topic": "invoice"}, "summary": "Wants a call about invoice 42."
    });
    let (s, first) = ivr_event(&t, body.clone()).await;
    assert_eq!(s, 202, "{first}");
    assert_eq!((first["record"]["entity"].as_str(), first["created"].as_bool()), (Some("lead"), Some(true)));
    let lead = first["record"]["id"].as_str().expect("lead id").to_string();
    let (_, again) = ivr_event(&t, body).await;
    assert_eq!((again["record"]["id"].as_str(), again["created"].as_bool()), (Some(lead.as_str()), Some(false)), "the retry finds the lead instead of making another");
    let (_, leads) = t.get("/api/v1/crm/lead?phone=%2B49305551234").await;
    assert_eq!(leads["records"].as_array().map(Vec::len), Some(1), "one lead: {leads}");
    assert_eq!(leads["records"][0]["fields"]["name"], "Max Mustermann");
    t.written("ivr-2").await;
    let activities = t.activities_of("lead", &lead).await;
    assert_eq!(activities.len(), 1);
    let attrs = &activities[0]["fields"]["attributes"];
    assert_eq!((attrs["callback_number"].as_str(), attrs["callback_at"].as_str(), attrs["answer.topic"].as_str()), (Some("+49305551234"), Some("after 17:00"), Some("invoice")));
    assert_eq!(activities[0]["fields"]["summary"], "Wants a call about invoice 42.");
}

#[tokio::test]
async fn bad_ivr_events_are_refused_and_change_nothing() {
    let t = spawn_with(VERIFY).await;
    for (body, want) in [
        (json!({"event_id": "x", "kind": "hangup", "ani": "+4930"}), "missed_call, callback_request or voicebot"),
        (json!({"event_id": " ", "kind": "missed_call", "ani": "+4930"}), "event_id"),
        (json!({"event_id": "x", "kind": "missed_call", "ani": "+4930", "occurred_at": "yesterday"}), "RFC 3339"),
        (json!({"event_id": "x", "kind": "missed_call"}), "missing field `ani`"),
    ] {
        let (s, v) = ivr_event(&t, body).await;
        assert_eq!(s, 422, "{v}");
        assert!(v["detail"].as_str().unwrap_or("").contains(want), "{v} should say {want}");
    }
    let (_, v) = t.get("/api/v1/conversations?external_id=x").await;
    assert_eq!(v["conversations"], json!([]), "nothing recorded");
}

#[tokio::test]
async fn parallel_guesses_are_counted_before_any_is_checked() {
    let t = spawn_with(VERIFY).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "pin": "4711"})).await;
    // 100 wrong PINs at once (1000..1099, never 4711).
    let guesses = (0..100).map(|i| {
        let t = &t;
        async move { verify(t, "+49 30 1234567", "pin", &format!("{}", 1000 + i)).await.0 }
    });
    let answers = futures::future::join_all(guesses).await;
    assert!(answers.iter().all(|s| *s == 200 || *s == 429), "{answers:?}");
    let checked = answers.iter().filter(|s| **s != 429).count();
    assert!(checked <= 3, "at most the per-number limit (3) may be checked, {checked} of 100 were: {answers:?}");
    let (s, v, retry) = verify(&t, "+49 30 1234567", "pin", "4711").await;
    assert_eq!((s, retry.as_deref()), (429, Some("600")), "the right PIN is refused while locked: {v}");
}

const VERIFY_SHARED: &str = r#"
[phone]
default_region = "DE"
[ivr]
token = "test-ivr-token-0123456789"
[ivr.verify]
fields = { pin = "pin" }
max_attempts_per_number = 10
max_attempts_per_record = 2
window_secs = 600
"#;

#[tokio::test]
async fn a_number_shared_by_two_records_counts_against_both() {
    let t = spawn_with(VERIFY_SHARED).await;
    // A household line: two records share it; each also has a mobile of its own.
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "mobile": "+49 171 1111111", "pin": "4711"})).await;
    t.create("contact", json!({"name": "Byron", "phone": "+49 30 1234567", "mobile": "+49 171 2222222", "pin": "1815"})).await;
    for _ in 0..2 {
        let (s, v, _) = verify(&t, "+49 30 1234567", "pin", "0000").await;
        assert_eq!((s, v["verified"].as_bool()), (200, Some(false)), "{v}");
    }
    for (mobile, pin) in [("+49 171 1111111", "4711"), ("+49 171 2222222", "1815")] {
        let (s, v, _) = verify(&t, mobile, "pin", pin).await;
        assert_eq!(s, 429, "two failures on the shared line lock each of its records, also from {mobile}: {v}");
    }
}

const VERIFY_GLOBAL: &str = r#"
[phone]
default_region = "DE"
[ivr]
token = "test-ivr-token-0123456789"
[ivr.verify]
fields = { pin = "pin" }
max_attempts_per_minute = 5
"#;

#[tokio::test]
async fn guesses_from_many_numbers_hit_the_limit_over_all_numbers() {
    let t = spawn_with(VERIFY_GLOBAL).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "pin": "4711"})).await;
    // A caller spoofing a new number for every guess never reaches the per-number limit.
    for i in 0..5 {
        let (s, _, _) = verify(&t, &format!("+49 40 55500{i:02}"), "pin", "0000").await;
        assert_eq!(s, 200);
    }
    let (s, v, retry) = verify(&t, "+49 30 1234567", "pin", "4711").await;
    assert_eq!((s, retry.as_deref()), (429, Some("60")), "five failures this minute lock everyone: {v}");
}
