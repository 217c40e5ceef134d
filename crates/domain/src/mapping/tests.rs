use super::*;
use crate::conversation::{Address, Channel, Details, Direction, Disposition, EndCause, Outcome, State, Transfer};
use crate::crm::RecordRef;
use crate::identify::Identification;
use serde_json::json;

const T0: i64 = 1_709_287_200; // 2024-03-01T10:00:00Z

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).expect("valid timestamp")
}

fn candidate(entity: &str, id: &str, title: &str) -> Candidate {
    Candidate { record: RecordRef::new(entity, id), title: title.into(), display: vec![], fields: BTreeMap::new() }
}

/// A completed, answered, transferred inbound call of 151 s with every detail set.
fn full_call() -> Conversation {
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
        offered_to: vec!["alice".into(), "bob".into()],
        agent: Some("bob".into()),
        state: State::Completed,
        outcome: Some(Outcome::Answered),
        end_cause: Some(EndCause::NormalClearing),
        offered_at: at(0),
        connected_at: Some(at(11)),
        ended_at: Some(at(151)),
        completed_at: Some(at(200)),
        last_event_at: at(200),
        transfers: vec![Transfer { at: at(60), from_agent: Some("alice".into()), to: "bob".into(), agents: vec!["bob".into()] }],
        disposition: Some(Disposition { code: "sale".into(), category: Some("won".into()) }),
        details: Details {
            notes: Some("Wants a quote.\nCall back Monday.".into()),
            transcript: Some("Hello, I would like…".into()),
            summary: Some("Customer asks for a quote.".into()),
            recording_url: Some("https://pbx.example.com/rec/77".into()),
            conversation_url: Some("https://cc.example.com/c/77".into()),
            email_subject: Some("Your quote".into()),
            email_body: Some("Dear customer".into()),
            campaign: Some("spring".into()),
            attributes: BTreeMap::from([("order".to_string(), "A-1001".to_string())]),
        },
        identification: Identification::Single(candidate("contact", "c1", "Jana Nováková")),
        selected: None,
        pinned: vec![],
        wrapped_up: true,
        revision: 7,
    }
}

fn rule_with(target: &str, source: Option<&str>, template: Option<&str>, transform_name: Option<&str>, value: Option<&str>) -> FieldRule {
    FieldRule {
        target: target.into(),
        source: source.map(str::to_string),
        template: template.map(str::to_string),
        transform: transform_name.map(str::to_string),
        value: value.map(str::to_string),
    }
}

fn mapping(fields: Vec<FieldRule>) -> Mapping {
    Mapping { fields, ..Mapping::default() }
}

// ---------------------------------------------------------------------------------------
// Formatting.

#[test]
fn hms_formats_hours_minutes_seconds() {
    let check = |secs: i64, expected: &str| assert_eq!(hms(SignedDuration::from_secs(secs)), expected, "{secs} s");
    check(0, "0:00:00");
    check(9, "0:00:09");
    check(151, "0:02:31");
    check(3599, "0:59:59");
    check(3600, "1:00:00");
    check(3661, "1:01:01");
    check(36_000 + 59, "10:00:59");
    check(-5, "0:00:00");
}

#[test]
fn transforms() {
    let check = |input: Value, name: &str, expected: Value| assert_eq!(transform(&input, name), expected, "{input} | {name}");
    check(json!("Inbound"), "upper", json!("INBOUND"));
    check(json!("Inbound"), "lower", json!("inbound"));
    check(json!("  spaced  "), "trim", json!("spaced"));
    check(json!("first\nsecond"), "first_line", json!("first"));
    check(json!(""), "first_line", json!(""));
    check(json!(151), "hms", json!("0:02:31"));
    check(json!("151"), "hms", json!("0:02:31"));
    check(json!("soon"), "hms", json!("soon"));
    // Dataverse counts a started minute.
    check(json!(0), "minutes", json!(0));
    check(json!(1), "minutes", json!(1));
    check(json!(60), "minutes", json!(1));
    check(json!(61), "minutes", json!(2));
    check(json!(151), "minutes", json!(3));
    check(json!("2024-03-01T10:02:31Z"), "date", json!("2024-03-01"));
    check(json!("2024-03-01T10:02:31Z"), "time", json!("10:02:31"));
    check(json!("not a time"), "date", json!("not a time"));
    check(json!("inbound"), "capitalize", json!("Inbound"));
    check(json!("outbound"), "capitalize", json!("Outbound"));
    check(json!(""), "capitalize", json!(""));
    check(json!(151), "integer", json!(151));
    check(json!(" 42 "), "integer", json!(42));
    check(json!("n/a"), "integer", Value::Null);
    check(json!("outbound"), "is_outbound", json!(true));
    check(json!("inbound"), "is_outbound", json!(false));
    // A missing value stays missing, whatever the transform.
    for name in TRANSFORMS {
        check(Value::Null, name, Value::Null);
    }
}

