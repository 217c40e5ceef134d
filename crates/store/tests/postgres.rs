//! The PostgreSQL backend on a real server (`CXBRIDGE_TEST_POSTGRES_URL`; skipped without it):
//! the conformance story, and what only a database shared by several nodes can get wrong —
//! every test that says "two nodes" opens two `PgStore`s (two pools) on one database.

mod conformance;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Address, Channel, Details, Direction, EndCause, Event, EventKind, Offer, Policy, State, WrapUp};
use cxbridge_domain::crm::{Activity, EntitySpec, RecordRef};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::sqlite::CrmSchema;
use cxbridge_store::{CrmStore, PgStore, Recorded, Store, StoreError};
use cxbridge_testkit::scaleout::TestDatabase;

fn schema() -> CrmSchema {
    CrmSchema { entities: EntitySpec::builtin_defaults(), normalizer: PhoneNormalizer::new(Some("DE"), &[]).expect("region") }
}

async fn open(db: &TestDatabase) -> PgStore {
    PgStore::open(&db.url, schema(), 4).await.expect("open the PostgreSQL store")
}

fn event(key: &str, call: &str, kind: EventKind) -> Event {
    Event { dedup_key: key.into(), source: "test".into(), conversation_key: call.into(), leg: None, at: Timestamp::now(), source_time: false, kind }
}

fn offer(agent: &str) -> EventKind {
    EventKind::Offered(Offer {
        channel: Channel::Voice,
        direction: Direction::Inbound,
        customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
        dialed: Address { raw: "+49309999000".into(), e164: Some("+49309999000".into()) },
        agents: vec![agent.into()],
        queue: None,
        diversion: None,
        details: Details::default(),
        identification: Identification::None,
    })
}

/// A call nobody answered: it completes at its end, which enqueues its activity.
async fn missed_call(store: &PgStore, call: &str) {
    store.record_event(event(&format!("{call}:new"), call, offer("alice")), Policy::default()).await.expect("offer");
    let end = EventKind::Ended { cause: EndCause::NoAnswer };
    store.record_event(event(&format!("{call}:end"), call, end), Policy::default()).await.expect("end");
}

#[tokio::test]
async fn postgres_passes_the_retention_story() {
    let Some(db) = TestDatabase::create("retention").await else { return };
    let store = open(&db).await;
    conformance::retention_story(&store).await;
}

#[tokio::test]
async fn postgres_rebuilds_the_phone_index_when_the_phone_rules_change() {
    let Some(db) = TestDatabase::create("reindex").await else { return };
    let store = open(&db).await;
    let ids = conformance::reindex_story_before(&store).await;
    drop(store);
    let at = CrmSchema { entities: EntitySpec::builtin_defaults(), normalizer: PhoneNormalizer::new(Some("AT"), &[]).expect("region") };
    let store = PgStore::open(&db.url, at, 4).await.expect("reopen with AT rules");
    conformance::reindex_story_after(&store, &ids).await;
}

#[tokio::test]
async fn postgres_passes_the_conformance_story() {
    let Some(db) = TestDatabase::create("story").await else { return };
    let store = open(&db).await;
    conformance::story(&store).await;

    // Opening again runs migrations again (no-op) and sees the data.
    drop(store);
    let store = open(&db).await;
    assert_eq!(store.count_records("lead").await.expect("count"), 2);
}

