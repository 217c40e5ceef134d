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

mod agents;
mod blast;
mod calls;
mod cluster;
mod contacts;
mod crm;
mod http;
mod ivr;
mod numbers;
mod options;
mod report;
mod server;
mod sip;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::agents::connect_agents;
use crate::blast::{BlastCall, BlastDone, BlastSpec, blast};
use crate::calls::{CallCtx, CallFigures, CallPlan, run_calls};
use crate::contacts::write_csv;
use crate::http::{encode, health, outbox, sequential_gets};
use crate::numbers::Rng;
use crate::options::{Args, Plan};
use crate::report::{Row, TARGET_EVENTS_PER_SEC, TARGET_IDENTIFY_P99_MS, TARGET_POP_P99_MS, TARGET_RSS_MB, mb, print_grid, print_table, row, say};
use crate::server::{ADMIN_TOKEN, CTI_TOKEN, CpuMeter, Server};
use crate::stats::{Samples, ms};

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
