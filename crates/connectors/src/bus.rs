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

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::{self, ConsumerErrorKind};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, ConnectErrorKind, Event, HeaderMap, Subscriber};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use crate::client::oauth::Secret;

/// The JetStream stream's default name.
pub const DEFAULT_STREAM: &str = "CXBRIDGE_AGENTS";
/// The default first token(s) of every subject the bus uses.
pub const DEFAULT_SUBJECT_PREFIX: &str = "cxbridge";

/// Header naming the agent a frame is for.
pub const HEADER_AGENT: &str = "Cxbridge-Agent";
/// Header naming the node that published a frame (its own consumer skips it).
pub const HEADER_ORIGIN: &str = "Cxbridge-Origin";
/// Header with the publisher's clock (unix milliseconds) when it signed the message.
pub const HEADER_SENT: &str = "Cxbridge-Sent";
/// Header with the message's HMAC-SHA256 (lowercase hex) under the shared secret.
pub const HEADER_MAC: &str = "Cxbridge-Mac";
/// The shortest shared secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;
/// How far another node's clock may be ahead of ours before its messages count as forged.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The stream's size cap: frames are small and short-lived, so this only matters when
/// something floods the bus; the oldest frames go first.
const STREAM_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// A durable consumer nobody has pulled from for this long is removed by the server, so a
/// node that is gone for good leaves nothing behind (nats-server ≥ 2.9 honours it for durables).
const CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(3600);
/// How long JetStream waits for our ack before it redelivers.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Frames the server may have out to one node unacknowledged.
const MAX_ACK_PENDING: i64 = 10_000;
/// A frame nobody could take after this many attempts is not worth more (they are live views).
const MAX_DELIVER: i64 = 10;
/// Pull requests: how many frames each asks for, how long it stays open, and how often the
/// server proves it is alive while there is nothing to send.
const PULL_BATCH: usize = 256;
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// Frames accepted by `publish` and not yet handed to NATS.
const PUBLISH_QUEUE: usize = 16_384;
/// Frames handed to NATS whose PublishAck has not come back yet (below async-nats' own 5,000).
const MAX_IN_FLIGHT: usize = 4_096;
/// Frames received from other nodes and not yet taken by the receiver.
const DELIVERY_QUEUE: usize = 4_096;

/// The TCP + NATS handshake must finish within this: an unreachable bus fails `connect` quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// JetStream API requests and publish acks.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings the server: a dead TCP connection is noticed within two pings.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long `close` (and the goodbye) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Limits on the TTL other nodes announce, so a broken peer cannot stay forever or flap.
const MIN_PEER_TTL: Duration = Duration::from_millis(100);
const MAX_PEER_TTL: Duration = Duration::from_secs(3600);

/// Where and as whom a node joins the bus.
#[derive(Debug, Clone)]
pub struct NatsBusConfig {
    /// `nats://host:port`; several servers of one cluster separated by commas.
    pub url: String,
    /// Unique per node: letters, digits, `_` and `-`. Names this node's consumer.
    pub node_id: String,
    /// JetStream stream name (default [`DEFAULT_STREAM`]).
    pub stream: String,
    /// First token(s) of the subjects (default [`DEFAULT_SUBJECT_PREFIX`]).
    pub subject_prefix: String,
    /// How long frames stay in the stream (default 5 min): what a node that lost its
    /// connection can still catch up on.
    pub max_age: Duration,
    /// A node not heard for this long has no agents (default 15 s).
    pub presence_ttl: Duration,
    /// The secret every node of the cluster shares: messages are signed with it and
    /// anything not signed with it is dropped. At least [`MIN_SECRET_CHARS`] characters.
    pub secret: Secret,
    /// How this node proves itself to the NATS server.
    pub auth: NatsAuth,
    /// TLS to the NATS server.
    pub tls: NatsTls,
}

