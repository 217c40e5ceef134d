//! The agent panel's server side: sign-in and the session cookie, what an agent may see and
//! do, choosing/pinning/creating records, the customer card, wrap-up codes, supervisors.
//! (The panel itself is driven in Chromium by `crates/server/tests/browser/`.)

use std::time::Duration;

use reqwest::header::{COOKIE, HeaderMap, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::*;

const AGENTS: &str = r#"
[phone]
default_region = "DE"
[[agents]]
id = "alice"
name = "Alice Example"
cti_users = ["alice"]
token = "alice-token"
supervisor = true
[[agents]]
id = "bob"
cti_users = ["bob"]
token = "bob-token"
[[wrapup_codes]]
code = "sale"
label = "Sale"
category = "Sales"
[[wrapup_codes]]
code = "solved"
category = "Support"
"#;

/// An agent's browser: the session cookie and the CSRF token, nothing else.
struct Panel {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

async fn sign_in(t: &TestApp, agent: &str, password: &str) -> Result<Panel, (u16, Value, HeaderMap)> {
    let r = t.http.post(t.url("/api/v1/session")).json(&json!({"agent": agent, "password": password})).send().await.expect("sign in");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err((status, body, headers));
    }
    let set = headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).expect("a cookie is set").to_string();
    let cookie = set.split(';').next().expect("name=value").to_string();
    Ok(Panel { http: t.http.clone(), base: t.url(""), cookie, csrf: body["csrf_token"].as_str().expect("csrf").to_string() })
}

impl Panel {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>, csrf: bool) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).header(COOKIE, &self.cookie);
        if csrf {
            r = r.header("x-csrf-token", &self.csrf);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None, false).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body), true).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body), true).await
    }
    async fn stream(&self, agent: &str) -> Result<Ws, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("{}/api/v1/agents/{agent}/stream", self.base.replace("http://", "ws://")).into_client_request().expect("ws request");
        req.headers_mut().insert(COOKIE, self.cookie.parse().expect("cookie header"));
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("stream: {e}"),
        }
    }
}

async fn offered(t: &TestApp, call: &str, from: &str, agent: &str) -> String {
    let (s, v) = t.cti(new_call(call, from, agent)).await;
    assert_eq!(s, 200, "{v}");
    t.conversation_by_call(call).await["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn agents_sign_in_with_a_password_or_token_and_wrong_ones_are_refused_alike() {
    let hash = cxbridge_server::http::session::hash_password("correct horse battery").expect("hash");
    let t = spawn_with(&format!("{AGENTS}\n[[agents]]\nid = \"carol\"\npassword_hash = \"{hash}\"\n")).await;
    let carol = sign_in(&t, "carol", "correct horse battery").await.expect("password signs in");
    let (s, me) = carol.get("/api/v1/session").await;
    assert_eq!((s, me["agent"].as_str(), me["supervisor"].as_bool()), (200, Some("carol"), Some(false)));
    assert!(sign_in(&t, "alice", "alice-token").await.is_ok(), "a token signs in too");

    let (s1, wrong, _) = sign_in(&t, "carol", "Correct horse battery").await.err().expect("wrong password");
    let (s2, unknown, _) = sign_in(&t, "mallory", "correct horse battery").await.err().expect("unknown agent");
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong["detail"], unknown["detail"], "the answer never tells whether the agent exists");
    for _ in 0..4 {
        let _ = sign_in(&t, "carol", "guess").await;
    }
    let (s, body, headers) = sign_in(&t, "carol", "correct horse battery").await.err().expect("locked out");
    assert_eq!(s, 429, "{body}");
    assert!(headers.get("retry-after").is_some(), "says when to come back");
    assert!(sign_in(&t, "alice", "alice-token").await.is_ok(), "other agents are not locked out");
}

