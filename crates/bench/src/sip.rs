//! The SIP phase: SIPp calls through Kamailio (`examples/kamailio/kamailio.cfg`) to a SIPp
//! agent phone, in three modes side by side, against the benchmark's running hub:
//!
//! - **static route** (`-A STATIC_ROUTE -A NO_CTI`): Kamailio relays every INVITE to
//!   `STATIC_URI` without asking anybody — the baseline;
//! - **hub lookup** (`-A NO_CTI`): Kamailio asks the hub's `GET /api/v1/ivr/lookup` for
//!   every INVITE (a new TCP connection each, `http_client_query`) and relays as it says;
//! - **hub lookup + CTI** (the example's default): the same, and Kamailio reports every call
//!   to the hub as Zammad CTI events (`newCall`, `answer`, `hangup`), which records it.
//!
//! Per mode: an agent phone (`sipp -sf uas_agent.xml`, unbounded, a free UDP port; it rings
//! 50 ms before it answers), Kamailio on another free port with `FALLBACK_URI`,
//! `DIAL_DOMAIN` and `STATIC_URI` all pointing at that phone (with the default rules the hub
//! answers `continue` for a contact without an owner, and Kamailio relays to
//! `FALLBACK_URI`), then one SIPp caller (`uac_answered.xml`, caller = a known contact's
//! E.164, `-d 0`) at `--sip-rate` calls/s for `--sip-secs` seconds. SIPp's statistics file
//! gives the successful and failed calls, its `-trace_rtt` file the INVITE → 200 time of
//! every call (whole milliseconds, the phone's 50 ms ring included) and the span from the
//! first INVITE to the last 200, over which the setups per second are counted. The hub's
//! `/metrics` tell how many lookups and CTI events it answered. Everything started here is
//! stopped again, also when a mode fails (Kamailio with SIGTERM to its main process).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::calls::DIALED;
use crate::numbers;
use crate::options::Args;
use crate::report::{Row, row, say};
use crate::server::{ADMIN_TOKEN, CTI_TOKEN, CpuMeter, Server, cpu_time};
use crate::stats::{Samples, ms};

/// SIPp's cap on calls in progress (`-l`).
const CALL_LIMIT: u32 = 3000;
/// Shared memory for Kamailio in MB (`-m`); the default 64 runs out near 500 calls/s.
const KAMAILIO_SHM_MB: u32 = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Static,
    Lookup,
    LookupCti,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Static, Mode::Lookup, Mode::LookupCti];

    fn label(self) -> &'static str {
        match self {
            Mode::Static => "static route",
            Mode::Lookup => "hub lookup",
            Mode::LookupCti => "hub lookup + CTI",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Mode::Static => "static",
            Mode::Lookup => "lookup",
            Mode::LookupCti => "lookup-cti",
        }
    }

    fn asks_hub(self) -> bool {
        self != Mode::Static
    }
}

/// What one mode measured.
struct Measured {
    placed: u64,
    successful: u64,
    failed: u64,
    setup: Samples,
    /// Calls that got their 200 OK (lines of the `-trace_rtt` file).
    setups: u64,
    /// First 200 OK → last 200 OK.
    span: Duration,
    /// Lookups the hub answered during the run (its `/metrics`).
    lookups: u64,
    /// Kamailio's "hub lookup failed" warnings (it then used FALLBACK_URI).
    lookups_failed: u64,
    /// CTI events the hub recorded, and how long after the last call it had them all.
    cti_events: u64,
    cti_settled: Duration,
    /// Kamailio's "CTI event not accepted" warnings.
    cti_refused: u64,
    cpu: String,
    sipp_exit: String,
}

impl Measured {
    /// Successful calls set up per second: the 200 OKs' rate from the first to the last
    /// (n calls, n − 1 intervals), so neither the ring time nor SIPp's start counts.
    fn setups_per_sec(&self) -> f64 {
        (self.successful.min(self.setups) as f64 - 1.0).max(0.0) / self.span.as_secs_f64().max(0.001)
    }


}

/// `program` as found in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// A free UDP port on 127.0.0.1 (bound once by us, then released).
fn udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("cannot find a free UDP port on 127.0.0.1")?;
    Ok(s.local_addr()?.port())
}

/// The last lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The direct children of process `root` (Kamailio's main process forks its workers).
fn children(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok()))
                == Some(root)
        })
        .collect()
}

