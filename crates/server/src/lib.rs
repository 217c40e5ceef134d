//! The cxbridge server: HTTP API, agent WebSocket hub, background workers.
//! `main.rs` is the CLI around [`run`]; tests start the same [`run`] on port 0.

/// Prints a line for the person who started the hub. A stdout whose reader went away (a
/// supervisor that read the first line, `cxbridge serve | head -1`) must not stop a running
/// hub, so a failed write is ignored where `println!` would panic.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod app;
pub mod config;
pub mod crm;
pub mod demo;
pub mod files;
pub mod http;
pub mod import;
pub mod run;
pub mod secrets;
pub mod store;
pub mod text;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use cxbridge_connectors::bus::{Delivery, NatsBus, NatsBusConfig};
use cxbridge_domain::conversation::Policy;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::sqlite::CrmSchema;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::{App, Grants};
use crate::config::Config;
use crate::http::Edge;
use crate::http::caller::Tokens;
use crate::secrets::{generated, secret};

pub use crate::store::open_crm_store;

/// The assembled hub: the use cases, the HTTP edge around them, and the bus inbox the
/// drivers take when [`run`] starts them.
pub struct Server {
    pub app: Arc<App>,
    pub edge: Arc<Edge>,
    bus_inbox: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

/// The Prometheus recorder is process-wide; several apps in one test process share it.
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let buckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
    let recorder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)?.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Another thread won the race; use its handle.
        return HANDLE.get().cloned().context("metrics recorder already installed elsewhere");
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Connects this node to the others over NATS when `[bus] url` is set.
/// `secret` signs every message on the bus (see [`bus_secret`]).
async fn connect_bus(config: &Config, node_id: &str, secret: Option<String>) -> anyhow::Result<Option<(Arc<NatsBus>, tokio::sync::mpsc::Receiver<Delivery>)>> {
    use cxbridge_connectors::bus::{NatsAuth, NatsTls, Secret};
    let b = &config.bus;
    let (Some(url), Some(secret)) = (b.url(), secret) else { return Ok(None) };
    let from_env = |name: &str, configured: &Option<String>| std::env::var(name).ok().filter(|v| !v.is_empty()).or_else(|| configured.clone());
    let auth = match (&b.user, from_env("CXBRIDGE_NATS_PASSWORD", &b.password), from_env("CXBRIDGE_NATS_TOKEN", &b.token)) {
        (Some(user), password, _) => NatsAuth::UserPassword { user: user.clone(), password: Secret::new(password.unwrap_or_default()) },
        (None, _, Some(token)) => NatsAuth::Token(Secret::new(token)),
        (None, _, None) => NatsAuth::None,
    };
    let tls = NatsTls {
        required: b.tls_required,
        ca_file: b.tls_ca_file.clone(),
        client_cert: b.tls_cert_file.clone().zip(b.tls_key_file.clone()),
    };
    let cfg = NatsBusConfig {
        secret: Secret::new(secret),
        auth,
        tls,
        url: url.to_string(),
        node_id: node_id.to_string(),
        stream: b.stream.clone(),
        subject_prefix: b.subject_prefix.clone(),
        max_age: std::time::Duration::from_secs(b.max_age_secs),
        presence_ttl: std::time::Duration::from_secs(b.presence_ttl_secs),
    };
    let (bus, inbox) = NatsBus::connect(cfg).await.context("cannot join the other nodes over NATS")?;
    Ok(Some((Arc::new(bus), inbox)))
}

/// The bus's shared secret when this node is one of several. Like every secret the nodes
/// share it must be given (a generated one would differ per node), and it is asked for before
/// anything is opened, so a node without it refuses to start at once.
fn bus_secret(config: &Config) -> anyhow::Result<Option<String>> {
    if config.bus.url().is_none() {
        return Ok(None);
    }
    secret("CXBRIDGE_BUS_SECRET", config.bus.secret.as_ref(), "[bus] secret", &config.server.data_dir, "bus-secret", true).map(Some)
}

