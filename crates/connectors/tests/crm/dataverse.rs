//! The Dataverse adapter against the Dataverse test server (crates/testkit/src/dataverse.rs):
//! the requests it sends, and what it makes of Dataverse's answers and refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cxbridge_connectors::client::http_client;
use cxbridge_connectors::client::oauth::Secret;
use cxbridge_connectors::sinks::crm::dataverse::{Dataverse, DataverseConfig, default_entities, default_mapping};
use cxbridge_domain::conversation::{Address, Channel, Conversation, Details, Direction, Disposition, EndCause, Outcome, State};
use cxbridge_domain::crm::{Activity, Candidate, ChangePage, Crm, CrmError, EntitySpec, RecordRef, SearchQuery};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::mapping::Mapping;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_testkit::Seen;
use cxbridge_testkit::dataverse::{self as dv, DataverseServer};
use serde_json::{Value, json};

const NUMBER: &str = "+14155550100";
/// What `PhoneNormalizer::notations` makes of [`NUMBER`], in order.
const NOTATIONS: &[&str] = &["+14155550100", "+1 415-555-0100", "(415) 555-0100", "14155550100", "01114155550100", "4155550100"];

async fn server() -> DataverseServer {
    DataverseServer::start().await.expect("Dataverse test server")
}

fn config(s: &DataverseServer) -> DataverseConfig {
    serde_json::from_value(json!({"url": s.url, "tenant_id": dv::TENANT_ID, "client_id": dv::CLIENT_ID, "token_url": s.token_url})).expect("config")
}

fn adapter(s: &DataverseServer) -> Dataverse {
    adapter_with(s, |_| {})
}

fn adapter_with(s: &DataverseServer, change: impl FnOnce(&mut DataverseConfig)) -> Dataverse {
    let mut c = config(s);
    change(&mut c);
    let normalizer = PhoneNormalizer::new(Some("US"), &[]).expect("region");
    Dataverse::new(&c, Secret::new(dv::CLIENT_SECRET), normalizer, http_client()).expect("adapter")
}

fn spec(name: &str) -> EntitySpec {
    default_entities().into_iter().find(|e| e.name == name).expect("default entity")
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// A query option of a request, decoded as the server reads it.
fn param(seen: &Seen, name: &str) -> Option<String> {
    let query = seen.target.split_once('?')?.1;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (decode(k) == name).then(|| decode(v))
    })
}

fn path(seen: &Seen) -> String {
    decode(seen.target.split('?').next().unwrap_or_default())
}

fn requests_to(s: &DataverseServer, method: &str, collection: &str) -> Vec<Seen> {
    let prefix = format!("{}/{collection}", dv::API_PATH);
    s.seen().into_iter().filter(|r| r.method == method && path(r).starts_with(&prefix)).collect()
}

fn ids(cs: &[Candidate]) -> BTreeSet<String> {
    cs.iter().map(|c| c.record.id.clone()).collect()
}

fn person(first: &str, last: &str, phones: Value) -> Value {
    let mut v = phones;
    v["firstname"] = json!(first);
    v["lastname"] = json!(last);
    v
}

fn call(key: &str, regarding: &RecordRef, direction: Direction, agent: Option<&str>) -> Activity {
    Activity {
        key: format!("cxbridge:{key}"),
        kind: "phonecall".into(),
        regarding: vec![regarding.clone()],
        fields: BTreeMap::from([
            ("subject".to_string(), json!(format!("Call {key}"))),
            ("phonenumber".to_string(), json!(NUMBER)),
            ("directioncode".to_string(), json!(direction == Direction::Outbound)),
            ("actualdurationminutes".to_string(), json!(2)),
        ]),
        direction,
        on_behalf_of: agent.map(str::to_string),
    }
}

