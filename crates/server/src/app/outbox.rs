//! The outbox as admins and supervisors handle it: trying a failed memorialization again.

use cxbridge_domain::Timestamp;
use cxbridge_store::OutboxItem;

use super::{App, Caller, Error, Result};

impl App {
    /// Tries a dead (or delivered) item again now. Supervisors retry failed memorializations
    /// from the panel; other agents may not.
    pub async fn replay_outbox(&self, caller: &Caller, id: i64) -> Result<OutboxItem> {
        match caller {
            Caller::Admin | Caller::Agent { supervisor: true, .. } => {}
            Caller::Agent { .. } => return Err(Error::forbidden("only supervisors (and admins) may retry a memorialization; ask your supervisor")),
        }
        if !self.store.outbox_replay(id, Timestamp::now()).await? {
            return Err(Error::not_found(format!("no outbox item {id}")));
        }
        self.outbox_wake.notify_one();
        self.store.outbox_item(id).await?.ok_or_else(|| Error::not_found(format!("no outbox item {id}")))
    }
}
