//! What happens around the call: native events, late data, the sweeper, ACW, the outbox,
//! health, metrics and the API description.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn native_events_drive_a_chat_and_late_transcripts_update_the_same_activity() {
    let t = spawn().await;
    let ada = t.create("contact", json!({"name": "Ada", "email": "ada@example.com", "phone": "+49301234567"})).await;
    let ev = |id: &str, kind: &str, extra: serde_json::Value| {
        let mut e = json!({"event_id": id, "type": kind, "conversation_id": "chat-1", "channel": "webchat"});
        if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        e
    };
    let (s, v) = t.post("/api/v1/events", ev("e1", "offered", json!({"from": "+49 30 1234567", "agents": ["alice"], "queue": "chat", "details": {"campaign": "spring"}}))).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("applied")), "{v}");
    let (_, v) = t.post("/api/v1/events", ev("e1", "offered", json!({"from": "+49 30 1234567"}))).await;
    assert_eq!(v["result"], "duplicate");
    t.post("/api/v1/events", ev("e2", "connected", json!({"agent": "alice"}))).await;
    let (_, v) = t.post("/api/v1/events", ev("e3", "closed", json!({}))).await;
    assert_eq!(v["state"], "completed", "a digital conversation completes on close");
    let c = t.written("chat-1").await;
    let first = t.activities_of("contact", &ada).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["kind"], "chat");
    assert_eq!(first[0]["fields"]["campaign"], "spring");

    // The transcript and summary arrive later: the same activity is updated.
    let (_, v) = t
        .post("/api/v1/events", ev("e4", "updated", json!({"details": {"transcript": "Hi!\nHello.", "summary": "Greeting", "recording_url": "https://rec/1", "attributes": {"ticket": "T-9"}}})))
        .await;
    assert_eq!(v["result"], "applied", "{v}");
    let id = c["id"].as_str().expect("id").to_string();
    let mut updated = serde_json::Value::Null;
    for _ in 0..100 {
        let acts = t.activities_of("contact", &ada).await;
        if acts[0]["fields"]["transcript"] == "Hi!\nHello." {
            updated = acts[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(updated["id"], first[0]["id"], "the late data lands on the same activity");
    assert_eq!(updated["fields"]["summary"], "Greeting");
    assert_eq!(updated["fields"]["recording_url"], "https://rec/1");
    assert_eq!(updated["fields"]["attributes"]["ticket"], "T-9");
    assert_eq!(t.activities_of("contact", &ada).await.len(), 1);
    let (_, c) = t.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(c["transcript"], "Hi!\nHello.");

    // Bad native events.
    let (s, v) = t.post("/api/v1/events", json!({"type": "exploded", "conversation_id": "x"})).await;
    assert_eq!(s, 422);
    assert!(v["detail"].as_str().expect("detail").contains("exploded"));
    let (s, _) = t.post("/api/v1/events", json!({"type": "offered"})).await;
    assert_eq!(s, 422, "conversation_id is required");
    let (s, v) = t.post("/api/v1/events", json!({"type": "updated", "conversation_id": "never-offered", "details": {"notes": "x"}})).await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = t.post("/api/v1/events", json!({"type": "offered", "conversation_id": "x", "occurred_at": "yesterday"})).await;
    assert_eq!(s, 422);
    let (s, _) = t.post("/api/v1/events", json!({"type": "offered", "conversation_id": "x", "surprise": 1})).await;
    assert_eq!(s, 422, "unknown fields are refused");
}

#[tokio::test]
async fn the_sweeper_closes_calls_whose_hangup_never_came_and_completes_overdue_wrapups() {
    let t = spawn_with("[phone]\ndefault_region = \"DE\"\n[conversations]\nsweep_after_secs = 1\nacw_timeout_secs = 1\nsweep_interval_secs = 1\n").await;
    t.cti(new_call("lost-1", "+49301234567", "alice")).await;
    t.cti(answer("lost-1", "alice")).await;
    t.cti(new_call("acw-1", "+49301234567", "alice")).await;
    t.cti(answer("acw-1", "alice")).await;
    t.cti(hangup("acw-1", "normalClearing")).await;
    let c = t.wait_for_call("lost-1", "timed out", |c| c["timed_out"] == true).await;
    assert_eq!(c["end_cause"], "timedOut");
    t.wait_for_call("acw-1", "completed without wrap-up", |c| c["state"] == "completed").await;
    t.written("acw-1").await;
    // The swept call also completes (ACW) and gets written.
    t.wait_for_call("lost-1", "completed", |c| c["state"] == "completed").await;
    t.written("lost-1").await;
}

#[tokio::test]
async fn a_call_ringing_past_the_ring_timeout_ends_missed_and_is_written_once() {
    let t = spawn_with("[phone]\ndefault_region = \"DE\"\n[conversations]\nring_timeout_secs = 1\nsweep_interval_secs = 1\n").await;
    let mut alice = t.agent("alice").await;
    next_of(&mut alice, "snapshot").await;
    t.cti(new_call("ring-1", "+49301234567", "alice")).await;
    t.cti(new_call("ring-2", "+49301234568", "alice")).await;
    t.cti(answer("ring-2", "alice")).await;
    // Its hangup never comes: the panel stops ringing, the CRM gets a missed call.
    let c = t.wait_for_call("ring-1", "ring timeout", |c| c["state"] == "completed").await;
    assert_eq!((c["outcome"].as_str(), c["end_cause"].as_str(), c["timed_out"].as_bool()), (Some("missed"), Some("timedOut"), Some(true)), "{c}");
    let written = t.written("ring-1").await;
    // The sweeper keeps running: the conversation is not ended or written a second time.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let again = t.conversation_by_call("ring-1").await;
    assert_eq!((again["revision"].clone(), again["memorialization"]["attempts"].clone()), (written["revision"].clone(), written["memorialization"]["attempts"].clone()), "{again}");
    // An answered call is no ringing call, however quiet it is.
    assert_eq!(t.conversation_by_call("ring-2").await["state"], "connected");
    // A late answer still corrects the outcome (the caller was reached after all).
    t.cti(answer("ring-1", "alice")).await;
    t.wait_for_call("ring-1", "answered after all", |c| c["outcome"] == "answered").await;
}

#[tokio::test]
async fn wrapup_validates_and_links_the_chosen_and_pinned_records() {
    let t = spawn().await;
    let a = t.create("contact", json!({"name": "A", "phone": "+49895550199"})).await;
    let b = t.create("contact", json!({"name": "B", "phone": "+49895550199"})).await;
    let acct = t.create("account", json!({"name": "Acme"})).await;
    t.cti(new_call("w-1", "+49895550199", "alice")).await;
    t.cti(answer("w-1", "alice")).await;
    t.cti(hangup("w-1", "normalClearing")).await;
    let c = t.conversation_by_call("w-1").await;
    let id = c["id"].as_str().expect("id").to_string();
    let (s, v) = t.wrapup(&id, json!({"selected": {"entity": "contact", "id": "nope"}})).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = t.wrapup("no-such-conversation", json!({})).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = t.wrapup(&id, json!({"unknown": 1})).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(t.conversation_by_call("w-1").await["state"], "ended", "refused wrap-ups change nothing");
    let (s, v) = t
        .wrapup(&id, json!({"request_id": "r1", "selected": {"entity": "contact", "id": b}, "pinned": [{"entity": "account", "id": acct}], "disposition": {"code": "callback", "category": "open"}}))
        .await;
    assert_eq!(s, 200, "{v}");
    t.written("w-1").await;
    assert_eq!(t.activities_of("contact", &b).await.len(), 1, "the chosen record gets the activity");
    assert_eq!(t.activities_of("account", &acct).await.len(), 1, "pinned records get it too");
    assert!(t.activities_of("contact", &a).await.is_empty(), "the other match does not");
}

#[tokio::test]
async fn outbox_items_are_listed_and_replays_never_duplicate() {
    let t = spawn().await;
    let ada = t.create("contact", json!({"name": "Ada", "phone": "+49301234567"})).await;
    t.cti(new_call("o-1", "+49301234567", "alice")).await;
    t.cti(hangup("o-1", "noAnswer")).await;
    t.written("o-1").await;
    let (s, v) = t.get("/api/v1/outbox?state=delivered").await;
    assert_eq!(s, 200);
    let item = v["items"][0].clone();
    assert_eq!(item["state"], "delivered");
    let (s, v) = t.post(&format!("/api/v1/outbox/{}/replay", item["id"]), json!({})).await;
    assert_eq!(s, 200, "{v}");
    for _ in 0..100 {
        let (_, v) = t.get("/api/v1/outbox?state=delivered").await;
        if v["items"][0]["attempts"] == 1 && v["items"][0]["updated_at"] != item["updated_at"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.activities_of("contact", &ada).await.len(), 1, "a replay updates the same activity");
    let (s, _) = t.post("/api/v1/outbox/987654/replay", json!({})).await;
    assert_eq!(s, 404);
    let (s, _) = t.get("/api/v1/outbox?state=lost").await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn health_metrics_openapi_and_errors_are_readable() {
    let t = spawn().await;
    t.cti(new_call("h-1", "+49301234567", "alice")).await;
    let r = t.http.get(t.url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status().as_u16(), 200);
    let h: serde_json::Value = r.json().await.expect("json");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"], "ok");
    assert!(h["outbox"]["pending"].is_u64());

    let m = t.http.get(t.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for name in ["cxbridge_events_total", "cxbridge_identifications_total", "cxbridge_outbox_depth", "cxbridge_identify_duration_seconds"] {
        assert!(m.contains(name), "metrics lack {name}");
    }
    assert!(m.contains("source=\"cti\""), "events are counted by source");

    let doc: serde_json::Value = t.http.get(t.url("/api/v1/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    for p in ["/api/v1/events", "/api/v1/identify", "/api/v1/conversations/{id}/wrapup", "/api/v1/crm/{entity}", "/api/v1/outbox"] {
        assert!(doc["paths"][p].is_object(), "openapi lacks {p}");
    }
    let r = t.http.get(t.url("/nowhere")).send().await.expect("404");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = t.http.get(t.url("/api/v1/conversations/x")).bearer_auth("wrong").send().await.expect("401");
    assert_eq!(r.status().as_u16(), 401);
}
