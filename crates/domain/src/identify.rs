//! The outcome of looking a caller up in the CRM.

use crate::crm::{Candidate, RecordRef};

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum Identification {
    /// Not looked up (yet).
    #[default]
    Pending,
    /// Looked up on purpose not: anonymous, own number, internal, invalid, or CRM failed.
    Skipped { reason: String },
    None,
    Single(Candidate),
    Multiple(Vec<Candidate>),
}

impl Identification {
    pub fn from_candidates(mut candidates: Vec<Candidate>) -> Self {
        match candidates.len() {
            0 => Identification::None,
            1 => Identification::Single(candidates.remove(0)),
            _ => Identification::Multiple(candidates),
        }
    }

    /// `none | single | multiple | skipped | pending`, as the API and metrics name it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Identification::Pending => "pending",
            Identification::Skipped { .. } => "skipped",
            Identification::None => "none",
            Identification::Single(_) => "single",
            Identification::Multiple(_) => "multiple",
        }
    }

    pub fn candidates(&self) -> &[Candidate] {
        match self {
            Identification::Single(c) => std::slice::from_ref(c),
            Identification::Multiple(cs) => cs,
            _ => &[],
        }
    }

    /// The CRM failed or ran out of time when the caller was looked up: nobody knows yet
    /// who called, and asking again later may tell.
    pub fn crm_unavailable(&self) -> bool {
        matches!(self, Identification::Skipped { reason } if reason == "crm_error" || reason == "crm_timeout")
    }

    /// Nobody was found (or looked for) yet: a later identification may replace it. A match,
    /// or a deliberate skip (anonymous, blocked, invalid number), stays.
    pub fn replaceable(&self) -> bool {
        matches!(self, Identification::Pending | Identification::None) || self.crm_unavailable()
    }

    /// The record an activity is about when the agent chose none: the only match.
    pub fn sole_record(&self) -> Option<&RecordRef> {
        match self {
            Identification::Single(c) => Some(&c.record),
            _ => None,
        }
    }
}
