//! One story every storage backend must pass, shared by the backends' test binaries
//! (`tests/sqlite_story.rs`, `tests/postgres.rs`) through `mod conformance;`: each calls
//! [`story`] on its own store, so a new backend (PostgreSQL) runs the very same story.

use std::collections::BTreeMap;
use std::time::Duration;

use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Address, Channel, Details, Direction, EndCause, Event, EventKind, Offer, Policy, State, WrapUp};
use cxbridge_domain::crm::{Activity, RecordRef};
use cxbridge_domain::identify::Identification;

use cxbridge_store::{CrmStore, IndexChanges, OutboxState, RecordQuery, Recorded, Reservation, Store, Verification, VerificationLimits};

fn event(key: &str, call: &str, at: Timestamp, kind: EventKind) -> Event {
    Event { dedup_key: key.into(), source: "test".into(), conversation_key: call.into(), leg: None, at, source_time: true, kind }
}

fn offer(agent: &str) -> EventKind {
    EventKind::Offered(Offer {
        channel: Channel::Voice,
        direction: Direction::Inbound,
        customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
        dialed: Address { raw: "+49309999000".into(), e164: Some("+49309999000".into()) },
        agents: vec![agent.into()],
        queue: Some("sales".into()),
        diversion: None,
        details: Details::default(),
        identification: Identification::None,
    })
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Runs the whole story; panics with a message naming the step that failed.
pub async fn story<S: Store + CrmStore>(store: &S) {
    let t0 = Timestamp::now();
    let at = |s: i64| t0 + Duration::from_secs(s as u64);
    let policy = Policy::default();

    // An inbound call: offered, duplicate offer, connected, ended.
    let r = store.record_event(event("c1:new", "c1", at(0), offer("alice")), policy).await.expect("record offer");
    let Recorded::Applied(t) = r else { panic!("first offer must apply") };
    let id = t.conversation.id.clone();
    assert_eq!(t.conversation.state, State::Offered);
    let dup = store.record_event(event("c1:new", "c1", at(0), offer("alice")), policy).await.expect("record duplicate");
    assert!(matches!(dup, Recorded::Duplicate(Some(ref c)) if c.id == id), "a replayed event is a duplicate: {dup:?}");
    store.record_event(event("c1:answer", "c1", at(2), EventKind::Connected { agent: Some("alice".into()) }), policy).await.expect("answer");
    let open = store.conversations_for_agent("alice").await.expect("agent's conversations");
    assert_eq!(open.len(), 1, "alice has one open conversation");
    store.record_event(event("c1:hangup", "c1", at(62), EventKind::Ended { cause: EndCause::NormalClearing }), policy).await.expect("hangup");
    let c = store.conversation(&id).await.expect("load").expect("exists");
    assert_eq!(c.state, State::Ended, "voice waits for wrap-up");
    assert!(store.outbox_for_conversation(&id).await.expect("outbox").is_none(), "nothing to write before completion");
    let overdue = store.wrapup_overdue(at(120), 10).await.expect("overdue");
    assert_eq!(overdue.len(), 1, "an ended call is overdue once its ACW passed");

    // Wrap-up completes it and enqueues exactly one activity.
    let wrap = WrapUp { disposition: None, notes: Some("called back".into()), ..WrapUp::default() };
    store.record_event(event("c1:wrap", "c1", at(70), EventKind::WrappedUp(wrap.clone())), policy).await.expect("wrap-up");
    store.record_event(event("c1:wrap", "c1", at(70), EventKind::WrappedUp(wrap)), policy).await.expect("wrap-up replay");
    let item = store.outbox_for_conversation(&id).await.expect("outbox").expect("one item");
    assert_eq!(item.state, OutboxState::Pending);
    assert_eq!(store.outbox_stats(at(70)).await.expect("stats").pending, 1);
    assert!(store.conversations_for_agent("alice").await.expect("open").is_empty(), "completed conversations are not reopened");
    assert_eq!(store.conversation_by_external(Some("test"), "c1").await.expect("by external").map(|c| c.id), Some(id.clone()));

    // Claiming leases the item; a second claim sees nothing until the lease ends.
    let claimed = store.outbox_claim(Timestamp::now(), 10, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(store.outbox_claim(Timestamp::now(), 10, Duration::from_secs(30)).await.expect("claim again").is_empty());
    store.outbox_failed(item.id, "CRM down", Some(Timestamp::now()), Timestamp::now()).await.expect("fail");
    let claimed = store.outbox_claim(Timestamp::now(), 10, Duration::from_secs(30)).await.expect("claim after failure");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    // A late transcript arrives while delivering: the delivery does not close the item.
    let late = Details { transcript: Some("hello".into()), ..Details::default() };
    store.record_event(event("c1:transcript", "c1", at(90), EventKind::Updated(late)), policy).await.expect("late data");
    store.outbox_delivered(claimed[0].id, claimed[0].generation, "act-1", Timestamp::now()).await.expect("delivered");
    let item = store.outbox_item(item.id).await.expect("item").expect("exists");
    assert_eq!(item.state, OutboxState::Pending, "newer data must be delivered again");
    let claimed = store.outbox_claim(Timestamp::now(), 10, Duration::from_secs(30)).await.expect("claim late data");
    store.outbox_delivered(claimed[0].id, claimed[0].generation, "act-1", Timestamp::now()).await.expect("delivered");
    let item = store.outbox_item(item.id).await.expect("item").expect("exists");
    assert_eq!(item.state, OutboxState::Delivered);
    assert_eq!(item.crm_ref.as_deref(), Some("act-1"));

    // Dead items are visible and replayable.
    store.outbox_failed(item.id, "400 bad field", None, Timestamp::now()).await.expect("dead");
    assert_eq!(store.outbox_list(Some(OutboxState::Dead), 10).await.expect("dead list").len(), 1);
    assert!(store.outbox_replay(item.id, Timestamp::now()).await.expect("replay"));
    assert_eq!(store.outbox_item(item.id).await.expect("item").expect("exists").state, OutboxState::Pending);
    assert!(!store.outbox_replay(999_999, Timestamp::now()).await.expect("replay unknown"));

    // A call that never ends is stale.
    store.record_event(event("c2:new", "c2", at(0), offer("bob")), policy).await.expect("second call");
    let stale = store.stale_conversations(at(3600), 10).await.expect("stale");
    assert!(stale.iter().any(|c| c.external_id == "c2"));
    // A long, quiet connected call is stale too, but it never rang out: only ringing ones do.
    store.record_event(event("c3:new", "c3", at(0), offer("bob")), policy).await.expect("third call");
    store.record_event(event("c3:answer", "c3", at(1), EventKind::Connected { agent: Some("bob".into()) }), policy).await.expect("answer third");
    let rung_out: Vec<String> = store.rung_out(at(3600), 10).await.expect("rung out").into_iter().map(|c| c.external_id).collect();
    assert!(rung_out.contains(&"c2".to_string()), "the ringing call rang out: {rung_out:?}");
    assert!(!rung_out.contains(&"c3".to_string()), "a connected call never rings out: {rung_out:?}");
    assert!(store.rung_out(at(0), 10).await.expect("rung out").is_empty(), "nothing rang out before it rang");

    // The built-in CRM: records, phone index in any notation, search, activities.
    let ada = store
        .create_record("contact", fields(&[("name", "Ada Lovelace"), ("phone", "+49 (0)30 1234567"), ("mobile", "0171 5550100")]))
        .await
        .expect("create contact");
    store.create_record("account", fields(&[("name", "Analytical Engines"), ("phone", "030/1234567")])).await.expect("create account");
    assert!(store.create_record("nope", BTreeMap::new()).await.is_err(), "unknown entity");
    let found = store.records_by_phone("+49301234567", &["contact".into(), "account".into()], 10).await.expect("by phone");
    assert_eq!(found.iter().map(|r| r.entity.as_str()).collect::<Vec<_>>(), ["contact", "account"], "priority order");
    let by_query = store
        .search_records("contact", &RecordQuery { phone: Some("0049 30 1234567".into()), limit: 10, ..RecordQuery::default() })
        .await
        .expect("search by phone");
    assert_eq!(by_query.len(), 1);
    let by_text = store
        .search_records("contact", &RecordQuery { text: Some("lovelace".into()), limit: 10, ..RecordQuery::default() })
        .await
        .expect("search by text");
    assert_eq!(by_text.len(), 1);
    let updated = store.update_record("contact", &ada.id, fields(&[("phone", "+420 602 123 456")])).await.expect("update").expect("exists");
    assert_eq!(updated.fields.get("name").map(String::as_str), Some("Ada Lovelace"));
    assert!(store.records_by_phone("+49301234567", &["contact".into()], 10).await.expect("old number").is_empty(), "index follows updates");
    assert_eq!(store.records_by_phone("+420602123456", &["contact".into()], 10).await.expect("new number").len(), 1);
    let n = store
        .import_records("lead", vec![fields(&[("id", "L1"), ("name", "Lead one"), ("phone", "030 7654321")]), fields(&[("name", "Lead two")])])
        .await
        .expect("import");
    assert_eq!(n, 2);
    assert_eq!(store.count_records("lead").await.expect("count"), 2);
    // Importing an existing id updates it, and its numbers move; of two rows with one id,
    // the later one wins (as if imported row by row).
    let n = store
        .import_records(
            "lead",
            vec![fields(&[("id", "L1"), ("name", "Lead one"), ("phone", "030 1111111")]), fields(&[("id", "L1"), ("name", "Lead one, again"), ("phone", "030 2222222")])],
        )
        .await
        .expect("import again");
    assert_eq!(n, 2);
    assert_eq!(store.count_records("lead").await.expect("count"), 2, "updated, not duplicated");
    assert!(store.records_by_phone("+49307654321", &["lead".into()], 10).await.expect("old number").is_empty(), "an import moves numbers");
    assert!(store.records_by_phone("+49301111111", &["lead".into()], 10).await.expect("overwritten number").is_empty(), "the later row wins");
    let again = store.records_by_phone("+49302222222", &["lead".into()], 10).await.expect("new number");
    assert_eq!(again.iter().map(|r| r.fields.get("name").map(String::as_str)).collect::<Vec<_>>(), [Some("Lead one, again")]);
    let search = |fields: BTreeMap<String, String>, text: Option<&str>| RecordQuery { fields, text: text.map(str::to_string), limit: 10, ..RecordQuery::default() };
    let by_field = store.search_records("lead", &search(fields(&[("name", "Lead two")]), None)).await.expect("search by field");
    assert_eq!(by_field.len(), 1, "exact field match");
    assert!(store.search_records("lead", &search(fields(&[("name", "Lead")]), None)).await.expect("partial field").is_empty(), "field matches are exact");
    assert_eq!(store.search_records("lead", &search(BTreeMap::new(), Some("LEAD ONE"))).await.expect("text").len(), 1, "text search ignores case");
    assert!(store.search_records("lead", &search(BTreeMap::new(), Some("Lead_one"))).await.expect("text").is_empty(), "`_` is no wildcard");
    assert!(store.search_records("lead", &search(BTreeMap::new(), Some("100%"))).await.expect("text").is_empty(), "`%` is no wildcard");
    for syntax in ["name", "\"name\"", "\":\"", "{\""] {
        assert!(store.search_records("lead", &search(BTreeMap::new(), Some(syntax))).await.expect("text").is_empty(), "text search matches values, not `{syntax}` of the JSON");
    }

    let regarding = RecordRef::new("contact", &ada.id);
    let mut activity = Activity { key: "cxbridge:x".into(), kind: "phonecall".into(), regarding: vec![regarding.clone()], fields: BTreeMap::new(), direction: cxbridge_domain::conversation::Direction::Inbound, on_behalf_of: None };
    let a1 = store.upsert_activity(&activity).await.expect("activity");
    activity.fields.insert("notes".into(), serde_json::json!("later"));
    let a2 = store.upsert_activity(&activity).await.expect("activity again");
    assert_eq!(a1.id, a2.id, "the same key is the same activity");
    assert_eq!(store.count_activities().await.expect("count"), 1);
    let listed = store.activities_for(&regarding, 10).await.expect("activities of record");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fields.get("notes"), Some(&serde_json::json!("later")));
    assert!(store.delete_record("contact", &ada.id).await.expect("delete"));
    assert!(store.record("contact", &ada.id).await.expect("read deleted").is_none());

    // The local index of an external CRM: pages of a change feed with their cursor.
    let now = cxbridge_domain::Timestamp::now();
    let page = |upserts: Vec<(&str, &str)>, deletes: Vec<&str>, cursor: &str, reset: bool, pass_done: bool| IndexChanges {
        reset,
        upserts: upserts.into_iter().map(|(id, phone)| (id.to_string(), fields(&[("name", id), ("phone", phone)]))).collect(),
        deletes: deletes.into_iter().map(str::to_string).collect(),
        cursor: cursor.into(),
        pass_done,
    };
    store.apply_index_changes("account", page(vec![("X1", "+1 415 555 0100")], vec![], "next-1", true, false), now).await.expect("first page");
    let states = store.index_sync_states().await.expect("states");
    assert_eq!(states.iter().find(|s| s.entity == "account").map(|s| (s.cursor.as_deref(), s.complete)), Some((Some("next-1"), false)));
    store.apply_index_changes("account", page(vec![("X2", "+1 (415) 555-0199")], vec![], "delta-1", false, true), now).await.expect("last page");
    assert_eq!(store.records_by_phone("+14155550199", &["account".into()], 10).await.expect("indexed").len(), 1);
    store.apply_index_changes("account", page(vec![("X2", "+1 415 555 0142")], vec!["X1"], "delta-2", false, true), now).await.expect("delta");
    assert!(store.records_by_phone("+14155550100", &["account".into()], 10).await.expect("deleted").is_empty(), "deletes leave the index");
    assert!(store.records_by_phone("+14155550199", &["account".into()], 10).await.expect("moved").is_empty(), "changed numbers move");
    assert_eq!(store.records_by_phone("+14155550142", &["account".into()], 10).await.expect("moved").len(), 1);
    store.index_sync_failed("account", "Dataverse answered 503").await.expect("failure noted");
    let state = store.index_sync_states().await.expect("states").into_iter().find(|s| s.entity == "account").expect("account state");
    assert_eq!((state.cursor.as_deref(), state.complete, state.last_error.as_deref()), (Some("delta-2"), true, Some("Dataverse answered 503")));
    store.apply_index_changes("account", page(vec![], vec![], "delta-0", true, false), now).await.expect("start over");
    assert_eq!(store.count_records("account").await.expect("count"), 0, "a reset drops what was indexed");
    assert!(store.index_sync_states().await.expect("states").iter().any(|s| s.entity == "account" && !s.complete), "starting over means the index is not complete until the pass ends");

    store.ping().await.expect("ping");

    // Signing out voids older sessions; a late, older sign-out never moves the time back.
    assert_eq!(store.signed_out_at("alice").await.expect("never"), None);
    store.record_sign_out("alice", at(500)).await.expect("sign out");
    store.record_sign_out("alice", at(400)).await.expect("older sign out");
    assert_eq!(store.signed_out_at("alice").await.expect("read").map(|t| t.as_millisecond()), Some(at(500).as_millisecond()));
    assert_eq!(store.signed_out_at("bob").await.expect("other agent"), None);

    // Verification attempts are audited; only refusals count against the limits.
    let ada = RecordRef::new("contact", "ada");
    let attempt = |secs, number: &str, record: Option<&RecordRef>, outcome: &str| Verification {
        at: at(secs),
        number: number.into(),
        record: record.cloned(),
        kind: "pin".into(),
        outcome: outcome.into(),
    };
    for v in [
        attempt(600, "+4930111", Some(&ada), "refused"),
        attempt(610, "+4930111", Some(&ada), "refused"),
        attempt(620, "+4930222", Some(&ada), "refused"),
        attempt(630, "+4930111", Some(&ada), "verified"),
        attempt(640, "+4930333", None, "refused"),
    ] {
        store.record_verification(&v).await.expect("audit");
    }
    // Reserving an attempt counts failed and unfinished attempts against each limit.
    let limits = |per_number, per_record, per_minute| VerificationLimits { per_number, per_record, window: Duration::from_secs(600), per_minute };
    let bob = RecordRef::new("contact", "bob");
    let carol = RecordRef::new("contact", "carol");
    let reserve = |secs, number: &'static str, records: Vec<RecordRef>, l: VerificationLimits| async move {
        let v = Verification { at: at(secs), number: number.into(), record: None, kind: "pin".into(), outcome: String::new() };
        store.reserve_verification(&v, &records, &l).await.expect("reserve")
    };
    let locked = |secs| Reservation::Locked { retry_after_secs: secs };
    assert_eq!(reserve(650, "+4930111", vec![], limits(2, 99, 99)).await, locked(600), "two refusals from the number");
    assert_eq!(reserve(650, "+4930444", vec![bob.clone(), ada.clone()], limits(99, 3, 99)).await, locked(600), "any matching record at its limit locks");
    assert_eq!(reserve(650, "+4930444", vec![bob.clone()], limits(99, 3, 4)).await, locked(60), "four failures in the last minute over all numbers");
    let Reservation::Reserved(first) = reserve(1300, "+4930555", vec![bob.clone(), carol.clone()], limits(1, 1, 99)).await else {
        panic!("older attempts fall out of the window")
    };
    assert_eq!(reserve(1301, "+4930666", vec![carol.clone()], limits(1, 1, 99)).await, locked(600), "an unfinished attempt counts, on every record it checks");
    store.finish_verification(first, "verified", Some(&bob)).await.expect("finish");
    let Reservation::Reserved(second) = reserve(1302, "+4930666", vec![carol.clone()], limits(1, 1, 99)).await else {
        panic!("a verified attempt does not count")
    };
    store.finish_verification(second, "refused", Some(&carol)).await.expect("finish");
    let trail = store.verifications(20).await.expect("trail");
    assert_eq!((trail.len(), trail[0].number.as_str(), trail[0].record.as_ref(), trail[0].outcome.as_str()), (11, "+4930666", Some(&carol), "refused"), "newest first");
    let outcomes: Vec<&str> = trail.iter().take(6).map(|v| v.outcome.as_str()).collect();
    assert_eq!(outcomes, ["refused", "locked", "verified", "locked", "locked", "locked"]);
}

