//! The IVR lookup phase: `GET /api/v1/ivr/lookup?ani=…` at a steady open-loop rate against
//! the same server and contacts as the identify phase.
//!
//! Each lookup is started at its scheduled time in its own task, whether or not the earlier
//! ones have been answered (open loop: a slow answer does not delay the next request, so a
//! stall shows in the latencies instead of lowering the rate). The latency of a lookup runs
//! from the moment its request is sent to the end of the answer's body; how late the
//! request left against its schedule is reported apart (the timer's resolution is 1 ms).
//! Callers are picked as in the identify phase (known and unknown, rotating notations), and
//! every answer is checked: the E.164 form, the number of candidates and the identification
//! outcome (`none`, `single`, `multiple`) must be what the generator put in the CRM.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::http::encode;
use crate::numbers::{self, Rng};
use crate::options::Args;
use crate::report::{Row, row, say};
use crate::server::{ADMIN_TOKEN, CpuMeter, Server};
use crate::stats::{Samples, ms};

/// Target from the issue: lookup p99 below this at 1,000 lookups/s.
const TARGET_LOOKUP_P99_MS: f64 = 2.0;
/// The rate the target is stated at.
const TARGET_RATE: u32 = 1000;

/// The identification outcome the hub reports for `matches` records.
fn expected_outcome(matches: u32) -> &'static str {
    match matches {
        0 => "none",
        1 => "single",
        _ => "multiple",
    }
}

/// What one lookup gave.
struct Looked {
    /// How late the request left against its schedule.
    lag: Duration,
    /// Request sent → body read, for answers with a 2xx status.
    latency: Option<Duration>,
    /// Transport error or non-2xx status.
    error: Option<String>,
    /// The answer did not say what the generator put in the CRM.
    wrong: Option<String>,
}

/// Checks one lookup answer against the caller the generator picked.
fn check_answer(v: &Value, c: &numbers::Caller) -> Result<(), String> {
    let expected_e164 = numbers::e164(c.idx);
    let outcome = v["identification"]["outcome"].as_str().unwrap_or("");
    let candidates = v["identification"]["candidates"].as_array().map_or(0, Vec::len) as u32;
    if v["e164"].as_str() != Some(expected_e164.as_str()) || candidates != c.expected || outcome != expected_outcome(c.expected) {
        return Err(format!(
            "{} (expected {} match(es), outcome `{}`, as {expected_e164}): {v}",
            c.written,
            c.expected,
            expected_outcome(c.expected)
        ));
    }
    Ok(())
}

async fn one_lookup(http: reqwest::Client, url: String, caller: numbers::Caller, scheduled: Instant) -> Looked {
    let t0 = Instant::now();
    let mut out = Looked { lag: t0.saturating_duration_since(scheduled), latency: None, error: None, wrong: None };
    let r = match http.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("GET {url}: {e}"));
            return out;
        }
    };
    let status = r.status();
    let body = match r.bytes().await {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(format!("GET {url}: reading the answer: {e}"));
            return out;
        }
    };
    let took = t0.elapsed();
    if !status.is_success() {
        out.error = Some(format!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body).chars().take(300).collect::<String>()));
        return out;
    }
    out.latency = Some(took);
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => out.wrong = check_answer(&v, &caller).err(),
        Err(e) => out.wrong = Some(format!("GET {url}: not JSON ({e})")),
    }
    out
}

fn lookup_url(srv: &Server, c: &numbers::Caller) -> String {
    srv.url(&format!("/api/v1/ivr/lookup?ani={}", encode(&c.written)))
}

