//! Phases 3–4: screen pops over agent WebSockets at a steady call rate (each call
//! newCall → pop, answer, hangup, wrap-up), then the outbox draining the activities those
//! calls wrote.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::agents::{Agents, connect_agents};
use crate::calls::{CallCtx, CallFigures, CallPlan, run_calls};
use crate::http::{health, outbox};
use crate::numbers::{self, Rng};
use crate::options::Args;
use crate::report::{Row, TARGET_POP_P99_MS, row, say};
use crate::server::{CTI_TOKEN, CpuMeter, Server};
use crate::stats::{self, ms};

/// Pops at `args.rate` calls/s, then the outbox drain. Returns the agents still connected:
/// the events phase runs with them, the memory phase counts their frames.
pub async fn phase(args: &Args, http: &reqwest::Client, srv: &mut Server, rows: &mut Vec<Row>) -> anyhow::Result<Agents> {
    // The pop phase's callers follow the identify phase's in the same sequence.
    let mut rng = Rng::new(args.seed);
    for _ in 0..100 + args.identify_requests {
        numbers::pick_caller(&mut rng, args.contacts, args.unknown_percent);
    }

    // Phase 3: pops at a steady rate.
    say(format!("[pop] connecting {} agent streams", args.agents));
    let agents = connect_agents(&[srv.ws_url("")], args.agents, false).await?;
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

    Ok(agents)
}
