//! The PBX protocols as their peers define them: what Zammad's own CTI controller and specs
//! send and expect, sipgate.io's push API as Zammad's sipgate integration configures it, and
//! the jambonz call hook. Each case names the peer's behaviour it reproduces; the remaining
//! differences are listed in docs/pbx/*.md and docs/ivr.md.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::*;

const IVR: &str = "test-ivr-token-0123456789";

#[tokio::test]
async fn zammad_specs_post_call_id_and_a_voicemail_answer_leaves_the_call_missed() {
    let t = spawn().await;
    // Zammad's specs post `call_id`; its controller reads `callId || call_id`.
    let (s, v) = t.cti(json!({"event": "newCall", "from": "+49 30 1234567", "to": "+49 30 9999000", "direction": "in", "call_id": "snake-1", "user": "alice"})).await;
    assert_eq!((s, v), (200, json!({})));
    t.cti(json!({"event": "answer", "direction": "in", "call_id": "snake-1", "user": "alice"})).await;
    t.cti(json!({"event": "hangup", "direction": "in", "call_id": "snake-1", "cause": "normalClearing"})).await;
    let c = t.conversation_by_call("snake-1").await;
    assert_eq!((c["state"].as_str(), c["outcome"].as_str(), c["agent"].as_str()), (Some("ended"), Some("answered"), Some("alice")), "{c}");

    // The PBX's voicemail answering is not an agent answering: Zammad keeps the call missed.
    t.cti(new_call("vm-1", "+49 30 7654321", "alice")).await;
    let (s, _) = t.cti(json!({"event": "answer", "direction": "in", "callId": "vm-1", "user": "voicemail"})).await;
    assert_eq!(s, 200);
    let c = t.conversation_by_call("vm-1").await;
    assert_eq!((c["state"].as_str(), c["agent"].as_str()), (Some("offered"), None), "still ringing for the agents: {c}");
    t.cti(hangup("vm-1", "normalClearing")).await;
    let c = t.written("vm-1").await;
    // Unanswered, as for any call nobody took: the caller hung up (`normalClearing`) while
    // the voicemail ran, which the hub calls abandoned; `noAnswer` would be missed.
    assert_eq!((c["outcome"].as_str(), c["connected_at"].as_str()), (Some("abandoned"), None), "{c}");
    assert_eq!(c["attributes"]["answered_by"], "voicemail", "{c}");
}

#[tokio::test]
async fn the_outbound_caller_id_table_matches_the_digits_as_zammad_does() {
    let t = spawn_with(
        r#"
[phone]
default_region = "DE"
[[routing.outbound_caller_ids]]
destination = "41*"
caller_id = "41715550000"
[[routing.outbound_caller_ids]]
destination = "+4989*"
caller_id = "+49899999000"
"#,
    )
    .await;
    let out = |id: &str, to: &str| json!({"event": "newCall", "from": "201", "to": to, "direction": "out", "callId": id, "user": "alice"});
    // A DE hub would read 4147110000000 nationally (+49 4147…); the row is for the digits dialled.
    let (_, reply) = t.cti(out("o-1", "4147110000000")).await;
    assert_eq!(reply, json!({"action": "dial", "caller_id": "41715550000", "number": "4147110000000"}));
    // A rule in E.164 still matches a national notation of the same number.
    let (_, reply) = t.cti(out("o-2", "089 1234567")).await;
    assert_eq!(reply, json!({"action": "dial", "caller_id": "+49899999000", "number": "089 1234567"}));
    let (_, reply) = t.cti(out("o-3", "030 1234567")).await;
    assert_eq!(reply, json!({}), "no row, no default: the PBX dials as it would");
}

#[tokio::test]
async fn pbx_errors_are_problems_that_also_carry_zammads_error_member() {
    let t = spawn().await;
    let r = t.http.post(t.url("/api/v1/cti/not-the-token")).json(&new_call("e-1", "1", "a")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["status"].as_u64(), v["title"].as_str()), (Some(401), Some("Unauthorized")));
    assert!(v["error"].as_str().is_some_and(|e| e.starts_with("Invalid token, please contact your admin!")), "{v}");
    assert_eq!(v["error"], v["detail"]);

    let (s, v) = t.cti(json!({"event": "newCall", "direction": "sideways", "callId": "e-2"})).await;
    assert_eq!(s, 422);
    assert!(v["error"].as_str().is_some_and(|e| e.starts_with("Invalid direction!")), "{v}");
    // Only the PBX webhooks add it: the rest of the API is plain RFC 9457.
    let r = t.http.get(t.url("/api/v1/conversations/nope")).bearer_auth(ADMIN).send().await.expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["status"].as_u64(), v.get("error")), (Some(404), None), "{v}");
}

