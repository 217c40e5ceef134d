//! `cxbridge-bench`: drives a real `cxbridge` process over loopback and prints latency,
//! throughput and memory figures next to the targets. A program, not a timed test: run
//! it on a quiet machine and copy what it prints into `docs/BENCHMARKS.md`.
//!
//! Phases: generate and import contacts → start the server → loopback floor → identify
//! latency → IVR lookup latency at a steady open-loop rate (`ivr.rs`) → pop latency at a
//! steady call rate (with the outbox writing activities) → outbox drain → sustained CTI
//! events/s → memory → SIP call setups through Kamailio, static route vs the hub's lookup
//! (`sip.rs`); then the CRM phase (the hub against the Dataverse test server:
//! identification through the local index vs direct queries, activities written with
//! `$batch` vs one request each, see `crm.rs`) → table.

mod cluster;
mod crm;
mod ivr;
mod numbers;
mod server;
mod sip;
mod stats;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::numbers::Rng;
use crate::server::{ADMIN_TOKEN, CTI_TOKEN, Server};
use crate::stats::{Samples, ms};

/// Benchmark for cxbridge: starts a real `cxbridge serve` on 127.0.0.1 with a temporary
/// data directory holding N imported contacts, then measures the HTTP floor, caller
/// identification, IVR lookups at a steady open-loop rate, screen-pop latency over agent
/// WebSockets at a steady call rate, sustained CTI events per second, outbox delivery, the
/// server's peak memory, and SIP call setups per second through Kamailio (SIPp callers and
/// agent phone; static route vs the hub's lookup vs lookup + CTI reporting). Then the CRM
/// phase: a Dataverse test server (in this process) with --crm-contacts contacts, and
/// cxbridge started against it three times — with the local phone index (identify latency,
/// activities/s with batch_size = 100, i.e. `$batch` requests), without it (identify latency
/// by direct `$filter` queries), and with the index and batch_size = 1 (activities/s, one
/// request each). Prints everything next to the targets. All traffic stays on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(name = "cxbridge-bench", version)]
struct Args {
    /// Path to the `cxbridge` binary under test.
    #[arg(long, value_name = "PATH", default_value = "target/release/cxbridge")]
    cxbridge: PathBuf,
    /// Contacts to generate and import into the built-in CRM before serving (mixed phone
    /// notations; every 10th has a mobile; every 50th shares a number with its neighbour).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    contacts: u64,
    /// Agents connected by WebSocket to their stream during the pop and throughput phases.
    #[arg(long, value_name = "K", default_value_t = 50)]
    agents: u32,
    /// Calls started per second in the pop phase (each call: newCall, answer +50 ms,
    /// hangup +250 ms, then wrap-up).
    #[arg(long, value_name = "CALLS_PER_SEC", default_value_t = 200)]
    rate: u32,
    /// Length of the pop phase in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    duration: u64,
    /// Sequential `GET /healthz` requests measured for the loopback floor.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    healthz_requests: u32,
    /// Sequential `GET /api/v1/identify` requests measured.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    identify_requests: u32,
    /// Percentage of identify lookups and calls that come from numbers not in the CRM.
    #[arg(long, value_name = "PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    unknown_percent: u8,
    /// How long to wait for a call's pop frame before counting it as missing, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pop_timeout_ms: u64,
    /// CTI requests in flight during the sustained events/s phase.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: u32,
    /// Length of the sustained events/s phase in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    blast_duration: u64,
    /// Stop the sustained events/s phase after this many events even if time is left.
    #[arg(long, value_name = "N")]
    blast_events: Option<u64>,
    /// Longest wait for the outbox to drain (pending = 0) after the pop phase, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    drain_timeout: u64,
    /// Seed for the choice of callers and notations (same seed, same traffic).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run `cxbridge` (import and serve) pinned to these CPUs with `taskset -c`, e.g. `0`:
    /// on a machine where waking a thread on another CPU is expensive this shows how much
    /// of the figures is hand-off cost.
    #[arg(long, value_name = "CPUS")]
    pin_server: Option<String>,
    /// Configuration file passed to `cxbridge import` and `cxbridge serve` as `--config`
    /// (e.g. to compare `[server] durability = "normal"`); listen address and data
    /// directory are always the benchmark's own. Not used by the CRM phase, which writes
    /// its own configuration (kept with --keep-data).
    #[arg(long, value_name = "FILE")]
    server_config: Option<PathBuf>,
    /// Keep the temporary directory (data, CSV, server logs, CRM-phase configs) and print its path.
    #[arg(long)]
    keep_data: bool,
    /// Run only the CRM phase (no import, no built-in-CRM phases): cxbridge against the
    /// Dataverse test server, local index vs direct queries, `$batch` vs one request per
    /// activity. Takes about 25 s with the defaults. Combines with --ivr and --sip.
    #[arg(long, conflicts_with = "skip_crm")]
    crm: bool,
    /// Leave the CRM phase out of the full run.
    #[arg(long)]
    skip_crm: bool,
    /// Run only the IVR lookup phase (with the import, the server and the loopback floor it
    /// needs; no identify, pop, events, SIP or CRM phase). Combines with --sip and --crm.
    #[arg(long, conflicts_with = "skip_ivr")]
    ivr: bool,
    /// Leave the IVR lookup phase out of the full run.
    #[arg(long)]
    skip_ivr: bool,
    /// IVR lookups (`GET /api/v1/ivr/lookup?ani=…`) started per second, each at its scheduled
    /// time whether or not earlier ones have been answered (open loop).
    #[arg(long, value_name = "PER_SEC", default_value_t = 1000)]
    ivr_rate: u32,
    /// IVR lookups measured (after 100 sequential unmeasured ones).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    ivr_lookups: u32,
    /// Run only the SIP phase (with the import and the server it needs). Combines with
    /// --ivr and --crm. Needs `kamailio` (with kamailio-utils-modules and
    /// kamailio-json-modules) and `sipp`; without them the phase is skipped with the reason.
    #[arg(long, conflicts_with = "skip_sip")]
    sip: bool,
    /// Leave the SIP phase out of the full run.
    #[arg(long)]
    skip_sip: bool,
    /// Calls per second the SIPp caller places in each SIP mode (static route, hub lookup,
    /// hub lookup + CTI), through Kamailio to one SIPp agent phone.
    #[arg(long, value_name = "CALLS_PER_SEC", default_value_t = 500)]
    sip_rate: u32,
    /// Seconds of calls per SIP mode (the caller places sip-rate × sip-secs calls).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    sip_secs: u64,
    /// Directory with the Kamailio example: kamailio.cfg and sipp/*.xml.
    #[arg(long, value_name = "DIR", default_value = "examples/kamailio")]
    kamailio_example: PathBuf,
    /// Contacts loaded into the Dataverse test server for the CRM phase (phones in the five
    /// notations the adapter's `$filter` searches; every 10th has a mobile; every 50th
    /// shares its neighbour's number). The test server scans every contact per query.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    crm_contacts: u64,
    /// Sequential `GET /api/v1/identify` measured in the CRM phase, once through the local
    /// index and once by direct Dataverse queries (same callers, same order).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    crm_identify_requests: u32,
    /// Unanswered calls (newCall, then hangup with cause `cancel`: memorialized at once)
    /// pushed in each activities run of the CRM phase; one activity each.
    #[arg(long, value_name = "M", default_value_t = 5000)]
    crm_activities: u64,
    /// CTI requests in flight while pushing those calls.
    #[arg(long, value_name = "N", default_value_t = 16)]
    crm_concurrency: u32,
    /// Delay the Dataverse test server adds before answering each Web API request, in ms:
    /// a stand-in for the network round trip to a real environment (0 = loopback only). It
    /// delays every HTTP request alike, a `$batch` of 100 as much as a single PATCH.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    crm_latency_ms: u64,
    /// Run only the scale-out phase: the same workload on SQLite with one node, PostgreSQL +
    /// NATS with one node, and PostgreSQL + NATS with two nodes (events round-robin to both,
    /// agents split across them, so about half of the pops cross the bus), figures side by
    /// side. Per setup: import --scale-contacts, --agents streams, pops at --rate for
    /// --scale-secs (p50/p99, missing, duplicated), --concurrency CTI requests in flight for
    /// --blast-duration s of unanswered calls (newCall, hangup `cancel`), outbox deliveries/s
    /// until nothing is pending (at most --drain-timeout), CPU and peak RSS per node. Needs
    /// --postgres-url and --nats-url; writes its own configuration (--server-config is not
    /// used). About 3 minutes with the defaults. Combines with --crm, --ivr and --sip.
    #[arg(long, conflicts_with = "skip_scale_out")]
    scale_out: bool,
    /// Leave the scale-out phase out of the full run (it is skipped anyway, with the reason,
    /// without a PostgreSQL and a NATS URL).
    #[arg(long)]
    skip_scale_out: bool,
    /// PostgreSQL server for the scale-out phase, as a URL with the right to create databases:
    /// each setup gets a fresh database (dropped afterwards unless --keep-data).
    #[arg(long, value_name = "URL", env = "CXBRIDGE_TEST_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// NATS server with JetStream for the scale-out phase; each setup gets a stream and
    /// subject prefix of its own (the stream is deleted afterwards unless --keep-data).
    #[arg(long, value_name = "URL", env = "CXBRIDGE_TEST_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Contacts imported (with `cxbridge import contact`) into each scale-out setup.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    scale_contacts: u64,
    /// Length of each scale-out setup's pop phase in seconds (at --rate calls/s).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    scale_secs: u64,
}

