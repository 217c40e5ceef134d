//! Vendor adapters: the wire formats of contact-centre sources (Zammad generic CTI,
//! sipgate.io push). They turn a vendor's request into a [`CallEvent`] and a hub decision
//! into the vendor's reply. They know nothing of HTTP routing, storage or agents.

use cxbridge_domain::conversation::{Direction, EndCause};

pub mod bus;
pub mod crm;
pub mod cti;
pub mod ivr;
pub mod sipgate;

/// A call event as a PBX reports it, before the hub resolves agents and identifies the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// `cti` or `sipgate`.
    pub source: &'static str,
    pub kind: CallEventKind,
    /// The id of this call leg.
    pub call_id: String,
    /// The id of the whole conversation (sipgate `origCallId`; else the call id).
    pub conversation_key: String,
    pub from: String,
    pub to: String,
    pub direction: Direction,
    /// Agent names as the PBX sends them (`user` / `user[]`).
    pub users: Vec<String>,
    /// Agent ids as the PBX sends them (sipgate `userId[]`).
    pub user_ids: Vec<String>,
    pub queue: Option<String>,
    pub answering_number: Option<String>,
    pub diversion: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallEventKind {
    NewCall,
    Answer,
    Hangup { cause: EndCause },
}

impl CallEventKind {
    pub fn name(&self) -> &'static str {
        match self {
            CallEventKind::NewCall => "newCall",
            CallEventKind::Answer => "answer",
            CallEventKind::Hangup { .. } => "hangup",
        }
    }
}

impl CallEvent {
    /// Replays of the same PBX request carry the same key.
    pub fn dedup_key(&self) -> String {
        format!("{}:{}:{}", self.source, self.call_id, self.kind.name())
    }
}

/// Why a PBX request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body is not valid {format}: {detail}")]
    Malformed { format: &'static str, detail: String },
    #[error("field `{0}` is required")]
    Missing(&'static str),
    #[error("Invalid direction! `direction` must be `in` or `out`, not `{0}`")]
    InvalidDirection(String),
    #[error("unknown event `{0}`: expected newCall, answer or hangup")]
    UnknownEvent(String),
    #[error("field `{field}` is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
}

/// The hub's answer to a newCall, in vendor-neutral words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Accept,
    Reject { reason: String },
    Dial { caller_id: String, number: String },
}

pub(crate) fn direction(raw: &str) -> Result<Direction, WireError> {
    match raw {
        "in" => Ok(Direction::Inbound),
        "out" => Ok(Direction::Outbound),
        other => Err(WireError::InvalidDirection(other.to_string())),
    }
}

/// Zammad documents call ids of at most 250 characters.
pub(crate) const MAX_ID_LEN: usize = 250;

pub(crate) fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), WireError> {
    if value.chars().count() > max { Err(WireError::TooLong { field, max }) } else { Ok(()) }
}

pub(crate) fn kind(event: &str, cause: Option<&str>) -> Result<CallEventKind, WireError> {
    match event {
        "newCall" => Ok(CallEventKind::NewCall),
        "answer" => Ok(CallEventKind::Answer),
        "hangup" => Ok(CallEventKind::Hangup { cause: EndCause::parse(cause.unwrap_or("normalClearing")) }),
        other => Err(WireError::UnknownEvent(other.to_string())),
    }
}
