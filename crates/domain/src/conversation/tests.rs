use super::*;
use crate::crm::Candidate;

// ---------------------------------------------------------------------------------------
// Event builders. Every event is about conversation `call-1` unless `.key(..)` says else;
// times are seconds after T0.

const T0: i64 = 1_700_000_000;
const KEY: &str = "call-1";
const HOLD: Policy = Policy { memorialize_missed: false };

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).expect("valid timestamp")
}

fn event(leg: &str, secs: i64, kind: EventKind) -> Event {
    Event {
        dedup_key: format!("{KEY}/{leg}/{secs}/{}", kind_name(&kind)),
        source: "cti".into(),
        conversation_key: KEY.into(),
        leg: (!leg.is_empty()).then(|| leg.to_string()),
        at: at(secs),
        source_time: true,
        kind,
    }
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Offered(_) => "offered",
        EventKind::Connected { .. } => "connected",
        EventKind::Ended { .. } => "ended",
        EventKind::Updated(_) => "updated",
        EventKind::WrappedUp(_) => "wrapped_up",
        EventKind::Linked(_) => "linked",
        EventKind::AcwExpired => "acw_expired",
        EventKind::Identified(_) => "identified",
    }
}

/// An inbound voice call from +49 30 1234567 to the hotline, offered to `agents`.
fn offer(leg: &str, secs: i64, agents: &[&str]) -> Event {
    event(
        leg,
        secs,
        EventKind::Offered(Offer {
            channel: Channel::Voice,
            direction: Direction::Inbound,
            customer: Address { raw: "030 1234567".into(), e164: Some("+49301234567".into()) },
            dialed: Address { raw: "+49 30 9999000".into(), e164: Some("+49309999000".into()) },
            agents: agents.iter().map(|a| a.to_string()).collect(),
            queue: Some("sales".into()),
            diversion: None,
            details: Details::default(),
            identification: Identification::None,
        }),
    )
}

fn connected(leg: &str, secs: i64, agent: &str) -> Event {
    event(leg, secs, EventKind::Connected { agent: (!agent.is_empty()).then(|| agent.to_string()) })
}

fn ended(leg: &str, secs: i64, cause: &str) -> Event {
    event(leg, secs, EventKind::Ended { cause: EndCause::parse(cause) })
}

fn wrapup(secs: i64, code: &str) -> Event {
    event(
        "",
        secs,
        EventKind::WrappedUp(WrapUp {
            agent: Some("alice".into()),
            disposition: Some(Disposition { code: code.into(), category: Some("won".into()) }),
            notes: Some("wants a quote".into()),
            ..WrapUp::default()
        }),
    )
}

fn updated(secs: i64, details: Details) -> Event {
    event("", secs, EventKind::Updated(details))
}

fn transcript(text: &str) -> Details {
    Details { transcript: Some(text.into()), ..Details::default() }
}

fn acw_expired(secs: i64) -> Event {
    event("", secs, EventKind::AcwExpired)
}

/// Tweaks of a built event.
trait Tweak {
    fn outbound(self) -> Self;
    fn digital(self, channel: &str) -> Self;
    fn customer(self, raw: &str) -> Self;
    /// The source sent no time: `at` is when the hub received the event.
    fn received(self) -> Self;
}

impl Tweak for Event {
    fn outbound(mut self) -> Self {
        if let EventKind::Offered(o) = &mut self.kind {
            o.direction = Direction::Outbound;
        }
        self
    }
    fn digital(mut self, channel: &str) -> Self {
        if let EventKind::Offered(o) = &mut self.kind {
            o.channel = Channel::Digital(channel.into());
        }
        self
    }
    fn customer(mut self, raw: &str) -> Self {
        if let EventKind::Offered(o) = &mut self.kind {
            o.customer = Address { raw: raw.into(), e164: None };
        }
        self
    }
    fn received(mut self) -> Self {
        self.source_time = false;
        self
    }
}

// ---------------------------------------------------------------------------------------
// Runners.

/// Applies `events` in order; returns every step's result and the last conversation.
fn run(policy: Policy, events: &[Event]) -> (Vec<Result<Transition, TransitionError>>, Option<Conversation>) {
    let mut current: Option<Conversation> = None;
    let mut steps = vec![];
    for e in events {
        let step = apply(current.clone(), e.clone(), "conv-1", policy);
        if let Ok(t) = &step {
            current = Some(t.conversation.clone());
        }
        steps.push(step);
    }
    (steps, current)
}