/// Which phases this run does: the --crm / --ivr / --sip / --scale-out flags select only
/// those, the --skip-* flags leave phases out of the full run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Identify, pop, outbox, events and memory against the built-in CRM.
    main: bool,
    ivr: bool,
    sip: bool,
    crm: bool,
    scale_out: bool,
    /// Whether the phases were asked for one by one (then a phase that cannot run is an error).
    selected: bool,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        if args.crm || args.ivr || args.sip || args.scale_out {
            Plan { main: false, ivr: args.ivr, sip: args.sip, crm: args.crm, scale_out: args.scale_out, selected: true }
        } else {
            Plan { main: true, ivr: !args.skip_ivr, sip: !args.skip_sip, crm: !args.skip_crm, scale_out: !args.skip_scale_out, selected: false }
        }
    }

    /// Whether the contacts are imported and a server started for the built-in CRM.
    fn server(self) -> bool {
        self.main || self.ivr || self.sip
    }
}

/// Targets from the issue; the table prints them next to the figures.
const TARGET_POP_P99_MS: f64 = 5.0;
const TARGET_IDENTIFY_P99_MS: f64 = 1.0;
const TARGET_EVENTS_PER_SEC: f64 = 5000.0;
const TARGET_RSS_MB: f64 = 300.0;

