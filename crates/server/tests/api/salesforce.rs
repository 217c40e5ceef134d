//! Salesforce as the CRM, against the Salesforce wire-format test server (crates/testkit):
//! the pop from the local index and the Task written by external id, once per call.

use std::time::Duration;

use cxbridge_testkit::salesforce::{self as sf, SalesforceServer};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_salesforce_contact_is_popped_and_each_call_becomes_one_task() {
    let crm = SalesforceServer::start().await.expect("salesforce test server");
    let account = crm.insert("Account", json!({"Name": "Analytical Engines", "Phone": "+1 415 555 0300"}));
    let ada = crm.insert("Contact", json!({"FirstName": "Ada", "LastName": "Lovelace", "Phone": "(415) 555-0301", "AccountId": account}));
    let t = spawn_with(&format!(
        r#"
[phone]
default_region = "US"

[crm]
provider = "salesforce"
sync_interval_secs = 1

[crm.salesforce]
login_url = "{login}"
client_id = "{client}"
client_secret = "{secret}"

[[agents]]
id = "alice"
crm_user_id = "{owner}"

[outbox]
initial_delay_ms = 50
max_delay_secs = 1
"#,
        login = crm.login_url,
        client = sf::CLIENT_ID,
        secret = sf::CLIENT_SECRET,
        owner = sf::INTEGRATION_USER,
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = t.get("/healthz").await;
        if h["crm"]["index"].as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["state"] == "ready")) {
            assert_eq!(h["crm"]["provider"], "salesforce");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the local index never got ready: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut ws = t.agent("alice").await;
    next_of(&mut ws, "snapshot").await;
    for call in ["sf-1", "sf-2"] {
        t.cti(new_call(call, "+1-415-555-0301", "alice")).await;
        let pop = next_of(&mut ws, "pop").await;
        assert_eq!(pop["pop"]["action"], "open", "{pop}");
        assert_eq!(pop["pop"]["record"]["id"], ada.as_str());
        t.cti(answer(call, "alice")).await;
        t.cti(hangup(call, "normalClearing")).await;
        let end = next_of(&mut ws, "end").await;
        let id = end["conversation"]["id"].as_str().expect("id").to_string();
        let (s, _) = t.wrapup(&id, json!({"disposition": {"code": "support"}, "notes": format!("note of {call}"), "agent": "alice"})).await;
        assert_eq!(s, 200);
        t.written(call).await;
    }
    // PBX retries of the first call write nothing new.
    t.cti(hangup("sf-1", "normalClearing")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for task in &tasks {
        assert_eq!(task["WhoId"], ada.as_str(), "{task}");
        assert_eq!(task["WhatId"], serde_json::Value::Null, "a contact goes in WhoId only: {task}");
        assert_eq!(task["CallType"], "Inbound");
        assert_eq!(task["CallDisposition"], "support");
        assert_eq!(task["OwnerId"], sf::INTEGRATION_USER);
        assert!(task[sf::DEFAULT_EXTERNAL_ID_FIELD].as_str().is_some_and(|k| k.starts_with("cxbridge:")), "{task}");
    }
    assert_ne!(tasks[0][sf::DEFAULT_EXTERNAL_ID_FIELD], tasks[1][sf::DEFAULT_EXTERNAL_ID_FIELD]);
    close(ws).await;
}
