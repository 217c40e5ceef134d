//! The cxbridge server: HTTP API, agent WebSocket hub, background workers.
//! `main.rs` is the CLI around [`run`]; tests start the same [`run`] on port 0.

pub mod auth;
pub mod config;
pub mod crm_index;
pub mod crm_setup;
pub mod error;
pub mod hub;
pub mod demo;
pub mod import;
pub mod ivr;
pub mod routes;
pub mod service;
pub mod session;
pub mod throttle;
pub mod views;
pub mod workers;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use cxbridge_domain::conversation::Policy;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_connectors::bus::{Delivery, NatsBus, NatsBusConfig};
use cxbridge_store::sqlite::{CrmSchema, Durability};
use cxbridge_store::{CrmStore, PgStore, SqliteStore, Store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::config::{Config, DatabaseKind};
use crate::service::App;

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

/// A secret from the environment, else the configuration, else [`generated`].
fn secret(env: &str, configured: Option<&String>, setting: &str, data: &std::path::Path, file: &str, clustered: bool) -> anyhow::Result<String> {
    match std::env::var(env) {
        Ok(t) if !t.is_empty() => Ok(t),
        _ => match configured {
            Some(t) => Ok(t.clone()),
            None => generated(env, setting, data, file, clustered),
        },
    }
}

/// A secret generated once into `data/file` (mode 0600). Nodes of a cluster must agree on
/// every secret, so there a generated one (which would differ per node) is refused with what
/// to set instead.
fn generated(env: &str, setting: &str, data: &std::path::Path, file: &str, clustered: bool) -> anyhow::Result<String> {
    if clustered {
        anyhow::bail!("several nodes ([bus] url is set) must share their secrets: set {env} (or {setting}) to the same value on every node");
    }
    auth::stored_token(data, file).with_context(|| format!("cannot store the generated {file} in {}", data.display()))
}

/// The store the database URL names, with the built-in CRM's schema.
async fn open_store(config: &Config, schema: CrmSchema) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn CrmStore>)> {
    let durability = if config.server.durability == "normal" { Durability::Normal } else { Durability::Full };
    let store = match config.server.database_url.as_deref() {
        Some(url) if config.server.database_kind() == DatabaseKind::Postgres => {
            let store = Arc::new(PgStore::open(url, schema, config.server.database_pool).await.context("cannot open the PostgreSQL database")?);
            return Ok((store.clone(), store));
        }
        Some(url) => SqliteStore::open_url(url, schema, durability).await.with_context(|| format!("cannot open the database {url}"))?,
        None => {
            let path = config.server.data_dir.join("cxbridge.sqlite");
            SqliteStore::open(&path, schema, durability).await.with_context(|| format!("cannot open the database {}", path.display()))?
        }
    };
    let store = Arc::new(store);
    Ok((store.clone(), store))
}

/// Connects this node to the others over NATS when `[bus] url` is set.
async fn connect_bus(config: &Config, node_id: &str) -> anyhow::Result<Option<(Arc<NatsBus>, tokio::sync::mpsc::Receiver<Delivery>)>> {
    let b = &config.bus;
    let Some(url) = b.url() else { return Ok(None) };
    let cfg = NatsBusConfig {
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

/// Opens the store and builds the application state from `config`.
pub async fn build(config: Config) -> anyhow::Result<Arc<App>> {
    let data = &config.server.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let normalizer = PhoneNormalizer::new(Some(&config.phone.default_region), &config.phone.own_numbers)
        .map_err(|e| anyhow::anyhow!("[phone] default_region: {e}"))?;
    let entities = config.entities();
    config.validate_scale_out().map_err(|e| anyhow::anyhow!("{e}"))?;
    let clustered = config.bus.url().is_some();
    let admin = match std::env::var("CXBRIDGE_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => vec![t],
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
    let (store, crm_store) = open_store(&config, CrmSchema { entities: entities.clone(), normalizer: normalizer.clone() }).await?;
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    // Another node's enqueued activity wakes this node's worker too (PostgreSQL NOTIFY).
    store.wake_on_outbox(outbox_wake.clone());
    let node_id = config.server.node_id();
    let bus = connect_bus(&config, &node_id).await?;
    let sessions = session::Sessions::new(&session_secret, &config.panel);
    let block_list: HashSet<String> = config.routing.block_list.iter().filter_map(|n| normalizer.index_key(n)).collect();
    let connected = crm_setup::connect(&config, &normalizer, crm_store.clone()).await?;
    let policy = Policy { memorialize_missed: config.conversations.memorialize_missed };
    let (bus, bus_inbox) = match bus {
        Some((b, inbox)) => (Some(b), Some(inbox)),
        None => (None, None),
    };
    Ok(Arc::new(App {
        store,
        crm_store,
        bus,
        bus_inbox: std::sync::Mutex::new(bus_inbox),
        node_id,
        crm: connected.crm,
        indexed: connected.indexed,
        mapping: config.mapping(),
        entities,
        normalizer,
        hub: Default::default(),
        tokens,
        sessions,
        policy,
        outbox_wake,
        started: Instant::now(),
        block_list,
        metrics: metrics_handle()?,
        config,
    }))
}

/// Serves `app` on `listener` with its workers until `shutdown` resolves.
pub async fn run(app: Arc<App>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let outbox = tokio::spawn(workers::outbox(app.clone(), stop_rx.clone()));
    let sweeper = tokio::spawn(workers::sweeper(app.clone(), stop_rx.clone()));
    let inbox = app.bus_inbox.lock().ok().and_then(|mut i| i.take());
    let from_bus = inbox.map(|inbox| tokio::spawn(hub::deliver_from_bus(app.clone(), inbox, stop_rx.clone())));
    let index_sync = app.indexed.clone().map(|indexed| {
        let every = std::time::Duration::from_secs(app.config.crm.sync_interval_secs.max(1));
        tokio::spawn(crm_index::sync(indexed, every, stop_rx))
    });
    let router = routes::router(app.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    let bus = app.bus.clone();
    let shutdown = async move {
        shutdown.await;
        // The other nodes stop routing calls to this node's agents at once, not only when
        // its presence times out (open streams may hold the shutdown for a while).
        if let Some(bus) = bus {
            bus.announce(vec![]);
        }
    };
    // Agent frames are small writes: without TCP_NODELAY, Nagle holds one back until the
    // panel's delayed ACK of the previous (up to 40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // Connect info: the sign-in throttle counts failures per client address.
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await.context("the HTTP server failed")?;
    let _ = stop_tx.send(true);
    if let Some(t) = from_bus {
        let _ = t.await;
    }
    let _ = outbox.await;
    let _ = sweeper.await;
    if let Some(t) = index_sync {
        let _ = t.await;
    }
    if let Some(bus) = &app.bus {
        // Frames still queued reach the other nodes before the process ends.
        bus.close().await;
    }
    Ok(())
}
