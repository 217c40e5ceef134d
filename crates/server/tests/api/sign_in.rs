//! Panel sign-in under attack: overlong and unknown names, parallel guessing bursts, the
//! per-client throttle, the cap on concurrent password checks, and the same-origin check.

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::header::ORIGIN;
use serde_json::{Value, json};

use crate::helpers::*;

fn agents(extra_panel: &str) -> String {
    let hash = cxbridge_server::http::session::hash_password("correct horse battery").expect("hash");
    format!(
        "[[agents]]\nid = \"carol\"\npassword_hash = \"{hash}\"\n[[agents]]\nid = \"alice\"\ntoken = \"alice-token\"\n[[agents]]\nid = \"bob\"\ntoken = \"bob-token\"\n[panel]\n{extra_panel}\n"
    )
}

async fn attempt(t: &TestApp, agent: &str, password: &str) -> (u16, Value, Option<String>) {
    let r = t.http.post(t.url("/api/v1/session")).json(&json!({"agent": agent, "password": password})).send().await.expect("sign in");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        assert_eq!(kind, "application/problem+json", "{status} {body}");
    }
    (status, body, retry)
}

#[tokio::test]
async fn a_parallel_burst_of_wrong_passwords_checks_no_more_guesses_than_the_limit() {
    // A long wait for a password check: the burst must be answered by the lockout, not 503.
    let t = spawn_with(&agents("password_check_wait_ms = 60000")).await;
    let before = t.server.edge.sessions.password_checks();
    let burst = (0..50).map(|i| {
        let t = &t;
        async move { attempt(t, "carol", &format!("guess-{i}")).await }
    });
    let answers = futures::future::join_all(burst).await;
    let checked = answers.iter().filter(|(s, _, _)| *s == 401).count();
    let locked = answers.iter().filter(|(s, _, r)| *s == 429 && r.is_some()).count();
    assert_eq!((checked, locked), (5, 45), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert_eq!(t.server.edge.sessions.password_checks() - before, 5, "only the limit's worth of guesses reached Argon2");
    let (s, body, retry) = attempt(&t, "carol", "correct horse battery").await;
    assert_eq!(s, 429, "the right password waits too while locked: {body}");
    assert!(retry.is_some());
    assert_eq!(attempt(&t, "alice", "alice-token").await.0, 200, "other agents are not locked out");
}

#[tokio::test]
async fn an_unknown_agent_is_checked_and_locked_out_exactly_like_a_known_one() {
    let t = spawn_with(&agents("")).await;
    let before = t.server.edge.sessions.password_checks();
    let (known, k, _) = attempt(&t, "carol", "nope").await;
    let (unknown, u, _) = attempt(&t, "mallory", "nope").await;
    assert_eq!((known, unknown), (401, 401));
    assert_eq!(k["detail"], u["detail"]);
    assert_eq!(t.server.edge.sessions.password_checks() - before, 2, "the unknown agent's password went through Argon2 as well (a dummy hash)");
    let (token_only, _, _) = attempt(&t, "alice", "wrong-token").await;
    assert_eq!(token_only, 401);
    assert_eq!(t.server.edge.sessions.password_checks() - before, 3, "so did the token-only agent's");
    for _ in 0..4 {
        assert_eq!(attempt(&t, "mallory", "nope").await.0, 401);
        assert_eq!(attempt(&t, "carol", "nope").await.0, 401);
    }
    let (k, kb, _) = attempt(&t, "carol", "nope").await;
    let (u, ub, _) = attempt(&t, "mallory", "nope").await;
    assert_eq!((k, u), (429, 429), "locked out alike");
    let told = |v: &Value| v["detail"].as_str().unwrap_or("").split(" in ").next().unwrap_or("").to_string();
    assert_eq!(told(&kb), told(&ub), "and told alike");
}

#[tokio::test]
async fn one_client_address_is_throttled_across_agents() {
    let t = spawn_with(&agents("sign_in_failures_per_client = 3")).await;
    for agent in ["alice", "bob", "mallory"] {
        assert_eq!(attempt(&t, agent, "guess").await.0, 401, "{agent}");
    }
    let (s, body, retry) = attempt(&t, "carol", "correct horse battery").await;
    assert_eq!(s, 429, "a fourth agent from the same address waits: {body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("from your address"), "{body}");
    assert!(retry.is_some());
}

#[tokio::test]
async fn password_checks_run_a_few_at_a_time_and_a_sign_in_that_waits_too_long_gets_503() {
    let t = spawn_with(&agents("password_checks = 1\npassword_check_wait_ms = 200\nsign_in_failures_per_agent = 1")).await;
    let held = t.server.edge.sessions.password_check_permit().await.expect("the only permit");
    let before = t.server.edge.sessions.password_checks();
    let (s, body, retry) = attempt(&t, "carol", "a guess").await;
    assert_eq!((s, retry.as_deref()), (503, Some("1")), "{body}");
    assert_eq!(t.server.edge.sessions.password_checks(), before, "nothing was checked");
    drop(held);
    // The unchecked guess was not counted: with a limit of one failure carol is not locked out.
    assert_eq!(attempt(&t, "carol", "correct horse battery").await.0, 200, "the permit is back and the attempt was given back");
}

/// The sign-in log lines of the whole test process, from when the test below starts.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One write per event; only the sign-in lines are kept (every test logs here).
        if buf.windows(7).any(|w| w == b"sign-in") {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn huge_and_unknown_agent_names_are_refused_or_counted_without_growing_memory_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Process-wide: a thread-local subscriber misses events whose callsite another test's
    // thread registered first. Other tests' lines land here too; the checks pick ours.
    let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_ansi(false).with_writer(move || writer.clone()).finish();
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets the global subscriber");
    let t = spawn_with(&agents("sign_in_failures_per_client = 1000")).await;
    let before = t.server.edge.sessions.password_checks();

    let huge = "é".repeat(900_000);
    for i in 0..20 {
        let (s, body, _) = attempt(&t, &format!("{huge}{i}"), "x").await;
        assert_eq!(s, 422, "{}", body["detail"]);
        assert!(body["detail"].as_str().unwrap_or("").contains("128 bytes"), "says the limit");
    }
    assert_eq!(attempt(&t, "alice", &"p".repeat(5_000)).await.0, 422, "an overlong password too");
    assert_eq!(t.server.edge.sessions.password_checks(), before, "refused before anything was hashed");
    assert_eq!(t.server.edge.sessions.tracked_sign_in_keys(), 0, "and before anything was counted");

    // Names just under the limit, with multi-byte characters where a byte cut would panic.
    let long_unknown = |i: usize| format!("{i:03}{}", "é".repeat(62));
    assert!(long_unknown(0).len() <= cxbridge_server::config::MAX_AGENT_ID_BYTES);
    for i in 0..12 {
        assert_eq!(attempt(&t, &long_unknown(i), "x").await.0, 401);
    }
    // 12 names from one client: the client's key and at most one bucket per name.
    assert!(t.server.edge.sessions.tracked_sign_in_keys() <= 13);

    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).to_string();
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("failed panel sign-in") && l.contains("(127 bytes)")).collect();
    assert_eq!(ours.len(), 12, "each unknown name's failure is logged, clipped: {text}");
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 400, "sign-in log lines stay short (longest {longest} bytes)");
    assert!(!text.contains(&"é".repeat(40)), "no name was logged whole");
}

#[tokio::test]
async fn sign_in_only_from_the_panels_own_origin() {
    let t = spawn_with(&agents("")).await;
    let r = t
        .http
        .post(t.url("/api/v1/session"))
        .header(ORIGIN, "https://evil.example")
        .json(&json!({"agent": "alice", "password": "alice-token"}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none(), "no session for another site's page");
    let own = t.http.post(t.url("/api/v1/session")).header(ORIGIN, format!("http://{}", t.addr)).json(&json!({"agent": "alice", "password": "alice-token"})).send().await.expect("sign in");
    assert_eq!(own.status(), 200);
}
