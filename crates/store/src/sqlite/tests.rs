use super::*;
use cxbridge_domain::conversation::{Address, Channel, Details, Direction, EventKind, Offer};

fn schema() -> CrmSchema {
    CrmSchema { entities: cxbridge_domain::crm::EntitySpec::builtin_defaults(), normalizer: cxbridge_domain::phone::PhoneNormalizer::new(Some("DE"), &[]).expect("region") }
}

fn offer(call: &str) -> Event {
    Event {
        dedup_key: format!("{call}:new"),
        source: "test".into(),
        conversation_key: call.into(),
        leg: None,
        at: Timestamp::now(),
        source_time: false,
        kind: EventKind::Offered(Offer {
            channel: Channel::Voice,
            direction: Direction::Inbound,
            customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
            dialed: Address { raw: "+49309999000".into(), e164: Some("+49309999000".into()) },
            agents: vec!["alice".into()],
            queue: None,
            diversion: None,
            details: Details::default(),
            identification: cxbridge_domain::identify::Identification::None,
        }),
    }
}

/// A database that refuses writes (here the writer connection made read-only, as a
/// read-only file does) fails the event with `Unavailable` — the server's 503 — and
/// `ping`; the connection is replaced, so the next event is stored without a restart.
#[tokio::test]
async fn a_refused_write_fails_the_event_and_the_next_connection_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite"), schema(), Durability::Full).await.expect("open");
    store.ping().await.expect("a fresh database takes writes");
    store
        .writer
        .raw(|c| {
            let _ = c.execute_batch("PRAGMA query_only = ON");
        })
        .await
        .expect("read-only writer");
    let refused = store.record_event(offer("ro-1"), Policy::default()).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    assert!(store.health.recent_failure().is_some_and(|f| f.contains("readonly")), "{:?}", store.health.recent_failure());
    assert!(store.ping().await.is_err(), "ping reports the refused write");
    assert!(store.conversation_by_external(Some("test"), "ro-1").await.expect("read").is_none(), "nothing of a refused event is stored");
    // The failed transaction took its connection with it: a fresh one takes writes.
    let stored = store.record_event(offer("ro-2"), Policy::default()).await;
    assert!(matches!(stored, Ok(Recorded::Applied(_))), "{stored:?}");
}

/// The writes of one group commit are independent: one refused (an answer for a call nobody
/// offered) and one whose statement fails leave the others of the same batch stored.
#[tokio::test]
async fn one_failed_write_of_a_batch_leaves_the_others_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite"), schema(), Durability::Full).await.expect("open");
    // A burst large enough that the writer takes several writes per transaction.
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..200 {
        let store = store.clone();
        writes.spawn(async move {
            match n % 10 {
                // Fails half-way: the first statement writes, the second is wrong.
                3 => store
                    .write(move |c| {
                        exec(c, "INSERT INTO agent_sign_outs (agent, at) VALUES (?1, 1)", [format!("half-{n}")])?;
                        exec(c, "INSERT INTO no_such_table VALUES (1)", [])?;
                        Ok(())
                    })
                    .await
                    .map(|()| false),
                _ => store.record_event(offer(&format!("burst-{n}")), Policy::default()).await.map(|r| matches!(r, Recorded::Applied(_))),
            }
        });
    }
    let (mut applied, mut failed) = (0, 0);
    while let Some(r) = writes.join_next().await {
        match r.expect("task") {
            Ok(true) => applied += 1,
            Ok(false) => panic!("a broken write succeeded"),
            Err(StoreError::Sqlite(_)) => failed += 1,
            Err(e) => panic!("unexpected failure {e}"),
        }
    }
    assert_eq!((applied, failed), (180, 20));
    for n in (0..200).filter(|n| n % 10 != 3) {
        assert!(store.conversation_by_external(Some("test"), &format!("burst-{n}")).await.expect("read").is_some(), "burst-{n} was lost");
    }
    let half = store.read(|c| units::count(c, "SELECT COUNT(*) FROM agent_sign_outs WHERE agent LIKE 'half-%'", [])).await.expect("count");
    assert_eq!(half, 0, "a failed write's first statement was rolled back with it");
}

/// The health check is unauthenticated and polled: its queries must walk an index over
/// the few pending and dead items, never the whole outbox (3,000,000 delivered rows made
/// each call take 0.3 s).
#[tokio::test]
async fn outbox_stats_never_scan_the_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite"), schema(), Durability::Normal).await.expect("open");
    for sql in [OUTBOX_OPEN_COUNTS, OUTBOX_PENDING_AGE] {
        let steps = store
            .read(move |c| {
                let plan = format!("EXPLAIN QUERY PLAN {sql}");
                let bind: Vec<i64> = if sql.contains("?1") { vec![0] } else { vec![] };
                units::all(c, &plan, rusqlite::params_from_iter(bind), |r| Ok(r.0.get::<_, String>(3)?))
            })
            .await
            .expect("plan");
        // `SEARCH` walks a range of an index; any `SCAN` (even `USING COVERING INDEX`)
        // reads every row.
        assert!(steps.iter().any(|d| d.starts_with("SEARCH outbox USING")), "{sql}: {steps:?}");
        assert!(!steps.iter().any(|d| d.starts_with("SCAN")), "{sql} scans the outbox: {steps:?}");
    }
}

/// Commits never checkpoint (the writer's threshold is far off): the checkpoint thread
/// copies the WAL into the database file beside them. Without it the file would stay at its
/// first few pages while the WAL grew to the backstop's 64 MiB.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sqlite");
    let store = SqliteStore::open(&path, schema(), Durability::Normal).await.expect("open");
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..2_000 {
        let store = store.clone();
        writes.spawn(async move { store.record_event(offer(&format!("wal-{n}")), Policy::default()).await });
    }
    while let Some(r) = writes.join_next().await {
        assert!(matches!(r.expect("task"), Ok(Recorded::Applied(_))));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while size() < before + 1_000_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(size() >= before + 1_000_000, "the database file is still {} bytes (was {before}): nothing was checkpointed", size());
}

/// The statements of the hot paths are prepared once per connection and stay prepared: a
/// statement SQLite re-prepares at every new binding (a JOIN with bound parameters does
/// that) costs a parse and a plan per event, a third of the writer's time.
#[test]
fn hot_statements_are_prepared_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = connect(&dir.path().join("x.db"), Role::Writer, Durability::Full).expect("open");
    migrate::run(&c).expect("migrate");
    let statements: [(&str, &[&str]); 5] = [
        (units::EVENT_LOOKUP, &["dedup", "source", "key", "leg"]),
        (units::BY_SOURCE_KEY, &["source", "key"]),
        (units::BY_ANY_KEY, &["key"]),
        (units::OF_AGENT, &["agent"]),
        (units::BY_PHONE, &["+4930123"]),
    ];
    for (sql, values) in statements {
        for round in 0..3 {
            let mut stmt = c.prepare_cached(sql).expect("prepare");
            let params: Vec<String> = values.iter().map(|v| format!("{v}-{round}")).collect();
            let mut rows = stmt.query(rusqlite::params_from_iter(params)).expect("query");
            while rows.next().expect("row").is_some() {}
            drop(rows);
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "re-prepared on round {round}: {sql}");
        }
    }
}