fn last(policy: Policy, events: &[Event]) -> Conversation {
    run(policy, events).1.expect("the events start a conversation")
}

/// One step in words: `state[/outcome] effects…`, `absorbed`, or `unknown(key)`.
fn describe(step: &Result<Transition, TransitionError>) -> String {
    let t = match step {
        Ok(t) => t,
        Err(TransitionError::UnknownConversation(key)) => return format!("unknown({key})"),
    };
    let mut effects: Vec<String> = t
        .effects
        .iter()
        .map(|e| match e {
            Effect::Pop(agents) => format!("pop({})", agents.join(",")),
            Effect::Update => "update".into(),
            Effect::End => "end".into(),
            Effect::Memorialize => "memorialize".into(),
        })
        .collect();
    effects.sort();
    let mut words = vec![];
    if t.absorbed {
        words.push("absorbed".to_string());
    } else {
        let c = &t.conversation;
        words.push(match c.outcome {
            Some(o) => format!("{}/{}", c.state.as_str(), o.as_str()),
            None => c.state.as_str().to_string(),
        });
    }
    words.extend(effects);
    words.join(" ")
}

/// Checks each step's description; `expected` separates steps with ` | `.
fn check_with(policy: Policy, events: &[Event], expected: &str) {
    let (steps, _) = run(policy, events);
    let got: Vec<String> = steps.iter().map(describe).collect();
    let want: Vec<&str> = expected.split(" | ").collect();
    assert_eq!(got, want, "events: {:?}", events.iter().map(|e| &e.dedup_key).collect::<Vec<_>>());
}

fn check(events: &[Event], expected: &str) {
    check_with(Policy::default(), events, expected);
}

// ---------------------------------------------------------------------------------------
// Ordinary lives of a conversation.

#[test]
fn inbound_call_waits_for_wrap_up_then_is_memorialized() {
    let events = [offer("L1", 0, &["alice", "bob"]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing"), wrapup(200, "sale")];
    check(&events, "offered pop(alice,bob) | connected update | ended/answered end | completed/answered end memorialize");

    let c = last(Policy::default(), &events);
    assert_eq!(c.agent.as_deref(), Some("alice"));
    assert_eq!(c.customer.e164.as_deref(), Some("+49301234567"));
    assert_eq!(c.queue.as_deref(), Some("sales"));
    assert_eq!((c.offered_at, c.connected_at, c.ended_at, c.completed_at), (at(0), Some(at(5)), Some(at(151)), Some(at(200))));
    assert_eq!(c.total_time(), SignedDuration::from_secs(151));
    assert_eq!(c.talk_time(), SignedDuration::from_secs(146));
    assert_eq!(c.end_cause, Some(EndCause::NormalClearing));
    assert_eq!(c.disposition, Some(Disposition { code: "sale".into(), category: Some("won".into()) }));
    assert_eq!(c.details.notes.as_deref(), Some("wants a quote"));
    assert!(c.wrapped_up);
}

#[test]
fn wrap_up_before_the_hangup_completes_at_the_hangup() {
    check(
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), wrapup(100, "sale"), ended("L1", 151, "normalClearing")],
        "offered pop(alice) | connected update | connected update | completed/answered end memorialize",
    );
}

#[test]
fn unanswered_calls_complete_at_once_with_their_outcome() {
    let unanswered = |cause: &str, expected: &str| {
        check(&[offer("L1", 0, &["alice"]), ended("L1", 30, cause)], &format!("offered pop(alice) | {expected}"));
    };
    unanswered("noAnswer", "completed/missed end memorialize");
    unanswered("busy", "completed/missed end memorialize");
    unanswered("congestion", "completed/missed end memorialize");
    unanswered("rejected", "completed/missed end memorialize");
    unanswered("notFound", "completed/missed end memorialize");
    unanswered("cancel", "completed/abandoned end memorialize");
    unanswered("normalClearing", "completed/abandoned end memorialize");

    let outbound = |cause: &str, expected: &str| {
        check(&[offer("L1", 0, &["alice"]).outbound(), ended("L1", 30, cause)], &format!("offered pop(alice) | {expected}"));
    };
    outbound("noAnswer", "completed/not_reached end memorialize");
    outbound("busy", "completed/not_reached end memorialize");
    outbound("cancel", "completed/not_reached end memorialize");
    check(
        &[offer("L1", 0, &["alice"]).outbound(), connected("L1", 9, ""), ended("L1", 70, "normalClearing")],
        "offered pop(alice) | connected update | ended/answered end",
    );
}