#[tokio::test]
async fn the_session_is_an_http_only_cookie_and_changes_need_the_csrf_token() {
    let t = spawn_with(AGENTS).await;
    let r = t.http.post(t.url("/api/v1/session")).json(&json!({"agent": "alice", "password": "alice-token"})).send().await.expect("sign in");
    let cookie = r.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Max-Age=43200"), "{cookie}");
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let id = offered(&t, "p-csrf", "+49 30 1234567", "alice").await;

    let (s, v) = alice.send(reqwest::Method::PUT, &format!("/api/v1/conversations/{id}/links"), Some(json!({"pinned": []})), false).await;
    assert_eq!(s, 403, "no CSRF token: {v}");
    assert!(v["detail"].as_str().unwrap_or("").contains("X-CSRF-Token"), "{v}");
    let forged = t
        .http
        .put(t.url(&format!("/api/v1/conversations/{id}/links")))
        .header(COOKIE, &alice.cookie)
        .header("x-csrf-token", &alice.csrf)
        .header(ORIGIN, "https://evil.example")
        .json(&json!({"pinned": []}))
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 403, "another site's page cannot act with the cookie");
    let (s, _) = alice.put(&format!("/api/v1/conversations/{id}/links"), json!({"pinned": []})).await;
    assert_eq!(s, 200);

    let (s, _) = t.http.get(t.url("/api/v1/panel")).send().await.map(|r| (r.status().as_u16(), ())).expect("panel");
    assert_eq!(s, 401, "no cookie, no panel");
    let out = t.http.delete(t.url("/api/v1/session")).header(COOKIE, &alice.cookie).header("x-csrf-token", &alice.csrf).send().await.expect("sign out");
    assert_eq!(out.status(), 204);
    assert!(out.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("Max-Age=0")), "the cookie is cleared");
    assert_eq!(alice.get("/api/v1/session").await.0, 401, "a copy of the cookie is void after sign-out");
    assert!(matches!(alice.stream("alice").await, Err(401)), "and opens no stream");
    let again = sign_in(&t, "alice", "alice-token").await.expect("signing in again works at once");
    assert_eq!(again.get("/api/v1/session").await.0, 200);
}

#[tokio::test]
async fn an_agent_sees_only_their_own_conversations_and_stream() {
    let t = spawn_with(AGENTS).await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let bob = sign_in(&t, "bob", "bob-token").await.expect("bob");
    assert!(matches!(bob.stream("alice").await, Err(403)), "bob cannot open alice's stream");
    let mut stream = alice.stream("alice").await.expect("alice's own stream");
    assert_eq!(next_of(&mut stream, "snapshot").await["agent"], "alice");

    let id = offered(&t, "p-own", "+49 30 1234567", "alice").await;
    let pop = next_of(&mut stream, "pop").await;
    assert_eq!(pop["conversation"]["id"], id.as_str());
    assert_eq!(alice.get(&format!("/api/v1/conversations/{id}")).await.0, 200);
    for (what, status) in [
        ("read", bob.get(&format!("/api/v1/conversations/{id}")).await.0),
        ("card", bob.get(&format!("/api/v1/conversations/{id}/related")).await.0),
        ("wrap up", bob.post(&format!("/api/v1/conversations/{id}/wrapup"), json!({"notes": "mine now"})).await.0),
        ("link", bob.put(&format!("/api/v1/conversations/{id}/links"), json!({"pinned": []})).await.0),
    ] {
        assert_eq!(status, 403, "bob may not {what} alice's conversation");
    }
    assert_eq!(bob.get("/api/v1/outbox").await.0, 403, "the outbox is for admins");
    let unsigned = t.http.get(t.url(&format!("/api/v1/conversations/{id}"))).send().await.expect("get");
    assert_eq!(unsigned.status(), 401);
    close(stream).await;
}

