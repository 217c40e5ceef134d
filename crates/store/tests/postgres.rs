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


/// A call's five events on one leg (so each takes two advisory locks): offer, answer,
/// transcript, hangup, wrap-up.
fn call_events(call: &str) -> [Event; 5] {
    let on_leg = |name: &str, kind: EventKind| Event { leg: Some(format!("{call}-leg")), ..event(&format!("{call}:{name}"), call, kind) };
    let transcript = Details { transcript: Some(format!("{call} transcript")), ..Details::default() };
    [
        on_leg("new", offer("alice")),
        on_leg("answer", EventKind::Connected { agent: Some("alice".into()) }),
        on_leg("transcript", EventKind::Updated(transcript)),
        on_leg("hangup", EventKind::Ended { cause: EndCause::NormalClearing }),
        on_leg("wrap", EventKind::WrappedUp(WrapUp::default())),
    ]
}

/// Queues the events in this order without waiting for an answer in between (each
/// `record_event` hands its event to the writer at its first poll, and `join!` polls them
/// in order), so they share batches; returns whether each was applied (else a duplicate).
async fn burst(store: &PgStore, events: [Event; 5]) -> [bool; 5] {
    let [e0, e1, e2, e3, e4] = events;
    let p = Policy::default();
    let results = tokio::join!(store.record_event(e0, p), store.record_event(e1, p), store.record_event(e2, p), store.record_event(e3, p), store.record_event(e4, p));
    let applied = |r: Result<Recorded, StoreError>| matches!(r.expect("every event of the burst is recorded"), Recorded::Applied(_));
    [applied(results.0), applied(results.1), applied(results.2), applied(results.3), applied(results.4)]
}

/// Group commit on two nodes at once: each node receives every event of 40 calls (so every
/// event twice), all calls at the same time, each call's events queued in order without
/// waiting for answers. The events of one call land in the same batches and must see each
/// other's writes (the answer needs the offer of its own batch); the two nodes' batches hold
/// many of the same conversations, in different orders, and must never deadlock (PostgreSQL
/// would abort one of them, an error here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_on_two_nodes_applies_every_event_once_and_in_order() {
    let Some(db) = TestDatabase::create("burst").await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    const CALLS: usize = 40;
    let calls: Vec<String> = (0..CALLS).map(|i| format!("burst-{i}")).collect();
    // Node A gets the calls in one order, node B in the other.
    let mut tasks = Vec::new();
    for (store, order) in [(&a, calls.clone()), (&b, calls.iter().rev().cloned().collect())] {
        for call in order {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { (call.clone(), burst(&store, call_events(&call)).await) }));
        }
    }
    let mut applied: BTreeMap<String, [u32; 5]> = BTreeMap::new();
    for t in tasks {
        let (call, flags) = tokio::time::timeout(Duration::from_secs(60), t).await.expect("no batch waits forever").expect("task");
        let counts = applied.entry(call).or_default();
        for (n, f) in counts.iter_mut().zip(flags) {
            *n += u32::from(f);
        }
    }
    let mut conversations = BTreeSet::new();
    for call in &calls {
        assert_eq!(applied[call], [1; 5], "{call}: each event applied by exactly one node (offer, answer, transcript, hangup, wrap-up)");
        let c = b.conversation_by_external(Some("test"), call).await.expect("read").expect("stored");
        assert_eq!(c.state, State::Completed, "{call}");
        assert!(c.connected_at.is_some(), "{call}: the answer was kept");
        assert_eq!(c.details.transcript, Some(format!("{call} transcript")), "{call}");
        let by_leg = a.conversation_by_external(Some("test"), &format!("{call}-leg")).await.expect("read").expect("the leg is indexed");
        assert_eq!(by_leg.id, c.id, "{call}: the leg names the same conversation");
        let item = a.outbox_for_conversation(&c.id).await.expect("outbox").expect("the activity is enqueued");
        assert_eq!(item.generation, 1, "{call}: enqueued once, at the wrap-up");
        conversations.insert(c.id);
    }
    assert_eq!(conversations.len(), CALLS);
    assert_eq!(a.outbox_stats(Timestamp::now()).await.expect("stats").pending, CALLS as u64);
}

