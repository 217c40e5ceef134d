//! Sustained CTI events: workers posting the events of one fresh call after another for a
//! while (events, scale-out phases).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::agents::agent_id;
use crate::calls::cti_body;
use crate::http::post;
use crate::numbers::{self, Rng};
use crate::report::say;
use crate::server::Server;
use crate::stats::Samples;

/// How each call of the sustained-events phase goes.
#[derive(Debug, Clone, Copy)]
pub enum BlastCall {
    /// `newCall`, `answer`, `hangup` (normal clearing): 3 events; completed after the ACW.
    Answered,
    /// `newCall`, `hangup` with cause `cancel`: 2 events; completed (memorialized) at once.
    Cancelled,
}

impl BlastCall {
    fn bodies(self, call_id: &str, from: &str, agent: &str) -> Vec<Value> {
        match self {
            BlastCall::Answered => ["newCall", "answer", "hangup"].iter().map(|e| cti_body(e, call_id, from, agent)).collect(),
            BlastCall::Cancelled => {
                let mut hangup = cti_body("hangup", call_id, from, agent);
                hangup["cause"] = json!("cancel");
                vec![cti_body("newCall", call_id, from, agent), hangup]
            }
        }
    }

    fn events(self) -> u64 {
        match self {
            BlastCall::Answered => 3,
            BlastCall::Cancelled => 2,
        }
    }
}

/// The sustained-events phase: `concurrency` workers, each posting the events of one fresh
/// call after another until `duration` is over (or `max_events` were begun).
pub struct BlastSpec<'a> {
    /// Prefix of the progress lines, e.g. `[events]`.
    pub tag: &'a str,
    pub kind: BlastCall,
    pub concurrency: u32,
    pub duration: Duration,
    pub max_events: Option<u64>,
    pub contacts: u64,
    pub unknown_percent: u8,
    pub seed: u64,
    pub agents: u32,
    /// Call `n` has the call id `{call_prefix}-{n}`.
    pub call_prefix: String,
}

pub struct BlastDone {
    /// Events answered 2xx / refused or failed.
    pub ok: u64,
    pub errors: u64,
    pub lat: Samples,
    pub first_error: Option<String>,
    pub span: Duration,
    /// Calls whose `newCall` was accepted (each should pop once).
    pub new_calls_ok: u64,
}

/// Runs the sustained-events phase against `cti_urls` (one per node): call `n` goes to
/// node `n % nodes` for agent `(n / nodes) % agents`, as in `run_calls`.
pub async fn blast(spec: &BlastSpec<'_>, http: &reqwest::Client, cti_urls: &[String], nodes: &mut [Server]) -> anyhow::Result<BlastDone> {
    if cti_urls.is_empty() {
        bail!("no node to send the events to");
    }
    let cti_urls: Arc<Vec<String>> = Arc::new(cti_urls.to_vec());
    let next_call = Arc::new(AtomicU64::new(0));
    let blast_start = Instant::now();
    let stop_at = blast_start + spec.duration;
    let mut workers = JoinSet::new();
    for w in 0..spec.concurrency {
        let (http, cti_urls, next_call, prefix) = (http.clone(), cti_urls.clone(), next_call.clone(), spec.call_prefix.clone());
        let (contacts, unknown, seed, agents_n, max_events, kind) = (spec.contacts, spec.unknown_percent, spec.seed, spec.agents, spec.max_events, spec.kind);
        workers.spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(1000 + u64::from(w)));
            let mut lat = Samples::with_capacity(4096);
            let (mut ok, mut errors, mut new_calls_ok) = (0u64, 0u64, 0u64);
            let mut first_error: Option<String> = None;
            let n_nodes = cti_urls.len() as u64;
            while Instant::now() < stop_at {
                let n = next_call.fetch_add(1, Ordering::Relaxed);
                if max_events.is_some_and(|m| n * kind.events() >= m) {
                    break;
                }
                let caller = numbers::pick_pbx_caller(&mut rng, contacts, unknown);
                let call_id = format!("{prefix}-{n}");
                let agent = agent_id((n / n_nodes) % u64::from(agents_n));
                let cti_url = &cti_urls[(n % n_nodes) as usize];
                for (i, body) in kind.bodies(&call_id, &caller.written, &agent).iter().enumerate() {
                    match post(&http, cti_url, body, false).await {
                        Ok(d) => {
                            ok += 1;
                            new_calls_ok += u64::from(i == 0);
                            lat.push(d);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            BlastDone { ok, errors, lat, first_error, span: Duration::ZERO, new_calls_ok }
        });
    }
    let mut all = BlastDone { ok: 0, errors: 0, lat: Samples::default(), first_error: None, span: Duration::ZERO, new_calls_ok: 0 };
    let mut tick = tokio::time::interval_at((blast_start + Duration::from_secs(5)).into(), Duration::from_secs(5));
    loop {
        tokio::select! {
            done = workers.join_next() => match done {
                Some(r) => {
                    let r = r?;
                    all.ok += r.ok;
                    all.errors += r.errors;
                    all.new_calls_ok += r.new_calls_ok;
                    all.lat.merge(r.lat);
                    if all.first_error.is_none() { all.first_error = r.first_error; }
                }
                None => break,
            },
            _ = tick.tick() => {
                for node in nodes.iter_mut() {
                    node.check_alive()?;
                }
                say(format!("{} {:>4.0} s: {} calls begun", spec.tag, blast_start.elapsed().as_secs_f64(), next_call.load(Ordering::Relaxed)));
            }
        }
    }
    all.span = blast_start.elapsed();
    Ok(all)
}
