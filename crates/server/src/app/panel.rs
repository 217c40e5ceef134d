//! What the agent panel does to a conversation beyond wrap-up: choose and pin records,
//! create the caller's record, show the customer card; and what it loads after sign-in.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use cxbridge_domain::conversation::{Conversation, Event, EventKind, Links};
use cxbridge_domain::crm::{EntitySpec, RecordRef};
use cxbridge_proto as proto;

use super::{App, Caller, Error, Result, fnv1a, views};

impl App {
    async fn record_links(&self, c: &Conversation, links: Links, body: &[u8], received: Instant) -> Result<Conversation> {
        let dedup_key = format!("links:{}:{:016x}", c.id, fnv1a(body) ^ c.revision);
        let event = Event::about(c, dedup_key, cxbridge_domain::Timestamp::now(), EventKind::Linked(links));
        Ok(self.record(event, "panel", "links", received).await?.into_conversation().unwrap_or_else(|| c.clone()))
    }

    /// Chooses the record the conversation is about, or sets the pinned records. `body` (the
    /// request as sent) keys the change, so a resend changes nothing.
    pub async fn set_links(&self, caller: &Caller, id: &str, req: proto::LinksRequest, body: &[u8], received: Instant) -> Result<proto::ConversationView> {
        let c = self.visible_conversation(caller, id).await?;
        let refs: Vec<&proto::RecordRefView> = req.selected.iter().chain(req.pinned.iter().flatten()).collect();
        self.check_agent_links(caller, &c, &refs, &req.grants)?;
        self.check_linkable(&c, req.selected.as_ref(), req.pinned.as_ref()).await?;
        let links = Links {
            selected: req.selected.as_ref().map(|r| RecordRef::new(&r.entity, &r.id)),
            pinned: req.pinned.as_ref().map(|p| {
                let mut seen = HashSet::new();
                p.iter().map(|r| RecordRef::new(&r.entity, &r.id)).filter(|r| seen.insert(r.clone())).collect()
            }),
        };
        let c = self.record_links(&c, links, body, received).await?;
        Ok(self.conversation_view(&c).await)
    }

    /// Creates the caller's record in the CRM (nobody matched) and makes it the conversation's.
    pub async fn create_record(&self, caller: &Caller, id: &str, req: proto::NewRecordRequest, body: &[u8], received: Instant) -> Result<proto::NewRecordResult> {
        let c = self.visible_conversation(caller, id).await?;
        let spec = self.entity(&req.entity).ok_or_else(|| {
            let known: Vec<&str> = self.entities.iter().map(|e| e.name.as_str()).collect();
            Error::invalid(format!("unknown entity `{}`; the CRM has {}", req.entity, known.join(", ")))
        })?;
        let fields: BTreeMap<String, String> = req.fields.into_iter().map(|(k, v)| (k, v.trim().to_string())).filter(|(_, v)| !v.is_empty()).collect();
        if !fields.contains_key(&spec.title_field) {
            return Err(Error::invalid(format!("`{}` is required for a new {}", spec.title_field, spec.name)));
        }
        let created = self.crm.create(spec, &fields).await.map_err(Error::Crm)?;
        let links = Links { selected: Some(created.record.clone()), pinned: None };
        let c = self.record_links(&c, links, body, received).await?;
        tracing::info!(conversation = c.id, entity = spec.name, id = created.record.id, agent = caller.agent_id(), "record created from the panel");
        Ok(proto::NewRecordResult { record: views::candidate_with_fields(&self.redact(&created)), conversation: self.conversation_view(&c).await })
    }

    /// The current records of a conversation, as candidates where we can describe them.
    async fn current_records(&self, c: &Conversation) -> Vec<proto::CandidateView> {
        let mut refs: Vec<RecordRef> = c.regarding().into_iter().cloned().collect();
        for p in &c.pinned {
            if !refs.contains(p) {
                refs.push(p.clone());
            }
        }
        let mut out = vec![];
        for r in refs {
            out.push(match self.record_candidate(c, &r).await {
                Some(k) => views::candidate_with_fields(&self.redact(&k)),
                // An external CRM's record we only know by reference (created or searched in the panel).
                None => proto::CandidateView { entity: r.entity.clone(), id: r.id.clone(), title: r.id.clone(), display: vec![], fields: None, grant: None },
            });
        }
        out
    }

