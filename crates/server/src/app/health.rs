//! Health at a glance, in words an admin reads: the database, the CRM and its local index,
//! the outbox, the agents connected, and with several nodes the bus.

use cxbridge_domain::Timestamp;
use cxbridge_proto as proto;

use super::{App, views};

impl App {
    /// `down` when the database refuses writes; `degraded` (still working) with dead outbox
    /// items or the bus down; else `ok`.
    pub async fn health(&self) -> proto::Health {
        let db = self.store.ping().await;
        let stats = self.store.outbox_stats(Timestamp::now()).await.unwrap_or_default();
        let ok = db.is_ok();
        let bus = self.bus.as_ref().map(|b| views::bus_health(&b.status()));
        let bus_ok = bus.as_ref().is_none_or(|b| b.connected);
        proto::Health {
            status: if ok && stats.dead == 0 && bus_ok { "ok" } else if ok { "degraded" } else { "down" }.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            database: match db {
                Ok(()) => "ok".into(),
                Err(e) => format!("error: {e}"),
            },
            crm: self.crm_health().await,
            outbox: views::outbox_stats(&stats),
            agents_connected: self.hub.connected_agents() as u64,
            uptime_secs: self.started.elapsed().as_secs(),
            node: self.node_id.clone(),
            store: self.config.server.database_kind().as_str().into(),
            bus,
        }
    }

    async fn crm_health(&self) -> proto::CrmHealth {
        let index = match &self.indexed {
            None => None,
            Some(indexed) => {
                let states = indexed.index().index_sync_states().await.unwrap_or_default();
                let now = Timestamp::now();
                let mut out = vec![];
                for spec in self.entities.iter().filter(|e| e.identify) {
                    let state = states.iter().find(|s| s.entity == spec.name);
                    let records = indexed.index().count_records(&spec.name).await.unwrap_or(0);
                    let synced_at = state.and_then(|s| s.synced_at);
                    let resync = indexed.last_resync(&spec.name);
                    out.push(proto::IndexHealth {
                        entity: spec.name.clone(),
                        state: match state {
                            Some(s) if s.last_error.is_some() => "failing",
                            Some(s) if s.complete => "ready",
                            _ => "syncing",
                        }
                        .into(),
                        records,
                        synced_at: synced_at.map(|t| t.to_string()),
                        age_secs: synced_at.map(|t| now.duration_since(t).as_secs().max(0) as u64),
                        last_error: state.and_then(|s| s.last_error.clone()),
                        resynced_at: resync.as_ref().map(|r| r.at.to_string()),
                        resync_reason: resync.map(|r| r.reason),
                    });
                }
                Some(out)
            }
        };
        proto::CrmHealth { provider: self.config.crm.provider.to_string(), index }
    }
}
