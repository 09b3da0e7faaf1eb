//! Running the services: each one alone or several in one process, sharing only the log.
//!
//! A service is a set of readers — process managers, joins, windows, tables — each fed by a
//! keel [`Runner`] under a lease, with its state in the service's own SQLite view file
//! (`<state>/<service>.db`). Nothing but the log is shared: start one process per service on
//! the same event store file, or all of them in one process; the outcome is the same. Every
//! process also records ticks ([`Ticker`]) — the recorded time timeouts and windows go by.
//!
//! A reader that stops on an error (the log unreachable for a while, a lease taken over) is
//! started again after a pause; its commands of the failed batch are answered from the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel::store::EventStore;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{
    CancellationToken, JoinView, Process, Projection, Runner, RunnerConfig, TableView, Ticker,
    WindowView,
};
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::details::Details;
use crate::fraud::Spend;
use crate::inventory::Reservations;
use crate::notifications::Confirmations;
use crate::payments::Charges;
use crate::status::{OrderStatus, StockLevels};
use crate::validation::Validation;

/// The shop's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Service {
    /// Places and cancels orders, serves the HTTP API, keeps order status and stock views.
    Orders,
    /// Reserves, releases and ships stock per order.
    Inventory,
    /// The windowed fraud check.
    Fraud,
    /// The order details check (a join with the catalog).
    Details,
    /// Gathers the three checks and decides each order.
    Validation,
    /// Charges confirmed orders in the customer's currency.
    Payments,
    /// Writes one email per paid order.
    Notifications,
}

impl Service {
    /// Every service.
    pub const ALL: [Self; 7] = [
        Self::Orders,
        Self::Inventory,
        Self::Fraud,
        Self::Details,
        Self::Validation,
        Self::Payments,
        Self::Notifications,
    ];

    /// Its name: of its view file, and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Inventory => "inventory",
            Self::Fraud => "fraud",
            Self::Details => "details",
            Self::Validation => "validation",
            Self::Payments => "payments",
            Self::Notifications => "notifications",
        }
    }
}

/// The shop's rules and pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A customer's orders in `fraud_window` above this many cents fail the fraud check.
    pub fraud_limit: u64,
    /// The fraud check's sliding window.
    pub fraud_window: Duration,
    /// How long after an order the fraud check still takes orders stamped before it.
    pub fraud_grace: Duration,
    /// How long the checks have to answer, from an order's placement.
    pub validation_timeout: Duration,
    /// How long an order waits for its product to appear in the catalog.
    pub details_wait: Duration,
    /// The time between two ticks.
    pub tick: Duration,
    /// The longest time between an event's stamp and its commit.
    pub skew: Duration,
    /// How often an idle reader looks for appends by other processes.
    pub poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            fraud_limit: 2_000_00,
            fraud_window: Duration::from_secs(3600),
            fraud_grace: Duration::from_secs(5),
            validation_timeout: Duration::from_secs(60),
            details_wait: Duration::from_secs(10),
            tick: Duration::from_millis(250),
            skew: Duration::from_millis(500),
            poll: Duration::from_millis(250),
        }
    }
}

/// Services running in this process.
pub struct Running {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    api: Option<Api>,
    state: PathBuf,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("tasks", &self.tasks.len())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The API, when the orders service runs here.
    pub fn api(&self) -> Option<&Api> {
        self.api.as_ref()
    }

