//! The bus between cxbridge nodes behind one load balancer.
//!
//! An agent's panel holds its WebSocket to one node, but a call's events may be posted to any
//! node. The node that records an event delivers the agent frames to its own streams and hands
//! them to the bus; every other node receives them here and delivers them to its streams.
//!
//! - **Frames** travel through one JetStream stream (subject `{prefix}.agent`, headers
//!   `Cxbridge-Agent` and `Cxbridge-Origin`, body = the serialized frame). Each node reads it
//!   with its own durable pull consumer named after its node id, created afresh (deliver *new*)
//!   at every connect so a restarted node never replays stale pops. JetStream rather than core
//!   NATS because a node that loses its connection for a few seconds gets the frames it missed
//!   once it is back, in order.
//! - **Presence** travels over core NATS (`{prefix}.presence`, JSON `{node, agents, ttl_ms}`):
//!   each node tells the others which agents have a panel open on it, on every change and every
//!   third of its TTL. A new node asks everyone with `{prefix}.presence.hello`. Presence is
//!   soft state: a node that is not heard for its TTL has no agents, so a SIGKILLed node is
//!   forgotten without anyone cleaning up.
//!
//! - **Authenticity**: every frame, presence message and hello carries `Cxbridge-Sent` (unix
//!   ms) and `Cxbridge-Mac`, an HMAC-SHA256 under the secret all nodes share over the kind,
//!   origin, agent, time and body. Anything without a valid MAC, or older than the stream
//!   keeps frames (presence: its TTL), is dropped and counted in [`BusStatus::rejected`]:
//!   a client that can reach NATS but does not know the secret cannot inject pops or
//!   presence, nor replay old ones later. (Reading needs NATS credentials and TLS, see
//!   docs/deploy.md; the MAC does not hide the frames.)
//!
//! Publishing never waits for JetStream: frames go into a queue that one background task
//! publishes in order, and the acknowledgements are awaited behind it (errors are counted,
//! logged and shown in [`NatsBus::status`]). When NATS is down for long enough that the queue
//! fills, [`NatsBus::publish`] refuses frames instead of stalling the caller's event path.

mod config;
mod frames;
mod presence;
mod shared;
mod signing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{Client, ConnectErrorKind, Event};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use crate::client::oauth::Secret;

pub use config::{BusError, DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, MIN_SECRET_CHARS, NatsAuth, NatsBusConfig, NatsTls};
pub use frames::Delivery;
pub use signing::{HEADER_AGENT, HEADER_MAC, HEADER_ORIGIN, HEADER_SENT, MessageKind, sign_message};

use frames::{Outgoing, Topology, consumer_task, publisher_task};
use presence::{CLOSE_TIMEOUT, PresenceTask};
use shared::{Shared, lock};
use signing::Signer;

/// Frames accepted by `publish` and not yet handed to NATS.
const PUBLISH_QUEUE: usize = 16_384;
/// Frames received from other nodes and not yet taken by the receiver.
const DELIVERY_QUEUE: usize = 4_096;

/// The TCP + NATS handshake must finish within this: an unreachable bus fails `connect` quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// JetStream API requests and publish acks.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings the server: a dead TCP connection is noticed within two pings.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// What `/healthz` and operators see of the bus.
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    pub connected: bool,
    pub node_id: String,
    pub stream: String,
    /// The other nodes heard within their TTL, by node id.
    pub nodes: Vec<NodeStatus>,
    /// Frames JetStream has acknowledged.
    pub published: u64,
    /// Frames from other nodes handed to the receiver.
    pub received: u64,
    /// Frames that did not reach JetStream (refused, queue full, no ack).
    pub publish_errors: u64,
    /// Messages dropped because their MAC was missing or wrong, or they were too old: someone
    /// without the secret (or a node with another one) publishes on the bus's subjects.
    pub rejected: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub agents: Vec<String>,
    pub last_heard_secs: f64,
}

/// One node's end of the bus. Share it behind an `Arc`; dropping it (or [`NatsBus::close`])
/// tells the other nodes that this node's agents are gone.
pub struct NatsBus {
    shared: Arc<Shared>,
    client: Client,
    queue: RwLock<Option<mpsc::Sender<Outgoing>>>,
    closed: AtomicBool,
    local: watch::Sender<Vec<String>>,
    shutdown: watch::Sender<bool>,
    publisher: Mutex<Option<JoinHandle<()>>>,
    presence: Mutex<Option<JoinHandle<()>>>,
    consumer: Mutex<Option<JoinHandle<()>>>,
}

