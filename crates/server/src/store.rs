//! Opening the store the configuration names (SQLite file, SQLite URL, PostgreSQL), with the
//! built-in CRM's schema, and bringing a phone index up to the running phone rules.

use std::sync::Arc;

use anyhow::Context as _;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::sqlite::{CrmSchema, Durability};
use cxbridge_store::{CrmStore, PgStore, SqliteStore, Store};

use crate::config::{self, Config, DatabaseKind};
use crate::files;

/// The store the database URL names, with the built-in CRM's schema, its phone index built
/// with the running phone rules (`serve` and `import` alike: an import records the rules, so
/// the next start does not rebuild what the import just keyed).
pub async fn open_store(config: &Config, schema: CrmSchema) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn CrmStore>)> {
    let durability = match config.server.durability {
        config::Durability::Full => Durability::Full,
        config::Durability::Normal => Durability::Normal,
    };
    let (store, crm): (Arc<dyn Store>, Arc<dyn CrmStore>) = match config.server.database_url.as_deref() {
        Some(url) if config.server.database_kind() == DatabaseKind::Postgres => {
            let store = Arc::new(PgStore::open(url, schema, config.server.database_pool).await.context("cannot open the PostgreSQL database")?);
            (store.clone(), store)
        }
        Some(url) => {
            let store = Arc::new(SqliteStore::open_url(url, schema, durability).await.with_context(|| format!("cannot open the database {url}"))?);
            (store.clone(), store)
        }
        None => {
            let path = config.server.data_dir.join("cxbridge.sqlite");
            files::private_database(&path).with_context(|| format!("cannot create the database {}", path.display()))?;
            let store = Arc::new(SqliteStore::open(&path, schema, durability).await.with_context(|| format!("cannot open the database {}", path.display()))?);
            (store.clone(), store)
        }
    };
    rebuild_phone_index(crm.as_ref(), "the built-in CRM").await?;
    Ok((store, crm))
}

/// Rebuilds a store's phone index where it was computed with other phone rules or phone
/// fields (an upgrade of the parser, a changed `default_region` or `phone_fields`), before
/// the hub identifies anyone with it; logs progress on large indexes.
pub(crate) async fn rebuild_phone_index(store: &dyn CrmStore, what: &str) -> anyhow::Result<()> {
    const BATCH: u32 = 5000;
    const REPORT_EVERY: u64 = 100_000;
    let progress = |r: &cxbridge_store::Reindexed| {
        if r.done && r.records == 0 {
            tracing::debug!(index = what, entity = %r.entity, "phone rules recorded (nothing to rebuild)");
        } else if r.done {
            tracing::info!(index = what, entity = %r.entity, records = r.records, previous = r.previous.as_deref().unwrap_or("none recorded"), "phone index rebuilt with the current phone rules");
        } else if r.records % REPORT_EVERY < u64::from(BATCH) {
            tracing::info!(index = what, entity = %r.entity, records = r.records, "rebuilding the phone index…");
        }
    };
    store.reindex_phones(BATCH, &progress).await.with_context(|| format!("cannot rebuild the phone index of {what}"))?;
    Ok(())
}

/// The built-in CRM's records alone, for `cxbridge import`: no secrets are generated, no
/// CRM is connected, nothing else is started.
pub async fn open_crm_store(config: &Config) -> anyhow::Result<Arc<dyn CrmStore>> {
    let data = &config.server.data_dir;
    files::private_dir(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let normalizer = PhoneNormalizer::new(Some(&config.phone.default_region), &config.phone.own_numbers)
        .map_err(|e| anyhow::anyhow!("[phone] default_region: {e}"))?;
    let (_, crm_store) = open_store(config, CrmSchema { entities: config.entities(), normalizer }).await?;
    Ok(crm_store)
}
