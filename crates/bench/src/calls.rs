//! Calls at a steady rate: each one `newCall` timed to its pop on the agent's stream, answer,
//! hangup and wrap-up, and the figures of a run of them (pop, scale-out phases).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::agents::{FrameCounts, Waiters, agent_id};
use crate::http::{encode, post};
use crate::numbers::{self, Rng};
use crate::report::say;
use crate::server::{ADMIN_TOKEN, Server};
use crate::stats::Samples;

/// The dialed number of every benchmark call (our own switchboard).
pub const DIALED: &str = "+12125550000";

pub struct CallCtx {
    pub http: reqwest::Client,
    pub cti_url: String,
    pub base: String,
    pub waiters: Waiters,
    pub pop_timeout: Duration,
}

#[derive(Default)]
pub struct CallResult {
    start_lag: Duration,
    new_call_http: Option<Duration>,
    wrapup_http: Option<Duration>,
    pop: Option<Duration>,
    pop_action_ok: Option<bool>,
    completed: bool,
    error: Option<String>,
    /// Posted to another node than the one its agent's stream is on.
    remote: bool,
}

pub fn cti_body(event: &str, call_id: &str, from: &str, agent: &str) -> Value {
    let mut body = json!({ "event": event, "from": from, "to": DIALED, "direction": "in", "callId": call_id, "user": agent });
    match event {
        "answer" => body["answeringNumber"] = Value::Null,
        "hangup" => body["cause"] = json!("normalClearing"),
        _ => {}
    }
    body
}

fn expected_action(matches: u32) -> &'static str {
    match matches {
        0 => "create",
        1 => "open",
        _ => "list",
    }
}

/// One call: newCall (timed to its pop), answer at +50 ms, hangup at +250 ms, wrap-up.
async fn one_call(ctx: Arc<CallCtx>, call_id: String, caller: numbers::Caller, agent: String, scheduled: Instant) -> CallResult {
    let mut out = CallResult::default();
    let (tx, rx) = oneshot::channel();
    if let Ok(mut w) = ctx.waiters.lock() {
        w.insert(call_id.clone(), tx);
    }
    let t0 = Instant::now();
    out.start_lag = t0.saturating_duration_since(scheduled);
    let new_call = post(&ctx.http, &ctx.cti_url, &cti_body("newCall", &call_id, &caller.written, &agent), false).await;
    match new_call {
        Ok(d) => out.new_call_http = Some(d),
        Err(e) => {
            if let Ok(mut w) = ctx.waiters.lock() {
                w.remove(&call_id);
            }
            out.error = Some(e);
            return out;
        }
    }
    tokio::time::sleep_until((t0 + Duration::from_millis(50)).into()).await;
    if let Err(e) = post(&ctx.http, &ctx.cti_url, &cti_body("answer", &call_id, &caller.written, &agent), false).await {
        out.error = Some(e);
    }
    tokio::time::sleep_until((t0 + Duration::from_millis(250)).into()).await;
    if let Err(e) = post(&ctx.http, &ctx.cti_url, &cti_body("hangup", &call_id, &caller.written, &agent), false).await {
        out.error.get_or_insert(e);
    }
    // The reader stamped the pop when it arrived; waiting for it only now does not change that.
    let seen = tokio::time::timeout_at((t0 + ctx.pop_timeout).into(), rx).await;
    let conversation_id = match seen {
        Ok(Ok(p)) => {
            out.pop = Some(p.at.saturating_duration_since(t0));
            out.pop_action_ok = Some(p.action == expected_action(caller.expected));
            Some(p.conversation_id)
        }
        _ => {
            if let Ok(mut w) = ctx.waiters.lock() {
                w.remove(&call_id);
            }
            find_conversation(&ctx, &call_id).await
        }
    };
    let Some(id) = conversation_id else {
        out.error.get_or_insert(format!("no conversation found for callId {call_id}"));
        return out;
    };
    let wrapup = json!({ "disposition": { "code": "sale", "category": "won" }, "notes": "bench" });
    match post(&ctx.http, &format!("{}/api/v1/conversations/{}/wrapup", ctx.base, encode(&id)), &wrapup, true).await {
        Ok(d) => {
            out.wrapup_http = Some(d);
            out.completed = true;
        }
        Err(e) => {
            out.error.get_or_insert(e);
        }
    }
    out
}

/// The hub id of the conversation with external id `call_id`, via the API.
async fn find_conversation(ctx: &CallCtx, call_id: &str) -> Option<String> {
    let url = format!("{}/api/v1/conversations?external_id={}", ctx.base, encode(call_id));
    let v: Value = ctx.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.ok()?.json().await.ok()?;
    v["conversations"][0]["id"].as_str().map(str::to_string)
}

