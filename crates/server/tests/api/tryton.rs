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

/// A hub on the Tryton at `url`, with the party workflows; `extra` adds to the file.
async fn tryton_hub(url: &str, crm_extra: &str, extra: &str) -> TestApp {
    spawn_with(&format!(
        r#"
[phone]
default_region = "US"

[crm]
provider = "tryton"
{crm_extra}

[crm.tryton]
url = "{url}"
database = "{}"
user = "admin"
password = "{}"
timeout_ms = 2000

[[workflows]]
name = "new_party"
action = "create"
entity = "party"
required = ["name", "phone"]

[[workflows]]
name = "history"
action = "timeline"
entity = "party"
{extra}
"#,
        cxbridge_testkit::tryton::DATABASE,
        cxbridge_testkit::tryton::ADMIN_PASSWORD
    ))
    .await
}

async fn new_party(t: &TestApp, name: &str, phone: &str) -> String {
    let (s, created) = t.post("/api/v1/workflows/new_party", json!({"fields": {"name": name, "phone": phone}})).await;
    assert_eq!(s, 200, "{created}");
    created["records"][0]["id"].as_str().expect("party id").to_string()
}

/// The notes on `party`, waiting (bounded) until there are at least `want`.
async fn notes_of(t: &TestApp, party: &str, want: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, history) = t.post("/api/v1/workflows/history", json!({"id": party})).await;
        let notes = history["timeline"].as_array().cloned().unwrap_or_default();
        if notes.len() >= want || tokio::time::Instant::now() > deadline {
            return notes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn outbox_item(t: &TestApp, state: &str) -> Option<serde_json::Value> {
    let (_, items) = t.get(&format!("/api/v1/outbox?state={state}")).await;
    items["items"].as_array().and_then(|a| a.first()).cloned()
}

#[tokio::test]
async fn a_call_taken_while_tryton_is_down_is_written_on_the_callers_party_once_tryton_answers() {
    let Some(tryton) = cxbridge_testkit::tryton::shared() else { return };
    let setup = tryton_hub(&tryton.server.url, "", "").await;
    let grace = new_party(&setup, "Grace Outage", "(415) 555-0188").await;
    let henry = new_party(&setup, "Henry Outage", "(415) 555-0189").await;

    // Two hubs talk to a Tryton that is not running yet: one retries for as long as it
    // takes, the other gives up after two attempts (and is replayed).
    let port = cxbridge_testkit::tryton::free_port();
    let down = format!("http://127.0.0.1:{port}");
    let patient = tryton_hub(&down, "", "[outbox]\ninitial_delay_ms = 100\nmax_delay_secs = 1\nmax_attempts = 1000\n").await;
    let brief = tryton_hub(&down, "", "[outbox]\ninitial_delay_ms = 50\nmax_delay_secs = 1\nmax_attempts = 2\n").await;
    for (t, call, number) in [(&patient, "outage-1", "+1 415-555-0188"), (&brief, "outage-2", "+1 415-555-0189")] {
        t.cti(new_call(call, number, "alice")).await;
        let c = t.conversation_by_call(call).await;
        assert_eq!((c["identification"]["outcome"].as_str(), c["identification"]["reason"].as_str()), (Some("skipped"), Some("crm_error")), "{c}");
        t.cti(hangup(call, "cancel")).await;
    }

    // While Tryton is down nothing is dead by design: the patient hub keeps retrying, the
    // brief one ran out of attempts on a temporary failure.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        if let Some(item) = outbox_item(&brief, "dead").await {
            break item;
        }
        assert!(tokio::time::Instant::now() < deadline, "the brief hub's item never ran out of attempts");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert!(dead["last_error"].as_str().is_some_and(|e| e.contains("not identified yet")), "{dead}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(outbox_item(&patient, "dead").await.is_none(), "the patient hub's item is still being retried");
    let pending = outbox_item(&patient, "pending").await.expect("still pending");
    assert!(pending["attempts"].as_u64().is_some_and(|n| n >= 2), "{pending}");

    // Tryton comes up where the hubs look for it.
    cxbridge_testkit::tryton::write_config(&tryton.dir, "late-start.conf", port, "");
    let _late = cxbridge_testkit::tryton::start_trytond(&tryton.venv, &tryton.dir, "late-start.conf", None);

    let c = patient.written("outage-1").await;
    assert_eq!(c["identification"]["outcome"], "single", "identified when written: {c}");
    assert_eq!(c["identification"]["candidates"][0]["id"], grace.as_str(), "{c}");
    let notes = notes_of(&setup, &grace, 1).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["id"], c["memorialization"]["activity_id"]);

    let (s, v) = brief.post(&format!("/api/v1/outbox/{}/replay", dead["id"]), json!({})).await;
    assert_eq!(s, 200, "{v}");
    let c = brief.written("outage-2").await;
    assert_eq!(c["identification"]["candidates"][0]["id"], henry.as_str(), "{c}");
    let notes = notes_of(&setup, &henry, 1).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(serde_json::to_string(&notes[0]).expect("json").contains("abandoned"), "{notes:?}");
}

#[tokio::test]
async fn an_unknown_callers_note_lands_on_the_configured_party_or_on_a_party_made_for_them() {
    let Some(tryton) = cxbridge_testkit::tryton::shared() else { return };
    let setup = tryton_hub(&tryton.server.url, "", "").await;
    let catch_all = new_party(&setup, "Unknown callers (hotline)", "(415) 555-0100").await;

    // `unmatched = "record"`: every unknown caller's note goes on the catch-all party.
    let t = tryton_hub(&tryton.server.url, &format!("unmatched = \"record\"\nunmatched_record = \"party/{catch_all}\""), "").await;
    t.cti(new_call("unknown-1", "+1 415-555-0191", "alice")).await;
    t.cti(hangup("unknown-1", "cancel")).await;
    let c = t.written("unknown-1").await;
    assert_eq!(c["identification"]["outcome"], "none", "{c}");
    let notes = notes_of(&setup, &catch_all, 1).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(serde_json::to_string(&notes[0]).expect("json").contains("+14155550191"), "{notes:?}");

    // The default on Tryton (`create`): the caller gets a party of their own, which the
    // next call from that number finds.
    let t = tryton_hub(&tryton.server.url, "", "").await;
    t.cti(new_call("unknown-2", "+1 415-555-0192", "alice")).await;
    t.cti(hangup("unknown-2", "cancel")).await;
    let c = t.written("unknown-2").await;
    assert_eq!(c["identification"]["outcome"], "single", "{c}");
    assert_eq!(c["identification"]["candidates"][0]["title"], "Caller +14155550192", "{c}");
    let party = c["identification"]["candidates"][0]["id"].as_str().expect("party").to_string();
    t.cti(new_call("unknown-3", "+1 415-555-0192", "alice")).await;
    let again = t.conversation_by_call("unknown-3").await;
    assert_eq!(again["identification"]["candidates"][0]["id"], party.as_str(), "{again}");
    t.cti(hangup("unknown-3", "cancel")).await;
    t.written("unknown-3").await;
    assert_eq!(notes_of(&setup, &party, 2).await.len(), 2, "one note per call on the caller's party");

    // `unassigned` cannot work on Tryton: refused when the config is read.
    let refused = cxbridge_server::config::Config::parse(
        "[crm]\nprovider = \"tryton\"\nunmatched = \"unassigned\"\n[crm.tryton]\nurl = \"http://127.0.0.1:8000\"\ndatabase = \"crm\"\npassword = \"x\"\n",
        std::path::Path::new("t.toml"),
    );
    assert!(refused.is_err_and(|e| e.to_string().contains("unmatched")));
}
