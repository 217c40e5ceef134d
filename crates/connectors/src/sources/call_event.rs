//! The PBX call-event model every source produces: a [`CallEvent`], the [`Reply`] it is
//! answered with, why a request is refused, and the field checks and form decoding they share.

use cxbridge_domain::conversation::{Direction, EndCause};

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
    /// The leg this event is about, when the source tells the legs of one conversation apart
    /// (sipgate: each `callId` of an `origCallId`); the newest answered leg's agent takes it.
    pub leg: Option<String>,
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
    /// The PBX's voicemail took the call (an `answer` by the user `voicemail`): the caller
    /// still reached nobody.
    Voicemail,
    /// Digits the caller keyed in (sipgate's `dtmf` push).
    Dtmf { digits: String },
    Hangup { cause: EndCause },
}

impl CallEventKind {
    pub fn name(&self) -> &'static str {
        match self {
            CallEventKind::NewCall => "newCall",
            CallEventKind::Answer => "answer",
            CallEventKind::Voicemail => "voicemail",
            CallEventKind::Dtmf { .. } => "dtmf",
            CallEventKind::Hangup { .. } => "hangup",
        }
    }
}

impl CallEvent {
    /// Replays of the same PBX request carry the same key.
    pub fn dedup_key(&self) -> String {
        match &self.kind {
            // A caller keys in several times during one call.
            CallEventKind::Dtmf { digits } => format!("{}:{}:dtmf:{digits}", self.source, self.call_id),
            k => format!("{}:{}:{}", self.source, self.call_id, k.name()),
        }
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
    #[error("field `{field}` names {count} agents; at most {max} are accepted per event (send a larger ring group as a `queue` and list its agents under [[agents]] queues)")]
    TooManyAgents { field: &'static str, count: usize, max: usize },
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

/// An `answer` whose only user is `voicemail` (and no answering phone number) is the PBX's
/// voicemail taking the call: Zammad keeps such a call missed, and so do we, since nobody
/// spoke to the caller.
pub(crate) fn voicemail_or(kind: CallEventKind, users: &[String], answering_number: Option<&str>) -> CallEventKind {
    let by_voicemail = matches!(users, [only] if only.trim().eq_ignore_ascii_case("voicemail"));
    if kind == CallEventKind::Answer && answering_number.is_none_or(|n| n.trim().is_empty()) && by_voicemail { CallEventKind::Voicemail } else { kind }
}

/// Refuses a list of agent names or ids longer than the domain's per-event limit.
pub(crate) fn check_agents(field: &'static str, agents: &[String]) -> Result<(), WireError> {
    let max = cxbridge_domain::conversation::MAX_AGENTS_PER_EVENT;
    if agents.len() > max { Err(WireError::TooManyAgents { field, count: agents.len(), max }) } else { Ok(()) }
}

/// Parses an `application/x-www-form-urlencoded` body, refusing one whose names or values
/// are not UTF-8 once percent-decoded (the form parser would silently turn them into
/// U+FFFD and a caller's `%FF` into a different number).
pub(crate) fn parse_form_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    check_form_utf8(body).map_err(|detail| WireError::Malformed { format: "form data", detail })?;
    serde_html_form::from_bytes(body).map_err(|e| WireError::Malformed { format: "form data", detail: e.to_string() })
}

/// Checks that every name and value of a form body or query string (`a=1&b=%C3%A9`) is UTF-8
/// after percent-decoding; the error names the first offending field.
pub fn check_form_utf8(form: &[u8]) -> Result<(), String> {
    for pair in form.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let mut halves = pair.splitn(2, |b| *b == b'=');
        let name = percent_decode(halves.next().unwrap_or_default());
        let value = percent_decode(halves.next().unwrap_or_default());
        let shown: String = String::from_utf8_lossy(&name).chars().take(40).collect();
        if std::str::from_utf8(&name).is_err() {
            return Err(format!("a field name (`{shown}`) is not UTF-8 once percent-decoded"));
        }
        if std::str::from_utf8(&value).is_err() {
            return Err(format!("the value of `{shown}` is not UTF-8 once percent-decoded; send text in UTF-8"));
        }
    }
    Ok(())
}

/// Form decoding of one name or value: `+` is a space, `%XX` a byte, anything else itself
/// (a `%` without two hex digits stays, as the form parser keeps it).
fn percent_decode(part: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(part.len());
    let mut rest = part;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match (b, tail) {
            (b'+', _) => out.push(b' '),
            (b'%', [high, low, after @ ..]) => match (hex(*high), hex(*low)) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    rest = after;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod form_tests {
    use super::*;

    #[test]
    fn form_text_must_be_utf8_once_decoded() {
        let cases: &[(&[u8], Result<(), &str>)] = &[
            (b"", Ok(())),
            (b"ani=%2B4930123&dnis=", Ok(())),
            (b"name=Ren%C3%A9+M%C3%BCller", Ok(())),
            ("name=René".as_bytes(), Ok(())),
            (b"ani=100%&x=%zz&=&&", Ok(())),
            (b"ani=%FF%FE", Err("the value of `ani` is not UTF-8")),
            (b"from=%C3&to=1", Err("the value of `from` is not UTF-8")),
            (b"from=\xff", Err("the value of `from` is not UTF-8")),
            (b"user%5B%5D=%E9", Err("the value of `user[]` is not UTF-8")),
            (b"%FF=1", Err("a field name")),
            (&[b'a', b'=', 0xff, 0xfe], Err("the value of `a` is not UTF-8")),
        ];
        for (form, want) in cases {
            let got = check_form_utf8(form);
            match want {
                Ok(()) => assert_eq!(got, Ok(()), "{:?}", String::from_utf8_lossy(form)),
                Err(w) => assert!(got.as_ref().is_err_and(|e| e.contains(w)), "{:?}: {got:?} should contain {w:?}", String::from_utf8_lossy(form)),
            }
        }
    }

    #[test]
    fn percent_decoding_follows_the_form_rules() {
        assert_eq!(percent_decode(b"a+b%20c%2B%41"), b"a b c+A");
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%g1%41"), b"%g1A");
    }
}
