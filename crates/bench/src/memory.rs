//! Phase 6: the server's memory (RSS after start, peak, at end), the final outbox state and
//! the frames the agents received; stops the agents' readers.

use std::sync::atomic::Ordering;

use crate::agents::Agents;
use crate::http::{health, outbox};
use crate::report::{Row, TARGET_RSS_MB, mb, row, say};
use crate::server::Server;

/// `rss_start` is the server's RSS right after it started, before any traffic.
pub async fn phase(http: &reqwest::Client, srv: &mut Server, mut agents: Agents, rss_start: u64, rows: &mut Vec<Row>) -> anyhow::Result<()> {
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
