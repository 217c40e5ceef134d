//! The tables of the environment: columns and their types, lookups, rows with their activity
//! parties, the database of all tables, and the users every environment has.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The application user the client credentials act as.
pub const APP_USER_ID: &str = "a0000000-0000-4000-8000-000000000001";
/// An agent's systemuserid (Alice), for `MSCRMCallerID` and `partyid_systemuser`.
pub const AGENT_USER_ID: &str = "a0000000-0000-4000-8000-000000000002";
/// Alice's Microsoft Entra object id, for `CallerObjectId`.
pub const AGENT_OBJECT_ID: &str = "e0000000-0000-4000-8000-000000000002";
/// A second agent (Bob).
pub const OTHER_AGENT_USER_ID: &str = "a0000000-0000-4000-8000-000000000003";

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Type {
    Text(usize),
    Bool,
    Int,
    DateTime,
    Guid,
}

impl Type {
    pub(super) fn edm(self) -> &'static str {
        match self {
            Type::Text(_) => "Edm.String",
            Type::Bool => "Edm.Boolean",
            Type::Int => "Edm.Int32",
            Type::DateTime => "Edm.DateTimeOffset",
            Type::Guid => "Edm.Guid",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Column {
    pub(super) ty: Type,
    /// Read-only columns are left alone when a body sets them, as Dataverse does.
    pub(super) writable: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Lookup {
    /// `parentcustomerid`: the value property is `_parentcustomerid_value`.
    pub(super) name: String,
    /// Navigation properties that set it, and the table each points to.
    pub(super) navs: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub(super) struct Table {
    pub(super) logical: String,
    pub(super) set: String,
    pub(super) id_field: String,
    pub(super) primary_name: String,
    pub(super) columns: BTreeMap<String, Column>,
    pub(super) lookups: Vec<Lookup>,
    pub(super) activity: bool,
    pub(super) alternate_key: Option<String>,
    pub(super) change_tracking: bool,
    pub(super) rows: BTreeMap<String, Row>,
}

#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) fields: Map<String, Value>,
    /// `_x_value` → logical name of the table it points to.
    pub(super) lookup_targets: BTreeMap<String, String>,
    pub(super) parties: Vec<Party>,
    pub(super) version: u64,
    pub(super) seq: u64,
}

#[derive(Clone, Debug)]
pub(super) struct Party {
    pub(super) mask: i64,
    pub(super) entity: String,
    pub(super) id: String,
}

#[derive(Clone)]
pub(super) struct Db {
    pub(super) tables: BTreeMap<String, Table>,
    pub(super) version: u64,
    pub(super) seq: u64,
    /// (entity set, id, version) of deleted records, for delta links.
    pub(super) tombstones: Vec<(String, String, u64)>,
    /// `Organization.ExpireChangeTrackingInDays`.
    pub(super) expire_change_tracking_in_days: i64,
    /// How far the server's clock is ahead of the real one (tests pass days in a moment).
    pub(super) clock_ahead: jiff::SignedDuration,
}

impl Db {
    pub(super) fn add(&mut self, t: Table) {
        self.tables.insert(t.set.clone(), t);
    }

    /// The server's time: the real one, moved on by [`DataverseServer::pass_days`].
    pub(super) fn clock(&self) -> jiff::Timestamp {
        jiff::Timestamp::now().checked_add(self.clock_ahead).unwrap_or_else(|_| jiff::Timestamp::now())
    }

    pub(super) fn table(&self, set: &str) -> &Table {
        self.tables.get(set).unwrap_or_else(|| panic!("the Dataverse test server has no entity set `{set}`"))
    }

    pub(super) fn table_mut(&mut self, set: &str) -> &mut Table {
        self.tables.get_mut(set).unwrap_or_else(|| panic!("the Dataverse test server has no entity set `{set}`"))
    }

    pub(super) fn by_logical(&self, logical: &str) -> Option<&Table> {
        self.tables.values().find(|t| t.logical == logical)
    }

    pub(super) fn exists(&self, logical: &str, id: &str) -> bool {
        self.by_logical(logical).is_some_and(|t| t.rows.contains_key(&id.to_ascii_lowercase()))
    }
}