#[tokio::test]
async fn a_failed_connection_names_the_host_but_never_the_password() {
    // Port 1 on loopback: nothing listens there, so this needs no server.
    let Err(e) = PgStore::open("postgres://cxbridge:s3cret-pw@127.0.0.1:1/cxbridge", schema(), 1).await else {
        panic!("nothing listens on port 1")
    };
    let message = e.to_string();
    assert!(matches!(e, StoreError::Unavailable(_)), "{message}");
    assert!(message.contains("127.0.0.1:1/cxbridge"), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_migrate_once() {
    let Some(db) = TestDatabase::create("migrate").await else { return };
    let (a, b, c) = tokio::join!(open(&db), open(&db), open(&db));
    for store in [&a, &b, &c] {
        store.ping().await.expect("ping");
        assert_eq!(store.count_records("contact").await.expect("the tables exist"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_claim_the_same_outbox_item() {
    let Some(db) = TestDatabase::create("claim").await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    for i in 0..200 {
        missed_call(if i % 2 == 0 { &a } else { &b }, &format!("call-{i}")).await;
    }
    assert_eq!(a.outbox_stats(Timestamp::now()).await.expect("stats").due, 200);

    // Two workers per node, each claiming small batches until nothing is left.
    async fn drain(store: PgStore) -> Vec<i64> {
        let mut ids = vec![];
        loop {
            let claimed = store.outbox_claim(Timestamp::now(), 3, Duration::from_secs(600)).await.expect("claim");
            if claimed.is_empty() {
                return ids;
            }
            ids.extend(claimed.iter().map(|item| item.id));
        }
    }
    let workers: Vec<_> = [&a, &a, &b, &b].into_iter().map(|s| tokio::spawn(drain(s.clone()))).collect();
    let mut all = vec![];
    let mut per_node = [0, 0];
    for (i, w) in workers.into_iter().enumerate() {
        let ids = w.await.expect("worker");
        per_node[i / 2] += ids.len();
        all.extend(ids);
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "every item claimed once, none twice (per node: {per_node:?})");
    assert_eq!(distinct.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_receiving_the_same_events_apply_each_once() {
    let Some(db) = TestDatabase::create("events").await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                let call = format!("call-{i}");
                let (mut applied, mut duplicates) = (0, 0);
                let mut ids = BTreeSet::new();
                let mut count = |r: Result<Recorded, StoreError>| match r.expect("record") {
                    Recorded::Applied(t) => {
                        applied += 1;
                        ids.insert(t.conversation.id);
                    }
                    Recorded::Duplicate(c) => {
                        duplicates += 1;
                        ids.insert(c.expect("a duplicate carries the conversation").id);
                    }
                };
                // The same event reaching both nodes at once (a retrying PBX, two webhooks).
                let both = |name: &str, kind: EventKind| {
                    let e = event(&format!("{call}:{name}"), &call, kind);
                    let (a, b) = (a.clone(), b.clone());
                    async move { tokio::join!(a.record_event(e.clone(), Policy::default()), b.record_event(e, Policy::default())) }
                };
                let (ra, rb) = both("new", offer("alice")).await;
                count(ra);
                count(rb);
                // Two different events of one conversation on two nodes at once: neither may
                // overwrite the other's change.
                let answer = event(&format!("{call}:answer"), &call, EventKind::Connected { agent: Some("alice".into()) });
                let transcript = Details { transcript: Some(format!("{call} transcript")), ..Details::default() };
                let transcript = event(&format!("{call}:transcript"), &call, EventKind::Updated(transcript));
                let (ra, rb) = tokio::join!(a.record_event(answer, Policy::default()), b.record_event(transcript, Policy::default()));
                count(ra);
                count(rb);
                for (name, kind) in [("hangup", EventKind::Ended { cause: EndCause::NormalClearing }), ("wrap", EventKind::WrappedUp(WrapUp::default()))] {
                    let (ra, rb) = both(name, kind).await;
                    count(ra);
                    count(rb);
                }
                assert_eq!((applied, duplicates), (5, 3), "{call}: each event applied by one node");
                assert_eq!(ids.len(), 1, "{call}: both nodes saw one conversation");
                call
            })
        })
        .collect();
    let mut conversations = BTreeSet::new();
    for c in calls {
        let call = c.await.expect("call");
        let conversation = a.conversation_by_external(Some("test"), &call).await.expect("read").expect("stored");
        assert_eq!(conversation.state, State::Completed, "{call}");
        assert!(conversation.connected_at.is_some(), "{call}: the answer was kept");
        assert_eq!(conversation.details.transcript, Some(format!("{call} transcript")), "{call}: the concurrent transcript was kept");
        assert!(a.outbox_for_conversation(&conversation.id).await.expect("outbox").is_some(), "{call}: activity enqueued");
        conversations.insert(conversation.id);
    }
    assert_eq!(conversations.len(), 50);
    let stats = b.outbox_stats(Timestamp::now()).await.expect("stats");
    assert_eq!(stats.pending, 50, "one outbox item per conversation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_between_nodes_end_as_with_one_writer() {
    let Some(db) = TestDatabase::create("races").await else { return };
    let (a, b) = (open(&db).await, open(&db).await);

    for i in 0..20 {
        let fields = |name: &str| BTreeMap::from([("id".to_string(), format!("C{i}")), ("name".to_string(), name.to_string())]);
        let (ra, rb) = tokio::join!(a.create_record("contact", fields("from a")), b.create_record("contact", fields("from b")));
        let refused = [&ra, &rb].into_iter().filter(|r| matches!(r, Err(StoreError::Invalid(m)) if m.contains("exists already"))).count();
        assert_eq!((ra.is_ok() as u8 + rb.is_ok() as u8, refused), (1, 1), "C{i}: one create wins, the other is told it exists: {ra:?} {rb:?}");
    }
    assert_eq!(a.count_records("contact").await.expect("count"), 20);

    for i in 0..20 {
        let activity = |notes: &str| Activity {
            key: format!("cxbridge:{i}"),
            kind: "phonecall".into(),
            regarding: vec![RecordRef::new("contact", format!("C{i}"))],
            fields: BTreeMap::from([("notes".to_string(), serde_json::json!(notes))]),
            direction: Direction::Inbound,
            on_behalf_of: None,
        };
        let (from_a, from_b) = (activity("a"), activity("b"));
        let (ra, rb) = tokio::join!(a.upsert_activity(&from_a), b.upsert_activity(&from_b));
        let (ra, rb) = (ra.expect("upsert on a"), rb.expect("upsert on b"));
        assert_eq!(ra.id, rb.id, "cxbridge:{i}: one activity");
        let stored = a.activity_by_key(&format!("cxbridge:{i}")).await.expect("read").expect("stored");
        assert_eq!(stored.regarding.len(), 1);
    }
    assert_eq!(b.count_activities().await.expect("count"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueueing_on_one_node_wakes_the_outbox_worker_of_another() {
    let Some(db) = TestDatabase::create("notify").await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    let wake = Arc::new(tokio::sync::Notify::new());
    b.wake_on_outbox(wake.clone());

    // Wait until B's listener is listening: a notification sent before is not delivered.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.expect("connect");
    let mut listening = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
            .fetch_one(&mut admin)
            .await
            .expect("pg_stat_activity");
        if n > 0 {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listening, "B never listened");

    // Events that enqueue nothing wake nobody.
    a.record_event(event("quiet:new", "quiet", offer("alice")), Policy::default()).await.expect("offer");
    assert!(tokio::time::timeout(Duration::from_millis(300), wake.notified()).await.is_err(), "woken without outbox work");

    missed_call(&a, "loud").await;
    tokio::time::timeout(Duration::from_secs(10), wake.notified()).await.expect("B is woken when A enqueues");

    // A replay is new work too.
    let item = a.outbox_list(None, 1).await.expect("list").pop().expect("the item");
    assert!(a.outbox_replay(item.id, Timestamp::now()).await.expect("replay"));
    tokio::time::timeout(Duration::from_secs(10), wake.notified()).await.expect("B is woken by a replay");
}
