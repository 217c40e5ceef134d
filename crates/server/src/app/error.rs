//! What a use case can refuse, in its own words; the HTTP edge (`http::error`) maps each kind
//! to a status and problem+json in one place.

use cxbridge_domain::crm::CrmError;
use cxbridge_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be carried out as given (a bad field, an unknown code): fix it.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (an agent acting on another's conversation or record).
    #[error("{0}")]
    Forbidden(String),
    /// The request does not fit the current state (closing an ended conversation).
    #[error("{0}")]
    Conflict(String),
    /// The store refused or failed; what it means for the caller depends on the kind.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CRM refused (its words) or did not answer.
    #[error(transparent)]
    Crm(CrmError),
    /// Something the hub should never get into (a workflow naming an entity the CRM lacks).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::Invalid(detail.into())
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden(detail.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
