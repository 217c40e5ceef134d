//! Calls through the Zammad-compatible CTI endpoint: pop, identification, wrap-up,
//! memorialization exactly once, duplicates and disorder.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_call_pops_the_caller_and_writes_exactly_one_activity() {
    let t = spawn().await;
    let ada = t.create("contact", json!({"name": "Ada Lovelace", "phone": "+49 (0)30 1234567", "company": "Engines"})).await;
    let mut ws = t.agent("alice").await;
    let snapshot = next_of(&mut ws, "snapshot").await;
    assert_eq!(snapshot["conversations"], json!([]));

    // The PBX writes the number differently from the CRM: they still meet.
    let (s, reply) = t.cti(new_call("call-1", "030/1234567", "alice")).await;
    assert_eq!((s, reply), (200, json!({})));
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["conversation"]["external_id"], "call-1");
    assert_eq!(pop["conversation"]["customer_e164"], "+49301234567");
    assert_eq!(pop["pop"]["action"], "open");
    assert_eq!(pop["pop"]["record"]["id"], ada.as_str());
    assert_eq!(pop["pop"]["record"]["title"], "Ada Lovelace");
    assert!(pop["pop"]["record"]["display"].as_array().expect("display").iter().any(|d| d["value"] == "Engines"));

    t.cti(answer("call-1", "alice")).await;
    let upd = next_of(&mut ws, "update").await;
    assert_eq!(upd["conversation"]["state"], "connected");
    assert_eq!(upd["conversation"]["agent"], "alice");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.cti(hangup("call-1", "normalClearing")).await;
    let end = next_of(&mut ws, "end").await;
    assert_eq!(end["conversation"]["state"], "ended", "voice waits for wrap-up");
    assert_eq!(end["conversation"]["memorialization"]["status"], "waiting");

    let id = end["conversation"]["id"].as_str().expect("id").to_string();
    let (s, c) = t
        .wrapup(&id, json!({"disposition": {"code": "sale", "category": "won"}, "notes": "Wants the blue one", "agent": "alice"}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["state"], "completed");
    let c = t.written("call-1").await;
    let activities = t.activities_of("contact", &ada).await;
    assert_eq!(activities.len(), 1);
    let a = &activities[0];
    assert_eq!(a["kind"], "phonecall");
    assert_eq!(a["id"], c["memorialization"]["activity_id"]);
    let f = &a["fields"];
    assert_eq!(f["disposition"], "sale");
    assert_eq!(f["disposition_category"], "won");
    assert_eq!(f["notes"], "Wants the blue one");
    assert_eq!(f["agent"], "alice");
    assert_eq!(f["direction"], "inbound");
    assert_eq!(f["outcome"], "answered");
    assert_eq!(f["phone_number"], "+49301234567");
    assert_eq!(f["conversation_id"], id.as_str());
    let duration = f["duration"].as_str().expect("h:mm:ss");
    assert!(duration.starts_with("0:00:0") && duration != "0:00:00", "duration {duration}");

    // The PBX retries everything: nothing new is written.
    for e in [new_call("call-1", "030/1234567", "alice"), answer("call-1", "alice"), hangup("call-1", "normalClearing")] {
        assert_eq!(t.cti(e).await.0, 200);
    }
    t.wrapup(&id, json!({"disposition": {"code": "sale", "category": "won"}, "notes": "Wants the blue one", "agent": "alice"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.activities_of("contact", &ada).await.len(), 1);
    assert_eq!(t.app.crm_store.count_activities().await.expect("count"), 1);
    close(ws).await;
}

#[tokio::test]
async fn several_matches_list_none_prefills_and_withheld_callers_are_not_identified() {
    let t = spawn().await;
    t.create("contact", json!({"name": "Grace", "phone": "+49 89 555 0199"})).await;
    t.create("contact", json!({"name": "Alan", "mobile": "089 5550199"})).await;
    let mut ws = t.agent("bob").await;
    next_of(&mut ws, "snapshot").await;

    t.cti(new_call("m-1", "+49895550199", "bob")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "list");
    let names: Vec<&str> = pop["pop"]["records"].as_array().expect("records").iter().map(|r| r["title"].as_str().unwrap_or("")).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(pop["conversation"]["identification"]["outcome"], "multiple");

    t.cti(new_call("n-1", "0221 1234567", "bob")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "create");
    assert_eq!(pop["pop"]["entity"], "contact");
    assert_eq!(pop["pop"]["prefill"]["phone"], "+492211234567");

    for (call, from, reason) in [("a-1", "anonymous", "anonymous"), ("o-1", "030 9999000", "own_number"), ("i-1", "201", "internal")] {
        t.cti(new_call(call, from, "bob")).await;
        let pop = next_of(&mut ws, "pop").await;
        assert_eq!(pop["pop"]["action"], "unidentified", "{from}");
        assert_eq!(pop["pop"]["reason"], reason, "{from}");
    }
    close(ws).await;
}

#[tokio::test]
async fn pop_rules_per_queue_and_direction() {
    let t = spawn_with(
        r#"
[phone]
default_region = "DE"
[[pop_rules]]
match = { queue = "vip" }
single = "open_related"
related = "account"
[[pop_rules]]
match = { queue = "quiet" }
disabled = true
[[pop_rules]]
match = { queue = "search" }
none = "search"
multiple = "open_first"
"#,
    )
    .await;
    let acme = t.create("account", json!({"name": "Acme"})).await;
    t.create("contact", json!({"name": "Ada", "phone": "030 1111111", "account_id": acme})).await;
    let mut ws = t.agent("carol").await;
    next_of(&mut ws, "snapshot").await;

    let call = |id: &str, queue: &str, from: &str| {
        let mut c = new_call(id, from, "carol");
        c["queue"] = json!(queue);
        c
    };
    t.cti(call("v-1", "vip", "+49301111111")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "open");
    assert_eq!(pop["pop"]["record"]["entity"], "account", "open_related opens the contact's account");
    assert_eq!(pop["pop"]["record"]["id"], acme.as_str());
    assert_eq!(pop["pop"]["matched"]["title"], "Ada");

    t.cti(call("q-1", "quiet", "+49301111111")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "disabled");

    t.cti(call("s-1", "search", "+49302222222")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "search");
    assert_eq!(pop["pop"]["query"], "+49302222222");

    // The identify endpoint answers the same question directly.
    let (s, v) = t.get("/api/v1/identify?address=%2B49%20(0)30%2011%2011%20111&queue=vip").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["e164"], "+49301111111");
    assert_eq!(v["identification"]["outcome"], "single");
    assert_eq!(v["pop"]["record"]["entity"], "account");
    let (_, v) = t.get("/api/v1/identify?address=anonymous").await;
    assert_eq!(v["identification"]["outcome"], "skipped");
    close(ws).await;
}

#[tokio::test]
async fn out_of_order_and_replayed_events_never_move_a_call_backwards() {
    let t = spawn().await;
    let ada = t.create("contact", json!({"name": "Ada", "phone": "+49301234567"})).await;
    // The hangup overtakes everything; then the offer and the answer arrive late.
    assert_eq!(t.cti(hangup("late-1", "normalClearing")).await.0, 200);
    t.cti(answer("late-1", "alice")).await;
    t.cti(new_call("late-1", "+49301234567", "alice")).await;
    let c = t.conversation_by_call("late-1").await;
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["customer_e164"], "+49301234567", "the late offer fills who called");
    let c = t.written("late-1").await;
    assert_eq!(c["memorialization"]["status"], "written");
    // A late answer after hangup, and a second hangup, change nothing.
    let before = c["revision"].clone();
    t.cti(answer("late-1", "alice")).await;
    t.cti(hangup("late-1", "busy")).await;
    let c = t.conversation_by_call("late-1").await;
    assert_eq!(c["revision"], before);
    assert_eq!(c["state"], "completed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.activities_of("contact", &ada).await.len() <= 1);
    assert_eq!(t.app.crm_store.count_activities().await.expect("count"), 1);
}

#[tokio::test]
async fn missed_calls_are_written_at_once_and_blocked_callers_rejected() {
    let t = spawn_with(
        r#"
[phone]
default_region = "DE"
[routing]
block_list = ["0171 6666666"]
default_caller_id = "+49309999000"
[[routing.outbound_caller_ids]]
destination = "4989*"
caller_id = "+49899999000"
"#,
    )
    .await;
    t.cti(new_call("miss-1", "+4930555", "alice")).await;
    t.cti(hangup("miss-1", "noAnswer")).await;
    let c = t.written("miss-1").await;
    assert_eq!(c["outcome"], "missed");
    assert_eq!(c["state"], "completed");

    let (s, reply) = t.cti(new_call("block-1", "+49 171 6666666", "alice")).await;
    assert_eq!((s, reply), (200, json!({"action": "reject", "reason": "busy"})));

    let out = |id: &str, to: &str| json!({"event": "newCall", "from": "201", "to": to, "direction": "out", "callId": id, "user": "alice"});
    let (_, reply) = t.cti(out("out-1", "+49 89 1234567")).await;
    assert_eq!(reply, json!({"action": "dial", "caller_id": "+49899999000", "number": "+49 89 1234567"}));
    let (_, reply) = t.cti(out("out-2", "+44 20 7946 0000")).await;
    assert_eq!(reply, json!({"action": "dial", "caller_id": "+49309999000", "number": "+44 20 7946 0000"}));
}

#[tokio::test]
async fn form_bodies_and_bad_requests() {
    let t = spawn().await;
    let (s, body) = t.cti_form("event=newCall&from=%2B49301234567&to=%2B49309999000&direction=in&callId=f-1&user%5B%5D=alice&user%5B%5D=bob").await;
    assert_eq!((s, body.as_str()), (200, "{}"));
    let c = t.conversation_by_call("f-1").await;
    assert_eq!(c["offered_to"], json!(["alice", "bob"]));

    let (s, body) = t.cti_form("event=newCall&direction=sideways&callId=f-2").await;
    assert_eq!(s, 422);
    assert!(body.contains("Invalid direction"), "{body}");
    let (s, v) = t.cti(json!({"event": "ring", "direction": "in", "callId": "x"})).await;
    assert_eq!(s, 422);
    assert!(v["detail"].as_str().expect("detail").contains("unknown event"));
    let r = t.http.post(t.url(&format!("/api/v1/cti/{CTI}"))).header("content-type", "application/json").body("{oops").send().await.expect("send");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = t.http.post(t.url("/api/v1/cti/wrong-token")).json(&new_call("z", "1", "a")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    // Nothing of the refused requests was stored.
    let (_, v) = t.get("/api/v1/conversations?external_id=f-2").await;
    assert_eq!(v["conversations"], json!([]));
    let (_, v) = t.get("/api/v1/conversations?external_id=z").await;
    assert_eq!(v["conversations"], json!([]));
}

#[tokio::test]
async fn agents_come_from_config_and_a_reconnect_gets_open_conversations() {
    let t = spawn_with(
        r#"
[phone]
default_region = "DE"
[[agents]]
id = "alice"
cti_users = ["Alice Smith"]
numbers = ["201"]
queues = ["sales"]
[[agents]]
id = "bob"
numbers = ["202"]
queues = ["sales"]
"#,
    )
    .await;
    let mut call = new_call("q-1", "+49301234567", "Alice Smith");
    call["queue"] = json!("sales");
    t.cti(call.clone()).await;
    let mut call2 = call.clone();
    call2["callId"] = json!("q-2");
    t.cti(call2).await;
    let c = t.conversation_by_call("q-1").await;
    assert_eq!(c["offered_to"], json!(["alice", "bob"]));

    // Bob connects after the offers: he gets both in the snapshot.
    let mut bob = t.agent("bob").await;
    let snap = next_of(&mut bob, "snapshot").await;
    assert_eq!(snap["conversations"].as_array().expect("list").len(), 2, "{snap}");
    // Bob answers q-1 on extension 202; alice's reconnect no longer shows it.
    let mut a = answer("q-1", "");
    a["answeringNumber"] = json!("202");
    t.cti(a).await;
    let c = t.conversation_by_call("q-1").await;
    assert_eq!(c["agent"], "bob");
    let mut alice = t.agent("alice").await;
    let snap = next_of(&mut alice, "snapshot").await;
    let ids: Vec<&str> = snap["conversations"].as_array().expect("list").iter().map(|c| c["conversation"]["external_id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["q-2"]);
    close(bob).await;
    close(alice).await;

    // Streams refuse strangers.
    let url = format!("ws://{}/api/v1/agents/alice/stream?access_token=nope", t.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn several_simultaneous_conversations_per_agent() {
    let t = spawn().await;
    let mut ws = t.agent("dora").await;
    next_of(&mut ws, "snapshot").await;
    for i in 0..3 {
        t.cti(new_call(&format!("sim-{i}"), &format!("+4930123456{i}"), "dora")).await;
    }
    let mut seen = vec![];
    for _ in 0..3 {
        let pop = next_of(&mut ws, "pop").await;
        seen.push(pop["conversation"]["external_id"].as_str().expect("id").to_string());
    }
    seen.sort();
    assert_eq!(seen, ["sim-0", "sim-1", "sim-2"]);
    t.cti(hangup("sim-1", "cancel")).await;
    let end = next_of(&mut ws, "end").await;
    assert_eq!(end["conversation"]["external_id"], "sim-1");
    assert_eq!(end["conversation"]["outcome"], "abandoned");
    none_of(&mut ws, "end", Duration::from_millis(300)).await;
    close(ws).await;
}
