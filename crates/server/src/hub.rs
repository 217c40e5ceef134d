//! The agent hub: which agent streams are connected, and fan-out of messages to them.
//! In-process for a single node; with several nodes the NATS bus carries each message to
//! the others ([`deliver_from_bus`]) and tells which agents are online where.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

/// A serialized agent message, shared by every stream of the agent.
pub type Frame = Arc<str>;

/// One open stream: its id and where its frames go.
type Stream = (u64, mpsc::UnboundedSender<Frame>);

#[derive(Default)]
pub struct AgentHub {
    streams: RwLock<HashMap<String, Vec<Stream>>>,
    next_id: std::sync::atomic::AtomicU64,
}

pub struct Subscription {
    pub id: u64,
    pub agent: String,
    pub frames: mpsc::UnboundedReceiver<Frame>,
}

impl AgentHub {
    pub fn subscribe(&self, agent: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut streams) = self.streams.write() {
            streams.entry(agent.to_string()).or_default().push((id, tx));
        }
        metrics::gauge!("cxbridge_agent_streams").increment(1.0);
        Subscription { id, agent: agent.to_string(), frames: rx }
    }

    pub fn unsubscribe(&self, agent: &str, id: u64) {
        if let Ok(mut streams) = self.streams.write()
            && let Some(list) = streams.get_mut(agent) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    streams.remove(agent);
                }
            }
        metrics::gauge!("cxbridge_agent_streams").decrement(1.0);
    }

    /// Sends `frame` to every stream of `agent`. Returns how many streams got it.
    pub fn publish(&self, agent: &str, frame: &Frame) -> usize {
        let Ok(streams) = self.streams.read() else { return 0 };
        streams.get(agent).map_or(0, |list| list.iter().filter(|(_, tx)| tx.send(frame.clone()).is_ok()).count())
    }

    /// Whether `agent` has a stream open (on this node).
    pub fn is_connected(&self, agent: &str) -> bool {
        self.streams.read().is_ok_and(|s| s.get(agent).is_some_and(|l| !l.is_empty()))
    }

    /// The agents with a stream open on this node.
    pub fn agents(&self) -> Vec<String> {
        self.streams.read().map_or_else(|_| vec![], |s| s.keys().cloned().collect())
    }

    pub fn connected_agents(&self) -> usize {
        self.streams.read().map_or(0, |s| s.len())
    }
}

/// Delivers the agent messages other nodes hand over the bus to this node's streams, until
/// `stop` flips.
pub async fn deliver_from_bus(
    app: std::sync::Arc<crate::service::App>,
    mut inbox: mpsc::Receiver<cxbridge_connectors::bus::Delivery>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            d = inbox.recv() => match d {
                Some(d) => {
                    app.hub.publish(&d.agent, &d.frame);
                }
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}
