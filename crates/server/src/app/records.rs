//! The built-in CRM's own records, as integrations change them through the API: activities
//! logged by hand or by another system. (Record reads and writes go to the store as they are.)

use cxbridge_domain::crm::{Activity, RecordRef};
use cxbridge_proto as proto;
use cxbridge_store::StoredActivity;

use super::{App, Error, Result};

impl App {
    /// Creates (or, with the same `key`, updates) an activity of the built-in CRM regarding
    /// existing records.
    pub async fn log_activity(&self, input: proto::ActivityInput) -> Result<StoredActivity> {
        if input.kind.trim().is_empty() {
            return Err(Error::invalid("`kind` must name the activity type, e.g. task, phonecall, chat, message"));
        }
        if input.regarding.is_empty() {
            return Err(Error::invalid("`regarding` must name at least one record"));
        }
        for r in &input.regarding {
            if self.crm_store.record(&r.entity, &r.id).await?.is_none() {
                return Err(Error::invalid(format!("record {}/{} does not exist; `regarding` must name existing records", r.entity, r.id)));
            }
        }
        let key = input.key.clone().filter(|k| !k.is_empty()).unwrap_or_else(|| format!("api:{}", uuid::Uuid::now_v7()));
        let activity = Activity {
            key,
            kind: input.kind.clone(),
            regarding: input.regarding.iter().map(|r| RecordRef::new(&r.entity, &r.id)).collect(),
            fields: input.fields.clone().into_iter().collect(),
            direction: cxbridge_domain::conversation::Direction::Inbound,
            on_behalf_of: None,
        };
        Ok(self.crm_store.upsert_activity(&activity).await?)
    }
}
