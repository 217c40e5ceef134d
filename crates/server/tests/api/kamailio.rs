//! A real call path: SIPp callers → Kamailio (examples/kamailio/kamailio.cfg) → SIPp agent
//! phones, with Kamailio asking the hub where each call goes and reporting it as Zammad CTI
//! events. Skipped when kamailio or sipp is not installed, except under
//! CXBRIDGE_REQUIRE_PEERS=1 (CI), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const IVR: &str = "test-ivr-token-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A free UDP port on loopback (SIP runs over UDP here).
fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free udp port")
}

/// Stops a daemon with SIGTERM (Kamailio's main process then stops its children).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sipp(args: &[&str], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("sipp log");
    Command::new("sipp").args(args).stdin(Stdio::null()).stdout(out).stderr(Stdio::null()).spawn().expect("start sipp")
}

/// Runs one SIPp caller to the end (bounded by `-timeout`); true when its call went as the
/// scenario expects.
async fn call(scenario: &Path, caller: &str, kamailio: u16, dir: &Path, name: &str, extra: &[&str]) -> bool {
    let port = udp_port().to_string();
    let target = format!("127.0.0.1:{kamailio}");
    let sf = scenario.display().to_string();
    let mut args = vec!["-sf", &sf, "-key", "caller", caller, "-s", "4930100200", "-i", "127.0.0.1", "-p", &port, "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error"];
    args.extend_from_slice(extra);
    args.push(&target);
    let mut child = sipp(&args, &dir.join(format!("{name}.log")));
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("sipp ran");
    status.success()
}

#[tokio::test]
async fn sip_calls_through_kamailio_are_routed_by_the_hub_and_each_becomes_one_activity() {
    if !(installed("kamailio") && installed("sipp")) {
        assert!(std::env::var("CXBRIDGE_REQUIRE_PEERS").as_deref() != Ok("1"), "kamailio and sipp must be installed (apt: kamailio kamailio-utils-modules kamailio-json-modules sip-tester)");
        eprintln!("skipped: kamailio or sipp is not installed");
        return;
    }
    let (kamailio_port, owner_port, fallback_port) = (udp_port(), udp_port(), udp_port());
    let t = spawn_with(&format!(
        r#"
[phone]
default_region = "DE"
[routing]
block_list = ["+49 30 6660000"]
[conversations]
acw_timeout_secs = 1
sweep_interval_secs = 1
[[agents]]
id = "alice"
cti_users = ["201"]
numbers = ["201"]
token = "alice-token"
[ivr]
token = "{IVR}"
"#
    ))
    .await;
    let ada = t.create("contact", json!({"name": "Ada Lovelace", "phone": "+49 30 1234567", "owner": "alice"})).await;
    // Alice's panel is open: she is available for her customers.
    let mut alice = t.agent("alice").await;
    next_of(&mut alice, "snapshot").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let sipp_dir = repo().join("examples/kamailio/sipp");
    let agent_phone = sipp_dir.join("uas_agent.xml").display().to_string();
    let (owner_p, fallback_p) = (owner_port.to_string(), fallback_port.to_string());
    let _owner = Daemon(sipp(&["-sf", &agent_phone, "-i", "127.0.0.1", "-p", &owner_p, "-m", "1", "-nostdin"], &dir.path().join("owner.log")));
    let _fallback = Daemon(sipp(&["-sf", &agent_phone, "-i", "127.0.0.1", "-p", &fallback_p, "-m", "1", "-nostdin"], &dir.path().join("fallback.log")));

    let hub = format!("http://{}", t.addr);
    let runtime = dir.path().join("kamailio");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    let defines = [
        format!("HUB_URL=\"{hub}\""),
        format!("HUB_TOKEN=\"{IVR}\""),
        format!("CTI_TOKEN=\"{CTI}\""),
        format!("FALLBACK_URI=\"sip:299@127.0.0.1:{fallback_port}\""),
        format!("DIAL_DOMAIN=\"127.0.0.1:{owner_port}\""),
        format!("SIP_LISTEN=udp:127.0.0.1:{kamailio_port}"),
        "SIP_CHILDREN=2".to_string(),
    ];
    let mut kamailio = Command::new("kamailio");
    kamailio.arg("-f").arg(repo().join("examples/kamailio/kamailio.cfg")).args(["-DD", "-E", "-m", "64", "-Y"]).arg(&runtime);
    for d in &defines {
        kamailio.args(["-A", d]);
    }
    let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
    let _kamailio = Daemon(kamailio.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("start kamailio"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let show = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

    let answered = sipp_dir.join("uac_answered.xml");
    let rejected = sipp_dir.join("uac_rejected.xml");
    assert!(call(&answered, "+49301234567", kamailio_port, dir.path(), "known", &["-d", "500"]).await, "the known caller is answered by the owner's phone\n{}", show("kamailio.log"));
    assert!(call(&rejected, "+49306660000", kamailio_port, dir.path(), "blocked", &[]).await, "the blocked caller is rejected\n{}", show("kamailio.log"));
    assert!(call(&answered, "+49307770000", kamailio_port, dir.path(), "unknown", &["-d", "500"]).await, "the unknown caller reaches the fallback\n{}", show("kamailio.log"));

    // Each phone took exactly its one call (`-m 1`): the owner's phone the known caller.
    let (mut owner, mut fallback) = (_owner, _fallback);
    for (phone, name) in [(&mut owner, "owner phone"), (&mut fallback, "fallback phone")] {
        let mut done = None;
        for _ in 0..100 {
            done = phone.0.try_wait().expect("wait");
            if done.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done.is_some_and(|s| s.success()), "the {name} answered its call");
    }

    // Every call is one conversation, written to the CRM once.
    let mut delivered = vec![];
    for _ in 0..200 {
        let (_, items) = t.get("/api/v1/outbox?limit=50").await;
        delivered = items["items"].as_array().cloned().unwrap_or_default();
        if delivered.len() == 3 && delivered.iter().all(|i| i["state"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 3, "three calls, three activities: {delivered:?}\n{}", show("kamailio.log"));
    assert!(delivered.iter().all(|i| i["state"] == "delivered"), "{delivered:?}");
    let mut outcomes = vec![];
    for item in &delivered {
        let (_, c) = t.get(&format!("/api/v1/conversations/{}", item["conversation_id"].as_str().unwrap_or(""))).await;
        outcomes.push((c["customer_e164"].as_str().unwrap_or("").to_string(), c["outcome"].as_str().unwrap_or("").to_string(), c["agent"].as_str().unwrap_or("-").to_string()));
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            ("+49301234567".to_string(), "answered".to_string(), "alice".to_string()),
            ("+49306660000".to_string(), "missed".to_string(), "-".to_string()),
            ("+49307770000".to_string(), "answered".to_string(), "299".to_string()),
        ],
        "the owner answered the known caller, the blocked one never rang, the fallback took the unknown one"
    );
    assert_eq!(t.activities_of("contact", &ada).await.len(), 1, "the known caller's call is on her record, once");
    close(alice).await;
}
