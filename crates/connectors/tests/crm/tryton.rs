//! The Tryton adapter against a real `trytond` with the `party` module (installed by
//! `scripts/setup-tryton`). One server with a fresh SQLite database serves every test of
//! this binary; each test works on its own parties and phone numbers. Tests that stop a
//! server or expire sessions start a second `trytond` on the same database.
//!
//! Without the installation the tests print that they are skipped, unless
//! `CXBRIDGE_REQUIRE_PEERS=1` (CI), where they fail.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use cxbridge_connectors::client::oauth::Secret;
use cxbridge_connectors::sinks::crm::tryton::{Tryton, TrytonConfig, default_entities};
use cxbridge_domain::conversation::Direction;
use cxbridge_domain::crm::{Activity, Candidate, Crm, CrmError, EntitySpec, RecordRef, SearchQuery};
use cxbridge_domain::phone::PhoneNormalizer;
use serde_json::{Value, json};


use cxbridge_testkit::tryton::{ADMIN_PASSWORD, DATABASE, Fixture, free_port, start_trytond, write_config};

fn fixture() -> Option<&'static Fixture> {
    cxbridge_testkit::tryton::shared()
}

fn config(url: &str, user: &str) -> TrytonConfig {
    serde_json::from_value(json!({ "url": url, "database": DATABASE, "user": user })).expect("config")
}

fn adapter_at(url: &str, user: &str, password: &str, region: Option<&str>) -> Tryton {
    let normalizer = PhoneNormalizer::new(region, &[]).expect("normalizer");
    Tryton::new(&config(url, user), Secret::new(password), normalizer, cxbridge_connectors::client::http_client()).expect("adapter")
}

fn adapter(f: &Fixture) -> Tryton {
    adapter_at(&f.server.url, "admin", ADMIN_PASSWORD, Some("US"))
}

fn party_spec() -> EntitySpec {
    default_entities().remove(0)
}

/// Tryton's JSON-RPC spoken directly, for setting up what the adapter does not write
/// (addresses, numbers as typed, users) and for checking what it wrote.
struct Admin {
    http: reqwest::Client,
    endpoint: String,
    auth: String,
}

