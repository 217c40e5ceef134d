//! The deletion feed, `sobjects/{Object}/deleted/`, within its documented rules: whole minutes,
//! a window longer than a minute, at most 15 days back, nothing behind a purged Recycle Bin.

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::org::{DELETE_LOG_DAYS, Org, sf_time};
use super::reply::{Reply, bad, not_found};

/// "The specified startDate must chronologically precede the specified endDate value by
/// more than one minute" (SOAP API Developer Guide, getDeleted(), which the REST resource
/// refers to for its rules).
const MIN_REPLICATION_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// `t` without its seconds.
fn whole_minute(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap_or(t)
}

/// Midnight UTC of `t`'s day.
fn start_of_day(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(86_400) * 86_400).unwrap_or(t)
}

impl Org {
    pub(super) fn deleted(&self, object: &str, params: &HashMap<String, String>) -> Reply {
        let Some(obj) = self.object(object) else { return not_found() };
        let (Some(start), Some(end)) = (params.get("start"), params.get("end")) else {
            return bad("MISSING_ARGUMENT", "start and end parameters are required");
        };
        let (Ok(start), Ok(end)) = (start.parse::<Timestamp>(), end.parse::<Timestamp>()) else {
            return bad("INVALID_REPLICATION_DATE", "start and end must be ISO 8601 dateTime values");
        };
        // "The API ignores the seconds portion of the specified dateTime value (for example,
        // 12:30:15 is interpreted as 12:30:00 UTC)." (sObject Get Deleted, parameters.)
        let (start, end) = (whole_minute(start), whole_minute(end));
        let now = Timestamp::now();
        let fifteen_days = now.checked_sub(DELETE_LOG_DAYS).unwrap_or(now);
        let earliest = whole_minute(self.delete_log_from.max(start_of_day(fifteen_days)));
        if start < earliest {
            return bad("INVALID_REPLICATION_DATE", &format!("startDate must be on or after {}", sf_time(earliest)));
        }
        if end.duration_since(start) <= MIN_REPLICATION_WINDOW {
            return bad("INVALID_REPLICATION_DATE", "EndDate must be more than one minute after StartDate");
        }
        let covered = end.min(whole_minute(now));
        let records: Vec<Value> = self
            .deleted
            .iter()
            .filter(|(o, _, at)| *o == obj.name && *at >= start && *at < covered)
            .map(|(_, id, at)| json!({ "id": id, "deletedDate": sf_time(*at) }))
            .collect();
        Reply::ok(json!({
            "deletedRecords": records,
            "earliestDateAvailable": sf_time(earliest),
            "latestDateCovered": sf_time(covered),
        }))
    }
}
