//! The `cxbridge` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cxbridge_server::config::{Config, DEFAULT_CONFIG};

/// Per-thread heaps: the store's threads allocate and free rows the runtime's threads made.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cxbridge", version, about = "Joins a contact centre to a CRM: caller identification, screen pop, activities written exactly once.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Configuration file (TOML). Every setting is optional.
    #[arg(long, short, env = "CXBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "CXBRIDGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (default ./cxbridge-data).
    #[arg(long, env = "CXBRIDGE_DATA")]
    data: Option<PathBuf>,
    /// Database URL: postgres://user:password@host/db for PostgreSQL (several nodes share
    /// it); default the SQLite file DATA/cxbridge.sqlite.
    #[arg(long, env = "CXBRIDGE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// NATS server with JetStream that joins several nodes, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "CXBRIDGE_NATS_URL")]
    nats_url: Option<String>,
    /// This node's name among several (default: host name and port).
    #[arg(long, env = "CXBRIDGE_NODE_ID")]
    node_id: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(ServeArgs),
    /// Run the hub with sample CRM data and a few simulated calls; prints where to look.
    #[command(mut_arg("data", |a| a.help("Data directory (default ./cxbridge-demo-data, kept apart from a real hub's ./cxbridge-data)")))]
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Seconds between simulated calls.
        #[arg(long, default_value_t = 30)]
        call_every: u64,
    },
    /// Load records from a CSV file (header row = field names) into the built-in CRM.
    ///
    /// The header must name fields the entity has (`id`, its title, phone, e-mail, display
    /// and relation fields). A row without `id` gets one derived from its key fields, so a
    /// re-run of the same file updates those records instead of adding them again. Exits
    /// with status 1 when any row was refused (the good rows are imported).
    Import {
        /// Entity to import into (contact, account, lead, or a configured one).
        entity: String,
        /// The CSV file (UTF-8; comma, semicolon, tab or pipe separated).
        file: PathBuf,
        /// Field separator (default: detected from the header row).
        #[arg(long, value_enum)]
        delimiter: Option<cxbridge_server::import::Delimiter>,
        /// Field(s) that recognise a row without `id` on a re-run (default: the entity's
        /// title, phone and e-mail fields). Repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        key: Vec<String>,
        /// Accept a column the configuration does not name for the entity. Repeat or
        /// separate with commas.
        #[arg(long = "field", value_delimiter = ',')]
        fields: Vec<String>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Print the Argon2 hash of an agent's panel password, for `[[agents]] password_hash`.
    /// Reads the password from standard input (one line), so it stays out of the shell history.
    HashPassword,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example configuration with every setting.
    Default,
    /// Check a configuration file and report the first problem.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if let Some(d) = &args.data {
        config.server.data_dir = d.clone();
    }
    if let Some(u) = args.database_url.clone().filter(|u| !u.is_empty()) {
        config.server.database_url = Some(u);
    }
    if let Some(u) = args.nats_url.clone().filter(|u| !u.is_empty()) {
        config.bus.url = Some(u);
    }
    if let Some(n) = args.node_id.clone().filter(|n| !n.is_empty()) {
        config.server.node_id = Some(n);
    }
    Ok(config)
}

