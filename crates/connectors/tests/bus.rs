//! The NATS bus between cxbridge nodes, against a real `nats-server -js`
//! (`CXBRIDGE_TEST_NATS_URL`; skipped without it). Every test uses a stream and subject prefix
//! of its own. The tests that stop and restart a server start a private `nats-server` on a
//! free port (skipped when the binary is not on PATH) and never touch the shared one.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::pull;
use cxbridge_connectors::bus::{BusError, Delivery, MessageKind, NatsBus, NatsBusConfig, Secret, sign_message};
use cxbridge_testkit::scaleout::{nats_url, unique_name};
use futures::StreamExt as _;
use tokio::sync::mpsc::Receiver;

/// The secret the test nodes share.
const SECRET: &str = "test-bus-secret-0123456789";

/// One test's bus: its own stream and subjects on a server.
struct Bus {
    url: String,
    stream: String,
    prefix: String,
}

impl Bus {
    fn on(url: &str) -> Bus {
        Bus { url: url.to_string(), stream: unique_name("cxb_bus"), prefix: unique_name("cxbt") }
    }

    fn config(&self, node: &str) -> NatsBusConfig {
        NatsBusConfig { stream: self.stream.clone(), subject_prefix: self.prefix.clone(), secret: Secret::new(SECRET), ..NatsBusConfig::new(&self.url, node) }
    }

    async fn node(&self, node: &str) -> (NatsBus, Receiver<Delivery>) {
        NatsBus::connect(self.config(node)).await.unwrap_or_else(|e| panic!("node {node}: {e}"))
    }

    async fn node_with(&self, node: &str, change: impl FnOnce(&mut NatsBusConfig)) -> (NatsBus, Receiver<Delivery>) {
        let mut config = self.config(node);
        change(&mut config);
        NatsBus::connect(config).await.unwrap_or_else(|e| panic!("node {node}: {e}"))
    }

    /// Removes the stream, so the shared server's store does not grow with every run.
    async fn remove(&self) {
        if let Ok(client) = async_nats::connect(&self.url).await {
            let _ = jetstream::new(client).delete_stream(&self.stream).await;
        }
    }
}

/// Polls `cond` every 2 ms; how long it took to hold, or None after `limit`.
async fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn receive(rx: &mut Receiver<Delivery>, n: usize, limit: Duration) -> Vec<Delivery> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => got.push(d),
            Ok(None) => panic!("the bus closed the receiver after {} of {n} frames", got.len()),
            Err(_) => panic!("only {} of {n} frames within {limit:?}", got.len()),
        }
    }
    got
}