#[tokio::test]
async fn zammad_style_sipgate_urls_name_the_direction_and_dtmf_pushes_are_answered() {
    let t = spawn_with_server("public_url = \"https://hub.example.com\"", "[phone]\ndefault_region = \"DE\"\n[[agents]]\nid = \"alice\"\nsipgate_user_ids = [\"w0\"]\n").await;
    let base = format!("/api/v1/sipgate/{CTI}");
    // Zammad gives sipgate …/sipgate/in and …/out; sipgate's answer and hangup callbacks go
    // to the URL the response names, of the same shape.
    let (s, ct, xml) = sipgate_at(&t, &format!("{base}/in"), "event=newCall&from=492111234567&to=4930999&callId=s-1&userId%5B%5D=w0").await;
    assert_eq!((s, ct.as_str()), (200, "application/xml"), "{xml}");
    let callback = format!("https://hub.example.com{base}/in");
    assert!(xml.contains(&format!("onAnswer=\"{callback}\" onHangup=\"{callback}\"")), "{xml}");
    let c = t.conversation_by_call("s-1").await;
    assert_eq!((c["direction"].as_str(), c["customer_e164"].as_str()), (Some("inbound"), Some("+492111234567")), "{c}");

    // The caller keys in digits: sipgate pushes `dtmf`, answered with XML like any push.
    let (s, ct, xml) = sipgate_at(&t, &format!("{base}/in"), "event=dtmf&callId=s-1&dtmf=42").await;
    assert_eq!((s, ct.as_str()), (200, "application/xml"), "{xml}");
    assert!(xml.contains("<Response"), "{xml}");
    assert_eq!(t.conversation_by_call("s-1").await["attributes"]["dtmf"], "42");

    // sipgate's voicemail taking the call is no answer either.
    sipgate_at(&t, &format!("{base}/in"), "event=answer&callId=s-1&user%5B%5D=voicemail").await;
    sipgate_at(&t, &format!("{base}/in"), "event=hangup&callId=s-1&cause=noAnswer").await;
    let c = t.written("s-1").await;
    assert_eq!((c["outcome"].as_str(), c["agent"].as_str()), (Some("missed"), None), "{c}");

    let (s, _, xml) = sipgate_at(&t, &format!("{base}/out"), "event=newCall&from=4930999&to=4989123456&callId=s-2&userId%5B%5D=w0").await;
    assert_eq!(s, 200, "{xml}");
    assert!(xml.contains(&format!("onHangup=\"https://hub.example.com{base}/out\"")), "{xml}");
    assert_eq!(t.conversation_by_call("s-2").await["direction"], "outbound");

    let (s, ct, body) = sipgate_at(&t, &format!("{base}/sideways"), "event=newCall&callId=s-3").await;
    assert_eq!((s, ct.as_str()), (404, "application/problem+json"), "{body}");
    let (s, _, _) = sipgate_at(&t, "/api/v1/sipgate/wrong-token/in", "event=newCall&callId=s-4&direction=in").await;
    assert_eq!(s, 401);
    let (_, v) = t.get("/api/v1/conversations?external_id=s-3").await;
    assert_eq!(v["conversations"], json!([]), "refused pushes store nothing");
}

