//! Presence over core NATS: which agents have a panel open on which node, announced on every
//! change and every third of the TTL, asked for with a hello, forgotten when not heard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Subscriber};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::{MAX_PEER_TTL, MIN_PEER_TTL};
use super::frames::Topology;
use super::shared::{Peer, Shared, lock};
use super::signing::MessageKind;

/// How long `close` (and the goodbye) may take.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The presence message on `{prefix}.presence`.
#[derive(Debug, Serialize, Deserialize)]
struct Presence {
    node: String,
    agents: Vec<String>,
    /// How long the receivers may believe this; 0 = the node is leaving.
    ttl_ms: u64,
    /// Random per connect: two live processes with one node id would steal each other's
    /// frames from the shared consumer, so a node that hears its own id from another instance
    /// says so loudly.
    #[serde(default)]
    instance: String,
}

/// The message on `{prefix}.presence.hello`: everyone answers with their presence at once.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    node: String,
    #[serde(default)]
    instance: String,
}

pub(super) struct PresenceTask {
    pub(super) client: Client,
    pub(super) shared: Arc<Shared>,
    pub(super) topology: Arc<Topology>,
    pub(super) ttl: Duration,
    /// How old a signed frame may be: the same bound keeps replayed presence out.
    pub(super) max_age: Duration,
    pub(super) local: watch::Receiver<Vec<String>>,
    pub(super) reconnected: watch::Receiver<u64>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl PresenceTask {
    pub(super) async fn run(mut self, mut presence: Subscriber, mut hello: Subscriber) {
        self.reconnected.borrow_and_update();
        self.say_hello().await;
        let mut heartbeat = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(30)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                changed = self.local.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.publish_presence().await;
                }
                Some(message) = presence.next() => {
                    if self.authentic(&message, MessageKind::Presence) {
                        self.heard(&message.payload);
                    }
                }
                Some(message) = hello.next() => {
                    if !self.authentic(&message, MessageKind::Hello) {
                        continue;
                    }
                    match serde_json::from_slice::<Hello>(&message.payload) {
                        Ok(h) if h.node != self.shared.node_id => self.publish_presence().await,
                        Ok(h) if h.instance != self.shared.instance => {
                            self.shared.fail(format!(
                                "another process uses node_id `{}`: node ids must be unique, or the nodes steal each other's frames",
                                h.node
                            ));
                            // Answered as any hello, so the twin finds out too.
                            self.publish_presence().await;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(node = %self.shared.node_id, "bus: unreadable presence hello: {e}"),
                    }
                }
                changed = self.reconnected.changed() => {
                    if changed.is_ok() {
                        self.say_hello().await;
                    }
                }
                _ = heartbeat.tick() => {
                    self.publish_presence().await;
                    self.forget_silent();
                }
            }
        }
        // Goodbye: the others drop our agents now instead of after the TTL.
        self.publish(&Presence { node: self.shared.node_id.clone(), agents: Vec::new(), ttl_ms: 0, instance: self.shared.instance.clone() }).await;
        if tokio::time::timeout(CLOSE_TIMEOUT, self.client.flush()).await.is_err() {
            tracing::warn!(node = %self.shared.node_id, "bus: the goodbye could not be flushed to NATS");
        }
    }

    /// Whether a presence or hello message was signed by a node of this cluster lately.
    /// Presence lives at most its TTL, so a replay older than that (plus skew) is refused.
    fn authentic(&self, message: &async_nats::Message, kind: MessageKind) -> bool {
        let window = if kind == MessageKind::Presence { self.ttl.min(self.max_age) } else { self.max_age };
        match self.shared.signer.verify(message.headers.as_ref(), kind, "", "", &message.payload, window) {
            Ok(()) => true,
            Err(why) => {
                self.shared.reject(kind, why);
                false
            }
        }
    }

    /// Publishes `body` on `subject`, signed as `kind`.
    async fn publish_signed(&self, subject: &str, kind: MessageKind, body: Vec<u8>) -> Result<(), async_nats::PublishError> {
        let mut headers = HeaderMap::new();
        self.shared.signer.sign(&mut headers, kind, "", "", &body);
        self.client.publish_with_headers(subject.to_string(), headers, body.into()).await
    }

    async fn say_hello(&self) {
        let hello = Hello { node: self.shared.node_id.clone(), instance: self.shared.instance.clone() };
        match serde_json::to_vec(&hello) {
            Ok(body) => {
                if let Err(e) = self.publish_signed(&self.topology.hello, MessageKind::Hello, body).await {
                    tracing::warn!(node = %self.shared.node_id, "bus: cannot send the presence hello: {e}");
                }
            }
            Err(e) => tracing::warn!("bus: cannot encode the presence hello: {e}"),
        }
        self.publish_presence().await;
    }

    async fn publish_presence(&self) {
        let agents = self.local.borrow().clone();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.publish(&Presence { node: self.shared.node_id.clone(), agents, ttl_ms, instance: self.shared.instance.clone() }).await;
    }

    async fn publish(&self, presence: &Presence) {
        match serde_json::to_vec(presence) {
            Ok(body) => {
                if let Err(e) = self.publish_signed(&self.topology.presence, MessageKind::Presence, body).await {
                    tracing::warn!(node = %self.shared.node_id, "bus: cannot publish presence: {e}");
                }
            }
            Err(e) => tracing::warn!("bus: cannot encode presence: {e}"),
        }
    }

    fn heard(&self, body: &[u8]) {
        let presence: Presence = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(node = %self.shared.node_id, "bus: unreadable presence message: {e}");
                return;
            }
        };
        if presence.node == self.shared.node_id {
            // A goodbye under our id is an earlier run of this node leaving, not a twin.
            if presence.instance != self.shared.instance && !presence.instance.is_empty() && presence.ttl_ms != 0 {
                self.shared.fail(format!(
                    "another process uses node_id `{}`: node ids must be unique, or the nodes steal each other's frames",
                    presence.node
                ));
            }
            return;
        }
        let mut peers = lock(&self.shared.peers);
        if presence.ttl_ms == 0 {
            peers.remove(&presence.node);
        } else {
            let ttl = Duration::from_millis(presence.ttl_ms).clamp(MIN_PEER_TTL, MAX_PEER_TTL);
            peers.insert(presence.node, Peer { agents: presence.agents.into_iter().collect(), heard: Instant::now(), ttl });
        }
    }

    /// Removes nodes not heard within their TTL (the readers already ignore them; this only
    /// keeps the map from growing with every node that ever lived).
    fn forget_silent(&self) {
        let now = Instant::now();
        lock(&self.shared.peers).retain(|node, peer| {
            let alive = peer.alive(now);
            if !alive {
                tracing::info!(node = %self.shared.node_id, peer = %node, "bus: node not heard within its TTL; its agents are gone");
            }
            alive
        });
    }
}
