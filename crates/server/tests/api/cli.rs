//! The binary itself: help, config printing and checking, import.

use std::process::Command;

fn cxbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cxbridge"))
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["serve", "--help"], &["demo", "--help"], &["import", "--help"], &["hash-password", "--help"], &["config", "--help"], &["config", "default", "--help"]] {
        let out = cxbridge().args(args).output().expect("run cxbridge");
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn config_default_prints_a_config_that_checks() {
    let out = cxbridge().args(["config", "default"]).output().expect("run");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cxbridge.toml");
    std::fs::write(&path, &out.stdout).expect("write");
    let out = cxbridge().args(["config", "check"]).arg(&path).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\n\n[phone]\ndefault_regoin = \"DE\"\n").expect("write");
    let out = cxbridge().args(["config", "check"]).arg(&path).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5:") && err.contains("default_regoin"), "{err}");
    assert!(!err.contains("backtrace"), "errors are one readable line, not a backtrace: {err}");

    // The CRM section is checked as far as it can be without connecting.
    let dataverse = "[crm]\nprovider = \"dataverse\"\n[crm.dataverse]\nurl = \"https://contoso.crm4.dynamics.com\"\ntenant_id = \"t\"\nclient_id = \"c\"\n";
    std::fs::write(&path, format!("{dataverse}batch_size = 5000\n")).expect("write");
    let out = cxbridge().args(["config", "check"]).arg(&path).env_remove("CXBRIDGE_CRM_CLIENT_SECRET").output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch_size"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&path, dataverse).expect("write");
    let out = cxbridge().args(["config", "check"]).arg(&path).env_remove("CXBRIDGE_CRM_CLIENT_SECRET").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CXBRIDGE_CRM_CLIENT_SECRET"), "tells where the secret must come from");
    std::fs::write(&path, "[crm]\nprovider = \"salesforce\"\n").expect("write");
    let out = cxbridge().args(["config", "check"]).arg(&path).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[crm.salesforce]"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn import_loads_a_csv_and_names_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("contacts.csv");
    std::fs::write(&csv, "id,name,phone\n1,Ada,+49 30 1234567\n2,Bob,+49 30 7654321,extra\n3,Cy,0301111111\n").expect("write");
    let data = dir.path().join("data");
    let out = cxbridge().args(["import", "contact"]).arg(&csv).arg("--data").arg(&data).env_remove("CXBRIDGE_CONFIG").output().expect("run");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a refused row makes the exit status non-zero: {stderr}");
    assert!(stdout.contains("imported 2 contact records") && stdout.contains("1 row refused"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "one summary: {stdout}");
    assert!(stderr.contains("contacts.csv:3: the row has 4 fields, the header row 3"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "no colour codes in a pipe: {stderr}");
    let files: Vec<String> = std::fs::read_dir(&data).expect("data dir").filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!files.iter().any(|f| f.contains("token") || f.contains("secret")), "an import generates no secrets: {files:?}");

    std::fs::write(&csv, "id;name;phone\n4;Dee;030 2222222\n").expect("write");
    let out = cxbridge().args(["import", "contact"]).arg(&csv).arg("--data").arg(&data).env_remove("CXBRIDGE_CONFIG").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("semicolon-separated"), "says how it read the file");

    std::fs::write(&csv, "id,name,phnoe\n5,Eve,030 3333333\n").expect("write");
    let out = cxbridge().args(["import", "contact"]).arg(&csv).arg("--data").arg(&data).env_remove("CXBRIDGE_CONFIG").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `phone`"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 0 contact records"));
}

#[test]
fn import_is_refused_when_the_crm_is_not_the_built_in_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cxbridge.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[crm]\nprovider = \"salesforce\"\n[crm.salesforce]\nlogin_url = \"https://example.my.salesforce.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
            data.display()
        ),
    )
    .expect("write");
    let csv = dir.path().join("contacts.csv");
    std::fs::write(&csv, "id,name\n1,Ada\n").expect("write");
    let out = cxbridge().args(["import", "contact"]).arg(&csv).arg("--config").arg(&config).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("built-in CRM") && stderr.contains("salesforce"), "{stderr}");
    assert!(!data.exists(), "nothing was created, no tokens generated");
}