fn permanent(r: Result<impl std::fmt::Debug, CrmError>) -> String {
    match r {
        Err(CrmError::Permanent { message }) => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn transient(r: Result<impl std::fmt::Debug, CrmError>) -> (String, Option<Duration>) {
    match r {
        Err(CrmError::Transient { message, retry_after }) => (message, retry_after),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn identification_searches_every_phone_column_in_every_notation() {
    let s = server().await;
    let account = s.insert("accounts", json!({"name": "Contoso", "telephone1": "+1 212 555 0199"}));
    let c1 = s.insert("contacts", person("Ann", "Lee", json!({"telephone1": "(415) 555-0100", "_parentcustomerid_value": account})));
    let c2 = s.insert("contacts", person("Bo", "Ng", json!({"telephone2": "+1 415-555-0100"})));
    let c3 = s.insert("contacts", person("Cy", "Ode", json!({"mobilephone": "4155550100"})));
    s.insert("contacts", person("Di", "Other", json!({"telephone1": "(415) 555-0199"})));
    let dv = adapter(&s);

    let found = dv.find_by_phone(NUMBER, &[spec("contact")], 10).await.expect("found");
    assert_eq!(ids(&found), BTreeSet::from([c1.clone(), c2, c3]));
    let ann = found.iter().find(|c| c.record.id == c1).expect("Ann");
    assert_eq!(ann.title, "Ann Lee");
    assert_eq!(ann.record.entity, "contact");
    assert!(ann.display.contains(&("Company".to_string(), "Contoso".to_string())), "{:?}", ann.display);
    assert!(ann.display.contains(&("Phone".to_string(), "(415) 555-0100".to_string())));

    let sent = requests_to(&s, "GET", "contacts");
    assert_eq!(sent.len(), 1);
    let mut terms = vec![];
    for field in ["telephone1", "mobilephone", "telephone2"] {
        for n in NOTATIONS {
            terms.push(format!("{field} eq '{n}'"));
        }
    }
    assert_eq!(param(&sent[0], "$filter").expect("$filter"), format!("({})", terms.join(" or ")));
    assert_eq!(param(&sent[0], "$select").as_deref(), Some("contactid,fullname,telephone1,mobilephone,telephone2,emailaddress1,_parentcustomerid_value"));
    assert_eq!(param(&sent[0], "$top").as_deref(), Some("10"));
    assert!(!sent[0].target.contains('+'), "a bare + would reach Dataverse as a space: {}", sent[0].target);
    assert_eq!(sent[0].header("accept"), Some("application/json"));
    assert_eq!(sent[0].header("odata-version"), Some("4.0"));
    assert_eq!(sent[0].header("odata-maxversion"), Some("4.0"));
    assert!(sent[0].header("prefer").is_some_and(|p| p.contains("OData.Community.Display.V1.FormattedValue")));
}

#[tokio::test]
async fn none_one_or_several_records_match() {
    let s = server().await;
    let dv = adapter(&s);
    let entities = default_entities();
    assert!(dv.find_by_phone(NUMBER, &entities, 5).await.expect("none").is_empty());
    assert_eq!(requests_to(&s, "GET", "").len(), 3, "one query per identifying entity");

    // Exact matching finds the usual notations only: a number typed some other way is not
    // found (what `normalized_phone_field` and the local phone index are for).
    s.insert("leads", json!({"firstname": "Odd", "lastname": "Notation", "mobilephone": "+1 (415) 555-0100"}));
    assert!(dv.find_by_phone(NUMBER, &entities, 5).await.expect("none yet").is_empty());

    let lead = s.insert("leads", json!({"firstname": "Lou", "lastname": "Lead", "companyname": "Fabrikam", "mobilephone": "+1 415-555-0100"}));
    let one = dv.find_by_phone(NUMBER, &entities, 5).await.expect("one");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].record, RecordRef::new("lead", &lead));
    assert!(one[0].display.contains(&("Company".to_string(), "Fabrikam".to_string())));

    s.insert("accounts", json!({"name": "Northwind", "telephone2": "4155550100"}));
    let two = dv.find_by_phone(NUMBER, &entities, 5).await.expect("two");
    assert_eq!(two.iter().map(|c| c.record.entity.as_str()).collect::<Vec<_>>(), vec!["account", "lead"]);

    // Entities that do not identify are not asked.
    s.clear_seen();
    let mut quiet = entities.clone();
    quiet.iter_mut().filter(|e| e.name != "contact").for_each(|e| e.identify = false);
    assert!(dv.find_by_phone(NUMBER, &quiet, 5).await.expect("contacts only").is_empty());
    assert_eq!(requests_to(&s, "GET", "").len(), 1);
}

#[tokio::test]
async fn results_follow_the_order_of_the_entities_and_stop_at_the_limit() {
    let s = server().await;
    let contact = s.insert("contacts", person("Ann", "Lee", json!({"telephone1": NUMBER})));
    let account = s.insert("accounts", json!({"name": "Contoso", "telephone1": NUMBER}));
    let lead = s.insert("leads", person("Lou", "Lead", json!({"telephone1": NUMBER})));
    let dv = adapter(&s);
    let order = vec![spec("lead"), spec("account"), spec("contact")];
    let all = dv.find_by_phone(NUMBER, &order, 10).await.expect("all");
    assert_eq!(all.iter().map(|c| c.record.id.clone()).collect::<Vec<_>>(), vec![lead.clone(), account.clone(), contact]);
    let two = dv.find_by_phone(NUMBER, &order, 2).await.expect("two");
    assert_eq!(two.iter().map(|c| c.record.id.clone()).collect::<Vec<_>>(), vec![lead, account]);
    assert!(requests_to(&s, "GET", "").iter().all(|r| param(r, "$top").is_some_and(|t| t == "10" || t == "2")));
}

#[tokio::test]
async fn a_quote_in_a_value_is_doubled() {
    let s = server().await;
    let pat = s.insert("contacts", person("Pat", "O'Brien", json!({"telephone1": "+1 415 555 0111"})));
    let dv = adapter(&s);
    let found = dv.search(&spec("contact"), &SearchQuery { text: Some("O'Brien".into()), limit: 5, ..SearchQuery::default() }).await.expect("search");
    assert_eq!(ids(&found), BTreeSet::from([pat]));
    let sent = requests_to(&s, "GET", "contacts");
    assert_eq!(param(&sent[0], "$filter").as_deref(), Some("contains(fullname,'O''Brien')"));

    // A caller "number" with a quote in it is a value like any other, not a query.
    let none = dv.find_by_phone("+1415' or telephone1 ne '", &[spec("contact")], 5).await.expect("no injection");
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_normalized_phone_column_is_matched_exactly() {
    let s = server().await;
    for set in ["contacts", "accounts", "leads"] {
        s.add_column(set, "cxb_phonee164");
    }
    let ann = s.insert("contacts", person("Ann", "Lee", json!({"telephone1": "call me: 415 555 0100", "cxb_phonee164": NUMBER})));
    let dv = adapter_with(&s, |c| c.normalized_phone_field = Some("cxb_phonee164".into()));
    let found = dv.find_by_phone(NUMBER, &default_entities(), 5).await.expect("found");
    assert_eq!(ids(&found), BTreeSet::from([ann]));
    for r in requests_to(&s, "GET", "") {
        assert_eq!(param(&r, "$filter").as_deref(), Some("cxb_phonee164 eq '+14155550100'"), "{}", r.target);
    }

    // A column the table lacks is refused by Dataverse; the adapter passes its words on.
    let wrong = adapter_with(&s, |c| c.normalized_phone_field = Some("cxb_e164".into()));
    let message = permanent(wrong.find_by_phone(NUMBER, &[spec("contact")], 5).await);
    assert!(message.contains("Could not find a property named 'cxb_e164' on type 'Microsoft.Dynamics.CRM.contact'"), "{message}");
}

#[tokio::test]
async fn one_token_serves_many_calls_and_a_rejected_token_is_replaced_once() {
    let s = server().await;
    let dv = adapter(&s);
    for _ in 0..5 {
        dv.find_by_phone(NUMBER, &[spec("contact")], 5).await.expect("call");
    }
    assert_eq!(s.tokens.issued(), 1);
    assert_eq!(dv.tokens_fetched(), 1);

    s.tokens.expire_all();
    s.clear_seen();
    dv.find_by_phone(NUMBER, &[spec("contact")], 5).await.expect("call after expiry");
    assert_eq!(s.tokens.issued(), 2, "exactly one more token");
    let sent = s.seen();
    assert_eq!(sent.len(), 2, "the 401, then one retry");
    assert_ne!(sent[0].header("authorization"), sent[1].header("authorization"));
    assert_eq!(sent[0].target, sent[1].target);
    assert!(dv.requests_in_window().await >= 7);
}

#[tokio::test]
async fn concurrent_calls_share_one_token_fetch() {
    let s = server().await;
    let dv = Arc::new(adapter(&s));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let dv = dv.clone();
        set.spawn(async move { dv.find_by_phone(NUMBER, &[spec("contact")], 5).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task").expect("call");
    }
    assert_eq!(s.tokens.issued(), 1);
}

#[tokio::test]
async fn bad_credentials_are_permanent() {
    let s = server().await;
    let c = config(&s);
    let normalizer = PhoneNormalizer::new(Some("US"), &[]).expect("region");
    let dv = Dataverse::new(&c, Secret::new("wrong"), normalizer, http_client()).expect("adapter");
    let message = permanent(dv.find_by_phone(NUMBER, &[spec("contact")], 5).await);
    assert!(message.contains("invalid_client"), "{message}");
    assert!(s.seen().is_empty(), "no API call without a token");
}

#[tokio::test]
async fn throttling_outages_and_timeouts_are_transient() {
    let s = server().await;
    let dv = adapter_with(&s, |c| c.timeout_ms = 300);
    dv.find_by_phone(NUMBER, &[spec("contact")], 5).await.expect("warm-up");

    s.faults.throttle_next(1, 2);
    let (message, retry_after) = transient(dv.find_by_phone(NUMBER, &[spec("contact")], 5).await);
    assert_eq!(retry_after, Some(Duration::from_secs(2)));
    assert!(message.contains("429") && message.contains("0x80072322"), "{message}");

    let s = server().await;
    let dv = adapter_with(&s, |c| c.timeout_ms = 300);
    s.faults.unavailable_next(1);
    let (message, _) = transient(dv.search(&spec("account"), &SearchQuery::default()).await);
    assert!(message.contains("503"), "{message}");

    s.faults.delay(Duration::from_millis(800));
    let (message, _) = transient(dv.find_by_phone(NUMBER, &[spec("contact")], 5).await);
    assert!(message.contains("timed out"), "{message}");
    s.faults.clear();
    dv.find_by_phone(NUMBER, &[spec("contact")], 5).await.expect("back to normal");
}

#[tokio::test]
async fn refusals_are_permanent_in_dataverses_words() {
    let s = server().await;
    let contact = s.insert("contacts", person("Ann", "Lee", json!({})));
    let dv = adapter(&s);
    let query = SearchQuery { filters: BTreeMap::from([("nosuchcolumn".to_string(), "x".to_string())]), ..SearchQuery::default() };
    let message = permanent(dv.search(&spec("contact"), &query).await);
    assert!(message.contains("Could not find a property named 'nosuchcolumn'") && message.contains("0x80060888"), "{message}");

    let mut a = call("bad-column", &RecordRef::new("contact", &contact), Direction::Inbound, None);
    a.fields.insert("nosuch".into(), json!("x"));
    let message = permanent(dv.upsert_activity(&a).await);
    assert!(message.contains("The property 'nosuch' does not exist on type 'Microsoft.Dynamics.CRM.phonecall'"), "{message}");

    let mut a = call("bad-type", &RecordRef::new("contact", &contact), Direction::Inbound, None);
    a.fields.insert("actualdurationminutes".into(), json!("two"));
    let message = permanent(dv.upsert_activity(&a).await);
    assert!(message.contains("Edm.Int32"), "{message}");

    let a = call("no-such-contact", &RecordRef::new("contact", "0b7f4c1e-0000-4000-8000-00000000dead"), Direction::Inbound, None);
    let message = permanent(dv.upsert_activity(&a).await);
    assert!(message.contains("Does Not Exist"), "{message}");

    let a = call("case", &RecordRef::new("incident", "0b7f4c1e-0000-4000-8000-00000000beef"), Direction::Inbound, None);
    let message = permanent(dv.upsert_activity(&a).await);
    assert!(message.contains("`incident`"), "{message}");

    let a = call("not-a-guid", &RecordRef::new("contact", "42"), Direction::Inbound, None);
    assert!(permanent(dv.upsert_activity(&a).await).contains("GUID"));
    assert!(s.activities().is_empty());

    let old = adapter_with(&s, |c| c.api_version = "9.1".into());
    let message = permanent(old.find_by_phone(NUMBER, &[spec("contact")], 5).await);
    assert!(message.contains("v9.1"), "{message}");
}

#[tokio::test]
async fn upserting_twice_by_key_updates_one_phonecall() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter(&s);
    let mut a = call("conv-1", &contact, Direction::Inbound, None);
    let first = dv.upsert_activity(&a).await.expect("created");
    a.fields.insert("subject".into(), json!("Inbound call (answered)"));
    a.fields.insert("actualdurationminutes".into(), json!(5));
    let second = dv.upsert_activity(&a).await.expect("updated");
    assert_eq!(first, second);
    let stored = s.activities();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["activityid"], json!(first));
    assert_eq!(stored[0]["subject"], json!("Inbound call (answered)"));
    assert_eq!(stored[0]["actualdurationminutes"], json!(5));
    assert_eq!(stored[0][dv::ACTIVITY_KEY], json!("cxbridge-conv-1"));
    assert_eq!(stored[0]["_regardingobjectid_value"], json!(contact.id));
    assert_eq!(stored[0]["_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], json!("contact"));

    let sent = requests_to(&s, "PATCH", "phonecalls");
    assert_eq!(sent.len(), 2);
    assert!(sent[0].target.starts_with("/api/data/v9.2/phonecalls(cxb_conversationkey='cxbridge-conv-1')"), "{}", sent[0].target);
    assert_eq!(sent[0].header("prefer"), Some("return=representation"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&sent[0].body).expect("json body");
    assert_eq!(body["regardingobjectid_contact_phonecall@odata.bind"], json!(format!("/contacts({})", contact.id)));
    assert!(body.get(dv::ACTIVITY_KEY).is_none(), "the key travels in the URL");

    // Keys with a quote are escaped, not broken.
    let odd = call("o'neil", &contact, Direction::Inbound, None);
    let id = dv.upsert_activity(&odd).await.expect("quoted key");
    assert_eq!(dv.upsert_activity(&odd).await.expect("again"), id);
    assert_eq!(s.activities().len(), 2);
    assert_eq!(s.activities()[1][dv::ACTIVITY_KEY], json!("cxbridge-o'neil"));
}

#[tokio::test]
async fn parties_swap_with_the_direction() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter(&s);
    dv.upsert_activity(&call("in", &contact, Direction::Inbound, Some(dv::AGENT_USER_ID))).await.expect("inbound");
    dv.upsert_activity(&call("out", &contact, Direction::Outbound, Some(dv::AGENT_USER_ID))).await.expect("outbound");
    let stored = s.activities();
    let parties = |a: &Value| -> BTreeMap<i64, (String, String)> {
        a["phonecall_activity_parties"]
            .as_array()
            .expect("parties")
            .iter()
            .map(|p| {
                let entity = p["_partyid_value@Microsoft.Dynamics.CRM.lookuplogicalname"].as_str().expect("entity").to_string();
                (p["participationtypemask"].as_i64().expect("mask"), (entity, p["_partyid_value"].as_str().expect("id").to_string()))
            })
            .collect()
    };
    let customer = ("contact".to_string(), contact.id.clone());
    let agent = ("systemuser".to_string(), dv::AGENT_USER_ID.to_string());
    assert_eq!(parties(&stored[0]), BTreeMap::from([(1, customer.clone()), (2, agent.clone())]), "inbound: the caller calls the agent");
    assert_eq!(parties(&stored[1]), BTreeMap::from([(1, agent), (2, customer)]), "outbound: the agent calls the customer");
    assert_eq!(stored[1]["directioncode"], json!(true));

    // Without an agent only the customer is a party.
    dv.upsert_activity(&call("alone", &contact, Direction::Inbound, None)).await.expect("no agent");
    assert_eq!(parties(&s.activities()[2]).len(), 1);
}

#[tokio::test]
async fn writes_for_an_agent_are_made_on_their_behalf() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter(&s);
    dv.upsert_activity(&call("as-alice", &contact, Direction::Inbound, Some(dv::AGENT_USER_ID))).await.expect("as Alice");
    dv.upsert_activity(&call("as-app", &contact, Direction::Inbound, None)).await.expect("as the app");
    let sent = requests_to(&s, "PATCH", "phonecalls");
    assert_eq!(sent[0].header("mscrmcallerid"), Some(dv::AGENT_USER_ID));
    assert_eq!(sent[1].header("mscrmcallerid"), None);
    let stored = s.activities();
    assert_eq!(stored[0]["_createdby_value"], json!(dv::AGENT_USER_ID));
    assert_eq!(stored[0]["_ownerid_value"], json!(dv::AGENT_USER_ID));
    assert_eq!(stored[0]["_createdonbehalfby_value"], json!(dv::APP_USER_ID));
    assert_eq!(stored[1]["_createdby_value"], json!(dv::APP_USER_ID));
    assert!(stored[1].get("_createdonbehalfby_value").is_none());

    // A user Dataverse does not know: refused, not written as someone else.
    let ghost = "a0000000-0000-4000-8000-0000000000ff";
    let message = permanent(dv.upsert_activity(&call("ghost", &contact, Direction::Inbound, Some(ghost))).await);
    assert!(message.contains("systemuser") && message.contains("Does Not Exist"), "{message}");
    // An id that is no systemuserid at all is left out: the call is still logged.
    dv.upsert_activity(&call("not-a-user-id", &contact, Direction::Inbound, Some("alice"))).await.expect("written as the app");
    assert_eq!(s.activities().last().expect("activity")["_createdby_value"], json!(dv::APP_USER_ID));
}

#[tokio::test]
async fn many_activities_go_in_batches_of_batch_size() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter_with(&s, |c| c.batch_size = 100);
    let activities: Vec<Activity> = (0..250).map(|i| call(&format!("bulk-{i}"), &contact, Direction::Inbound, None)).collect();
    let results = dv.upsert_activities(&activities).await;
    assert_eq!(results.len(), 250);
    let ids: BTreeSet<String> = results.into_iter().map(|r| r.expect("written")).collect();
    assert_eq!(ids.len(), 250);
    assert_eq!(s.batches(), 3);
    assert_eq!(dv.batches_sent(), 3);
    assert_eq!(s.activities().len(), 250);
    let stored: BTreeSet<String> = s.activities().iter().map(|a| a["activityid"].as_str().expect("id").to_string()).collect();
    assert_eq!(stored, ids);

    let batches = requests_to(&s, "POST", "$batch");
    assert_eq!(batches.len(), 3);
    for b in &batches {
        assert!(b.header("content-type").is_some_and(|c| c.starts_with("multipart/mixed;boundary=batch_")), "{:?}", b.header("content-type"));
        assert_eq!(b.header("prefer"), Some("odata.continue-on-error"));
        assert!(!b.body.contains("changeset"), "independent parts, no change set");
    }
    // Again: the same 250 rows, updated.
    let again = dv.upsert_activities(&activities).await;
    assert!(again.iter().all(Result::is_ok));
    assert_eq!(s.activities().len(), 250);
    // Every activity counted against the window.
    assert!(dv.requests_in_window().await >= 500);
}

#[tokio::test]
async fn one_bad_activity_in_a_batch_fails_alone() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter(&s);
    let mut activities: Vec<Activity> = (0..10).map(|i| call(&format!("mixed-{i}"), &contact, Direction::Inbound, None)).collect();
    activities[4].regarding = vec![RecordRef::new("contact", "0b7f4c1e-0000-4000-8000-00000000dead")];
    activities[6].fields.insert("subject".into(), json!(5));
    activities[8].fields.insert("not a column".into(), json!("x"));
    let results = dv.upsert_activities(&activities).await;
    for (i, r) in results.iter().enumerate() {
        match i {
            4 => assert!(permanent(r.clone()).contains("Does Not Exist")),
            6 => assert!(permanent(r.clone()).contains("Edm.String")),
            8 => assert!(permanent(r.clone()).contains("not a column")),
            _ => assert!(r.is_ok(), "{i}: {r:?}"),
        }
    }
    assert_eq!(s.batches(), 1, "the one checked locally never left");
    assert_eq!(s.activities().len(), 7);
}

#[tokio::test]
async fn a_failed_batch_fails_each_of_its_activities_transiently() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter(&s);
    let activities: Vec<Activity> = (0..5).map(|i| call(&format!("t-{i}"), &contact, Direction::Inbound, None)).collect();
    s.faults.throttle_next(1, 1);
    let results = dv.upsert_activities(&activities).await;
    for r in results {
        assert_eq!(transient(r).1, Some(Duration::from_secs(1)));
    }
    assert!(s.activities().is_empty());
}