/// The calls of one pop phase.
pub struct CallPlan<'a> {
    /// Prefix of the progress lines, e.g. `[pop]`.
    pub tag: &'a str,
    /// Calls started per second.
    pub rate: u32,
    pub total: u64,
    /// Agents connected (see `connect_agents`).
    pub agents: u32,
    /// Contacts in the CRM, for picking callers.
    pub contacts: u64,
    pub unknown_percent: u8,
    /// Call `j` has the call id `{call_prefix}-{j}`.
    pub call_prefix: String,
}

pub struct CallsDone {
    pub results: Vec<CallResult>,
    /// From the first call's scheduled start to the last call's start.
    pub started_for: Duration,
}

/// Starts `plan.total` calls at `plan.rate` per second from `start`, each one `one_call`,
/// and waits for all of them. With `n` nodes call `j` goes to node `j % n` (`ctxs[j % n]`)
/// for agent `(j / n) % agents`, whose stream `connect_agents` put on node `agent % n`: so
/// about half of the calls pop across the bus with two nodes (and, with one node, call `j`
/// is simply for agent `j % agents`). `nodes` are checked to be alive every 5 s.
pub async fn run_calls(plan: &CallPlan<'_>, ctxs: &[Arc<CallCtx>], nodes: &mut [Server], counts: &FrameCounts, rng: &mut Rng, start: Instant) -> anyhow::Result<CallsDone> {
    let n = ctxs.len() as u64;
    if n == 0 || nodes.is_empty() {
        bail!("no node to send the calls to");
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
    let mut calls = JoinSet::new();
    let mut results: Vec<CallResult> = Vec::with_capacity(plan.total as usize);
    let mut next_report = start + Duration::from_secs(5);
    for j in 0..plan.total {
        let at = start + period.mul_f64(j as f64);
        tokio::time::sleep_until(at.into()).await;
        let caller = numbers::pick_pbx_caller(rng, plan.contacts, plan.unknown_percent);
        let node = j % n;
        let agent = (j / n) % u64::from(plan.agents);
        let remote = agent % n != node;
        let ctx = ctxs[node as usize].clone();
        let call = one_call(ctx, format!("{}-{j}", plan.call_prefix), caller, agent_id(agent), at);
        calls.spawn(async move { CallResult { remote, ..call.await } });
        while let Some(done) = calls.try_join_next() {
            results.push(done?);
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            for node in nodes.iter_mut() {
                node.check_alive()?;
            }
            say(format!(
                "{} {:>4.0} s: {} calls started, {} pops received, {} calls in flight",
                plan.tag,
                at.duration_since(start).as_secs_f64(),
                j + 1,
                counts.pop.load(Ordering::Relaxed),
                calls.len()
            ));
        }
    }
    let started_for = start.elapsed();
    while let Some(done) = calls.join_next().await {
        results.push(done?);
    }
    Ok(CallsDone { results, started_for })
}

/// What the calls of a pop phase measured.
#[derive(Default)]
pub struct CallFigures {
    pub pops: Samples,
    /// Pops of calls posted to the node their agent is connected to / to another node.
    pub pops_local: Samples,
    pub pops_remote: Samples,
    pub new_call: Samples,
    pub wrapups: Samples,
    pub lag: Samples,
    pub missing: u64,
    /// Calls posted to another node than their agent's, and how many of those did not pop.
    pub remote: u64,
    pub missing_remote: u64,
    pub wrong_action: u64,
    pub completed: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

impl CallFigures {
    pub fn of(results: &[CallResult]) -> CallFigures {
        let n = results.len();
        let mut f = CallFigures {
            pops: Samples::with_capacity(n),
            new_call: Samples::with_capacity(n),
            wrapups: Samples::with_capacity(n),
            lag: Samples::with_capacity(n),
            ..CallFigures::default()
        };
        for r in results {
            f.lag.push(r.start_lag);
            f.remote += u64::from(r.remote);
            match r.pop {
                Some(d) => {
                    f.pops.push(d);
                    if r.remote { f.pops_remote.push(d) } else { f.pops_local.push(d) }
                }
                None => {
                    f.missing += 1;
                    f.missing_remote += u64::from(r.remote);
                }
            }
            if let Some(d) = r.new_call_http {
                f.new_call.push(d);
            }
            if let Some(d) = r.wrapup_http {
                f.wrapups.push(d);
            }
            f.wrong_action += u64::from(r.pop_action_ok == Some(false));
            f.completed += u64::from(r.completed);
            if let Some(e) = &r.error {
                f.failed += 1;
                f.first_error.get_or_insert_with(|| e.clone());
            }
        }
        f
    }
}
