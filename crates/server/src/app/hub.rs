//! The agent hub: which agent streams are connected, and fan-out of messages to them.
//! In-process for a single node; with several nodes the NATS bus carries each message to
//! the others ([`deliver_from_bus`]) and tells which agents are online where.
//!
//! Every stream has a bounded queue: a client that falls that far behind is told to go
//! (it reconnects and gets a fresh snapshot) rather than the hub buffering without limit.
//! The hub can also end an agent's streams: a sign-out ends those opened with a panel
//! session issued before it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, watch};

/// A serialized agent message, shared by every stream of the agent.
pub type Frame = Arc<str>;

/// Why the hub ended a stream; the stream tells its client in the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The agent signed out: the session the stream was opened with is void.
    SignedOut,
    /// The client did not read its messages; it may reconnect for a fresh snapshot.
    TooSlow,
}

impl StreamEnd {
    pub fn reason(self) -> &'static str {
        match self {
            StreamEnd::SignedOut => "signed out",
            StreamEnd::TooSlow => "too slow: reconnect for a fresh snapshot",
        }
    }
}

/// One open stream as the hub sees it.
struct Stream {
    id: u64,
    frames: mpsc::Sender<Frame>,
    /// When the panel session it was opened with was issued (Unix ms); `None` for a token.
    session_issued: Option<i64>,
    end: watch::Sender<Option<StreamEnd>>,
}

type Streams = RwLock<HashMap<String, Vec<Stream>>>;

#[derive(Default)]
pub struct AgentHub {
    streams: Arc<Streams>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A stream's place in the hub; dropping it leaves the hub.
pub struct Subscription {
    pub id: u64,
    pub agent: String,
    pub frames: mpsc::Receiver<Frame>,
    /// Flips to `Some` when the hub ends the stream.
    pub end: watch::Receiver<Option<StreamEnd>>,
    streams: Arc<Streams>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.streams.write()
            && let Some(list) = streams.get_mut(&self.agent)
        {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                streams.remove(&self.agent);
            }
        }
        metrics::gauge!("cxbridge_agent_streams").decrement(1.0);
    }
}

/// The agent already has `limit` streams open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("agent `{agent}` already has {limit} streams open, the most allowed ([panel] streams_per_agent); close one")]
pub struct TooManyStreams {
    pub agent: String,
    pub limit: usize,
}

impl AgentHub {
    /// A new stream of `agent`, unless it has `limit` open already. `queue` messages may
    /// wait for it; `session_issued` is the panel session's issue time (Unix ms) if it was
    /// opened with one.
    pub fn subscribe(&self, agent: &str, session_issued: Option<i64>, limit: usize, queue: usize) -> Result<Subscription, TooManyStreams> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (end_tx, end_rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut streams = self.streams.write().map_err(|_| TooManyStreams { agent: agent.to_string(), limit })?;
        let list = streams.entry(agent.to_string()).or_default();
        if list.len() >= limit {
            if list.is_empty() {
                streams.remove(agent);
            }
            return Err(TooManyStreams { agent: agent.to_string(), limit });
        }
        list.push(Stream { id, frames: tx, session_issued, end: end_tx });
        drop(streams);
        metrics::gauge!("cxbridge_agent_streams").increment(1.0);
        Ok(Subscription { id, agent: agent.to_string(), frames: rx, end: end_rx, streams: self.streams.clone() })
    }

    /// Sends `frame` to every stream of `agent`. Returns how many streams got it. A stream
    /// whose queue is full is ended.
    pub fn publish(&self, agent: &str, frame: &Frame) -> usize {
        let Ok(streams) = self.streams.read() else { return 0 };
        let Some(list) = streams.get(agent) else { return 0 };
        let mut sent = 0;
        for s in list {
            match s.frames.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.end.send_replace(Some(StreamEnd::TooSlow));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        sent
    }

    /// Ends `agent`'s streams opened with a panel session issued before `before_ms` (a
    /// sign-out). Streams opened with a token stay: the token is still valid. Returns how
    /// many were ended.
    pub fn end_sessions(&self, agent: &str, before_ms: i64) -> usize {
        let Ok(streams) = self.streams.read() else { return 0 };
        let Some(list) = streams.get(agent) else { return 0 };
        let mut ended = 0;
        for s in list.iter().filter(|s| s.session_issued.is_some_and(|i| i < before_ms)) {
            s.end.send_replace(Some(StreamEnd::SignedOut));
            ended += 1;
        }
        ended
    }

    /// How many streams `agent` has open on this node.
    pub fn streams_of(&self, agent: &str) -> usize {
        self.streams.read().map_or(0, |s| s.get(agent).map_or(0, Vec::len))
    }

    /// Whether `agent` has a stream open (on this node).
    pub fn is_connected(&self, agent: &str) -> bool {
        self.streams_of(agent) > 0
    }

    /// The agents with a stream open on this node.
    pub fn agents(&self) -> Vec<String> {
        self.streams.read().map_or_else(|_| vec![], |s| s.keys().cloned().collect())
    }

    pub fn connected_agents(&self) -> usize {
        self.streams.read().map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_has_at_most_the_limit_of_streams_and_a_closed_one_frees_its_place() {
        let hub = AgentHub::default();
        let open: Vec<Subscription> = (0..3).map(|_| hub.subscribe("alice", None, 3, 4).expect("room")).collect();
        assert_eq!(hub.subscribe("alice", None, 3, 4).err(), Some(TooManyStreams { agent: "alice".into(), limit: 3 }));
        assert!(hub.subscribe("bob", None, 3, 4).is_ok(), "other agents have their own limit");
        drop(open);
        assert_eq!(hub.streams_of("alice"), 0);
        assert!(!hub.agents().contains(&"alice".to_string()));
    }

    #[test]
    fn a_stream_that_does_not_read_is_ended_instead_of_queueing_without_limit() {
        let hub = AgentHub::default();
        let mut slow = hub.subscribe("alice", None, 8, 2).expect("slow");
        let mut fast = hub.subscribe("alice", None, 8, 100).expect("fast");
        let frame: Frame = Arc::from("{}");
        for _ in 0..10 {
            hub.publish("alice", &frame);
            assert!(fast.frames.try_recv().is_ok());
        }
        assert_eq!(*slow.end.borrow_and_update(), Some(StreamEnd::TooSlow));
        assert_eq!(*fast.end.borrow(), None);
        let mut queued = 0;
        while slow.frames.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 2, "the slow stream held no more than its queue");
    }

    #[test]
    fn a_sign_out_ends_the_streams_of_earlier_sessions_only() {
        let hub = AgentHub::default();
        let old = hub.subscribe("alice", Some(1_000), 8, 4).expect("old session");
        let token = hub.subscribe("alice", None, 8, 4).expect("token");
        let newer = hub.subscribe("alice", Some(3_000), 8, 4).expect("newer session");
        let bob = hub.subscribe("bob", Some(1_000), 8, 4).expect("bob");
        assert_eq!(hub.end_sessions("alice", 2_000), 1);
        assert_eq!((*old.end.borrow(), *token.end.borrow(), *newer.end.borrow(), *bob.end.borrow()), (Some(StreamEnd::SignedOut), None, None, None));
    }
}
