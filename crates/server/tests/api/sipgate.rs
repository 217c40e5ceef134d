//! sipgate.io push: form in, XML out, callbacks asked for, transfers folded by origCallId.

use serde_json::json;

use crate::helpers::*;

async fn push(t: &TestApp, form: &str) -> (u16, String, String) {
    sipgate_at(t, &format!("/api/v1/sipgate/{CTI}"), form).await
}

#[tokio::test]
async fn new_call_asks_for_callbacks_and_transfers_fold_into_one_conversation() {
    let t = spawn_with_server(
        "public_url = \"https://hub.example.com/\"",
        "[phone]\ndefault_region = \"DE\"\n[[agents]]\nid = \"alice\"\nsipgate_user_ids = [\"w0\"]\n[[agents]]\nid = \"bob\"\nsipgate_user_ids = [\"w1\"]\n",
    )
    .await;
    let ada = t.create("contact", json!({"name": "Ada", "phone": "0211 1234567"})).await;
    let mut alice = t.agent("alice").await;
    let mut bob = t.agent("bob").await;
    next_of(&mut alice, "snapshot").await;
    next_of(&mut bob, "snapshot").await;

    let (s, ct, xml) = push(&t, "event=newCall&from=492111234567&to=4930999&direction=in&callId=leg-1&origCallId=orig-1&user%5B%5D=Alice&userId%5B%5D=w0").await;
    assert_eq!((s, ct.as_str()), (200, "application/xml"));
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onAnswer=\"https://hub.example.com/api/v1/sipgate/test-cti-token-0123456789\" onHangup=\"https://hub.example.com/api/v1/sipgate/test-cti-token-0123456789\"/>\n"
    );
    let pop = next_of(&mut alice, "pop").await;
    assert_eq!(pop["pop"]["record"]["id"], ada.as_str());
    push(&t, "event=answer&callId=leg-1&origCallId=orig-1&direction=in&userId%5B%5D=w0&user%5B%5D=Alice").await;

    // Alice transfers to Bob: a new leg with the same origCallId.
    let (_, _, xml) = push(&t, "event=newCall&from=492111234567&to=4930998&direction=in&callId=leg-2&origCallId=orig-1&userId%5B%5D=w1&user%5B%5D=Bob&diversion=4930999").await;
    assert!(xml.contains("onHangup"), "{xml}");
    let pop = next_of(&mut bob, "pop").await;
    assert_eq!(pop["conversation"]["external_id"], "orig-1");
    push(&t, "event=hangup&callId=leg-1&origCallId=orig-1&cause=forwarded").await;
    let c = t.conversation_by_call("orig-1").await;
    assert_eq!(c["state"], "connected", "the forwarded leg does not end the conversation: {c}");
    assert_eq!(c["transfers"].as_array().expect("transfers").len(), 1);
    push(&t, "event=answer&callId=leg-2&origCallId=orig-1&direction=in&userId%5B%5D=w1&user%5B%5D=Bob").await;
    push(&t, "event=hangup&callId=leg-2&origCallId=orig-1&cause=normalClearing").await;
    let c = t.conversation_by_call("leg-2").await;
    assert_eq!(c["external_id"], "orig-1", "a leg id finds its conversation");
    assert_eq!(c["state"], "ended");
    assert_eq!(c["agent"], "bob");
    assert_eq!(c["legs"], json!(["leg-1", "leg-2"]));
    let id = c["id"].as_str().expect("id").to_string();
    t.wrapup(&id, json!({"disposition": {"code": "solved"}})).await;
    t.written("orig-1").await;
    let acts = t.activities_of("contact", &ada).await;
    assert_eq!(acts.len(), 1, "one activity for the whole conversation");
    assert_eq!(acts[0]["fields"]["transfers"].as_array().expect("transfers").len(), 1);
    close(alice).await;
    close(bob).await;
}

#[tokio::test]
async fn blocked_callers_get_reject_xml_and_anonymous_is_fine() {
    let t = spawn_with("[phone]\ndefault_region = \"DE\"\n[routing]\nblock_list = [\"+49 211 666\"]\n").await;
    let (_, _, xml) = push(&t, "event=newCall&from=49211666&to=4930999&direction=in&callId=b-1").await;
    assert!(xml.contains("<Reject reason=\"busy\"/>"), "{xml}");
    let (s, _, xml) = push(&t, "event=newCall&from=anonymous&to=4930999&direction=in&callId=b-2").await;
    assert_eq!(s, 200);
    assert!(xml.contains("onAnswer"), "{xml}");
    let (s, ct, body) = push(&t, "event=newCall&from=1&direction=nope&callId=b-3").await;
    assert_eq!((s, ct.as_str()), (422, "application/problem+json"));
    assert!(body.contains("Invalid direction"));
}