/// Credentials for the NATS server (its `authorization` block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// The server lets anyone in: only on a network nobody else reaches.
    #[default]
    None,
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// TLS settings for the connection to NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Refuse to talk to a server that does not offer TLS (also implied by `tls://` URLs).
    pub required: bool,
    /// PEM file of the CA that signed the server's certificate (else the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate and key this node presents when the server verifies clients.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsBusConfig {
    /// The defaults for everything but the server and the node id.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: node_id.into(),
            stream: DEFAULT_STREAM.to_string(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_string(),
            max_age: Duration::from_secs(300),
            presence_ttl: Duration::from_secs(15),
            secret: Secret::default(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
        }
    }

    fn validate(&self) -> Result<Vec<String>, BusError> {
        let urls: Vec<String> = self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
        if urls.is_empty() {
            return Err(BusError::Config("url is empty: give nats://host:port".into()));
        }
        check_name("node_id", &self.node_id)?;
        check_name("stream", &self.stream)?;
        if self.subject_prefix.split('.').any(|token| !is_name(token)) {
            return Err(BusError::Config(format!(
                "subject_prefix `{}` must be dot-separated tokens of letters, digits, `_` and `-`",
                self.subject_prefix
            )));
        }
        if self.max_age < Duration::from_secs(1) {
            return Err(BusError::Config("max_age must be at least 1 s".into()));
        }
        if self.presence_ttl < MIN_PEER_TTL {
            return Err(BusError::Config(format!("presence_ttl must be at least {} ms", MIN_PEER_TTL.as_millis())));
        }
        if self.secret.expose().trim().chars().count() < MIN_SECRET_CHARS {
            return Err(BusError::Config(format!(
                "secret must be at least {MIN_SECRET_CHARS} characters, the same on every node ([bus] secret or CXBRIDGE_BUS_SECRET)"
            )));
        }
        Ok(urls)
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_name(field: &str, value: &str) -> Result<(), BusError> {
    if is_name(value) {
        Ok(())
    } else {
        Err(BusError::Config(format!("{field} `{value}` must be 1 to 64 letters, digits, `_` or `-`")))
    }
}

/// Why the bus could not start or take a frame.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("cannot reach NATS at {url}: {detail}. Is nats-server running (with -js) and reachable from this node?")]
    Unreachable { url: String, detail: String },
    #[error("JetStream is not enabled on the NATS server at {url}: start nats-server with -js (or a `jetstream {{}}` block in its config)")]
    JetStreamDisabled { url: String },
    #[error(
        "cannot create or update the JetStream stream `{stream}` on {url}: {detail}. If another stream already takes subject `{subject}`, choose another subject_prefix"
    )]
    Stream { stream: String, subject: String, url: String, detail: String },
    #[error("cannot create consumer `{consumer}` on JetStream stream `{stream}`: {detail}")]
    Consumer { stream: String, consumer: String, detail: String },
    #[error("cannot subscribe to `{subject}` on NATS: {detail}")]
    Subscribe { subject: String, detail: String },
    #[error("agent id {0:?} cannot be sent over the bus: it must be non-empty, at most 1024 bytes, without control characters")]
    InvalidAgent(String),
    #[error("the bus's publish queue is full ({0} frames waiting for NATS): the frame was dropped; is NATS reachable?")]
    Backlog(usize),
    #[error("the bus is closed")]
    Closed,
}

/// A frame another node recorded for an agent, to deliver to this node's streams of that agent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub agent: String,
    pub frame: Arc<str>,
}

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

struct Peer {
    agents: HashSet<String>,
    heard: Instant,
    ttl: Duration,
}

impl Peer {
    fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.heard) < self.ttl
    }
}

/// State the background tasks and the handle share.
struct Shared {
    node_id: String,
    instance: String,
    stream: String,
    peers: Mutex<HashMap<String, Peer>>,
    published: AtomicU64,
    received: AtomicU64,
    publish_errors: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
    signer: Signer,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these maps leaves consistent data (single
    // inserts/removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn fail(&self, message: String) {
        tracing::warn!(node = %self.node_id, "bus: {message}");
        *lock(&self.last_error) = Some(message);
    }

    fn publish_failed(&self, message: String) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
        self.fail(message);
    }

    /// Counts and reports a message that failed [`Signer::verify`].
    fn reject(&self, kind: MessageKind, why: Rejected) {
        let count = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let message = format!("dropped a {} message: {why}", kind.as_str());
        // Whoever floods the bus with forgeries must not flood the log too: the 1st, 2nd,
        // 4th, 8th… are logged; the status always shows the latest and the count.
        if count.is_power_of_two() {
            tracing::warn!(node = %self.node_id, rejected = count, "bus: {message}");
        }
        *lock(&self.last_error) = Some(message);
    }
}