#[tokio::test]
async fn choosing_pinning_and_wrapping_up_from_the_panel_writes_the_activity_to_those_records() {
    let t = spawn_with(AGENTS).await;
    let grace = t.create("contact", json!({"name": "Grace", "phone": "+49 30 5550199"})).await;
    let alan = t.create("contact", json!({"name": "Alan", "phone": "030 5550199"})).await;
    let account = t.create("account", json!({"name": "Acme"})).await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let id = offered(&t, "p-pick", "+49 30 5550199", "alice").await;

    let (s, v) = alice.put(&format!("/api/v1/conversations/{id}/links"), json!({"selected": {"entity": "contact", "id": "nobody"}})).await;
    assert_eq!(s, 403, "only the conversation's own records: {v}");
    // An admin links any record that exists (here the account, which did not match).
    let admin_links = |body: Value| t.http.put(t.url(&format!("/api/v1/conversations/{id}/links"))).bearer_auth(ADMIN).json(&body).send();
    let r = admin_links(json!({"selected": {"entity": "contact", "id": "nobody"}})).await.expect("admin links");
    assert_eq!(r.status().as_u16(), 422, "a record that does not exist");
    let r = admin_links(json!({"pinned": [{"entity": "account", "id": account}]})).await.expect("admin links");
    assert_eq!(r.status().as_u16(), 200);
    let (s, c) = alice
        .put(&format!("/api/v1/conversations/{id}/links"), json!({"selected": {"entity": "contact", "id": alan}, "pinned": [{"entity": "account", "id": account}, {"entity": "contact", "id": grace}]}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["selected"]["id"], alan.as_str());
    // Unpin Grace: the whole list is sent; the selection stays.
    let (_, c) = alice.put(&format!("/api/v1/conversations/{id}/links"), json!({"pinned": [{"entity": "account", "id": account}]})).await;
    assert_eq!((c["selected"]["id"].as_str(), c["pinned"].as_array().map(Vec::len)), (Some(alan.as_str()), Some(1)));

    let (_, card) = alice.get(&format!("/api/v1/conversations/{id}/related")).await;
    let titles: Vec<&str> = card["records"].as_array().expect("records").iter().filter_map(|r| r["title"].as_str()).collect();
    assert_eq!(titles, vec!["Alan", "Acme"], "selected first, then pinned");

    t.cti(answer("p-pick", "alice")).await;
    t.cti(hangup("p-pick", "normalClearing")).await;
    let (s, v) = alice.post(&format!("/api/v1/conversations/{id}/wrapup"), json!({"request_id": "w1", "disposition": {"code": "upsell"}})).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap_or("").contains("sale, solved"), "lists the codes: {v}");
    let (s, c) = alice.post(&format!("/api/v1/conversations/{id}/wrapup"), json!({"request_id": "w2", "agent": "bob", "disposition": {"code": "sale"}, "notes": "Wants two"})).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!((c["agent"].as_str(), c["disposition"]["category"].as_str()), (Some("alice"), Some("Sales")), "the session's agent; category from the code");
    t.written("p-pick").await;
    let on_alan = t.activities_of("contact", &alan).await;
    assert_eq!(on_alan.len(), 1);
    assert_eq!(on_alan[0]["fields"]["notes"], "Wants two");
    assert_eq!(t.activities_of("account", &account).await.len(), 1, "the pinned record has it too");
    assert!(t.activities_of("contact", &grace).await.is_empty(), "unpinned: nothing");
}

#[tokio::test]
async fn nobody_matching_the_agent_creates_the_record_and_the_card_shows_earlier_calls() {
    let t = spawn_with(AGENTS).await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let id = offered(&t, "p-new", "+49 30 7770000", "alice").await;
    let (s, v) = alice.post(&format!("/api/v1/conversations/{id}/records"), json!({"entity": "contact", "fields": {"phone": "+49 30 7770000"}})).await;
    assert_eq!(s, 422, "the title field is required: {v}");
    let (s, v) = alice.post(&format!("/api/v1/conversations/{id}/records"), json!({"entity": "spaceship", "fields": {"name": "x"}})).await;
    assert_eq!(s, 422, "{v}");
    let (s, created) = alice.post(&format!("/api/v1/conversations/{id}/records"), json!({"entity": "contact", "fields": {"name": "Nina New", "phone": "+49 30 7770000"}})).await;
    assert_eq!(s, 200, "{created}");
    let new_id = created["record"]["id"].as_str().expect("id").to_string();
    assert_eq!(created["conversation"]["selected"]["id"], new_id.as_str());
    t.cti(hangup("p-new", "cancel")).await;
    alice.post(&format!("/api/v1/conversations/{id}/wrapup"), json!({"request_id": "w", "notes": "first call"})).await;
    t.written("p-new").await;
    assert_eq!(t.activities_of("contact", &new_id).await.len(), 1, "the activity regards the new record");

    // She calls again: now identified, and the card lists the first call.
    let again = offered(&t, "p-new-2", "030 7770000", "alice").await;
    let (_, conv) = alice.get(&format!("/api/v1/conversations/{again}")).await;
    assert_eq!(conv["identification"]["outcome"], "single", "{conv}");
    let (_, card) = alice.get(&format!("/api/v1/conversations/{again}/related")).await;
    let earlier = card["interactions"].as_array().expect("interactions");
    assert_eq!(earlier.len(), 1, "{card}");
    assert_eq!((earlier[0]["kind"].as_str(), earlier[0]["conversation_id"].as_str()), (Some("conversation"), Some(id.as_str())));
}

