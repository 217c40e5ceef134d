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
//!
//! This file is only the command line's entry and the order of the phases. Each phase is a
//! module (`import`, `floor`, `identify`, `ivr`, `pop`, `events`, `memory`, `sip`, `crm`,
//! `cluster`); what they share is in modules they import (`options`: the command line;
//! `server`: the process under test; `http`, `agents`, `calls`, `blast`: the traffic;
//! `contacts`, `numbers`: the generated data; `stats`, `report`: figures and printing) —
//! never from this file.

// The phases, in the order they run.
mod import;
mod floor;
mod identify;
mod ivr;
mod pop;
mod events;
mod memory;
mod sip;
mod crm;
mod cluster;

// What the phases share.
mod agents;
mod blast;
mod calls;
mod contacts;
mod http;
mod numbers;
mod options;
mod report;
mod server;
mod stats;

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::options::{Args, Plan};
use crate::report::{Row, mb, print_grid, print_table, say};
use crate::server::Server;

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

    import::phase(args, &data, &csv, rows).await?;

    say("[setup] starting `cxbridge serve`");
    let mut srv = Server::start(&args.cxbridge, args.server_config.as_deref(), &data, &log, http).await?;
    let (_, rss_start) = srv.memory()?;
    say(format!("[setup] server pid {} on 127.0.0.1:{}; RSS after start {:.0} MB; log {}", srv.pid, srv.port, mb(rss_start), srv.log.display()));

    let result = phases(args, plan, http, &mut srv, dir, rss_start, rows).await;
    let stopped = srv.stop(Duration::from_secs(10)).await;
    result?;
    stopped.context("could not stop the server")?;
    Ok(())
}

async fn phases(args: &Args, plan: Plan, http: &reqwest::Client, srv: &mut Server, dir: &std::path::Path, rss_start: u64, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut floor = floor::phase(args, http, srv, rows).await?;
    if plan.main {
        identify::phase(args, http, srv, rows).await?;
    }
    if plan.ivr {
        ivr::phase(args, http, srv, &floor.p50_p99(), rows).await?;
    }
    if plan.main {
        // Phases 3–6 share the agents: connected for the pops, still connected during the
        // events phase, their frames counted at the end.
        let agents = pop::phase(args, http, srv, rows).await?;
        events::phase(args, http, srv, rows).await?;
        memory::phase(http, srv, agents, rss_start, rows).await?;
    }
    if plan.sip {
        sip::phase(args, http, srv, dir, rows).await?;
    }
    Ok(())
}