const JAMBONZ: &str = r#"
[phone]
default_region = "DE"
[[agents]]
id = "alice"
cti_users = ["alice"]
numbers = ["201"]
token = "alice-token"
[[agents]]
id = "bob"
numbers = ["202", "+49 30 1230202"]
token = "bob-token"
[ivr]
token = "test-ivr-token-0123456789"
[ivr.jambonz]
sip_realm = "acme.sip.jambonz.cloud"
username = "jambonz"
[[ivr.rules]]
name = "owner"
action = "owner"
"#;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn the_jambonz_call_hook_as_jambonz_sends_it() {
    let t = spawn_with(JAMBONZ).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "owner": "alice"})).await;
    t.create("contact", json!({"name": "Bert", "phone": "+49 30 7654321", "owner": "bob"})).await;
    let _alice = t.agent("alice").await;
    let _bob = t.agent("bob").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // jambonz's default: POST with the CallHook as JSON, HTTP Basic auth.
    let hook = json!({"call_sid": "cs-1", "call_id": "x", "application_sid": "a", "account_sid": "b", "direction": "inbound",
        "from": "+49301234567", "to": "+49309999000", "caller_name": "", "call_status": "trying", "sip_status": 100,
        "originating_sip_ip": "192.0.2.1", "customerData": {"k": "v"}});
    let r = t.http.post(t.url("/api/v1/ivr/jambonz")).header("authorization", basic("jambonz", IVR)).json(&hook).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let verbs: Value = r.json().await.expect("verbs");
    // A registered extension is a `user` target with the account's realm.
    assert_eq!(verbs, json!([{"verb": "dial", "callerId": "+49301234567", "answerOnBridge": true, "target": [{"type": "user", "name": "201@acme.sip.jambonz.cloud"}]}]));

    // The same hook configured as GET: the fields are query parameters.
    let r = t
        .http
        .get(t.url("/api/v1/ivr/jambonz?call_sid=cs-2&direction=inbound&from=%2B49307654321&to=%2B49309999000&caller_name=&call_status=trying&sip_status=100"))
        .header("authorization", basic("jambonz", IVR))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let verbs: Value = r.json().await.expect("verbs");
    assert_eq!(verbs[0]["target"][0], json!({"type": "user", "name": "202@acme.sip.jambonz.cloud"}));

    // Nobody's customer: no rule routes it and no continue_hook is set.
    let r = t.http.post(t.url("/api/v1/ivr/jambonz")).header("authorization", basic("jambonz", IVR)).json(&json!({"from": "+49305550000", "to": "1"})).send().await.expect("post");
    assert_eq!(r.json::<Value>().await.expect("verbs"), json!([{"verb": "sip:decline", "status": 480, "reason": "Temporarily Unavailable"}]));

    // Wrong password, wrong user name, no auth: refused alike.
    for auth in [Some(basic("jambonz", "wrong")), Some(basic("someone", IVR)), None] {
        let mut req = t.http.post(t.url("/api/v1/ivr/jambonz")).json(&hook);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("post");
        assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().ok()), (401, Some("application/problem+json")), "{auth:?}");
    }
    // The token in the path works for a hook without auth.
    let r = t.http.post(t.url(&format!("/api/v1/ivr/{IVR}/jambonz"))).json(&hook).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let r = t.http.post(t.url("/api/v1/ivr/jambonz")).header("authorization", basic("jambonz", IVR)).body("{not json").send().await.expect("post");
    assert_eq!(r.status().as_u16(), 422);
}

#[tokio::test]
async fn jambonz_continue_redirects_and_sipgate_dials_only_external_numbers() {
    let config = format!("{JAMBONZ}\n").replace("username = \"jambonz\"", "username = \"jambonz\"\ncontinue_hook = \"https://ivr.example.com/next\"");
    let t = spawn_with(&config).await;
    t.create("contact", json!({"name": "Ada", "phone": "+49 30 1234567", "owner": "alice"})).await;
    t.create("contact", json!({"name": "Bert", "phone": "+49 30 7654321", "owner": "bob"})).await;
    let _alice = t.agent("alice").await;
    let _bob = t.agent("bob").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = t.http.post(t.url("/api/v1/ivr/jambonz")).header("authorization", basic("jambonz", IVR)).json(&json!({"from": "+49305550000", "to": "1"})).send().await.expect("post");
    assert_eq!(r.json::<Value>().await.expect("verbs"), json!([{"verb": "redirect", "actionHook": "https://ivr.example.com/next"}]));

    let sipgate = |ani: &'static str| {
        let req = t.http.get(t.url(&format!("/api/v1/ivr/lookup?ani={ani}&format=sipgate"))).bearer_auth(IVR).send();
        async move { req.await.expect("lookup").text().await.expect("xml") }
    };
    // Alice has only the extension 201: sipgate cannot dial it, its own routing goes on.
    assert_eq!(sipgate("%2B49301234567").await, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response/>\n");
    // Bob has an external number too: that is dialled, in sipgate's E.164 digits.
    assert!(sipgate("%2B49307654321").await.contains("<Dial>\n    <Number>49301230202</Number>\n  </Dial>"));
    // Zammad's protocol has no inbound dial: `{}` lets the PBX route.
    let r = t.http.get(t.url("/api/v1/ivr/lookup?ani=%2B49307654321&format=zammad")).bearer_auth(IVR).send().await.expect("lookup");
    assert_eq!(r.json::<Value>().await.expect("json"), json!({}));
}