fn init_logs(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CXBRIDGE_LOG").unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into());
    // Colour codes only for a person at a terminal: a journal, a file or a pipe gets plain
    // text (https://no-color.org is honoured too).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json { builder.json().init() } else { builder.init() }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Runs the hub; `demo` carries the demo agents' password and the time between calls.
async fn serve(config: Config, demo: Option<(Option<String>, Duration)>) -> anyhow::Result<()> {
    let listen = config.server.listen;
    // Every connection is a file descriptor: the usual soft limit of 1024 would make the
    // connection cap moot, and the hard limit can be reached without privilege.
    match cxbridge_server::http::listen::raise_open_files_limit() {
        Ok(limit) => tracing::info!(open_files = limit, max_connections = cxbridge_server::http::listen::connection_cap(config.server.max_connections), "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let server = cxbridge_server::build(config).await?;
    let app = server.app.clone();
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}; is another process using it? Use --listen"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %app.config.server.data_dir.display(), "cxbridge is listening");
    cxbridge_server::say!("cxbridge listening on http://{addr}");
    if demo.is_none() {
        print_first_steps(&app, addr);
    }
    if let Some((password, every)) = demo {
        cxbridge_server::demo::start(&server, addr, password, every).await?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cxbridge_server::run(server, listener, async move {
        let _ = rx.await;
    }));
    shutdown_signal().await;
    let _ = tx.send(());
    // Open agent streams would hold a graceful shutdown forever: give them a moment.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Ok(()),
    }
}

/// A failure the command has already explained: exit with status 1, print nothing more.
#[derive(Debug, thiserror::Error)]
#[error("already reported")]
struct AlreadyReported;

/// Where the panel is and, while no agent can sign in to it, how to add one.
fn print_first_steps(app: &cxbridge_server::app::App, addr: SocketAddr) {
    let base = match &app.config.server.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        // 0.0.0.0 is where the hub listens, not an address a browser can open.
        None if addr.ip().is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
        None => format!("http://{addr}"),
    };
    cxbridge_server::say!("agent panel: {base}/agent");
    let can_sign_in = app.config.agents.iter().any(|a| a.password_hash.is_some() || a.token.is_some());
    if !can_sign_in {
        cxbridge_server::say!("no agent can sign in yet: add one to the configuration file and restart, e.g.");
        cxbridge_server::say!("  [[agents]]");
        cxbridge_server::say!("  id = \"alice\"");
        cxbridge_server::say!("  cti_users = [\"alice\"]            # the PBX's name or extension for her");
        cxbridge_server::say!("  password_hash = \"…\"               # the output of: cxbridge hash-password");
        cxbridge_server::say!("(docs/configuration.md, section [[agents]]; `cxbridge demo` shows a ready-made hub)");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<AlreadyReported>() => std::process::ExitCode::FAILURE,
        Err(e) => {
            // The chain of causes, one line, without a backtrace: it is for the admin.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = load(&args)?;
            init_logs(config.server.log_format == cxbridge_server::config::LogFormat::Json);
            serve(config, None).await
        }
        Command::Demo { serve: args, call_every } => {
            let mut config = load(&args)?;
            if args.data.is_none() && args.config.is_none() {
                config.server.data_dir = PathBuf::from("./cxbridge-demo-data");
            }
            init_logs(config.server.log_format == cxbridge_server::config::LogFormat::Json);
            let password = cxbridge_server::demo::configure(&mut config)?;
            serve(config, Some((password, Duration::from_secs(call_every.max(1))))).await
        }
        Command::Import { entity, file, delimiter, key, fields, serve } => {
            use std::io::IsTerminal;
            let config = load(&serve)?;
            init_logs(false);
            let options = cxbridge_server::import::ImportOptions { delimiter, key, extra_fields: fields };
            let importer = cxbridge_server::import::Importer::new(&config, &entity, options)?;
            let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let crm_store = cxbridge_server::open_crm_store(&config).await?;
            let started = std::time::Instant::now();
            // A terminal sees one line that counts up; a log gets a line now and then.
            let terminal = std::io::stderr().is_terminal();
            let mut last_line = 0u64;
            let report = importer
                .run(crm_store.as_ref(), f, |n| {
                    let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                    if terminal {
                        eprint!("\rimported {n} rows ({rate:.0} rows/s)");
                    } else if n - last_line >= 100_000 {
                        eprintln!("imported {n} rows ({rate:.0} rows/s)");
                        last_line = n;
                    }
                })
                .await?;
            if terminal && report.imported > 0 {
                eprintln!();
            }
            if report.detected && report.delimiter != cxbridge_server::import::Delimiter::Comma {
                eprintln!("{}: read as {}-separated (detected from the header row; --delimiter chooses)", file.display(), report.delimiter.name());
            }
            for e in report.errors.iter().take(cxbridge_server::import::ERRORS_SHOWN) {
                eprintln!("{}:{}: {}", file.display(), e.line, e.message);
            }
            if let Some(more) = report.errors.len().checked_sub(cxbridge_server::import::ERRORS_SHOWN).filter(|n| *n > 0) {
                eprintln!("{}: … and {more} more refused rows", file.display());
            }
            let refused = match report.errors.len() {
                0 => String::new(),
                1 => "; 1 row refused (above): fix it and run the import again, it updates what is there".to_string(),
                n => format!("; {n} rows refused (above): fix them and run the import again, it updates what is there"),
            };
            println!("imported {} {entity} records in {:.1}s{refused}", report.imported, started.elapsed().as_secs_f64());
            if report.errors.is_empty() { Ok(()) } else { Err(AlreadyReported.into()) }
        }
        Command::HashPassword => {
            use std::io::{BufRead, IsTerminal};
            if std::io::stdin().is_terminal() {
                eprintln!("type the password and press Enter:");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 8 {
                anyhow::bail!("the password is shorter than 8 characters; choose a longer one");
            }
            println!("{}", cxbridge_server::http::session::hash_password(password)?);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Default } => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            let config = Config::load(&file)?;
            let notes = cxbridge_server::crm::check(&config).with_context(|| format!("{}", file.display()))?;
            for n in notes {
                println!("{}: note: {n}", file.display());
            }
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}
