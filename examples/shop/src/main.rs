//! The `shop` binary: plays a scripted day (the default), or serves the API and the services.
//!
//! ```text
//! shop [--state DIR] [day]
//! shop [--state DIR] serve [SERVICE...] [--addr 127.0.0.1:8080]
//! shop schemas export|check DIR     # the events and commands the services agree on
//! ```
//!
//! Services are `orders inventory fraud details validation payments notifications` (all of
//! them when none is named). Each process opens the log `<state>/events.db` and its services'
//! view files beside it, so several processes on one state directory make one shop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keel::store::EventStore;
use keel::store::sqlite::SqliteStore;
use shop::{Config, Service, day, http, services};

#[derive(Parser, Debug)]
#[command(
    name = "shop",
    about = "The keel shop: services sharing a log, on SQLite."
)]
struct Args {
    /// Where the log and the services' views live (a fresh temporary directory by default).
    #[arg(long, env = "SHOP_STATE", global = true)]
    state: Option<PathBuf>,
    /// The fraud limit: a customer's orders in the window above this many cents fail.
    #[arg(long, default_value_t = 2_000_00, global = true)]
    fraud_limit: u64,
    /// The fraud check's sliding window, in seconds.
    #[arg(long, default_value_t = 3600, global = true)]
    fraud_window_secs: u64,
    /// How long an order's fraud window waits for orders stamped before it, in ms.
    #[arg(long, default_value_t = 5_000, global = true)]
    fraud_grace_ms: u64,
    /// How long the checks have to answer, in ms.
    #[arg(long, default_value_t = 60_000, global = true)]
    validation_timeout_ms: u64,
    /// How long an order waits for its product in the catalog, in ms.
    #[arg(long, default_value_t = 10_000, global = true)]
    details_wait_ms: u64,
    /// The time between two ticks, in ms.
    #[arg(long, default_value_t = 250, global = true)]
    tick_ms: u64,
    /// The longest time between an event's stamp and its commit, in ms: a tick stands for
    /// the wall clock minus this.
    #[arg(long, default_value_t = 500, global = true)]
    skew_ms: u64,
    /// How often idle readers look for other processes' appends, in ms (appends of their own
    /// process wake them at once).
    #[arg(long, default_value_t = 250, global = true)]
    poll_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs every service in this process and plays a scripted day of orders.
    Day,
    /// Runs services (all of them when none is named) until interrupted; with `orders`, the
    /// HTTP API too.
    Serve {
        /// The services to run.
        #[arg(value_enum)]
        services: Vec<Service>,
        /// Where the HTTP API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// The JSON Schemas of the shop's events and commands: export them to a folder, or check
    /// the code against the committed ones (no log is opened).
    Schemas(keel::schemas::cli::SchemasArgs),
}

impl Args {
    fn config(&self) -> Config {
        Config {
            fraud_limit: self.fraud_limit,
            fraud_window: Duration::from_secs(self.fraud_window_secs),
            fraud_grace: Duration::from_millis(self.fraud_grace_ms),
            validation_timeout: Duration::from_millis(self.validation_timeout_ms),
            details_wait: Duration::from_millis(self.details_wait_ms),
            tick: Duration::from_millis(self.tick_ms),
            skew: Duration::from_millis(self.skew_ms),
            poll: Duration::from_millis(self.poll_ms),
        }
    }
}

async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain on one line (`{:#}`), without a backtrace: the message says why.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,shop=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = Args::parse();
    let command = match args.command.take() {
        // The schemas are the code's: nothing to open.
        Some(Command::Schemas(schemas)) => {
            return Ok(keel::schemas::cli::run(
                &shop::schemas::registry(),
                schemas,
            )?);
        }
        command => command.unwrap_or(Command::Day),
    };
    let config = args.config();
    let temp;
    let state = match &args.state {
        Some(state) => state.clone(),
        None => {
            temp = tempfile::tempdir().context("create a state directory")?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
    let store = Arc::new(
        SqliteStore::open(state.join("events.db"))
            .await
            .context("open the log")?,
    );
    let log: Arc<dyn EventStore> = Arc::clone(&store) as Arc<dyn EventStore>;
    match command {
        Command::Day => {
            let running = services::start(Arc::clone(&log), &state, &Service::ALL, &config).await?;
            let api = running
                .api()
                .cloned()
                .context("the orders service runs in this process")?;
            println!("The shop opens (state in {}).", state.display());
            let result = day::play(Arc::clone(&log), &api, &state).await;
            running.stop().await;
            result?;
        }
        Command::Serve { services, addr } => {
            let services = if services.is_empty() {
                Service::ALL.to_vec()
            } else {
                services
            };
            let running = services::start(Arc::clone(&log), &state, &services, &config).await?;
            let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
            match running.api().cloned() {
                Some(api) => {
                    let listener = tokio::net::TcpListener::bind(&addr)
                        .await
                        .with_context(|| format!("listen on {addr}"))?;
                    println!(
                        "READY {} on http://{}",
                        names.join(","),
                        listener.local_addr()?
                    );
                    http::serve(listener, api, interrupted()).await?;
                }
                None => {
                    println!("READY {}", names.join(","));
                    interrupted().await;
                }
            }
            running.stop().await;
        }
        // Answered above, before the log is opened.
        Command::Schemas(_) => {}
    }
    drop(log);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    Ok(())
}