/// Retention on a fresh store: the pruning job deletes delivered items, the events of
/// completed conversations and old audit rows, in batches, and nothing else; the delivery
/// count survives it.
pub async fn retention_story<S: Store>(store: &S) {
    let policy = Policy::default();
    let now = Timestamp::now();
    let complete = |call: &'static str| async move {
        for (key, kind) in [
            ("new", offer("alice")),
            ("answer", EventKind::Connected { agent: Some("alice".into()) }),
            ("hangup", EventKind::Ended { cause: EndCause::NormalClearing }),
            ("wrap", EventKind::WrappedUp(WrapUp::default())),
        ] {
            store.record_event(event(&format!("{call}:{key}"), call, now, kind), policy).await.expect("record");
        }
        let c = store.conversation_by_external(Some("test"), call).await.expect("load").expect("exists");
        store.outbox_for_conversation(&c.id).await.expect("outbox").expect("an item")
    };
    let delivered = complete("r1").await;
    let claimed = store.outbox_claim(Timestamp::now(), 10, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    store.outbox_delivered(delivered.id, claimed[0].generation, "act-r1", Timestamp::now()).await.expect("delivered");
    let dead = complete("r2").await;
    store.outbox_failed(dead.id, "400 bad field", None, Timestamp::now()).await.expect("dead");
    store.record_event(event("r3:new", "r3", now, offer("bob")), policy).await.expect("an open call");
    let audit = Verification { at: now, number: "+4930111".into(), record: None, kind: "pin".into(), outcome: "refused".into() };
    store.record_verification(&audit).await.expect("audit");
    let before = store.outbox_stats(Timestamp::now()).await.expect("stats");
    assert_eq!((before.pending, before.delivered, before.dead), (0, 1, 1));

    let nothing = store.prune(&cxbridge_store::Retention::default(), 10).await.expect("prune nothing");
    assert_eq!(nothing, cxbridge_store::Pruned::default(), "no cutoffs, nothing pruned");
    let later = Timestamp::now() + Duration::from_secs(60);
    let all_old = cxbridge_store::Retention { delivered_before: Some(later), events_before: Some(later), verifications_before: Some(later) };
    // Batches of one: the job calls again while a batch came back full.
    let mut total = cxbridge_store::Pruned::default();
    for _ in 0..20 {
        let p = store.prune(&all_old, 1).await.expect("prune");
        total += p;
        if !p.more_waiting(1) {
            break;
        }
    }
    assert_eq!(total, cxbridge_store::Pruned { outbox: 1, events: 8, verifications: 1 }, "the delivered item, both completed calls' events, the audit row");
    assert!(store.outbox_item(delivered.id).await.expect("item").is_none(), "delivered items are pruned");
    assert_eq!(store.outbox_item(dead.id).await.expect("item").map(|i| i.state), Some(OutboxState::Dead), "dead items stay for replay");
    let replay = store.record_event(event("r3:new", "r3", now, offer("bob")), policy).await.expect("replay open");
    assert!(matches!(replay, Recorded::Duplicate(_)), "an open conversation's events stay deduplicated: {replay:?}");
    let resent = store.record_event(event("r1:new", "r1", now, offer("alice")), policy).await.expect("resend pruned");
    assert!(
        matches!(&resent, Recorded::Applied(t) if t.absorbed && t.conversation.state == State::Completed),
        "a resend of a pruned event is absorbed by its completed conversation: {resent:?}"
    );
    assert!(store.verifications(10).await.expect("trail").is_empty(), "old audit rows are pruned");
    let after = store.outbox_stats(Timestamp::now()).await.expect("stats");
    assert_eq!((after.pending, after.delivered, after.dead), (0, 1, 1), "pruning removes rows, not the count of deliveries");
}

