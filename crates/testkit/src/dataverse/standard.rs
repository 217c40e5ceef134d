//! A new environment: the standard tables (contacts, accounts, leads, activities, users) with
//! their columns, lookups and keys, and the agents and application user as system users.

use std::collections::BTreeMap;

use serde_json::json;

use super::tables::{AGENT_OBJECT_ID, AGENT_USER_ID, APP_USER_ID, Column, Db, Lookup, OTHER_AGENT_USER_ID, Table, Type};
use super::wire::entity_set;
use super::writes::Pending;

/// The alternate key column of the activity tables.
pub const ACTIVITY_KEY: &str = "cxb_conversationkey";
/// `Organization.ExpireChangeTrackingInDays` of a new environment: "Changes are returned if
/// the last token is within a default value of seven days. The value of the Organization
/// table ExpireChangeTrackingInDays column controls this duration and can be changed. If
/// unprocessed changes are older than the configured value, the system throws an
/// exception." (Use change tracking to synchronize data with external systems,
/// https://learn.microsoft.com/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems)
const DEFAULT_EXPIRE_CHANGE_TRACKING_IN_DAYS: i64 = 7;

impl Db {
    pub(super) fn standard() -> Db {
        let mut db = Db {
            tables: BTreeMap::new(),
            version: 0,
            seq: 0,
            tombstones: vec![],
            expire_change_tracking_in_days: DEFAULT_EXPIRE_CHANGE_TRACKING_IN_DAYS,
            clock_ahead: jiff::SignedDuration::ZERO,
        };
        let text = |n: usize| Column { ty: Type::Text(n), writable: true };
        let ro = |ty: Type| Column { ty, writable: false };
        let lookup = |name: &str, navs: &[(&str, &str)]| Lookup { name: name.into(), navs: navs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect() };
        let table = |logical: &str, id: &str, primary: &str, cols: Vec<(&str, Column)>, mut lookups: Vec<Lookup>| {
            let mut columns: BTreeMap<String, Column> = cols.into_iter().map(|(k, c)| (k.to_string(), c)).collect();
            columns.insert(id.into(), Column { ty: Type::Guid, writable: true });
            columns.insert("createdon".into(), ro(Type::DateTime));
            columns.insert("modifiedon".into(), ro(Type::DateTime));
            columns.insert("versionnumber".into(), ro(Type::Int));
            columns.insert("statecode".into(), Column { ty: Type::Int, writable: true });
            lookups.push(lookup("ownerid", &[("ownerid", "systemuser")]));
            for system in ["createdby", "modifiedby", "createdonbehalfby", "modifiedonbehalfby"] {
                lookups.push(lookup(system, &[]));
            }
            for l in &lookups {
                columns.insert(format!("_{}_value", l.name), ro(Type::Guid));
            }
            Table {
                logical: logical.into(),
                set: entity_set(logical),
                id_field: id.into(),
                primary_name: primary.into(),
                columns,
                lookups,
                activity: false,
                alternate_key: None,
                change_tracking: true,
                rows: BTreeMap::new(),
            }
        };
        let person = |extra: Vec<(&'static str, Column)>| {
            let mut cols = vec![
                ("fullname", ro(Type::Text(160))),
                ("firstname", text(50)),
                ("lastname", text(50)),
                ("telephone1", text(50)),
                ("telephone2", text(50)),
                ("telephone3", text(50)),
                ("mobilephone", text(50)),
                ("emailaddress1", text(100)),
                ("emailaddress2", text(100)),
                ("jobtitle", text(100)),
                ("description", text(2000)),
            ];
            cols.extend(extra);
            cols
        };
        db.add(table("contact", "contactid", "fullname", person(vec![]), vec![lookup("parentcustomerid", &[("parentcustomerid_account", "account"), ("parentcustomerid_contact", "contact")])]));
        db.add(table(
            "account",
            "accountid",
            "name",
            vec![
                ("name", text(160)),
                ("accountnumber", text(20)),
                ("telephone1", text(50)),
                ("telephone2", text(50)),
                ("telephone3", text(50)),
                ("emailaddress1", text(100)),
                ("websiteurl", text(200)),
                ("description", text(2000)),
            ],
            vec![lookup("primarycontactid", &[("primarycontactid", "contact")]), lookup("parentaccountid", &[("parentaccountid", "account")])],
        ));
        db.add(table("lead", "leadid", "fullname", person(vec![("companyname", text(100)), ("subject", text(300))]), vec![]));
        let mut users = table(
            "systemuser",
            "systemuserid",
            "fullname",
            vec![("fullname", text(200)), ("internalemailaddress", text(100)), ("azureactivedirectoryobjectid", Column { ty: Type::Guid, writable: true })],
            vec![],
        );
        users.change_tracking = false;
        db.add(users);
        for (logical, extra) in [
            ("phonecall", vec![("phonenumber", text(200)), ("directioncode", Column { ty: Type::Bool, writable: true }), ("leftvoicemail", Column { ty: Type::Bool, writable: true })]),
            ("task", vec![("percentcomplete", Column { ty: Type::Int, writable: true })]),
            ("appointment", vec![("location", text(200))]),
            ("email", vec![("directioncode", Column { ty: Type::Bool, writable: true })]),
        ] {
            let mut cols = vec![
                ("subject", text(if logical == "email" { 800 } else { 200 })),
                ("description", text(if logical == "email" { 1_048_576 } else { 2000 })),
                ("scheduledstart", Column { ty: Type::DateTime, writable: true }),
                ("scheduledend", Column { ty: Type::DateTime, writable: true }),
                ("actualstart", Column { ty: Type::DateTime, writable: true }),
                ("actualend", Column { ty: Type::DateTime, writable: true }),
                ("actualdurationminutes", Column { ty: Type::Int, writable: true }),
                ("activitytypecode", ro(Type::Text(64))),
                (ACTIVITY_KEY, text(100)),
            ];
            cols.extend(extra);
            let navs: Vec<(String, String)> = ["contact", "account", "lead"].iter().map(|e| (format!("regardingobjectid_{e}_{logical}"), e.to_string())).collect();
            let regarding = Lookup { name: "regardingobjectid".into(), navs };
            let mut t = table(logical, "activityid", "subject", cols, vec![regarding]);
            t.activity = true;
            t.alternate_key = Some(ACTIVITY_KEY.into());
            t.change_tracking = false;
            db.add(t);
        }
        for (id, name, object_id) in [
            (APP_USER_ID, "# cxbridge", "e0000000-0000-4000-8000-000000000001"),
            (AGENT_USER_ID, "Alice Agent", AGENT_OBJECT_ID),
            (OTHER_AGENT_USER_ID, "Bob Agent", "e0000000-0000-4000-8000-000000000003"),
        ] {
            let mut p = Pending::default();
            p.fields.insert("fullname".into(), json!(name));
            p.fields.insert("azureactivedirectoryobjectid".into(), json!(object_id));
            db.commit("systemusers", id, p, true, None);
        }
        db
    }
}