/// What a signed message is, so a MAC for one kind cannot pass for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Frame,
    Presence,
    Hello,
}

impl MessageKind {
    fn as_str(self) -> &'static str {
        match self {
            MessageKind::Frame => "frame",
            MessageKind::Presence => "presence",
            MessageKind::Hello => "hello",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Rejected {
    #[error("it has no {HEADER_MAC} or {HEADER_SENT} header (published by something that is not a cxbridge node of this cluster?)")]
    Unsigned,
    #[error("its MAC does not match: it was changed, or signed with another [bus] secret")]
    BadMac,
    #[error("it is too old or from the future (replayed, or the nodes' clocks differ by more than {} s)", CLOCK_SKEW.as_secs())]
    Stale,
}

/// HMAC-SHA256 signatures under the cluster's shared secret.
struct Signer {
    key: Vec<u8>,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Signer {
    fn new(secret: &Secret) -> Self {
        Self { key: secret.expose().as_bytes().to_vec() }
    }

    fn mac(&self, kind: MessageKind, origin: &str, agent: &str, sent_ms: u64, body: &[u8]) -> HmacSha256 {
        use hmac::{KeyInit, Mac as _};
        // HMAC accepts keys of any length, so this never falls back.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        // Origin and agent never hold control characters, so NUL separates the fields
        // unambiguously; the body comes last and is taken whole.
        for part in ["cxbridge-bus-1", kind.as_str(), origin, agent, &sent_ms.to_string()] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.update(body);
        mac
    }

    /// The `Cxbridge-Sent` and `Cxbridge-Mac` headers for a message.
    fn sign(&self, headers: &mut HeaderMap, kind: MessageKind, origin: &str, agent: &str, body: &[u8]) {
        use hmac::Mac as _;
        let sent_ms = now_ms();
        let tag = self.mac(kind, origin, agent, sent_ms, body).finalize().into_bytes();
        headers.insert(HEADER_SENT, sent_ms.to_string().as_str());
        headers.insert(HEADER_MAC, hex(&tag).as_str());
    }

    /// Checks a message's MAC and that it was signed within `max_age` (plus clock skew).
    fn verify(&self, headers: Option<&HeaderMap>, kind: MessageKind, origin: &str, agent: &str, body: &[u8], max_age: Duration) -> Result<(), Rejected> {
        use hmac::Mac as _;
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
        let (Some(sent), Some(tag)) = (header(HEADER_SENT), header(HEADER_MAC)) else { return Err(Rejected::Unsigned) };
        let sent_ms: u64 = sent.parse().map_err(|_| Rejected::Unsigned)?;
        let tag = unhex(&tag).ok_or(Rejected::BadMac)?;
        self.mac(kind, origin, agent, sent_ms, body).verify_slice(&tag).map_err(|_| Rejected::BadMac)?;
        let now = now_ms();
        let skew = u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        let oldest = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX).saturating_add(skew));
        if sent_ms < oldest || sent_ms > now.saturating_add(skew) {
            return Err(Rejected::Stale);
        }
        Ok(())
    }
}

/// The `Cxbridge-Sent` and `Cxbridge-Mac` headers a node adds to a message, for tools and
/// other implementations that speak the bus. Frames are signed with their origin and agent;
/// presence and hello messages with both empty.
pub fn sign_message(secret: &Secret, kind: MessageKind, origin: &str, agent: &str, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    Signer::new(secret).sign(&mut headers, kind, origin, agent, body);
    headers
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

/// Names derived from the configuration.
struct Topology {
    url: String,
    stream: String,
    consumer: String,
    frames: String,
    presence: String,
    hello: String,
    max_age: Duration,
}

impl Topology {
    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            description: Some("cxbridge: agent frames between nodes".into()),
            subjects: vec![self.frames.clone()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: self.max_age,
            max_bytes: STREAM_MAX_BYTES,
            // No message ids are sent, so the window only has to be legal (≤ max_age).
            duplicate_window: self.max_age.min(Duration::from_secs(120)),
            ..Default::default()
        }
    }

    fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            description: Some(format!("cxbridge node {}: frames of the other nodes", self.consumer)),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: MAX_DELIVER,
            max_ack_pending: MAX_ACK_PENDING,
            inactive_threshold: CONSUMER_INACTIVE_THRESHOLD,
            ..Default::default()
        }
    }

    /// Creates the stream, or brings an existing one to our limits.
    async fn ensure_stream(&self, js: &Context) -> Result<(), BusError> {
        let config = self.stream_config();
        let mut result = js.create_or_update_stream(config.clone()).await;
        // Two nodes starting together both find no stream and both create it; the loser
        // (if its limits differ) updates instead.
        if let Err(e) = &result
            && let CreateStreamErrorKind::JetStream(inner) = e.kind()
            && inner.error_code() == ErrorCode::STREAM_NAME_EXIST
        {
            result = js.update_stream(&config).await;
        }
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == CreateStreamErrorKind::JetStreamUnavailable => Err(BusError::JetStreamDisabled { url: self.url.clone() }),
            Err(e) => Err(BusError::Stream { stream: self.stream.clone(), subject: self.frames.clone(), url: self.url.clone(), detail: e.to_string() }),
        }
    }

    /// A new consumer that starts at the next frame: an existing one (an earlier run of this
    /// node) is deleted first, or it would hand us every pop published while we were down.
    async fn fresh_consumer(&self, js: &Context) -> Result<PullConsumer, BusError> {
        let stream = js.get_stream_no_info(&self.stream).await.map_err(|e| self.consumer_error(e))?;
        match stream.delete_consumer(&self.consumer).await {
            Ok(_) => tracing::info!(consumer = %self.consumer, "bus: removed the consumer of an earlier run; stale frames are skipped"),
            Err(e) if is_consumer_not_found(&e) => {}
            Err(e) => return Err(self.consumer_error(e)),
        }
        stream.create_consumer(self.consumer_config()).await.map_err(|e| self.consumer_error(e))
    }

    /// The consumer after an outage: kept when it still exists (the frames published during
    /// a short outage are still wanted), recreated (with the stream) when it is gone.
    async fn reattach(&self, js: &Context) -> Result<PullConsumer, BusError> {
        self.ensure_stream(js).await?;
        let stream = js.get_stream_no_info(&self.stream).await.map_err(|e| self.consumer_error(e))?;
        stream.get_or_create_consumer(&self.consumer, self.consumer_config()).await.map_err(|e| self.consumer_error(e))
    }

    /// Whether the server says our stream or consumer does not exist (not: cannot be asked).
    async fn consumer_gone(&self, js: &Context) -> bool {
        let stream = match js.get_stream(&self.stream).await {
            Ok(s) => s,
            Err(e) => return matches!(e.kind(), GetStreamErrorKind::JetStream(inner) if inner.error_code() == ErrorCode::STREAM_NOT_FOUND),
        };
        match stream.consumer_info(&self.consumer).await {
            Ok(_) => false,
            Err(e) => matches!(e.kind(), ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound)
                || matches!(e.kind(), ConsumerInfoErrorKind::JetStream(inner) if inner.error_code() == ErrorCode::CONSUMER_NOT_FOUND || inner.error_code() == ErrorCode::STREAM_NOT_FOUND),
        }
    }

    fn consumer_error(&self, e: impl std::fmt::Display) -> BusError {
        BusError::Consumer { stream: self.stream.clone(), consumer: self.consumer.clone(), detail: e.to_string() }
    }
}

