//! The `cxbridge` process under test: import, serve, memory and CPU figures, stop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
pub const CTI_TOKEN: &str = "bench-cti-token-0123456789";
/// Secrets every node of a cluster must share (a node joined by NATS refuses generated ones).
const IVR_TOKEN: &str = "bench-ivr-token-0123456789";
const SESSION_SECRET: &str = "bench-session-secret-shared-by-every-node";
const BUS_SECRET: &str = "bench-bus-secret-shared-by-every-node";

/// How one `cxbridge serve` (or `import`) reaches its database and the other nodes; the
/// default is the SQLite file in the data directory and no bus.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backend<'a> {
    /// `--database-url` (PostgreSQL).
    pub database_url: Option<&'a str>,
    /// `--nats-url`: joins the nodes that share the database.
    pub nats_url: Option<&'a str>,
    /// `--node-id`.
    pub node_id: Option<&'a str>,
}

impl Backend<'_> {
    fn apply(&self, c: &mut Command) {
        if let Some(u) = self.database_url {
            c.arg("--database-url").arg(u);
        }
        if let Some(u) = self.nats_url {
            c.arg("--nats-url").arg(u);
            c.env("CXBRIDGE_IVR_TOKEN", IVR_TOKEN).env("CXBRIDGE_SESSION_SECRET", SESSION_SECRET).env("CXBRIDGE_BUS_SECRET", BUS_SECRET);
        }
        if let Some(n) = self.node_id {
            c.arg("--node-id").arg(n);
        }
    }
}

/// CPUs `cxbridge` runs pinned to (`--pin-server`), set once at the start.
static PINNED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

pub fn pin_to(cpus: Option<String>) {
    let _ = PINNED.set(cpus);
}

/// A `cxbridge` command with the benchmark's tokens and none of the caller's settings.
fn command(binary: &Path) -> Command {
    let mut c = match PINNED.get().and_then(Option::as_deref) {
        Some(cpus) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(cpus).arg(binary);
            t
        }
        None => Command::new(binary),
    };
    c.env("CXBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CXBRIDGE_CTI_TOKEN", CTI_TOKEN)
        .env_remove("CXBRIDGE_CONFIG")
        .env_remove("CXBRIDGE_LISTEN")
        .env_remove("CXBRIDGE_DATA")
        // The backend is the benchmark's choice (`Backend`), never the caller's environment
        // (the scale-out peers' variables are often exported in the same shell).
        .env_remove("CXBRIDGE_DATABASE_URL")
        .env_remove("CXBRIDGE_NATS_URL")
        .env_remove("CXBRIDGE_NODE_ID")
        .env("NO_COLOR", "1")
        // The CRM phase's test server is on 127.0.0.1: never through a proxy.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null());
    c
}

/// Optional `--config FILE` for `import` and `serve`.
fn with_config<'a>(c: &'a mut Command, config: Option<&Path>) -> &'a mut Command {
    if let Some(f) = config {
        c.arg("--config").arg(f);
    }
    c
}

/// CPU time (user + system) used so far by process `pid` (`self` for this one).
pub fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("cannot read {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> { fields.get(i).and_then(|f| f.parse::<f64>().ok()).with_context(|| format!("cannot read {path}")) };
    Ok(Duration::from_secs_f64((tick(11)? + tick(12)?) / ticks))
}

/// Fails with a clear message when the binary is missing.
pub fn check_binary(binary: &Path) -> anyhow::Result<()> {
    if !binary.is_file() {
        bail!(
            "cxbridge binary not found at {}: build it with `cargo build --release -p cxbridge-server` \
             (or pass --cxbridge PATH)",
            binary.display()
        );
    }
    Ok(())
}

/// Runs `cxbridge import contact FILE --data DIR`, passing its progress and summary through.
pub async fn import(binary: &Path, config: Option<&Path>, data: &Path, csv: &Path) -> anyhow::Result<Duration> {
    import_into(binary, config, data, csv, Backend::default()).await
}

/// `import`, into the database `backend` names (its bus settings are not used: importing
/// needs no other node).
pub async fn import_into(binary: &Path, config: Option<&Path>, data: &Path, csv: &Path, backend: Backend<'_>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut c = command(binary);
    c.arg("import").arg("contact").arg(csv).arg("--data").arg(data);
    Backend { nats_url: None, ..backend }.apply(&mut c);
    let status = with_config(&mut c, config)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .with_context(|| format!("cannot run {} import", binary.display()))?;
    if !status.success() {
        bail!("`cxbridge import contact {}` failed ({status})", csv.display());
    }
    Ok(started.elapsed())
}

/// A free port on 127.0.0.1 (bound once by us, then released for the server).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

pub struct Server {
    child: Child,
    pub pid: u32,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts `cxbridge serve` on a free port and waits until `/healthz` answers.
    pub async fn start(binary: &Path, config: Option<&Path>, data: &Path, log: &Path, http: &reqwest::Client) -> anyhow::Result<Server> {
        Server::start_on(binary, config, data, log, http, Backend::default()).await
    }

    /// `start`, on the database and bus `backend` names.
    pub async fn start_on(binary: &Path, config: Option<&Path>, data: &Path, log: &Path, http: &reqwest::Client, backend: Backend<'_>) -> anyhow::Result<Server> {
        let port = free_port()?;
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let log_err = log_file.try_clone()?;
        let mut c = command(binary);
        c.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--data").arg(data);
        backend.apply(&mut c);
        let child = with_config(&mut c, config)
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = Server { child, pid, port, log: log.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited during start-up ({status}); its log:\n{}", server.log_tail());
            }
            if let Ok(r) = http.get(server.url("/healthz")).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server did not answer /healthz within 60 s; its log:\n{}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Whether the process is still running (an `Err` means it exited, with how).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server died ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// CPU time used by the server so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_time(&self.pid.to_string())
    }

    /// `(VmHWM, VmRSS)` of the server in bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in {path}"))?;
            let kb: u64 = line
                .trim_start_matches(name)
                .trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("cannot read `{line}` in {path}"))?;
            Ok(kb * 1024)
        };
        Ok((field("VmHWM")?, field("VmRSS")?))
    }

    /// SIGTERM (graceful), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // `kill` the command: the workspace forbids unsafe code, so no libc::kill here.
        let termed = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await.is_ok_and(|s| s.success());
        if termed && let Ok(r) = tokio::time::timeout(grace, self.child.wait()).await {
            r?;
            return Ok(());
        }
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// CPU used by the server and by this program over a span of wall time.
pub struct CpuMeter {
    wall: Instant,
    server: Duration,
    bench: Duration,
}

impl CpuMeter {
    pub fn start(srv: &Server) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter { wall: Instant::now(), server: srv.cpu()?, bench: cpu_time("self")? })
    }

    /// `server 123% / bench 45% CPU` (100% = one core busy).
    pub fn report(&self, srv: &Server) -> anyhow::Result<String> {
        let wall = self.wall.elapsed().as_secs_f64().max(0.001);
        let server = srv.cpu()?.saturating_sub(self.server).as_secs_f64() / wall * 100.0;
        let bench = cpu_time("self")?.saturating_sub(self.bench).as_secs_f64() / wall * 100.0;
        Ok(format!("server {server:.0}% / bench {bench:.0}%"))
    }
}