impl NatsBus {
    /// Connects, creates or updates the stream (file storage, limits retention, `max_age`,
    /// discard old, a size cap), creates this node's durable pull consumer and starts the
    /// background tasks. Frames from other nodes arrive on the returned receiver.
    pub async fn connect(cfg: NatsBusConfig) -> Result<(NatsBus, mpsc::Receiver<Delivery>), BusError> {
        let urls = cfg.validate()?;
        let prefix = &cfg.subject_prefix;
        let topology = Arc::new(Topology {
            url: cfg.url.clone(),
            stream: cfg.stream.clone(),
            consumer: cfg.node_id.clone(),
            frames: format!("{prefix}.agent"),
            presence: format!("{prefix}.presence"),
            hello: format!("{prefix}.presence.hello"),
            max_age: cfg.max_age,
        });
        let shared = Arc::new(Shared {
            node_id: cfg.node_id.clone(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            stream: cfg.stream.clone(),
            peers: Mutex::new(HashMap::new()),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_error: Mutex::new(None),
            signer: Signer::new(&cfg.secret),
        });

        // Every (re)connect bumps this; the presence task then says hello again, because the
        // other nodes may have expired us (and we them) while the connection was down.
        let (reconnected_tx, reconnected_rx) = watch::channel(0u64);
        let events = {
            let shared = shared.clone();
            move |event: Event| {
                let shared = shared.clone();
                let reconnected = reconnected_tx.clone();
                async move {
                    match event {
                        Event::Connected => {
                            reconnected.send_modify(|n| *n += 1);
                        }
                        Event::Disconnected => tracing::warn!(node = %shared.node_id, "bus: disconnected from NATS; reconnecting"),
                        Event::ServerError(e) => shared.fail(format!("NATS server error: {e}")),
                        Event::ClientError(e) => shared.fail(format!("NATS client error: {e}")),
                        Event::SlowConsumer(_) => shared.fail("a bus subscription cannot keep up (slow consumer)".into()),
                        Event::LameDuckMode | Event::Draining | Event::Closed => {}
                    }
                }
            }
        };
        let mut options = match &cfg.auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => async_nats::ConnectOptions::with_user_and_password(user.clone(), password.expose().to_string()),
            NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.expose().to_string()),
        };
        if cfg.tls.required {
            options = options.require_tls(true);
        }
        if let Some(ca) = &cfg.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &cfg.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .name(format!("cxbridge-{}", cfg.node_id))
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            // Never give up reconnecting: the bus is infrastructure the node cannot work around.
            .max_reconnects(None)
            .event_callback(events)
            .connect(urls)
            .await
            .map_err(|e| BusError::Unreachable {
                url: cfg.url.clone(),
                detail: match e.kind() {
                    ConnectErrorKind::TimedOut => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    _ => e.to_string(),
                },
            })?;
        let js = jetstream::ContextBuilder::new().timeout(JETSTREAM_TIMEOUT).build(client.clone());

        topology.ensure_stream(&js).await?;
        let consumer = topology.fresh_consumer(&js).await?;

        // Subscribed before the hello goes out, so no answer is missed.
        let subscribe = |subject: String| {
            let client = client.clone();
            async move { client.subscribe(subject.clone()).await.map_err(|e| BusError::Subscribe { subject, detail: e.to_string() }) }
        };
        let presence_sub = subscribe(topology.presence.clone()).await?;
        let hello_sub = subscribe(topology.hello.clone()).await?;

