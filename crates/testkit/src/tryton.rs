//! A real `trytond` (Tryton with the `party` module, installed by `scripts/setup-tryton`)
//! for tests: a fresh SQLite database in a temporary directory, a free port, and a watchdog
//! that stops the server when the test process ends, however it ends.
//!
//! Without the installation, [`shared`] returns `None` after printing that the tests are
//! skipped — unless `CXBRIDGE_REQUIRE_PEERS=1` (CI), where it panics.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DATABASE: &str = "crm";
pub const ADMIN_PASSWORD: &str = "admin";

/// A `trytond` started for the tests. It runs under a small shell that waits on a pipe
/// from this process: when the pipe closes (the guard is dropped, or the test process
/// ends however it ends) the shell kills `trytond`, so none outlives the tests.
pub struct TrytonProcess {
    pub url: String,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl TrytonProcess {
    /// Stops `trytond` and waits until it is gone.
    pub fn stop(&self) {
        let taken = self.watchdog.lock().map(|mut w| w.take()).unwrap_or_default();
        if let Some((mut shell, stdin)) = taken {
            drop(stdin);
            let _ = shell.wait();
        }
    }
}

impl Drop for TrytonProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared server and where its database lives.
pub struct Fixture {
    pub venv: PathBuf,
    pub dir: PathBuf,
    pub server: TrytonProcess,
}

/// The server shared by all tests of this process (started on first use).
pub fn shared() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(set_up).as_ref()
}

fn set_up() -> Option<Fixture> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("CXBRIDGE_TRYTON_VENV").map(PathBuf::from).unwrap_or_else(|| repo.join(".venv-tryton"));
    if !venv.join("bin/trytond").is_file() {
        let why = format!("Tryton not installed at {} (run scripts/setup-tryton)", venv.display());
        if std::env::var("CXBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            panic!("CXBRIDGE_REQUIRE_PEERS=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("cxbridge-tryton-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("pass"), format!("{ADMIN_PASSWORD}\n")).expect("password file");
    // trytond-admin initializes an existing, empty SQLite file only.
    std::fs::File::create(dir.join(format!("{DATABASE}.sqlite"))).expect("database file");
    let config = write_config(&dir, "trytond.conf", free_port(), "");
    let started = Instant::now();
    let admin = Command::new(venv.join("bin/trytond-admin"))
        .args(["-c", &config, "-d", DATABASE, "--all", "-u", "party", "--activate-dependencies", "--email", "admin@example.com"])
        .env("TRYTONPASSFILE", dir.join("pass"))
        .output()
        .expect("run trytond-admin");
    assert!(admin.status.success(), "trytond-admin failed: {}", String::from_utf8_lossy(&admin.stderr));
    let server = start_trytond(&venv, &dir, "trytond.conf", Some(&dir));
    eprintln!("tryton: database and server ready in {:?} at {}", started.elapsed(), server.url);
    Some(Fixture { venv, dir, server })
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Writes a config for the database in `dir` listening on `port`; returns its path.
pub fn write_config(dir: &Path, name: &str, port: u16, extra: &str) -> String {
    let path = dir.join(name);
    let text = format!("[database]\nuri = sqlite://\npath = {}\n[web]\nlisten = 127.0.0.1:{port}\n{extra}", dir.display());
    std::fs::write(&path, text).expect("write trytond config");
    path.display().to_string()
}

/// Starts `trytond` with the config `name` in `dir` and waits until it accepts
/// connections. With `remove`, the watchdog deletes that directory after `trytond` ends.
pub fn start_trytond(venv: &Path, dir: &Path, name: &str, remove: Option<&Path>) -> TrytonProcess {
    let config = std::fs::read_to_string(dir.join(name)).expect("config");
    let listen = config.lines().find_map(|l| l.strip_prefix("listen = ")).expect("listen line").to_string();
    let log = dir.join(format!("{name}.log"));
    let script = r#"
        "$1" -c "$2" -d "$3" >"$4" 2>&1 &
        pid=$!
        read -r _ || true
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        if [ -n "$5" ]; then rm -rf "$5"; fi
    "#;
    let mut shell = Command::new("sh")
        .args(["-c", script, "watchdog"])
        .arg(venv.join("bin/trytond"))
        .arg(dir.join(name))
        .arg(DATABASE)
        .arg(&log)
        .arg(remove.map(|p| p.display().to_string()).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start trytond");
    let stdin = shell.stdin.take().expect("watchdog stdin");
    let process = TrytonProcess { url: format!("http://{listen}"), watchdog: Mutex::new(Some((shell, stdin))) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&listen).is_err() {
        if Instant::now() > deadline {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            process.stop();
            panic!("trytond did not listen on {listen} within 60 s:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    process
}

