//! Conversions from domain and store types to the wire types of `cxbridge-proto`.

use cxbridge_domain::conversation::{Conversation, EndCause};
use cxbridge_domain::crm::{Candidate, RecordRef};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::mapping::hms;
use cxbridge_domain::pop::PopAction;
use cxbridge_proto as proto;
use cxbridge_store::{OutboxItem, OutboxState, OutboxStats, Record, StoredActivity};

pub fn record_ref(r: &RecordRef) -> proto::RecordRefView {
    proto::RecordRefView { entity: r.entity.clone(), id: r.id.clone() }
}

pub fn candidate(c: &Candidate) -> proto::CandidateView {
    proto::CandidateView {
        entity: c.record.entity.clone(),
        id: c.record.id.clone(),
        title: c.title.clone(),
        display: c.display.iter().map(|(l, v)| proto::DisplayFieldView { label: l.clone(), value: v.clone() }).collect(),
        fields: None,
        grant: None,
    }
}

/// A candidate with every field of the record (workflow results, the customer card).
pub fn candidate_with_fields(c: &Candidate) -> proto::CandidateView {
    proto::CandidateView { fields: Some(c.fields.clone()), ..candidate(c) }
}

pub fn identification(i: &Identification) -> proto::IdentificationView {
    proto::IdentificationView {
        outcome: i.outcome().into(),
        reason: match i {
            Identification::Skipped { reason } => Some(reason.clone()),
            _ => None,
        },
        candidates: i.candidates().iter().map(candidate).collect(),
    }
}

fn empty_pop(action: &str) -> proto::PopView {
    proto::PopView {
        action: action.into(),
        record: None,
        matched: None,
        records: vec![],
        entity: None,
        prefill: None,
        query: None,
        reason: None,
    }
}

/// `related` is the resolved record of an `OpenRelated` action (None: fall back to the match).
pub fn pop(action: &PopAction, related: Option<&Candidate>) -> proto::PopView {
    match action {
        PopAction::Open(c) => proto::PopView { record: Some(candidate(c)), ..empty_pop("open") },
        PopAction::OpenRelated { from, relation } => match related {
            Some(r) => proto::PopView { record: Some(candidate(r)), matched: Some(candidate(from)), ..empty_pop("open") },
            None => proto::PopView {
                record: Some(candidate(from)),
                reason: Some(format!("the match has no `{relation}`; opened the match itself")),
                ..empty_pop("open")
            },
        },
        PopAction::List(cs) => proto::PopView { records: cs.iter().map(candidate).collect(), ..empty_pop("list") },
        PopAction::Search { entity, query } => proto::PopView { entity: Some(entity.clone()), query: Some(query.clone()), ..empty_pop("search") },
        PopAction::Create { entity, prefill } => {
            proto::PopView { entity: Some(entity.clone()), prefill: Some(prefill.clone()), ..empty_pop("create") }
        }
        PopAction::Nothing => empty_pop("nothing"),
        PopAction::Disabled => empty_pop("disabled"),
        PopAction::Unidentified { reason } => proto::PopView { reason: Some(reason.clone()), ..empty_pop("unidentified") },
    }
}

/// What an agent the conversation rang hears once another agent answered: who took it,
/// nothing of what it is about.
pub fn handed_over(c: &Conversation) -> proto::AgentConversation {
    let mut bare = c.clone();
    bare.details = Default::default();
    bare.identification = Identification::Skipped { reason: "answered by another agent".into() };
    bare.selected = None;
    bare.pinned = vec![];
    bare.disposition = None;
    proto::AgentConversation { conversation: conversation(&bare, None), pop: empty_pop("nothing") }
}

pub fn memorialization(item: Option<&OutboxItem>) -> proto::MemorializationView {
    let status = match item.map(|i| i.state) {
        None => "waiting",
        Some(OutboxState::Pending) => "pending",
        Some(OutboxState::Delivered) => "written",
        Some(OutboxState::Dead) => "failed",
    };
    proto::MemorializationView {
        status: status.into(),
        attempts: item.map_or(0, |i| i.attempts),
        last_error: item.and_then(|i| i.last_error.clone()),
        activity_id: item.and_then(|i| i.crm_ref.clone()),
        outbox_id: item.map(|i| i.id),
    }
}

