//! What an IVR asks while the caller waits: who is calling, who owns them, their flags, and
//! where the call should go (`[ivr]` rules, domain `ivr::decide`).

use std::collections::BTreeMap;

use cxbridge_domain::conversation::State;
use cxbridge_domain::crm::Candidate;
use cxbridge_domain::identify::Identification;
use cxbridge_domain::ivr::{self, Facts, Owner, Route};
use cxbridge_domain::phone::Normalized;

use crate::service::App;

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
    match app.config.crm.provider.as_str() {
        "builtin" => Some("owner".into()),
        "dataverse" => Some("_ownerid_value".into()),
        "salesforce" => Some("OwnerId".into()),
        _ => None,
    }
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
        let route = if self.config.ivr.rules.is_empty() { ivr::decide(&ivr::default_rules(), &facts) } else { ivr::decide(&self.config.ivr.rules, &facts) };
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
        let agent = self.config.agents.iter().find(|a| {
            a.id == crm_user || a.crm_user_id.as_deref() == Some(crm_user.as_str()) || a.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&crm_user))
        });
        let available = match agent {
            Some(a) => self.hub.is_connected(&a.id) && !self.in_a_call(&a.id).await,
            None => false,
        };
        Some(Owner {
            crm_user,
            agent: agent.map(|a| a.id.clone()),
            extension: agent.and_then(|a| a.numbers.first().cloned()),
            available,
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
    use super::repair_ani;

    #[test]
    fn a_plus_lost_in_the_query_string_comes_back() {
        for (raw, want) in [(" 4930123", "+4930123"), ("+4930123", "+4930123"), (" anonymous", "anonymous"), ("030 123", "030 123"), (" ", "")] {
            assert_eq!(repair_ani(raw), want, "{raw:?}");
        }
    }
}
