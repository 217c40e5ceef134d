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
pub mod views;
pub mod workers;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use cxbridge_domain::conversation::Policy;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::sqlite::{CrmSchema, Durability};
use cxbridge_store::SqliteStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::config::Config;
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

/// A secret from the environment, else the configuration, else generated once into
/// `data/file` (mode 0600).
fn secret(env: &str, configured: Option<&String>, data: &std::path::Path, file: &str) -> anyhow::Result<String> {
    match std::env::var(env) {
        Ok(t) if !t.is_empty() => Ok(t),
        _ => match configured {
            Some(t) => Ok(t.clone()),
            None => auth::stored_token(data, file).with_context(|| format!("cannot store the generated {file} in {}", data.display())),
        },
    }
}

/// Opens the store and builds the application state from `config`.
pub async fn build(config: Config) -> anyhow::Result<Arc<App>> {
    let data = &config.server.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let normalizer = PhoneNormalizer::new(Some(&config.phone.default_region), &config.phone.own_numbers)
        .map_err(|e| anyhow::anyhow!("[phone] default_region: {e}"))?;
    let entities = config.entities();
    let durability = if config.server.durability == "normal" { Durability::Normal } else { Durability::Full };
    let db_path = data.join("cxbridge.sqlite");
    let store = Arc::new(
        SqliteStore::open(&db_path, CrmSchema { entities: entities.clone(), normalizer: normalizer.clone() }, durability)
            .await
            .with_context(|| format!("cannot open the database {}", db_path.display()))?,
    );
    let admin = match std::env::var("CXBRIDGE_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => vec![t],
        _ if !config.auth.admin_tokens.is_empty() => config.auth.admin_tokens.clone(),
        _ => vec![auth::stored_token(data, "admin-token").context("cannot store the generated admin token")?],
    };
    let tokens = Tokens {
        admin,
        cti: secret("CXBRIDGE_CTI_TOKEN", config.auth.cti_token.as_ref(), data, "cti-token")?,
        ivr: secret("CXBRIDGE_IVR_TOKEN", config.ivr.token.as_ref(), data, "ivr-token")?,
        agents: config.agents.iter().filter_map(|a| a.token.clone().map(|t| (a.id.clone(), t))).collect(),
    };
    let session_secret = secret("CXBRIDGE_SESSION_SECRET", config.panel.session_secret.as_ref(), data, "session-secret")?;
    let sessions = session::Sessions::new(&session_secret, &config.panel);
    let block_list: HashSet<String> = config.routing.block_list.iter().filter_map(|n| normalizer.index_key(n)).collect();
    let connected = crm_setup::connect(&config, &normalizer, store.clone()).await?;
    let policy = Policy { memorialize_missed: config.conversations.memorialize_missed };
    Ok(Arc::new(App {
        store: store.clone(),
        crm_store: store,
        crm: connected.crm,
        indexed: connected.indexed,
        mapping: config.mapping(),
        entities,
        normalizer,
        hub: Default::default(),
        tokens,
        sessions,
        policy,
        outbox_wake: Default::default(),
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
    let index_sync = app.indexed.clone().map(|indexed| {
        let every = std::time::Duration::from_secs(app.config.crm.sync_interval_secs.max(1));
        tokio::spawn(crm_index::sync(indexed, every, stop_rx))
    });
    let router = routes::router(app.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.context("the HTTP server failed")?;
    let _ = stop_tx.send(true);
    let _ = outbox.await;
    let _ = sweeper.await;
    if let Some(t) = index_sync {
        let _ = t.await;
    }
    Ok(())
}