#[test]
fn missed_call_waits_for_the_acw_timeout_when_policy_holds_it() {
    check_with(
        HOLD,
        &[offer("L1", 0, &["alice"]), ended("L1", 30, "noAnswer"), acw_expired(90)],
        "offered pop(alice) | ended/missed end | completed/missed end memorialize",
    );
}

#[test]
fn acw_timeout_completes_an_ended_voice_call_and_nothing_else() {
    check(
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing"), acw_expired(451)],
        "offered pop(alice) | connected update | ended/answered end | completed/answered end memorialize",
    );
    let c = last(Policy::default(), &[offer("L1", 0, &[]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing"), acw_expired(451)]);
    assert_eq!(c.completed_at, Some(at(451)));
    assert!(!c.wrapped_up);
    // The sweeper's timeout on a call still in progress, or one already wrapped up, changes nothing.
    check(&[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), acw_expired(400)], "offered pop(alice) | connected update | absorbed");
    check(
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing"), wrapup(200, "x"), acw_expired(451)],
        "offered pop(alice) | connected update | ended/answered end | completed/answered end memorialize | absorbed",
    );
}

#[test]
fn digital_conversation_completes_when_closed() {
    check(
        &[offer("", 0, &["alice"]).digital("webchat").customer("visitor-42"), connected("", 3, "alice"), ended("", 600, "closed")],
        "offered pop(alice) | connected update | completed/answered end memorialize",
    );
    let c = last(Policy::default(), &[offer("", 0, &["alice"]).digital("webchat"), ended("", 600, "closed")]);
    assert_eq!(c.channel, Channel::Digital("webchat".into()));
}

#[test]
fn data_events_need_a_known_conversation() {
    check(&[updated(1, transcript("hi"))], "unknown(call-1)");
    check(&[wrapup(1, "sale")], "unknown(call-1)");
    check(&[acw_expired(1)], "unknown(call-1)");
}

// ---------------------------------------------------------------------------------------
// Late, repeated and out-of-order events.

#[test]
fn repeated_events_are_absorbed() {
    let o = offer("L1", 0, &["alice"]);
    let c = connected("L1", 5, "alice");
    let e = ended("L1", 151, "normalClearing");
    let w = wrapup(200, "sale");
    let u = updated(300, transcript("hello"));
    check(&[o.clone(), o.clone()], "offered pop(alice) | absorbed");
    check(&[o.clone(), c.clone(), c.clone()], "offered pop(alice) | connected update | absorbed");
    check(&[o.clone(), c.clone(), e.clone(), e.clone()], "offered pop(alice) | connected update | ended/answered end | absorbed");
    check(
        &[o.clone(), c.clone(), e.clone(), w.clone(), w.clone()],
        "offered pop(alice) | connected update | ended/answered end | completed/answered end memorialize | absorbed",
    );
    check(
        &[o.clone(), c.clone(), e.clone(), w.clone(), u.clone(), u.clone()],
        "offered pop(alice) | connected update | ended/answered end | completed/answered end memorialize | completed/answered memorialize | absorbed",
    );
    // A missed call: the hangup repeated after completion is absorbed as well.
    check(&[o.clone(), ended("L1", 30, "noAnswer"), ended("L1", 30, "noAnswer")], "offered pop(alice) | completed/missed end memorialize | absorbed");
}

#[test]
fn a_repeated_event_reported_later_is_still_absorbed() {
    // PBXs resend hangups with a fresh timestamp; that is not a change either.
    check(
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing"), ended("L1", 160, "normalClearing")],
        "offered pop(alice) | connected update | ended/answered end | absorbed",
    );
    check(&[offer("L1", 0, &["alice"]), offer("L1", 2, &["alice"])], "offered pop(alice) | absorbed");
    let (steps, _) = run(Policy::default(), &[offer("L1", 0, &["alice"]), ended("L1", 30, "noAnswer"), ended("L1", 45, "noAnswer")]);
    let revisions: Vec<u64> = steps.iter().map(|s| s.as_ref().expect("known").conversation.revision).collect();
    assert_eq!(revisions, [1, 2, 2]);
}

#[test]
fn hangup_before_new_call_starts_ended_and_the_late_offer_only_fills_gaps() {
    // The PBX delivered the hangup first. A missed call is complete at once…
    check(
        &[ended("L1", 30, "cancel"), offer("L1", 0, &["alice"])],
        // …and the late offer rewrites its activity with who called whom.
        "completed/abandoned end memorialize | completed/abandoned memorialize",
    );
    let c = last(Policy::default(), &[ended("L1", 30, "cancel"), offer("L1", 0, &["alice"])]);
    assert_eq!(c.state, State::Completed);
    assert_eq!(c.customer.e164.as_deref(), Some("+49301234567"));
    assert_eq!(c.dialed.e164.as_deref(), Some("+49309999000"));
    assert_eq!(c.queue.as_deref(), Some("sales"));
    assert_eq!(c.identification, Identification::None);
    assert_eq!(c.offered_at, at(0), "the offer time is the start of the call");
    assert_eq!(c.total_time(), SignedDuration::from_secs(30));

    // When the policy holds unanswered calls, it starts `ended` and stays there.
    check_with(HOLD, &[ended("L1", 30, "cancel"), offer("L1", 0, &["alice"])], "ended/abandoned end | ended/abandoned update");
}

#[test]
fn late_offer_corrects_the_outcome_of_an_outbound_call() {
    // The hangup alone looked like an inbound call; the offer says it was outbound.
    let c = last(Policy::default(), &[ended("L1", 30, "busy"), offer("L1", 0, &["alice"]).outbound()]);
    assert_eq!(c.direction, Direction::Outbound);
    assert_eq!(c.outcome, Some(Outcome::NotReached));
    check(&[ended("L1", 30, "busy"), offer("L1", 0, &["alice"]).outbound()], "completed/missed end memorialize | completed/not_reached memorialize");
}

#[test]
fn answer_after_hangup_never_reopens_the_call_but_makes_it_answered() {
    // Held policy: the call waits ended, and the late answer makes it answered.
    check_with(
        HOLD,
        &[offer("L1", 0, &["alice"]), ended("L1", 151, "cancel"), connected("L1", 5, "alice"), wrapup(200, "sale")],
        "offered pop(alice) | ended/abandoned end | ended/answered update | completed/answered end memorialize",
    );
    let c = last(HOLD, &[offer("L1", 0, &["alice"]), ended("L1", 151, "cancel"), connected("L1", 5, "alice")]);
    assert_eq!(c.state, State::Ended);
    assert_eq!(c.agent.as_deref(), Some("alice"));
    assert_eq!(c.talk_time(), SignedDuration::from_secs(146));
}

#[test]
fn a_late_answer_corrects_a_memorialized_outcome_and_rewrites_the_same_activity() {
    // Default policy: the unanswered-looking call was completed and memorialized at its
    // hangup. The answer (the source says: 146 s before the end) corrects the outcome and
    // writes the activity again; the state stays completed.
    let late = |cause: &str, first: &str| {
        check(
            &[offer("L1", 0, &["alice"]), ended("L1", 151, cause), connected("L1", 5, "alice")],
            &format!("offered pop(alice) | completed/{first} end memorialize | completed/answered memorialize"),
        );
    };
    late("cancel", "abandoned");
    late("normalClearing", "abandoned");
    late("noAnswer", "missed");
    late("busy", "missed");
    check(
        &[offer("L1", 0, &["alice"]).outbound(), ended("L1", 70, "normalClearing"), connected("L1", 9, "")],
        "offered pop(alice) | completed/not_reached end memorialize | completed/answered memorialize",
    );

    let c = last(Policy::default(), &[offer("L1", 0, &["alice"]), ended("L1", 151, "cancel"), connected("L1", 5, "alice")]);
    assert_eq!((c.state, c.outcome), (State::Completed, Some(Outcome::Answered)));
    assert_eq!((c.connected_at, c.ended_at, c.completed_at), (Some(at(5)), Some(at(151)), Some(at(151))));
    assert_eq!(c.agent.as_deref(), Some("alice"), "the activity is written on behalf of who answered");
    assert_eq!(c.talk_time(), SignedDuration::from_secs(146));

    // The hangup even came before the offer: the answer still corrects it, the offer fills in.
    check(
        &[ended("L1", 151, "cancel"), connected("L1", 5, "alice"), offer("L1", 0, &["alice"])],
        "completed/abandoned end memorialize | completed/answered memorialize | completed/answered memorialize",
    );
    // A wrap-up after the correction rewrites the activity once more.
    check(
        &[offer("L1", 0, &["alice"]), ended("L1", 151, "cancel"), connected("L1", 5, "alice"), wrapup(200, "sale")],
        "offered pop(alice) | completed/abandoned end memorialize | completed/answered memorialize | completed/answered memorialize",
    );
}

#[test]
fn a_repeated_late_answer_is_absorbed() {
    check(
        &[offer("L1", 0, &["alice"]), ended("L1", 151, "cancel"), connected("L1", 5, "alice"), connected("L1", 5, "alice"), connected("L1", 6, "alice")],
        "offered pop(alice) | completed/abandoned end memorialize | completed/answered memorialize | absorbed | absorbed",
    );
    check(
        &[offer("L1", 0, &["alice"]), ended("L1", 30, "cancel"), connected("L1", 45, "alice").received(), connected("L1", 46, "alice").received()],
        "offered pop(alice) | completed/abandoned end memorialize | completed/answered memorialize | absorbed",
    );
}

#[test]
fn an_answer_the_source_itself_puts_after_the_end_leaves_the_outcome() {
    // The source's own clock says the caller hung up at 30 s and the answer came at 45 s:
    // nobody talked to the caller. The recorded outcome stands and no talk time is invented.
    for policy in [Policy::default(), HOLD] {
        let (steps, c) = run(policy, &[offer("L1", 0, &["alice"]), ended("L1", 30, "cancel"), connected("L1", 45, "alice")]);
        assert_eq!(steps.last().map(describe).as_deref(), Some("absorbed"), "{policy:?}");
        let c = c.expect("conversation");
        assert_eq!((c.outcome, c.connected_at, c.agent.as_deref()), (Some(Outcome::Abandoned), None, None), "{policy:?}");
    }
    // An answer at the very second of the end is still an answer.
    let c = last(Policy::default(), &[offer("L1", 0, &["alice"]), ended("L1", 30, "cancel"), connected("L1", 30, "alice")]);
    assert_eq!((c.outcome, c.connected_at), (Some(Outcome::Answered), Some(at(30))));
}

#[test]
fn without_source_times_a_late_answer_counts_and_is_placed_at_the_end() {
    // Zammad CTI and sipgate send no times: the answer only arrived after the hangup (the
    // hub's clock), which says nothing about when it happened. The PBX sends an answer only
    // for an answered call, so it is one; its time is not after the end.
    let events = [offer("L1", 0, &["alice"]).received(), ended("L1", 30, "cancel").received(), connected("L1", 31, "alice").received()];
    check(&events, "offered pop(alice) | completed/abandoned end memorialize | completed/answered memorialize");
    let c = last(Policy::default(), &events);
    assert_eq!((c.outcome, c.connected_at, c.ended_at), (Some(Outcome::Answered), Some(at(30)), Some(at(30))));
    assert_eq!(c.agent.as_deref(), Some("alice"));
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = vec![];
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

#[test]
fn any_order_of_a_calls_events_never_moves_backwards() {
    let events = [offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing")];
    let orders = permutations(&events);
    assert_eq!(orders.len(), 6);
    for policy in [Policy::default(), HOLD] {
        for order in &orders {
            let names: Vec<&str> = order.iter().map(|e| kind_name(&e.kind)).collect();
            let (steps, c) = run(policy, order);
            let mut rank = State::Offered;
            for step in &steps {
                let state = step.as_ref().expect("events start a conversation").conversation.state;
                assert!(state >= rank, "{names:?} under {policy:?}: {rank:?} went back to {state:?}");
                rank = state;
            }
            let c = c.expect("conversation");
            // Every order tells the same story about the call.
            assert_eq!(c.customer.e164.as_deref(), Some("+49301234567"), "{names:?}");
            assert_eq!(c.agent.as_deref(), Some("alice"), "{names:?}");
            assert_eq!((c.offered_at, c.connected_at, c.ended_at), (at(0), Some(at(5)), Some(at(151))), "{names:?}");
            // The hangup alone looked unanswered under the default policy: memorialized at
            // once and never reopened, but the late answer corrected the outcome.
            let end_before_connect = names.iter().position(|n| *n == "ended") < names.iter().position(|n| *n == "connected");
            let expected_state = if end_before_connect && policy.memorialize_missed { State::Completed } else { State::Ended };
            assert_eq!((c.state, c.outcome), (expected_state, Some(Outcome::Answered)), "{names:?} under {policy:?}");
            let mut all = order.clone();
            all.push(wrapup(200, "sale"));
            assert_eq!(last(policy, &all).state, State::Completed, "{names:?}: wrap-up completes");
        }
    }
}

#[test]
fn sweeper_end_without_a_leg_closes_a_conversation_whose_hangup_never_came() {
    check(
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("", 7200, "timedOut")],
        "offered pop(alice) | connected update | ended/answered end",
    );
    check(&[offer("L1", 0, &["alice"]), ended("", 7200, "timedOut")], "offered pop(alice) | completed/missed end memorialize");
}

// ---------------------------------------------------------------------------------------
// Transfers.

#[test]
fn transfer_leg_pops_new_agents_and_only_the_last_leg_ends_the_call() {
    let events = [
        offer("L1", 0, &["alice"]),
        connected("L1", 5, "alice"),
        offer("L2", 60, &["alice", "bob"]),
        ended("L1", 61, "forwarded"),
        connected("L2", 70, "bob"),
        ended("L2", 200, "normalClearing"),
        wrapup(260, "sale"),
    ];
    let (steps, c) = run(Policy::default(), &events);
    let got: Vec<String> = steps.iter().map(describe).collect();
    assert_eq!(got[2].split(' ').skip(1).collect::<Vec<_>>(), ["pop(bob)", "update"], "only bob is new: {got:?}");
    assert_eq!(got[2].split(' ').next(), Some("connected"), "a transfer never moves the state back: {got:?}");
    assert_eq!(got[3..], ["connected update", "connected update", "ended/answered end", "completed/answered end memorialize"].map(String::from), "{got:?}");
    let c = c.expect("conversation");
    assert_eq!(c.transfers, vec![Transfer { at: at(60), from_agent: Some("alice".into()), to: "alice, bob".into(), agents: vec!["alice".into(), "bob".into()] }]);
    assert_eq!(c.agent.as_deref(), Some("bob"));
    assert_eq!(c.offered_to, ["alice", "bob"]);
    assert_eq!(c.talk_time(), SignedDuration::from_secs(195));

    // The forwarded leg may be reported before the new leg is offered.
    check(
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("L1", 60, "forwarded"), offer("L2", 61, &["bob"]), ended("L2", 90, "normalClearing")],
        "offered pop(alice) | connected update | connected update | connected pop(bob) update | ended/answered end",
    );
    // A leg ending normally while another is still open does not end the call either.
    let c = last(Policy::default(), &[offer("L1", 0, &["alice"]), offer("L2", 1, &["bob"]), ended("L1", 20, "normalClearing")]);
    assert!(c.state.is_open());
}

#[test]
fn a_transfer_nobody_takes_keeps_the_agent_who_talked() {
    let c = last(
        Policy::default(),
        &[offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), offer("L2", 60, &["bob"]), ended("L1", 61, "forwarded"), ended("L2", 90, "cancel")],
    );
    assert_eq!((c.state, c.outcome), (State::Ended, Some(Outcome::Answered)));
    assert_eq!(c.agent.as_deref(), Some("alice"));
}

// ---------------------------------------------------------------------------------------
// Data arriving at any time.

#[test]
fn updates_after_completion_rewrite_the_activity() {
    let base = [offer("L1", 0, &["alice"]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing")];
    let with = |more: &[Event]| [base.to_vec(), more.to_vec()].concat();
    check(
        &with(&[updated(160, transcript("hi")), wrapup(200, "sale"), updated(900, transcript("hi, full")), updated(901, transcript("hi, full"))]),
        "offered pop(alice) | connected update | ended/answered end | ended/answered update | completed/answered end memorialize | completed/answered memorialize | absorbed",
    );
    // A second wrap-up (the agent corrects the disposition) rewrites it too.
    check(
        &with(&[wrapup(200, "sale"), wrapup(300, "no_sale")]),
        "offered pop(alice) | connected update | ended/answered end | completed/answered end memorialize | completed/answered memorialize",
    );
    let summary = Details { summary: Some("Customer wants a quote.".into()), recording_url: Some("https://rec/1".into()), ..Details::default() };
    let c = last(Policy::default(), &with(&[wrapup(200, "sale"), updated(900, summary)]));
    assert_eq!(c.details.summary.as_deref(), Some("Customer wants a quote."));
    assert_eq!(c.details.recording_url.as_deref(), Some("https://rec/1"));
    assert_eq!(c.details.notes.as_deref(), Some("wants a quote"), "an update keeps what it does not set");
}

#[test]
fn wrap_up_records_the_agents_choice_of_record() {
    let lead = RecordRef::new("lead", "7");
    let pinned = vec![RecordRef::new("case", "9")];
    let w = event("", 200, EventKind::WrappedUp(WrapUp { selected: Some(lead.clone()), pinned: Some(pinned.clone()), ..WrapUp::default() }));
    let c = last(Policy::default(), &[offer("L1", 0, &[]), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing"), w]);
    assert_eq!(c.regarding(), Some(&lead));
    assert_eq!(c.pinned, pinned);
    assert_eq!(c.agent.as_deref(), Some("alice"), "a wrap-up without an agent keeps the one who answered");
}

#[test]
fn regarding_falls_back_to_the_sole_match() {
    let single = Candidate { record: RecordRef::new("contact", "1"), title: "Jana".into(), display: vec![], fields: Default::default() };
    let mut o = offer("L1", 0, &["alice"]);
    if let EventKind::Offered(offer) = &mut o.kind {
        offer.identification = Identification::Single(single.clone());
    }
    let c = last(Policy::default(), &[o]);
    assert_eq!(c.regarding(), Some(&single.record));
}

#[test]
fn revision_counts_changes_only() {
    let (steps, _) = run(
        Policy::default(),
        &[
            offer("L1", 0, &["alice"]),
            offer("L1", 0, &["alice"]),
            connected("L1", 5, "alice"),
            connected("L1", 5, "alice"),
            updated(10, transcript("hi")),
            updated(11, transcript("hi")),
            ended("L1", 151, "normalClearing"),
            wrapup(200, "sale"),
            wrapup(200, "sale"),
            updated(300, transcript("hi there")),
        ],
    );
    let revisions: Vec<u64> = steps.iter().map(|s| s.as_ref().expect("known").conversation.revision).collect();
    assert_eq!(revisions, [1, 1, 2, 2, 3, 3, 4, 5, 5, 6]);
    let absorbed: Vec<bool> = steps.iter().map(|s| s.as_ref().expect("known").absorbed).collect();
    assert_eq!(absorbed, [false, true, false, true, false, true, false, false, true, false]);
}

#[test]
fn links_chosen_during_the_call_stay_and_rewrite_a_completed_activity() {
    let lead = RecordRef::new("lead", "7");
    let case = RecordRef::new("case", "9");
    let link = |at, selected: Option<RecordRef>, pinned: Option<Vec<RecordRef>>| event("", at, EventKind::Linked(Links { selected, pinned }));
    // Chosen while ringing: an update, kept through the end of the call.
    let open = [offer("L1", 0, &["alice"]), link(2, Some(lead.clone()), Some(vec![case.clone()])), connected("L1", 5, "alice"), ended("L1", 151, "normalClearing")];
    let c = last(Policy::default(), &open);
    assert_eq!((c.regarding(), c.pinned.clone()), (Some(&lead), vec![case.clone()]));
    // Unpinning sends only the pinned list; the selection stays.
    let mut unpinned = open.to_vec();
    unpinned.insert(2, link(3, None, Some(vec![])));
    let c = last(Policy::default(), &unpinned);
    assert_eq!((c.regarding(), c.pinned.len()), (Some(&lead), 0));
    // After completion a new link rewrites the activity; the same link again changes nothing.
    let mut done = open.to_vec();
    done.extend([wrapup(200, "sale"), link(300, Some(case.clone()), None), link(301, Some(case.clone()), None)]);
    check(
        &done,
        "offered pop(alice) | offered update | connected update | ended/answered end | completed/answered end memorialize | completed/answered memorialize | absorbed",
    );
}

// ---------------------------------------------------------------------------------------
// Identification learned after the offer.

fn offer_identified(secs: i64, identification: Identification) -> Event {
    let mut o = offer("L1", secs, &["alice"]);
    if let EventKind::Offered(offer) = &mut o.kind {
        offer.identification = identification;
    }
    o
}

fn identified(secs: i64, identification: Identification) -> Event {
    event("", secs, EventKind::Identified(identification))
}

#[test]
fn a_later_identification_replaces_only_one_that_found_nobody() {
    let jana = Candidate { record: RecordRef::new("party", "7"), title: "Jana".into(), display: vec![], fields: Default::default() };
    let other = Candidate { record: RecordRef::new("party", "8"), title: "Otto".into(), display: vec![], fields: Default::default() };
    let crm_error = Identification::Skipped { reason: "crm_error".into() };
    let crm_timeout = Identification::Skipped { reason: "crm_timeout".into() };
    let anonymous = Identification::Skipped { reason: "anonymous".into() };
    // The CRM failed at the offer; it answers when the activity is written. No second
    // memorialization is asked for: the worker asking writes the activity with it.
    for failed in [crm_error.clone(), crm_timeout, Identification::None, Identification::Pending] {
        let events = [offer_identified(0, failed.clone()), ended("L1", 30, "noAnswer"), identified(40, Identification::Single(jana.clone()))];
        check(&events, "offered pop(alice) | completed/missed end memorialize | completed/missed update");
        assert_eq!(last(Policy::default(), &events).regarding(), Some(&jana.record), "{failed:?}");
    }
    // A match, and a deliberate skip, stay as they are.
    for kept in [Identification::Single(jana.clone()), anonymous] {
        let events = [offer_identified(0, kept.clone()), ended("L1", 30, "noAnswer"), identified(40, Identification::Single(other.clone()))];
        check(&events, "offered pop(alice) | completed/missed end memorialize | absorbed");
        assert_eq!(last(Policy::default(), &events).identification, kept);
    }
    // The same answer twice changes nothing; an unknown conversation cannot be identified.
    check(
        &[offer_identified(0, crm_error), identified(5, Identification::None), identified(6, Identification::None)],
        "offered pop(alice) | offered update | absorbed",
    );
    check(&[identified(1, Identification::None)], "unknown(call-1)");
}

// ---------------------------------------------------------------------------------------
// Agent lists from input.

#[test]
fn dedup_keeps_the_first_seen_order() {
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &[]),
        (&["alice"], &["alice"]),
        (&["bob", "alice", "bob", "carol", "alice"], &["bob", "alice", "carol"]),
        (&["alice", "alice", "alice"], &["alice"]),
        (&["Alice", "alice"], &["Alice", "alice"]),
    ];
    for (input, want) in cases {
        let got = first_seen_unique(input.iter().map(|s| s.to_string()));
        assert_eq!(got, *want, "{input:?}");
    }
}

#[test]
fn an_agent_named_twice_in_one_offer_is_offered_and_popped_once() {
    check(&[offer("L1", 0, &["bob", "alice", "bob"])], "offered pop(bob,alice)");
    assert_eq!(last(Policy::default(), &[offer("L1", 0, &["bob", "alice", "bob"])]).offered_to, ["bob", "alice"]);
    // A transfer leg naming known and new agents, some twice, pops each new one once.
    let (steps, c) = run(Policy::default(), &[offer("L1", 0, &["alice"]), offer("L2", 60, &["carol", "alice", "dave", "carol"])]);
    assert_eq!(describe(&steps[1]), "offered pop(carol,dave) update");
    assert_eq!(c.expect("conversation").offered_to, ["alice", "carol", "dave"]);
}

#[test]
fn once_answered_only_who_answered_and_later_transfer_targets_may_act() {
    let ringing = last(Policy::default(), &[offer("L1", 0, &["alice", "bob"])]);
    let answered = last(Policy::default(), &[offer("L1", 0, &["alice", "bob"]), connected("L1", 5, "alice")]);
    let transferred = last(
        Policy::default(),
        &[offer("L1", 0, &["alice", "bob"]), connected("L1", 5, "alice"), offer("L2", 60, &["carol", "dave"]), ended("L1", 61, "forwarded"), connected("L2", 70, "carol")],
    );
    for (c, what, agent, may) in [
        (&ringing, "ringing", "alice", true),
        (&ringing, "ringing", "bob", true),
        (&ringing, "ringing", "carol", false),
        (&answered, "answered", "alice", true),
        (&answered, "answered", "bob", false),
        (&transferred, "transferred", "alice", true),
        (&transferred, "transferred", "carol", true),
        (&transferred, "transferred", "dave", true),
        (&transferred, "transferred", "bob", false),
    ] {
        assert_eq!(c.may_act(agent), may, "{what}: {agent}");
    }
}
