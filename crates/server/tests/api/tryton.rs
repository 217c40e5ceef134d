//! The whole story on a real CRM: a caller stored in Tryton is identified, popped, and the
//! call is written back as a note on the party, exactly once.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_tryton_party_is_popped_and_gets_exactly_one_note_per_call() {
    let Some(tryton) = cxbridge_testkit::tryton::shared() else { return };
    let t = spawn_with(&format!(
        r#"
[phone]
default_region = "US"

[crm]
provider = "tryton"

[crm.tryton]
url = "{}"
database = "{}"
user = "admin"
password = "{}"

[[workflows]]
name = "new_party"
action = "create"
entity = "party"
required = ["name", "phone"]

[[workflows]]
name = "history"
action = "timeline"
entity = "party"
"#,
        tryton.server.url,
        cxbridge_testkit::tryton::DATABASE,
        cxbridge_testkit::tryton::ADMIN_PASSWORD
    ))
    .await;
    let (_, health) = t.get("/healthz").await;
    assert_eq!(health["crm"]["provider"], "tryton");

    // Created through the hub's workflow, stored by Tryton in its own notation.
    let (s, created) = t.post("/api/v1/workflows/new_party", json!({"fields": {"name": "Ada Story", "phone": "(415) 555-0177"}})).await;
    assert_eq!(s, 200, "{created}");
    let party = created["records"][0]["id"].as_str().expect("party id").to_string();

    let mut ws = t.agent("alice").await;
    next_of(&mut ws, "snapshot").await;
    t.cti(new_call("tryton-1", "+1 415-555-0177", "alice")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "open", "{pop}");
    assert_eq!(pop["pop"]["record"]["entity"], "party");
    assert_eq!(pop["pop"]["record"]["id"], party.as_str());
    assert_eq!(pop["pop"]["record"]["title"], "Ada Story");

    t.cti(answer("tryton-1", "alice")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.cti(hangup("tryton-1", "normalClearing")).await;
    let end = next_of(&mut ws, "end").await;
    let id = end["conversation"]["id"].as_str().expect("id").to_string();
    let (s, _) = t.wrapup(&id, json!({"disposition": {"code": "callback", "category": "open"}, "notes": "Call back on Monday", "agent": "alice"})).await;
    assert_eq!(s, 200);
    let written = t.written("tryton-1").await;

    let (s, history) = t.post("/api/v1/workflows/history", json!({"id": party})).await;
    assert_eq!(s, 200, "{history}");
    let notes = history["timeline"].as_array().expect("timeline");
    assert_eq!(notes.len(), 1, "{history}");
    let text = serde_json::to_string(&notes[0]).expect("json");
    for want in ["Call back on Monday", "callback", "+14155550177"] {
        assert!(text.contains(want), "the note carries {want}: {text}");
    }
    assert_eq!(notes[0]["id"], written["memorialization"]["activity_id"], "the outbox knows the note it wrote");

    // A late summary re-writes the same activity; PBX retries write nothing new.
    t.post("/api/v1/events", json!({"type": "updated", "source": "cti", "conversation_id": "tryton-1", "details": {"summary": "Wants a quote"}})).await;
    for e in [new_call("tryton-1", "+1 415-555-0177", "alice"), hangup("tryton-1", "normalClearing")] {
        t.cti(e).await;
    }
    // Tryton cannot edit a note's text: the adapter writes the new note, then deletes the
    // old one, so for a moment both exist. What counts is that one remains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, history) = t.post("/api/v1/workflows/history", json!({"id": party})).await;
        let notes = history["timeline"].as_array().cloned().unwrap_or_default();
        if notes.len() == 1 && serde_json::to_string(&notes).expect("json").contains("Wants a quote") {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (_, settled) = t.post("/api/v1/workflows/history", json!({"id": party})).await;
            assert_eq!(settled["timeline"].as_array().map(Vec::len), Some(1), "exactly one note remains: {settled}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the summary never reached the note: {history}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    close(ws).await;
}