    /// The customer card: the conversation's records and earlier interactions, newest first.
    pub async fn customer_card(&self, caller: &Caller, id: &str) -> Result<proto::RelatedView> {
        let c = self.visible_conversation(caller, id).await?;
        let records = self.current_records(&c).await;
        let own_key = cxbridge_domain::mapping::activity_key(&c.id);
        let lookups = records.iter().map(|r| {
            let record = RecordRef::new(&r.entity, &r.id);
            let crm = self.crm.clone();
            async move { (crm.timeline(&record, 20).await, record) }
        });
        let mut interactions: Vec<proto::InteractionView> = vec![];
        let mut seen = HashSet::new();
        let mut warning = None;
        for (result, record) in futures::future::join_all(lookups).await {
            match result {
                Ok(entries) => {
                    for e in entries {
                        let conversation_id = e.fields.get("conversation_id").cloned().filter(|v| !v.is_empty());
                        let key = e.fields.get("key").cloned().unwrap_or_default();
                        if conversation_id.as_deref() == Some(c.id.as_str()) || key == own_key || !seen.insert(e.id.clone()) {
                            continue;
                        }
                        let field = |k: &str| e.fields.get(k).cloned().filter(|v| !v.is_empty());
                        interactions.push(proto::InteractionView {
                            kind: if conversation_id.is_some() { "conversation" } else { "activity" }.into(),
                            id: e.id.clone(),
                            at: e.at.clone(),
                            subject: if e.subject.is_empty() { e.kind.clone() } else { e.subject.clone() },
                            channel: field("channel"),
                            direction: field("direction"),
                            outcome: field("outcome"),
                            disposition: field("disposition"),
                            conversation_id,
                            record: views::record_ref(&record),
                        });
                    }
                }
                Err(e) => warning = Some(format!("the CRM did not give the history of {record}: {e}")),
            }
        }
        // RFC 3339 times in UTC sort as text; fall back to text order for other formats.
        interactions.sort_by(|a, b| {
            let parse = |s: &str| s.parse::<jiff::Timestamp>().ok();
            match (parse(&a.at), parse(&b.at)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => b.at.cmp(&a.at),
            }
        });
        Ok(proto::RelatedView { records, interactions, warning })
    }

    /// Everything the panel needs after sign-in besides the session: wrap-up codes,
    /// workflows, entities, Dynamics.
    pub fn panel_view(&self, session: proto::SessionView) -> proto::PanelView {
        let config = &self.config;
        proto::PanelView {
            session,
            wrapup_codes: self
                .directory
                .wrapup_codes()
                .iter()
                .map(|c| proto::WrapupCodeView { code: c.code.clone(), label: c.label.clone().unwrap_or_else(|| c.code.clone()), category: c.category.clone() })
                .collect(),
            wrapup_required: config.panel.require_disposition,
            workflows: self.workflow_views(),
            entities: self
                .entities
                .iter()
                .map(|e| proto::PanelEntityView { name: e.name.clone(), label: capitalize(&e.name), title_field: e.title_field.clone(), id_field: e.id_field.clone(), create_fields: create_fields(e) })
                .collect(),
            dynamics: config.panel.dynamics.as_ref().map(|d| proto::DynamicsView {
                cif_library_url: d.cif_library_url.clone(),
                crm_url: d.crm_url.clone(),
                cif_version: d.cif_version,
                entity_map: self.entities.iter().map(|e| (e.name.clone(), d.entity_map.get(&e.name).cloned().unwrap_or_else(|| e.name.clone()))).collect(),
                notification_template: d.notification_template.clone(),
                session_template: d.session_template.clone(),
            }),
            dial_url: config.panel.dial_url.clone(),
            recent_after_secs: config.panel.recent_after_secs,
        }
    }
}

fn create_fields(spec: &EntitySpec) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let all = std::iter::once(&spec.title_field).chain(&spec.phone_fields).chain(&spec.email_fields).chain(spec.display_fields.iter().map(|d| &d.field));
    for f in all {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
