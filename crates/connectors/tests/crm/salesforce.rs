//! The Salesforce adapter against an org that follows Salesforce's REST wire format
//! (`cxbridge_testkit::salesforce`): what it sends, and what it makes of the answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cxbridge_connectors::client::http_client;
use cxbridge_connectors::client::oauth::Secret;
use cxbridge_connectors::sinks::crm::salesforce::{ApiUsage, Salesforce, SalesforceConfig, default_entities, default_mapping};
use cxbridge_domain::Timestamp;
use cxbridge_domain::conversation::{Address, Channel, Conversation, Details, Direction, Disposition, EndCause, Outcome, State};
use cxbridge_domain::crm::{Activity, Candidate, Crm, CrmError, EntitySpec, RecordRef, SearchQuery};
use cxbridge_domain::identify::Identification;
use cxbridge_domain::mapping::Mapping;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_testkit::Seen;
use cxbridge_testkit::salesforce::{self as testorg, SalesforceServer};
use serde_json::{Value, json};

const CALLER: &str = "+493012345678";

async fn start() -> SalesforceServer {
    SalesforceServer::start().await.expect("the test org starts")
}

fn config(org: &SalesforceServer) -> SalesforceConfig {
    SalesforceConfig::new(&org.login_url, testorg::CLIENT_ID)
}

fn adapter_with(config: &SalesforceConfig) -> Salesforce {
    let normalizer = PhoneNormalizer::new(Some("DE"), &[]).expect("region DE");
    Salesforce::new(config, Secret::new(testorg::CLIENT_SECRET), normalizer, http_client()).expect("a valid config")
}

fn adapter(org: &SalesforceServer) -> Salesforce {
    adapter_with(&config(org))
}

fn entity(name: &str) -> EntitySpec {
    default_entities().into_iter().find(|e| e.name == name).expect("a default entity")
}

fn activity(key: &str, fields: Value) -> Activity {
    Activity {
        key: key.into(),
        kind: "phonecall".into(),
        regarding: vec![],
        fields: fields.as_object().cloned().unwrap_or_default().into_iter().collect(),
        direction: Direction::Inbound,
        on_behalf_of: None,
    }
}

fn call(key: &str, subject: &str) -> Activity {
    activity(key, json!({ "Subject": subject, "CallType": "Inbound", "CallDurationInSeconds": 42, "Status": "Completed", "TaskSubtype": "Call" }))
}

/// The decoded `q` parameter of a request.
fn q(seen: &Seen) -> String {
    let query = seen.target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_html_form::from_str(query).expect("a form-encoded query");
    pairs.into_iter().find(|(k, _)| k == "q").map(|(_, v)| v).unwrap_or_default()
}

fn ids(candidates: &[Candidate]) -> Vec<&str> {
    candidates.iter().map(|c| c.record.id.as_str()).collect()
}

