//! The CRM phase: cxbridge against the Dataverse test server of `cxbridge-testkit`, which
//! runs inside this program on 127.0.0.1 (same machine, same cores, no WAN latency).
//!
//! 1. Loads `--crm-contacts` contacts into the test server, phones written in the notations
//!    the Dataverse adapter's `$filter` searches (so a direct query finds them as the index
//!    does), every 10th with a mobile, every 50th sharing its neighbour's number.
//! 2. **Index, batched:** starts cxbridge with `local_index = true` and `batch_size = 100`,
//!    waits for the first sync of the local phone index (`/healthz` `crm.index[].state`),
//!    measures `--crm-identify-requests` sequential identifications (each answer checked),
//!    then pushes `--crm-activities` unanswered calls through the CTI endpoint and times
//!    until the outbox has delivered one activity per call.
//! 3. **Direct:** cxbridge with `local_index = false`: the same identifications, each one
//!    a `$filter` query per identifying table against the test server.
//! 4. **Index, one request per activity:** cxbridge with `local_index = true` and
//!    `batch_size = 1`: the same number of calls, timed the same way, against a second
//!    test server holding the same contacts and no activities yet.
//!
//! `--crm-latency-ms` makes the test servers wait that long before answering each Web API
//! request (a stand-in for the round trip to a real environment). Each cxbridge gets a
//! fresh data directory. The client-side service-protection limiter
//! (`requests_per_window`, 6,000 per 5 minutes by default) is opened wide so that it does
//! not pace the runs; everything else is the adapter's default.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cxbridge_testkit::Seen;
use cxbridge_testkit::dataverse::DataverseServer;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::agents::agent_id;
use crate::calls::DIALED;
use crate::contacts::{FIRST, LAST};
use crate::http::{Outbox, encode, health, outbox, post};
use crate::numbers::{self, Rng};
use crate::options::Args;
use crate::report::{Row, TARGET_IDENTIFY_P99_MS, row, say};
use crate::server::{ADMIN_TOKEN, CTI_TOKEN, CpuMeter, Server};
use crate::stats::Samples;

/// Longest wait for the first sync of the local index.
const INDEX_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for one activities run to be written.
const ACTIVITIES_TIMEOUT: Duration = Duration::from_secs(180);

/// The cxbridge configuration of one run against the test server.
fn hub_config(s: &DataverseServer, local_index: bool, batch_size: u32) -> String {
    format!(
        r#"# Written by cxbridge-bench (CRM phase).
[crm]
provider = "dataverse"
local_index = {local_index}

[crm.dataverse]
{connection}batch_size = {batch_size}
# Opened wide so that the client-side limiter does not pace the benchmark.
requests_per_window = 1000000
"#,
        connection = s.connection_toml(),
    )
}

/// Starts cxbridge against the test server with its own data directory, config and log.
async fn start_hub(args: &Args, http: &reqwest::Client, dir: &Path, s: &DataverseServer, name: &str, local_index: bool, batch_size: u32) -> anyhow::Result<Server> {
    let run_dir = dir.join(format!("crm-{name}"));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let config = run_dir.join("cxbridge.toml");
    std::fs::write(&config, hub_config(s, local_index, batch_size)).with_context(|| format!("cannot write {}", config.display()))?;
    let srv = Server::start(&args.cxbridge, Some(&config), &run_dir.join("data"), &run_dir.join("server.log"), http).await?;
    say(format!(
        "[crm] {name}: cxbridge pid {} on 127.0.0.1:{} (local_index = {local_index}, batch_size = {batch_size}); log {}",
        srv.pid,
        srv.port,
        srv.log.display()
    ));
    Ok(srv)
}