#[tokio::test]
async fn lost_answers_and_retries_never_duplicate() {
    let s = server().await;
    let contact = RecordRef::new("contact", s.insert("contacts", person("Ann", "Lee", json!({}))));
    let dv = adapter(&s);
    s.faults.lose_answer_ratio(0.5);
    let activities: Vec<Activity> = (0..40).map(|i| call(&format!("lossy-{i}"), &contact, Direction::Inbound, Some(dv::AGENT_USER_ID))).collect();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: Vec<Activity> = activities.clone();
    for round in 0..40 {
        if round == 30 {
            s.faults.clear();
        }
        let results = dv.upsert_activities(&pending).await;
        let mut left = vec![];
        for (a, r) in pending.into_iter().zip(results) {
            match r {
                Ok(id) => {
                    ids.insert(cxbridge_connectors::sinks::crm::dataverse::key_value(&a.key), id);
                }
                Err(CrmError::Transient { .. }) => left.push(a),
                Err(e) => panic!("{}: {e}", a.key),
            }
        }
        pending = left;
        // Single upserts suffer the same fate and heal the same way.
        if let Some(a) = pending.pop() {
            match dv.upsert_activity(&a).await {
                Ok(id) => {
                    ids.insert(cxbridge_connectors::sinks::crm::dataverse::key_value(&a.key), id);
                }
                Err(_) => pending.push(a),
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    assert!(pending.is_empty());
    assert!(s.faults.injected() > 0, "answers were lost");
    let stored = s.activities();
    assert_eq!(stored.len(), 40, "one row per key, however often it was sent");
    let keys: BTreeSet<&str> = stored.iter().map(|a| a[dv::ACTIVITY_KEY].as_str().expect("key")).collect();
    assert_eq!(keys.len(), 40);
    for a in &stored {
        assert_eq!(ids.get(a[dv::ACTIVITY_KEY].as_str().expect("key")), a["activityid"].as_str().map(str::to_string).as_ref());
    }
}

#[tokio::test]
async fn change_tracking_pages_through_then_follows_deltas() {
    let s = server().await;
    let account = s.insert("accounts", json!({"name": "Contoso"}));
    let mut contacts = vec![];
    for i in 0..7 {
        contacts.push(s.insert("contacts", person("C", &format!("{i}"), json!({"telephone1": format!("+1 415 555 01{i:02}"), "_parentcustomerid_value": account}))));
    }
    let dv = adapter_with(&s, |c| c.page_size = 3);
    let contact = spec("contact");
    let mut seen_ids = BTreeSet::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = dv.changes(&contact, cursor.as_deref()).await.expect("page");
        pages += 1;
        assert!(page.deletes.is_empty());
        for (id, fields) in &page.upserts {
            assert!(seen_ids.insert(id.clone()));
            assert_eq!(fields.get("parentcustomerid_name").map(String::as_str), Some("Contoso"));
            assert!(fields.contains_key("telephone1"));
        }
        cursor = Some(page.cursor.clone());
        if !page.more {
            assert!(page.cursor.contains("$deltatoken="), "{}", page.cursor);
            break;
        }
        assert!(page.cursor.contains("$skiptoken="), "{}", page.cursor);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen_ids, contacts.iter().cloned().collect());
    let first = &requests_to(&s, "GET", "contacts")[0];
    let prefer = first.header("prefer").expect("prefer");
    assert!(prefer.contains("odata.track-changes") && prefer.contains("odata.maxpagesize=3"), "{prefer}");
    assert!(param(first, "$filter").is_none());

    let added = s.insert("contacts", person("New", "One", json!({"telephone1": "+1 415 555 0177"})));
    s.update("contacts", &contacts[0], json!({"telephone1": "+1 415 555 0188"}));
    s.delete("contacts", &contacts[1]);
    let delta = dv.changes(&contact, cursor.as_deref()).await.expect("delta");
    assert!(!delta.more);
    let upserted: BTreeMap<String, BTreeMap<String, String>> = delta.upserts.into_iter().collect();
    assert_eq!(upserted.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([added, contacts[0].clone()]));
    assert_eq!(upserted[&contacts[0]].get("telephone1").map(String::as_str), Some("+1 415 555 0188"));
    assert_eq!(delta.deletes, vec![contacts[1].clone()]);

    let quiet = dv.changes(&contact, Some(&delta.cursor)).await.expect("nothing new");
    assert!(quiet.upserts.is_empty() && quiet.deletes.is_empty() && !quiet.more);
    assert!(dv.has_change_feed());

    // A cursor of another environment is refused rather than followed with our token.
    let foreign = "https://evil.example.com/api/data/v9.2/contacts?$deltatoken=1";
    assert!(permanent(dv.changes(&contact, Some(foreign)).await).contains("environment"));
}

/// Pages through `contact`'s change feed from `cursor` until a pass ends; the last page.
async fn last_page(dv: &Dataverse, contact: &EntitySpec, mut cursor: Option<String>) -> (ChangePage, Vec<String>) {
    let mut ids = vec![];
    loop {
        let page = dv.changes(contact, cursor.as_deref()).await.expect("page");
        ids.extend(page.upserts.iter().map(|(id, _)| id.clone()));
        if !page.more {
            return (page, ids);
        }
        cursor = Some(page.cursor.clone());
    }
}

/// What docs/crm/dataverse.md says of direct queries (no local index): a number stored in
/// one of the generated notations is found, one stored any other way is not (the
/// normalized column is `a_normalized_phone_column_is_matched_exactly`).
#[tokio::test]
async fn direct_queries_find_the_generated_notations_only() {
    let s = server().await;
    let normalizer = PhoneNormalizer::new(Some("US"), &[]).expect("region");
    let notations = normalizer.notations(NUMBER);
    let found: Vec<String> = notations.iter().map(|n| s.insert("contacts", person("Found", n, json!({"telephone1": n})))).collect();
    let others: Vec<&str> = ["415 555 0100", "+1.415.555.0100", "+1 (415) 555-0100", "415-555-0100 x12"].into_iter().filter(|n| !notations.iter().any(|g| g == n)).collect();
    for n in &others {
        s.insert("contacts", person("Missed", n, json!({"telephone1": n})));
    }
    let dv = adapter(&s);
    let hits = dv.find_by_phone(NUMBER, &[spec("contact")], 100).await.expect("query");
    assert_eq!(ids(&hits), found.iter().cloned().collect::<BTreeSet<_>>(), "every generated notation and nothing else ({others:?} are not found)");

}

#[tokio::test]
async fn an_expired_change_tracking_token_starts_a_full_sync_over() {
    let s = server().await;
    let kept = s.insert("contacts", person("Kept", "One", json!({"telephone1": "+1 415 555 0101"})));
    let gone = s.insert("contacts", person("Gone", "Two", json!({"telephone1": "+1 415 555 0102"})));
    let dv = adapter(&s);
    let contact = spec("contact");
    let (first, _) = last_page(&dv, &contact, None).await;
    assert!(first.restarted.is_none());

    // Within ExpireChangeTrackingInDays (7 by default) the token still works.
    s.pass_days(6);
    let within = dv.changes(&contact, Some(&first.cursor)).await.expect("a six-day-old token");
    assert!(within.restarted.is_none() && within.upserts.is_empty());

    // The hub was off for more than a week: Dataverse refuses the token ("please perform a
    // full sync"), and the adapter does just that instead of failing on every round.
    s.delete("contacts", &gone);
    s.pass_days(2);
    let old_token = first.cursor.clone();
    s.clear_seen();
    let restarted = dv.changes(&contact, Some(&old_token)).await.expect("a full sync instead of an error");
    let reason = restarted.restarted.clone().expect("the page says the sync started over");
    assert!(reason.contains("0x80044352") && reason.contains("expired"), "{reason}");
    assert_eq!(restarted.upserts.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), vec![kept.clone()], "the whole table, as it is now");
    assert!(restarted.deletes.is_empty());
    assert!(!restarted.more && restarted.cursor.contains("$deltatoken="), "{}", restarted.cursor);
    let gets = requests_to(&s, "GET", "contacts");
    assert_eq!(gets.len(), 2, "the refused delta link, then the full query: {:?}", gets.iter().map(|g| &g.target).collect::<Vec<_>>());
    assert!(gets[1].target.contains("$select=") && !gets[1].target.contains("$deltatoken"), "{}", gets[1].target);

    // The new token is fresh.
    let next = dv.changes(&contact, Some(&restarted.cursor)).await.expect("the new token");
    assert!(next.restarted.is_none() && next.upserts.is_empty());

    // A shorter expiry set by the admin counts too.
    s.set_expire_change_tracking_in_days(1);
    s.pass_days(2);
    assert!(dv.changes(&contact, Some(&next.cursor)).await.expect("full sync").restarted.is_some());
}

#[tokio::test]
async fn change_tracking_switched_off_tells_the_admin_what_to_do() {
    let s = server().await;
    s.set_change_tracking("leads", false);
    let dv = adapter(&s);
    let message = permanent(dv.changes(&spec("lead"), None).await);
    assert!(message.contains("Track changes") && message.contains("0x80072491"), "{message}");
}

#[tokio::test]
async fn workflows_search_create_update_and_read_the_timeline() {
    let s = server().await;
    let account = s.insert("accounts", json!({"name": "Contoso"}));
    let dv = adapter(&s);
    let contact_spec = spec("contact");

    let fields = BTreeMap::from([
        ("firstname".to_string(), "Ann".to_string()),
        ("lastname".to_string(), "Lee".to_string()),
        ("telephone1".to_string(), "(415) 555-0100".to_string()),
        ("_parentcustomerid_value".to_string(), account.clone()),
    ]);
    let created = dv.create(&contact_spec, &fields).await.expect("created");
    assert_eq!(created.title, "Ann Lee");
    assert!(created.display.contains(&("Company".to_string(), "Contoso".to_string())), "{:?}", created.display);
    let stored = s.record("contacts", &created.record.id).expect("stored");
    assert_eq!(stored["_parentcustomerid_value"], json!(account));
    let post = &requests_to(&s, "POST", "contacts")[0];
    let body: Value = serde_json::from_str(&post.body).expect("body");
    assert_eq!(body["parentcustomerid_account@odata.bind"], json!(format!("/accounts({account})")));
    assert!(post.header("prefer").is_some_and(|p| p.contains("return=representation")));

    let updated = dv
        .update(&contact_spec, &created.record.id, &BTreeMap::from([("mobilephone".to_string(), "+1 415 555 0111".to_string())]))
        .await
        .expect("updated");
    assert_eq!(updated.fields.get("mobilephone").map(String::as_str), Some("+1 415 555 0111"));
    assert_eq!(updated.fields.get("telephone1").map(String::as_str), Some("(415) 555-0100"));
    assert_eq!(requests_to(&s, "PATCH", "contacts")[0].header("if-match"), Some("*"));

    let missing = "0b7f4c1e-0000-4000-8000-00000000dead";
    let message = permanent(dv.update(&contact_spec, missing, &BTreeMap::from([("mobilephone".to_string(), "1".to_string())])).await);
    assert!(message.contains("Does Not Exist"), "{message}");
    assert!(s.record("contacts", missing).is_none(), "an update never creates");

    s.insert("contacts", person("Ann", "Other", json!({"telephone1": "+1 212 555 0100"})));
    let query = SearchQuery { text: Some("ann".into()), filters: BTreeMap::from([("telephone1".to_string(), "(415) 555-0100".to_string())]), limit: 10 };
    let found = dv.search(&contact_spec, &query).await.expect("search");
    assert_eq!(ids(&found), BTreeSet::from([created.record.id.clone()]));
    let by_account = SearchQuery { filters: BTreeMap::from([("_parentcustomerid_value".to_string(), account.clone())]), ..SearchQuery::default() };
    assert_eq!(ids(&dv.search(&contact_spec, &by_account).await.expect("by lookup")), BTreeSet::from([created.record.id.clone()]));

    let record = created.record.clone();
    for i in 0..3 {
        dv.upsert_activity(&call(&format!("tl-{i}"), &record, Direction::Inbound, None)).await.expect("activity");
    }
    let timeline = dv.timeline(&record, 2).await.expect("timeline");
    assert_eq!(timeline.iter().map(|t| t.subject.as_str()).collect::<Vec<_>>(), vec!["Call tl-2", "Call tl-1"]);
    assert!(timeline.iter().all(|t| t.kind == "phonecall" && !t.at.is_empty()));
    let sent = requests_to(&s, "GET", "activitypointers");
    assert_eq!(param(&sent[0], "$filter"), Some(format!("_regardingobjectid_value eq {}", record.id)));
    assert_eq!(param(&sent[0], "$orderby").as_deref(), Some("createdon desc"));
    assert!(dv.timeline(&RecordRef::new("contact", missing), 5).await.expect("empty").is_empty());
}

#[tokio::test]
async fn related_records_follow_the_lookup() {
    let s = server().await;
    let account = s.insert("accounts", json!({"name": "Contoso", "telephone1": "+1 212 555 0199"}));
    let with = s.insert("contacts", person("Ann", "Lee", json!({"_parentcustomerid_value": account})));
    let without = s.insert("contacts", person("Bo", "Ng", json!({})));
    let parent_contact = s.insert("contacts", person("Cy", "Kid", json!({"_parentcustomerid_value": without})));
    let dv = adapter(&s);
    let contact = spec("contact");
    let related = dv.related(&RecordRef::new("contact", &with), &contact, "account").await.expect("related").expect("an account");
    assert_eq!(related.record, RecordRef::new("account", &account));
    assert_eq!(related.title, "Contoso");
    assert!(dv.related(&RecordRef::new("contact", &without), &contact, "account").await.expect("none").is_none());
    assert!(dv.related(&RecordRef::new("contact", &parent_contact), &contact, "account").await.expect("a contact is no account").is_none());
    assert!(dv.related(&RecordRef::new("contact", "0b7f4c1e-0000-4000-8000-00000000dead"), &contact, "account").await.expect("missing").is_none());
    assert!(permanent(dv.related(&RecordRef::new("contact", &with), &contact, "owner").await).contains("no relation"));
}

#[tokio::test]
async fn the_default_mapping_writes_a_phonecall_dataverse_accepts() {
    let s = server().await;
    let contact = s.insert("contacts", person("Ann", "Lee", json!({"telephone1": "(415) 555-0100"})));
    let dv = adapter(&s);
    let candidate = dv.find_by_phone(NUMBER, &[spec("contact")], 1).await.expect("found").remove(0);
    let at = |secs: i64| cxbridge_domain::Timestamp::from_second(1_709_287_200 + secs).expect("time");
    let conversation = Conversation {
        id: "conv-77".into(),
        source: "sipgate".into(),
        external_id: "orig-77".into(),
        legs: vec![],
        channel: Channel::Voice,
        direction: Direction::Inbound,
        customer: Address { raw: "(415) 555-0100".into(), e164: Some(NUMBER.into()) },
        dialed: Address { raw: "+1 212 555 0000".into(), e164: Some("+12125550000".into()) },
        queue: Some("sales".into()),
        offered_to: vec!["alice".into()],
        agent: Some("alice".into()),
        state: State::Completed,
        outcome: Some(Outcome::Answered),
        end_cause: Some(EndCause::NormalClearing),
        offered_at: at(0),
        connected_at: Some(at(11)),
        ended_at: Some(at(151)),
        completed_at: Some(at(200)),
        last_event_at: at(200),
        transfers: vec![],
        disposition: Some(Disposition { code: "sale".into(), category: Some("won".into()) }),
        details: Details { notes: Some("Wants a quote.".into()), transcript: Some("x".repeat(3000)), ..Details::default() },
        identification: Identification::Single(candidate.clone()),
        selected: None,
        pinned: vec![],
        wrapped_up: true,
        revision: 3,
    };
    let mapping = Mapping { fields: default_mapping(), ..Mapping::default() };
    mapping.validate().expect("valid mapping");
    let mut activity = mapping.build(&conversation, Some(&candidate));
    activity.on_behalf_of = Some(dv::AGENT_USER_ID.into());
    let id = dv.upsert_activity(&activity).await.expect("Dataverse takes it");
    let stored = &s.activities()[0];
    assert_eq!(stored["activityid"], json!(id));
    assert_eq!(stored["subject"], json!("Inbound call (415) 555-0100 (answered)"));
    assert_eq!(stored["directioncode"], json!(false));
    assert_eq!(stored["actualdurationminutes"], json!(3));
    assert_eq!(stored["actualstart"], json!("2024-03-01T10:00:00Z"));
    assert_eq!(stored["actualend"], json!("2024-03-01T10:02:31Z"));
    assert_eq!(stored["phonenumber"], json!(NUMBER), "E.164, whatever notation the PBX used");
    let description = stored["description"].as_str().expect("description");
    assert!(description.contains("Disposition: sale won") && description.contains("Notes: Wants a quote."), "{description}");
    assert_eq!(description.chars().count(), 2000, "cut to the column's length");
    assert_eq!(stored["_regardingobjectid_value"], json!(contact));
    assert_eq!(stored[dv::ACTIVITY_KEY], json!("cxbridge-conv-77"));
}
