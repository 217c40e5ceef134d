//! Agent streams: WebSocket readers that count frames and stamp the pop of each tracked
//! call for the call that waits for it (pop, scale-out phases).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::server::ADMIN_TOKEN;

/// What an agent's reader saw when a tracked call's pop arrived.
pub struct PopSeen {
    pub at: Instant,
    pub conversation_id: String,
    pub action: String,
}

pub type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<PopSeen>>>>;

#[derive(Default)]
pub struct FrameCounts {
    pub pop: AtomicU64,
    pub update: AtomicU64,
    pub end: AtomicU64,
    pub other: AtomicU64,
    /// Pop frames for a call that had popped before (each call goes to one agent, so any is
    /// a bug); counted only when `popped` is kept.
    pub duplicate_pops: AtomicU64,
    /// The external ids of the calls popped so far, when duplicates are looked for.
    pub popped: Option<Mutex<HashSet<String>>>,
}

pub struct Agents {
    pub readers: JoinSet<()>,
    pub counts: Arc<FrameCounts>,
    pub waiters: Waiters,
    /// While false the readers only count frames (the throughput phase).
    pub tracking: Arc<AtomicBool>,
}

pub fn agent_id(k: u64) -> String {
    format!("bench-agent-{k:03}")
}

/// The `type` of an agent message, cheaply (serde writes the tag first).
fn frame_type(text: &str) -> Option<&str> {
    text.strip_prefix("{\"type\":\"").and_then(|r| r.split('"').next())
}

/// The conversation's `external_id` of an agent message without parsing it: the first one in
/// the text is the conversation's (serde writes `conversation` first, and `external_id`
/// before the fields that could hold the same key).
fn external_id(text: &str) -> Option<&str> {
    let key = "\"external_id\":\"";
    let at = text.find(key)? + key.len();
    text[at..].split('"').next()
}

fn handle_frame(text: &str, at: Instant, counts: &FrameCounts, waiters: &Waiters, tracking: &AtomicBool) {
    let owned;
    let kind = match frame_type(text) {
        Some(k) => k,
        None => {
            owned = serde_json::from_str::<Value>(text).ok().and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
            owned.as_deref().unwrap_or("")
        }
    };
    match kind {
        "pop" => counts.pop.fetch_add(1, Ordering::Relaxed),
        "update" => counts.update.fetch_add(1, Ordering::Relaxed),
        "end" => counts.end.fetch_add(1, Ordering::Relaxed),
        _ => counts.other.fetch_add(1, Ordering::Relaxed),
    };
    if kind == "pop"
        && let Some(popped) = &counts.popped
        && let Some(external) = external_id(text)
        && let Ok(mut popped) = popped.lock()
        && !popped.insert(external.to_string())
    {
        counts.duplicate_pops.fetch_add(1, Ordering::Relaxed);
    }
    if kind != "pop" || !tracking.load(Ordering::Relaxed) {
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else { return };
    let c = &v["conversation"];
    let (Some(external), Some(id)) = (c["external_id"].as_str(), c["id"].as_str()) else { return };
    let waiter = waiters.lock().ok().and_then(|mut w| w.remove(external));
    if let Some(tx) = waiter {
        let action = v["pop"]["action"].as_str().unwrap_or("").to_string();
        let _ = tx.send(PopSeen { at, conversation_id: id.to_string(), action });
    }
}

/// Connects `k` agent streams, agent `a` to node `a % nodes.len()` (`ws://host:port` bases),
/// and waits for each one's snapshot. With `duplicates` the readers also count pop frames of
/// calls that had popped before.
pub async fn connect_agents(nodes: &[String], k: u32, duplicates: bool) -> anyhow::Result<Agents> {
    if nodes.is_empty() {
        bail!("no node to connect the agents to");
    }
    let counts = Arc::new(FrameCounts { popped: duplicates.then(Mutex::default), ..FrameCounts::default() });
    let waiters: Waiters = Arc::default();
    let tracking = Arc::new(AtomicBool::new(false));
    let mut readers = JoinSet::new();
    for a in 0..u64::from(k) {
        let base = &nodes[(a % nodes.len() as u64) as usize];
        let url = format!("{base}/api/v1/agents/{}/stream?access_token={ADMIN_TOKEN}", agent_id(a));
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .with_context(|| format!("cannot open the agent stream {url}"))?;
        let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .with_context(|| format!("no snapshot within 10 s on {url}"))?;
        match first {
            Some(Ok(Message::Text(t))) if frame_type(&t) == Some("snapshot") => {}
            other => bail!("the first frame on {url} was not a snapshot: {other:?}"),
        }
        let (counts, waiters, tracking) = (counts.clone(), waiters.clone(), tracking.clone());
        readers.spawn(async move {
            while let Some(m) = ws.next().await {
                let at = Instant::now();
                match m {
                    Ok(Message::Text(t)) => handle_frame(&t, at, &counts, &waiters, &tracking),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
    }
    Ok(Agents { readers, counts, waiters, tracking })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_external_id_is_the_conversations() {
        let pop = r#"{"type":"pop","conversation":{"id":"c1","source":"cti","external_id":"call-7","legs":["call-7"]},"pop":{"action":"open"}}"#;
        assert_eq!(external_id(pop), Some("call-7"));
        assert_eq!(external_id(r#"{"type":"pop"}"#), None);
    }
}
