//! What an IVR asks while the caller waits: who is calling, who owns them, their flags, and
//! where the call should go (`[ivr]` rules, domain `ivr::decide`).

use std::collections::BTreeMap;
use std::time::Instant;

use cxbridge_domain::conversation::{Channel, Details, Direction, EndCause, Event, EventKind, Offer, State, WrapUp};
use cxbridge_proto as proto;
use cxbridge_domain::crm::Candidate;
use cxbridge_domain::identify::Identification;
use cxbridge_domain::ivr::{self, Facts, Owner, Route};
use cxbridge_domain::phone::Normalized;
use cxbridge_store::{Reservation, Verification, VerificationLimits};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{App, Error, Result};

/// What a verification attempt came to.
pub enum Verified {
    Yes(Candidate),
    No,
    /// Too many failed attempts from this number or on this record; retry after the window.
    Locked { retry_after_secs: u64 },
}

/// PINs, order and serial numbers are compared without spaces, dashes or case, as callers
/// key or say them differently.
fn canonical(v: &str) -> String {
    v.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

/// Equal in constant time, whatever the lengths: digests are compared, not the values.
fn same_secret(expected: &str, given: &str) -> bool {
    let (a, b) = (Sha256::digest(canonical(expected).as_bytes()), Sha256::digest(canonical(given).as_bytes()));
    !expected.trim().is_empty() && bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Everything a lookup found.
pub struct Lookup {
    pub ani: String,
    pub normalized: Normalized,
    pub blocked: bool,
    pub identification: Identification,
    pub record: Option<Candidate>,
    pub owner: Option<Owner>,
    pub flags: BTreeMap<String, String>,
    pub route: Route,
}

/// An unencoded `+` in a query string arrives as a space (Kamailio passes the caller's `+`
/// raw): a leading space before digits is that plus.
pub fn repair_ani(ani: &str) -> String {
    match ani.strip_prefix(' ') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => format!("+{rest}"),
        _ => ani.trim().to_string(),
    }
}

/// The CRM field naming a record's owner, per provider, unless configured.
fn owner_field(app: &App) -> Option<String> {
    if let Some(f) = &app.config.ivr.owner_field {
        return Some(f.clone());
    }
    app.config.crm.provider.owner_field().map(str::to_string)
}

impl App {
    pub async fn ivr_lookup(&self, ani: &str, dialed: Option<&str>) -> Lookup {
        let ani = repair_ani(ani);
        let normalized = self.normalizer.normalize(&ani);
        let blocked = normalized.e164().is_some_and(|e| self.block_list.contains(e));
        let identification = self.identify(&normalized).await;
        let record = match &identification {
            Identification::Single(c) => Some(c.clone()),
            _ => None,
        };
        let flags: BTreeMap<String, String> = match &record {
            Some(r) => self
                .config
                .ivr
                .flags
                .iter()
                .filter_map(|f| r.fields.get(&f.field).filter(|v| !v.trim().is_empty()).map(|v| (f.name.clone(), v.clone())))
                .collect(),
            None => BTreeMap::new(),
        };
        let owner = match &record {
            Some(r) => self.owner_of(r).await,
            None => None,
        };
        let facts = Facts {
            blocked,
            anonymous: matches!(normalized, Normalized::Anonymous),
            identified: record.is_some(),
            flags: flags.clone(),
            owner: owner.clone(),
            dialed: dialed.and_then(|d| self.normalizer.normalize(&repair_ani(d)).e164().map(str::to_string)),
        };
        let route = ivr::decide(&self.config.ivr.rules, &facts);
        metrics::counter!("cxbridge_ivr_lookups_total", "action" => route.action()).increment(1);
        Lookup { ani, normalized, blocked, identification, record, owner, flags, route }
    }

    /// The record's owner from its owner field, or from a related record's (a contact's
    /// account), mapped to an agent.
    async fn owner_of(&self, record: &Candidate) -> Option<Owner> {
        let field = owner_field(self)?;
        let mut value = record.fields.get(&field).filter(|v| !v.trim().is_empty()).cloned();
        if value.is_none()
            && let Some(spec) = self.entities.iter().find(|e| e.name == record.record.entity)
        {
            for rel in &spec.relations {
                if let Ok(Some(related)) = self.crm.related(&record.record, spec, &rel.name).await
                    && let Some(v) = related.fields.get(&field).filter(|v| !v.trim().is_empty())
                {
                    value = Some(v.clone());
                    break;
                }
            }
        }
        let crm_user = value?;
        let agent = self.directory.agent_by_crm_user(&crm_user);
        let available = match &agent {
            Some(a) => self.agent_online(&a.id) && !self.in_a_call(&a.id).await,
            None => false,
        };
        Some(Owner {
            crm_user,
            agent: agent.as_ref().map(|a| a.id.clone()),
            extension: agent.as_ref().and_then(|a| a.numbers.first().cloned()),
            available,
        })
    }

    /// Checks what the caller gives against the identified record's field, within the
    /// attempt limits, and audits the attempt.
    pub async fn ivr_verify(&self, ani: &str, kind: &str, value: &str) -> Result<Verified> {
        let config = &self.config.ivr.verify;
        let Some(field) = config.fields.get(kind) else {
            let kinds: Vec<&str> = config.fields.keys().map(String::as_str).collect();
            let known = if kinds.is_empty() { "none; configure [ivr.verify] fields".to_string() } else { kinds.join(", ") };
            return Err(Error::invalid(format!("`kind` must be one of the configured verifications: {known}")));
        };
        if value.trim().is_empty() || value.len() > 128 {
            return Err(Error::invalid("`value` must be 1 to 128 characters"));
        }
        let ani = repair_ani(ani);
        let normalized = self.normalizer.normalize(&ani);
        let number = normalized.e164().map_or_else(|| ani.clone(), str::to_string);
        let candidates = match self.identify(&normalized).await {
            Identification::Single(c) => vec![c],
            Identification::Multiple(cs) => cs,
            _ => vec![],
        };
        // The attempt is reserved (counted as failed) before anything is compared, in one
        // atomic step of the store: concurrent attempts, on any node, see each other. Every
        // record the number matches counts, so sharing a number does not dodge the record limit.
        let records: Vec<cxbridge_domain::crm::RecordRef> = candidates.iter().map(|c| c.record.clone()).collect();
        let sole = (records.len() == 1).then(|| records[0].clone());
        let now = cxbridge_domain::Timestamp::now();
        let limits = VerificationLimits {
            per_number: config.max_attempts_per_number,
            per_record: config.max_attempts_per_record,
            window: std::time::Duration::from_secs(config.window_secs),
            per_minute: config.max_attempts_per_minute,
        };
        let attempt = Verification { at: now, number: number.clone(), record: sole.clone(), kind: kind.to_string(), outcome: String::new() };
        let id = match self.store.reserve_verification(&attempt, &records, &limits).await? {
            Reservation::Reserved(id) => id,
            Reservation::Locked { retry_after_secs } => {
                metrics::counter!("cxbridge_ivr_verifications_total", "outcome" => "locked").increment(1);
                tracing::info!(number, kind, "caller verification locked");
                return Ok(Verified::Locked { retry_after_secs });
            }
        };
        // Compare against every match (and a dummy when there is none), so the time taken
        // does not tell whether the caller is known.
        let mut found = None;
        for c in &candidates {
            let expected = c.fields.get(field).map(String::as_str).unwrap_or("");
            if same_secret(expected, value) && found.is_none() {
                found = Some(c.clone());
            }
        }
        if candidates.is_empty() {
            let _ = same_secret("unknown-caller", value);
        }
        let outcome = if found.is_some() { "verified" } else { "refused" };
        let audited = found.as_ref().map(|c| c.record.clone()).or(sole);
        self.store.finish_verification(id, outcome, audited.as_ref()).await?;
        metrics::counter!("cxbridge_ivr_verifications_total", "outcome" => outcome).increment(1);
        tracing::info!(number, kind, outcome, "caller verification");
        Ok(found.map_or(Verified::No, Verified::Yes))
    }

    /// An IVR call that never reached an agent (missed, callback wanted, voicebot answers):
    /// one conversation, completed at once, its activity in the outbox. Repeats of the same
    /// `event_id` change nothing; a record created for an unknown caller is found again by
    /// identification on a repeat, so it is created once.
    pub async fn ivr_event(&self, e: &proto::IvrEventInput, received: Instant) -> Result<proto::IvrEventResult> {
        let (what, cause) = match e.kind.as_str() {
            "missed_call" => ("missed call", EndCause::NoAnswer),
            "callback_request" => ("callback request", EndCause::Cancel),
            "voicebot" => ("voicebot", EndCause::NormalClearing),
            other => return Err(Error::invalid(format!("`kind` must be missed_call, callback_request or voicebot, not `{other}`"))),
        };
        if e.event_id.trim().is_empty() || e.event_id.chars().count() > 200 {
            return Err(Error::invalid("`event_id` must be 1 to 200 characters: your id of this IVR call, so a retry is recognized"));
        }
        let at = match &e.occurred_at {
            Some(t) => t.parse::<cxbridge_domain::Timestamp>().map_err(|err| Error::invalid(format!("`occurred_at` is not an RFC 3339 time: {err}")))?,
            None => cxbridge_domain::Timestamp::now(),
        };
        let (customer, normalized) = self.address(&repair_ani(&e.ani));
        let (dialed, _) = self.address(&repair_ani(e.dnis.as_deref().unwrap_or("")));
        let mut identification = self.identify(&normalized).await;
        let mut created = false;
        if matches!(identification, Identification::None)
            && let Some(entity) = &self.config.ivr.create_unknown
            && let Some(spec) = self.entities.iter().find(|s| &s.name == entity)
        {
            let mut fields = BTreeMap::new();
            let name = e.answers.get("name").filter(|n| !n.trim().is_empty()).cloned().unwrap_or_else(|| format!("Caller {}", customer.e164.as_deref().unwrap_or(&customer.raw)));
            fields.insert(spec.title_field.clone(), name);
            if let Some(phone) = spec.phone_fields.first() {
                fields.insert(phone.clone(), customer.e164.clone().unwrap_or_else(|| customer.raw.clone()));
            }
            let record = self.crm.create(spec, &fields).await.map_err(Error::Crm)?;
            tracing::info!(entity, id = record.record.id, "record created for an unknown IVR caller");
            identification = Identification::Single(record);
            created = true;
        }
        let mut attributes = BTreeMap::from([("ivr_event".to_string(), e.kind.clone())]);
        if e.kind == "callback_request" {
            attributes.insert("callback_number".into(), e.callback_number.clone().unwrap_or_else(|| customer.e164.clone().unwrap_or_else(|| customer.raw.clone())));
            if let Some(when) = &e.callback_at {
                attributes.insert("callback_at".into(), when.clone());
            }
        }
        for (q, a) in &e.answers {
            attributes.insert(format!("answer.{q}"), a.clone());
        }
        let details = Details { summary: e.summary.clone(), transcript: e.transcript.clone(), attributes, ..Details::default() };
        let key = e.event_id.trim().to_string();
        let event = |suffix: &str, kind: EventKind| Event { dedup_key: format!("ivr:{key}:{suffix}"), source: "ivr".into(), conversation_key: key.clone(), leg: None, at, source_time: e.occurred_at.is_some(), kind };
        let offer = Offer {
            channel: Channel::Voice,
            direction: Direction::Inbound,
            customer,
            dialed,
            agents: vec![],
            queue: e.queue.clone(),
            diversion: None,
            details,
            identification,
        };
        self.record(event("offered", EventKind::Offered(offer)), "ivr", "offered", received).await?;
        self.record(event("ended", EventKind::Ended { cause }), "ivr", "ended", received).await?;
        // Nobody wraps an IVR call up: complete it now, whatever `memorialize_missed` says.
        let notes = Some(format!("IVR {what}"));
        let recorded = self.record(event("completed", EventKind::WrappedUp(WrapUp { notes, ..WrapUp::default() })), "ivr", "completed", received).await?;
        let c = match recorded.into_conversation() {
            Some(c) => c,
            None => self.store.conversation_by_external(Some("ivr"), &key).await?.ok_or_else(|| Error::not_found("the IVR call was not recorded; send it again"))?,
        };
        Ok(proto::IvrEventResult {
            conversation_id: c.id.clone(),
            state: c.state.as_str().into(),
            record: c.regarding().map(super::views::record_ref),
            created,
        })
    }

    async fn in_a_call(&self, agent: &str) -> bool {
        match self.store.conversations_for_agent(agent).await {
            Ok(open) => open.iter().any(|c| c.state == State::Connected && c.agent.as_deref() == Some(agent)),
            // Unknown: do not send a caller to someone who may be busy.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{repair_ani, same_secret};

    #[test]
    fn secrets_compare_as_callers_say_them() {
        for (expected, given, same) in [
            ("1234", "1234", true),
            ("1234", " 1234 ", true),
            ("AB-1234-X", "ab1234x", true),
            ("AB-1234-X", "ab 1234 x", true),
            ("1234", "1235", false),
            ("1234", "12345", false),
            ("", "", false),
        ] {
            assert_eq!(same_secret(expected, given), same, "{expected:?} vs {given:?}");
        }
    }

    #[test]
    fn a_plus_lost_in_the_query_string_comes_back() {
        for (raw, want) in [(" 4930123", "+4930123"), ("+4930123", "+4930123"), (" anonymous", "anonymous"), ("030 123", "030 123"), (" ", "")] {
            assert_eq!(repair_ani(raw), want, "{raw:?}");
        }
    }
}
