//! HTTP helpers every phase uses against the server: query encoding, `/healthz` and its
//! outbox counts, timed sequential GETs, timed POSTs.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::server::{ADMIN_TOKEN, Server};
use crate::stats::Samples;

/// Percent-encodes a query value (reqwest's `query` needs a feature we do not enable).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /healthz` as JSON.
pub async fn health(http: &reqwest::Client, server: &Server) -> anyhow::Result<Value> {
    let r = http.get(server.url("/healthz")).send().await.context("GET /healthz failed")?;
    let status = r.status();
    let v: Value = r.json().await.context("GET /healthz did not return JSON")?;
    if !status.is_success() {
        bail!("GET /healthz answered {status}: {v}");
    }
    Ok(v)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Outbox {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

pub fn outbox(v: &Value) -> anyhow::Result<Outbox> {
    let o = v.get("outbox").context("/healthz has no `outbox` field")?;
    let n = |k: &str| o.get(k).and_then(Value::as_u64).with_context(|| format!("/healthz outbox has no number `{k}`"));
    Ok(Outbox { pending: n("pending")?, delivered: n("delivered")?, dead: n("dead")? })
}

/// Sequential GETs of `path`, after a short warm-up; returns the latencies.
pub async fn sequential_gets(http: &reqwest::Client, url: &str, n: u32, expect_ok: bool) -> anyhow::Result<Samples> {
    for _ in 0..100 {
        http.get(url).send().await?.bytes().await?;
    }
    let mut s = Samples::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).send().await.with_context(|| format!("GET {url} failed"))?;
        let status = r.status();
        r.bytes().await?;
        s.push(t.elapsed());
        if expect_ok && !status.is_success() {
            bail!("GET {url} answered {status}");
        }
    }
    Ok(s)
}

/// POSTs a JSON body; Ok(latency) on a 2xx, Err(message) otherwise.
pub async fn post(http: &reqwest::Client, url: &str, body: &Value, bearer: bool) -> Result<Duration, String> {
    let t = Instant::now();
    let mut req = http.post(url).json(body);
    if bearer {
        req = req.bearer_auth(ADMIN_TOKEN);
    }
    let r = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| format!("POST {url}: reading the reply: {e}"))?;
    let took = t.elapsed();
    if status.is_success() { Ok(took) } else { Err(format!("POST {url} answered {status}: {}", text.chars().take(300).collect::<String>())) }
}
