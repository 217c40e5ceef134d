//! Phase 2: sequential `GET /api/v1/identify` against the built-in CRM, each answer checked
//! against the callers the contacts were generated with.

use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::http::encode;
use crate::numbers::{self, Rng};
use crate::options::Args;
use crate::report::{Row, TARGET_IDENTIFY_P99_MS, row, say};
use crate::server::{ADMIN_TOKEN, Server};
use crate::stats::{self, Samples};

/// Phase 2: sequential identifications, each answer checked.
pub async fn phase(args: &Args, http: &reqwest::Client, srv: &Server, rows: &mut Vec<Row>) -> anyhow::Result<()> {
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
