//! Named CRM workflows from config (`[[workflows]]`): search, create, update, timeline,
//! on whichever CRM is configured, returning records the panel can show.

use std::collections::BTreeMap;

use cxbridge_domain::crm::{Candidate, EntitySpec, RecordRef, SearchQuery};
use cxbridge_proto as proto;

use super::{App, Caller, Error, Result, views};
use crate::config::{WorkflowAction, WorkflowConfig};

impl App {
    /// The configured workflows, as the API lists them.
    pub fn workflow_views(&self) -> Vec<proto::WorkflowView> {
        self.config
            .workflows
            .iter()
            .map(|w| proto::WorkflowView { name: w.name.clone(), label: w.label.clone(), action: w.action.to_string(), entity: w.entity.clone(), required: w.required.clone(), allowed: w.allowed.clone() })
            .collect()
    }

    /// The workflow `name`, if configured.
    pub fn workflow(&self, name: &str) -> Result<&WorkflowConfig> {
        self.config.workflows.iter().find(|w| w.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.config.workflows.iter().map(|w| w.name.as_str()).collect();
            Error::not_found(format!("no workflow `{name}`; configured: {}", if known.is_empty() { "none".into() } else { known.join(", ") }))
        })
    }

    /// Runs the workflow `w` against the configured CRM.
    pub async fn run_workflow(&self, caller: &Caller, w: &WorkflowConfig, input: proto::WorkflowInput) -> Result<proto::WorkflowResult> {
        let spec = self.entity(&w.entity).ok_or_else(|| Error::Internal(format!("workflow `{}` names unknown entity `{}`", w.name, w.entity)))?;
        check_fields(w, spec, &input.fields)?;
        // An agent runs a workflow for one of their conversations, on that conversation's records.
        let conversation = match input.conversation_id.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(id) => Some(self.visible_conversation(caller, id).await?),
            None if caller.agent_id().is_some() && matches!(w.action, WorkflowAction::Update | WorkflowAction::Timeline) => {
                return Err(Error::invalid("`conversation_id` is required: an agent works on the records of one of their conversations"));
            }
            None => None,
        };
        let check_record = |id: &str| -> Result<()> {
            match (caller.agent_id(), &conversation) {
                (Some(_), Some(c)) if !App::conversation_records(c).iter().any(|r| r.entity == spec.name && r.id == id) => {
                    Err(Error::forbidden(format!("{} `{id}` is not one of this conversation's records", spec.name)))
                }
                _ => Ok(()),
            }
        };
        // What the agent gets back: no sensitive field, and a grant to link it to the conversation.
        let shown = |c: &Candidate| {
            let mut v = views::candidate_with_fields(&self.redact(c));
            if let (Some(_), Some(conv)) = (caller.agent_id(), &conversation) {
                v.grant = Some(self.grants.grant(&conv.id, &c.record.entity, &c.record.id));
            }
            v
        };
        let limit = input.limit.unwrap_or(w.limit).clamp(1, w.limit.max(1));
        let mut result = proto::WorkflowResult { workflow: w.name.clone(), action: w.action.to_string(), records: vec![], timeline: vec![] };
        match w.action {
            WorkflowAction::Search => {
                let mut filters = w.fields.clone();
                filters.extend(input.fields.clone());
                let text = input.text.clone().filter(|t| !t.trim().is_empty());
                if text.is_none() && filters.is_empty() {
                    return Err(Error::invalid("a search needs `text` or at least one of `fields`"));
                }
                let found = self.crm.search(spec, &SearchQuery { text, filters, limit }).await.map_err(Error::Crm)?;
                result.records = found.iter().map(shown).collect();
            }
            WorkflowAction::Create => {
                let mut fields = w.fields.clone();
                fields.extend(input.fields.clone());
                let missing: Vec<&str> = w.required.iter().filter(|f| fields.get(*f).is_none_or(|v| v.trim().is_empty())).map(String::as_str).collect();
                if !missing.is_empty() {
                    return Err(Error::invalid(format!("missing required field(s): {}", missing.join(", "))));
                }
                let created = self.crm.create(spec, &fields).await.map_err(Error::Crm)?;
                result.records = vec![shown(&created)];
            }
            WorkflowAction::Update => {
                let id = required_id(&input)?;
                check_record(id)?;
                if input.fields.is_empty() {
                    return Err(Error::invalid("an update needs at least one of `fields`"));
                }
                let mut fields = w.fields.clone();
                fields.extend(input.fields.clone());
                let updated = self.crm.update(spec, id, &fields).await.map_err(Error::Crm)?;
                result.records = vec![shown(&updated)];
            }
            WorkflowAction::Timeline => {
                let id = required_id(&input)?;
                check_record(id)?;
                let entries = self.crm.timeline(&RecordRef::new(&spec.name, id), limit).await.map_err(Error::Crm)?;
                result.timeline = entries
                    .into_iter()
                    .map(|e| proto::TimelineEntryView { id: e.id, kind: e.kind, subject: e.subject, at: e.at, fields: e.fields })
                    .collect();
            }
        }
        tracing::info!(workflow = w.name, agent = caller.agent_id(), "workflow run");
        Ok(result)
    }
}

fn required_id(input: &proto::WorkflowInput) -> Result<&str> {
    input.id.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| Error::invalid("`id` of the record is required"))
}

/// The fields a caller gives (values to write, or search filters): only those the workflow
/// names in `allowed` or `required` — none when it names none — and never a sensitive one.
fn check_fields(w: &WorkflowConfig, spec: &EntitySpec, fields: &BTreeMap<String, String>) -> Result<()> {
    let sensitive: Vec<&str> = fields.keys().filter(|k| spec.is_sensitive(k)).map(String::as_str).collect();
    if !sensitive.is_empty() {
        return Err(Error::invalid(format!(
            "field(s) {} of {} are sensitive ([ivr.verify] checks callers against them, or the entity lists them): no workflow sets or searches them",
            sensitive.join(", "),
            spec.name
        )));
    }
    let refused: Vec<&str> = fields.keys().filter(|k| !w.allowed.contains(k) && !w.required.contains(k)).map(String::as_str).collect();
    if refused.is_empty() {
        return Ok(());
    }
    let allowed: Vec<&str> = w.allowed.iter().chain(&w.required).map(String::as_str).collect();
    let allowed = if allowed.is_empty() { "none (list them in the workflow's `allowed`)".to_string() } else { allowed.join(", ") };
    Err(Error::invalid(format!("field(s) not allowed in workflow `{}`: {}; allowed: {allowed}", w.name, refused.join(", "))))
}