#[tokio::test]
async fn a_failed_memorialization_reaches_the_panel_and_only_supervisors_retry_it() {
    let t = spawn_with(AGENTS).await;
    let ada = t.create("contact", json!({"id": "ada", "name": "Ada", "phone": "+49 30 1112223"})).await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let bob = sign_in(&t, "bob", "bob-token").await.expect("bob");
    let mut stream = alice.stream("alice").await.expect("stream");
    let id = offered(&t, "p-fail", "+49 30 1112223", "alice").await;
    // The record goes away in the CRM before the call is written.
    let gone = t.http.delete(t.url(&format!("/api/v1/crm/contact/{ada}"))).bearer_auth(ADMIN).send().await.expect("delete");
    assert!(gone.status().is_success());
    t.cti(hangup("p-fail", "cancel")).await;
    let failed = loop {
        let f = next_of(&mut stream, "update").await;
        if f["conversation"]["memorialization"]["status"] == "failed" {
            break f;
        }
    };
    let m = &failed["conversation"]["memorialization"];
    assert!(m["last_error"].as_str().unwrap_or("").contains("`ada` does not exist"), "the CRM's reason: {m}");
    let item = m["outbox_id"].as_i64().expect("outbox id");

    assert_eq!(bob.post(&format!("/api/v1/outbox/{item}/replay"), json!({})).await.0, 403, "agents cannot retry");
    t.create("contact", json!({"id": "ada", "name": "Ada", "phone": "+49 30 1112223"})).await;
    let (s, v) = alice.post(&format!("/api/v1/outbox/{item}/replay"), json!({})).await;
    assert_eq!(s, 200, "a supervisor can: {v}");
    let written = loop {
        let f = next_of(&mut stream, "update").await;
        if f["conversation"]["memorialization"]["status"] == "written" {
            break f;
        }
    };
    assert_eq!(written["conversation"]["id"], id.as_str());
    close(stream).await;
}

#[tokio::test]
async fn the_panel_bootstrap_names_codes_workflows_entities_and_dynamics() {
    let t = spawn_with(&format!(
        "{AGENTS}\n[[workflows]]\nname = \"new_lead\"\nlabel = \"New lead\"\naction = \"create\"\nentity = \"lead\"\nrequired = [\"name\"]\n\
         [panel]\nembed_origins = [\"https://contoso.crm4.dynamics.com\"]\n[panel.dynamics]\ncif_library_url = \"https://contoso.crm4.dynamics.com/webresources/Widget/msdyn_ciLibrary.js\"\ncrm_url = \"https://contoso.crm4.dynamics.com\"\n"
    ))
    .await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let (s, p) = alice.get("/api/v1/panel").await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["session"]["agent"], "alice");
    assert_eq!(p["wrapup_codes"][1], json!({"code": "solved", "label": "solved", "category": "Support"}));
    assert_eq!((p["workflows"][0]["name"].as_str(), p["workflows"][0]["label"].as_str()), (Some("new_lead"), Some("New lead")));
    let contact = p["entities"].as_array().expect("entities").iter().find(|e| e["name"] == "contact").cloned().expect("contact");
    assert_eq!(contact["create_fields"], json!(["name", "phone", "mobile", "email", "company"]));
    assert_eq!(p["dynamics"]["entity_map"]["contact"], "contact");

    let page = t.http.get(t.url("/agent")).send().await.expect("page");
    let csp = page.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(csp.contains("script-src 'self' https://contoso.crm4.dynamics.com/webresources/Widget/msdyn_ciLibrary.js;"), "the CIF library may load, and only it: {csp}");
    assert!(csp.contains("frame-ancestors 'self' https://contoso.crm4.dynamics.com;"), "Dynamics may frame it: {csp}");
    let r = t.http.post(t.url("/api/v1/session")).json(&json!({"agent": "alice", "password": "alice-token"})).send().await.expect("sign in");
    let cookie = r.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(cookie.contains("SameSite=None; Secure; Partitioned"), "inside Dynamics' iframe: {cookie}");
}