        let (queue_tx, queue_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (deliveries_tx, deliveries_rx) = mpsc::channel(DELIVERY_QUEUE);
        let (local_tx, local_rx) = watch::channel(Vec::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let publisher = tokio::spawn(publisher_task(js.clone(), shared.clone(), topology.frames.clone(), cfg.node_id.clone(), queue_rx));
        let consumer_task = tokio::spawn(consumer_task(js, shared.clone(), topology.clone(), consumer, deliveries_tx));
        let presence = tokio::spawn(
            PresenceTask {
                client: client.clone(),
                shared: shared.clone(),
                topology,
                ttl: cfg.presence_ttl,
                max_age: cfg.max_age,
                local: local_rx,
                reconnected: reconnected_rx,
                shutdown: shutdown_rx,
            }
            .run(presence_sub, hello_sub),
        );

        let bus = NatsBus {
            shared,
            client,
            queue: RwLock::new(Some(queue_tx)),
            closed: AtomicBool::new(false),
            local: local_tx,
            shutdown: shutdown_tx,
            publisher: Mutex::new(Some(publisher)),
            presence: Mutex::new(Some(presence)),
            consumer: Mutex::new(Some(consumer_task)),
        };
        Ok((bus, deliveries_rx))
    }

    /// Hands `frame` for `agent` to the other nodes. Frames published by one node reach the
    /// others in publish order. Returns once the frame is queued; JetStream's acknowledgement
    /// is awaited in the background.
    pub async fn publish(&self, agent: &str, frame: &str) -> Result<(), BusError> {
        if agent.is_empty() || agent.len() > 1024 || agent.chars().any(char::is_control) {
            // A CR/LF would break the NATS header block.
            return Err(BusError::InvalidAgent(agent.to_string()));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = queue.as_ref() else { return Err(BusError::Closed) };
        match queue.try_send(Outgoing { agent: agent.to_string(), frame: frame.to_string() }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let error = BusError::Backlog(PUBLISH_QUEUE);
                self.shared.publish_failed(error.to_string());
                Err(error)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BusError::Closed),
        }
    }

    /// This node's connected agents, the full set (call it on every connect/disconnect).
    pub fn announce(&self, mut agents: Vec<String>) {
        agents.sort_unstable();
        agents.dedup();
        self.local.send_if_modified(|current| {
            if *current == agents {
                false
            } else {
                *current = agents;
                true
            }
        });
    }

    /// Whether `agent` has a panel open on another live node.
    pub fn present_elsewhere(&self, agent: &str) -> bool {
        let now = Instant::now();
        lock(&self.shared.peers).values().any(|peer| peer.alive(now) && peer.agents.contains(agent))
    }

    pub fn status(&self) -> BusStatus {
        let now = Instant::now();
        let mut nodes: Vec<NodeStatus> = lock(&self.shared.peers)
            .iter()
            .filter(|(_, peer)| peer.alive(now))
            .map(|(node, peer)| {
                let mut agents: Vec<String> = peer.agents.iter().cloned().collect();
                agents.sort_unstable();
                NodeStatus { node: node.clone(), agents, last_heard_secs: now.saturating_duration_since(peer.heard).as_secs_f64() }
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        BusStatus {
            connected: self.client.connection_state() == async_nats::connection::State::Connected,
            node_id: self.shared.node_id.clone(),
            stream: self.shared.stream.clone(),
            nodes,
            published: self.shared.published.load(Ordering::Relaxed),
            received: self.shared.received.load(Ordering::Relaxed),
            publish_errors: self.shared.publish_errors.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            last_error: lock(&self.shared.last_error).clone(),
        }
    }

    /// Leaves the bus cleanly: frames already queued are published, the other nodes hear that
    /// this node's agents are gone, and the receiver ends. Dropping the bus does the same
    /// without waiting.
    pub async fn close(&self) {
        let (publisher, presence) = self.stop();
        for task in [publisher, presence].into_iter().flatten() {
            if tokio::time::timeout(CLOSE_TIMEOUT, task).await.is_err() {
                tracing::warn!(node = %self.shared.node_id, "bus: close did not finish within {} s", CLOSE_TIMEOUT.as_secs());
            }
        }
    }

    /// Signals every task to end; returns those worth waiting for.
    fn stop(&self) -> (Option<JoinHandle<()>>, Option<JoinHandle<()>>) {
        self.closed.store(true, Ordering::Release);
        // The publisher drains what is queued, awaits the acks, and ends when the queue closes.
        self.queue.write().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(consumer) = lock(&self.consumer).take() {
            consumer.abort();
        }
        self.shutdown.send_replace(true);
        (lock(&self.publisher).take(), lock(&self.presence).take())
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        // The tasks finish on their own (goodbye included) while the runtime lives.
        let _ = self.stop();
    }
}