/// One batch holding an event the domain refuses (a wrap-up of a call nobody offered) and
/// one the database refuses (a NUL character, which PostgreSQL's text never holds): each of
/// the two is answered with its own error, every other event of the batch is stored, the
/// hangup seeing the offer of the same batch. The writer is held on a first event whose
/// advisory lock the test holds, so the six events queue up and go into one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_events_leave_the_rest_of_their_batch_stored() {
    let Some(db) = TestDatabase::create("refused").await else { return };
    let store = open(&db).await;
    let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(cxbridge_store::postgres::lock_key("test", "held")).execute(&mut holder).await.expect("lock");
    let held = {
        let store = store.clone();
        tokio::spawn(async move { store.record_event(event("held:new", "held", offer("alice")), Policy::default()).await })
    };
    // Until the writer waits for the lock; then everything sent meanwhile waits in its queue.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.expect("connect");
    let mut waiting = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            .fetch_one(&mut admin)
            .await
            .expect("pg_locks");
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "the writer never waited for the held lock");

    let p = Policy::default();
    let ghost = event("ghost:wrap", "ghost", EventKind::WrappedUp(WrapUp::default()));
    let nul = event("bad\0key:new", "bad", offer("alice"));
    let hangup = event("mix-0:end", "mix-0", EventKind::Ended { cause: EndCause::NoAnswer });
    let batch = async {
        tokio::join!(
            store.record_event(event("mix-0:new", "mix-0", offer("alice")), p),
            store.record_event(ghost, p),
            store.record_event(event("mix-1:new", "mix-1", offer("bob")), p),
            store.record_event(nul, p),
            store.record_event(hangup, p),
            store.record_event(event("mix-2:new", "mix-2", offer("carol")), p),
        )
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.expect("release the lock");
    };
    let ((offer0, ghost, offer1, nul, hangup, offer2), ()) = tokio::join!(batch, release);
    assert!(matches!(held.await.expect("task"), Ok(Recorded::Applied(_))));

    assert!(matches!(ghost, Err(StoreError::Transition(_))), "the domain's refusal is the event's own: {ghost:?}");
    assert!(matches!(nul, Err(StoreError::Database(_))), "the database's refusal is the event's own, not a 503 for all: {nul:?}");
    for (name, r) in [("mix-0 offer", &offer0), ("mix-1 offer", &offer1), ("mix-0 hangup", &hangup), ("mix-2 offer", &offer2)] {
        assert!(matches!(r, Ok(Recorded::Applied(_))), "{name}: {r:?}");
    }
    let mix0 = store.conversation_by_external(Some("test"), "mix-0").await.expect("read").expect("stored");
    assert_eq!(mix0.state, State::Completed, "the hangup saw the offer of its own batch");
    assert!(store.outbox_for_conversation(&mix0.id).await.expect("outbox").is_some());
    for call in ["mix-1", "mix-2", "held"] {
        assert_eq!(store.conversation_by_external(Some("test"), call).await.expect("read").map(|c| c.state), Some(State::Offered), "{call}");
    }
    for call in ["ghost", "bad"] {
        assert!(store.conversation_by_external(Some("test"), call).await.expect("read").is_none(), "{call} stored nothing");
    }
    // Sent again, each is still what it was: the refused ones were never recorded.
    let again = store.record_event(event("mix-1:new", "mix-1", offer("bob")), p).await.expect("again");
    assert!(matches!(again, Recorded::Duplicate(Some(_))));
    let ghost = store.record_event(event("ghost:wrap", "ghost", EventKind::WrappedUp(WrapUp::default())), p).await;
    assert!(matches!(ghost, Err(StoreError::Transition(_))));
}