impl Admin {
    async fn login(f: &Fixture) -> Admin {
        let http = cxbridge_connectors::client::http_client();
        let endpoint = format!("{}/{DATABASE}/rpc/", f.server.url);
        let answer: Value = http
            .post(&endpoint)
            .json(&json!({ "id": 1, "method": "common.db.login", "params": ["admin", { "password": ADMIN_PASSWORD }, "en"] }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login answer");
        let (uid, key) = (answer["result"][0].as_i64().expect("uid"), answer["result"][1].as_str().expect("session"));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{uid}:{key}"));
        Admin { http, endpoint, auth: format!("Session {auth}") }
    }

    /// `model.<model>.<method>(args…, {})`; panics on an error.
    async fn call(&self, model: &str, method: &str, mut args: Vec<Value>) -> Value {
        args.push(json!({}));
        let method = format!("model.{model}.{method}");
        let answer: Value = self
            .http
            .post(&self.endpoint)
            .header("Authorization", &self.auth)
            .json(&json!({ "id": 1, "method": method, "params": args }))
            .send()
            .await
            .expect("rpc")
            .json()
            .await
            .expect("rpc answer");
        assert!(answer.get("error").is_none_or(Value::is_null), "{method} failed: {answer}");
        answer["result"].clone()
    }

    async fn create(&self, model: &str, values: Value) -> i64 {
        self.call(model, "create", vec![json!([values])]).await[0].as_i64().expect("created id")
    }

    /// The country `code`, created on first use.
    async fn country(&self, code: &str, name: &str) -> i64 {
        let found = self.call("country.country", "search", vec![json!([["code", "=", code]])]).await;
        match found[0].as_i64() {
            Some(id) => id,
            None => self.create("country.country", json!({ "name": name, "code": code })).await,
        }
    }

    async fn notes_on(&self, party: &str) -> Vec<Value> {
        let domain = json!([["resource", "=", format!("party.party,{party}")]]);
        self.call("ir.note", "search_read", vec![domain, json!(0), Value::Null, Value::Null, json!(["message"])])
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn titles(candidates: &[Candidate]) -> Vec<&str> {
    candidates.iter().map(|c| c.title.as_str()).collect()
}

fn call_activity(key: &str, parties: &[&str], message: &str) -> Activity {
    Activity {
        key: key.into(),
        kind: "phonecall".into(),
        regarding: parties.iter().map(|p| RecordRef::new("party", *p)).collect(),
        fields: [("subject".to_string(), json!("Inbound voice +14155550141 (answered)")), ("message".to_string(), json!(message))].into(),
        direction: Direction::Inbound,
        on_behalf_of: None,
    }
}

#[tokio::test]
async fn parties_are_found_by_e164_whatever_notation_the_number_was_typed_in() {
    let Some(f) = fixture() else { return };
    let admin = Admin::login(f).await;
    let tryton = adapter(f);
    let spec = party_spec();
    // A national number is valid to Tryton only with a country to read it in: the party's address.
    let us = admin.country("US", "United States").await;
    let national = admin
        .create("party.party", json!({
            "name": "Nora National",
            "addresses": [["create", [{ "country": us }]]],
            "contact_mechanisms": [["create", [{ "type": "phone", "value": "(415) 555-0123" }]]],
        }))
        .await;
    admin
        .create("party.party", json!({
            "name": "Ian International",
            "contact_mechanisms": [["create", [{ "type": "mobile", "value": "+1 415-555-0123" }, { "type": "email", "value": "ian@example.com" }]]],
        }))
        .await;
    admin
        .create("party.party", json!({ "name": "Pia Punctuation", "contact_mechanisms": [["create", [{ "type": "phone", "value": "+1 (415) 555 0124" }]]] }))
        .await;

    let both = tryton.find_by_phone("+14155550123", std::slice::from_ref(&spec), 10).await.expect("lookup");
    assert_eq!(titles(&both), ["Nora National", "Ian International"], "both notations are found, oldest first");
    assert_eq!(both[0].record, RecordRef::new("party", national.to_string()));
    assert_eq!(both[0].fields.get("phone").map(String::as_str), Some("+1 415-555-0123"), "Tryton formats what it stores");
    assert!(both[1].display.contains(&("Mobile".to_string(), "+1 415-555-0123".to_string())));
    assert!(both[1].display.contains(&("E-mail".to_string(), "ian@example.com".to_string())));

    let one = tryton.find_by_phone("+14155550123", std::slice::from_ref(&spec), 1).await.expect("lookup");
    assert_eq!(titles(&one), ["Nora National"], "the limit holds");
    let punctuated = tryton.find_by_phone("+14155550124", std::slice::from_ref(&spec), 10).await.expect("lookup");
    assert_eq!(titles(&punctuated), ["Pia Punctuation"]);
    let nobody = tryton.find_by_phone("+14155550129", std::slice::from_ref(&spec), 10).await.expect("lookup");
    assert!(nobody.is_empty(), "{nobody:?}");
}

#[tokio::test]
async fn a_national_number_without_a_region_is_refused_with_trytons_words() {
    let Some(f) = fixture() else { return };
    let regionless = adapter_at(&f.server.url, "admin", ADMIN_PASSWORD, None);
    let err = regionless.create(&party_spec(), &fields(&[("name", "Rex Regionless"), ("phone", "(415) 555-0125")])).await.expect_err("refused");
    match err {
        CrmError::Permanent { message } => assert!(message.contains("(415) 555-0125") && message.contains("not valid"), "{message}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    // With the hub's region the same notation is stored (as E.164, which Tryton then formats).
    let created = adapter(f).create(&party_spec(), &fields(&[("name", "Rex Regional"), ("phone", "(415) 555-0125")])).await.expect("created");
    assert_eq!(created.fields.get("phone").map(String::as_str), Some("+1 415-555-0125"));
}

#[tokio::test]
async fn an_activity_upserted_twice_is_one_note_with_the_latest_text() {
    let Some(f) = fixture() else { return };
    let admin = Admin::login(f).await;
    let tryton = adapter(f);
    let party = tryton.create(&party_spec(), &fields(&[("name", "Una Upsert"), ("phone", "+1 415-555-0141")])).await.expect("party");
    let id = party.record.id.as_str();

    let first = tryton.upsert_activity(&call_activity("cxbridge:conv-upsert", &[id], "Direction: inbound\nQueue: \nOutcome: ringing")).await.expect("first");
    let second = tryton.upsert_activity(&call_activity("cxbridge:conv-upsert", &[id], "Direction: inbound\nOutcome: answered\nAgent: alice")).await.expect("second");
    let notes = admin.notes_on(id).await;
    assert_eq!(notes.len(), 1, "one note per activity key: {notes:?}");
    assert_eq!(notes[0]["id"].as_i64().map(|n| n.to_string()), Some(second.clone()));
    assert_eq!(
        notes[0]["message"],
        json!("Inbound voice +14155550141 (answered)\nDirection: inbound\nOutcome: answered\nAgent: alice\n[cxbridge phonecall cxbridge:conv-upsert]")
    );
    assert_ne!(first, second, "Tryton notes cannot be edited, so a changed activity replaces its note");
    let again = tryton.upsert_activity(&call_activity("cxbridge:conv-upsert", &[id], "Direction: inbound\nOutcome: answered\nAgent: alice")).await.expect("again");
    assert_eq!(again, second, "an unchanged activity leaves its note alone");

    // A second conversation; the timeline shows the newest first.
    tryton.upsert_activity(&call_activity("cxbridge:conv-later", &[id], "Outcome: missed")).await.expect("later");
    let timeline = tryton.timeline(&party.record, 10).await.expect("timeline");
    let keys: Vec<_> = timeline.iter().map(|e| e.fields.get("key").cloned().unwrap_or_default()).collect();
    assert_eq!(keys, ["cxbridge:conv-later", "cxbridge:conv-upsert"]);
    let entry = &timeline[1];
    assert_eq!((entry.id.as_str(), entry.kind.as_str()), (second.as_str(), "phonecall"));
    assert_eq!(entry.subject, "Inbound voice +14155550141 (answered)");
    assert_eq!(entry.fields.get("message").map(String::as_str), Some("Inbound voice +14155550141 (answered)\nDirection: inbound\nOutcome: answered\nAgent: alice"));
    assert_eq!(entry.fields.get("author").map(String::as_str), Some("admin"), "the Tryton user the hub logs in as");
    assert!(entry.at.parse::<jiff::Timestamp>().is_ok(), "RFC 3339: {}", entry.at);
    assert_eq!(tryton.timeline(&party.record, 1).await.expect("timeline").len(), 1, "the limit holds");
}

#[tokio::test]
async fn an_activity_regarding_two_parties_is_noted_on_each() {
    let Some(f) = fixture() else { return };
    let admin = Admin::login(f).await;
    let tryton = adapter(f);
    let caller = tryton.create(&party_spec(), &fields(&[("name", "Cal Caller")])).await.expect("party");
    let company = tryton.create(&party_spec(), &fields(&[("name", "Cal's Company")])).await.expect("party");
    let parties = [caller.record.id.as_str(), company.record.id.as_str()];
    for _ in 0..2 {
        let id = tryton.upsert_activity(&call_activity("cxbridge:conv-both", &parties, "Outcome: answered")).await.expect("upsert");
        assert_eq!(admin.notes_on(parties[0]).await[0]["id"].as_i64().map(|n| n.to_string()), Some(id), "the id is the first party's note");
    }
    for party in parties {
        assert_eq!(admin.notes_on(party).await.len(), 1, "party {party}");
    }
}

#[tokio::test]
async fn an_activity_about_a_missing_party_is_refused_for_good() {
    let Some(f) = fixture() else { return };
    let err = adapter(f).upsert_activity(&call_activity("cxbridge:conv-missing", &["987654"], "x")).await.expect_err("refused");
    assert!(matches!(err, CrmError::Permanent { .. }), "{err:?}");
    let err = adapter(f).upsert_activity(&call_activity("cxbridge:conv-none", &[], "x")).await.expect_err("refused");
    assert!(matches!(&err, CrmError::Permanent { message } if message.contains("regards no record")), "{err:?}");
}

#[tokio::test]
async fn parties_are_searched_created_and_updated() {
    let Some(f) = fixture() else { return };
    let tryton = adapter(f);
    let spec = party_spec();
    let created = tryton
        .create(&spec, &fields(&[("name", "Sam Searchable-7731"), ("phone", "(415) 555-0131"), ("email", "sam@example.com")]))
        .await
        .expect("created");
    assert_eq!(created.title, "Sam Searchable-7731");
    assert_eq!(created.fields.get("phone").map(String::as_str), Some("+1 415-555-0131"));
    assert_eq!(created.fields.get("email").map(String::as_str), Some("sam@example.com"));
    assert!(created.fields.get("code").is_some_and(|c| !c.is_empty()), "Tryton numbers parties: {:?}", created.fields);

    let by_text = tryton.search(&spec, &SearchQuery { text: Some("searchable-77".into()), limit: 10, ..Default::default() }).await.expect("search");
    assert_eq!(titles(&by_text), ["Sam Searchable-7731"], "case-insensitive substring of the name");
    let by_phone = SearchQuery { filters: fields(&[("phone", "+14155550131")]), limit: 10, ..Default::default() };
    assert_eq!(titles(&tryton.search(&spec, &by_phone).await.expect("search")), ["Sam Searchable-7731"]);
    let by_literal = tryton.search(&spec, &SearchQuery { text: Some("Searchable_7731".into()), limit: 10, ..Default::default() }).await.expect("search");
    assert!(by_literal.is_empty(), "`_` is no wildcard: {by_literal:?}");

    let id = created.record.id.clone();
    let updated = tryton
        .update(&spec, &id, &fields(&[("name", "Sam Updated-7731"), ("phone", "+1 415 555 0132"), ("mobile", "+1 415-555-0133"), ("email", "")]))
        .await
        .expect("updated");
    assert_eq!(updated.title, "Sam Updated-7731");
    assert_eq!(updated.fields.get("phone").map(String::as_str), Some("+1 415-555-0132"));
    assert_eq!(updated.fields.get("mobile").map(String::as_str), Some("+1 415-555-0133"));
    assert_eq!(updated.fields.get("email"), None, "an emptied field removes the mechanism");
    let found = tryton.find_by_phone("+14155550133", std::slice::from_ref(&spec), 5).await.expect("lookup");
    assert_eq!(titles(&found), ["Sam Updated-7731"]);
    assert!(tryton.find_by_phone("+14155550131", std::slice::from_ref(&spec), 5).await.expect("lookup").is_empty(), "the old number is gone");

    let err = tryton.update(&spec, "987654", &fields(&[("name", "Ghost")])).await.expect_err("missing");
    assert!(matches!(err, CrmError::Permanent { .. }), "{err:?}");
}

/// All pages of the feed from `cursor`: the records (id → fields) and the next cursor.
async fn drain(tryton: &Tryton, spec: &EntitySpec, mut cursor: Option<String>) -> (BTreeMap<String, BTreeMap<String, String>>, String, usize) {
    let mut all = BTreeMap::new();
    let mut pages = 0;
    loop {
        let page = tryton.changes(spec, cursor.as_deref()).await.expect("changes");
        pages += 1;
        assert!(page.deletes.is_empty());
        for (id, fields) in page.upserts {
            assert!(all.insert(id.clone(), fields).is_none(), "record {id} came twice in one pass");
        }
        cursor = Some(page.cursor);
        if !page.more {
            return (all, cursor.unwrap_or_default(), pages);
        }
    }
}

#[tokio::test]
async fn changes_since_a_cursor_bring_new_and_changed_parties_only() {
    let Some(f) = fixture() else { return };
    let admin = Admin::login(f).await;
    let tryton = adapter(f);
    let spec = party_spec();
    // More parties than one page holds, made in one call.
    let many: Vec<Value> = (0..205).map(|n| json!({ "name": format!("Bulk {n:03}") })).collect();
    let bulk = admin.call("party.party", "create", vec![json!(many)]).await;
    let untouched = tryton.create(&spec, &fields(&[("name", "Una Untouched")])).await.expect("party").record.id;
    let renamed = tryton.create(&spec, &fields(&[("name", "Rita Before")])).await.expect("party").record.id;
    let renumbered = tryton.create(&spec, &fields(&[("name", "Mo Mechanism"), ("phone", "+1 415-555-0151")])).await.expect("party").record.id;
    // The next cursor starts a moment before the pass (see CLOCK_MARGIN): step past it.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (everything, cursor, pages) = drain(&tryton, &spec, None).await;
    assert!(pages >= 2, "a full sync of >200 parties takes several pages");
    for id in bulk.as_array().expect("ids").iter().map(|v| v.to_string()).chain([untouched.clone(), renamed.clone()]) {
        assert!(everything.contains_key(&id), "party {id} missing from the full sync");
    }
    assert_eq!(everything[&renumbered].get("phone").map(String::as_str), Some("+1 415-555-0151"));
    assert!(cursor.parse::<jiff::Timestamp>().is_ok(), "between passes the cursor is a time: {cursor}");

    let added = tryton.create(&spec, &fields(&[("name", "Nils New")])).await.expect("party").record.id;
    tryton.update(&spec, &renamed, &fields(&[("name", "Rita After")])).await.expect("renamed");
    // A number edited on its own (Tryton's contact-mechanism list), not through the party.
    let mechanism = admin
        .call("party.contact_mechanism", "search", vec![json!([["party", "=", renumbered.parse::<i64>().expect("id")]])])
        .await;
    admin.call("party.contact_mechanism", "write", vec![mechanism, json!({ "value": "+1 415-555-0152" })]).await;

    let (changed, next, _) = drain(&tryton, &spec, Some(cursor.clone())).await;
    assert!(changed.contains_key(&added), "new party missing: {:?}", changed.keys());
    assert_eq!(changed.get(&renamed).and_then(|r| r.get("name")).map(String::as_str), Some("Rita After"));
    assert_eq!(changed.get(&renumbered).and_then(|r| r.get("phone")).map(String::as_str), Some("+1 415-555-0152"));
    assert!(!changed.contains_key(&untouched), "an unchanged party came again");
    assert!(!bulk.as_array().expect("ids").iter().any(|id| changed.contains_key(&id.to_string())), "unchanged bulk parties came again");
    let (from, to) = (cursor.parse::<jiff::Timestamp>().expect("time"), next.parse::<jiff::Timestamp>().expect("time"));
    assert!(to >= from, "cursors move forward: {cursor} → {next}");

    let err = tryton.changes(&spec, Some("last tuesday")).await.expect_err("bad cursor");
    assert!(matches!(err, CrmError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_login_failure() {
    let Some(f) = fixture() else { return };
    let admin = Admin::login(f).await;
    // Its own user: Tryton slows down later logins of a user after failed ones.
    admin.create("res.user", json!({ "name": "Reader", "login": "cxbridge-reader", "password": "right-password-4711" })).await;
    let spec = party_spec();

    let wrong = adapter_at(&f.server.url, "cxbridge-reader", "wrong-password", Some("US"));
    let err = wrong.find_by_phone("+14155550161", std::slice::from_ref(&spec), 5).await.expect_err("refused");
    match err {
        CrmError::Permanent { message } => {
            assert!(message.contains("login failed") && message.contains("cxbridge-reader"), "{message}");
            assert!(!message.contains("wrong-password"), "the password must not leak: {message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert_eq!(wrong.logins(), 0);

    let right = adapter_at(&f.server.url, "cxbridge-reader", "right-password-4711", Some("US"));
    assert!(right.find_by_phone("+14155550161", std::slice::from_ref(&spec), 5).await.expect("logged in").is_empty());
    assert_eq!(right.logins(), 1);
}

#[tokio::test]
async fn a_stopped_tryton_is_a_transient_failure() {
    let Some(f) = fixture() else { return };
    let config = write_config(&f.dir, "outage.conf", free_port(), "");
    let second = start_trytond(&f.venv, &f.dir, Path::new(&config).file_name().and_then(|n| n.to_str()).expect("name"), None);
    let tryton = adapter_at(&second.url, "admin", ADMIN_PASSWORD, Some("US"));
    let spec = party_spec();
    tryton.find_by_phone("+14155550171", std::slice::from_ref(&spec), 5).await.expect("up");

    second.stop();
    let err = tryton.find_by_phone("+14155550171", std::slice::from_ref(&spec), 5).await.expect_err("down");
    assert!(matches!(&err, CrmError::Transient { message, .. } if message.contains(&second.url)), "{err:?}");
    let err = adapter_at(&second.url, "admin", ADMIN_PASSWORD, Some("US")).search(&spec, &SearchQuery::default()).await.expect_err("down");
    assert!(matches!(err, CrmError::Transient { .. }), "logging in to a stopped Tryton is transient too: {err:?}");
}

#[tokio::test]
async fn an_expired_session_is_replaced_by_one_login_for_all_callers() {
    let Some(f) = fixture() else { return };
    // Sessions of this server expire 3 s after login.
    let config = write_config(&f.dir, "short-sessions.conf", free_port(), "[session]\nmax_age = 3\n");
    let server = start_trytond(&f.venv, &f.dir, Path::new(&config).file_name().and_then(|n| n.to_str()).expect("name"), None);
    let tryton = adapter_at(&server.url, "admin", ADMIN_PASSWORD, Some("US"));
    let spec = party_spec();
    tryton.find_by_phone("+14155550181", std::slice::from_ref(&spec), 5).await.expect("first call");
    assert_eq!(tryton.logins(), 1);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let specs = std::slice::from_ref(&spec);
    let lookup = || tryton.find_by_phone("+14155550181", specs, 5);
    let (a, b, c, d) = tokio::join!(lookup(), lookup(), lookup(), lookup());
    for result in [a, b, c, d] {
        result.expect("the call succeeds after logging in again");
    }
    assert_eq!(tryton.logins(), 2, "one fresh login serves every caller");
}

#[test]
fn the_watchdog_stops_trytond_when_its_guard_goes() {
    let Some(f) = fixture() else { return };
    let config = write_config(&f.dir, "guard.conf", free_port(), "");
    let listen = std::fs::read_to_string(&config).expect("config").lines().find_map(|l| l.strip_prefix("listen = ").map(str::to_string)).expect("listen");
    let server = start_trytond(&f.venv, &f.dir, "guard.conf", None);
    assert!(TcpStream::connect(&listen).is_ok());
    drop(server);
    assert!(TcpStream::connect(&listen).is_err(), "trytond still listens on {listen} after its guard was dropped");
}
