//! Frames between nodes through JetStream: the stream and this node's durable pull consumer,
//! the task that publishes queued frames in order, and the task that reads the others' frames.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::{self, ConsumerErrorKind};
use async_nats::jetstream::{self, Context};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::config::BusError;
use super::shared::Shared;
use super::signing::{HEADER_AGENT, HEADER_ORIGIN, MessageKind};

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

/// Frames handed to NATS whose PublishAck has not come back yet (below async-nats' own 5,000).
const MAX_IN_FLIGHT: usize = 4_096;

/// A frame another node recorded for an agent, to deliver to this node's streams of that agent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub agent: String,
    pub frame: Arc<str>,
}


/// Names derived from the configuration.
pub(super) struct Topology {
    pub(super) url: String,
    pub(super) stream: String,
    pub(super) consumer: String,
    pub(super) frames: String,
    pub(super) presence: String,
    pub(super) hello: String,
    pub(super) max_age: Duration,
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
    pub(super) async fn ensure_stream(&self, js: &Context) -> Result<(), BusError> {
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
    pub(super) async fn fresh_consumer(&self, js: &Context) -> Result<PullConsumer, BusError> {
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

pub(super) struct Outgoing {
    pub(super) agent: String,
    pub(super) frame: String,
}

/// Publishes queued frames in order; awaits their acks behind them.
pub(super) async fn publisher_task(js: Context, shared: Arc<Shared>, subject: String, origin: String, mut queue: mpsc::Receiver<Outgoing>) {
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
pub(super) async fn consumer_task(js: Context, shared: Arc<Shared>, topology: Arc<Topology>, first: PullConsumer, deliveries: mpsc::Sender<Delivery>) {
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