fn permanent_message(e: CrmError) -> String {
    match e {
        CrmError::Permanent { message } => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The org's Tasks whose external id is `key`.
fn tasks_with_key(org: &SalesforceServer, key: &str) -> Vec<Value> {
    org.tasks().into_iter().filter(|t| field(t, testorg::DEFAULT_EXTERNAL_ID_FIELD) == key).collect()
}

// --- Identification -----------------------------------------------------------------------

#[tokio::test]
async fn callers_are_found_whatever_notation_their_number_is_stored_in() {
    let org = start().await;
    let account = org.insert("Account", json!({ "Name": "Acme", "Phone": "0049 30 12345678" }));
    let ada = org.insert("Contact", json!({ "FirstName": "Ada", "LastName": "Lovelace", "Phone": "+49 30 12345678", "AccountId": account }));
    let bob = org.insert("Contact", json!({ "FirstName": "Bob", "LastName": "Byte", "MobilePhone": "030 1234 5678" }));
    let cleo = org.insert("Contact", json!({ "LastName": "Cleo", "OtherPhone": "(30) 12345678" }));
    let lead = org.insert("Lead", json!({ "LastName": "Lee", "Company": "Leads Ltd", "Phone": "+49-30-1234-5678" }));
    org.insert("Contact", json!({ "LastName": "Stranger", "Phone": "+49 30 87654321" }));

    let found = adapter(&org).find_by_phone(CALLER, &default_entities(), 10).await.expect("search");

    assert_eq!(ids(&found), [ada.as_str(), bob.as_str(), cleo.as_str(), account.as_str(), lead.as_str()]);
    assert_eq!(found[0].title, "Ada Lovelace");
    assert_eq!(found[0].record, RecordRef::new("contact", &ada));
    assert!(found[0].display.contains(&("Account name".to_string(), "Acme".to_string())), "{:?}", found[0].display);
    assert_eq!(found[3].record.entity, "account");
    assert_eq!(found[4].display.first(), Some(&("Lead".to_string(), "Lee".to_string())));
}

#[tokio::test]
async fn identification_is_one_sosl_search_over_every_notation() {
    let org = start().await;
    adapter(&org).find_by_phone(CALLER, &default_entities(), 5).await.expect("search");

    let seen = org.seen();
    assert_eq!(seen.len(), 1, "one request: {seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].target.starts_with("/services/data/v62.0/search/?q="), "{}", seen[0].target);
    assert_eq!(
        q(&seen[0]),
        "FIND {493012345678 OR 03012345678 OR 00493012345678 OR 3012345678} IN PHONE FIELDS RETURNING \
         Contact(Id, Name, Phone, MobilePhone, HomePhone, OtherPhone, Email, Account.Name, AccountId), \
         Account(Id, Name, Phone), \
         Lead(Id, Name, Phone, MobilePhone, Email, Company) LIMIT 10"
    );
}

#[tokio::test]
async fn loose_search_hits_that_are_not_the_caller_are_dropped() {
    let org = start().await;
    // Salesforce's phone search matches these by digits; none of them is +49 30 12345678.
    org.insert("Contact", json!({ "LastName": "Vienna", "Phone": "+43 30 12345678" }));
    org.insert("Contact", json!({ "LastName": "Longer", "Phone": "+49 30 123456789" }));
    let real = org.insert("Contact", json!({ "LastName": "Real", "HomePhone": "030/12345678" }));

    let found = adapter(&org).find_by_phone(CALLER, &default_entities(), 10).await.expect("search");

    let answered = org.seen().len();
    assert_eq!(answered, 1);
    assert_eq!(ids(&found), [real.as_str()]);
}

#[tokio::test]
async fn results_follow_the_entity_priority_given() {
    let org = start().await;
    let contact = org.insert("Contact", json!({ "LastName": "Ada", "Phone": CALLER }));
    let lead = org.insert("Lead", json!({ "LastName": "Lee", "Company": "L", "Phone": CALLER }));
    let account = org.insert("Account", json!({ "Name": "Acme", "Phone": CALLER }));
    let sf = adapter(&org);

    let leads_first = [entity("lead"), entity("account"), entity("contact")];
    let found = sf.find_by_phone(CALLER, &leads_first, 10).await.expect("search");
    assert_eq!(ids(&found), [lead.as_str(), account.as_str(), contact.as_str()]);

    let found = sf.find_by_phone(CALLER, &leads_first, 2).await.expect("search");
    assert_eq!(ids(&found), [lead.as_str(), account.as_str()]);

    let mut no_accounts = default_entities();
    no_accounts[1].identify = false;
    let found = sf.find_by_phone(CALLER, &no_accounts, 10).await.expect("search");
    assert_eq!(ids(&found), [contact.as_str(), lead.as_str()]);
    assert!(!q(org.seen().last().expect("a request")).contains("Account("));
}

#[tokio::test]
async fn related_opens_the_contacts_account() {
    let org = start().await;
    let account = org.insert("Account", json!({ "Name": "Acme", "Phone": "+49 30 5550000" }));
    let ada = org.insert("Contact", json!({ "LastName": "Ada", "AccountId": account }));
    let loner = org.insert("Contact", json!({ "LastName": "Loner" }));
    let sf = adapter(&org);
    let contact = entity("contact");

    let related = sf.related(&RecordRef::new("contact", &ada), &contact, "account").await.expect("related").expect("an account");
    assert_eq!(related.record, RecordRef::new("account", &account));
    assert_eq!(related.title, "Acme");

    assert_eq!(sf.related(&RecordRef::new("contact", &loner), &contact, "account").await.expect("related"), None);
    assert_eq!(sf.related(&RecordRef::new("contact", "003xx0000000999AAA"), &contact, "account").await.expect("related"), None);
    assert!(sf.related(&RecordRef::new("contact", &ada), &contact, "manager").await.is_err());
}

// --- Tokens and failures ------------------------------------------------------------------

#[tokio::test]
async fn one_token_serves_many_calls_and_they_go_to_its_instance_url() {
    let org = start().await;
    let sf = adapter(&org);
    for _ in 0..3 {
        sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("search");
    }
    sf.timeline(&RecordRef::new("contact", "003xx0000000101AAA"), 5).await.expect("timeline");

    assert_eq!(org.tokens.issued(), 1);
    assert_eq!(sf.tokens_fetched(), 1);
    // The login server only issues tokens: every API call reached the instance it named.
    let seen = org.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.header("authorization").is_some_and(|a| a.starts_with("Bearer tk-"))));
}

#[tokio::test]
async fn an_expired_session_is_renewed_once_and_the_call_succeeds() {
    let org = start().await;
    let ada = org.insert("Contact", json!({ "LastName": "Ada", "Phone": CALLER }));
    let sf = adapter(&org);
    sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("first search");

    org.tokens.expire_all();
    let found = sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("search after expiry");

    assert_eq!(ids(&found), [ada.as_str()]);
    assert_eq!(org.tokens.issued(), 2);
    assert_eq!(org.seen().len(), 3, "the refused request is sent once more");
}

#[tokio::test]
async fn concurrent_calls_share_one_token_fetch() {
    let org = start().await;
    let sf = std::sync::Arc::new(adapter(&org));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let sf = sf.clone();
            tokio::spawn(async move { sf.find_by_phone(CALLER, &default_entities(), 5).await })
        })
        .collect();
    for c in calls {
        c.await.expect("task").expect("search");
    }
    assert_eq!(org.tokens.issued(), 1);
}