    /// The directory of the view files.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Stops every reader after its current batch and waits for them.
    pub async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The view store of `service` in `state`.
///
/// # Errors
///
/// When the file cannot be opened.
pub async fn views(state: &Path, service: Service) -> anyhow::Result<Arc<SqliteViews>> {
    Ok(Arc::new(
        SqliteViews::open(state.join(format!("{}.db", service.name()))).await?,
    ))
}

fn config(config: &Config) -> RunnerConfig {
    RunnerConfig {
        batch_size: 256,
        poll: config.poll,
        lease_ttl: Duration::from_secs(10),
        ..RunnerConfig::default()
    }
}

/// Runs `runner` until `cancel` fires, starting it again after an error.
fn supervise<P: Projection>(runner: Arc<Runner<P>>, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match runner.run(cancel.clone()).await {
                Ok(()) => return,
                Err(error) => {
                    let mut text = error.to_string();
                    let mut source = std::error::Error::source(&error);
                    while let Some(s) = source {
                        text.push_str(": ");
                        text.push_str(&s.to_string());
                        source = s.source();
                    }
                    tracing::error!(reader = P::NAME, error = %text, "reader stopped; starting it again");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    })
}

/// Starts `services` on `log`, with their view files in `state`, and a ticker.
///
/// # Errors
///
/// When a view file cannot be opened.
pub async fn start(
    log: Arc<dyn EventStore>,
    state: &Path,
    services: &[Service],
    settings: &Config,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(state)?;
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut api = None;
    let rc = config(settings);
    for &service in services {
        let views = views(state, service).await?;
        match service {
            Service::Orders => {
                let status = Arc::new(
                    Runner::new(
                        TableView::new(OrderStatus),
                        Arc::clone(&log),
                        Arc::clone(&views),
                    )
                    .config(rc.clone()),
                );
                let stock = Arc::new(
                    Runner::new(
                        TableView::new(StockLevels),
                        Arc::clone(&log),
                        Arc::clone(&views),
                    )
                    .config(rc.clone()),
                );
                tasks.push(supervise(Arc::clone(&status), cancel.clone()));
                tasks.push(supervise(stock, cancel.clone()));
                api = Some(Api::new(Arc::clone(&log), Arc::clone(&views), status));
            }
            Service::Inventory => {
                let process = Process::new(Reservations::new(Arc::clone(&log)));
                let runner = Runner::new(process, Arc::clone(&log), views).config(rc.clone());
                tasks.push(supervise(Arc::new(runner), cancel.clone()));
            }
            Service::Fraud => {
                let spend = Spend::new(
                    Arc::clone(&log),
                    settings.fraud_limit,
                    settings.fraud_window,
                    settings.fraud_grace,
                );
                let runner =
                    Runner::new(WindowView::new(spend), Arc::clone(&log), views).config(rc.clone());
                tasks.push(supervise(Arc::new(runner), cancel.clone()));
            }
            Service::Details => {
                let join = JoinView::new(Details::new(Arc::clone(&log)), Arc::clone(&log))
                    .max_wait(settings.details_wait);
                let runner = Runner::new(join, Arc::clone(&log), views).config(rc.clone());
                tasks.push(supervise(Arc::new(runner), cancel.clone()));
            }
            Service::Validation => {
                let validation = Validation::new(Arc::clone(&log), settings.validation_timeout);
                let runner = Runner::new(Process::new(validation), Arc::clone(&log), views)
                    .config(rc.clone());
                tasks.push(supervise(Arc::new(runner), cancel.clone()));
            }
            Service::Payments => {
                let join = JoinView::new(Charges::new(Arc::clone(&log)), Arc::clone(&log))
                    .max_wait(settings.validation_timeout);
                let runner = Runner::new(join, Arc::clone(&log), views).config(rc.clone());
                tasks.push(supervise(Arc::new(runner), cancel.clone()));
            }
            Service::Notifications => {
                let join = JoinView::new(Confirmations::new(Arc::clone(&log)), Arc::clone(&log))
                    .max_wait(settings.validation_timeout);
                let runner = Runner::new(join, Arc::clone(&log), views).config(rc.clone());
                tasks.push(supervise(Arc::new(runner), cancel.clone()));
            }
        }
    }
    let ticker = Ticker::new(Arc::clone(&log))
        .interval(settings.tick)
        .skew(settings.skew);
    let stop = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let _ = ticker.run(stop).await;
    }));
    Ok(Running {
        cancel,
        tasks,
        api,
        state: state.to_path_buf(),
    })
}
