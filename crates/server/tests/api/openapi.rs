//! The API description a client generator reads, and the errors the framework itself answers.
//! (schemathesis, run by scripts/test, checks the running hub against the document too.)

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

async fn document(t: &TestApp) -> Value {
    let (s, doc) = t.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    doc
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = vec![];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_document_declares_every_parameter_where_it_is_and_every_error_as_a_problem() {
    let t = spawn().await;
    let doc = document(&t).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let name = format!("{} {path}", method.to_uppercase());
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: BTreeSet<String> = params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str().map(str::to_string)).collect();
        let templated: BTreeSet<String> = path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).map(str::to_string).collect();
        assert_eq!(in_path, templated, "{name}: path parameters are exactly the template's");
        for p in &params {
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{name}: {p}");
            }
        }
        let tags = op["tags"].as_array().expect("tags");
        assert!(tags.len() == 1 && !tags[0].as_str().unwrap_or("::").contains("::"), "{name}: tags name capabilities: {tags:?}");
        let id = op["operationId"].as_str().expect("operationId").to_string();
        assert!(ids.insert(id.clone()), "{name}: operation id `{id}` is used twice");
        for (status, response) in op["responses"].as_object().expect("responses") {
            if status.parse::<u16>().is_ok_and(|s| s >= 400) {
                let content = response["content"].as_object().expect("content");
                assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{name} {status}");
            }
        }
        if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
            assert!(op["responses"].get("401").is_some(), "{name}: 401 documented");
        }
    }
    let query_params = |path: &str, method: &str| -> Vec<(String, bool)> {
        doc["paths"][path][method]["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query").map(|p| (p["name"].as_str().unwrap_or("").to_string(), p["required"] == true)).collect()
    };
    assert_eq!(query_params("/api/v1/identify", "get")[0], ("address".to_string(), true));
    assert!(query_params("/api/v1/identify", "get").iter().skip(1).all(|(_, required)| !required), "optional ones are optional");
    assert!(query_params("/api/v1/ivr/lookup", "get").contains(&("format".to_string(), false)));
    let format = doc["paths"]["/api/v1/ivr/lookup"]["get"]["parameters"].as_array().expect("params").iter().find(|p| p["name"] == "format").expect("format")["schema"]["enum"].clone();
    assert_eq!(format, serde_json::json!(["json", "flat", "text", "zammad", "sipgate", "jambonz"]));
    for path in ["/api/v1/cti/{token}", "/api/v1/sipgate/{token}", "/api/v1/sipgate/{token}/{direction}", "/api/v1/ivr/jambonz", "/api/v1/ivr/{token}/lookup"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is described");
    }
}

#[tokio::test]
async fn authentication_is_checked_before_the_query() {
    let t = spawn().await;
    for path in ["/api/v1/identify", "/api/v1/identify?nonsense=1", "/api/v1/conversations", "/api/v1/outbox?limit=x", "/api/v1/ivr/lookup", "/api/v1/ivr/verifications?limit=-1"] {
        let r = t.http.get(t.url(path)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
    }
    // With the token, the query's faults are named.
    let (s, v) = t.get("/api/v1/identify").await;
    assert_eq!(s, 400, "{v}");
    assert!(v["detail"].as_str().unwrap_or("").contains("address"), "{v}");
    let (s, v) = t.get("/api/v1/outbox?limit=5000").await;
    assert_eq!(s, 422, "limits are bounded as documented: {v}");
}

#[tokio::test]
async fn the_frameworks_own_refusals_are_problems_too() {
    let t = spawn().await;
    let problem = |r: &reqwest::Response| r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    // 405: a path that exists, with a method it does not take.
    let r = t.http.delete(t.url("/healthz")).send().await.expect("delete");
    assert_eq!((r.status().as_u16(), problem(&r).as_deref()), (405, Some("application/problem+json")));
    assert!(r.headers().get("allow").is_some(), "Allow is kept");
    let v: Value = r.json().await.expect("json");
    assert!(v["detail"].as_str().unwrap_or("").contains("Allow"), "{v}");
    // 413: over the 2 MiB body limit.
    let r = t.http.post(t.url(&format!("/api/v1/cti/{CTI}"))).header("content-type", "application/json").body(vec![b' '; 3 * 1024 * 1024]).send().await.expect("post");
    assert_eq!((r.status().as_u16(), problem(&r).as_deref()), (413, Some("application/problem+json")));
    // 414 and 431: long URIs and header blocks, refused before hyper's own (bodiless) limits.
    let r = t.http.get(t.url(&format!("/api/v1/identify?address={}", "1".repeat(20_000)))).bearer_auth(ADMIN).send().await.expect("get");
    assert_eq!((r.status().as_u16(), problem(&r).as_deref()), (414, Some("application/problem+json")));
    let r = t.http.get(t.url("/healthz")).header("x-filler", "x".repeat(40_000)).send().await.expect("get");
    assert_eq!((r.status().as_u16(), problem(&r).as_deref()), (431, Some("application/problem+json")));
    // None of them stored anything, and the hub answers on.
    let (s, _) = t.get("/healthz").await;
    assert_eq!(s, 200);
}
