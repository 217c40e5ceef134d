//! The one list of CRM providers: which exist, the word that names each in `[crm] provider`,
//! and what each brings when the configuration says nothing (entities, activity fields, the
//! field naming a record's owner, where an activity about nobody goes).

use cxbridge_domain::crm::EntitySpec;
use cxbridge_domain::mapping::{self, FieldRule};

use super::{dataverse, salesforce, tryton};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Provider {
    /// The hub's own CRM, in its database.
    #[default]
    Builtin,
    Dataverse,
    Salesforce,
    Tryton,
}

impl Provider {
    pub const ALL: [Provider; 4] = [Provider::Builtin, Provider::Dataverse, Provider::Salesforce, Provider::Tryton];

    /// The word in `[crm] provider` (and in the name of its `[crm.…]` section and docs page).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Builtin => "builtin",
            Provider::Dataverse => "dataverse",
            Provider::Salesforce => "salesforce",
            Provider::Tryton => "tryton",
        }
    }

    /// The entities searched when the configuration names none.
    pub fn default_entities(self) -> Vec<EntitySpec> {
        match self {
            Provider::Builtin => EntitySpec::builtin_defaults(),
            Provider::Dataverse => dataverse::default_entities(),
            Provider::Salesforce => salesforce::default_entities(),
            Provider::Tryton => tryton::default_entities(),
        }
    }

    /// The activity fields written when the configuration sets none.
    pub fn default_mapping(self) -> Vec<FieldRule> {
        match self {
            Provider::Builtin => mapping::default_fields(),
            Provider::Dataverse => dataverse::default_mapping(),
            Provider::Salesforce => salesforce::default_mapping(),
            Provider::Tryton => tryton::default_mapping(),
        }
    }

    /// The field naming a record's owner (a CRM user), if the CRM has one.
    pub fn owner_field(self) -> Option<&'static str> {
        match self {
            Provider::Builtin => Some("owner"),
            Provider::Dataverse => Some(dataverse::OWNER_FIELD),
            Provider::Salesforce => Some(salesforce::OWNER_FIELD),
            Provider::Tryton => None,
        }
    }

    /// Whether every activity must regard a record (a Tryton note needs a party), so one
    /// about nobody cannot stay unassigned.
    pub fn activity_needs_a_record(self) -> bool {
        self == Provider::Tryton
    }
}

impl TryFrom<String> for Provider {
    type Error = String;

    fn try_from(word: String) -> Result<Self, String> {
        Provider::ALL.into_iter().find(|p| p.as_str() == word).ok_or_else(|| {
            let all: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            format!("[crm] provider must be one of {}, not `{word}`", all.join(", "))
        })
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_reads_back_from_its_word_and_others_are_refused() {
        for p in Provider::ALL {
            assert_eq!(Provider::try_from(p.as_str().to_string()), Ok(p));
        }
        assert_eq!(Provider::try_from("hubspot".to_string()), Err("[crm] provider must be one of builtin, dataverse, salesforce, tryton, not `hubspot`".to_string()));
    }
}
