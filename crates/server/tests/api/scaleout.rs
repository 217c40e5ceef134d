//! Several hub processes behaving as one hub: the real `cxbridge` binary started two or three
//! times on one PostgreSQL database, joined by a real `nats-server -js`.
//!
//! Calls' events are posted round-robin across the nodes while agents are connected to
//! different nodes: every pop reaches its agent exactly once, every conversation is written
//! to the CRM exactly once, and after one node is killed (SIGKILL) mid-run nothing it
//! acknowledged is lost and the others carry on. Needs `CXBRIDGE_TEST_POSTGRES_URL` and
//! `CXBRIDGE_TEST_NATS_URL` (`eval "$(scripts/setup-scaleout)"`); skipped without them,
//! except in CI (`CXBRIDGE_REQUIRE_PEERS=1`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cxbridge_testkit::dataverse::{self as dv, DataverseServer};
use cxbridge_testkit::scaleout::{TestDatabase, nats_url, unique_name};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{ADMIN, CTI, Ws, answer, hangup, new_call, next_of};

const IVR: &str = "cluster-ivr-token";

/// One `cxbridge serve` process.
struct Node {
    id: String,
    addr: String,
    log: PathBuf,
    child: Child,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Kills the process without warning: no graceful shutdown, no goodbye to the others.
    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Nodes sharing one database and one NATS stream, each with its own data directory.
struct Cluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts `n` nodes at once (their migrations race, as on a real rollout) with `extra` TOML.
async fn cluster(n: usize, database_url: &str, nats: &str, extra: &str) -> Cluster {
    cxbridge_connectors::client::ensure_tls();
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = unique_name("CXB").to_uppercase();
    let prefix = unique_name("cxb");
    let config = dir.path().join("cxbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndurability = \"normal\"\n[bus]\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\npresence_ttl_secs = 2\n{extra}"
        ),
    )
    .expect("config");
    let mut starting = vec![];
    for i in 0..n {
        let id = format!("node-{}", (b'a' + i as u8) as char);
        let data = dir.path().join(&id);
        std::fs::create_dir_all(&data).expect("data dir");
        starting.push(start(id, config.clone(), data, database_url.to_string(), nats.to_string()));
    }
    let nodes = futures::future::join_all(starting).await;
    Cluster { nodes, http: reqwest::Client::new(), _dir: dir }
}

