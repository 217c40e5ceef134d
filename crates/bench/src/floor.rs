//! Phase 1: the loopback floor — sequential `GET /healthz` and `GET` of an unknown path
//! (HTTP without the database); later latencies are also given as multiples of its p99.

use crate::http::sequential_gets;
use crate::options::Args;
use crate::report::{Row, row, say};
use crate::server::Server;
use crate::stats::{self, Samples};

/// Measures the floor and returns its `/healthz` latencies (the IVR phase prints them).
pub async fn phase(args: &Args, http: &reqwest::Client, srv: &Server, rows: &mut Vec<Row>) -> anyhow::Result<Samples> {
    say(format!("[floor] {} sequential GET /healthz (and the same number of GET of an unknown path: HTTP without the database)", args.healthz_requests));
    let mut floor = sequential_gets(http, &srv.url("/healthz"), args.healthz_requests, true).await?;
    let mut floor404 = sequential_gets(http, &srv.url("/bench-no-such-path"), args.healthz_requests, false).await?;
    say(format!("[floor] /healthz p50/p99 {}; 404 p50/p99 {}", floor.p50_p99(), floor404.p50_p99()));
    if let Some(p99) = floor.percentile_ms(99.0) {
        stats::set_floor_p99(p99);
    }
    rows.push(row("loopback floor GET /healthz p50 / p99", floor.p50_p99(), "", None));
    rows.push(row("HTTP floor GET 404 (no DB) p50 / p99", floor404.p50_p99(), "", None));
    Ok(floor)
}
