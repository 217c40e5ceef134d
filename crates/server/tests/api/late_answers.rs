//! Hangups processed before the answer (events reordered or retried): the answer still
//! makes the call answered, and the one activity of each call is rewritten to say so.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const CALLS: usize = 50;

/// The native events of call `i`: offered at 0 s, answered at 30 s, ended at 90 s (the
/// source's own times), in an order where the hangup always comes before the answer.
fn native_events(i: usize) -> Vec<Value> {
    let call = format!("native-{i}");
    let time = |secs: u64| format!("2026-03-02T10:{:02}:{:02}Z", (i * 2 + secs as usize / 60) % 60, secs % 60);
    let offered = json!({"event_id": format!("{call}:o"), "type": "offered", "conversation_id": call, "occurred_at": time(0), "from": "+49 30 1234567", "to": "+49 30 9999000", "agents": ["alice"]});
    let connected = json!({"event_id": format!("{call}:c"), "type": "connected", "conversation_id": call, "occurred_at": time(30), "agent": "alice"});
    let ended = json!({"event_id": format!("{call}:e"), "type": "ended", "conversation_id": call, "occurred_at": time(90), "cause": "normalClearing"});
    match i % 3 {
        0 => vec![offered, ended, connected],
        1 => vec![ended, connected, offered],
        _ => vec![ended, offered, connected],
    }
}

/// The Zammad CTI events of call `i` (no times of their own), the hangup before the answer.
fn cti_events(i: usize) -> Vec<Value> {
    let call = format!("cti-{i}");
    let events = [new_call(&call, "+49 30 1234567", "alice"), hangup(&call, "normalClearing"), answer(&call, "alice")];
    let [n, h, a] = events;
    match i % 3 {
        0 => vec![n, h, a],
        1 => vec![h, a, n],
        _ => vec![h, n, a],
    }
}

#[tokio::test]
async fn answers_processed_after_the_hangup_correct_the_outcome_of_the_one_activity_per_call() {
    let t = spawn().await;
    let ada = t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567"})).await;
    let native: Vec<Vec<Value>> = (0..CALLS).map(native_events).collect();
    let cti: Vec<Vec<Value>> = (0..CALLS).map(cti_events).collect();
    // Round by round, so the calls interleave and the outbox works in between.
    for round in 0..3 {
        for i in 0..CALLS {
            let (s, v) = t.post("/api/v1/events", native[i][round].clone()).await;
            assert!(s == 200 || s == 201 || s == 202, "native-{i} round {round}: {s} {v}");
            let (s, v) = t.cti(cti[i][round].clone()).await;
            assert_eq!(s, 200, "cti-{i} round {round}: {v}");
        }
    }

    let answered = |a: &Value| a["fields"]["outcome"] == "answered" && a["fields"]["connected_at"].is_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let activities = loop {
        let activities = t.activities_of("contact", &ada).await;
        if activities.len() == 2 * CALLS && activities.iter().all(answered) {
            break activities;
        }
        if tokio::time::Instant::now() > deadline {
            let wrong: Vec<String> = activities.iter().filter(|a| !answered(a)).map(|a| format!("{} {} {}", a["fields"]["conversation_id"], a["fields"]["outcome"], a["fields"]["connected_at"])).collect();
            panic!("{} activities, {} not answered with a connect time: {wrong:?}", activities.len(), wrong.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Exactly one activity per call: the rewrite updated it, never added a second.
    let conversations: BTreeSet<String> = activities.iter().filter_map(|a| a["fields"]["conversation_id"].as_str().map(str::to_string)).collect();
    assert_eq!(conversations.len(), 2 * CALLS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.app.crm_store.count_activities().await.expect("count"), 2 * CALLS as u64);

    for i in 0..CALLS {
        // The source's times are kept: answered 30 s in, 60 s before the end.
        let c = t.conversation_by_call(&format!("native-{i}")).await;
        assert_eq!((c["state"].as_str(), c["outcome"].as_str(), c["agent"].as_str()), (Some("completed"), Some("answered"), Some("alice")), "native-{i}: {c}");
        let connected: cxbridge_domain::Timestamp = c["connected_at"].as_str().expect("connected_at").parse().expect("time");
        let ended: cxbridge_domain::Timestamp = c["ended_at"].as_str().expect("ended_at").parse().expect("time");
        assert_eq!(ended.duration_since(connected).as_secs(), 60, "native-{i}: {c}");
        let c = t.conversation_by_call(&format!("cti-{i}")).await;
        assert_eq!((c["outcome"].as_str(), c["agent"].as_str()), (Some("answered"), Some("alice")), "cti-{i}: {c}");
        assert!(c["connected_at"].is_string(), "cti-{i}: {c}");
    }
}
