//! The schema of the test org: its objects, their fields with kinds, lengths, picklists,
//! references and which are read-only, required or set on create only.

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Id,
    Text(usize),
    Phone,
    Email,
    Int,
    Bool,
    Date,
    DateTime,
    /// A restricted picklist: other values are refused.
    Picklist(&'static [&'static str]),
    Reference(&'static [&'static str]),
}

impl Kind {
    pub(super) fn is_textual(self) -> bool {
        matches!(self, Kind::Id | Kind::Text(_) | Kind::Phone | Kind::Email | Kind::Picklist(_) | Kind::Reference(_))
    }
    pub(super) fn type_name(self) -> &'static str {
        match self {
            Kind::Int => "double",
            Kind::Bool => "boolean",
            Kind::Date => "date",
            Kind::DateTime => "dateTime",
            Kind::Id | Kind::Reference(_) => "id",
            _ => "string",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct FieldDef {
    pub(super) name: String,
    pub(super) label: &'static str,
    pub(super) kind: Kind,
    pub(super) writable: bool,
    /// Set on create only (Task `TaskSubtype`): an update that names it is refused.
    pub(super) updateable: bool,
    pub(super) required: bool,
    pub(super) external_id: bool,
}

#[derive(Clone, Debug)]
pub(super) struct ObjectDef {
    pub(super) name: &'static str,
    pub(super) prefix: &'static str,
    pub(super) fields: Vec<FieldDef>,
    /// Computed `Name` from `FirstName` and `LastName` (Contact, Lead).
    pub(super) person_name: bool,
}

impl ObjectDef {
    pub(super) fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }
    pub(super) fn phone_fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.iter().filter(|f| f.kind == Kind::Phone)
    }
}

pub(super) fn schema(key_field: &str) -> Vec<ObjectDef> {
    fn f(name: &str, kind: Kind) -> FieldDef {
        FieldDef { name: name.into(), label: "", kind, writable: true, updateable: true, required: false, external_id: false }
    }
    fn ro(mut d: FieldDef) -> FieldDef {
        d.writable = false;
        d
    }
    fn req(mut d: FieldDef) -> FieldDef {
        d.required = true;
        d
    }
    fn create_only(mut d: FieldDef) -> FieldDef {
        d.updateable = false;
        d
    }
    fn labelled(mut d: FieldDef, label: &'static str) -> FieldDef {
        d.label = label;
        d
    }
    let system = || vec![ro(f("Id", Kind::Id)), ro(f("CreatedDate", Kind::DateTime)), ro(f("LastModifiedDate", Kind::DateTime)), ro(f("SystemModstamp", Kind::DateTime))];
    let owner = || labelled(f("OwnerId", Kind::Reference(&["User"])), "Owner ID");
    let with = |extra: Vec<FieldDef>| {
        let mut v = system();
        v.extend(extra);
        v
    };
    let mut key = f(key_field, Kind::Text(255));
    key.external_id = true;
    vec![
        ObjectDef {
            name: "Contact",
            prefix: "003",
            person_name: true,
            fields: with(vec![
                f("FirstName", Kind::Text(40)),
                req(f("LastName", Kind::Text(80))),
                ro(f("Name", Kind::Text(121))),
                f("Title", Kind::Text(128)),
                f("Phone", Kind::Phone),
                f("MobilePhone", Kind::Phone),
                f("HomePhone", Kind::Phone),
                f("OtherPhone", Kind::Phone),
                f("Email", Kind::Email),
                labelled(f("AccountId", Kind::Reference(&["Account"])), "Account ID"),
                owner(),
                f("Description", Kind::Text(32000)),
            ]),
        },
        ObjectDef {
            name: "Account",
            prefix: "001",
            person_name: false,
            fields: with(vec![
                req(f("Name", Kind::Text(255))),
                f("Phone", Kind::Phone),
                f("Fax", Kind::Phone),
                f("Website", Kind::Text(255)),
                f("Industry", Kind::Text(255)),
                owner(),
                f("Description", Kind::Text(32000)),
            ]),
        },
        ObjectDef {
            name: "Lead",
            prefix: "00Q",
            person_name: true,
            fields: with(vec![
                f("FirstName", Kind::Text(40)),
                req(f("LastName", Kind::Text(80))),
                ro(f("Name", Kind::Text(121))),
                req(f("Company", Kind::Text(255))),
                f("Phone", Kind::Phone),
                f("MobilePhone", Kind::Phone),
                f("Email", Kind::Email),
                f("Status", Kind::Text(255)),
                owner(),
            ]),
        },
        ObjectDef {
            name: "Task",
            prefix: "00T",
            person_name: false,
            fields: with(vec![
                f("Subject", Kind::Text(255)),
                f("Description", Kind::Text(32000)),
                labelled(f("CallType", Kind::Picklist(&["Inbound", "Outbound", "Internal"])), "Call Type"),
                f("CallDurationInSeconds", Kind::Int),
                f("CallDisposition", Kind::Text(255)),
                f("CallObject", Kind::Text(255)),
                f("Status", Kind::Text(255)),
                f("Priority", Kind::Text(255)),
                create_only(labelled(f("TaskSubtype", Kind::Picklist(&["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"])), "Task Subtype")),
                f("ActivityDate", Kind::Date),
                labelled(f("WhoId", Kind::Reference(&["Contact", "Lead"])), "Name ID"),
                labelled(f("WhatId", Kind::Reference(&["Account"])), "Related To ID"),
                labelled(f("OwnerId", Kind::Reference(&["User"])), "Assigned To ID"),
                key,
            ]),
        },
        ObjectDef {
            name: "User",
            prefix: "005",
            person_name: false,
            fields: with(vec![req(f("Name", Kind::Text(121))), f("Email", Kind::Email), f("IsActive", Kind::Bool)]),
        },
    ]
}
