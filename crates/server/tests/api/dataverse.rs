//! Dynamics 365 as the CRM, against the Dataverse wire-format test server (crates/testkit):
//! identification from the local phone index, the pop, the phone call written with its
//! parties on the agent's behalf, the CRM failing and refusing, and a chaos run.

use std::collections::HashMap;
use std::time::Duration;

use cxbridge_testkit::dataverse::{self as dv, DataverseServer};
use serde_json::{Value, json};

use crate::helpers::*;

fn person(first: &str, last: &str, phones: Value) -> Value {
    let mut v = phones;
    v["firstname"] = json!(first);
    v["lastname"] = json!(last);
    v
}

/// The hub pointed at `crm`, with `extra` TOML added.
async fn hub(crm: &DataverseServer, extra: &str) -> TestApp {
    spawn_with(&format!(
        r#"
[phone]
default_region = "US"

[crm]
provider = "dataverse"
sync_interval_secs = 1
identify_timeout_ms = 3000

[crm.dataverse]
{connection}timeout_ms = 2000

[[agents]]
id = "alice"
crm_user_id = "{agent}"

[outbox]
initial_delay_ms = 50
max_delay_secs = 1
max_attempts = 1000
{extra}
"#,
        connection = crm.connection_toml(),
        agent = dv::AGENT_USER_ID,
    ))
    .await
}

