//! The scale-out phase: the same workload on three setups, one after the other, figures side
//! by side.
//!
//! 1. **SQLite, 1 node** — the hub as it runs alone (no bus).
//! 2. **PostgreSQL + NATS, 1 node** — the shared database and the bus, one node.
//! 3. **PostgreSQL + NATS, 2 nodes** — events posted round-robin to both nodes and the agents
//!    split across them, so about half of all pops cross the bus.
//!
//! Each PostgreSQL setup gets a fresh database on the `--postgres-url` server (created here,
//! dropped after) and its own JetStream stream and subject prefix (deleted after), so runs
//! share nothing. Per setup: `--scale-contacts` contacts imported with `cxbridge import`
//! (rows/s per backend), `--agents` agent streams, the main phase's calls at `--rate` for
//! `--scale-secs` (pop latency measured at the agent's reader, pops missing, pops
//! duplicated), then `--concurrency` CTI requests in flight for `--blast-duration` s of
//! unanswered calls (`newCall`, `hangup` with cause `cancel`: memorialized at once), timing
//! the outbox (the built-in CRM on the same database) from the blast's start until
//! `/healthz` shows nothing pending. Server CPU is summed over the nodes; PostgreSQL (the
//! run's backends and the server's own writers) and nats-server are measured beside it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::context::DeleteStreamErrorKind;
use async_nats::jetstream::ErrorCode;
use serde_json::Value;
use sqlx::Connection as _;
use tokio::task::JoinSet;

use crate::agents::{FrameCounts, connect_agents};
use crate::blast::{BlastCall, BlastDone, BlastSpec, blast};
use crate::calls::{CallCtx, CallFigures, CallPlan, run_calls};
use crate::contacts::write_csv;
use crate::http::{health, outbox};
use crate::numbers::Rng;
use crate::options::Args;
use crate::report::{mb, say};
use crate::server::{self, Backend, CTI_TOKEN, Server};
use crate::stats::ms;

/// One column of the table.
struct Setup {
    heading: &'static str,
    /// In progress lines, directory and node names.
    key: &'static str,
    nodes: usize,
    /// PostgreSQL + NATS rather than SQLite alone.
    shared: bool,
}

const SETUPS: [Setup; 3] = [
    Setup { heading: "SQLite, 1 node", key: "sqlite", nodes: 1, shared: false },
    Setup { heading: "PostgreSQL + NATS, 1 node", key: "pg-1-node", nodes: 1, shared: true },
    Setup { heading: "PostgreSQL + NATS, 2 nodes", key: "pg-2-nodes", nodes: 2, shared: true },
];

const NODE_NAMES: [&str; 2] = ["bench-a", "bench-b"];

/// Longest wait for every node to hear of the others' agents over the bus.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The phase's figures: one row per figure, one column per setup.
pub struct Table {
    pub headings: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// What the phase ran, for the heading above the table.
    pub summary: String,
}

/// The PostgreSQL server and NATS server the shared setups run on.
struct Peers {
    postgres: String,
    nats: String,
}

