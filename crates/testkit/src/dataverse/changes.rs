//! Change tracking: a first sync paged by `odata.maxpagesize`, then deltas since a token,
//! with `$deletedEntity` entries, refused once the token is older than the organization keeps.

use serde_json::{Value, json};

use super::query::{MAX_PAGE, checked_select, project};
use super::tables::{Db, Row};
use super::wire::{Answer, Prefer, Query, Resp, encode, error, syntax};

/// The exception: `ExpiredVersionStamp` (0x80044352, -2147204270) in Dataverse's web service
/// error codes, "Version stamp associated with the client has expired. Please perform a
/// full sync." (https://learn.microsoft.com/power-apps/developer/data-platform/org-service/web-service-error-codes).
/// The Web API answers it as a 400 with the usual OData error body.
const EXPIRED_VERSION_STAMP: &str = "0x80044352";
/// The delta token's time part, as Dataverse writes it (`919042!08/22/2017 08:10:44`).
const DELTA_TOKEN_TIME: &str = "%m/%d/%Y %H:%M:%S";

impl Db {
    /// Change tracking: a first sync paged by `odata.maxpagesize`, then deltas.
    pub(super) fn tracked(&self, api_url: &str, set: &str, q: &Query, pref: &Prefer) -> Answer {
        let t = self.table(set);
        if !t.change_tracking {
            return Err(error(400, "0x80072491", format!("Entity {} isn't enabled for change tracking.", t.logical)));
        }
        if q.filter.is_some() || q.orderby.is_some() || q.top.is_some() {
            return Err(syntax("Change tracking supports $select only: $filter, $orderby and $top cannot be combined with odata.track-changes."));
        }
        let select = checked_select(t, q.select.as_deref())?;
        let select_param = q.select.as_ref().map(|s| format!("$select={}&", encode(&s.join(",")))).unwrap_or_default();
        let context = format!("{api_url}/$metadata#{set}({})/$delta", q.select.as_ref().map(|s| s.join(",")).unwrap_or_else(|| "*".into()));
        let now = self.clock();
        let delta_link = |version: u64| {
            let token = format!("{version}!{}", now.strftime(DELTA_TOKEN_TIME));
            format!("{api_url}/{set}?{select_param}$deltatoken={}", encode(&token))
        };
        if let Some(token) = &q.deltatoken {
            let invalid = || syntax(format!("The delta token '{token}' is not valid."));
            let (version, issued) = token.split_once('!').ok_or_else(invalid)?;
            let since: u64 = version.parse().map_err(|_| invalid())?;
            let issued = jiff::civil::DateTime::strptime(DELTA_TOKEN_TIME, issued)
                .ok()
                .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp())
                .ok_or_else(invalid)?;
            let max_age = jiff::SignedDuration::from_hours(24 * self.expire_change_tracking_in_days);
            if now.duration_since(issued) > max_age {
                return Err(error(400, EXPIRED_VERSION_STAMP, "Version stamp associated with the client has expired. Please perform a full sync."));
            }
            let mut changed: Vec<&Row> = t.rows.values().filter(|r| r.version > since).collect();
            changed.sort_by_key(|r| r.version);
            let mut value: Vec<Value> = changed.into_iter().map(|r| project(self, t, r, select.as_deref(), pref)).collect();
            for (s, id, v) in &self.tombstones {
                if s == set && *v > since && !t.rows.contains_key(id) {
                    value.push(json!({"@odata.context": format!("{api_url}/$metadata#{set}/$deletedEntity"), "id": id, "reason": "deleted"}));
                }
            }
            return Ok(Resp::json(200, json!({"@odata.context": context, "value": value, "@odata.deltaLink": delta_link(self.version)})));
        }
        // First sync: `$skiptoken` is "{snapshot version}.{last seq served}".
        let (snapshot, after) = match &q.skiptoken {
            Some(tok) => {
                let (v, s) = tok.split_once('.').ok_or_else(|| syntax(format!("The skip token '{tok}' is not valid.")))?;
                (v.parse::<u64>().map_err(|_| syntax("The skip token is not valid."))?, s.parse::<u64>().map_err(|_| syntax("The skip token is not valid."))?)
            }
            None => (self.version, 0),
        };
        let page = pref.maxpagesize.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let mut rows: Vec<&Row> = t.rows.values().filter(|r| r.seq > after).collect();
        rows.sort_by_key(|r| r.seq);
        let more = rows.len() > page;
        rows.truncate(page);
        let value: Vec<Value> = rows.iter().map(|r| project(self, t, r, select.as_deref(), pref)).collect();
        let mut answer = json!({"@odata.context": context, "value": value});
        if more {
            let last = rows.last().map_or(after, |r| r.seq);
            answer["@odata.nextLink"] = Value::String(format!("{api_url}/{set}?{select_param}$skiptoken={}", encode(&format!("{snapshot}.{last}"))));
        } else {
            answer["@odata.deltaLink"] = Value::String(delta_link(snapshot));
        }
        Ok(Resp::json(200, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::wire::pct_decode;

    #[test]
    fn delta_tokens_expire_after_expire_change_tracking_in_days() {
        let mut db = Db::standard();
        let track = Prefer { track_changes: true, ..Prefer::default() };
        let ask = |db: &Db, token: &str| db.tracked("http://x/api/data/v9.2", "contacts", &Query { deltatoken: Some(token.into()), ..Query::default() }, &track);
        let first = db.tracked("http://x/api/data/v9.2", "contacts", &Query::default(), &track).expect("first sync");
        let link: Value = serde_json::from_str(&first.body).expect("json");
        let link = link["@odata.deltaLink"].as_str().expect("delta link").to_string();
        let token = pct_decode(link.split("$deltatoken=").nth(1).expect("token"), false);
        assert!(token.contains('!'), "{token}");
        db.clock_ahead = jiff::SignedDuration::from_hours(24 * 7 - 1);
        assert!(ask(&db, &token).is_ok(), "not quite seven days old is still within the default");
        db.clock_ahead = jiff::SignedDuration::from_hours(24 * 7 + 1);
        let refused = ask(&db, &token).expect_err("expired");
        assert_eq!(refused.status, 400);
        assert!(refused.body.contains("0x80044352") && refused.body.contains("Please perform a full sync"), "{}", refused.body);
        db.expire_change_tracking_in_days = 30;
        assert!(ask(&db, &token).is_ok(), "the organization keeps changes longer");
        assert!(ask(&db, "12").is_err(), "a token without its time is not one Dataverse issued");
    }

}