#[test]
fn templates_render_values_transforms_and_gaps() {
    let c = full_call();
    let mut anonymous = full_call();
    anonymous.customer = Address::default();
    anonymous.agent = None;
    let jana = candidate("contact", "c1", "Jana Nováková");
    let check = |c: &Conversation, template: &str, expected: &str| {
        assert_eq!(Context::new(c, Some(&jana)).render(template), expected, "template {template:?}");
    };
    check(&c, "", "");
    check(&c, "no placeholders", "no placeholders");
    check(&c, "{{direction}} {{channel}} {{customer.number}} ({{outcome}})", "inbound voice 030 1234567 (answered)");
    check(&c, "{{ agent }} / {{queue}} / {{campaign}}", "bob / sales / spring");
    check(&c, "{{duration_seconds|hms}} = {{duration}}", "0:02:31 = 0:02:31");
    check(&c, "{{talk_seconds | minutes}} min", "3 min");
    check(&c, "{{notes|first_line}}", "Wants a quote.");
    check(&c, "{{direction|upper}}", "INBOUND");
    check(&c, "{{offered_at|date}} {{offered_at|time}}", "2024-03-01 10:00:00");
    check(&c, "Call with {{customer.name}} ({{regarding.entity}}/{{regarding.id}})", "Call with Jana Nováková (contact/c1)");
    check(&c, "order {{attributes.order}}", "order A-1001");
    check(&c, "{{transfer_count}} transfer(s)", "1 transfer(s)");
    check(&c, "{{agents}}", r#"["alice","bob"]"#);
    // Missing values render empty; an unclosed placeholder is left as written.
    check(&anonymous, "[{{customer.number}}][{{agent}}][{{attributes.nope}}][{{no.such}}]", "[][][][]");
    check(&c, "{{agent", "{{agent");
    check(&c, "{{agent}} and {{queue", "bob and {{queue");
    // In several lines, a line whose placeholders are all empty goes; fixed lines stay.
    check(&anonymous, "Call\nAgent: {{agent}}\nQueue: {{queue}}\n--", "Call\nQueue: sales\n--");
    check(&anonymous, "Who: {{customer.number}} {{agent}}\nEnd", "End");
    check(&c, "Who: {{customer.number}} {{agent}}\nEnd", "Who: 030 1234567 bob\nEnd");
    assert_eq!(Context::new(&c, None).render("{{customer.name}}"), "");
}

#[test]
fn wait_and_talk_times() {
    let c = full_call();
    let ctx = Context::new(&c, None);
    assert_eq!(ctx.get("wait_seconds"), json!(11));
    assert_eq!(ctx.get("talk_seconds"), json!(140));
    assert_eq!(ctx.get("talk_time"), json!("0:02:20"));
    let mut missed = full_call();
    missed.connected_at = None;
    let ctx = Context::new(&missed, None);
    assert_eq!(ctx.get("wait_seconds"), json!(151), "a missed caller waited until the end");
    assert_eq!(ctx.get("talk_time"), json!("0:00:00"));
    assert_eq!(ctx.get("duration"), json!("0:02:31"));
}

// ---------------------------------------------------------------------------------------
// The default mapping.

#[test]
fn default_mapping_fills_every_field_of_the_design() {
    let m = Mapping::default();
    m.validate().expect("the default mapping is valid");
    let c = full_call();
    let jana = candidate("contact", "c1", "Jana Nováková");
    let a = m.build(&c, Some(&jana));
    let f = |name: &str| a.fields.get(name).cloned().unwrap_or_else(|| panic!("the default mapping has no `{name}`"));

    assert_eq!(f("subject"), json!("inbound voice 030 1234567 (answered)"));
    assert_eq!(f("duration"), json!("0:02:31"));
    assert_eq!(f("duration_seconds"), json!(151));
    assert_eq!(f("talk_time"), json!("0:02:20"));
    assert_eq!(f("agent"), json!("bob"));
    assert_eq!(f("queue"), json!("sales"));
    assert_eq!(f("campaign"), json!("spring"));
    assert_eq!(f("direction"), json!("inbound"));
    assert_eq!(f("channel"), json!("voice"));
    assert_eq!(f("outcome"), json!("answered"));
    assert_eq!(f("end_cause"), json!("normalClearing"));
    assert_eq!(f("phone_number"), json!("+49301234567"));
    assert_eq!(f("caller_raw"), json!("030 1234567"));
    assert_eq!(f("dialed_number"), json!("+49 30 9999000"));
    assert_eq!(f("started_at"), json!("2024-03-01T10:00:00Z"));
    assert_eq!(f("connected_at"), json!("2024-03-01T10:00:11Z"));
    assert_eq!(f("ended_at"), json!("2024-03-01T10:02:31Z"));
    assert_eq!(f("transfers"), json!([{"at": "2024-03-01T10:01:00Z", "from_agent": "alice", "to": "bob"}]));
    assert_eq!(f("disposition"), json!("sale"));
    assert_eq!(f("disposition_category"), json!("won"));
    assert_eq!(f("conversation_id"), json!("conv-1"));
    assert_eq!(f("external_id"), json!("orig-77"));
    assert_eq!(f("conversation_url"), json!("https://cc.example.com/c/77"));
    assert_eq!(f("recording_url"), json!("https://pbx.example.com/rec/77"));
    assert_eq!(f("notes"), json!("Wants a quote.\nCall back Monday."));
    assert_eq!(f("transcript"), json!("Hello, I would like…"));
    assert_eq!(f("summary"), json!("Customer asks for a quote."));
    assert_eq!(f("email_subject"), json!("Your quote"));
    assert_eq!(f("email_body"), json!("Dear customer"));
    assert_eq!(f("attributes"), json!({"order": "A-1001"}));
    // A typo in a default source would silently write null.
    let empty: Vec<&String> = a.fields.iter().filter(|(_, v)| v.is_null()).map(|(k, _)| k).collect();
    assert!(empty.is_empty(), "default fields left empty for a full call: {empty:?}");

    assert_eq!(a.kind, "phonecall");
    assert_eq!(a.regarding, vec![RecordRef::new("contact", "c1")]);
}

#[test]
fn missing_data_is_null_not_invented() {
    let mut c = full_call();
    c.disposition = None;
    c.details = Details::default();
    c.connected_at = None;
    c.agent = None;
    let a = Mapping::default().build(&c, None);
    for name in ["disposition", "disposition_category", "notes", "transcript", "summary", "recording_url", "agent", "connected_at", "campaign"] {
        assert_eq!(a.fields.get(name), Some(&Value::Null), "{name}");
    }
    assert_eq!(a.fields.get("talk_time"), Some(&json!("0:00:00")));
    assert_eq!(a.fields.get("attributes"), Some(&json!({})));
}

#[test]
fn activity_key_is_stable_per_conversation() {
    let m = Mapping::default();
    let first = m.build(&full_call(), None);
    let mut later = full_call();
    later.revision = 9;
    later.details.summary = Some("A late summary.".into());
    later.disposition = Some(Disposition { code: "no_sale".into(), category: None });
    let second = m.build(&later, None);
    assert_eq!(first.key, second.key, "a rewrite lands on the same CRM record");
    assert_eq!(first.key, activity_key("conv-1"));
    let mut other = full_call();
    other.id = "conv-2".into();
    other.external_id = "orig-77".into();
    assert_ne!(m.build(&other, None).key, first.key, "another conversation gets its own record");
}

#[test]
fn regarding_is_the_selected_record_else_the_sole_match_plus_pinned() {
    let m = Mapping::default();
    let contact = RecordRef::new("contact", "c1");
    let lead = RecordRef::new("lead", "l9");
    let case = RecordRef::new("case", "k3");

    let c = full_call();
    assert_eq!(m.build(&c, None).regarding, vec![contact.clone()], "sole match");

    let mut chosen = full_call();
    chosen.selected = Some(lead.clone());
    assert_eq!(m.build(&chosen, None).regarding, vec![lead.clone()], "the agent's choice wins");

    let mut several = full_call();
    several.identification = Identification::Multiple(vec![candidate("contact", "c1", "A"), candidate("contact", "c2", "B")]);
    assert_eq!(m.build(&several, None).regarding, Vec::<RecordRef>::new(), "no guess among several");
    several.pinned = vec![case.clone()];
    assert_eq!(m.build(&several, None).regarding, vec![case.clone()]);

    let mut pinned = full_call();
    pinned.selected = Some(lead.clone());
    pinned.pinned = vec![case.clone(), lead.clone()];
    assert_eq!(m.build(&pinned, None).regarding, vec![lead.clone(), case.clone()], "primary first, no duplicates");
    let unlinked = Mapping { link_pinned: false, ..Mapping::default() };
    assert_eq!(unlinked.build(&pinned, None).regarding, vec![lead.clone()]);
}

#[test]
fn activity_kind_follows_the_channel() {
    let m = Mapping { voice_activity: "call".into(), digital_activity: "message".into(), ..Mapping::default() };
    assert_eq!(m.build(&full_call(), None).kind, "call");
    let mut chat = full_call();
    chat.channel = Channel::Digital("webchat".into());
    let a = m.build(&chat, None);
    assert_eq!(a.kind, "message");
    assert_eq!(a.fields.get("channel"), Some(&json!("webchat")));
}

#[test]
fn custom_rules_build_constants_templates_and_transformed_sources() {
    let m = mapping(vec![
        rule_with("actualdurationminutes", Some("duration_seconds"), None, Some("minutes"), None),
        rule_with("description", None, Some("{{summary}} ({{disposition.code|upper}})"), None, None),
        rule_with("directioncode", None, None, None, Some("false")),
        rule_with("order", Some("attributes.order"), None, None, None),
        rule_with("missing_attr", Some("attributes.nope"), None, None, None),
        rule_with("owner", Some("agent"), None, Some("upper"), None),
    ]);
    m.validate().expect("valid");
    let a = m.build(&full_call(), None);
    let want = BTreeMap::from([
        ("actualdurationminutes".to_string(), json!(3)),
        ("description".to_string(), json!("Customer asks for a quote. (SALE)")),
        ("directioncode".to_string(), json!("false")),
        ("order".to_string(), json!("A-1001")),
        ("missing_attr".to_string(), Value::Null),
        ("owner".to_string(), json!("BOB")),
    ]);
    assert_eq!(a.fields, want);
}

// ---------------------------------------------------------------------------------------
// Validation.

#[test]
fn validation_names_the_field_at_fault() {
    let check = |rule: FieldRule, expected: Result<(), &str>| {
        let got = mapping(vec![rule_with("ok", Some("agent"), None, None, None), rule]).validate().map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.starts_with(want), "got {got:?}, want it to start with {want:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    };
    check(rule_with("a", Some("queue"), None, Some("lower"), None), Ok(()));
    check(rule_with("a", Some("attributes"), None, None, None), Ok(()));
    check(rule_with("a", Some("attributes.order_no"), None, None, None), Ok(()));
    check(rule_with("a", None, Some("{{agent|upper}} {{attributes.x}}"), None, None), Ok(()));
    check(rule_with("a", None, None, None, Some("constant")), Ok(()));

    check(rule_with("owner", Some("agnet"), None, None, None), Err("field `owner`: unknown source `agnet`"));
    check(rule_with("x", Some("attributes."), None, None, None), Err("field `x`: unknown source `attributes.`"));
    check(rule_with("subject", None, Some("{{direction}} {{custmer.number}}"), None, None), Err("field `subject`: unknown source `custmer.number`"));
    check(rule_with("minutes", Some("duration_seconds"), None, Some("minuts"), None), Err("field `minutes`: unknown transform `minuts`"));
    check(rule_with("subject", None, Some("{{agent|shout}}"), None, None), Err("field `subject`: unknown transform `shout`"));
    check(rule_with("both", Some("agent"), Some("{{agent}}"), None, None), Err("field `both`: give exactly one of"));
    check(rule_with("all", Some("agent"), None, None, Some("x")), Err("field `all`: give exactly one of"));
    check(rule_with("none", None, None, None, None), Err("field `none`: give exactly one of"));
}

#[test]
fn validation_errors_list_what_is_known() {
    let err = mapping(vec![rule_with("owner", Some("agnet"), None, None, None)]).validate().expect_err("unknown source");
    let text = err.to_string();
    assert!(text.contains("agent") && text.contains("attributes.NAME"), "{text}");
    let err = mapping(vec![rule_with("m", Some("agent"), None, Some("nope"), None)]).validate().expect_err("unknown transform");
    assert!(err.to_string().contains("hms"), "{err}");
}

#[test]
fn every_known_source_is_served() {
    // A name listed in SOURCE_FIELDS that `Context::get` does not serve would pass
    // validation and then always write null.
    let c = full_call();
    let jana = candidate("contact", "c1", "Jana Nováková");
    let ctx = Context::new(&c, Some(&jana));
    let null: Vec<&&str> = SOURCE_FIELDS.iter().filter(|name| ctx.get(name).is_null()).collect();
    assert!(null.is_empty(), "sources never filled: {null:?}");
}

#[test]
fn mapping_config_reads_with_defaults_and_rejects_typos() {
    let m: Mapping = serde_json::from_value(json!({"fields": [{"target": "subject", "template": "{{agent}}"}]})).expect("valid config");
    assert_eq!((m.voice_activity.as_str(), m.digital_activity.as_str(), m.link_pinned), ("phonecall", "chat", true));
    assert_eq!(m.fields, vec![rule_with("subject", None, Some("{{agent}}"), None, None)]);
    let defaults: Mapping = serde_json::from_value(json!({})).expect("empty config");
    assert_eq!(defaults, Mapping::default());
    assert!(serde_json::from_value::<Mapping>(json!({"fields": [{"target": "x", "sorce": "agent"}]})).is_err());
    assert!(serde_json::from_value::<Mapping>(json!({"link_pined": false})).is_err());
}

#[test]
fn an_activity_about_nobody_goes_where_unmatched_says() {
    let party = |id: &str| RecordRef::new("party", id);
    let create = |fallback: Option<RecordRef>| Unmatched::Create { entity: "party".into(), fallback };
    let caller = |number: Option<&str>| Unregarded::Caller { entity: "party".into(), number: number.map(str::to_string) };
    let with = |identification: Identification, e164: Option<&str>| {
        let mut c = full_call();
        c.identification = identification;
        c.customer.e164 = e164.map(str::to_string);
        c
    };
    let unknown = with(Identification::None, Some("+49301234567"));
    let crm_down = with(Identification::Skipped { reason: "crm_error".into() }, Some("+49301234567"));
    let anonymous = with(Identification::Skipped { reason: "anonymous".into() }, None);
    let several = with(Identification::Multiple(vec![candidate("party", "1", "A"), candidate("party", "2", "B")]), Some("+49301234567"));
    let cases: [(&Conversation, Unmatched, Unregarded); 11] = [
        (&unknown, Unmatched::Unassigned, Unregarded::Unassigned),
        (&several, Unmatched::Unassigned, Unregarded::Unassigned),
        (&unknown, Unmatched::Record(party("9")), Unregarded::Regard(vec![party("9")])),
        (&crm_down, Unmatched::Record(party("9")), Unregarded::Regard(vec![party("9")])),
        (&anonymous, Unmatched::Record(party("9")), Unregarded::Regard(vec![party("9")])),
        (&several, Unmatched::Record(party("9")), Unregarded::Regard(vec![party("1"), party("2")])),
        (&unknown, create(None), caller(Some("+49301234567"))),
        (&crm_down, create(Some(party("9"))), caller(Some("+49301234567"))),
        (&anonymous, create(Some(party("9"))), Unregarded::Regard(vec![party("9")])),
        (&anonymous, create(None), caller(None)),
        (&several, create(None), Unregarded::Regard(vec![party("1"), party("2")])),
    ];
    for (c, unmatched, want) in cases {
        assert_eq!(unregarded(c, &unmatched), want, "{:?} under {unmatched:?}", c.identification);
    }
}