/// Opens the store and builds the application state from `config`.
pub async fn build(config: Config) -> anyhow::Result<Arc<Server>> {
    let data = &config.server.data_dir;
    files::private_dir(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let normalizer = PhoneNormalizer::new(Some(&config.phone.default_region), &config.phone.own_numbers)
        .map_err(|e| anyhow::anyhow!("[phone] default_region: {e}"))?;
    let entities = config.entities();
    config.validate_scale_out().map_err(|e| anyhow::anyhow!("{e}"))?;
    let clustered = config.bus.url().is_some();
    let admin = match std::env::var("CXBRIDGE_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => {
            config::check_secret("CXBRIDGE_ADMIN_TOKEN", &t).map_err(anyhow::Error::msg)?;
            vec![t]
        }
        _ if !config.auth.admin_tokens.is_empty() => config.auth.admin_tokens.clone(),
        _ => vec![generated("CXBRIDGE_ADMIN_TOKEN", "[auth] admin_tokens", data, "admin-token", clustered)?],
    };
    let tokens = Tokens {
        admin,
        cti: secret("CXBRIDGE_CTI_TOKEN", config.auth.cti_token.as_ref(), "[auth] cti_token", data, "cti-token", clustered)?,
        ivr: secret("CXBRIDGE_IVR_TOKEN", config.ivr.token.as_ref(), "[ivr] token", data, "ivr-token", clustered)?,
        agents: config.agents.iter().filter_map(|a| a.token.clone().map(|t| (a.id.clone(), t))).collect(),
    };
    let session_secret = secret("CXBRIDGE_SESSION_SECRET", config.panel.session_secret.as_ref(), "[panel] session_secret", data, "session-secret", clustered)?;
    let bus_secret = bus_secret(&config)?;
    let (store, crm_store) = store::open_store(&config, CrmSchema { entities: entities.clone(), normalizer: normalizer.clone() }).await?;
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    // Another node's enqueued activity wakes this node's worker too (PostgreSQL NOTIFY).
    store.wake_on_outbox(outbox_wake.clone());
    let node_id = config.server.node_id();
    let bus = connect_bus(&config, &node_id, bus_secret).await?;
    let sessions = http::session::Sessions::new(&session_secret, &config.panel);
    let grants = Grants::new(&session_secret);
    let block_list: HashSet<String> = config.routing.block_list.iter().filter_map(|n| normalizer.index_key(n)).collect();
    let connected = crm::connect(&config, &normalizer, crm_store.clone()).await?;
    let policy = Policy { memorialize_missed: config.conversations.memorialize_missed };
    let (bus, bus_inbox) = match bus {
        Some((b, inbox)) => (Some(b), Some(inbox)),
        None => (None, None),
    };
    let app = Arc::new(App {
        store,
        crm_store,
        bus,
        node_id,
        crm: connected.crm,
        directory: Arc::new(config.directory()),
        indexed: connected.indexed,
        mapping: config.mapping(),
        entities,
        normalizer,
        hub: Default::default(),
        grants,
        policy,
        outbox_wake,
        started: Instant::now(),
        block_list,
        config,
    });
    let edge = Arc::new(Edge { app: app.clone(), tokens, sessions, metrics: metrics_handle()? });
    Ok(Arc::new(Server { app, edge, bus_inbox: Mutex::new(bus_inbox) }))
}

/// Serves the hub on `listener` with its drivers until `shutdown` resolves.
pub async fn run(server: Arc<Server>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    use crate::http::{listen, redact};
    let app = server.app.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let inbox = server.bus_inbox.lock().ok().and_then(|mut i| i.take());
    let drivers = run::Drivers::start(&app, inbox, &stop_rx);
    let limits = listen::Limits::from_config(&app.config.server);
    let request_limit = limits.request_timeout;
    let router = http::router(server.edge.clone())
        .layer(axum::middleware::from_fn(http::framework_problems))
        .layer(axum::middleware::from_fn(move |req, next| listen::request_timeout(request_limit, req, next)))
        // The default span logs the raw URI, tokens in paths and queries included.
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<axum::body::Body>| {
            tracing::debug_span!("request", method = %req.method(), uri = %redact::redact_uri(req.uri()), version = ?req.version())
        }));
    let bus = app.bus.clone();
    let shutdown = async move {
        shutdown.await;
        // The other nodes stop routing calls to this node's agents at once, not only when
        // its presence times out (open streams may hold the shutdown for a while).
        if let Some(bus) = bus {
            bus.announce(vec![]);
        }
    };
    listen::serve(listener, router, limits, shutdown).await;
    let _ = stop_tx.send(true);
    drivers.join().await;
    if let Some(bus) = &app.bus {
        // Frames still queued reach the other nodes before the process ends.
        bus.close().await;
    }
    Ok(())
}