/// The first half of the reindex story, on a store opened with `DE` phone rules: records
/// whose national numbers get their keys by those rules. Returns the records' ids.
pub async fn reindex_story_before<S: CrmStore>(store: &S) -> Vec<String> {
    // A store that starts empty records its rules at once; nothing to rebuild.
    let first = store.reindex_phones(2, &|_| {}).await.expect("reindex on first open");
    assert!(first.iter().all(|r| r.records == 0 && r.done), "an empty store rebuilds nothing: {first:?}");
    assert!(store.reindex_phones(2, &|_| {}).await.expect("again").is_empty(), "and the rules are recorded");
    let mut ids = vec![];
    for (name, phone) in [("Berlin office", "030 1234567"), ("Munich office", "089 7654321"), ("London office", "+44 20 7946 0958")] {
        let r = store.create_record("contact", fields(&[("name", name), ("phone", phone)])).await.expect("create");
        ids.push(r.id);
    }
    let berlin = store.records_by_phone("+49301234567", &["contact".into()], 5).await.expect("lookup");
    assert_eq!(berlin.len(), 1, "a German national number is read as German in a DE hub");
    ids
}

/// The second half, on the same database opened with `AT` rules (`default_region` changed):
/// the national numbers now mean Austrian numbers; the index is rebuilt in batches, once.
pub async fn reindex_story_after<S: CrmStore>(store: &S, ids: &[String]) {
    let stale = store.records_by_phone("+49301234567", &["contact".into()], 5).await.expect("lookup before");
    assert_eq!(stale.len(), 1, "before the rebuild the old key is still there");
    let seen = std::sync::Mutex::new(vec![]);
    let done = store
        .reindex_phones(2, &|r| {
            if let Ok(mut s) = seen.lock() {
                s.push(r.clone());
            }
        })
        .await
        .expect("reindex");
    let contact = done.iter().find(|r| r.entity == "contact").expect("the contacts were rebuilt");
    assert_eq!(contact.records, ids.len() as u64, "every contact once");
    assert!(contact.previous.as_deref().is_some_and(|p| p.contains("/DE;")), "the old rules are named: {contact:?}");
    let progress = seen.lock().map(|s| s.iter().filter(|r| r.entity == "contact").count()).unwrap_or(0);
    assert!(progress >= 3, "progress after each batch of two and at the end ({progress} reports)");
    assert!(store.records_by_phone("+49301234567", &["contact".into()], 5).await.expect("lookup").is_empty(), "the German key is gone");
    let vienna = store.records_by_phone("+43301234567", &["contact".into()], 5).await.expect("lookup");
    assert_eq!(vienna.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec![ids[0].as_str()], "the same digits, read as Austrian now");
    let london = store.records_by_phone("+442079460958", &["contact".into()], 5).await.expect("lookup");
    assert_eq!(london.len(), 1, "a number with its country code keeps its key");
    assert!(store.reindex_phones(2, &|_| {}).await.expect("again").is_empty(), "a second start rebuilds nothing");
}
