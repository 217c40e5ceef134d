//! Identification: a number in any notation → its E.164 form → the CRM's records, within the
//! configured time budget; and the `identify` question an integration asks (who is this,
//! and what would the pop rules open).

use std::time::{Duration, Instant};

use cxbridge_domain::conversation::{Address, Channel, Conversation, Details, Direction, Event, EventKind, Offer};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::phone::{DigitsWithoutPlus, Normalized};
use cxbridge_proto as proto;

use super::{App, Error, Result, views};

/// What an integration asks about an address.
pub struct IdentifyQuestion {
    /// Phone number (any notation) or channel address.
    pub address: String,
    pub channel: Option<String>,
    pub queue: Option<String>,
    pub direction: Option<String>,
    pub campaign: Option<String>,
}

impl App {
    pub fn address(&self, raw: &str) -> (Address, Normalized) {
        self.address_from(raw, DigitsWithoutPlus::National)
    }

    /// `raw` as a source that means `convention` by digits without `+` sends it.
    pub fn address_from(&self, raw: &str, convention: DigitsWithoutPlus) -> (Address, Normalized) {
        let n = self.normalizer.normalize_from(raw, convention);
        (Address { raw: raw.to_string(), e164: n.e164().map(str::to_string) }, n)
    }

    /// Looks the caller up in the CRM within the configured time budget.
    pub async fn identify(&self, normalized: &Normalized) -> Identification {
        let Some(e164) = normalized.e164() else {
            let reason = normalized.skip_reason().unwrap_or("invalid").to_string();
            metrics::counter!("cxbridge_identifications_total", "outcome" => "skipped").increment(1);
            return Identification::Skipped { reason };
        };
        let started = Instant::now();
        let budget = Duration::from_millis(self.config.crm.identify_timeout_ms);
        let found = tokio::time::timeout(budget, self.crm.find_by_phone(e164, &self.entities, self.config.crm.max_candidates)).await;
        metrics::histogram!("cxbridge_identify_duration_seconds").record(started.elapsed().as_secs_f64());
        let id = match found {
            Ok(Ok(candidates)) => Identification::from_candidates(candidates),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "identification failed");
                Identification::Skipped { reason: "crm_error".into() }
            }
            Err(_) => {
                tracing::warn!(budget_ms = budget.as_millis() as u64, "identification ran out of time");
                Identification::Skipped { reason: "crm_timeout".into() }
            }
        };
        metrics::counter!("cxbridge_identifications_total", "outcome" => id.outcome()).increment(1);
        id
    }

    /// Who `q.address` is, and the pop the rules would choose for a conversation like the one
    /// asked about.
    pub async fn identify_address(&self, q: &IdentifyQuestion) -> Result<proto::IdentifyResponse> {
        let normalized = self.normalizer.normalize(&q.address);
        let identification = self.identify(&normalized).await;
        let direction = match q.direction.as_deref() {
            None => Direction::Inbound,
            Some(d) => Direction::parse(d).ok_or_else(|| Error::invalid("`direction` must be `inbound` or `outbound`"))?,
        };
        let probe = probe_conversation(q, direction, normalized.e164().map(str::to_string), identification.clone())?;
        let pop = self.pop_view(&probe).await;
        Ok(proto::IdentifyResponse {
            address: q.address.clone(),
            e164: normalized.e164().map(str::to_string),
            identification: views::identification(&self.redact_identification(&identification)),
            pop,
        })
    }
}

/// A conversation that looks like the one asked about, for the pop rules.
fn probe_conversation(q: &IdentifyQuestion, direction: Direction, e164: Option<String>, identification: Identification) -> Result<Conversation> {
    let start = Event {
        dedup_key: String::new(),
        source: "identify".into(),
        conversation_key: String::new(),
        leg: None,
        at: cxbridge_domain::Timestamp::now(),
        source_time: false,
        kind: EventKind::Offered(Offer {
            channel: Channel::parse(q.channel.as_deref().unwrap_or("voice")),
            direction,
            customer: Address { raw: q.address.clone(), e164 },
            dialed: Default::default(),
            agents: vec![],
            queue: q.queue.clone(),
            diversion: None,
            details: Details { campaign: q.campaign.clone(), ..Default::default() },
            identification,
        }),
    };
    cxbridge_domain::conversation::apply(None, start, "probe", Default::default())
        .map(|t| t.conversation)
        .map_err(|e| Error::Internal(e.to_string()))
}