pub fn conversation(c: &Conversation, item: Option<&OutboxItem>) -> proto::ConversationView {
    let d = &c.details;
    proto::ConversationView {
        id: c.id.clone(),
        source: c.source.clone(),
        external_id: c.external_id.clone(),
        legs: c.legs.iter().map(|l| l.id.clone()).collect(),
        channel: c.channel.as_str().into(),
        direction: c.direction.as_str().into(),
        customer_number: c.customer.raw.clone(),
        customer_e164: c.customer.e164.clone(),
        dialed_number: c.dialed.raw.clone(),
        queue: c.queue.clone(),
        campaign: d.campaign.clone(),
        offered_to: c.offered_to.clone(),
        agent: c.agent.clone(),
        state: c.state.as_str().into(),
        outcome: c.outcome.map(|o| o.as_str().into()),
        end_cause: c.end_cause.as_ref().map(|e| e.as_str().into()),
        timed_out: c.end_cause == Some(EndCause::TimedOut),
        offered_at: c.offered_at.to_string(),
        connected_at: c.connected_at.map(|t| t.to_string()),
        ended_at: c.ended_at.map(|t| t.to_string()),
        completed_at: c.completed_at.map(|t| t.to_string()),
        duration: hms(c.total_time()),
        transfers: c
            .transfers
            .iter()
            .map(|t| proto::TransferView { at: t.at.to_string(), from_agent: t.from_agent.clone(), to: t.to.clone() })
            .collect(),
        disposition: c.disposition.as_ref().map(|d| proto::DispositionView { code: d.code.clone(), category: d.category.clone() }),
        notes: d.notes.clone(),
        transcript: d.transcript.clone(),
        summary: d.summary.clone(),
        recording_url: d.recording_url.clone(),
        conversation_url: d.conversation_url.clone(),
        email_subject: d.email_subject.clone(),
        email_body: d.email_body.clone(),
        attributes: d.attributes.clone(),
        identification: identification(&c.identification),
        selected: c.selected.as_ref().map(record_ref),
        pinned: c.pinned.iter().map(record_ref).collect(),
        wrapped_up: c.wrapped_up,
        revision: c.revision,
        memorialization: Some(memorialization(item)),
    }
}

pub fn record(r: &Record) -> proto::RecordView {
    proto::RecordView {
        entity: r.entity.clone(),
        id: r.id.clone(),
        fields: r.fields.clone(),
        created_at: r.created_at.to_string(),
        updated_at: r.updated_at.to_string(),
    }
}

pub fn activity(a: &StoredActivity) -> proto::ActivityView {
    proto::ActivityView {
        id: a.id.clone(),
        key: a.key.clone(),
        kind: a.kind.clone(),
        regarding: a.regarding.iter().map(record_ref).collect(),
        fields: a.fields.clone(),
        created_at: a.created_at.to_string(),
        updated_at: a.updated_at.to_string(),
    }
}

pub fn outbox_item(i: &OutboxItem) -> proto::OutboxItemView {
    proto::OutboxItemView {
        id: i.id,
        key: i.key.clone(),
        kind: i.kind.clone(),
        conversation_id: i.conversation_id.clone(),
        state: i.state.as_str().into(),
        attempts: i.attempts,
        next_attempt_at: i.next_attempt_at.to_string(),
        last_error: i.last_error.clone(),
        crm_ref: i.crm_ref.clone(),
        created_at: i.created_at.to_string(),
        updated_at: i.updated_at.to_string(),
        delivered_at: i.delivered_at.map(|t| t.to_string()),
    }
}

pub fn outbox_stats(s: &OutboxStats) -> proto::OutboxStatsView {
    proto::OutboxStatsView { pending: s.pending, due: s.due, delivered: s.delivered, dead: s.dead, oldest_pending_secs: s.oldest_pending_secs }
}

pub fn bus_health(s: &cxbridge_connectors::bus::BusStatus) -> proto::BusHealth {
    proto::BusHealth {
        connected: s.connected,
        stream: s.stream.clone(),
        nodes: s
            .nodes
            .iter()
            .map(|n| proto::BusNodeView { node: n.node.clone(), agents: n.agents.len() as u64, last_heard_secs: n.last_heard_secs.round() as u64 })
            .collect(),
        published: s.published,
        received: s.received,
        publish_errors: s.publish_errors,
        rejected: s.rejected,
        last_error: s.last_error.clone(),
    }
}