#[tokio::test]
async fn panel_files_are_embedded_revalidated_and_locked_down() {
    let t = spawn_with(AGENTS).await;
    let page = t.http.get(t.url("/agent")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap_or("").starts_with("text/html"));
    let csp = page.headers()["content-security-policy"].to_str().unwrap_or("").to_string();
    assert!(csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'self';"), "{csp}");
    let etag = page.headers()["etag"].clone();
    let html = page.text().await.unwrap_or_default();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from the internet");
    let again = t.http.get(t.url("/agent")).header("if-none-match", etag).send().await.expect("again");
    assert_eq!(again.status(), 304);
    let js = t.http.get(t.url("/agent/panel.js")).send().await.expect("js");
    assert_eq!((js.status().as_u16(), js.headers()["content-type"].to_str().unwrap_or("")), (200, "text/javascript; charset=utf-8"));
    let missing = t.http.get(t.url("/agent/nope.js")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_session_survives_a_restart_of_the_hub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = format!("data_dir = \"{}\"", dir.path().display());
    let first = spawn_with_server(&server, AGENTS).await;
    let alice = sign_in(&first, "alice", "alice-token").await.expect("alice");
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = spawn_with_server(&server, AGENTS).await;
    let moved = Panel { base: second.url(""), ..alice };
    let (s, me) = moved.get("/api/v1/session").await;
    assert_eq!((s, me["agent"].as_str()), (200, Some("alice")), "the signing secret is kept in the data directory");
    let changed = spawn_with_server(&server, &AGENTS.replace("alice-token", "rotated-token")).await;
    let stale = Panel { base: changed.url(""), ..moved };
    assert_eq!(stale.get("/api/v1/session").await.0, 401, "a changed token ends old sessions");
}

const ACCESS: &str = r#"
[phone]
default_region = "DE"
[[agents]]
id = "alice"
cti_users = ["alice"]
token = "alice-token"
supervisor = true
[[agents]]
id = "bob"
cti_users = ["bob"]
token = "bob-token"
[[agents]]
id = "carol"
cti_users = ["carol"]
token = "carol-token"
[ivr.verify]
fields = { pin = "pin" }
[[workflows]]
name = "find_contact"
action = "search"
entity = "contact"
[[workflows]]
name = "edit_contact"
action = "update"
entity = "contact"
allowed = ["email", "pin"]
[[workflows]]
name = "edit_anything"
action = "update"
entity = "contact"
[[workflows]]
name = "contact_history"
action = "timeline"
entity = "contact"
"#;

fn rings(call: &str, from: &str, users: &[&str]) -> Value {
    json!({"event": "newCall", "from": from, "to": "+49 30 9999000", "direction": "in", "callId": call, "user": users})
}

/// The content type of an agent's request (problem+json for refusals).
async fn content_type(p: &Panel, path: &str) -> String {
    let r = p.http.get(format!("{}{path}", p.base)).header(COOKIE, &p.cookie).send().await.expect("request");
    r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

#[tokio::test]
async fn once_an_agent_answers_the_others_the_call_rang_lose_it() {
    let t = spawn_with(ACCESS).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "pin": "4711"})).await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let bob = sign_in(&t, "bob", "bob-token").await.expect("bob");
    let carol = sign_in(&t, "carol", "carol-token").await.expect("carol");
    let mut bob_ws = bob.stream("bob").await.expect("bob's stream");
    let mut carol_ws = carol.stream("carol").await.expect("carol's stream");
    next_of(&mut bob_ws, "snapshot").await;
    next_of(&mut carol_ws, "snapshot").await;

    t.cti(rings("rung-1", "+49 30 1234567", &["bob", "carol", "alice"])).await;
    let id = t.conversation_by_call("rung-1").await["id"].as_str().expect("id").to_string();
    next_of(&mut bob_ws, "pop").await;
    next_of(&mut carol_ws, "pop").await;
    assert_eq!(carol.get(&format!("/api/v1/conversations/{id}")).await.0, 200, "while it rings, every agent it rings may look");

    t.cti(answer("rung-1", "bob")).await;
    let taken = next_of(&mut carol_ws, "update").await;
    assert_eq!(taken["conversation"]["agent"], "bob", "carol hears once that bob took it: {taken}");
    next_of(&mut bob_ws, "update").await;

    let conv = format!("/api/v1/conversations/{id}");
    for (what, (status, body)) in [
        ("read", carol.get(&conv).await),
        ("card", carol.get(&format!("{conv}/related")).await),
        ("wrap up", carol.post(&format!("{conv}/wrapup"), json!({"notes": "mine now"})).await),
        ("link", carol.put(&format!("{conv}/links"), json!({"pinned": []})).await),
    ] {
        assert_eq!(status, 403, "carol may not {what} the call bob answered: {body}");
        assert!(body["detail"].as_str().is_some(), "{body}");
    }
    assert!(content_type(&carol, &conv).await.starts_with("application/problem+json"));
    assert_eq!(bob.get(&conv).await.0, 200, "bob answered: he may");
    assert_eq!(bob.get(&format!("{conv}/related")).await.0, 200);
    assert_eq!(bob.put(&format!("{conv}/links"), json!({"pinned": []})).await.0, 200);
    assert_eq!(alice.get(&conv).await.0, 200, "a supervisor it rang may still look");
    assert_eq!(t.get(&conv).await.0, 200, "and so may an admin");

    // What happens next reaches bob, never carol.
    let (s, v) = t.post("/api/v1/events", json!({"type": "updated", "source": "cti", "conversation_id": "rung-1", "details": {"transcript": "my PIN is 4711"}})).await;
    assert_eq!(s, 200, "{v}");
    let update = next_of(&mut bob_ws, "update").await;
    assert_eq!(update["conversation"]["transcript"], "my PIN is 4711");
    none_of(&mut carol_ws, "update", Duration::from_millis(500)).await;
    t.cti(hangup("rung-1", "normalClearing")).await;
    next_of(&mut bob_ws, "end").await;
    none_of(&mut carol_ws, "end", Duration::from_millis(300)).await;
    assert_eq!(bob.post(&format!("{conv}/wrapup"), json!({"request_id": "w", "notes": "done"})).await.0, 200);
    close(bob_ws).await;
    close(carol_ws).await;
}

