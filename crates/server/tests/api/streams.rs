//! Agent streams end with the session that opened them (sign-out, expiry), are capped per
//! agent, and refuse oversize client messages; a cookie opens one only from our own page.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

const AGENTS: &str = "[phone]\ndefault_region = \"DE\"\n[[agents]]\nid = \"alice\"\ncti_users = [\"alice\"]\ntoken = \"alice-token\"\n";

/// Signs alice in; returns the cookie (`name=value`) and the CSRF token.
async fn sign_in(t: &TestApp) -> (String, String) {
    let r = t.http.post(t.url("/api/v1/session")).json(&json!({"agent": "alice", "password": "alice-token"})).send().await.expect("sign in");
    assert_eq!(r.status(), 200);
    let cookie = r.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).and_then(|c| c.split(';').next()).expect("cookie").to_string();
    let body: Value = r.json().await.expect("session");
    (cookie, body["csrf_token"].as_str().expect("csrf").to_string())
}

/// Opens alice's stream with `cookie` (and `origin`, if any); the refusal's status otherwise.
async fn cookie_stream(t: &TestApp, cookie: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://{}/api/v1/agents/alice/stream", t.addr).into_client_request().expect("ws request");
    req.headers_mut().insert(COOKIE, cookie.parse().expect("cookie header"));
    if let Some(o) = origin {
        req.headers_mut().insert(ORIGIN, o.parse().expect("origin header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("stream: {e}"),
    }
}

/// Reads until the server closes the stream (bounded); its close code and reason.
async fn closed(ws: &mut Ws, within: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("the stream is still open after {within:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => return (u16::from(f.code), f.reason.to_string()),
            Ok(Some(Ok(Message::Close(None)))) => return (0, String::new()),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the stream ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn signing_out_closes_the_streams_opened_with_the_session_but_not_token_streams() {
    let t = spawn_with(AGENTS).await;
    let (cookie, csrf) = sign_in(&t).await;
    let mut panel = cookie_stream(&t, &cookie, None).await.expect("panel stream");
    next_of(&mut panel, "snapshot").await;
    let mut integration = t.agent("alice").await;
    next_of(&mut integration, "snapshot").await;

    let out = t.http.delete(t.url("/api/v1/session")).header(COOKIE, &cookie).header("x-csrf-token", &csrf).send().await.expect("sign out");
    assert_eq!(out.status(), 204);
    assert_eq!(closed(&mut panel, Duration::from_secs(5)).await, (4401, "signed out".to_string()), "the panel shows its sign-in on 4401");

    let (s, v) = t.cti(new_call("s-out", "+49 30 1234567", "alice")).await;
    assert_eq!(s, 200, "{v}");
    next_of(&mut integration, "pop").await;
    close(integration).await;
}

#[tokio::test]
async fn a_panel_stream_ends_when_its_session_expires() {
    let t = spawn_with(AGENTS).await;
    let agent = t.server.edge.credentials("alice").expect("alice");
    // A session signed in 12 h minus 3 s ago: it expires 3 s from now.
    let hours = i64::try_from(t.app.config.panel.session_hours).expect("hours");
    let issued = jiff::Timestamp::now().as_millisecond() - (hours * 3600 - 3) * 1000;
    let session = t.server.edge.sessions.sign_in(Some(agent), "alice", "alice-token", None, issued).expect("session");
    let cookie = format!("cxbridge_session={}", t.server.edge.sessions.encode(&session, agent));
    let mut ws = cookie_stream(&t, &cookie, None).await.expect("still valid");
    next_of(&mut ws, "snapshot").await;
    let (code, reason) = closed(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, 4401);
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(cookie_stream(&t, &cookie, None).await.err(), Some(401), "and no new one opens with it");
}

#[tokio::test]
async fn the_ninth_stream_of_an_agent_is_refused_before_the_upgrade() {
    let t = spawn_with(AGENTS).await;
    let mut open = vec![];
    for _ in 0..8 {
        open.push(t.agent("alice").await);
    }
    let url = format!("ws://{}/api/v1/agents/alice/stream?access_token={ADMIN}", t.addr);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429);
            assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
            if let Some(body) = r.body() {
                let body: Value = serde_json::from_slice(body).expect("problem");
                assert!(body["detail"].as_str().unwrap_or("").contains("streams_per_agent"), "{body}");
            }
        }
        other => panic!("a ninth stream was accepted: {:?}", other.map(|_| ())),
    }
    assert!(t.agent("bob").await.next().await.is_some(), "other agents have their own limit");
    close(open.remove(0)).await;
    for _ in 0..100 {
        if t.app.hub.streams_of("alice") < 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = t.agent("alice").await;
    next_of(&mut again, "snapshot").await;
}

#[tokio::test]
async fn an_oversize_client_message_closes_the_stream() {
    let t = spawn_with(AGENTS).await;
    let mut ws = t.agent("alice").await;
    next_of(&mut ws, "snapshot").await;
    ws.send(Message::Text("a small message is ignored".into())).await.expect("send small");
    let (s, v) = t.cti(new_call("s-big", "+49 30 1234567", "alice")).await;
    assert_eq!(s, 200, "{v}");
    next_of(&mut ws, "pop").await;
    ws.send(Message::Text("x".repeat(1024 * 1024).into())).await.expect("send 1 MiB");
    assert_eq!(closed(&mut ws, Duration::from_secs(5)).await.0, 1009, "message too big");
}

#[tokio::test]
async fn a_cookie_opens_the_stream_only_from_the_panels_own_page() {
    let t = spawn_with(AGENTS).await;
    let (cookie, _) = sign_in(&t).await;
    assert_eq!(cookie_stream(&t, &cookie, Some("https://evil.example")).await.err(), Some(403));
    let own = format!("http://{}", t.addr);
    assert!(cookie_stream(&t, &cookie, Some(&own)).await.is_ok());
}
