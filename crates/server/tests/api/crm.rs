//! The built-in CRM over REST, and CSV import.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn records_can_be_created_found_in_any_notation_updated_and_deleted() {
    let t = spawn_with("[phone]\ndefault_region = \"CZ\"\n").await;
    let acme = t.create("account", json!({"name": "Acme s.r.o.", "phone": "+420 222 111 000"})).await;
    let id = t.create("contact", json!({"name": "Jana", "phone": "602/123 456", "account_id": acme, "age": 41})).await;
    for notation in ["%2B420%20602%20123%20456", "00420602123456", "602.123.456", "tel:%2B420-602-123-456"] {
        let (s, v) = t.get(&format!("/api/v1/crm/contact?phone={notation}")).await;
        assert_eq!(s, 200);
        assert_eq!(v["records"].as_array().expect("records").len(), 1, "{notation}: {v}");
    }
    let (_, v) = t.get(&format!("/api/v1/crm/contact/{id}")).await;
    assert_eq!(v["fields"]["age"], "41");
    let (_, v) = t.get(&format!("/api/v1/crm/contact/{id}/related/account")).await;
    assert_eq!(v["id"], acme.as_str());
    let (s, v) = t.patch(&format!("/api/v1/crm/contact/{id}"), json!({"phone": "+420 777 000 111"})).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = t.get("/api/v1/crm/contact?phone=602123456").await;
    assert_eq!(v["records"], json!([]), "the old number is gone from the index");
    let (_, v) = t.get("/api/v1/crm/contact?q=jana").await;
    assert_eq!(v["records"].as_array().expect("records").len(), 1);
    let (_, v) = t.get(&format!("/api/v1/crm/contact?account_id={acme}")).await;
    assert_eq!(v["records"].as_array().expect("records").len(), 1);

    let r = t.http.delete(t.url(&format!("/api/v1/crm/contact/{id}"))).bearer_auth(ADMIN).send().await.expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    let (s, v) = t.get(&format!("/api/v1/crm/contact/{id}")).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn bad_crm_requests_get_problems_and_change_nothing() {
    let t = spawn().await;
    let (s, v) = t.post("/api/v1/crm/spaceship", json!({"name": "x"})).await;
    assert_eq!(s, 404);
    assert!(v["detail"].as_str().expect("detail").contains("spaceship"));
    let (s, v) = t.post("/api/v1/crm/contact", json!({"name": {"nested": true}})).await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = t.post("/api/v1/crm/contact", json!(["not", "an", "object"])).await;
    assert_eq!(s, 422);
    let (s, v) = t.post("/api/v1/crm/contact", json!({"bad name!": "x"})).await;
    assert_eq!(s, 422, "{v}");
    t.create("contact", json!({"id": "c1", "name": "One"})).await;
    let (s, v) = t.post("/api/v1/crm/contact", json!({"id": "c1", "name": "Two"})).await;
    assert_eq!(s, 422, "{v}");
    let (_, v) = t.get("/api/v1/crm/contact/c1").await;
    assert_eq!(v["fields"]["name"], "One");
    let r = t.http.get(t.url("/api/v1/crm/contact")).send().await.expect("no token");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

fn importer(t: &TestApp, options: cxbridge_server::import::ImportOptions) -> cxbridge_server::import::Importer {
    cxbridge_server::import::Importer::new(&t.app.config, "contact", options).expect("importer")
}

#[tokio::test]
async fn csv_import_reports_bad_rows_by_line_and_keeps_good_ones() {
    let t = spawn().await;
    let csv = "id,name,phone\nc1,Ada,030 1234567\nc2,Bob\n,,\nc3,Cy,+49 40 7654321\n";
    let mut progress = vec![];
    let report = importer(&t, Default::default()).run(t.app.crm_store.as_ref(), csv.as_bytes(), |n| progress.push(n)).await.expect("import");
    assert_eq!(report.imported, 2);
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4], "{:?}", report.errors);
    assert!(report.errors[0].message.contains("2 fields, the header row 3"), "{:?}", report.errors);
    assert_eq!(progress.last(), Some(&2));
    let (_, v) = t.get("/api/v1/crm/contact?phone=%2B49407654321").await;
    assert_eq!(v["records"][0]["id"], "c3");
}