async fn start(id: String, config: PathBuf, data: PathBuf, database_url: String, nats: String) -> Node {
    let log = data.join("cxbridge.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cxbridge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .env("CXBRIDGE_DATABASE_URL", &database_url)
        .env("CXBRIDGE_NATS_URL", &nats)
        .env("CXBRIDGE_NODE_ID", &id)
        .env("CXBRIDGE_ADMIN_TOKEN", ADMIN)
        .env("CXBRIDGE_CTI_TOKEN", CTI)
        .env("CXBRIDGE_IVR_TOKEN", IVR)
        .env("CXBRIDGE_SESSION_SECRET", "cluster-session-secret-0123456789")
        .env("CXBRIDGE_BUS_SECRET", "cluster-bus-secret-0123456789")
        .env("CXBRIDGE_LOG", "info,tower_http=warn,sqlx=warn")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("CXBRIDGE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start cxbridge");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line.strip_prefix("cxbridge listening on http://") {
                return Some(a.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("{id} did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    // Keep reading what the node prints after the address, as a supervisor would: a pipe
    // nobody reads fills up, and one closed early is not what a deployment does either.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // Traffic only once the node answers its health check, as behind a load balancer.
    let http = reqwest::Client::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if http.get(format!("http://{addr}/healthz")).timeout(Duration::from_secs(5)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "{id} listens on {addr} but never answered /healthz:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    Node { id, addr, log, child }
}

impl Cluster {
    async fn get(&self, node: usize, path: &str) -> (u16, Value) {
        let r = self.http.get(self.nodes[node].url(path)).bearer_auth(ADMIN).send().await.expect("GET");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Posts like a load balancer: to `first`, and to the next node when one does not answer.
    /// Returns the status and the node that answered.
    async fn post_any(&self, first: usize, path: &str, body: &Value, alive: &[usize]) -> (u16, Value, usize) {
        let start = alive.iter().position(|n| *n == first).unwrap_or(0);
        let mut last_error = String::new();
        for k in 0..alive.len() {
            let n = alive[(start + k) % alive.len()];
            let send = || self.http.post(self.nodes[n].url(path)).bearer_auth(ADMIN).json(body).timeout(Duration::from_secs(20)).send();
            let mut sent = send().await;
            // A connection that was never made carried nothing: a load balancer retries it.
            for _ in 0..3 {
                if !matches!(&sent, Err(e) if e.is_connect()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                sent = send().await;
            }
            match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    return (status, r.json().await.unwrap_or(Value::Null), n);
                }
                Err(e) => last_error = format!("{e:?}"),
            }
        }
        let logs: Vec<String> = alive.iter().map(|n| format!("--- {} ---\n{}", self.nodes[*n].id, self.nodes[*n].log_tail())).collect();
        panic!("no node answered {path}: {last_error}\n{}", logs.join("\n"));
    }

    /// One answered call of `agent`, each event to a different node (round-robin from
    /// `first`), then the wrap-up. Returns the conversation id once every step is acknowledged.
    async fn call(&self, call: &str, agent: &str, first: usize, alive: &[usize]) -> String {
        let cti = format!("/api/v1/cti/{CTI}");
        let from = format!("+1415555{:04}", 3000 + call.len() % 7);
        for (k, event) in [new_call(call, &from, agent), answer(call, agent), hangup(call, "normalClearing")].iter().enumerate() {
            let (s, v, _) = self.post_any(alive[(first + k) % alive.len()], &cti, event, alive).await;
            assert_eq!(s, 200, "{call}: {event} → {v}");
        }
        let node = alive[(first + 3) % alive.len()];
        let (s, found) = self.get(node, &format!("/api/v1/conversations?external_id={call}")).await;
        let id = found["conversations"][0]["id"].as_str().map(str::to_string).unwrap_or_else(|| panic!("{call} unknown ({s}): {found}"));
        let (s, v, _) = self.post_any(node, &format!("/api/v1/conversations/{id}/wrapup"), &json!({"notes": format!("wrap-up of {call}")}), alive).await;
        assert_eq!(s, 200, "{call}: wrap-up → {v}");
        id
    }

    async fn agent(&self, node: usize, agent: &str) -> Ws {
        let url = format!("ws://{}/api/v1/agents/{agent}/stream?access_token={ADMIN}", self.nodes[node].addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
        next_of(&mut ws, "snapshot").await;
        ws
    }

    /// Waits until `node`'s outbox has `delivered` items and nothing pending.
    async fn outbox_settled(&self, node: usize, delivered: u64, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (_, h) = self.get(node, "/healthz").await;
            if h["outbox"]["delivered"] == delivered && h["outbox"]["pending"] == 0 {
                return h;
            }
            assert!(tokio::time::Instant::now() < deadline, "the outbox did not settle at {delivered} delivered: {h}\n{}", self.nodes[node].log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Pops an agent's stream received: conversation external id → how many.
type Pops = Arc<Mutex<HashMap<String, usize>>>;

/// Counts the pops arriving on `ws` until the stream ends.
fn count_pops(mut ws: Ws) -> (Pops, tokio::task::JoinHandle<()>) {
    let pops: Pops = Arc::default();
    let seen = pops.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["type"] == "pop"
                    && let Some(call) = v["conversation"]["external_id"].as_str()
                    && let Ok(mut p) = seen.lock()
                {
                    *p.entry(call.to_string()).or_default() += 1;
                }
            }
        }
    });
    (pops, task)
}

fn pops_of(p: &Pops) -> HashMap<String, usize> {
    p.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Waits until every call in `calls` popped at least once on `pops`.
async fn popped(agent: &str, pops: &Pops, calls: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = pops_of(pops);
        let missing: Vec<&String> = calls.iter().filter(|c| !seen.contains_key(*c)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{agent} never got the pop of {missing:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dataverse_config(crm: &DataverseServer, agents: usize) -> String {
    let mut s = format!(
        r#"
[phone]
default_region = "US"
[crm]
provider = "dataverse"
sync_interval_secs = 1
identify_timeout_ms = 3000
[crm.dataverse]
{connection}timeout_ms = 2000
[outbox]
lease_secs = 3
initial_delay_ms = 50
max_delay_secs = 1
max_attempts = 1000
"#,
        connection = crm.connection_toml(),
    );
    for i in 1..=agents {
        s.push_str(&format!("[[agents]]\nid = \"a{i}\"\n"));
    }
    s
}

/// How many times each conversation's activity was sent to Dataverse (upserts by its key,
/// inside `$batch` bodies or alone).
fn upserts_per_conversation(crm: &DataverseServer, ids: &[String]) -> HashMap<String, usize> {
    let seen = crm.seen();
    ids.iter()
        .map(|id| {
            let key = format!("='cxbridge-{id}')");
            let n = seen.iter().map(|s| s.body.matches(&key).count() + s.target.matches(&key).count()).sum();
            (id.clone(), n)
        })
        .collect()
}

#[tokio::test]
async fn three_nodes_behave_as_one_hub_and_survive_losing_one() {
    let Some(nats) = nats_url() else { return };
    let Some(db) = TestDatabase::create("cluster").await else { return };
    let crm = DataverseServer::start().await.expect("dataverse test server");
    crm.insert("contacts", json!({"firstname": "Ada", "lastname": "Cluster", "telephone1": "+1 415 555 3003"}));
    let mut c = cluster(3, &db.url, &nats, &dataverse_config(&crm, 6)).await;
    let all = [0, 1, 2];

    // Agents a1, a2 on node a; a3, a4 on node b; a5, a6 on node c.
    let mut streams = vec![];
    for i in 1..=6 {
        streams.push(count_pops(c.agent((i - 1) / 2, &format!("a{i}")).await));
    }
    // Each node must know every other node's agents before calls route on presence.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, h) = c.get(0, "/healthz").await;
        let agents: u64 = h["bus"]["nodes"].as_array().map_or(0, |n| n.iter().filter_map(|x| x["agents"].as_u64()).sum());
        if agents == 4 {
            assert_eq!((h["node"].as_str(), h["store"].as_str(), h["bus"]["connected"].as_bool()), (Some("node-a"), Some("postgres"), Some(true)), "{h}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node a does not see the 4 agents of b and c: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phase 1: 30 calls, each event to another node.
    let mut calls_of: HashMap<usize, Vec<String>> = HashMap::new();
    let mut ids = vec![];
    for n in 0..30 {
        let call = format!("rr-{n}");
        let agent = n % 6 + 1;
        ids.push(c.call(&call, &format!("a{agent}"), n % 3, &all).await);
        calls_of.entry(agent).or_default().push(call);
    }
    for (i, (pops, _)) in streams.iter().enumerate() {
        popped(&format!("a{}", i + 1), pops, &calls_of[&(i + 1)]).await;
    }
    c.outbox_settled(1, 30, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, (pops, _)) in streams.iter().enumerate() {
        let seen = pops_of(pops);
        assert_eq!(seen.len(), 5, "a{} got pops for exactly its 5 calls: {seen:?}", i + 1);
        assert!(seen.values().all(|n| *n == 1), "a{}: every pop exactly once: {seen:?}", i + 1);
    }
    let sent = upserts_per_conversation(&crm, &ids);
    assert!(sent.values().all(|n| *n == 1), "three workers, yet each activity went to Dynamics exactly once: {sent:?}");
    assert_eq!(crm.activities().len(), 30);

    // Phase 2: 60 more calls while node c is killed after the 20th.
    let mut acknowledged = vec![];
    let mut alive: Vec<usize> = all.to_vec();
    for n in 0..60 {
        if n == 20 {
            c.nodes[2].child.start_kill().expect("SIGKILL node c");
            alive = vec![0, 1];
        }
        let call = format!("kill-{n}");
        acknowledged.push(c.call(&call, &format!("a{}", n % 4 + 1), n % alive.len(), &alive).await);
    }
    // The outbox items node c had claimed come back when its lease runs out.
    let h = c.outbox_settled(0, 90, Duration::from_secs(60)).await;
    assert_eq!(h["outbox"]["dead"], 0, "{h}");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for a in crm.activities() {
        *per_key.entry(a[dv::ACTIVITY_KEY].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let duplicated: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "no conversation has two activities: {duplicated:?}");
    let lost: Vec<_> = acknowledged.iter().chain(&ids).filter(|id| !per_key.contains_key(&format!("cxbridge-{id}"))).collect();
    assert!(lost.is_empty(), "every acknowledged conversation is in the CRM; missing {lost:?}");
    assert_eq!(per_key.len(), 90);
    // Agents on the surviving nodes got every pop of phase 2 exactly once.
    for agent in 1..=4 {
        let calls: Vec<String> = (0..60).filter(|n| n % 4 + 1 == agent).map(|n| format!("kill-{n}")).collect();
        popped(&format!("a{agent}"), &streams[agent - 1].0, &calls).await;
        let seen = pops_of(&streams[agent - 1].0);
        assert!(seen.values().all(|n| *n == 1), "a{agent}: every pop exactly once across the kill: {seen:?}");
    }
    // Node c's agents lost their stream; the survivors forget them within the presence TTL.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = c.get(0, "/healthz").await;
        let nodes: Vec<&str> = h["bus"]["nodes"].as_array().map_or(vec![], |n| n.iter().filter_map(|x| x["node"].as_str()).collect());
        if !nodes.contains(&"node-c") {
            assert!(nodes.contains(&"node-b"), "{h}");
            assert_eq!(h["bus"]["publish_errors"], 0, "every frame reached JetStream: {h}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node c is still listed after it died: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, task) in &streams[4..] {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !task.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the streams of the killed node end");
    }
    // An agent of the dead node signs in on another node and gets its pops there.
    let (a5, _) = count_pops(c.agent(1, "a5").await);
    c.call("after-kill", "a5", 0, &[0, 1]).await;
    popped("a5", &a5, &["after-kill".to_string()]).await;
    for n in &c.nodes[..2] {
        assert!(!n.log_tail().contains("panicked"), "{}: {}", n.id, n.log_tail());
    }
}

const IVR_CONFIG: &str = r#"
[phone]
default_region = "DE"
[[agents]]
id = "alice"
numbers = ["201"]
[[ivr.rules]]
name = "owner"
action = "owner"
[[ivr.rules]]
name = "fallback"
action = "dial"
target = "sip:support@pbx.example.com"
"#;

#[tokio::test]
async fn the_ivr_on_one_node_routes_to_an_owner_online_on_another() {
    let Some(nats) = nats_url() else { return };
    let Some(db) = TestDatabase::create("presence").await else { return };
    let mut c = cluster(2, &db.url, &nats, IVR_CONFIG).await;
    let (s, v, _) = c.post_any(0, "/api/v1/crm/contact", &json!({"name": "Ada", "phone": "+49 30 1234567", "owner": "alice"}), &[0]).await;
    assert_eq!(s, 201, "{v}");
    let lookup = |c: &Cluster| {
        let req = c.http.get(c.nodes[0].url("/api/v1/ivr/lookup?ani=%2B49301234567")).bearer_auth(IVR).send();
        async move { req.await.expect("lookup").json::<Value>().await.expect("json") }
    };
    let v = lookup(&c).await;
    assert_eq!((v["owner"]["available"].as_bool(), v["route"]["rule"].as_str()), (Some(false), Some("fallback")), "alice is offline: {v}");

    // Alice opens her panel on node b: node a's IVR routes her customer to her.
    let alice = c.agent(1, "alice").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let v = loop {
        let v = lookup(&c).await;
        if v["owner"]["available"] == true || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v["route"], json!({"action": "dial", "target": "201", "agent": "alice", "reason": null, "rule": "owner"}), "{v}");

    // She closes it: node a knows at once (the goodbye), not only after the presence TTL.
    let mut alice = alice;
    let _ = alice.close(None).await;
    drop(alice);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let v = lookup(&c).await;
        if v["owner"]["available"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node a still thinks alice is online: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A call posted to node a pops on node b, where she signs in again.
    let mut alice = c.agent(1, "alice").await;
    let (s, _, _) = c.post_any(0, &format!("/api/v1/cti/{CTI}"), &new_call("x-1", "+49 30 1234567", "alice"), &[0]).await;
    assert_eq!(s, 200);
    let pop = next_of(&mut alice, "pop").await;
    assert_eq!(pop["conversation"]["external_id"], "x-1");
    assert_eq!(pop["pop"]["action"], "open", "identified from the shared database: {pop}");
    for n in &mut c.nodes {
        n.kill().await;
    }
}
