//! Phase 5: sustained CTI events/s — `--concurrency` requests in flight of
//! newCall/answer/hangup per call id, the pop phase's agents still connected.

use std::time::Duration;

use crate::blast::{BlastCall, BlastDone, BlastSpec, blast};
use crate::options::Args;
use crate::report::{Row, TARGET_EVENTS_PER_SEC, row, say};
use crate::server::{CTI_TOKEN, CpuMeter, Server};
use crate::stats;

pub async fn phase(args: &Args, http: &reqwest::Client, srv: &mut Server, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // The call ids carry the process id, as the pop phase's do: unique per run.
    let run_id = std::process::id();

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

    Ok(())
}