#[tokio::test]
async fn throttling_and_outages_are_transient_and_honour_retry_after() {
    let org = start().await;
    let sf = adapter(&org);

    org.faults.throttle_next(1, 1);
    match sf.upsert_activity(&call("cxbridge:t1", "x")).await {
        Err(CrmError::Transient { retry_after, .. }) => assert_eq!(retry_after, Some(Duration::from_secs(1))),
        other => panic!("expected a transient error, got {other:?}"),
    }

    org.faults.unavailable_next(1);
    assert!(matches!(sf.upsert_activity(&call("cxbridge:t1", "x")).await, Err(CrmError::Transient { .. })));

    // Nothing was written by the refused requests; the next one goes through.
    assert!(org.tasks().is_empty());
    sf.upsert_activity(&call("cxbridge:t1", "x")).await.expect("upsert after the pause");
    assert_eq!(org.tasks().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient() {
    let org = start().await;
    let sf = adapter_with(&SalesforceConfig { timeout_ms: 200, ..config(&org) });
    sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("token and first search");

    org.faults.delay(Duration::from_secs(3));
    let started = Instant::now();
    let result = sf.find_by_phone(CALLER, &default_entities(), 5).await;
    org.faults.clear();

    match result {
        Err(CrmError::Transient { message, .. }) => assert!(message.contains("timed out"), "{message}"),
        other => panic!("expected a transient timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after the timeout, not after the answer");
}

#[tokio::test]
async fn a_refused_field_is_permanent_with_salesforces_own_message() {
    let org = start().await;
    let sf = adapter(&org);

    let bad_task = activity("cxbridge:f1", json!({ "Subject": "x", "Mood__c": "happy" }));
    let message = permanent_message(sf.upsert_activity(&bad_task).await.expect_err("refused"));
    assert!(message.contains("No such column 'Mood__c' on sobject of type Task (INVALID_FIELD)"), "{message}");

    let query = SearchQuery { text: None, filters: BTreeMap::from([("Shoe_Size__c".to_string(), "44".to_string())]), limit: 5 };
    let message = permanent_message(sf.search(&entity("contact"), &query).await.expect_err("refused"));
    assert!(message.contains("No such column 'Shoe_Size__c'") && message.contains("INVALID_FIELD"), "{message}");

    let bad_type = activity("cxbridge:f2", json!({ "Subject": "x", "CallType": "sideways" }));
    let message = permanent_message(sf.upsert_activity(&bad_type).await.expect_err("refused"));
    assert!(message.contains("bad value for restricted picklist field: sideways"), "{message}");
    assert!(org.tasks().is_empty());
}

#[tokio::test]
async fn an_exhausted_api_allocation_is_transient() {
    let org = start().await;
    let sf = adapter(&org);
    sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("search");
    org.set_api_limit(org.api_usage());

    match sf.upsert_activity(&call("cxbridge:l1", "x")).await {
        Err(CrmError::Transient { message, .. }) => assert!(message.contains("REQUEST_LIMIT_EXCEEDED"), "{message}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert!(org.tasks().is_empty());
}

// --- Activities ---------------------------------------------------------------------------

#[tokio::test]
async fn the_same_key_always_lands_on_one_task() {
    let org = start().await;
    let sf = adapter(&org);

    let first = sf.upsert_activity(&call("cxbridge:conv-1", "Inbound call")).await.expect("create");
    let mut later = call("cxbridge:conv-1", "Inbound call, with notes");
    later.fields.insert("Description".into(), json!("Wants a quote."));
    let second = sf.upsert_activity(&later).await.expect("update");

    assert_eq!(first, second);
    let tasks = tasks_with_key(&org, "cxbridge:conv-1");
    assert_eq!(tasks.len(), 1);
    assert_eq!(field(&tasks[0], "Id"), first);
    assert_eq!(field(&tasks[0], "Subject"), "Inbound call, with notes");
    assert_eq!(field(&tasks[0], "Description"), "Wants a quote.");
    assert_eq!(field(&tasks[0], "TaskSubtype"), "Call");

    let upserts: Vec<Seen> = org.seen().into_iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(upserts[0].target, "/services/data/v62.0/sobjects/Task/CxbridgeKey__c/cxbridge%3Aconv-1");
    let body: Value = serde_json::from_str(&upserts[0].body).expect("json body");
    assert_eq!(body["CallDurationInSeconds"], json!(42));
    assert!(body.get("CxbridgeKey__c").is_none(), "the key travels in the URL only");
    // Salesforce sets TaskSubtype on create only: the update goes again without it.
    let last: Value = serde_json::from_str(&upserts.last().expect("an update").body).expect("json body");
    assert!(last.get("TaskSubtype").is_none(), "{last}");
}

#[tokio::test]
async fn tasks_name_the_person_the_record_and_the_agent() {
    let org = start().await;
    let account = org.insert("Account", json!({ "Name": "Acme" }));
    let contact = org.insert("Contact", json!({ "LastName": "Ada", "AccountId": account }));
    let lead = org.insert("Lead", json!({ "LastName": "Lee", "Company": "L" }));
    let agent = org.add_user("Alice Agent");
    let sf = adapter(&org);

    let mut a = call("cxbridge:w1", "with links");
    a.regarding = vec![RecordRef::new("account", &account), RecordRef::new("contact", &contact)];
    a.on_behalf_of = Some(agent.clone());
    let id = sf.upsert_activity(&a).await.expect("upsert");
    let task = org.record("Task", &id).expect("the task");
    assert_eq!((field(&task, "WhoId"), field(&task, "WhatId"), field(&task, "OwnerId")), (contact.as_str(), account.as_str(), agent.as_str()));

    let mut b = call("cxbridge:w2", "a lead");
    b.regarding = vec![RecordRef::new("lead", &lead)];
    let id = sf.upsert_activity(&b).await.expect("upsert");
    let task = org.record("Task", &id).expect("the task");
    assert_eq!(field(&task, "WhoId"), lead);
    assert_eq!(task.get("WhatId"), None);
    assert_eq!(field(&task, "OwnerId"), testorg::INTEGRATION_USER);
}

#[tokio::test]
async fn a_normalized_phone_field_is_matched_exactly_instead_of_searched() {
    let org = start().await;
    for object in ["Contact", "Account", "Lead"] {
        org.add_text_field(object, "Phone_E164__c");
    }
    // A notation no generated search word is made of: only the normalized field finds it.
    let ann = org.insert("Contact", json!({ "LastName": "Ann", "Phone": "030/1234-5678 (Büro)", "Phone_E164__c": CALLER }));
    let lead = org.insert("Lead", json!({ "LastName": "Lee", "Company": "L", "Phone_E164__c": CALLER }));
    org.insert("Contact", json!({ "LastName": "Other", "Phone": CALLER, "Phone_E164__c": "+493099999999" }));
    let sf = adapter_with(&SalesforceConfig { normalized_phone_field: Some("Phone_E164__c".into()), ..config(&org) });
    org.clear_seen();
    let found = sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("found");
    assert_eq!(ids(&found), [ann.as_str(), lead.as_str()], "entity order, exact matches only");
    let seen = org.seen();
    assert!(seen.iter().all(|r| r.target.contains("/query/")), "SOQL, no SOSL: {:?}", seen.iter().map(|r| &r.target).collect::<Vec<_>>());
    assert!(q(&seen[0]).contains(&format!("WHERE Phone_E164__c = '{CALLER}'")), "{}", q(&seen[0]));
}

#[tokio::test]
async fn a_task_about_a_lead_and_an_account_keeps_the_lead_and_names_the_account() {
    let org = start().await;
    let account = org.insert("Account", json!({ "Name": "Acme" }));
    let lead = org.insert("Lead", json!({ "LastName": "Lee", "Company": "L" }));
    let sf = adapter(&org);

    // Salesforce refuses a WhatId on a Task whose WhoId is a Lead: the Task names the Lead,
    // and the account goes into the first line of the description.
    let mut one = call("cxbridge:l1", "lead and account");
    one.fields.insert("Description".into(), json!("Notes: wants a quote"));
    one.regarding = vec![RecordRef::new("account", &account), RecordRef::new("lead", &lead)];
    let id = sf.upsert_activity(&one).await.expect("written, not refused");
    let task = org.record("Task", &id).expect("the task");
    assert_eq!(field(&task, "WhoId"), lead);
    assert!(task.get("WhatId").is_none_or(Value::is_null), "{task}");
    let description = field(&task, "Description");
    assert!(description.starts_with(&format!("Related to: Account {account}")) && description.ends_with("Notes: wants a quote"), "{description}");

    // In a Composite batch too, and without a mapped description.
    let mut two = call("cxbridge:l2", "lead and account");
    two.regarding = vec![RecordRef::new("lead", &lead), RecordRef::new("account", &account)];
    let mut three = call("cxbridge:l3", "contact-less account");
    three.regarding = vec![RecordRef::new("account", &account)];
    let results = sf.upsert_activities(&[two, three]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let two = &tasks_with_key(&org, "cxbridge:l2")[0];
    assert_eq!(field(two, "WhoId"), lead);
    assert!(field(two, "Description").starts_with("Related to: Account "), "{two}");
    let three = &tasks_with_key(&org, "cxbridge:l3")[0];
    assert_eq!(field(three, "WhatId"), account, "an account without a lead is linked as before");
}

#[tokio::test]
async fn links_to_records_that_are_not_there_are_refused() {
    let org = start().await;
    let account = org.insert("Account", json!({ "Name": "Acme" }));
    let sf = adapter(&org);

    let mut gone = call("cxbridge:x1", "x");
    gone.regarding = vec![RecordRef::new("contact", "003xx0000009999AAA")];
    let message = permanent_message(sf.upsert_activity(&gone).await.expect_err("refused"));
    assert!(message.contains("INVALID_CROSS_REFERENCE_KEY"), "{message}");

    // An account id given as a contact cannot be the Task's WhoId.
    let mut wrong = call("cxbridge:x2", "x");
    wrong.regarding = vec![RecordRef::new("account", &account), RecordRef::new("contact", &account)];
    let message = permanent_message(sf.upsert_activity(&wrong).await.expect_err("refused"));
    assert!(message.contains("FIELD_INTEGRITY_EXCEPTION"), "{message}");

    let mut nobody = call("cxbridge:x3", "x");
    nobody.on_behalf_of = Some(account.clone());
    let message = permanent_message(sf.upsert_activity(&nobody).await.expect_err("refused"));
    assert!(message.contains("Assigned To ID: id value of incorrect type"), "{message}");
    assert!(org.tasks().is_empty());
}

#[tokio::test]
async fn sixty_activities_go_in_three_composites_and_a_bad_one_fails_alone() {
    let org = start().await;
    let sf = adapter(&org);
    let mut batch: Vec<Activity> = (0..60).map(|i| call(&format!("cxbridge:b{i}"), &format!("call {i}"))).collect();
    batch[31].fields.insert("CallType".into(), json!("sideways"));

    let results = sf.upsert_activities(&batch).await;

    assert_eq!(results.len(), 60);
    assert_eq!(org.composites(), 3);
    assert_eq!(org.api_usage(), 3, "a Composite is one API call");
    for (i, r) in results.iter().enumerate() {
        if i == 31 {
            assert!(matches!(r, Err(CrmError::Permanent { message }) if message.contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")), "{r:?}");
        } else {
            let id = r.as_ref().expect("written");
            let task = org.record("Task", id).expect("the task");
            assert_eq!(field(&task, "Subject"), format!("call {i}"));
        }
    }
    assert_eq!(org.tasks().len(), 59);
    let sizes: Vec<usize> = org
        .seen()
        .iter()
        .filter(|s| s.target == "/services/data/v62.0/composite")
        .map(|s| serde_json::from_str::<Value>(&s.body).expect("json")["compositeRequest"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [25, 25, 10]);
    let first: Value = serde_json::from_str(&org.seen()[0].body).expect("json");
    assert_eq!(first["allOrNone"], json!(false));
    assert_eq!(first["compositeRequest"][0]["url"], json!("/services/data/v62.0/sobjects/Task/CxbridgeKey__c/cxbridge%3Ab0"));
    assert_eq!(first["compositeRequest"][0]["method"], json!("PATCH"));

    // Sent again (new data for every call): still 59 Tasks, each updated in place.
    for a in &mut batch {
        a.fields.insert("Description".into(), json!("again"));
    }
    let again = sf.upsert_activities(&batch).await;
    assert_eq!(again.iter().filter(|r| r.is_ok()).count(), 59);
    assert_eq!(org.tasks().len(), 59);
    assert!(org.tasks().iter().all(|t| field(t, "Description") == "again"));
}

#[tokio::test]
async fn a_smaller_batch_size_makes_smaller_composites() {
    let org = start().await;
    let sf = adapter_with(&SalesforceConfig { batch_size: 10, ..config(&org) });
    let batch: Vec<Activity> = (0..25).map(|i| call(&format!("cxbridge:s{i}"), "x")).collect();
    assert!(sf.upsert_activities(&batch).await.iter().all(Result::is_ok));
    assert_eq!(org.composites(), 3);
}

#[tokio::test]
async fn lost_answers_and_retries_never_duplicate_a_task() {
    let org = start().await;
    let sf = adapter(&org);
    let single = call("cxbridge:lost", "one call");
    let batch: Vec<Activity> = (0..10).map(|i| call(&format!("cxbridge:lostb{i}"), &format!("batch {i}"))).collect();

    // Salesforce writes, then the answer never arrives: the outbox sees a failure and retries.
    org.faults.lose_answer_ratio(1.0);
    assert!(matches!(sf.upsert_activity(&single).await, Err(CrmError::Transient { .. })));
    assert!(sf.upsert_activities(&batch).await.iter().all(|r| matches!(r, Err(CrmError::Transient { .. }))));
    assert_eq!(org.tasks().len(), 11, "the writes were carried out");
    org.faults.clear();

    let id = sf.upsert_activity(&single).await.expect("the retry");
    let ids: Vec<String> = sf.upsert_activities(&batch).await.into_iter().map(|r| r.expect("the retry")).collect();

    assert_eq!(org.tasks().len(), 11);
    assert_eq!(tasks_with_key(&org, "cxbridge:lost").len(), 1);
    assert_eq!(field(&tasks_with_key(&org, "cxbridge:lost")[0], "Id"), id);
    for (i, id) in ids.iter().enumerate() {
        let task = tasks_with_key(&org, &format!("cxbridge:lostb{i}"));
        assert_eq!(task.len(), 1);
        assert_eq!(field(&task[0], "Id"), id);
    }
}

#[tokio::test]
async fn a_call_mapped_with_the_default_mapping_is_accepted() {
    let org = start().await;
    let contact = org.insert("Contact", json!({ "LastName": "Nováková", "Phone": "030 1234567" }));
    let sf = adapter(&org);
    let mut conversation = answered_call(&contact);
    conversation.details.transcript = Some("Hello. ".repeat(6000));
    let mapping = Mapping { fields: default_mapping(), ..Default::default() };
    let built = mapping.build(&conversation, None);

    let id = sf.upsert_activity(&built).await.expect("Salesforce takes the mapped Task");

    let task = org.record("Task", &id).expect("the task");
    assert_eq!(field(&task, "Subject"), "Inbound voice 030 1234567 (answered)");
    assert_eq!(field(&task, "CallType"), "Inbound");
    assert_eq!(task["CallDurationInSeconds"], json!(151));
    assert_eq!(field(&task, "CallDisposition"), "sale");
    assert_eq!(field(&task, "CallObject"), "orig-77");
    assert_eq!(field(&task, "Status"), "Completed");
    assert_eq!(field(&task, "TaskSubtype"), "Call");
    assert_eq!(field(&task, "ActivityDate"), "2024-03-01");
    assert_eq!(field(&task, "WhoId"), contact);
    let description = field(&task, "Description");
    assert!(description.starts_with("Disposition: sale won\nNotes: Wants a quote."), "{description}");
    assert_eq!(description.chars().count(), 32_000, "the long transcript is cut to fit");
    assert!(description.ends_with('…'));
}

fn answered_call(contact: &str) -> Conversation {
    let at = |secs: i64| Timestamp::from_second(1_709_287_200 + secs).expect("a timestamp");
    Conversation {
        id: "conv-1".into(),
        source: "sipgate".into(),
        external_id: "orig-77".into(),
        legs: vec![],
        channel: Channel::Voice,
        direction: Direction::Inbound,
        customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
        dialed: Address { raw: "+49 30 9999000".into(), e164: Some("+49309999000".into()) },
        queue: Some("sales".into()),
        offered_to: vec!["bob".into()],
        agent: Some("bob".into()),
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
        details: Details { notes: Some("Wants a quote.".into()), ..Default::default() },
        identification: Identification::None,
        selected: Some(RecordRef::new("contact", contact)),
        pinned: vec![],
        wrapped_up: true,
        revision: 1,
    }
}

#[tokio::test]
async fn api_usage_is_read_from_every_answer() {
    let org = start().await;
    let sf = adapter(&org);
    assert_eq!(sf.api_usage(), None);

    sf.find_by_phone(CALLER, &default_entities(), 5).await.expect("search");
    sf.upsert_activity(&call("cxbridge:u1", "x")).await.expect("upsert");
    assert_eq!(sf.api_usage(), Some(ApiUsage { used: 2, max: testorg::DEFAULT_API_LIMIT }));

    sf.upsert_activities(&[call("cxbridge:u2", "x"), call("cxbridge:u3", "x")]).await;
    assert_eq!(sf.api_usage(), Some(ApiUsage { used: 3, max: testorg::DEFAULT_API_LIMIT }));
    assert_eq!(org.api_usage(), 3);
}

// --- Workflows ----------------------------------------------------------------------------

#[tokio::test]
async fn records_are_created_found_updated_and_show_their_timeline() {
    let org = start().await;
    let sf = adapter(&org);
    let contact = entity("contact");

    let fields = BTreeMap::from([
        ("FirstName".to_string(), "Ada".to_string()),
        ("LastName".to_string(), "O'Lovelace".to_string()),
        ("Email".to_string(), "ada@example.com".to_string()),
    ]);
    let created = sf.create(&contact, &fields).await.expect("create");
    assert_eq!(created.title, "Ada O'Lovelace");
    assert_eq!(created.record.entity, "contact");
    let id = created.record.id.clone();

    let updated = sf.update(&contact, &id, &BTreeMap::from([("Phone".to_string(), "+49 30 12345678".to_string())])).await.expect("update");
    assert_eq!(updated.fields.get("Phone").map(String::as_str), Some("+49 30 12345678"));
    assert_eq!(updated.title, "Ada O'Lovelace");

    org.insert("Contact", json!({ "LastName": "Other", "Email": "other@example.com" }));
    let by_text = sf.search(&contact, &SearchQuery { text: Some("o'love".into()), filters: BTreeMap::new(), limit: 10 }).await.expect("search");
    assert_eq!(ids(&by_text), [id.as_str()]);
    let by_field = SearchQuery { text: None, filters: BTreeMap::from([("Email".to_string(), "ada@example.com".to_string())]), limit: 10 };
    assert_eq!(ids(&sf.search(&contact, &by_field).await.expect("search")), [id.as_str()]);
    let wildcard = sf.search(&contact, &SearchQuery { text: Some("%".into()), filters: BTreeMap::new(), limit: 10 }).await.expect("search");
    assert!(wildcard.is_empty(), "a % typed by a user is a character, not a wildcard");
    let soql = q(org.seen().iter().rev().nth(2).expect("the text search"));
    assert_eq!(
        soql,
        "SELECT Id, Name, Phone, MobilePhone, HomePhone, OtherPhone, Email, Account.Name, AccountId FROM Contact \
         WHERE Name LIKE '%o\\'love%' ORDER BY Name LIMIT 10"
    );

    for (key, subject) in [("cxbridge:tl1", "first call"), ("cxbridge:tl2", "second call")] {
        let mut a = call(key, subject);
        a.regarding = vec![RecordRef::new("contact", &id)];
        sf.upsert_activity(&a).await.expect("upsert");
    }
    sf.upsert_activity(&call("cxbridge:tl3", "someone else's")).await.expect("upsert");
    let timeline = sf.timeline(&RecordRef::new("contact", &id), 10).await.expect("timeline");
    let subjects: Vec<&str> = timeline.iter().map(|t| t.subject.as_str()).collect();
    assert_eq!(subjects, ["second call", "first call"]);
    assert_eq!(timeline[0].kind, "call");
    assert!(timeline[0].at.parse::<Timestamp>().is_ok(), "{}", timeline[0].at);
}

#[tokio::test]
async fn updating_or_creating_wrongly_says_why() {
    let org = start().await;
    let sf = adapter(&org);
    let contact = entity("contact");

    let message = permanent_message(sf.update(&contact, "003xx0000009999AAA", &BTreeMap::new()).await.expect_err("no such contact"));
    assert_eq!(message, "contact `003xx0000009999AAA` does not exist");

    let message = permanent_message(sf.create(&contact, &BTreeMap::from([("FirstName".to_string(), "Ada".to_string())])).await.expect_err("refused"));
    assert!(message.contains("Required fields are missing: [LastName] (REQUIRED_FIELD_MISSING)"), "{message}");
}

// --- Change feed --------------------------------------------------------------------------

#[tokio::test]
async fn a_full_sync_pages_and_the_next_sync_brings_creates_updates_and_deletes() {
    let org = start().await;
    org.set_page_size(2);
    let first: Vec<String> = (0..5).map(|i| org.insert("Contact", json!({ "LastName": format!("C{i}"), "Phone": format!("+49 30 555000{i}") }))).collect();
    let sf = adapter(&org);
    let contact = entity("contact");

    let mut pages = 0;
    let mut synced = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let page = sf.changes(&contact, cursor.as_deref()).await.expect("a page");
        pages += 1;
        synced.extend(page.upserts.iter().map(|(id, _)| id.clone()));
        cursor = Some(page.cursor);
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(synced, first);
    let first_query = q(&org.seen()[0]);
    assert!(first_query.ends_with("FROM Contact ORDER BY LastModifiedDate, Id"), "{first_query}");

    let created = sf.create(&contact, &BTreeMap::from([("LastName".to_string(), "New".to_string())])).await.expect("create").record.id;
    sf.update(&contact, &first[1], &BTreeMap::from([("Phone".to_string(), "+49 30 5559999".to_string())])).await.expect("update");
    // The deletion feed is asked in whole minutes, for windows of more than one: as if the
    // last sync had been ten minutes ago and the contact deleted three minutes ago.
    assert!(org.delete_at("Contact", &first[3], minutes_ago(3)));
    cursor = cursor.map(|c| aged(&c, 10));
    org.clear_seen();

    let mut upserts: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut deletes = vec![];
    loop {
        let page = sf.changes(&contact, cursor.as_deref()).await.expect("a page");
        upserts.extend(page.upserts);
        deletes.extend(page.deletes);
        cursor = Some(page.cursor);
        if !page.more {
            break;
        }
    }
    assert!(upserts.contains_key(&created), "{upserts:?}");
    assert_eq!(upserts.get(&first[1]).and_then(|f| f.get("Phone")).map(String::as_str), Some("+49 30 5559999"));
    assert!(!upserts.contains_key(&first[3]));
    assert_eq!(deletes, [first[3].clone()]);
    let seen = org.seen();
    assert!(seen[0].target.starts_with("/services/data/v62.0/sobjects/Contact/deleted/?start="), "{}", seen[0].target);
    assert!(seen[0].target.contains("%3A00Z&end=") && seen[0].target.ends_with("%3A00Z"), "whole minutes: {}", seen[0].target);
    assert!(q(&seen[1]).contains("FROM Contact WHERE LastModifiedDate > 20"), "{}", q(&seen[1]));

    // Nothing changed since: the deletion is not reported twice, and a window of a minute
    // or less is not asked for at all (Salesforce refuses it) while the records still come.
    org.clear_seen();
    let later = org.insert("Contact", json!({ "LastName": "Later", "Phone": "+49 30 5550077" }));
    let pages = pass(&sf, &contact, cursor.clone()).await;
    assert!(pages.iter().all(|p| p.deletes.is_empty()));
    assert!(pages.iter().any(|p| p.upserts.iter().any(|(id, _)| *id == later)), "{pages:?}");
    let page = pages.last().expect("a page");
    assert!(!org.seen().iter().any(|r| r.target.contains("/deleted/")), "{:?}", org.seen().iter().map(|r| &r.target).collect::<Vec<_>>());
    assert_eq!(cursor_field(&page.cursor, "deleted_since"), cursor_field(cursor.as_deref().unwrap_or_default(), "deleted_since"), "the window keeps its start");
}

fn minutes_ago(n: i64) -> jiff::Timestamp {
    jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(n)).expect("time")
}

/// The cursor's `field` (the adapter documents its JSON shape).
fn cursor_field(cursor: &str, field: &str) -> Value {
    serde_json::from_str::<Value>(cursor).expect("a JSON cursor")[field].clone()
}

/// `cursor` as if its last sync had been `minutes` ago (deletions followed since then).
fn aged(cursor: &str, minutes: i64) -> String {
    let mut c: Value = serde_json::from_str(cursor).expect("a JSON cursor");
    c["deleted_since"] = json!(minutes_ago(minutes).strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    c.to_string()
}

/// Follows `contact`'s feed from `cursor` to the end of a pass: every page.
async fn pass(sf: &Salesforce, contact: &EntitySpec, mut cursor: Option<String>) -> Vec<cxbridge_domain::crm::ChangePage> {
    let mut pages = vec![];
    loop {
        let page = sf.changes(contact, cursor.as_deref()).await.expect("a page");
        cursor = Some(page.cursor.clone());
        let more = page.more;
        pages.push(page);
        if !more {
            return pages;
        }
    }
}

#[tokio::test]
async fn deletions_beyond_what_salesforce_keeps_start_the_sync_over() {
    let org = start().await;
    let kept = org.insert("Contact", json!({ "LastName": "Kept", "Phone": "+49 30 5550001" }));
    let gone = org.insert("Contact", json!({ "LastName": "Gone", "Phone": "+49 30 5550002" }));
    let sf = adapter(&org);
    let contact = entity("contact");
    let synced = pass(&sf, &contact, None).await;
    let cursor = synced.last().expect("a page").cursor.clone();
    assert!(org.delete("Contact", &gone));

    // The hub was off for 16 days: Salesforce reports deletions of the last 15 only, so the
    // gap cannot be known. The sync starts over instead of failing on every round.
    org.clear_seen();
    let old = aged(&cursor, 16 * 24 * 60);
    let pages = pass(&sf, &contact, Some(old)).await;
    let reason = pages[0].restarted.clone().expect("started over");
    assert!(reason.contains("15 days"), "{reason}");
    let ids: Vec<&str> = pages.iter().flat_map(|p| p.upserts.iter().map(|(id, _)| id.as_str())).collect();
    assert_eq!(ids, [kept.as_str()]);
    assert!(!org.seen().iter().any(|r| r.target.contains("/deleted/")), "not asked for what Salesforce cannot say");
    assert!(!q(&org.seen()[0]).contains("WHERE"), "a full query: {}", q(&org.seen()[0]));

    // An administrator purged the Recycle Bin: Salesforce refuses the window; a start older
    // than its two-hour purge age means a full pull, as its documentation says.
    org.purge_recycle_bin();
    let pages = pass(&sf, &contact, Some(aged(&cursor, 3 * 60))).await;
    let reason = pages[0].restarted.clone().expect("started over");
    assert!(reason.contains("INVALID_REPLICATION_DATE"), "{reason}");

    // A young window refused is asked for again next round; the cycle does not fail.
    let young = aged(&cursor, 10);
    let page = sf.changes(&contact, Some(&young)).await.expect("no failure");
    assert!(page.restarted.is_none() && page.deletes.is_empty());
    assert_eq!(cursor_field(&page.cursor, "deleted_since"), cursor_field(&young, "deleted_since"));
}

#[tokio::test]
async fn an_expired_query_locator_does_not_stall_the_first_sync() {
    let org = start().await;
    org.set_page_size(2);
    let all: Vec<String> = (0..5).map(|i| org.insert("Contact", json!({ "LastName": format!("C{i}"), "Phone": format!("+49 30 555100{i}") }))).collect();
    let sf = adapter(&org);
    let contact = entity("contact");
    let first = sf.changes(&contact, None).await.expect("the first page");
    assert!(first.more);
    // The hub stopped mid-sync for longer than a locator lives (15 minutes idle).
    org.expire_query_locators();
    let mut seen: Vec<String> = first.upserts.iter().map(|(id, _)| id.clone()).collect();
    for page in pass(&sf, &contact, Some(first.cursor.clone())).await {
        assert!(page.restarted.is_none(), "resumed, not started over");
        seen.extend(page.upserts.into_iter().map(|(id, _)| id));
    }
    seen.sort();
    seen.dedup();
    let mut want = all.clone();
    want.sort();
    assert_eq!(seen, want, "every record arrives; the query ran again from the newest change seen");
}

#[tokio::test]
async fn a_cursor_that_is_not_ours_is_refused() {
    let org = start().await;
    let sf = adapter(&org);
    let message = permanent_message(sf.changes(&entity("contact"), Some("yesterday")).await.expect_err("refused"));
    assert!(message.contains("full sync"), "{message}");
}

// --- The test org itself ------------------------------------------------------------------

/// Raw requests the test org must refuse the way Salesforce does, so an adapter that passes
/// against it does not lean on leniency the real service lacks.
#[tokio::test]
async fn the_test_org_refuses_what_salesforce_refuses() {
    let org = start().await;
    let http = http_client();
    let token: Value = http
        .post(format!("{}/services/oauth2/token", org.login_url))
        .form(&[("grant_type", "client_credentials"), ("client_id", testorg::CLIENT_ID), ("client_secret", testorg::CLIENT_SECRET)])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    assert_eq!(token["instance_url"], json!(org.instance_url));
    let bearer = token["access_token"].as_str().expect("a token").to_string();
    let api = format!("{}/services/data/v62.0", org.instance_url);
    let send = |rb: reqwest::RequestBuilder| {
        let rb = rb.bearer_auth(&bearer);
        async move {
            let r = rb.send().await.expect("an answer");
            let status = r.status().as_u16();
            let limit = r.headers().get("sforce-limit-info").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(limit.starts_with("api-usage="), "every answer says the API usage: {limit:?}");
            (status, body[0]["errorCode"].as_str().unwrap_or_default().to_string())
        }
    };
    let check = |got: (u16, String), status: u16, code: &str| assert_eq!(got, (status, code.to_string()));

    let anonymous = http.get(format!("{api}/query/")).query(&[("q", "SELECT Id FROM Contact")]).send().await.expect("an answer");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body[0]["errorCode"], json!("INVALID_SESSION_ID"));

    let soql = |q: &str| http.get(format!("{api}/query/")).query(&[("q", q.to_string())]);
    check(send(soql("SELECT Id, Nope FROM Contact")).await, 400, "INVALID_FIELD");
    check(send(soql("SELECT Id, Id FROM Contact")).await, 400, "MALFORMED_QUERY");
    check(send(soql("SELECT Id FROM Contact WHERE LastModifiedDate > '2024-01-01T00:00:00Z'")).await, 400, "INVALID_FIELD");
    check(send(soql("SELECT Id FROM Contact WHERE Name = 'a' AND Phone = 'b' OR Email = 'c'")).await, 400, "MALFORMED_QUERY");
    check(send(soql("SELECT Id FROM Gadget__c")).await, 400, "INVALID_TYPE");
    check(send(soql("SELECT Id FROM Contact WHERE LastModifiedDate > 2024-01-01T00:00:00Z")).await, 200, "");

    let sosl = |q: &str| http.get(format!("{api}/search/")).query(&[("q", q.to_string())]);
    check(send(sosl("FIND {+4930123} IN PHONE FIELDS RETURNING Contact(Id)")).await, 400, "MALFORMED_SEARCH");
    check(send(sosl("FIND {\\+4930123} IN PHONE FIELDS RETURNING Contact(Id)")).await, 200, "");

    let task = |path: &str| http.patch(format!("{api}/sobjects/Task/{path}"));
    check(send(task("Subject/abc").json(&json!({ "Subject": "x" }))).await, 404, "NOT_FOUND");
    check(send(task("CxbridgeKey__c/abc").json(&json!({ "Subject": "x".repeat(256) }))).await, 400, "STRING_TOO_LONG");
    check(send(task("CxbridgeKey__c/abc").json(&json!({ "CallDurationInSeconds": "long" }))).await, 400, "JSON_PARSER_ERROR");
    check(send(task("CxbridgeKey__c/abc").json(&json!({ "Subject": "x", "TaskSubtype": "Call" }))).await, 201, "");
    check(send(task("CxbridgeKey__c/abc").json(&json!({ "TaskSubtype": "Call" }))).await, 400, "INVALID_FIELD_FOR_INSERT_UPDATE");
    check(send(task("CxbridgeKey__c/abc").json(&json!({ "Subject": "y" }))).await, 200, "");

    let sub = |i: usize| json!({ "method": "PATCH", "url": format!("/services/data/v62.0/sobjects/Task/CxbridgeKey__c/k{i}"), "referenceId": format!("r{i}"), "body": { "Subject": "x" } });
    let too_many = json!({ "allOrNone": false, "compositeRequest": (0..26).map(sub).collect::<Vec<_>>() });
    check(send(http.post(format!("{api}/composite")).json(&too_many)).await, 400, "LIMIT_EXCEEDED");
    let all_or_none = json!({ "allOrNone": true, "compositeRequest": [sub(1), { "method": "PATCH", "url": "/services/data/v62.0/sobjects/Task/CxbridgeKey__c/k2", "referenceId": "r2", "body": { "CallType": "sideways" } }] });
    let answer: Value = http.post(format!("{api}/composite")).bearer_auth(&bearer).json(&all_or_none).send().await.expect("answer").json().await.expect("json");
    assert_eq!(answer["compositeResponse"][0]["body"][0]["errorCode"], json!("PROCESSING_HALTED"));
    assert_eq!(answer["compositeResponse"][1]["body"][0]["errorCode"], json!("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"));
    assert_eq!(tasks_with_key(&org, "k1").len(), 0, "allOrNone rolled the first write back");

    // A Task about a Lead cannot also be related to an Account, whichever write adds which.
    let lead = org.insert("Lead", json!({ "LastName": "Lee", "Company": "L" }));
    let account = org.insert("Account", json!({ "Name": "Acme" }));
    check(send(task("CxbridgeKey__c/lw1").json(&json!({ "Subject": "x", "WhoId": lead, "WhatId": account }))).await, 400, "FIELD_INTEGRITY_EXCEPTION");
    check(send(task("CxbridgeKey__c/lw1").json(&json!({ "Subject": "x", "WhoId": lead }))).await, 201, "");
    check(send(task("CxbridgeKey__c/lw1").json(&json!({ "WhatId": account }))).await, 400, "FIELD_INTEGRITY_EXCEPTION");
    check(send(task("CxbridgeKey__c/lw2").json(&json!({ "Subject": "x", "WhatId": account }))).await, 201, "");
    check(send(task("CxbridgeKey__c/lw2").json(&json!({ "WhoId": lead }))).await, 400, "FIELD_INTEGRITY_EXCEPTION");
    check(send(task("CxbridgeKey__c/lw2").json(&json!({ "WhoId": lead, "WhatId": null }))).await, 200, "");

    // The deletion feed: seconds are ignored, and a window must be longer than a minute,
    // start within the last 15 days and after a purge of the Recycle Bin.
    let deleted = |start: String, end: String| http.get(format!("{api}/sobjects/Contact/deleted/")).query(&[("start", start), ("end", end)]);
    let now = jiff::Timestamp::now();
    let at = |secs_from_now: i64| now.checked_add(jiff::SignedDuration::from_secs(secs_from_now)).expect("time").strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let minute = now.as_second().rem_euclid(60);
    // Relative to the current minute's start.
    let m = |secs: i64| at(secs - minute);
    check(send(deleted(at(-600), at(0))).await, 200, "");
    check(send(deleted(m(-50), m(50))).await, 400, "INVALID_REPLICATION_DATE");
    check(send(deleted(m(-60), m(59))).await, 400, "INVALID_REPLICATION_DATE");
    check(send(deleted(m(-120), m(5))).await, 200, "");
    check(send(deleted(at(-17 * 24 * 3600), at(0))).await, 400, "INVALID_REPLICATION_DATE");
    org.purge_recycle_bin();
    check(send(deleted(at(-600), at(0))).await, 400, "INVALID_REPLICATION_DATE");

    // Query locators expire.
    org.set_page_size(1);
    let (_, first): (u16, Value) = {
        let r = http.get(format!("{api}/query/")).query(&[("q", "SELECT Id FROM Task")]).bearer_auth(&bearer).send().await.expect("answer");
        (r.status().as_u16(), r.json().await.expect("json"))
    };
    let next = first["nextRecordsUrl"].as_str().expect("more than one page").to_string();
    org.expire_query_locators();
    check(send(http.get(format!("{}{next}", org.instance_url))).await, 400, "INVALID_QUERY_LOCATOR");

    org.set_api_limit(org.api_usage());
    check(send(soql("SELECT Id FROM Contact")).await, 403, "REQUEST_LIMIT_EXCEEDED");
}