#[test]
fn demo_help_names_its_own_data_directory() {
    let out = cxbridge().args(["demo", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    let data = help.lines().find(|l| l.trim_start().starts_with("--data")).unwrap_or_default();
    assert!(data.contains("./cxbridge-demo-data"), "{data}");
    let out = cxbridge().args(["serve", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    let data = help.lines().find(|l| l.trim_start().starts_with("--data")).unwrap_or_default();
    assert!(data.contains("./cxbridge-data") && !data.contains("demo"), "{data}");
}

#[test]
fn serve_prints_the_panel_and_how_to_add_an_agent() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = cxbridge()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env_remove("CXBRIDGE_CONFIG")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let errs = tx.clone();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(format!("out {l}")))));
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(errs.send(format!("err {l}")))));
    let mut lines = vec![];
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) {
        let done = line.contains("cxbridge demo");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(lines.iter().any(|l| l.starts_with("out agent panel: http://127.0.0.1:") && l.ends_with("/agent")), "{text}");
    assert!(text.contains("no agent can sign in") && text.contains("cxbridge hash-password"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("err ")), "the logs were read too: {text}");
    assert!(!text.contains('\x1b'), "log lines written to a pipe carry no colour codes: {text}");
}

#[tokio::test]
async fn demo_prints_how_to_sign_in_and_the_agent_can() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = cxbridge()
        .args(["demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    // Keep reading in the background: a closed pipe would make the demo's next print fail.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap_or_default();
    let first = next();
    let text = (0..7).map(|_| next()).collect::<Vec<_>>().join("\n");
    let base = first.trim_start_matches("cxbridge listening on ").to_string();
    let password = text.lines().find_map(|l| l.split_once("password ")).map(|(_, p)| p.trim().to_string()).unwrap_or_default();
    cxbridge_connectors::client::ensure_tls();
    let http = reqwest::Client::new();
    let signed_in = http.post(format!("{base}/api/v1/session")).json(&serde_json::json!({"agent": "alice", "password": password})).send().await;
    let panel = http.get(format!("{base}/agent")).send().await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("cxbridge listening on http://127.0.0.1:"), "{first}");
    assert!(text.contains(&format!("agent panel:   {base}/agent")), "{text}");
    assert!(text.contains("admin token:"), "{text}");
    assert_eq!(signed_in.expect("sign-in answered").status(), 200, "the printed password signs alice in: {text}");
    let typeable = password.split('-').all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert!(typeable && password.len() == 19, "a password a person can read and type: {password}");
    let panel = panel.expect("panel answered");
    assert_eq!(panel.status(), 200);
    assert!(panel.text().await.unwrap_or_default().contains("<html"), "the panel page is embedded in the binary");
}

/// Nodes that would not behave as one hub refuse to start, saying what to set.
#[test]
fn a_misconfigured_cluster_node_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = || {
        let mut c = cxbridge();
        c.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .env_remove("CXBRIDGE_CONFIG")
            .env_remove("CXBRIDGE_DATABASE_URL")
            .env_remove("CXBRIDGE_ADMIN_TOKEN")
            .env_remove("CXBRIDGE_CTI_TOKEN")
            .env_remove("CXBRIDGE_IVR_TOKEN")
            .env_remove("CXBRIDGE_SESSION_SECRET")
            .env_remove("CXBRIDGE_BUS_SECRET")
            .env("CXBRIDGE_NATS_URL", "nats://127.0.0.1:1");
        c
    };
    let secrets: &[(&str, &str)] = &[
        ("CXBRIDGE_DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
        ("CXBRIDGE_ADMIN_TOKEN", "cluster-admin-token-0123456789"),
        ("CXBRIDGE_CTI_TOKEN", "cluster-cti-token-0123456789"),
        ("CXBRIDGE_IVR_TOKEN", "cluster-ivr-token-0123456789"),
        ("CXBRIDGE_SESSION_SECRET", "cluster-session-secret-0123456789"),
    ];
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "set [server] database_url = \"postgres://…\""),
        (&[("CXBRIDGE_DATABASE_URL", "mysql://db/cxbridge")], "must start with postgres://"),
        (&[("CXBRIDGE_DATABASE_URL", "postgres://u:p@127.0.0.1:1/db")], "set CXBRIDGE_ADMIN_TOKEN"),
        // Every other secret given: the bus's own is still required.
        (secrets, "set CXBRIDGE_BUS_SECRET"),
    ];
    for (env, says) in cases {
        let mut c = serve();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} must not start");
        assert!(err.contains(says), "{env:?}: {err}");
    }
    assert!(!dir.path().join("admin-token").exists(), "no secret was generated for a cluster node");
}