/// Runs the phase. Without a PostgreSQL or NATS URL it fails when the phase was asked for
/// (`explicit`, i.e. `--scale-out`) and is skipped with the reason in the full run.
pub async fn phase(args: &Args, http: &reqwest::Client, dir: &Path, explicit: bool) -> anyhow::Result<Option<Table>> {
    let nonempty = |u: &Option<String>| u.clone().filter(|u| !u.trim().is_empty());
    let peers = match (nonempty(&args.postgres_url), nonempty(&args.nats_url)) {
        (Some(postgres), Some(nats)) => Peers { postgres, nats },
        (pg, nats) => {
            let missing: Vec<&str> = [(pg.is_none(), "PostgreSQL (--postgres-url or CXBRIDGE_TEST_POSTGRES_URL)"), (nats.is_none(), "NATS (--nats-url or CXBRIDGE_TEST_NATS_URL)")]
                .into_iter()
                .filter_map(|(m, what)| m.then_some(what))
                .collect();
            let why = format!("no {} given; `eval \"$(scripts/setup-scaleout)\"` starts both on loopback and sets the variables", missing.join(" and no "));
            if explicit {
                bail!("the scale-out phase needs PostgreSQL and NATS: {why}");
            }
            say(format!("[scale-out] skipped: {why}"));
            return Ok(None);
        }
    };
    let calls = u64::from(args.rate) * args.scale_secs;
    say(format!(
        "[scale-out] the same workload on {}: {} contacts, {} agents, {} calls/s for {} s ({calls} calls), then {} CTI requests in flight for {} s of unanswered calls",
        SETUPS.iter().map(|s| s.heading).collect::<Vec<_>>().join(" / "),
        args.scale_contacts,
        args.agents,
        args.rate,
        args.scale_secs,
        args.concurrency,
        args.blast_duration
    ));

    let csv = dir.join("scale-contacts.csv");
    say(format!("[scale-out] generating {} contacts into {}", args.scale_contacts, csv.display()));
    {
        let (csv, n) = (csv.clone(), args.scale_contacts);
        tokio::task::spawn_blocking(move || write_csv(&csv, n)).await??;
    }

    let mut columns: Vec<Vec<(String, String)>> = vec![];
    for setup in &SETUPS {
        say(format!("[scale-out] {}: {}", setup.key, setup.heading));
        let figures = run_setup(args, http, dir, &csv, setup, &peers).await.with_context(|| format!("scale-out setup `{}`", setup.heading))?;
        columns.push(figures);
    }
    let _ = std::fs::remove_file(&csv);

    // Rows in the order figures were first named; a setup without a figure shows `-`.
    let mut names: Vec<String> = vec![];
    for c in &columns {
        for (name, _) in c {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let rows = names
        .iter()
        .map(|name| {
            let mut r = vec![name.clone()];
            r.extend(columns.iter().map(|c| c.iter().find(|(n, _)| n == name).map_or_else(|| "-".to_string(), |(_, v)| v.clone())));
            r
        })
        .collect();
    let mut headings = vec!["figure".to_string()];
    headings.extend(SETUPS.iter().map(|s| s.heading.to_string()));
    let summary = format!(
        "scale-out: {} contacts, {} agents, {} calls/s × {} s, {} in flight × {} s (newCall + hangup `cancel`)",
        args.scale_contacts, args.agents, args.rate, args.scale_secs, args.concurrency, args.blast_duration
    );
    Ok(Some(Table { headings, rows, summary }))
}

/// One setup: its database and stream around `measure`, removed afterwards whatever happened
/// (kept with --keep-data).
async fn run_setup(args: &Args, http: &reqwest::Client, dir: &Path, csv: &Path, setup: &Setup, peers: &Peers) -> anyhow::Result<Vec<(String, String)>> {
    let run_dir = dir.join(format!("scale-{}", setup.key));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    if !setup.shared {
        return measure(args, http, &run_dir, csv, setup, None).await;
    }
    let db = Database::create(&peers.postgres).await?;
    let bus = cxbridge_testkit::scaleout::unique_name("cxb_bench");
    say(format!("[scale-out] {}: database {}, stream and subject prefix {bus}", setup.key, db.name));
    let shared = Shared { database_url: db.url.clone(), database: db.name.clone(), nats_url: peers.nats.clone(), bus: bus.clone() };
    let result = measure(args, http, &run_dir, csv, setup, Some(&shared)).await;
    if args.keep_data {
        say(format!("[scale-out] {}: kept database {} and stream {bus}", setup.key, db.name));
    } else {
        if let Err(e) = db.drop_it().await {
            say(format!("[scale-out] WARNING: {e:#}"));
        }
        if let Err(e) = delete_stream(&peers.nats, &bus).await {
            say(format!("[scale-out] WARNING: could not delete the JetStream stream {bus}: {e:#}"));
        }
    }
    result
}

/// What a PostgreSQL + NATS setup runs on.
struct Shared {
    database_url: String,
    /// The database's name (to find its backends).
    database: String,
    nats_url: String,
    /// The stream's name and the subject prefix.
    bus: String,
}

/// Import, start the nodes, pops, events, outbox, figures; the nodes are stopped at the end.
async fn measure(args: &Args, http: &reqwest::Client, run_dir: &Path, csv: &Path, setup: &Setup, shared: Option<&Shared>) -> anyhow::Result<Vec<(String, String)>> {
    let key = setup.key;
    let mut figures: Vec<(String, String)> = vec![];
    let mut fig = |name: &str, value: String| figures.push((name.to_string(), value));

    let config = match shared {
        Some(s) => {
            let path = run_dir.join("cxbridge.toml");
            let text = format!(
                "# Written by cxbridge-bench (scale-out phase): a stream and subject prefix of this run's own.\n[bus]\nstream = \"{}\"\nsubject_prefix = \"{}\"\n",
                s.bus.to_uppercase(),
                s.bus
            );
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let backend = |node: usize| Backend {
        database_url: shared.map(|s| s.database_url.as_str()),
        nats_url: shared.map(|s| s.nats_url.as_str()),
        node_id: shared.map(|_| NODE_NAMES[node]),
    };

    // Contacts.
    say(format!("[scale-out] {key}: importing {} contacts with `cxbridge import contact`", args.scale_contacts));
    let took = server::import_into(&args.cxbridge, config.as_deref(), &run_dir.join("data-a"), csv, backend(0)).await?;
    let import_rate = args.scale_contacts as f64 / took.as_secs_f64().max(0.001);
    say(format!("[scale-out] {key}: import took {:.1} s ({import_rate:.0} rows/s)", took.as_secs_f64()));
    fig(&format!("import {} contacts (rows/s)", args.scale_contacts), format!("{:.1} s ({import_rate:.0}/s)", took.as_secs_f64()));

    // Nodes.
    let mut nodes: Vec<Server> = vec![];
    for (i, name) in NODE_NAMES.iter().enumerate().take(setup.nodes) {
        let letter = &name["bench-".len()..];
        let srv = Server::start_on(
            &args.cxbridge,
            config.as_deref(),
            &run_dir.join(format!("data-{letter}")),
            &run_dir.join(format!("node-{letter}.log")),
            http,
            backend(i),
        )
        .await?;
        say(format!("[scale-out] {key}: node {name} pid {} on 127.0.0.1:{}; log {}", srv.pid, srv.port, srv.log.display()));
        nodes.push(srv);
    }
    let result = load(args, http, setup, shared, &mut nodes, &mut fig).await;
    for srv in nodes {
        let pid = srv.pid;
        if let Err(e) = srv.stop(Duration::from_secs(10)).await {
            say(format!("[scale-out] WARNING: could not stop node pid {pid}: {e:#}"));
        }
    }
    result?;
    Ok(figures)
}

/// The workload against running nodes; figures go to `fig`.
async fn load(args: &Args, http: &reqwest::Client, setup: &Setup, shared: Option<&Shared>, nodes: &mut [Server], fig: &mut dyn FnMut(&str, String)) -> anyhow::Result<()> {
    let key = setup.key;
    let n = nodes.len();

    // Agents, split across the nodes (agent a on node a % n).
    say(format!("[scale-out] {key}: connecting {} agent streams{}", args.agents, if n > 1 { format!(" across {n} nodes") } else { String::new() }));
    let ws: Vec<String> = nodes.iter().map(|s| s.ws_url("")).collect();
    let mut agents = connect_agents(&ws, args.agents, true).await?;
    if shared.is_some() {
        wait_for_presence(http, nodes, args.agents, key).await?;
    }
    // Open enough pooled connections to every node that calls do not pay for TCP set-up.
    {
        let mut warm = JoinSet::new();
        for srv in nodes.iter() {
            for _ in 0..96 {
                let (h, u) = (http.clone(), srv.url("/healthz"));
                warm.spawn(async move { h.get(u).send().await.map(|_| ()) });
            }
        }
        while warm.join_next().await.is_some() {}
    }

    // Pops at a steady rate.
    let total_calls = u64::from(args.rate) * args.scale_secs;
    say(format!(
        "[scale-out] {key}: {} calls/s for {} s ({total_calls} calls{}): newCall → pop frame, answer +50 ms, hangup +250 ms, wrap-up",
        args.rate,
        args.scale_secs,
        if n > 1 { ", posted round-robin to the nodes" } else { "" }
    ));
    let ctxs: Vec<Arc<CallCtx>> = nodes
        .iter()
        .map(|s| {
            Arc::new(CallCtx {
                http: http.clone(),
                cti_url: s.url(&format!("/api/v1/cti/{CTI_TOKEN}")),
                base: s.url(""),
                waiters: agents.waiters.clone(),
                pop_timeout: Duration::from_millis(args.pop_timeout_ms),
            })
        })
        .collect();
    let run_id = std::process::id();
    agents.tracking.store(true, Ordering::Relaxed);
    let cpu = Cpu::start(nodes, shared)?;
    let plan = CallPlan {
        tag: &format!("[scale-out] {key}: pop"),
        rate: args.rate,
        total: total_calls,
        agents: args.agents,
        contacts: args.scale_contacts,
        unknown_percent: args.unknown_percent,
        call_prefix: format!("scale-{key}-{run_id}"),
    };
    // The same callers in the same order on every setup.
    let mut rng = Rng::new(args.seed.wrapping_add(11_000));
    let done = run_calls(&plan, &ctxs, nodes, &agents.counts, &mut rng, Instant::now() + Duration::from_millis(100)).await?;
    let pop_cpu = cpu.report(nodes)?;
    agents.tracking.store(false, Ordering::Relaxed);
    let achieved = total_calls as f64 / done.started_for.as_secs_f64().max(0.001);
    let mut f = CallFigures::of(&done.results);
    let dup_pop_phase = agents.counts.duplicate_pops.load(Ordering::Relaxed);
    let pop_max = f.pops.max_ms().map_or("-".into(), ms);
    say(format!(
        "[scale-out] {key}: pop done: {total_calls} calls at {achieved:.1} calls/s; pop p50/p99 {}, max {pop_max} ms; {} missing ({} of them across the bus); {dup_pop_phase} duplicated; {} wrapped up; {} with errors; CPU {}",
        f.pops.p50_p99(),
        f.missing,
        f.missing_remote,
        f.completed,
        f.failed,
        pop_cpu.line()
    ));
    if n > 1 {
        say(format!("[scale-out] {key}: pop p50/p99 on the agent's node {}; across the bus {}", f.pops_local.p50_p99(), f.pops_remote.p50_p99()));
    }
    if let Some(e) = &f.first_error {
        say(format!("[scale-out] {key}: WARNING: first error: {e}"));
    }
    if f.wrong_action > 0 {
        say(format!("[scale-out] {key}: WARNING: {} pops chose an action other than the expected open/list/create", f.wrong_action));
    }
    fig(&format!("pop p50 / p99 at {} calls/s", args.rate), f.pops.p50_p99());
    fig("pop p50 / p99: agent on the node posted to", f.pops_local.p50_p99());
    fig("pop p50 / p99: agent on the other node (bus)", if f.remote > 0 { f.pops_remote.p50_p99() } else { "-".into() });
    fig("pop max", format!("{pop_max} ms"));
    fig("calls whose pop crossed the bus", format!("{} of {total_calls}", f.remote));
    fig("pops missing (across the bus)", format!("{} of {total_calls} ({})", f.missing, f.missing_remote));
    fig("pops duplicated (pop phase)", dup_pop_phase.to_string());
    fig("calls started per second (achieved)", format!("{achieved:.1}"));
    fig("CTI newCall HTTP p50 / p99", f.new_call.p50_p99());
    fig("wrap-up HTTP p50 / p99", f.wrapups.p50_p99());
    fig("calls wrapped up / with errors", format!("{} / {}", f.completed, f.failed));
    fig("server CPU, pop phase (sum over nodes)", pop_cpu.servers());
    fig("PostgreSQL / nats-server CPU, pop phase", pop_cpu.peers());

    // The pop phase's activities first, so that the blast's deliveries are its own.
    let drained = wait_for_drain(http, &mut nodes[0], Duration::from_secs(args.drain_timeout)).await?;
    say(format!(
        "[scale-out] {key}: outbox after the pop phase: {}",
        match drained {
            Ok(d) => format!("drained {:.2} s later", d.as_secs_f64()),
            Err(pending) => format!("NOT drained within {} s: {pending} pending", args.drain_timeout),
        }
    ));

    // Sustained events/s: unanswered calls, each memorialized at once.
    say(format!(
        "[scale-out] {key}: {} CTI requests in flight for {} s{}: newCall + hangup `cancel` per call id (one activity each), agents still connected",
        args.concurrency,
        args.blast_duration,
        if n > 1 { ", calls round-robin to the nodes" } else { "" }
    ));
    let pops_before = agents.counts.pop.load(Ordering::Relaxed);
    let before = outbox(&health(http, &nodes[0]).await?)?;
    let cpu = Cpu::start(nodes, shared)?;
    let blast_start = Instant::now();
    let spec = BlastSpec {
        tag: &format!("[scale-out] {key}: events"),
        kind: BlastCall::Cancelled,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.blast_duration),
        max_events: args.blast_events,
        contacts: args.scale_contacts,
        unknown_percent: args.unknown_percent,
        seed: args.seed.wrapping_add(12_000),
        agents: args.agents,
        call_prefix: format!("scale-blast-{key}-{run_id}"),
    };
    let cti_urls: Vec<String> = nodes.iter().map(|s| s.url(&format!("/api/v1/cti/{CTI_TOKEN}"))).collect();
    let BlastDone { ok, errors, mut lat, first_error, span, new_calls_ok } = blast(&spec, http, &cti_urls, nodes).await?;
    let blast_end = Instant::now();
    let blast_cpu = cpu.report(nodes)?;
    let events_rate = ok as f64 / span.as_secs_f64().max(0.001);
    say(format!(
        "[scale-out] {key}: {ok} events accepted in {:.1} s = {events_rate:.0} events/s; {errors} refused or failed; request p50/p99 {}; CPU {}",
        span.as_secs_f64(),
        lat.p50_p99(),
        blast_cpu.line()
    ));
    if let Some(e) = &first_error {
        say(format!("[scale-out] {key}: WARNING: first error: {e}"));
    }
    let drained = wait_for_drain(http, &mut nodes[0], Duration::from_secs(args.drain_timeout)).await?;
    let until = Instant::now();
    let after = outbox(&health(http, &nodes[0]).await?)?;
    let delivered = after.delivered.saturating_sub(before.delivered);
    let deliveries_rate = delivered as f64 / until.duration_since(blast_start).as_secs_f64().max(0.001);
    let drain_text = match drained {
        Ok(_) => format!("{:.2} s", until.saturating_duration_since(blast_end).as_secs_f64()),
        Err(pending) => format!("not within {} s ({pending} pending)", args.drain_timeout),
    };
    say(format!(
        "[scale-out] {key}: outbox: {delivered} activities delivered in {:.1} s from the blast's start ({deliveries_rate:.0}/s); drained after the blast ended: {drain_text}; dead {}",
        until.duration_since(blast_start).as_secs_f64(),
        after.dead
    ));
    let blast_pops = settle_pops(&agents.counts, pops_before, new_calls_ok).await;
    let dup_all = agents.counts.duplicate_pops.load(Ordering::Relaxed);
    say(format!(
        "[scale-out] {key}: pops for the blast's calls: {blast_pops} of {new_calls_ok}; duplicated pops in the blast: {}",
        dup_all - dup_pop_phase
    ));
    fig(&format!("sustained CTI events/s ({} in flight)", args.concurrency), format!("{events_rate:.0}"));
    fig("CTI event HTTP p50 / p99 under that load", lat.p50_p99());
    fig("CTI events refused or failed", errors.to_string());
    fig("pops received / expected in the blast", format!("{blast_pops} / {new_calls_ok}"));
    fig("pops duplicated (blast)", (dup_all - dup_pop_phase).to_string());
    fig(
        "outbox deliveries/s (blast start to pending 0)",
        format!("{deliveries_rate:.0} ({delivered} in {:.1} s)", until.duration_since(blast_start).as_secs_f64()),
    );
    fig("outbox drained after the blast ended", drain_text);
    fig("server CPU, events phase (sum over nodes)", blast_cpu.servers());
    fig("PostgreSQL / nats-server CPU, events phase", blast_cpu.peers());
    fig("bench CPU, events phase", format!("{:.0}%", blast_cpu.bench));

    // Memory, bus and logs.
    let mut peaks = vec![];
    let mut bus_cells = vec![];
    let mut bus_errors = vec![];
    let mut log_cells = vec![];
    let mut dead = 0;
    for (i, srv) in nodes.iter_mut().enumerate() {
        srv.check_alive()?;
        let (hwm, _) = srv.memory()?;
        peaks.push(format!("{:.0}", mb(hwm)));
        let h = health(http, srv).await?;
        dead = dead.max(outbox(&h)?.dead);
        if let Some(b) = h.get("bus").filter(|b| !b.is_null()) {
            let num = |k: &str| b[k].as_u64().unwrap_or(0);
            bus_cells.push(format!("{}/{}", num("published"), num("received")));
            bus_errors.push(num("publish_errors").to_string());
            say(format!(
                "[scale-out] {key}: node {} bus: connected {}, published {}, received {}, publish errors {}, last error {}, nodes heard {}",
                NODE_NAMES[i],
                b["connected"],
                num("published"),
                num("received"),
                num("publish_errors"),
                b["last_error"],
                b["nodes"]
            ));
        }
        let (warnings, errors, first) = log_findings(&srv.log);
        log_cells.push(format!("{warnings}/{errors}"));
        for line in first {
            say(format!("[scale-out] {key}: node {} log: {line}", NODE_NAMES.get(i).copied().unwrap_or("?")));
        }
    }
    agents.readers.abort_all();
    fig("outbox dead at end", dead.to_string());
    fig("peak RSS per node (VmHWM)", format!("{} MB", peaks.join(" / ")));
    if !bus_cells.is_empty() {
        fig("bus frames published/received per node", bus_cells.join("; "));
        fig("bus publish errors per node", bus_errors.join(" / "));
    }
    fig("log lines WARN/ERROR per node", log_cells.join("; "));
    Ok(())
}

/// Waits until every node hears of every other node's agents over the bus (presence), so
/// that the first calls do not race it.
async fn wait_for_presence(http: &reqwest::Client, nodes: &[Server], agents: u32, key: &str) -> anyhow::Result<()> {
    let n = nodes.len() as u64;
    // Agent a is on node a % n.
    let on = |node: usize| (0..u64::from(agents)).filter(|a| a % n == node as u64).count() as u64;
    let started = Instant::now();
    loop {
        let mut missing = vec![];
        for (i, srv) in nodes.iter().enumerate() {
            let h = health(http, srv).await?;
            let bus = &h["bus"];
            if bus["connected"] != Value::Bool(true) {
                missing.push(format!("node {} is not connected to NATS ({})", NODE_NAMES[i], bus["last_error"]));
                continue;
            }
            let heard: HashMap<&str, u64> =
                bus["nodes"].as_array().map(|a| a.iter().filter_map(|x| Some((x["node"].as_str()?, x["agents"].as_u64()?))).collect()).unwrap_or_default();
            for (j, other) in NODE_NAMES.iter().enumerate().take(nodes.len()) {
                if j != i && heard.get(other).copied() != Some(on(j)) {
                    missing.push(format!("node {} knows {:?} agents on {other}, not {}", NODE_NAMES[i], heard.get(other), on(j)));
                }
            }
        }
        if missing.is_empty() {
            if n > 1 {
                say(format!("[scale-out] {key}: every node knows the others' agents after {:.1} s", started.elapsed().as_secs_f64()));
            }
            return Ok(());
        }
        if started.elapsed() > PRESENCE_TIMEOUT {
            say(format!("[scale-out] {key}: WARNING: presence incomplete after {} s, going on: {}", PRESENCE_TIMEOUT.as_secs(), missing.join("; ")));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `/healthz` until the outbox has nothing pending: `Ok(how long)`, or
/// `Err(pending)` when `timeout` ran out first.
async fn wait_for_drain(http: &reqwest::Client, srv: &mut Server, timeout: Duration) -> anyhow::Result<Result<Duration, u64>> {
    let started = Instant::now();
    loop {
        let o = outbox(&health(http, srv).await?)?;
        if o.pending == 0 {
            return Ok(Ok(started.elapsed()));
        }
        if started.elapsed() >= timeout {
            return Ok(Err(o.pending));
        }
        srv.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pops received since `before`, once `expected` arrived or nothing came for 2 s (10 s at most).
async fn settle_pops(counts: &FrameCounts, before: u64, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let got = counts.pop.load(Ordering::Relaxed).saturating_sub(before);
        if got >= expected || Instant::now() >= deadline || last_change.elapsed() >= Duration::from_secs(2) {
            return got;
        }
        if got != last {
            last = got;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(WARN lines, ERROR lines, the first few distinct ones)` of a node's log.
fn log_findings(log: &Path) -> (u64, u64, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut warnings, mut errors) = (0, 0);
    let mut first: Vec<String> = vec![];
    for line in text.lines() {
        let level = line.split_whitespace().take(3).find(|w| *w == "WARN" || *w == "ERROR");
        match level {
            Some("WARN") => warnings += 1,
            Some(_) => errors += 1,
            None => continue,
        }
        // Distinct by what follows the timestamp, so one repeated message shows once.
        let message: String = line.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        if first.len() < 3 && !first.iter().any(|f| f.split_whitespace().skip(1).collect::<Vec<_>>().join(" ") == message) {
            first.push(line.chars().take(400).collect());
        }
    }
    (warnings, errors, first)
}

// ---------------------------------------------------------------- CPU

/// CPU used over a span of wall time by the nodes, the benchmark, and (for the shared setups)
/// PostgreSQL and nats-server.
struct Cpu {
    wall: Instant,
    nodes: Vec<Duration>,
    bench: Duration,
    /// PostgreSQL processes and nats-server at the start, by pid.
    postgres: HashMap<u32, Duration>,
    nats: HashMap<u32, Duration>,
    /// The run's database, whose backends count (other databases' backends do not).
    database: Option<String>,
}

struct CpuFigures {
    /// Percent of one core per node.
    nodes: Vec<f64>,
    bench: f64,
    /// `None` for SQLite.
    postgres: Option<f64>,
    nats: Option<f64>,
}

impl Cpu {
    fn start(nodes: &[Server], shared: Option<&Shared>) -> anyhow::Result<Cpu> {
        let database = shared.map(|s| s.database.clone());
        Ok(Cpu {
            wall: Instant::now(),
            nodes: nodes.iter().map(Server::cpu).collect::<anyhow::Result<_>>()?,
            bench: server::cpu_time("self")?,
            postgres: database.as_deref().map(postgres_processes).unwrap_or_default(),
            nats: if shared.is_some() { processes_named("nats-server") } else { HashMap::new() },
            database,
        })
    }

    fn report(&self, nodes: &[Server]) -> anyhow::Result<CpuFigures> {
        let wall = self.wall.elapsed().as_secs_f64().max(0.001);
        let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
        let nodes = nodes.iter().zip(&self.nodes).map(|(s, before)| Ok(pct(s.cpu()?.saturating_sub(*before)))).collect::<anyhow::Result<_>>()?;
        // A process that started during the span counts from zero; one that ended is lost
        // (the pools keep their connections, so that is rare).
        let since = |before: &HashMap<u32, Duration>, now: HashMap<u32, Duration>| -> f64 {
            now.iter().map(|(pid, t)| pct(t.saturating_sub(before.get(pid).copied().unwrap_or_default()))).sum()
        };
        Ok(CpuFigures {
            nodes,
            bench: pct(server::cpu_time("self")?.saturating_sub(self.bench)),
            postgres: self.database.as_deref().map(|db| since(&self.postgres, postgres_processes(db))),
            nats: self.database.as_ref().map(|_| since(&self.nats, processes_named("nats-server"))),
        })
    }
}

impl CpuFigures {
    /// `123%` or `150% (80% + 70%)`.
    fn servers(&self) -> String {
        let sum: f64 = self.nodes.iter().sum();
        if self.nodes.len() > 1 {
            format!("{sum:.0}% ({})", self.nodes.iter().map(|p| format!("{p:.0}%")).collect::<Vec<_>>().join(" + "))
        } else {
            format!("{sum:.0}%")
        }
    }

    fn peers(&self) -> String {
        match (self.postgres, self.nats) {
            (Some(p), Some(n)) => format!("{p:.0}% / {n:.0}%"),
            _ => "-".into(),
        }
    }

    fn line(&self) -> String {
        let mut s = format!("server {} / bench {:.0}%", self.servers(), self.bench);
        if let (Some(p), Some(n)) = (self.postgres, self.nats) {
            s.push_str(&format!(" / PostgreSQL {p:.0}% / nats-server {n:.0}%"));
        }
        s
    }
}

/// CPU time of every process whose command name is `name`, by pid.
fn processes_named(name: &str) -> HashMap<u32, Duration> {
    processes(|comm, _| comm == name)
}

/// CPU time of PostgreSQL's processes that work for `database`: its backends (their process
/// title names the database) and the server's own (writers, checkpointer, …), but not the
/// backends of other databases, which other programs may be using meanwhile.
fn postgres_processes(database: &str) -> HashMap<u32, Duration> {
    processes(|comm, title| {
        let backend = title.contains('(') || title.contains("[local]");
        comm == "postgres" && (title.contains(database) || !backend)
    })
}

fn processes(keep: impl Fn(&str, &str) -> bool) -> HashMap<u32, Duration> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let title = std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default();
        if keep(comm.trim(), &title)
            && let Ok(t) = server::cpu_time(&pid.to_string())
        {
            out.insert(pid, t);
        }
    }
    out
}

// ---------------------------------------------------------------- peers

/// A database of one setup on the PostgreSQL server.
struct Database {
    name: String,
    url: String,
    admin_url: String,
}

impl Database {
    async fn create(admin_url: &str) -> anyhow::Result<Database> {
        // Our own name: letters, digits and `_` only, so it needs no quoting.
        let name = cxbridge_testkit::scaleout::unique_name("cxb_bench");
        let mut admin = sqlx::PgConnection::connect(admin_url).await.with_context(|| format!("cannot connect to PostgreSQL at {}", redact(admin_url)))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.with_context(|| format!("cannot create the database {name}"))?;
        let _ = admin.close().await;
        Ok(Database { url: with_database(admin_url, &name), name, admin_url: admin_url.to_string() })
    }

    async fn drop_it(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.with_context(|| format!("cannot connect to PostgreSQL to drop {}", self.name))?;
        // FORCE: a node killed rather than stopped may have left connections behind.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot drop the database {}", self.name))?;
        let _ = admin.close().await;
        Ok(())
    }
}

/// `admin_url` with its database (the path) replaced by `name`; the query string is kept.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match (url[after_scheme..].find('@'), url[after_scheme..].find(':')) {
        (Some(at), Some(colon)) if colon < at => format!("{}:***{}", &url[..after_scheme + colon], &url[after_scheme + at..]),
        _ => url.to_string(),
    }
}

/// Deletes a setup's JetStream stream (and with it the nodes' durable consumers).
async fn delete_stream(nats_url: &str, bus: &str) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(3)).connect(nats_url).await.with_context(|| format!("cannot connect to {nats_url}"))?;
    let js = async_nats::jetstream::new(client);
    match js.delete_stream(bus.to_uppercase()).await {
        Ok(_) => Ok(()),
        // No node got as far as creating it.
        Err(e) if matches!(e.kind(), DeleteStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(with_database("postgres://u:p@127.0.0.1:5432/postgres", "x"), "postgres://u:p@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u@h?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h:5432/db"), "postgres://h:5432/db");
    }

    #[test]
    fn log_levels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("l.log");
        std::fs::write(&log, "2026-01-01T00:00:00Z  INFO x: fine\n2026-01-01T00:00:01Z  WARN x: slow\n2026-01-01T00:00:02Z  WARN x: slow\n2026-01-01T00:00:03Z ERROR y: bad\n")
            .expect("write");
        let (w, e, first) = log_findings(&log);
        assert_eq!((w, e), (2, 1));
        assert_eq!(first.len(), 2);
    }
}