/// Waits until every entity of the local index is `ready`; returns how long it took and
/// the records it holds.
async fn wait_for_index(http: &reqwest::Client, srv: &mut Server, name: &str) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(1);
    loop {
        srv.check_alive()?;
        let h = health(http, srv).await?;
        let entities = h["crm"]["index"].as_array().cloned().context("/healthz shows no `crm.index`: the local index is not on")?;
        let records: u64 = entities.iter().filter_map(|e| e["records"].as_u64()).sum();
        let state = |e: &Value| e["state"].as_str().unwrap_or("").to_string();
        if !entities.is_empty() && entities.iter().all(|e| state(e) == "ready") {
            return Ok((started.elapsed(), records));
        }
        if let Some(failing) = entities.iter().find(|e| state(e) == "failing") {
            bail!("the local index of `{}` is failing: {}; the server's log:\n{}", failing["entity"], failing["last_error"], srv.log_tail());
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let states: Vec<String> = entities.iter().map(|e| format!("{} {} ({})", e["entity"].as_str().unwrap_or("?"), state(e), e["records"])).collect();
            say(format!("[crm] {name}: {:>4.1} s: local index {}", started.elapsed().as_secs_f64(), states.join(", ")));
        }
        if started.elapsed() > INDEX_TIMEOUT {
            bail!("the local index was not ready within {} s; the server's log:\n{}", INDEX_TIMEOUT.as_secs(), srv.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sequential identifications of one run.
struct Identified {
    latency: Samples,
    cpu: String,
    wrong: u64,
    known: u64,
    first_wrong: Option<String>,
}

/// `args.crm_identify_requests` sequential `GET /api/v1/identify` after 100 unmeasured ones;
/// the same callers in the same order for the same seed.
async fn identify(args: &Args, http: &reqwest::Client, srv: &Server, name: &str) -> anyhow::Result<Identified> {
    say(format!(
        "[crm] {name}: {} sequential GET /api/v1/identify ({} warm-up), {}% unknown callers, rotating notations",
        args.crm_identify_requests, 100, args.unknown_percent
    ));
    let mut rng = Rng::new(args.seed.wrapping_add(7_000));
    let contacts = args.crm_contacts;
    for _ in 0..100 {
        let c = numbers::pick_caller(&mut rng, contacts, args.unknown_percent);
        http.get(srv.url(&format!("/api/v1/identify?address={}", encode(&c.written)))).bearer_auth(ADMIN_TOKEN).send().await?.bytes().await?;
    }
    let cpu = CpuMeter::start(srv)?;
    let mut out = Identified { latency: Samples::with_capacity(args.crm_identify_requests as usize), cpu: String::new(), wrong: 0, known: 0, first_wrong: None };
    for _ in 0..args.crm_identify_requests {
        let c = numbers::pick_caller(&mut rng, contacts, args.unknown_percent);
        let url = srv.url(&format!("/api/v1/identify?address={}", encode(&c.written)));
        let t = Instant::now();
        let r = http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.with_context(|| format!("GET {url} failed"))?;
        let status = r.status();
        let body = r.bytes().await?;
        out.latency.push(t.elapsed());
        if !status.is_success() {
            bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let v: Value = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
        let n = v["identification"]["candidates"].as_array().map_or(0, Vec::len) as u32;
        out.known += u64::from(c.expected > 0);
        if n != c.expected || v["e164"].as_str() != Some(numbers::e164(c.idx).as_str()) {
            out.wrong += 1;
            out.first_wrong.get_or_insert_with(|| format!("{} (expected {} match(es) as {}): {v}", c.written, c.expected, numbers::e164(c.idx)));
        }
    }
    out.cpu = cpu.report(srv)?.replace("bench", "bench + test server");
    say(format!(
        "[crm] {name}: identify p50/p99 {}; {} known callers; {} answers not as expected; CPU {}",
        out.latency.p50_p99(),
        out.known,
        out.wrong,
        out.cpu
    ));
    if let Some(w) = &out.first_wrong {
        say(format!("[crm] {name}: WARNING: first unexpected answer: {w}"));
    }
    Ok(out)
}

/// One activities run.
struct Written {
    calls: u64,
    /// Calls whose newCall and hangup were both accepted (each should give one activity).
    calls_ok: u64,
    call_errors: u64,
    first_error: Option<String>,
    /// From the first call to the last CTI answer.
    pushed_in: Duration,
    /// From the first call until the outbox had delivered one activity per accepted call.
    written_in: Option<Duration>,
    delivered: u64,
    dead: u64,
    /// New phone calls in the test server.
    phonecalls: u64,
    /// Requests that wrote activities: `PATCH phonecalls(…)` and `POST $batch`.
    write_requests: u64,
    batches: u64,
    /// Every Web API request the test server saw meanwhile (index deltas included).
    all_requests: u64,
    cpu: String,
}

impl Written {
    fn rate(&self) -> Option<f64> {
        self.written_in.map(|d| self.delivered as f64 / d.as_secs_f64().max(0.001))
    }
}

fn writes_activity(s: &Seen) -> bool {
    let path = s.target.split('?').next().unwrap_or_default();
    (s.method == "PATCH" && path.contains("/phonecalls(")) || (s.method == "POST" && path.ends_with("/$batch"))
}

/// Pushes `args.crm_activities` unanswered calls through the CTI endpoint with
/// `args.crm_concurrency` requests in flight and waits until the outbox has delivered them.
async fn activities(args: &Args, http: &reqwest::Client, srv: &mut Server, s: &DataverseServer, name: &str) -> anyhow::Result<Written> {
    let m = args.crm_activities;
    say(format!(
        "[crm] {name}: {m} unanswered calls (newCall, hangup with cause `cancel`), {} CTI requests in flight; timing until the outbox has delivered {m} activities",
        args.crm_concurrency
    ));
    let before: Outbox = outbox(&health(http, srv).await?)?;
    let phonecalls_before = s.records("phonecalls").len() as u64;
    let batches_before = s.batches();
    s.clear_seen();
    let cti_url = Arc::new(srv.url(&format!("/api/v1/cti/{CTI_TOKEN}")));
    let next_call = Arc::new(AtomicU64::new(0));
    let run_id = std::process::id();
    let cpu = CpuMeter::start(srv)?;
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for w in 0..args.crm_concurrency {
        let (http, cti_url, next_call) = (http.clone(), cti_url.clone(), next_call.clone());
        let (contacts, unknown, seed, name) = (args.crm_contacts, args.unknown_percent, args.seed, name.to_string());
        workers.spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(9_000 + u64::from(w)));
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut first_error: Option<String> = None;
            loop {
                let n = next_call.fetch_add(1, Ordering::Relaxed);
                if n >= m {
                    break;
                }
                let caller = numbers::pick_caller(&mut rng, contacts, unknown);
                let call_id = format!("crm-{name}-{run_id}-{n}");
                let agent = agent_id(n % 50);
                let base = json!({ "from": caller.written, "to": DIALED, "direction": "in", "callId": call_id, "user": agent });
                let mut new_call = base.clone();
                new_call["event"] = json!("newCall");
                let mut hangup = base;
                hangup["event"] = json!("hangup");
                hangup["cause"] = json!("cancel");
                let mut failed = false;
                for body in [new_call, hangup] {
                    if let Err(e) = post(&http, &cti_url, &body, false).await {
                        failed = true;
                        first_error.get_or_insert(e);
                    }
                }
                if failed {
                    errors += 1;
                } else {
                    ok += 1;
                }
            }
            (Instant::now(), ok, errors, first_error)
        });
    }
    let mut out = Written {
        calls: m,
        calls_ok: 0,
        call_errors: 0,
        first_error: None,
        pushed_in: Duration::ZERO,
        written_in: None,
        delivered: 0,
        dead: 0,
        phonecalls: 0,
        write_requests: 0,
        batches: 0,
        all_requests: 0,
        cpu: String::new(),
    };
    let mut pushed_at: Option<Instant> = None;
    let mut next_report = start + Duration::from_secs(1);
    loop {
        while let Some(done) = workers.try_join_next() {
            let (at, ok, errors, first) = done?;
            pushed_at = Some(pushed_at.map_or(at, |p| p.max(at)));
            out.calls_ok += ok;
            out.call_errors += errors;
            if out.first_error.is_none() {
                out.first_error = first;
            }
        }
        let now_box = outbox(&health(http, srv).await?)?;
        out.delivered = now_box.delivered.saturating_sub(before.delivered);
        out.dead = now_box.dead.saturating_sub(before.dead);
        let all_pushed = workers.is_empty();
        let expected = if all_pushed { out.calls_ok } else { m };
        if out.delivered >= expected && (all_pushed || out.delivered >= m) {
            out.written_in = Some(start.elapsed());
            break;
        }
        if all_pushed && out.delivered + out.dead >= expected {
            say(format!("[crm] {name}: WARNING: {} activities went dead", out.dead));
            break;
        }
        if start.elapsed() > ACTIVITIES_TIMEOUT {
            say(format!("[crm] {name}: WARNING: not all written within {} s", ACTIVITIES_TIMEOUT.as_secs()));
            break;
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            srv.check_alive()?;
            say(format!(
                "[crm] {name}: {:>4.1} s: {} calls begun, {} activities delivered, {} pending",
                start.elapsed().as_secs_f64(),
                next_call.load(Ordering::Relaxed).min(m),
                out.delivered,
                now_box.pending
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Some(done) = workers.join_next().await {
        let (at, ok, errors, first) = done?;
        pushed_at = Some(pushed_at.map_or(at, |p| p.max(at)));
        out.calls_ok += ok;
        out.call_errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
    }
    out.cpu = cpu.report(srv)?.replace("bench", "bench + test server");
    out.pushed_in = pushed_at.map_or(Duration::ZERO, |p| p.saturating_duration_since(start));
    out.phonecalls = (s.records("phonecalls").len() as u64).saturating_sub(phonecalls_before);
    out.batches = s.batches().saturating_sub(batches_before);
    let seen = s.seen();
    out.all_requests = seen.len() as u64;
    out.write_requests = seen.iter().filter(|r| writes_activity(r)).count() as u64;
    say(format!(
        "[crm] {name}: {} calls pushed in {:.2} s ({} failed); {} activities delivered in {} ({}); {} phone calls in the test server; {} write requests ({} $batch), {} Web API requests in all; dead {}; CPU {}",
        out.calls,
        out.pushed_in.as_secs_f64(),
        out.call_errors,
        out.delivered,
        out.written_in.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        out.rate().map_or("not all written".into(), |r| format!("{r:.0}/s")),
        out.phonecalls,
        out.write_requests,
        out.batches,
        out.all_requests,
        out.dead,
        out.cpu
    ));
    if let Some(e) = &out.first_error {
        say(format!("[crm] {name}: WARNING: first CTI error: {e}"));
    }
    Ok(out)
}

/// Loads the contacts into the test server; returns how many have a mobile.
fn load_contacts(s: &DataverseServer, n: u64) -> u64 {
    let mut mobiles = 0;
    for i in 0..n {
        let mut record = json!({
            "firstname": FIRST[(i % 16) as usize],
            "lastname": format!("{} {i}", LAST[((i / 16) % 16) as usize]),
            "telephone1": numbers::searched_written(numbers::stored_phone(i), i),
            "emailaddress1": format!("contact{i}@example.com"),
        });
        if numbers::has_mobile(i) {
            record["mobilephone"] = json!(numbers::searched_written(numbers::mobile_base() + i, i / 10 + 2));
            mobiles += 1;
        }
        s.insert("contacts", record);
    }
    mobiles
}

/// Runs the three cxbridge runs and adds their rows.
pub async fn phase(args: &Args, http: &reqwest::Client, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let phase_start = Instant::now();
    let s = DataverseServer::start().await.context("cannot start the Dataverse test server")?;
    say(format!("[crm] Dataverse test server on {} (in this process); loading {} contacts", s.url, args.crm_contacts));
    let t = Instant::now();
    let mobiles = {
        let (s, n) = (s.clone(), args.crm_contacts);
        tokio::task::spawn_blocking(move || load_contacts(&s, n)).await?
    };
    say(format!("[crm] loaded {} contacts ({mobiles} with a mobile) in {:.2} s", args.crm_contacts, t.elapsed().as_secs_f64()));
    if args.crm_latency_ms > 0 {
        s.faults.delay(Duration::from_millis(args.crm_latency_ms));
        say(format!("[crm] the test server answers every Web API request after {} ms", args.crm_latency_ms));
    }

    // Run 1: local index, $batch of up to 100.
    let mut hub = start_hub(args, http, dir, &s, "index", true, 100).await?;
    let run = async {
        let (sync, records) = wait_for_index(http, &mut hub, "index").await?;
        say(format!("[crm] index: local index ready after {:.2} s with {records} records", sync.as_secs_f64()));
        let ident = identify(args, http, &hub, "index").await?;
        let written = activities(args, http, &mut hub, &s, "index").await?;
        anyhow::Ok((sync, records, ident, written))
    }
    .await;
    let stopped = hub.stop(Duration::from_secs(10)).await;
    let (sync, records, mut via_index, batched) = run?;
    stopped.context("could not stop the server")?;

    // Run 2: no local index: every identification queries the test server.
    let hub = start_hub(args, http, dir, &s, "direct", false, 100).await?;
    s.clear_seen();
    let run = identify(args, http, &hub, "direct").await;
    let direct_requests = s.seen().len() as u64;
    let stopped = hub.stop(Duration::from_secs(10)).await;
    let mut direct = run?;
    stopped.context("could not stop the server")?;

    // Run 3: local index, one request per activity, against a second test server with the
    // same contacts and no phone calls yet (the test server finds an activity's alternate
    // key by scanning the table, so the second run must not start with the first one's).
    let s2 = DataverseServer::start().await.context("cannot start the Dataverse test server")?;
    {
        let (s2, n) = (s2.clone(), args.crm_contacts);
        tokio::task::spawn_blocking(move || load_contacts(&s2, n)).await?;
    }
    if args.crm_latency_ms > 0 {
        s2.faults.delay(Duration::from_millis(args.crm_latency_ms));
    }
    say(format!("[crm] second Dataverse test server on {} with the same {} contacts", s2.url, args.crm_contacts));
    let mut hub = start_hub(args, http, dir, &s2, "single", true, 1).await?;
    let run = async {
        let (sync, _) = wait_for_index(http, &mut hub, "single").await?;
        say(format!("[crm] single: local index ready after {:.2} s", sync.as_secs_f64()));
        activities(args, http, &mut hub, &s2, "single").await
    }
    .await;
    let stopped = hub.stop(Duration::from_secs(10)).await;
    let single = run?;
    stopped.context("could not stop the server")?;
    say(format!("[crm] phase took {:.1} s", phase_start.elapsed().as_secs_f64()));

    let n = args.crm_identify_requests;
    rows.push(row("CRM: contacts in the Dataverse test server", format!("{} ({mobiles} with a mobile)", args.crm_contacts), "", None));
    rows.push(row(format!("CRM: first sync of the local index ({records} records)"), format!("{:.2} s", sync.as_secs_f64()), "", None));
    let index_p99 = via_index.latency.percentile_ms(99.0).unwrap_or(f64::MAX);
    rows.push(row("CRM: identify via the local index p50 / p99", via_index.latency.p50_p99(), "p99 < 1 ms", Some(index_p99 < TARGET_IDENTIFY_P99_MS)));
    rows.push(row("CRM: identify by direct Dataverse query p50 / p99", direct.latency.p50_p99(), "", None));
    rows.push(row("CRM: CPU during identify (index; direct)", format!("{}; {}", via_index.cpu, direct.cpu), "", None));
    let per_lookup = direct_requests as f64 / f64::from(n + 100);
    rows.push(row("CRM: Dataverse requests per direct identify", format!("{per_lookup:.1}"), "", None));
    rows.push(row(
        "CRM: identify answers not as expected (index / direct)",
        format!("{} / {} of {n}", via_index.wrong, direct.wrong),
        "0",
        Some(via_index.wrong == 0 && direct.wrong == 0),
    ));
    for (label, w) in [("batch_size 100", &batched), ("batch_size 1", &single)] {
        rows.push(row(
            format!("CRM: activities/s, {label}"),
            match (w.rate(), w.written_in) {
                (Some(r), Some(d)) => format!("{r:.0} ({} in {:.2} s)", w.delivered, d.as_secs_f64()),
                _ => format!("not all written: {} of {}", w.delivered, w.calls_ok),
            },
            "",
            None,
        ));
        rows.push(row(
            format!("CRM: HTTP requests for them ({label})"),
            if w.batches > 0 {
                format!("{} $batch ({:.1} activities each)", w.write_requests, w.delivered as f64 / w.write_requests.max(1) as f64)
            } else {
                format!("{} PATCH", w.write_requests)
            },
            "",
            None,
        ));
        rows.push(row(
            format!("CRM: calls pushed in / all written after ({label})"),
            format!("{:.2} s / {}", w.pushed_in.as_secs_f64(), w.written_in.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))),
            "",
            None,
        ));
        rows.push(row(format!("CRM: CPU ({label})"), w.cpu.clone(), "", None));
    }
    let all_written = |w: &Written| w.phonecalls == w.calls && w.delivered == w.calls && w.dead == 0 && w.call_errors == 0;
    rows.push(row(
        "CRM: phone calls in Dataverse / dead (batched; one each)",
        format!("{} / {}; {} / {}", batched.phonecalls, batched.dead, single.phonecalls, single.dead),
        &format!("{} / 0 each", args.crm_activities),
        Some(all_written(&batched) && all_written(&single)),
    ));
    Ok(())
}