/// Waits until `/healthz` says every entity of the local index is ready.
async fn index_ready(t: &TestApp) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = t.get("/healthz").await;
        if h["crm"]["index"].as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["state"] == "ready")) {
            return h;
        }
        assert!(tokio::time::Instant::now() < deadline, "the local index never got ready: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn outbox_settled(t: &TestApp, delivered: u64, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (_, h) = t.get("/healthz").await;
        if h["outbox"]["delivered"] == delivered && h["outbox"]["pending"] == 0 {
            return h;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not settle at {delivered} delivered: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dynamics_contact_is_popped_from_the_local_index_and_gets_one_phone_call() {
    let crm = DataverseServer::start().await.expect("dataverse test server");
    let account = crm.insert("accounts", json!({"name": "Analytical Engines", "telephone1": "+1 415 555 0000"}));
    let ada = crm.insert("contacts", person("Ada", "Lovelace", json!({"telephone1": "(415) 555-0101", "_parentcustomerid_value": account})));
    let t = hub(&crm, "").await;
    let h = index_ready(&t).await;
    let contacts = h["crm"]["index"].as_array().and_then(|a| a.iter().find(|e| e["entity"] == "contact")).cloned().expect("contact index");
    assert_eq!(contacts["records"], 1, "{h}");
    assert!(contacts["age_secs"].as_u64().is_some_and(|a| a < 10), "the index's age is shown: {h}");

    // A contact added in Dynamics reaches the index through change tracking.
    let grace = crm.insert("contacts", person("Grace", "Hopper", json!({"mobilephone": "+1 415-555-0102"})));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = t.get("/healthz").await;
        if h["crm"]["index"].as_array().and_then(|a| a.iter().find(|e| e["entity"] == "contact")).is_some_and(|e| e["records"] == 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new contact never reached the index: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    crm.clear_seen();
    let mut ws = t.agent("alice").await;
    next_of(&mut ws, "snapshot").await;
    t.cti(new_call("dv-1", "+14155550101", "alice")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["action"], "open", "{pop}");
    assert_eq!(pop["pop"]["record"]["id"], ada.as_str());
    assert_eq!(pop["pop"]["record"]["title"], "Ada Lovelace");
    assert!(pop["pop"]["record"]["display"].to_string().contains("Analytical Engines"), "the company shows: {pop}");
    assert!(
        !crm.seen().iter().any(|s| s.target.contains("/contacts?")),
        "the pop came from the local index, not from a query to Dataverse: {:?}",
        crm.seen().iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    let (_, grace_identified) = t.get("/api/v1/identify?address=4155550102").await;
    assert_eq!(grace_identified["identification"]["candidates"][0]["id"], grace.as_str(), "{grace_identified}");

    t.cti(answer("dv-1", "alice")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.cti(hangup("dv-1", "normalClearing")).await;
    let end = next_of(&mut ws, "end").await;
    let id = end["conversation"]["id"].as_str().expect("id").to_string();
    t.wrapup(&id, json!({"disposition": {"code": "sale", "category": "won"}, "notes": "Wants the blue one", "agent": "alice"})).await;
    let written = t.written("dv-1").await;

    let calls = crm.activities();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call[dv::ACTIVITY_KEY], format!("cxbridge-{id}"), "upserted by our key (with `:` replaced: Dataverse cannot address it in a URL)");
    assert_eq!(call["activityid"], written["memorialization"]["activity_id"]);
    assert_eq!(call["_regardingobjectid_value"], ada.as_str());
    assert_eq!(call["directioncode"], false, "inbound");
    assert_eq!(call["actualdurationminutes"], 1);
    assert!(call["description"].as_str().is_some_and(|d| d.contains("Wants the blue one") && d.contains("sale")), "{call}");
    let parties = call["phonecall_activity_parties"].as_array().expect("parties");
    let mask_of = |id: &str| parties.iter().find(|p| p["_partyid_value"] == id).map(|p| p["participationtypemask"].clone());
    assert_eq!(mask_of(&ada), Some(json!(1)), "the caller is the sender: {parties:?}");
    assert_eq!(mask_of(dv::AGENT_USER_ID), Some(json!(2)), "the agent is the recipient: {parties:?}");
    // Impersonated: Dataverse records the agent as creator and owner, the app user as the one acting for them.
    assert_eq!(call["_createdby_value"], dv::AGENT_USER_ID, "written on the agent's behalf: {call}");
    assert_eq!(call["_ownerid_value"], dv::AGENT_USER_ID, "{call}");
    assert_eq!(call["_createdonbehalfby_value"], dv::APP_USER_ID, "{call}");
    assert!(!call["description"].as_str().unwrap_or_default().contains("Transcript:"), "empty lines are left out: {call}");

    // A late summary patches the same phone call; PBX retries add nothing.
    t.post("/api/v1/events", json!({"type": "updated", "source": "cti", "conversation_id": "dv-1", "details": {"summary": "Quote sent"}})).await;
    for e in [new_call("dv-1", "+14155550101", "alice"), hangup("dv-1", "normalClearing")] {
        t.cti(e).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !crm.activities()[0]["description"].as_str().is_some_and(|d| d.contains("Quote sent")) {
        assert!(tokio::time::Instant::now() < deadline, "the summary never reached the phone call");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(crm.activities().len(), 1);
    close(ws).await;
}

#[tokio::test]
async fn while_dynamics_is_down_callers_are_still_popped_and_their_calls_written_later() {
    let crm = DataverseServer::start().await.expect("dataverse test server");
    let ada = crm.insert("contacts", person("Ada", "Down", json!({"telephone1": "+1 (415) 555-0111"})));
    let t = hub(&crm, "").await;
    index_ready(&t).await;
    crm.faults.down_for(Duration::from_secs(4));

    let mut ws = t.agent("alice").await;
    next_of(&mut ws, "snapshot").await;
    t.cti(new_call("down-1", "4155550111", "alice")).await;
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["pop"]["record"]["id"], ada.as_str(), "identified from the index while Dynamics is down: {pop}");
    t.cti(hangup("down-1", "cancel")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, pending) = t.get("/api/v1/outbox?state=pending").await;
    let item = &pending["items"][0];
    assert!(item["attempts"].as_u64().is_some_and(|a| a >= 1), "retried while down: {pending}");
    assert!(item["last_error"].as_str().is_some_and(|e| e.contains("503")), "the CRM's answer is shown: {pending}");
    let (_, h) = t.get("/healthz").await;
    assert_eq!(h["status"], "ok", "pending retries are not an outage of the hub: {h}");

    outbox_settled(&t, 1, Duration::from_secs(20)).await;
    assert_eq!(crm.activities().len(), 1, "written once Dynamics is back, exactly once");
    close(ws).await;
}

/// The contact entry of `/healthz`'s index, once `done` says it is what the test waits for.
async fn contact_index_until(t: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = t.get("/healthz").await;
        if let Some(e) = h["crm"]["index"].as_array().and_then(|a| a.iter().find(|e| e["entity"] == "contact")).filter(|e| done(e)) {
            return e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn after_more_than_a_week_offline_the_index_syncs_afresh_by_itself() {
    let crm = DataverseServer::start().await.expect("dataverse test server");
    let ada = crm.insert("contacts", person("Ada", "Stays", json!({"telephone1": "+1 415 555 0131"})));
    let gone = crm.insert("contacts", person("Gone", "Meanwhile", json!({"telephone1": "+1 415 555 0132"})));
    let t = hub(&crm, "").await;
    index_ready(&t).await;
    let (_, found) = t.get("/api/v1/identify?address=4155550132").await;
    assert_eq!(found["identification"]["candidates"][0]["id"], gone.as_str(), "{found}");

    // Dataverse out of reach while more than ExpireChangeTrackingInDays (7) pass; a contact
    // is deleted meanwhile.
    crm.faults.down_for(Duration::from_secs(3));
    crm.delete("contacts", &gone);
    crm.pass_days(8);
    contact_index_until(&t, "the sync never failed while Dataverse was down", |e| e["state"] == "failing").await;

    // Back: the stored delta link is refused as expired; the hub syncs the table afresh.
    let e = contact_index_until(&t, "the index never synced afresh", |e| e["state"] == "ready" && e["resync_reason"].is_string()).await;
    let reason = e["resync_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("0x80044352") && reason.contains("expired"), "{e}");
    assert!(e["resynced_at"].is_string() && e["last_error"].is_null(), "{e}");
    assert_eq!(e["records"], 1, "the contact deleted meanwhile left the index: {e}");
    let (_, gone_now) = t.get("/api/v1/identify?address=4155550132").await;
    assert!(gone_now["identification"]["candidates"].as_array().is_some_and(|c| c.is_empty()), "{gone_now}");
    let (_, stays) = t.get("/api/v1/identify?address=4155550131").await;
    assert_eq!(stays["identification"]["candidates"][0]["id"], ada.as_str(), "{stays}");

    // And it keeps following deltas with the new token.
    let grace = crm.insert("contacts", person("Grace", "After", json!({"telephone1": "+1 415 555 0133"})));
    contact_index_until(&t, "the new token was not followed", |e| e["records"] == 2).await;
    let (_, new) = t.get("/api/v1/identify?address=4155550133").await;
    assert_eq!(new["identification"]["candidates"][0]["id"], grace.as_str(), "{new}");
}

#[tokio::test]
async fn an_activity_dynamics_refuses_goes_dead_with_its_message_and_replays_once_fixed() {
    let crm = DataverseServer::start().await.expect("dataverse test server");
    crm.insert("contacts", person("Ada", "Refused", json!({"telephone1": "+1 415 555 0121"})));
    // The admin mapped a custom column the phonecall table does not have yet.
    let t = hub(
        &crm,
        r#"
[[memorialization.fields]]
target = "subject"
template = "Call {{customer.number}}"

[[memorialization.fields]]
target = "cxb_queue"
source = "queue"
"#,
    )
    .await;
    index_ready(&t).await;
    t.cti(new_call("dead-1", "+14155550121", "alice")).await;
    t.cti(hangup("dead-1", "cancel")).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let item = loop {
        let (_, dead) = t.get("/api/v1/outbox?state=dead").await;
        if let Some(item) = dead["items"].as_array().and_then(|a| a.first()).cloned() {
            break item;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refused activity never went dead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(item["attempts"], 1, "a refusal is not retried: {item}");
    let error = item["last_error"].as_str().expect("last_error");
    assert!(error.contains("cxb_queue") && error.contains("400"), "Dataverse's own words: {error}");
    let (_, h) = t.get("/healthz").await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["outbox"]["dead"], 1);
    assert!(crm.activities().is_empty());

    crm.add_column("phonecalls", "cxb_queue");
    let (s, _) = t.post(&format!("/api/v1/outbox/{}/replay", item["id"]), json!({})).await;
    assert_eq!(s, 200);
    outbox_settled(&t, 1, Duration::from_secs(10)).await;
    assert_eq!(crm.activities().len(), 1, "written after the replay, once");
}

/// 1,000 calls while Dynamics fails a third of its requests, loses some answers after
/// writing, and is down for a stretch: afterwards exactly one phone call per call.
#[tokio::test]
async fn chaos_one_thousand_calls_against_a_failing_dynamics_give_exactly_one_activity_each() {
    const CALLS: usize = 1000;
    let crm = DataverseServer::start().await.expect("dataverse test server");
    for i in 0..50 {
        crm.insert("contacts", person("Chaos", &format!("{i}"), json!({"telephone1": format!("+1 415 555 {:04}", 2000 + i)})));
    }
    let t = hub(&crm, "").await;
    index_ready(&t).await;
    crm.faults.fail_ratio(1.0 / 3.0);
    crm.faults.lose_answer_ratio(0.1);

    let started = std::time::Instant::now();
    let mut conversation_ids = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        if i == CALLS / 2 {
            crm.faults.down_for(Duration::from_secs(3));
        }
        let call = format!("chaos-{i}");
        let from = format!("+1415555{:04}", 2000 + (i % 60));
        let (s, _) = t.cti(new_call(&call, &from, "alice")).await;
        assert_eq!(s, 200);
        let (s, v) = t.cti(hangup(&call, "cancel")).await;
        assert_eq!(s, 200, "{v}");
    }
    for i in 0..CALLS {
        let (_, c) = t.get(&format!("/api/v1/conversations?external_id=chaos-{i}")).await;
        conversation_ids.push(c["conversations"][0]["id"].as_str().map(str::to_string).unwrap_or_else(|| panic!("call {i} unknown: {c}")));
    }
    let h = outbox_settled(&t, CALLS as u64, Duration::from_secs(240)).await;
    assert_eq!(h["outbox"]["dead"], 0, "{h}");
    assert!(crm.faults.injected() > 100, "the CRM really failed: {} injected failures", crm.faults.injected());

    let mut per_key: HashMap<String, usize> = HashMap::new();
    for a in crm.activities() {
        *per_key.entry(a[dv::ACTIVITY_KEY].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let duplicated: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicates: {duplicated:?}");
    let missing: Vec<_> = conversation_ids.iter().filter(|id| !per_key.contains_key(&format!("cxbridge-{id}"))).collect();
    assert!(missing.is_empty(), "{} calls have no activity, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(per_key.len(), CALLS);
    eprintln!("chaos: {CALLS} calls, {} injected failures, {} batches, settled in {:?}", crm.faults.injected(), crm.batches(), started.elapsed());
}
