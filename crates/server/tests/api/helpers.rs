use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cxbridge_server::config::Config;
use cxbridge_server::Server;
use cxbridge_server::app::App;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ADMIN: &str = "test-admin-token";
pub const CTI: &str = "test-cti-token-0123456789";

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub app: Arc<App>,
    /// The HTTP edge (sessions, tokens) around `app`.
    pub server: Arc<Server>,
    pub _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a hub with `extra` TOML appended to the test basics.
pub async fn spawn_with(extra: &str) -> TestApp {
    spawn_with_server("", extra).await
}

/// Like [`spawn_with`], with `server` lines added to the `[server]` table.
pub async fn spawn_with_server(server: &str, extra: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    // `server` may name its own data_dir (a restart on the same data).
    let data_dir = if server.contains("data_dir") { String::new() } else { format!("data_dir = \"{}\"\n", dir.path().display()) };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{data_dir}durability = \"normal\"\n{server}\n[auth]\nadmin_tokens = [\"{ADMIN}\"]\ncti_token = \"{CTI}\"\n{extra}"
    );
    let config = Config::parse(&text, std::path::Path::new("test.toml")).expect("test config");
    let server = cxbridge_server::build(config).await.expect("build app");
    let app = server.app.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cxbridge_server::run(server.clone(), listener, async move {
        let _ = rx.await;
    }));
    cxbridge_connectors::client::ensure_tls();
    TestApp { addr, http: reqwest::Client::new(), app, server, _dir: dir, stop: Some(tx) }
}

/// A sipgate.io push (form in) to `path`: status, content type and body.
pub async fn sipgate_at(t: &TestApp, path: &str, form: &str) -> (u16, String, String) {
    let r = t
        .http
        .post(t.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .expect("sipgate push");
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (r.status().as_u16(), ct, r.text().await.unwrap_or_default())
}

pub async fn spawn() -> TestApp {
    spawn_with("[phone]\ndefault_region = \"DE\"\nown_numbers = [\"+49 30 9999000\"]\n").await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(ADMIN).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(ADMIN).json(&body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.patch(self.url(path)).bearer_auth(ADMIN).json(&body).send().await.expect("PATCH");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A CTI event as JSON; returns status and reply.
    pub async fn cti(&self, body: Value) -> (u16, Value) {
        let r = self.http.post(self.url(&format!("/api/v1/cti/{CTI}"))).json(&body).send().await.expect("CTI");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn cti_form(&self, form: &str) -> (u16, String) {
        let r = self
            .http
            .post(self.url(&format!("/api/v1/cti/{CTI}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .expect("CTI form");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn create(&self, entity: &str, fields: Value) -> String {
        let (s, v) = self.post(&format!("/api/v1/crm/{entity}"), fields).await;
        assert_eq!(s, 201, "create {entity}: {v}");
        v["id"].as_str().expect("id").to_string()
    }

    pub async fn conversation_by_call(&self, call_id: &str) -> Value {
        let (s, v) = self.get(&format!("/api/v1/conversations?external_id={call_id}")).await;
        assert_eq!(s, 200, "{v}");
        v["conversations"][0].clone()
    }

    pub async fn activities_of(&self, entity: &str, id: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/api/v1/crm/{entity}/{id}/activities")).await;
        assert_eq!(s, 200, "{v}");
        v["activities"].as_array().cloned().unwrap_or_default()
    }

    pub async fn agent(&self, agent: &str) -> Ws {
        let url = format!("ws://{}/api/v1/agents/{agent}/stream?access_token={ADMIN}", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
        ws
    }

    /// Waits (bounded) until `check` holds for the conversation of `call_id`.
    pub async fn wait_for_call(&self, call_id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let c = self.conversation_by_call(call_id).await;
            if check(&c) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("call {call_id}: {what} did not happen; last state {}", self.conversation_by_call(call_id).await);
    }

    pub async fn written(&self, call_id: &str) -> Value {
        self.wait_for_call(call_id, "memorialization written", |c| c["memorialization"]["status"] == "written").await
    }

    pub async fn wrapup(&self, conversation_id: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/api/v1/conversations/{conversation_id}/wrapup"), body).await
    }
}

/// Reads frames until one of `kind` arrives (bounded), skipping others.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.unwrap_or_else(|_| panic!("no `{kind}` message within 5 s"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                if v["type"] == kind {
                    return v;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("stream ended while waiting for `{kind}`: {other:?}"),
        }
    }
}

/// Asserts no message of `kind` arrives within `wait`.
pub async fn none_of(ws: &mut Ws, kind: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                assert_ne!(v["type"], kind, "unexpected {kind}: {v}");
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => return,
        }
    }
}

pub async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
}

pub fn new_call(call: &str, from: &str, user: &str) -> Value {
    json!({"event": "newCall", "from": from, "to": "+49 30 9999000", "direction": "in", "callId": call, "user": user})
}

pub fn answer(call: &str, user: &str) -> Value {
    json!({"event": "answer", "from": "x", "to": "y", "direction": "in", "callId": call, "user": user})
}

pub fn hangup(call: &str, cause: &str) -> Value {
    json!({"event": "hangup", "from": "x", "to": "y", "direction": "in", "callId": call, "cause": cause})
}
