//! Named workflows from config, on the built-in CRM (the external CRMs run the same route in
//! the CRM tests).

use serde_json::json;

use crate::helpers::*;

const WORKFLOWS: &str = r#"
[phone]
default_region = "DE"

[[workflows]]
name = "find_contact"
action = "search"
entity = "contact"

[[workflows]]
name = "new_lead"
action = "create"
entity = "lead"
required = ["name", "phone"]
allowed = ["name", "phone", "company"]
fields = { source = "hotline" }

[[workflows]]
name = "edit_contact"
action = "update"
entity = "contact"
allowed = ["email"]

[[workflows]]
name = "contact_history"
action = "timeline"
entity = "contact"
limit = 5
"#;

#[tokio::test]
async fn workflows_search_create_update_and_show_the_timeline() {
    let t = spawn_with(WORKFLOWS).await;
    let ada = t.create("contact", json!({"name": "Ada Lovelace", "phone": "030 1234567"})).await;
    t.create("contact", json!({"name": "Charles Babbage", "phone": "030 7654321"})).await;

    let (s, list) = t.get("/api/v1/workflows").await;
    assert_eq!(s, 200);
    assert_eq!(list["workflows"].as_array().map(Vec::len), Some(4));

    let (s, found) = t.post("/api/v1/workflows/find_contact", json!({"text": "lovelace"})).await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(found["records"][0]["id"], ada.as_str());
    assert_eq!(found["records"][0]["fields"]["phone"], "030 1234567", "workflow results carry every field");

    let (s, created) = t.post("/api/v1/workflows/new_lead", json!({"fields": {"name": "Grace Hopper", "phone": "+49 30 5550100"}})).await;
    assert_eq!(s, 200, "{created}");
    let lead = &created["records"][0];
    assert_eq!(lead["entity"], "lead");
    assert_eq!(lead["fields"]["source"], "hotline", "the workflow's own fields are set");
    let (_, identified) = t.get("/api/v1/identify?address=%2B4930-555-0100").await;
    assert_eq!(identified["identification"]["outcome"], "single", "a created record is found by its number at once: {identified}");

    let (s, missing) = t.post("/api/v1/workflows/new_lead", json!({"fields": {"name": "No Phone"}})).await;
    assert_eq!(s, 422);
    assert!(missing["detail"].as_str().is_some_and(|d| d.contains("phone")), "{missing}");
    let (s, refused) = t.post("/api/v1/workflows/new_lead", json!({"fields": {"name": "X", "phone": "1", "salary": "1"}})).await;
    assert_eq!(s, 422);
    assert!(refused["detail"].as_str().is_some_and(|d| d.contains("salary")), "{refused}");
    let leads_after = t.get("/api/v1/crm/lead?q=No").await.1;
    assert_eq!(leads_after["records"].as_array().map(Vec::len), Some(0), "a refused workflow changes nothing");

    let (s, updated) = t.post("/api/v1/workflows/edit_contact", json!({"id": ada, "fields": {"email": "ada@example.org"}})).await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["records"][0]["fields"]["email"], "ada@example.org");
    assert_eq!(updated["records"][0]["fields"]["name"], "Ada Lovelace");
    let (s, _) = t.post("/api/v1/workflows/edit_contact", json!({"id": "nope", "fields": {"email": "x"}})).await;
    assert_eq!(s, 422, "updating a record that does not exist is refused");

    // A call with Ada, wrapped up: her timeline shows it.
    t.cti(json!({"event": "newCall", "direction": "in", "from": "+49301234567", "to": "+4930999", "callId": "wf-1", "user": ["alice"]})).await;
    t.cti(json!({"event": "hangup", "callId": "wf-1", "cause": "cancel", "direction": "in", "from": "+49301234567", "to": "+4930999"})).await;
    t.written("wf-1").await;
    let (s, history) = t.post("/api/v1/workflows/contact_history", json!({"id": ada})).await;
    assert_eq!(s, 200, "{history}");
    assert_eq!(history["timeline"].as_array().map(Vec::len), Some(1), "{history}");
    assert!(history["timeline"][0]["subject"].as_str().is_some_and(|s| s.contains("+49301234567")), "{history}");

    let (s, unknown) = t.post("/api/v1/workflows/nope", json!({})).await;
    assert_eq!(s, 404);
    assert!(unknown["detail"].as_str().is_some_and(|d| d.contains("find_contact")), "names the configured ones: {unknown}");
    let (s, _) = t.post("/api/v1/workflows/find_contact", json!({"bogus": 1})).await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn workflows_are_checked_when_the_config_is_read() {
    let cases = [
        ("[[workflows]]\nname = \"a\"\naction = \"delete\"\nentity = \"contact\"\n", "action must be one of"),
        ("[[workflows]]\nname = \"a\"\naction = \"search\"\nentity = \"ticket\"\n", "entity `ticket`"),
        ("[[workflows]]\nname = \"a\"\naction = \"search\"\nentity = \"contact\"\n[[workflows]]\nname = \"a\"\naction = \"create\"\nentity = \"lead\"\n", "declared twice"),
        ("[crm]\nprovider = \"hubspot\"\n", "provider must be one of"),
    ];
    for (text, want) in cases {
        let err = cxbridge_server::config::Config::parse(text, std::path::Path::new("c.toml")).expect_err(want).to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[tokio::test]
async fn health_names_the_crm() {
    let t = spawn().await;
    let (s, h) = t.get("/healthz").await;
    assert_eq!(s, 200);
    assert_eq!(h["crm"]["provider"], "builtin");
    assert!(h["crm"].get("index").is_none(), "the built-in CRM needs no local index: {h}");
}

#[tokio::test]
async fn the_text_search_matches_values_never_json_nor_sensitive_fields() {
    let t = spawn_with(&format!("{WORKFLOWS}\n[ivr.verify]\nfields = {{ pin = \"pin\" }}\n")).await;
    let ada = t.create("contact", json!({"name": "Ada Lovelace", "phone": "030 1234567", "pin": "98765"})).await;
    let (s, found) = t.post("/api/v1/workflows/find_contact", json!({"text": "lovelace"})).await;
    assert_eq!((s, found["records"][0]["id"].as_str()), (200, Some(ada.as_str())), "{found}");
    for text in ["9876", "98765", "pin", "\"pin\":\"98", "\"name\"", "\":\"", "{\""] {
        let (s, found) = t.post("/api/v1/workflows/find_contact", json!({"text": text})).await;
        assert_eq!((s, found["records"].as_array().map(Vec::len)), (200, Some(0)), "`{text}` must find nothing: {found}");
        let (s, listed) = t.get(&format!("/api/v1/crm/contact?q={}", urlencode(text))).await;
        assert_eq!((s, listed["records"].as_array().map(Vec::len)), (200, Some(0)), "`{text}` in the CRM API: {listed}");
    }
    let (s, v) = t.post("/api/v1/workflows/find_contact", json!({"fields": {"pin": "98765"}})).await;
    assert_eq!(s, 422, "a sensitive field is no search filter: {v}");
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

const SENSITIVE: &str = r#"
[phone]
default_region = "DE"
[[crm.entities]]
name = "contact"
phone_fields = ["phone"]
display_fields = [{ label = "Name", field = "name" }, { label = "Born", field = "birthday" }]
sensitive = ["birthday"]
[[workflows]]
name = "find_contact"
action = "search"
entity = "contact"
"#;

#[tokio::test]
async fn an_entitys_own_sensitive_fields_are_neither_shown_nor_searched() {
    let t = spawn_with(SENSITIVE).await;
    t.create("contact", json!({"name": "Ada", "phone": "030 1234567", "birthday": "1815-12-10"})).await;
    let (_, found) = t.post("/api/v1/workflows/find_contact", json!({"text": "ada"})).await;
    assert_eq!(found["records"].as_array().map(Vec::len), Some(1), "{found}");
    assert!(!found.to_string().contains("1815"), "neither a field nor a display value: {found}");
    let (_, found) = t.post("/api/v1/workflows/find_contact", json!({"text": "1815"})).await;
    assert_eq!(found["records"].as_array().map(Vec::len), Some(0), "{found}");
    let (_, identified) = t.get("/api/v1/identify?address=%2B49301234567").await;
    assert!(!identified.to_string().contains("1815"), "{identified}");
}
