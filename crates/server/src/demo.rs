//! `cxbridge demo`: sample CRM data and a few simulated calls through the real CTI path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_connectors::{CallEvent, CallEventKind};
use cxbridge_domain::conversation::{Direction, EndCause, Event, EventKind, WrapUp};
use cxbridge_store::Recorded;

use crate::service::App;

fn f(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn seed(app: &App) -> anyhow::Result<()> {
    if app.crm_store.count_records("contact").await? > 0 {
        return Ok(());
    }
    let crm = &app.crm_store;
    crm.create_record("account", f(&[("id", "acme"), ("name", "Acme Rockets"), ("phone", "+1 415 555 0100"), ("owner", "alice")])).await?;
    crm.create_record("contact", f(&[("id", "ada"), ("name", "Ada Lovelace"), ("phone", "(415) 555-0142"), ("company", "Acme Rockets"), ("account_id", "acme")]))
        .await?;
    // Two people behind one switchboard number: the pop lists both.
    crm.create_record("contact", f(&[("id", "grace"), ("name", "Grace Hopper"), ("phone", "+1-415-555-0199")])).await?;
    crm.create_record("contact", f(&[("id", "alan"), ("name", "Alan Turing"), ("phone", "415.555.0199")])).await?;
    crm.create_record("lead", f(&[("id", "lead1"), ("name", "Linus Lead"), ("mobile", "+44 20 7946 0000"), ("company", "Penguin Ltd")])).await?;
    Ok(())
}

fn call(id: &str, kind: CallEventKind, from: &str, agent: &str) -> CallEvent {
    CallEvent {
        source: "cti",
        kind,
        call_id: id.into(),
        conversation_key: id.into(),
        from: from.into(),
        to: "+14155550000".into(),
        direction: Direction::Inbound,
        users: vec![agent.into()],
        user_ids: vec![],
        queue: Some("sales".into()),
        answering_number: None,
        diversion: None,
    }
}

async fn simulate(app: Arc<App>) {
    let callers = ["(415) 555-0142", "+14155550199", "+14155550123", "anonymous"];
    let mut n = 0u64;
    loop {
        for from in callers {
            n += 1;
            let id = format!("demo-{}-{n}", std::process::id());
            let run = async {
                app.ingest_call(call(&id, CallEventKind::NewCall, from, "alice"), Instant::now()).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                app.ingest_call(call(&id, CallEventKind::Answer, from, "alice"), Instant::now()).await?;
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = app.ingest_call(call(&id, CallEventKind::Hangup { cause: EndCause::NormalClearing }, from, "alice"), Instant::now()).await?;
                if let Recorded::Applied(t) = done.recorded {
                    let c = t.conversation;
                    let wrap = WrapUp { notes: Some("Demo call".into()), ..WrapUp::default() };
                    let ev = Event { dedup_key: format!("demo-wrap:{}", c.id), source: c.source, conversation_key: c.external_id, leg: None, at: cxbridge_domain::Timestamp::now(), kind: EventKind::WrappedUp(wrap) };
                    app.record(ev, "demo", "wrapup", Instant::now()).await?;
                }
                Ok::<_, crate::error::ApiError>(())
            };
            if let Err(e) = run.await {
                tracing::warn!(error = e.detail, "demo call failed");
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    }
}

/// Seeds the CRM, prints how to connect, and starts simulated calls.
pub async fn start(app: Arc<App>, addr: SocketAddr) -> anyhow::Result<()> {
    seed(&app).await?;
    let token = app.tokens.admin.first().cloned().unwrap_or_default();
    println!("demo: sample contacts loaded; a simulated call to agent `alice` every ~15 s");
    println!("  agent stream:  ws://{addr}/api/v1/agents/alice/stream?access_token={token}");
    println!("  admin token:   {token}");
    println!("  CTI webhook:   http://{addr}/api/v1/cti/{}", app.tokens.cti);
    println!("  try:           curl -H 'Authorization: Bearer {token}' 'http://{addr}/api/v1/identify?address=415-555-0142'");
    println!("  health:        http://{addr}/healthz");
    tokio::spawn(simulate(app));
    Ok(())
}
