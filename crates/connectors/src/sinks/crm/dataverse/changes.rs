//! Change tracking: the pages of a table's changes (`Prefer: odata.track-changes`) that feed
//! the hub's local phone index, with the delta link as the cursor.

use cxbridge_domain::crm::{ChangePage, CrmError, EntitySpec};
use serde_json::Value;

use super::connection::Inner;
use super::query::{PREFER_ANNOTATIONS, checked_collection, id_field_of, path_of, query_string, record_fields, select_list, starts_with_ignore_case};

/// Dataverse's `ChangeTrackingNotEnabledForEntity`.
const CHANGE_TRACKING_OFF: &str = "0x80072491";
/// Dataverse's `ExpiredVersionStamp`: "Version stamp associated with the client has expired.
/// Please perform a full sync." A delta token is good for `Organization.ExpireChangeTrackingInDays`
/// (7 days by default; "If unprocessed changes are older than the configured value, the
/// system throws an exception": Use change tracking to synchronize data with external
/// systems, learn.microsoft.com/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems).
/// The only way on is what the message says: a full sync.
const EXPIRED_VERSION_STAMP: &str = "0x80044352";

/// One page of the changes of `spec` after `cursor` (none: the first page of a full sync).
pub(super) async fn page(inner: &Inner, spec: &EntitySpec, cursor: Option<&str>) -> Result<ChangePage, CrmError> {
    let collection = checked_collection(spec)?;
    let url = match cursor {
        None => format!("{}/{collection}?{}", inner.api, query_string(&[("$select", select_list(spec)?)])),
        Some(link) if starts_with_ignore_case(link, &format!("{}/{collection}?", inner.api)) => link.to_string(),
        Some(link) => {
            return Err(CrmError::Permanent {
                message: format!(
                    "the change-tracking cursor of `{}` ({}) is not a link of {}: the environment changed; delete the local phone index to sync afresh",
                    spec.name,
                    path_of(link),
                    inner.api
                ),
            });
        }
    };
    let prefer = format!("odata.track-changes,odata.maxpagesize={},{PREFER_ANNOTATIONS}", inner.page_size);
    let mut restarted = None;
    let answer = match inner.get(url, &prefer).await {
        // An expired token (the hub was off longer than the environment keeps changes)
        // is followed by a full sync at once: retrying the same link could never succeed.
        Err(CrmError::Permanent { message } | CrmError::Transient { message, .. }) if cursor.is_some() && message.contains(EXPIRED_VERSION_STAMP) => {
            let full = format!("{}/{collection}?{}", inner.api, query_string(&[("$select", select_list(spec)?)]));
            restarted = Some(format!("Dataverse's change-tracking token had expired (older than the environment's ExpireChangeTrackingInDays): {message}"));
            inner.get(full, &prefer).await
        }
        other => other,
    };
    let page = match answer {
        Ok(v) => v,
        Err(CrmError::Permanent { message }) if message.contains(CHANGE_TRACKING_OFF) || message.contains("enabled for change tracking") => {
            return Err(CrmError::Permanent {
                message: format!(
                    "change tracking is off for the Dataverse table `{}`: turn on \"Track changes\" in the table's properties \
                     (Power Apps → Tables → {} → Properties → Advanced options), or set local_index = false. {message}",
                    spec.name, spec.name
                ),
            });
        }
        Err(e) => return Err(e),
    };
    let id_field = id_field_of(spec);
    let mut out = ChangePage { restarted, ..ChangePage::default() };
    for item in page.get("value").and_then(Value::as_array).into_iter().flatten() {
        let deleted = item.get("@odata.context").and_then(Value::as_str).is_some_and(|c| c.ends_with("$deletedEntity"))
            || item.get("reason").and_then(Value::as_str) == Some("deleted");
        if deleted {
            if let Some(id) = item.get("id").and_then(Value::as_str) {
                out.deletes.push(id.to_string());
            }
            continue;
        }
        let fields = record_fields(item);
        if let Some(id) = fields.get(&id_field).cloned() {
            out.upserts.push((id, fields));
        }
    }
    if let Some(next) = page.get("@odata.nextLink").and_then(Value::as_str) {
        out.cursor = next.to_string();
        out.more = true;
    } else if let Some(delta) = page.get("@odata.deltaLink").and_then(Value::as_str) {
        out.cursor = delta.to_string();
        out.more = false;
    } else {
        return Err(CrmError::Transient {
            message: format!("Dataverse answered the change-tracking query of `{}` without a next or delta link", spec.name),
            retry_after: None,
        });
    }
    Ok(out)
}