/// Runs the phase and adds its rows. `floor` is the `/healthz` p50 / p99 of the same run.
pub async fn phase(args: &Args, http: &reqwest::Client, srv: &mut Server, floor: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n = args.ivr_lookups;
    let rate = args.ivr_rate;
    say(format!(
        "[ivr] {n} GET /api/v1/ivr/lookup at {rate} lookups/s (open loop: each started at its time), {}% unknown callers, rotating notations",
        args.unknown_percent
    ));
    // Its own seed: the same callers whether or not the identify phase ran before.
    let mut rng = Rng::new(args.seed.wrapping_add(3_000));
    // Warm-up: 100 sequential lookups, then a few in parallel so the pool holds some connections.
    for _ in 0..100 {
        let c = numbers::pick_caller(&mut rng, args.contacts, args.unknown_percent);
        http.get(lookup_url(srv, &c)).bearer_auth(ADMIN_TOKEN).send().await?.bytes().await?;
    }
    {
        let mut warm = JoinSet::new();
        for _ in 0..16 {
            let (h, u) = (http.clone(), srv.url("/healthz"));
            warm.spawn(async move { h.get(u).send().await.map(|_| ()) });
        }
        while warm.join_next().await.is_some() {}
    }

    let cpu = CpuMeter::start(srv)?;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    let mut results: Vec<Looked> = Vec::with_capacity(n as usize);
    let mut next_report = start + Duration::from_secs(5);
    let mut max_in_flight = 0usize;
    for j in 0..u64::from(n) {
        let at = start + period.mul_f64(j as f64);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let caller = numbers::pick_caller(&mut rng, args.contacts, args.unknown_percent);
        let url = lookup_url(srv, &caller);
        tasks.spawn(one_lookup(http.clone(), url, caller, at));
        max_in_flight = max_in_flight.max(tasks.len());
        while let Some(done) = tasks.try_join_next() {
            results.push(done?);
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            srv.check_alive()?;
            say(format!("[ivr] {:>4.0} s: {} lookups started, {} answered", at.duration_since(start).as_secs_f64(), j + 1, results.len()));
        }
    }
    let started_for = start.elapsed();
    while let Some(done) = tasks.join_next().await {
        results.push(done?);
    }
    let cpu = cpu.report(srv)?;
    let achieved = f64::from(n) / started_for.as_secs_f64().max(0.001);

    let mut latency = Samples::with_capacity(results.len());
    let mut lag = Samples::with_capacity(results.len());
    let (mut errors, mut wrong) = (0u64, 0u64);
    let (mut first_error, mut first_wrong): (Option<String>, Option<String>) = (None, None);
    for r in results {
        lag.push(r.lag);
        if let Some(d) = r.latency {
            latency.push(d);
        }
        if let Some(e) = r.error {
            errors += 1;
            first_error.get_or_insert(e);
        }
        if let Some(w) = r.wrong {
            wrong += 1;
            first_wrong.get_or_insert(w);
        }
    }
    let p99 = latency.percentile_ms(99.0).unwrap_or(f64::MAX);
    let max = latency.max_ms().map_or("-".into(), ms);
    let lag_p99 = lag.percentile_ms(99.0).map_or("-".into(), ms);
    say(format!(
        "[ivr] done: {n} lookups started at {achieved:.1}/s (start lag p99 {lag_p99} ms, at most {max_in_flight} in flight); lookup p50/p99 {}, max {max} ms (loopback floor /healthz {floor}); {wrong} answers not as expected; {errors} errors; CPU {cpu}",
        latency.p50_p99()
    ));
    if let Some(e) = &first_error {
        say(format!("[ivr] WARNING: first error: {e}"));
    }
    if let Some(w) = &first_wrong {
        say(format!("[ivr] WARNING: first unexpected answer: {w}"));
    }
    rows.push(row(
        format!("IVR lookup p50 / p99 at {rate}/s (floor /healthz)"),
        format!("{} (floor {floor}){}", latency.p50_p99(), crate::stats::vs_floor(Some(p99))),
        "p99 < 2 ms at 1,000/s",
        Some(p99 < TARGET_LOOKUP_P99_MS && rate >= TARGET_RATE && errors == 0),
    ));
    rows.push(row("IVR lookup max", format!("{max} ms"), "", None));
    rows.push(row("IVR lookups started per s / start lag p99", format!("{achieved:.1} / {lag_p99} ms"), "", None));
    rows.push(row("IVR lookup answers not as expected", format!("{wrong} of {n}"), "0", Some(wrong == 0)));
    rows.push(row("IVR lookup errors", format!("{errors} of {n}"), "0", Some(errors == 0)));
    rows.push(row("CPU during the IVR phase (100% = 1 core)", cpu, "", None));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_checked_against_the_generator() {
        let known = numbers::Caller { idx: 5, written: numbers::written(5, 1), expected: 1 };
        let e164 = numbers::e164(5);
        let good = json!({"e164": e164, "identification": {"outcome": "single", "candidates": [{}]}});
        assert!(check_answer(&good, &known).is_ok());
        let none = json!({"e164": e164, "identification": {"outcome": "none", "candidates": []}});
        assert!(check_answer(&none, &known).is_err());
        let pair = numbers::Caller { idx: 48, written: numbers::written(48, 2), expected: 2 };
        let two = json!({"e164": numbers::e164(48), "identification": {"outcome": "multiple", "candidates": [{}, {}]}});
        assert!(check_answer(&two, &pair).is_ok());
        let wrong_number = json!({"e164": "+12015550100", "identification": {"outcome": "multiple", "candidates": [{}, {}]}});
        assert!(check_answer(&wrong_number, &pair).is_err());
    }
}
