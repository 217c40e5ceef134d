//! Picks and connects the CRM the config names: the built-in CRM on the hub's own database,
//! or an external one (Dataverse, Salesforce, Tryton) behind the same port, with its local
//! phone index when it has a change feed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use cxbridge_domain::crm::{Crm, EntitySpec};
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::sqlite::{CrmSchema, Durability};
use cxbridge_store::{BuiltinCrm, CrmStore, SqliteStore};

use cxbridge_connectors::sinks::crm::Provider;
use cxbridge_connectors::sinks::crm::dataverse::Dataverse;
use cxbridge_connectors::client::oauth::Secret;
use cxbridge_connectors::sinks::crm::salesforce::Salesforce;
use cxbridge_connectors::sinks::crm::tryton::Tryton;

use crate::config::Config;

mod indexed;

pub use indexed::{IndexedCrm, Resync};

/// The CRM secret from the config file, else from the environment; never logged.
fn secret(from_config: Option<&String>, env: &str, what: &str) -> anyhow::Result<Secret> {
    if let Some(s) = from_config.filter(|s| !s.is_empty()) {
        return Ok(Secret::new(s.clone()));
    }
    match std::env::var(env) {
        Ok(s) if !s.is_empty() => Ok(Secret::new(s)),
        _ => anyhow::bail!("the CRM's {what} is missing: set it in the config or in {env}"),
    }
}

/// The configured external CRM's adapter (`None` for the built-in CRM). Constructing it
/// validates its section without connecting; `secret_of(given, env, what)` supplies its secret.
fn external(
    config: &Config,
    normalizer: &PhoneNormalizer,
    mut secret_of: impl FnMut(Option<&String>, &str, &str) -> anyhow::Result<Secret>,
) -> anyhow::Result<Option<Arc<dyn Crm>>> {
    let entities = config.entities();
    let http = cxbridge_connectors::client::http_client();
    let crm: Arc<dyn Crm> = match (config.crm.provider, &config.crm.dataverse, &config.crm.salesforce, &config.crm.tryton) {
        (Provider::Dataverse, Some(c), _, _) => {
            let secret = secret_of(c.client_secret.as_ref(), "CXBRIDGE_CRM_CLIENT_SECRET", "client secret")?;
            Arc::new(Dataverse::new(c, secret, normalizer.clone(), http).context("[crm.dataverse]")?.with_entities(entities))
        }
        (Provider::Salesforce, _, Some(c), _) => {
            let secret = secret_of(c.client_secret.as_ref(), "CXBRIDGE_CRM_CLIENT_SECRET", "client secret")?;
            Arc::new(Salesforce::new(c, secret, normalizer.clone(), http).context("[crm.salesforce]")?.with_entities(entities))
        }
        (Provider::Tryton, _, _, Some(c)) => {
            let password = secret_of(c.password.as_ref(), "CXBRIDGE_CRM_PASSWORD", "password")?;
            Arc::new(Tryton::new(c, password, normalizer.clone(), http).context("[crm.tryton]")?.with_entities(entities))
        }
        _ => return Ok(None),
    };
    Ok(Some(crm))
}

/// Checks the CRM section as far as it can be checked without connecting: the adapter's own
/// validation (URLs, batch sizes, …). Returns notes for the admin (e.g. a secret expected
/// from the environment).
pub fn check(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut notes = vec![];
    let normalizer = PhoneNormalizer::new(Some(&config.phone.default_region), &config.phone.own_numbers).map_err(|e| anyhow::anyhow!("[phone] {e}"))?;
    external(config, &normalizer, |given, env, what| {
        Ok(secret(given, env, what).unwrap_or_else(|_| {
            notes.push(format!("the CRM secret is not in the file; {env} must be set when serving"));
            Secret::new("placeholder")
        }))
    })?;
    Ok(notes)
}

/// The connected CRM.
pub struct Connected {
    pub crm: Arc<dyn Crm>,
    /// Present for external CRMs with a local phone index.
    pub indexed: Option<Arc<IndexedCrm>>,
}

/// Connects the configured CRM. `builtin_store` is the hub's own database (the built-in CRM).
pub async fn connect(config: &Config, normalizer: &PhoneNormalizer, builtin_store: Arc<dyn CrmStore>) -> anyhow::Result<Connected> {
    let entities = config.entities();
    match external(config, normalizer, secret)? {
        Some(crm) => index_for(config, normalizer, crm, entities).await,
        None => Ok(Connected { crm: Arc::new(BuiltinCrm::new(builtin_store, entities)), indexed: None }),
    }
}

/// Wraps `crm` with a local phone index in its own SQLite file (a cache: deleting it only
/// means a full sync on the next start).
async fn index_for(config: &Config, normalizer: &PhoneNormalizer, crm: Arc<dyn Crm>, entities: Vec<EntitySpec>) -> anyhow::Result<Connected> {
    if !config.crm.local_index || !crm.has_change_feed() {
        return Ok(Connected { crm, indexed: None });
    }
    let path = index_path(&config.server.data_dir, config.crm.provider);
    let schema = CrmSchema { entities: entities.clone(), normalizer: normalizer.clone() };
    crate::files::private_database(&path).with_context(|| format!("cannot create the local phone index {}", path.display()))?;
    let store = SqliteStore::open(&path, schema, Durability::Normal)
        .await
        .with_context(|| format!("cannot open the local phone index {}", path.display()))?;
    crate::store::rebuild_phone_index(&store, "the local phone index").await?;
    let indexed = Arc::new(IndexedCrm::new(crm, Arc::new(store), entities).await?);
    Ok(Connected { crm: indexed.clone(), indexed: Some(indexed) })
}

pub fn index_path(data_dir: &Path, provider: Provider) -> std::path::PathBuf {
    data_dir.join(format!("crm-index-{provider}.sqlite"))
}