#[tokio::test]
async fn agents_reach_only_the_records_of_their_own_conversation_and_never_the_pin() {
    let t = spawn_with(ACCESS).await;
    let ada = t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "pin": "4711"})).await;
    let stranger = t.create("contact", json!({"name": "Stranger Danger", "phone": "+49 40 5550000", "pin": "9999"})).await;
    let bob = sign_in(&t, "bob", "bob-token").await.expect("bob");
    let mut bob_ws = bob.stream("bob").await.expect("bob's stream");
    next_of(&mut bob_ws, "snapshot").await;
    let id = offered(&t, "own-1", "+49 30 1234567", "bob").await;
    let pop = next_of(&mut bob_ws, "pop").await;
    assert!(!pop.to_string().contains("4711"), "the pop never carries the PIN: {pop}");
    let conv = format!("/api/v1/conversations/{id}");

    // A record that is not the conversation's cannot be linked, so the card never shows it.
    for body in [json!({"selected": {"entity": "contact", "id": stranger}}), json!({"pinned": [{"entity": "contact", "id": stranger}]})] {
        let (s, v) = bob.put(&format!("{conv}/links"), body).await;
        assert_eq!(s, 403, "{v}");
    }
    let (s, v) = bob.post(&format!("{conv}/wrapup"), json!({"selected": {"entity": "contact", "id": stranger}})).await;
    assert_eq!(s, 403, "nor through the wrap-up: {v}");
    let (s, card) = bob.get(&format!("{conv}/related")).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = card["records"].as_array().expect("records").iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, vec![ada.as_str()], "{card}");
    assert_eq!(card["records"][0]["fields"]["name"], "Ada");
    assert!(!card.to_string().contains("4711") && card["records"][0]["fields"].get("pin").is_none(), "the card never shows the PIN: {card}");

    // Workflows on records: only the conversation's.
    let (s, v) = bob.post("/api/v1/workflows/contact_history", json!({"id": stranger, "conversation_id": id})).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = bob.post("/api/v1/workflows/contact_history", json!({"id": ada})).await;
    assert_eq!(s, 422, "an agent names the conversation: {v}");
    assert_eq!(bob.post("/api/v1/workflows/contact_history", json!({"id": ada, "conversation_id": id})).await.0, 200);
    // Nothing is writable unless the workflow allows it, and sensitive fields never are.
    let (s, v) = bob.post("/api/v1/workflows/edit_anything", json!({"id": ada, "conversation_id": id, "fields": {"phone": "+49 30 6660000"}})).await;
    assert_eq!(s, 422, "an update workflow without `allowed` changes nothing: {v}");
    let (s, v) = t.post("/api/v1/workflows/edit_anything", json!({"id": ada, "fields": {"phone": "+49 30 6660000"}})).await;
    assert_eq!(s, 422, "not for admins either: {v}");
    let (s, v) = bob.post("/api/v1/workflows/edit_contact", json!({"id": ada, "conversation_id": id, "fields": {"pin": "0000"}})).await;
    assert_eq!(s, 422, "the PIN is never writable from a workflow: {v}");
    let (s, v) = bob.post("/api/v1/workflows/edit_contact", json!({"id": ada, "conversation_id": id, "fields": {"email": "ada@example.org"}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"][0]["fields"]["email"], "ada@example.org");
    assert!(v["records"][0]["fields"].get("pin").is_none(), "{v}");
    let (_, stored) = t.get(&format!("/api/v1/crm/contact/{ada}")).await;
    assert_eq!((stored["fields"]["pin"].as_str(), stored["fields"]["phone"].as_str()), (Some("4711"), Some("+49 30 1234567")), "{stored}");

    // A record the agent found by searching for this conversation may be linked to it.
    let (s, found) = bob.post("/api/v1/workflows/find_contact", json!({"text": "danger", "conversation_id": id})).await;
    assert_eq!(s, 200, "{found}");
    let hit = &found["records"][0];
    assert_eq!(hit["id"], stranger.as_str());
    assert!(hit["fields"].get("pin").is_none(), "{found}");
    let grant = hit["grant"].as_str().expect("a search result for the conversation carries its grant").to_string();
    let other = offered(&t, "own-2", "+49 30 7654321", "bob").await;
    let (s, v) = bob.put(&format!("/api/v1/conversations/{other}/links"), json!({"selected": {"entity": "contact", "id": stranger}, "grants": [grant]})).await;
    assert_eq!(s, 403, "a grant is for its own conversation: {v}");
    let (s, v) = bob.put(&format!("{conv}/links"), json!({"selected": {"entity": "contact", "id": stranger}, "grants": [grant]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["selected"]["id"], stranger.as_str());
    close(bob_ws).await;
}

#[tokio::test]
async fn an_agent_closes_a_call_that_never_ended_and_only_their_own() {
    let t = spawn_with(AGENTS).await;
    let alice = sign_in(&t, "alice", "alice-token").await.expect("alice");
    let bob = sign_in(&t, "bob", "bob-token").await.expect("bob");
    let ringing = offered(&t, "stuck-1", "+49301234567", "alice").await;
    let close = |id: &str| format!("/api/v1/conversations/{id}/close");
    // Not offered to bob: he cannot close it, and without the CSRF token alice cannot either.
    let (s, _) = bob.post(&close(&ringing), json!({})).await;
    assert_eq!(s, 403);
    let (s, _) = alice.send(reqwest::Method::POST, &close(&ringing), None, false).await;
    assert_eq!(s, 403, "changes need the CSRF token");
    assert_eq!(t.conversation_by_call("stuck-1").await["state"], "offered", "refusals change nothing");

    let (s, c) = alice.post(&close(&ringing), json!({})).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!((c["end_cause"].as_str(), c["outcome"].as_str(), c["attributes"]["closed_by"].as_str()), (Some("closedByAgent"), Some("missed"), Some("alice")), "{c}");
    let (s, v) = alice.post(&close(&ringing), json!({})).await;
    assert_eq!((s, v["status"].as_u64()), (409, Some(409)), "already ended: {v}");
    // A connected call closed by hand is answered, and waits for its wrap-up like any call.
    let talking = offered(&t, "stuck-2", "+49301234568", "alice").await;
    t.cti(answer("stuck-2", "alice")).await;
    let (s, c) = alice.post(&close(&talking), json!({})).await;
    assert_eq!((s, c["state"].as_str(), c["outcome"].as_str()), (200, Some("ended"), Some("answered")), "{c}");
    let (s, _) = alice.post(&close("no-such-conversation"), json!({})).await;
    assert_eq!(s, 404);
}
