//! The change feed: SOQL by `LastModifiedDate` page by page, the deletion feed
//! (`sobjects/{Object}/deleted/`) within its rules, and the cursor that joins them.

use cxbridge_domain::crm::{ChangePage, CrmError, EntitySpec};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::connection::{Salesforce, has_code};
use super::query::{field_value, id_field, iso_millis, record_fields, records, soql_datetime};

impl Salesforce {
    /// The records of `object` deleted since `since` (the cursor's `deleted_since`), as the
    /// deletion feed allows asking for them (sObject Get Deleted, REST API Developer Guide,
    /// and getDeleted() in the SOAP API Developer Guide for its rules):
    ///
    /// - "The API ignores the seconds portion of the specified dateTime value": the window is
    ///   sent in whole minutes. Its start is rounded down (a deletion may come twice, which
    ///   costs nothing), its end is the current minute's start, which the next call starts
    ///   from, so nothing falls between two calls.
    /// - "startDate must chronologically precede the specified endDate value by more than one
    ///   minute": a shorter window is not asked for; the next round asks for a longer one.
    /// - "Results are returned for no more than 15 days previous to the day the call is
    ///   executed (or earlier if an administrator has purged the Recycle Bin)", and a purged
    ///   log answers `INVALID_REPLICATION_DATE` ("If you get this exception, you should do a
    ///   full pull of the table"): deletions beyond the log cannot be known, so the sync
    ///   starts over.
    pub(super) async fn deletions(&self, object: &str, since: &str, now: Timestamp) -> Result<Deletions, CrmError> {
        let since_t = since.parse::<Timestamp>().map_err(|_| bad_cursor(since))?;
        let start = whole_minute(since_t);
        let end = whole_minute(now);
        let oldest = start_of_day(now.checked_sub(DELETE_LOG_KEPT).unwrap_or(now));
        if start < oldest {
            return Ok(Deletions::Gone(format!(
                "the last sync saw deletions up to {since}, and Salesforce reports deletions of the last 15 days only: records deleted in between cannot be known"
            )));
        }
        if end.duration_since(start) < MIN_DELETION_WINDOW {
            return Ok(Deletions::NotYet);
        }
        let url = format!("{}/sobjects/{object}/deleted/", self.api);
        let answer = match self.get(&url, &[("start", soql_datetime(start)), ("end", soql_datetime(end))]).await {
            Ok(a) => a,
            // A start the log no longer reaches (purged, or Salesforce counts the 15 days
            // otherwise than we do) means a full pull. A young start refused is more likely
            // our window and Salesforce's rules disagreeing: try a longer window next round
            // rather than pay a full sync. Salesforce's purge job only removes entries older
            // than two hours, so a start younger than that cannot have been purged.
            Err(e) if has_code(&e, "INVALID_REPLICATION_DATE") => {
                if now.duration_since(since_t) > PURGE_MIN_AGE {
                    return Ok(Deletions::Gone(format!("Salesforce no longer has the deletions since {since}: {e}")));
                }
                tracing::warn!(object, error = %e, "Salesforce refused the deletion window; it is asked for again, longer, next round");
                return Ok(Deletions::NotYet);
            }
            Err(e) => return Err(e),
        };
        let deletes = answer
            .get("deletedRecords")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|d| d.get("id").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        // "Use this value for the startDate of your next call": never later than asked.
        let covered = answer.get("latestDateCovered").and_then(Value::as_str).and_then(|s| s.parse::<Timestamp>().ok()).map_or(end, |c| c.min(end).max(start));
        Ok(Deletions::Got(deletes, iso_millis(covered)))
    }

    /// The first page of a full sync: every record, oldest change first; deletions are
    /// followed from now on.
    pub(super) async fn full_sync(&self, spec: &EntitySpec, select: &str, order: &str, restarted: Option<String>) -> Result<ChangePage, CrmError> {
        let started = iso_millis(Timestamp::now());
        let answer = self.soql(format!("{select} {order}")).await?;
        let mut page = self.change_page(spec, &answer, None, started, vec![])?;
        page.restarted = restarted;
        Ok(page)
    }

    pub(super) fn change_page(&self, spec: &EntitySpec, answer: &Value, modified_since: Option<String>, deleted_since: String, deletes: Vec<String>) -> Result<ChangePage, CrmError> {
        let mut high = modified_since.as_deref().and_then(|s| s.parse::<Timestamp>().ok());
        let mut upserts = vec![];
        for r in records(answer) {
            let fields = record_fields(r);
            let Some(id) = field_value(&fields, id_field(spec)).map(str::to_string) else { continue };
            if let Some(t) = fields.get("LastModifiedDate").and_then(|s| s.parse::<Timestamp>().ok()) {
                high = Some(high.map_or(t, |h| h.max(t)));
            }
            upserts.push((id, fields));
        }
        let next = answer.get("nextRecordsUrl").and_then(Value::as_str).map(str::to_string);
        let cursor = SyncCursor { next: next.clone(), modified_since: high.map(iso_millis), deleted_since };
        let cursor = serde_json::to_string(&cursor).map_err(|e| CrmError::Permanent { message: format!("cannot write the change cursor: {e}") })?;
        Ok(ChangePage { upserts, deletes, cursor, more: next.is_some(), restarted: None })
    }
}

/// What the deletion feed had to say for one round.
pub(super) enum Deletions {
    /// These ids, and where the next window starts.
    Got(Vec<String>, String),
    /// The window is too short to ask for yet; it starts where it did.
    NotYet,
    /// The feed cannot cover the window any more: a full sync must start over, for this reason.
    Gone(String),
}

/// How far back Salesforce reports deletions.
const DELETE_LOG_KEPT: jiff::SignedDuration = jiff::SignedDuration::from_hours(15 * 24);
/// A deletion window must be longer than a minute; in whole minutes, that is two.
const MIN_DELETION_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);
/// "A background process that runs every two hours purges records that have been in an
/// organization's delete log for more than two hours if the number of records is above a
/// certain limit" (sObject Get Deleted).
const PURGE_MIN_AGE: jiff::SignedDuration = jiff::SignedDuration::from_secs(2 * 3600);

/// `t` without its seconds (the deletion feed ignores them).
fn whole_minute(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap_or(t)
}

/// Midnight UTC of `t`'s day ("15 days previous to the day the call is executed").
fn start_of_day(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(86_400) * 86_400).unwrap_or(t)
}

/// Where a change feed continues, as the JSON string the hub stores:
/// `{"next":"/services/data/v62.0/query/01g…-2000","modified_since":"2024-05-01T10:00:00.123Z","deleted_since":"2024-05-01T09:00:00.000Z"}`.
/// `next` is set while a sync pages through a query result; `modified_since` is the newest
/// `LastModifiedDate` seen (absent until a record was seen); `deleted_since` is where the
/// deletion feed continues (the start of the first full sync, then Salesforce's
/// `latestDateCovered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SyncCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) modified_since: Option<String>,
    pub(super) deleted_since: String,
}

pub(super) fn bad_cursor(cursor: &str) -> CrmError {
    CrmError::Permanent { message: format!("unreadable Salesforce change cursor `{}`: start over with a full sync (no cursor)", crate::client::truncate(cursor)) }
}