fn is_consumer_not_found(e: &stream::ConsumerError) -> bool {
    matches!(e.kind(), ConsumerErrorKind::JetStream(inner) if inner.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

struct Outgoing {
    agent: String,
    frame: String,
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

/// Publishes queued frames in order; awaits their acks behind them.
async fn publisher_task(js: Context, shared: Arc<Shared>, subject: String, origin: String, mut queue: mpsc::Receiver<Outgoing>) {
    let mut acks = FuturesUnordered::new();
    let record = |result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>| match result {
        Ok(_) => {
            shared.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => shared.publish_failed(format!("JetStream did not acknowledge a frame: {e}")),
    };
    loop {
        tokio::select! {
            biased;
            Some(result) = acks.next(), if !acks.is_empty() => record(result),
            next = queue.recv(), if acks.len() < MAX_IN_FLIGHT => {
                let Some(out) = next else { break };
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_AGENT, out.agent.as_str());
                headers.insert(HEADER_ORIGIN, origin.as_str());
                shared.signer.sign(&mut headers, MessageKind::Frame, &origin, &out.agent, out.frame.as_bytes());
                // Sent one after another from this task: the server stores them in this order.
                match js.publish_with_headers(subject.clone(), headers, out.frame.into()).await {
                    Ok(ack) => acks.push(ack.into_future()),
                    Err(e) => record(Err(e)),
                }
            }
        }
    }
    while let Some(result) = acks.next().await {
        record(result);
    }
}

/// Reads this node's consumer for as long as the bus lives, across reconnects and outages.
async fn consumer_task(js: Context, shared: Arc<Shared>, topology: Arc<Topology>, first: PullConsumer, deliveries: mpsc::Sender<Delivery>) {
    let mut consumer = Some(first);
    // The highest stream sequence handled: a redelivery at or below it was handled already
    // (its ack got lost), and delivering it again would show an old frame after a newer one.
    let mut last_seq = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let current = match consumer.take() {
            Some(c) => c,
            None => match topology.reattach(&js).await {
                Ok(c) => c,
                Err(e) => {
                    shared.fail(format!("cannot resume reading frames: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let messages = current.stream().max_messages_per_batch(PULL_BATCH).expires(PULL_EXPIRES).heartbeat(PULL_HEARTBEAT).messages().await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                shared.fail(format!("cannot pull frames: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        while let Some(item) = messages.next().await {
            match item {
                Ok(message) => {
                    backoff = Duration::from_millis(100);
                    if !handle(&message, &shared, topology.max_age, &mut last_seq, &deliveries).await {
                        return; // the receiver is gone: nobody to deliver to
                    }
                }
                // The pull stream re-pulls by itself when the connection comes back. But a
                // stream or consumer deleted while a pull was pending can also end in nothing
                // but missing heartbeats (the server's "consumer deleted" notice is not always
                // sent): ask, and recreate them when they are gone.
                Err(e) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                    if topology.consumer_gone(&js).await {
                        shared.fail("the bus's stream or consumer was deleted; recreating it".into());
                        break;
                    }
                    tracing::warn!(node = %shared.node_id, "bus: no heartbeat from JetStream; waiting for the connection");
                }
                Err(e) => {
                    shared.fail(format!("reading frames failed ({e}); resuming"));
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Delivers one message unless it is ours or a redelivery; acks it. False when the receiver
/// is gone.
async fn handle(message: &jetstream::Message, shared: &Shared, max_age: Duration, last_seq: &mut u64, deliveries: &mpsc::Sender<Delivery>) -> bool {
    let (seq, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 1),
    };
    let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
    let ours = header(HEADER_ORIGIN).as_deref() == Some(shared.node_id.as_str());
    let handled_before = delivered > 1 && seq <= *last_seq;
    if !ours && !handled_before {
        let origin = header(HEADER_ORIGIN).unwrap_or_default();
        let agent = header(HEADER_AGENT).unwrap_or_default();
        let verified = shared.signer.verify(message.headers.as_ref(), MessageKind::Frame, &origin, &agent, &message.payload, max_age);
        match (verified, header(HEADER_AGENT), std::str::from_utf8(&message.payload)) {
            (Err(why), ..) => shared.reject(MessageKind::Frame, why),
            (Ok(()), Some(agent), Ok(frame)) => {
                if deliveries.send(Delivery { agent, frame: Arc::from(frame) }).await.is_err() {
                    return false;
                }
                shared.received.fetch_add(1, Ordering::Relaxed);
            }
            _ => tracing::warn!(node = %shared.node_id, seq, "bus: skipped a message without {HEADER_AGENT} header or with a non-UTF-8 body"),
        }
    }
    // A first delivery below the mark means the stream was recreated (sequences restart).
    if delivered == 1 || seq > *last_seq {
        *last_seq = seq;
    }
    if let Err(e) = message.ack().await {
        tracing::warn!(node = %shared.node_id, seq, "bus: cannot ack a frame ({e}); JetStream will redeliver it and it will be skipped");
    }
    true
}

struct PresenceTask {
    client: Client,
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    ttl: Duration,
    /// How old a signed frame may be: the same bound keeps replayed presence out.
    max_age: Duration,
    local: watch::Receiver<Vec<String>>,
    reconnected: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
}

impl PresenceTask {
    async fn run(mut self, mut presence: Subscriber, mut hello: Subscriber) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        let ok = NatsBusConfig { secret: Secret::new("0123456789abcdef"), ..NatsBusConfig::new("nats://a:4222, nats://b:4222", "node-1") };
        assert_eq!(ok.validate().expect("valid"), vec!["nats://a:4222".to_string(), "nats://b:4222".to_string()]);
        for (change, word) in [
            (Box::new(|c: &mut NatsBusConfig| c.node_id = "a.b".into()) as Box<dyn Fn(&mut NatsBusConfig)>, "node_id"),
            (Box::new(|c: &mut NatsBusConfig| c.node_id = String::new()), "node_id"),
            (Box::new(|c: &mut NatsBusConfig| c.stream = "S*".into()), "stream"),
            (Box::new(|c: &mut NatsBusConfig| c.subject_prefix = "a..b".into()), "subject_prefix"),
            (Box::new(|c: &mut NatsBusConfig| c.subject_prefix = "a.>".into()), "subject_prefix"),
            (Box::new(|c: &mut NatsBusConfig| c.url = " , ".into()), "url"),
            (Box::new(|c: &mut NatsBusConfig| c.presence_ttl = Duration::from_millis(10)), "presence_ttl"),
        ] {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.validate().expect_err("invalid");
            assert!(e.to_string().contains(word), "{e}");
        }
        assert!(NatsBusConfig { subject_prefix: "acme.cx".into(), ..ok.clone() }.validate().is_ok());
        let e = NatsBusConfig { secret: Secret::new("short"), ..ok }.validate().expect_err("short secret");
        assert!(e.to_string().contains("CXBRIDGE_BUS_SECRET"), "{e}");
    }

    #[test]
    fn only_messages_signed_with_the_secret_lately_pass() {
        let signer = Signer::new(&Secret::new("the-cluster-secret-0123"));
        let other = Signer::new(&Secret::new("another-cluster-secret"));
        let age = Duration::from_secs(300);
        let mut headers = HeaderMap::new();
        signer.sign(&mut headers, MessageKind::Frame, "a", "alice", b"{}");
        assert_eq!(signer.verify(Some(&headers), MessageKind::Frame, "a", "alice", b"{}", age), Ok(()));
        for (origin, agent, body, kind) in [("b", "alice", &b"{}"[..], MessageKind::Frame), ("a", "bob", b"{}", MessageKind::Frame), ("a", "alice", b"{ }", MessageKind::Frame), ("a", "alice", b"{}", MessageKind::Presence)] {
            assert_eq!(signer.verify(Some(&headers), kind, origin, agent, body, age), Err(Rejected::BadMac), "{origin} {agent} {kind:?}");
        }
        assert_eq!(other.verify(Some(&headers), MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::BadMac));
        assert_eq!(signer.verify(None, MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::Unsigned));
        let mut garbled = HeaderMap::new();
        garbled.insert(HEADER_SENT, "1");
        garbled.insert(HEADER_MAC, "zz");
        assert_eq!(signer.verify(Some(&garbled), MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::BadMac));
        // A genuine message replayed long after it was signed.
        use hmac::Mac as _;
        let old = now_ms() - 3_600_000;
        let tag = signer.mac(MessageKind::Frame, "a", "alice", old, b"{}").finalize().into_bytes();
        let mut replay = HeaderMap::new();
        replay.insert(HEADER_SENT, old.to_string().as_str());
        replay.insert(HEADER_MAC, hex(&tag).as_str());
        assert_eq!(signer.verify(Some(&replay), MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::Stale));
        assert_eq!(signer.verify(Some(&replay), MessageKind::Frame, "a", "alice", b"{}", Duration::from_secs(7200)), Ok(()));
    }
}