/// The dialed number of every benchmark call (our own switchboard).
const DIALED: &str = "+12125550000";

fn say(msg: impl AsRef<str>) {
    println!("{}", msg.as_ref());
    let _ = std::io::stdout().flush();
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Percent-encodes a query value (reqwest's `query` needs a feature we do not enable).
fn encode(s: &str) -> String {
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

const FIRST: &[&str] = &["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena", "Mateo", "Nora", "Omar", "Priya"];
const LAST: &[&str] = &["Novak", "Schmidt", "Garcia", "Smith", "Dvorak", "Kim", "Rossi", "Okafor", "Larsen", "Silva", "Chen", "Meyer", "Haddad", "Kowalski", "Brown", "Tanaka"];

/// Writes the contacts CSV (`id,name,phone,mobile`).
fn write_csv(path: &std::path::Path, contacts: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(w, "id,name,phone,mobile")?;
    let step = 250_000;
    for i in 0..contacts {
        let name = format!("{} {} {i}", FIRST[(i % 16) as usize], LAST[((i / 16) % 16) as usize]);
        let phone = numbers::written(numbers::stored_phone(i), i);
        let mobile = if numbers::has_mobile(i) { numbers::written(numbers::mobile_base() + i, i / 10 + 3) } else { String::new() };
        writeln!(w, "C{i:08},{name},{phone},{mobile}")?;
        if (i + 1) % step == 0 {
            println!("  generated {} of {contacts} rows", i + 1);
        }
    }
    w.flush()?;
    Ok(())
}

/// `GET /healthz` as JSON.
async fn health(http: &reqwest::Client, server: &Server) -> anyhow::Result<Value> {
    let r = http.get(server.url("/healthz")).send().await.context("GET /healthz failed")?;
    let status = r.status();
    let v: Value = r.json().await.context("GET /healthz did not return JSON")?;
    if !status.is_success() {
        bail!("GET /healthz answered {status}: {v}");
    }
    Ok(v)
}

#[derive(Debug, Clone, Copy, Default)]
struct Outbox {
    pending: u64,
    delivered: u64,
    dead: u64,
}

fn outbox(v: &Value) -> anyhow::Result<Outbox> {
    let o = v.get("outbox").context("/healthz has no `outbox` field")?;
    let n = |k: &str| o.get(k).and_then(Value::as_u64).with_context(|| format!("/healthz outbox has no number `{k}`"));
    Ok(Outbox { pending: n("pending")?, delivered: n("delivered")?, dead: n("dead")? })
}

/// Sequential GETs of `path`, after a short warm-up; returns the latencies.
async fn sequential_gets(http: &reqwest::Client, url: &str, n: u32, expect_ok: bool) -> anyhow::Result<Samples> {
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

// ---------------------------------------------------------------- agent streams

/// What an agent's reader saw when a tracked call's pop arrived.
struct PopSeen {
    at: Instant,
    conversation_id: String,
    action: String,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<PopSeen>>>>;

#[derive(Default)]
struct FrameCounts {
    pop: AtomicU64,
    update: AtomicU64,
    end: AtomicU64,
    other: AtomicU64,
    /// Pop frames for a call that had popped before (each call goes to one agent, so any is
    /// a bug); counted only when `popped` is kept.
    duplicate_pops: AtomicU64,
    /// The external ids of the calls popped so far, when duplicates are looked for.
    popped: Option<Mutex<HashSet<String>>>,
}

struct Agents {
    readers: JoinSet<()>,
    counts: Arc<FrameCounts>,
    waiters: Waiters,
    /// While false the readers only count frames (the throughput phase).
    tracking: Arc<AtomicBool>,
}

fn agent_id(k: u64) -> String {
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
async fn connect_agents(nodes: &[String], k: u32, duplicates: bool) -> anyhow::Result<Agents> {
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

// ---------------------------------------------------------------- calls

struct CallCtx {
    http: reqwest::Client,
    cti_url: String,
    base: String,
    waiters: Waiters,
    pop_timeout: Duration,
}

#[derive(Default)]
struct CallResult {
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

fn cti_body(event: &str, call_id: &str, from: &str, agent: &str) -> Value {
    let mut body = json!({ "event": event, "from": from, "to": DIALED, "direction": "in", "callId": call_id, "user": agent });
    match event {
        "answer" => body["answeringNumber"] = Value::Null,
        "hangup" => body["cause"] = json!("normalClearing"),
        _ => {}
    }
    body
}

/// POSTs a JSON body; Ok(latency) on a 2xx, Err(message) otherwise.
async fn post(http: &reqwest::Client, url: &str, body: &Value, bearer: bool) -> Result<Duration, String> {
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
struct CallPlan<'a> {
    /// Prefix of the progress lines, e.g. `[pop]`.
    tag: &'a str,
    /// Calls started per second.
    rate: u32,
    total: u64,
    /// Agents connected (see `connect_agents`).
    agents: u32,
    /// Contacts in the CRM, for picking callers.
    contacts: u64,
    unknown_percent: u8,
    /// Call `j` has the call id `{call_prefix}-{j}`.
    call_prefix: String,
}

struct CallsDone {
    results: Vec<CallResult>,
    /// From the first call's scheduled start to the last call's start.
    started_for: Duration,
}

/// Starts `plan.total` calls at `plan.rate` per second from `start`, each one `one_call`,
/// and waits for all of them. With `n` nodes call `j` goes to node `j % n` (`ctxs[j % n]`)
/// for agent `(j / n) % agents`, whose stream `connect_agents` put on node `agent % n`: so
/// about half of the calls pop across the bus with two nodes (and, with one node, call `j`
/// is simply for agent `j % agents`). `nodes` are checked to be alive every 5 s.
async fn run_calls(plan: &CallPlan<'_>, ctxs: &[Arc<CallCtx>], nodes: &mut [Server], counts: &FrameCounts, rng: &mut Rng, start: Instant) -> anyhow::Result<CallsDone> {
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
struct CallFigures {
    pops: Samples,
    /// Pops of calls posted to the node their agent is connected to / to another node.
    pops_local: Samples,
    pops_remote: Samples,
    new_call: Samples,
    wrapups: Samples,
    lag: Samples,
    missing: u64,
    /// Calls posted to another node than their agent's, and how many of those did not pop.
    remote: u64,
    missing_remote: u64,
    wrong_action: u64,
    completed: u64,
    failed: u64,
    first_error: Option<String>,
}

impl CallFigures {
    fn of(results: &[CallResult]) -> CallFigures {
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

/// How each call of the sustained-events phase goes.
#[derive(Debug, Clone, Copy)]
enum BlastCall {
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
struct BlastSpec<'a> {
    /// Prefix of the progress lines, e.g. `[events]`.
    tag: &'a str,
    kind: BlastCall,
    concurrency: u32,
    duration: Duration,
    max_events: Option<u64>,
    contacts: u64,
    unknown_percent: u8,
    seed: u64,
    agents: u32,
    /// Call `n` has the call id `{call_prefix}-{n}`.
    call_prefix: String,
}

struct BlastDone {
    /// Events answered 2xx / refused or failed.
    ok: u64,
    errors: u64,
    lat: Samples,
    first_error: Option<String>,
    span: Duration,
    /// Calls whose `newCall` was accepted (each should pop once).
    new_calls_ok: u64,
}

/// Runs the sustained-events phase against `cti_urls` (one per node): call `n` goes to
/// node `n % nodes` for agent `(n / nodes) % agents`, as in `run_calls`.
async fn blast(spec: &BlastSpec<'_>, http: &reqwest::Client, cti_urls: &[String], nodes: &mut [Server]) -> anyhow::Result<BlastDone> {
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

// ---------------------------------------------------------------- figures

/// CPU used by the server and by this program over a span of wall time.
struct CpuMeter {
    wall: Instant,
    server: Duration,
    bench: Duration,
}

impl CpuMeter {
    fn start(srv: &Server) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter { wall: Instant::now(), server: srv.cpu()?, bench: server::cpu_time("self")? })
    }

    /// `server 123% / bench 45% CPU` (100% = one core busy).
    fn report(&self, srv: &Server) -> anyhow::Result<String> {
        let wall = self.wall.elapsed().as_secs_f64().max(0.001);
        let server = srv.cpu()?.saturating_sub(self.server).as_secs_f64() / wall * 100.0;
        let bench = server::cpu_time("self")?.saturating_sub(self.bench).as_secs_f64() / wall * 100.0;
        Ok(format!("server {server:.0}% / bench {bench:.0}%"))
    }
}

struct Row {
    name: String,
    measured: String,
    target: String,
    verdict: String,
}

fn row(name: impl Into<String>, measured: impl Into<String>, target: &str, verdict: Option<bool>) -> Row {
    Row {
        name: name.into(),
        measured: measured.into(),
        target: target.into(),
        verdict: match verdict {
            None => String::new(),
            Some(true) => "met".into(),
            Some(false) => "MISSED".into(),
        },
    }
}

fn print_table(rows: &[Row]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| vec![r.name.clone(), r.measured.clone(), r.target.clone(), r.verdict.clone()]).collect();
    print_grid(&["figure", "measured", "target", "result"], &cells);
}

/// A Markdown table: each column as wide as its widest cell or heading, in bytes (as the
/// tables in docs/BENCHMARKS.md always were; a cell with `→` gets a little more room).
fn print_grid(headings: &[&str], rows: &[Vec<String>]) {
    for line in grid_lines(headings, rows) {
        say(line);
    }
}

fn grid_lines(headings: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> =
        headings.iter().enumerate().map(|(i, h)| rows.iter().filter_map(|r| r.get(i)).map(String::len).max().unwrap_or(0).max(h.len())).collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = widths.iter().map(|&w| format!(" {:<w$} ", cells.next().unwrap_or(""))).collect();
        format!("|{}|", parts.join("|"))
    };
    let mut out = vec![line(&mut headings.iter().copied())];
    out.push(format!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")));
    for r in rows {
        out.push(line(&mut r.iter().map(String::as_str)));
    }
    out
}


// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("cxbridge-bench: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    server::check_binary(&args.cxbridge)?;
    if let Some(f) = &args.server_config
        && !f.is_file()
    {
        bail!("--server-config {}: no such file", f.display());
    }
    if args.contacts > numbers::mobile_base() / 2 || args.crm_contacts > numbers::mobile_base() / 2 || args.scale_contacts > numbers::mobile_base() / 2 {
        bail!("--contacts, --crm-contacts and --scale-contacts must be at most {}", numbers::mobile_base() / 2);
    }
    if args.scale_contacts == 0 || args.scale_secs == 0 {
        bail!("--scale-contacts and --scale-secs must be at least 1");
    }
    if args.rate == 0 || args.agents == 0 || args.concurrency == 0 {
        bail!("--rate, --agents and --concurrency must be at least 1");
    }
    if args.crm_contacts == 0 || args.crm_identify_requests == 0 || args.crm_activities == 0 || args.crm_concurrency == 0 {
        bail!("--crm-contacts, --crm-identify-requests, --crm-activities and --crm-concurrency must be at least 1");
    }
    if args.ivr_rate == 0 || args.ivr_lookups == 0 || args.sip_rate == 0 || args.sip_secs == 0 {
        bail!("--ivr-rate, --ivr-lookups, --sip-rate and --sip-secs must be at least 1");
    }
    let plan = Plan::of(&args);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut what = vec![];
    if plan.server() {
        what.push(format!("{} contacts", args.contacts));
    }
    if plan.main {
        what.push(format!(
            "{} agents, {} calls/s for {} s, {} CTI requests in flight for {} s",
            args.agents, args.rate, args.duration, args.concurrency, args.blast_duration
        ));
    }
    if plan.ivr {
        what.push(format!("IVR: {} lookups at {}/s", args.ivr_lookups, args.ivr_rate));
    }
    if plan.sip {
        what.push(format!("SIP: {} calls/s for {} s per mode", args.sip_rate, args.sip_secs));
    }
    if plan.crm {
        what.push("then the CRM phase".into());
    }
    if plan.scale_out {
        let then = if what.is_empty() { "" } else { "then " };
        what.push(format!("{then}the scale-out phase (SQLite / PostgreSQL + NATS, 1 and 2 nodes)"));
    }
    say(format!("cxbridge-bench: {}; {cores} CPU cores; binary {}", what.join(", "), args.cxbridge.display()));
    let (handoff_p50, handoff_p99) = stats::handoff_round_trip_us(20_000);
    let machine = format!("thread hand-off round trip p50 / p99 {handoff_p50:.1} / {handoff_p99:.1} µs");
    say(format!("[machine] {machine}{}", args.pin_server.as_deref().map_or(String::new(), |c| format!("; server pinned to CPU {c}"))));
    server::pin_to(args.pin_server.clone());

    // rustls needs its crypto provider installed before a client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;

    let dir = tempfile::Builder::new().prefix("cxbridge-bench-").tempdir().context("cannot create a temporary directory")?;
    let mut rows: Vec<Row> = vec![];
    let mut result = Ok(());
    if plan.server() {
        result = main_phases(&args, plan, &http, dir.path(), &mut rows).await;
    }
    if result.is_ok() && plan.crm {
        result = crm::phase(&args, &http, dir.path(), &mut rows).await;
    }
    let mut scale_out = None;
    if result.is_ok() && plan.scale_out {
        match cluster::phase(&args, &http, dir.path(), plan.selected).await {
            Ok(t) => scale_out = t,
            Err(e) => result = Err(e),
        }
    }
    if args.keep_data {
        let kept = dir.keep();
        say(format!("kept {}", kept.display()));
    }
    result?;

    say("");
    let mut parts = vec![];
    if plan.server() {
        parts.push(format!("{} contacts", args.contacts));
    }
    if plan.main {
        parts.push(format!("{} agents, {} calls/s × {} s, {} in flight × {} s", args.agents, args.rate, args.duration, args.concurrency, args.blast_duration));
    }
    if plan.ivr {
        parts.push(format!("IVR: {} lookups at {}/s", args.ivr_lookups, args.ivr_rate));
    }
    if plan.sip {
        parts.push(format!("SIP: {} calls/s × {} s per mode", args.sip_rate, args.sip_secs));
    }
    if plan.crm {
        parts.push(format!(
            "CRM: {} contacts in the Dataverse test server, {} lookups, {} activities{}",
            args.crm_contacts,
            args.crm_identify_requests,
            args.crm_activities,
            if args.crm_latency_ms > 0 { format!(", +{} ms per Dataverse request", args.crm_latency_ms) } else { String::new() }
        ));
    }
    if !rows.is_empty() {
        let pinned = args.pin_server.as_deref().map_or(String::new(), |c| format!(", server pinned to CPU {c}"));
        say(format!("Results ({}, {cores} cores{pinned}; {machine}):", parts.join("; ")));
        print_table(&rows);
    }
    if let Some(t) = scale_out {
        if !rows.is_empty() {
            say("");
        }
        say(format!("Results ({}, {cores} cores):", t.summary));
        let headings: Vec<&str> = t.headings.iter().map(String::as_str).collect();
        print_grid(&headings, &t.rows);
    }
    Ok(())
}

/// Import, serve, and the phases against the built-in CRM that `plan` selects.
async fn main_phases(args: &Args, plan: Plan, http: &reqwest::Client, dir: &std::path::Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let data = dir.join("data");
    let csv = dir.join("contacts.csv");
    let log = dir.join("server.log");

    // Phase 0: contacts.
    say(format!("[setup] generating {} contacts into {}", args.contacts, csv.display()));
    let t = Instant::now();
    {
        let (csv, n) = (csv.clone(), args.contacts);
        tokio::task::spawn_blocking(move || write_csv(&csv, n)).await??;
    }
    say(format!("[setup] generated in {:.1} s; importing with `cxbridge import contact`", t.elapsed().as_secs_f64()));
    let import_took = server::import(&args.cxbridge, args.server_config.as_deref(), &data, &csv).await?;
    let import_rate = args.contacts as f64 / import_took.as_secs_f64().max(0.001);
    say(format!("[setup] import took {:.1} s ({import_rate:.0} contacts/s)", import_took.as_secs_f64()));
    let _ = std::fs::remove_file(&csv);

    say("[setup] starting `cxbridge serve`");
    let mut srv = Server::start(&args.cxbridge, args.server_config.as_deref(), &data, &log, http).await?;
    let (_, rss_start) = srv.memory()?;
    say(format!("[setup] server pid {} on 127.0.0.1:{}; RSS after start {:.0} MB; log {}", srv.pid, srv.port, mb(rss_start), srv.log.display()));

    let result = phases(args, plan, http, &mut srv, dir, import_took, rss_start, rows).await;
    let stopped = srv.stop(Duration::from_secs(10)).await;
    result?;
    stopped.context("could not stop the server")?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    args: &Args,
    plan: Plan,
    http: &reqwest::Client,
    srv: &mut Server,
    dir: &std::path::Path,
    import_took: Duration,
    rss_start: u64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    rows.push(row(
        format!("import {} contacts", args.contacts),
        format!("{:.1} s ({:.0}/s)", import_took.as_secs_f64(), args.contacts as f64 / import_took.as_secs_f64().max(0.001)),
        "",
        None,
    ));

    // Phase 1: the loopback floor.
    say(format!("[floor] {} sequential GET /healthz (and the same number of GET of an unknown path: HTTP without the database)", args.healthz_requests));
    let mut floor = sequential_gets(http, &srv.url("/healthz"), args.healthz_requests, true).await?;
    let mut floor404 = sequential_gets(http, &srv.url("/bench-no-such-path"), args.healthz_requests, false).await?;
    say(format!("[floor] /healthz p50/p99 {}; 404 p50/p99 {}", floor.p50_p99(), floor404.p50_p99()));
    if let Some(p99) = floor.percentile_ms(99.0) {
        stats::set_floor_p99(p99);
    }
    rows.push(row("loopback floor GET /healthz p50 / p99", floor.p50_p99(), "", None));
    rows.push(row("HTTP floor GET 404 (no DB) p50 / p99", floor404.p50_p99(), "", None));

    if plan.main {
        identify_phase(args, http, srv, rows).await?;
    }
    if plan.ivr {
        ivr::phase(args, http, srv, &floor.p50_p99(), rows).await?;
    }
    if plan.main {
        load_phases(args, http, srv, rss_start, rows).await?;
    }
    if plan.sip {
        sip::phase(args, http, srv, dir, rows).await?;
    }
    Ok(())
}

/// Phase 2: sequential identifications, each answer checked.
async fn identify_phase(args: &Args, http: &reqwest::Client, srv: &Server, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    say(format!("[identify] {} sequential GET /api/v1/identify, {}% unknown callers, rotating notations", args.identify_requests, args.unknown_percent));
    let mut rng = Rng::new(args.seed);
    for _ in 0..100 {
        let c = numbers::pick_caller(&mut rng, args.contacts, args.unknown_percent);
        http.get(srv.url(&format!("/api/v1/identify?address={}", encode(&c.written)))).bearer_auth(ADMIN_TOKEN).send().await?.bytes().await?;
    }
    let mut ident = Samples::with_capacity(args.identify_requests as usize);
    let (mut wrong, mut known) = (0u64, 0u64);
    let mut first_wrong: Option<String> = None;
    for _ in 0..args.identify_requests {
        let c = numbers::pick_caller(&mut rng, args.contacts, args.unknown_percent);
        let url = srv.url(&format!("/api/v1/identify?address={}", encode(&c.written)));
        let t = Instant::now();
        let r = http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.with_context(|| format!("GET {url} failed"))?;
        let status = r.status();
        let body = r.bytes().await?;
        ident.push(t.elapsed());
        if !status.is_success() {
            bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let v: Value = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
        let n = v["identification"]["candidates"].as_array().map_or(0, Vec::len) as u32;
        known += u64::from(c.expected > 0);
        if n != c.expected || v["e164"].as_str() != Some(numbers::e164(c.idx).as_str()) {
            wrong += 1;
            first_wrong.get_or_insert_with(|| format!("{} (expected {} match(es) as {}): {v}", c.written, c.expected, numbers::e164(c.idx)));
        }
    }
    say(format!("[identify] p50/p99 {}; {known} known callers; {wrong} answers not as expected", ident.p50_p99()));
    if let Some(w) = &first_wrong {
        say(format!("[identify] WARNING: first unexpected answer: {w}"));
    }
    let ident_p99 = ident.percentile_ms(99.0).unwrap_or(f64::MAX);
    rows.push(row("identify p50 / p99", format!("{}{}", ident.p50_p99(), stats::vs_floor(Some(ident_p99))), "p99 < 1 ms", Some(ident_p99 < TARGET_IDENTIFY_P99_MS)));
    rows.push(row("identify answers not as expected", format!("{wrong} of {}", args.identify_requests), "0", Some(wrong == 0)));
    Ok(())
}

/// Phases 3–6: pops at a steady call rate, outbox drain, sustained events/s, memory.
async fn load_phases(args: &Args, http: &reqwest::Client, srv: &mut Server, rss_start: u64, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // The pop phase's callers follow the identify phase's in the same sequence.
    let mut rng = Rng::new(args.seed);
    for _ in 0..100 + args.identify_requests {
        numbers::pick_caller(&mut rng, args.contacts, args.unknown_percent);
    }

    // Phase 3: pops at a steady rate.
    say(format!("[pop] connecting {} agent streams", args.agents));
    let mut agents = connect_agents(&[srv.ws_url("")], args.agents, false).await?;
    // Open enough pooled connections that calls do not pay for TCP set-up.
    {
        let mut warm = JoinSet::new();
        for _ in 0..96 {
            let (h, u) = (http.clone(), srv.url("/healthz"));
            warm.spawn(async move { h.get(u).send().await.map(|_| ()) });
        }
        while warm.join_next().await.is_some() {}
    }
    let before_pop = outbox(&health(http, srv).await?)?;
    let total_calls = u64::from(args.rate) * args.duration;
    say(format!("[pop] {} calls/s for {} s ({total_calls} calls): newCall → pop frame, answer +50 ms, hangup +250 ms, wrap-up", args.rate, args.duration));
    agents.tracking.store(true, Ordering::Relaxed);
    let ctx = Arc::new(CallCtx {
        http: http.clone(),
        cti_url: srv.url(&format!("/api/v1/cti/{CTI_TOKEN}")),
        base: srv.url(""),
        waiters: agents.waiters.clone(),
        pop_timeout: Duration::from_millis(args.pop_timeout_ms),
    });
    let run_id = std::process::id();
    let pop_cpu = CpuMeter::start(srv)?;
    let pop_start = Instant::now();
    let plan = CallPlan {
        tag: "[pop]",
        rate: args.rate,
        total: total_calls,
        agents: args.agents,
        contacts: args.contacts,
        unknown_percent: args.unknown_percent,
        call_prefix: format!("bench-{run_id}"),
    };
    let done = run_calls(&plan, &[ctx], std::slice::from_mut(srv), &agents.counts, &mut rng, pop_start + Duration::from_millis(100)).await?;
    let load_end = Instant::now();
    let pop_cpu = pop_cpu.report(srv)?;
    agents.tracking.store(false, Ordering::Relaxed);
    let achieved = total_calls as f64 / done.started_for.as_secs_f64().max(0.001);

    let CallFigures { mut pops, mut new_call, mut wrapups, mut lag, missing, wrong_action, completed, failed, first_error, .. } = CallFigures::of(&done.results);
    let pop_p99 = pops.percentile_ms(99.0).unwrap_or(f64::MAX);
    let pop_max = pops.max_ms().map_or("-".into(), ms);
    say(format!(
        "[pop] done: {total_calls} calls started at {achieved:.1} calls/s (start lag p99 {} ms); pop p50/p99 {}, max {pop_max} ms; {missing} missing; {completed} wrapped up; {failed} with errors; CPU {pop_cpu}",
        lag.percentile_ms(99.0).map_or("-".into(), ms),
        pops.p50_p99()
    ));
    if let Some(e) = &first_error {
        say(format!("[pop] WARNING: first error: {e}"));
    }
    if wrong_action > 0 {
        say(format!("[pop] WARNING: {wrong_action} pops chose an action other than the expected open/list/create"));
    }
    rows.push(row(
        format!("pop latency p50 / p99 at {} calls/s", args.rate),
        format!("{}{}", pops.p50_p99(), stats::vs_floor(Some(pop_p99))),
        "p99 < 5 ms at 200 calls/s",
        Some(pop_p99 < TARGET_POP_P99_MS && args.rate >= 200),
    ));
    rows.push(row("pop latency max", format!("{pop_max} ms"), "", None));
    rows.push(row("pops missing", format!("{missing} of {total_calls}"), "0", Some(missing == 0)));
    rows.push(row("calls started per second (achieved)", format!("{achieved:.1}"), "", None));
    rows.push(row("CTI newCall HTTP p50 / p99", new_call.p50_p99(), "", None));
    rows.push(row("wrap-up HTTP p50 / p99", wrapups.p50_p99(), "", None));
    rows.push(row("calls wrapped up / with errors", format!("{completed} / {failed}"), "", None));
    rows.push(row("CPU during the pop phase (100% = 1 core)", pop_cpu.clone(), "", None));

    // Phase 4: outbox drain.
    say(format!("[outbox] waiting up to {} s for pending activities to reach 0", args.drain_timeout));
    let at_load_end = outbox(&health(http, srv).await?)?;
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    let mut last = at_load_end;
    let mut drained_at = None;
    loop {
        if last.pending == 0 {
            drained_at = Some(Instant::now());
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = outbox(&health(http, srv).await?)?;
    }
    let written = last.delivered.saturating_sub(before_pop.delivered);
    let span = drained_at.unwrap_or_else(Instant::now).duration_since(pop_start);
    let activities_rate = written as f64 / span.as_secs_f64().max(0.001);
    let drain = drained_at.map(|d| d.saturating_duration_since(load_end));
    say(format!(
        "[outbox] {} pending when the calls ended; {written} activities written in {:.1} s ({activities_rate:.0}/s); {}; dead {}",
        at_load_end.pending,
        span.as_secs_f64(),
        match drain {
            Some(d) => format!("drained {:.2} s after the last call", d.as_secs_f64()),
            None => format!("NOT drained: {} still pending", last.pending),
        },
        last.dead
    ));
    rows.push(row(
        "activities written in the pop phase / per s",
        format!("{written} / {activities_rate:.0}"),
        &format!("{completed} (= wrap-ups)"),
        Some(written >= completed),
    ));
    rows.push(row(
        "outbox pending at load end → drained after",
        format!("{} → {}", at_load_end.pending, drain.map_or("not drained".into(), |d| format!("{:.2} s", d.as_secs_f64()))),
        &format!("0 within {} s", args.drain_timeout),
        Some(drain.is_some()),
    ));

    // Phase 5: sustained CTI events/s.
    say(format!(
        "[events] {} CTI requests in flight for {} s{}: newCall/answer/hangup per call id, agents still connected",
        args.concurrency,
        args.blast_duration,
        args.blast_events.map_or(String::new(), |n| format!(" (at most {n} events)"))
    ));
    let blast_cpu = CpuMeter::start(srv)?;
    let spec = BlastSpec {
        tag: "[events]",
        kind: BlastCall::Answered,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.blast_duration),
        max_events: args.blast_events,
        contacts: args.contacts,
        unknown_percent: args.unknown_percent,
        seed: args.seed,
        agents: args.agents,
        call_prefix: format!("blast-{run_id}"),
    };
    let BlastDone { ok, errors, lat: mut blast_lat, first_error: blast_error, span: blast_span, .. } =
        blast(&spec, http, &[srv.url(&format!("/api/v1/cti/{CTI_TOKEN}"))], std::slice::from_mut(srv)).await?;
    let blast_cpu = blast_cpu.report(srv)?;
    let events_rate = ok as f64 / blast_span.as_secs_f64().max(0.001);
    say(format!(
        "[events] {ok} events accepted (HTTP 2xx) in {:.1} s = {events_rate:.0} events/s; {errors} refused or failed; request p50/p99 {}; CPU {blast_cpu}",
        blast_span.as_secs_f64(),
        blast_lat.p50_p99()
    ));
    if let Some(e) = &blast_error {
        say(format!("[events] WARNING: first error: {e}"));
    }
    rows.push(row(
        format!("sustained CTI events/s ({} in flight)", args.concurrency),
        format!("{events_rate:.0}"),
        ">= 5,000 events/s",
        Some(events_rate >= TARGET_EVENTS_PER_SEC && errors == 0),
    ));
    let blast_p99 = blast_lat.percentile_ms(99.0);
    rows.push(row("CTI event HTTP p50 / p99 under that load", format!("{}{}", blast_lat.p50_p99(), stats::vs_floor(blast_p99)), "", None));
    rows.push(row("CTI events refused or failed", errors.to_string(), "0", Some(errors == 0)));
    rows.push(row("CPU during the events phase (100% = 1 core)", blast_cpu.clone(), "", None));

    // Phase 6: memory and the final outbox state.
    srv.check_alive()?;
    let (hwm, rss) = srv.memory()?;
    let end = health(http, srv).await?;
    let end_outbox = outbox(&end)?;
    let frames = &agents.counts;
    say(format!(
        "[end] server RSS now {:.0} MB, peak (VmHWM) {:.0} MB; outbox pending {} delivered {} dead {}; frames received: {} pop, {} update, {} end, {} other",
        mb(rss),
        mb(hwm),
        end_outbox.pending,
        end_outbox.delivered,
        end_outbox.dead,
        frames.pop.load(Ordering::Relaxed),
        frames.update.load(Ordering::Relaxed),
        frames.end.load(Ordering::Relaxed),
        frames.other.load(Ordering::Relaxed),
    ));
    agents.readers.abort_all();
    rows.push(row("server RSS after start (before traffic)", format!("{:.0} MB", mb(rss_start)), "", None));
    rows.push(row("server peak RSS (VmHWM) / RSS at end", format!("{:.0} MB / {:.0} MB", mb(hwm), mb(rss)), "< 300 MB", Some(mb(hwm) < TARGET_RSS_MB)));
    rows.push(row(
        "outbox at end: pending / delivered / dead",
        format!("{} / {} / {}", end_outbox.pending, end_outbox.delivered, end_outbox.dead),
        "dead = 0",
        Some(end_outbox.dead == 0),
    ));

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The main table prints as it did before `grid_lines` (widths in bytes, minimum widths
    /// from the headings).
    #[test]
    fn the_main_table_is_unchanged() {
        let rows = [
            row("outbox pending at load end → drained after", "12 → 0.50 s", "0 within 30 s", Some(true)),
            row("pop latency max", "3.0 ms", "", None),
            row("x", "y", "", Some(false)),
        ];
        let (w0, w1, w2) = (
            rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6),
            rows.iter().map(|r| r.measured.len()).max().unwrap_or(0).max(8),
            rows.iter().map(|r| r.target.len()).max().unwrap_or(0).max(6),
        );
        let mut before = vec![
            format!("| {:<w0$} | {:<w1$} | {:<w2$} | {:<6} |", "figure", "measured", "target", "result"),
            format!("|{}|{}|{}|{}|", "-".repeat(w0 + 2), "-".repeat(w1 + 2), "-".repeat(w2 + 2), "-".repeat(8)),
        ];
        before.extend(rows.iter().map(|r| format!("| {:<w0$} | {:<w1$} | {:<w2$} | {:<6} |", r.name, r.measured, r.target, r.verdict)));
        let cells: Vec<Vec<String>> = rows.iter().map(|r| vec![r.name.clone(), r.measured.clone(), r.target.clone(), r.verdict.clone()]).collect();
        assert_eq!(grid_lines(&["figure", "measured", "target", "result"], &cells), before);
    }

    #[test]
    fn the_external_id_is_the_conversations() {
        let pop = r#"{"type":"pop","conversation":{"id":"c1","source":"cti","external_id":"call-7","legs":["call-7"]},"pop":{"action":"open"}}"#;
        assert_eq!(external_id(pop), Some("call-7"));
        assert_eq!(external_id(r#"{"type":"pop"}"#), None);
    }
}