/// Nothing more arrives within `quiet`.
async fn assert_silent(rx: &mut Receiver<Delivery>, quiet: Duration, who: &str) {
    if let Ok(Some(d)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("{who} received an unexpected frame for {}: {}", d.agent, d.frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_reach_every_other_node_once_and_in_order() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (a, mut a_rx) = bus.node("a").await;
    let (_b, mut b_rx) = bus.node("b").await;
    let (_c, mut c_rx) = bus.node("c").await;

    let sent: Vec<(String, String)> =
        (0..200).map(|i| (if i % 2 == 0 { "x" } else { "y" }.to_string(), format!(r#"{{"type":"update","n":{i}}}"#))).collect();
    for (agent, frame) in &sent {
        a.publish(agent, frame).await.expect("publish");
    }
    for (name, rx) in [("b", &mut b_rx), ("c", &mut c_rx)] {
        let got = receive(rx, sent.len(), Duration::from_secs(10)).await;
        let got: Vec<(String, String)> = got.into_iter().map(|d| (d.agent, d.frame.to_string())).collect();
        assert_eq!(got, sent, "node {name}: every frame, in publish order");
        assert_silent(rx, Duration::from_millis(300), name).await;
    }
    assert_silent(&mut a_rx, Duration::from_millis(100), "a (its own frames)").await;
    assert!(within(Duration::from_secs(5), || a.status().published == 200).await.is_some(), "acks counted: {:?}", a.status());
    let status = a.status();
    assert_eq!((status.publish_errors, status.last_error.as_deref(), status.connected), (0, None, true), "{status:?}");
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_is_shared_learned_at_once_and_withdrawn() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (a, _a_rx) = bus.node("a").await;
    let (b, _b_rx) = bus.node("b").await;

    b.announce(vec!["x".into()]);
    let seen = within(Duration::from_secs(1), || a.present_elsewhere("x")).await;
    assert!(seen.is_some(), "a sees b's agent x within 1 s");
    assert!(!b.present_elsewhere("x"), "b's own agents are not elsewhere for b");
    assert!(!a.present_elsewhere("y"));
    let nodes = a.status().nodes;
    assert_eq!(nodes.iter().map(|n| (n.node.as_str(), n.agents.clone())).collect::<Vec<_>>(), vec![("b", vec!["x".to_string()])]);

    // A node started after the announce knows at once (hello), not after a heartbeat.
    let started = Instant::now();
    let (c, _c_rx) = bus.node("c").await;
    let learned = within(Duration::from_secs(1), || c.present_elsewhere("x")).await;
    assert!(learned.is_some(), "c learns b's agents through hello");
    eprintln!("presence: a saw b's announce after {seen:?}; c knew b's agents {:?} after connect() returned ({:?} after it began)", learned, started.elapsed());
    assert!(learned.unwrap_or_default() < Duration::from_secs(1), "hello answered at once, long before the 5 s heartbeat");

    b.announce(vec![]);
    assert!(within(Duration::from_secs(1), || !a.present_elsewhere("x") && !c.present_elsewhere("x")).await.is_some(), "withdrawn");

    // A clean shutdown (Drop) tells the others at once, long before the 15 s TTL.
    b.announce(vec!["z".into()]);
    assert!(within(Duration::from_secs(1), || a.present_elsewhere("z")).await.is_some());
    drop(b);
    let gone = within(Duration::from_secs(2), || !a.present_elsewhere("z")).await;
    assert!(gone.is_some(), "goodbye on drop");
    assert!(within(Duration::from_secs(1), || a.status().nodes.iter().all(|n| n.node != "b")).await.is_some(), "{:?}", a.status());

    // close() does the same, and waits for it.
    c.announce(vec!["w".into()]);
    assert!(within(Duration::from_secs(1), || a.present_elsewhere("w")).await.is_some());
    c.close().await;
    assert!(within(Duration::from_secs(1), || !a.present_elsewhere("w")).await.is_some(), "goodbye on close");
    assert!(matches!(c.publish("w", "{}").await, Err(BusError::Closed)));
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_falls_silent_is_forgotten_after_its_ttl() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let ttl = Duration::from_millis(600);
    let (a, _a_rx) = bus.node_with("a", |c| c.presence_ttl = ttl).await;
    let (b, _b_rx) = bus.node_with("b", |c| c.presence_ttl = ttl).await;
    b.announce(vec!["live".into()]);

    // A "SIGKILLed" node: it said it had agent `ghost` once, then nothing (no goodbye), as a
    // process that dies with its connection does. Spoken on the wire directly, which also
    // pins the presence format other implementations would follow.
    let raw = async_nats::connect(&url).await.expect("raw client");
    let mut answers = raw.subscribe(format!("{}.presence", bus.prefix)).await.expect("subscribe");
    let secret = Secret::new(SECRET);
    let presence = r#"{"node":"ghost","agents":["ghost"],"ttl_ms":600}"#;
    let signed = sign_message(&secret, MessageKind::Presence, "", "", presence.as_bytes());
    raw.publish_with_headers(format!("{}.presence", bus.prefix), signed, presence.into()).await.expect("publish");
    let hello = r#"{"node":"ghost"}"#;
    let signed = sign_message(&secret, MessageKind::Hello, "", "", hello.as_bytes());
    raw.publish_with_headers(format!("{}.presence.hello", bus.prefix), signed, hello.into()).await.expect("hello");
    raw.flush().await.expect("flush");
    assert!(within(Duration::from_secs(1), || a.present_elsewhere("ghost")).await.is_some());
    let heard = Instant::now();

    // The live nodes answer the ghost's hello with their presence.
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(1), answers.next()).await.expect("answers to hello").expect("subscription");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON presence");
        if v["node"] != "ghost" && !answered.contains(&v["node"]) {
            assert_eq!(v["ttl_ms"], 600, "{v}");
            assert!(v["agents"].is_array(), "{v}");
            answered.push(v["node"].clone());
        }
    }

    let forgotten = within(Duration::from_secs(2), || !a.present_elsewhere("ghost")).await.expect("ghost forgotten");
    let after = heard.elapsed();
    assert!(after >= Duration::from_millis(550), "not before its TTL: {after:?}");
    eprintln!("presence: a silent node was forgotten {after:?} after it was last heard (ttl {ttl:?})");
    let _ = forgotten;

    // Heartbeats keep a live node with the same short TTL present well past it.
    tokio::time::sleep(ttl * 2).await;
    assert!(a.present_elsewhere("live"), "b heartbeats every ttl/3");
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_and_presence_without_a_valid_mac_are_dropped_and_counted() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (a, _a_rx) = bus.node("a").await;
    let (b, mut b_rx) = bus.node("b").await;

    // Anyone who reaches NATS, speaking the frame format but without the secret.
    let raw = async_nats::connect(&url).await.expect("raw client");
    let js = jetstream::new(raw.clone());
    let forged = r#"{"type":"pop","conversation":{"id":"forged"}}"#;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Cxbridge-Agent", "alice");
    headers.insert("Cxbridge-Origin", "a");
    js.publish_with_headers(format!("{}.agent", bus.prefix), headers.clone(), forged.into()).await.expect("publish").await.expect("stored");
    // A MAC under another secret, and a genuine MAC over another body.
    let wrong = sign_message(&Secret::new("not-the-cluster-secret"), MessageKind::Frame, "a", "alice", forged.as_bytes());
    let mut other = sign_message(&Secret::new(SECRET), MessageKind::Frame, "a", "alice", b"{}");
    for (name, value) in [("Cxbridge-Agent", "alice"), ("Cxbridge-Origin", "a")] {
        other.insert(name, value);
    }
    let mut wrong_with = wrong.clone();
    for (name, value) in [("Cxbridge-Agent", "alice"), ("Cxbridge-Origin", "a")] {
        wrong_with.insert(name, value);
    }
    for h in [wrong_with, other] {
        js.publish_with_headers(format!("{}.agent", bus.prefix), h, forged.into()).await.expect("publish").await.expect("stored");
    }
    // Fake presence: "alice is on node evil".
    raw.publish(format!("{}.presence", bus.prefix), r#"{"node":"evil","agents":["alice"],"ttl_ms":60000}"#.into()).await.expect("presence");
    raw.flush().await.expect("flush");

    assert_silent(&mut b_rx, Duration::from_millis(800), "b (forged frames)").await;
    assert!(within(Duration::from_secs(2), || b.status().rejected >= 4).await.is_some(), "three frames and one presence counted: {:?}", b.status());
    assert!(b.status().last_error.is_some_and(|e| e.contains("dropped a")), "{:?}", b.status());
    assert!(!b.present_elsewhere("alice") && !a.present_elsewhere("alice"), "forged presence is not believed");

    // The nodes themselves still talk.
    a.publish("alice", r#"{"type":"update"}"#).await.expect("publish");
    let got = receive(&mut b_rx, 1, Duration::from_secs(5)).await;
    assert_eq!((got[0].agent.as_str(), &*got[0].frame), ("alice", r#"{"type":"update"}"#));
    a.announce(vec!["bob".into()]);
    assert!(within(Duration::from_secs(2), || b.present_elsewhere("bob")).await.is_some(), "signed presence is believed");
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_with_different_secrets_do_not_exchange_frames() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (a, mut a_rx) = bus.node("a").await;
    let (b, mut b_rx) = bus.node("b").await;
    let (stranger, mut stranger_rx) = bus.node_with("stranger", |c| c.secret = Secret::new("another-secret-0123456789")).await;

    a.publish("alice", r#"{"n":1}"#).await.expect("publish");
    stranger.publish("alice", r#"{"n":2}"#).await.expect("publish");
    stranger.announce(vec!["carol".into()]);
    let got = receive(&mut b_rx, 1, Duration::from_secs(5)).await;
    assert_eq!(&*got[0].frame, r#"{"n":1}"#, "b gets a's frame");
    assert_silent(&mut b_rx, Duration::from_millis(500), "b (the stranger's frame)").await;
    assert_silent(&mut a_rx, Duration::from_millis(100), "a (the stranger's frame)").await;
    assert_silent(&mut stranger_rx, Duration::from_millis(100), "the stranger (a's frame)").await;
    assert!(!b.present_elsewhere("carol"), "the stranger's presence is not believed");
    assert!(within(Duration::from_secs(2), || b.status().rejected >= 1 && stranger.status().rejected >= 1).await.is_some(), "{:?} / {:?}", b.status(), stranger.status());
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_skips_frames_published_while_it_was_down() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (a, _a_rx) = bus.node("a").await;
    let (b, mut b_rx) = bus.node("b").await;
    a.publish("x", "before").await.expect("publish");
    assert_eq!(&*receive(&mut b_rx, 1, Duration::from_secs(5)).await[0].frame, "before");
    b.close().await;
    drop(b);
    drop(b_rx);

    for i in 0..5 {
        a.publish("x", &format!("stale {i}")).await.expect("publish");
    }
    assert!(within(Duration::from_secs(5), || a.status().published == 6).await.is_some(), "stale frames are in the stream");

    let (_b, mut b_rx) = bus.node("b").await;
    a.publish("x", "fresh").await.expect("publish");
    let got = receive(&mut b_rx, 1, Duration::from_secs(5)).await;
    assert_eq!(&*got[0].frame, "fresh", "no stale pop replayed");
    assert_silent(&mut b_rx, Duration::from_millis(300), "restarted b").await;
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_live_nodes_with_one_id_are_reported() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (first, _rx1) = bus.node("twin").await;
    let (second, _rx2) = bus.node("twin").await;
    let reported = |bus: &NatsBus| bus.status().last_error.is_some_and(|e| e.contains("node ids must be unique"));
    assert!(within(Duration::from_secs(2), || reported(&first) && reported(&second)).await.is_some(), "{:?}", first.status());
    bus.remove().await;
}

#[tokio::test]
async fn an_unreachable_server_is_named_quickly() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let result = NatsBus::connect(NatsBusConfig { secret: Secret::new(SECRET), ..NatsBusConfig::new(&url, "a") }).await;
    let took = started.elapsed();
    let Err(e) = result else { panic!("connected to nothing") };
    assert!(matches!(e, BusError::Unreachable { .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.contains(&url) && message.contains("nats-server"), "{message}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    eprintln!("unreachable: {message} ({took:?})");
}

#[tokio::test]
async fn a_server_without_jetstream_is_named() {
    let Some(server) = NatsServer::start(false).await else { return };
    let result = NatsBus::connect(NatsBusConfig { secret: Secret::new(SECRET), ..NatsBusConfig::new(&server.url, "a") }).await;
    let Err(e) = result else { panic!("a bus without JetStream") };
    assert!(matches!(e, BusError::JetStreamDisabled { .. }), "{e:?}");
    assert!(e.to_string().contains("-js") && e.to_string().contains(&server.url), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consumer_goes_away_when_its_node_is_gone_for_good() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (_a, _a_rx) = bus.node("a").await;
    let js = jetstream::new(async_nats::connect(&url).await.expect("raw client"));
    let stream = js.get_stream(&bus.stream).await.expect("stream");
    let info = stream.consumer_info("a").await.expect("the node's durable consumer");
    assert_eq!(info.config.durable_name.as_deref(), Some("a"));
    assert_eq!(info.config.inactive_threshold, Duration::from_secs(3600), "{:?}", info.config);
    assert_eq!(info.config.deliver_policy, jetstream::consumer::DeliverPolicy::New);
    assert_eq!(info.config.ack_policy, jetstream::consumer::AckPolicy::Explicit);
    let config = stream.get_info().await.expect("stream info").config;
    assert_eq!((config.storage, config.retention, config.discard), (
        jetstream::stream::StorageType::File,
        jetstream::stream::RetentionPolicy::Limits,
        jetstream::stream::DiscardPolicy::Old
    ));
    assert_eq!(config.max_age, Duration::from_secs(300));
    assert!(config.max_bytes > 0, "a size cap");

    // The server this runs against removes an idle *durable* consumer after its threshold
    // (what the hour above relies on; before nats-server 2.9 it applied to ephemerals only).
    stream
        .create_consumer(pull::Config {
            durable_name: Some("idle".into()),
            inactive_threshold: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("idle durable");
    let mut removed = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if stream.consumer_info("idle").await.is_err() {
            removed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("inactive_threshold: an idle durable with a 1 s threshold was removed after {removed:?}");
    assert!(removed.is_some(), "nats-server keeps idle durables: inactive_threshold is not honoured");
    bus.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bus_survives_a_nats_restart() {
    let Some(mut server) = NatsServer::start(true).await else { return };
    let bus = Bus::on(&server.url);
    let ttl = Duration::from_millis(900);
    let (a, _a_rx) = bus.node_with("a", |c| c.presence_ttl = ttl).await;
    let (b, mut b_rx) = bus.node_with("b", |c| c.presence_ttl = ttl).await;
    b.announce(vec!["x".into()]);
    a.publish("x", "one").await.expect("publish");
    assert_eq!(&*receive(&mut b_rx, 1, Duration::from_secs(5)).await[0].frame, "one");
    assert!(within(Duration::from_secs(1), || a.present_elsewhere("x")).await.is_some());

    server.restart().await;
    let back = within(Duration::from_secs(15), || a.status().connected && b.status().connected).await;
    assert!(back.is_some(), "both reconnect: {:?} {:?}", a.status(), b.status());

    // The pull consumer is resumed (re-pulled or recreated) and frames flow again, in order.
    let delivered = Instant::now();
    let mut got = Vec::new();
    let mut n = 0;
    while got.is_empty() && delivered.elapsed() < Duration::from_secs(20) {
        // JetStream may need a moment after the restart: early frames can fail, later ones pass.
        let _ = a.publish("x", &format!("after {n}")).await;
        n += 1;
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(250), b_rx.recv()).await {
            got.push(d);
        }
    }
    assert!(!got.is_empty(), "no frame after the restart: {:?} / {:?}", a.status(), b.status());
    for i in 0..20 {
        a.publish("x", &format!("ordered {i}")).await.expect("publish after restart");
    }
    let mut ordered = Vec::new();
    while ordered.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(10), b_rx.recv()).await.expect("frames after restart").expect("open");
        if d.frame.starts_with("ordered") {
            ordered.push(d.frame.to_string());
        }
    }
    assert_eq!(ordered, (0..20).map(|i| format!("ordered {i}")).collect::<Vec<_>>());
    assert!(within(Duration::from_secs(5), || a.present_elsewhere("x")).await.is_some(), "presence again after the restart");
    eprintln!(
        "restart: reconnected after {back:?}, first frame through {:?} after that ({n} tried); a: {:?}",
        delivered.elapsed(),
        a.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_recreates_its_consumer_and_the_stream_when_they_vanish() {
    let Some(url) = nats_url() else { return };
    let bus = Bus::on(&url);
    let (a, _a_rx) = bus.node("a").await;
    let (_b, mut b_rx) = bus.node("b").await;
    for i in 0..5 {
        a.publish("x", &format!("first {i}")).await.expect("publish");
    }
    receive(&mut b_rx, 5, Duration::from_secs(5)).await;
    let js = jetstream::new(async_nats::connect(&url).await.expect("raw client"));

    // An operator (or the inactivity threshold after a long partition) removes b's consumer.
    js.get_stream(&bus.stream).await.expect("stream").delete_consumer("b").await.expect("delete consumer");
    let back = resumes(&a, &mut b_rx, "after consumer").await;
    eprintln!("consumer deleted: frames flow again after {back:?}");

    // Someone deletes the whole stream: sequences restart at 1 in the new one, and the
    // frames there must not be mistaken for redeliveries of the old ones.
    js.delete_stream(&bus.stream).await.expect("delete stream");
    let back = resumes(&a, &mut b_rx, "after stream").await;
    eprintln!("stream deleted: frames flow again after {back:?}; a: {:?}", a.status());
    bus.remove().await;
}

/// Publishes until `rx` gets a frame again, then checks 10 more arrive in order.
async fn resumes(a: &NatsBus, rx: &mut Receiver<Delivery>, tag: &str) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "{tag}: no frame came through: {:?}", a.status());
        let _ = a.publish("x", &format!("{tag} probe {n}")).await;
        n += 1;
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            && d.frame.starts_with(tag)
        {
            break;
        }
    }
    let took = started.elapsed();
    for i in 0..10 {
        a.publish("x", &format!("{tag} {i}")).await.expect("publish");
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let d = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("frames").expect("open");
        if !d.frame.contains("probe") {
            got.push(d.frame.to_string());
        }
    }
    assert_eq!(got, (0..10).map(|i| format!("{tag} {i}")).collect::<Vec<_>>());
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_and_throughput_between_two_nodes() {
    let Some(url) = nats_url() else { return };
    const N: usize = 5_000;
    let bus = Bus::on(&url);
    let (a, _a_rx) = bus.node("a").await;
    let (_b, b_rx) = bus.node("b").await;
    let a = Arc::new(a);
    let padding = "p".repeat(400); // about the size of a pop frame
    let mut b_rx = b_rx;

    for (mode, pace) in [("paced 10 frames/ms", true), ("burst", false)] {
        let receiver = tokio::spawn(async move {
            let mut arrived = vec![Instant::now(); N];
            for _ in 0..N {
                let d = tokio::time::timeout(Duration::from_secs(30), b_rx.recv()).await.expect("frames").expect("open");
                let i: usize = d.frame[..6].parse().expect("index");
                arrived[i] = Instant::now();
            }
            (arrived, b_rx)
        });
        let mut sent = Vec::with_capacity(N);
        let start = Instant::now();
        for i in 0..N {
            sent.push(Instant::now());
            a.publish("x", &format!("{i:06} {padding}")).await.expect("publish");
            if pace && i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let published = start.elapsed();
        let (arrived, rx) = receiver.await.expect("receiver");
        b_rx = rx;
        let total = arrived.iter().max().map(|t| t.duration_since(start)).unwrap_or_default();
        let mut latencies: Vec<Duration> = sent.iter().zip(&arrived).map(|(s, r)| r.duration_since(*s)).collect();
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        eprintln!(
            "bus {mode}: {N} frames of {} B, published in {published:?}, all delivered after {total:?} = {:.0} frames/s; latency p50 {:?} p99 {:?} max {:?}",
            padding.len() + 7,
            N as f64 / total.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
    assert!(within(Duration::from_secs(5), || a.status().published == 2 * N as u64).await.is_some(), "{:?}", a.status());
    bus.remove().await;
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A private nats-server on a free port, killed on drop.
struct NatsServer {
    url: String,
    port: u16,
    jetstream: bool,
    store: tempfile::TempDir,
    child: tokio::process::Child,
}

impl NatsServer {
    async fn start(jetstream: bool) -> Option<NatsServer> {
        if std::process::Command::new("nats-server").arg("--version").output().is_err() {
            eprintln!("skipped: nats-server is not on PATH");
            return None;
        }
        let store = tempfile::tempdir().expect("store dir");
        let port = free_port();
        let child = spawn(port, jetstream, store.path()).await;
        Some(NatsServer { url: format!("nats://127.0.0.1:{port}"), port, jetstream, store, child })
    }

    /// Kills the server (SIGKILL: no lame-duck goodbye) and starts it again on the same port and store.
    async fn restart(&mut self) {
        self.child.kill().await.expect("kill nats-server");
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.child = spawn(self.port, self.jetstream, self.store.path()).await;
    }
}

async fn spawn(port: u16, jetstream: bool, store: &Path) -> tokio::process::Child {
    let mut command = tokio::process::Command::new("nats-server");
    command.args(["-a", "127.0.0.1", "-p", &port.to_string()]).kill_on_drop(true);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    if jetstream {
        command.arg("-js").arg("-sd").arg(store);
    }
    let child = command.spawn().expect("start nats-server");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "nats-server did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}
