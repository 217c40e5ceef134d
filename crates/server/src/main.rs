//! The `cxbridge` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cxbridge_server::config::{Config, DEFAULT_CONFIG};

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
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Seconds between simulated calls.
        #[arg(long, default_value_t = 30)]
        call_every: u64,
    },
    /// Load records from a CSV file (header row = field names) into the built-in CRM.
    Import {
        /// Entity to import into (contact, account, lead, or a configured one).
        entity: String,
        /// The CSV file.
        file: PathBuf,
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("CXBRIDGE_LOG").unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
    match cxbridge_server::listen::raise_open_files_limit() {
        Ok(limit) => tracing::info!(open_files = limit, max_connections = cxbridge_server::listen::connection_cap(config.server.max_connections), "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let app = cxbridge_server::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}; is another process using it? Use --listen"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %app.config.server.data_dir.display(), "cxbridge is listening");
    println!("cxbridge listening on http://{addr}");
    if let Some((password, every)) = demo {
        cxbridge_server::demo::start(app.clone(), addr, password, every).await?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cxbridge_server::run(app, listener, async move {
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
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
            init_logs(config.server.log_format == "json");
            serve(config, None).await
        }
        Command::Demo { serve: args, call_every } => {
            let mut config = load(&args)?;
            if args.data.is_none() && args.config.is_none() {
                config.server.data_dir = PathBuf::from("./cxbridge-demo-data");
            }
            init_logs(config.server.log_format == "json");
            let password = cxbridge_server::demo::configure(&mut config)?;
            serve(config, Some((password, Duration::from_secs(call_every.max(1))))).await
        }
        Command::Import { entity, file, serve } => {
            let config = load(&serve)?;
            init_logs(false);
            let app = cxbridge_server::build(config).await?;
            let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let started = std::time::Instant::now();
            let report = cxbridge_server::import::import_csv(app.crm_store.as_ref(), &entity, std::io::BufReader::new(f), |n| {
                eprint!("\rimported {n} rows ({:.0} rows/s)", n as f64 / started.elapsed().as_secs_f64().max(0.001));
            })
            .await?;
            eprintln!();
            for e in &report.errors {
                eprintln!("{}:{}: {}", file.display(), e.line, e.message);
            }
            println!("imported {} {entity} records in {:.1}s; {} bad rows skipped", report.imported, started.elapsed().as_secs_f64(), report.errors.len());
            if report.imported == 0 && !report.errors.is_empty() {
                std::process::exit(1);
            }
            Ok(())
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
            println!("{}", cxbridge_server::session::hash_password(password)?);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Default } => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            let config = Config::load(&file)?;
            let notes = cxbridge_server::crm_setup::check(&config).with_context(|| format!("{}", file.display()))?;
            for n in notes {
                println!("{}: note: {n}", file.display());
            }
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}
