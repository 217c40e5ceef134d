//! `cxbridge demo`: sample CRM data and a few simulated calls through the real CTI path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cxbridge_connectors::sources::call_event::{CallEvent, CallEventKind};
use cxbridge_domain::conversation::{Direction, EndCause};

use crate::config::{AgentConfig, Config, WorkflowAction, WorkflowConfig, WrapupCodeConfig};
use crate::Server;
use crate::app::App;

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
        leg: None,
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

/// One simulated call: rings, is answered by `agent`, talks, hangs up. The wrap-up is the
/// agent's, in the panel; without one the ACW timeout completes the call.
async fn one_call(app: Arc<App>, id: String, from: &'static str, agent: &'static str) {
    let run = async {
        app.record_call(call(&id, CallEventKind::NewCall, from, agent), Instant::now()).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        app.record_call(call(&id, CallEventKind::Answer, from, agent), Instant::now()).await?;
        tokio::time::sleep(Duration::from_secs(20)).await;
        app.record_call(call(&id, CallEventKind::Hangup { cause: EndCause::NormalClearing }, from, agent), Instant::now()).await?;
        Ok::<_, crate::app::Error>(())
    };
    if let Err(e) = run.await {
        tracing::warn!(error = %e, "demo call failed");
    }
}

/// A call every `every` seconds, alternating between alice and bob, so calls overlap now
/// and then: a known caller, a number shared by two contacts, a new number, an anonymous one.
async fn simulate(app: Arc<App>, every: Duration) {
    let callers = ["(415) 555-0142", "+14155550199", "+14155550123", "anonymous"];
    let mut n = 0u64;
    loop {
        for from in callers {
            n += 1;
            let agent = if n.is_multiple_of(5) { "bob" } else { "alice" };
            tokio::spawn(one_call(app.clone(), format!("demo-{}-{n}", std::process::id()), from, agent));
            tokio::time::sleep(every).await;
        }
    }
}

/// Demo agents, wrap-up codes and workflows, unless the configuration has its own. Returns
/// the agents' password (generated once into the data directory).
pub fn configure(config: &mut Config) -> anyhow::Result<Option<String>> {
    let mut password = None;
    if config.agents.is_empty() {
        crate::files::private_dir(&config.server.data_dir)?;
        // Typed by a person from the screen, so short groups of unambiguous characters.
        let secret = crate::secrets::stored_secret(&config.server.data_dir, "demo-password", crate::secrets::typeable_password)?;
        for (id, name, supervisor) in [("alice", "Alice Example", true), ("bob", "Bob Example", false)] {
            config.agents.push(AgentConfig {
                id: id.into(),
                name: Some(name.into()),
                cti_users: vec![id.into()],
                token: Some(secret.clone()),
                supervisor,
                ..AgentConfig::default()
            });
        }
        password = Some(secret);
    }
    if config.wrapup_codes.is_empty() {
        let codes = [
            ("sale", "Sale", "Sales"),
            ("quote", "Quote sent", "Sales"),
            ("solved", "Solved", "Support"),
            ("escalated", "Escalated", "Support"),
            ("callback", "Call back", "Follow-up"),
        ];
        config.wrapup_codes = codes
            .iter()
            .map(|(code, label, category)| WrapupCodeConfig { code: code.to_string(), label: Some(label.to_string()), category: Some(category.to_string()) })
            .collect();
    }
    if config.workflows.is_empty() && config.crm.provider == cxbridge_connectors::sinks::crm::Provider::Builtin {
        let workflow = |name: &str, label: &str, action: WorkflowAction, entity: &str, required: &[&str]| WorkflowConfig {
            name: name.into(),
            label: Some(label.into()),
            action,
            entity: entity.into(),
            fields: Default::default(),
            required: required.iter().map(|s| s.to_string()).collect(),
            allowed: vec![],
            limit: 20,
        };
        config.workflows = vec![
            workflow("find_contact", "Find contact", WorkflowAction::Search, "contact", &[]),
            workflow("new_lead", "New lead", WorkflowAction::Create, "lead", &["name"]),
            workflow("history", "History", WorkflowAction::Timeline, "contact", &[]),
        ];
    }
    Ok(password)
}

/// Seeds the CRM, prints how to connect, and starts simulated calls.
pub async fn start(server: &Server, addr: SocketAddr, password: Option<String>, every: Duration) -> anyhow::Result<()> {
    let app = server.app.clone();
    seed(&app).await?;
    let tokens = &server.edge.tokens;
    let token = tokens.admin.first().cloned().unwrap_or_default();
    crate::say!("demo: sample contacts loaded; a simulated call every {} s, mostly to alice", every.as_secs());
    crate::say!("  agent panel:   http://{addr}/agent");
    match &password {
        Some(p) => crate::say!("  sign in as:    alice (supervisor) or bob, password {p}"),
        None => crate::say!("  sign in as:    an agent of your configuration"),
    }
    crate::say!("  admin token:   {token}");
    crate::say!("  CTI webhook:   http://{addr}/api/v1/cti/{}", tokens.cti);
    crate::say!("  try:           curl -H 'Authorization: Bearer {token}' 'http://{addr}/api/v1/identify?address=415-555-0142'");
    crate::say!("  health:        http://{addr}/healthz");
    tokio::spawn(simulate(app, every));
    Ok(())
}