#[tokio::test]
async fn csv_import_refuses_a_misspelled_column_and_stores_nothing() {
    let t = spawn().await;
    let csv = "id,name,phnoe\nc1,Ada,030 1234567\n";
    let report = importer(&t, Default::default()).run(t.app.crm_store.as_ref(), csv.as_bytes(), |_| {}).await.expect("import");
    assert_eq!(report.imported, 0);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].line, 1);
    assert!(report.errors[0].message.contains("did you mean `phone`"), "{:?}", report.errors);
    let (_, v) = t.get("/api/v1/crm/contact/c1").await;
    assert_ne!(v["fields"]["name"], "Ada", "nothing of the file is stored: {v}");
    // Named on the command line, the column is taken as it is; a capitalised header is the field.
    let options = cxbridge_server::import::ImportOptions { extra_fields: vec!["phnoe".into()], ..Default::default() };
    let report = importer(&t, options).run(t.app.crm_store.as_ref(), "id,Name,phnoe\nc1,Ada,x\n".as_bytes(), |_| {}).await.expect("import");
    assert_eq!((report.imported, report.errors.len()), (1, 0), "{:?}", report.errors);
    let (_, v) = t.get("/api/v1/crm/contact/c1").await;
    assert_eq!(v["fields"]["name"], "Ada", "{v}");
}

#[tokio::test]
async fn csv_import_of_rows_without_id_updates_them_on_a_rerun() {
    let t = spawn().await;
    // A German spreadsheet export: semicolons, a comma inside a value, the number written twice
    // two ways; two people behind one switchboard number stay two records.
    let first = "Name;Phone;company\nAda Lovelace;030 1234567;Acme, Inc\nGrace Hopper;+49 30 7654321;Navy\nAlan Turing;+49 30 7654321;\n;;\n";
    let report = importer(&t, Default::default()).run(t.app.crm_store.as_ref(), first.as_bytes(), |_| {}).await.expect("import");
    assert_eq!(report.delimiter, cxbridge_server::import::Delimiter::Semicolon);
    assert_eq!(report.imported, 3, "{:?}", report.errors);
    let again = "Name;Phone;company\nAda Lovelace;+49 30 1234567;Acme Rockets\nGrace Hopper;+49 30 7654321;Navy\nAlan Turing;+4930 7654321;\n";
    let report = importer(&t, Default::default()).run(t.app.crm_store.as_ref(), again.as_bytes(), |_| {}).await.expect("import");
    assert_eq!((report.imported, report.errors.len()), (3, 0), "{:?}", report.errors);
    let (_, v) = t.get("/api/v1/crm/contact?phone=%2B49301234567").await;
    let records = v["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 1, "the re-run updated Ada instead of adding her again: {v}");
    assert_eq!(records[0]["fields"]["company"], "Acme Rockets");
    let (_, v) = t.get("/api/v1/crm/contact?phone=%2B49307654321").await;
    assert_eq!(v["records"].as_array().map(Vec::len), Some(2), "Grace and Alan share a number and stay two: {v}");
}

#[tokio::test]
async fn custom_entities_from_config_identify_callers_and_take_tasks() {
    let t = spawn_with(
        r#"
[phone]
default_region = "GB"
[[crm.entities]]
name = "contact"
phone_fields = ["phone"]
display_fields = [{ label = "Name", field = "name" }]
relations = [{ name = "site", field = "site_id", entity = "site" }]
[[crm.entities]]
name = "site"
title_field = "site_name"
phone_fields = ["hotline"]
display_fields = [{ label = "Site", field = "site_name" }, { label = "Postcode", field = "postcode" }]
"#,
    )
    .await;
    let site = t.create("site", json!({"site_name": "Leeds depot", "hotline": "0113 496 0000", "postcode": "LS1"})).await;
    let (s, v) = t.post("/api/v1/crm/lead", json!({"name": "x"})).await;
    assert_eq!(s, 404, "lead is not declared here: {v}");
    let (_, v) = t.get("/api/v1/identify?address=%2B44%20113%20496%200000").await;
    assert_eq!(v["identification"]["outcome"], "single");
    assert_eq!(v["identification"]["candidates"][0]["title"], "Leeds depot");
    assert_eq!(v["identification"]["candidates"][0]["display"][1], json!({"label": "Postcode", "value": "LS1"}));

    let task = json!({"key": "task-1", "kind": "task", "regarding": [{"entity": "site", "id": site}], "fields": {"subject": "Call back"}});
    let (s, a) = t.post("/api/v1/activities", task.clone()).await;
    assert_eq!(s, 201, "{a}");
    let (s, b) = t.post("/api/v1/activities", task).await;
    assert_eq!(s, 201);
    assert_eq!(a["id"], b["id"], "the same key is the same activity");
    let acts = t.activities_of("site", &site).await;
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0]["kind"], "task");
    let (s, _) = t.post("/api/v1/activities", json!({"kind": "task", "regarding": [{"entity": "site", "id": "missing"}]})).await;
    assert_eq!(s, 422);
}