/// CPU time of process `root` and its direct children; processes that vanish while we
/// read are skipped.
fn tree_cpu(root: u32) -> Duration {
    std::iter::once(root).chain(children(root)).filter_map(|pid| cpu_time(&pid.to_string()).ok()).sum()
}

/// A SIPp process: SIGKILL when dropped (a single process without children).
struct Sipp {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Sipp {
    fn start(args: &[String], cwd: &Path, log: &Path) -> anyhow::Result<Sipp> {
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("sipp")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start sipp")?;
        let pid = child.id().context("sipp exited at once")?;
        Ok(Sipp { child, pid, log: log.to_path_buf() })
    }

    fn cpu(&self) -> Duration {
        cpu_time(&self.pid.to_string()).unwrap_or_default()
    }

    /// SIPp draws a curses screen: only its text survives `grep -a`, so show the last lines
    /// with the escape sequences dropped.
    fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let text: String = String::from_utf8_lossy(&bytes).chars().filter(|c| *c == '\n' || !c.is_control()).collect();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Kamailio. Stopped with SIGTERM to the main process (which takes its workers down); if
/// it has not exited after a while, the main process and its workers are killed, each by
/// its pid. The same happens when it is dropped on an error path.
struct Kamailio {
    child: Child,
    pid: u32,
    log: PathBuf,
    stopped: bool,
}

fn signal(sig: &str, pid: u32) -> bool {
    std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Kamailio {
    fn start(cfg: &Path, runtime: &Path, defines: &[String], log: &Path) -> anyhow::Result<Kamailio> {
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut c = Command::new("kamailio");
        c.arg("-f").arg(cfg).args(["-DD", "-E", "-m", &KAMAILIO_SHM_MB.to_string(), "-Y"]).arg(runtime);
        for d in defines {
            c.arg("-A").arg(d);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out))
            .spawn()
            .context("cannot start kamailio")?;
        let pid = child.id().context("kamailio exited at once")?;
        Ok(Kamailio { child, pid, log: log.to_path_buf(), stopped: false })
    }

    fn cpu(&self) -> Duration {
        tree_cpu(self.pid)
    }

    /// Waits until Kamailio answers an OPTIONS request on `port` with 200.
    async fn wait_ready(&mut self, port: u16) -> anyhow::Result<()> {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.context("cannot bind a UDP socket")?;
        let local = sock.local_addr()?.port();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = vec![0u8; 4096];
        for n in 0u32.. {
            if let Some(status) = self.child.try_wait()? {
                bail!("kamailio exited during start-up ({status}); its log:\n{}", tail(&self.log, 30));
            }
            let options = format!(
                "OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-bench-{n}\r\nMax-Forwards: 70\r\n\
                 From: <sip:bench@127.0.0.1>;tag=bench{n}\r\nTo: <sip:ping@127.0.0.1:{port}>\r\nCall-ID: bench-ping-{n}@127.0.0.1\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            sock.send_to(options.as_bytes(), ("127.0.0.1", port)).await?;
            if let Ok(Ok(len)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
                && buf[..len].starts_with(b"SIP/2.0 200")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kamailio did not answer OPTIONS on udp:127.0.0.1:{port} within 15 s; its log:\n{}", tail(&self.log, 30));
            }
        }
        Ok(())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.stopped = true;
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal("-TERM", self.pid);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_ok() {
            return Ok(());
        }
        self.kill_all();
        self.child.wait().await?;
        bail!("kamailio did not stop within 10 s of SIGTERM; it was killed")
    }

    /// SIGKILL to the workers, then to the main process.
    fn kill_all(&self) {
        for pid in children(self.pid) {
            signal("-KILL", pid);
        }
        signal("-KILL", self.pid);
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if self.stopped || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal("-TERM", self.pid);
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_all();
        let _ = self.child.try_wait();
    }
}

/// Sum of the samples of counter `name` whose line holds every one of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

/// `(lookups answered, CTI events recorded)` so far, from the hub's `/metrics`.
async fn hub_counts(http: &reqwest::Client, srv: &Server) -> anyhow::Result<(u64, u64)> {
    let text = http.get(srv.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().await.context("GET /metrics failed")?.text().await?;
    Ok((metric_sum(&text, "cxbridge_ivr_lookups_total", &[]), metric_sum(&text, "cxbridge_events_total", &["source=\"cti\""])))
}

/// The last row of SIPp's statistics file, by column name.
fn stat_columns(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("SIPp wrote no statistics file {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("SIPp's statistics file is empty")?;
    let last = lines.next_back().context("SIPp's statistics file has no values")?;
    Ok(header.split(';').map(str::to_string).zip(last.split(';').map(str::to_string)).collect())
}

fn stat_count(cols: &[(String, String)], name: &str) -> anyhow::Result<u64> {
    cols.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.trim().parse().ok()).with_context(|| format!("no number `{name}` in SIPp's statistics file"))
}

/// INVITE → 200 times from SIPp's `-trace_rtt` file (`Date_ms;response_time_ms;rtd_no`,
/// `Date_ms` being when the 200 came, since SIPp started), and the span from the first 200
/// to the last.
fn read_rtt(dir: &Path) -> anyhow::Result<(Samples, u64, Duration)> {
    let file = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("uac_answered_") && n.ends_with("_rtt.csv")))
        .with_context(|| format!("SIPp wrote no response-time file (uac_answered_*_rtt.csv) in {}", dir.display()))?;
    let text = std::fs::read_to_string(&file)?;
    let mut s = Samples::default();
    let mut n = 0u64;
    let (mut first, mut last) = (f64::MAX, 0f64);
    for line in text.lines().skip(1) {
        let mut f = line.split(';');
        let (Some(at), Some(rtt)) = (f.next().and_then(|v| v.trim().parse::<f64>().ok()), f.next().and_then(|v| v.trim().parse::<f64>().ok())) else { continue };
        s.push(Duration::from_secs_f64(rtt / 1000.0));
        n += 1;
        first = first.min(at);
        last = last.max(at);
    }
    let span = if last > first { Duration::from_secs_f64((last - first) / 1000.0) } else { Duration::ZERO };
    Ok((s, n, span))
}

/// Counts the lines of a log holding `needle`.
fn count_lines(path: &Path, needle: &str) -> u64 {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter(|l| l.contains(needle)).count() as u64
}

struct Paths {
    cfg: PathBuf,
    uas: PathBuf,
    uac: PathBuf,
}

/// Why the phase cannot run here, if it cannot.
fn missing_prerequisite(args: &Args) -> Option<String> {
    for p in ["kamailio", "sipp"] {
        if find_program(p).is_none() {
            return Some(format!("`{p}` is not installed (apt-get install kamailio kamailio-utils-modules kamailio-json-modules sip-tester)"));
        }
    }
    let dir = &args.kamailio_example;
    for f in ["kamailio.cfg", "sipp/uas_agent.xml", "sipp/uac_answered.xml"] {
        if !dir.join(f).is_file() {
            return Some(format!("{} not found (run from the repository root, or pass --kamailio-example DIR)", dir.join(f).display()));
        }
    }
    None
}

/// One mode: phone, Kamailio, caller; everything stopped again before it returns.
async fn run_mode(args: &Args, http: &reqwest::Client, srv: &mut Server, dir: &Path, paths: &Paths, mode: Mode) -> anyhow::Result<Measured> {
    let mdir = dir.join(format!("sip-{}", mode.slug()));
    let runtime = mdir.join("run");
    std::fs::create_dir_all(&runtime).with_context(|| format!("cannot create {}", runtime.display()))?;
    srv.check_alive()?;

    let phone_port = udp_port()?;
    let phone_args: Vec<String> = vec!["-sf".into(), paths.uas.display().to_string(), "-i".into(), "127.0.0.1".into(), "-p".into(), phone_port.to_string(), "-nostdin".into()];
    let mut phone = Sipp::start(&phone_args, &mdir, &mdir.join("phone.log"))?;
    // The phone is listening once its port is taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", phone_port)).is_ok() {
        if let Some(status) = phone.child.try_wait()? {
            bail!("the agent phone (sipp) exited at start ({status}):\n{}", phone.log_tail());
        }
        if Instant::now() > deadline {
            bail!("the agent phone (sipp) did not bind udp:127.0.0.1:{phone_port} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sip_port = udp_port()?;
    let phone_uri = format!("sip:299@127.0.0.1:{phone_port}");
    let mut defines = vec![
        format!("HUB_URL=\"http://127.0.0.1:{}\"", srv.port),
        format!("HUB_TOKEN=\"{ADMIN_TOKEN}\""),
        format!("CTI_TOKEN=\"{CTI_TOKEN}\""),
        format!("FALLBACK_URI=\"{phone_uri}\""),
        format!("DIAL_DOMAIN=\"127.0.0.1:{phone_port}\""),
        format!("SIP_LISTEN=udp:127.0.0.1:{sip_port}"),
    ];
    match mode {
        Mode::Static => defines.extend(["STATIC_ROUTE".to_string(), "NO_CTI".to_string(), format!("STATIC_URI=\"{phone_uri}\"")]),
        Mode::Lookup => defines.push("NO_CTI".into()),
        Mode::LookupCti => {}
    }
    let mut kamailio = Kamailio::start(&paths.cfg, &runtime, &defines, &mdir.join("kamailio.log"))?;
    kamailio.wait_ready(sip_port).await?;
    say(format!(
        "[sip] {}: agent phone (sipp pid {}) on udp:127.0.0.1:{phone_port}, kamailio pid {} on udp:127.0.0.1:{sip_port}; logs in {}",
        mode.label(),
        phone.pid,
        kamailio.pid,
        mdir.display()
    ));

    let (lookups_before, cti_before) = hub_counts(http, srv).await?;
    let placed = u64::from(args.sip_rate) * args.sip_secs;
    // A known contact, written as Kamailio passes it on: E.164 with its `+`.
    let caller_number = numbers::e164(1);
    let dialed = DIALED.trim_start_matches('+');
    let limit = args.sip_secs + 30;
    let caller_port = udp_port()?;
    let caller_args: Vec<String> = [
        "-sf",
        &paths.uac.display().to_string(),
        "-key",
        "caller",
        &caller_number,
        "-s",
        dialed,
        "-i",
        "127.0.0.1",
        "-p",
        &caller_port.to_string(),
        "-d",
        "0",
        "-r",
        &args.sip_rate.to_string(),
        "-m",
        &placed.to_string(),
        "-l",
        &CALL_LIMIT.to_string(),
        "-nostdin",
        "-timeout",
        &format!("{limit}s"),
        "-timeout_error",
        "-trace_rtt",
        // Every response time as it comes: SIPp does not write the last, partial batch.
        "-rtt_freq",
        "1",
        "-trace_stat",
        "-stf",
        "caller-stat.csv",
        &format!("127.0.0.1:{sip_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    say(format!("[sip] {}: {} calls/s for {} s ({placed} calls) from {caller_number}", mode.label(), args.sip_rate, args.sip_secs));

    let cpu = CpuMeter::start(srv)?;
    let (kam0, phone0) = (kamailio.cpu(), phone.cpu());
    let mut caller = Sipp::start(&caller_args, &mdir, &mdir.join("caller.log"))?;
    let started = Instant::now();
    let hard_limit = started + Duration::from_secs(limit + 15);
    let mut caller_cpu = Duration::ZERO;
    let mut next_report = started + Duration::from_secs(5);
    let status = loop {
        tokio::select! {
            s = caller.child.wait() => break s?,
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                caller_cpu = caller_cpu.max(caller.cpu());
                if Instant::now() >= next_report {
                    next_report += Duration::from_secs(5);
                    srv.check_alive()?;
                    say(format!("[sip] {}: {:>4.0} s", mode.label(), started.elapsed().as_secs_f64()));
                }
                if Instant::now() > hard_limit {
                    bail!("the SIPp caller did not finish within {} s:\n{}", limit + 15, caller.log_tail());
                }
            }
        }
    };
    let wall = started.elapsed().as_secs_f64().max(0.001);
    let server_bench = cpu.report(srv)?;
    let kam_pct = kamailio.cpu().saturating_sub(kam0).as_secs_f64() / wall * 100.0;
    let sipp_pct = (caller_cpu + phone.cpu().saturating_sub(phone0)).as_secs_f64() / wall * 100.0;
    let cpu = format!("{server_bench} / kamailio {kam_pct:.0}% / sipp {sipp_pct:.0}%");
    // 0: every call went as the scenario expects; 1: some failed; others: fatal.
    let sipp_exit = status.code().map_or_else(|| "by a signal".to_string(), |c| c.to_string());
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("the SIPp caller failed (exit {sipp_exit}):\n{}", caller.log_tail());
    }

    // CTI events go through Kamailio's single async worker: wait until the hub has them all,
    // or until no more arrive for 2 s.
    let ended = Instant::now();
    let (mut lookups_after, mut cti_after) = hub_counts(http, srv).await?;
    let stat_file = mdir.join("caller-stat.csv");
    if !stat_file.is_file() {
        bail!("the SIPp caller ended (exit {sipp_exit}) without a statistics file; its output:\n{}", caller.log_tail());
    }
    let stat = stat_columns(&stat_file)?;
    let successful = stat_count(&stat, "SuccessfulCall(C)")?;
    let failed = stat_count(&stat, "FailedCall(C)")?;
    if mode == Mode::LookupCti {
        let expected = cti_before + 3 * (successful + failed);
        let (mut last_change, mut last) = (Instant::now(), cti_after);
        while cti_after < expected && last_change.elapsed() < Duration::from_secs(2) && ended.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            (lookups_after, cti_after) = hub_counts(http, srv).await?;
            if cti_after != last {
                (last_change, last) = (Instant::now(), cti_after);
            }
        }
    }
    let cti_settled = ended.elapsed();
    let (setup, setups, span) = read_rtt(&mdir)?;

    let kam_log = kamailio.log.clone();
    let stopped = kamailio.stop().await;
    phone.stop().await;
    stopped?;
    Ok(Measured {
        placed,
        successful,
        failed,
        setup,
        setups,
        span,
        lookups: lookups_after.saturating_sub(lookups_before),
        lookups_failed: count_lines(&kam_log, "hub lookup failed"),
        cti_events: cti_after.saturating_sub(cti_before),
        cti_settled,
        cti_refused: count_lines(&kam_log, "CTI event not accepted"),
        cpu,
        sipp_exit,
    })
}

/// Runs the three modes against the running hub and adds the rows.
pub async fn phase(args: &Args, http: &reqwest::Client, srv: &mut Server, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let title = format!("SIP call setups/s at {}/s × {} s: static / lookup / lookup + CTI", args.sip_rate, args.sip_secs);
    if let Some(why) = missing_prerequisite(args) {
        say(format!("[sip] skipped: {why}"));
        rows.push(row(title, format!("skipped: {why}"), "", None));
        return Ok(());
    }
    // Absolute: SIPp runs in each mode's directory (where it writes its trace files).
    let ex = std::fs::canonicalize(&args.kamailio_example).with_context(|| format!("cannot resolve {}", args.kamailio_example.display()))?;
    let paths = Paths { cfg: ex.join("kamailio.cfg"), uas: ex.join("sipp/uas_agent.xml"), uac: ex.join("sipp/uac_answered.xml") };
    let check = std::process::Command::new("kamailio").arg("-f").arg(&paths.cfg).arg("-c").stdin(Stdio::null()).output().context("cannot run kamailio -c")?;
    if !check.status.success() {
        let text = String::from_utf8_lossy(&check.stderr);
        let lines: Vec<&str> = text.lines().collect();
        let why = format!("`kamailio -f {} -c` failed (missing modules? kamailio-utils-modules, kamailio-json-modules)", paths.cfg.display());
        say(format!("[sip] skipped: {why}:\n{}", lines[lines.len().saturating_sub(10)..].join("\n")));
        rows.push(row(title, format!("skipped: {why}"), "", None));
        return Ok(());
    }
    say(format!(
        "[sip] SIPp → Kamailio ({}) → SIPp agent phone, three modes one after another: {}",
        paths.cfg.display(),
        Mode::ALL.map(Mode::label).join(", ")
    ));
    let mut results: Vec<(Mode, Result<Measured, String>)> = vec![];
    for mode in Mode::ALL {
        let r = run_mode(args, http, srv, dir, &paths, mode).await;
        srv.check_alive()?;
        match &r {
            Ok(m) => {
                let mut setup = m.setup.clone();
                say(format!(
                    "[sip] {}: {} of {} calls set up, {} failed (sipp exit {}); {:.0} setups/s (200 OKs over {:.2} s); setup p50/p99 {}{}{}; CPU {}",
                    mode.label(),
                    m.successful,
                    m.placed,
                    m.failed,
                    m.sipp_exit,
                    m.setups_per_sec(),
                    m.span.as_secs_f64(),
                    setup.p50_p99(),
                    if mode.asks_hub() { format!("; hub answered {} lookups ({} failed in kamailio)", m.lookups, m.lookups_failed) } else { String::new() },
                    if mode == Mode::LookupCti {
                        format!("; hub recorded {} CTI events ({} refused), all in {:.1} s after the last call", m.cti_events, m.cti_refused, m.cti_settled.as_secs_f64())
                    } else {
                        String::new()
                    },
                    m.cpu
                ));
            }
            Err(e) => say(format!("[sip] {}: WARNING: not measured: {e}", mode.label())),
        }
        results.push((mode, r.map_err(|e| format!("{e:#}").lines().next().unwrap_or("").to_string())));
    }

    let each = |f: &dyn Fn(&Measured) -> String| -> String {
        results.iter().map(|(_, r)| r.as_ref().map_or_else(|_| "error".to_string(), f)).collect::<Vec<_>>().join(" / ")
    };
    let placed = u64::from(args.sip_rate) * args.sip_secs;
    rows.push(row(title, each(&|m| format!("{:.0}", m.setups_per_sec())), "", None));
    let all_ok = results.iter().all(|(_, r)| r.as_ref().is_ok_and(|m| m.failed == 0 && m.successful == m.placed));
    rows.push(row("SIP failed calls: static / lookup / lookup + CTI", format!("{} of {placed} each", each(&|m| m.failed.to_string())), "0", Some(all_ok)));
    rows.push(row(
        "SIP setup p50 / p99 (INVITE → 200, incl. 50 ms ring)",
        format!(
            "{} ms",
            results
                .iter()
                .map(|(_, r)| r.as_ref().map_or_else(
                    |_| "error".to_string(),
                    |m| {
                        let mut s = m.setup.clone();
                        match (s.percentile_ms(50.0), s.percentile_ms(99.0)) {
                            (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(b)),
                            _ => "-".into(),
                        }
                    }
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        "",
        None,
    ));
    let hub_modes: Vec<&(Mode, Result<Measured, String>)> = results.iter().filter(|(m, _)| m.asks_hub()).collect();
    rows.push(row(
        "SIP lookups the hub answered: lookup / lookup + CTI",
        format!(
            "{} of {placed} each",
            hub_modes
                .iter()
                .map(|(_, r)| r.as_ref().map_or_else(|_| "error".into(), |m| format!("{} ({} fell back)", m.lookups, m.lookups_failed)))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
        "",
        None,
    ));
    if let Some((_, r)) = results.iter().find(|(m, _)| *m == Mode::LookupCti) {
        rows.push(row(
            "SIP CTI events the hub recorded (lookup + CTI)",
            r.as_ref().map_or_else(
                |_| "error".into(),
                |m| format!("{} of {} ({} refused; all {:.1} s after the last call)", m.cti_events, 3 * (m.successful + m.failed), m.cti_refused, m.cti_settled.as_secs_f64()),
            ),
            "",
            None,
        ));
    }
    for (mode, r) in &results {
        rows.push(row(format!("CPU, SIP {} (100% = 1 core)", mode.label()), r.as_ref().map_or_else(|e| format!("error: {e}"), |m| m.cpu.clone()), "", None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_name_and_labels() {
        let text = "# TYPE cxbridge_events_total counter\n\
                    cxbridge_events_total{source=\"cti\",type=\"newCall\",result=\"applied\"} 10\n\
                    cxbridge_events_total{source=\"cti\",type=\"hangup\",result=\"applied\"} 9\n\
                    cxbridge_events_total{source=\"sipgate\",type=\"newCall\",result=\"applied\"} 4\n\
                    cxbridge_events_total_other 100\n\
                    cxbridge_ivr_lookups_total{action=\"continue\"} 7\n";
        assert_eq!(metric_sum(text, "cxbridge_events_total", &["source=\"cti\""]), 19);
        assert_eq!(metric_sum(text, "cxbridge_events_total", &[]), 23);
        assert_eq!(metric_sum(text, "cxbridge_ivr_lookups_total", &[]), 7);
    }

    #[test]
    fn sipp_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.csv"), "StartTime;SuccessfulCall(C);FailedCall(C);\n1;0;0;\n2;498;2;\n").expect("write");
        let cols = stat_columns(&dir.path().join("s.csv")).expect("columns");
        assert_eq!(stat_count(&cols, "SuccessfulCall(C)").ok(), Some(498));
        assert_eq!(stat_count(&cols, "FailedCall(C)").ok(), Some(2));
        std::fs::write(dir.path().join("uac_answered_42_rtt.csv"), "Date_ms;response_time_ms;rtd_no\n100.5;52;1\n1100.5;60;1\n").expect("write");
        let (mut s, n, span) = read_rtt(dir.path()).expect("rtt");
        assert_eq!(n, 2);
        assert_eq!(s.percentile_ms(100.0), Some(60.0));
        assert_eq!(span.as_millis(), 1000);
    }
}
